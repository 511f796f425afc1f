//! Older history from other servers (`/backfill`): when a client pages backwards past the
//! oldest event this server holds of a room (typically its users' join), the events before it
//! are fetched from servers in the room, checked like every received PDU, and stored below the
//! timeline, so the page can be served from the database, now and on every later request.

use std::time::{Duration, Instant};

use ruma::{
    OwnedEventId, RoomId, ServerName, UInt, api::federation::backfill::get_backfill::v1 as backfill,
    room_version_rules::RoomVersionRules,
};

use super::FederationService;
use crate::service::{
    ServiceError, ServiceResult,
    filter::EventFilter,
    rooms::{
        Accepted, Received, StateBefore, StateIds,
        client_format::Viewer,
        read::{Page, PageRequest, parse_position, position_token},
    },
};

/// Requests to other servers one page may cost at most.
const MAX_ROUNDS: usize = 5;
/// Events asked for per request (the spec lets servers cap it; we serve at most 100 too).
const MAX_BATCH: usize = 100;
/// How long one server gets to answer before the next one is asked.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// After this long no further request is started for the page; it is served with what is held.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

impl FederationService {
    /// `/messages`: a backwards page that would reach past what this server holds of the room
    /// first fetches the missing history from other servers. If none of them answers, the page
    /// holds what this server has. A page that runs out of held events (they may be hidden from
    /// the viewer or filtered out) while fetching made progress and the history does not reach
    /// the create event yet keeps an `end`, so the client pages on.
    pub async fn messages_for(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        page: PageRequest<'_>,
        filter: &EventFilter,
    ) -> ServiceResult<Page> {
        let mut fetched = 0;
        let room = RoomId::parse(room_id).ok().filter(|_| page.backwards);
        if let Some(room) = &room {
            // Only for readers of the room, and never for tokens it refuses anyway.
            self.rooms.reader(room_id, viewer.user_id).await?;
            let position = match page.from {
                Some(token) => parse_position(token)?,
                None => self.storage.rooms.stream_head("events").await?,
            };
            fetched = self.backfill_before(room, position, page.limit.clamp(1, MAX_BATCH)).await.unwrap_or_else(|e| {
                tracing::warn!(room_id, error = %e, "could not fetch older history");
                0
            });
        }
        let mut result = self.rooms.messages_for(viewer, room_id, page, filter).await?;
        if result.end.is_none()
            && page.to.is_none()
            && fetched > 0
            && !self.storage.rooms.history_edge(room_id).await?.is_empty()
            && let Some(oldest) = self.storage.rooms.oldest_held(room_id).await?
        {
            result.end = Some(position_token(oldest - 1));
        }
        Ok(result)
    }

    /// Fetches history until `wanted` timeline events are held at or before `position`, the
    /// history reaches the room's create event, or no server has more to give. Returns how
    /// many events it stored.
    async fn backfill_before(&self, room: &RoomId, position: i64, wanted: usize) -> ServiceResult<usize> {
        let wanted = i64::try_from(wanted).unwrap_or(i64::MAX);
        let deadline = Instant::now() + PAGE_DEADLINE;
        // One backfill of the room at a time, so each batch is placed below the previous one.
        let Ok(lock) = tokio::time::timeout(PAGE_DEADLINE, self.storage.rooms.lock_history(room.as_str())).await else {
            return Ok(0);
        };
        let _one = lock?;
        let mut stored = 0;
        for _ in 0..MAX_ROUNDS {
            if Instant::now() >= deadline {
                break;
            }
            let held = self.storage.rooms.held_before(room.as_str(), position, wanted).await?;
            if held >= wanted {
                break;
            }
            let edge = self.storage.rooms.history_edge(room.as_str()).await?;
            if edge.is_empty() {
                break;
            }
            let need = usize::try_from(wanted - held).unwrap_or(MAX_BATCH).clamp(10, MAX_BATCH);
            match self.backfill_round(room, &edge, need, deadline).await? {
                0 => break,
                n => stored += n,
            }
        }
        Ok(stored)
    }

