//! `/sync`: everything that changed for a user since a token, read from the streams' positions.
//! Tokens are opaque vectors of positions, `s<events>_<receipts>_<to_device>_<account_data>_<typing>`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt;
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v3::{
            Ephemeral, GlobalAccountData, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom,
            Response, RoomAccountData, RoomSummary, State, StateEvents, Timeline,
        },
    },
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use super::{
    ServiceError, ServiceResult,
    account_data::AccountDataService,
    filter::EventFilter,
    notifier::Notifier,
    rooms::{
        RoomService,
        client_format::{Viewer, content_of, stripped},
        power::PowerLevels,
        read::position_token,
    },
    typing::TypingService,
};
use crate::storage::{
    Storage,
    rooms::{EventRow, MembershipRow},
};

/// Positions of every stream a sync token covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub events: i64,
    pub receipts: i64,
    pub to_device: i64,
    pub account_data: i64,
    pub typing: u64,
}

impl SyncToken {
    pub fn parse(s: &str) -> ServiceResult<Self> {
        let bad = || ServiceError::InvalidParam(format!("unknown sync token {s:?}"));
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('_').collect();
        let [e, r, t, a, y] = parts.as_slice() else { return Err(bad()) };
        let n = |x: &str| x.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(bad);
        Ok(Self {
            events: n(e)?,
            receipts: n(r)?,
            to_device: n(t)?,
            account_data: n(a)?,
            typing: y.parse().map_err(|_| bad())?,
        })
    }

    pub fn render(&self) -> String {
        format!("s{}_{}_{}_{}_{}", self.events, self.receipts, self.to_device, self.account_data, self.typing)
    }
}

/// The sync filter in domain terms.
#[derive(Clone, Debug)]
pub struct SyncFilter {
    pub rooms: EventFilter,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub account_data: EventFilter,
    pub room_account_data: EventFilter,
    pub to_device_limit: usize,
    pub include_leave: bool,
}

impl Default for SyncFilter {
    fn default() -> Self {
        Self {
            rooms: EventFilter::default(),
            timeline: EventFilter::default(),
            state: EventFilter::default(),
            ephemeral: EventFilter::default(),
            account_data: EventFilter::default(),
            room_account_data: EventFilter::default(),
            to_device_limit: 100,
            include_leave: false,
        }
    }
}

impl SyncFilter {
    /// Reads a filter definition (`FilterDefinition` JSON).
    pub fn from_json(v: &JsonValue) -> ServiceResult<Self> {
        let bad = |e: String| ServiceError::BadJson(format!("invalid filter: {e}"));
        if !v.is_object() {
            return Err(bad("must be a JSON object".into()));
        }
        let room = v.get("room").cloned().unwrap_or(JsonValue::Null);
        let sub = |name: &str| EventFilter::from_json(room.get(name).unwrap_or(&JsonValue::Null)).map_err(bad);
        let include_leave = match room.get("include_leave") {
            None | Some(JsonValue::Null) => false,
            Some(JsonValue::Bool(b)) => *b,
            Some(_) => return Err(bad("include_leave must be a boolean".into())),
        };
        Ok(Self {
            rooms: EventFilter::from_json(&room).map_err(bad)?,
            timeline: sub("timeline")?,
            state: sub("state")?,
            ephemeral: sub("ephemeral")?,
            room_account_data: sub("account_data")?,
            account_data: EventFilter::from_json(v.get("account_data").unwrap_or(&JsonValue::Null)).map_err(bad)?,
            to_device_limit: 100,
            include_leave,
        })
    }
}

/// A sync request in domain terms.
#[derive(Debug)]
pub struct SyncRequest {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub since: Option<String>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: SyncFilter,
}

/// Timeline events per room in a sync unless the filter says otherwise.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Joined rooms of one `/sync` that are read concurrently (each holds a pooled connection while
/// it queries).
const JOINED_ROOMS_AT_ONCE: usize = 4;
/// The longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct SyncService {
    storage: Storage,
    rooms: Arc<RoomService>,
    account_data: Arc<AccountDataService>,
    typing: Arc<TypingService>,
    notifier: Arc<Notifier>,
    /// Unread counts per (user, room, per-thread) as last computed, so the next sync only
    /// evaluates push rules for the events after them.
    unread: std::sync::Mutex<HashMap<(String, String, bool), UnreadCache>>,
}

