//! `Ruma<R>`: the extractor that turns an HTTP request into ruma's request type `R`, after
//! authenticating it by `R`'s auth scheme into a typed identity.

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, Path},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use http::{Request, StatusCode};
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceTokenOptional, AuthScheme, NoAccessToken, NoAuthentication,
    },
    error::FromHttpRequestError,
    federation::authentication::{ServerSignatures, XMatrix},
};

use super::error::ApiError;
use crate::{service::sessions::Session, state::AppState};

/// A parsed, authenticated Matrix request.
#[derive(Debug)]
pub struct Ruma<R: IncomingRequest>
where
    R::Authentication: Authenticate,
{
    pub body: R,
    pub identity: <R::Authentication as Authenticate>::Identity,
    pub client_ip: Option<String>,
}

/// How each ruma auth scheme authenticates, and what it yields.
pub trait Authenticate: AuthScheme {
    type Identity: Send + std::fmt::Debug;

    fn authenticate(
        state: &AppState,
        request: &Request<&[u8]>,
        ip: Option<&str>,
    ) -> impl Future<Output = Result<Self::Identity, ApiError>> + Send;

    /// Whether the identity is a guest account (limited to the endpoints in `http::guest`).
    fn is_guest(_identity: &Self::Identity) -> bool {
        false
    }
}

/// The bearer token (header, or the deprecated `access_token` query parameter).
fn bearer(request: &Request<&[u8]>) -> Result<Option<String>, ApiError> {
    <AccessTokenOptional as AuthScheme>::extract_authentication(request)
        .map_err(|_| ApiError::from(crate::service::ServiceError::MissingToken))
}

impl Authenticate for AccessToken {
    type Identity = Session;

    async fn authenticate(state: &AppState, request: &Request<&[u8]>, ip: Option<&str>) -> Result<Session, ApiError> {
        let token = bearer(request)?.ok_or(crate::service::ServiceError::MissingToken)?;
        Ok(state.sessions.authenticate(&token, ip).await?)
    }

    fn is_guest(session: &Session) -> bool {
        session.is_guest
    }
}

impl Authenticate for AccessTokenOptional {
    type Identity = Option<Session>;

    async fn authenticate(
        state: &AppState,
        request: &Request<&[u8]>,
        ip: Option<&str>,
    ) -> Result<Option<Session>, ApiError> {
        match bearer(request)? {
            Some(token) => Ok(Some(state.sessions.authenticate(&token, ip).await?)),
            None => Ok(None),
        }
    }

    fn is_guest(session: &Option<Session>) -> bool {
        session.as_ref().is_some_and(|s| s.is_guest)
    }
}

/// Endpoints that need no token, but may use one to know who asks (e.g. profile lookups).
impl Authenticate for NoAccessToken {
    type Identity = Option<Session>;

    async fn authenticate(
        state: &AppState,
        request: &Request<&[u8]>,
        ip: Option<&str>,
    ) -> Result<Option<Session>, ApiError> {
        match bearer(request).ok().flatten() {
            Some(token) => Ok(state.sessions.authenticate(&token, ip).await.ok()),
            None => Ok(None),
        }
    }

    fn is_guest(session: &Option<Session>) -> bool {
        session.as_ref().is_some_and(|s| s.is_guest)
    }
}

/// Endpoints where an application service may act (register, login). No application service
/// is registered with this server, so a presented appservice token is unknown.
impl Authenticate for AppserviceTokenOptional {
    type Identity = ();

    async fn authenticate(_: &AppState, request: &Request<&[u8]>, _: Option<&str>) -> Result<(), ApiError> {
        match bearer(request)? {
            Some(_) => Err(crate::service::ServiceError::UnknownToken { soft_logout: false }.into()),
            None => Ok(()),
        }
    }
}

/// Server-server requests: the X-Matrix signature of the origin over method, URI (path and query
/// as sent), destination and body, checked with the origin's keys valid now (a body with numbers
/// canonical JSON does not allow is encoded as Python does, see `noncanonical`). A missing or bad
/// signature or another destination is 401 `M_UNAUTHORIZED`, an origin or destination that is
/// no server name (a non-numeric port) 400 `M_INVALID_PARAM`; an origin not on the allow-list is
/// 403 `M_FORBIDDEN` (checked before its keys are fetched, so it causes no traffic).
impl Authenticate for ServerSignatures {
    type Identity = ruma::OwnedServerName;

