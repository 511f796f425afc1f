//! Client-server API handlers, one module per ruma module.

mod account;
mod account_data;
mod device;
mod directory;
mod discovery;
mod e2ee;
mod ephemeral;
mod json;
mod key_backup;
mod media;
mod membership;
pub mod mls;
mod presence;
mod profile;
mod push;
mod pushers;
mod register;
mod relations;
mod rooms;
mod search;
mod session;
mod sync;

use axum::Router;
use ruma::api::client as c;

use crate::{http::RumaRouterExt, state::AppState};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    media::routes(r)
        .ruma_route::<mls::endpoints::external_sender::Request, _, _>(mls::external_sender)
        .ruma_route::<mls::endpoints::group_info::Request, _, _>(mls::group_info)
        .ruma_route::<mls::endpoints::list_keys::Request, _, _>(mls::list_keys)
        .ruma_route::<c::discovery::get_supported_versions::Request, _, _>(discovery::versions)
        .ruma_route::<c::discovery::discover_homeserver::Request, _, _>(discovery::well_known_client)
        .ruma_route::<ruma::api::federation::discovery::discover_homeserver::Request, _, _>(
            discovery::well_known_server,
        )
        .ruma_route::<c::discovery::get_capabilities::v3::Request, _, _>(discovery::capabilities)
        .ruma_route::<c::session::get_login_types::v3::Request, _, _>(session::login_types)
        .ruma_route::<c::session::login::v3::Request, _, _>(session::login)
        .ruma_route::<c::session::refresh_token::v3::Request, _, _>(session::refresh)
        .ruma_route::<c::session::get_login_token::v1::Request, _, _>(session::get_login_token)
        .ruma_route::<c::session::logout::v3::Request, _, _>(session::logout)
        .ruma_route::<c::session::logout_all::v3::Request, _, _>(session::logout_all)
        .ruma_route::<c::account::register::v3::Request, _, _>(register::register)
        .ruma_route::<c::account::get_username_availability::v3::Request, _, _>(register::available)
        .ruma_route::<c::account::check_registration_token_validity::v1::Request, _, _>(register::token_validity)
        .ruma_route::<c::account::whoami::v3::Request, _, _>(account::whoami)
        .ruma_route::<c::account::request_openid_token::v3::Request, _, _>(account::request_openid_token)
        .ruma_route::<c::account::change_password::v3::Request, _, _>(account::change_password)
        .ruma_route::<c::account::deactivate::v3::Request, _, _>(account::deactivate)
        .ruma_route::<c::device::get_devices::v3::Request, _, _>(device::list)
        .ruma_route::<c::device::get_device::v3::Request, _, _>(device::get)
        .ruma_route::<c::device::update_device::v3::Request, _, _>(device::update)
        .ruma_route::<c::device::delete_device::v3::Request, _, _>(device::delete)
        .ruma_route::<c::device::delete_devices::v3::Request, _, _>(device::delete_many)
        .ruma_route::<c::profile::get_profile::v3::Request, _, _>(profile::get_profile)
        .ruma_route::<c::profile::get_display_name::v3::Request, _, _>(profile::get_displayname)
        .ruma_route::<c::profile::set_display_name::v3::Request, _, _>(profile::set_displayname)
        .ruma_route::<c::profile::get_avatar_url::v3::Request, _, _>(profile::get_avatar_url)
        .ruma_route::<c::profile::set_avatar_url::v3::Request, _, _>(profile::set_avatar_url)
        .ruma_route::<c::config::get_global_account_data::v3::Request, _, _>(account_data::get_global)
        .ruma_route::<c::config::set_global_account_data::v3::Request, _, _>(account_data::set_global)
        .ruma_route::<c::config::get_room_account_data::v3::Request, _, _>(account_data::get_room)
        .ruma_route::<c::config::set_room_account_data::v3::Request, _, _>(account_data::set_room)
        .ruma_route::<c::filter::create_filter::v3::Request, _, _>(account_data::create_filter)
        .ruma_route::<c::filter::get_filter::v3::Request, _, _>(account_data::get_filter)
        .ruma_route::<c::push::get_pushrules_all::v3::Request, _, _>(push::get_all)
        .ruma_route::<c::push::get_pushrules_global_scope::v3::Request, _, _>(push::get_global)
        .ruma_route::<c::push::get_pushrule::v3::Request, _, _>(push::get_rule)
        .ruma_route::<push::SetRuleRequest, _, _>(push::set_rule)
        .ruma_route::<c::push::delete_pushrule::v3::Request, _, _>(push::delete_rule)
        .ruma_route::<c::push::get_pushrule_enabled::v3::Request, _, _>(push::get_enabled)
        .ruma_route::<c::push::set_pushrule_enabled::v3::Request, _, _>(push::set_enabled)
        .ruma_route::<c::push::get_pushrule_actions::v3::Request, _, _>(push::get_actions)
        .ruma_route::<c::push::set_pushrule_actions::v3::Request, _, _>(push::set_actions)
        .ruma_route::<c::room::create_room::v3::Request, _, _>(rooms::create_room)
        .ruma_route::<c::room::upgrade_room::v3::Request, _, _>(rooms::upgrade_room)
        .ruma_route::<c::room::get_room_event::v3::Request, _, _>(rooms::get_room_event)
        .ruma_route::<c::message::send_message_event::v3::Request, _, _>(rooms::send_message)
        .ruma_route::<c::message::get_message_events::v3::Request, _, _>(rooms::get_message_events)
        .ruma_route::<c::state::send_state_event::v3::Request, _, _>(rooms::send_state)
        .ruma_route::<c::state::get_state_events::v3::Request, _, _>(rooms::get_state_events)
        .ruma_route::<c::state::get_state_event_for_key::v3::Request, _, _>(rooms::get_state_event_for_key)
        .ruma_route::<c::redact::redact_event::v3::Request, _, _>(rooms::redact_event)
        .ruma_route::<c::context::get_context::v3::Request, _, _>(rooms::get_context)
        .ruma_route::<c::membership::join_room_by_id::v3::Request, _, _>(membership::join_room_by_id)
        .ruma_route::<c::membership::join_room_by_id_or_alias::v3::Request, _, _>(membership::join_room_by_id_or_alias)
        .ruma_route::<c::knock::knock_room::v3::Request, _, _>(membership::knock_room)
        .ruma_route::<c::membership::invite_user::v3::Request, _, _>(membership::invite_user)
        .ruma_route::<c::membership::leave_room::v3::Request, _, _>(membership::leave_room)
        .ruma_route::<c::membership::kick_user::v3::Request, _, _>(membership::kick_user)
        .ruma_route::<c::membership::ban_user::v3::Request, _, _>(membership::ban_user)
        .ruma_route::<c::membership::unban_user::v3::Request, _, _>(membership::unban_user)
        .ruma_route::<c::membership::forget_room::v3::Request, _, _>(membership::forget_room)
        .ruma_route::<c::membership::joined_rooms::v3::Request, _, _>(membership::joined_rooms)
        .ruma_route::<c::membership::get_member_events::v3::Request, _, _>(membership::get_member_events)
        .ruma_route::<c::membership::joined_members::v3::Request, _, _>(membership::get_joined_members)
        .ruma_route::<c::sync::sync_events::v3::Request, _, _>(sync::sync_events)
        .ruma_route::<c::sync::sync_events::v5::Request, _, _>(sync::sliding_sync)
        .ruma_route::<c::presence::get_presence::v3::Request, _, _>(presence::get_presence)
        .ruma_route::<c::presence::set_presence::v3::Request, _, _>(presence::set_presence)
        .ruma_route::<c::typing::create_typing_event::v3::Request, _, _>(ephemeral::set_typing)
        .ruma_route::<c::receipt::create_receipt::v3::Request, _, _>(ephemeral::create_receipt)
        .ruma_route::<c::read_marker::set_read_marker::v3::Request, _, _>(ephemeral::set_read_markers)
        .ruma_route::<c::to_device::send_event_to_device::v3::Request, _, _>(ephemeral::send_to_device)
        .ruma_route::<c::keys::upload_keys::v3::Request, _, _>(e2ee::upload_keys)
        .ruma_route::<c::keys::get_keys::v3::Request, _, _>(e2ee::get_keys)
        .ruma_route::<c::keys::claim_keys::v3::Request, _, _>(e2ee::claim_keys)
        .ruma_route::<c::keys::get_key_changes::v3::Request, _, _>(e2ee::key_changes)
        .ruma_route::<c::keys::upload_signing_keys::v3::Request, _, _>(e2ee::upload_signing_keys)
        .ruma_route::<c::keys::upload_signatures::v3::Request, _, _>(e2ee::upload_signatures)
        .ruma_route::<c::backup::create_backup_version::v3::Request, _, _>(key_backup::create_backup_version)
        .ruma_route::<c::backup::get_latest_backup_info::v3::Request, _, _>(key_backup::get_latest_backup_info)
        .ruma_route::<c::backup::get_backup_info::v3::Request, _, _>(key_backup::get_backup_info)
        .ruma_route::<c::backup::update_backup_version::v3::Request, _, _>(key_backup::update_backup_version)
        .ruma_route::<c::backup::delete_backup_version::v3::Request, _, _>(key_backup::delete_backup_version)
        .ruma_route::<c::backup::add_backup_keys::v3::Request, _, _>(key_backup::add_backup_keys)
        .ruma_route::<c::backup::add_backup_keys_for_room::v3::Request, _, _>(key_backup::add_backup_keys_for_room)
        .ruma_route::<c::backup::add_backup_keys_for_session::v3::Request, _, _>(
            key_backup::add_backup_keys_for_session,
        )
        .ruma_route::<c::backup::get_backup_keys::v3::Request, _, _>(key_backup::get_backup_keys)
        .ruma_route::<c::backup::get_backup_keys_for_room::v3::Request, _, _>(key_backup::get_backup_keys_for_room)
        .ruma_route::<c::backup::get_backup_keys_for_session::v3::Request, _, _>(
            key_backup::get_backup_keys_for_session,
        )
        .ruma_route::<c::backup::delete_backup_keys::v3::Request, _, _>(key_backup::delete_backup_keys)
        .ruma_route::<c::backup::delete_backup_keys_for_room::v3::Request, _, _>(
            key_backup::delete_backup_keys_for_room,
        )
        .ruma_route::<c::backup::delete_backup_keys_for_session::v3::Request, _, _>(
            key_backup::delete_backup_keys_for_session,
        )
        .ruma_route::<c::alias::create_alias::v3::Request, _, _>(directory::create_room_alias)
        .ruma_route::<c::alias::get_alias::v3::Request, _, _>(directory::get_room_alias)
        .ruma_route::<c::alias::delete_alias::v3::Request, _, _>(directory::delete_room_alias)
        .ruma_route::<c::room::aliases::v3::Request, _, _>(directory::get_room_aliases)
        .ruma_route::<c::directory::get_room_visibility::v3::Request, _, _>(directory::get_room_visibility)
        .ruma_route::<c::directory::set_room_visibility::v3::Request, _, _>(directory::set_room_visibility)
        .ruma_route::<c::directory::get_public_rooms::v3::Request, _, _>(directory::get_public_rooms)
        .ruma_route::<c::directory::get_public_rooms_filtered::v3::Request, _, _>(directory::get_public_rooms_filtered)
        .ruma_route::<c::room::get_summary::v1::Request, _, _>(directory::get_room_summary)
        .ruma_route::<c::user_directory::search_users::v3::Request, _, _>(directory::search_user_directory)
        .ruma_route::<c::relations::get_relating_events::v1::Request, _, _>(relations::get_relating_events)
        .ruma_route::<c::relations::get_relating_events_with_rel_type::v1::Request, _, _>(
            relations::get_relating_events_with_rel_type,
        )
        .ruma_route::<c::relations::get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
            relations::get_relating_events_with_rel_type_and_event_type,
        )
        .ruma_route::<c::threads::get_threads::v1::Request, _, _>(relations::get_threads)
        .ruma_route::<c::room::get_event_by_timestamp::v1::Request, _, _>(relations::get_event_by_timestamp)
        .ruma_route::<c::search::search_events::v3::Request, _, _>(search::search)
        .ruma_route::<c::push::get_pushers::v3::Request, _, _>(pushers::get_pushers)
        .ruma_route::<c::push::set_pusher::v3::Request, _, _>(pushers::set_pusher)
        .ruma_route::<c::push::get_notifications::v3::Request, _, _>(pushers::get_notifications)
}

/// Refuses to act on another user's data (account data, filters, profile writes).
fn require_self(session_user: &str, target: &ruma::UserId) -> Result<(), crate::http::error::ApiError> {
    if session_user == target.as_str() {
        Ok(())
    } else {
        Err(crate::http::error::ApiError::forbidden("cannot act on behalf of another user"))
    }
}
