//! Server discovery and capabilities.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    RoomVersionId,
    api::client::discovery::{
        discover_homeserver::{self, HomeserverInfo},
        get_capabilities::v3 as capabilities,
        get_supported_versions,
    },
    api::federation::discovery::discover_homeserver as discover_server,
};

use crate::{
    http::ruma::{ApiResult, Ruma, RumaResponse},
    state::AppState,
};

/// The spec versions whose account, session, device, profile, account-data, filter and
/// push-rule endpoints behave as those versions require.
const SPEC_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13", "v1.14", "v1.15",
];

/// # `GET /_matrix/client/versions`
pub(super) async fn versions(_: Ruma<get_supported_versions::Request>) -> ApiResult<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(SPEC_VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    response.unstable_features = BTreeMap::from([
        ("org.matrix.msc2666.query_mutual_rooms".to_owned(), false),
        ("org.matrix.msc3882".to_owned(), true),
        // Simplified sliding sync (MSC4186), which Element X and matrix-rust-sdk require.
        ("org.matrix.simplified_msc3575".to_owned(), true),
    ]);
    Ok(response.into())
}

/// # `GET /.well-known/matrix/client`
pub(super) async fn well_known_client(
    State(state): State<AppState>,
    _: Ruma<discover_homeserver::Request>,
) -> ApiResult<discover_homeserver::Response> {
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(state.config.client_base_url())).into())
}

/// # `GET /.well-known/matrix/server`
pub(super) async fn well_known_server(
    State(state): State<AppState>,
    _: Ruma<discover_server::Request>,
) -> ApiResult<discover_server::Response> {
    let delegated = format!("{}:{}", state.config.server_name, state.config.listeners.federation.addr.port());
    let name = ruma::OwnedServerName::try_from(delegated)
        .map_err(|e| crate::http::error::ApiError::invalid_param(e.to_string()))?;
    Ok(discover_server::Response::new(name).into())
}

/// Room versions this server will speak once rooms exist (DESIGN §5).
pub(crate) const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 3] =
    [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

/// # `GET /_matrix/client/v3/capabilities`
pub(super) async fn capabilities(
    State(_state): State<AppState>,
    _: Ruma<capabilities::Request>,
) -> ApiResult<capabilities::Response> {
    let mut caps = capabilities::Capabilities::new();
    caps.change_password.enabled = true;
    // Deprecated since v1.16, but clients of earlier versions read these.
    #[allow(deprecated)]
    {
        caps.set_displayname.enabled = true;
        caps.set_avatar_url.enabled = true;
    }
    caps.thirdparty_id_changes.enabled = false;
    caps.room_versions = capabilities::RoomVersionsCapability::new(
        RoomVersionId::V10,
        SUPPORTED_ROOM_VERSIONS.iter().map(|v| (v.clone(), capabilities::RoomVersionStability::Stable)).collect(),
    );
    Ok(RumaResponse(capabilities::Response::new(caps)))
}
