//! Pushers (`/pushers`, `/pushers/set`) and `/notifications`.

use axum::extract::State;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt,
    api::client::push::{
        Pusher, get_notifications::v3 as notifications, get_pushers::v3 as get, set_pusher::v3 as set,
    },
    push::Action,
    serde::Raw,
};

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::ServiceError,
    state::AppState,
};

fn internal(e: impl std::fmt::Display) -> ApiError {
    ServiceError::Internal(e.to_string()).into()
}

/// # `GET /_matrix/client/v3/pushers`
pub(super) async fn get_pushers(State(state): State<AppState>, req: Ruma<get::Request>) -> ApiResult<get::Response> {
    let pushers = state.push.pushers(&req.identity.user_id).await?;
    let pushers: Vec<Pusher> = pushers.into_iter().filter_map(|p| serde_json::from_value(p).ok()).collect();
    Ok(get::Response::new(pushers).into())
}

/// # `POST /_matrix/client/v3/pushers/set`
pub(super) async fn set_pusher(State(state): State<AppState>, req: Ruma<set::Request>) -> ApiResult<set::Response> {
    let session = req.identity;
    match req.body.action {
        set::PusherAction::Post(post) => {
            let pusher = serde_json::to_value(&post.pusher).map_err(internal)?;
            state.push.set_pusher(&session.user_id, &session.device_id, &pusher, post.append).await?;
        }
        set::PusherAction::Delete(ids) => {
            state.push.delete_pusher(&session.user_id, &ids.app_id, &ids.pushkey).await?;
        }
        _ => return Err(ApiError::invalid_param("unknown pusher action")),
    }
    Ok(set::Response::new().into())
}

/// # `GET /_matrix/client/v3/notifications`
pub(super) async fn get_notifications(
    State(state): State<AppState>,
    req: Ruma<notifications::Request>,
) -> ApiResult<notifications::Response> {
    let r = req.body;
    let limit = r.limit.map_or(20, |l| usize::try_from(l).unwrap_or(100));
    let only_highlight = r.only.as_deref() == Some("highlight");
    let (items, next) =
        state.push.notifications(&req.identity.user_id, r.from.as_deref(), limit, only_highlight).await?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let actions: Vec<Action> = serde_json::from_value(item.row.actions).map_err(internal)?;
        let event = serde_json::value::to_raw_value(&item.event).map(Raw::from_json).map_err(internal)?;
        let room = OwnedRoomId::try_from(item.row.room_id).map_err(internal)?;
        let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(item.row.ts.max(0)).unwrap_or_default());
        let mut n = notifications::Notification::new(actions, event, item.row.read, room, ts);
        n.profile_tag = item.profile_tag;
        out.push(n);
    }
    let mut response = notifications::Response::new(out);
    response.next_token = next;
    Ok(response.into())
}