/// Unread counts computed for the events in `(from, upto]`.
#[derive(Clone, Debug)]
struct UnreadCache {
    from: i64,
    upto: i64,
    /// The push rules and display name they were computed with.
    fingerprint: u64,
    counts: (usize, usize),
    threads: BTreeMap<OwnedEventId, UnreadNotificationsCount>,
}

/// What unread counts depend on besides the events: the push rules and the display name.
fn push_fingerprint(rules: &ruma::push::Ruleset, displayname: &str) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(rules).unwrap_or_default().hash(&mut h);
    displayname.hash(&mut h);
    h.finish()
}

/// Entries kept at most; the cache is dropped as a whole beyond that.
const MAX_UNREAD_CACHE: usize = 100_000;
/// Events evaluated per room and sync at most.
const MAX_UNREAD_EVENTS: i64 = 500;

fn raw<T>(v: &JsonValue) -> Raw<T> {
    Raw::from_json(
        serde_json::value::to_raw_value(v)
            .unwrap_or_else(|_| serde_json::value::to_raw_value(&json!({})).expect("static JSON")),
    )
}

fn uint(n: usize) -> UInt {
    UInt::try_from(n as u64).unwrap_or(UInt::MAX)
}

impl SyncService {
    pub fn new(
        storage: Storage,
        rooms: Arc<RoomService>,
        account_data: Arc<AccountDataService>,
        typing: Arc<TypingService>,
        notifier: Arc<Notifier>,
    ) -> Self {
        Self { storage, rooms, account_data, typing, notifier, unread: std::sync::Mutex::default() }
    }

    async fn positions(&self, user_id: &str) -> ServiceResult<SyncToken> {
        let p = self.storage.rooms.sync_positions(user_id).await?;
        Ok(SyncToken {
            events: p.events,
            receipts: p.receipts,
            to_device: p.to_device,
            account_data: p.account_data,
            typing: self.typing.position(),
        })
    }

    /// Answers at once when something changed since the token, else waits up to the timeout.
    pub async fn sync(&self, req: SyncRequest) -> ServiceResult<Response> {
        let since = req.since.as_deref().map(SyncToken::parse).transpose()?;
        let deadline = tokio::time::Instant::now() + req.timeout.min(MAX_TIMEOUT);
        let mut wake = self.notifier.subscribe();
        loop {
            wake.borrow_and_update();
            let now = self.positions(req.user_id.as_str()).await?;
            let waiting = since.is_some() && !req.full_state && tokio::time::Instant::now() < deadline;
            // Nothing moved (a wake-up for a stream position that did not change): skip the
            // per-room work.
            if waiting && since == Some(now) && self.wait(&mut wake, deadline).await {
                continue;
            }
            let response = self.build(&req, since, now).await?;
            if !waiting || !is_empty(&response) || !self.wait(&mut wake, deadline).await {
                return Ok(response);
            }
        }
    }

