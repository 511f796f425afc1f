//! `/search` over room events: PostgreSQL full-text search in the rooms the user has (or had) a
//! membership in, each match checked against the room's history visibility for the user and
//! against the request's filter, ordered by rank or recency, paged by an opaque keyset token,
//! with highlights, context around each result, room state and groupings.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value as JsonValue;

use super::{
    ServiceError, ServiceResult,
    filter::EventFilter,
    rooms::{
        RoomService,
        client_format::Viewer,
        read::{PageRequest, position_token},
        visibility::Visibility,
    },
};
use crate::storage::{
    Storage,
    search::{SearchCursor, SearchHit, SearchQuery},
};

/// The keys searched when the request names none.
const ALL_KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];
/// Results per page when the filter sets no limit, and the most a page may have.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Context events either side of a result, at most.
const MAX_CONTEXT: usize = 20;
/// Index rows examined per page at most: visibility and filters may drop many matches, and a
/// page must still come back in bounded time (the token then continues from where it stopped).
const MAX_EXAMINED: usize = 2000;

/// A search request, in domain terms.
#[derive(Debug)]
pub struct SearchRequest {
    pub term: String,
    /// Empty: all keys.
    pub keys: Vec<String>,
    pub filter: EventFilter,
    pub by_rank: bool,
    pub context: Option<ContextRequest>,
    pub include_state: bool,
    pub group_by_room: bool,
    pub group_by_sender: bool,
    pub next_batch: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct ContextRequest {
    pub before: usize,
    pub after: usize,
    pub include_profile: bool,
}

/// Context around one result.
#[derive(Debug, Default)]
pub struct ResultContext {
    pub before: Vec<JsonValue>,
    pub after: Vec<JsonValue>,
    pub start: Option<String>,
    pub end: Option<String>,
    /// user id → (displayname, avatar_url)
    pub profiles: BTreeMap<String, (Option<String>, Option<String>)>,
}

#[derive(Debug)]
pub struct SearchResultItem {
    pub rank: f64,
    pub room_id: String,
    pub sender: String,
    pub event: JsonValue,
    pub context: Option<ResultContext>,
}

#[derive(Debug, Default)]
pub struct SearchOutcome {
    pub count: u64,
    pub highlights: Vec<String>,
    pub results: Vec<SearchResultItem>,
    pub next_batch: Option<String>,
    pub state: BTreeMap<String, Vec<JsonValue>>,
}

#[derive(Debug)]
pub struct SearchService {
    storage: Storage,
    rooms: Arc<RoomService>,
}

impl SearchService {
    pub fn new(storage: Storage, rooms: Arc<RoomService>) -> Self {
        Self { storage, rooms }
    }

    pub async fn search(&self, user_id: &str, device_id: &str, req: SearchRequest) -> ServiceResult<SearchOutcome> {
        let words = search_words(&req.term);
        if words.is_empty() {
            return Ok(SearchOutcome::default());
        }
        let tsquery = words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & ");
        let keys: Vec<String> =
            if req.keys.is_empty() { ALL_KEYS.iter().map(|k| (*k).to_owned()).collect() } else { req.keys.clone() };
        if let Some(bad) = keys.iter().find(|k| !ALL_KEYS.contains(&k.as_str())) {
            return Err(ServiceError::InvalidParam(format!("unknown search key {bad}")));
        }
        let rooms: Vec<String> = self
            .storage
            .rooms
            .memberships_of(user_id)
            .await?
            .into_iter()
            .map(|m| m.room_id)
            .filter(|r| req.filter.allows_room(r))
            .collect();
        let limit = req.filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let mut cursor = req.next_batch.as_deref().map(parse_batch).transpose()?;
        let count = self.storage.search.count(&rooms, &tsquery, &keys).await?;

        // Visibility per room, loaded once per room that has a match.
        let mut visibility: BTreeMap<String, Visibility> = BTreeMap::new();
        let mut kept: Vec<(SearchHit, crate::storage::rooms::EventRow)> = Vec::new();
        let mut examined = 0;
        let mut exhausted = false;
        while kept.len() < limit && examined < MAX_EXAMINED {
            let batch = (limit - kept.len()).max(limit) as i64;
            let query = SearchQuery {
                rooms: &rooms,
                tsquery: &tsquery,
                keys: &keys,
                by_rank: req.by_rank,
                after: cursor,
                limit: batch,
            };
            let hits = self.storage.search.search(&query).await?;
            if hits.len() < batch as usize {
                exhausted = true;
            }
            examined += hits.len();
            let ids: Vec<String> = hits.iter().map(|h| h.event_id.clone()).collect();
            let mut rows: BTreeMap<String, _> =
                self.storage.rooms.events(&ids).await?.into_iter().map(|r| (r.event_id.clone(), r)).collect();
            for hit in hits {
                cursor = Some(SearchCursor { rank: hit.rank, stream_ordering: hit.stream_ordering });
                let Some(row) = rows.remove(&hit.event_id) else { continue };
                if !visibility.contains_key(&hit.room_id) {
                    visibility.insert(hit.room_id.clone(), self.rooms.visibility(&hit.room_id, user_id).await?);
                }
                let Some(vis) = visibility.get(&hit.room_id) else { continue };
                if !vis.allows(hit.stream_ordering) || !req.filter.allows(&row) {
                    continue;
                }
                // An erased user's event the searcher may only have pruned is no match: the
                // words found are in the content they may not see.
                let rules = self.rooms.rules_of(&hit.room_id).await?;
                let mut one = [row];
                if !self.rooms.prune_erased(vis, &mut one, &rules).await?.is_empty() {
                    continue;
                }
                let [row] = one;
                kept.push((hit, row));
                if kept.len() == limit {
                    break;
                }
            }
            if exhausted {
                break;
            }
        }
        // Another page exists unless the index ran out before the page filled.
        let next_batch = if exhausted && kept.len() < limit { None } else { cursor.map(|c| format_batch(&c)) };

        let viewer = Viewer { user_id, device_id: Some(device_id) };
        let mut results = Vec::with_capacity(kept.len());
        let mut highlights = std::collections::BTreeSet::new();
        for (hit, row) in kept {
            let rules = self.rooms.rules_of(&hit.room_id).await?;
            let event = self.rooms.render(std::slice::from_ref(&row), &rules, viewer).pop().unwrap_or_default();
            collect_highlights(&event, &words, &mut highlights);
            let context = match req.context {
                Some(c) => Some(self.context(viewer, &row, c).await?),
                None => None,
            };
            results.push(SearchResultItem {
                rank: f64::from(hit.rank),
                room_id: hit.room_id,
                sender: row.sender.clone(),
                event,
                context,
            });
        }
        let mut state = BTreeMap::new();
        if req.include_state {
            let result_rooms: std::collections::BTreeSet<&str> = results.iter().map(|r| r.room_id.as_str()).collect();
            for room in result_rooms {
                state.insert(room.to_owned(), self.rooms.state_for(viewer, room).await?);
            }
        }
        Ok(SearchOutcome {
            count: count.max(0).unsigned_abs(),
            highlights: highlights.into_iter().collect(),
            results,
            next_batch,
            state,
        })
    }

