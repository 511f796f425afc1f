//! End-to-end encryption keys for Olm/Megolm clients: devices upload their identity, one-time and
//! fallback keys; other users' clients query identity keys and claim one-time keys to open Olm
//! sessions; users upload cross-signing keys and signatures that verify devices and other users;
//! `/keys/changes` says whose devices changed. Keys are visible only to the user themselves and
//! to users who share a room with them (joined or invited), as public-sector deployments require.

mod device_lists;
mod federation;

use std::{collections::BTreeMap, sync::Arc};

use poststelle_federation::FederationClient;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedServerName, OwnedUserId, ServerName, UInt, UserId,
    api::client::keys::{
        claim_keys::v3 as claim_keys, get_key_changes::v3 as get_key_changes, get_keys::v3 as get_keys,
        upload_keys::v3 as upload_keys, upload_signatures::v3 as upload_signatures,
        upload_signing_keys::v3 as upload_signing_keys,
    },
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use super::{ServiceError, ServiceResult, sync::SyncToken};
use crate::storage::{
    Storage,
    e2ee::{KeyCounts, KeySignature, UploadedKey},
    now_ms,
};

#[derive(Debug)]
pub struct E2eeService {
    storage: Storage,
    server_name: OwnedServerName,
    /// Asks other servers for their users' keys.
    client: Arc<FederationClient>,
}

/// Who asks for keys: a user of this server, or another server on behalf of its users.
#[derive(Clone, Copy, Debug)]
pub enum Viewer<'a> {
    User(&'a UserId),
    Server(&'a ServerName),
}

/// Requested device ids per user (empty: all devices).
type DeviceRequest = BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>;
/// Requested one-time key algorithms per user and device.
type ClaimRequest = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>;
/// Claimed one-time keys per user.
type ClaimedKeys = BTreeMap<OwnedUserId, claim_keys::OneTimeKeys>;

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// A stored JSON value as a ruma `Raw`.
fn raw<T>(value: &JsonValue) -> ServiceResult<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(value).map_err(internal)?))
}

/// Uploaded one-time or fallback keys as rows; each key must be a string or an object.
fn uploaded(keys: &BTreeMap<OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>) -> ServiceResult<Vec<UploadedKey>> {
    keys.iter()
        .map(|(id, key)| {
            let value: JsonValue =
                serde_json::from_str(key.json().get()).map_err(|e| ServiceError::BadJson(format!("key {id}: {e}")))?;
            if !(value.is_string() || value.is_object()) {
                return Err(ServiceError::BadJson(format!("key {id} must be a string or an object")));
            }
            Ok((id.algorithm().to_string(), id.key_name().to_string(), value))
        })
        .collect()
}

/// MLS KeyPackages among uploaded keys (`m.mls.v1.*` algorithms) must pass the Delivery
/// Service's checks before anybody can claim them: signatures, lifetime, suite, reference, and a
/// credential naming this user and device (DESIGN §6).
fn check_key_packages(user_id: &UserId, device_id: &str, keys: &[UploadedKey], fallback: bool) -> ServiceResult<()> {
    let uploader = poststelle_mls::DeviceIdentity::new(user_id.as_str(), device_id);
    let now = u64::try_from(now_ms() / 1000).unwrap_or_default();
    for (algorithm, name, value) in keys {
        if !poststelle_mls::Suite::is_mls_algorithm(algorithm) {
            continue;
        }
        let value = value.as_str().ok_or_else(|| {
            ServiceError::InvalidParam(format!("KeyPackage {algorithm}:{name} must be a base64 string"))
        })?;
        poststelle_mls::key_package::validate_upload(algorithm, name, value, &uploader, fallback, now)
            .map_err(|e| ServiceError::InvalidParam(format!("KeyPackage {algorithm}:{name}: {e}")))?;
    }
    Ok(())
}

