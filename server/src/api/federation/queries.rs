//! The query endpoints of the server-server API: profiles, device lists and keys of our users,
//! our public room directory, and whose OpenID token a bearer holds. Each handler takes the origin that X-Matrix authenticated
//! and makes one service call; who may learn what is the services' business.

use axum::{Router, extract::State};
use ruma::api::federation::{
    device::get_devices::v1 as user_devices,
    directory::{get_public_rooms::v1 as public_rooms, get_public_rooms_filtered::v1 as public_rooms_filtered},
    keys::{claim_keys::v1 as claim_keys, get_keys::v1 as get_keys},
    openid::get_openid_userinfo::v1 as openid_userinfo,
    query::get_profile_information::v1 as profile,
};

use crate::{
    http::{
        RumaRouterExt,
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    state::AppState,
};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<profile::Request, _, _>(query_profile)
        .ruma_route::<user_devices::Request, _, _>(get_user_devices)
        .ruma_route::<get_keys::Request, _, _>(query_keys)
        .ruma_route::<claim_keys::Request, _, _>(claim_one_time_keys)
        .ruma_route::<public_rooms::Request, _, _>(get_public_rooms)
        .ruma_route::<public_rooms_filtered::Request, _, _>(get_public_rooms_filtered)
        .ruma_route::<openid_userinfo::Request, _, _>(get_openid_userinfo)
}

fn limit(l: Option<ruma::UInt>) -> Option<usize> {
    l.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
}

fn chunk(rooms: Vec<serde_json::Value>) -> Result<Vec<ruma::directory::PublicRoomsChunk>, ApiError> {
    rooms
        .into_iter()
        .map(|r| serde_json::from_value(r).map_err(|e| crate::service::ServiceError::Internal(e.to_string()).into()))
        .collect()
}

/// # `GET /_matrix/federation/v1/query/profile`
async fn query_profile(State(state): State<AppState>, req: Ruma<profile::Request>) -> ApiResult<profile::Response> {
    let found = state.accounts.profile_for_server(req.identity.as_str(), &req.body.user_id).await?;
    let wanted = req.body.field.as_ref().map(|f| f.as_str().to_owned());
    let mut response = profile::Response::new();
    for (field, value) in [("displayname", found.displayname), ("avatar_url", found.avatar_url)] {
        if let Some(value) = value
            && wanted.as_deref().is_none_or(|w| w == field)
        {
            response.set(field.to_owned(), serde_json::Value::String(value));
        }
    }
    Ok(response.into())
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
async fn get_user_devices(
    State(state): State<AppState>,
    req: Ruma<user_devices::Request>,
) -> ApiResult<user_devices::Response> {
    Ok(state.e2ee.serve_devices(&req.identity, &req.body.user_id).await?.into())
}

/// # `POST /_matrix/federation/v1/user/keys/query`
async fn query_keys(State(state): State<AppState>, req: Ruma<get_keys::Request>) -> ApiResult<get_keys::Response> {
    Ok(state.e2ee.serve_query(&req.identity, &req.body.device_keys).await?.into())
}

/// # `POST /_matrix/federation/v1/user/keys/claim`
async fn claim_one_time_keys(
    State(state): State<AppState>,
    req: Ruma<claim_keys::Request>,
) -> ApiResult<claim_keys::Response> {
    Ok(state.e2ee.serve_claim(&req.identity, &req.body.one_time_keys).await?.into())
}

/// # `GET /_matrix/federation/v1/publicRooms`
async fn get_public_rooms(
    State(state): State<AppState>,
    req: Ruma<public_rooms::Request>,
) -> ApiResult<public_rooms::Response> {
    let (rooms, next, prev, total) =
        state.rooms.public_rooms(req.body.since.as_deref(), limit(req.body.limit), None).await?;
    let mut response = public_rooms::Response::new();
    response.chunk = chunk(rooms)?;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = ruma::UInt::try_from(total as u64).ok();
    Ok(response.into())
}

/// # `POST /_matrix/federation/v1/publicRooms`
async fn get_public_rooms_filtered(
    State(state): State<AppState>,
    req: Ruma<public_rooms_filtered::Request>,
) -> ApiResult<public_rooms_filtered::Response> {
    let b = req.body;
    let (rooms, next, prev, total) =
        state.rooms.public_rooms(b.since.as_deref(), limit(b.limit), b.filter.generic_search_term.as_deref()).await?;
    let mut response = public_rooms_filtered::Response::new();
    response.chunk = chunk(rooms)?;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = ruma::UInt::try_from(total as u64).ok();
    Ok(response.into())
}

/// # `GET /_matrix/federation/v1/openid/userinfo` (no X-Matrix: the token is the proof)
async fn get_openid_userinfo(
    State(state): State<AppState>,
    req: Ruma<openid_userinfo::Request>,
) -> ApiResult<openid_userinfo::Response> {
    Ok(openid_userinfo::Response::new(state.accounts.openid_userinfo(&req.body.access_token).await?).into())
}
