//! Relations between events: `/relations`, `/threads`, and the aggregations bundled into
//! `unsigned.m.relations` (thread summaries, the latest edit, references).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value as JsonValue, json};

use super::{
    RoomService,
    client_format::Viewer,
    read::{parse_position, position_token},
};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::rooms::EventRow,
};

/// How deep `recurse=true` follows relations of relations (the spec's suggested minimum).
const MAX_RECURSION: usize = 3;
/// Relations per page unless asked otherwise, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// A page of `/relations`.
#[derive(Debug, Default)]
pub struct RelationsPage {
    pub chunk: Vec<JsonValue>,
    pub next_batch: Option<String>,
    pub recursion_depth: Option<usize>,
}

/// What `/relations` asks for.
#[derive(Debug)]
pub struct RelationsQuery<'a> {
    pub room_id: &'a str,
    pub event_id: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub backwards: bool,
    pub limit: Option<usize>,
    pub recurse: bool,
}

impl RoomService {
    /// Adds `unsigned.m.relations` to events rendered for `viewer`.
    pub async fn bundle_aggregations(&self, viewer: Viewer<'_>, events: &mut [JsonValue]) -> ServiceResult<()> {
        let ids: Vec<String> =
            events.iter().filter_map(|e| e.get("event_id").and_then(JsonValue::as_str).map(str::to_owned)).collect();
        self.bundle_aggregations_of(viewer, events, ids).await
    }

    /// [`Self::bundle_aggregations`] for the events among `events` that others relate to
    /// (`related`, as the read of the events found them): nothing is read when there are none.
    pub async fn bundle_related_aggregations(
        &self,
        viewer: Viewer<'_>,
        events: &mut [JsonValue],
        related: &BTreeSet<String>,
    ) -> ServiceResult<()> {
        self.bundle_aggregations_of(viewer, events, related.iter().cloned().collect()).await
    }

