//! Delivery to push gateways: each HTTP pusher gets its user's unread notifying push actions
//! after its position, oldest first, one request at a time; the position moves only after the
//! gateway accepted a notification (at least once, in order). A failing gateway is retried with
//! exponential backoff; one that refuses a request or rejects the push key loses the pusher.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value as JsonValue, json};

use super::{PushService, gateway::GatewayError};
use crate::{
    service::{ServiceResult, rooms::client_format::content_of},
    storage::{
        now_ms,
        push::{PushAction, PusherRecord},
    },
};

/// Notifications sent per pusher and round.
const BATCH: i64 = 20;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(600);
/// How long a pusher may keep failing before it is dropped (Synapse: one day).
const GIVE_UP_AFTER_MS: i64 = 24 * 3600 * 1000;

/// When a failing pusher may be tried again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Instant,
    delay: Duration,
}

type PusherKey = (String, String, String);

fn key(p: &PusherRecord) -> PusherKey {
    (p.user_id.clone(), p.app_id.clone(), p.pushkey.clone())
}

impl PushService {
    pub(super) async fn deliver_forever(self: Arc<Self>) {
        let mut backoff: BTreeMap<PusherKey, Backoff> = BTreeMap::new();
        loop {
            let wait = match self.deliver_round(&mut backoff).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "push delivery failed; retrying");
                    Duration::from_secs(1)
                }
            };
            let _ = tokio::time::timeout(wait, self.deliveries.notified()).await;
        }
    }

    /// One pass over all HTTP pushers; how long to wait before the next pass at most.
    async fn deliver_round(&self, backoff: &mut BTreeMap<PusherKey, Backoff>) -> ServiceResult<Duration> {
        let pushers = self.storage.push.pushers(None).await?;
        let now = Instant::now();
        let mut wait = Duration::from_secs(30);
        backoff.retain(|k, _| pushers.iter().any(|p| key(p) == *k));
        for pusher in pushers {
            if let Some(b) = backoff.get(&key(&pusher))
                && b.next > now
            {
                wait = wait.min(b.next - now);
                continue;
            }
            let pending =
                self.storage.push.unread_push_actions(&pusher.user_id, pusher.last_stream_ordering, BATCH).await?;
            let mut full = pending.len() as i64 == BATCH;
            for action in &pending {
                match self.deliver_one(&pusher, action).await {
                    Ok(rejected) => {
                        backoff.remove(&key(&pusher));
                        if rejected {
                            tracing::info!(
                                user_id = pusher.user_id,
                                app_id = pusher.app_id,
                                "push key rejected; pusher removed"
                            );
                            self.storage.push.delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey).await?;
                            full = false;
                            break;
                        }
                        self.storage.push.update_pusher_progress(&pusher, action.stream_ordering, None).await?;
                    }
                    Err(GatewayError::Refused(reason)) => {
                        tracing::warn!(
                            user_id = pusher.user_id,
                            app_id = pusher.app_id,
                            reason,
                            "push gateway refused; pusher removed"
                        );
                        self.storage.push.delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey).await?;
                        full = false;
                        break;
                    }
                    Err(GatewayError::Transient(reason)) => {
                        let failing_since = pusher.failing_since.unwrap_or_else(now_ms);
                        if now_ms() - failing_since > GIVE_UP_AFTER_MS {
                            tracing::warn!(
                                user_id = pusher.user_id,
                                app_id = pusher.app_id,
                                "push gateway failing for a day; pusher removed"
                            );
                            self.storage.push.delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey).await?;
                        } else {
                            let delay =
                                backoff.get(&key(&pusher)).map_or(FIRST_RETRY, |b| (b.delay * 2).min(MAX_RETRY));
                            tracing::info!(
                                user_id = pusher.user_id,
                                app_id = pusher.app_id,
                                reason,
                                retry_in_ms = delay.as_millis() as u64,
                                "push delivery failed"
                            );
                            backoff.insert(key(&pusher), Backoff { next: Instant::now() + delay, delay });
                            wait = wait.min(delay);
                            self.storage
                                .push
                                .update_pusher_progress(&pusher, pusher.last_stream_ordering, Some(failing_since))
                                .await?;
                        }
                        full = false;
                        break;
                    }
                }
            }
            if full {
                wait = Duration::ZERO;
            }
        }
        Ok(wait)
    }

    /// Sends one notification; whether the gateway rejected the push key.
    async fn deliver_one(&self, pusher: &PusherRecord, action: &PushAction) -> Result<bool, GatewayError> {
        let body = self.notification(pusher, action).await.map_err(|e| GatewayError::Transient(e.to_string()))?;
        let url = pusher.data.get("url").and_then(JsonValue::as_str).unwrap_or_default();
        let rejected = self.gateway.notify(url, &body).await?;
        Ok(rejected.contains(&pusher.pushkey))
    }

    /// The push gateway request (spec: push gateway API, `/notify`). The event's content,
    /// sender name and room name go only where the operator enabled it and the pusher did not
    /// ask for `event_id_only`.
    async fn notification(&self, pusher: &PusherRecord, action: &PushAction) -> ServiceResult<JsonValue> {
        let unread = self.storage.push.unread_count(&pusher.user_id).await?;
        let mut tweaks = serde_json::Map::new();
        for a in action.actions.as_array().into_iter().flatten() {
            if let Some(tweak) = a.get("set_tweak").and_then(JsonValue::as_str) {
                let value = a.get("value").cloned().unwrap_or(JsonValue::Bool(true));
                tweaks.insert(tweak.to_owned(), value);
            }
        }
        let high = tweaks.contains_key("sound") || tweaks.get("highlight").is_some_and(|v| v == &json!(true));
        let mut data = pusher.data.clone();
        if let Some(obj) = data.as_object_mut() {
            obj.remove("url");
        }
        let device = json!({
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "pushkey_ts": now_ms() / 1000,
            "data": data,
            "tweaks": tweaks,
        });
        let mut notification = json!({
            "event_id": action.event_id,
            "room_id": action.room_id,
            "prio": if high { "high" } else { "low" },
            "counts": {"unread": unread},
            "devices": [device],
        });
        let event_id_only = pusher.data.get("format").and_then(JsonValue::as_str) == Some("event_id_only");
        if self.config.include_content && !event_id_only {
            self.add_content(&mut notification, pusher, action).await?;
        }
        Ok(json!({ "notification": notification }))
    }

    async fn add_content(&self, n: &mut JsonValue, pusher: &PusherRecord, action: &PushAction) -> ServiceResult<()> {
        let Some(row) = self.storage.rooms.event(&action.event_id).await? else { return Ok(()) };
        let content = content_of(&row.pdu);
        n["type"] = json!(row.event_type);
        n["sender"] = json!(row.sender);
        n["content"] = content.clone();
        if row.event_type == "m.room.member" {
            n["user_is_target"] = json!(row.state_key.as_deref() == Some(pusher.user_id.as_str()));
            n["membership"] = content.get("membership").cloned().unwrap_or_default();
        }
        let state_value = |kind: &str, key: &str, field: &str| {
            let rooms = &self.storage.rooms;
            let (room, kind, key, field) = (action.room_id.clone(), kind.to_owned(), key.to_owned(), field.to_owned());
            async move {
                let event = rooms.current_state_event(&room, &kind, &key).await?;
                Ok::<_, crate::service::ServiceError>(
                    event.and_then(|e| content_of(&e.pdu).get(&field).and_then(JsonValue::as_str).map(str::to_owned)),
                )
            }
        };
        if let Some(name) = state_value("m.room.member", &row.sender, "displayname").await? {
            n["sender_display_name"] = json!(name);
        }
        if let Some(name) = state_value("m.room.name", "", "name").await? {
            n["room_name"] = json!(name);
        }
        if let Some(alias) = state_value("m.room.canonical_alias", "", "alias").await? {
            n["room_alias"] = json!(alias);
        }
        Ok(())
    }
}
