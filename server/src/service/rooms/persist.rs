//! Persisting local events: under the room's lock, build each event on the current forward
//! extremities, select its auth events from the current state, sign it, authorise it against the
//! spec's rules, lay it over the state snapshot chain, and write everything with stream positions
//! in one transaction.

use std::collections::BTreeMap;

use poststelle_federation::{
    BuildError, Pdu, ProtoEvent, auth,
    builder::{Placement, build_event},
};
use ruma::{OwnedEventId, RoomVersionId, events::StateEventType, room_version_rules::RoomVersionRules, serde::Raw};
use serde_json::Value as JsonValue;

use super::{RoomService, power::PowerLevels};
use crate::{
    service::{ServiceError, ServiceResult, notifier::Change},
    storage::{
        now_ms,
        room_writer::{MAX_SNAPSHOT_CHAIN, NewEvent, RoomWriter, StreamSlot},
    },
};

/// A client's transaction, for idempotent sends.
#[derive(Clone, Debug)]
pub struct Txn {
    pub device_id: String,
    pub txn_id: String,
}

impl Txn {
    /// What idempotency is tracked under. A transaction id is scoped to the device and the
    /// endpoint, and the room is part of the endpoint: sending into two rooms, or sending and
    /// redacting, are different requests even with the same transaction id.
    pub fn key(&self, room_id: &str, event_type: &str) -> String {
        let endpoint = if event_type == "m.room.redaction" { "redact" } else { "send" };
        format!("{endpoint} {room_id} {}", self.txn_id)
    }
}

/// What an event persisted in this transaction will write at commit.
#[derive(Debug)]
struct Pending {
    pdu: Pdu,
    text: String,
    state_before: i64,
    state_after: i64,
    replaces_state: Option<String>,
    relates_to: Option<(String, Option<String>)>,
    txn: Option<Txn>,
}

/// A room's state as this process's last write transaction left it. The next transaction on
/// the room reuses it when the head it reads under the room's lock still matches, i.e. nobody
/// (no other process) wrote to the room since; that saves reading the state and auth events.
#[derive(Debug)]
pub(super) struct CachedRoom {
    snapshot: (i64, i32),
    extremities: Vec<String>,
    state: BTreeMap<(String, String), String>,
    /// Parsed current-state events that transactions needed (auth events, mostly).
    pdus: BTreeMap<OwnedEventId, Pdu>,
}

impl super::Weighed for CachedRoom {
    fn weight(&self) -> usize {
        self.state.len() + self.pdus.len()
    }
}

/// `(user, device, transaction key)`: what idempotency is tracked under.
type TxnKey = (String, String, String);

/// The room as a write transaction sees and changes it.
#[derive(Debug)]
pub struct RoomCtx {
    pub writer: RoomWriter,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// Current state: `(type, state_key)` → event id.
    pub state: BTreeMap<(String, String), String>,
    cache: BTreeMap<OwnedEventId, Pdu>,
    snapshot: Option<(i64, i32)>,
    prev_events: Vec<OwnedEventId>,
    depth: u64,
    pending: Vec<Pending>,
    /// The forward extremities the transaction started from (all of them).
    extremities_at_open: Vec<String>,
    /// Client transactions looked up at the start ([`Self::open_for_txns`]) that produced an event.
    known_txns: BTreeMap<TxnKey, OwnedEventId>,
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// A stored PDU, parsed.
pub fn parse_stored(id: &str, text: &str) -> ServiceResult<Pdu> {
    parse_pdu(id, text)
}

pub(super) fn parse_pdu(id: &str, text: &str) -> ServiceResult<Pdu> {
    let obj: ruma::CanonicalJsonObject = serde_json::from_str(text).map_err(internal)?;
    Pdu::from_canonical(OwnedEventId::try_from(id).map_err(internal)?, &obj).map_err(internal)
}

impl RoomCtx {
    /// Opens a write transaction on an existing room; `NotFound` if the room is unknown.
    pub async fn open(service: &RoomService, room_id: &str) -> ServiceResult<Self> {
        Self::open_for_txns(service, room_id, &[]).await
    }

