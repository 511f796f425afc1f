//! Simplified sliding sync (MSC4186): the user's rooms as lists sorted by recency, of which only
//! the requested windows (and explicit room subscriptions) are sent, each room with its own
//! timeline limit and required state, plus the extensions clients use (to-device, e2ee, account
//! data, receipts, typing). The work per request grows with the rooms in the windows, not with
//! the rooms of the account: one query orders all rooms, the rest is per window room.
//!
//! The position (`pos`) is `<n>.<sync token>`: `n` numbers the responses of the connection, and
//! the server remembers per connection which room went out in which response and with which
//! room configuration (`storage::sliding_sync`), so known rooms are sent as changes only.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use ruma::{
    OwnedMxcUri, OwnedRoomId, OwnedUserId, UInt,
    api::client::sync::sync_events::v5::{self, request, response},
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use super::{MAX_TIMEOUT, SyncFilter, SyncRequest, SyncService, SyncToken, raw, uint};
use crate::{
    service::{
        ServiceError, ServiceResult,
        filter::EventFilter,
        rooms::client_format::{Viewer, content_of},
    },
    storage::{
        rooms::{MembershipRow, SyncBasis, SyncMembership},
        sliding_sync::RoomListFacts,
    },
};

/// Timeline events per room at most.
const MAX_TIMELINE_LIMIT: usize = 100;
/// Rooms a list window may span.
const MAX_WINDOW: u64 = 1000;

/// A sliding sync request in domain terms (the ruma request, and who asks).
#[derive(Debug)]
pub struct SlidingRequest {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub body: v5::Request,
}

/// What one room is sent with: the largest timeline and the union of required state of every
/// list window and subscription it is in.
#[derive(Clone, Debug, Default, Hash)]
struct RoomConfig {
    timeline_limit: usize,
    required_state: BTreeSet<(String, String)>,
}

impl RoomConfig {
    fn merge(&mut self, timeline_limit: UInt, required_state: &[(ruma::events::StateEventType, String)]) {
        let limit = usize::try_from(timeline_limit).unwrap_or(MAX_TIMELINE_LIMIT).min(MAX_TIMELINE_LIMIT);
        self.timeline_limit = self.timeline_limit.max(limit);
        self.required_state.extend(required_state.iter().map(|(t, k)| (t.to_string(), k.clone())));
    }

    fn fingerprint(&self) -> i64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish() as i64
    }

    /// Whether a current state event is required: `*` matches any type or key, `$ME` the user,
    /// `$LAZY` the senders of the timeline.
    fn wants(&self, kind: &str, key: &str, user: &str, senders: &BTreeSet<&str>) -> bool {
        self.required_state.iter().any(|(t, k)| {
            (t == "*" || t == kind)
                && (k == "*"
                    || k == key
                    || (k == "$ME" && key == user)
                    || (k == "$LAZY" && kind == "m.room.member" && senders.contains(key)))
        })
    }
}

/// `<n>.<sync token>`.
fn parse_pos(pos: &str) -> ServiceResult<(i64, SyncToken)> {
    let unknown = || ServiceError::UnknownPos;
    let (n, token) = pos.split_once('.').ok_or_else(unknown)?;
    let n = n.parse::<i64>().map_err(|_| unknown())?;
    Ok((n, SyncToken::parse(token).map_err(|_| unknown())?))
}

impl SyncService {
    /// Answers at once when something changed since `pos`, else waits up to the timeout. The
    /// user counts as online (per `set_presence`) while it runs.
    pub async fn sliding_sync(&self, req: SlidingRequest) -> ServiceResult<v5::Response> {
        let wait = match req.body.pos {
            Some(_) => req.body.timeout.unwrap_or_default().min(MAX_TIMEOUT),
            None => Duration::ZERO,
        };
        let user = req.user_id.clone();
        let syncing = self.presence_syncing(user.as_str(), req.body.set_presence.as_str(), wait).await?;
        let response = self.sliding_sync_until(req).await;
        self.presence.sync_ended(user.as_str(), syncing).await;
        response
    }

