//! Profiles (display name, avatar).
//!
//! Lookups of another user's profile are refused unless `privacy.public_profiles` is set: the
//! public-sector profile limits them to users who share a room, which the rooms layer grants.

use axum::extract::State;
use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{
        get_avatar_url::v3 as get_avatar_url, get_display_name::v3 as get_display_name, get_profile::v3 as get_profile,
        set_avatar_url::v3 as set_avatar_url, set_display_name::v3 as set_display_name,
    },
};

use super::require_self;
use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{accounts::Profile, sessions::Session},
    state::AppState,
};

async fn visible_profile(state: &AppState, requester: Option<&Session>, target: &UserId) -> Result<Profile, ApiError> {
    Ok(state.accounts.visible_profile(requester.map(|s| (s.user_id.as_str(), s.is_admin)), target).await?)
}

/// # `GET /_matrix/client/v3/profile/{userId}`
pub(super) async fn get_profile(
    State(state): State<AppState>,
    req: Ruma<get_profile::Request>,
) -> ApiResult<get_profile::Response> {
    let profile = visible_profile(&state, req.identity.as_ref(), &req.body.user_id).await?;
    let mut fields = Vec::new();
    if let Some(name) = profile.displayname {
        fields.push(("displayname".to_owned(), serde_json::Value::String(name)));
    }
    if let Some(url) = profile.avatar_url {
        fields.push(("avatar_url".to_owned(), serde_json::Value::String(url)));
    }
    Ok(get_profile::Response::from_iter(fields).into())
}

/// # `GET /_matrix/client/v3/profile/{userId}/displayname`
pub(super) async fn get_displayname(
    State(state): State<AppState>,
    req: Ruma<get_display_name::Request>,
) -> ApiResult<get_display_name::Response> {
    let profile = visible_profile(&state, req.identity.as_ref(), &req.body.user_id).await?;
    Ok(get_display_name::Response::new(profile.displayname).into())
}

/// # `PUT /_matrix/client/v3/profile/{userId}/displayname`
pub(super) async fn set_displayname(
    State(state): State<AppState>,
    req: Ruma<set_display_name::Request>,
) -> ApiResult<set_display_name::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    state.accounts.set_displayname(&req.identity.user_id, req.body.displayname.as_deref()).await?;
    Ok(set_display_name::Response::new().into())
}

/// # `GET /_matrix/client/v3/profile/{userId}/avatar_url`
pub(super) async fn get_avatar_url(
    State(state): State<AppState>,
    req: Ruma<get_avatar_url::Request>,
) -> ApiResult<get_avatar_url::Response> {
    let profile = visible_profile(&state, req.identity.as_ref(), &req.body.user_id).await?;
    Ok(get_avatar_url::Response::new(profile.avatar_url.map(OwnedMxcUri::from)).into())
}

/// # `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
pub(super) async fn set_avatar_url(
    State(state): State<AppState>,
    req: Ruma<set_avatar_url::Request>,
) -> ApiResult<set_avatar_url::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    let url = req.body.avatar_url.as_ref().map(|u| u.as_str());
    state.accounts.set_avatar_url(&req.identity.user_id, url).await?;
    Ok(set_avatar_url::Response::new().into())
}
