//! Server discovery: where to connect for a server name, and what to call it on the wire
//! (<https://spec.matrix.org/v1.19/server-server-api/#resolving-server-names>).
//!
//! The steps, in the spec's order: an IP literal is used as is (port 8448 by default); a hostname
//! with an explicit port is resolved as is; otherwise `/.well-known/matrix/server` may delegate to
//! another name (an IP literal, a hostname with a port, or a hostname whose SRV records or port
//! 8448 are used); without delegation SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`,
//! then port 8448. The TLS name (SNI, certificate) and the `Host` header are the server name or
//! the delegated hostname — never an SRV target. Every address found passes the address guard
//! unless private networks are allowed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use ruma::{OwnedServerName, ServerName};

use crate::net::is_public;

/// The default federation port.
pub const DEFAULT_PORT: u16 = 8448;
/// How long a well-known answer is kept without caching headers.
pub const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bounds on a well-known answer's lifetime, whatever its headers say (the spec recommends no
/// more than 48 hours; a few minutes at least keeps a busy sender from refetching per request).
pub const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
pub const WELL_KNOWN_MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a failed well-known lookup is remembered (the spec: errors up to an hour).
pub const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(55 * 60);
/// Largest well-known body read.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;
/// Resolved addresses (from the system resolver, which reports no TTL) are kept this long.
const ADDRESS_TTL: Duration = Duration::from_secs(10 * 60);

/// Where and how to reach a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The name TLS verifies and sends as SNI (none for an IP literal), and the URL's host.
    pub tls_name: String,
    /// The port to connect to.
    pub port: u16,
    /// The `Host` header.
    pub host_header: String,
    /// The addresses to connect to, in order of preference.
    pub addrs: Vec<IpAddr>,
    /// When to resolve again.
    pub expires: Instant,
}

impl Resolved {
    /// `https://<tls name>:<port>`, with IPv6 literals bracketed.
    pub fn base_url(&self) -> String {
        match self.tls_name.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{}", self.port),
            _ => format!("https://{}:{}", self.tls_name, self.port),
        }
    }
}

/// Why a server name could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0} resolves to no public address")]
    PrivateAddress(String),
    #[error("cannot resolve {0}: {1}")]
    Lookup(String, String),
}

/// A server name split into host and port; IPv6 literals without brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameParts {
    Ip(IpAddr, Option<u16>),
    Host(String, Option<u16>),
}

/// Splits a server name (or a delegated name from a well-known answer, which has the same
/// grammar) into its host and port.
pub fn split_name(name: &ServerName) -> NameParts {
    let host = name.host();
    let port = name.port();
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) if name.is_ip_literal() => NameParts::Ip(ip, port),
        _ => NameParts::Host(host.to_ascii_lowercase(), port),
    }
}

/// Reads a well-known answer: `{"m.server": "<hostname>[:<port>]"}`.
pub fn parse_well_known(body: &[u8]) -> Result<OwnedServerName, String> {
    #[derive(serde::Deserialize)]
    struct WellKnown {
        #[serde(rename = "m.server")]
        server: String,
    }
    let parsed: WellKnown = serde_json::from_slice(body).map_err(|e| format!("invalid well-known JSON: {e}"))?;
    OwnedServerName::try_from(parsed.server.as_str()).map_err(|e| format!("invalid m.server {:?}: {e}", parsed.server))
}

/// How long a well-known answer may be cached: `Cache-Control: max-age` (`no-store`/`no-cache`
/// mean the minimum), else `Expires`, else a day; always within the bounds above.
pub fn well_known_lifetime(headers: &http::HeaderMap, now: SystemTime) -> Duration {
    let header = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let declared = if let Some(cache_control) = header(http::header::CACHE_CONTROL) {
        let directives: Vec<&str> = cache_control.split(',').map(str::trim).collect();
        if directives.iter().any(|d| d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache")) {
            Some(Duration::ZERO)
        } else {
            directives
                .iter()
                .find_map(|d| {
                    let (key, value) = d.split_once('=')?;
                    key.trim().eq_ignore_ascii_case("max-age").then(|| value.trim().trim_matches('"').parse().ok())?
                })
                .map(Duration::from_secs)
        }
    } else {
        None
    };
    let declared = declared.or_else(|| {
        let expires = httpdate_parse(header(http::header::EXPIRES)?)?;
        Some(expires.duration_since(now).unwrap_or(Duration::ZERO))
    });
    declared.unwrap_or(WELL_KNOWN_DEFAULT_TTL).clamp(WELL_KNOWN_MIN_TTL, WELL_KNOWN_MAX_TTL)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date format HTTP/1.1 senders use.
fn httpdate_parse(text: &str) -> Option<SystemTime> {
    let mut parts = text.split_whitespace();
    let (_weekday, day, month, year, time, zone) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if zone != "GMT" {
        return None;
    }
    let day: u64 = day.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == month)? as u64
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    // Days since the epoch (civil-from-days inverse, Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s))
}

