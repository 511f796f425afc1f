//! The room engine for local users: sending messages and state, redactions, room creation,
//! membership changes, and reading rooms with history visibility applied.

mod backfilled;
pub mod client_format;
mod create;
mod directory;
pub mod guests;
mod membership;
pub mod mls;
pub mod persist;
pub mod power;
pub mod read;
pub mod relations;
mod remote;
mod remote_membership;
mod remote_run;
pub use remote_run::OpenedRun;
mod replacement;
mod upgrade;
pub mod visibility;

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, Weak},
};

use poststelle_federation::{ProtoEvent, SigningKey};
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId};
use serde_json::{Map, Value as JsonValue};

use self::persist::CachedRoom;
pub use self::{
    create::CreateRoom,
    membership::MembershipChange,
    persist::{RoomCtx, Txn},
    remote::{Accepted, Received, StateBefore, StateIds, auth_and_prev_events, with_implied_create},
};
use super::{
    ServiceError, ServiceResult,
    account_data::AccountDataService,
    notifier::{Change, Notifier},
};
use crate::storage::Storage;

/// The room versions this server creates and joins.
pub const SUPPORTED_ROOM_VERSIONS: &[&str] = &["10", "11", "12"];

/// In-process lock stripes: sends to one room queue here before they queue on the database's
/// advisory lock, so a busy room does not tie up database connections.
const LOCK_STRIPES: usize = 256;

/// Bound of the room cache: state entries and parsed events over all cached rooms.
const ROOM_CACHE_WEIGHT: usize = 200_000;
/// Rooms with more state than this are not cached; their state is read per transaction.
const ROOM_CACHE_MAX_ROOM: usize = 20_000;

/// What each room's last write transaction of one kind in this process left behind, bounded
/// by weight (entries in it); taken out under the room's lock and put back after the commit.
#[derive(Debug)]
struct RoomCache<T> {
    rooms: BTreeMap<String, T>,
    weight: usize,
}

impl<T> Default for RoomCache<T> {
    fn default() -> Self {
        Self { rooms: BTreeMap::new(), weight: 0 }
    }
}

/// Roughly how many entries a cached value holds, for bounding a [`RoomCache`].
trait Weighed {
    fn weight(&self) -> usize;
}

impl<T: Weighed> RoomCache<T> {
    fn take(cache: &Mutex<Self>, room_id: &str) -> Option<T> {
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        let room = cache.rooms.remove(room_id)?;
        cache.weight -= room.weight();
        Some(room)
    }

    /// Keeps `room`, evicting others to stay bounded; a room above the bound alone is not kept.
    fn put(cache: &Mutex<Self>, room_id: &str, room: T) {
        let weight = room.weight();
        if weight > ROOM_CACHE_MAX_ROOM {
            return;
        }
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = cache.rooms.remove(room_id) {
            cache.weight -= old.weight();
        }
        while cache.weight + weight > ROOM_CACHE_WEIGHT {
            let Some(victim) = cache.rooms.keys().next().cloned() else { break };
            if let Some(old) = cache.rooms.remove(&victim) {
                cache.weight -= old.weight();
            }
        }
        cache.weight += weight;
        cache.rooms.insert(room_id.to_owned(), room);
    }
}

/// A send waiting for its room's writer, and where its outcome goes.
struct QueuedSend {
    event: SendEvent,
    reply: tokio::sync::oneshot::Sender<ServiceResult<OwnedEventId>>,
}

pub struct RoomService {
    storage: Storage,
    key: Arc<SigningKey>,
    server_name: OwnedServerName,
    notifier: Arc<Notifier>,
    /// Users' tags and push rules, which follow a room to its replacement.
    account_data: Arc<AccountDataService>,
    default_version: RoomVersionId,
    /// The server's key as the external sender of the MLS groups it orders.
    mls_signer: Arc<poststelle_mls::ds::ServerSigner>,
    /// The MLS groups this process ordered last, kept while they are the stored state.
    mls_groups: mls::GroupCache,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Room versions never change: known ones are kept here.
    versions: std::sync::RwLock<BTreeMap<String, RoomVersionId>>,
    room_cache: Mutex<RoomCache<CachedRoom>>,
    /// What each room's last acceptance of received events loaded (see [`remote::Loaded`]).
    received_cache: Mutex<RoomCache<remote::Loaded>>,
    /// Sends waiting for their room's lock. Whoever takes a room's lock next persists all of the
    /// room's waiting sends in one transaction: concurrent senders share one commit.
    queued_sends: Mutex<BTreeMap<String, Vec<QueuedSend>>>,
    /// This service, for the detached tasks that persist queued sends.
    me: Weak<Self>,
}