    /// [`Self::open`], also looking up which of these client transactions `(user, device,
    /// transaction key)` already produced an event (see [`Self::txn_event`]).
    pub async fn open_for_txns(
        service: &RoomService,
        room_id: &str,
        txns: &[(&str, &str, &str)],
    ) -> ServiceResult<Self> {
        let mut writer = RoomWriter::begin(&service.storage.pool, room_id).await?;
        let head = writer.head(txns).await?.ok_or_else(|| ServiceError::NotFound("unknown room".into()))?;
        let mut known_txns = BTreeMap::new();
        for (i, event_id) in head.known_txns {
            let Some((user, device, key)) = txns.get(i) else { continue };
            let id = OwnedEventId::try_from(event_id).map_err(internal)?;
            known_txns.insert(((*user).to_owned(), (*device).to_owned(), (*key).to_owned()), id);
        }
        let version = RoomVersionId::try_from(head.room_version.as_str()).map_err(internal)?;
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        let prev_events: Vec<OwnedEventId> = head
            .forward_extremities
            .iter()
            .take(20)
            .map(|id| OwnedEventId::try_from(id.as_str()).map_err(internal))
            .collect::<ServiceResult<_>>()?;
        let snapshot = (head.snapshot_id, head.snapshot_depth);
        let cached = service
            .take_cached_room(room_id)
            .filter(|c| c.snapshot == snapshot && c.extremities == head.forward_extremities);
        let (state, cache) = match cached {
            Some(c) => (c.state, c.pdus),
            None => (writer.current_state().await?.into_iter().map(|(t, k, e)| ((t, k), e)).collect(), BTreeMap::new()),
        };
        Ok(Self {
            writer,
            version,
            rules,
            state,
            cache,
            snapshot: Some(snapshot),
            prev_events,
            depth: u64::try_from(head.max_depth).unwrap_or(0),
            pending: Vec::new(),
            extremities_at_open: head.forward_extremities,
            known_txns,
        })
    }

