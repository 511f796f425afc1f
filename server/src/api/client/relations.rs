//! Relations, threads and finding events by time.

use axum::extract::State;
use ruma::api::{
    Direction,
    client::{
        relations::{
            get_relating_events::v1 as relations, get_relating_events_with_rel_type::v1 as relations_rel,
            get_relating_events_with_rel_type_and_event_type::v1 as relations_rel_type,
        },
        room::get_event_by_timestamp::v1 as by_timestamp,
        threads::get_threads::v1 as threads,
    },
};

use super::json::raw_list;
use crate::{
    http::ruma::{ApiResult, Ruma},
    service::{
        rooms::{
            client_format::Viewer,
            relations::{RelationsPage, RelationsQuery},
        },
        sessions::Session,
    },
    state::AppState,
};

fn viewer(s: &Session) -> Viewer<'_> {
    Viewer { user_id: &s.user_id, device_id: Some(&s.device_id) }
}

fn limit(l: Option<ruma::UInt>) -> Option<usize> {
    l.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
}

/// The three `/relations` endpoints differ only in how much of the filter is in the path.
macro_rules! relations_handler {
    ($name:ident, $module:ident, $rel:expr, $ty:expr) => {
        pub(super) async fn $name(
            State(state): State<AppState>,
            req: Ruma<$module::Request>,
        ) -> ApiResult<$module::Response> {
            let b = &req.body;
            let rel_type: Option<String> = $rel(b);
            let event_type: Option<String> = $ty(b);
            let page = state
                .rooms
                .relations_for(
                    viewer(&req.identity),
                    RelationsQuery {
                        room_id: b.room_id.as_str(),
                        event_id: b.event_id.as_str(),
                        rel_type: rel_type.as_deref(),
                        event_type: event_type.as_deref(),
                        from: b.from.as_deref(),
                        to: b.to.as_deref(),
                        backwards: b.dir == Direction::Backward,
                        limit: limit(b.limit),
                        recurse: b.recurse,
                    },
                )
                .await?;
            let RelationsPage { chunk, next_batch, recursion_depth } = page;
            let mut response = $module::Response::new(raw_list(&chunk)?);
            response.next_batch = next_batch;
            response.recursion_depth = recursion_depth.and_then(|d| ruma::UInt::try_from(d as u64).ok());
            Ok(response.into())
        }
    };
}

relations_handler!(get_relating_events, relations, |_: &relations::Request| None, |_: &relations::Request| None);
relations_handler!(
    get_relating_events_with_rel_type,
    relations_rel,
    |b: &relations_rel::Request| Some(b.rel_type.to_string()),
    |_: &relations_rel::Request| None
);
relations_handler!(
    get_relating_events_with_rel_type_and_event_type,
    relations_rel_type,
    |b: &relations_rel_type::Request| Some(b.rel_type.to_string()),
    |b: &relations_rel_type::Request| Some(b.event_type.to_string())
);

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
pub(super) async fn get_threads(
    State(state): State<AppState>,
    req: Ruma<threads::Request>,
) -> ApiResult<threads::Response> {
    let b = &req.body;
    let participated = b.include == threads::IncludeThreads::Participated;
    let (chunk, next_batch) = state
        .rooms
        .threads_for(viewer(&req.identity), b.room_id.as_str(), b.from.as_deref(), participated, limit(b.limit))
        .await?;
    let mut response = threads::Response::new(raw_list(&chunk)?);
    response.next_batch = next_batch;
    Ok(response.into())
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
pub(super) async fn get_event_by_timestamp(
    State(state): State<AppState>,
    req: Ruma<by_timestamp::Request>,
) -> ApiResult<by_timestamp::Response> {
    let b = &req.body;
    let ts = i64::try_from(u64::from(b.ts.get())).unwrap_or(i64::MAX);
    let (event_id, origin_ts) =
        state.rooms.event_at_time(&req.identity.user_id, b.room_id.as_str(), ts, b.dir == Direction::Forward).await?;
    let event_id =
        ruma::OwnedEventId::try_from(event_id).map_err(|e| crate::service::ServiceError::Internal(e.to_string()))?;
    let origin = ruma::MilliSecondsSinceUnixEpoch(ruma::UInt::try_from(origin_ts.max(0) as u64).unwrap_or_default());
    Ok(by_timestamp::Response::new(event_id, origin).into())
}
