//! The sections of a sync response for one room: joined (timeline, state, summary, unread
//! counts), left, and the stripped state of invites and knocks.

use std::collections::BTreeSet;

use ruma::{
    OwnedUserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v3::{JoinedRoom, LeftRoom, RoomSummary, State, StateEvents, Timeline},
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use super::{DEFAULT_TIMELINE_LIMIT, SyncRequest, SyncService, SyncToken, raw, uint};
use crate::{
    service::{
        ServiceResult,
        rooms::{
            client_format::{Viewer, content_of, stripped},
            read::position_token,
        },
    },
    storage::rooms::{EventRow, MembershipRow, RecentEvent, SyncMembership},
};

impl SyncService {
    /// The stripped state an invitee or knocker sees, with their own membership event.
    pub(super) async fn stripped_state(
        &self,
        room_id: &str,
        membership_event: &str,
    ) -> ServiceResult<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
        const TYPES: &[&str] = &[
            "m.room.create",
            "m.room.join_rules",
            "m.room.name",
            "m.room.avatar",
            "m.room.canonical_alias",
            "m.room.encryption",
            "m.room.topic",
        ];
        // An invite from another server to a room this server is not in: the state it sent.
        if let Some(state) = self.storage.rooms.remote_invite_state(membership_event).await? {
            let mut out: Vec<Raw<ruma::events::AnyStrippedStateEvent>> = state
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| serde_json::value::to_raw_value(v).ok())
                .map(Raw::from_json)
                .collect();
            if let Some(me) = self.storage.rooms.event(membership_event).await? {
                out.retain(|e| {
                    e.get_field::<String>("state_key").ok().flatten().as_deref() != me.state_key.as_deref()
                        || e.get_field::<String>("type").ok().flatten().as_deref() != Some("m.room.member")
                });
                out.push(raw(&stripped(&me)));
            }
            return Ok(out);
        }
        let mut rows: Vec<EventRow> = self
            .storage
            .rooms
            .current_state(room_id)
            .await?
            .into_iter()
            .filter(|r| TYPES.contains(&r.event_type.as_str()))
            .collect();
        if let Some(me) = self.storage.rooms.event(membership_event).await? {
            if let Some(inviter) = self.storage.rooms.current_state_event(room_id, "m.room.member", &me.sender).await?
                && inviter.event_id != me.event_id
            {
                rows.push(inviter);
            }
            rows.push(me);
        }
        Ok(rows.iter().map(|r| raw(&stripped(r))).collect())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn joined_room(
        &self,
        req: &SyncRequest,
        membership: &SyncMembership,
        recent: Option<Vec<RecentEvent>>,
        since: Option<SyncToken>,
        now: SyncToken,
        changed_membership: bool,
        viewer: Viewer<'_>,
        push_rules: &ruma::push::Ruleset,
        displayname: &str,
    ) -> ServiceResult<Option<JoinedRoom>> {
        // All state for a (re)joined room or a `full_state` request; the timeline goes back before
        // `since` only for a (re)joined room (spec: with `full_state` "the timeline will still be
        // limited by the since parameter").
        let room_id = membership.row.room_id.as_str();
        let full = req.full_state || changed_membership;
        let from = if changed_membership { 0 } else { since.map_or(0, |s| s.events) };
        let limit = timeline_limit(req);
        let batch_size = timeline_batch(limit);
        // The timeline, the room's rules, its current state and its members at once.
        let timeline = async {
            // Newest first, one more than the limit to learn whether the timeline is limited.
            // The first batch after the token came with the sync's basis.
            let mut first = if changed_membership { None } else { recent };
            let mut rows = Vec::new();
            // The events others relate to: only their aggregations are read.
            let mut related = BTreeSet::new();
            let mut cursor = now.events;
            let mut limited = false;
            // Whether `rows` are all the events in `(from, now]`: one batch that reached `from`,
            // every event of it allowed by the filter.
            let mut complete = true;
            loop {
                let batch = match first.take() {
                    Some(recent) => recent.into_iter().map(|e| (e.row, e.related)).collect(),
                    None => {
                        self.storage.rooms.events_backwards_with_relations(room_id, from, cursor, batch_size).await?
                    }
                };
                let full_batch = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= batch_size;
                complete &= !full_batch;
                for (row, has_relations) in batch {
                    cursor = row.stream_ordering - 1;
                    if req.filter.timeline.allows(&row) {
                        if rows.len() == limit {
                            limited = true;
                            break;
                        }
                        if has_relations {
                            related.insert(row.event_id.clone());
                        }
                        rows.push(row);
                    } else {
                        complete = false;
                    }
                }
                if limited || !full_batch {
                    break;
                }
            }
            Ok::<_, crate::service::ServiceError>((rows, related, limited, complete && !limited))
        };
        // The state is kept between syncs: a message changes no state, so usually only the
        // timeline is read.
        let ((mut rows, related, limited, mut complete), room_rules, room_state) = tokio::try_join!(
            timeline,
            self.rooms.rules_of(room_id),
            self.room_state(room_id, membership.state_version),
        )?;
        let (current, members) = (&room_state.current, &room_state.members);
        if !full && rows.is_empty() && !req.full_state {
            return Ok(None);
        }
        rows.reverse();
        // Visibility: a joined user sees everything since their join and shared history. Events
        // after the join that is still the user's membership were all sent while joined.
        if rows.first().is_some_and(|r| r.stream_ordering <= membership.row.stream_ordering) {
            complete = false;
            let vis = self.rooms.visibility(room_id, viewer.user_id).await?;
            rows.retain(|r| vis.allows(r.stream_ordering));
            self.rooms.prune_erased(&vis, &mut rows, &room_rules).await?;
        }
        let first_pos = rows.first().map_or(now.events, |r| r.stream_ordering);
        let prev_batch = position_token(first_pos - 1);

        // State: in full, the state at the timeline's start; else the changes between the
        // token and the timeline's start.
        let timeline_ids: BTreeSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        let senders: BTreeSet<&str> = rows.iter().map(|r| r.sender.as_str()).collect();
        let state_rows: Vec<&EventRow> = current
            .iter()
            .filter(|r| !timeline_ids.contains(r.event_id.as_str()))
            .filter(|r| {
                let in_gap = r.stream_ordering > from && r.stream_ordering < first_pos;
                if !req.filter.state.lazy_load_members || r.event_type != "m.room.member" {
                    return full || in_gap;
                }
                // Lazy-loaded members: the timeline's senders (the client may not know them yet;
                // redundant ones are allowed), the user's own membership with full state, and
                // every membership change in the gap of an incremental sync (spec: MUST).
                let key = r.state_key.as_deref().unwrap_or_default();
                senders.contains(key) || (full && key == viewer.user_id) || (!full && in_gap)
            })
            .filter(|r| req.filter.state.allows(r))
            .collect();
        let state: Vec<JsonValue> = state_rows
            .iter()
            .map(|r| self.rooms.render(std::slice::from_ref(*r), &room_rules, viewer).remove(0))
            .collect();
        let mut timeline = self.rooms.render(&rows, &room_rules, viewer);
        let joined_n = room_state.joined();
        // The timeline's aggregations and the unread counts at once.
        let (_, (notifications, highlights, threads)) = tokio::try_join!(
            self.rooms.bundle_related_aggregations(viewer, &mut timeline, &related),
            self.unread_counts(
                room_id,
                viewer.user_id,
                (membership.read_up_to, Some(membership.row.stream_ordering)),
                joined_n,
                (push_rules, displayname),
                current,
                req.filter.timeline.unread_thread_notifications,
                complete.then_some((from, rows.as_slice())),
            ),
        )?;

        let mut room = JoinedRoom::new();
        room.timeline = Timeline::new();
        room.timeline.limited = limited;
        room.timeline.prev_batch = Some(prev_batch);
        room.timeline.events = timeline.iter().map(raw).collect();
        room.state = State::Before(state_events(state.iter().map(raw).collect()));

        // Summary and unread counts.
        let invited_n = members.iter().filter(|m| m.membership == "invite").count();
        let mut summary = RoomSummary::new();
        summary.joined_member_count = Some(uint(joined_n));
        summary.invited_member_count = Some(uint(invited_n));
        // A redacted name or alias keeps no content.
        let has_name = current.iter().any(|r| {
            (r.event_type == "m.room.name" || r.event_type == "m.room.canonical_alias")
                && r.redacted_by.is_none()
                && !content_of(&r.pdu).as_object().is_none_or(|c| c.is_empty())
        });
        if !has_name {
            summary.heroes = members
                .iter()
                .filter(|m| m.user_id != viewer.user_id && (m.membership == "join" || m.membership == "invite"))
                .take(5)
                .filter_map(|m| OwnedUserId::try_from(m.user_id.as_str()).ok())
                .collect();
        }
        room.summary = summary;
        room.unread_notifications = UnreadNotificationsCount::new();
        room.unread_notifications.notification_count = Some(uint(notifications));
        room.unread_notifications.highlight_count = Some(uint(highlights));
        room.unread_thread_notifications = threads;
        Ok(Some(room))
    }

    pub(super) async fn left_room(
        &self,
        req: &SyncRequest,
        m: &MembershipRow,
        since: Option<i64>,
        viewer: Viewer<'_>,
    ) -> ServiceResult<LeftRoom> {
        let rules = self.rooms.rules_of(&m.room_id).await?;
        let limit = timeline_limit(req);
        let from = since.unwrap_or(0);
        let mut rows = self
            .storage
            .rooms
            .events_backwards(&m.room_id, from, m.stream_ordering, i64::try_from(limit + 1).unwrap_or(11))
            .await?;
        let limited = rows.len() > limit;
        rows.truncate(limit);
        rows.reverse();
        let vis = self.rooms.visibility(&m.room_id, viewer.user_id).await?;
        rows.retain(|r| vis.allows(r.stream_ordering) && req.filter.timeline.allows(r));
        self.rooms.prune_erased(&vis, &mut rows, &rules).await?;
        let first = rows.first().map_or(m.stream_ordering, |r| r.stream_ordering);
        let state_ids: Vec<String> = self
            .storage
            .rooms
            .state_ids_at(&m.event_id, false)
            .await?
            .into_iter()
            .map(|(_, _, e)| e)
            .filter(|e| !rows.iter().any(|r| &r.event_id == e))
            .collect();
        let state_rows: Vec<EventRow> = self
            .storage
            .rooms
            .events(&state_ids)
            .await?
            .into_iter()
            .filter(|r| since.is_none() || r.stream_ordering > from && r.stream_ordering < first || req.full_state)
            .collect();
        let mut room = LeftRoom::new();
        room.timeline = Timeline::new();
        room.timeline.limited = limited;
        room.timeline.prev_batch = Some(position_token(first - 1));
        room.timeline.events = self.rooms.render(&rows, &rules, viewer).iter().map(raw).collect();
        room.state =
            State::Before(state_events(self.rooms.render(&state_rows, &rules, viewer).iter().map(raw).collect()));
        Ok(room)
    }
}

fn state_events(events: Vec<Raw<ruma::events::AnySyncStateEvent>>) -> StateEvents {
    let mut s = StateEvents::default();
    s.events = events;
    s
}

/// How many timeline events a sync's filter asks for per room.
pub(super) fn timeline_limit(req: &SyncRequest) -> usize {
    req.filter.timeline.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT).clamp(1, 500)
}

/// How many events one read of a room's timeline takes: one more than twice the limit, so that
/// events the filter drops rarely need a second read and a full batch tells the timeline is
/// limited.
pub(super) fn timeline_batch(limit: usize) -> i64 {
    i64::try_from(limit * 2 + 1).unwrap_or(1001)
}
