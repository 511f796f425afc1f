//! Registration: open (dummy) or by registration token, with UIA sessions.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    OwnedDeviceId,
    api::client::{
        account::{
            check_registration_token_validity::v1 as token_validity,
            get_username_availability::v3 as available,
            register::{RegistrationKind, v3 as register},
        },
        uiaa::{AuthFlow, AuthType},
    },
};

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{ServiceError, sessions::LoginRequest, uiaa::Purpose},
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
    if !state.config.registration.enabled {
        return Err(ServiceError::RegistrationDisabled.into());
    }
    if let Some(ip) = &req.client_ip
        && let Err(retry_after_ms) = state.registration_limiter.check(ip)
    {
        return Err(ServiceError::RateLimited { retry_after_ms }.into());
    }
    // The username is checked before UIA starts, so clients learn early that it is taken.
    let localpart = match body.username.as_deref() {
        Some(name) => {
            let name = name.to_lowercase();
            state.accounts.check_available(&name).await?;
            name
        }
        None => state.accounts.generate_localpart().await?,
    };
    let flows = if state.config.registration.requires_token {
        vec![AuthFlow::new(vec![AuthType::RegistrationToken])]
    } else {
        vec![AuthFlow::new(vec![AuthType::Dummy]), AuthFlow::new(vec![AuthType::RegistrationToken])]
    };
    let passed = state.uiaa.authenticate(Purpose::Register, None, body.auth.as_ref(), &flows).await?;
    let user_id = state.accounts.create(&localpart, body.password, false, None).await?;
    state.storage.uiaa.consume_registration_token(&passed.session_id).await.map_err(ServiceError::from)?;
    state.uiaa.finish(passed).await?;

    let mut response = register::Response::new(user_id.clone());
    if !body.inhibit_login {
        let issued = state
            .sessions
            .issue(
                user_id.as_str(),
                LoginRequest {
                    device_id: body.device_id.map(|d| d.to_string()),
                    initial_device_display_name: body.initial_device_display_name,
                    refresh_token: body.refresh_token,
                    ip: req.client_ip,
                },
            )
            .await?;
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
    if let Some(ip) = &req.client_ip
        && let Err(retry_after_ms) = state.registration_limiter.check(ip)
    {
        return Err(ServiceError::RateLimited { retry_after_ms }.into());
    }
    state.accounts.check_available(&req.body.username).await?;
    Ok(available::Response::new(true).into())
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub(super) async fn token_validity(
    State(state): State<AppState>,
    req: Ruma<token_validity::Request>,
) -> ApiResult<token_validity::Response> {
    if !state.config.registration.enabled {
        return Err(ServiceError::RegistrationDisabled.into());
    }
    if let Some(ip) = &req.client_ip
        && let Err(retry_after_ms) = state.registration_limiter.check(ip)
    {
        return Err(ServiceError::RateLimited { retry_after_ms }.into());
    }
    let valid = state.storage.uiaa.registration_token_valid(&req.body.token).await.map_err(ServiceError::from)?;
    Ok(token_validity::Response::new(valid).into())
}