    async fn sliding_sync_until(&self, req: SlidingRequest) -> ServiceResult<v5::Response> {
        let user = req.user_id.as_str().to_owned();
        let conn_id = req.body.conn_id.clone().unwrap_or_default();
        if conn_id.len() > 255 {
            return Err(ServiceError::InvalidParam("conn_id is too long".into()));
        }
        let since = match req.body.pos.as_deref() {
            Some(pos) => {
                let (n, token) = parse_pos(pos)?;
                let last = self.storage.sliding_sync.connection(&user, &req.device_id, &conn_id).await?;
                if last.is_none_or(|last| n > last) {
                    return Err(ServiceError::UnknownPos);
                }
                Some((n, token))
            }
            None => {
                self.storage.sliding_sync.reset_connection(&user, &req.device_id, &conn_id).await?;
                None
            }
        };
        let timeout = req.body.timeout.unwrap_or_default().min(MAX_TIMEOUT);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wake = self.notifier.subscribe(super::Topic::Any);
        loop {
            wake.borrow_and_update();
            let (now, basis) = self.basis(&user, &req.device_id, since.map(|(_, t)| t.events), None).await?;
            let waiting = since.is_some() && tokio::time::Instant::now() < deadline;
            if waiting && since.map(|(_, t)| t) == Some(now) && self.wait(&mut wake, deadline).await {
                continue;
            }
            let (response, sent) = self.build_sliding(&req, &conn_id, since, now, basis).await?;
            let empty = response.rooms.is_empty() && response.extensions.is_empty();
            if !waiting || !empty || !self.wait(&mut wake, deadline).await {
                let last = self.storage.sliding_sync.connection(&user, &req.device_id, &conn_id).await?.unwrap_or(0);
                let n = last + 1;
                self.storage.sliding_sync.record_response(&user, &req.device_id, &conn_id, n, &sent).await?;
                let mut response = response;
                response.pos = format!("{n}.{}", response.pos);
                response.txn_id = req.body.txn_id.clone();
                return Ok(response);
            }
        }
    }

