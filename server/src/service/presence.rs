//! Presence: whether users are online, unavailable or offline, with a status message and how
//! long ago they were last active. Local users' presence follows their requests (setting it,
//! syncing, sending events) and time (`transitions`); other servers tell us about theirs in
//! `m.presence` EDUs, and we tell the servers sharing a room with our users about their changes.
//! With `presence.enabled = false` nothing is stored, sent or shown and everyone reads offline.

use std::{sync::Arc, time::Duration};

use serde_json::{Value as JsonValue, json};

use super::{
    ServiceError, ServiceResult,
    notifier::{Change, Notifier, Topic},
};
use crate::storage::{
    Storage, now_ms,
    presence::{PresenceRow, PresenceWrite},
};

pub mod transitions;

use self::transitions::{ACTIVITY_NOTE_MS, OFFLINE, ONLINE, UNAVAILABLE};

/// How often time-driven changes (idle, offline) are looked for.
const TIMEOUT_PASS: Duration = Duration::from_secs(5);
/// The longest status message kept.
const MAX_STATUS_MSG: usize = 1024;
/// At most this many entries of one `m.presence` EDU are read.
const MAX_EDU_ENTRIES: usize = 1000;
/// How many users' noted activity is remembered before starting afresh.
const MAX_ACTIVITY_NOTES: usize = 100_000;

/// A user's presence as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceView {
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ago: Option<u64>,
    pub currently_active: Option<bool>,
}

impl PresenceView {
    fn offline() -> Self {
        Self { state: OFFLINE.to_owned(), status_msg: None, last_active_ago: None, currently_active: None }
    }

    fn of(row: &PresenceRow, now: i64) -> Self {
        Self {
            state: row.state.clone(),
            status_msg: row.status_msg.clone(),
            last_active_ago: (row.last_active_ts > 0).then(|| u64::try_from(now - row.last_active_ts).unwrap_or(0)),
            currently_active: Some(row.currently_active),
        }
    }

    /// The content of an `m.presence` event (and of an `m.presence` EDU entry, with `user_id`).
    pub fn content(&self) -> JsonValue {
        let mut content = json!({"presence": self.state});
        if let Some(ago) = self.last_active_ago {
            content["last_active_ago"] = ago.into();
        }
        if let Some(active) = self.currently_active {
            content["currently_active"] = active.into();
        }
        if let Some(msg) = &self.status_msg {
            content["status_msg"] = msg.clone().into();
        }
        content
    }
}

#[derive(Debug)]
pub struct PresenceService {
    storage: Storage,
    notifier: Arc<Notifier>,
    server_name: String,
    enabled: bool,
    activity: std::sync::Mutex<ActivityNotes>,
}

/// When each of our users' activity was last found noted (online, currently active, active
/// at that time), so that a busy sender's messages within [`ACTIVITY_NOTE_MS`] of it do not
/// each read the row: such activity changes nothing. Forgotten whenever any process changes
/// a presence visibly, which is the only way such a row stops being online and active
/// within that time.
#[derive(Debug)]
struct ActivityNotes {
    presence_changes: tokio::sync::watch::Receiver<u64>,
    noted: std::collections::BTreeMap<String, i64>,
}

impl ActivityNotes {
    /// Whether activity at `now` is already noted as far as it needs to be.
    fn covers(&mut self, user_id: &str, now: i64) -> bool {
        if self.presence_changes.has_changed().unwrap_or(true) || self.noted.len() >= MAX_ACTIVITY_NOTES {
            self.presence_changes.borrow_and_update();
            self.noted.clear();
        }
        self.noted.get(user_id).is_some_and(|at| (0..ACTIVITY_NOTE_MS).contains(&(now - at)))
    }
}

/// An `m.presence` EDU's content about these users.
fn edu(rows: &[&PresenceRow], now: i64) -> JsonValue {
    let push: Vec<JsonValue> = rows
        .iter()
        .map(|row| {
            let mut entry = PresenceView::of(row, now).content();
            entry["user_id"] = row.user_id.clone().into();
            entry
        })
        .collect();
    json!({ "push": push })
}

