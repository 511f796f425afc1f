//! Handlers of the Synapse-compatible admin API.

use axum::extract::State;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::endpoints::{
    RegistrationToken, create_registration_token as create, delete_registration_token as delete,
    get_register_nonce as nonce, get_registration_token as get, list_registration_tokens as list,
    shared_secret_register as register, update_registration_token as update,
};
use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{
        ServiceError,
        sessions::{LoginRequest, Session},
        tokens,
    },
    state::AppState,
    storage::{StorageError, now_ms, uiaa::RegistrationTokenRecord},
};

fn require_admin(session: &Session) -> Result<(), ApiError> {
    if session.is_admin { Ok(()) } else { Err(ApiError::forbidden("You are not a server admin")) }
}

fn to_api(t: RegistrationTokenRecord) -> RegistrationToken {
    RegistrationToken {
        token: t.token,
        uses_allowed: t.uses_allowed,
        pending: t.pending,
        completed: t.completed,
        expiry_time: t.expiry_time,
    }
}

fn shared_secret(state: &AppState) -> Result<&str, ApiError> {
    let secret = state.config.registration.shared_secret.as_str();
    if secret.is_empty() { Err(ApiError::bad_json("Shared secret registration is not enabled")) } else { Ok(secret) }
}

/// # `GET /_synapse/admin/v1/register`
pub(super) async fn register_nonce(
    State(state): State<AppState>,
    _: Ruma<nonce::Request>,
) -> ApiResult<nonce::Response> {
    shared_secret(&state)?;
    let nonce = tokens::random_alphanumeric(32);
    state.storage.uiaa.add_admin_nonce(&nonce).await.map_err(ServiceError::from)?;
    Ok(nonce::Response { nonce }.into())
}

/// # `POST /_synapse/admin/v1/register`
///
/// The MAC is HMAC-SHA1 over `nonce \0 username \0 password \0 admin|notadmin[\0 user_type]`.
pub(super) async fn shared_secret_register(
    State(state): State<AppState>,
    req: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    let secret = shared_secret(&state)?;
    let b = req.body;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(|e| ServiceError::Internal(e.to_string()))?;
    mac.update(b.nonce.as_bytes());
    mac.update(b"\0");
    mac.update(b.username.as_bytes());
    mac.update(b"\0");
    mac.update(b.password.as_bytes());
    mac.update(b"\0");
    mac.update(if b.admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = &b.user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
    let given = hex::decode(&b.mac).map_err(|_| ApiError::forbidden("HMAC incorrect"))?;
    // Check the MAC before the nonce, so a wrong MAC does not burn a nonce.
    mac.verify_slice(&given).map_err(|_| ApiError::forbidden("HMAC incorrect"))?;
    if !state.storage.uiaa.take_admin_nonce(&b.nonce).await.map_err(ServiceError::from)? {
        return Err(ApiError::bad_json("unrecognised nonce"));
    }
    let user_id =
        state.accounts.create(&b.username.to_lowercase(), Some(b.password), b.admin, b.displayname.as_deref()).await?;
    let issued =
        state.sessions.issue(user_id.as_str(), LoginRequest { ip: req.client_ip, ..LoginRequest::default() }).await?;
    Ok(register::Response {
        access_token: issued.access_token,
        user_id: user_id.to_string(),
        home_server: state.config.server_name.clone(),
        device_id: issued.device_id,
    }
    .into())
}

/// # `GET /_synapse/admin/v1/registration_tokens`
pub(super) async fn list_tokens(State(state): State<AppState>, req: Ruma<list::Request>) -> ApiResult<list::Response> {
    require_admin(&req.identity)?;
    let now = now_ms();
    let tokens = state.storage.uiaa.registration_tokens().await.map_err(ServiceError::from)?;
    let registration_tokens = tokens
        .into_iter()
        .filter(|t| {
            let valid =
                t.expiry_time.is_none_or(|e| e > now) && t.uses_allowed.is_none_or(|u| t.pending + t.completed < u);
            req.body.valid.is_none_or(|want| want == valid)
        })
        .map(to_api)
        .collect();
    Ok(list::Response { registration_tokens }.into())
}

/// # `GET /_synapse/admin/v1/registration_tokens/{token}`
pub(super) async fn get_token(State(state): State<AppState>, req: Ruma<get::Request>) -> ApiResult<get::Response> {
    require_admin(&req.identity)?;
    let token = state.storage.uiaa.registration_token(&req.body.token).await.map_err(ServiceError::from)?;
    let token = token.ok_or_else(|| ApiError::not_found("No such registration token"))?;
    Ok(get::Response { token: to_api(token) }.into())
}

/// # `POST /_synapse/admin/v1/registration_tokens/new`
pub(super) async fn create_token(
    State(state): State<AppState>,
    req: Ruma<create::Request>,
) -> ApiResult<create::Response> {
    require_admin(&req.identity)?;
    let b = req.body;
    let length = b.length.unwrap_or(16);
    if length == 0 || length > 64 {
        return Err(ApiError::invalid_param("length must be between 1 and 64"));
    }
    if b.uses_allowed.is_some_and(|u| u < 0) {
        return Err(ApiError::invalid_param("uses_allowed must be a non-negative integer or null"));
    }
    if b.expiry_time.is_some_and(|e| e < now_ms()) {
        return Err(ApiError::invalid_param("expiry_time must not be in the past"));
    }
    let record = RegistrationTokenRecord {
        token: b.token.unwrap_or_else(|| tokens::random_alphanumeric(length as usize)),
        uses_allowed: b.uses_allowed,
        pending: 0,
        completed: 0,
        expiry_time: b.expiry_time,
    };
    match state.storage.uiaa.create_registration_token(&record).await {
        Ok(()) => Ok(create::Response { token: to_api(record) }.into()),
        Err(StorageError::Conflict(_)) => Err(ApiError::invalid_param("registration token already exists")),
        Err(StorageError::Constraint(_)) => {
            Err(ApiError::invalid_param("token must be 1-64 characters from [A-Za-z0-9._~-]"))
        }
        Err(e) => Err(ServiceError::from(e).into()),
    }
}

/// # `PUT /_synapse/admin/v1/registration_tokens/{token}`
pub(super) async fn update_token(
    State(state): State<AppState>,
    req: Ruma<update::Request>,
) -> ApiResult<update::Response> {
    require_admin(&req.identity)?;
    let b = req.body;
    if b.uses_allowed.flatten().is_some_and(|u| u < 0) {
        return Err(ApiError::invalid_param("uses_allowed must be a non-negative integer or null"));
    }
    let updated = state
        .storage
        .uiaa
        .update_registration_token(&b.token, b.uses_allowed, b.expiry_time)
        .await
        .map_err(ServiceError::from)?;
    let token = updated.ok_or_else(|| ApiError::not_found("No such registration token"))?;
    Ok(update::Response { token: to_api(token) }.into())
}

/// # `DELETE /_synapse/admin/v1/registration_tokens/{token}`
pub(super) async fn delete_token(
    State(state): State<AppState>,
    req: Ruma<delete::Request>,
) -> ApiResult<delete::Response> {
    require_admin(&req.identity)?;
    if state.storage.uiaa.delete_registration_token(&req.body.token).await.map_err(ServiceError::from)? {
        Ok(delete::Response {}.into())
    } else {
        Err(ApiError::not_found("No such registration token"))
    }
}
