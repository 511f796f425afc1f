//! Rooms shared with other servers: receiving their transactions, joining rooms through them,
//! answering their joins, and sending our events to them (see [`sender`]).
//!
//! The room engine ([`RoomService`]) decides what enters a room; this service does the network
//! side around it: fetching what a received event depends on, checking signatures with the
//! origin's keys, and turning other servers' answers into events the engine can accept.

mod backfill;
mod invite;
mod join;
mod mls;
mod receive;
pub mod sender;
mod visible;

pub use self::{join::StateAndAuth, receive::PduResults};

use std::sync::Arc;

use poststelle_federation::{
    SigningKey,
    client::{ClientError, FederationAuth, FederationClient},
    incoming::{self, IncomingError, IncomingPdu},
};
use ruma::{
    OwnedServerName, OwnedServerSigningKeyId, RoomId, ServerName,
    api::{OutgoingRequest, path_builder::SinglePath},
    room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue as RawJsonValue;

use super::{
    ServiceError, ServiceResult,
    e2ee::E2eeService,
    ephemeral::EphemeralService,
    mls::MlsService,
    presence::PresenceService,
    rooms::{Received, RoomService},
    server_keys::{KeyQuery, ServerKeyService},
};
use crate::storage::Storage;

#[derive(Debug)]
pub struct FederationService {
    storage: Storage,
    rooms: Arc<RoomService>,
    server_name: OwnedServerName,
    key: Arc<SigningKey>,
    client: Arc<FederationClient>,
    keys: Arc<ServerKeyService>,
    ephemeral: Arc<EphemeralService>,
    e2ee: Arc<E2eeService>,
    presence: Arc<PresenceService>,
    mls: Arc<MlsService>,
}

impl FederationService {
    #[expect(clippy::too_many_arguments, reason = "each is a distinct dependency, built once in AppState")]
    pub fn new(
        storage: Storage,
        rooms: Arc<RoomService>,
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        client: Arc<FederationClient>,
        keys: Arc<ServerKeyService>,
        ephemeral: Arc<EphemeralService>,
        e2ee: Arc<E2eeService>,
        presence: Arc<PresenceService>,
        mls: Arc<MlsService>,
    ) -> Arc<Self> {
        Arc::new(Self { storage, rooms, server_name, key, client, keys, ephemeral, e2ee, presence, mls })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// A request to another server, its failure as a service error.
    async fn call<R>(&self, destination: &ServerName, request: R) -> ServiceResult<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = SinglePath> + Send,
        R::Authentication: FederationAuth,
    {
        self.client.send(destination, request).await.map_err(|e| remote_error(destination, &e))
    }

    /// Parses and verifies a PDU of a room from another server.
    async fn verify_pdu(
        &self,
        raw: &RawJsonValue,
        rules: &RoomVersionRules,
        room: &RoomId,
    ) -> Result<IncomingPdu, IncomingError> {
        let parsed = incoming::parse(raw, rules, Some(room))?;
        let needed = incoming::required_keys(&parsed, rules)?;
        let query: KeyQuery = needed
            .into_iter()
            .map(|(server, ids)| {
                (server, ids.into_iter().filter_map(|id| OwnedServerSigningKeyId::try_from(id).ok()).collect())
            })
            .collect();
        // Keys must have been valid when the event was sent (room versions 5 and later).
        let ts = i64::from(parsed.pdu.origin_server_ts.0);
        let keys = self
            .keys
            .public_keys(&query, Some(ts))
            .await
            .map_err(|e| IncomingError::Signatures(format!("keys unavailable: {e}")))?;
        incoming::verify(parsed, &keys, rules)
    }

    /// Verifies many PDUs of a room, keeping those that pass.
    async fn verify_all(
        &self,
        raws: &[Box<RawJsonValue>],
        rules: &RoomVersionRules,
        room: &RoomId,
        origin: &ServerName,
    ) -> Vec<Received> {
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            match self.verify_pdu(raw, rules, room).await {
                Ok(v) => out.push(received(v, Some(origin))),
                Err(e) => tracing::info!(%origin, room_id = %room, error = %e, "dropped a PDU"),
            }
        }
        out
    }
}

/// A verified PDU as the room engine accepts it.
fn received(v: IncomingPdu, origin: Option<&ServerName>) -> Received {
    let text = serde_json::to_string(&v.json).unwrap_or_default();
    Received { pdu: v.pdu, text, origin: origin.map(ToString::to_string) }
}

/// How another server's failure reaches our client: its Matrix error where it gave one, else
/// a gateway error naming the server.
fn remote_error(destination: &ServerName, e: &ClientError) -> ServiceError {
    if let ClientError::NotAllowed(_) = e {
        return ServiceError::Forbidden(format!("this server does not federate with {destination}"));
    }
    match e.status().map(|s| s.as_u16()) {
        Some(403) => ServiceError::Forbidden(format!("{destination}: {e}")),
        Some(404) => ServiceError::NotFound(format!("{destination}: {e}")),
        Some(400) => ServiceError::BadJson(format!("{destination}: {e}")),
        _ => ServiceError::Upstream(format!("{destination}: {e}")),
    }
}