/// The one-time key counts of a device, with `signed_curve25519` always present: clients decide
/// from it whether to upload more.
pub fn one_time_key_counts(counts: &KeyCounts) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
    let mut out: BTreeMap<OneTimeKeyAlgorithm, UInt> = counts
        .one_time
        .iter()
        .map(|(algorithm, n)| (OneTimeKeyAlgorithm::from(algorithm.as_str()), UInt::try_from(*n).unwrap_or(UInt::MAX)))
        .collect();
    out.entry(OneTimeKeyAlgorithm::SignedCurve25519).or_insert(UInt::MIN);
    out
}

impl E2eeService {
    pub fn new(storage: Storage, server_name: OwnedServerName, client: Arc<FederationClient>) -> Self {
        Self { storage, server_name, client }
    }

    /// Those of `users` whose keys `viewer` may see: a user sees themselves and users who share
    /// a room with them; another server sees our users who share a room with one of its users.
    async fn visible_users(
        &self,
        viewer: Viewer<'_>,
        users: impl Iterator<Item = &OwnedUserId>,
    ) -> ServiceResult<Vec<String>> {
        let users: Vec<String> = users.map(ToString::to_string).collect();
        match viewer {
            Viewer::User(requester) => {
                let mut visible = self.storage.e2ee.users_sharing_a_room(requester.as_str(), &users).await?;
                visible.push(requester.to_string());
                Ok(visible)
            }
            Viewer::Server(origin) => {
                let local: Vec<String> =
                    users.into_iter().filter(|u| u.ends_with(&format!(":{}", self.server_name))).collect();
                Ok(self.storage.e2ee.users_sharing_a_room_with_server(origin.as_str(), &local).await?)
            }
        }
    }

    /// Splits requested users into ours and those of other servers.
    fn split_local<V>(&self, users: BTreeMap<OwnedUserId, V>) -> (BTreeMap<OwnedUserId, V>, BTreeMap<OwnedUserId, V>) {
        users.into_iter().partition(|(u, _)| u.server_name() == self.server_name)
    }

    /// `/keys/list` (MSC4256): the ids (`algorithm:name`) of the device's unclaimed one-time
    /// keys and its fallback keys.
    pub async fn list_keys(&self, user_id: &str, device_id: &str) -> ServiceResult<(Vec<String>, Vec<String>)> {
        Ok(self.storage.e2ee.key_ids(user_id, device_id).await?)
    }

    /// `/keys/upload`: stores what the device sent; the device's one-time key counts.
    pub async fn upload(
        &self,
        user_id: &UserId,
        device_id: &str,
        req: upload_keys::Request,
    ) -> ServiceResult<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        if let Some(keys) = &req.device_keys {
            let value: JsonValue =
                serde_json::from_str(keys.json().get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
            let field = |name: &str| value.get(name).and_then(JsonValue::as_str).unwrap_or_default().to_owned();
            if field("user_id") != user_id.as_str() || field("device_id") != device_id {
                return Err(ServiceError::InvalidParam(
                    "device_keys must be for the user and device of the access token".into(),
                ));
            }
            if !value.get("keys").is_some_and(JsonValue::is_object)
                || !value.get("algorithms").is_some_and(JsonValue::is_array)
            {
                return Err(ServiceError::BadJson("device_keys needs `keys` and `algorithms`".into()));
            }
            // Other servers learn of new keys from the device-list stream.
            self.storage.e2ee.set_device_keys(user_id.as_str(), device_id, &value, now_ms()).await?;
        }
        let one_time = uploaded(&req.one_time_keys)?;
        let fallback = uploaded(&req.fallback_keys)?;
        check_key_packages(user_id, device_id, &one_time, false)?;
        check_key_packages(user_id, device_id, &fallback, true)?;
        if !one_time.is_empty() {
            let conflicts = self.storage.e2ee.add_one_time_keys(user_id.as_str(), device_id, &one_time).await?;
            if !conflicts.is_empty() {
                return Err(ServiceError::InvalidParam(format!(
                    "one-time keys {} were uploaded before with a different key",
                    conflicts.join(", ")
                )));
            }
        }
        if !fallback.is_empty() {
            self.storage.e2ee.set_fallback_keys(user_id.as_str(), device_id, &fallback).await?;
        }
        Ok(one_time_key_counts(&self.storage.e2ee.key_counts(user_id.as_str(), device_id).await?))
    }

