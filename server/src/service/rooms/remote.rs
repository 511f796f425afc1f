//! Accepting events that did not come from this room engine's own builder: events received
//! from other servers, and our own events that another server signed first (invites, joins).
//! Under the room's locks: the spec's checks 4–6 on receipt of a PDU (auth against the event's
//! auth events, against the state before it, soft failure against the current state), the
//! state before it resolved over its prev events, and the room's current state resolved over
//! the new forward extremities.

use std::{collections::BTreeMap, sync::Arc};

use poststelle_federation::{Pdu, auth, resolve};
use ruma::{OwnedEventId, RoomVersionId, events::StateEventType, room_version_rules::RoomVersionRules};
use serde_json::Value as JsonValue;

use super::{
    RoomService,
    persist::{parse_pdu, redaction_target},
};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::{
        now_ms,
        room_writer::{
            MAX_SNAPSHOT_CHAIN, NamingRedaction, OutlierEvent, RemoteEvent, RoomWriter, StoredEventInfo, StreamSlot,
        },
    },
};

mod redaction;
mod run_memory;

pub(super) use run_memory::RunMemory;

/// An event ready to be accepted: verified signatures, its id, its canonical JSON text.
#[derive(Clone, Debug)]
pub struct Received {
    pub pdu: Pdu,
    pub text: String,
    /// The server it came from; `None` for our own events (the federation sender sends those).
    pub origin: Option<String>,
}

/// What became of a received event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// In the timeline now.
    Stored,
    /// Stored before.
    AlreadyKnown,
    /// Authorised by its history, not by the current state: kept out of the timeline.
    SoftFailed,
    /// Failed the auth rules (the reason).
    Rejected(String),
}

/// A room state: `(type, state_key)` → event id.
pub type StateIds = BTreeMap<(String, String), String>;

/// Where the state before a received event comes from.
#[derive(Clone, Debug)]
pub enum StateBefore {
    /// Its prev events, all in the timeline.
    Prevs,
    /// Another server's report, for an event after a gap in our copy of the room. The state
    /// after the event is resolved with the current state (the report may be stale or a lie).
    Reported(StateIds),
    /// The state a resident server sent with our join, with the full snapshot of it already
    /// written: our copy of the room starts afresh.
    Join(StateIds, i64),
}

pub(super) fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

