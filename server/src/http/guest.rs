//! What guest accounts may call: the client-server spec's guest access module (reading rooms,
//! joining and leaving, sending messages, typing, receipts, their display name, devices, to-device
//! messages and end-to-end keys, presence, push rules) plus what a client needs around them
//! (versions, capabilities, whoami, filters for `/sync`, media downloads, the room directory).
//! Everything else answers 403 `M_GUEST_ACCESS_FORBIDDEN`. Checked once for every request, by
//! the `Ruma<R>` extractor, so handlers need not think about guests.

use std::any::{Any, TypeId};

use ruma::api::client::{self as c, authenticated_media as authed};

/// Whether a guest may call endpoint `R` at all (before its body is parsed).
pub fn endpoint_allowed<R: 'static>() -> bool {
    let id = TypeId::of::<R>();
    let allowed = [
        // Discovery and the account itself.
        TypeId::of::<c::discovery::get_supported_versions::Request>(),
        TypeId::of::<c::discovery::get_capabilities::v3::Request>(),
        TypeId::of::<c::account::whoami::v3::Request>(),
        TypeId::of::<c::session::logout::v3::Request>(),
        // Devices, to-device messages and end-to-end keys.
        TypeId::of::<c::device::get_devices::v3::Request>(),
        TypeId::of::<c::device::get_device::v3::Request>(),
        TypeId::of::<c::device::update_device::v3::Request>(),
        TypeId::of::<c::to_device::send_event_to_device::v3::Request>(),
        TypeId::of::<c::keys::upload_keys::v3::Request>(),
        TypeId::of::<c::keys::get_keys::v3::Request>(),
        TypeId::of::<c::keys::claim_keys::v3::Request>(),
        TypeId::of::<c::keys::get_key_changes::v3::Request>(),
        TypeId::of::<c::keys::upload_signatures::v3::Request>(),
        // Profiles: reading any, setting their own display name.
        TypeId::of::<c::profile::get_profile::v3::Request>(),
        TypeId::of::<c::profile::get_display_name::v3::Request>(),
        TypeId::of::<c::profile::get_avatar_url::v3::Request>(),
        TypeId::of::<c::profile::set_display_name::v3::Request>(),
        // Presence, push rules, sync and its filters.
        TypeId::of::<c::presence::get_presence::v3::Request>(),
        TypeId::of::<c::presence::set_presence::v3::Request>(),
        TypeId::of::<c::push::get_pushrules_all::v3::Request>(),
        TypeId::of::<c::push::get_pushrules_global_scope::v3::Request>(),
        TypeId::of::<c::push::get_pushrule::v3::Request>(),
        TypeId::of::<c::push::get_pushrule_enabled::v3::Request>(),
        TypeId::of::<c::push::get_pushrule_actions::v3::Request>(),
        TypeId::of::<c::sync::sync_events::v3::Request>(),
        TypeId::of::<c::sync::sync_events::v5::Request>(),
        TypeId::of::<c::filter::create_filter::v3::Request>(),
        TypeId::of::<c::filter::get_filter::v3::Request>(),
        // Reading rooms.
        TypeId::of::<c::room::get_room_event::v3::Request>(),
        TypeId::of::<c::message::get_message_events::v3::Request>(),
        TypeId::of::<c::state::get_state_events::v3::Request>(),
        TypeId::of::<c::state::get_state_event_for_key::v3::Request>(),
        TypeId::of::<c::context::get_context::v3::Request>(),
        TypeId::of::<c::membership::get_member_events::v3::Request>(),
        TypeId::of::<c::membership::joined_members::v3::Request>(),
        TypeId::of::<c::membership::joined_rooms::v3::Request>(),
        TypeId::of::<c::relations::get_relating_events::v1::Request>(),
        TypeId::of::<c::relations::get_relating_events_with_rel_type::v1::Request>(),
        TypeId::of::<c::relations::get_relating_events_with_rel_type_and_event_type::v1::Request>(),
        // Taking part: joining (where `m.room.guest_access` allows it), leaving, messages,
        // typing, receipts and read markers.
        TypeId::of::<c::membership::join_room_by_id::v3::Request>(),
        TypeId::of::<c::membership::join_room_by_id_or_alias::v3::Request>(),
        TypeId::of::<c::membership::leave_room::v3::Request>(),
        TypeId::of::<c::message::send_message_event::v3::Request>(),
        TypeId::of::<c::typing::create_typing_event::v3::Request>(),
        TypeId::of::<c::receipt::create_receipt::v3::Request>(),
        TypeId::of::<c::read_marker::set_read_marker::v3::Request>(),
        // Finding rooms.
        TypeId::of::<c::directory::get_public_rooms::v3::Request>(),
        TypeId::of::<c::directory::get_public_rooms_filtered::v3::Request>(),
        TypeId::of::<c::room::get_summary::v1::Request>(),
        TypeId::of::<c::alias::get_alias::v3::Request>(),
        // Downloading media (the legacy endpoints take no token at all).
        TypeId::of::<authed::get_media_config::v1::Request>(),
        TypeId::of::<authed::get_content::v1::Request>(),
        TypeId::of::<authed::get_content_as_filename::v1::Request>(),
        TypeId::of::<authed::get_content_thumbnail::v1::Request>(),
    ];
    allowed.contains(&id)
}

/// Whether a guest may make this particular request of an allowed endpoint: of all event
/// types, guests send only `m.room.message` (the spec's list names no other).
pub fn request_allowed<R: 'static>(request: &R) -> bool {
    let request: &dyn Any = request;
    match request.downcast_ref::<c::message::send_message_event::v3::Request>() {
        Some(send) => send.event_type.to_string() == "m.room.message",
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_read_and_talk_but_do_not_administer() {
        assert!(endpoint_allowed::<c::sync::sync_events::v3::Request>());
        assert!(endpoint_allowed::<c::membership::join_room_by_id::v3::Request>());
        assert!(endpoint_allowed::<c::profile::set_display_name::v3::Request>());
        assert!(!endpoint_allowed::<c::profile::set_avatar_url::v3::Request>());
        assert!(!endpoint_allowed::<c::room::create_room::v3::Request>());
        assert!(!endpoint_allowed::<c::membership::invite_user::v3::Request>());
        assert!(!endpoint_allowed::<c::state::send_state_event::v3::Request>());
        assert!(!endpoint_allowed::<c::config::set_global_account_data::v3::Request>());
        assert!(!endpoint_allowed::<c::backup::create_backup_version::v3::Request>());
    }

    #[test]
    fn guests_send_only_messages() {
        use ruma::{events::AnyMessageLikeEventContent, owned_room_id, serde::Raw};
        let body: Raw<AnyMessageLikeEventContent> = Raw::from_json_string("{}".to_owned()).expect("valid JSON");
        let send = |kind: &str| {
            c::message::send_message_event::v3::Request::new_raw(
                owned_room_id!("!r:example.org"),
                "t1".into(),
                kind.into(),
                body.clone(),
            )
        };
        assert!(request_allowed(&send("m.room.message")));
        assert!(!request_allowed(&send("m.reaction")));
        assert!(request_allowed(&c::discovery::get_supported_versions::Request::new()));
    }
}
