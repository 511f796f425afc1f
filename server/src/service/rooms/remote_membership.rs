//! Received membership events that start or restart this server's copy of a room: the
//! template another server's user signs (`/make_join`, `/make_leave`), an invite (or the
//! declining leave) of a local user to a room this server is not in, and our join through a
//! resident server with the state it sent.

use ruma::RoomVersionId;
use serde_json::Value as JsonValue;

use super::{
    Accepted, Received, RoomService, StateBefore, StateIds,
    remote::{Loaded, internal, to_owned_ids, write_full},
};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::{
        now_ms,
        room_writer::{self, MAX_SNAPSHOT_CHAIN, OutlierEvent, RemoteEvent, RoomWriter, StreamSlot},
    },
};

/// From how many outliers a join writes them on two connections at once.
const OUTLIERS_IN_HALVES: usize = 400;
/// How many connections a join may hold at once: its transaction, the state's snapshot, and
/// the outliers' two halves.
const CONNECTIONS_OF_A_JOIN: u32 = 4;

impl RoomService {
    /// A membership event another server's user may sign and send back (`/make_join`,
    /// `/make_leave`): built on the current state and checked against the auth rules like a
    /// local event, then handed out without our hashes and signature, and not stored.
    pub async fn membership_template(
        &self,
        room_id: &ruma::RoomId,
        user_id: &ruma::UserId,
        membership: &str,
    ) -> ServiceResult<(RoomVersionId, ruma::CanonicalJsonObject)> {
        let mut ctx = super::RoomCtx::open(self, room_id.as_str()).await?;
        let mut content = serde_json::Map::new();
        content.insert("membership".into(), membership.into());
        let proto = poststelle_federation::ProtoEvent {
            room_id: Some(room_id.to_owned()),
            sender: user_id.to_owned(),
            kind: "m.room.member".into(),
            state_key: Some(user_id.to_string()),
            content,
            redacts: None,
        };
        ctx.append(self, proto, None).await?;
        let text = ctx.last_built().ok_or_else(|| internal("nothing was built"))?;
        let mut json: ruma::CanonicalJsonObject = serde_json::from_str(text).map_err(internal)?;
        json.remove("signatures");
        json.remove("hashes");
        // Dropped without commit: the transaction rolls back.
        Ok((ctx.version.clone(), json))
    }

    /// Stores a membership event of a local user in a room this server is not in (another
    /// server's invite of the user, or the user's leave that declines it): the event becomes the
    /// newest this server holds of the room, over the little state it knows. For an invite, the
    /// stripped state the inviting server sent is kept for the invitee's clients.
    pub async fn accept_lone_membership(
        &self,
        room_id: &str,
        version: &RoomVersionId,
        invite: &Received,
        invite_state: Option<&JsonValue>,
    ) -> ServiceResult<Accepted> {
        let (Some(target), "m.room.member") = (invite.pdu.state_key.clone(), invite.pdu.kind.to_string().as_str())
        else {
            return Err(ServiceError::BadJson("not a membership event".into()));
        };
        let _guard = self.stripe(room_id).lock().await;
        let mut w = RoomWriter::begin(&self.storage.pool, room_id).await?;
        w.ensure_room(version.as_str(), invite.pdu.sender.as_str(), now_ms()).await?;
        let id = invite.pdu.event_id.to_string();
        if w.stored_events(std::slice::from_ref(&id)).await?.iter().any(|s| !s.outlier) {
            return Ok(Accepted::AlreadyKnown);
        }
        let head = w.head(&[]).await?.ok_or_else(|| ServiceError::NotFound("unknown room".into()))?;
        let (current, before) = if head.snapshot_id == 0 {
            (StateIds::new(), (write_full(&mut w, &StateIds::new()).await?, 0))
        } else {
            let current: StateIds = w.current_state().await?.into_iter().map(|(t, k, e)| ((t, k), e)).collect();
            (current, (head.snapshot_id, head.snapshot_depth))
        };
        let mut after = current.clone();
        let replaces_state = after.insert(("m.room.member".to_owned(), target.clone()), id.clone());
        let after_snapshot = if before.1 + 1 >= MAX_SNAPSHOT_CHAIN {
            write_full(&mut w, &after).await?
        } else {
            w.write_snapshot(Some(before), &[("m.room.member".to_owned(), target.clone(), id.clone())]).await?.0
        };
        let prev = to_owned_ids(&invite.pdu.prev_events);
        let auth = to_owned_ids(&invite.pdu.auth_events);
        let inserted = w
            .insert_remote_event(
                &RemoteEvent {
                    event_id: &id,
                    depth: i64::try_from(invite.pdu.depth).unwrap_or(i64::MAX),
                    event_type: "m.room.member",
                    state_key: Some(&target),
                    sender: invite.pdu.sender.as_str(),
                    origin_server_ts: i64::from(invite.pdu.origin_server_ts.0),
                    pdu: &invite.text,
                    prev_events: &prev,
                    auth_events: &auth,
                    state_before: before.0,
                    state_after: after_snapshot,
                    replaces_state: replaces_state.as_deref(),
                    relates_to: None,
                    rel_type: None,
                    received_from: invite.origin.as_deref(),
                    redacts: None,
                },
                StreamSlot::FirstOf(1),
            )
            .await?;
        self.move_head(&mut w, &Loaded::default(), &current, &after, inserted.position).await?;
        let depth = i64::try_from(invite.pdu.depth).unwrap_or(0).max(head.max_depth);
        w.set_head(after_snapshot, std::slice::from_ref(&id), depth, inserted.position).await?;
        if let Some(invite_state) = invite_state {
            w.remember_invite_state(&target, &id, invite_state).await?;
        }
        let (upto, change) = (w.notified_upto(), super::written_change(&w));
        w.commit().await?;
        self.notifier.events_committed(change, upto);
        Ok(Accepted::Stored)
    }

