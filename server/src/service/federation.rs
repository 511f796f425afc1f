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
mod third_party;
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
    signatures::PublicKeyMap,
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

    /// [`Self::call`] for a request our client asked for (a join): the other server's
    /// refusal reaches the client as it gave it (see [`passed_on`]).
    async fn call_for_client<R>(&self, destination: &ServerName, request: R) -> ServiceResult<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = SinglePath> + Send,
        R::Authentication: FederationAuth,
    {
        self.client.send(destination, request).await.map_err(|e| passed_on(destination, &e))
    }

    /// Parses and verifies a PDU of a room from another server.
    async fn verify_pdu(
        &self,
        raw: &RawJsonValue,
        rules: &RoomVersionRules,
        room: &RoomId,
    ) -> Result<IncomingPdu, IncomingError> {
        let parsed = incoming::parse(raw, rules, Some(room))?;
        let (query, ts) = signing_keys_needed(&parsed, rules)?;
        let keys = self.signing_keys(&query, ts).await?;
        incoming::verify(parsed, &keys, rules)
    }

    /// The servers' keys a PDU sent at `ts` needs; keys must have been valid when the event was
    /// sent (room versions 5 and later).
    async fn signing_keys(&self, query: &KeyQuery, ts: i64) -> Result<PublicKeyMap, IncomingError> {
        self.keys
            .public_keys(query, Some(ts))
            .await
            .map_err(|e| IncomingError::Signatures(format!("keys unavailable: {e}")))
    }

    /// Verifies many PDUs of a room, keeping those that pass, in their order.
    async fn verify_all(
        &self,
        raws: &[Box<RawJsonValue>],
        rules: &RoomVersionRules,
        room: &RoomId,
        origin: &ServerName,
    ) -> Vec<Received> {
        self.verify_each(raws, rules, room, origin)
            .await
            .into_iter()
            .filter_map(|v| v.map_err(|e| tracing::info!(%origin, room_id = %room, error = %e, "dropped a PDU")).ok())
            .collect()
    }

    /// Verifies many PDUs of a room: for each, in order, the verified PDU or why not. Parsing,
    /// hashing and signature checks are spread over the cores (a joined room's state and auth
    /// chain are thousands of events); the keys come from the cache between the two steps.
    async fn verify_each(
        &self,
        raws: &[Box<RawJsonValue>],
        rules: &RoomVersionRules,
        room: &RoomId,
        origin: &ServerName,
    ) -> Vec<Result<Received, IncomingError>> {
        let parsed = parse_each(raws.to_vec(), rules, room).await;
        self.verify_parsed(parsed, rules, origin).await
    }

    /// The second step of [`Self::verify_each`], for PDUs parsed by [`parse_each`].
    async fn verify_parsed(
        &self,
        parsed: Vec<Result<IncomingPdu, IncomingError>>,
        rules: &RoomVersionRules,
        origin: &ServerName,
    ) -> Vec<Result<Received, IncomingError>> {
        let mut ready = Vec::with_capacity(parsed.len());
        for result in parsed {
            let keyed = match result.and_then(|pdu| signing_keys_needed(&pdu, rules).map(|q| (pdu, q))) {
                Ok((pdu, (query, ts))) => self.signing_keys(&query, ts).await.map(|keys| (pdu, keys)),
                Err(e) => Err(e),
            };
            ready.push(keyed);
        }
        let (r, from) = (rules.clone(), origin.to_owned());
        on_cores(ready, move |keyed| {
            keyed.and_then(|(pdu, keys)| incoming::verify(pdu, &keys, &r)).map(|v| received(v, Some(&from)))
        })
        .await
    }
}

/// The first step of verifying PDUs of a room, on the cores: each parsed with its id computed,
/// or why it is not a PDU of the room.
async fn parse_each(
    raws: Vec<Box<RawJsonValue>>,
    rules: &RoomVersionRules,
    room: &RoomId,
) -> Vec<Result<IncomingPdu, IncomingError>> {
    let (r, owned_room) = (rules.clone(), room.to_owned());
    on_cores(raws, move |raw| incoming::parse(&raw, &r, Some(&owned_room))).await
}

/// The keys a parsed PDU's signatures need, and when it was sent.
fn signing_keys_needed(parsed: &IncomingPdu, rules: &RoomVersionRules) -> Result<(KeyQuery, i64), IncomingError> {
    let query: KeyQuery = incoming::required_keys(parsed, rules)?
        .into_iter()
        .map(|(server, ids)| {
            (server, ids.into_iter().filter_map(|id| OwnedServerSigningKeyId::try_from(id).ok()).collect())
        })
        .collect();
    Ok((query, i64::from(parsed.pdu.origin_server_ts.0)))
}

/// Applies `f` to every item on the blocking threads, a share of the items per core, and
/// returns the results in the items' order (one per item). Few items stay on the calling task.
async fn on_cores<T, R, F>(items: Vec<T>, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> R + Send + Sync + 'static,
{
    const ALONE: usize = 16;
    if items.len() <= ALONE {
        return items.into_iter().map(f).collect();
    }
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let share = items.len().div_ceil(cores);
    let f = Arc::new(f);
    let mut items = items.into_iter();
    let mut tasks = Vec::with_capacity(cores);
    loop {
        let chunk: Vec<T> = items.by_ref().take(share).collect();
        if chunk.is_empty() {
            break;
        }
        let f = f.clone();
        tasks.push(tokio::task::spawn_blocking(move || chunk.into_iter().map(|t| f(t)).collect::<Vec<R>>()));
    }
    let mut out = Vec::with_capacity(share * tasks.len());
    for task in tasks {
        match task.await {
            Ok(results) => out.extend(results),
            // A panic in a check is a bug: passed on as it would be without the threads.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// A verified PDU as the room engine accepts it.
fn received(v: IncomingPdu, origin: Option<&ServerName>) -> Received {
    let text = serde_json::to_string(&v.json).unwrap_or_default();
    Received { pdu: v.pdu, text, origin: origin.map(ToString::to_string) }
}

/// A refusal of a request made for our client (400, 403 or 404 with a Matrix error: the room
/// is not joinable, the user is not invited, a version the other server will not serve) passed
/// on with its status and `errcode` and the fields that come with it; other failures (its
/// authentication of us, its outages, codes about the client's session) as in [`remote_error`].
fn passed_on(destination: &ServerName, e: &ClientError) -> ServiceError {
    use ruma::api::error::ErrorKind as K;
    if let ClientError::Matrix(_, error) = e
        && matches!(error.status_code.as_u16(), 400 | 403 | 404)
        && let ruma::api::error::ErrorBody::Standard(body) = &error.body
        // Codes about the client's own session would make it log out or give up: not passed on.
        && !matches!(
            body.kind,
            K::UnknownToken(_) | K::MissingToken | K::Unauthorized | K::UserDeactivated | K::UserLocked | K::UserSuspended
        )
    {
        return ServiceError::RemoteRefusal {
            status: error.status_code,
            kind: body.kind.clone(),
            message: format!("{destination}: {}", body.message),
        };
    }
    remote_error(destination, e)
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
