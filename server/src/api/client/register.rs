//! Registration: open (dummy) or by registration token, with UIA sessions; guest accounts and
//! their upgrade to full accounts.

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
    http::ruma::{ApiResult, Ruma},
    service::{
        registration::RegistrationRequest,
        sessions::{IssuedTokens, LoginRequest},
    },
    state::AppState,
};

/// # `POST /_matrix/client/v3/register`
pub(super) async fn register(
    State(state): State<AppState>,
    req: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    let body = req.body;
    let device = LoginRequest {
        device_id: body.device_id.map(|d| d.to_string()),
        initial_device_display_name: body.initial_device_display_name,
        refresh_token: body.refresh_token,
        ip: req.client_ip,
    };
    if body.kind == RegistrationKind::Guest {
        let (user_id, issued) = state.registration.register_guest(device).await?;
        return Ok(with_tokens(register::Response::new(user_id), issued).into());
    }
    let request = RegistrationRequest {
        username: body.username,
        password: body.password,
        auth: body.auth,
        inhibit_login: body.inhibit_login,
        device,
        guest_access_token: body.guest_access_token,
    };
    let (user_id, tokens) = state.registration.register(request).await?;
    let response = register::Response::new(user_id);
    Ok(match tokens {
        Some(issued) => with_tokens(response, issued),
        None => response,
    }
    .into())
}

fn with_tokens(mut response: register::Response, issued: IssuedTokens) -> register::Response {
    response.access_token = Some(issued.access_token);
    response.device_id = Some(OwnedDeviceId::from(issued.device_id));
    response.refresh_token = issued.refresh_token;
    response.expires_in = issued.expires_in_ms.map(Duration::from_millis);
    response
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
