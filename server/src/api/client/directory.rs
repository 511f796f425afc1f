//! Room aliases, the room directory, room summaries and the user directory.

use axum::extract::State;
use ruma::api::client::{
    alias::{create_alias::v3 as create_alias, delete_alias::v3 as delete_alias, get_alias::v3 as get_alias},
    directory::{
        get_public_rooms::v3 as public_rooms, get_public_rooms_filtered::v3 as public_rooms_filtered,
        get_room_visibility::v3 as get_visibility, set_room_visibility::v3 as set_visibility,
    },
    room::{Visibility, aliases::v3 as room_aliases, get_summary::v1 as summary},
    user_directory::search_users::v3 as search_users,
};
use serde_json::Value as JsonValue;

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::federation_queries,
    state::AppState,
};

fn parse<T: serde::de::DeserializeOwned>(value: JsonValue) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| crate::service::ServiceError::Internal(e.to_string()).into())
}

fn user(session: &crate::service::sessions::Session) -> Result<ruma::OwnedUserId, ApiError> {
    ruma::OwnedUserId::try_from(session.user_id.as_str()).map_err(|e| ApiError::bad_json(e.to_string()))
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
pub(super) async fn create_room_alias(
    State(state): State<AppState>,
    req: Ruma<create_alias::Request>,
) -> ApiResult<create_alias::Response> {
    state.rooms.create_alias(&req.identity.user_id, &req.body.room_alias, req.body.room_id.as_str()).await?;
    Ok(create_alias::Response::new().into())
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub(super) async fn get_room_alias(
    State(state): State<AppState>,
    req: Ruma<get_alias::Request>,
) -> ApiResult<get_alias::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != state.server_name {
        let (room_id, servers) =
            crate::service::federation_queries::room_alias(&state.federation_client, alias).await?;
        return Ok(get_alias::Response::new(room_id, servers).into());
    }
    let (room_id, servers) = state.rooms.get_alias(alias).await?;
    let servers = servers.into_iter().filter_map(|s| ruma::OwnedServerName::try_from(s).ok()).collect();
    Ok(get_alias::Response::new(room_id, servers).into())
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
pub(super) async fn delete_room_alias(
    State(state): State<AppState>,
    req: Ruma<delete_alias::Request>,
) -> ApiResult<delete_alias::Response> {
    state.rooms.delete_alias(&user(&req.identity)?, req.identity.is_admin, &req.body.room_alias).await?;
    Ok(delete_alias::Response::new().into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
pub(super) async fn get_room_aliases(
    State(state): State<AppState>,
    req: Ruma<room_aliases::Request>,
) -> ApiResult<room_aliases::Response> {
    let aliases = state.rooms.room_aliases(&req.identity.user_id, req.body.room_id.as_str()).await?;
    let aliases = aliases.into_iter().filter_map(|a| ruma::OwnedRoomAliasId::try_from(a).ok()).collect();
    Ok(room_aliases::Response::new(aliases).into())
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub(super) async fn get_room_visibility(
    State(state): State<AppState>,
    req: Ruma<get_visibility::Request>,
) -> ApiResult<get_visibility::Response> {
    let public = state.rooms.directory_visibility(req.body.room_id.as_str()).await?;
    Ok(get_visibility::Response::new(if public { Visibility::Public } else { Visibility::Private }).into())
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
pub(super) async fn set_room_visibility(
    State(state): State<AppState>,
    req: Ruma<set_visibility::Request>,
) -> ApiResult<set_visibility::Response> {
    let public = match req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(ApiError::invalid_param("visibility must be public or private")),
    };
    state
        .rooms
        .set_directory_visibility(&user(&req.identity)?, req.identity.is_admin, req.body.room_id.as_str(), public)
        .await?;
    Ok(set_visibility::Response::new().into())
}

fn limit(l: Option<ruma::UInt>) -> Option<usize> {
    l.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
}

/// # `GET /_matrix/client/v3/publicRooms`
pub(super) async fn get_public_rooms(
    State(state): State<AppState>,
    req: Ruma<public_rooms::Request>,
) -> ApiResult<public_rooms::Response> {
    if let Some(server) = req.body.server.as_ref().filter(|s| **s != state.server_name) {
        let b = req.body.clone();
        let (chunk, next, prev, total) =
            federation_queries::public_rooms(&state.federation_client, server, b.since, b.limit, None).await?;
        let mut response = public_rooms::Response::new(chunk);
        (response.next_batch, response.prev_batch, response.total_room_count_estimate) = (next, prev, total);
        return Ok(response.into());
    }
    let (chunk, next, prev, total) =
        state.rooms.public_rooms(req.body.since.as_deref(), limit(req.body.limit), None).await?;
    let mut response = public_rooms::Response::new(chunk.into_iter().map(parse).collect::<Result<_, _>>()?);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = ruma::UInt::try_from(total as u64).ok();
    Ok(response.into())
}

/// # `POST /_matrix/client/v3/publicRooms`
pub(super) async fn get_public_rooms_filtered(
    State(state): State<AppState>,
    req: Ruma<public_rooms_filtered::Request>,
) -> ApiResult<public_rooms_filtered::Response> {
    let b = req.body;
    if let Some(server) = b.server.as_ref().filter(|s| **s != state.server_name) {
        let term = b.filter.generic_search_term.clone();
        let (chunk, next, prev, total) =
            federation_queries::public_rooms(&state.federation_client, server, b.since, b.limit, term).await?;
        let mut response = public_rooms_filtered::Response::new();
        (response.chunk, response.next_batch, response.prev_batch) = (chunk, next, prev);
        response.total_room_count_estimate = total;
        return Ok(response.into());
    }
    let (chunk, next, prev, total) =
        state.rooms.public_rooms(b.since.as_deref(), limit(b.limit), b.filter.generic_search_term.as_deref()).await?;
    let mut response = public_rooms_filtered::Response::new();
    response.chunk = chunk.into_iter().map(parse).collect::<Result<_, _>>()?;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = ruma::UInt::try_from(total as u64).ok();
    Ok(response.into())
}

/// # `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`
pub(super) async fn get_room_summary(
    State(state): State<AppState>,
    req: Ruma<summary::Request>,
) -> ApiResult<summary::Response> {
    let viewer = req.identity.as_ref().map(|s| s.user_id.as_str());
    let (summary_json, membership) = state.rooms.summary_for(viewer, &req.body.room_id_or_alias).await?;
    let mut response = summary::Response::new(parse(summary_json)?);
    response.membership = membership.map(|m| ruma::events::room::member::MembershipState::from(m.as_str()));
    Ok(response.into())
}

/// # `POST /_matrix/client/v3/user_directory/search`
pub(super) async fn search_user_directory(
    State(state): State<AppState>,
    req: Ruma<search_users::Request>,
) -> ApiResult<search_users::Response> {
    let max = usize::try_from(u64::from(req.body.limit)).unwrap_or(usize::MAX);
    let (found, limited) = state.rooms.search_users(&req.identity.user_id, &req.body.search_term, max).await?;
    let results = found
        .into_iter()
        .filter_map(|(user_id, displayname, avatar)| {
            let mut u = search_users::User::new(ruma::OwnedUserId::try_from(user_id).ok()?);
            u.display_name = displayname;
            u.avatar_url = avatar.map(Into::into);
            Some(u)
        })
        .collect();
    Ok(search_users::Response::new(results, limited).into())
}
