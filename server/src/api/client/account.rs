//! whoami, password change, deactivation and OpenID tokens.

use axum::extract::State;
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::client::account::{
        ThirdPartyIdRemovalStatus, change_password::v3 as change_password, deactivate::v3 as deactivate,
        request_openid_token::v3 as openid, whoami::v3 as whoami,
    },
    authentication::TokenType,
};

use crate::{
    http::ruma::{ApiResult, Ruma},
    service::{
        ServiceError,
        uiaa::{Purpose, UiaaService},
    },
    state::AppState,
};

/// # `GET /_matrix/client/v3/account/whoami`
pub(super) async fn whoami(req: Ruma<whoami::Request>) -> ApiResult<whoami::Response> {
    let session = req.identity;
    let user_id = OwnedUserId::try_from(session.user_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let mut response = whoami::Response::new(user_id, session.is_guest);
    response.device_id = Some(OwnedDeviceId::from(session.device_id));
    Ok(response.into())
}

/// # `POST /_matrix/client/v3/account/password` (UIA: password)
pub(super) async fn change_password(
    State(state): State<AppState>,
    req: Ruma<change_password::Request>,
) -> ApiResult<change_password::Response> {
    let session = req.identity.ok_or(ServiceError::MissingToken)?;
    let body = req.body;
    let passed = state
        .uiaa
        .authenticate(
            Purpose::ChangePassword,
            Some(&session.user_id),
            body.auth.as_ref(),
            &UiaaService::password_flows(),
        )
        .await?;
    if body.new_password.is_empty() {
        return Err(ServiceError::MissingParam("new_password".into()).into());
    }
    state.accounts.set_password(&session.user_id, body.new_password).await?;
    if body.logout_devices {
        state.sessions.logout_all(&session.user_id, Some(&session.device_id)).await?;
    }
    state.uiaa.finish(passed).await?;
    Ok(change_password::Response::new().into())
}

/// # `POST /_matrix/client/v3/account/deactivate` (UIA: password)
pub(super) async fn deactivate(
    State(state): State<AppState>,
    req: Ruma<deactivate::Request>,
) -> ApiResult<deactivate::Response> {
    let session = req.identity.ok_or(ServiceError::MissingToken)?;
    let passed = state
        .uiaa
        .authenticate(
            Purpose::Deactivate,
            Some(&session.user_id),
            req.body.auth.as_ref(),
            &UiaaService::password_flows(),
        )
        .await?;
    state.accounts.deactivate(&session.user_id, req.body.erase).await?;
    state.uiaa.finish(passed).await?;
    Ok(deactivate::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

/// # `POST /_matrix/client/v3/user/{userId}/openid/request_token`
pub(super) async fn request_openid_token(
    State(state): State<AppState>,
    req: Ruma<openid::Request>,
) -> ApiResult<openid::Response> {
    let token = state.accounts.request_openid_token(&req.identity.user_id, &req.body.user_id).await?;
    let lifetime = crate::service::accounts::OPENID_TOKEN_LIFETIME;
    Ok(openid::Response::new(token, TokenType::Bearer, state.server_name.clone(), lifetime).into())
}
