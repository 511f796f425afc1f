//! MLS endpoints that the Matrix spec does not have yet (DESIGN §6): the server's external-sender
//! key, a group's latest GroupInfo, and a device's own KeyPackage ids (MSC4256 `keys/list`).
//! Commits and messages use the ordinary state and send endpoints.

use axum::extract::State;

use crate::{
    http::ruma::{ApiResult, Ruma},
    state::AppState,
};

pub mod endpoints {
    /// `GET /_matrix/client/unstable/de.poststelle/mls/external_sender`
    pub mod external_sender {
        use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

        metadata! {
            method: GET,
            rate_limited: false,
            authentication: AccessToken,
            path: "/_matrix/client/unstable/de.poststelle/mls/external_sender",
        }

        #[request]
        pub struct Request {}

        #[response]
        pub struct Response {
            /// The server's signature public key, base64.
            pub signature_key: String,
            /// Its TLS-encoded MLS credential, base64.
            pub credential: String,
        }
    }

    /// `GET /_matrix/client/unstable/de.poststelle/rooms/{roomId}/mls/group_info`
    pub mod group_info {
        use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

        metadata! {
            method: GET,
            rate_limited: false,
            authentication: AccessToken,
            path: "/_matrix/client/unstable/de.poststelle/rooms/{room_id}/mls/group_info",
        }

        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub room_id: ruma::OwnedRoomId,
        }

        #[response]
        pub struct Response {
            pub algorithm: String,
            pub epoch: u64,
            /// The latest GroupInfo (with the ratchet tree), base64.
            pub group_info: String,
            /// Removal proposals of the server that the next commit must carry out, base64.
            pub proposals: Vec<String>,
        }
    }

    /// `GET /_matrix/client/v3/keys/list` (MSC4256): the ids of the device's unclaimed keys.
    pub mod list_keys {
        use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

        metadata! {
            method: GET,
            rate_limited: false,
            authentication: AccessToken,
            path: "/_matrix/client/v3/keys/list",
        }

        #[request]
        pub struct Request {}

        #[response]
        pub struct Response {
            pub one_time_keys: Vec<String>,
            pub fallback_keys: Vec<String>,
        }
    }
}

/// # `GET /_matrix/client/unstable/de.poststelle/mls/external_sender`
pub(super) async fn external_sender(
    State(state): State<AppState>,
    _req: Ruma<endpoints::external_sender::Request>,
) -> ApiResult<endpoints::external_sender::Response> {
    let (signature_key, credential) = state.mls.external_sender();
    Ok(endpoints::external_sender::Response { signature_key, credential }.into())
}

/// # `GET /_matrix/client/unstable/de.poststelle/rooms/{roomId}/mls/group_info`
pub(super) async fn group_info(
    State(state): State<AppState>,
    req: Ruma<endpoints::group_info::Request>,
) -> ApiResult<endpoints::group_info::Response> {
    let view = state.mls.group_info(&req.identity.user_id, req.body.room_id.as_str()).await?;
    Ok(endpoints::group_info::Response {
        algorithm: view.algorithm,
        epoch: view.epoch,
        group_info: view.group_info,
        proposals: view.proposals,
    }
    .into())
}

/// # `GET /_matrix/client/v3/keys/list`
pub(super) async fn list_keys(
    State(state): State<AppState>,
    req: Ruma<endpoints::list_keys::Request>,
) -> ApiResult<endpoints::list_keys::Response> {
    let (one_time_keys, fallback_keys) = state.e2ee.list_keys(&req.identity.user_id, &req.identity.device_id).await?;
    Ok(endpoints::list_keys::Response { one_time_keys, fallback_keys }.into())
}
