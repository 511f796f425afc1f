//! The server-server API on the federation listener: so far the server's key document (with the
//! keys it replaced) and its version; the protocol endpoints follow.

use std::time::Duration;

use axum::{Router, extract::State};
use ruma::{
    api::federation::discovery::{get_server_keys::v2 as server_keys, get_server_version::v1 as version},
    serde::Raw,
};

use crate::{
    http::{
        RumaRouterExt,
        ruma::{ApiResult, Ruma},
    },
    service::ServiceError,
    state::AppState,
    storage::now_ms,
};

/// How long peers may cache the key document (the spec suggests about a week at most; peers
/// fetch again when it runs out).
const KEYS_VALID_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<server_keys::Request, _, _>(get_server_keys).ruma_route::<version::Request, _, _>(get_version)
}

/// # `GET /_matrix/key/v2/server`
async fn get_server_keys(
    State(state): State<AppState>,
    _: Ruma<server_keys::Request>,
) -> ApiResult<server_keys::Response> {
    let valid_until = u64::try_from(now_ms()).unwrap_or_default() + KEYS_VALID_FOR.as_millis() as u64;
    let old = state.storage.keys.old_keys().await.map_err(ServiceError::from)?;
    let document = state
        .signing_key
        .server_keys(&state.config.server_name, valid_until, &old)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let raw = serde_json::value::to_raw_value(&document).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(server_keys::Response::new(Raw::from_json(raw)).into())
}

/// # `GET /_matrix/federation/v1/version`
async fn get_version(_: Ruma<version::Request>) -> ApiResult<version::Response> {
    let mut server = version::Server::new();
    server.name = Some("Poststelle".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = version::Response::new();
    response.server = Some(server);
    Ok(response.into())
}
