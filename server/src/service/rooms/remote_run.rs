//! Accepting a run of received events of one room together: the events of one inbound
//! transaction whose predecessors and auth events are known are persisted in one database
//! transaction with one commit, as local sends are group-committed. Each event sits behind a
//! savepoint, so one that fails is undone alone; the states read and written along the way are
//! reused by the next event instead of being read again.

use std::collections::BTreeSet;

use super::{Accepted, Received, RoomService, StateBefore, remote::Loaded};
use crate::service::ServiceResult;

impl RoomService {
    /// Accepts `events` of a known room in the order given (predecessors first), each as
    /// [`Self::accept_remote`] with the state before it taken from its prev events, all in one
    /// commit. One answer per event: `Some` with its outcome, or `None` for an event left for
    /// the caller to accept on its own, because a predecessor of it in this run has no state
    /// (it was rejected, failed, or comes later in the run). A soft-failed predecessor has its
    /// state, so what builds on it stays in the run.
    pub async fn accept_remote_run(
        &self,
        room_id: &str,
        events: &[&Received],
    ) -> ServiceResult<Vec<Option<ServiceResult<Accepted>>>> {
        let (rules, _guard, mut w) = self.open_known(room_id).await?;
        let in_run: BTreeSet<&str> = events.iter().map(|e| e.pdu.event_id.as_str()).collect();
        // The events of the run with a state (stored or soft-failed): what may build on them.
        let mut stored: BTreeSet<&str> = BTreeSet::new();
        let mut loaded = self.take_loaded(room_id);
        let (mut failed, mut in_timeline) = (false, false);
        let mut answers = Vec::with_capacity(events.len());
        for event in events {
            let waits =
                event.pdu.prev_events.iter().any(|p| in_run.contains(p.as_str()) && !stored.contains(p.as_str()));
            if waits {
                answers.push(None);
                continue;
            }
            // A run of one (the common case: a message as it is sent) needs no savepoint: a
            // failure rolls the whole transaction back.
            if events.len() > 1 {
                w.savepoint().await?;
            }
            match self.accept_in(&mut w, &mut loaded, &rules, event, StateBefore::Prevs, None).await {
                Ok((outcome, _)) => {
                    if events.len() > 1 {
                        w.release_savepoint().await?;
                    }
                    if matches!(outcome, Accepted::Stored | Accepted::SoftFailed) {
                        stored.insert(event.pdu.event_id.as_str());
                    }
                    in_timeline |= outcome == Accepted::Stored;
                    answers.push(Some(Ok(outcome)));
                }
                Err(e) if events.len() == 1 => {
                    drop(w);
                    tracing::info!(event_id = %event.pdu.event_id, error = %e, "could not accept a received event");
                    return Ok(vec![Some(Err(e))]);
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
        w.commit().await?;
        if !failed {
            self.keep_loaded(room_id, loaded);
        }
        if in_timeline {
            self.notifier.bump();
        }
        Ok(answers)
    }
}
