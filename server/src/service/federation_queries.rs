//! Questions this server asks other servers on behalf of its users (so far: which room an alias
//! names), and how their failures read to the client.

use poststelle_federation::{ClientError, FederationClient};
use ruma::{
    OwnedRoomId, OwnedServerName, RoomAliasId,
    api::{error::ErrorKind, federation::query::get_room_information::v1 as room_information},
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
