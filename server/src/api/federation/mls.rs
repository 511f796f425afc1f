//! The MLS hub's federation endpoint: another server forwards its user's commit to the room's
//! hub (DESIGN §6), which answers exactly as it answers its own users.

use axum::{Router, extract::State};

use crate::{
    http::{
        RumaRouterExt,
        ruma::{ApiResult, Ruma},
    },
    state::AppState,
};

pub mod endpoints {
    /// `POST /_matrix/federation/unstable/de.poststelle/mls/commit/{roomId}`
    pub mod forward_commit {
        use ruma::api::{federation::authentication::ServerSignatures, metadata, request, response};
        use serde::{Deserialize, Serialize};

        metadata! {
            method: POST,
            rate_limited: false,
            authentication: ServerSignatures,
            path: "/_matrix/federation/unstable/de.poststelle/mls/commit/{room_id}",
        }

        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub room_id: ruma::OwnedRoomId,
            /// The `m.mls.commit` event, signed by the forwarding server.
            pub pdu: Box<serde_json::value::RawValue>,
            /// The device that made the commit.
            pub device_id: String,
            /// The GroupInfo of the epoch the commit starts, base64.
            pub group_info: String,
            /// The Welcome for the devices the commit adds, base64.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub welcome: Option<String>,
        }

        /// Accepted: the event id and the devices the Welcome is for (the forwarding server
        /// delivers it, as the sender's server). Refused by the Delivery Service: why.
        #[response]
        pub struct Response {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub accepted: Option<Accepted>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub refused: Option<Refused>,
        }

        #[derive(Clone, Debug, Serialize, Deserialize)]
        pub struct Accepted {
            pub event_id: ruma::OwnedEventId,
            pub welcome_recipients: Vec<(String, String)>,
        }

        /// The hub's answer to its own users, as data: status, errcode, message and extras.
        #[derive(Clone, Debug, Serialize, Deserialize)]
        pub struct Refused {
            pub errcode: String,
            pub error: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub current_epoch: Option<u64>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub proposals: Option<Vec<String>>,
        }
    }
}

pub(super) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<endpoints::forward_commit::Request, _, _>(forward_commit)
}

/// # `POST /_matrix/federation/unstable/de.poststelle/mls/commit/{roomId}`
async fn forward_commit(
    State(state): State<AppState>,
    req: Ruma<endpoints::forward_commit::Request>,
) -> ApiResult<endpoints::forward_commit::Response> {
    Ok(state.federation.receive_forwarded_commit(&req.identity, req.body).await?.into())
}
