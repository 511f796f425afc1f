//! The room's power levels as ruma computes them (including v12's infinitely powerful creators).

use poststelle_federation::Pdu;
use ruma::{
    OwnedUserId, UserId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource, UserPowerLevel},
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::Value as JsonValue;

#[derive(Debug)]
pub struct PowerLevels(RoomPowerLevels);

/// The creators of a room: the create event's sender, plus `additional_creators` from v12 on.
pub fn creators(rules: &RoomVersionRules, create: Option<&Pdu>) -> Vec<OwnedUserId> {
    let Some(create) = create else { return Vec::new() };
    let mut out = vec![create.sender.clone()];
    if rules.authorization.additional_room_creators
        && let Ok(content) = serde_json::from_str::<JsonValue>(create.content.get())
        && let Some(extra) = content.get("additional_creators").and_then(JsonValue::as_array)
    {
        out.extend(extra.iter().filter_map(|u| u.as_str()).filter_map(|u| OwnedUserId::try_from(u).ok()));
    }
    out
}

impl PowerLevels {
    pub fn new(rules: &RoomVersionRules, create: Option<&Pdu>, content: Option<JsonValue>) -> Self {
        let source = match content.and_then(|c| serde_json::from_value::<RoomPowerLevelsEventContent>(c).ok()) {
            Some(c) => RoomPowerLevelsSource::Original(c),
            None => RoomPowerLevelsSource::None,
        };
        Self(RoomPowerLevels::new(source, &rules.authorization, creators(rules, create)))
    }

    pub fn into_inner(self) -> RoomPowerLevels {
        self.0
    }

    pub fn can_redact_others(&self, user: &UserId) -> bool {
        self.0.user_can_redact_event_of_other(user)
    }

    pub fn can_send_state(&self, user: &UserId, kind: &str) -> bool {
        self.0.user_can_send_state(user, StateEventType::from(kind))
    }

    pub fn for_user(&self, user: &UserId) -> UserPowerLevel {
        self.0.for_user(user)
    }

    pub fn can_trigger_room_notification(&self, user: &UserId) -> bool {
        self.0.user_can_trigger_room_notification(user)
    }
}
