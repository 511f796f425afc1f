//! `createRoom`: the create event, the creator's join, power levels, the preset's rules, the
//! initial state, name, topic, alias and invites, all in one transaction.

use poststelle_federation::{ProtoEvent, builder::room_id_of_create_event};
use rand::{Rng, distributions::Alphanumeric};
use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{Map, Value as JsonValue, json};

use super::{RoomCtx, RoomService, SUPPORTED_ROOM_VERSIONS};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::now_ms,
};

/// A `createRoom` request in domain terms.
#[derive(Debug)]
pub struct CreateRoom {
    pub creator: OwnedUserId,
    pub room_version: Option<String>,
    /// `private_chat`, `trusted_private_chat` or `public_chat`.
    pub preset: Option<String>,
    pub visibility_public: bool,
    pub creation_content: Map<String, JsonValue>,
    pub power_level_content_override: Option<Map<String, JsonValue>>,
    /// `(type, state_key, content)`.
    pub initial_state: Vec<(String, String, Map<String, JsonValue>)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub room_alias_name: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
}

fn obj(v: JsonValue) -> Map<String, JsonValue> {
    match v {
        JsonValue::Object(m) => m,
        _ => Map::new(),
    }
}

impl RoomService {
    pub async fn create_room(&self, req: CreateRoom) -> ServiceResult<(OwnedRoomId, Option<String>)> {
        let version_str = req.room_version.clone().unwrap_or_else(|| self.default_version.to_string());
        if !SUPPORTED_ROOM_VERSIONS.contains(&version_str.as_str()) {
            return Err(ServiceError::UnsupportedRoomVersion(version_str));
        }
        let version = RoomVersionId::try_from(version_str.as_str())
            .map_err(|_| ServiceError::UnsupportedRoomVersion(version_str.clone()))?;
        let rules = version.rules().ok_or_else(|| ServiceError::UnsupportedRoomVersion(version_str.clone()))?;
        let preset = match req.preset.as_deref() {
            Some(p @ ("private_chat" | "trusted_private_chat" | "public_chat")) => p.to_owned(),
            Some(other) => return Err(ServiceError::BadJson(format!("unknown preset {other}"))),
            None if req.visibility_public => "public_chat".into(),
            None => "private_chat".into(),
        };
        let alias = match &req.room_alias_name {
            Some(local) => {
                if local.is_empty() || local.contains(':') || local.contains(char::is_whitespace) {
                    return Err(ServiceError::InvalidParam("room_alias_name must be a bare localpart".into()));
                }
                let alias = format!("#{local}:{}", self.server_name);
                ruma::RoomAliasId::parse(&alias).map_err(|e| ServiceError::InvalidParam(e.to_string()))?;
                if self.storage.rooms.alias(&alias).await?.is_some() {
                    return Err(ServiceError::RoomInUse);
                }
                Some(alias)
            }
            None => None,
        };
        let mut mls = false;
        for (t, key, content) in &req.initial_state {
            if t == "m.room.create" || t == "m.room.member" || t == super::mls::COMMIT_TYPE {
                return Err(ServiceError::BadJson(format!("{t} cannot be part of initial_state")));
            }
            if t == "m.room.encryption" && key.is_empty() {
                super::mls::check_encryption_content(content)?;
                mls |= content
                    .get("algorithm")
                    .and_then(JsonValue::as_str)
                    .is_some_and(poststelle_mls::Suite::is_mls_algorithm);
            }
        }

        // The create event.
        let mut create_content = req.creation_content.clone();
        create_content.insert("room_version".into(), version_str.clone().into());
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".into(), req.creator.to_string().into());
        } else {
            create_content.remove("creator");
        }
        if !rules.authorization.additional_room_creators {
            create_content.remove("additional_creators");
        } else {
            let mut creators = match create_content.remove("additional_creators") {
                None => Vec::new(),
                Some(JsonValue::Array(list))
                    if list.iter().all(|u| u.as_str().is_some_and(|u| ruma::UserId::parse(u).is_ok())) =>
                {
                    list
                }
                Some(_) => return Err(ServiceError::BadJson("additional_creators must be a list of user ids".into())),
            };
            // v12: the trusted preset makes invitees creators rather than power-100 users, besides
            // any creators the client named.
            if preset == "trusted_private_chat" {
                for invitee in &req.invite {
                    let invitee = JsonValue::from(invitee.to_string());
                    if !creators.contains(&invitee) {
                        creators.push(invitee);
                    }
                }
            }
            if !creators.is_empty() {
                create_content.insert("additional_creators".into(), creators.into());
            }
        }
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            let local: String = rand::thread_rng().sample_iter(&Alphanumeric).take(18).map(char::from).collect();
            Some(
                OwnedRoomId::try_from(format!("!{local}:{}", self.server_name))
                    .map_err(|e| ServiceError::Internal(e.to_string()))?,
            )
        };
        let create_proto = ProtoEvent {
            room_id: room_id.clone(),
            sender: req.creator.clone(),
            kind: "m.room.create".into(),
            state_key: Some(String::new()),
            content: create_content,
            redacts: None,
        };
        // For v12 the room id is the create event's hash: build it once to learn the id, then
        // append the same event (same timestamp) under that room's lock.
        let ts = u64::try_from(now_ms()).unwrap_or_default();
        let room_id = match room_id {
            Some(r) => r,
            None => {
                let probe = poststelle_federation::builder::build_event(
                    create_proto.clone(),
                    poststelle_federation::builder::Placement {
                        prev_events: vec![],
                        auth_events: vec![],
                        depth: 1,
                        origin_server_ts: ts,
                    },
                    &rules,
                    &self.server_name,
                    &self.key,
                )
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
                room_id_of_create_event(&probe.pdu.event_id, &self.server_name)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?
            }
        };

        let _guard = self.stripe(room_id.as_str()).lock().await;
        let mut ctx = RoomCtx::create(self, room_id.as_str(), version.clone(), req.creator.as_str()).await?;
        let create = ctx.append_at(self, create_proto, None, Some(ts)).await?;
        let defined = match &create.room_id {
            Some(r) => r.clone(),
            None => room_id_of_create_event(&create.event_id, &self.server_name)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
        };
        if defined != room_id {
            return Err(ServiceError::Internal("the create event does not define the expected room id".into()));
        }
        let proto = |kind: &str, key: &str, content: Map<String, JsonValue>| ProtoEvent {
            room_id: Some(room_id.clone()),
            sender: req.creator.clone(),
            kind: kind.into(),
            state_key: Some(key.into()),
            content,
            redacts: None,
        };

        let mut member = Map::new();
        member.insert("membership".into(), "join".into());
        self.add_profile(req.creator.as_str(), &mut member).await?;
        ctx.append(self, proto("m.room.member", req.creator.as_str(), member), None).await?;

        // Power levels: the spec's defaults, the preset's, then the client's override.
        let mut users = Map::new();
        if !rules.authorization.explicitly_privilege_room_creators {
            users.insert(req.creator.to_string(), 100.into());
        }
        if preset == "trusted_private_chat" && !rules.authorization.additional_room_creators {
            for u in &req.invite {
                users.insert(u.to_string(), 100.into());
            }
        }
        let mut power = obj(json!({
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                // From v12 on, above what an admin at 100 has: only creators upgrade by default.
                "m.room.tombstone": if rules.authorization.explicitly_privilege_room_creators { 150 } else { 100 },
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": if preset == "public_chat" { 0 } else { 50 },
            "notifications": {"room": 50},
        }));
        power.insert("users".into(), JsonValue::Object(users));
        if mls && let Some(JsonValue::Object(events)) = power.get_mut("events") {
            // Every member commits (adds devices, updates keys); MLS decides what a commit may do.
            events.insert(super::mls::COMMIT_TYPE.into(), 0.into());
        }
        if let Some(over) = req.power_level_content_override {
            for (k, v) in over {
                power.insert(k, v);
            }
        }
        // The spec's M_INVALID_ROOM_STATE: the request implies state its own creator cannot set.
        let initial: ServiceResult<()> = async {
            ctx.append(self, proto("m.room.power_levels", "", power), None).await?;

            if let Some(alias) = &alias {
                ctx.writer.insert_alias(alias, req.creator.as_str(), now_ms()).await.map_err(|e| match e {
                    crate::storage::StorageError::Conflict(_) => ServiceError::RoomInUse,
                    other => other.into(),
                })?;
                ctx.append(self, proto("m.room.canonical_alias", "", obj(json!({"alias": alias}))), None).await?;
            }

            let join_rule = if preset == "public_chat" { "public" } else { "invite" };
            let guest_access = if preset == "public_chat" { "forbidden" } else { "can_join" };
            let initial_has = |t: &str| req.initial_state.iter().any(|(k, s, _)| k == t && s.is_empty());
            if !initial_has("m.room.join_rules") {
                ctx.append(self, proto("m.room.join_rules", "", obj(json!({"join_rule": join_rule}))), None).await?;
            }
            if !initial_has("m.room.history_visibility") {
                ctx.append(
                    self,
                    proto("m.room.history_visibility", "", obj(json!({"history_visibility": "shared"}))),
                    None,
                )
                .await?;
            }
            if !initial_has("m.room.guest_access") {
                ctx.append(self, proto("m.room.guest_access", "", obj(json!({"guest_access": guest_access}))), None)
                    .await?;
            }
            for (t, key, content) in &req.initial_state {
                ctx.append(self, proto(t, key, content.clone()), None).await?;
            }
            if let Some(name) = &req.name {
                ctx.append(self, proto("m.room.name", "", obj(json!({"name": name}))), None).await?;
            }
            if let Some(topic) = &req.topic {
                ctx.append(
                    self,
                    proto(
                        "m.room.topic",
                        "",
                        obj(
                            json!({"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}}),
                        ),
                    ),
                    None,
                )
                .await?;
            }
            // Users of other servers are invited through their servers once the room exists
            // (`FederationService::create_room`).
            for invitee in req.invite.iter().filter(|u| u.server_name() == self.server_name) {
                let mut content = obj(json!({"membership": "invite"}));
                if req.is_direct {
                    content.insert("is_direct".into(), true.into());
                }
                ctx.append(self, proto("m.room.member", invitee.as_str(), content), None).await?;
            }
            Ok(())
        }
        .await;
        initial.map_err(|e| match e {
            ServiceError::Forbidden(why) => ServiceError::InvalidRoomState(why),
            other => other,
        })?;
        if req.visibility_public {
            ctx.writer.set_public(true).await?;
        }
        ctx.commit(self).await?;
        tracing::info!(room_id = %room_id, version = %version_str, preset = %preset, "room created");
        Ok((room_id, alias))
    }
}