/// The server part of a user id.
fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, s)| s)
}

impl PresenceService {
    pub fn new(storage: Storage, notifier: Arc<Notifier>, server_name: String, enabled: bool) -> Self {
        let activity =
            ActivityNotes { presence_changes: notifier.subscribe(Topic::Presence), noted: Default::default() };
        Self { storage, notifier, server_name, enabled, activity: std::sync::Mutex::new(activity) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The presence stream's position as read with the other sync positions; 0 while presence
    /// is off.
    pub fn position_from(&self, stored: i64) -> i64 {
        if self.enabled { stored } else { 0 }
    }

    /// `GET …/presence/{userId}/status`: one's own, or of a user sharing a room with one.
    pub async fn get(&self, requester: &str, target: &str) -> ServiceResult<PresenceView> {
        if server_of(target) == self.server_name && self.storage.users.get(target).await?.is_none() {
            return Err(ServiceError::NotFound(format!("unknown user {target}")));
        }
        if requester != target && !self.storage.rooms.share_a_room(requester, target).await? {
            return Err(ServiceError::Forbidden(format!("{requester} shares no room with {target}")));
        }
        if !self.enabled {
            return Ok(PresenceView::offline());
        }
        let row = self.storage.presence.get(target).await?;
        Ok(row.map_or_else(PresenceView::offline, |r| PresenceView::of(&r, now_ms())))
    }

    /// `PUT …/presence/{userId}/status`: only one's own.
    pub async fn set(
        &self,
        requester: &str,
        target: &str,
        state: &str,
        status_msg: Option<String>,
    ) -> ServiceResult<()> {
        if requester != target {
            return Err(ServiceError::Forbidden("cannot set another user's presence".into()));
        }
        if ![ONLINE, UNAVAILABLE, OFFLINE].contains(&state) {
            return Err(ServiceError::InvalidParam(format!("unknown presence state {state:?}")));
        }
        if status_msg.as_ref().is_some_and(|m| m.len() > MAX_STATUS_MSG) {
            return Err(ServiceError::InvalidParam(format!("status_msg is longer than {MAX_STATUS_MSG} bytes")));
        }
        if !self.enabled {
            return Ok(());
        }
        let now = now_ms();
        self.update_local(target, now, |old| transitions::set_explicitly(old, target, state, status_msg, now)).await
    }

    /// A `/sync` with `set_presence` `wanted` starts and may wait until `until`; returns what to
    /// hand to `sync_ended` (nothing when the sync does not affect presence).
    pub async fn syncing(&self, user_id: &str, wanted: &str, until: i64) -> Option<i64> {
        if !self.enabled || !(wanted == ONLINE || wanted == UNAVAILABLE) {
            return None;
        }
        let now = now_ms();
        let done = self.update_local(user_id, now, |old| transitions::syncing(old, user_id, wanted, until, now)).await;
        if let Err(e) = done {
            tracing::warn!(user_id, error = %e, "could not note a syncing user's presence");
        }
        Some(until)
    }

    /// The sync that `syncing` returned `until` for has ended.
    pub async fn sync_ended(&self, user_id: &str, until: Option<i64>) {
        let Some(until) = until else { return };
        let now = now_ms();
        if let Err(e) = self.update_local(user_id, now, |old| transitions::sync_ended(old, until, now)).await {
            tracing::warn!(user_id, error = %e, "could not note the end of a sync");
        }
    }

    /// The user did something (sent an event).
    pub async fn note_activity(&self, user_id: &str) {
        if !self.enabled {
            return;
        }
        let now = now_ms();
        if self.activity.lock().is_ok_and(|mut notes| notes.covers(user_id, now)) {
            return;
        }
        let mut noted_at = None;
        let noting = self.update_local(user_id, now, |old| {
            let write = transitions::active(old, user_id, now);
            noted_at = match &write {
                Some(w) => Some(w.row.last_active_ts),
                None => old.map(|o| o.last_active_ts),
            };
            write
        });
        match noting.await {
            Ok(()) => {
                if let (Some(at), Ok(mut notes)) = (noted_at, self.activity.lock()) {
                    notes.noted.insert(user_id.to_owned(), at);
                }
            }
            Err(e) => tracing::warn!(user_id, error = %e, "could not note a user's activity"),
        }
    }

    /// Writes a change of our user's presence; a visible one wakes syncs and goes to the servers
    /// sharing a room with the user.
    async fn update_local<F>(&self, user_id: &str, now: i64, change: F) -> ServiceResult<()>
    where
        F: FnOnce(Option<&PresenceRow>) -> Option<PresenceWrite>,
    {
        let written = self
            .storage
            .presence
            .update(user_id, |old| {
                let mut write = change(old)?;
                if write.visible || transitions::refresh_due(&write.row, now) {
                    write.row.last_federation_ts = now;
                }
                Some(write)
            })
            .await?;
        if let Some(write) = written
            && write.row.last_federation_ts == now
        {
            // Announced before the wake-up, so that the sender finds the EDU queued.
            let announced = self.announce(&write.row, now).await?;
            if write.visible || announced {
                self.notifier.changed(Change::Presence);
            }
        }
        Ok(())
    }

    /// Queues an `m.presence` EDU about our user for the other servers sharing a room with
    /// them; whether there were any.
    async fn announce(&self, row: &PresenceRow, now: i64) -> ServiceResult<bool> {
        let mut servers = self.storage.e2ee.servers_sharing_a_room(&row.user_id).await?;
        servers.retain(|s| *s != self.server_name);
        if servers.is_empty() {
            return Ok(false);
        }
        self.storage.federation.queue_edu(&servers, "m.presence", &edu(&[row], now), now).await?;
        tracing::debug!(user_id = %row.user_id, state = %row.state, servers = servers.len(), "presence queued for other servers");
        Ok(true)
    }

    /// An `m.presence` EDU from `origin`: entries for its own users who share a room with ours
    /// are kept; the others are dropped.
    pub async fn receive_edu(&self, origin: &str, content: &JsonValue) -> ServiceResult<()> {
        if !self.enabled {
            return Ok(());
        }
        let Some(push) = content.get("push").and_then(JsonValue::as_array) else {
            return Err(ServiceError::BadJson("m.presence without a push list".into()));
        };
        for entry in push.iter().take(MAX_EDU_ENTRIES) {
            let Some(user_id) = entry.get("user_id").and_then(JsonValue::as_str) else { continue };
            let state = entry.get("presence").and_then(JsonValue::as_str).unwrap_or_default();
            if server_of(user_id) != origin || ![ONLINE, UNAVAILABLE, OFFLINE].contains(&state) {
                tracing::debug!(origin, user_id, "dropped a presence entry");
                continue;
            }
            let user = [user_id.to_owned()];
            if self.storage.e2ee.users_sharing_a_room_with_server(&self.server_name, &user).await?.is_empty() {
                continue;
            }
            let status_msg = entry
                .get("status_msg")
                .and_then(JsonValue::as_str)
                .map(|m| m.chars().take(MAX_STATUS_MSG).collect::<String>());
            let ago = entry.get("last_active_ago").and_then(JsonValue::as_i64);
            let active = entry.get("currently_active").and_then(JsonValue::as_bool).unwrap_or(false);
            let now = now_ms();
            let written = self
                .storage
                .presence
                .update(user_id, |old| transitions::received(old, user_id, state, status_msg, ago, active, now))
                .await?;
            if written.is_some_and(|w| w.visible) {
                self.notifier.changed(Change::Other);
            }
        }
        Ok(())
    }

    /// Applies the time-driven changes every few seconds, in every process (each change is
    /// re-checked under the row's lock, so processes sharing the database do not repeat one).
    pub fn spawn(self: &Arc<Self>) {
        if !self.enabled {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TIMEOUT_PASS);
            loop {
                tick.tick().await;
                if let Err(e) = this.timeout_pass().await {
                    tracing::warn!(error = %e, "presence timeout pass failed");
                }
            }
        });
    }

