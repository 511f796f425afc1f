//! The current state of the rooms a sync answers for, kept between syncs under the version it was
//! read at. A new message changes no state, so the syncs it wakes read only its timeline instead
//! of the whole state and member list of its room again.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use super::SyncService;
use crate::{
    service::{ServiceResult, rooms::client_format::content_of},
    storage::rooms::{EventRow, MembershipRow, StateVersion},
};

/// State events kept over all rooms at most; the least recently used rooms go first.
const MAX_KEPT_STATE_EVENTS: usize = 50_000;

/// A room's current state and the memberships it holds.
#[derive(Debug)]
pub(super) struct RoomState {
    pub(super) current: Vec<EventRow>,
    /// Members by user id, as the room's `m.room.member` state says.
    pub(super) members: Vec<MembershipRow>,
}

impl RoomState {
    fn new(current: Vec<EventRow>) -> Self {
        let mut members: Vec<MembershipRow> = current
            .iter()
            .filter(|r| r.event_type == "m.room.member")
            .filter_map(|r| {
                let user_id = r.state_key.clone()?;
                let membership = content_of(&r.pdu).get("membership")?.as_str()?.to_owned();
                Some(MembershipRow {
                    room_id: r.room_id.clone(),
                    user_id,
                    membership,
                    event_id: r.event_id.clone(),
                    stream_ordering: r.stream_ordering,
                    forgotten: false,
                })
            })
            .collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Self { current, members }
    }

    pub(super) fn joined(&self) -> usize {
        self.members.iter().filter(|m| m.membership == "join").count()
    }
}

#[derive(Debug)]
struct Kept {
    version: StateVersion,
    state: Arc<RoomState>,
    last_used: u64,
}

/// Room states by room id.
#[derive(Debug, Default)]
pub(super) struct RoomStates {
    inner: Mutex<KeptStates>,
}

#[derive(Debug, Default)]
struct KeptStates {
    rooms: BTreeMap<String, Kept>,
    events: usize,
    clock: u64,
}

impl RoomStates {
    fn get(&self, room_id: &str, version: StateVersion) -> Option<Arc<RoomState>> {
        let mut kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        kept.clock += 1;
        let clock = kept.clock;
        let entry = kept.rooms.get_mut(room_id).filter(|k| k.version == version)?;
        entry.last_used = clock;
        Some(entry.state.clone())
    }

    fn put(&self, room_id: &str, version: StateVersion, state: Arc<RoomState>) {
        let size = state.current.len();
        if size > MAX_KEPT_STATE_EVENTS {
            return;
        }
        let mut kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        kept.clock += 1;
        let last_used = kept.clock;
        if let Some(old) = kept.rooms.insert(room_id.to_owned(), Kept { version, state, last_used }) {
            kept.events -= old.state.current.len();
        }
        kept.events += size;
        while kept.events > MAX_KEPT_STATE_EVENTS {
            let Some(oldest) = kept.rooms.iter().min_by_key(|(_, k)| k.last_used).map(|(r, _)| r.clone()) else {
                break;
            };
            if let Some(gone) = kept.rooms.remove(&oldest) {
                kept.events -= gone.state.current.len();
            }
        }
    }
}

impl SyncService {
    /// The room's current state: the kept copy when `version` (read with the token's positions)
    /// is the one it was read at, else read again and kept.
    pub(super) async fn room_state(
        &self,
        room_id: &str,
        version: Option<StateVersion>,
    ) -> ServiceResult<Arc<RoomState>> {
        if let Some(state) = version.and_then(|v| self.room_states.get(room_id, v)) {
            return Ok(state);
        }
        let (read_at, current) = self.storage.rooms.current_state_versioned(room_id).await?;
        let state = Arc::new(RoomState::new(current));
        if let Some(v) = read_at {
            self.room_states.put(room_id, v, state.clone());
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(room: &str, user: &str, membership: &str, pos: i64) -> EventRow {
        EventRow {
            event_id: format!("$m{pos}"),
            room_id: room.to_owned(),
            stream_ordering: pos,
            event_type: "m.room.member".to_owned(),
            state_key: Some(user.to_owned()),
            sender: user.to_owned(),
            pdu: serde_json::json!({"content": {"membership": membership}}).to_string(),
            redacted_by: None,
            sender_device: None,
            txn_id: None,
            prev_pdu: None,
            redaction_pdu: None,
        }
    }

    fn version(snapshot_id: i64) -> StateVersion {
        StateVersion { snapshot_id, redacted_state: 0 }
    }

    #[test]
    fn members_come_from_the_member_events_sorted_by_user() {
        let state = RoomState::new(vec![
            member("!r", "@z:x", "join", 1),
            member("!r", "@a:x", "invite", 2),
            member("!r", "@m:x", "join", 3),
        ]);
        let users: Vec<(&str, &str)> =
            state.members.iter().map(|m| (m.user_id.as_str(), m.membership.as_str())).collect();
        assert_eq!(users, [("@a:x", "invite"), ("@m:x", "join"), ("@z:x", "join")]);
        assert_eq!(state.joined(), 2);
    }

    #[test]
    fn a_kept_state_is_found_only_under_its_version() {
        let states = RoomStates::default();
        states.put("!r", version(1), Arc::new(RoomState::new(vec![member("!r", "@a:x", "join", 1)])));
        assert!(states.get("!r", version(1)).is_some());
        assert!(states.get("!r", version(2)).is_none());
        assert!(states.get("!r", StateVersion { snapshot_id: 1, redacted_state: 1 }).is_none());
        assert!(states.get("!other", version(1)).is_none());
    }

    #[test]
    fn the_least_recently_used_rooms_go_when_too_many_events_are_kept() {
        let states = RoomStates::default();
        let big = |room: &str| {
            Arc::new(RoomState::new(
                (0..MAX_KEPT_STATE_EVENTS as i64 / 2).map(|i| member(room, &format!("@u{i}:x"), "join", i)).collect(),
            ))
        };
        states.put("!a", version(1), big("!a"));
        states.put("!b", version(1), big("!b"));
        assert!(states.get("!a", version(1)).is_some());
        // `!b` is now the least recently used.
        states.put("!c", version(1), big("!c"));
        assert!(states.get("!a", version(1)).is_some());
        assert!(states.get("!b", version(1)).is_none());
        assert!(states.get("!c", version(1)).is_some());
        let kept = states.inner.lock().unwrap();
        assert!(kept.events <= MAX_KEPT_STATE_EVENTS);
        assert_eq!(kept.events, kept.rooms.values().map(|k| k.state.current.len()).sum::<usize>());
    }
}
