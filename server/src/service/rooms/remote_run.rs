//! Accepting a run of received events of one room together: the events of one inbound
//! transaction whose predecessors and auth events are known are persisted in one database
//! transaction with one commit, as local sends are group-committed. The transaction is opened
//! first, and one read under the room's lock tells what the run is ([`OpenedRun`]): the room's
//! head and server ACL, what is stored of the events the transaction's events name, and the
//! redactions waiting for them. The head is written once; the states read and written along the
//! way are reused by the next event instead of being read again. If one event of a longer run
//! fails, the run is accepted again one event at a time, each behind a savepoint, so that the
//! failure is undone alone.

use std::collections::BTreeSet;

use ruma::room_version_rules::RoomVersionRules;
use tokio::sync::MutexGuard;

use super::{
    Accepted, Received, RoomService, StateBefore,
    remote::{Loaded, RunMemory},
};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::room_writer::{RoomWriter, RunStart, StoredEventInfo},
};

/// One answer per event of a run: `Some` with its outcome, `None` if it waits for a predecessor.
type RunAnswers = Vec<Option<ServiceResult<Accepted>>>;

/// Whether an event of a run has to wait: a predecessor of it in the run has no state (yet).
fn waits(event: &Received, in_run: &BTreeSet<&str>, stored: &BTreeSet<&str>) -> bool {
    event.pdu.prev_events.iter().any(|p| in_run.contains(p.as_str()) && !stored.contains(p.as_str()))
}

/// A room's transaction opened for received events, its lock held (both end when it is
/// dropped, undoing nothing written), with what the events depend on read under the lock.
pub struct OpenedRun<'a> {
    room_id: String,
    rules: RoomVersionRules,
    _guard: MutexGuard<'a, ()>,
    w: RoomWriter,
    memory: RunMemory,
    acl: Option<(String, String)>,
}

impl OpenedRun<'_> {
    /// What is stored of the events, their auth and prev events and what they redact.
    pub fn stored(&self) -> impl Iterator<Item = &StoredEventInfo> + Clone {
        self.memory.known()
    }

    /// The room's current `m.room.server_acl` event (id and PDU), if it has one.
    pub fn acl(&self) -> Option<(&str, &str)> {
        self.acl.as_ref().map(|(id, pdu)| (id.as_str(), pdu.as_str()))
    }
}