    async fn timeout_pass(&self) -> ServiceResult<()> {
        let now = now_ms();
        self.tell_new_room_mates(now).await?;
        for row in self.storage.presence.not_offline().await? {
            let local = server_of(&row.user_id) == self.server_name;
            let due =
                transitions::timed_out(&row, local, now).is_some() || (local && transitions::refresh_due(&row, now));
            if !due {
                continue;
            }
            if local {
                self.update_local(&row.user_id, now, |old| {
                    let old = old?;
                    transitions::timed_out(old, true, now).or_else(|| {
                        transitions::refresh_due(old, now).then(|| PresenceWrite { row: old.clone(), visible: false })
                    })
                })
                .await?;
            } else {
                let written =
                    self.storage.presence.update(&row.user_id, |old| transitions::timed_out(old?, false, now)).await?;
                if written.is_some_and(|w| w.visible) {
                    self.notifier.changed(Change::Other);
                }
            }
        }
        Ok(())
    }

    /// Servers learn our users' presence when they first share a room: for each join since the
    /// last pass, a joining user of ours has their presence sent to the room's other servers,
    /// and another server's joining user brings that server the presence of our members.
    async fn tell_new_room_mates(&self, now: i64) -> ServiceResult<()> {
        let head = self.storage.presence.events_position().await?;
        let Some(from) = self.storage.presence.claim_joins(head).await? else { return Ok(()) };
        for (room_id, user_id) in self.storage.presence.joins_between(from, head).await? {
            let (rows, servers) = if server_of(&user_id) == self.server_name {
                let mut servers = self.storage.federation.servers_at(&room_id, i64::MAX).await?;
                servers.retain(|s| *s != self.server_name);
                (self.storage.presence.of_users(&[user_id]).await?, servers)
            } else {
                let ours: Vec<String> = self
                    .storage
                    .rooms
                    .members(&room_id)
                    .await?
                    .into_iter()
                    .filter(|m| m.membership == "join" && server_of(&m.user_id) == self.server_name)
                    .map(|m| m.user_id)
                    .collect();
                (self.storage.presence.of_users(&ours).await?, vec![server_of(&user_id).to_owned()])
            };
            let rows: Vec<&PresenceRow> = rows.iter().filter(|r| r.state != OFFLINE).collect();
            if !rows.is_empty() && !servers.is_empty() {
                self.storage.federation.queue_edu(&servers, "m.presence", &edu(&rows, now), now).await?;
            }
        }
        Ok(())
    }