/// An SRV answer, as far as discovery needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub target: String,
    pub port: u16,
}

/// Orders SRV targets: lowest priority first, then highest weight (a deterministic stand-in for
/// RFC 2782's weighted random choice; every target is still tried in turn). A lone `.` target
/// means "no service".
pub fn order_srv(mut targets: Vec<SrvTarget>) -> Vec<SrvTarget> {
    targets.retain(|t| !t.target.is_empty() && t.target != ".");
    targets.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    targets
}

/// A cached well-known lookup: the delegated name (or none) until `expires`.
#[derive(Clone, Debug)]
struct WellKnownEntry {
    delegated: Option<OwnedServerName>,
    expires: Instant,
}

/// Resolves server names, with the well-known cache.
pub struct Discovery {
    allow_private: bool,
    /// The HTTPS client for well-known lookups (address guard, bounded redirects).
    http: reqwest::Client,
    /// The port well-known is fetched from: 443, except in tests.
    well_known_port: u16,
    dns: Option<hickory_resolver::TokioResolver>,
    well_known: Mutex<BTreeMap<OwnedServerName, WellKnownEntry>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").field("allow_private", &self.allow_private).finish_non_exhaustive()
    }
}

impl Discovery {
    pub fn new(
        tls: rustls::ClientConfig,
        allow_private: bool,
        timeout: Duration,
        well_known_port: u16,
    ) -> Result<Self, reqwest::Error> {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if attempt.url().scheme() != "https" {
                attempt.error("redirect away from https")
            } else if !allow_private && crate::net::is_private_host(attempt.url()) {
                attempt.error("redirect to a private address")
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(policy)
            .no_proxy()
            .user_agent(concat!("Poststelle/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(std::sync::Arc::new(crate::net::PublicOnlyResolver));
        }
        let dns = match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(resolver) => Some(resolver),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver configuration: SRV records will not be used");
                None
            }
        };
        Ok(Self {
            allow_private,
            http: builder.build()?,
            well_known_port,
            dns,
            well_known: Mutex::new(BTreeMap::new()),
        })
    }

    /// Where to reach `name`.
    pub async fn resolve(&self, name: &ServerName) -> Result<Resolved, DiscoveryError> {
        match split_name(name) {
            NameParts::Ip(ip, port) => {
                self.check_ip(name.as_str(), ip)?;
                Ok(literal(ip, port, name.as_str()))
            }
            NameParts::Host(host, Some(port)) => {
                let addrs = self.lookup(&host).await?;
                Ok(Resolved { tls_name: host, port, host_header: name.to_string(), addrs, expires: soon() })
            }
            NameParts::Host(host, None) => match self.well_known(name, &host).await {
                Some(delegated) => match split_name(&delegated) {
                    NameParts::Ip(ip, port) => {
                        self.check_ip(delegated.as_str(), ip)?;
                        Ok(literal(ip, port, delegated.as_str()))
                    }
                    NameParts::Host(d_host, Some(port)) => {
                        let addrs = self.lookup(&d_host).await?;
                        Ok(Resolved {
                            tls_name: d_host,
                            port,
                            host_header: delegated.to_string(),
                            addrs,
                            expires: soon(),
                        })
                    }
                    NameParts::Host(d_host, None) => self.srv_or_default(&d_host).await,
                },
                None => self.srv_or_default(&host).await,
            },
        }
    }