impl std::fmt::Debug for RoomService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomService").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// An event a client asks to send.
#[derive(Debug)]
pub struct SendEvent {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Map<String, JsonValue>,
    pub redacts: Option<OwnedEventId>,
    pub txn: Option<Txn>,
    /// The sending device (from the access token), where the endpoint has one.
    pub sender_device: Option<String>,
}

impl RoomService {
    pub fn new(
        storage: Storage,
        key: Arc<SigningKey>,
        server_name: OwnedServerName,
        notifier: Arc<Notifier>,
        account_data: Arc<AccountDataService>,
        default_version: &str,
        mls_signer: Arc<poststelle_mls::ds::ServerSigner>,
    ) -> ServiceResult<Arc<Self>> {
        let default_version = RoomVersionId::try_from(default_version)
            .map_err(|_| ServiceError::UnsupportedRoomVersion(default_version.to_owned()))?;
        Ok(Arc::new_cyclic(|me| Self {
            storage,
            key,
            server_name,
            notifier,
            account_data,
            default_version,
            mls_signer,
            mls_groups: mls::GroupCache::default(),
            locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            versions: std::sync::RwLock::default(),
            room_cache: Mutex::default(),
            received_cache: Mutex::default(),
            queued_sends: Mutex::default(),
            me: me.clone(),
        }))
    }

    /// Takes a room's cached state out of the cache (the caller holds the room's lock).
    fn take_cached_room(&self, room_id: &str) -> Option<CachedRoom> {
        RoomCache::take(&self.room_cache, room_id)
    }