pub(super) fn to_owned_ids(ids: &[OwnedEventId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// The events a transaction on a room has loaded, by id, and the last states it read or wrote,
/// by snapshot id. A snapshot never changes and its id is never reused (not even after a
/// rollback), so a kept state is right for its id whatever else happened.
#[derive(Default)]
pub(super) struct Loaded(BTreeMap<OwnedEventId, Pdu>, Vec<KeptState>);

/// A state kept by [`Loaded`]: snapshot id, chain depth, the state.
type KeptState = (i64, i32, Arc<StateIds>);

/// How many states [`Loaded`] keeps: the current one, and the states after the last events.
const KEPT_STATES: usize = 4;

impl super::Weighed for Loaded {
    fn weight(&self) -> usize {
        self.0.len() + self.1.iter().map(|(_, _, state)| state.len()).sum::<usize>()
    }
}

impl Loaded {
    /// The state of a snapshot, with its chain depth, if kept.
    fn state(&self, snapshot: i64) -> Option<(i32, Arc<StateIds>)> {
        self.1.iter().find(|(id, _, _)| *id == snapshot).map(|(_, depth, state)| (*depth, state.clone()))
    }

    fn keep_state(&mut self, snapshot: i64, depth: i32, state: Arc<StateIds>) {
        self.1.retain(|(id, _, _)| *id != snapshot);
        if self.1.len() >= KEPT_STATES {
            self.1.remove(0);
        }
        self.1.push((snapshot, depth, state));
    }

    async fn load(&mut self, w: &mut RoomWriter, ids: impl IntoIterator<Item = String>) -> ServiceResult<()> {
        let missing: Vec<String> = ids.into_iter().filter(|id| !self.has(id)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        for (id, text) in w.pdus(&missing).await? {
            let pdu = parse_pdu(&id, &text)?;
            self.0.insert(pdu.event_id.clone(), pdu);
        }
        Ok(())
    }

    fn has(&self, id: &str) -> bool {
        <&ruma::EventId>::try_from(id).is_ok_and(|id| self.0.contains_key(id))
    }

    fn get(&self, id: &ruma::EventId) -> Option<Pdu> {
        self.0.get(id).cloned()
    }
}

/// The ids an event's auth checks need beyond its auth events: from room version 12 on, the
/// create event is implied by the room id and never listed.
pub fn with_implied_create(pdu: &Pdu, rules: &RoomVersionRules, mut ids: Vec<String>) -> Vec<String> {
    if rules.authorization.room_create_event_id_as_room_id
        && let Some(room) = &pdu.room_id
    {
        ids.push(format!("${}", room.as_str().trim_start_matches('!')));
    }
    ids
}

/// An event's auth events (with the implied create event) and prev events.
pub fn auth_and_prev_events(pdu: &Pdu, rules: &RoomVersionRules) -> (Vec<String>, Vec<String>) {
    let auth = with_implied_create(pdu, rules, pdu.auth_events.iter().map(ToString::to_string).collect());
    (auth, pdu.prev_events.iter().map(ToString::to_string).collect())
}

/// The first of an event's auth events (`needed`, loaded) that belongs to another room than
/// `room_id`: it would lend the event that room's powers.
fn foreign_auth<'a>(loaded: &Loaded, needed: &'a [String], room_id: &str) -> Option<&'a String> {
    needed.iter().find(|a| {
        <&ruma::EventId>::try_from(a.as_str())
            .ok()
            .and_then(|a| loaded.get(a))
            .is_some_and(|pdu| pdu.room_id.as_ref().is_some_and(|r| r.as_str() != room_id))
    })
}

/// Reads a snapshot into a state map.
async fn state_of(w: &mut RoomWriter, snapshot: i64) -> ServiceResult<StateIds> {
    Ok(w.snapshot_state(snapshot).await?.into_iter().map(|(t, k, e)| ((t, k), e)).collect())
}

/// Checks an event against a state, loading what the check needs.
async fn check_against(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &StateIds,
) -> ServiceResult<Result<(), String>> {
    let types = auth::auth_types(&rules.authorization, &pdu.kind, &pdu.sender, pdu.state_key.as_deref(), &pdu.content)
        .map_err(ServiceError::BadJson)?;
    let mut wanted: Vec<String> =
        types.iter().filter_map(|(t, k)| state.get(&(t.to_string(), k.clone())).cloned()).collect();
    wanted.extend(state.get(&("m.room.create".to_owned(), String::new())).cloned());
    wanted.extend(with_implied_create(pdu, rules, to_owned_ids(&pdu.auth_events)));
    loaded.load(w, wanted).await?;
    Ok(auth::check(
        &rules.authorization,
        pdu,
        |id| loaded.get(id),
        |t: &StateEventType, k: &str| {
            state
                .get(&(t.to_string(), k.to_owned()))
                .and_then(|id| OwnedEventId::try_from(id.as_str()).ok().and_then(|id| loaded.get(&id)))
        },
    ))
}

/// Resolves several states of a room into one, loading their events and auth chains.
async fn resolve_states(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    states: &[&StateIds],
) -> ServiceResult<StateIds> {
    let mut ids: Vec<String> = states.iter().flat_map(|s| s.values().cloned()).collect();
    ids.sort();
    ids.dedup();
    let chain = w.auth_chain_ids(&ids).await?;
    loaded.load(w, ids.into_iter().chain(chain)).await?;
    let typed: Vec<resolve::State> = states
        .iter()
        .map(|s| s.iter().filter_map(|(k, id)| Some((k.clone(), OwnedEventId::try_from(id.as_str()).ok()?))).collect())
        .collect();
    let resolved =
        resolve::resolve(rules, &typed, &loaded.0).map_err(|e| internal(format!("state resolution: {e}")))?;
    Ok(resolved.into_iter().map(|(k, id)| (k, id.to_string())).collect())
}

/// Writes a state as a full snapshot.
pub(super) async fn write_full(w: &mut RoomWriter, state: &StateIds) -> ServiceResult<i64> {
    let entries: Vec<(String, String, String)> =
        state.iter().map(|((t, k), e)| (t.clone(), k.clone(), e.clone())).collect();
    Ok(w.write_snapshot(None, &entries).await?.0)
}

/// A received event that passed the checks against its auth events and the state before it.
pub(super) struct Admitted {
    id: String,
    kind: String,
    prev: Vec<String>,
    auth: Vec<String>,
    before: Arc<StateIds>,
    before_snapshot: (i64, i32),
    /// Some of its prev events were soft-failed: it replaces what they built on as well.
    on_soft_failed: bool,
}

/// The state after an admitted event with its snapshot `(id, chain depth)`, written if the
/// event is a state event, and the event it replaces in the state.
async fn state_after(
    w: &mut RoomWriter,
    event: &Received,
    admitted: &Admitted,
) -> ServiceResult<(Arc<StateIds>, (i64, i32), Option<String>)> {
    let Admitted { id, kind, before, before_snapshot, .. } = admitted;
    let Some(key) = &event.pdu.state_key else { return Ok((before.clone(), *before_snapshot, None)) };
    let mut after = before.clone();
    let changed = Arc::make_mut(&mut after);
    let replaces_state = changed.insert((kind.clone(), key.clone()), id.clone());
    let after_snapshot = if before_snapshot.1 + 1 >= MAX_SNAPSHOT_CHAIN {
        (write_full(w, changed).await?, 0)
    } else {
        w.write_snapshot(Some(*before_snapshot), &[(kind.clone(), key.clone(), id.clone())]).await?
    };
    Ok((after, after_snapshot, replaces_state))
}

/// Writes an admitted event into the timeline at `slot`, with the state after it; applies it
/// if it is a redaction that may redact its target, and applies to it a redaction received
/// before it that may redact it (from `waiting` if given, which then takes it if it is a
/// redaction; read otherwise). Returns its position and the state after it with that state's
/// snapshot `(id, chain depth)`.
pub(super) async fn into_timeline(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    event: &Received,
    admitted: &Admitted,
    slot: StreamSlot,
    waiting: Option<&mut Vec<NamingRedaction>>,
) -> ServiceResult<(i64, Arc<StateIds>, (i64, i32))> {
    let (after, after_snapshot, replaces_state) = state_after(w, event, admitted).await?;
    let Admitted { id, kind, prev, auth, before, before_snapshot, .. } = admitted;
    let content: serde_json::Map<String, JsonValue> = serde_json::from_str(event.pdu.content.get()).unwrap_or_default();
    let relates_to = super::persist::relation_of(&content);
    let inserted = w
        .insert_remote_event(
            &RemoteEvent {
                event_id: id,
                depth: i64::try_from(event.pdu.depth).unwrap_or(i64::MAX),
                event_type: kind,
                state_key: event.pdu.state_key.as_deref(),
                sender: event.pdu.sender.as_str(),
                origin_server_ts: i64::from(event.pdu.origin_server_ts.0),
                pdu: &event.text,
                prev_events: prev,
                auth_events: auth,
                state_before: before_snapshot.0,
                state_after: after_snapshot.0,
                replaces_state: replaces_state.as_deref(),
                relates_to: relates_to.as_ref().map(|(r, _)| r.as_str()),
                rel_type: relates_to.as_ref().and_then(|(_, t)| t.as_deref()),
                received_from: event.origin.as_deref(),
                redacts: redaction_target(&event.pdu).map(ruma::EventId::as_str),
            },
            slot,
        )
        .await?;
    redaction::apply_to_held_target(w, loaded, rules, &event.pdu, before).await?;
    match waiting {
        None => redaction::apply_earlier_redactions(w, loaded, rules, &[&event.pdu]).await?,
        Some(waiting) => {
            redaction::apply_waiting(w, loaded, rules, &[&event.pdu], waiting).await?;
            if let Some(target) = redaction_target(&event.pdu) {
                waiting.push(NamingRedaction {
                    event_id: id.clone(),
                    redacts: target.to_string(),
                    pdu: event.text.clone(),
                    state_before: before_snapshot.0,
                });
            }
        }
    }
    Ok((inserted.position, after, after_snapshot))
}

fn outlier<'a>(r: &'a Received, prev: &'a [String], auth: &'a [String]) -> OutlierEvent<'a> {
    OutlierEvent {
        event_id: r.pdu.event_id.as_str(),
        depth: i64::try_from(r.pdu.depth).unwrap_or(i64::MAX),
        event_type: "",
        state_key: r.pdu.state_key.as_deref(),
        sender: r.pdu.sender.as_str(),
        origin_server_ts: i64::from(r.pdu.origin_server_ts.0),
        pdu: &r.text,
        prev_events: prev,
        auth_events: auth,
        rejected: None,
        soft_failed: false,
        state_before: None,
        state_after: None,
        received_from: r.origin.as_deref(),
        redacts: redaction_target(&r.pdu).map(ruma::EventId::as_str),
    }
}

