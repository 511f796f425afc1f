//! The one place where errors become Matrix error responses.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::StatusCode;
use ruma::api::{
    OutgoingResponseExt,
    client::uiaa::UiaaResponse,
    error::{
        DeserializationError, Error as RumaError, ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter,
        StandardErrorBody, UnknownTokenErrorData, WrongRoomKeysVersionErrorData,
    },
};

use crate::service::ServiceError;

/// An error on its way to the client.
#[derive(Debug)]
pub enum ApiError {
    /// A Matrix error: status, `errcode` and message.
    Matrix { status: StatusCode, kind: ErrorKind, message: String },
    /// A 401 with the UIA flows (and possibly an error of the last stage).
    Uiaa(Box<ruma::api::client::uiaa::UiaaInfo>),
    /// An error with one of our own (namespaced) codes and extra fields, which ruma's error
    /// kinds cannot carry.
    Custom {
        status: StatusCode,
        errcode: &'static str,
        message: String,
        extra: serde_json::Map<String, serde_json::Value>,
    },
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix { status, kind, message: message.into() }
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn unrecognized(status: StatusCode) -> Self {
        Self::new(status, ErrorKind::Unrecognized, "Unrecognized request")
    }

    pub fn too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, "request body too large")
    }

    /// Maps a failure to parse a request into ruma's type.
    pub fn from_deserialization(e: &DeserializationError) -> Self {
        match e {
            DeserializationError::Json(json) => match json.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, format!("body is not valid JSON: {json}"))
                }
                _ if json.to_string().starts_with("missing field") => {
                    Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, json.to_string())
                }
                _ => Self::bad_json(json.to_string()),
            },
            DeserializationError::Utf8(e) => {
                Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, format!("body is not UTF-8: {e}"))
            }
            DeserializationError::Query(q) if q.to_string().starts_with("missing field") => {
                Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, q.to_string())
            }
            other => Self::invalid_param(other.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        let (status, kind) = match &e {
            ServiceError::Forbidden(_) => (S::FORBIDDEN, ErrorKind::Forbidden),
            ServiceError::NotFound(_) => (S::NOT_FOUND, ErrorKind::NotFound),
            ServiceError::UserInUse => (S::BAD_REQUEST, ErrorKind::UserInUse),
            ServiceError::InvalidUsername(_) => (S::BAD_REQUEST, ErrorKind::InvalidUsername),
            ServiceError::Exclusive => (S::BAD_REQUEST, ErrorKind::Exclusive),
            ServiceError::InvalidParam(_) => (S::BAD_REQUEST, ErrorKind::InvalidParam),
            ServiceError::MissingParam(_) => (S::BAD_REQUEST, ErrorKind::MissingParam),
            ServiceError::BadJson(_) => (S::BAD_REQUEST, ErrorKind::BadJson),
            ServiceError::ServerManagedType(_) => (S::METHOD_NOT_ALLOWED, ErrorKind::BadJson),
            ServiceError::UnknownToken { soft_logout } => {
                let mut data = UnknownTokenErrorData::new();
                data.soft_logout = *soft_logout;
                (S::UNAUTHORIZED, ErrorKind::UnknownToken(data))
            }
            ServiceError::MissingToken => (S::UNAUTHORIZED, ErrorKind::MissingToken),
            ServiceError::Unauthorized(_) => (S::UNAUTHORIZED, ErrorKind::Unauthorized),
            ServiceError::WrongCredentials => (S::FORBIDDEN, ErrorKind::Forbidden),
            ServiceError::UserDeactivated => (S::FORBIDDEN, ErrorKind::UserDeactivated),
            ServiceError::UnknownLoginType(_) => (S::BAD_REQUEST, ErrorKind::Unknown),
            ServiceError::RateLimited { retry_after_ms } => {
                let mut data = LimitExceededErrorData::new();
                data.retry_after = Some(RetryAfter::Delay(Duration::from_millis(*retry_after_ms)));
                (S::TOO_MANY_REQUESTS, ErrorKind::LimitExceeded(data))
            }
            ServiceError::RegistrationDisabled => (S::FORBIDDEN, ErrorKind::Forbidden),
            ServiceError::GuestAccessForbidden(_) => (S::FORBIDDEN, ErrorKind::GuestAccessForbidden),
            ServiceError::Disabled(_) => (S::NOT_FOUND, ErrorKind::Unrecognized),
            ServiceError::Upstream(_) => (S::BAD_GATEWAY, ErrorKind::Unknown),
            ServiceError::RemoteRefusal { status, kind, .. } => (*status, kind.clone()),
            ServiceError::UnknownPos => (S::BAD_REQUEST, ErrorKind::UnknownPos),
            ServiceError::CannotOverwriteMedia => (S::CONFLICT, ErrorKind::CannotOverwriteMedia),
            ServiceError::NotYetUploaded => (S::GATEWAY_TIMEOUT, ErrorKind::NotYetUploaded),
            ServiceError::CannotThumbnail => (S::BAD_REQUEST, ErrorKind::Unknown),
            ServiceError::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge),
            ServiceError::UnsupportedRoomVersion(_) => (S::BAD_REQUEST, ErrorKind::UnsupportedRoomVersion),
            ServiceError::IncompatibleRoomVersion(v) => (
                S::BAD_REQUEST,
                ErrorKind::IncompatibleRoomVersion(ruma::api::error::IncompatibleRoomVersionErrorData::new(
                    ruma::RoomVersionId::try_from(v.as_str()).unwrap_or(ruma::RoomVersionId::V11),
                )),
            ),
            ServiceError::RoomInUse => (S::BAD_REQUEST, ErrorKind::RoomInUse),
            ServiceError::AliasExists(_) => (S::CONFLICT, ErrorKind::Unknown),
            ServiceError::StillInRoom(_) => (S::BAD_REQUEST, ErrorKind::Unknown),
            ServiceError::InvalidRoomState(_) => (S::BAD_REQUEST, ErrorKind::InvalidRoomState),
            ServiceError::BadAlias(_) => (S::BAD_REQUEST, ErrorKind::BadAlias),
            ServiceError::WrongRoomKeysVersion { current } => (
                S::FORBIDDEN,
                ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(
                    current.clone().unwrap_or_default(),
                )),
            ),
            ServiceError::AuthRequired(_) => {
                let ServiceError::AuthRequired(info) = e else { unreachable!() };
                return Self::Uiaa(info);
            }
            ServiceError::Mls(refusal) => return mls_error(refusal),
            ServiceError::Storage(_) | ServiceError::Internal(_) => {
                // Details go to the log, not to the client.
                tracing::error!(error = %e, "internal error");
                return Self::new(S::INTERNAL_SERVER_ERROR, ErrorKind::Unknown, "Internal server error");
            }
        };
        let message = match &e {
            ServiceError::WrongCredentials => "Invalid username or password".to_owned(),
            ServiceError::RegistrationDisabled => "Registration has been disabled".to_owned(),
            other => {
                let s = other.to_string();
                s.split_once(": ").map(|(_, m)| m.to_owned()).unwrap_or(s)
            }
        };
        Self::Matrix { status, kind, message }
    }
}

