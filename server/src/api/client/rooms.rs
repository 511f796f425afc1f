//! Rooms and their events: creating rooms, sending messages and state, redacting, and reading
//! events, state, history and context.

use axum::extract::State;
use ruma::api::{
    Direction,
    client::{
        context::get_context::v3 as get_context,
        message::{get_message_events::v3 as get_messages, send_message_event::v3 as send_message},
        redact::redact_event::v3 as redact,
        room::{create_room::v3 as create_room, get_room_event::v3 as get_event, upgrade_room::v3 as upgrade},
        state::{
            get_state_event_for_key::v3 as get_state_for_key, get_state_events::v3 as get_state,
            send_state_event::v3 as send_state,
        },
    },
};
use serde_json::{Map, Value as JsonValue};

use super::json::{from_value, raw_list, to_value};
use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{
        filter::EventFilter,
        rooms::{CreateRoom, SendEvent, Txn, client_format::Viewer, persist::raw_content, read::PageRequest},
    },
    state::AppState,
};

fn viewer(session: &crate::service::sessions::Session) -> Viewer<'_> {
    Viewer { user_id: &session.user_id, device_id: Some(&session.device_id) }
}

pub(super) fn user_id(session: &crate::service::sessions::Session) -> Result<ruma::OwnedUserId, ApiError> {
    ruma::OwnedUserId::try_from(session.user_id.as_str()).map_err(|e| ApiError::bad_json(e.to_string()))
}

/// Sends an event as the session's user (which counts as the user's activity for presence).
async fn send(
    state: &AppState,
    session: crate::service::sessions::Session,
    room_id: ruma::OwnedRoomId,
    kind: String,
    state_key: Option<String>,
    content: Map<String, JsonValue>,
    redacts: Option<ruma::OwnedEventId>,
    txn_id: Option<String>,
) -> Result<ruma::OwnedEventId, ApiError> {
    let sender = user_id(&session)?;
    let sender_device = Some(session.device_id.clone());
    let txn = txn_id.map(|txn_id| Txn { device_id: session.device_id, txn_id });
    let ev = SendEvent { room_id, sender, kind, state_key, content, redacts, txn, sender_device };
    let event_id = if ev.kind == crate::service::rooms::mls::COMMIT_TYPE {
        // Ordered by the room's hub, which may be another server.
        state.federation.send_mls_commit(ev).await?
    } else {
        state.rooms.send(ev).await?
    };
    state.presence.note_activity(&session.user_id).await;
    Ok(event_id)
}

/// A ruma room event filter in the service's terms.
fn event_filter<T: serde::Serialize>(filter: &T) -> Result<EventFilter, ApiError> {
    EventFilter::from_json(&to_value(filter)?).map_err(ApiError::bad_json)
}