    /// Joins a room through another server: stores the state and auth chain it sent (checked
    /// against their auth events), then our join event as the first timeline event this server
    /// holds of the room, with that state before it; all in one commit, the events parsed once.
    /// The state's snapshot is written on a connection of its own while the events are checked
    /// and stored.
    pub async fn accept_join(
        &self,
        room_id: &str,
        version: &RoomVersionId,
        state: &[Received],
        auth_chain: &[Received],
        join: &Received,
    ) -> ServiceResult<Accepted> {
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        let _guard = self.stripe(room_id).lock().await;
        let creator =
            state.iter().find(|e| e.pdu.kind.to_string() == "m.room.create").map(|e| e.pdu.sender.to_string());
        room_writer::ensure_room_committed(
            &self.storage.pool,
            room_id,
            version.as_str(),
            creator.as_deref().unwrap_or_default(),
            now_ms(),
        )
        .await?;
        let sent: StateIds = state
            .iter()
            .filter_map(|e| Some(((e.pdu.kind.to_string(), e.pdu.state_key.clone()?), e.pdu.event_id.to_string())))
            .collect();
        // Beside the join's transaction, the snapshot and the outliers' halves take a connection
        // each: with a smaller pool they could wait for the one the transaction holds.
        let beside = self.storage.pool.options().get_max_connections() >= CONNECTIONS_OF_A_JOIN;
        let snapshot = beside.then(|| {
            let (pool, room) = (self.storage.pool.clone(), room_id.to_owned());
            let entries: Vec<(String, String, String)> =
                sent.iter().map(|((t, k), e)| (t.clone(), k.clone(), e.clone())).collect();
            tokio::spawn(async move { room_writer::write_detached_snapshot(&pool, &room, &entries).await })
        });
        let mut w = RoomWriter::begin(&self.storage.pool, room_id).await?;
        // The chain repeats much of the state: each event once.
        let mut seen = std::collections::BTreeSet::new();
        let all: Vec<Received> =
            auth_chain.iter().chain(state).filter(|e| seen.insert(e.pdu.event_id.clone())).cloned().collect();
        let mut loaded = self.take_loaded(room_id);
        let checked = self.check_outliers(&mut w, &mut loaded, &rules, &all).await?;
        let rows = checked.rows();
        if beside && rows.len() >= OUTLIERS_IN_HALVES {
            self.write_outliers_in_halves(&w, &rows).await?;
        } else {
            w.insert_outliers(&rows).await?;
        }
        checked.apply_earlier_redactions(&mut w, &mut loaded, &rules).await?;
        let usable = checked.usable;
        let written = match snapshot {
            Some(task) => Some(task.await.map_err(internal)??),
            None => None,
        };
        // The state as sent, without what failed its auth checks (then written here).
        let before: StateIds =
            sent.iter().filter(|(_, id)| usable.contains(id.as_str())).map(|(k, id)| (k.clone(), id.clone())).collect();
        let snapshot = match written {
            Some(snapshot) if before.len() == sent.len() => snapshot,
            _ => write_full(&mut w, &before).await?,
        };
        let (outcome, _) =
            self.accept_in(&mut w, &mut loaded, &rules, join, StateBefore::Join(before, snapshot), None).await?;
        let (upto, change) = (w.notified_upto(), super::written_change(&w));
        w.commit().await?;
        self.keep_loaded(room_id, loaded);
        if outcome == Accepted::Stored {
            self.notifier.events_committed(change, upto);
        }
        Ok(outcome)
    }

    /// A join's many outliers, written in halves on two connections at once beside the state's
    /// snapshot (see [`room_writer::insert_outliers_detached`]).
    async fn write_outliers_in_halves(&self, w: &RoomWriter, rows: &[OutlierEvent<'_>]) -> ServiceResult<()> {
        let pool = &self.storage.pool;
        let top = room_writer::reserve_outlier_positions(pool, rows.len()).await?;
        let (first, second) = rows.split_at(rows.len() / 2);
        let offset = i64::try_from(first.len()).map_err(internal)?;
        let (a, b) = tokio::join!(
            room_writer::insert_outliers_detached(pool, w.room_id(), first, top),
            room_writer::insert_outliers_detached(pool, w.room_id(), second, top - offset)
        );
        a?;
        b?;
        Ok(())
    }
}
