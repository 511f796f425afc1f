//! The server-server API on the federation listener: the server's key document (with the keys it
//! replaced), its version, the notary endpoints, and the room directory query.

use axum::{Router, extract::State};
use ruma::{
    api::federation::{
        discovery::{
            get_remote_server_keys::v2 as notary_one, get_remote_server_keys_batch::v2 as notary_batch,
            get_server_keys::v2 as server_keys, get_server_version::v1 as version,
        },
        query::get_room_information::v1 as room_information,
    },
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

/// Most servers one notary query may name (each may cost a fetch).
const MAX_NOTARY_SERVERS: usize = 50;

mod media;
pub mod mls;
mod queries;
mod rooms;
mod third_party;

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    mls::routes(queries::routes(media::routes(third_party::routes(rooms::routes(r)))))
        .ruma_route::<server_keys::Request, _, _>(get_server_keys)
        .ruma_route::<version::Request, _, _>(get_version)
        .ruma_route::<notary_one::Request, _, _>(query_keys)
        .ruma_route::<notary_batch::Request, _, _>(query_keys_batch)
        .ruma_route::<room_information::Request, _, _>(get_room_information)
}

/// # `GET /_matrix/key/v2/server`
async fn get_server_keys(
    State(state): State<AppState>,
    _: Ruma<server_keys::Request>,
) -> ApiResult<server_keys::Response> {
    let document = state.server_keys.own_document().await?;
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

/// # `GET /_matrix/key/v2/query/{serverName}`
async fn query_keys(State(state): State<AppState>, req: Ruma<notary_one::Request>) -> ApiResult<notary_one::Response> {
    let minimum = i64::try_from(u64::from(req.body.minimum_valid_until_ts.0)).unwrap_or(i64::MAX);
    let keys = state.server_keys.notary_documents(&req.body.server_name, &[], minimum).await?;
    Ok(notary_one::Response::new(keys).into())
}

/// # `POST /_matrix/key/v2/query`
async fn query_keys_batch(
    State(state): State<AppState>,
    req: Ruma<notary_batch::Request>,
) -> ApiResult<notary_batch::Response> {
    if req.body.server_keys.len() > MAX_NOTARY_SERVERS {
        return Err(ServiceError::InvalidParam(format!("at most {MAX_NOTARY_SERVERS} servers per query")).into());
    }
    let mut documents = Vec::new();
    for (server, key_ids) in &req.body.server_keys {
        // The latest minimum any key asks for; without one, now.
        let minimum = key_ids
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|ts| i64::try_from(u64::from(ts.0)).unwrap_or(i64::MAX))
            .max()
            .unwrap_or_else(now_ms);
        let wanted: Vec<String> = key_ids.keys().map(ToString::to_string).collect();
        documents.extend(state.server_keys.notary_documents(server, &wanted, minimum).await?);
    }
    Ok(notary_batch::Response::new(documents).into())
}

/// # `GET /_matrix/federation/v1/query/directory`
async fn get_room_information(
    State(state): State<AppState>,
    req: Ruma<room_information::Request>,
) -> ApiResult<room_information::Response> {
    if req.body.room_alias.server_name() != state.server_name {
        return Err(ServiceError::NotFound(format!("{} is not an alias of this server", req.body.room_alias)).into());
    }
    tracing::debug!(origin = %req.identity, alias = %req.body.room_alias, "directory query");
    let (room_id, servers) = state.rooms.get_alias(&req.body.room_alias).await?;
    let servers = servers.into_iter().filter_map(|s| ruma::OwnedServerName::try_from(s).ok()).collect();
    Ok(room_information::Response::new(room_id, servers).into())
}