    /// Opens a write transaction on a room that is being created.
    pub async fn create(
        service: &RoomService,
        room_id: &str,
        version: RoomVersionId,
        creator: &str,
    ) -> ServiceResult<Self> {
        let mut writer = RoomWriter::begin(&service.storage.pool, room_id).await?;
        writer.insert_room(version.as_str(), creator, now_ms()).await.map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => ServiceError::Internal("room id collision".into()),
            other => other.into(),
        })?;
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        Ok(Self {
            writer,
            version,
            rules,
            state: BTreeMap::new(),
            cache: BTreeMap::new(),
            snapshot: None,
            prev_events: Vec::new(),
            depth: 0,
            pending: Vec::new(),
            extremities_at_open: Vec::new(),
            known_txns: BTreeMap::new(),
        })
    }

    pub fn room_id(&self) -> &str {
        self.writer.room_id()
    }

    /// The event an earlier request with this transaction produced: committed before (among the
    /// transactions given to [`Self::open_for_txns`]) or appended earlier in this transaction.
    pub fn txn_event(&self, sender: &str, txn: &Txn, key: &str) -> Option<OwnedEventId> {
        let known = self.known_txns.get(&(sender.to_owned(), txn.device_id.clone(), key.to_owned()));
        known.cloned().or_else(|| {
            self.pending.iter().find_map(|p| {
                let t = p.txn.as_ref()?;
                (p.pdu.sender == sender
                    && t.device_id == txn.device_id
                    && t.key(self.room_id(), p.pdu.kind.to_string().as_str()) == key)
                    .then(|| p.pdu.event_id.clone())
            })
        })
    }

    /// A current state event's PDU.
    pub async fn state_pdu(&mut self, event_type: &str, state_key: &str) -> ServiceResult<Option<Pdu>> {
        let Some(id) = self.state.get(&(event_type.to_owned(), state_key.to_owned())).cloned() else {
            return Ok(None);
        };
        self.load(std::slice::from_ref(&id)).await?;
        Ok(self.cache.get(id.as_str()).cloned())
    }

    /// The content of a current state event.
    pub async fn state_content(&mut self, event_type: &str, state_key: &str) -> ServiceResult<Option<JsonValue>> {
        Ok(self.state_pdu(event_type, state_key).await?.and_then(|p| serde_json::from_str(p.content.get()).ok()))
    }

    /// The current state event that `sender` would repeat by sending `content` again, if any:
    /// setting what is already set is no new event (a retried request, a second join).
    pub async fn same_state(
        &mut self,
        sender: &ruma::UserId,
        event_type: &str,
        state_key: &str,
        content: &serde_json::Map<String, JsonValue>,
    ) -> ServiceResult<Option<OwnedEventId>> {
        let Some(pdu) = self.state_pdu(event_type, state_key).await? else { return Ok(None) };
        let current = serde_json::from_str::<serde_json::Map<String, JsonValue>>(pdu.content.get()).ok();
        Ok((pdu.sender == sender && current.as_ref() == Some(content)).then_some(pdu.event_id))
    }

    /// From room version 12 on, creators have infinite power and may not be listed in the power
    /// levels. The auth rules reject such an event; a client sending one gets told its request
    /// is malformed (400) rather than forbidden.
    async fn check_creators_unlisted(&mut self, content: &serde_json::Map<String, JsonValue>) -> ServiceResult<()> {
        if !self.rules.authorization.explicitly_privilege_room_creators {
            return Ok(());
        }
        let Some(users) = content.get("users").and_then(JsonValue::as_object) else { return Ok(()) };
        let create = self.state_pdu("m.room.create", "").await?;
        match super::power::creators(&self.rules, create.as_ref()).iter().find(|c| users.contains_key(c.as_str())) {
            Some(creator) => {
                Err(ServiceError::BadJson(format!("{creator} is a creator of this room and cannot be in `users`")))
            }
            None => Ok(()),
        }
    }

    /// The membership of `user_id` in the current state.
    /// The sender of the room's create event.
    pub async fn creator(&mut self) -> ServiceResult<Option<String>> {
        Ok(self.state_pdu("m.room.create", "").await?.map(|pdu| pdu.sender.to_string()))
    }

    pub async fn membership(&mut self, user_id: &str) -> ServiceResult<Option<String>> {
        Ok(self
            .state_content("m.room.member", user_id)
            .await?
            .and_then(|c| c.get("membership").and_then(JsonValue::as_str).map(str::to_owned)))
    }

    /// The room's power levels as the current state defines them.
    pub async fn power_levels(&mut self) -> ServiceResult<PowerLevels> {
        let create = self.state_pdu("m.room.create", "").await?;
        let content = self.state_content("m.room.power_levels", "").await?;
        Ok(PowerLevels::new(&self.rules, create.as_ref(), content))
    }

    async fn load(&mut self, ids: &[String]) -> ServiceResult<()> {
        let missing: Vec<String> = ids.iter().filter(|id| !self.cache.contains_key(id.as_str())).cloned().collect();
        if missing.is_empty() {
            return Ok(());
        }
        for (id, text) in self.writer.pdus(&missing).await? {
            let pdu = parse_pdu(&id, &text)?;
            self.cache.insert(pdu.event_id.clone(), pdu);
        }
        Ok(())
    }

    /// Builds, signs and authorises one event on top of everything appended so far.
    pub async fn append(&mut self, service: &RoomService, proto: ProtoEvent, txn: Option<Txn>) -> ServiceResult<Pdu> {
        self.append_at(service, proto, txn, None).await
    }

    /// [`Self::append`] with a fixed `origin_server_ts` (a v12 create event whose id, and so the
    /// room id, was computed beforehand).
    pub async fn append_at(
        &mut self,
        service: &RoomService,
        proto: ProtoEvent,
        txn: Option<Txn>,
        origin_server_ts: Option<u64>,
    ) -> ServiceResult<Pdu> {
        if proto.kind == "m.room.power_levels" {
            self.check_creators_unlisted(&proto.content).await?;
        }
        let content_raw = serde_json::value::to_raw_value(&proto.content).map_err(internal)?;
        let kind = ruma::events::TimelineEventType::from(proto.kind.as_str());
        let auth_types =
            auth::auth_types(&self.rules.authorization, &kind, &proto.sender, proto.state_key.as_deref(), &content_raw)
                .map_err(ServiceError::BadJson)?;
        let mut wanted: Vec<(String, String)> = auth_types.iter().map(|(t, k)| (t.to_string(), k.clone())).collect();
        wanted.push(("m.room.create".into(), String::new()));
        let ids: Vec<String> = wanted.iter().filter_map(|k| self.state.get(k).cloned()).collect();
        self.load(&ids).await?;
        let auth_events: Vec<OwnedEventId> = auth_types
            .iter()
            .filter_map(|(t, k)| self.state.get(&(t.to_string(), k.clone())))
            .map(|id| OwnedEventId::try_from(id.as_str()).map_err(internal))
            .collect::<ServiceResult<_>>()?;

        let placement = Placement {
            prev_events: self.prev_events.clone(),
            auth_events,
            depth: self.depth + 1,
            origin_server_ts: origin_server_ts.unwrap_or_else(|| u64::try_from(now_ms()).unwrap_or_default()),
        };
        let relates_to = relation_of(&proto.content);
        let built =
            build_event(proto, placement, &self.rules, &service.server_name, &service.key).map_err(|e| match e {
                BuildError::TooLarge => ServiceError::TooLarge(e.to_string()),
                BuildError::BadContent(m) => ServiceError::BadJson(m),
                BuildError::Internal(m) => ServiceError::Internal(m),
            })?;
        let pdu = built.pdu;

        let cache = &self.cache;
        let state = &self.state;
        auth::check(
            &self.rules.authorization,
            &pdu,
            |id| cache.get(id).cloned(),
            |t: &StateEventType, k: &str| {
                state.get(&(t.to_string(), k.to_owned())).and_then(|id| cache.get(id.as_str()).cloned())
            },
        )
        .map_err(|reason| {
            tracing::debug!(event_id = %pdu.event_id, %reason, "event refused by the auth rules");
            ServiceError::Forbidden(reason)
        })?;

        // State: events that change nothing share the current snapshot.
        let state_before = match self.snapshot {
            Some(s) => s,
            None => self.writer.write_snapshot(None, &[]).await?,
        };
        let mut state_after = state_before;
        let mut replaces_state = None;
        if let Some(key) = &pdu.state_key {
            let k = (pdu.kind.to_string(), key.clone());
            replaces_state = self.state.insert(k.clone(), pdu.event_id.to_string());
            state_after = if state_before.1 + 1 >= MAX_SNAPSHOT_CHAIN {
                let full: Vec<(String, String, String)> =
                    self.state.iter().map(|((t, k), e)| (t.clone(), k.clone(), e.clone())).collect();
                self.writer.write_snapshot(None, &full).await?
            } else {
                self.writer.write_snapshot(Some(state_before), &[(k.0, k.1, pdu.event_id.to_string())]).await?
            };
        }
        self.snapshot = Some(state_after);
        self.prev_events = vec![pdu.event_id.clone()];
        self.depth = pdu.depth;
        self.cache.insert(pdu.event_id.clone(), pdu.clone());
        self.pending.push(Pending {
            pdu: pdu.clone(),
            text: built.text,
            state_before: state_before.0,
            state_after: state_after.0,
            replaces_state,
            relates_to,
            txn,
        });
        Ok(pdu)
    }

    /// The canonical JSON text of the last event appended (not yet committed).
    pub fn last_built(&self) -> Option<&str> {
        self.pending.last().map(|p| p.text.as_str())
    }

    /// Writes everything appended, with consecutive stream positions, and commits. Returns the
    /// position of the last event. The room's state stays cached for the next transaction.
    pub async fn commit(mut self, service: &RoomService) -> ServiceResult<i64> {
        let n = i64::try_from(self.pending.len()).map_err(internal)?;
        if n == 0 {
            let room_id = self.writer.room_id().to_owned();
            self.writer.commit().await?;
            if let Some(snapshot) = self.snapshot {
                keep_cached(service, &room_id, snapshot, self.extremities_at_open, self.state, self.cache);
            }
            return Ok(0);
        }
        let departed: Vec<String> = self
            .pending
            .iter()
            .filter(|p| p.pdu.kind.to_string() == "m.room.member")
            .filter(|p| {
                serde_json::from_str::<JsonValue>(p.pdu.content.get())
                    .ok()
                    .is_some_and(|c| matches!(c.get("membership").and_then(JsonValue::as_str), Some("leave" | "ban")))
            })
            .filter_map(|p| p.pdu.state_key.clone())
            .collect();
        service.propose_mls_removals(&mut self.writer, &departed).await?;
        let now = now_ms();
        let room_id = self.writer.room_id().to_owned();
        // The first insert allocates the positions of all: the stream head's row lock orders
        // commits, so it is taken last, and the window until the commit stays short.
        let mut last = 0;
        for (i, p) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            let i = i64::try_from(i).map_err(internal)?;
            let slot = if i == 0 { StreamSlot::FirstOf(n) } else { StreamSlot::At(last - n + 1 + i) };
            let event_id = p.pdu.event_id.to_string();
            let prev: Vec<String> = p.pdu.prev_events.iter().map(ToString::to_string).collect();
            let auth: Vec<String> = p.pdu.auth_events.iter().map(ToString::to_string).collect();
            let kind = p.pdu.kind.to_string();
            let sender = p.pdu.sender.to_string();
            let txn_key = p.txn.as_ref().map(|t| t.key(&room_id, &kind));
            let inserted = self
                .writer
                .insert_event(
                    &NewEvent {
                        event_id: &event_id,
                        room_id: &room_id,
                        depth: i64::try_from(p.pdu.depth).map_err(internal)?,
                        event_type: &kind,
                        state_key: p.pdu.state_key.as_deref(),
                        sender: &sender,
                        origin_server_ts: i64::from(p.pdu.origin_server_ts.0),
                        pdu: &p.text,
                        state_before: p.state_before,
                        state_after: p.state_after,
                        replaces_state: p.replaces_state.as_deref(),
                        relates_to: p.relates_to.as_ref().map(|(r, _)| r.as_str()),
                        rel_type: p.relates_to.as_ref().and_then(|(_, t)| t.as_deref()),
                        sender_device: p.txn.as_ref().map(|t| t.device_id.as_str()),
                        txn_id: p.txn.as_ref().map(|t| t.txn_id.as_str()),
                        txn_key: txn_key.as_deref(),
                        prev_events: &prev,
                        auth_events: &auth,
                        redacts: redaction_target(&p.pdu).map(ruma::EventId::as_str),
                    },
                    slot,
                    now,
                )
                .await?;
            if i == 0 {
                last = inserted.last_allocated.ok_or_else(|| internal("the first insert allocated no positions"))?;
            }
            let pos = inserted.position;
            if kind == "m.room.member"
                && let Some(target) = &p.pdu.state_key
                && let Ok(content) = serde_json::from_str::<JsonValue>(p.pdu.content.get())
                && let Some(m) = content.get("membership").and_then(JsonValue::as_str)
            {
                self.writer.set_membership(target, m, &event_id, pos, &sender).await?;
            }
            if let Some(target) = &p.pdu.redacts {
                self.writer.mark_redacted(target.as_str(), &event_id).await?;
            }
        }
        self.writer.commit().await?;
        service.notifier.events_committed(Change::LocalEvents, last);
        if let Some(snapshot) = self.snapshot {
            let extremities = self.prev_events.iter().map(ToString::to_string).collect();
            keep_cached(service, &room_id, snapshot, extremities, self.state, self.cache);
        }
        Ok(last)
    }
}

