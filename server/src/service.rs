//! Domain services: the business logic between the HTTP handlers and the storage layer.
//! Each service is a struct with explicit dependencies, built once in `main`.

pub mod account_data;
pub mod accounts;
pub mod allow_list;
pub mod e2ee;
pub mod ephemeral;
pub mod federation;
pub mod federation_queries;
pub mod filter;
pub mod identity;
pub mod jwt;
pub mod key_backup;
pub mod media;
pub mod mls;
pub mod notifier;
pub mod outbound;
pub mod passwords;
pub mod presence;
pub mod push;
pub mod rate_limit;
pub mod registration;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod sessions;
pub mod signing;
pub mod sync;
pub mod third_party_invites;
pub mod tokens;
pub mod typing;
pub mod uiaa;

use crate::storage::StorageError;

/// Errors of the service layer, in domain terms; `http::error` maps them to Matrix errors once.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("user id already taken")]
    UserInUse,
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    #[error("the user id is in an exclusive namespace")]
    Exclusive,
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("missing parameter: {0}")]
    MissingParam(String),
    #[error("bad json: {0}")]
    BadJson(String),
    #[error("unknown or expired access token")]
    UnknownToken {
        /// The token expired rather than being revoked: the client may refresh it.
        soft_logout: bool,
    },
    #[error("missing access token")]
    MissingToken,
    /// A federation request without a valid X-Matrix signature.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("wrong credentials")]
    WrongCredentials,
    #[error("this account has been deactivated")]
    UserDeactivated,
    #[error("unknown login type {0}")]
    UnknownLoginType(String),
    #[error("rate limited")]
    RateLimited { retry_after_ms: u64 },
    #[error("account data type {0} is managed by the server")]
    ServerManagedType(String),
    #[error("event or request too large: {0}")]
    TooLarge(String),
    #[error("unsupported room version {0}")]
    UnsupportedRoomVersion(String),
    /// The room's version is not among those the joining server supports.
    #[error("the room version {0} is not supported by the joining server")]
    IncompatibleRoomVersion(String),
    #[error("room alias already taken")]
    RoomInUse,
    #[error("the alias {0} already exists")]
    AliasExists(String),
    #[error("{0}")]
    StillInRoom(String),
    #[error("invalid room state: {0}")]
    InvalidRoomState(String),
    #[error("bad alias: {0}")]
    BadAlias(String),
    #[error("not the current key backup version")]
    WrongRoomKeysVersion {
        /// The user's current version, if any.
        current: Option<String>,
    },
    #[error("{0}")]
    Disabled(&'static str),
    #[error("upstream failure: {0}")]
    Upstream(String),
    /// Another server refused what our client asked of it through us (a join): its status (a
    /// 4xx) and Matrix error reach the client as it gave them.
    #[error("refused by another server: {message}")]
    RemoteRefusal { status: http::StatusCode, kind: ruma::api::error::ErrorKind, message: String },
    #[error("unknown sliding sync position")]
    UnknownPos,
    #[error("media already uploaded")]
    CannotOverwriteMedia,
    #[error("the media has not been uploaded yet")]
    NotYetUploaded,
    #[error("cannot generate thumbnails for this content")]
    CannotThumbnail,
    #[error("registration is disabled")]
    RegistrationDisabled,
    /// A guest account asked for something only full accounts may do (or guests are not allowed).
    #[error("guest access is forbidden: {0}")]
    GuestAccessForbidden(String),
    #[error("user-interactive authentication required")]
    AuthRequired(Box<ruma::api::client::uiaa::UiaaInfo>),
    #[error("{0}")]
    Mls(MlsRefusal),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Why the MLS Delivery Service refused a commit or message (DESIGN §6).
#[derive(Debug, thiserror::Error)]
pub enum MlsRefusal {
    /// Someone else's commit was accepted for this epoch first; the group is at `current`.
    #[error("the group is at epoch {current}")]
    WrongEpoch { current: u64 },
    /// The server proposed removals that the commit must carry out; here they are.
    #[error("the commit must carry out the server's pending removal proposals")]
    PendingProposals(Vec<String>),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    GroupMismatch(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    InvalidCommit(String),
    #[error("{0}")]
    InvalidGroupInfo(String),
    #[error("{0}")]
    InvalidWelcome(String),
    /// A commit sent by reference whose media is missing or not the referenced bytes.
    #[error("{0}")]
    BadReference(String),
}