    /// One response; with the rooms it carries and their configuration fingerprints.
    async fn build_sliding(
        &self,
        req: &SlidingRequest,
        conn_id: &str,
        since: Option<(i64, SyncToken)>,
        now: SyncToken,
        mut basis: SyncBasis,
    ) -> ServiceResult<(v5::Response, Vec<(String, i64)>)> {
        let user = req.user_id.as_str();
        let body = &req.body;
        let viewer = Viewer { user_id: user, device_id: Some(&req.device_id) };
        let since_token = since.map(|(_, t)| t);
        let since_events = since_token.map(|t| t.events);

        // Every room of the user: joined, invited, knocked, and those left since the position.
        let memberships: Vec<MembershipRow> = basis
            .memberships
            .iter()
            .map(|m| m.row.clone())
            .filter(|m| match m.membership.as_str() {
                "join" | "invite" | "knock" => true,
                _ => since_events.is_some_and(|s| m.stream_ordering > s),
            })
            .collect();
        let by_room: BTreeMap<&str, &MembershipRow> = memberships.iter().map(|m| (m.room_id.as_str(), m)).collect();
        let ids: Vec<String> = memberships.iter().map(|m| m.room_id.clone()).collect();
        let facts: BTreeMap<String, RoomListFacts> = self
            .storage
            .sliding_sync
            .room_list_facts(&ids)
            .await?
            .into_iter()
            .map(|f| (f.room_id.clone(), f))
            .collect();
        let direct = self.direct_rooms(user).await?;
        // Newest first; what a non-member may not see does not bump (invites, leaves).
        let bump = |m: &MembershipRow| -> i64 {
            let seen = facts.get(&m.room_id).and_then(|f| f.bump_stamp).unwrap_or(0);
            if m.membership == "join" { seen.max(m.stream_ordering) } else { m.stream_ordering }
        };
        let mut order: Vec<&MembershipRow> = memberships.iter().collect();
        order.sort_by(|a, b| bump(b).cmp(&bump(a)).then_with(|| a.room_id.cmp(&b.room_id)));

        let mut response = v5::Response::new(now.render());
        let mut configs: BTreeMap<String, RoomConfig> = BTreeMap::new();
        for (name, list) in &body.lists {
            let matching: Vec<&&MembershipRow> = order
                .iter()
                .filter(|m| list_filter_allows(list.filters.as_ref(), m, facts.get(&m.room_id), &direct))
                .collect();
            let mut count = response::List::default();
            count.count = uint(matching.len());
            response.lists.insert(name.clone(), count);
            for (start, end) in &list.ranges {
                let (start, end) = (u64::from(*start), u64::from(*end));
                if end < start || end - start >= MAX_WINDOW {
                    return Err(ServiceError::InvalidParam(format!("list {name}: bad range [{start}, {end}]")));
                }
                for m in matching.iter().skip(start as usize).take((end - start + 1) as usize) {
                    let details = &list.room_details;
                    configs
                        .entry(m.room_id.clone())
                        .or_default()
                        .merge(details.timeline_limit, &details.required_state);
                }
            }
        }
        for (room_id, sub) in &body.room_subscriptions {
            // Only rooms the user is (or was, since the position) in.
            if by_room.contains_key(room_id.as_str()) {
                configs.entry(room_id.to_string()).or_default().merge(sub.timeline_limit, &sub.required_state);
            }
        }

        let sent_before: BTreeMap<String, (i64, i64)> = match since {
            Some(_) => self
                .storage
                .sliding_sync
                .sent_rooms(user, &req.device_id, conn_id)
                .await?
                .into_iter()
                .map(|r| (r.room_id, (r.sent_pos, r.config_hash)))
                .collect(),
            None => BTreeMap::new(),
        };
        let (rules, displayname) = super::push_facts(&req.user_id, &mut basis)?;

        let mut sent = Vec::new();
        for (room_id, config) in &configs {
            let Some(m) = by_room.get(room_id.as_str()) else { continue };
            let fingerprint = config.fingerprint();
            let known = since.is_some_and(|(n, _)| {
                sent_before.get(room_id).is_some_and(|(sent_pos, hash)| *sent_pos <= n && *hash == fingerprint)
            });
            let room = self
                .sliding_room(m, config, known, since_token, now, viewer, &rules, &displayname, bump(m), &direct)
                .await?;
            if let Some(room) = room {
                let id = OwnedRoomId::try_from(room_id.as_str()).map_err(|e| ServiceError::Internal(e.to_string()))?;
                response.rooms.insert(id, room);
                sent.push((room_id.clone(), fingerprint));
            } else if !known {
                sent.push((room_id.clone(), fingerprint));
            }
        }
        let window: Vec<String> = configs.keys().cloned().collect();
        response.extensions = self.sliding_extensions(req, &window, since_token, now, &basis).await?;
        Ok((response, sent))
    }

    /// The rooms `m.direct` names (direct chats).
    async fn direct_rooms(&self, user: &str) -> ServiceResult<BTreeSet<String>> {
        let direct = self.storage.account_data.get(user, "", "m.direct").await?.unwrap_or_default();
        Ok(direct
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
            .filter_map(JsonValue::as_array)
            .flatten()
            .filter_map(JsonValue::as_str)
            .map(str::to_owned)
            .collect())
    }

