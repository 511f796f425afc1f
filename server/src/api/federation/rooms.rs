//! The room endpoints of the server-server API: transactions, joins, and the reads of a room's
//! events and state. Each handler takes the origin that X-Matrix authenticated and makes one
//! call to the federation service.

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId,
    api::federation::{
        authorization::get_event_authorization::v1 as event_auth,
        backfill::get_backfill::v1 as backfill,
        event::{
            get_event::v1 as get_event, get_missing_events::v1 as missing_events, get_room_state::v1 as room_state,
            get_room_state_ids::v1 as state_ids,
        },
        membership::{
            create_invite::v2 as send_invite, create_join_event::v2 as send_join, create_knock_event::v1 as send_knock,
            create_leave_event::v2 as send_leave, prepare_join_event::v1 as make_join,
            prepare_knock_event::v1 as make_knock, prepare_leave_event::v1 as make_leave,
        },
        transactions::send_transaction_message::v1 as send_transaction,
    },
};

use crate::{
    http::{
        RumaRouterExt,
        ruma::{ApiResult, Ruma},
    },
    service::ServiceError,
    state::AppState,
};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<send_transaction::Request, _, _>(send_transaction_message)
        .ruma_route::<make_join::Request, _, _>(prepare_join)
        .ruma_route::<send_join::Request, _, _>(create_join)
        .ruma_route::<make_leave::Request, _, _>(prepare_leave)
        .ruma_route::<send_leave::Request, _, _>(create_leave)
        .ruma_route::<send_invite::Request, _, _>(create_invite)
        .ruma_route::<make_knock::Request, _, _>(prepare_knock)
        .ruma_route::<send_knock::Request, _, _>(create_knock)
        .ruma_route::<get_event::Request, _, _>(event)
        .ruma_route::<state_ids::Request, _, _>(room_state_ids)
        .ruma_route::<room_state::Request, _, _>(get_room_state)
        .ruma_route::<event_auth::Request, _, _>(event_authorization)
        .ruma_route::<missing_events::Request, _, _>(get_missing_events)
        .ruma_route::<backfill::Request, _, _>(get_backfill)
}

fn ids(v: Vec<String>) -> Vec<OwnedEventId> {
    v.into_iter().filter_map(|id| OwnedEventId::try_from(id).ok()).collect()
}

