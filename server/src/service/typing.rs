//! Typing notifications: held in memory with their timeouts, shared between processes through
//! `NOTIFY` (payload `typing <room> <user> <timeout ms, 0 = stopped> <process>`). A process
//! ignores its own notifications: it applied the change already, and applying it a second time,
//! late, would count as another change (and restart the timeout).

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use super::ServiceResult;

/// The longest typing timeout honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct State {
    rooms: BTreeMap<String, BTreeMap<String, Instant>>,
    /// Last change per room (a local serial, the typing stream position).
    changed: BTreeMap<String, u64>,
    serial: u64,
}

#[derive(Debug)]
pub struct TypingService {
    pool: PgPool,
    state: Mutex<State>,
    /// This process's id in the notifications it sends.
    origin: String,
}

impl TypingService {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, state: Mutex::new(State::default()), origin: super::tokens::random_alphanumeric(12) }
    }

    /// Sets or clears the user's typing state and tells the other processes.
    pub async fn set(&self, room_id: &str, user_id: &str, timeout: Option<Duration>) -> ServiceResult<()> {
        let timeout = timeout.map(|t| t.min(MAX_TIMEOUT));
        self.apply(room_id, user_id, timeout);
        let ms = timeout.map(|t| t.as_millis().max(1)).unwrap_or(0);
        sqlx::query!(
            "SELECT pg_notify('poststelle_streams', $1)",
            format!("typing {room_id} {user_id} {ms} {}", self.origin)
        )
        .execute(&self.pool)
        .await
        .map_err(crate::storage::StorageError::from)?;
        Ok(())
    }

    /// A notification from any process (including this one).
    pub fn apply_remote(&self, payload: &str) {
        let mut parts = payload.split(' ');
        if let (Some(room), Some(user), Some(ms)) = (parts.next(), parts.next(), parts.next()) {
            if parts.next() == Some(self.origin.as_str()) {
                return;
            }
            let timeout = ms.parse::<u64>().ok().filter(|ms| *ms > 0).map(Duration::from_millis);
            self.apply(room, user, timeout);
        }
    }

    fn apply(&self, room_id: &str, user_id: &str, timeout: Option<Duration>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let users = state.rooms.entry(room_id.to_owned()).or_default();
        let changed = match timeout {
            Some(t) => users.insert(user_id.to_owned(), Instant::now() + t).is_none(),
            None => users.remove(user_id).is_some(),
        };
        if changed || timeout.is_some() {
            state.serial += 1;
            let serial = state.serial;
            state.changed.insert(room_id.to_owned(), serial);
        }
    }

    /// Drops expired entries; returns whether any expired (their rooms count as changed).
    pub fn expire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut expired = Vec::new();
        for (room, users) in &mut state.rooms {
            let before = users.len();
            users.retain(|_, until| *until > now);
            if users.len() != before {
                expired.push(room.clone());
            }
        }
        for room in &expired {
            state.serial += 1;
            let serial = state.serial;
            state.changed.insert(room.clone(), serial);
        }
        !expired.is_empty()
    }

    /// The current typing stream position.
    pub fn position(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).serial
    }

    /// Users typing in `room_id` if the room changed after `since`.
    pub fn changed_since(&self, room_id: &str, since: u64) -> Option<Vec<String>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = state.changed.get(room_id).copied().unwrap_or(0);
        // A position from another process (or before a restart) may be ahead of ours: resend.
        if changed > since || since > state.serial {
            let now = Instant::now();
            Some(
                state
                    .rooms
                    .get(room_id)
                    .map(|u| u.iter().filter(|(_, t)| **t > now).map(|(u, _)| u.clone()).collect())
                    .unwrap_or_default(),
            )
        } else {
            None
        }
    }

    /// When the next typing entry expires (so a waiting sync can wake for it).
    pub fn next_expiry(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.rooms.values().flat_map(|u| u.values().copied()).min()
    }
}