    /// One room of the response; `None` for a known room without changes.
    #[allow(clippy::too_many_arguments)]
    async fn sliding_room(
        &self,
        m: &MembershipRow,
        config: &RoomConfig,
        known: bool,
        since: Option<SyncToken>,
        now: SyncToken,
        viewer: Viewer<'_>,
        rules: &ruma::push::Ruleset,
        displayname: &str,
        bump_stamp: i64,
        direct: &BTreeSet<String>,
    ) -> ServiceResult<Option<response::Room>> {
        let room_id = m.room_id.as_str();
        let mut room = response::Room::new();
        room.bump_stamp = UInt::try_from(bump_stamp.max(0)).ok();
        room.is_dm = direct.contains(room_id).then_some(true);
        if m.membership == "invite" || m.membership == "knock" {
            if known {
                return Ok(None);
            }
            room.initial = Some(true);
            room.invite_state = Some(self.stripped_state(room_id, &m.event_id).await?);
            return Ok(Some(room));
        }
        // The timeline and unread counts as `/sync` computes them, for a timeline of this size.
        let timeline_filter = EventFilter { limit: Some(config.timeline_limit.max(1)), ..EventFilter::default() };
        let state_filter = EventFilter { types: Some(Vec::new()), ..EventFilter::default() };
        let sync_req = SyncRequest {
            user_id: viewer
                .user_id
                .try_into()
                .map_err(|e: ruma::IdParseError| ServiceError::Internal(e.to_string()))?,
            device_id: viewer.device_id.unwrap_or_default().to_owned(),
            since: None,
            full_state: false,
            timeout: Duration::ZERO,
            filter: SyncFilter { timeline: timeline_filter, state: state_filter, ..SyncFilter::default() },
            set_presence: String::new(),
        };
        let (events, limited, prev_batch, unread) = if m.membership == "join" {
            let since = if known { since } else { None };
            let changed = !known;
            let m = SyncMembership::without_room_facts(m);
            let Some(joined) =
                self.joined_room(&sync_req, &m, None, since, now, changed, viewer, rules, displayname).await?
            else {
                return Ok(None);
            };
            (joined.timeline.events, joined.timeline.limited, joined.timeline.prev_batch, joined.unread_notifications)
        } else {
            let since_events = if known { since.map(|s| s.events) } else { None };
            let left = self.left_room(&sync_req, m, since_events, viewer).await?;
            (left.timeline.events, left.timeline.limited, left.timeline.prev_batch, Default::default())
        };
        let events = if config.timeline_limit == 0 { Vec::new() } else { events };
        if known && events.is_empty() {
            return Ok(None);
        }
        // Events newer than the position are "live".
        let since_events = since.map_or(i64::MAX, |s| s.events);
        let positions = self.event_positions(&events).await?;
        room.num_live = Some(uint(positions.iter().filter(|p| **p > since_events).count()));

        // Required state: all matching state for a new room; for a known one what changed.
        let current = self.storage.rooms.current_state(room_id).await?;
        let sender_names: BTreeSet<String> =
            events.iter().filter_map(|e| e.get_field::<String>("sender").ok().flatten()).collect();
        let senders: BTreeSet<&str> = sender_names.iter().map(String::as_str).collect();
        let rules_of_room = self.rooms.rules_of(room_id).await?;
        let required: Vec<JsonValue> = current
            .iter()
            .filter(|r| !known || r.stream_ordering > since_events)
            .filter(|r| {
                config.wants(&r.event_type, r.state_key.as_deref().unwrap_or_default(), viewer.user_id, &senders)
            })
            .map(|r| self.rooms.render(std::slice::from_ref(r), &rules_of_room, viewer).remove(0))
            .collect();
        room.required_state = required.iter().map(raw).collect();

        let content = |kind: &str| current.iter().find(|r| r.event_type == kind).map(|r| content_of(&r.pdu));
        let changed =
            |kind: &str| !known || current.iter().any(|r| r.event_type == kind && r.stream_ordering > since_events);
        if changed("m.room.name") {
            room.name =
                content("m.room.name").and_then(|c| c.get("name").and_then(JsonValue::as_str).map(str::to_owned));
        }
        if changed("m.room.avatar") {
            let url =
                content("m.room.avatar").and_then(|c| c.get("url").and_then(JsonValue::as_str).map(OwnedMxcUri::from));
            room.avatar = match url {
                Some(url) => ruma::JsOption::Some(url),
                None if known => ruma::JsOption::Null,
                None => ruma::JsOption::Undefined,
            };
        }
        let members: Vec<&crate::storage::rooms::EventRow> =
            current.iter().filter(|r| r.event_type == "m.room.member").collect();
        let membership_of = |r: &crate::storage::rooms::EventRow| {
            content_of(&r.pdu).get("membership").and_then(JsonValue::as_str).unwrap_or_default().to_owned()
        };
        room.joined_count = Some(uint(members.iter().filter(|r| membership_of(r) == "join").count()));
        room.invited_count = Some(uint(members.iter().filter(|r| membership_of(r) == "invite").count()));
        if room.name.is_none() && !known && content("m.room.name").is_none() {
            let heroes: Vec<response::Hero> = members
                .iter()
                .filter(|r| r.state_key.as_deref() != Some(viewer.user_id))
                .filter(|r| matches!(membership_of(r).as_str(), "join" | "invite"))
                .take(5)
                .filter_map(|r| {
                    let user = OwnedUserId::try_from(r.state_key.as_deref()?).ok()?;
                    let c = content_of(&r.pdu);
                    let mut hero = response::Hero::new(user);
                    hero.name = c.get("displayname").and_then(JsonValue::as_str).map(str::to_owned);
                    hero.avatar = c.get("avatar_url").and_then(JsonValue::as_str).map(OwnedMxcUri::from);
                    Some(hero)
                })
                .collect();
            room.heroes = Some(heroes);
        }
        room.initial = (!known).then_some(true);
        room.timeline = events;
        room.limited = limited;
        room.prev_batch = prev_batch;
        room.unread_notifications = unread;
        Ok(Some(room))
    }