    /// Adds `unsigned.m.relations` to those of `events` named in `ids`.
    async fn bundle_aggregations_of(
        &self,
        viewer: Viewer<'_>,
        events: &mut [JsonValue],
        ids: Vec<String>,
    ) -> ServiceResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let rows = self.storage.rooms.aggregations(&ids, viewer.user_id).await?;
        if rows.is_empty() {
            return Ok(());
        }
        // The latest thread reply and edit are bundled whole.
        let latest: Vec<String> =
            rows.iter().filter(|r| r.rel_type != "m.reference").map(|r| r.latest.clone()).collect();
        let mut latest_rows = self.storage.rooms.events(&latest).await?;
        self.prune_erased_bundled(viewer, &mut latest_rows).await?;
        let mut rendered = BTreeMap::new();
        for row in &latest_rows {
            let rules = self.rules_of(&row.room_id).await?;
            rendered.insert(row.event_id.clone(), self.render(std::slice::from_ref(row), &rules, viewer).remove(0));
        }
        let mut by_event: BTreeMap<&str, serde_json::Map<String, JsonValue>> = BTreeMap::new();
        for r in &rows {
            let entry = by_event.entry(r.relates_to.as_str()).or_default();
            match r.rel_type.as_str() {
                "m.thread" => {
                    if let Some(ev) = rendered.get(&r.latest) {
                        entry.insert(
                            "m.thread".into(),
                            json!({"latest_event": ev, "count": r.count, "current_user_participated": r.participated}),
                        );
                    }
                }
                "m.replace" => {
                    if let Some(ev) = rendered.get(&r.latest) {
                        entry.insert("m.replace".into(), ev.clone());
                    }
                }
                _ => {
                    let chunk: Vec<JsonValue> = r.event_ids.iter().map(|id| json!({"event_id": id})).collect();
                    entry.insert("m.reference".into(), json!({"chunk": chunk}));
                }
            }
        }
        for ev in events.iter_mut() {
            let Some(id) = ev.get("event_id").and_then(JsonValue::as_str).map(str::to_owned) else { continue };
            let Some(mut relations) = by_event.remove(id.as_str()) else { continue };
            // The root's author takes part in their own thread.
            if let Some(thread) = relations.get_mut("m.thread")
                && ev.get("sender").and_then(JsonValue::as_str) == Some(viewer.user_id)
            {
                thread["current_user_participated"] = true.into();
            }
            // Redacted events carry no aggregations.
            if ev.pointer("/unsigned/redacted_because").is_some() {
                continue;
            }
            if let Some(obj) = ev.as_object_mut() {
                let unsigned = obj.entry("unsigned").or_insert_with(|| json!({}));
                unsigned["m.relations"] = JsonValue::Object(relations);
            }
        }
        Ok(())
    }

    /// `/relations`: events relating to an event the viewer can see.
    pub async fn relations_for(&self, viewer: Viewer<'_>, q: RelationsQuery<'_>) -> ServiceResult<RelationsPage> {
        // The parent must be visible (404 otherwise).
        self.event_for(viewer, q.room_id, q.event_id).await?;
        let rules = self.rules_of(q.room_id).await?;
        let vis = self.visibility(q.room_id, viewer.user_id).await?;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let from = q.from.map(parse_position).transpose()?;
        let to = q.to.map(parse_position).transpose()?;
        // Positions strictly inside (after, before).
        let (before, after) = if q.backwards {
            (from.map_or(i64::MAX, |f| f + 1), to.unwrap_or(i64::MIN))
        } else {
            (to.map_or(i64::MAX, |t| t + 1), from.unwrap_or(i64::MIN))
        };
        let (mut rows, depth) = if q.recurse {
            self.relation_tree(q.event_id, before, after).await?
        } else {
            let rows = self
                .storage
                .rooms
                .relations(q.event_id, q.rel_type, q.event_type, before, after, MAX_LIMIT as i64, !q.backwards)
                .await?;
            (rows, None)
        };
        if q.recurse {
            rows.retain(|r| {
                q.event_type.is_none_or(|t| r.event_type == t)
                    && q.rel_type.is_none_or(|want| relation_type(r).as_deref() == Some(want))
            });
            rows.sort_by_key(|r| if q.backwards { -r.stream_ordering } else { r.stream_ordering });
        }
        rows.retain(|r| vis.allows(r.stream_ordering));
        let more = rows.len() > limit;
        rows.truncate(limit);
        self.prune_erased(&vis, &mut rows, &rules).await?;
        let next_batch = if more {
            rows.last().map(|r| position_token(if q.backwards { r.stream_ordering - 1 } else { r.stream_ordering }))
        } else {
            None
        };
        Ok(RelationsPage { chunk: self.render(&rows, &rules, viewer), next_batch, recursion_depth: depth })
    }

    /// Bundled latest edits and thread replies of erased users, pruned as in the timeline (the
    /// order of `rows` is not kept). Most bundles hold none: the reader's visibility is loaded
    /// only when one does.
    async fn prune_erased_bundled(&self, viewer: Viewer<'_>, rows: &mut [EventRow]) -> ServiceResult<()> {
        let ours = format!(":{}", self.server_name);
        let senders: Vec<String> =
            rows.iter().filter(|r| r.sender.ends_with(&ours)).map(|r| r.sender.clone()).collect();
        if senders.is_empty() || self.storage.users.erased_among(&senders).await?.is_empty() {
            return Ok(());
        }
        rows.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        for of_room in rows.chunk_by_mut(|a, b| a.room_id == b.room_id) {
            let room = of_room[0].room_id.clone();
            let vis = self.visibility(&room, viewer.user_id).await?;
            let rules = self.rules_of(&room).await?;
            self.prune_erased(&vis, of_room, &rules).await?;
        }
        Ok(())
    }

    /// Relations of relations, up to `MAX_RECURSION` levels; returns the depth reached.
    async fn relation_tree(
        &self,
        root: &str,
        before: i64,
        after: i64,
    ) -> ServiceResult<(Vec<EventRow>, Option<usize>)> {
        let mut out = Vec::new();
        let mut frontier = vec![root.to_owned()];
        let mut depth = 0;
        while !frontier.is_empty() && depth < MAX_RECURSION {
            let mut next = Vec::new();
            for parent in &frontier {
                let rows =
                    self.storage.rooms.relations(parent, None, None, before, after, MAX_LIMIT as i64, true).await?;
                next.extend(rows.iter().map(|r| r.event_id.clone()));
                out.extend(rows);
            }
            if next.is_empty() {
                break;
            }
            depth += 1;
            frontier = next;
        }
        Ok((out, Some(depth)))
    }

    /// `/threads`: thread roots, latest activity first, optionally only threads the viewer took
    /// part in.
    pub async fn threads_for(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        from: Option<&str>,
        participated: bool,
        limit: Option<usize>,
    ) -> ServiceResult<(Vec<JsonValue>, Option<String>)> {
        let rules = self.rules_of(room_id).await?;
        let vis = self.visibility(room_id, viewer.user_id).await?;
        if vis.memberships.is_empty() && !vis.settings.last().is_some_and(|(_, s)| s == "world_readable") {
            return Err(ServiceError::Forbidden(format!("{} is not in this room", viewer.user_id)));
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let before = from.map(parse_position).transpose()?.map_or(i64::MAX, |p| p + 1);
        let roots = self
            .storage
            .rooms
            .thread_roots(
                room_id,
                before,
                i64::try_from(limit + 1).unwrap_or(i64::MAX),
                participated.then_some(viewer.user_id),
            )
            .await?;
        let more = roots.len() > limit;
        let roots: Vec<(String, i64)> = roots.into_iter().take(limit).collect();
        let next_batch = if more { roots.last().map(|(_, latest)| position_token(latest - 1)) } else { None };
        let ids: Vec<String> = roots.iter().map(|(id, _)| id.clone()).collect();
        let mut rows = self.storage.rooms.events(&ids).await?;
        rows.retain(|r| vis.allows(r.stream_ordering));
        // Keep the order of latest activity.
        rows.sort_by_key(|r| ids.iter().position(|id| *id == r.event_id));
        self.prune_erased(&vis, &mut rows, &rules).await?;
        let mut chunk = self.render(&rows, &rules, viewer);
        self.bundle_aggregations(viewer, &mut chunk).await?;
        Ok((chunk, next_batch))
    }
}

/// The `rel_type` an event's content declares.
fn relation_type(row: &EventRow) -> Option<String> {
    super::client_format::content_of(&row.pdu)
        .pointer("/m.relates_to/rel_type")
        .and_then(JsonValue::as_str)
        .map(str::to_owned)
}