    /// `/keys/query`: the identity keys of the requested users' devices that the requester may
    /// see; users of other servers from the lists held for them, or else asked for at their
    /// servers (failures by server).
    pub async fn query(&self, requester: &UserId, req: get_keys::Request) -> ServiceResult<get_keys::Response> {
        let (local, remote) = self.split_local(req.device_keys);
        let mut response = self.local_keys(Viewer::User(requester), &local).await?;
        let visible = self.visible_users(Viewer::User(requester), remote.keys()).await?;
        let mut remote = remote.into_iter().filter(|(u, _)| visible.iter().any(|v| v == u.as_str())).collect();
        self.held_remote_keys(&mut remote, &mut response).await?;
        self.query_remote(remote, req.timeout, &mut response).await;
        Ok(response)
    }

    /// The identity keys of our users' devices that `viewer` may see.
    async fn local_keys(&self, viewer: Viewer<'_>, users: &DeviceRequest) -> ServiceResult<get_keys::Response> {
        let mut response = get_keys::Response::new();
        let visible = self.visible_users(viewer, users.keys()).await?;
        let viewer_user = match viewer {
            Viewer::User(u) => u.as_str(),
            Viewer::Server(_) => "",
        };
        for (user, devices) in users {
            if user.server_name() != self.server_name || !visible.iter().any(|v| v == user.as_str()) {
                continue;
            }
            let wanted: Vec<String> = devices.iter().map(ToString::to_string).collect();
            let rows =
                self.storage.e2ee.device_keys(user.as_str(), (!wanted.is_empty()).then_some(wanted.as_slice())).await?;
            let signatures = self.storage.e2ee.signatures(user.as_str(), viewer_user).await?;
            let mut keys = BTreeMap::new();
            for row in rows {
                let mut value = row.keys;
                add_signatures(&mut value, &row.device_id, &signatures);
                if let Some(name) = row.display_name
                    && let Some(obj) = value.as_object_mut()
                {
                    obj.insert("unsigned".into(), json!({"device_display_name": name}));
                }
                keys.insert(OwnedDeviceId::from(row.device_id), raw(&value)?);
            }
            response.device_keys.insert(user.clone(), keys);
            for (usage, mut key) in self.storage.e2ee.cross_signing_keys(user.as_str()).await? {
                if let Some(public) = single_public_key(&key) {
                    add_signatures(&mut key, &public, &signatures);
                }
                match usage.as_str() {
                    "master" => {
                        response.master_keys.insert(user.clone(), raw(&key)?);
                    }
                    "self_signing" => {
                        response.self_signing_keys.insert(user.clone(), raw(&key)?);
                    }
                    // The user-signing key is its owner's business only.
                    "user_signing" if user.as_str() == viewer_user => {
                        response.user_signing_keys.insert(user.clone(), raw(&key)?);
                    }
                    _ => {}
                }
            }
        }
        Ok(response)
    }

    /// `/keys/claim`: one key per requested device, for devices of users the claimer may see;
    /// users of other servers are claimed from at their servers (failures by server).
    pub async fn claim(&self, requester: &UserId, req: claim_keys::Request) -> ServiceResult<claim_keys::Response> {
        let (local, remote) = self.split_local(req.one_time_keys);
        let mut response = claim_keys::Response::new(self.local_claim(Viewer::User(requester), &local).await?);
        let visible = self.visible_users(Viewer::User(requester), remote.keys()).await?;
        let remote = remote.into_iter().filter(|(u, _)| visible.iter().any(|v| v == u.as_str())).collect();
        self.claim_remote(remote, req.timeout, &mut response).await;
        Ok(response)
    }