    /// Stream positions of rendered timeline events.
    async fn event_positions(&self, events: &[Raw<ruma::events::AnySyncTimelineEvent>]) -> ServiceResult<Vec<i64>> {
        let ids: Vec<String> = events.iter().filter_map(|e| e.get_field::<String>("event_id").ok().flatten()).collect();
        Ok(self.storage.rooms.events(&ids).await?.into_iter().map(|r| r.stream_ordering).collect())
    }

    /// The extensions' sections; the device's key counts and whether memberships in the
    /// user's rooms moved come from the response's basis.
    async fn sliding_extensions(
        &self,
        req: &SlidingRequest,
        window: &[String],
        since: Option<SyncToken>,
        now: SyncToken,
        basis: &SyncBasis,
    ) -> ServiceResult<response::Extensions> {
        let ext = &req.body.extensions;
        let user = req.user_id.as_str();
        let mut out = response::Extensions::default();
        let on = |enabled: Option<bool>| enabled == Some(true);

        if on(ext.to_device.enabled) {
            let after = match ext.to_device.since.as_deref() {
                Some(s) => s.parse::<i64>().map_err(|_| ServiceError::InvalidParam("bad to_device since".into()))?,
                None => 0,
            };
            let limit = ext.to_device.limit.map_or(100, |l| u64::from(l).clamp(1, 1000)) as i64;
            let messages = self.storage.ephemeral.to_device(user, &req.device_id, after, now.to_device, limit).await?;
            let next = if messages.len() as i64 >= limit {
                messages.last().map_or(now.to_device, |m| m.stream_id)
            } else {
                now.to_device.max(after)
            };
            let mut to_device = response::ToDevice::default();
            to_device.next_batch = next.to_string();
            to_device.events = messages
                .iter()
                .map(|m| raw(&json!({"type": m.event_type, "sender": m.sender, "content": m.content})))
                .collect();
            out.to_device = Some(to_device);
        }

        if on(ext.e2ee.enabled) {
            let mut e2ee = response::E2EE::default();
            e2ee.device_lists = self.device_list_changes(user, since, now, basis.members_changed).await?;
            let (counts, fallback) = super::key_counts(&basis.key_counts);
            e2ee.device_one_time_keys_count = counts;
            e2ee.device_unused_fallback_key_types = Some(fallback);
            out.e2ee = e2ee;
        }

        if on(ext.account_data.enabled) {
            let since_ad = since.map_or(0, |s| s.account_data);
            let mut global_push_rules = false;
            for entry in self.storage.account_data.changed_since(user, since_ad).await? {
                let event = json!({"type": entry.data_type, "content": entry.content});
                if entry.room_id.is_empty() {
                    global_push_rules |= entry.data_type == "m.push_rules";
                    out.account_data.global.push(raw(&event));
                } else if window.contains(&entry.room_id)
                    && let Ok(room) = OwnedRoomId::try_from(entry.room_id.as_str())
                {
                    out.account_data.rooms.entry(room).or_default().push(raw(&event));
                }
            }
            if since.is_none() && !global_push_rules {
                let rules = self.account_data.push_rules(&req.user_id).await?;
                out.account_data.global.push(raw(&json!({"type": "m.push_rules", "content": {"global": rules}})));
            }
        }

        if on(ext.receipts.enabled) {
            let since_receipts = since.map_or(0, |s| s.receipts);
            for (room, content) in self.receipt_contents(window, user, since_receipts, now.receipts).await? {
                if let Ok(room) = OwnedRoomId::try_from(room) {
                    out.receipts.rooms.insert(room, raw(&json!({"type": "m.receipt", "content": content})));
                }
            }
        }

        if on(ext.typing.enabled) {
            for room in window {
                if let Some(users) = self.typing.changed_since(room, since.map_or(0, |s| s.typing))
                    && (since.is_some() || !users.is_empty())
                    && let Ok(room) = OwnedRoomId::try_from(room.as_str())
                {
                    out.typing.rooms.insert(room, raw(&json!({"type": "m.typing", "content": {"user_ids": users}})));
                }
            }
        }
        Ok(out)
    }
}