    /// Asks the room's other servers, one after the other until `deadline`, for up to `limit`
    /// events before the `edge`, until one gives events this server accepts. Returns how many
    /// it stored. A batch, once fetched, is stored whole: its events' positions follow their order.
    async fn backfill_round(
        &self,
        room: &RoomId,
        edge: &[String],
        limit: usize,
        deadline: Instant,
    ) -> ServiceResult<usize> {
        let Some((_, rules)) = self.rooms.room_rules(room.as_str()).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        let v: Vec<OwnedEventId> = edge.iter().filter_map(|id| OwnedEventId::try_from(id.as_str()).ok()).collect();
        let servers = self.storage.rooms.servers_by_join(room.as_str()).await?;
        for server in servers.iter().filter(|s| s.as_str() != self.server_name.as_str()) {
            if Instant::now() >= deadline {
                break;
            }
            let Ok(server) = ServerName::parse(server) else { continue };
            if self.check_acl(&server, room.as_str()).await.is_err() {
                continue;
            }
            let request = backfill::Request::new(room.to_owned(), v.clone(), UInt::try_from(limit).unwrap_or_default());
            let pdus = match tokio::time::timeout(REQUEST_TIMEOUT, self.call(&server, request)).await {
                Ok(Ok(response)) => response.pdus,
                Ok(Err(e)) => {
                    tracing::info!(%server, room_id = %room, error = %e, "/backfill failed");
                    continue;
                }
                Err(_) => {
                    tracing::info!(%server, room_id = %room, "/backfill timed out");
                    continue;
                }
            };
            // Events of other rooms, forged or malformed ones are dropped here.
            let events = self.verify_all(&pdus[..pdus.len().min(limit)], &rules, room, &server).await;
            let stored = self.store_history(&server, room, &rules, events).await?;
            tracing::debug!(%server, room_id = %room, offered = pdus.len(), stored, "backfilled");
            if stored > 0 {
                return Ok(stored);
            }
        }
        Ok(0)
    }

    /// Accepts verified history events oldest first, at positions below everything held
    /// (older events lower). Events already in the timeline are skipped; an event that cannot
    /// be accepted does not stop the others.
    async fn store_history(
        &self,
        origin: &ServerName,
        room: &RoomId,
        rules: &RoomVersionRules,
        events: Vec<Received>,
    ) -> ServiceResult<usize> {
        let ids: Vec<String> = events.iter().map(|e| e.pdu.event_id.to_string()).collect();
        let held = self.storage.federation.pdus(&ids).await?;
        let mut new: Vec<Received> = events
            .into_iter()
            .filter(|e| !held.iter().any(|p| p.event_id == e.pdu.event_id.as_str() && (!p.outlier || p.rejected)))
            .collect();
        // Depth grows along prev edges: ascending depth is an order in which predecessors come first.
        new.sort_by(|a, b| {
            (a.pdu.depth, a.pdu.origin_server_ts, &a.pdu.event_id).cmp(&(
                b.pdu.depth,
                b.pdu.origin_server_ts,
                &b.pdu.event_id,
            ))
        });
        new.dedup_by(|a, b| a.pdu.event_id == b.pdu.event_id);
        if new.is_empty() {
            return Ok(0);
        }
        let lowest = self.rooms.reserve_history(room.as_str(), new.len()).await?;
        let mut stored = 0;
        for (position, event) in (lowest..).zip(&new) {
            let outcome = match self.history_state_before(origin, room, rules, event).await {
                Ok(before) => self.rooms.accept_backfilled(room.as_str(), event, before, position).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Accepted::Stored) => stored += 1,
                Ok(outcome) => tracing::info!(event_id = %event.pdu.event_id, ?outcome, "history event not stored"),
                Err(e) => {
                    tracing::info!(event_id = %event.pdu.event_id, error = %e, "could not accept a history event")
                }
            }
        }
        Ok(stored)
    }

    /// Makes a history event's auth events known and finds the state before it: over its prev
    /// events when they are held, else as `origin` reports it (the oldest event of a batch).
    async fn history_state_before(
        &self,
        origin: &ServerName,
        room: &RoomId,
        rules: &RoomVersionRules,
        event: &Received,
    ) -> ServiceResult<StateBefore> {
        self.ensure_auth_events(origin, room, rules, event).await?;
        if event.pdu.prev_events.is_empty() {
            // The create event: nothing before it.
            return Ok(StateBefore::Reported(StateIds::new()));
        }
        if self.missing_prevs(event).await?.is_empty() {
            return Ok(StateBefore::Prevs);
        }
        Ok(StateBefore::Reported(self.reported_state(origin, room, rules, event).await?))
    }
}
