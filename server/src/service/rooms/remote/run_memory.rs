//! What a transaction accepting received events keeps in memory between events instead of
//! reading and writing it for each: the room's head, read once and written once before the
//! commit (each write of the same row in one transaction also leaves a row version that later
//! reads step over). For a run of events (those of one inbound transaction) also what is stored
//! of the events the run names, the redactions waiting for its events, and its plain messages,
//! written together in one statement.

use std::collections::BTreeMap;

use super::{Admitted, Received, StateIds, redaction_target};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::room_writer::{HeadMove, NamingRedaction, RemoteEvent, RoomHead, RoomWriter, StoredEventInfo},
};

/// See the module.
pub(in crate::service::rooms) struct RunMemory {
    pub(super) head: RoomHead,
    /// The position of the last event written to the timeline, once one was.
    moved_to: Option<i64>,
    /// For a run: the redactions in the timeline that name events of the run, read at the
    /// start, then those of the run as they are written, in stream order. `None`: read for each
    /// event as it is written.
    pub(super) waiting: Option<Vec<NamingRedaction>>,
    /// For a run: what is stored of the run's events, their prev events and the events they
    /// redact, read at the start, then kept up to date as the run's events are written.
    known: Option<BTreeMap<String, StoredEventInfo>>,
    /// Messages of the run accepted into the timeline and not written yet.
    deferred: Vec<DeferredMessage>,
}

/// A message accepted into the timeline, to be written with the others of its run.
struct DeferredMessage {
    id: String,
    kind: String,
    prev: Vec<String>,
    auth: Vec<String>,
    depth: i64,
    sender: String,
    origin_server_ts: i64,
    pdu: String,
    snapshot: i64,
    relates_to: Option<(String, Option<String>)>,
    received_from: Option<String>,
}

impl RunMemory {
    /// Reads the head, for events accepted one at a time.
    pub(in crate::service::rooms) async fn read(w: &mut RoomWriter) -> ServiceResult<Self> {
        let head = w.head(&[]).await?.ok_or_else(|| ServiceError::NotFound("unknown room".into()))?;
        Ok(Self { head, moved_to: None, waiting: None, known: None, deferred: Vec::new() })
    }

    /// For a run: starts from the head, the redactions received before that name events of
    /// the run and what is stored of the events the run names, as one read found them.
    pub(in crate::service::rooms) fn for_run(
        head: RoomHead,
        waiting: Vec<NamingRedaction>,
        stored: Vec<StoredEventInfo>,
    ) -> Self {
        Self {
            head,
            moved_to: None,
            waiting: Some(waiting),
            known: Some(stored.into_iter().map(|info| (info.event_id.clone(), info)).collect()),
            deferred: Vec::new(),
        }
    }

    /// For a run: what is stored of the events it names, as kept so far.
    pub(in crate::service::rooms) fn known(&self) -> impl Iterator<Item = &StoredEventInfo> + Clone {
        self.known.iter().flat_map(BTreeMap::values)
    }

    /// For a run: what is stored of `ids` (all named by the run's events).
    pub(super) fn stored(&self, ids: &[String]) -> Option<Vec<StoredEventInfo>> {
        let known = self.known.as_ref()?;
        Some(ids.iter().filter_map(|id| known.get(id).cloned()).collect())
    }

    /// For a run: keeps what became of one of its events. Rows stored before are kept as they
    /// are unless the event joined the timeline, as the writes do.
    pub(super) fn record(&mut self, info: StoredEventInfo) {
        let Some(known) = self.known.as_mut() else { return };
        if !info.outlier || !known.contains_key(&info.event_id) {
            known.insert(info.event_id.clone(), info);
        }
    }