/// # `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction_message(
    State(state): State<AppState>,
    req: Ruma<send_transaction::Request>,
) -> ApiResult<send_transaction::Response> {
    if req.body.origin != req.identity {
        return Err(ServiceError::Forbidden("the transaction's origin is not the signing server".into()).into());
    }
    let results = state
        .federation
        .receive_transaction(&req.identity, req.body.transaction_id.as_str(), &req.body.pdus, &req.body.edus)
        .await?;
    Ok(send_transaction::Response::new(results).into())
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn prepare_join(State(state): State<AppState>, req: Ruma<make_join::Request>) -> ApiResult<make_join::Response> {
    let (version, event) =
        state.federation.make_join(&req.identity, &req.body.room_id, &req.body.user_id, &req.body.ver).await?;
    let mut response = make_join::Response::new(event);
    response.room_version = Some(version);
    Ok(response.into())
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn create_join(State(state): State<AppState>, req: Ruma<send_join::Request>) -> ApiResult<send_join::Response> {
    let (room_state, auth_chain) =
        state.federation.send_join(&req.identity, &req.body.room_id, &req.body.event_id, &req.body.pdu).await?;
    let mut answer = send_join::RoomState::new();
    answer.state = room_state;
    answer.auth_chain = auth_chain;
    Ok(send_join::Response::new(answer).into())
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
async fn prepare_leave(
    State(state): State<AppState>,
    req: Ruma<make_leave::Request>,
) -> ApiResult<make_leave::Response> {
    let (version, event) = state.federation.make_leave(&req.identity, &req.body.room_id, &req.body.user_id).await?;
    Ok(make_leave::Response::new(Some(version), event).into())
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
async fn create_leave(
    State(state): State<AppState>,
    req: Ruma<send_leave::Request>,
) -> ApiResult<send_leave::Response> {
    state.federation.send_leave(&req.identity, &req.body.room_id, &req.body.event_id, &req.body.pdu).await?;
    Ok(send_leave::Response::new().into())
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
async fn create_invite(
    State(state): State<AppState>,
    req: Ruma<send_invite::Request>,
) -> ApiResult<send_invite::Response> {
    let b = &req.body;
    let event = state
        .federation
        .receive_invite(&req.identity, &b.room_id, &b.event_id, &b.room_version, &b.event, &b.invite_room_state)
        .await?;
    Ok(send_invite::Response::new(event).into())
}

/// # `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn prepare_knock(
    State(state): State<AppState>,
    req: Ruma<make_knock::Request>,
) -> ApiResult<make_knock::Response> {
    let b = &req.body;
    let (version, event) = state.federation.make_knock(&req.identity, &b.room_id, &b.user_id, &b.ver).await?;
    Ok(make_knock::Response::new(version, event).into())
}

/// # `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
async fn create_knock(
    State(state): State<AppState>,
    req: Ruma<send_knock::Request>,
) -> ApiResult<send_knock::Response> {
    let b = &req.body;
    let knock_state = state.federation.send_knock(&req.identity, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(send_knock::Response::new(knock_state).into())
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
async fn event(State(state): State<AppState>, req: Ruma<get_event::Request>) -> ApiResult<get_event::Response> {
    let pdu = state.federation.event(&req.identity, req.body.event_id.as_str()).await?;
    let origin = state.federation.server_name().to_owned();
    Ok(get_event::Response::new(origin, MilliSecondsSinceUnixEpoch::now(), pdu).into())
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}`
async fn room_state_ids(
    State(state): State<AppState>,
    req: Ruma<state_ids::Request>,
) -> ApiResult<state_ids::Response> {
    let (pdu_ids, chain) =
        state.federation.state_ids(&req.identity, &req.body.room_id, req.body.event_id.as_str()).await?;
    Ok(state_ids::Response::new(ids(chain), ids(pdu_ids)).into())
}

/// # `GET /_matrix/federation/v1/state/{roomId}`
async fn get_room_state(
    State(state): State<AppState>,
    req: Ruma<room_state::Request>,
) -> ApiResult<room_state::Response> {
    let (pdus, chain) =
        state.federation.room_state(&req.identity, &req.body.room_id, req.body.event_id.as_str()).await?;
    Ok(room_state::Response::new(chain, pdus).into())
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_authorization(
    State(state): State<AppState>,
    req: Ruma<event_auth::Request>,
) -> ApiResult<event_auth::Response> {
    let chain = state.federation.event_auth(&req.identity, &req.body.room_id, req.body.event_id.as_str()).await?;
    Ok(event_auth::Response::new(chain).into())
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn get_missing_events(
    State(state): State<AppState>,
    req: Ruma<missing_events::Request>,
) -> ApiResult<missing_events::Response> {
    let b = &req.body;
    let events = state
        .federation
        .missing_events(
            &req.identity,
            &b.room_id,
            &b.earliest_events,
            &b.latest_events,
            b.min_depth.into(),
            b.limit.into(),
        )
        .await?;
    Ok(missing_events::Response::new(events).into())
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}`
async fn get_backfill(State(state): State<AppState>, req: Ruma<backfill::Request>) -> ApiResult<backfill::Response> {
    let pdus = state.federation.backfill(&req.identity, &req.body.room_id, &req.body.v, req.body.limit.into()).await?;
    let origin = state.federation.server_name().to_owned();
    Ok(backfill::Response::new(origin, MilliSecondsSinceUnixEpoch::now(), pdus).into())
}
