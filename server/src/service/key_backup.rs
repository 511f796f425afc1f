//! Server-side key backup: the versions a user's clients create and the room keys they store
//! in the current one, encrypted by the clients. Of two copies of a session's key the server
//! keeps the better one (verified, then earlier first message, then fewer forwards).

use std::collections::BTreeMap;

use ruma::{UInt, UserId, serde::Raw};
use serde_json::Value as JsonValue;

use super::{ServiceError, ServiceResult};
use crate::storage::{
    Storage,
    key_backup::{BackedUpKey, BackupVersion},
};

/// The backup algorithms the spec defines.
const BACKUP_ALGORITHMS: &[&str] = &["m.megolm_backup.v1.curve25519-aes-sha2"];

#[derive(Debug)]
pub struct KeyBackupService {
    storage: Storage,
}

/// A version's metadata as the API returns it: `(algorithm object, count, etag, version)`.
pub struct VersionInfo {
    pub algorithm: JsonValue,
    pub count: UInt,
    pub etag: String,
    pub version: String,
}

/// Keys as the API groups them: room → session → key data.
pub type RoomKeys = BTreeMap<String, BTreeMap<String, JsonValue>>;

fn parse_version(version: &str) -> ServiceResult<i64> {
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ServiceError::NotFound("unknown backup version".into()))
}

fn uint(n: i64) -> UInt {
    UInt::try_from(n.max(0).unsigned_abs()).unwrap_or(UInt::MAX)
}

fn info(v: BackupVersion) -> VersionInfo {
    VersionInfo {
        algorithm: serde_json::json!({"algorithm": v.algorithm, "auth_data": v.auth_data}),
        count: uint(v.count),
        etag: v.etag.to_string(),
        version: v.version.to_string(),
    }
}