/// Events to store outside the timeline, checked against their auth events (see
/// [`RoomService::check_outliers`]).
pub(super) struct CheckedOutliers<'e> {
    /// The ids of the events that are stored and not rejected once the rows are written.
    pub(super) usable: std::collections::BTreeSet<String>,
    checked: Vec<CheckedOutlier<'e>>,
}

/// An event to write as an outlier, with its prev and auth event ids, its type, and why it was
/// rejected.
struct CheckedOutlier<'e> {
    event: &'e Received,
    prev: Vec<String>,
    auth: Vec<String>,
    kind: String,
    rejected: Option<String>,
}

impl CheckedOutliers<'_> {
    /// Once the rows are written: redactions received before them apply to those that passed.
    pub(super) async fn apply_earlier_redactions(
        &self,
        w: &mut RoomWriter,
        loaded: &mut Loaded,
        rules: &RoomVersionRules,
    ) -> ServiceResult<()> {
        let passed: Vec<&Pdu> = self.checked.iter().filter(|c| c.rejected.is_none()).map(|c| &c.event.pdu).collect();
        redaction::apply_earlier_redactions(w, loaded, rules, &passed).await
    }

    /// The rows to write.
    pub(super) fn rows(&self) -> Vec<OutlierEvent<'_>> {
        self.checked
            .iter()
            .map(|c| {
                let mut row = outlier(c.event, &c.prev, &c.auth);
                row.event_type = &c.kind;
                row.rejected = c.rejected.as_deref();
                row
            })
            .collect()
    }
}