    /// Claims one key per requested device of our users that `viewer` may see.
    async fn local_claim(&self, viewer: Viewer<'_>, users: &ClaimRequest) -> ServiceResult<ClaimedKeys> {
        let mut claimed: ClaimedKeys = BTreeMap::new();
        let visible = self.visible_users(viewer, users.keys()).await?;
        for (user, devices) in users {
            if user.server_name() != self.server_name || !visible.iter().any(|v| v == user.as_str()) {
                continue;
            }
            for (device, algorithm) in devices {
                let Some((key_id, key)) =
                    self.storage.e2ee.claim(user.as_str(), device.as_str(), algorithm.as_str()).await?
                else {
                    continue;
                };
                let id = OwnedOneTimeKeyId::try_from(format!("{algorithm}:{key_id}")).map_err(internal)?;
                claimed.entry(user.clone()).or_default().entry(device.clone()).or_default().insert(id, raw(&key)?);
            }
        }
        Ok(claimed)
    }

    /// `/keys/changes`: whose device lists changed between two sync tokens, and who no longer
    /// shares a room with the user.
    pub async fn changes(&self, user_id: &UserId, from: &str, to: &str) -> ServiceResult<get_key_changes::Response> {
        let (from, to) = (SyncToken::parse(from)?, SyncToken::parse(to)?);
        let (changed, left) = self
            .storage
            .e2ee
            .device_list_updates(user_id.as_str(), (from.device_lists, to.device_lists), (from.events, to.events))
            .await?;
        let users = |list: Vec<String>| list.iter().filter_map(|u| OwnedUserId::try_from(u.as_str()).ok()).collect();
        Ok(get_key_changes::Response::new(users(changed), users(left)))
    }

