//! Server-side key backup: `/room_keys/version` and `/room_keys/keys`.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    OwnedRoomId,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys::v3 as add_keys, add_backup_keys_for_room::v3 as add_room_keys,
        add_backup_keys_for_session::v3 as add_session_key, create_backup_version::v3 as create_version,
        delete_backup_keys::v3 as delete_keys, delete_backup_keys_for_room::v3 as delete_room_keys,
        delete_backup_keys_for_session::v3 as delete_session_key, delete_backup_version::v3 as delete_version,
        get_backup_info::v3 as get_info, get_backup_keys::v3 as get_keys,
        get_backup_keys_for_room::v3 as get_room_keys, get_backup_keys_for_session::v3 as get_session_key,
        get_latest_backup_info::v3 as get_latest_info, update_backup_version::v3 as update_version,
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use super::rooms::user_id;
use crate::{
    http::ruma::{ApiResult, Ruma},
    service::{ServiceError, key_backup::RoomKeys},
    state::AppState,
};

fn raw<T>(value: &JsonValue) -> Result<Raw<T>, ServiceError> {
    serde_json::value::to_raw_value(value).map(Raw::from_json).map_err(|e| ServiceError::Internal(e.to_string()))
}

fn sessions<T>(keys: BTreeMap<String, JsonValue>) -> Result<BTreeMap<String, Raw<T>>, ServiceError> {
    keys.iter().map(|(session, key)| Ok((session.clone(), raw(key)?))).collect()
}

fn rooms(keys: RoomKeys) -> Result<BTreeMap<OwnedRoomId, RoomKeyBackup>, ServiceError> {
    keys.into_iter()
        .filter_map(|(room, sessions_of)| Some((OwnedRoomId::try_from(room).ok()?, sessions_of)))
        .map(|(room, sessions_of)| Ok((room, RoomKeyBackup::new(sessions(sessions_of)?))))
        .collect()
}

/// # `POST /_matrix/client/v3/room_keys/version`
pub(super) async fn create_backup_version(
    State(state): State<AppState>,
    req: Ruma<create_version::Request>,
) -> ApiResult<create_version::Response> {
    let user = user_id(&req.identity)?;
    Ok(create_version::Response::new(state.key_backup.create(&user, &req.body.algorithm).await?).into())
}

/// # `GET /_matrix/client/v3/room_keys/version`
pub(super) async fn get_latest_backup_info(
    State(state): State<AppState>,
    req: Ruma<get_latest_info::Request>,
) -> ApiResult<get_latest_info::Response> {
    let user = user_id(&req.identity)?;
    let info = state.key_backup.info(&user, None).await?;
    Ok(get_latest_info::Response::new(raw(&info.algorithm)?, info.count, info.etag, info.version).into())
}

/// # `GET /_matrix/client/v3/room_keys/version/{version}`
pub(super) async fn get_backup_info(
    State(state): State<AppState>,
    req: Ruma<get_info::Request>,
) -> ApiResult<get_info::Response> {
    let user = user_id(&req.identity)?;
    let info = state.key_backup.info(&user, Some(&req.body.version)).await?;
    Ok(get_info::Response::new(raw(&info.algorithm)?, info.count, info.etag, info.version).into())
}

/// # `PUT /_matrix/client/v3/room_keys/version/{version}`
pub(super) async fn update_backup_version(
    State(state): State<AppState>,
    req: Ruma<update_version::Request>,
) -> ApiResult<update_version::Response> {
    let user = user_id(&req.identity)?;
    state.key_backup.update(&user, &req.body.version, &req.body.algorithm).await?;
    Ok(update_version::Response::new().into())
}

/// # `DELETE /_matrix/client/v3/room_keys/version/{version}`
pub(super) async fn delete_backup_version(
    State(state): State<AppState>,
    req: Ruma<delete_version::Request>,
) -> ApiResult<delete_version::Response> {
    let user = user_id(&req.identity)?;
    state.key_backup.delete(&user, &req.body.version).await?;
    Ok(delete_version::Response::new().into())
}

