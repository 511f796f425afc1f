//! The outbound federation client: ruma requests to other servers over HTTPS (rustls), signed
//! with X-Matrix where the endpoint's auth scheme asks for it, after the allow-list and server
//! discovery. One `reqwest` client per destination carries its resolved addresses, so the TLS name
//! and `Host` header stay the server name (or delegated name) while the connection goes to the
//! address discovery chose — and connections are pooled per destination, as Synapse does.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    OwnedServerName, ServerName,
    api::{
        EndpointError as _, IncomingResponseExt as _, OutgoingRequest, OutgoingRequestExt as _,
        auth_scheme::{AuthScheme, NoAuthentication},
        error::{Error as MatrixError, ErrorKind},
        federation::authentication::{ServerSignatures, XMatrixSigningInput},
        path_builder::SinglePath,
    },
    signatures::Ed25519KeyPair,
};

use crate::{
    SigningKey,
    discovery::{Discovery, DiscoveryError, Resolved},
};

/// Decides whether a server may federate with us (the closed-federation allow-list), shared by
/// the inbound check and this client.
pub type AllowPolicy = Arc<dyn Fn(&ServerName) -> bool + Send + Sync>;

/// What the client needs; `ClientConfig::new` fills in the defaults.
#[derive(Clone)]
pub struct ClientConfig {
    /// Our server name: the X-Matrix origin.
    pub origin: OwnedServerName,
    pub key: Arc<SigningKey>,
    /// Verify peer certificates (off only for tests and self-signed peers).
    pub verify_tls: bool,
    /// Extra trusted CA certificates, PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// Let discovery return loopback and private addresses.
    pub allow_private_networks: bool,
    pub allow: AllowPolicy,
    /// Whole-request timeout (connecting, sending, reading the answer).
    pub timeout: Duration,
    /// Largest response body read.
    pub max_response_bytes: usize,
    /// The port of `/.well-known/matrix/server` lookups: 443, except in tests.
    pub well_known_port: u16,
}

impl ClientConfig {
    /// Verification on, public networks only, open federation, 60 s, 64 MiB answers.
    pub fn new(origin: OwnedServerName, key: Arc<SigningKey>) -> Self {
        Self {
            origin,
            key,
            verify_tls: true,
            ca_pem: None,
            allow_private_networks: false,
            allow: Arc::new(|_| true),
            timeout: Duration::from_secs(60),
            max_response_bytes: 64 * 1024 * 1024,
            well_known_port: 443,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("origin", &self.origin)
            .field("verify_tls", &self.verify_tls)
            .field("allow_private_networks", &self.allow_private_networks)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a request failed. `Matrix` carries the remote's status and `errcode`, so callers can
/// tell a refusal (403), an unknown thing (404), a rate limit (429) and a failure (5xx) apart.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The destination is not on the allow-list; nothing was sent.
    #[error("{0} is not on the federation allow-list")]
    NotAllowed(OwnedServerName),
    #[error("server discovery for {0} failed: {1}")]
    Discovery(OwnedServerName, DiscoveryError),
    #[error("cannot build the request: {0}")]
    Request(String),
    /// Connecting, TLS, a timeout, or the connection broke.
    #[error("request to {0} failed: {1}")]
    Transport(OwnedServerName, String),
    #[error("the answer of {0} exceeds {1} bytes")]
    TooLarge(OwnedServerName, usize),
    /// The remote answered with a Matrix error.
    #[error("{0} answered {1}")]
    Matrix(OwnedServerName, Box<MatrixError>),
    /// A success status with a body that is not the endpoint's response.
    #[error("invalid answer from {0}: {1}")]
    InvalidResponse(OwnedServerName, String),
}

impl ClientError {
    /// The remote's HTTP status, if it answered with an error.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Self::Matrix(_, e) => Some(e.status_code),
            _ => None,
        }
    }

    /// The remote's `errcode`, if it sent one.
    pub fn error_kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Matrix(_, e) => e.error_kind(),
            _ => None,
        }
    }
}

/// Auth schemes the client can send: X-Matrix signatures or nothing (key fetching).
pub trait FederationAuth: AuthScheme {
    fn input<'a>(origin: &ServerName, destination: &ServerName, key: &'a Ed25519KeyPair) -> Self::Input<'a>;
}

impl FederationAuth for ServerSignatures {
    fn input<'a>(origin: &ServerName, destination: &ServerName, key: &'a Ed25519KeyPair) -> XMatrixSigningInput<'a> {
        XMatrixSigningInput::new(origin.to_owned(), destination.to_owned(), key)
    }
}

impl FederationAuth for NoAuthentication {
    fn input(_: &ServerName, _: &ServerName, _: &Ed25519KeyPair) {}
}

/// A resolved destination with its own connection pool.
struct Destination {
    resolved: Resolved,
    http: reqwest::Client,
}

/// Sends federation requests. Cheap to share (`Arc`); one per process.
pub struct FederationClient {
    config: ClientConfig,
    tls: rustls::ClientConfig,
    discovery: Discovery,
    destinations: Mutex<BTreeMap<OwnedServerName, Arc<Destination>>>,
}

