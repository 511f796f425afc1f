//! The client's one error type.

use poststelle_mls::client::MlsClientError;

use crate::attachment::AttachmentError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the state directory holds no session: log in first")]
    NotLoggedIn,
    #[error("the session file is unreadable: {0}")]
    CorruptSession(String),
    #[error("MLS: {0}")]
    Mls(#[from] MlsClientError),
    #[error("attachment: {0}")]
    Attachment(#[from] AttachmentError),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("invalid homeserver URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("the server answered {status} {errcode}: {message}")]
    Server { status: u16, errcode: String, message: String },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}
