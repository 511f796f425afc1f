//! Questions this server asks other servers on behalf of its users (which room an alias names,
//! what their public room directory lists), and how their failures read to the client.

use poststelle_federation::{ClientError, FederationClient};
use ruma::{
    OwnedRoomId, OwnedServerName, RoomAliasId, ServerName, UInt,
    api::{
        error::ErrorKind,
        federation::{
            directory::get_public_rooms_filtered::v1 as public_rooms,
            query::get_room_information::v1 as room_information,
        },
    },
    directory::{Filter, PublicRoomsChunk},
};

use super::{ServiceError, ServiceResult};

/// `GET /_matrix/federation/v1/query/directory` on the alias's server.
pub async fn room_alias(
    client: &FederationClient,
    alias: &RoomAliasId,
) -> ServiceResult<(OwnedRoomId, Vec<OwnedServerName>)> {
    let response = client
        .send(alias.server_name(), room_information::Request::new(alias.to_owned()))
        .await
        .map_err(|e| from_client_error(e, &format!("room alias {alias} not found")))?;
    Ok((response.room_id, response.servers))
}

/// A page of another server's public room directory: `(rooms, next, prev, total estimate)`.
pub type DirectoryPage = (Vec<PublicRoomsChunk>, Option<String>, Option<String>, Option<UInt>);

/// `POST /_matrix/federation/v1/publicRooms` on `server`.
pub async fn public_rooms(
    client: &FederationClient,
    server: &ServerName,
    since: Option<String>,
    limit: Option<UInt>,
    term: Option<String>,
) -> ServiceResult<DirectoryPage> {
    let mut request = public_rooms::Request::new();
    request.since = since;
    request.limit = limit;
    let mut filter = Filter::new();
    filter.generic_search_term = term;
    request.filter = filter;
    let answer = client
        .send(server, request)
        .await
        .map_err(|e| from_client_error(e, &format!("{server} has no public room directory")))?;
    Ok((answer.chunk, answer.next_batch, answer.prev_batch, answer.total_room_count_estimate))
}

/// A remote 404 is "not found" here too; a server we may not talk to is forbidden; every other
/// failure of the remote side is a bad gateway, never our own 500.
pub fn from_client_error(e: ClientError, not_found: &str) -> ServiceError {
    match &e {
        ClientError::NotAllowed(server) => ServiceError::Forbidden(format!("federation with {server} is not allowed")),
        ClientError::Matrix(..) if matches!(e.error_kind(), Some(ErrorKind::NotFound)) => {
            ServiceError::NotFound(not_found.to_owned())
        }
        _ => {
            tracing::info!(error = %e, "federation request failed");
            ServiceError::Upstream(e.to_string())
        }
    }
}