    /// Caches a room's state as a committed transaction left it, evicting others to stay bounded.
    fn put_cached_room(&self, room_id: &str, room: CachedRoom) {
        RoomCache::put(&self.room_cache, room_id, room);
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    fn stripe(&self, room_id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = DefaultHasher::new();
        room_id.hash(&mut h);
        &self.locks[usize::try_from(h.finish()).unwrap_or_default() % LOCK_STRIPES]
    }

    /// Runs `f` on the room under its locks and commits what it appended.
    async fn write<T>(&self, room_id: &str, f: impl AsyncFnOnce(&mut RoomCtx) -> ServiceResult<T>) -> ServiceResult<T> {
        let _guard = self.stripe(room_id).lock().await;
        let mut ctx = RoomCtx::open(self, room_id).await?;
        let out = f(&mut ctx).await?;
        ctx.commit(self).await?;
        Ok(out)
    }

    /// Sends a message or state event for a local user; idempotent per device transaction.
    pub async fn send(&self, ev: SendEvent) -> ServiceResult<OwnedEventId> {
        validate_client_event(&ev)?;
        if ev.kind == "m.room.member" {
            if let Some(t) = &ev.txn
                && let Some(id) = self
                    .storage
                    .rooms
                    .txn_event(ev.sender.as_str(), &t.device_id, &t.key(ev.room_id.as_str(), &ev.kind))
                    .await?
            {
                return OwnedEventId::try_from(id).map_err(|e| ServiceError::Internal(e.to_string()));
            }
            return self.send_member_event(ev).await;
        }
        let revokes_guests = ev.kind == guests::GUEST_ACCESS && ev.state_key.as_deref() == Some("");
        let guest_room = ev.room_id.clone();
        let me = self.me.upgrade().ok_or_else(|| ServiceError::Internal("the room service has stopped".into()))?;
        let room_id = ev.room_id.to_string();
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.queued_sends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(room_id.clone())
            .or_default()
            .push(QueuedSend { event: ev, reply });
        // Detached: a client hanging up must not abort a transaction that carries other
        // clients' events.
        tokio::spawn(async move { me.persist_queued_sends(&room_id).await });
        let event_id = outcome.await.unwrap_or_else(|_| Err(ServiceError::Internal("the send was dropped".into())))?;
        if revokes_guests {
            self.remove_guests_if_revoked(&guest_room).await?;
        }
        Ok(event_id)
    }

    /// Takes the room's lock and persists every send queued for the room by then, in one
    /// transaction; nothing if an earlier holder of the lock took this task's send along.
    async fn persist_queued_sends(&self, room_id: &str) {
        let _guard = self.stripe(room_id).lock().await;
        let queued = self.queued_sends.lock().unwrap_or_else(|e| e.into_inner()).remove(room_id).unwrap_or_default();
        if queued.is_empty() {
            return;
        }
        let (events, replies): (Vec<SendEvent>, Vec<_>) = queued.into_iter().map(|q| (q.event, q.reply)).unzip();
        tracing::trace!(room_id, events = events.len(), "persisting queued sends");
        match self.persist_sends(room_id, &events).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                let mut replies = replies.into_iter();
                let first = replies.next();
                for reply in replies {
                    let _ = reply.send(Err(shared_failure(&e)));
                }
                if let Some(first) = first {
                    let _ = first.send(Err(e));
                }
            }
        }
    }

    /// Appends each event (those the rules refuse get their own error) and commits the rest
    /// together. `Err` when the transaction as a whole failed.
    async fn persist_sends(
        &self,
        room_id: &str,
        events: &[SendEvent],
    ) -> ServiceResult<Vec<ServiceResult<OwnedEventId>>> {
        let keys: Vec<(String, String, String)> = events
            .iter()
            .filter_map(|ev| {
                ev.txn.as_ref().map(|t| (ev.sender.to_string(), t.device_id.clone(), t.key(room_id, &ev.kind)))
            })
            .collect();
        let keys: Vec<(&str, &str, &str)> = keys.iter().map(|(u, d, t)| (u.as_str(), d.as_str(), t.as_str())).collect();
        let mut ctx = RoomCtx::open_for_txns(self, room_id, &keys).await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for ev in events {
            match self.append_send(&mut ctx, ev).await {
                // The database refused something: the transaction is lost for every event in it.
                Err(e @ ServiceError::Storage(_)) => return Err(e),
                outcome => outcomes.push(outcome),
            }
        }
        ctx.commit(self).await?;
        Ok(outcomes)
    }

    /// One client event in a send transaction: the earlier event for a repeated transaction id,
    /// the current one for a state event that changes nothing, else a new event.
    async fn append_send(&self, ctx: &mut RoomCtx, ev: &SendEvent) -> ServiceResult<OwnedEventId> {
        if let Some(t) = &ev.txn
            && let Some(id) = ctx.txn_event(ev.sender.as_str(), t, &t.key(ev.room_id.as_str(), &ev.kind))
        {
            return Ok(id);
        }
        require_joined(ctx, ev.sender.as_str()).await?;
        match mls::room_algorithm(ctx).await? {
            Some(algorithm) => {
                if let Some(event_id) = self.mls_send(ctx, ev, &algorithm).await? {
                    return Ok(event_id);
                }
            }
            None if ev.kind == mls::COMMIT_TYPE => {
                return Err(ServiceError::Forbidden("not an MLS room".into()));
            }
            None if ev.kind == "m.room.encryption"
                && ev
                    .content
                    .get("algorithm")
                    .and_then(JsonValue::as_str)
                    .is_some_and(poststelle_mls::Suite::is_mls_algorithm) =>
            {
                return Err(ServiceError::Forbidden(
                    "MLS rooms are created as such, with m.room.encryption in initial_state".into(),
                ));
            }
            None => {}
        }
        if let Some(key) = &ev.state_key
            && let Some(existing) = ctx.same_state(&ev.sender, &ev.kind, key, &ev.content).await?
        {
            return Ok(existing);
        }
        if let Some(target) = &ev.redacts {
            self.check_redaction(ctx, ev.sender.as_ref(), target).await?;
        }
        if ev.kind == "m.room.canonical_alias" {
            self.check_canonical_alias(ctx.room_id(), &ev.content).await?;
        }
        let proto = ProtoEvent {
            room_id: Some(ev.room_id.clone()),
            sender: ev.sender.clone(),
            kind: ev.kind.clone(),
            state_key: ev.state_key.clone(),
            content: ev.content.clone(),
            redacts: ev.redacts.clone(),
        };
        Ok(ctx.append(self, proto, ev.txn.clone()).await?.event_id)
    }

    /// A member event sent as state goes through the membership rules (profiles, restricted
    /// joins) like the dedicated endpoints.
    async fn send_member_event(&self, ev: SendEvent) -> ServiceResult<OwnedEventId> {
        let target = ev
            .state_key
            .as_deref()
            .and_then(|k| ruma::UserId::parse(k).ok())
            .ok_or_else(|| ServiceError::BadJson("the state key of a member event must be a user id".into()))?;
        let mut extra = ev.content;
        let membership = match extra.remove("membership") {
            Some(JsonValue::String(m)) => m,
            _ => return Err(ServiceError::BadJson("membership is missing or not a string".into())),
        };
        let reason = match extra.remove("reason") {
            Some(JsonValue::String(r)) => Some(r),
            None => None,
            Some(_) => return Err(ServiceError::BadJson("reason must be a string".into())),
        };
        self.change_membership(MembershipChange {
            room_id: ev.room_id,
            sender: ev.sender,
            target,
            membership,
            reason,
            extra,
        })
        .await
    }

    /// Copies a local user's display name and avatar into member event content, unless the
    /// content already sets them.
    async fn add_profile(&self, user_id: &str, content: &mut Map<String, JsonValue>) -> ServiceResult<()> {
        if let Some(user) = self.storage.users.get(user_id).await? {
            if let Some(d) = user.displayname {
                content.entry("displayname").or_insert(d.into());
            }
            if let Some(a) = user.avatar_url {
                content.entry("avatar_url").or_insert(a.into());
            }
        }
        Ok(())
    }

    /// Redacting someone else's event needs the redact power level (the auth rules of room
    /// versions ≥ 3 leave this check to the server).
    async fn check_redaction(
        &self,
        ctx: &mut RoomCtx,
        sender: &ruma::UserId,
        target: &ruma::EventId,
    ) -> ServiceResult<()> {
        let Some(original) = self.storage.rooms.event(target.as_str()).await? else {
            // Redactions of unknown events are allowed and apply if the event arrives later.
            return Ok(());
        };
        if original.room_id != ctx.room_id() {
            return Err(ServiceError::InvalidParam("the event belongs to another room".into()));
        }
        if original.sender != sender.as_str() && !ctx.power_levels().await?.can_redact_others(sender) {
            return Err(ServiceError::Forbidden("you may not redact other users' events".into()));
        }
        Ok(())
    }

    /// `m.room.canonical_alias` may only name aliases that point at this room (local ones are
    /// checked; remote ones wait for federation).
    async fn check_canonical_alias(&self, room_id: &str, content: &Map<String, JsonValue>) -> ServiceResult<()> {
        let mut aliases: Vec<&JsonValue> = content.get("alias").into_iter().collect();
        match content.get("alt_aliases") {
            Some(JsonValue::Array(alt)) => aliases.extend(alt),
            Some(_) => return Err(ServiceError::InvalidParam("alt_aliases must be a list".into())),
            None => {}
        }
        for alias in aliases {
            let Some(alias) = alias.as_str() else {
                return Err(ServiceError::InvalidParam("aliases must be strings".into()));
            };
            let parsed = ruma::RoomAliasId::parse(alias).map_err(|e| ServiceError::InvalidParam(e.to_string()))?;
            if parsed.server_name() == self.server_name {
                match self.storage.rooms.alias(alias).await? {
                    Some((r, _)) if r == room_id => {}
                    _ => return Err(ServiceError::BadAlias(format!("{alias} does not point to this room"))),
                }
            }
        }
        Ok(())
    }
}

