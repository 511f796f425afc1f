//! `POST /search`: server-side search over room events.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, UInt,
    api::client::search::search_events::v3::{
        self as search, EventContextResult, GroupingKey, OrderBy, ResultCategories, ResultGroup, ResultGroupMap,
        ResultRoomEvents, SearchResult, UserProfile,
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{
        ServiceError,
        filter::EventFilter,
        search::{ContextRequest, SearchOutcome, SearchRequest},
    },
    state::AppState,
};

fn raw<T>(value: &JsonValue) -> Result<Raw<T>, ApiError> {
    serde_json::value::to_raw_value(value).map(Raw::from_json).map_err(|e| ServiceError::Internal(e.to_string()).into())
}

fn uint(n: usize) -> UInt {
    UInt::try_from(n).unwrap_or(UInt::MAX)
}

/// # `POST /_matrix/client/v3/search`
pub(super) async fn search(State(state): State<AppState>, req: Ruma<search::Request>) -> ApiResult<search::Response> {
    let session = req.identity;
    let Some(criteria) = req.body.search_categories.room_events else {
        // No category asked for: nothing to find.
        return Ok(search::Response::new(ResultCategories::new()).into());
    };
    let filter_json = serde_json::to_value(&criteria.filter).map_err(|e| ApiError::bad_json(e.to_string()))?;
    let filter = EventFilter::from_json(&filter_json).map_err(ApiError::bad_json)?;
    let keys = criteria.keys.unwrap_or_default().iter().map(|k| k.as_str().to_owned()).collect();
    let by_rank = match criteria.order_by {
        None | Some(OrderBy::Rank) => true,
        Some(OrderBy::Recent) => false,
        Some(other) => return Err(ApiError::invalid_param(format!("unknown order_by {}", other.as_str()))),
    };
    let context = (!criteria.event_context.is_default()).then(|| ContextRequest {
        before: usize::try_from(criteria.event_context.before_limit).unwrap_or(usize::MAX),
        after: usize::try_from(criteria.event_context.after_limit).unwrap_or(usize::MAX),
        include_profile: criteria.event_context.include_profile,
    });
    let group_keys: Vec<GroupingKey> = criteria.groupings.group_by.iter().filter_map(|g| g.key.clone()).collect();
    let request = SearchRequest {
        term: criteria.search_term,
        keys,
        filter,
        by_rank,
        context,
        include_state: criteria.include_state.unwrap_or(false),
        group_by_room: group_keys.contains(&GroupingKey::RoomId),
        group_by_sender: group_keys.contains(&GroupingKey::Sender),
        next_batch: req.body.next_batch,
    };
    let (by_room, by_sender) = (request.group_by_room, request.group_by_sender);
    let outcome = state.search.search(&session.user_id, &session.device_id, request).await?;
    let room_events = room_events(outcome, by_room, by_sender)?;
    let mut categories = ResultCategories::new();
    categories.room_events = room_events;
    Ok(search::Response::new(categories).into())
}

fn room_events(outcome: SearchOutcome, by_room: bool, by_sender: bool) -> Result<ResultRoomEvents, ApiError> {
    let mut events = ResultRoomEvents::new();
    events.count = Some(UInt::try_from(outcome.count).unwrap_or(UInt::MAX));
    events.highlights = outcome.highlights;
    events.next_batch = outcome.next_batch.clone();
    let mut rooms: BTreeMap<OwnedRoomId, Vec<OwnedEventId>> = BTreeMap::new();
    let mut senders: BTreeMap<OwnedUserId, Vec<OwnedEventId>> = BTreeMap::new();
    for item in outcome.results {
        if let Some(id) = item.event["event_id"].as_str().and_then(|e| OwnedEventId::try_from(e).ok()) {
            if let Ok(room) = OwnedRoomId::try_from(item.room_id.as_str()) {
                rooms.entry(room).or_default().push(id.clone());
            }
            if let Ok(sender) = OwnedUserId::try_from(item.sender.as_str()) {
                senders.entry(sender).or_default().push(id);
            }
        }
        let mut result = SearchResult::new();
        result.rank = Some(item.rank);
        result.result = Some(raw(&item.event)?);
        if let Some(c) = item.context {
            let mut context = EventContextResult::new();
            context.events_before = c.before.iter().map(raw).collect::<Result<_, _>>()?;
            context.events_after = c.after.iter().map(raw).collect::<Result<_, _>>()?;
            context.start = c.start;
            context.end = c.end;
            for (user, (displayname, avatar)) in c.profiles {
                let Ok(user) = OwnedUserId::try_from(user) else { continue };
                let mut profile = UserProfile::new();
                profile.displayname = displayname;
                profile.avatar_url = avatar.map(OwnedMxcUri::from);
                context.profile_info.insert(user, profile);
            }
            result.context = context;
        }
        events.results.push(result);
    }
    for (room, state) in outcome.state {
        let Ok(room) = OwnedRoomId::try_from(room) else { continue };
        events.state.insert(room, state.iter().map(raw).collect::<Result<_, _>>()?);
    }
    let group = |order: usize, results: Vec<OwnedEventId>| {
        let mut g = ResultGroup::new();
        g.order = Some(uint(order));
        g.results = results;
        g.next_batch = outcome.next_batch.clone();
        g
    };
    if by_room {
        let map = rooms.into_iter().enumerate().map(|(n, (room, ids))| (room, group(n, ids))).collect();
        events.groups.insert(ResultGroupMap::RoomId(map));
    }
    if by_sender {
        let map = senders.into_iter().enumerate().map(|(n, (user, ids))| (user, group(n, ids))).collect();
        events.groups.insert(ResultGroupMap::Sender(map));
    }
    Ok(events)
}
