//! End-to-end encryption keys: upload, query, claim, cross-signing keys, and whose devices
//! changed.

use axum::extract::State;
use ruma::api::client::keys::{
    claim_keys::v3 as claim_keys, get_key_changes::v3 as get_key_changes, get_keys::v3 as get_keys,
    upload_keys::v3 as upload_keys, upload_signatures::v3 as upload_signatures,
    upload_signing_keys::v3 as upload_signing_keys,
};

use super::rooms::user_id;
use crate::{
    http::ruma::{ApiResult, Ruma},
    service::uiaa::{Purpose, UiaaService},
    state::AppState,
};

/// # `POST /_matrix/client/v3/keys/upload`
pub(super) async fn upload_keys(
    State(state): State<AppState>,
    req: Ruma<upload_keys::Request>,
) -> ApiResult<upload_keys::Response> {
    let user = user_id(&req.identity)?;
    let counts = state.e2ee.upload(&user, &req.identity.device_id, req.body).await?;
    Ok(upload_keys::Response::new(counts).into())
}

/// # `POST /_matrix/client/v3/keys/query`
pub(super) async fn get_keys(
    State(state): State<AppState>,
    req: Ruma<get_keys::Request>,
) -> ApiResult<get_keys::Response> {
    let user = user_id(&req.identity)?;
    Ok(state.e2ee.query(&user, req.body).await?.into())
}

/// # `POST /_matrix/client/v3/keys/claim`
pub(super) async fn claim_keys(
    State(state): State<AppState>,
    req: Ruma<claim_keys::Request>,
) -> ApiResult<claim_keys::Response> {
    let user = user_id(&req.identity)?;
    Ok(state.e2ee.claim(&user, req.body).await?.into())
}

/// # `GET /_matrix/client/v3/keys/changes`
pub(super) async fn key_changes(
    State(state): State<AppState>,
    req: Ruma<get_key_changes::Request>,
) -> ApiResult<get_key_changes::Response> {
    let user = user_id(&req.identity)?;
    Ok(state.e2ee.changes(&user, &req.body.from, &req.body.to).await?.into())
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload` (UIA: password, when it replaces the
/// master key)
pub(super) async fn upload_signing_keys(
    State(state): State<AppState>,
    req: Ruma<upload_signing_keys::Request>,
) -> ApiResult<upload_signing_keys::Response> {
    let user = user_id(&req.identity)?;
    let (keys, replaces_master) = state.e2ee.check_signing_keys(&user, &req.body).await?;
    let passed = if replaces_master {
        let flows = UiaaService::password_flows();
        let passed = state
            .uiaa
            .authenticate(Purpose::UploadSigningKeys, Some(&req.identity.user_id), req.body.auth.as_ref(), &flows)
            .await?;
        Some(passed)
    } else {
        None
    };
    state.e2ee.store_signing_keys(&user, &keys).await?;
    if let Some(passed) = passed {
        state.uiaa.finish(passed).await?;
    }
    Ok(upload_signing_keys::Response::new().into())
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
pub(super) async fn upload_signatures(
    State(state): State<AppState>,
    req: Ruma<upload_signatures::Request>,
) -> ApiResult<upload_signatures::Response> {
    let user = user_id(&req.identity)?;
    Ok(state.e2ee.upload_signatures(&user, &req.body).await?.into())
}
