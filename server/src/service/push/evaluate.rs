//! Push-rule evaluation as a consumer of the events stream: every new event is evaluated against
//! the push rules of each local member it concerns (the joined members but the sender, and the
//! target of an invite), and the actions that notify or highlight are stored with the consumer's
//! new position in one transaction — after a crash the consumer resumes where it stopped.
//!
//! Membership, display names and power levels are taken from the room's current state when the
//! batch is evaluated, which trails the events by at most a moment.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{UserId, push::Ruleset, serde::Raw};
use serde_json::Value as JsonValue;

use super::{PushService, context::push_room_context};
use crate::{
    service::{
        ServiceError, ServiceResult,
        notifier::{Notifier, Topic},
        rooms::client_format::{Viewer, content_of},
    },
    storage::{
        push::{PUSH_RULES_CONSUMER, PushAction},
        rooms::EventRow,
    },
};

/// Events evaluated per transaction.
const BATCH: i64 = 100;
/// How long evaluation waits after being woken.
const SETTLE: Duration = Duration::from_millis(20);

/// A room's members and state as one batch sees them.
struct RoomFacts {
    state: Vec<EventRow>,
    /// Joined users and their display names.
    joined: BTreeMap<String, String>,
}

impl PushService {
    pub(super) async fn evaluate_forever(self: Arc<Self>, notifier: Arc<Notifier>) {
        let mut changes = notifier.subscribe(Topic::Events);
        loop {
            match self.evaluate_batch().await {
                // A full batch: more may be waiting.
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "push rule evaluation failed; retrying"),
            }
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await {
                // The syncs woken for the same events answer first, and a burst is evaluated
                // in one batch.
                tokio::time::sleep(SETTLE).await;
            }
        }
    }

    /// Evaluates the next batch of events; how many there were.
    async fn evaluate_batch(&self) -> ServiceResult<usize> {
        let position = self.storage.push.consumer_position(PUSH_RULES_CONSUMER).await?;
        let events = self.storage.push.events_after(position, BATCH).await?;
        let Some(last) = events.last().map(|e| e.stream_ordering) else { return Ok(0) };
        let mut rooms: BTreeMap<String, RoomFacts> = BTreeMap::new();
        let mut rules: BTreeMap<String, Ruleset> = BTreeMap::new();
        let mut actions = Vec::new();
        for event in &events {
            if event.redacted_by.is_some() {
                continue;
            }
            if !rooms.contains_key(&event.room_id) {
                let facts = self.room_facts(&event.room_id).await?;
                rooms.insert(event.room_id.clone(), facts);
            }
            let Some(facts) = rooms.get(&event.room_id) else { continue };
            let room_rules = self.rooms.rules_of(&event.room_id).await?;
            for (user, displayname) in self.targets(event, facts) {
                let Ok(user_id) = UserId::parse(user.as_str()) else { continue };
                if !rules.contains_key(&user) {
                    rules.insert(user.clone(), self.account_data.push_rules(&user_id).await?);
                }
                let Some(ruleset) = rules.get(&user) else { continue };
                let ctx = push_room_context(&event.room_id, facts.joined.len(), &user_id, &displayname, &facts.state)?;
                let rendered = self
                    .rooms
                    .render(std::slice::from_ref(event), &room_rules, Viewer { user_id: &user, device_id: None })
                    .remove(0);
                let raw: Raw<JsonValue> = serde_json::value::to_raw_value(&rendered)
                    .map(Raw::from_json)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                let found = ruleset.get_actions(&raw, &ctx).await;
                let notify = found.iter().any(|a| a.should_notify());
                let highlight = found.iter().any(|a| a.is_highlight());
                if notify || highlight {
                    actions.push(PushAction {
                        user_id: user.clone(),
                        room_id: event.room_id.clone(),
                        event_id: event.event_id.clone(),
                        stream_ordering: event.stream_ordering,
                        actions: serde_json::to_value(found).map_err(|e| ServiceError::Internal(e.to_string()))?,
                        notify,
                        highlight,
                    });
                }
            }
        }
        self.storage.push.record_push_actions(&actions, last).await?;
        if !actions.is_empty() {
            self.deliveries.notify_one();
        }
        tracing::debug!(events = events.len(), actions = actions.len(), position = last, "push rules evaluated");
        Ok(events.len())
    }

    async fn room_facts(&self, room_id: &str) -> ServiceResult<RoomFacts> {
        let state = self.storage.rooms.current_state(room_id).await?;
        let joined = state
            .iter()
            .filter(|r| r.event_type == "m.room.member")
            .filter_map(|r| {
                let content = content_of(&r.pdu);
                if content.get("membership").and_then(JsonValue::as_str) != Some("join") {
                    return None;
                }
                let user = r.state_key.clone()?;
                let name = content.get("displayname").and_then(JsonValue::as_str).unwrap_or_default().to_owned();
                Some((user, name))
            })
            .collect();
        Ok(RoomFacts { state, joined })
    }

    /// The local users an event is evaluated for, with their display names.
    fn targets(&self, event: &EventRow, facts: &RoomFacts) -> Vec<(String, String)> {
        let local = |user: &str| user.rsplit_once(':').is_some_and(|(_, server)| server == self.server_name);
        let mut targets: Vec<(String, String)> = facts
            .joined
            .iter()
            .filter(|(user, _)| **user != event.sender && local(user))
            .map(|(u, n)| (u.clone(), n.clone()))
            .collect();
        if event.event_type == "m.room.member"
            && let Some(invitee) = event.state_key.as_deref()
            && content_of(&event.pdu).get("membership").and_then(JsonValue::as_str) == Some("invite")
            && local(invitee)
            && invitee != event.sender
            && !facts.joined.contains_key(invitee)
        {
            targets.push((invitee.to_owned(), String::new()));
        }
        targets
    }
}
