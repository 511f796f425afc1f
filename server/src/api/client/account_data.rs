//! Account data and sync filters.

use axum::extract::State;
use ruma::api::client::{
    config::{
        get_global_account_data::v3 as get_global, get_room_account_data::v3 as get_room,
        set_global_account_data::v3 as set_global, set_room_account_data::v3 as set_room,
    },
    filter::{create_filter::v3 as create_filter, get_filter::v3 as get_filter},
};

use super::{
    json::{from_value, to_value},
    require_self,
};
use crate::{
    http::ruma::{ApiResult, Ruma},
    service::ServiceError,
    state::AppState,
};

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub(super) async fn get_global(
    State(state): State<AppState>,
    req: Ruma<get_global::Request>,
) -> ApiResult<get_global::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    let content = state.account_data.get(&req.identity.user_id, "", &req.body.event_type.to_string()).await?;
    Ok(get_global::Response::new(from_value(&content)?).into())
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub(super) async fn set_global(
    State(state): State<AppState>,
    req: Ruma<set_global::Request>,
) -> ApiResult<set_global::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    let content = to_value(&req.body.data)?;
    state.account_data.set(&req.identity.user_id, "", &req.body.event_type.to_string(), &content).await?;
    Ok(set_global::Response::new().into())
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub(super) async fn get_room(
    State(state): State<AppState>,
    req: Ruma<get_room::Request>,
) -> ApiResult<get_room::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    let content = state
        .account_data
        .get(&req.identity.user_id, req.body.room_id.as_str(), &req.body.event_type.to_string())
        .await?;
    Ok(get_room::Response::new(from_value(&content)?).into())
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub(super) async fn set_room(
    State(state): State<AppState>,
    req: Ruma<set_room::Request>,
) -> ApiResult<set_room::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    let content = to_value(&req.body.data)?;
    state
        .account_data
        .set(&req.identity.user_id, req.body.room_id.as_str(), &req.body.event_type.to_string(), &content)
        .await?;
    Ok(set_room::Response::new().into())
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
pub(super) async fn create_filter(
    State(state): State<AppState>,
    req: Ruma<create_filter::Request>,
) -> ApiResult<create_filter::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    let filter = serde_json::to_value(&req.body.filter).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let id = state.account_data.create_filter(&req.identity.user_id, &filter).await?;
    Ok(create_filter::Response::new(id).into())
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub(super) async fn get_filter(
    State(state): State<AppState>,
    req: Ruma<get_filter::Request>,
) -> ApiResult<get_filter::Response> {
    require_self(&req.identity.user_id, &req.body.user_id)?;
    let filter = state.account_data.filter(&req.identity.user_id, &req.body.filter_id).await?;
    let filter = serde_json::from_value(filter).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(get_filter::Response::new(filter).into())
}
