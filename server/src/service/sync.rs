//! `/sync`: everything that changed for a user since a token, read from the streams' positions.
//! Tokens are opaque vectors of positions,
//! `s<events>_<receipts>_<to_device>_<account_data>_<typing>_<device_lists>_<presence>`.
//! A sync reads what it needs before its rooms in one statement (`RoomStore::sync_basis`, which
//! for an incremental sync also holds the first timeline batch of each room with new events),
//! then only the streams that moved. The request and its token are in `request`, the sections per
//! room in `rooms`, the rooms' current state kept between syncs in `room_state`, the unread
//! counts in `unread`, presence in `presence`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use ruma::{
    OwnedRoomId, UInt,
    api::client::sync::sync_events::v3::{
        Ephemeral, GlobalAccountData, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, Response,
        RoomAccountData,
    },
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use super::{
    ServiceError, ServiceResult,
    account_data::{AccountDataService, push_rules_from},
    notifier::{Notifier, Topic},
    presence::PresenceService,
    rooms::{RoomService, client_format::Viewer},
    typing::TypingService,
};
use crate::storage::{Storage, e2ee::KeyCounts, ephemeral::ToDeviceRow, rooms::SyncBasis};

mod presence;
mod request;
mod room_state;
mod rooms;
mod sliding;
mod unread;

pub use self::{
    request::{SyncFilter, SyncRequest, SyncToken},
    sliding::SlidingRequest,
};
use self::{room_state::RoomStates, unread::UnreadCache};