/// Keeps a received event out of the timeline as soft-failed, with the states before and
/// after it: an event that builds on it takes its state from it, as from a timeline event. A
/// redaction received before it that may redact it applies to it.
async fn soft_fail(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    event: &Received,
    admitted: &Admitted,
) -> ServiceResult<i64> {
    let (_, after_snapshot, _) = state_after(w, event, admitted).await?;
    let mut row = outlier(event, &admitted.prev, &admitted.auth);
    row.event_type = &admitted.kind;
    row.soft_failed = true;
    row.state_before = Some(admitted.before_snapshot.0);
    row.state_after = Some(after_snapshot.0);
    w.insert_outliers(&[row]).await?;
    redaction::apply_earlier_redactions(w, loaded, rules, &[&event.pdu]).await?;
    Ok(after_snapshot.0)
}

/// What is stored of a received event once written: `(outlier, rejected, soft_failed)`, and
/// the states before and after it.
fn stored_info(
    w: &RoomWriter,
    event: &Received,
    (outlier, rejected, soft_failed): (bool, bool, bool),
    state_before: Option<i64>,
    state_after: Option<i64>,
) -> StoredEventInfo {
    StoredEventInfo {
        event_id: event.pdu.event_id.to_string(),
        room_id: w.room_id().to_owned(),
        outlier,
        rejected,
        state_before,
        state_after,
        depth: i64::try_from(event.pdu.depth).unwrap_or(i64::MAX),
        soft_failed,
    }
}

impl RoomService {
    /// What the room's last acceptance of received events in this process loaded, to start the
    /// next one with (taken under the room's lock). Everything in it is keyed by what never
    /// changes (event ids, snapshot ids), so it stays right whoever wrote to the room since.
    pub(super) fn take_loaded(&self, room_id: &str) -> Loaded {
        super::RoomCache::take(&self.received_cache, room_id).unwrap_or_default()
    }

    /// Keeps what an acceptance loaded once its transaction committed, within the cache's bound.
    pub(super) fn keep_loaded(&self, room_id: &str, loaded: Loaded) {
        super::RoomCache::put(&self.received_cache, room_id, loaded);
    }

    /// The rules of a stored room's version.
    pub async fn room_rules(&self, room_id: &str) -> ServiceResult<Option<(RoomVersionId, RoomVersionRules)>> {
        let Some(version) = self.version_of(room_id).await? else { return Ok(None) };
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        Ok(Some((version, rules)))
    }

    /// Stores events outside the timeline (auth chains, state learnt from other servers), in
    /// the given order (auth events first). Each is checked against its own auth events; one
    /// that fails is stored as rejected, one that passes takes a redaction received before it.
    /// Creates the room (of `version`) if it is unknown.
    pub async fn store_outliers(
        &self,
        room_id: &str,
        version: &RoomVersionId,
        events: &[Received],
    ) -> ServiceResult<()> {
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        let _guard = self.stripe(room_id).lock().await;
        let mut w = RoomWriter::begin(&self.storage.pool, room_id).await?;
        let creator =
            events.iter().find(|e| e.pdu.kind.to_string() == "m.room.create").map(|e| e.pdu.sender.to_string());
        w.ensure_room(version.as_str(), creator.as_deref().unwrap_or_default(), now_ms()).await?;
        self.store_outliers_in(&mut w, &mut Loaded::default(), &rules, events).await?;
        w.commit().await?;
        Ok(())
    }

    /// Returns the ids of the given events that are now stored and not rejected; `loaded`
    /// holds them afterwards, parsed, for what the transaction does next.
    pub(super) async fn store_outliers_in(
        &self,
        w: &mut RoomWriter,
        loaded: &mut Loaded,
        rules: &RoomVersionRules,
        events: &[Received],
    ) -> ServiceResult<std::collections::BTreeSet<String>> {
        let checked = self.check_outliers(w, loaded, rules, events).await?;
        w.insert_outliers(&checked.rows()).await?;
        checked.apply_earlier_redactions(w, loaded, rules).await?;
        Ok(checked.usable)
    }

