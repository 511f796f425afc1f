//! Room aliases, the public room directory, room summaries and the user directory.

use ruma::{OwnedRoomId, UserId};
use serde_json::{Map, Value as JsonValue};

use super::{RoomService, client_format::content_of, persist::parse_pdu, power::PowerLevels};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::now_ms,
};

/// Public rooms per page unless the client asks otherwise, and at most.
const DEFAULT_PUBLIC_ROOMS: usize = 100;
const MAX_PUBLIC_ROOMS: usize = 500;

impl RoomService {
    /// The power levels in a room's current state.
    pub(super) async fn current_power_levels(&self, room_id: &str) -> ServiceResult<PowerLevels> {
        let rules = self.version_rules(room_id).await?;
        let create = match self.storage.rooms.current_state_event(room_id, "m.room.create", "").await? {
            Some(row) => Some(parse_pdu(&row.event_id, &row.pdu)?),
            None => None,
        };
        let pl = self.storage.rooms.current_state_event(room_id, "m.room.power_levels", "").await?;
        Ok(PowerLevels::new(&rules, create.as_ref(), pl.map(|r| content_of(&r.pdu))))
    }

    async fn is_joined(&self, room_id: &str, user_id: &str) -> ServiceResult<bool> {
        Ok(self.storage.rooms.membership(room_id, user_id).await?.is_some_and(|m| m.membership == "join"))
    }

    /// The string field `field` of a current state event's content.
    async fn state_str(&self, room_id: &str, kind: &str, field: &str) -> ServiceResult<Option<String>> {
        Ok(self
            .storage
            .rooms
            .current_state_event(room_id, kind, "")
            .await?
            .and_then(|r| content_of(&r.pdu).get(field).and_then(JsonValue::as_str).map(str::to_owned)))
    }

    /// A local alias must name this server.
    fn local_alias(&self, alias: &ruma::RoomAliasId) -> ServiceResult<()> {
        if alias.server_name() != self.server_name {
            return Err(ServiceError::InvalidParam(format!("{alias} is not an alias of this server")));
        }
        Ok(())
    }

    /// `PUT /directory/room/{alias}`: joined members may add aliases.
    pub async fn create_alias(&self, user_id: &str, alias: &ruma::RoomAliasId, room_id: &str) -> ServiceResult<()> {
        self.local_alias(alias)?;
        if self.storage.rooms.room_version(room_id).await?.is_none() {
            return Err(ServiceError::NotFound("unknown room".into()));
        }
        if !self.is_joined(room_id, user_id).await? {
            return Err(ServiceError::Forbidden(format!("{user_id} is not joined to {room_id}")));
        }
        if self.storage.rooms.alias(alias.as_str()).await?.is_some() {
            return Err(ServiceError::AliasExists(alias.to_string()));
        }
        // A concurrent insert of the same alias loses on the primary key.
        match self.storage.rooms.insert_alias(alias.as_str(), room_id, user_id, now_ms()).await {
            Err(crate::storage::StorageError::Conflict(_)) => Err(ServiceError::AliasExists(alias.to_string())),
            other => Ok(other?),
        }
    }

    /// `GET /directory/room/{alias}`: the room and the servers that can join it.
    pub async fn get_alias(&self, alias: &ruma::RoomAliasId) -> ServiceResult<(OwnedRoomId, Vec<String>)> {
        let (room_id, _) = self
            .storage
            .rooms
            .alias(alias.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("room alias {alias} not found")))?;
        let room_id = OwnedRoomId::try_from(room_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok((room_id, vec![self.server_name.to_string()]))
    }

