//! Reading rooms: single events, state, members, pagination, context and relations, each
//! limited to what the reader may see.

use ruma::{
    RoomVersionId,
    room_version_rules::{RedactionRules, RoomVersionRules},
};
use serde_json::Value as JsonValue;

use super::{
    RoomService,
    client_format::{Viewer, client_event, content_of, pruned_pdu},
    visibility::Visibility,
};
use crate::{
    service::{ServiceError, ServiceResult, filter::EventFilter},
    storage::{now_ms, rooms::EventRow},
};

/// A position between events: everything at or before it has been seen (`t<pos>` on the wire,
/// negative in history fetched from other servers; `/sync` tokens start with `s` and carry it
/// as their first number).
pub fn parse_position(token: &str) -> ServiceResult<i64> {
    let malformed = || ServiceError::InvalidParam(format!("malformed token {token:?}"));
    if let Some(digits) = token.strip_prefix('t') {
        return digits.parse::<i64>().map_err(|_| malformed());
    }
    let digits = token
        .strip_prefix('s')
        .map(|s| s.split('_').next().unwrap_or_default())
        .ok_or_else(|| ServiceError::InvalidParam(format!("unknown pagination token {token:?}")))?;
    digits.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(malformed)
}

pub fn position_token(pos: i64) -> String {
    format!("t{pos}")
}

/// Which page of `/messages` to read: from and to tokens, the direction, the most events.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub backwards: bool,
    pub limit: usize,
}

impl<'a> PageRequest<'a> {
    /// Up to `limit` events before `from`.
    pub fn back_from(from: &'a str, limit: usize) -> Self {
        Self { from: Some(from), to: None, backwards: true, limit }
    }

    /// Up to `limit` events after `from`.
    pub fn on_from(from: &'a str, limit: usize) -> Self {
        Self { from: Some(from), to: None, backwards: false, limit }
    }
}

/// A page of `/messages`.
#[derive(Debug)]
pub struct Page {
    pub chunk: Vec<JsonValue>,
    pub start: String,
    pub end: Option<String>,
    pub state: Vec<JsonValue>,
}

/// `/context`.
#[derive(Debug)]
pub struct Context {
    pub event: JsonValue,
    pub before: Vec<JsonValue>,
    pub after: Vec<JsonValue>,
    pub start: String,
    pub end: String,
    pub state: Vec<JsonValue>,
}

impl RoomService {
    /// The rules of a room's version; `NotFound` for an unknown room.
    pub(super) async fn version_rules(&self, room_id: &str) -> ServiceResult<RoomVersionRules> {
        let version = self.version_of(room_id).await?.ok_or_else(|| ServiceError::NotFound("unknown room".into()))?;
        version.rules().ok_or_else(|| ServiceError::Internal(format!("unknown room version {version}")))
    }

    /// A room's version, `None` for an unknown room. It never changes: once known, it is not
    /// read again.
    pub(super) async fn version_of(&self, room_id: &str) -> ServiceResult<Option<RoomVersionId>> {
        if let Some(v) = self.versions.read().unwrap_or_else(|e| e.into_inner()).get(room_id) {
            return Ok(Some(v.clone()));
        }
        let Some(stored) = self.storage.rooms.room_version(room_id).await? else { return Ok(None) };
        let v = RoomVersionId::try_from(stored.as_str())
            .map_err(|_| ServiceError::Internal(format!("unknown room version {stored}")))?;
        self.versions.write().unwrap_or_else(|e| e.into_inner()).insert(room_id.to_owned(), v.clone());
        Ok(Some(v))
    }

    /// The redaction rules of a room (and so that the room exists).
    pub async fn rules_of(&self, room_id: &str) -> ServiceResult<RedactionRules> {
        Ok(self.version_rules(room_id).await?.redaction)
    }

    /// Events in the client format, for `viewer`.
    pub fn render(&self, rows: &[EventRow], rules: &RedactionRules, viewer: Viewer<'_>) -> Vec<JsonValue> {
        let now = now_ms();
        rows.iter().map(|r| client_event(r, rules, viewer, now)).collect()
    }

    /// The facts that decide what `user` may read in `room_id`.
    pub async fn visibility(&self, room_id: &str, user: &str) -> ServiceResult<Visibility> {
        let settings = self.history_settings(room_id).await?;
        // A forgotten room's history is no longer the user's to read (until they come back).
        let forgotten = self.storage.rooms.membership(room_id, user).await?.is_some_and(|m| m.forgotten);
        let memberships = if forgotten { Vec::new() } else { self.membership_history(room_id, user).await? };
        Ok(Visibility { settings, memberships })
    }

    /// The room's `history_visibility` settings over time: `(position, value)`.
    pub async fn history_settings(&self, room_id: &str) -> ServiceResult<Vec<(i64, String)>> {
        self.state_values(room_id, "m.room.history_visibility", "", "history_visibility").await
    }