/// Timeline events per room in a sync unless the filter says otherwise.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Joined rooms of one `/sync` that are read concurrently (each holds a pooled connection while
/// it queries).
const JOINED_ROOMS_AT_ONCE: usize = 4;
/// Devices whose handed-out to-device messages are remembered at most (forgotten all at once).
const MAX_UNACKNOWLEDGED: usize = 100_000;
/// The longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct SyncService {
    storage: Storage,
    rooms: Arc<RoomService>,
    account_data: Arc<AccountDataService>,
    typing: Arc<TypingService>,
    notifier: Arc<Notifier>,
    presence: Arc<PresenceService>,
    /// Unread counts per (user, room, per-thread) as last computed, so the next sync only
    /// evaluates push rules for the events after them.
    unread: std::sync::Mutex<BTreeMap<(String, String, bool), UnreadCache>>,
    /// The current state of rooms, under the version it was read at.
    room_states: RoomStates,
    /// Per (user, device): the newest to-device message handed out and not yet acknowledged by
    /// a later token (acknowledged messages are deleted when the next sync reads its messages).
    to_device_unacknowledged: std::sync::Mutex<BTreeMap<(String, String), i64>>,
}

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
        presence: Arc<PresenceService>,
    ) -> Self {
        Self {
            storage,
            rooms,
            account_data,
            typing,
            notifier,
            presence,
            unread: std::sync::Mutex::default(),
            room_states: RoomStates::default(),
            to_device_unacknowledged: std::sync::Mutex::default(),
        }
    }

    /// The streams' positions now, with what the sync reads before its rooms; rooms count as
    /// active when they have events after `since_events`.
    async fn basis(
        &self,
        user_id: &str,
        device_id: &str,
        since_events: Option<i64>,
        timeline_batch: Option<i64>,
    ) -> ServiceResult<(SyncToken, SyncBasis)> {
        let basis = self.storage.rooms.sync_basis(user_id, device_id, since_events, timeline_batch).await?;
        let p = basis.positions;
        let now = SyncToken {
            events: p.events,
            receipts: p.receipts,
            to_device: p.to_device,
            account_data: p.account_data,
            typing: self.typing.position(),
            device_lists: p.device_lists,
            presence: self.presence.position_from(p.presence),
        };
        Ok((now, basis))
    }

    /// Answers at once when something changed since the token, else waits up to the timeout.
    /// The user counts as online (per `set_presence`) while the sync runs.
    pub async fn sync(&self, req: SyncRequest) -> ServiceResult<Response> {
        let since = req.since.as_deref().map(SyncToken::parse).transpose()?;
        let wait = if since.is_some() { req.timeout.min(MAX_TIMEOUT) } else { Duration::ZERO };
        let syncing = self.presence_syncing(req.user_id.as_str(), &req.set_presence, wait).await?;
        let response = self.sync_until(&req, since, wait).await;
        if syncing.is_some() {
            // Noted after the answer leaves, not before it.
            let (presence, user) = (self.presence.clone(), req.user_id.clone());
            tokio::spawn(async move { presence.sync_ended(user.as_str(), syncing).await });
        }
        response
    }

    async fn sync_until(&self, req: &SyncRequest, since: Option<SyncToken>, wait: Duration) -> ServiceResult<Response> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut wake = self.notifier.subscribe(Topic::Any);
        loop {
            wake.borrow_and_update();
            let started = std::time::Instant::now();
            let since_events = since.filter(|_| !req.full_state).map(|s| s.events);
            let batch = rooms::timeline_batch(rooms::timeline_limit(req));
            let (now, basis) = self.basis(req.user_id.as_str(), &req.device_id, since_events, Some(batch)).await?;
            let basis_us = started.elapsed().as_micros();
            let waiting = since.is_some() && !req.full_state && tokio::time::Instant::now() < deadline;
            // Nothing moved (a wake-up for a stream position that did not change): skip the
            // per-room work.
            if waiting && since == Some(now) && self.wait(&mut wake, deadline).await {
                continue;
            }
            let response = self.build(req, since, now, basis).await?;
            if !waiting || !is_empty(&response) || !self.wait(&mut wake, deadline).await {
                tracing::debug!(
                    user_id = %req.user_id, basis_us, built_us = started.elapsed().as_micros(), "answered a sync"
                );
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

    async fn build(
        &self,
        req: &SyncRequest,
        since: Option<SyncToken>,
        now: SyncToken,
        mut basis: SyncBasis,
    ) -> ServiceResult<Response> {
        let mut now = now;
        let user = req.user_id.as_str();
        let since_events = since.map(|s| s.events);
        let viewer = Viewer { user_id: user, device_id: Some(&req.device_id) };
        let mut response = Response::new(String::new());
        let (rules, displayname) = push_facts(&req.user_id, &mut basis)?;
        let mut memberships = std::mem::take(&mut basis.memberships);
        // With `full_state` every room counts as changed, so membership changes are looked for.
        let members_changed = basis.members_changed || (req.full_state && since.is_some());

        // The sections that do not depend on the rooms are read at once, each on its own pooled
        // connection, and only when their stream moved: a woken sync answers after the slowest of
        // them, not after their sum.
        let since_ad = since.map_or(0, |s| s.account_data);
        let to_device_limit = i64::try_from(req.filter.to_device_limit).unwrap_or(100);
        let (account_data, messages, device_lists, presence) = tokio::try_join!(
            async {
                // The user's account-data position is its newest entry's: unmoved means unchanged.
                if since.is_some_and(|s| s.account_data == now.account_data) {
                    return Ok(Vec::new());
                }
                Ok(self.storage.account_data.changed_since(user, since_ad).await?)
            },
            self.to_device_messages(req, since, now, to_device_limit),
            // Whose devices changed (incremental syncs only: an initial sync's client fetches
            // the device lists it needs anyway).
            self.device_list_changes(user, since, now, members_changed),
            self.presence_section(req, since, now, members_changed),
        )?;
        let (counts, fallback) = key_counts(&basis.key_counts);
        let joined: Vec<String> =
            memberships.iter().filter(|m| m.row.membership == "join").map(|m| m.row.room_id.clone()).collect();

        let since_receipts = since.map_or(0, |s| s.receipts);
        let mut receipts_by_room = self.receipt_contents(&joined, user, since_receipts, now.receipts).await?;
        let mut joined_jobs = Vec::new();
        for (index, m) in memberships.iter_mut().enumerate() {
            if !req.filter.rooms.allows_room(&m.row.room_id) {
                continue;
            }
            let changed_membership = since_events.is_none_or(|s| m.row.stream_ordering > s);
            // Incremental: only rooms with new events (or a membership change) need their timeline.
            if m.row.membership == "join" && !changed_membership && !m.active {
                continue;
            }
            let room_id =
                OwnedRoomId::try_from(m.row.room_id.as_str()).map_err(|e| ServiceError::Internal(e.to_string()))?;
            match m.row.membership.as_str() {
                // The room's first timeline batch, read with the basis, goes to its job.
                "join" => joined_jobs.push((room_id, index, changed_membership, m.recent.take())),
                "invite" if changed_membership || req.full_state => {
                    let events = self.stripped_state(&m.row.room_id, &m.row.event_id).await?;
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
                    let events = self.stripped_state(&m.row.room_id, &m.row.event_id).await?;
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
                    let room = self.left_room(req, &m.row, since_events, viewer).await?;
                    response.rooms.leave.insert(room_id, room);
                }
                _ => {}
            }
        }

        // Joined rooms, a few at a time: each is a handful of short queries, so overlapping
        // them hides the round trips; the order of the response stays that of the memberships.
        let (rules, displayname, memberships) = (&rules, displayname.as_str(), &memberships);
        let mut rooms = futures_util::stream::iter(joined_jobs)
            .map(|(room_id, index, changed, recent)| async move {
                let m = &memberships[index];
                let room = self.joined_room(req, m, recent, since, now, changed, viewer, rules, displayname).await;
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
        let mut push_rules_sent = false;
        for entry in account_data {
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
        for room in &joined {
            let mut events = Vec::new();
            if let Some(content) = receipts_by_room.remove(room)
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
                let state = self.room_state(room_id.as_str(), None).await?;
                let (notifications, highlights, threads) = self
                    .unread_counts(
                        room_id.as_str(),
                        user,
                        (None, None),
                        state.joined(),
                        (rules, displayname),
                        &state.current,
                        req.filter.timeline.unread_thread_notifications,
                        None,
                    )
                    .await?;
                room.unread_notifications.notification_count = Some(uint(notifications));
                room.unread_notifications.highlight_count = Some(uint(highlights));
                room.unread_thread_notifications = threads;
            }
        }

        // To-device messages: delivered until a later token acknowledges them.
        if messages.len() >= req.filter.to_device_limit
            && let Some(last) = messages.last()
        {
            now.to_device = last.stream_id;
        }
        response.to_device.events = messages
            .iter()
            .map(|m| raw(&json!({"type": m.event_type, "sender": m.sender, "content": m.content})))
            .collect();

        response.device_lists = device_lists;
        response.presence = presence;
        response.device_one_time_keys_count = counts;
        response.device_unused_fallback_key_types = Some(fallback);
        response.next_batch = now.render();
        Ok(response)
    }
}

impl SyncService {
    /// Users whose devices changed, or who no longer share a room, between two tokens. Nothing
    /// to look at when neither devices nor memberships in the user's rooms changed.
    async fn device_list_changes(
        &self,
        user: &str,
        since: Option<SyncToken>,
        now: SyncToken,
        members_changed: bool,
    ) -> ServiceResult<ruma::api::client::sync::sync_events::DeviceLists> {
        let mut lists = ruma::api::client::sync::sync_events::DeviceLists::new();
        if let Some(since) = since
            && (since.device_lists != now.device_lists || (since.events != now.events && members_changed))
        {
            let (changed, left) = self
                .storage
                .e2ee
                .device_list_updates(user, (since.device_lists, now.device_lists), (since.events, now.events))
                .await?;
            lists.changed = changed.iter().filter_map(|u| ruma::OwnedUserId::try_from(u.as_str()).ok()).collect();
            lists.left = left.iter().filter_map(|u| ruma::OwnedUserId::try_from(u.as_str()).ok()).collect();
        }
        Ok(lists)
    }

    /// To-device messages after the token, read (and those it acknowledges deleted) only when
    /// the stream moved or messages handed out before wait for this acknowledgement.
    async fn to_device_messages(
        &self,
        req: &SyncRequest,
        since: Option<SyncToken>,
        now: SyncToken,
        limit: i64,
    ) -> ServiceResult<Vec<ToDeviceRow>> {
        let key = (req.user_id.to_string(), req.device_id.clone());
        let since_td = since.map_or(0, |s| s.to_device);
        let handed_out = self.unacknowledged().get(&key).copied();
        let acknowledges = handed_out.is_some_and(|h| h <= since_td);
        if since.is_some_and(|s| s.to_device == now.to_device) && !acknowledges {
            return Ok(Vec::new());
        }
        let messages = self
            .storage
            .ephemeral
            .to_device(req.user_id.as_str(), &req.device_id, since_td, now.to_device, limit)
            .await?;
        let mut unacknowledged = self.unacknowledged();
        match messages.last() {
            Some(last) => {
                if unacknowledged.len() >= MAX_UNACKNOWLEDGED && !unacknowledged.contains_key(&key) {
                    // Forgetting only delays deletions to the device's next new message.
                    unacknowledged.clear();
                }
                let newest = unacknowledged.get(&key).map_or(last.stream_id, |h| (*h).max(last.stream_id));
                unacknowledged.insert(key, newest);
            }
            None if acknowledges => {
                unacknowledged.remove(&key);
            }
            None => {}
        }
        Ok(messages)
    }

    fn unacknowledged(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), i64>> {
        self.to_device_unacknowledged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `m.receipt` contents per room for receipts in `(since, upto]`; private read receipts only
    /// the user's own.
    async fn receipt_contents(
        &self,
        rooms: &[String],
        user: &str,
        since: i64,
        upto: i64,
    ) -> ServiceResult<BTreeMap<String, JsonValue>> {
        let mut by_room: BTreeMap<String, JsonValue> = BTreeMap::new();
        if since >= upto {
            return Ok(by_room);
        }
        for r in self.storage.ephemeral.receipts_since(rooms, since, upto).await? {
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
        Ok(by_room)
    }
}

/// What push rules are evaluated with for the user: their rules and display name.
fn push_facts(user_id: &ruma::UserId, basis: &mut SyncBasis) -> ServiceResult<(ruma::push::Ruleset, String)> {
    let rules = push_rules_from(user_id, basis.push_rules.take())?;
    let displayname = basis.displayname.take().unwrap_or_else(|| user_id.localpart().to_owned());
    Ok((rules, displayname))
}

/// The device's one-time key counts and unused fallback key types.
fn key_counts(counts: &KeyCounts) -> (BTreeMap<ruma::OneTimeKeyAlgorithm, UInt>, Vec<ruma::OneTimeKeyAlgorithm>) {
    let fallback = counts.unused_fallback.iter().map(|a| ruma::OneTimeKeyAlgorithm::from(a.as_str())).collect();
    (super::e2ee::one_time_key_counts(counts), fallback)
}

fn is_empty(r: &Response) -> bool {
    r.rooms.join.is_empty()
        && r.rooms.invite.is_empty()
        && r.rooms.leave.is_empty()
        && r.rooms.knock.is_empty()
        && r.account_data.events.is_empty()
        && r.to_device.events.is_empty()
        && r.device_lists.is_empty()
        && r.presence.is_empty()
}

#[allow(dead_code)]
fn _assert_types(_: GlobalAccountData, _: RoomAccountData) {}