    /// `DELETE /directory/room/{alias}`: by its creator, a server admin, or a room member who
    /// may change the room's canonical alias.
    pub async fn delete_alias(&self, user_id: &UserId, is_admin: bool, alias: &ruma::RoomAliasId) -> ServiceResult<()> {
        self.local_alias(alias)?;
        let (room_id, creator) = self
            .storage
            .rooms
            .alias(alias.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("room alias {alias} not found")))?;
        let allowed = is_admin
            || creator == user_id.as_str()
            || (self.is_joined(&room_id, user_id.as_str()).await?
                && self.current_power_levels(&room_id).await?.can_send_state(user_id, "m.room.canonical_alias"));
        if !allowed {
            return Err(ServiceError::Forbidden("you may not delete this alias".into()));
        }
        self.storage.rooms.delete_alias(alias.as_str()).await?;
        Ok(())
    }

    /// `GET /rooms/{roomId}/aliases`: for members (or anyone in a world-readable room).
    pub async fn room_aliases(&self, user_id: &str, room_id: &str) -> ServiceResult<Vec<String>> {
        if self.storage.rooms.room_version(room_id).await?.is_none() {
            return Err(ServiceError::NotFound("unknown room".into()));
        }
        let world_readable =
            self.state_str(room_id, "m.room.history_visibility", "history_visibility").await?.as_deref()
                == Some("world_readable");
        if !world_readable && !self.is_joined(room_id, user_id).await? {
            return Err(ServiceError::Forbidden(format!("{user_id} is not joined to {room_id}")));
        }
        Ok(self.storage.rooms.aliases_of(room_id).await?)
    }

    /// Whether a room is published in the directory.
    pub async fn directory_visibility(&self, room_id: &str) -> ServiceResult<bool> {
        self.storage.rooms.is_public(room_id).await?.ok_or_else(|| ServiceError::NotFound("unknown room".into()))
    }

    /// Publishes or unpublishes a room: server admins, or members who may change the room's
    /// canonical alias.
    pub async fn set_directory_visibility(
        &self,
        user_id: &UserId,
        is_admin: bool,
        room_id: &str,
        public: bool,
    ) -> ServiceResult<()> {
        if self.storage.rooms.room_version(room_id).await?.is_none() {
            return Err(ServiceError::NotFound("unknown room".into()));
        }
        let allowed = is_admin
            || (self.is_joined(room_id, user_id.as_str()).await?
                && self.current_power_levels(room_id).await?.can_send_state(user_id, "m.room.canonical_alias"));
        if !allowed {
            return Err(ServiceError::Forbidden("you may not change this room's directory visibility".into()));
        }
        self.storage.rooms.set_public(room_id, public).await?;
        Ok(())
    }

    /// The summary of a room as the directory and `room_summary` show it.
    async fn room_summary_json(&self, room_id: &str, joined: i64) -> ServiceResult<Map<String, JsonValue>> {
        let mut out = Map::new();
        out.insert("room_id".into(), room_id.into());
        out.insert("num_joined_members".into(), joined.into());
        for (kind, field, key) in [
            ("m.room.name", "name", "name"),
            ("m.room.topic", "topic", "topic"),
            ("m.room.canonical_alias", "alias", "canonical_alias"),
            ("m.room.avatar", "url", "avatar_url"),
        ] {
            if let Some(v) = self.state_str(room_id, kind, field).await?.filter(|v| !v.is_empty()) {
                out.insert(key.into(), v.into());
            }
        }
        let join_rule = self.state_str(room_id, "m.room.join_rules", "join_rule").await?.unwrap_or("invite".into());
        let visibility = self.state_str(room_id, "m.room.history_visibility", "history_visibility").await?;
        let guest = self.state_str(room_id, "m.room.guest_access", "guest_access").await?;
        out.insert("world_readable".into(), (visibility.as_deref() == Some("world_readable")).into());
        out.insert("guest_can_join".into(), (guest.as_deref() == Some("can_join")).into());
        out.insert("join_rule".into(), join_rule.into());
        if let Some(t) = self.state_str(room_id, "m.room.create", "type").await? {
            out.insert("room_type".into(), t.into());
        }
        Ok(out)
    }

    /// The public room directory: rooms matching `term` (name, topic, alias), most members first,
    /// paged by `since` tokens (`p<offset>`).
    pub async fn public_rooms(
        &self,
        since: Option<&str>,
        limit: Option<usize>,
        term: Option<&str>,
    ) -> ServiceResult<(Vec<JsonValue>, Option<String>, Option<String>, usize)> {
        let offset = match since {
            None => 0,
            Some(t) => t
                .strip_prefix('p')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| ServiceError::InvalidParam(format!("unknown pagination token {t:?}")))?,
        };
        let limit = limit.unwrap_or(DEFAULT_PUBLIC_ROOMS).clamp(1, MAX_PUBLIC_ROOMS);
        let term = term.map(str::to_lowercase).filter(|t| !t.trim().is_empty());
        let (rows, _) = self.storage.rooms.public_rooms(0, i64::MAX).await?;
        let mut matching = Vec::new();
        for row in rows {
            let summary = self.room_summary_json(&row.room_id, row.joined).await?;
            let hit = term.as_deref().is_none_or(|t| {
                ["name", "topic", "canonical_alias", "room_id"]
                    .iter()
                    .any(|f| summary.get(*f).and_then(JsonValue::as_str).is_some_and(|v| v.to_lowercase().contains(t)))
            });
            if hit {
                matching.push(JsonValue::Object(summary));
            }
        }
        let total = matching.len();
        let page: Vec<JsonValue> = matching.into_iter().skip(offset).take(limit).collect();
        let next = (offset + page.len() < total).then(|| format!("p{}", offset + page.len()));
        let prev = (offset > 0).then(|| format!("p{}", offset.saturating_sub(limit)));
        Ok((page, next, prev, total))
    }

    /// `room_summary`: for rooms the user is in or invited to, or that anyone may see or join.
    pub async fn summary_for(
        &self,
        user_id: Option<&str>,
        target: &ruma::RoomOrAliasId,
    ) -> ServiceResult<(JsonValue, Option<String>)> {
        let hidden = || ServiceError::NotFound("room not found or not accessible".into());
        let room_id = self.resolve_room(target).await.map_err(|_| hidden())?;
        let room_id = room_id.as_str();
        let version = self.storage.rooms.room_version(room_id).await?.ok_or_else(hidden)?;
        let membership = match user_id {
            Some(u) => self.storage.rooms.membership(room_id, u).await?.map(|m| m.membership),
            None => None,
        };
        let joined =
            i64::try_from(self.storage.rooms.members(room_id).await?.iter().filter(|m| m.membership == "join").count())
                .unwrap_or(i64::MAX);
        let mut summary = self.room_summary_json(room_id, joined).await?;
        let join_rule = summary.get("join_rule").and_then(JsonValue::as_str).unwrap_or_default().to_owned();
        let open = matches!(join_rule.as_str(), "public" | "knock" | "restricted" | "knock_restricted")
            || summary.get("world_readable") == Some(&JsonValue::Bool(true));
        let member = membership.as_deref().is_some_and(|m| m == "join" || m == "invite" || m == "knock");
        if !open && !member {
            return Err(hidden());
        }
        summary.insert("room_version".into(), version.into());
        if let Some(alg) = self.state_str(room_id, "m.room.encryption", "algorithm").await? {
            summary.insert("encryption".into(), alg.into());
        }
        Ok((JsonValue::Object(summary), membership))
    }

    /// The user directory: users sharing a room with the searcher or in a public room.
    pub async fn search_users(
        &self,
        searcher: &str,
        term: &str,
        limit: usize,
    ) -> ServiceResult<(Vec<(String, Option<String>, Option<String>)>, bool)> {
        let limit = limit.clamp(1, 100);
        let mut found =
            self.storage.rooms.search_users(searcher, term, i64::try_from(limit + 1).unwrap_or(101)).await?;
        let limited = found.len() > limit;
        found.truncate(limit);
        Ok((found, limited))
    }

    /// `timestamp_to_event`: the visible event closest to `ts` in the direction given.
    pub async fn event_at_time(
        &self,
        user_id: &str,
        room_id: &str,
        ts: i64,
        forwards: bool,
    ) -> ServiceResult<(String, i64)> {
        self.rules_of(room_id).await?;
        let vis = self.visibility(room_id, user_id).await?;
        if vis.memberships.is_empty() && !vis.settings.last().is_some_and(|(_, s)| s == "world_readable") {
            return Err(ServiceError::Forbidden(format!("{user_id} is not in this room")));
        }
        let candidates = self.storage.rooms.events_near_time(room_id, ts, forwards, 50).await?;
        candidates.into_iter().find(|(_, pos, _)| vis.allows(*pos)).map(|(id, _, ts)| (id, ts)).ok_or_else(|| {
            ServiceError::NotFound(format!("no event found {} {ts}", if forwards { "after" } else { "before" }))
        })
    }
}
