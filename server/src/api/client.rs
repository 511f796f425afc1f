//! Client-server API handlers, one module per ruma module.

mod account;
mod account_data;
mod device;
mod discovery;
mod profile;
mod push;
mod register;
mod session;

use axum::Router;
use ruma::api::client as c;

use crate::{http::RumaRouterExt, state::AppState};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<c::discovery::get_supported_versions::Request, _, _>(discovery::versions)
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
}

/// Refuses to act on another user's data (account data, filters, profile writes).
fn require_self(session_user: &str, target: &ruma::UserId) -> Result<(), crate::http::error::ApiError> {
    if session_user == target.as_str() {
        Ok(())
    } else {
        Err(crate::http::error::ApiError::forbidden("cannot act on behalf of another user"))
    }
}
