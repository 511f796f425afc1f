//! Inbound transactions (`/send/{txnId}`): each PDU through the acceptance pipeline, after
//! fetching what it depends on from its origin (auth events via `/event_auth`, missing
//! predecessors via `/get_missing_events`, and for a gap that remains, the state before the
//! event via `/state_ids` and `/event`). Answers are kept per transaction id, so a retried
//! transaction is answered the same without being processed again.

use std::collections::{BTreeMap, BTreeSet};

use poststelle_federation::incoming::IncomingError;
use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization::v1 as event_auth, event::get_event::v1 as get_event,
        event::get_missing_events::v1 as missing_events, event::get_room_state_ids::v1 as state_ids,
    },
    room_version_rules::RoomVersionRules,
};
use ruma::{api::federation::transactions::edu::Edu, serde::Raw};
use serde_json::value::RawValue as RawJsonValue;

use super::FederationService;
use crate::{
    service::{
        ServiceError, ServiceResult,
        rooms::{Accepted, OpenedRun, Received, StateBefore, StateIds, guests::GUEST_ACCESS},
    },
    storage::{now_ms, room_writer::StoredEventInfo},
};

/// The spec's bounds on a transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// How many missing predecessors one `/get_missing_events` asks for.
const MISSING_EVENTS_LIMIT: u32 = 20;
/// How many events a reported state (`/state_ids`) may lead this server to ask for, its auth
/// chains included.
const MAX_REPORTED_EVENTS: usize = 50_000;

/// What a transaction's PDUs came to: per event id, `Ok` or the reason it was not accepted.
pub type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

/// A room's PDUs of a transaction, ready to be accepted.
struct PreparedRoom {
    room: OwnedRoomId,
    rules: RoomVersionRules,
    /// Verified, predecessors first.
    events: Vec<Received>,
    /// The answers known before anything is accepted (malformed or unverifiable PDUs).
    results: PduResults,
}

/// A transaction's PDUs by room, rooms in the order they first appear; PDUs without a room id
/// are dropped.
fn by_room(pdus: &[Box<RawJsonValue>]) -> Vec<(OwnedRoomId, Vec<&RawJsonValue>)> {
    #[derive(serde::Deserialize)]
    struct RoomOnly {
        room_id: OwnedRoomId,
    }
    let mut rooms: Vec<(OwnedRoomId, Vec<&RawJsonValue>)> = Vec::new();
    for raw in pdus {
        let Ok(RoomOnly { room_id }) = serde_json::from_str::<RoomOnly>(raw.get()) else { continue };
        match rooms.iter_mut().find(|(r, _)| *r == room_id) {
            Some((_, raws)) => raws.push(raw),
            None => rooms.push((room_id, vec![raw])),
        }
    }
    rooms
}

/// How an outcome is reported for a PDU in the transaction's answer.
fn outcome_result(origin: &ServerName, event: &Received, outcome: ServiceResult<Accepted>) -> Result<(), String> {
    match outcome {
        Ok(Accepted::Stored | Accepted::AlreadyKnown | Accepted::SoftFailed) => Ok(()),
        Ok(Accepted::Rejected(reason)) => Err(reason),
        Err(e) => {
            tracing::warn!(%origin, event_id = %event.pdu.event_id, error = %e, "could not accept a PDU");
            Err(e.to_string())
        }
    }
}