/// # `PUT /_matrix/client/v3/room_keys/keys`
pub(super) async fn add_backup_keys(
    State(state): State<AppState>,
    req: Ruma<add_keys::Request>,
) -> ApiResult<add_keys::Response> {
    let user = user_id(&req.identity)?;
    let keys: Vec<_> = req
        .body
        .rooms
        .iter()
        .flat_map(|(room, backup)| backup.sessions.iter().map(move |(s, k)| (room.to_string(), s.clone(), k)))
        .collect();
    let (count, etag) = state.key_backup.put(&user, &req.body.version, &keys).await?;
    Ok(add_keys::Response::new(etag, count).into())
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
pub(super) async fn add_backup_keys_for_room(
    State(state): State<AppState>,
    req: Ruma<add_room_keys::Request>,
) -> ApiResult<add_room_keys::Response> {
    let user = user_id(&req.identity)?;
    let room = req.body.room_id.to_string();
    let keys: Vec<_> = req.body.sessions.iter().map(|(s, k)| (room.clone(), s.clone(), k)).collect();
    let (count, etag) = state.key_backup.put(&user, &req.body.version, &keys).await?;
    Ok(add_room_keys::Response::new(etag, count).into())
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub(super) async fn add_backup_keys_for_session(
    State(state): State<AppState>,
    req: Ruma<add_session_key::Request>,
) -> ApiResult<add_session_key::Response> {
    let user = user_id(&req.identity)?;
    let keys = [(req.body.room_id.to_string(), req.body.session_id.clone(), &req.body.session_data)];
    let (count, etag) = state.key_backup.put(&user, &req.body.version, &keys).await?;
    Ok(add_session_key::Response::new(etag, count).into())
}

/// # `GET /_matrix/client/v3/room_keys/keys`
pub(super) async fn get_backup_keys(
    State(state): State<AppState>,
    req: Ruma<get_keys::Request>,
) -> ApiResult<get_keys::Response> {
    let user = user_id(&req.identity)?;
    let keys = state.key_backup.get(&user, &req.body.version, None, None).await?;
    Ok(get_keys::Response::new(rooms(keys)?).into())
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}`
pub(super) async fn get_backup_keys_for_room(
    State(state): State<AppState>,
    req: Ruma<get_room_keys::Request>,
) -> ApiResult<get_room_keys::Response> {
    let user = user_id(&req.identity)?;
    let room = req.body.room_id.to_string();
    let mut keys = state.key_backup.get(&user, &req.body.version, Some(&room), None).await?;
    Ok(get_room_keys::Response::new(sessions(keys.remove(&room).unwrap_or_default())?).into())
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub(super) async fn get_backup_keys_for_session(
    State(state): State<AppState>,
    req: Ruma<get_session_key::Request>,
) -> ApiResult<get_session_key::Response> {
    let user = user_id(&req.identity)?;
    let room = req.body.room_id.to_string();
    let mut keys = state.key_backup.get(&user, &req.body.version, Some(&room), Some(&req.body.session_id)).await?;
    let key = keys
        .remove(&room)
        .and_then(|mut s| s.remove(&req.body.session_id))
        .ok_or_else(|| ServiceError::NotFound("no backed-up key for this session".into()))?;
    Ok(get_session_key::Response::new(raw(&key)?).into())
}

/// # `DELETE /_matrix/client/v3/room_keys/keys`
pub(super) async fn delete_backup_keys(
    State(state): State<AppState>,
    req: Ruma<delete_keys::Request>,
) -> ApiResult<delete_keys::Response> {
    let user = user_id(&req.identity)?;
    let (count, etag) = state.key_backup.delete_keys(&user, &req.body.version, None, None).await?;
    Ok(delete_keys::Response::new(etag, count).into())
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
pub(super) async fn delete_backup_keys_for_room(
    State(state): State<AppState>,
    req: Ruma<delete_room_keys::Request>,
) -> ApiResult<delete_room_keys::Response> {
    let user = user_id(&req.identity)?;
    let room = req.body.room_id.to_string();
    let (count, etag) = state.key_backup.delete_keys(&user, &req.body.version, Some(&room), None).await?;
    Ok(delete_room_keys::Response::new(etag, count).into())
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub(super) async fn delete_backup_keys_for_session(
    State(state): State<AppState>,
    req: Ruma<delete_session_key::Request>,
) -> ApiResult<delete_session_key::Response> {
    let user = user_id(&req.identity)?;
    let room = req.body.room_id.to_string();
    let session = req.body.session_id.clone();
    let (count, etag) = state.key_backup.delete_keys(&user, &req.body.version, Some(&room), Some(&session)).await?;
    Ok(delete_session_key::Response::new(etag, count).into())
}