    /// Checks uploaded cross-signing keys and returns them as `(usage, key)`, and whether storing
    /// them replaces a master key the user already has (which needs user-interactive auth;
    /// the first upload does not). Self-signing and user-signing keys must be signed by the
    /// master key (the uploaded one, else the stored one).
    pub async fn check_signing_keys(
        &self,
        user_id: &UserId,
        req: &upload_signing_keys::Request,
    ) -> ServiceResult<(Vec<(&'static str, JsonValue)>, bool)> {
        let stored: BTreeMap<String, JsonValue> =
            self.storage.e2ee.cross_signing_keys(user_id.as_str()).await?.into_iter().collect();
        let mut keys = Vec::new();
        for (usage, key) in [
            ("master", &req.master_key),
            ("self_signing", &req.self_signing_key),
            ("user_signing", &req.user_signing_key),
        ] {
            if let Some(key) = key {
                let value: JsonValue =
                    serde_json::from_str(key.json().get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
                check_cross_signing_key(user_id, usage, &value)?;
                keys.push((usage, value));
            }
        }
        let master = keys.iter().find(|(u, _)| *u == "master").map(|(_, k)| k).or_else(|| stored.get("master"));
        for (usage, key) in &keys {
            if *usage == "master" {
                continue;
            }
            let Some(master) = master else {
                return Err(ServiceError::InvalidParam(format!("a {usage} key needs a master key to sign it")));
            };
            verify_signed_by(user_id, key, master).map_err(|e| {
                ServiceError::InvalidParam(format!("the {usage} key is not signed by the master key: {e}"))
            })?;
        }
        let replaces_master =
            keys.iter().any(|(u, k)| *u == "master" && stored.get("master").is_some_and(|old| old != k));
        Ok((keys, replaces_master))
    }

    /// Stores checked cross-signing keys.
    pub async fn store_signing_keys(&self, user_id: &UserId, keys: &[(&'static str, JsonValue)]) -> ServiceResult<()> {
        self.storage.e2ee.set_cross_signing_keys(user_id.as_str(), keys, now_ms()).await?;
        self.announce_signing_keys(user_id, keys).await
    }

    /// `/keys/signatures/upload`: stores the signatures that `signer` added to keys: their
    /// self-signing key's of their devices, their devices' of their master key, their
    /// user-signing key's of other users' master keys. Each key that fails is reported.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        req: &upload_signatures::Request,
    ) -> ServiceResult<upload_signatures::Response> {
        let mut response = upload_signatures::Response::new();
        for (target, signed) in &req.signed_keys {
            for (key_id, object) in signed.iter() {
                match self.check_signatures(signer, target, key_id, object).await? {
                    Ok(signatures) => {
                        for (signer_key_id, signature) in signatures {
                            let sig = KeySignature {
                                user_id: target.to_string(),
                                target_key_id: key_id.to_owned(),
                                signer_user: signer.to_string(),
                                signer_key_id,
                                signature,
                            };
                            self.storage.e2ee.add_signature(&sig).await?;
                        }
                    }
                    Err(error) => {
                        let failure = serde_json::from_value(json!({"errcode": "M_INVALID_SIGNATURE", "error": error}))
                            .map_err(internal)?;
                        response.failures.entry(target.clone()).or_default().insert(key_id.to_owned(), failure);
                    }
                }
            }
        }
        Ok(response)
    }

    /// The new, valid signatures by `signer` on `target`'s key `key_id` (a device id or a master
    /// key's public key), as `(signer key id, signature)`; `Err` with a reason for the client.
    async fn check_signatures(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        object: &serde_json::value::RawValue,
    ) -> ServiceResult<Result<Vec<(String, String)>, String>> {
        let Ok(object) = serde_json::from_str::<JsonValue>(object.get()) else {
            return Ok(Err("not a JSON object".into()));
        };
        let signer_keys: BTreeMap<String, JsonValue> =
            self.storage.e2ee.cross_signing_keys(signer.as_str()).await?.into_iter().collect();
        let target_keys: BTreeMap<String, JsonValue> =
            self.storage.e2ee.cross_signing_keys(target.as_str()).await?.into_iter().collect();
        let target_master = target_keys.get("master").filter(|m| single_public_key(m).as_deref() == Some(key_id));
        // What is signed, and which keys of the signer may sign it: `(key id, public key)`.
        let (stored, signing_keys): (JsonValue, Vec<(String, String)>) = if signer == target {
            let device = self.storage.e2ee.device_keys(target.as_str(), Some(&[key_id.to_owned()])).await?;
            if let Some(device) = device.into_iter().next() {
                let Some(ssk) = signer_keys.get("self_signing").and_then(single_public_key) else {
                    return Ok(Err("no self-signing key to sign devices with".into()));
                };
                (device.keys, vec![(format!("ed25519:{ssk}"), ssk)])
            } else if let Some(master) = target_master {
                let devices = self.storage.e2ee.device_keys(signer.as_str(), None).await?;
                let keys = devices
                    .iter()
                    .filter_map(|d| {
                        let id = format!("ed25519:{}", d.device_id);
                        Some((id.clone(), d.keys.get("keys")?.get(&id)?.as_str()?.to_owned()))
                    })
                    .collect();
                (master.clone(), keys)
            } else {
                return Ok(Err("no such device or master key".into()));
            }
        } else if let Some(master) = target_master {
            let Some(usk) = signer_keys.get("user_signing").and_then(single_public_key) else {
                return Ok(Err("no user-signing key to sign other users with".into()));
            };
            (master.clone(), vec![(format!("ed25519:{usk}"), usk)])
        } else {
            return Ok(Err("not the master key of that user".into()));
        };
        if without_signatures(&object) != without_signatures(&stored) {
            return Ok(Err("the signed object is not the stored key".into()));
        }
        let offered = object.get("signatures").and_then(|s| s.get(signer.as_str())).and_then(JsonValue::as_object);
        let mut valid = Vec::new();
        for (signer_key_id, public) in signing_keys {
            let Some(signature) = offered.and_then(|o| o.get(&signer_key_id)).and_then(JsonValue::as_str) else {
                continue;
            };
            let mut single = without_signatures(&stored);
            single["signatures"] = json!({signer.as_str(): {signer_key_id.clone(): signature}});
            if let Err(e) = verify_signature(signer, &signer_key_id, &public, &single) {
                return Ok(Err(format!("bad signature by {signer_key_id}: {e}")));
            }
            valid.push((signer_key_id, signature.to_owned()));
        }
        if valid.is_empty() {
            return Ok(Err("no signature by a key that may sign this".into()));
        }
        Ok(Ok(valid))
    }
}

/// A cross-signing key: the user's, for `usage`, with exactly one ed25519 key.
fn check_cross_signing_key(user_id: &UserId, usage: &str, key: &JsonValue) -> ServiceResult<()> {
    let bad = |m: &str| Err(ServiceError::InvalidParam(format!("{usage} key: {m}")));
    if key.get("user_id").and_then(JsonValue::as_str) != Some(user_id.as_str()) {
        return bad("user_id must be the uploading user");
    }
    if !key.get("usage").and_then(JsonValue::as_array).is_some_and(|u| u.iter().any(|x| x == usage)) {
        return bad("usage must name it");
    }
    match key.get("keys").and_then(JsonValue::as_object) {
        Some(k) if k.len() == 1 && k.keys().all(|id| id.starts_with("ed25519:")) => Ok(()),
        _ => bad("keys must hold exactly one ed25519 key"),
    }
}

/// Verifies `object`'s signature by `user_id` with the key of the `master` cross-signing key.
fn verify_signed_by(user_id: &UserId, object: &JsonValue, master: &JsonValue) -> Result<(), String> {
    let public = single_public_key(master).ok_or("the master key has no single key")?;
    verify_signature(user_id, &format!("ed25519:{public}"), &public, object)
}

/// The public key of a cross-signing key with exactly one key.
fn single_public_key(key: &JsonValue) -> Option<String> {
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    keys.values().next()?.as_str().map(str::to_owned)
}

/// A key object without its signatures and unsigned data: what its signatures cover.
fn without_signatures(key: &JsonValue) -> JsonValue {
    let mut key = key.clone();
    if let Some(obj) = key.as_object_mut() {
        obj.remove("signatures");
        obj.remove("unsigned");
    }
    key
}

/// Adds the uploaded signatures of key `key_id` to a key object.
fn add_signatures(key: &mut JsonValue, key_id: &str, signatures: &[KeySignature]) {
    for sig in signatures.iter().filter(|s| s.target_key_id == key_id) {
        if let Some(obj) = key.as_object_mut() {
            let all = obj.entry("signatures").or_insert_with(|| json!({}));
            if let Some(all) = all.as_object_mut() {
                let by = all.entry(sig.signer_user.clone()).or_insert_with(|| json!({}));
                if let Some(by) = by.as_object_mut() {
                    by.insert(sig.signer_key_id.clone(), JsonValue::String(sig.signature.clone()));
                }
            }
        }
    }
}

/// Verifies `object`'s signature by `user_id`'s key `key_id` with the public key `public`.
fn verify_signature(user_id: &UserId, key_id: &str, public: &str, object: &JsonValue) -> Result<(), String> {
    let public = ruma::serde::Base64::parse(public).map_err(|e| e.to_string())?;
    let mut keys = BTreeMap::new();
    keys.insert(key_id.to_owned(), public);
    let mut map = BTreeMap::new();
    map.insert(user_id.to_string(), keys);
    let object: ruma::CanonicalJsonObject = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    ruma::signatures::verify_json(&map, &object).map_err(|e| e.to_string())
}
