//! Unread notification and highlight counts: push rules evaluated on the events after the user's
//! read receipt, carried from one sync to the next so only new events are evaluated.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
};

use ruma::{OwnedEventId, UInt, UserId, api::client::sync::sync_events::UnreadNotificationsCount};
use serde_json::Value as JsonValue;

use super::{SyncService, raw};
use crate::{
    service::{
        ServiceError, ServiceResult,
        push::context::push_room_context,
        rooms::client_format::{Viewer, content_of},
    },
    storage::rooms::EventRow,
};

/// Unread counts computed for the events in `(from, upto]`.
#[derive(Clone, Debug)]
pub(super) struct UnreadCache {
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

impl SyncService {
    /// Notification and highlight counts: push rules evaluated for the events after the user's
    /// read receipt (at most the last 500). The receipt's position and the user's join are read
    /// here unless the caller knows them, and so are the events unless `known` holds all events
    /// after a position (oldest first), as a sync's timeline often does.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn unread_counts(
        &self,
        room_id: &str,
        user: &str,
        (read, own_join): (Option<i64>, Option<i64>),
        member_count: usize,
        (rules, displayname): (&ruma::push::Ruleset, &str),
        current: &[EventRow],
        per_thread: bool,
        known: Option<(i64, &[EventRow])>,
    ) -> ServiceResult<(usize, usize, BTreeMap<OwnedEventId, UnreadNotificationsCount>)> {
        let read = match read {
            Some(pos) => pos,
            None => self.storage.ephemeral.read_up_to(room_id, user).await?.unwrap_or(0),
        };
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
        let rows = match known {
            // Newest first, as read below.
            Some((after, events)) if start >= after && events.len() < MAX_UNREAD_EVENTS as usize => {
                events.iter().rev().filter(|r| r.stream_ordering > start).cloned().collect()
            }
            _ => self.storage.rooms.events_backwards(room_id, start, i64::MAX, MAX_UNREAD_EVENTS).await?,
        };
        // More new events than are evaluated at once: count the newest afresh.
        let cached = cached.filter(|_| i64::try_from(rows.len()).unwrap_or(i64::MAX) < MAX_UNREAD_EVENTS);
        let upto = rows.first().map_or(start, |r| r.stream_ordering);
        let (mut counts, mut threads) = cached.map_or(((0, 0), BTreeMap::new()), |c| (c.counts, c.threads));
        if rows.is_empty() {
            return Ok((counts.0, counts.1, threads));
        }
        let room_rules = self.rooms.rules_of(room_id).await?;
        let user_id = UserId::parse(user).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let ctx = push_room_context(room_id, member_count, &user_id, displayname, current)?;
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
