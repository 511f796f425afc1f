//! Device lists across servers (server-server API, "Device management").
//!
//! Outbound: the federation sender calls [`E2eeService::queue_device_list_updates`], a consumer
//! of the device-list stream that queues one `m.device_list_update` per changed local device
//! for each server sharing a room with its user, with the stream position as `stream_id` and the
//! update that destination got before as `prev_id`.
//!
//! Inbound: the lists of other servers' users who share a joined room with ours are kept here
//! from their updates, and `/keys/query` answers from them. An update that follows the last one
//! applied is applied; one that names an update we never got (lost, or sent before we shared a
//! room) makes us fetch the whole list with `/user/devices/{userId}` instead. Until that
//! succeeds the list is stale, and queries ask the user's server.

use std::time::Duration;

use poststelle_federation::device_lists::Step;
use ruma::{
    OwnedDeviceId, OwnedUserId, ServerName, UserId,
    api::{client::keys::get_keys::v3 as get_keys, federation::device::get_devices::v1 as fed_devices},
};
use serde_json::{Value as JsonValue, json};

use super::{DeviceRequest, E2eeService, add_signatures, raw};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::{
        device_lists::{OutboundUpdate, RemoteDevice, RemoteSnapshot, RemoteUpdate},
        now_ms,
    },
};

/// How many changes one pass of the outbound consumer takes.
const OUTBOUND_BATCH: usize = 500;
/// How long fetching a user's whole list may take before the update is acknowledged anyway
/// (the list then stays stale).
const RESYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// A received `m.device_list_update`, checked.
struct ParsedUpdate {
    stream_id: i64,
    prev_ids: Vec<i64>,
    device_id: String,
    deleted: bool,
    keys: Option<JsonValue>,
    display_name: Option<String>,
}

fn bad(what: &str) -> ServiceError {
    ServiceError::BadJson(format!("m.device_list_update: {what}"))
}

/// Device keys as stored: only an object naming this user and device.
fn keys_of(value: &JsonValue, user: &UserId, device_id: &str) -> Option<JsonValue> {
    let names = |field: &str, expected: &str| value.get(field).and_then(JsonValue::as_str) == Some(expected);
    (value.is_object() && names("user_id", user.as_str()) && names("device_id", device_id)).then(|| value.clone())
}