/// The MLS Delivery Service's refusals, with the `DE.POSTSTELLE.MLS_*` codes clients act on.
fn mls_error(refusal: &crate::service::MlsRefusal) -> ApiError {
    use crate::service::MlsRefusal as R;
    let mut extra = serde_json::Map::new();
    let (status, errcode) = match refusal {
        R::WrongEpoch { current } => {
            extra.insert("current_epoch".into(), (*current).into());
            (StatusCode::CONFLICT, "DE.POSTSTELLE.MLS_WRONG_EPOCH")
        }
        R::PendingProposals(proposals) => {
            extra.insert("proposals".into(), proposals.clone().into());
            (StatusCode::CONFLICT, "DE.POSTSTELLE.MLS_PENDING_PROPOSALS")
        }
        R::Malformed(_) => (StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_MALFORMED"),
        R::GroupMismatch(_) => (StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_GROUP_MISMATCH"),
        R::Unsupported(_) => (StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_UNSUPPORTED_MESSAGE"),
        R::InvalidCommit(_) => (StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_COMMIT"),
        R::InvalidGroupInfo(_) => (StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_GROUP_INFO"),
        R::InvalidWelcome(_) => (StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_WELCOME"),
        R::BadReference(_) => (StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_BAD_REFERENCE"),
    };
    ApiError::Custom { status, errcode, message: refusal.to_string(), extra }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let result = match self {
            ApiError::Matrix { status, kind, message } => {
                if status.is_server_error() {
                    tracing::error!(%status, %message, "request failed");
                } else {
                    tracing::debug!(%status, %message, "request refused");
                }
                RumaError::new(status, ErrorBody::Standard(StandardErrorBody::new(kind, message)))
                    .try_into_http_response::<BytesMut>()
            }
            ApiError::Uiaa(info) => UiaaResponse::AuthResponse(*info).try_into_http_response::<BytesMut>(),
            ApiError::Custom { status, errcode, message, mut extra } => {
                tracing::debug!(%status, errcode, %message, "request refused");
                extra.insert("errcode".into(), errcode.into());
                extra.insert("error".into(), message.into());
                return (status, axum::Json(serde_json::Value::Object(extra))).into_response();
            }
        };
        match result {
            Ok(response) => response.map(|b| axum::body::Body::from(b.freeze())).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "could not serialise an error response");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