    /// Presence events for a sync: changes in `(from, to]` of the user and those sharing a room
    /// with them (on an initial sync, `from` is `None`: everyone's who is not offline), plus the
    /// current presence of `extra` users (newly sharing a room), as (user, content).
    pub async fn for_sync(
        &self,
        user_id: &str,
        from: Option<i64>,
        to: i64,
        extra: &[String],
    ) -> ServiceResult<Vec<(String, JsonValue)>> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut rows: std::collections::BTreeMap<String, PresenceRow> = std::collections::BTreeMap::new();
        // Nothing to read when the stream did not move (most wake-ups are for new events).
        let changes = if from == Some(to) {
            Vec::new()
        } else {
            self.storage.presence.changes_for(user_id, from.unwrap_or(0), to).await?
        };
        for row in changes {
            if from.is_some() || row.state != OFFLINE || row.user_id == user_id {
                rows.insert(row.user_id.clone(), row);
            }
        }
        let mut events: Vec<(String, JsonValue)> = Vec::new();
        let mut found = std::collections::BTreeSet::new();
        let newly_shared = if extra.is_empty() { Vec::new() } else { self.storage.presence.of_users(extra).await? };
        for row in newly_shared {
            found.insert(row.user_id.clone());
            rows.entry(row.user_id.clone()).or_insert(row);
        }
        for user in extra.iter().filter(|u| !found.contains(*u) && !rows.contains_key(*u)) {
            events.push((user.clone(), PresenceView::offline().content()));
        }
        events.extend(rows.into_values().map(|r| (r.user_id.clone(), PresenceView::of(&r, now).content())));
        Ok(events)
    }
}
