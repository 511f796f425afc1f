//! Third-party invites on the federation listener: an identity server reports a binding
//! (`/3pid/onbind`, unauthenticated: what counts is the identity server's signature inside,
//! checked against the room's keys), and another server passes a binding on to the inviter's
//! server (`/exchange_third_party_invite`).

use axum::{Router, extract::State};
use ruma::api::federation::thirdparty::{bind_callback::v1 as onbind, exchange_invite::v1 as exchange};

use crate::{
    http::{
        RumaRouterExt,
        ruma::{ApiResult, Ruma},
    },
    service::{ServiceError, third_party_invites::BoundInvite},
    state::AppState,
};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<onbind::Request, _, _>(on_bind)
        // Sydent and Synapse use POST for the binding report; the spec says PUT.
        .ruma_route_also_as::<onbind::Request, _, _>(http::Method::POST, on_bind)
        .ruma_route::<exchange::Request, _, _>(exchange_third_party_invite)
}

/// # `PUT /_matrix/federation/v1/3pid/onbind`
async fn on_bind(State(state): State<AppState>, req: Ruma<onbind::Request>) -> ApiResult<onbind::Response> {
    let invites = req
        .body
        .invites
        .into_iter()
        .map(|i| {
            let signed =
                serde_json::from_str(i.signed.json().get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
            Ok(BoundInvite { room_id: i.room_id, sender: i.sender, mxid: i.mxid, signed })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    state.third_party_invites.on_bind(&req.body.mxid, invites).await?;
    Ok(onbind::Response::new().into())
}

/// # `PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}`
async fn exchange_third_party_invite(
    State(state): State<AppState>,
    req: Ruma<exchange::Request>,
) -> ApiResult<exchange::Response> {
    let b = req.body;
    state
        .third_party_invites
        .exchange_for_server(&req.identity, b.room_id, b.kind.to_string().as_str(), b.sender, b.state_key, &b.content)
        .await?;
    Ok(exchange::Response::new().into())
}
