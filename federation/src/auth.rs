//! The spec's authorisation rules for an event, through ruma-state-res: which state an event is
//! authorised against, and the check itself. Pure: events and state come in through closures.

use ruma::{
    EventId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::AuthorizationRules,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::Pdu;

/// The `(type, state_key)` pairs of the current state that authorise a new event.
pub fn auth_types(
    rules: &AuthorizationRules,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawJsonValue,
) -> Result<Vec<(StateEventType, String)>, String> {
    ruma::state_res::auth_types_for_event(kind, sender, state_key, content, rules)
}

/// Checks an event against its auth events (state-independent rules) and against the given
/// state (state-dependent rules). `Err` carries the rule that failed, for the client.
pub fn check(
    rules: &AuthorizationRules,
    event: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), String> {
    ruma::state_res::check_state_independent_auth_rules(rules, event, fetch_event)?;
    ruma::state_res::check_state_dependent_auth_rules(rules, event, fetch_state)
}

/// Checks a received event against its own auth events: the state-independent rules, and the
/// state-dependent ones with the auth events standing in for the state (the spec's check 4 on
/// receipt of a PDU; checks 5 and 6 use [`check`] with the state before the event and the
/// current state).
pub fn check_against_auth_events(
    rules: &AuthorizationRules,
    event: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<(), String> {
    let auth: Vec<Pdu> = event.auth_events.iter().filter_map(|id| fetch_event(id)).collect();
    // From room version 12 on the create event is implied by the room id, not listed.
    let implied_create = match (&event.room_id, rules.room_create_event_id_as_room_id) {
        (Some(room), true) => {
            EventId::parse(format!("${}", room.as_str().trim_start_matches('!'))).ok().and_then(|id| fetch_event(&id))
        }
        _ => None,
    };
    check(rules, event, &fetch_event, |kind, key| {
        auth.iter()
            .find(|p| p.kind.to_string() == kind.to_string() && p.state_key.as_deref() == Some(key))
            .cloned()
            .or_else(|| {
                (*kind == StateEventType::RoomCreate && key.is_empty()).then(|| implied_create.clone()).flatten()
            })
    })
}