    async fn context(
        &self,
        viewer: Viewer<'_>,
        row: &crate::storage::rooms::EventRow,
        c: ContextRequest,
    ) -> ServiceResult<ResultContext> {
        let pos = row.stream_ordering;
        let filter = EventFilter::default();
        let (before, after) = (c.before.min(MAX_CONTEXT), c.after.min(MAX_CONTEXT));
        let before_page = self
            .rooms
            .messages_for(viewer, &row.room_id, PageRequest::back_from(&position_token(pos - 1), before), &filter)
            .await?;
        let after_page = self
            .rooms
            .messages_for(viewer, &row.room_id, PageRequest::on_from(&position_token(pos), after), &filter)
            .await?;
        let mut profiles = BTreeMap::new();
        if c.include_profile {
            let senders: std::collections::BTreeSet<&str> = std::iter::once(row.sender.as_str())
                .chain(before_page.chunk.iter().chain(&after_page.chunk).filter_map(|e| e["sender"].as_str()))
                .collect();
            for sender in senders {
                let member = self.storage.rooms.current_state_event(&row.room_id, "m.room.member", sender).await?;
                let content = member
                    .and_then(|m| serde_json::from_str::<JsonValue>(&m.pdu).ok())
                    .map(|pdu| pdu["content"].clone())
                    .unwrap_or_default();
                let field = |k: &str| content.get(k).and_then(JsonValue::as_str).map(str::to_owned);
                profiles.insert(sender.to_owned(), (field("displayname"), field("avatar_url")));
            }
        }
        Ok(ResultContext {
            before: before_page.chunk,
            after: after_page.chunk,
            start: before_page.end,
            end: after_page.end,
            profiles,
        })
    }
}

/// The words of a search term as the `simple` text-search configuration sees them: lowercase
/// runs of letters and digits (anything else separates words and cannot reach `to_tsquery`).
pub fn search_words(term: &str) -> Vec<String> {
    let mut words: Vec<String> =
        term.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).take(32).collect();
    let mut seen = std::collections::BTreeSet::new();
    words.retain(|w| seen.insert(w.clone()));
    words
}

/// Words of a result's searchable text that a search word is a prefix of.
fn collect_highlights(event: &JsonValue, words: &[String], out: &mut std::collections::BTreeSet<String>) {
    for field in ["body", "name", "topic"] {
        let Some(text) = event["content"][field].as_str() else { continue };
        for token in text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()) {
            let lower = token.to_lowercase();
            if words.iter().any(|w| lower.starts_with(w.as_str())) {
                out.insert(token.to_owned());
            }
        }
    }
}

fn format_batch(c: &SearchCursor) -> String {
    format!("{}_{}", c.rank.to_bits(), c.stream_ordering)
}

fn parse_batch(token: &str) -> ServiceResult<SearchCursor> {
    let bad = || ServiceError::InvalidParam("invalid next_batch token".into());
    let (rank, pos) = token.split_once('_').ok_or_else(bad)?;
    let rank = f32::from_bits(rank.parse::<u32>().map_err(|_| bad())?);
    if !rank.is_finite() {
        return Err(bad());
    }
    Ok(SearchCursor { rank, stream_ordering: pos.parse().map_err(|_| bad())? })
}

#[cfg(test)]
mod tests {
    use super::{format_batch, parse_batch, search_words};
    use crate::storage::search::SearchCursor;

    #[test]
    fn words_are_lowercase_alphanumeric_runs() {
        assert_eq!(search_words("Bescheid vom 27.11., Müller & Co:*"), ["bescheid", "vom", "27", "11", "müller", "co"]);
        assert!(search_words("  !&|:* ()").is_empty());
    }

    #[test]
    fn batch_tokens_round_trip_and_bad_ones_are_refused() {
        let c = SearchCursor { rank: 0.1, stream_ordering: 42 };
        assert_eq!(parse_batch(&format_batch(&c)).unwrap(), c);
        assert!(parse_batch("abc").is_err());
        assert!(parse_batch("1_x").is_err());
        assert!(parse_batch(&format!("{}_1", f32::NAN.to_bits())).is_err());
    }
}
