//! Registration: open (dummy) or by registration token, with UIA sessions.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    OwnedDeviceId,
    api::client::account::{
        check_registration_token_validity::v1 as token_validity,
        get_username_availability::v3 as available,
        register::{RegistrationKind, v3 as register},
    },
};

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{registration::RegistrationRequest, sessions::LoginRequest},
    state::AppState,
};

/// # `POST /_matrix/client/v3/register`
pub(super) async fn register(
    State(state): State<AppState>,
    req: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    let body = req.body;
    if body.kind == RegistrationKind::Guest {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            ruma::api::error::ErrorKind::GuestAccessForbidden,
            "Guest access is disabled",
        ));
    }
    let request = RegistrationRequest {
        username: body.username,
        password: body.password,
        auth: body.auth,
        inhibit_login: body.inhibit_login,
        device: LoginRequest {
            device_id: body.device_id.map(|d| d.to_string()),
            initial_device_display_name: body.initial_device_display_name,
            refresh_token: body.refresh_token,
            ip: req.client_ip,
        },
    };
    let (user_id, tokens) = state.registration.register(request).await?;
    let mut response = register::Response::new(user_id);
    if let Some(issued) = tokens {
        response.access_token = Some(issued.access_token);
        response.device_id = Some(OwnedDeviceId::from(issued.device_id));
        response.refresh_token = issued.refresh_token;
        response.expires_in = issued.expires_in_ms.map(Duration::from_millis);
    }
    Ok(response.into())
}

/// # `GET /_matrix/client/v3/register/available`
pub(super) async fn available(
    State(state): State<AppState>,
    req: Ruma<available::Request>,
) -> ApiResult<available::Response> {
    state.registration.check_available(&req.body.username, req.client_ip.as_deref()).await?;
    Ok(available::Response::new(true).into())
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub(super) async fn token_validity(
    State(state): State<AppState>,
    req: Ruma<token_validity::Request>,
) -> ApiResult<token_validity::Response> {
    let valid = state.registration.token_valid(&req.body.token, req.client_ip.as_deref()).await?;
    Ok(token_validity::Response::new(valid).into())
}