    /// `user`'s memberships of the room over time: `(position, membership)`.
    pub async fn membership_history(&self, room_id: &str, user: &str) -> ServiceResult<Vec<(i64, String)>> {
        self.state_values(room_id, "m.room.member", user, "membership").await
    }

    async fn state_values(
        &self,
        room_id: &str,
        kind: &str,
        key: &str,
        field: &str,
    ) -> ServiceResult<Vec<(i64, String)>> {
        Ok(self
            .storage
            .rooms
            .state_history(room_id, kind, key)
            .await?
            .into_iter()
            .map(|(p, pdu)| (p, content_of(&pdu).get(field).and_then(JsonValue::as_str).unwrap_or_default().to_owned()))
            .collect())
    }

    /// Events of users who erased their account, as the reader may have them: pruned (their
    /// content removed, as by a redaction) unless the reader was joined when they were sent, as
    /// Synapse serves them. `rows` passed `vis` already; returns the ids of the pruned events.
    pub(crate) async fn prune_erased(
        &self,
        vis: &Visibility,
        rows: &mut [EventRow],
        rules: &RedactionRules,
    ) -> ServiceResult<std::collections::BTreeSet<String>> {
        let ours = format!(":{}", self.server_name);
        let unseen =
            |r: &EventRow| r.redacted_by.is_none() && r.sender.ends_with(&ours) && !vis.joined_at(r.stream_ordering);
        let mut senders: Vec<String> = rows.iter().filter(|r| unseen(r)).map(|r| r.sender.clone()).collect();
        let mut pruned = std::collections::BTreeSet::new();
        if senders.is_empty() {
            return Ok(pruned);
        }
        senders.sort();
        senders.dedup();
        let erased = self.storage.users.erased_among(&senders).await?;
        for row in rows.iter_mut().filter(|r| unseen(r) && erased.contains(&r.sender)) {
            if let Some(text) = pruned_pdu(&row.pdu, rules) {
                tracing::debug!(event_id = %row.event_id, sender = %row.sender, "an event of an erased user served pruned");
                row.pdu = text;
                pruned.insert(row.event_id.clone());
            }
        }
        Ok(pruned)
    }

    /// The read access of `user`: refused to users who were never in the room (or forgot it),
    /// unless it is world-readable.
    pub(crate) async fn reader(&self, room_id: &str, user: &str) -> ServiceResult<Visibility> {
        let vis = self.visibility(room_id, user).await?;
        if vis.memberships.is_empty() && vis.settings.last().is_none_or(|(_, s)| s != "world_readable") {
            return Err(ServiceError::Forbidden(format!("{user} is not in this room")));
        }
        Ok(vis)
    }

    /// One event, if the viewer may see it.
    pub async fn event_for(&self, viewer: Viewer<'_>, room_id: &str, event_id: &str) -> ServiceResult<JsonValue> {
        let rules = self.rules_of(room_id).await?;
        let not_found = || ServiceError::NotFound("event not found".into());
        let row = self.storage.rooms.event(event_id).await?.filter(|r| r.room_id == room_id).ok_or_else(not_found)?;
        // Outliers (events learnt from other servers outside the timeline, among them rejected
        // and soft-failed ones) are not shown, except the viewer's own out-of-band membership
        // (an invite from another server).
        if self.storage.rooms.is_outlier(&row.event_id).await?
            && self.storage.rooms.membership(room_id, viewer.user_id).await?.is_none_or(|m| m.event_id != row.event_id)
        {
            return Err(not_found());
        }
        let vis = self.visibility(room_id, viewer.user_id).await?;
        if !vis.allows(row.stream_ordering) {
            return Err(not_found());
        }
        let mut rows = [row];
        self.prune_erased(&vis, &mut rows, &rules).await?;
        let [row] = rows;
        let mut event = [client_event(&row, &rules, viewer, now_ms())];
        self.bundle_aggregations(viewer, &mut event).await?;
        let [event] = event;
        Ok(event)
    }

    /// The position up to which the viewer may read the room's state: now when joined, the
    /// leave when they left (or were kicked/banned); refused otherwise.
    async fn state_horizon(&self, room_id: &str, user: &str) -> ServiceResult<Option<String>> {
        let world_readable =
            self.storage.rooms.current_state_event(room_id, "m.room.history_visibility", "").await?.is_some_and(|e| {
                content_of(&e.pdu).get("history_visibility").and_then(JsonValue::as_str) == Some("world_readable")
            });
        match self.storage.rooms.membership(room_id, user).await? {
            Some(m) if m.membership == "join" => Ok(None),
            _ if world_readable => Ok(None),
            Some(m) if (m.membership == "leave" || m.membership == "ban") && !m.forgotten => Ok(Some(m.event_id)),
            _ => Err(ServiceError::Forbidden(format!("{user} is not in this room"))),
        }
    }