fn parse_update(user: &UserId, content: &JsonValue) -> ServiceResult<ParsedUpdate> {
    let stream_id = content.get("stream_id").and_then(JsonValue::as_i64).ok_or_else(|| bad("no stream_id"))?;
    let prev_ids = match content.get("prev_id") {
        None | Some(JsonValue::Null) => Vec::new(),
        Some(JsonValue::Array(ids)) => ids
            .iter()
            .map(|id| id.as_i64().ok_or_else(|| bad("prev_id holds a non-integer")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("prev_id is not a list")),
    };
    let device_id = content
        .get("device_id")
        .and_then(JsonValue::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| bad("no device_id"))?;
    let keys = match content.get("keys") {
        None | Some(JsonValue::Null) => None,
        Some(keys) => Some(keys_of(keys, user, device_id).ok_or_else(|| bad("keys of another user or device"))?),
    };
    Ok(ParsedUpdate {
        stream_id,
        prev_ids,
        device_id: device_id.to_owned(),
        deleted: content.get("deleted").and_then(JsonValue::as_bool).unwrap_or(false),
        keys,
        display_name: content.get("device_display_name").and_then(JsonValue::as_str).map(str::to_owned),
    })
}

/// A stored JSON value of a ruma `Raw`, if it is JSON.
fn json_of<T>(raw: &ruma::serde::Raw<T>) -> Option<JsonValue> {
    serde_json::from_str(raw.json().get()).ok()
}

impl E2eeService {
    /// Queues `m.device_list_update` EDUs for the local device changes after the consumer's
    /// position (the federation sender calls this, one process at a time); `true` if it
    /// queued any.
    pub async fn queue_device_list_updates(&self) -> ServiceResult<bool> {
        let mut queued = false;
        loop {
            let from = self.storage.device_lists.outbound_position().await?;
            let head = self.storage.rooms.stream_head("device_lists").await?;
            if head <= from {
                return Ok(queued);
            }
            let limit = i64::try_from(OUTBOUND_BATCH).unwrap_or(i64::MAX);
            let changes =
                self.storage.device_lists.local_device_changes(from, head, self.server_name.as_str(), limit).await?;
            let to = match changes.last() {
                Some((last, _, _)) if changes.len() >= OUTBOUND_BATCH => *last,
                _ => head,
            };
            let mut updates = Vec::new();
            for (stream_id, user_id, device_id) in changes {
                let destinations = self.other_servers(&user_id).await?;
                if destinations.is_empty() {
                    continue;
                }
                let content = self.device_update(&user_id, &device_id, stream_id).await?;
                updates.push(OutboundUpdate { user_id, stream_id, destinations, content });
            }
            if !self.storage.device_lists.queue_updates(from, to, &updates, now_ms()).await? {
                return Ok(queued);
            }
            queued |= !updates.is_empty();
            tracing::debug!(from, to, updates = updates.len(), "queued device-list updates");
        }
    }

    /// The update of a local device as it is now: its keys (with the owner's signatures) and
    /// name, or that it was deleted. `prev_id` is added per destination.
    async fn device_update(&self, user_id: &str, device_id: &str, stream_id: i64) -> ServiceResult<JsonValue> {
        let mut content = json!({"user_id": user_id, "device_id": device_id, "stream_id": stream_id, "deleted": false});
        match self.storage.device_lists.local_device(user_id, device_id).await? {
            None => content["deleted"] = json!(true),
            Some(device) => {
                if let Some(mut keys) = device.keys {
                    let signatures = self.storage.e2ee.signatures(user_id, "").await?;
                    add_signatures(&mut keys, device_id, &signatures);
                    content["keys"] = keys;
                }
                if let Some(name) = device.display_name {
                    content["device_display_name"] = json!(name);
                }
            }
        }
        Ok(content)
    }

    /// An `m.device_list_update` or `m.signing_key_update` from `origin`. Our users who share a
    /// room with the user see them in `device_lists.changed`; the list held for the user
    /// follows the update, or is fetched again when the update shows a gap.
    pub async fn receive_device_change(&self, origin: &ServerName, content: &JsonValue) -> ServiceResult<()> {
        let user = content
            .get("user_id")
            .and_then(JsonValue::as_str)
            .and_then(|u| OwnedUserId::try_from(u).ok())
            .ok_or_else(|| ServiceError::BadJson("a device-list update without a valid user_id".into()))?;
        if user.server_name() != origin {
            return Err(ServiceError::Forbidden(format!("{origin} cannot speak for {user}")));
        }
        let user_ids = [user.to_string()];
        let ours = self.storage.e2ee.users_sharing_a_room_with_server(self.server_name.as_str(), &user_ids).await?;
        if ours.is_empty() {
            tracing::debug!(%origin, %user, "ignored a device-list update of a user nobody here shares a room with");
            return Ok(());
        }
        let tracked = self.storage.device_lists.tracked(user.as_str()).await?;
        if content.get("device_id").is_none() {
            // `m.signing_key_update`.
            if tracked {
                let key = |name: &str| content.get(name).filter(|k| k.is_object());
                self.storage
                    .device_lists
                    .set_signing_keys(user.as_str(), key("master_key"), key("self_signing_key"))
                    .await?;
            }
        } else if tracked {
            let update = parse_update(&user, content)?;
            let stored = RemoteUpdate {
                stream_id: update.stream_id,
                prev_ids: &update.prev_ids,
                device_id: &update.device_id,
                deleted: update.deleted,
                keys: update.keys.as_ref(),
                display_name: update.display_name.as_deref(),
            };
            match self.storage.device_lists.apply_update(user.as_str(), &stored, now_ms()).await? {
                Step::Ignore => return Ok(()),
                Step::Apply => {}
                Step::Resync => {
                    tracing::info!(%user, stream_id = update.stream_id, prev_ids = ?update.prev_ids, "device list gap; fetching the whole list");
                    self.storage.device_lists.mark_stale(user.as_str(), update.stream_id, now_ms()).await?;
                    self.resync(&user).await;
                }
            }
        }
        self.storage.e2ee.note_device_list_change(user.as_str()).await?;
        Ok(())
    }

    /// Fetches the user's whole list from their server and replaces the held one; on failure the
    /// list stays stale (queries ask the server; the next update tries again).
    async fn resync(&self, user: &UserId) {
        let server = user.server_name();
        let request = fed_devices::Request::new(user.to_owned());
        let answer = match tokio::time::timeout(RESYNC_TIMEOUT, self.client.send(server, request)).await {
            Ok(Ok(answer)) if answer.user_id == user => answer,
            Ok(Ok(answer)) => {
                tracing::info!(%user, answered = %answer.user_id, "a device list for another user; not kept");
                return;
            }
            Ok(Err(e)) => {
                tracing::info!(%user, error = %e, "could not fetch a device list; it stays stale");
                return;
            }
            Err(_) => {
                tracing::info!(%user, "fetching a device list timed out; it stays stale");
                return;
            }
        };
        let devices = answer
            .devices
            .iter()
            .map(|d| RemoteDevice {
                device_id: d.device_id.to_string(),
                keys: json_of(&d.keys).and_then(|k| keys_of(&k, user, d.device_id.as_str())),
                display_name: d.device_display_name.clone(),
            })
            .collect();
        let snapshot = RemoteSnapshot {
            stream_id: i64::try_from(u64::from(answer.stream_id)).unwrap_or(i64::MAX),
            devices,
            master_key: answer.master_key.as_ref().and_then(json_of),
            self_signing_key: answer.self_signing_key.as_ref().and_then(json_of),
        };
        match self.storage.device_lists.replace(user.as_str(), &snapshot, now_ms()).await {
            Ok(()) => {
                tracing::info!(%user, stream_id = snapshot.stream_id, devices = snapshot.devices.len(), "fetched a device list")
            }
            Err(e) => tracing::warn!(%user, error = %e, "could not store a fetched device list"),
        }
    }

    /// Answers for those of `users` whose complete lists are held, removing them from `users`:
    /// the rest must be asked at their servers.
    pub(super) async fn held_remote_keys(
        &self,
        users: &mut DeviceRequest,
        response: &mut get_keys::Response,
    ) -> ServiceResult<()> {
        let names: Vec<String> = users.keys().map(ToString::to_string).collect();
        for (user_id, list) in self.storage.device_lists.complete_lists(&names).await? {
            let Ok(user) = OwnedUserId::try_from(user_id) else { continue };
            let Some(wanted) = users.remove(&user) else { continue };
            let mut keys = std::collections::BTreeMap::new();
            for device in list.devices {
                let Some(mut value) = device.keys else { continue };
                if !wanted.is_empty() && !wanted.iter().any(|w| w.as_str() == device.device_id) {
                    continue;
                }
                if let (Some(name), Some(obj)) = (device.display_name, value.as_object_mut()) {
                    obj.insert("unsigned".into(), json!({"device_display_name": name}));
                }
                keys.insert(OwnedDeviceId::from(device.device_id), raw(&value)?);
            }
            response.device_keys.insert(user.clone(), keys);
            if let Some(key) = &list.master_key {
                response.master_keys.insert(user.clone(), raw(key)?);
            }
            if let Some(key) = &list.self_signing_key {
                response.self_signing_keys.insert(user, raw(key)?);
            }
        }
        Ok(())
    }
}