/// # `POST /_matrix/client/v3/createRoom`
pub(super) async fn create_room(
    State(state): State<AppState>,
    req: Ruma<create_room::Request>,
) -> ApiResult<create_room::Response> {
    let body = req.body;
    let mut initial_state = Vec::with_capacity(body.initial_state.len());
    for ev in &body.initial_state {
        let v: JsonValue = to_value(ev)?;
        let kind = v
            .get("type")
            .and_then(JsonValue::as_str)
            .ok_or_else(|| ApiError::bad_json("initial_state needs a type"))?;
        let key = v.get("state_key").and_then(JsonValue::as_str).unwrap_or_default();
        let content = match v.get("content") {
            Some(JsonValue::Object(c)) => c.clone(),
            _ => return Err(ApiError::bad_json("initial_state content must be an object")),
        };
        initial_state.push((kind.to_owned(), key.to_owned(), content));
    }
    let room_id = state
        .third_party_invites
        .create_room(
            CreateRoom {
                creator: user_id(&req.identity)?,
                room_version: body.room_version.map(|v| v.to_string()),
                preset: body.preset.map(|p| p.as_str().to_owned()),
                visibility_public: body.visibility == ruma::api::client::room::Visibility::Public,
                creation_content: body.creation_content.as_ref().map(raw_content).transpose()?.unwrap_or_default(),
                power_level_content_override: body
                    .power_level_content_override
                    .as_ref()
                    .map(raw_content)
                    .transpose()?,
                initial_state,
                name: body.name,
                topic: body.topic,
                room_alias_name: body.room_alias_name,
                invite: body.invite,
                is_direct: body.is_direct,
            },
            &body.invite_3pid,
        )
        .await?;
    Ok(create_room::Response::new(room_id).into())
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
pub(super) async fn send_message(
    State(state): State<AppState>,
    req: Ruma<send_message::Request>,
) -> ApiResult<send_message::Response> {
    let txn = Some(req.body.txn_id.to_string());
    let event_id = send(
        &state,
        req.identity,
        req.body.room_id,
        req.body.event_type.to_string(),
        None,
        raw_content(&req.body.body)?,
        None,
        txn,
    )
    .await?;
    Ok(send_message::Response::new(event_id).into())
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub(super) async fn send_state(
    State(state): State<AppState>,
    req: Ruma<send_state::Request>,
) -> ApiResult<send_state::Response> {
    let txn = None;
    let event_id = send(
        &state,
        req.identity,
        req.body.room_id,
        req.body.event_type.to_string(),
        Some(req.body.state_key),
        raw_content(&req.body.body)?,
        None,
        txn,
    )
    .await?;
    Ok(send_state::Response::new(event_id).into())
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub(super) async fn redact_event(
    State(state): State<AppState>,
    req: Ruma<redact::Request>,
) -> ApiResult<redact::Response> {
    let mut content = Map::new();
    if let Some(reason) = req.body.reason {
        content.insert("reason".into(), reason.into());
    }
    let event_id = state
        .rooms
        .send(SendEvent {
            room_id: req.body.room_id,
            sender: user_id(&req.identity)?,
            kind: "m.room.redaction".into(),
            state_key: None,
            content,
            redacts: Some(req.body.event_id),
            sender_device: Some(req.identity.device_id.clone()),
            txn: Some(Txn { device_id: req.identity.device_id, txn_id: req.body.txn_id.to_string() }),
        })
        .await?;
    Ok(redact::Response::new(event_id).into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub(super) async fn get_room_event(
    State(state): State<AppState>,
    req: Ruma<get_event::Request>,
) -> ApiResult<get_event::Response> {
    let event =
        state.rooms.event_for(viewer(&req.identity), req.body.room_id.as_str(), req.body.event_id.as_str()).await?;
    Ok(get_event::Response::new(from_value(&event)?).into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
pub(super) async fn get_state_events(
    State(state): State<AppState>,
    req: Ruma<get_state::Request>,
) -> ApiResult<get_state::Response> {
    let events = state.rooms.state_for(viewer(&req.identity), req.body.room_id.as_str()).await?;
    Ok(get_state::Response::new(raw_list(&events)?).into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub(super) async fn get_state_event_for_key(
    State(state): State<AppState>,
    req: Ruma<get_state_for_key::Request>,
) -> ApiResult<get_state_for_key::Response> {
    let body = req.body;
    let event = state
        .rooms
        .state_event_for(viewer(&req.identity), body.room_id.as_str(), &body.event_type.to_string(), &body.state_key)
        .await?;
    let wanted = match body.format {
        ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event => event,
        _ => event.get("content").cloned().unwrap_or_default(),
    };
    let raw = serde_json::value::to_raw_value(&wanted).map_err(|e| ApiError::bad_json(e.to_string()))?;
    Ok(get_state_for_key::Response::new(raw).into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub(super) async fn get_message_events(
    State(state): State<AppState>,
    req: Ruma<get_messages::Request>,
) -> ApiResult<get_messages::Response> {
    let body = req.body;
    let filter = event_filter(&body.filter)?;
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX);
    let page = state
        .federation
        .messages_for(
            viewer(&req.identity),
            body.room_id.as_str(),
            PageRequest {
                from: body.from.as_deref(),
                to: body.to.as_deref(),
                backwards: body.dir == Direction::Backward,
                limit,
            },
            &filter,
        )
        .await?;
    let mut response = get_messages::Response::new();
    response.start = page.start;
    response.end = page.end;
    response.chunk = raw_list(&page.chunk)?;
    response.state = raw_list(&page.state)?;
    Ok(response.into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub(super) async fn get_context(
    State(state): State<AppState>,
    req: Ruma<get_context::Request>,
) -> ApiResult<get_context::Response> {
    let body = req.body;
    let filter = event_filter(&body.filter)?;
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX).min(1000);
    let ctx = state
        .rooms
        .context_for(viewer(&req.identity), body.room_id.as_str(), body.event_id.as_str(), limit, &filter)
        .await?;
    let mut response = get_context::Response::new();
    response.event = Some(from_value(&ctx.event)?);
    response.events_before = raw_list(&ctx.before)?;
    response.events_after = raw_list(&ctx.after)?;
    response.start = Some(ctx.start);
    response.end = Some(ctx.end);
    response.state = raw_list(&ctx.state)?;
    Ok(response.into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub(super) async fn upgrade_room(
    State(state): State<AppState>,
    req: Ruma<upgrade::Request>,
) -> ApiResult<upgrade::Response> {
    let body = req.body;
    let new_room = state
        .rooms
        .upgrade_room(user_id(&req.identity)?, body.room_id, body.new_version.to_string(), body.additional_creators)
        .await?;
    Ok(upgrade::Response::new(new_room).into())
}