    /// The room state the viewer may see (current, or as it was when they left).
    pub async fn state_for(&self, viewer: Viewer<'_>, room_id: &str) -> ServiceResult<Vec<JsonValue>> {
        let rules = self.rules_of(room_id).await?;
        let rows = match self.state_horizon(room_id, viewer.user_id).await? {
            None => self.storage.rooms.current_state(room_id).await?,
            Some(leave) => {
                let ids: Vec<String> =
                    self.storage.rooms.state_ids_at(&leave, false).await?.into_iter().map(|(_, _, e)| e).collect();
                self.storage.rooms.events(&ids).await?
            }
        };
        Ok(self.render(&rows, &rules, viewer))
    }

    /// One state event's content.
    pub async fn state_event_for(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        kind: &str,
        key: &str,
    ) -> ServiceResult<JsonValue> {
        let rules = self.rules_of(room_id).await?;
        let row = match self.state_horizon(room_id, viewer.user_id).await? {
            None => self.storage.rooms.current_state_event(room_id, kind, key).await?,
            Some(leave) => {
                let id = self
                    .storage
                    .rooms
                    .state_ids_at(&leave, false)
                    .await?
                    .into_iter()
                    .find(|(t, k, _)| t == kind && k == key)
                    .map(|(_, _, e)| e);
                match id {
                    Some(id) => self.storage.rooms.event(&id).await?,
                    None => None,
                }
            }
        };
        let row = row.ok_or_else(|| ServiceError::NotFound(format!("no {kind} state with key {key:?}")))?;
        Ok(client_event(&row, &rules, viewer, now_ms()))
    }

    /// `/members`: member events, optionally at a position, filtered by membership.
    pub async fn members_for(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        at: Option<&str>,
        membership: Option<&str>,
        not_membership: Option<&str>,
    ) -> ServiceResult<Vec<JsonValue>> {
        let rules = self.rules_of(room_id).await?;
        let horizon = self.state_horizon(room_id, viewer.user_id).await?;
        let at_pos = at.map(parse_position).transpose()?;
        let rows = match (at_pos, horizon) {
            (None, None) => {
                let ids: Vec<String> =
                    self.storage.rooms.members(room_id).await?.into_iter().map(|m| m.event_id).collect();
                self.storage.rooms.events(&ids).await?
            }
            (pos, leave) => {
                // State after the last event at or before the position (and not after a leave).
                let mut limit = pos.unwrap_or(i64::MAX);
                if let Some(leave) = &leave
                    && let Some(row) = self.storage.rooms.event(leave).await?
                {
                    limit = limit.min(row.stream_ordering);
                }
                let last = self.storage.rooms.events_backwards(room_id, -1, limit, 1).await?;
                match last.first() {
                    None => Vec::new(),
                    Some(e) => {
                        let ids: Vec<String> = self
                            .storage
                            .rooms
                            .state_ids_at(&e.event_id, false)
                            .await?
                            .into_iter()
                            .filter(|(t, _, _)| t == "m.room.member")
                            .map(|(_, _, e)| e)
                            .collect();
                        self.storage.rooms.events(&ids).await?
                    }
                }
            }
        };
        let rows: Vec<EventRow> = rows
            .into_iter()
            .filter(|r| {
                let m = content_of(&r.pdu).get("membership").and_then(JsonValue::as_str).unwrap_or_default().to_owned();
                membership.is_none_or(|want| want == m) && not_membership.is_none_or(|not| not != m)
            })
            .collect();
        Ok(self.render(&rows, &rules, viewer))
    }