    async fn authenticate(
        state: &AppState,
        request: &Request<&[u8]>,
        _: Option<&str>,
    ) -> Result<ruma::OwnedServerName, ApiError> {
        use crate::service::ServiceError;
        let xmatrix =
            XMatrix::extract_from_http_headers(request.headers()).map_err(|e| {
                match malformed_server_name(request.headers()) {
                    Some(name) => {
                        ServiceError::InvalidParam(format!("{name:?} in the X-Matrix header is no server name"))
                    }
                    None => ServiceError::Unauthorized(format!("no valid X-Matrix authorization: {e}")),
                }
            })?;
        if xmatrix.destination.as_ref().is_some_and(|d| *d != state.server_name) {
            return Err(ServiceError::Unauthorized("the request is meant for another server".to_owned()).into());
        }
        if !state.allow_list.allows(&xmatrix.origin) {
            tracing::info!(origin = %xmatrix.origin, "federation request refused: not on the allow-list");
            return Err(ServiceError::Forbidden(format!("{} may not federate with this server", xmatrix.origin)).into());
        }
        let wanted = std::collections::BTreeMap::from([(
            xmatrix.origin.clone(),
            std::collections::BTreeSet::from([xmatrix.key.clone()]),
        )]);
        let keys = state.server_keys.public_keys(&wanted, Some(crate::storage::now_ms())).await?;
        if let Err(e) = xmatrix.verify_http_request(request, &state.server_name, &keys) {
            // A body with floats or big integers is no canonical JSON for ruma; signed over
            // Python's encoding of them, the request is authentic, and the event that holds them
            // is refused by the endpoint (400 `M_BAD_JSON`), not the request (401).
            let lax = poststelle_federation::noncanonical::verify_request(&xmatrix, request, &state.server_name, &keys);
            // A body that is no JSON at all (`NaN`, say) was signed over nothing canonical
            // JSON can be: the request is malformed (400 `M_NOT_JSON`), as Synapse, which reads
            // the body before the signature, answers.
            if lax.is_err()
                && !request.body().is_empty()
                && serde_json::from_slice::<serde::de::IgnoredAny>(request.body()).is_err()
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::NotJson,
                    "the request body is not valid JSON".to_owned(),
                ));
            }
            if let Err(lax) = lax {
                tracing::info!(
                    origin = %xmatrix.origin, key = %xmatrix.key, error = %e, noncanonical = %lax,
                    "X-Matrix signature refused"
                );
                return Err(ServiceError::Unauthorized("the X-Matrix signature does not verify".to_owned()).into());
            }
        }
        Ok(xmatrix.origin)
    }
}

/// The `origin` or `destination` of an X-Matrix header that is not a valid server name (such
/// as a name with a non-numeric port), when that is why the header does not parse: a malformed
/// request (400) rather than a missing signature.
fn malformed_server_name(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, params) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("X-Matrix") {
        return None;
    }
    params.split(',').filter_map(|p| p.split_once('=')).find_map(|(name, v)| {
        let v = v.trim().trim_matches('"');
        let named = matches!(name.trim().to_ascii_lowercase().as_str(), "origin" | "destination");
        (named && ruma::ServerName::parse(v).is_err()).then(|| v.to_owned())
    })
}

impl Authenticate for NoAuthentication {
    type Identity = ();

    async fn authenticate(_: &AppState, _: &Request<&[u8]>, _: Option<&str>) -> Result<(), ApiError> {
        Ok(())
    }
}

impl<R> FromRequest<AppState> for Ruma<R>
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: Authenticate,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let limit = state.config.limits.max_request_bytes;
        if declared_length(&parts.headers).is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large());
        }
        let mut bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large())?;
        // Signatures (X-Matrix) cover the body exactly as sent.
        let sent = bytes.clone();
        // An empty JSON body reads as `{}`, as ruma's generated request parsers already do; its
        // hand-written ones (e.g. `join/{roomIdOrAlias}`, which matrix-nio posts without a
        // body) would refuse it instead.
        if bytes.is_empty() && declares_json(&parts.headers) {
            bytes = axum::body::Bytes::from_static(b"{}");
        }
        check_json_object(&parts.headers, &bytes)?;
        Self::parse(parts, &bytes, &sent, state).await
    }
}

impl<R> Ruma<R>
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: Authenticate,
{
    /// Authenticates (with the body as `sent`) and parses (with `bytes`, where an empty JSON body
    /// reads as `{}`) a request whose body has been read.
    async fn parse(
        mut parts: http::request::Parts,
        bytes: &[u8],
        sent: &[u8],
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let path_args: Vec<String> = match Path::<Vec<String>>::from_request_parts(&mut parts, state).await {
            Ok(Path(args)) => args,
            Err(e) => return Err(ApiError::invalid_param(format!("invalid path: {e}"))),
        };
        let client_ip =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string());
        reject_nul(&path_args, parts.uri.query(), bytes)?;
        let request = Request::from_parts(parts, sent);
        let identity = R::Authentication::authenticate(state, &request, client_ip.as_deref()).await?;
        let guest = R::Authentication::is_guest(&identity);
        if guest && !super::guest::endpoint_allowed::<R>() {
            return Err(guest_forbidden());
        }
        let (parts, _) = request.into_parts();
        let request = Request::from_parts(parts, bytes);
        let mut args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // Routes registered without their trailing `{state_key}` (see `ruma_route`).
        let expected = ::ruma::api::path_builder::PathBuilder::all_paths(&R::PATH_BUILDER)
            .next()
            .map_or(0, |p| p.matches('{').count());
        if args.len() + 1 == expected {
            args.push("");
        }
        // Some of ruma's deserialisers index into the body and panic on a missing field (e.g. a
        // login body without `type`): that is a malformed request, not a dropped connection.
        let parsed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| R::try_from_http_request(request, &args)))
                .map_err(|_| ApiError::bad_json("malformed request"))?;
        let body = parsed.map_err(|e| match e {
            FromHttpRequestError::Deserialization(d) => ApiError::from_deserialization(&d),
            FromHttpRequestError::MethodMismatch { .. } => ApiError::unrecognized(StatusCode::METHOD_NOT_ALLOWED),
            other => ApiError::invalid_param(other.to_string()),
        })?;
        if guest && !super::guest::request_allowed(&body) {
            return Err(guest_forbidden());
        }
        Ok(Self { body, identity, client_ip })
    }
}

