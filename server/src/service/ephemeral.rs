//! Typing notifications, read receipts, read markers and to-device messages: what clients tell
//! each other outside the room timeline.

use std::{sync::Arc, time::Duration};

use serde_json::Value as JsonValue;

use super::{ServiceError, ServiceResult, account_data::AccountDataService, typing::TypingService};
use crate::storage::{Storage, now_ms};

/// The receipt types a client may send.
pub const RECEIPT_TYPES: &[&str] = &["m.read", "m.read.private", "m.fully_read"];

/// Where a to-device message goes: one device, or all of a user's devices (`*`).
#[derive(Debug)]
pub enum DeviceTarget {
    Device(String),
    All,
}

#[derive(Debug)]
pub struct EphemeralService {
    storage: Storage,
    account_data: Arc<AccountDataService>,
    typing: Arc<TypingService>,
    /// This server's name: typing, receipts and to-device messages for other servers' users
    /// are queued as EDUs for the federation sender.
    server_name: String,
}

/// The server part of a user id (everything after the first colon).
fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, s)| s)
}

impl EphemeralService {
    pub fn new(
        storage: Storage,
        account_data: Arc<AccountDataService>,
        typing: Arc<TypingService>,
        server_name: String,
    ) -> Self {
        Self { storage, account_data, typing, server_name }
    }

    /// Queues an EDU about a room for the other servers in it.
    async fn tell_room(&self, room_id: &str, edu_type: &str, content: JsonValue) -> ServiceResult<()> {
        let mut servers = self.storage.federation.servers_at(room_id, i64::MAX).await?;
        servers.retain(|s| *s != self.server_name);
        if !servers.is_empty() {
            self.storage.federation.queue_edu(&servers, edu_type, &content, now_ms()).await?;
        }
        Ok(())
    }

    async fn require_joined(&self, room_id: &str, user_id: &str) -> ServiceResult<()> {
        match self.storage.rooms.membership(room_id, user_id).await? {
            Some(m) if m.membership == "join" => Ok(()),
            _ => Err(ServiceError::Forbidden(format!("{user_id} is not joined to {room_id}"))),
        }
    }

    /// Starts (with a timeout) or stops the user's typing notification in a room.
    pub async fn set_typing(
        &self,
        user_id: &str,
        target: &str,
        room_id: &str,
        timeout: Option<Duration>,
    ) -> ServiceResult<()> {
        if user_id != target {
            return Err(ServiceError::Forbidden("cannot set another user's typing state".into()));
        }
        self.require_joined(room_id, user_id).await?;
        self.typing.set(room_id, user_id, timeout).await?;
        let edu = serde_json::json!({"room_id": room_id, "user_id": user_id, "typing": timeout.is_some()});
        self.tell_room(room_id, "m.typing", edu).await
    }