/// The algorithm and auth data of a version body.
fn algorithm_of<T>(raw: &Raw<T>) -> ServiceResult<(String, JsonValue)> {
    let value: JsonValue = serde_json::from_str(raw.json().get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
    let algorithm = value
        .get("algorithm")
        .and_then(JsonValue::as_str)
        .ok_or_else(|| ServiceError::BadJson("algorithm is missing".into()))?;
    if !BACKUP_ALGORITHMS.contains(&algorithm) {
        return Err(ServiceError::InvalidParam(format!("unsupported backup algorithm {algorithm}")));
    }
    let auth_data = value
        .get("auth_data")
        .filter(|a| a.is_object())
        .ok_or_else(|| ServiceError::BadJson("auth_data must be an object".into()))?;
    Ok((algorithm.to_owned(), auth_data.clone()))
}

/// A key to store, from the client's `KeyBackupData`.
fn backed_up<T>(room_id: &str, session_id: &str, raw: &Raw<T>) -> ServiceResult<BackedUpKey> {
    let value: JsonValue = serde_json::from_str(raw.json().get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
    let number = |field: &str| {
        value
            .get(field)
            .and_then(JsonValue::as_i64)
            .filter(|n| *n >= 0)
            .ok_or_else(|| ServiceError::BadJson(format!("{field} must be a non-negative integer")))
    };
    Ok(BackedUpKey {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index: number("first_message_index")?,
        forwarded_count: number("forwarded_count")?,
        is_verified: value
            .get("is_verified")
            .and_then(JsonValue::as_bool)
            .ok_or_else(|| ServiceError::BadJson("is_verified must be a boolean".into()))?,
        session_data: value
            .get("session_data")
            .filter(|d| d.is_object())
            .cloned()
            .ok_or_else(|| ServiceError::BadJson("session_data must be an object".into()))?,
    })
}

fn key_json(k: &BackedUpKey) -> JsonValue {
    serde_json::json!({
        "first_message_index": k.first_message_index,
        "forwarded_count": k.forwarded_count,
        "is_verified": k.is_verified,
        "session_data": k.session_data,
    })
}

impl KeyBackupService {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// `POST /room_keys/version`: the new version's number.
    pub async fn create<T>(&self, user: &UserId, algorithm: &Raw<T>) -> ServiceResult<String> {
        let (algorithm, auth_data) = algorithm_of(algorithm)?;
        Ok(self.storage.key_backup.create_version(user.as_str(), &algorithm, &auth_data).await?.to_string())
    }

    /// `GET /room_keys/version[/{version}]`.
    pub async fn info(&self, user: &UserId, version: Option<&str>) -> ServiceResult<VersionInfo> {
        let version = version.map(parse_version).transpose()?;
        let found = self.storage.key_backup.version(user.as_str(), version).await?;
        found.map(info).ok_or_else(|| ServiceError::NotFound("no such backup version".into()))
    }

    /// `PUT /room_keys/version/{version}`: new auth data; the algorithm cannot change.
    pub async fn update<T>(&self, user: &UserId, version: &str, algorithm: &Raw<T>) -> ServiceResult<()> {
        let (new_algorithm, auth_data) = algorithm_of(algorithm)?;
        let number = parse_version(version)?;
        let current = self
            .storage
            .key_backup
            .version(user.as_str(), Some(number))
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such backup version".into()))?;
        if current.algorithm != new_algorithm {
            return Err(ServiceError::InvalidParam("the algorithm of a backup version cannot change".into()));
        }
        self.storage.key_backup.update_version(user.as_str(), number, &auth_data).await?;
        Ok(())
    }

    /// `DELETE /room_keys/version/{version}`.
    pub async fn delete(&self, user: &UserId, version: &str) -> ServiceResult<()> {
        if self.storage.key_backup.delete_version(user.as_str(), parse_version(version)?).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("no such backup version".into()))
        }
    }

    /// `PUT /room_keys/keys[...]`: stores keys in the current version; `(count, etag)`.
    pub async fn put<T>(
        &self,
        user: &UserId,
        version: &str,
        keys: &[(String, String, &Raw<T>)],
    ) -> ServiceResult<(UInt, String)> {
        let current = self.storage.key_backup.version(user.as_str(), None).await?.map(|v| v.version.to_string());
        let wrong = || ServiceError::WrongRoomKeysVersion { current: current.clone() };
        let number = version.parse::<i64>().map_err(|_| wrong())?;
        let keys: Vec<BackedUpKey> =
            keys.iter().map(|(room, session, raw)| backed_up(room, session, *raw)).collect::<ServiceResult<_>>()?;
        match self.storage.key_backup.put_keys(user.as_str(), number, &keys).await? {
            Some((count, etag)) => Ok((uint(count), etag.to_string())),
            None => Err(wrong()),
        }
    }

    /// `GET /room_keys/keys[...]`: the keys of an existing version.
    pub async fn get(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> ServiceResult<RoomKeys> {
        let number = parse_version(version)?;
        if self.storage.key_backup.version(user.as_str(), Some(number)).await?.is_none() {
            return Err(ServiceError::NotFound("no such backup version".into()));
        }
        let mut rooms = RoomKeys::new();
        for k in self.storage.key_backup.keys(user.as_str(), number, room_id, session_id).await? {
            rooms.entry(k.room_id.clone()).or_default().insert(k.session_id.clone(), key_json(&k));
        }
        Ok(rooms)
    }

    /// `DELETE /room_keys/keys[...]`: `(count, etag)` after.
    pub async fn delete_keys(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> ServiceResult<(UInt, String)> {
        let number = parse_version(version)?;
        if self.storage.key_backup.version(user.as_str(), Some(number)).await?.is_none() {
            return Err(ServiceError::NotFound("no such backup version".into()));
        }
        let (count, etag) = self.storage.key_backup.delete_keys(user.as_str(), number, room_id, session_id).await?;
        Ok((uint(count), etag.to_string()))
    }
}