fn guest_forbidden() -> ApiError {
    crate::service::ServiceError::GuestAccessForbidden("guest accounts may not do this".to_owned()).into()
}

/// A media upload: the ruma request parsed from the path, query and headers, authenticated, with
/// the body left unread so that it streams to disk instead of into memory (`request.file` is
/// empty; the content is `body`).
pub struct RumaUpload<R: IncomingRequest>
where
    R::Authentication: Authenticate,
{
    pub request: Ruma<R>,
    pub body: Body,
    /// The `Content-Length` the client declared, if any.
    pub declared_length: Option<u64>,
}

impl<R: IncomingRequest> std::fmt::Debug for RumaUpload<R>
where
    R::Authentication: Authenticate,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RumaUpload").field("declared_length", &self.declared_length).finish_non_exhaustive()
    }
}

impl<R> FromRequest<AppState> for RumaUpload<R>
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: Authenticate,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let declared_length = declared_length(&parts.headers);
        let request = Ruma::parse(parts, &[], &[], state).await?;
        Ok(Self { request, body, declared_length })
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

use axum::extract::FromRequestParts;

/// JSON request bodies must be objects: an array or a bare value is `M_BAD_JSON` and anything
/// unparseable `M_NOT_JSON`, before ruma reports a confusing "missing field". Bodies declared
/// as another content type (media uploads) are left alone.
fn check_json_object(headers: &http::HeaderMap, bytes: &[u8]) -> Result<(), ApiError> {
    let declared_json = declares_json(headers);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') | None => Ok(()),
        Some(_) if declared_json => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::bad_json("the request body must be a JSON object")),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::NotJson,
                format!("body is not valid JSON: {e}"),
            )),
        },
        Some(_) => Ok(()),
    }
}

/// Whether the body is JSON by its declared content type (or, without one, by default).
fn declares_json(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_none_or(|ct| ct.contains("json"))
}

/// PostgreSQL stores no U+0000 in text or `jsonb`, so a NUL in a path segment, a query value or
/// a JSON body (escaped as `\u0000`) is refused up front rather than failing in storage.
fn reject_nul(path_args: &[String], query: Option<&str>, bytes: &[u8]) -> Result<(), ApiError> {
    if path_args.iter().any(|a| a.contains('\0')) || query.is_some_and(|q| q.contains("%00")) {
        return Err(ApiError::invalid_param("U+0000 is not allowed in request parameters"));
    }
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    // The escape is rare: only bodies that spell it out are parsed a second time.
    if bytes.windows(6).any(|w| w == b"\\u0000")
        && serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| has_nul(&v))
    {
        return Err(ApiError::bad_json("U+0000 is not allowed in JSON strings"));
    }
    Ok(())
}

/// A ruma response on its way out.
#[derive(Debug)]
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|b| Body::from(b.freeze())),
            Err(e) => {
                tracing::error!(error = %e, "could not serialise a response");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ruma::api::error::ErrorKind::Unknown,
                    "Internal server error",
                )
                .into_response()
            }
        }
    }
}

impl<T> From<T> for RumaResponse<T> {
    fn from(t: T) -> Self {
        Self(t)
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<RumaResponse<T>, ApiError>;

#[cfg(test)]
mod tests {
    use super::malformed_server_name;

    fn header(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn origins_and_destinations_that_are_no_server_names_are_found() {
        let bad = |v: &str| malformed_server_name(&header(v));
        assert_eq!(
            bad(r#"X-Matrix origin="localhost:http",key="ed25519:1",sig="x""#).as_deref(),
            Some("localhost:http")
        );
        assert_eq!(
            bad(r#"x-matrix origin=a.example,destination="b.example:x1",sig=x"#).as_deref(),
            Some("b.example:x1")
        );
        assert_eq!(bad(r#"X-Matrix origin="a.example:8448",destination="b.example",key="ed25519:1",sig="x""#), None);
        assert_eq!(bad(r#"X-Matrix key="ed25519:1",sig="x""#), None, "a missing origin is another problem");
        assert_eq!(bad(r#"Bearer origin="localhost:http""#), None);
        assert!(malformed_server_name(&http::HeaderMap::new()).is_none());
    }
}