impl FederationService {
    /// Handles a transaction from `origin` (already authenticated).
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
        pdus: &[Box<RawJsonValue>],
        edus: &[Raw<Edu>],
    ) -> ServiceResult<PduResults> {
        if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
            return Err(ServiceError::BadJson(format!(
                "a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
            )));
        }
        let started = std::time::Instant::now();
        // Whether this transaction was answered before (which also ends the origin's backoff: it
        // is up), asked while its PDUs are verified and the first room's transaction is opened
        // (nothing is written before the answer to that is known; a transaction opened for
        // nothing is dropped, undoing nothing).
        let rooms = by_room(pdus);
        let (answered, (prepared, mut first_opened)) =
            tokio::join!(self.storage.federation.inbound_txn(origin.as_str(), txn_id), async {
                let mut prepared = Vec::with_capacity(rooms.len());
                for (room, raws) in &rooms {
                    prepared.extend(self.prepare_room_pdus(origin, room, raws).await);
                }
                let first = match prepared.first() {
                    Some(p) if !p.events.is_empty() => Some(self.rooms.open_run(p.room.as_str(), &p.events).await),
                    _ => None,
                };
                (prepared, first)
            });
        if let Some(answer) = answered? {
            return Ok(serde_json::from_value::<BTreeMap<OwnedEventId, Option<String>>>(answer)
                .unwrap_or_default()
                .into_iter()
                .map(|(id, e)| (id, e.map_or(Ok(()), Err)))
                .collect());
        }
        let prepared_us = started.elapsed().as_micros();
        let mut results = PduResults::new();
        for room in prepared {
            // Only the first room's transaction was opened ahead.
            let opened = first_opened.take();
            self.accept_room_pdus(origin, room, opened, &mut results).await;
        }
        for edu in edus {
            if let Err(e) = self.receive_edu(origin, edu).await {
                tracing::info!(%origin, error = %e, "dropped an EDU");
            }
        }
        let accepted_us = started.elapsed().as_micros();
        let stored: BTreeMap<&OwnedEventId, Option<&String>> =
            results.iter().map(|(id, r)| (id, r.as_ref().err())).collect();
        let answer = serde_json::to_value(stored).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.storage.federation.record_inbound_txn(origin.as_str(), txn_id, &answer, now_ms()).await?;
        tracing::debug!(
            %origin, txn_id, pdus = pdus.len(), edus = edus.len(), prepared_us, accepted_us,
            recorded_us = started.elapsed().as_micros(), "received a transaction"
        );
        Ok(results)
    }

    /// One EDU of a transaction: typing, receipts, presence and to-device messages of the origin's
    /// users.
    async fn receive_edu(&self, origin: &ServerName, edu: &Raw<Edu>) -> ServiceResult<()> {
        let edu: serde_json::Value =
            serde_json::from_str(edu.json().get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
        let content = edu.get("content").cloned().unwrap_or_default();
        let str_of = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
        match edu.get("edu_type").and_then(serde_json::Value::as_str) {
            Some("m.typing") => {
                let (Some(room), Some(user)) = (str_of(&content, "room_id"), str_of(&content, "user_id")) else {
                    return Err(ServiceError::BadJson("malformed m.typing".into()));
                };
                self.check_own_member(origin, &room, &user).await?;
                let typing = content.get("typing").and_then(serde_json::Value::as_bool).unwrap_or(false);
                self.ephemeral.apply_remote_typing(&room, &user, typing).await
            }
            Some("m.receipt") => {
                for (room, kinds) in content.as_object().into_iter().flatten() {
                    let Some(users) = kinds.get("m.read").and_then(serde_json::Value::as_object) else { continue };
                    for (user, receipt) in users {
                        if self.check_own_member(origin, room, user).await.is_err() {
                            continue;
                        }
                        let data = receipt.get("data").cloned().unwrap_or_default();
                        let thread = str_of(&data, "thread_id").unwrap_or_default();
                        let ts = data.get("ts").and_then(serde_json::Value::as_i64).unwrap_or_else(now_ms);
                        for id in receipt.get("event_ids").and_then(serde_json::Value::as_array).into_iter().flatten() {
                            let Some(id) = id.as_str() else { continue };
                            // Only receipts for events of that room that we hold.
                            if self.storage.federation.pdu(id).await?.is_some_and(|p| p.room_id == *room && !p.outlier)
                            {
                                self.ephemeral.apply_remote_receipt(room, user, &thread, id, ts).await?;
                            }
                        }
                    }
                }
                Ok(())
            }
            Some("m.device_list_update" | "m.signing_key_update") => {
                self.e2ee.receive_device_change(origin, &content).await
            }
            Some("m.direct_to_device") => self.ephemeral.receive_to_device(origin.as_str(), &content).await,
            Some("m.presence") => self.presence.receive_edu(origin.as_str(), &content).await,
            Some(other) => {
                tracing::debug!(%origin, edu_type = other, "ignored an EDU");
                Ok(())
            }
            None => Err(ServiceError::BadJson("an EDU without edu_type".into())),
        }
    }

    /// The user must be the origin's and joined to the room.
    async fn check_own_member(&self, origin: &ServerName, room: &str, user: &str) -> ServiceResult<()> {
        self.check_acl(origin, room).await?;
        let user_server = user.split_once(':').map(|(_, s)| s);
        if user_server != Some(origin.as_str()) {
            return Err(ServiceError::Forbidden(format!("{origin} cannot speak for {user}")));
        }
        match self.storage.rooms.membership(room, user).await? {
            Some(m) if m.membership == "join" => Ok(()),
            _ => Err(ServiceError::Forbidden(format!("{user} is not in {room}"))),
        }
    }

    /// A room's PDUs of a transaction, parsed and verified (predecessors first); `None` for a
    /// room this server is not in.
    async fn prepare_room_pdus(
        &self,
        origin: &ServerName,
        room: &RoomId,
        raws: &[&RawJsonValue],
    ) -> Option<PreparedRoom> {
        let rules = match self.rooms.room_rules(room.as_str()).await {
            Ok(Some((_, rules))) => rules,
            _ => {
                tracing::info!(%origin, room_id = %room, pdus = raws.len(), "dropped PDUs of a room this server is not in");
                return None;
            }
        };
        let mut results = PduResults::new();
        // Each PDU is parsed once: its id names its result, the parse goes on to verification.
        let owned: Vec<Box<RawJsonValue>> = raws.iter().map(|raw| (*raw).to_owned()).collect();
        let mut to_verify = Vec::with_capacity(raws.len());
        let mut ids = Vec::with_capacity(raws.len());
        for parsed in super::parse_each(owned, &rules, room).await {
            match parsed {
                Ok(p) => {
                    ids.push(p.pdu.event_id.clone());
                    to_verify.push(Ok(p));
                }
                // A PDU with numbers canonical JSON does not allow gets an answer where its id
                // can be had; other malformed PDUs are dropped without one.
                Err(e @ IncomingError::InvalidJson { event_id: Some(_), .. }) => {
                    tracing::info!(%origin, room_id = %room, error = %e, "refused a PDU with invalid JSON");
                    if let IncomingError::InvalidJson { event_id: Some(id), .. } = &e {
                        results.insert(id.clone(), Err(e.to_string()));
                    }
                }
                Err(e) => tracing::info!(%origin, room_id = %room, error = %e, "dropped a malformed PDU"),
            }
        }
        let mut events = Vec::with_capacity(to_verify.len());
        for (id, verified) in ids.into_iter().zip(self.verify_parsed(to_verify, &rules, origin).await) {
            match verified {
                Ok(v) => events.push(v),
                Err(e) => {
                    results.insert(id, Err(e.to_string()));
                }
            }
        }
        // Predecessors first; a sender may list them in any order.
        events.sort_by_key(|e| e.pdu.depth);
        Some(PreparedRoom { room: room.to_owned(), rules, events, results })
    }

    /// Accepts a room's prepared PDUs in a transaction on the room (`opened`, if it was opened
    /// ahead): if its server ACL allows the origin, those whose predecessors are all stored at
    /// once, then the others one by one after fetching what they depend on.
    async fn accept_room_pdus(
        &self,
        origin: &ServerName,
        prepared: PreparedRoom,
        opened: Option<ServiceResult<OpenedRun<'_>>>,
        results: &mut PduResults,
    ) {
        let PreparedRoom { room, rules, events, results: known } = prepared;
        results.extend(known);
        if events.is_empty() {
            return;
        }
        let room: &RoomId = room.as_ref();
        let rules = &rules;
        let opened = match opened {
            Some(opened) => opened,
            None => self.rooms.open_run(room.as_str(), &events).await,
        };
        // Not knowing the ACL, nothing is accepted (as when it denies the origin).
        let allowed = match &opened {
            Ok(opened) => super::join::acl_allows(origin, opened.acl()),
            Err(e) => Err(ServiceError::Internal(format!("could not read the room's server ACL: {e}"))),
        };
        let opened = match (opened, allowed) {
            (Ok(opened), Ok(())) => opened,
            (_, Err(e)) | (Err(e), _) => {
                for event in &events {
                    results.insert(event.pdu.event_id.clone(), Err(e.to_string()));
                }
                return;
            }
        };
        let (run, mut later) = split_known(room, rules, &events, opened.stored());
        if run.is_empty() {
            // Each of the others takes the room's lock on its own.
            drop(opened);
        } else {
            match self.rooms.accept_opened_run(opened, &run).await {
                Ok(answers) => {
                    for (event, answer) in run.iter().zip(answers) {
                        match answer {
                            Some(outcome) => {
                                results.insert(event.pdu.event_id.clone(), outcome_result(origin, event, outcome));
                            }
                            None => later.push(event),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%origin, room_id = %room, error = %e, "could not accept a run of received PDUs");
                    later.extend(run);
                }
            }
        }
        later.sort_by_key(|e| e.pdu.depth);
        for event in later {
            let outcome = self.accept_with_history(origin, room, rules, event).await;
            results.insert(event.pdu.event_id.clone(), outcome_result(origin, event, outcome));
        }
        // Each server removes its own guests when a room stops allowing them.
        let guest_access_changed = events.iter().any(|e| {
            e.pdu.kind.to_string() == GUEST_ACCESS
                && e.pdu.state_key.as_deref() == Some("")
                && results.get(&e.pdu.event_id).is_some_and(Result::is_ok)
        });
        if guest_access_changed && let Err(e) = self.rooms.remove_guests_if_revoked(room).await {
            tracing::warn!(%origin, room_id = %room, error = %e, "could not check the room's guests");
        }
    }

    /// Accepts a verified event after fetching what it depends on.
    pub(super) async fn accept_with_history(
        &self,
        origin: &ServerName,
        room: &RoomId,
        rules: &RoomVersionRules,
        event: &Received,
    ) -> ServiceResult<Accepted> {
        self.ensure_auth_events(origin, room, rules, event).await?;
        let state_before = self.fill_gap(origin, room, rules, event).await?;
        self.rooms
            .accept_remote(room.as_str(), event, state_before.map_or(StateBefore::Prevs, StateBefore::Reported))
            .await
    }

    /// Fetches and stores the event's auth chain when some of its auth events are unknown.
    pub(super) async fn ensure_auth_events(
        &self,
        origin: &ServerName,
        room: &RoomId,
        rules: &RoomVersionRules,
        event: &Received,
    ) -> ServiceResult<()> {
        let ids = crate::service::rooms::with_implied_create(
            &event.pdu,
            rules,
            event.pdu.auth_events.iter().map(ToString::to_string).collect(),
        );
        let known: BTreeSet<String> =
            self.storage.federation.pdus(&ids).await?.into_iter().map(|p| p.event_id).collect();
        if ids.iter().all(|id| known.contains(id)) {
            return Ok(());
        }
        let response = self.call(origin, event_auth::Request::new(room.to_owned(), event.pdu.event_id.clone())).await?;
        let mut chain = self.verify_all(&response.auth_chain, rules, room, origin).await;
        // From room version 12 on the create event is implied, and auth chains may leave it out.
        let still_missing: Vec<String> = ids
            .iter()
            .filter(|id| !known.contains(*id) && !chain.iter().any(|e| e.pdu.event_id.as_str() == id.as_str()))
            .cloned()
            .collect();
        for id in still_missing {
            let Ok(id) = OwnedEventId::try_from(id.as_str()) else { continue };
            let answer = self.call(origin, get_event::Request::new(id)).await?;
            chain.extend(self.verify_all(std::slice::from_ref(&answer.pdu), rules, room, origin).await);
        }
        let version = self.version_of(room).await?;
        self.rooms.store_outliers(room.as_str(), &version, &chain).await
    }

    /// Makes the event's predecessors known: missing ones are fetched and accepted first; if a
    /// gap remains, returns the state before the event as its origin reports it.
    pub(super) async fn fill_gap(
        &self,
        origin: &ServerName,
        room: &RoomId,
        rules: &RoomVersionRules,
        event: &Received,
    ) -> ServiceResult<Option<StateIds>> {
        if self.missing_prevs(event).await?.is_empty() {
            return Ok(None);
        }
        let head = self.storage.rooms.forward_extremities(room.as_str()).await?;
        let mut request = missing_events::Request::new(
            room.to_owned(),
            head.iter().filter_map(|id| OwnedEventId::try_from(id.as_str()).ok()).collect(),
            vec![event.pdu.event_id.clone()],
        );
        request.limit = UInt::from(MISSING_EVENTS_LIMIT);
        // Nothing older than what we build on is missing.
        let stored_head = self.storage.federation.pdus(&head).await?;
        let min_depth = stored_head
            .iter()
            .filter_map(|p| serde_json::from_str::<serde_json::Value>(&p.pdu).ok()?.get("depth")?.as_u64())
            .min()
            .unwrap_or(0);
        request.min_depth = UInt::new(min_depth).unwrap_or_default();
        match self.call(origin, request).await {
            Ok(response) => {
                let mut fetched = self.verify_all(&response.events, rules, room, origin).await;
                fetched.sort_by_key(|e| e.pdu.depth);
                for e in &fetched {
                    let id = e.pdu.event_id.to_string();
                    let known = self.storage.federation.pdu(&id).await?.is_some_and(|p| p.has_state());
                    if known || e.pdu.prev_events.is_empty() || !self.missing_prevs(e).await?.is_empty() {
                        continue;
                    }
                    // One predecessor that cannot be accepted must not stop the others.
                    let outcome = match self.ensure_auth_events(origin, room, rules, e).await {
                        Ok(()) => self.rooms.accept_remote(room.as_str(), e, StateBefore::Prevs).await,
                        Err(err) => Err(err),
                    };
                    match outcome {
                        Ok(outcome) => tracing::debug!(event_id = %id, ?outcome, "accepted a missing predecessor"),
                        Err(err) => {
                            tracing::info!(event_id = %id, error = %err, "could not accept a missing predecessor")
                        }
                    }
                }
            }
            Err(e) => tracing::info!(%origin, error = %e, "/get_missing_events failed"),
        }
        if self.missing_prevs(event).await?.is_empty() {
            return Ok(None);
        }
        // Still a gap: take the state before the event from its origin.
        self.reported_state(origin, room, rules, event).await.map(Some)
    }

    /// The state before an event as `origin` reports it (`/state_ids`), with the events of it
    /// and their auth chains that this server lacks fetched (`/event`) and stored as outliers.
    /// The auth chain it names may be incomplete (even empty): the auth events the fetched
    /// events name are fetched too. Only events of the room that passed their auth checks
    /// make up the state.
    pub(super) async fn reported_state(
        &self,
        origin: &ServerName,
        room: &RoomId,
        rules: &RoomVersionRules,
        event: &Received,
    ) -> ServiceResult<StateIds> {
        let ids = self.call(origin, state_ids::Request::new(event.pdu.event_id.clone(), room.to_owned())).await?;
        let wanted: Vec<String> = ids.pdu_ids.iter().chain(&ids.auth_chain_ids).map(ToString::to_string).collect();
        let known: BTreeSet<String> =
            self.storage.federation.pdus(&wanted).await?.into_iter().map(|p| p.event_id).collect();
        let mut fetched: Vec<Received> = Vec::new();
        let mut asked: BTreeSet<String> = known;
        let mut next: Vec<String> = wanted;
        while !next.is_empty() && asked.len() < MAX_REPORTED_EVENTS {
            next.retain(|id| asked.insert(id.clone()));
            let mut got = Vec::new();
            for id in &next {
                let Ok(id) = OwnedEventId::try_from(id.as_str()) else { continue };
                let response = self.call(origin, get_event::Request::new(id)).await?;
                got.extend(self.verify_all(std::slice::from_ref(&response.pdu), rules, room, origin).await);
            }
            // Their auth events that neither side named: asked for in the next round.
            let named: Vec<String> = got
                .iter()
                .flat_map(|e| {
                    crate::service::rooms::with_implied_create(
                        &e.pdu,
                        rules,
                        e.pdu.auth_events.iter().map(ToString::to_string).collect(),
                    )
                })
                .filter(|id| !asked.contains(id))
                .collect();
            let stored: BTreeSet<String> =
                self.storage.federation.pdus(&named).await?.into_iter().map(|p| p.event_id).collect();
            asked.extend(stored);
            next = named.into_iter().filter(|id| !asked.contains(id)).collect();
            next.sort();
            next.dedup();
            fetched.extend(got);
        }
        let version = self.version_of(room).await?;
        self.rooms.store_outliers(room.as_str(), &version, &fetched).await?;
        let stored =
            self.storage.federation.pdus(&ids.pdu_ids.iter().map(ToString::to_string).collect::<Vec<_>>()).await?;
        let mut state = StateIds::new();
        for p in stored.into_iter().filter(|p| !p.rejected && p.room_id == room.as_str()) {
            let pdu = crate::service::rooms::persist::parse_stored(&p.event_id, &p.pdu)?;
            if let Some(key) = pdu.state_key {
                state.insert((pdu.kind.to_string(), key), p.event_id);
            }
        }
        Ok(state)
    }

    /// The event's prev events whose state this server does not know: neither in the timeline
    /// nor soft-failed (a soft-failed event is no gap: it has its state).
    pub(super) async fn missing_prevs(&self, event: &Received) -> ServiceResult<Vec<String>> {
        let ids: Vec<String> = event.pdu.prev_events.iter().map(ToString::to_string).collect();
        let stored = self.storage.federation.pdus(&ids).await?;
        Ok(ids.into_iter().filter(|id| !stored.iter().any(|p| &p.event_id == id && p.has_state())).collect())
    }

    async fn version_of(&self, room: &RoomId) -> ServiceResult<ruma::RoomVersionId> {
        self.rooms
            .room_rules(room.as_str())
            .await?
            .map(|(v, _)| v)
            .ok_or_else(|| ServiceError::NotFound("unknown room".into()))
    }
}

/// Splits a room's received events (sorted by depth) into those whose auth events are stored
/// and whose prev events are known with their state (timeline events, or soft-failed ones),
/// counting the events before them in the list as both, and the rest. `stored` holds what this
/// server has of the events they name.
fn split_known<'a, 's>(
    room: &RoomId,
    rules: &RoomVersionRules,
    events: &'a [Received],
    stored: impl Iterator<Item = &'s StoredEventInfo> + Clone,
) -> (Vec<&'a Received>, Vec<&'a Received>) {
    let stored = stored.filter(|p| p.room_id == room.as_str());
    let mut known_auth: BTreeSet<String> = stored.clone().map(|p| p.event_id.clone()).collect();
    let mut with_state: BTreeSet<String> = stored.filter(|p| p.has_state()).map(|p| p.event_id.clone()).collect();
    let (mut run, mut alone) = (Vec::new(), Vec::new());
    for e in events {
        let (auth, prev) = crate::service::rooms::auth_and_prev_events(&e.pdu, rules);
        if !prev.is_empty()
            && auth.iter().all(|a| known_auth.contains(a))
            && prev.iter().all(|p| with_state.contains(p))
        {
            known_auth.insert(e.pdu.event_id.to_string());
            with_state.insert(e.pdu.event_id.to_string());
            run.push(e);
        } else {
            alone.push(e);
        }
    }
    (run, alone)
}
