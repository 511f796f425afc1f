//! `/sync` and simplified sliding sync (MSC4186).

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::sync::sync_events::{v3 as sync, v5 as sliding};

use super::json::to_value;
use crate::{
    http::ruma::{ApiResult, Ruma},
    service::sync::{SlidingRequest, SyncFilter, SyncRequest},
    state::AppState,
};

/// # `GET /_matrix/client/v3/sync`
pub(super) async fn sync_events(State(state): State<AppState>, req: Ruma<sync::Request>) -> ApiResult<sync::Response> {
    let b = req.body;
    let filter = match &b.filter {
        None => SyncFilter::default(),
        Some(sync::Filter::FilterDefinition(def)) => SyncFilter::from_json(&to_value(def)?)?,
        // A value starting with `{` is inline JSON (spec), so one ruma could not read is bad JSON,
        // not an unknown filter id.
        Some(sync::Filter::FilterId(id)) if id.starts_with('{') => {
            return Err(crate::http::error::ApiError::bad_json(format!("invalid filter: {id}")));
        }
        Some(sync::Filter::FilterId(id)) => {
            SyncFilter::from_json(&state.account_data.filter(&req.identity.user_id, id).await?)?
        }
        Some(_) => SyncFilter::default(),
    };
    let user_id = ruma::OwnedUserId::try_from(req.identity.user_id.as_str())
        .map_err(|e| crate::http::error::ApiError::bad_json(e.to_string()))?;
    let response = state
        .sync
        .sync(SyncRequest {
            user_id,
            device_id: req.identity.device_id,
            since: b.since,
            full_state: b.full_state,
            timeout: b.timeout.unwrap_or(Duration::ZERO),
            filter,
            set_presence: b.set_presence.as_str().to_owned(),
        })
        .await?;
    Ok(response.into())
}

/// # `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
pub(super) async fn sliding_sync(
    State(state): State<AppState>,
    req: Ruma<sliding::Request>,
) -> ApiResult<sliding::Response> {
    let user_id = ruma::OwnedUserId::try_from(req.identity.user_id.as_str())
        .map_err(|e| crate::http::error::ApiError::bad_json(e.to_string()))?;
    let request = SlidingRequest { user_id, device_id: req.identity.device_id, body: req.body };
    Ok(state.sync.sliding_sync(request).await?.into())
}