    /// Whether an admitted event of a run may be written with the run's other messages: it
    /// joins the timeline without changing the state (`current`, the current state, is the
    /// state before it) and without anything that reads or writes rows of the room's events,
    /// so that nothing in the run reads its row before it is written.
    pub(super) fn defers(&self, event: &Received, admitted: &Admitted, current: &StateIds) -> bool {
        let Some(known) = &self.known else { return false };
        event.pdu.state_key.is_none()
            && admitted.kind != "m.room.redaction"
            && redaction_target(&event.pdu).is_none()
            && self.head.mls_algorithm.is_none()
            && !admitted.on_soft_failed
            && !known.contains_key(&admitted.id)
            && !self.waiting.iter().flatten().any(|r| r.redacts == admitted.id)
            && (self.head.snapshot_id == admitted.before_snapshot.0 || *current == *admitted.before)
    }

    /// Keeps a message that [`Self::defers`] to be written with the others.
    pub(super) fn defer(&mut self, event: &Received, admitted: &Admitted) {
        let content: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(event.pdu.content.get()).unwrap_or_default();
        self.deferred.push(DeferredMessage {
            id: admitted.id.clone(),
            kind: admitted.kind.clone(),
            prev: admitted.prev.clone(),
            auth: admitted.auth.clone(),
            depth: i64::try_from(event.pdu.depth).unwrap_or(i64::MAX),
            sender: event.pdu.sender.to_string(),
            origin_server_ts: i64::from(event.pdu.origin_server_ts.0),
            pdu: event.text.clone(),
            snapshot: admitted.before_snapshot.0,
            relates_to: crate::service::rooms::persist::relation_of(&content),
            received_from: event.origin.clone(),
        });
    }

    /// Writes the deferred messages, before anything else is written to the timeline.
    pub(super) async fn flush(&mut self, w: &mut RoomWriter) -> ServiceResult<()> {
        self.flush_moving_head(w, false).await
    }

    /// Writes the deferred messages; with `move_head`, the head goes with them.
    async fn flush_moving_head(&mut self, w: &mut RoomWriter, move_head: bool) -> ServiceResult<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let rows: Vec<RemoteEvent<'_>> = self
            .deferred
            .iter()
            .map(|m| RemoteEvent {
                event_id: &m.id,
                depth: m.depth,
                event_type: &m.kind,
                state_key: None,
                sender: &m.sender,
                origin_server_ts: m.origin_server_ts,
                pdu: &m.pdu,
                prev_events: &m.prev,
                auth_events: &m.auth,
                state_before: m.snapshot,
                state_after: m.snapshot,
                replaces_state: None,
                relates_to: m.relates_to.as_ref().map(|(r, _)| r.as_str()),
                rel_type: m.relates_to.as_ref().and_then(|(_, t)| t.as_deref()),
                received_from: m.received_from.as_deref(),
                redacts: None,
            })
            .collect();
        let head = move_head.then_some(HeadMove {
            snapshot_id: self.head.snapshot_id,
            extremities: &self.head.forward_extremities,
            max_depth: self.head.max_depth,
        });
        let last = w.insert_new_remote_messages(&rows, head).await?;
        self.deferred.clear();
        self.moved_to = Some(last);
        Ok(())
    }

    /// Moves the head in memory after an event joined the timeline (at `position` if it was
    /// written; a deferred one gets its position when written).
    pub(super) fn move_to(
        &mut self,
        snapshot: (i64, i32),
        extremities: Vec<String>,
        max_depth: i64,
        position: Option<i64>,
    ) {
        self.head.snapshot_id = snapshot.0;
        self.head.snapshot_depth = snapshot.1;
        self.head.forward_extremities = extremities;
        self.head.max_depth = max_depth;
        if position.is_some() {
            self.moved_to = position;
        }
    }

    /// Writes the deferred messages and the head, if an event joined the timeline: in one
    /// statement when messages were deferred (they are the newest of the timeline then).
    pub(in crate::service::rooms) async fn write(mut self, w: &mut RoomWriter) -> ServiceResult<()> {
        if !self.deferred.is_empty() {
            return self.flush_moving_head(w, true).await;
        }
        if let Some(position) = self.moved_to {
            let head = self.head;
            w.set_head(head.snapshot_id, &head.forward_extremities, head.max_depth, position).await?;
        }
        Ok(())
    }
}
