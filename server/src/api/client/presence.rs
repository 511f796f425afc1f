//! Presence of users.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    api::client::presence::{get_presence::v3 as get_presence, set_presence::v3 as set_presence},
    presence::PresenceState,
};

use crate::{
    http::ruma::{ApiResult, Ruma},
    state::AppState,
};

/// # `GET /_matrix/client/v3/presence/{userId}/status`
pub(super) async fn get_presence(
    State(state): State<AppState>,
    req: Ruma<get_presence::Request>,
) -> ApiResult<get_presence::Response> {
    let view = state.presence.get(&req.identity.user_id, req.body.user_id.as_str()).await?;
    let mut response = get_presence::Response::new(PresenceState::from(view.state.as_str()));
    response.status_msg = view.status_msg;
    response.currently_active = view.currently_active;
    response.last_active_ago = view.last_active_ago.map(Duration::from_millis);
    Ok(response.into())
}

/// # `PUT /_matrix/client/v3/presence/{userId}/status`
pub(super) async fn set_presence(
    State(state): State<AppState>,
    req: Ruma<set_presence::Request>,
) -> ApiResult<set_presence::Response> {
    let b = req.body;
    state.presence.set(&req.identity.user_id, b.user_id.as_str(), b.presence.as_str(), b.status_msg).await?;
    Ok(set_presence::Response::new().into())
}