impl RoomService {
    /// Opens a transaction on a known room for received `events` and reads, under the room's
    /// lock, what they depend on: its head and server ACL, what is stored of the events, their
    /// auth and prev events and what they redact, and the redactions waiting for them.
    pub async fn open_run(&self, room_id: &str, events: &[Received]) -> ServiceResult<OpenedRun<'_>> {
        let (rules, guard, mut w) = self.open_known(room_id).await?;
        let ids: Vec<String> = events.iter().map(|e| e.pdu.event_id.to_string()).collect();
        let mut named = ids.clone();
        for e in events {
            let (auth, prev) = super::auth_and_prev_events(&e.pdu, &rules);
            named.extend(auth.into_iter().chain(prev));
            named.extend(e.pdu.redacts.as_ref().map(ToString::to_string));
        }
        named.sort_unstable();
        named.dedup();
        let RunStart { head, waiting, stored, acl } =
            w.run_start(&ids, &named).await?.ok_or_else(|| ServiceError::NotFound("unknown room".into()))?;
        let memory = RunMemory::for_run(head, waiting, stored);
        Ok(OpenedRun { room_id: room_id.to_owned(), rules, _guard: guard, w, memory, acl })
    }

    /// Accepts `run` (events of the opened transaction's, predecessors first), each as
    /// [`Self::accept_remote`] with the state before it taken from its prev events, all in one
    /// commit. One answer per event: `Some` with its outcome, or `None` for an event left for
    /// the caller to accept on its own, because a predecessor of it in this run has no state
    /// (it was rejected, failed, or comes later in the run). A soft-failed predecessor has its
    /// state, so what builds on it stays in the run.
    pub async fn accept_opened_run(&self, opened: OpenedRun<'_>, run: &[&Received]) -> ServiceResult<RunAnswers> {
        let room_id = opened.room_id.clone();
        if run.is_empty() {
            return Ok(Vec::new());
        }
        match self.accept_run_at_once(opened, run).await {
            Ok(answers) => Ok(answers),
            // A run of one has nothing to undo alone: its failure is its answer.
            Err(e) if run.len() == 1 => {
                tracing::info!(event_id = %run[0].pdu.event_id, error = %e, "could not accept a received event");
                Ok(vec![Some(Err(e))])
            }
            Err(e) => {
                tracing::info!(room_id, events = run.len(), error = %e, "accepting a run one event at a time");
                self.accept_run_by_steps(&room_id, run).await
            }
        }
    }

    /// The run in the opened transaction without savepoints; the first failure undoes it all.
    async fn accept_run_at_once(&self, opened: OpenedRun<'_>, events: &[&Received]) -> ServiceResult<RunAnswers> {
        let started = std::time::Instant::now();
        let OpenedRun { room_id, rules, _guard, mut w, mut memory, .. } = opened;
        let room_id = room_id.as_str();
        let in_run: BTreeSet<&str> = events.iter().map(|e| e.pdu.event_id.as_str()).collect();
        // The run's events with a state (stored or soft-failed): what may build on them.
        let mut stored: BTreeSet<&str> = BTreeSet::new();
        // Dropped if the run fails: what it loaded may name rows that are undone.
        let mut loaded = self.take_loaded(room_id);
        let mut in_timeline = false;
        let mut answers = Vec::with_capacity(events.len());
        for event in events {
            if waits(event, &in_run, &stored) {
                answers.push(None);
                continue;
            }
            let (outcome, _) =
                self.accept_at(&mut w, &mut loaded, &rules, event, StateBefore::Prevs, None, &mut memory).await?;
            if matches!(outcome, Accepted::Stored | Accepted::SoftFailed) {
                stored.insert(event.pdu.event_id.as_str());
            }
            in_timeline |= outcome == Accepted::Stored;
            answers.push(Some(Ok(outcome)));
        }
        let admitted_us = started.elapsed().as_micros();
        memory.write(&mut w).await?;
        let written_us = started.elapsed().as_micros();
        let (upto, change) = (w.notified_upto(), super::written_change(&w));
        w.commit().await?;
        self.keep_loaded(room_id, loaded);
        if in_timeline {
            self.notifier.events_committed(change, upto);
        }
        tracing::debug!(
            room_id,
            events = events.len(),
            admitted_us,
            written_us,
            committed_us = started.elapsed().as_micros(),
            "accepted a run of received events"
        );
        Ok(answers)
    }

    /// The run in one transaction, each event behind a savepoint.
    async fn accept_run_by_steps(&self, room_id: &str, events: &[&Received]) -> ServiceResult<RunAnswers> {
        let (rules, _guard, mut w) = self.open_known(room_id).await?;
        let in_run: BTreeSet<&str> = events.iter().map(|e| e.pdu.event_id.as_str()).collect();
        let mut stored: BTreeSet<&str> = BTreeSet::new();
        let mut loaded = self.take_loaded(room_id);
        let (mut failed, mut in_timeline) = (false, false);
        let mut answers = Vec::with_capacity(events.len());
        for event in events {
            if waits(event, &in_run, &stored) {
                answers.push(None);
                continue;
            }
            w.savepoint().await?;
            match self.accept_in(&mut w, &mut loaded, &rules, event, StateBefore::Prevs, None).await {
                Ok((outcome, _)) => {
                    w.release_savepoint().await?;
                    if matches!(outcome, Accepted::Stored | Accepted::SoftFailed) {
                        stored.insert(event.pdu.event_id.as_str());
                    }
                    in_timeline |= outcome == Accepted::Stored;
                    answers.push(Some(Ok(outcome)));
                }
                Err(e) => {
                    w.rollback_to_savepoint().await?;
                    // What it loaded may name rows that are gone now.
                    loaded = Loaded::default();
                    failed = true;
                    tracing::info!(event_id = %event.pdu.event_id, error = %e, "could not accept a received event");
                    answers.push(Some(Err(e)));
                }
            }
        }
        let (upto, change) = (w.notified_upto(), super::written_change(&w));
        w.commit().await?;
        if !failed {
            self.keep_loaded(room_id, loaded);
        }
        // Positions taken behind a savepoint that was rolled back are taken again by later
        // writers: only a run without failures vouches for its last position.
        if in_timeline && failed {
            self.notifier.changed(change);
        } else if in_timeline {
            self.notifier.events_committed(change, upto);
        }
        Ok(answers)
    }
}
