//! Room upgrades: a new room of the requested version that carries the old room's settings,
//! a tombstone pointing to it, the aliases and members' settings moved over (see
//! [`super::replacement`]), and the old room silenced.

use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{Map, Value as JsonValue, json};

use super::{CreateRoom, MembershipChange, RoomService, SUPPORTED_ROOM_VERSIONS, SendEvent, client_format::content_of};
use crate::service::{ServiceError, ServiceResult};

/// State copied into the new room as it is.
const COPIED_STATE: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

fn object(v: JsonValue) -> Map<String, JsonValue> {
    match v {
        JsonValue::Object(m) => m,
        _ => Map::new(),
    }
}

impl RoomService {
    pub async fn upgrade_room(
        &self,
        user: OwnedUserId,
        room_id: OwnedRoomId,
        new_version: String,
        additional_creators: Vec<OwnedUserId>,
    ) -> ServiceResult<OwnedRoomId> {
        if !SUPPORTED_ROOM_VERSIONS.contains(&new_version.as_str()) {
            return Err(ServiceError::UnsupportedRoomVersion(new_version));
        }
        let old = room_id.as_str();
        if !self.storage.rooms.membership(old, user.as_str()).await?.is_some_and(|m| m.membership == "join") {
            return Err(ServiceError::Forbidden(format!("{user} is not joined to {old}")));
        }
        let power = self.current_power_levels(old).await?;
        if !power.can_send_state(&user, "m.room.tombstone") {
            return Err(ServiceError::Forbidden("you may not upgrade this room".into()));
        }
        let rules = RoomVersionId::try_from(new_version.as_str())
            .ok()
            .and_then(|v| v.rules())
            .ok_or_else(|| ServiceError::UnsupportedRoomVersion(new_version.clone()))?;

        let state = self.storage.rooms.current_state(old).await?;
        let content = |kind: &str| {
            state
                .iter()
                .find(|r| r.event_type == kind && r.state_key.as_deref() == Some(""))
                .map(|r| content_of(&r.pdu))
        };

        // The create event: room type and federation flag carry over, the predecessor is named.
        let mut creation = Map::new();
        if let Some(old_create) = content("m.room.create") {
            for key in ["type", "m.federate"] {
                if let Some(v) = old_create.get(key) {
                    creation.insert(key.into(), v.clone());
                }
            }
        }
        let mut predecessor = json!({ "room_id": old });
        if !rules.authorization.room_create_event_id_as_room_id
            && let Some(last) = self.storage.rooms.events_backwards(old, -1, i64::MAX, 1).await?.first()
        {
            predecessor["event_id"] = last.event_id.clone().into();
        }
        creation.insert("predecessor".into(), predecessor);
        if rules.authorization.additional_room_creators && !additional_creators.is_empty() {
            creation.insert("additional_creators".into(), json!(additional_creators));
        }

        // Power levels as they were; creators of a v12+ room hold their power by being creators.
        let mut power_content = content("m.room.power_levels").map(object).unwrap_or_default();
        let mut users = power_content.remove("users").map(object).unwrap_or_default();
        if rules.authorization.explicitly_privilege_room_creators {
            users.remove(user.as_str());
            for c in &additional_creators {
                users.remove(c.as_str());
            }
        } else {
            users.insert(user.to_string(), 100.into());
        }
        power_content.insert("users".into(), JsonValue::Object(users));

        let initial_state = COPIED_STATE
            .iter()
            .filter_map(|kind| content(kind).map(|c| ((*kind).to_owned(), String::new(), object(c))))
            .collect();
        let was_public = self.storage.rooms.is_public(old).await?.unwrap_or(false);
        let (new_room, _) = self
            .create_room(CreateRoom {
                creator: user.clone(),
                room_version: Some(new_version.clone()),
                preset: None,
                visibility_public: was_public,
                creation_content: creation,
                power_level_content_override: Some(power_content.clone()),
                initial_state,
                name: None,
                topic: None,
                room_alias_name: None,
                invite: Vec::new(),
                is_direct: false,
            })
            .await?;
        let new = new_room.as_str();

        let send = |target: &OwnedRoomId, kind: &str, content: Map<String, JsonValue>| SendEvent {
            room_id: target.clone(),
            sender: user.clone(),
            kind: kind.into(),
            state_key: Some(String::new()),
            content,
            redacts: None,
            txn: None,
            sender_device: None,
        };
        self.send(send(
            &room_id,
            "m.room.tombstone",
            object(json!({"body": "This room has been replaced", "replacement_room": new})),
        ))
        .await?;

        // Aliases, the directory entry and members' settings follow the room; so does the
        // canonical alias.
        self.transfer_to_replacement(old, new).await?;
        if let Some(canonical) = content("m.room.canonical_alias").map(object).filter(|c| !c.is_empty()) {
            self.send(send(&room_id, "m.room.canonical_alias", Map::new())).await?;
            let local_only: Map<String, JsonValue> = canonical;
            if let Err(e) = self.send(send(&new_room, "m.room.canonical_alias", local_only)).await {
                tracing::warn!(room_id = %new, error = %e, "canonical alias not carried over");
            }
        }

        // Bans carry over.
        for member in self.storage.rooms.members(old).await? {
            if member.membership == "ban"
                && let Ok(target) = OwnedUserId::try_from(member.user_id.as_str())
                && let Err(e) = self
                    .change_membership(MembershipChange {
                        room_id: new_room.clone(),
                        sender: user.clone(),
                        target,
                        membership: "ban".into(),
                        reason: None,
                        extra: Map::new(),
                    })
                    .await
            {
                tracing::warn!(room_id = %new, user_id = %member.user_id, error = %e, "ban not carried over");
            }
        }

        // The old room: only moderators may still speak or invite.
        let users_default = power_content.get("users_default").and_then(JsonValue::as_i64).unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        let mut old_power = content("m.room.power_levels").map(object).unwrap_or_default();
        for key in ["events_default", "invite"] {
            let current = old_power.get(key).and_then(JsonValue::as_i64).unwrap_or(0);
            old_power.insert(key.into(), current.max(restricted).into());
        }
        if let Err(e) = self.send(send(&room_id, "m.room.power_levels", old_power)).await {
            tracing::warn!(room_id = %old, error = %e, "old room not restricted after upgrade");
        }
        tracing::info!(old_room = %old, new_room = %new, version = %new_version, "room upgraded");
        Ok(new_room)
    }
}