/// The error each event of a failed send transaction gets.
/// What a write of received events changed: our own events among them (come back from
/// another server) are for the federation sender as local ones are.
fn written_change(w: &crate::storage::room_writer::RoomWriter) -> Change {
    if w.wrote_own_events() { Change::LocalEvents } else { Change::RemoteEvents }
}

fn shared_failure(e: &ServiceError) -> ServiceError {
    match e {
        ServiceError::NotFound(m) => ServiceError::NotFound(m.clone()),
        ServiceError::Forbidden(m) => ServiceError::Forbidden(m.clone()),
        other => ServiceError::Internal(other.to_string()),
    }
}

/// The sender must be joined to send anything but their own membership.
async fn require_joined(ctx: &mut RoomCtx, user_id: &str) -> ServiceResult<()> {
    match ctx.membership(user_id).await?.as_deref() {
        Some("join") => Ok(()),
        _ => Err(ServiceError::Forbidden(format!("{user_id} is not joined to this room"))),
    }
}

/// Checks a client's event before it reaches the auth rules.
fn validate_client_event(ev: &SendEvent) -> ServiceResult<()> {
    if ev.kind.len() > 255 {
        return Err(ServiceError::BadJson("event type is too long".into()));
    }
    if ev.state_key.as_ref().is_some_and(|k| k.len() > 255) {
        return Err(ServiceError::BadJson("state key is too long".into()));
    }
    if ev.kind == "m.room.create" {
        return Err(ServiceError::Forbidden("the create event cannot be sent again".into()));
    }
    Ok(())
}
