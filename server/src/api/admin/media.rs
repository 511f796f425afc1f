//! Media administration as Synapse's admin API offers it: delete one media item or all of a
//! user's, quarantine (no longer served, kept for inspection) and release, list a user's media.

use axum::extract::State;
use serde::Serialize;

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{ServiceError, media::MediaInfo},
    state::AppState,
};

/// One media item in a listing.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AdminMedia {
    pub media_id: String,
    pub media_type: Option<String>,
    pub media_length: Option<i64>,
    pub upload_name: Option<String>,
    pub created_ts: i64,
    pub quarantined_by: Option<String>,
}

macro_rules! admin_endpoint {
    ($name:ident, $method:ident, $path:literal, { $($req:tt)* }, { $($resp:tt)* }) => {
        pub mod $name {
            use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

            metadata! {
                method: $method,
                rate_limited: false,
                authentication: AccessToken,
                path: $path,
            }

            #[request]
            pub struct Request { $($req)* }

            #[response]
            pub struct Response { $($resp)* }
        }
    };
}

admin_endpoint!(delete_media, DELETE, "/_synapse/admin/v1/media/{server_name}/{media_id}", {
    #[ruma_api(path)]
    pub server_name: String,
    #[ruma_api(path)]
    pub media_id: String,
}, {
    pub deleted_media: Vec<String>,
    pub total: usize,
});

admin_endpoint!(quarantine_media, POST, "/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}", {
    #[ruma_api(path)]
    pub server_name: String,
    #[ruma_api(path)]
    pub media_id: String,
}, {});

admin_endpoint!(unquarantine_media, POST, "/_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}", {
    #[ruma_api(path)]
    pub server_name: String,
    #[ruma_api(path)]
    pub media_id: String,
}, {});

admin_endpoint!(quarantine_user_media, POST, "/_synapse/admin/v1/user/{user_id}/media/quarantine", {
    #[ruma_api(path)]
    pub user_id: String,
}, {
    pub num_quarantined: u64,
});

admin_endpoint!(list_user_media, GET, "/_synapse/admin/v1/users/{user_id}/media", {
    #[ruma_api(path)]
    pub user_id: String,
    #[ruma_api(query)]
    #[serde(default)]
    pub from: u32,
    #[ruma_api(query)]
    #[serde(default = "super::default_limit")]
    pub limit: u32,
}, {
    pub media: Vec<super::AdminMedia>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<u64>,
    pub total: i64,
});

admin_endpoint!(delete_user_media, DELETE, "/_synapse/admin/v1/users/{user_id}/media", {
    #[ruma_api(path)]
    pub user_id: String,
}, {
    pub deleted_media: Vec<String>,
    pub total: usize,
});

fn default_limit() -> u32 {
    100
}

fn require_admin(req_is_admin: bool) -> Result<(), ApiError> {
    if req_is_admin { Ok(()) } else { Err(ApiError::forbidden("You are not a server admin")) }
}

fn local_media(state: &AppState, server_name: &str) -> Result<(), ApiError> {
    match ruma::ServerName::parse(server_name) {
        Ok(name) if state.media.is_local(&name) => Ok(()),
        _ => Err(ApiError::bad_json("Can only act on local media")),
    }
}

fn not_found() -> ApiError {
    ServiceError::NotFound("Unknown media".into()).into()
}

/// # `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`
pub(super) async fn delete_media(
    State(state): State<AppState>,
    req: Ruma<delete_media::Request>,
) -> ApiResult<delete_media::Response> {
    require_admin(req.identity.is_admin)?;
    local_media(&state, &req.body.server_name)?;
    let deleted = state.media.delete(&[req.body.media_id]).await?;
    if deleted.is_empty() {
        return Err(not_found());
    }
    Ok(delete_media::Response { total: deleted.len(), deleted_media: deleted }.into())
}

/// # `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`
pub(super) async fn quarantine_media(
    State(state): State<AppState>,
    req: Ruma<quarantine_media::Request>,
) -> ApiResult<quarantine_media::Response> {
    require_admin(req.identity.is_admin)?;
    local_media(&state, &req.body.server_name)?;
    if !state.media.set_quarantine(&req.body.media_id, Some(&req.identity.user_id)).await? {
        return Err(not_found());
    }
    Ok(quarantine_media::Response {}.into())
}

/// # `POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}`
pub(super) async fn unquarantine_media(
    State(state): State<AppState>,
    req: Ruma<unquarantine_media::Request>,
) -> ApiResult<unquarantine_media::Response> {
    require_admin(req.identity.is_admin)?;
    local_media(&state, &req.body.server_name)?;
    if !state.media.set_quarantine(&req.body.media_id, None).await? {
        return Err(not_found());
    }
    Ok(unquarantine_media::Response {}.into())
}

/// # `POST /_synapse/admin/v1/user/{userId}/media/quarantine`
pub(super) async fn quarantine_user_media(
    State(state): State<AppState>,
    req: Ruma<quarantine_user_media::Request>,
) -> ApiResult<quarantine_user_media::Response> {
    require_admin(req.identity.is_admin)?;
    let num_quarantined = state.media.quarantine_user_media(&req.body.user_id, &req.identity.user_id).await?;
    Ok(quarantine_user_media::Response { num_quarantined }.into())
}

fn to_admin(m: MediaInfo) -> AdminMedia {
    AdminMedia {
        media_id: m.media_id,
        media_type: m.content_type,
        media_length: m.size,
        upload_name: m.file_name,
        created_ts: m.created_ts,
        quarantined_by: m.quarantined_by,
    }
}

/// # `GET /_synapse/admin/v1/users/{userId}/media`
pub(super) async fn list_user_media(
    State(state): State<AppState>,
    req: Ruma<list_user_media::Request>,
) -> ApiResult<list_user_media::Response> {
    require_admin(req.identity.is_admin)?;
    let (from, limit) = (i64::from(req.body.from), i64::from(req.body.limit.clamp(1, 1000)));
    let (items, total) = state.media.user_media(&req.body.user_id, from, limit).await?;
    let next = from + items.len() as i64;
    let next_token = (next < total).then_some(next.unsigned_abs());
    Ok(list_user_media::Response { media: items.into_iter().map(to_admin).collect(), next_token, total }.into())
}

/// # `DELETE /_synapse/admin/v1/users/{userId}/media`
pub(super) async fn delete_user_media(
    State(state): State<AppState>,
    req: Ruma<delete_user_media::Request>,
) -> ApiResult<delete_user_media::Response> {
    require_admin(req.identity.is_admin)?;
    let (items, _) = state.media.user_media(&req.body.user_id, 0, i64::MAX).await?;
    let ids: Vec<String> = items.into_iter().map(|m| m.media_id).collect();
    let deleted = state.media.delete(&ids).await?;
    Ok(delete_user_media::Response { total: deleted.len(), deleted_media: deleted }.into())
}