    /// Waits for a new stream position, a typing entry expiring, or the deadline; `false` when
    /// the notifier is gone (shutdown).
    async fn wait(&self, wake: &mut tokio::sync::watch::Receiver<u64>, deadline: tokio::time::Instant) -> bool {
        let typing_expiry = self.typing.next_expiry().map(tokio::time::Instant::from_std);
        let until = typing_expiry.map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            changed = wake.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(until) => { self.typing.expire(); true }
        }
    }

    async fn build(&self, req: &SyncRequest, since: Option<SyncToken>, now: SyncToken) -> ServiceResult<Response> {
        let mut now = now;
        let user = req.user_id.as_str();
        let since_events = since.map(|s| s.events);
        let viewer = Viewer { user_id: user, device_id: Some(&req.device_id) };
        let mut response = Response::new(String::new());

        let memberships = self.storage.rooms.memberships_of(user).await?;
        let joined: Vec<String> =
            memberships.iter().filter(|m| m.membership == "join").map(|m| m.room_id.clone()).collect();
        let rules = self.account_data.push_rules(&req.user_id).await?;
        let displayname = self
            .storage
            .users
            .get(user)
            .await?
            .and_then(|u| u.displayname)
            .unwrap_or_else(|| req.user_id.localpart().to_owned());

        // Incremental: only rooms with new events (or a membership change) need their timeline.
        let active: Option<BTreeSet<String>> = match since {
            Some(s) if !req.full_state => {
                Some(self.storage.rooms.rooms_with_events(&joined, s.events, now.events).await?.into_iter().collect())
            }
            _ => None,
        };
        let mut joined_jobs = Vec::new();
        for (index, m) in memberships.iter().enumerate() {
            if !req.filter.rooms.allows_room(&m.room_id) {
                continue;
            }
            let changed_membership_since = since_events.is_none_or(|s| m.stream_ordering > s);
            if m.membership == "join"
                && !changed_membership_since
                && active.as_ref().is_some_and(|a| !a.contains(&m.room_id))
            {
                continue;
            }
            let changed_membership = since_events.is_none_or(|s| m.stream_ordering > s);
            let room_id =
                OwnedRoomId::try_from(m.room_id.as_str()).map_err(|e| ServiceError::Internal(e.to_string()))?;
            match m.membership.as_str() {
                "join" => joined_jobs.push((room_id, index, changed_membership)),
                "invite" if changed_membership || req.full_state => {
                    let events = self.stripped_state(&m.room_id, &m.event_id).await?;
                    response.rooms.invite.insert(
                        room_id,
                        InvitedRoom::from({
                            let mut s = InviteState::default();
                            s.events = events;
                            s
                        }),
                    );
                }
                "knock" if changed_membership || req.full_state => {
                    let events = self.stripped_state(&m.room_id, &m.event_id).await?;
                    response.rooms.knock.insert(
                        room_id,
                        KnockedRoom::from({
                            let mut s = KnockState::default();
                            s.events = events;
                            s
                        }),
                    );
                }
                "leave" | "ban" if (since.is_some() && changed_membership) || req.filter.include_leave => {
                    if since.is_none() && !req.filter.include_leave {
                        continue;
                    }
                    let room = self.left_room(req, m, since_events, viewer).await?;
                    response.rooms.leave.insert(room_id, room);
                }
                _ => {}
            }
        }

        // Joined rooms, a few at a time: each is a handful of short queries, so overlapping
        // them hides the round trips; the order of the response stays that of the memberships.
        let (rules, displayname, memberships) = (&rules, displayname.as_str(), &memberships);
        let mut rooms = futures_util::stream::iter(joined_jobs)
            .map(|(room_id, index, changed)| async move {
                let m = &memberships[index];
                let room = self.joined_room(req, m, since, now, changed, viewer, rules, displayname).await;
                (room_id, room)
            })
            .buffered(JOINED_ROOMS_AT_ONCE);
        while let Some((room_id, room)) = rooms.next().await {
            if let Some(room) = room? {
                response.rooms.join.insert(room_id, room);
            }
        }
        drop(rooms);

        // Account data (global and per room).
        let since_ad = since.map_or(0, |s| s.account_data);
        let mut push_rules_sent = false;
        for entry in self.storage.account_data.changed_since(user, since_ad).await? {
            let event = json!({"type": entry.data_type, "content": entry.content});
            if entry.room_id.is_empty() {
                push_rules_sent |= entry.data_type == "m.push_rules";
                if req.filter.account_data.allows_type(&entry.data_type) {
                    response.account_data.events.push(raw(&event));
                }
            } else if req.filter.room_account_data.allows_type(&entry.data_type)
                && let Ok(room_id) = OwnedRoomId::try_from(entry.room_id.as_str())
                && let Some(room) = response.rooms.join.get_mut(&room_id)
            {
                room.account_data.events.push(raw(&event));
            } else if let Ok(room_id) = OwnedRoomId::try_from(entry.room_id.as_str())
                && joined.contains(&entry.room_id)
                && req.filter.room_account_data.allows_type(&entry.data_type)
            {
                let mut room = JoinedRoom::new();
                room.account_data.events.push(raw(&event));
                response.rooms.join.insert(room_id, room);
            }
        }

        // The push rules are stored once the user changes one; until then an initial sync
        // carries the defaults.
        if since.is_none() && !push_rules_sent && req.filter.account_data.allows_type("m.push_rules") {
            response.account_data.events.push(raw(&json!({"type": "m.push_rules", "content": {"global": rules}})));
        }

        // Receipts and typing for joined rooms.
        let since_receipts = since.map_or(0, |s| s.receipts);
        let receipts = self.storage.ephemeral.receipts_since(&joined, since_receipts, now.receipts).await?;
        let mut by_room: BTreeMap<String, JsonValue> = BTreeMap::new();
        for r in receipts {
            if r.receipt_type == "m.read.private" && r.user_id != user {
                continue;
            }
            let content = by_room.entry(r.room_id.clone()).or_insert_with(|| json!({}));
            let mut receipt = json!({"ts": r.ts});
            if !r.thread_id.is_empty() {
                receipt["thread_id"] = r.thread_id.clone().into();
            }
            content[&r.event_id][&r.receipt_type][&r.user_id] = receipt;
        }
        for room in &joined {
            let mut events = Vec::new();
            if let Some(content) = by_room.remove(room)
                && req.filter.ephemeral.allows_type("m.receipt")
            {
                events.push(raw(&json!({"type": "m.receipt", "content": content})));
            }
            if req.filter.ephemeral.allows_type("m.typing")
                && let Some(users) = self.typing.changed_since(room, since.map_or(0, |s| s.typing))
                && (since.is_some() || !users.is_empty())
            {
                events.push(raw(&json!({"type": "m.typing", "content": {"user_ids": users}})));
            }
            if !events.is_empty()
                && let Ok(room_id) = OwnedRoomId::try_from(room.as_str())
            {
                response.rooms.join.entry(room_id).or_insert_with(JoinedRoom::new).ephemeral = {
                    let mut e = Ephemeral::default();
                    e.events = events;
                    e
                };
            }
        }

        // Rooms here only for receipts, typing or account data still get their unread counts (a
        // receipt from another device clears them).
        for (room_id, room) in &mut response.rooms.join {
            if room.unread_notifications.notification_count.is_none() {
                let members = self.storage.rooms.members(room_id.as_str()).await?;
                let joined_n = members.iter().filter(|m| m.membership == "join").count();
                let current = self.storage.rooms.current_state(room_id.as_str()).await?;
                let (notifications, highlights, threads) = self
                    .unread_counts(
                        room_id.as_str(),
                        user,
                        None,
                        joined_n,
                        &rules,
                        &displayname,
                        &current,
                        req.filter.timeline.unread_thread_notifications,
                    )
                    .await?;
                room.unread_notifications.notification_count = Some(uint(notifications));
                room.unread_notifications.highlight_count = Some(uint(highlights));
                room.unread_thread_notifications = threads;
            }
        }

        // To-device messages: delivered until a later token acknowledges them.
        let since_td = since.map_or(0, |s| s.to_device);
        let messages = self
            .storage
            .ephemeral
            .to_device(
                user,
                &req.device_id,
                since_td,
                now.to_device,
                i64::try_from(req.filter.to_device_limit).unwrap_or(100),
            )
            .await?;
        if messages.len() >= req.filter.to_device_limit
            && let Some(last) = messages.last()
        {
            now.to_device = last.stream_id;
        }
        response.to_device.events = messages
            .iter()
            .map(|m| raw(&json!({"type": m.event_type, "sender": m.sender, "content": m.content})))
            .collect();

        // End-to-end encryption keys arrive with their own issue; until then a device has no
        // one-time keys and no fallback key, which is what these say.
        response.device_one_time_keys_count.insert(ruma::OneTimeKeyAlgorithm::SignedCurve25519, uint(0));
        response.device_unused_fallback_key_types = Some(Vec::new());
        response.next_batch = now.render();
        Ok(response)
    }

    /// The stripped state an invitee or knocker sees, with their own membership event.
    async fn stripped_state(
        &self,
        room_id: &str,
        membership_event: &str,
    ) -> ServiceResult<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
        const TYPES: &[&str] = &[
            "m.room.create",
            "m.room.join_rules",
            "m.room.name",
            "m.room.avatar",
            "m.room.canonical_alias",
            "m.room.encryption",
            "m.room.topic",
        ];
        let mut rows: Vec<EventRow> = self
            .storage
            .rooms
            .current_state(room_id)
            .await?
            .into_iter()
            .filter(|r| TYPES.contains(&r.event_type.as_str()))
            .collect();
        if let Some(me) = self.storage.rooms.event(membership_event).await? {
            if let Some(inviter) = self.storage.rooms.current_state_event(room_id, "m.room.member", &me.sender).await?
                && inviter.event_id != me.event_id
            {
                rows.push(inviter);
            }
            rows.push(me);
        }
        Ok(rows.iter().map(|r| raw(&stripped(r))).collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn joined_room(
        &self,
        req: &SyncRequest,
        membership: &MembershipRow,
        since: Option<SyncToken>,
        now: SyncToken,
        changed_membership: bool,
        viewer: Viewer<'_>,
        push_rules: &ruma::push::Ruleset,
        displayname: &str,
    ) -> ServiceResult<Option<JoinedRoom>> {
        // All state for a (re)joined room or a `full_state` request; the timeline goes back before
        // `since` only for a (re)joined room (spec: with `full_state` "the timeline will still be
        // limited by the since parameter").
        let room_id = membership.room_id.as_str();
        let full = req.full_state || changed_membership;
        let from = if changed_membership { 0 } else { since.map_or(0, |s| s.events) };
        let limit = req.filter.timeline.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT).clamp(1, 500);
        let room_rules = self.rooms.rules_of(room_id).await?;
        // Newest first, one more than the limit to learn whether the timeline is limited.
        let mut rows = Vec::new();
        let mut cursor = now.events;
        let mut limited = false;
        loop {
            let batch = self
                .storage
                .rooms
                .events_backwards(room_id, from, cursor, i64::try_from(limit * 2 + 1).unwrap_or(100))
                .await?;
            let n = batch.len();
            for row in batch {
                cursor = row.stream_ordering - 1;
                if req.filter.timeline.allows(&row) {
                    if rows.len() == limit {
                        limited = true;
                        break;
                    }
                    rows.push(row);
                }
            }
            if limited || n < limit * 2 + 1 {
                break;
            }
        }
        if !full && rows.is_empty() && !req.full_state {
            return Ok(None);
        }
        rows.reverse();
        // Visibility: a joined user sees everything since their join and shared history. Events
        // after the join that is still the user's membership were all sent while joined.
        if rows.first().is_some_and(|r| r.stream_ordering <= membership.stream_ordering) {
            let vis = self.rooms.visibility(room_id, viewer.user_id).await?;
            rows.retain(|r| vis.allows(r.stream_ordering));
        }
        let first_pos = rows.first().map_or(now.events, |r| r.stream_ordering);
        let prev_batch = position_token(first_pos - 1);

        // State: in full, the state at the timeline's start; else the changes between the
        // token and the timeline's start.
        let current = self.storage.rooms.current_state(room_id).await?;
        let timeline_ids: BTreeSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        let senders: BTreeSet<&str> = rows.iter().map(|r| r.sender.as_str()).collect();
        let state_rows: Vec<&EventRow> = current
            .iter()
            .filter(|r| !timeline_ids.contains(r.event_id.as_str()))
            .filter(|r| {
                let in_gap = r.stream_ordering > from && r.stream_ordering < first_pos;
                if !req.filter.state.lazy_load_members || r.event_type != "m.room.member" {
                    return full || in_gap;
                }
                // Lazy-loaded members: the timeline's senders (the client may not know them yet;
                // redundant ones are allowed), the user's own membership with full state, and
                // every membership change in the gap of an incremental sync (spec: MUST).
                let key = r.state_key.as_deref().unwrap_or_default();
                senders.contains(key) || (full && key == viewer.user_id) || (!full && in_gap)
            })
            .filter(|r| req.filter.state.allows(r))
            .collect();
        let state: Vec<JsonValue> = state_rows
            .iter()
            .map(|r| self.rooms.render(std::slice::from_ref(*r), &room_rules, viewer).remove(0))
            .collect();
        let mut timeline = self.rooms.render(&rows, &room_rules, viewer);
        self.rooms.bundle_aggregations(viewer, &mut timeline).await?;

        let mut room = JoinedRoom::new();
        room.timeline = Timeline::new();
        room.timeline.limited = limited;
        room.timeline.prev_batch = Some(prev_batch);
        room.timeline.events = timeline.iter().map(raw).collect();
        room.state = State::Before(state_events(state.iter().map(raw).collect()));

        // Summary and unread counts.
        let members = self.storage.rooms.members(room_id).await?;
        let joined_n = members.iter().filter(|m| m.membership == "join").count();
        let invited_n = members.iter().filter(|m| m.membership == "invite").count();
        let mut summary = RoomSummary::new();
        summary.joined_member_count = Some(uint(joined_n));
        summary.invited_member_count = Some(uint(invited_n));
        let has_name = current.iter().any(|r| {
            (r.event_type == "m.room.name" || r.event_type == "m.room.canonical_alias")
                && !content_of(&r.pdu).as_object().is_none_or(|c| c.is_empty())
        });
        if !has_name {
            summary.heroes = members
                .iter()
                .filter(|m| m.user_id != viewer.user_id && (m.membership == "join" || m.membership == "invite"))
                .take(5)
                .filter_map(|m| OwnedUserId::try_from(m.user_id.as_str()).ok())
                .collect();
        }
        room.summary = summary;
        let (notifications, highlights, threads) = self
            .unread_counts(
                room_id,
                viewer.user_id,
                Some(membership.stream_ordering),
                joined_n,
                push_rules,
                displayname,
                &current,
                req.filter.timeline.unread_thread_notifications,
            )
            .await?;
        room.unread_notifications = UnreadNotificationsCount::new();
        room.unread_notifications.notification_count = Some(uint(notifications));
        room.unread_notifications.highlight_count = Some(uint(highlights));
        room.unread_thread_notifications = threads;
        Ok(Some(room))
    }

    /// Notification and highlight counts: push rules evaluated for the events after the user's
    /// read receipt (at most the last 500).
    #[allow(clippy::too_many_arguments)]
    async fn unread_counts(
        &self,
        room_id: &str,
        user: &str,
        own_join: Option<i64>,
        member_count: usize,
        rules: &ruma::push::Ruleset,
        displayname: &str,
        current: &[EventRow],
        per_thread: bool,
    ) -> ServiceResult<(usize, usize, BTreeMap<OwnedEventId, UnreadNotificationsCount>)> {
        let read = self.storage.ephemeral.read_up_to(room_id, user).await?.unwrap_or(0);
        let own_join = match own_join {
            Some(pos) => pos,
            None => self.storage.rooms.membership(room_id, user).await?.map_or(0, |m| m.stream_ordering),
        };
        let from = read.max(own_join);
        let key = (user.to_owned(), room_id.to_owned(), per_thread);
        let cached = self.unread.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let cached = match cached.filter(|c| c.from == from) {
            Some(c) => Some(c).filter(|c| c.fingerprint == push_fingerprint(rules, displayname)),
            None => None,
        };
        let start = cached.as_ref().map_or(from, |c| c.upto);
        let rows = self.storage.rooms.events_backwards(room_id, start, i64::MAX, MAX_UNREAD_EVENTS).await?;
        // More new events than are evaluated at once: count the newest afresh.
        let cached = cached.filter(|_| i64::try_from(rows.len()).unwrap_or(i64::MAX) < MAX_UNREAD_EVENTS);
        let upto = rows.first().map_or(start, |r| r.stream_ordering);
        let (mut counts, mut threads) = cached.map_or(((0, 0), BTreeMap::new()), |c| (c.counts, c.threads));
        if rows.is_empty() {
            return Ok((counts.0, counts.1, threads));
        }
        let room_rules = self.rooms.rules_of(room_id).await?;
        let user_id = UserId::parse(user).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let room = OwnedRoomId::try_from(room_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut ctx = PushConditionRoomCtx::new(room, uint(member_count), user_id.clone(), displayname.to_owned());
        let create = current.iter().find(|r| r.event_type == "m.room.create");
        let power_content = current.iter().find(|r| r.event_type == "m.room.power_levels").map(|r| content_of(&r.pdu));
        if let Some(create) = create
            && let Ok(version) = ruma::RoomVersionId::try_from(
                content_of(&create.pdu).get("room_version").and_then(JsonValue::as_str).unwrap_or("1"),
            )
            && let Some(version_rules) = version.rules()
        {
            let create_obj: Option<poststelle_federation::Pdu> =
                serde_json::from_str::<ruma::CanonicalJsonObject>(&create.pdu).ok().and_then(|o| {
                    poststelle_federation::Pdu::from_canonical(
                        OwnedEventId::try_from(create.event_id.as_str()).ok()?,
                        &o,
                    )
                    .ok()
                });
            let levels = PowerLevels::new(&version_rules, create_obj.as_ref(), power_content);
            ctx.power_levels = Some(PushConditionPowerLevelsCtx::from(levels.into_inner()));
        }
        for row in &rows {
            if row.sender == user || row.redacted_by.is_some() {
                continue;
            }
            let event = self
                .rooms
                .render(std::slice::from_ref(row), &room_rules, Viewer { user_id: user, device_id: None })
                .remove(0);
            let actions = rules.get_actions(&raw::<JsonValue>(&event), &ctx).await;
            let notify = actions.iter().any(|a| a.should_notify());
            let highlight = actions.iter().any(|a| a.is_highlight());
            let thread = (per_thread && row.rel_type_is_thread()).then(|| row.relates_to_id()).flatten();
            let slot = match thread.and_then(|t| OwnedEventId::try_from(t).ok()) {
                Some(root) => {
                    let c = threads.entry(root).or_insert_with(UnreadNotificationsCount::new);
                    (&mut c.notification_count, &mut c.highlight_count)
                }
                None => {
                    if notify {
                        counts.0 += 1;
                    }
                    if highlight {
                        counts.1 += 1;
                    }
                    continue;
                }
            };
            if notify {
                *slot.0 = Some(slot.0.unwrap_or_default() + UInt::from(1u32));
            }
            if highlight {
                *slot.1 = Some(slot.1.unwrap_or_default() + UInt::from(1u32));
            }
        }
        let fingerprint = push_fingerprint(rules, displayname);
        let entry = UnreadCache { from, upto, fingerprint, counts, threads: threads.clone() };
        let mut cache = self.unread.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_UNREAD_CACHE {
            cache.clear();
        }
        cache.insert(key, entry);
        Ok((counts.0, counts.1, threads))
    }

    async fn left_room(
        &self,
        req: &SyncRequest,
        m: &MembershipRow,
        since: Option<i64>,
        viewer: Viewer<'_>,
    ) -> ServiceResult<LeftRoom> {
        let rules = self.rooms.rules_of(&m.room_id).await?;
        let limit = req.filter.timeline.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT).clamp(1, 500);
        let from = since.unwrap_or(0);
        let mut rows = self
            .storage
            .rooms
            .events_backwards(&m.room_id, from, m.stream_ordering, i64::try_from(limit + 1).unwrap_or(11))
            .await?;
        let limited = rows.len() > limit;
        rows.truncate(limit);
        rows.reverse();
        let vis = self.rooms.visibility(&m.room_id, viewer.user_id).await?;
        rows.retain(|r| vis.allows(r.stream_ordering) && req.filter.timeline.allows(r));
        let first = rows.first().map_or(m.stream_ordering, |r| r.stream_ordering);
        let state_ids: Vec<String> = self
            .storage
            .rooms
            .state_ids_at(&m.event_id, false)
            .await?
            .into_iter()
            .map(|(_, _, e)| e)
            .filter(|e| !rows.iter().any(|r| &r.event_id == e))
            .collect();
        let state_rows: Vec<EventRow> = self
            .storage
            .rooms
            .events(&state_ids)
            .await?
            .into_iter()
            .filter(|r| since.is_none() || r.stream_ordering > from && r.stream_ordering < first || req.full_state)
            .collect();
        let mut room = LeftRoom::new();
        room.timeline = Timeline::new();
        room.timeline.limited = limited;
        room.timeline.prev_batch = Some(position_token(first - 1));
        room.timeline.events = self.rooms.render(&rows, &rules, viewer).iter().map(raw).collect();
        room.state =
            State::Before(state_events(self.rooms.render(&state_rows, &rules, viewer).iter().map(raw).collect()));
        Ok(room)
    }
}