/// Leaves a committed state in the room cache, with the current-state events parsed so far.
fn keep_cached(
    service: &RoomService,
    room_id: &str,
    snapshot: (i64, i32),
    extremities: Vec<String>,
    state: BTreeMap<(String, String), String>,
    mut pdus: BTreeMap<OwnedEventId, Pdu>,
) {
    pdus.retain(|id, pdu| {
        pdu.state_key.as_ref().is_some_and(|k| {
            state.get(&(pdu.kind.to_string(), k.clone())).is_some_and(|current| current == id.as_str())
        })
    });
    service.put_cached_room(room_id, CachedRoom { snapshot, extremities, state, pdus });
}

/// The event a PDU redacts, if it is a redaction (in any other event `redacts` means nothing).
pub(super) fn redaction_target(pdu: &Pdu) -> Option<&ruma::EventId> {
    if pdu.kind == ruma::events::TimelineEventType::RoomRedaction { pdu.redacts.as_deref() } else { None }
}

/// `m.relates_to` of a content: the related event and the relation type (replies have none).
pub(super) fn relation_of(content: &serde_json::Map<String, JsonValue>) -> Option<(String, Option<String>)> {
    let rel = content.get("m.relates_to")?;
    let rel_type = rel.get("rel_type").and_then(JsonValue::as_str).map(str::to_owned);
    let target = rel
        .get("event_id")
        .and_then(JsonValue::as_str)
        .or_else(|| rel.get("m.in_reply_to").and_then(|r| r.get("event_id")).and_then(JsonValue::as_str))?;
    Some((target.to_owned(), rel_type))
}

/// A typed content from JSON, for events the server builds itself.
pub fn content<T: serde::Serialize>(value: &T) -> ServiceResult<serde_json::Map<String, JsonValue>> {
    match serde_json::to_value(value).map_err(internal)? {
        JsonValue::Object(map) => Ok(map),
        _ => Err(internal("event content is not an object")),
    }
}

/// Parses a client's raw content into a JSON object.
pub fn raw_content<T>(raw: &Raw<T>) -> ServiceResult<serde_json::Map<String, JsonValue>> {
    match serde_json::from_str::<JsonValue>(raw.json().get()) {
        Ok(JsonValue::Object(map)) => Ok(map),
        Ok(_) => Err(ServiceError::BadJson("event content must be a JSON object".into())),
        Err(e) => Err(ServiceError::BadJson(e.to_string())),
    }
}