/// Whether a list's filters let a room in.
fn list_filter_allows(
    filters: Option<&request::ListFilters>,
    m: &MembershipRow,
    facts: Option<&RoomListFacts>,
    direct: &BTreeSet<String>,
) -> bool {
    let Some(f) = filters else { return true };
    if f.is_dm.is_some_and(|dm| dm != direct.contains(&m.room_id)) {
        return false;
    }
    if f.is_encrypted.is_some_and(|enc| enc != facts.is_some_and(|x| x.encrypted)) {
        return false;
    }
    if f.is_invite.is_some_and(|inv| inv != (m.membership == "invite")) {
        return false;
    }
    let room_type = facts.and_then(|x| x.room_type.clone());
    let matches = |t: &ruma::directory::RoomTypeFilter| {
        let wanted = serde_json::to_value(t).unwrap_or_default();
        match (&wanted, &room_type) {
            (JsonValue::Null, None) => true,
            (JsonValue::String(w), Some(r)) => w == r,
            _ => false,
        }
    };
    if !f.room_types.is_empty() && !f.room_types.iter().any(matches) {
        return false;
    }
    !f.not_room_types.iter().any(matches)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{RoomConfig, parse_pos};

    #[test]
    fn required_state_patterns() {
        let mut c = RoomConfig::default();
        c.required_state.insert(("m.room.name".into(), String::new()));
        c.required_state.insert(("m.room.member".into(), "$LAZY".into()));
        c.required_state.insert(("m.room.member".into(), "$ME".into()));
        let senders: BTreeSet<&str> = ["@bob:x"].into();
        assert!(c.wants("m.room.name", "", "@me:x", &senders));
        assert!(!c.wants("m.room.topic", "", "@me:x", &senders));
        assert!(c.wants("m.room.member", "@bob:x", "@me:x", &senders));
        assert!(c.wants("m.room.member", "@me:x", "@me:x", &senders));
        assert!(!c.wants("m.room.member", "@eve:x", "@me:x", &senders));
        let mut all = RoomConfig::default();
        all.required_state.insert(("*".into(), "*".into()));
        assert!(all.wants("anything", "at all", "@me:x", &senders));
    }

    #[test]
    fn positions_parse_or_are_unknown() {
        assert_eq!(parse_pos("3.s1_2_3_4_5_6").unwrap().0, 3);
        for bad in ["", "3", "x.s1_2_3_4_5_6", "3.garbage"] {
            assert!(parse_pos(bad).is_err(), "{bad}");
        }
    }
}