    fn check_ip(&self, what: &str, ip: IpAddr) -> Result<(), DiscoveryError> {
        if self.allow_private || is_public(ip) { Ok(()) } else { Err(DiscoveryError::PrivateAddress(what.to_owned())) }
    }

    /// SRV `_matrix-fed._tcp`, then `_matrix._tcp`, then port 8448 — named `host` on the wire.
    async fn srv_or_default(&self, host: &str) -> Result<Resolved, DiscoveryError> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let (targets, valid_until) = self.srv(&format!("{service}.{host}.")).await;
            let mut last_error = None;
            for target in order_srv(targets) {
                match self.lookup(target.target.trim_end_matches('.')).await {
                    Ok(addrs) => {
                        return Ok(Resolved {
                            tls_name: host.to_owned(),
                            port: target.port,
                            host_header: host.to_owned(),
                            addrs,
                            expires: valid_until.min(soon()),
                        });
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            if let Some(e) = last_error {
                return Err(e);
            }
        }
        let addrs = self.lookup(host).await?;
        Ok(Resolved {
            tls_name: host.to_owned(),
            port: DEFAULT_PORT,
            host_header: host.to_owned(),
            addrs,
            expires: soon(),
        })
    }

    /// SRV records of `name` (none when there are none or DNS fails).
    async fn srv(&self, name: &str) -> (Vec<SrvTarget>, Instant) {
        let Some(dns) = &self.dns else { return (Vec::new(), soon()) };
        match dns.srv_lookup(name).await {
            Ok(lookup) => {
                let targets = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        hickory_resolver::proto::rr::RData::SRV(srv) => Some(SrvTarget {
                            priority: srv.priority,
                            weight: srv.weight,
                            target: srv.target.to_ascii(),
                            port: srv.port,
                        }),
                        _ => None,
                    })
                    .collect();
                (targets, lookup.valid_until())
            }
            Err(e) => {
                tracing::debug!(%name, error = %e, "no SRV records");
                (Vec::new(), soon())
            }
        }
    }

    /// The A/AAAA addresses of `host` that the guard lets through.
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
        let found: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| DiscoveryError::Lookup(host.to_owned(), e.to_string()))?
            .map(|a: SocketAddr| a.ip())
            .collect();
        let allowed: Vec<IpAddr> = found.iter().copied().filter(|ip| self.allow_private || is_public(*ip)).collect();
        if allowed.is_empty() {
            return Err(if found.is_empty() {
                DiscoveryError::Lookup(host.to_owned(), "no addresses".to_owned())
            } else {
                DiscoveryError::PrivateAddress(host.to_owned())
            });
        }
        Ok(allowed)
    }

    /// The delegated name from `https://<host>/.well-known/matrix/server`, cached.
    async fn well_known(&self, name: &ServerName, host: &str) -> Option<OwnedServerName> {
        let now = Instant::now();
        if let Some(entry) = self.well_known.lock().ok()?.get(name).filter(|e| e.expires > now) {
            return entry.delegated.clone();
        }
        let entry = match self.fetch_well_known(host).await {
            Ok((delegated, ttl)) => WellKnownEntry { delegated: Some(delegated), expires: now + ttl },
            Err(reason) => {
                tracing::debug!(server = %name, %reason, "no well-known delegation");
                WellKnownEntry { delegated: None, expires: now + WELL_KNOWN_ERROR_TTL }
            }
        };
        let delegated = entry.delegated.clone();
        if let Ok(mut cache) = self.well_known.lock() {
            cache.retain(|_, e| e.expires > now);
            cache.insert(name.to_owned(), entry);
        }
        delegated
    }

    async fn fetch_well_known(&self, host: &str) -> Result<(OwnedServerName, Duration), String> {
        let url = format!("https://{host}:{}/.well-known/matrix/server", self.well_known_port);
        let url = reqwest::Url::parse(&url).map_err(|e| e.to_string())?;
        if !self.allow_private && crate::net::is_private_host(&url) {
            return Err("private host".to_owned());
        }
        let mut response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let ttl = well_known_lifetime(response.headers(), SystemTime::now());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > WELL_KNOWN_MAX_BYTES {
                return Err("well-known answer too large".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((parse_well_known(&body)?, ttl))
    }
}

fn literal(ip: IpAddr, port: Option<u16>, name: &str) -> Resolved {
    Resolved {
        tls_name: ip.to_string(),
        port: port.unwrap_or(DEFAULT_PORT),
        host_header: name.to_owned(),
        addrs: vec![ip],
        expires: soon(),
    }
}

fn soon() -> Instant {
    Instant::now() + ADDRESS_TTL
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use ruma::ServerName;

    use super::*;

    fn name(s: &str) -> &ServerName {
        <&ServerName>::try_from(s).unwrap()
    }

    #[test]
    fn server_names_split_into_host_and_port() {
        assert_eq!(split_name(name("1.2.3.4")), NameParts::Ip("1.2.3.4".parse().unwrap(), None));
        assert_eq!(split_name(name("1.2.3.4:8449")), NameParts::Ip("1.2.3.4".parse().unwrap(), Some(8449)));
        assert_eq!(split_name(name("[::1]:80")), NameParts::Ip("::1".parse().unwrap(), Some(80)));
        assert_eq!(split_name(name("[2001:db8::1]")), NameParts::Ip("2001:db8::1".parse().unwrap(), None));
        assert_eq!(split_name(name("Example.ORG")), NameParts::Host("example.org".into(), None));
        assert_eq!(split_name(name("example.org:443")), NameParts::Host("example.org".into(), Some(443)));
        let l = literal("::1".parse().unwrap(), None, "[::1]");
        assert_eq!((l.base_url(), l.host_header.as_str()), ("https://[::1]:8448".to_owned(), "[::1]"));
    }

    #[test]
    fn well_known_answers_are_parsed() {
        assert_eq!(parse_well_known(br#"{"m.server": "fed.example.org:443"}"#).unwrap(), "fed.example.org:443");
        assert_eq!(parse_well_known(br#"{"m.server": "fed.example.org", "x": 1}"#).unwrap(), "fed.example.org");
        assert!(parse_well_known(br#"{"m.server": "bad name!"}"#).is_err());
        assert!(parse_well_known(br#"{"m.server": 5}"#).is_err());
        assert!(parse_well_known(b"<html>").is_err());
        assert!(parse_well_known(br#"{}"#).is_err());
    }

    #[test]
    fn well_known_lifetime_follows_the_headers_within_bounds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            h
        };
        assert_eq!(well_known_lifetime(&headers(&[]), now), WELL_KNOWN_DEFAULT_TTL);
        assert_eq!(
            well_known_lifetime(&headers(&[("cache-control", "public, max-age=7200")]), now),
            Duration::from_secs(7200)
        );
        assert_eq!(well_known_lifetime(&headers(&[("cache-control", "max-age=9999999")]), now), WELL_KNOWN_MAX_TTL);
        assert_eq!(well_known_lifetime(&headers(&[("cache-control", "max-age=1")]), now), WELL_KNOWN_MIN_TTL);
        assert_eq!(well_known_lifetime(&headers(&[("cache-control", "no-store")]), now), WELL_KNOWN_MIN_TTL);
        assert_eq!(
            well_known_lifetime(&headers(&[("expires", "Sun, 06 Nov 1994 11:49:37 GMT")]), now),
            Duration::from_secs(3 * 3600)
        );
        // max-age wins over Expires; an unreadable Expires means the default.
        assert_eq!(
            well_known_lifetime(
                &headers(&[("cache-control", "max-age=3600"), ("expires", "Sun, 06 Nov 1994 11:49:37 GMT")]),
                now
            ),
            Duration::from_secs(3600)
        );
        assert_eq!(well_known_lifetime(&headers(&[("expires", "tomorrow")]), now), WELL_KNOWN_DEFAULT_TTL);
        assert_eq!(httpdate_parse("Thu, 01 Jan 1970 00:00:00 GMT"), Some(SystemTime::UNIX_EPOCH), "the epoch itself");
    }

    #[test]
    fn srv_targets_are_ordered_by_priority_then_weight() {
        let t = |priority, weight, target: &str| SrvTarget { priority, weight, target: target.into(), port: 8448 };
        let ordered = order_srv(vec![t(20, 0, "c."), t(10, 5, "b."), t(10, 50, "a."), t(0, 0, ".")]);
        let names: Vec<&str> = ordered.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["a.", "b.", "c."]);
    }
}