    /// Checks events to store outside the timeline against their auth events, in order of
    /// depth (auth events first); events stored before are left as they are, and an event whose
    /// auth event is unknown is left out. `loaded` holds the events that passed afterwards.
    pub(super) async fn check_outliers<'e>(
        &self,
        w: &mut RoomWriter,
        loaded: &mut Loaded,
        rules: &RoomVersionRules,
        events: &'e [Received],
    ) -> ServiceResult<CheckedOutliers<'e>> {
        let ids: Vec<String> = events.iter().map(|e| e.pdu.event_id.to_string()).collect();
        let stored_before = w.stored_events(&ids).await?;
        let mut usable: std::collections::BTreeSet<String> =
            stored_before.iter().filter(|s| !s.rejected).map(|s| s.event_id.clone()).collect();
        let known: std::collections::BTreeSet<String> = stored_before.into_iter().map(|s| s.event_id).collect();
        let mut sorted: Vec<&Received> = events.iter().filter(|e| !known.contains(e.pdu.event_id.as_str())).collect();
        sorted.sort_by_key(|e| e.pdu.depth);
        for e in &sorted {
            loaded.0.insert(e.pdu.event_id.clone(), e.pdu.clone());
        }
        let mut checked = Vec::with_capacity(sorted.len());
        for e in sorted {
            let needed = with_implied_create(&e.pdu, rules, to_owned_ids(&e.pdu.auth_events));
            loaded.load(w, needed.clone()).await?;
            if let Some(missing) = needed.iter().find(|id| !loaded.has(id)) {
                // Not rejected: we lack what decides it. It can be fetched and stored later.
                tracing::info!(event_id = %e.pdu.event_id, %missing, "skipped an event whose auth event is unknown");
                continue;
            }
            let verdict = match foreign_auth(loaded, &needed, w.room_id()) {
                Some(a) => Err(format!("auth event {a} is in another room")),
                None => auth::check_against_auth_events(&rules.authorization, &e.pdu, |id| loaded.get(id)),
            };
            if let Err(reason) = &verdict {
                tracing::info!(event_id = %e.pdu.event_id, %reason, "rejected a received auth or state event");
                loaded.0.remove(&e.pdu.event_id);
            }
            if verdict.is_ok() {
                usable.insert(e.pdu.event_id.to_string());
            }
            checked.push(CheckedOutlier {
                event: e,
                prev: to_owned_ids(&e.pdu.prev_events),
                auth: to_owned_ids(&e.pdu.auth_events),
                kind: e.pdu.kind.to_string(),
                rejected: verdict.err(),
            });
        }
        Ok(CheckedOutliers { usable, checked })
    }

    /// Accepts a timeline event of a known room whose auth events are stored, and whose prev
    /// events are stored too unless the state before it is given.
    pub async fn accept_remote(
        &self,
        room_id: &str,
        event: &Received,
        state_before: StateBefore,
    ) -> ServiceResult<Accepted> {
        Ok(self.accept_remote_with(room_id, event, state_before, None).await?.0)
    }

    /// [`Self::accept_remote`]; with `commit`, the event is an MLS commit another server forwards
    /// to this hub, checked by the Delivery Service and recorded in the same transaction.
    pub(super) async fn accept_remote_with(
        &self,
        room_id: &str,
        event: &Received,
        state_before: StateBefore,
        commit: Option<&super::mls::ForwardedCommit<'_>>,
    ) -> ServiceResult<(Accepted, Vec<poststelle_mls::DeviceIdentity>)> {
        let (rules, _guard, mut w) = self.open_known(room_id).await?;
        let mut loaded = self.take_loaded(room_id);
        let outcome = self.accept_in(&mut w, &mut loaded, &rules, event, state_before, commit).await?;
        let (upto, change) = (w.notified_upto(), super::written_change(&w));
        w.commit().await?;
        self.keep_loaded(room_id, loaded);
        if outcome.0 == Accepted::Stored {
            self.notifier.events_committed(change, upto);
        }
        Ok(outcome)
    }

    /// Accepts a received event inside the room's open write transaction (the spec's checks 4–6,
    /// then the timeline, the head and the current state); the caller commits. An `Err` leaves
    /// the transaction with partial writes: roll it (or its savepoint) back.
    pub(super) async fn accept_in(
        &self,
        w: &mut RoomWriter,
        loaded: &mut Loaded,
        rules: &RoomVersionRules,
        event: &Received,
        state_before: StateBefore,
        commit: Option<&super::mls::ForwardedCommit<'_>>,
    ) -> ServiceResult<(Accepted, Vec<poststelle_mls::DeviceIdentity>)> {
        let mut memory = RunMemory::read(w).await?;
        let outcome = self.accept_at(w, loaded, rules, event, state_before, commit, &mut memory).await?;
        memory.write(w).await?;
        Ok(outcome)
    }

    /// [`Self::accept_in`] with what the caller keeps in memory across the events of its
    /// transaction (read before, written after by the caller).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn accept_at(
        &self,
        w: &mut RoomWriter,
        loaded: &mut Loaded,
        rules: &RoomVersionRules,
        event: &Received,
        state_before: StateBefore,
        commit: Option<&super::mls::ForwardedCommit<'_>>,
        memory: &mut RunMemory,
    ) -> ServiceResult<(Accepted, Vec<poststelle_mls::DeviceIdentity>)> {
        let replace_head = matches!(state_before, StateBefore::Join(..));
        let admitted = match self.admit(w, loaded, rules, event, state_before, Some(memory)).await? {
            Ok(admitted) => admitted,
            Err(outcome) => {
                if matches!(outcome, Accepted::Rejected(_)) {
                    memory.record(stored_info(w, event, (true, true, false), None, None));
                }
                return Ok((outcome, Vec::new()));
            }
        };
        let welcome_recipients = match commit {
            Some(commit) => self.accept_forwarded_in(w, &event.pdu, commit).await?,
            None => Vec::new(),
        };

        let head = memory.head.clone();
        // The MLS hub's rules for its rooms (commits only through it, no plaintext): soft failure.
        if event.origin.is_some()
            && let Some(reason) = self.mls_refusal_of_received(w, &event.pdu, head.mls_algorithm.as_deref()).await?
        {
            tracing::info!(event_id = %admitted.id, %reason, "soft-failed a received event in an MLS room");
            let after = soft_fail(w, loaded, rules, event, &admitted).await?;
            memory.record(stored_info(w, event, (true, false, true), Some(admitted.before_snapshot.0), Some(after)));
            return Ok((Accepted::SoftFailed, Vec::new()));
        }

        // 6. Against the current state: soft failure.
        let current: Arc<StateIds> = if head.snapshot_id == 0 {
            Arc::default()
        } else if let Some((_, kept)) = loaded.state(head.snapshot_id) {
            kept
        } else {
            let read: Arc<StateIds> =
                Arc::new(w.current_state().await?.into_iter().map(|(t, k, e)| ((t, k), e)).collect());
            loaded.keep_state(head.snapshot_id, head.snapshot_depth, read.clone());
            read
        };
        if head.snapshot_id != 0
            && event.origin.is_some()
            && let Err(reason) = check_against(w, loaded, rules, &event.pdu, &current).await?
        {
            if commit.is_some() {
                // Nothing of the forwarded commit is kept (the transaction rolls back).
                return Err(ServiceError::Forbidden(reason));
            }
            tracing::info!(event_id = %admitted.id, %reason, "soft-failed a received event");
            let after = soft_fail(w, loaded, rules, event, &admitted).await?;
            memory.record(stored_info(w, event, (true, false, true), Some(admitted.before_snapshot.0), Some(after)));
            return Ok((Accepted::SoftFailed, Vec::new()));
        }

        // A message of a run is written with the others; anything else is written now, after them.
        let (position, after, after_snapshot) = if memory.defers(event, &admitted, &current) {
            memory.defer(event, &admitted);
            (None, admitted.before.clone(), admitted.before_snapshot)
        } else {
            memory.flush(w).await?;
            let slot = StreamSlot::FirstOf(1);
            let (position, after, after_snapshot) =
                into_timeline(w, loaded, rules, event, &admitted, slot, memory.waiting.as_mut()).await?;
            (Some(position), after, after_snapshot)
        };
        memory.record(stored_info(
            w,
            event,
            (false, false, false),
            Some(admitted.before_snapshot.0),
            Some(after_snapshot.0),
        ));
        // What it replaces as extremities: its prev events, and through soft-failed ones what
        // they built on.
        let replaced =
            if admitted.on_soft_failed { w.replaced_through_soft_failed(&admitted.prev).await? } else { admitted.prev };
        let id = admitted.id;

        // The new forward extremities, and the current state over them.
        // An event accepted with the state another server reported (a join through it) starts
        // our copy of the room afresh.
        let replaced_all = replace_head || head.forward_extremities.iter().all(|x| replaced.contains(x));
        let mut extremities: Vec<String> = if replace_head {
            Vec::new()
        } else {
            head.forward_extremities.iter().filter(|x| !replaced.contains(x)).cloned().collect()
        };
        extremities.insert(0, id.clone());
        // Forks that changed no state (messages sent on both sides) need no resolution.
        let same_state = head.snapshot_id == after_snapshot.0 || *current == *after;
        let (new_current, new_snapshot) = if replaced_all || head.snapshot_id == 0 || same_state {
            (after, after_snapshot)
        } else {
            let resolved = resolve_states(w, loaded, rules, &[&current, &after]).await?;
            let snapshot = write_full(w, &resolved).await?;
            (Arc::new(resolved), (snapshot, 0))
        };
        // A deferred message leaves the state as it is.
        if let Some(position) = position {
            self.move_head(w, loaded, &current, &new_current, position).await?;
        }
        let max_depth = head.max_depth.max(i64::try_from(event.pdu.depth).unwrap_or(0));
        memory.move_to(new_snapshot, extremities, max_depth, position);
        loaded.keep_state(new_snapshot.0, new_snapshot.1, new_current);
        Ok((Accepted::Stored, welcome_recipients))
    }

    /// The rules of a known room, its lock (held until the guard drops) and a transaction on it.
    pub(super) async fn open_known(
        &self,
        room_id: &str,
    ) -> ServiceResult<(RoomVersionRules, tokio::sync::MutexGuard<'_, ()>, RoomWriter)> {
        let Some((_, rules)) = self.room_rules(room_id).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        let guard = self.stripe(room_id).lock().await;
        let w = RoomWriter::begin(&self.storage.pool, room_id).await?;
        Ok((rules, guard, w))
    }

    /// The spec's checks 4 and 5 on a received event: against its own auth events and against
    /// the state before it. `Err` with the outcome when it goes no further: already in the
    /// timeline, or rejected (then stored as such, to be committed by the caller).
    pub(super) async fn admit(
        &self,
        w: &mut RoomWriter,
        loaded: &mut Loaded,
        rules: &RoomVersionRules,
        event: &Received,
        state_before: StateBefore,
        memory: Option<&RunMemory>,
    ) -> ServiceResult<Result<Admitted, Accepted>> {
        let id = event.pdu.event_id.to_string();
        let prev = to_owned_ids(&event.pdu.prev_events);
        // The event, its predecessors and what it redacts in one read.
        let redacts = event.pdu.redacts.as_ref().map(ToString::to_string);
        let asked: Vec<String> =
            std::iter::once(id.clone()).chain(prev.iter().cloned()).chain(redacts.clone()).collect();
        let infos = match memory.and_then(|m| m.stored(&asked)) {
            Some(infos) => infos,
            None => w.stored_events(&asked).await?,
        };
        if infos.iter().any(|s| s.event_id == id && (!s.outlier || s.rejected)) {
            return Ok(Err(Accepted::AlreadyKnown));
        }
        let auth = to_owned_ids(&event.pdu.auth_events);
        let kind = event.pdu.kind.to_string();
        let needed = with_implied_create(&event.pdu, rules, auth.clone());
        loaded.load(w, needed.clone()).await?;
        if let Some(missing) = needed.iter().find(|a| !loaded.has(a)) {
            return Err(ServiceError::NotFound(format!("auth event {missing} is unknown")));
        }
        let mut row = outlier(event, &prev, &auth);
        row.event_type = &kind;

        // Its predecessors and auth events must be events of this room: another room's would
        // lend it that room's history and state. Nor may it redact a known event of another
        // room (one not known yet is checked when it arrives).
        let foreign_prev = infos.iter().find(|s| prev.contains(&s.event_id) && s.room_id != w.room_id());
        let foreign_target = infos.iter().find(|s| redacts.as_ref() == Some(&s.event_id) && s.room_id != w.room_id());
        let foreign_auth = foreign_auth(loaded, &needed, w.room_id());
        if let Some(reason) = foreign_prev
            .map(|p| format!("prev event {} is in another room", p.event_id))
            .or_else(|| foreign_auth.map(|a| format!("auth event {a} is in another room")))
            .or_else(|| foreign_target.map(|t| format!("it redacts {}, an event of another room", t.event_id)))
        {
            row.rejected = Some(&reason);
            w.insert_outliers(&[row]).await?;
            return Ok(Err(Accepted::Rejected(reason)));
        }

        // 4. Against its own auth events.
        if let Err(reason) = auth::check_against_auth_events(&rules.authorization, &event.pdu, |id| loaded.get(id)) {
            row.rejected = Some(&reason);
            w.insert_outliers(&[row]).await?;
            return Ok(Err(Accepted::Rejected(reason)));
        }

        // 5. Against the state before it.
        let (before, before_snapshot) = match state_before {
            StateBefore::Reported(state) => {
                let snapshot = write_full(w, &state).await?;
                (Arc::new(state), (snapshot, 0))
            }
            StateBefore::Join(state, snapshot) => (Arc::new(state), (snapshot, 0)),
            StateBefore::Prevs => self.state_before(w, loaded, rules, &prev, &infos).await?,
        };
        if let Err(reason) = check_against(w, loaded, rules, &event.pdu, &before).await? {
            row.rejected = Some(&reason);
            row.state_before = Some(before_snapshot.0);
            w.insert_outliers(&[row]).await?;
            return Ok(Err(Accepted::Rejected(reason)));
        }
        let on_soft_failed = infos.iter().any(|s| s.soft_failed && prev.contains(&s.event_id));
        Ok(Ok(Admitted { id, kind, prev, auth, before, before_snapshot, on_soft_failed }))
    }

    /// The state before an event, over its prev events (`infos`: what is stored of them): the
    /// state after each, resolved if they differ. Returns it with its snapshot `(id, chain depth)`.
    async fn state_before(
        &self,
        w: &mut RoomWriter,
        loaded: &mut Loaded,
        rules: &RoomVersionRules,
        prev: &[String],
        infos: &[StoredEventInfo],
    ) -> ServiceResult<(Arc<StateIds>, (i64, i32))> {
        let mut snapshots: Vec<i64> = Vec::new();
        for p in prev {
            let info = infos.iter().find(|i| &i.event_id == p);
            // A soft-failed predecessor counts: its state is known.
            match info.and_then(|i| i.has_state().then_some(i.state_after).flatten()) {
                Some(s) => snapshots.push(s),
                None => return Err(ServiceError::NotFound(format!("prev event {p} has no known state"))),
            }
        }
        snapshots.sort_unstable();
        snapshots.dedup();
        match snapshots.as_slice() {
            [] => Err(ServiceError::BadJson("an event without prev events".into())),
            [one] => {
                if let Some((depth, kept)) = loaded.state(*one) {
                    return Ok((kept, (*one, depth)));
                }
                let depth = w.snapshot_depth(*one).await?;
                let state = Arc::new(state_of(w, *one).await?);
                loaded.keep_state(*one, depth, state.clone());
                Ok((state, (*one, depth)))
            }
            many => {
                let mut states = Vec::new();
                for s in many {
                    states.push(state_of(w, *s).await?);
                }
                let resolved = resolve_states(w, loaded, rules, &states.iter().collect::<Vec<_>>()).await?;
                let snapshot = write_full(w, &resolved).await?;
                Ok((Arc::new(resolved), (snapshot, 0)))
            }
        }
    }

    /// Moves the current state from `old` to `new`: the changed rows, and the memberships of
    /// the member events that changed (at `position`). Member events in `loaded` are not read
    /// again.
    pub(super) async fn move_head(
        &self,
        w: &mut RoomWriter,
        loaded: &Loaded,
        old: &StateIds,
        new: &StateIds,
        position: i64,
    ) -> ServiceResult<()> {
        if std::ptr::eq(old, new) {
            return Ok(());
        }
        let mut changes: Vec<(String, String, Option<String>)> = Vec::new();
        for (k, id) in new {
            if old.get(k) != Some(id) {
                changes.push((k.0.clone(), k.1.clone(), Some(id.clone())));
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                changes.push((k.0.clone(), k.1.clone(), None));
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        w.change_current_state(&changes).await?;
        let mut member_events: Vec<Pdu> = Vec::new();
        let mut unread: Vec<String> = Vec::new();
        for (_, _, id) in changes.iter().filter(|(t, _, _)| t == "m.room.member") {
            let Some(id) = id else { continue };
            match <&ruma::EventId>::try_from(id.as_str()).ok().and_then(|e| loaded.0.get(e)) {
                Some(pdu) => member_events.push(pdu.clone()),
                None => unread.push(id.clone()),
            }
        }
        if !unread.is_empty() {
            for (id, text) in w.pdus(&unread).await? {
                member_events.push(parse_pdu(&id, &text)?);
            }
        }
        let mut departed = Vec::new();
        let mut memberships = Vec::with_capacity(member_events.len());
        for pdu in member_events {
            let content: JsonValue = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            if let (Some(target), Some(m)) = (pdu.state_key, content.get("membership").and_then(JsonValue::as_str)) {
                if m == "leave" || m == "ban" {
                    departed.push(target.clone());
                }
                memberships.push((target, m.to_owned(), pdu.event_id.to_string(), pdu.sender.to_string()));
            }
        }
        w.set_memberships(&memberships, position).await?;
        self.propose_mls_removals(w, &departed).await
    }
}