fn state_events(events: Vec<Raw<ruma::events::AnySyncStateEvent>>) -> StateEvents {
    let mut s = StateEvents::default();
    s.events = events;
    s
}

fn is_empty(r: &Response) -> bool {
    r.rooms.join.is_empty()
        && r.rooms.invite.is_empty()
        && r.rooms.leave.is_empty()
        && r.rooms.knock.is_empty()
        && r.account_data.events.is_empty()
        && r.to_device.events.is_empty()
}

impl EventRow {
    fn rel_type_is_thread(&self) -> bool {
        content_of(&self.pdu).get("m.relates_to").and_then(|r| r.get("rel_type")).and_then(JsonValue::as_str)
            == Some("m.thread")
    }

    fn relates_to_id(&self) -> Option<String> {
        content_of(&self.pdu)
            .get("m.relates_to")
            .and_then(|r| r.get("event_id"))
            .and_then(JsonValue::as_str)
            .map(str::to_owned)
    }
}

#[allow(dead_code)]
fn _assert_types(_: GlobalAccountData, _: RoomAccountData) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let t = SyncToken { events: 5, receipts: 2, to_device: 9, account_data: 3, typing: 7 };
        assert_eq!(SyncToken::parse(&t.render()).unwrap(), t);
        for bad in ["", "s1_2", "x1_2_3_4_5", "s1_2_3_4_x", "s-1_2_3_4_5"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}