impl std::fmt::Debug for FederationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl FederationClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let tls = crate::net::tls_config(config.verify_tls, config.ca_pem.as_deref())
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let discovery =
            Discovery::new(tls.clone(), config.allow_private_networks, config.timeout, config.well_known_port)
                .map_err(|e| ClientError::Request(e.to_string()))?;
        Ok(Self { config, tls, discovery, destinations: Mutex::new(BTreeMap::new()) })
    }

    pub fn origin(&self) -> &ServerName {
        &self.config.origin
    }

    /// Whether the allow-list lets `server` federate with us.
    pub fn allows(&self, server: &ServerName) -> bool {
        (self.config.allow)(server)
    }

    /// The TLS client configuration (verification, extra CAs), for other HTTPS fetches the
    /// federation setup needs (the signed allow-list).
    pub fn tls_config(&self) -> rustls::ClientConfig {
        self.tls.clone()
    }

    /// Sends a federation request and reads the endpoint's response. X-Matrix-signed when the
    /// endpoint requires server signatures.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse, ClientError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: FederationAuth,
    {
        if !self.allows(destination) {
            tracing::debug!(%destination, "refused: not on the allow-list");
            return Err(ClientError::NotAllowed(destination.to_owned()));
        }
        let target = self.destination(destination).await?;
        let input = R::Authentication::input(&self.config.origin, destination, self.config.key.key_pair());
        let http_request: http::Request<Vec<u8>> = request
            .try_into_http_request(&target.resolved.base_url(), input, ())
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let (parts, body) = http_request.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string()).map_err(|e| ClientError::Request(e.to_string()))?;
        let mut headers = parts.headers;
        if let Ok(host) = http::HeaderValue::from_str(&target.resolved.host_header) {
            headers.insert(http::header::HOST, host);
        }
        let started = Instant::now();
        let sent = target.http.request(parts.method.clone(), url).headers(headers).body(body).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => {
                // Resolve afresh next time: the address may have changed.
                self.forget(destination);
                tracing::debug!(%destination, method = %parts.method, path = parts.uri.path(), error = %e, "federation request failed");
                return Err(ClientError::Transport(destination.to_owned(), error_chain(&e)));
            }
        };
        let status = response.status();
        let limit = self.config.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(ClientError::TooLarge(destination.to_owned(), limit));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(ClientError::TooLarge(destination.to_owned(), limit));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(ClientError::Transport(destination.to_owned(), error_chain(&e))),
            }
        }
        tracing::debug!(%destination, method = %parts.method, path = parts.uri.path(), status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "federation request");
        let mut builder = http::Response::builder().status(status);
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let http_response = builder
            .body(body.as_slice())
            .map_err(|e| ClientError::InvalidResponse(destination.to_owned(), e.to_string()))?;
        if status.as_u16() >= 400 {
            return Err(ClientError::Matrix(
                destination.to_owned(),
                Box::new(MatrixError::from_http_response(http_response)),
            ));
        }
        R::IncomingResponse::try_from_http_response(http_response)
            .map_err(|e| ClientError::InvalidResponse(destination.to_owned(), e.to_string()))
    }

    fn forget(&self, destination: &ServerName) {
        if let Ok(mut map) = self.destinations.lock() {
            map.remove(destination);
        }
    }

    /// The destination's resolution and pool, resolved anew when it has expired.
    async fn destination(&self, name: &ServerName) -> Result<Arc<Destination>, ClientError> {
        let now = Instant::now();
        if let Some(found) = self.destinations.lock().ok().and_then(|m| m.get(name).cloned())
            && found.resolved.expires > now
        {
            return Ok(found);
        }
        let resolved = self.discovery.resolve(name).await.map_err(|e| ClientError::Discovery(name.to_owned(), e))?;
        tracing::debug!(destination = %name, tls_name = %resolved.tls_name, port = resolved.port, addrs = ?resolved.addrs, "resolved");
        let addrs: Vec<SocketAddr> = resolved.addrs.iter().map(|ip| SocketAddr::new(*ip, resolved.port)).collect();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(self.tls.clone())
            .timeout(self.config.timeout)
            .connect_timeout(self.config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Poststelle/", env!("CARGO_PKG_VERSION")))
            .resolve_to_addrs(&resolved.tls_name, &addrs)
            .dns_resolver(Arc::new(NoLookups))
            .build()
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let destination = Arc::new(Destination { resolved, http });
        if let Ok(mut map) = self.destinations.lock() {
            map.retain(|_, d| d.resolved.expires > now);
            map.insert(name.to_owned(), destination.clone());
        }
        Ok(destination)
    }
}

/// A destination's client connects only to the addresses discovery chose.
#[derive(Debug)]
struct NoLookups;

impl reqwest::dns::Resolve for NoLookups {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move { Err(format!("{name} was not resolved by server discovery").into()) })
    }
}

/// An error with its causes (reqwest's own message hides "certificate unknown" and the like).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
