//! Login, refresh, login tokens and logout.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::client::{
        session::{
            get_login_token::v1 as get_login_token,
            get_login_types::v3::{self as login_types, LoginType, PasswordLoginType, TokenLoginType},
            login::v3::{self as login, LoginInfo},
            logout::v3 as logout,
            logout_all::v3 as logout_all,
            refresh_token::v3 as refresh,
        },
        uiaa::UserIdentifier,
    },
};

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{
        ServiceError,
        sessions::{Credentials, LoginRequest},
        uiaa::{Purpose, UiaaService},
    },
    state::AppState,
};

/// The login type of JWT login (Synapse's name, which clients and IdP integrations use).
const JWT_LOGIN_TYPE: &str = "org.matrix.login.jwt";

/// # `GET /_matrix/client/v3/login`
pub(super) async fn login_types(
    State(state): State<AppState>,
    _: Ruma<login_types::Request>,
) -> ApiResult<login_types::Response> {
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    let mut flows = vec![LoginType::Password(PasswordLoginType::new()), LoginType::Token(token)];
    if state.sessions.jwt_enabled() {
        flows.push(
            LoginType::new(JWT_LOGIN_TYPE, serde_json::Map::new())
                .map_err(|e| ApiError::invalid_param(e.to_string()))?,
        );
    }
    Ok(login_types::Response::new(flows).into())
}

/// # `POST /_matrix/client/v3/login`
pub(super) async fn login(State(state): State<AppState>, req: Ruma<login::Request>) -> ApiResult<login::Response> {
    let body = req.body;
    let credentials = match body.login_info {
        LoginInfo::Password(p) => {
            #[allow(deprecated)]
            let user = match (p.identifier, p.user) {
                (Some(UserIdentifier::Matrix(id)), _) => id.user,
                (None, Some(user)) => user,
                // Third-party ids are known types that name no account here (Synapse: 403);
                // any other identifier type is not recognised at all (Synapse: 400 M_UNKNOWN).
                (Some(other), _) if matches!(other.identifier_type(), "m.id.thirdparty" | "m.id.phone") => {
                    return Err(ApiError::from(ServiceError::Forbidden(
                        "only m.id.user identifiers are supported".into(),
                    )));
                }
                (Some(other), _) => {
                    return Err(ApiError::new(
                        ::http::StatusCode::BAD_REQUEST,
                        ::ruma::api::error::ErrorKind::Unknown,
                        format!("unknown identifier type {}", other.identifier_type()),
                    ));
                }
                (None, None) => return Err(ApiError::from(ServiceError::MissingParam("identifier".into()))),
            };
            Credentials::Password { user, password: p.password }
        }
        LoginInfo::Token(t) => Credentials::LoginToken(t.token),
        other if other.login_type() == JWT_LOGIN_TYPE => {
            let token = other.data().get("token").and_then(|t| t.as_str()).map(str::to_owned);
            Credentials::Jwt(token.ok_or(ServiceError::MissingParam("token".into()))?)
        }
        other => return Err(ServiceError::UnknownLoginType(other.login_type().to_owned()).into()),
    };
    let request = LoginRequest {
        device_id: body.device_id.map(|d| d.to_string()),
        initial_device_display_name: body.initial_device_display_name,
        refresh_token: body.refresh_token,
        ip: req.client_ip,
    };
    let issued = state.sessions.login(credentials, request, &state.accounts).await?;
    let user_id = OwnedUserId::try_from(issued.user_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let mut response = login::Response::new(user_id, issued.access_token, OwnedDeviceId::from(issued.device_id));
    response.refresh_token = issued.refresh_token;
    response.expires_in = issued.expires_in_ms.map(Duration::from_millis);
    response.well_known = Some(login::DiscoveryInfo::new(login::HomeserverInfo::new(state.config.client_base_url())));
    Ok(response.into())
}

/// # `POST /_matrix/client/v3/refresh`
pub(super) async fn refresh(
    State(state): State<AppState>,
    req: Ruma<refresh::Request>,
) -> ApiResult<refresh::Response> {
    let issued = state.sessions.refresh(&req.body.refresh_token).await?;
    let mut response = refresh::Response::new(issued.access_token);
    response.refresh_token = issued.refresh_token;
    response.expires_in_ms = issued.expires_in_ms.map(Duration::from_millis);
    Ok(response.into())
}

/// # `POST /_matrix/client/v1/login/get_token` (UIA: password)
pub(super) async fn get_login_token(
    State(state): State<AppState>,
    req: Ruma<get_login_token::Request>,
) -> ApiResult<get_login_token::Response> {
    let session = req.identity;
    let passed = state
        .uiaa
        .authenticate(
            Purpose::GetLoginToken,
            Some(&session.user_id),
            req.body.auth.as_ref(),
            &UiaaService::password_flows(),
        )
        .await?;
    let (token, lifetime_ms) = state.sessions.create_login_token(&session.user_id).await?;
    state.uiaa.finish(passed).await?;
    Ok(get_login_token::Response::new(Duration::from_millis(lifetime_ms), token).into())
}

/// # `POST /_matrix/client/v3/logout`
pub(super) async fn logout(State(state): State<AppState>, req: Ruma<logout::Request>) -> ApiResult<logout::Response> {
    state.sessions.logout(&req.identity).await?;
    Ok(logout::Response::new().into())
}

/// # `POST /_matrix/client/v3/logout/all`
pub(super) async fn logout_all(
    State(state): State<AppState>,
    req: Ruma<logout_all::Request>,
) -> ApiResult<logout_all::Response> {
    state.sessions.logout_all(&req.identity.user_id, None).await?;
    Ok(logout_all::Response::new().into())
}