    /// `/joined_members`: user id → (display name, avatar), for joined viewers.
    pub async fn joined_members_for(
        &self,
        viewer: &str,
        room_id: &str,
    ) -> ServiceResult<Vec<(String, Option<String>, Option<String>)>> {
        self.rules_of(room_id).await?;
        if self.state_horizon(room_id, viewer).await?.is_some() {
            return Err(ServiceError::Forbidden(format!("{viewer} is not joined to this room")));
        }
        let ids: Vec<String> = self
            .storage
            .rooms
            .members(room_id)
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.event_id)
            .collect();
        Ok(self
            .storage
            .rooms
            .events(&ids)
            .await?
            .into_iter()
            .map(|r| {
                let c = content_of(&r.pdu);
                let s = |f: &str| c.get(f).and_then(JsonValue::as_str).map(str::to_owned);
                (r.state_key.clone().unwrap_or_default(), s("displayname"), s("avatar_url"))
            })
            .collect())
    }

    /// `/messages`: up to `limit` visible events from `from` in direction `backwards`/forwards,
    /// stopping at `to`.
    pub async fn messages_for(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        page: PageRequest<'_>,
        filter: &EventFilter,
    ) -> ServiceResult<Page> {
        let PageRequest { from, to, backwards, limit } = page;
        // Unknown rooms are refused like rooms the viewer is not in.
        let vis = self.reader(room_id, viewer.user_id).await?;
        let rules = self.rules_of(room_id).await?;
        let head = self.storage.rooms.stream_head("events").await?;
        let start = match from {
            Some(t) => parse_position(t)?,
            None if backwards => head,
            None => 0,
        };
        let stop = to.map(parse_position).transpose()?;
        let limit = limit.clamp(1, 1000);
        let mut out = Vec::new();
        let mut cursor = start;
        let mut exhausted = false;
        // Fetch in batches until `limit` visible events are found or the range ends.
        while out.len() < limit {
            let batch = i64::try_from((limit - out.len()).max(20) * 2).unwrap_or(100);
            let rows = if backwards {
                self.storage.rooms.events_backwards(room_id, stop.unwrap_or(i64::MIN), cursor, batch).await?
            } else {
                self.storage.rooms.events_forwards(room_id, cursor, stop.unwrap_or(head).min(head), batch).await?
            };
            let n = rows.len();
            for row in rows {
                cursor = if backwards { row.stream_ordering - 1 } else { row.stream_ordering };
                if vis.allows(row.stream_ordering) && filter.allows(&row) {
                    out.push(row);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            if i64::try_from(n).unwrap_or_default() < batch {
                exhausted = out.len() < limit;
                break;
            }
        }
        let state = if filter.lazy_load_members {
            let senders: std::collections::BTreeSet<&str> = out.iter().map(|r| r.sender.as_str()).collect();
            let rows = self.storage.rooms.current_state(room_id).await?;
            let members: Vec<EventRow> = rows
                .into_iter()
                .filter(|r| {
                    r.event_type == "m.room.member" && r.state_key.as_deref().is_some_and(|k| senders.contains(k))
                })
                .collect();
            self.render(&members, &rules, viewer)
        } else {
            Vec::new()
        };
        self.prune_erased(&vis, &mut out, &rules).await?;
        let mut chunk = self.render(&out, &rules, viewer);
        self.bundle_aggregations(viewer, &mut chunk).await?;
        Ok(Page {
            chunk,
            start: position_token(start),
            // Omitted when nothing further can be read in this direction.
            end: (!exhausted).then(|| position_token(cursor)),
            state,
        })
    }

    /// `/context`: an event with up to `limit` visible events around it.
    pub async fn context_for(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        event_id: &str,
        limit: usize,
        filter: &EventFilter,
    ) -> ServiceResult<Context> {
        self.reader(room_id, viewer.user_id).await?;
        let rules = self.rules_of(room_id).await?;
        let event = self.event_for(viewer, room_id, event_id).await?;
        let row = self
            .storage
            .rooms
            .event(event_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("event not found".into()))?;
        let before_n = limit / 2;
        let after_n = limit - before_n;
        let pos = row.stream_ordering;
        let before = if before_n > 0 {
            self.messages_for(viewer, room_id, PageRequest::back_from(&position_token(pos - 1), before_n), filter)
                .await?
        } else {
            Page { chunk: vec![], start: position_token(pos - 1), end: Some(position_token(pos - 1)), state: vec![] }
        };
        let after = if after_n > 0 {
            self.messages_for(viewer, room_id, PageRequest::on_from(&position_token(pos), after_n), filter).await?
        } else {
            Page { chunk: vec![], start: position_token(pos), end: Some(position_token(pos)), state: vec![] }
        };
        let ids: Vec<String> =
            self.storage.rooms.state_ids_at(event_id, false).await?.into_iter().map(|(_, _, e)| e).collect();
        let state_rows: Vec<EventRow> = self
            .storage
            .rooms
            .events(&ids)
            .await?
            .into_iter()
            .filter(|r| {
                !filter.lazy_load_members
                    || r.event_type != "m.room.member"
                    || r.state_key.as_deref() == Some(row.sender.as_str())
            })
            .collect();
        Ok(Context {
            event,
            before: before.chunk,
            after: after.chunk,
            start: before.end.unwrap_or_else(|| position_token(0)),
            end: after.end.unwrap_or_else(|| position_token(pos)),
            state: self.render(&state_rows, &rules, viewer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_tokens_reach_below_zero_into_fetched_history_and_sync_tokens_do_not() {
        assert_eq!(parse_position(&position_token(-42)).ok(), Some(-42));
        assert_eq!(parse_position("t17").ok(), Some(17));
        assert_eq!(parse_position("s5_3_1").ok(), Some(5));
        for bad in ["s-1_0", "t", "t-", "x1", "t1.5"] {
            assert!(parse_position(bad).is_err(), "{bad} accepted");
        }
    }
}