    /// Records a receipt (`m.read`, `m.read.private`) or moves the read marker (`m.fully_read`).
    /// `thread` is `""` (unthreaded), `main`, or a thread root's event id.
    pub async fn receipt(
        &self,
        user_id: &str,
        room_id: &str,
        receipt_type: &str,
        thread: &str,
        event_id: &str,
    ) -> ServiceResult<()> {
        if !RECEIPT_TYPES.contains(&receipt_type) {
            return Err(ServiceError::InvalidParam(format!("unknown receipt type {receipt_type}")));
        }
        self.require_joined(room_id, user_id).await?;
        let event = self.storage.rooms.event(event_id).await?.filter(|e| e.room_id == room_id);
        let event = event.ok_or_else(|| ServiceError::NotFound(format!("{event_id} is not in {room_id}")))?;
        if receipt_type == "m.fully_read" && !thread.is_empty() {
            return Err(ServiceError::InvalidParam("m.fully_read cannot be threaded".into()));
        }
        if !thread.is_empty() && thread != "main" {
            // A threaded receipt must be for an event of that thread (or the root itself).
            let in_thread = event.event_id == thread
                || self
                    .storage
                    .rooms
                    .relation_of(event_id)
                    .await?
                    .is_some_and(|(rel, root)| rel == "m.thread" && root == thread);
            if !in_thread {
                return Err(ServiceError::InvalidParam(format!("{event_id} is not part of thread {thread}")));
            }
        }
        if receipt_type == "m.fully_read" {
            return self.account_data.set_fully_read(user_id, room_id, event_id).await;
        }
        let ts = now_ms();
        self.storage.ephemeral.put_receipt(room_id, user_id, receipt_type, thread, event_id, ts).await?;
        if receipt_type == "m.read" {
            let mut data = serde_json::json!({"ts": ts});
            if !thread.is_empty() {
                data["thread_id"] = thread.into();
            }
            let edu = serde_json::json!({room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": data}}}});
            self.tell_room(room_id, "m.receipt", edu).await?;
        }
        Ok(())
    }

    /// Applies typing and receipts another server sent about its users (already checked to be
    /// its own and in the room).
    pub async fn apply_remote_typing(&self, room_id: &str, user_id: &str, typing: bool) -> ServiceResult<()> {
        let timeout = typing.then_some(Duration::from_secs(30));
        self.typing.set(room_id, user_id, timeout).await
    }

    pub async fn apply_remote_receipt(
        &self,
        room_id: &str,
        user_id: &str,
        thread: &str,
        event_id: &str,
        ts: i64,
    ) -> ServiceResult<()> {
        self.storage.ephemeral.put_receipt(room_id, user_id, "m.read", thread, event_id, ts).await?;
        Ok(())
    }

    /// `/read_markers`: the read marker and, optionally, public and private receipts at once.
    pub async fn read_markers(
        &self,
        user_id: &str,
        room_id: &str,
        fully_read: Option<&str>,
        read: Option<&str>,
        read_private: Option<&str>,
    ) -> ServiceResult<()> {
        self.require_joined(room_id, user_id).await?;
        for (kind, event) in [("m.fully_read", fully_read), ("m.read", read), ("m.read.private", read_private)] {
            if let Some(event) = event {
                self.receipt(user_id, room_id, kind, "", event).await?;
            }
        }
        Ok(())
    }

    /// Queues to-device messages for local devices, once per sender device and transaction.
    /// Messages for unknown users or devices are dropped, as the spec allows.
    pub async fn send_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: Vec<(String, DeviceTarget, JsonValue)>,
    ) -> ServiceResult<()> {
        let mut expanded = Vec::new();
        let mut remote: std::collections::BTreeMap<String, serde_json::Map<String, JsonValue>> = Default::default();
        for (user_id, target, content) in messages {
            if !content.is_object() {
                return Err(ServiceError::BadJson("to-device content must be an object".into()));
            }
            if server_of(&user_id) != self.server_name {
                let device = match target {
                    DeviceTarget::All => "*".to_owned(),
                    DeviceTarget::Device(d) => d,
                };
                let per_user = remote.entry(server_of(&user_id).to_owned()).or_default();
                let devices = per_user.entry(user_id.clone()).or_insert_with(|| JsonValue::Object(Default::default()));
                devices[device] = content;
                continue;
            }
            let devices = self.storage.devices.list(&user_id).await?;
            match target {
                DeviceTarget::All => {
                    for d in devices {
                        expanded.push((user_id.clone(), d.device_id, content.clone()));
                    }
                }
                DeviceTarget::Device(device) => {
                    if devices.iter().any(|d| d.device_id == device) {
                        expanded.push((user_id.clone(), device, content));
                    }
                }
            }
        }
        let fresh = self
            .storage
            .ephemeral
            .send_to_device(sender, sender_device, txn_id, event_type, &expanded, now_ms())
            .await?;
        if fresh {
            for (server, messages) in remote {
                let edu = serde_json::json!({
                    "sender": sender, "type": event_type,
                    "message_id": format!("{sender_device}-{txn_id}"), "messages": messages,
                });
                self.storage.federation.queue_edu(&[server], "m.direct_to_device", &edu, now_ms()).await?;
            }
        }
        Ok(())
    }

    /// To-device messages another server sent for our users: delivered once per message id.
    pub async fn receive_to_device(&self, origin: &str, edu: &JsonValue) -> ServiceResult<()> {
        let (Some(sender), Some(kind), Some(message_id), Some(messages)) = (
            edu.get("sender").and_then(JsonValue::as_str),
            edu.get("type").and_then(JsonValue::as_str),
            edu.get("message_id").and_then(JsonValue::as_str),
            edu.get("messages").and_then(JsonValue::as_object),
        ) else {
            return Err(ServiceError::BadJson("malformed m.direct_to_device".into()));
        };
        if server_of(sender) != origin {
            return Err(ServiceError::Forbidden(format!("{origin} cannot send for {sender}")));
        }
        let mut expanded = Vec::new();
        for (user_id, devices) in messages {
            if server_of(user_id) != self.server_name {
                continue;
            }
            let known = self.storage.devices.list(user_id).await?;
            for (device, content) in devices.as_object().into_iter().flatten() {
                for d in known.iter().filter(|d| device == "*" || d.device_id == *device) {
                    expanded.push((user_id.clone(), d.device_id.clone(), content.clone()));
                }
            }
        }
        // Idempotent per (sender, origin, message id), as local sends are per device and txn.
        self.storage.ephemeral.send_to_device(sender, origin, message_id, kind, &expanded, now_ms()).await?;
        Ok(())
    }
}
