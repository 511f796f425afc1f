//! Typed configuration: a TOML file (optional) overlaid by `POSTSTELLE_*` environment variables.
//!
//! Nested keys are joined by `__` in the environment, e.g. `POSTSTELLE_LISTENERS__CLIENT__ADDR`.
//! The key names are a contract that operators' tooling relies on (DESIGN §4).

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::{Env, Format, Serialized, Toml},
    value::{Dict, Map, Value},
};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole configuration of one `poststelle` process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name: the part after the colon in user ids.
    pub server_name: String,
    /// Where the managed PostgreSQL cluster, signing keys and media live.
    pub data_dir: PathBuf,
    pub listeners: Listeners,
    pub database: Database,
    pub registration: Registration,
    pub login: Login,
    pub federation: Federation,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub privacy: Privacy,
    pub rooms: Rooms,
    pub media: Media,
    pub push: Push,
    /// Identity servers that third-party invites reach (the `id_server` a client names).
    pub identity_servers: IdentityServers,
    pub presence: Presence,
    /// The base URL clients should use, published in `/.well-known/matrix/client`.
    /// Empty: `http://<client listener>`.
    pub public_baseurl: String,
    /// `tracing` filter directive, e.g. `info` or `poststelle_server=debug,info`.
    pub log: String,
    /// Log as JSON lines instead of human-readable text.
    pub log_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            data_dir: PathBuf::from("./data"),
            listeners: Listeners::default(),
            database: Database::default(),
            registration: Registration::default(),
            login: Login::default(),
            federation: Federation::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            privacy: Privacy::default(),
            rooms: Rooms::default(),
            media: Media::default(),
            push: Push::default(),
            identity_servers: IdentityServers::default(),
            presence: Presence::default(),
            public_baseurl: String::new(),
            log: "info".to_owned(),
            log_json: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    pub client: ClientListener,
    pub federation: FederationListener,
}

/// The client-server listener: plain HTTP, for local use or behind a reverse proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientListener {
    pub addr: SocketAddr,
}

impl Default for ClientListener {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 8008)) }
    }
}

/// The server-server listener: always TLS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationListener {
    pub addr: SocketAddr,
    /// PEM certificate chain; empty: a self-signed pair is generated in `data_dir`.
    pub tls_cert: String,
    /// PEM private key; empty: a self-signed pair is generated in `data_dir`.
    pub tls_key: String,
}

impl Default for FederationListener {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 8448)), tls_cert: String::new(), tls_key: String::new() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// `postgres://…`; empty: the managed PostgreSQL cluster under `data_dir`.
    pub url: String,
    /// Upper bound of the connection pool.
    pub max_connections: u32,
}

impl Default for Database {
    fn default() -> Self {
        Self { url: String::new(), max_connections: 16 }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registration {
    /// Open registration through `/register` (with `m.login.dummy` or a token).
    pub enabled: bool,
    /// When registration is enabled, require an `m.login.registration_token` stage.
    pub requires_token: bool,
    /// Shared secret for the Synapse-compatible `/_synapse/admin/v1/register`; empty: off.
    pub shared_secret: String,
    /// Localpart prefixes nobody may register (claimed by application services, bridges).
    pub reserved_prefixes: Vec<String>,
    /// Guest accounts through `/register?kind=guest` (independent of `enabled`, as Synapse's
    /// `allow_guest_access`): numeric user ids without credentials, limited to the guest
    /// endpoints, joining only rooms whose `m.room.guest_access` is `can_join`.
    pub allow_guest_access: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Login {
    /// Lifetime of an access token issued with a refresh token, in seconds.
    pub access_token_lifetime_secs: u64,
    /// Lifetime of a `m.login.token` from `/login/get_token`, in seconds.
    pub login_token_lifetime_secs: u64,
    /// Argon2id memory cost in KiB (the password hash cost; recorded in BENCHMARKS.md).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    pub jwt: Jwt,
}

impl Default for Login {
    fn default() -> Self {
        Self {
            access_token_lifetime_secs: 300,
            login_token_lifetime_secs: 120,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            jwt: Jwt::default(),
        }
    }
}

/// JWT login (`org.matrix.login.jwt`) from an external identity provider such as BundID or an
/// agency Keycloak.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Jwt {
    pub enabled: bool,
    /// `HS256`, `RS256`, `ES256`, `EdDSA`, …
    pub algorithm: String,
    /// HMAC secret (for `HS*`).
    pub secret: String,
    /// PEM public key file (for `RS*`, `PS*`, `ES*`, `EdDSA`).
    pub public_key_file: String,
    /// A JWKS document URL; keys are chosen by the token's `kid`.
    pub jwks_url: String,
    /// Required `iss`; empty: not checked.
    pub issuer: String,
    /// Accepted `aud` values; empty: tokens carrying an `aud` are refused.
    pub audiences: Vec<String>,
    /// The claim whose value becomes the localpart.
    pub subject_claim: String,
    /// Create the account on the first login.
    pub create_users: bool,
}

impl Default for Jwt {
    fn default() -> Self {
        Self {
            enabled: false,
            algorithm: "HS256".to_owned(),
            secret: String::new(),
            public_key_file: String::new(),
            jwks_url: String::new(),
            issuer: String::new(),
            audiences: Vec::new(),
            subject_claim: "sub".to_owned(),
            create_users: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Federation {
    pub verify_tls: bool,
    /// Extra CA certificates (PEM) trusted for outbound federation.
    pub ca_file: String,
    /// Allow outbound requests to loopback and private ranges (tests only).
    pub allow_private_networks: bool,
    /// Servers allowed to federate; empty (and no `allow_list_url`): open federation.
    #[serde(deserialize_with = "comma_separated")]
    pub allow_list: Vec<String>,
    /// HTTPS URL of a signed allow-list (a JWS, compact serialization), combined with `allow_list`.
    pub allow_list_url: String,
    /// PEM public key that signs the list (ES256, RS256 or EdDSA).
    pub allow_list_key: String,
    /// How often the signed list is fetched again, in seconds.
    pub allow_list_refresh_secs: u64,
    /// Notary servers asked for a server's keys when it cannot be asked itself; empty: none.
    #[serde(deserialize_with = "comma_separated")]
    pub trusted_key_servers: Vec<String>,
    /// A server's keys are fetched again at most this often, in seconds (a request naming an
    /// unknown key, or a notary question asking for a later validity, waits for the next turn).
    pub key_refetch_interval_secs: u64,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            verify_tls: true,
            ca_file: String::new(),
            allow_private_networks: false,
            allow_list: Vec::new(),
            allow_list_url: String::new(),
            allow_list_key: String::new(),
            allow_list_refresh_secs: 3600,
            trusted_key_servers: Vec::new(),
            key_refetch_interval_secs: 30,
        }
    }
}

/// Room defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rooms {
    /// Room version of new rooms when the client names none: "10", "11" or "12".
    pub default_version: String,
}

impl Default for Rooms {
    fn default() -> Self {
        // 11 rather than 12: several clients still refuse v12 room ids without a server part.
        Self { default_version: "11".to_owned() }
    }
}

/// The media repository (content under `data_dir/media`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Media {
    /// Largest upload accepted, in bytes (`413 M_TOO_LARGE` above; published in `/media/config`).
    pub max_upload_bytes: u64,
    /// Media ids a user may hold reserved (`/media/v1/create`) without uploading to them.
    pub max_pending_uploads: u32,
    /// How long a reserved media id waits for its upload, in seconds.
    pub unused_expiry_secs: u64,
    /// Largest image thumbnails are made from, in bytes and in pixels (decompression bombs).
    pub max_thumbnail_source_bytes: u64,
    pub max_thumbnail_source_pixels: u64,
    /// Serve downloads and thumbnails also through the unauthenticated `/_matrix/media/v3`
    /// endpoints, which the spec deprecated (v1.11) for media uploaded after it; off, they
    /// answer `404 M_NOT_FOUND` as Synapse does with authenticated media on.
    pub legacy_unauthenticated_download: bool,
    /// Offer URL previews (`/media/preview_url`): the server fetches pages users link to.
    pub url_previews: bool,
    /// Let URL previews fetch from loopback and private addresses.
    pub url_preview_allow_private_networks: bool,
}

impl Default for Media {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            max_pending_uploads: 5,
            unused_expiry_secs: 24 * 3600,
            max_thumbnail_source_bytes: 20 * 1024 * 1024,
            max_thumbnail_source_pixels: 32_000_000,
            legacy_unauthenticated_download: false,
            url_previews: false,
            url_preview_allow_private_networks: false,
        }
    }
}

/// Push notifications to push gateways (Sygnal and the like).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Push {
    /// Send the event's content, sender name and room name to the push gateway. Off by default:
    /// the gateway, and the push services behind it, learn only event and room ids and counts
    /// (as with the `event_id_only` format) and the app fetches the event itself.
    pub include_content: bool,
    /// Allow push gateways on loopback, private and link-local addresses (off: refused, so that
    /// a pusher cannot make the server probe its own network).
    pub allow_private_networks: bool,
}

/// Identity servers, reached for third-party invites: a client names one (`id_server`), the
/// server looks the address up there, stores the invite there and checks its keys' validity.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityServers {
    /// Allow identity servers on loopback, private and link-local addresses (off: refused, so
    /// that a client cannot make the server probe its own network).
    pub allow_private_networks: bool,
    /// Speak plain HTTP to identity servers instead of HTTPS, and accept `http` key validity
    /// URLs (tests and closed networks only).
    pub plain_http: bool,
    /// The identity servers (`host` or `host:port`) the server talks to; empty: any.
    #[serde(deserialize_with = "comma_separated")]
    pub allow_list: Vec<String>,
}

/// Presence (online, unavailable, offline) of users.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Presence {
    /// Track, show and federate presence. Off: the endpoints still answer (everyone reads
    /// offline), but nothing is stored, sent to other servers or shown in `/sync`.
    pub enabled: bool,
}

impl Default for Presence {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// What users may learn about each other.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Privacy {
    /// Let any user read any local profile (off: only one's own, and admins read all).
    pub public_profiles: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, in bytes (`413 M_TOO_LARGE` above).
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_request_bytes: 1024 * 1024 }
    }
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Whether rate limiting is on at all.
    pub enabled: bool,
    /// Login attempts per client IP.
    pub login_per_ip: Bucket,
    /// Failed login attempts per account.
    pub login_failures_per_account: Bucket,
    /// Registration attempts per client IP.
    pub registration_per_ip: Bucket,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            login_per_ip: Bucket { per_second: 1.0, burst: 10 },
            login_failures_per_account: Bucket { per_second: 0.2, burst: 5 },
            registration_per_ip: Bucket { per_second: 0.2, burst: 5 },
        }
    }
}

/// Accepts both a TOML list and a comma-separated string (as environment variables give).
fn comma_separated<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(de)? {
        ListOrString::List(list) => list,
        ListOrString::String(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
    })
}

/// Configuration errors, reported by `poststelle config check` and at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The `POSTSTELLE_*` environment variables (`__` nests keys), each value kept as the text it
/// is unless it is a list or table. figment's `Env` reads every value as TOML would, so
/// `POSTSTELLE_ROOMS__DEFAULT_VERSION=11` or an all-digit secret became a number where text is
/// expected, and `0123` lost its zero; numbers and booleans are read from the text when the
/// configuration is extracted.
struct EnvText {
    vars: Vec<(String, String)>,
    metadata: Metadata,
}

impl EnvText {
    fn from_process() -> Self {
        let env = Env::prefixed("POSTSTELLE_").split("__");
        Self { vars: env.iter().map(|(k, v)| (k.into_string(), v)).collect(), metadata: env.metadata() }
    }
}

impl Provider for EnvText {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        fn insert(dict: &mut Dict, path: &[&str], value: Value) {
            match path {
                [] => {}
                [last] => {
                    dict.insert((*last).to_owned(), value);
                }
                [first, rest @ ..] => {
                    let entry = dict.entry((*first).to_owned()).or_insert_with(|| Dict::new().into());
                    if entry.as_dict().is_none() {
                        *entry = Dict::new().into();
                    }
                    if let Value::Dict(_, inner) = entry {
                        insert(inner, rest, value);
                    }
                }
            }
        }
        let mut dict = Dict::new();
        for (key, text) in &self.vars {
            let path: Vec<&str> = key.split('.').collect();
            // Lists and tables (`["a", "b"]`, `{per_second = 1, burst = 5}`) are parsed as
            // figment's `Env` parses them; everything else stays text.
            let trimmed = text.trim_start();
            let value = if trimmed.starts_with('[') || trimmed.starts_with('{') {
                text.parse::<Value>().unwrap_or_else(|e| match e {})
            } else {
                text.clone().into()
            };
            insert(&mut dict, &path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

impl Config {
    /// Loads defaults, then the TOML file (if given), then `POSTSTELLE_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(EnvText::from_process());
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        // Lossy: numbers and booleans may be given as text (all environment values are).
        let config: Config = figment.extract_lossy().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: cross-field rules and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if !crate::service::rooms::SUPPORTED_ROOM_VERSIONS.contains(&self.rooms.default_version.as_str()) {
            return invalid(format!(
                "rooms.default_version {:?} is not one of {:?}",
                self.rooms.default_version,
                crate::service::rooms::SUPPORTED_ROOM_VERSIONS
            ));
        }
        if ruma::ServerName::parse(&self.server_name).is_err() {
            return invalid(format!("server_name {:?} is not a valid Matrix server name", self.server_name));
        }
        if self.login.jwt.enabled {
            let jwt = &self.login.jwt;
            if jwt.algorithm.parse::<jsonwebtoken::Algorithm>().is_err() {
                return invalid(format!("login.jwt.algorithm {:?} is unknown", jwt.algorithm));
            }
            let sources = [&jwt.secret, &jwt.public_key_file, &jwt.jwks_url].iter().filter(|s| !s.is_empty()).count();
            if sources != 1 {
                return invalid("login.jwt needs exactly one of secret, public_key_file, jwks_url".to_owned());
            }
        }
        if self.login.argon2_memory_kib < 8 || self.login.argon2_iterations == 0 {
            return invalid("login.argon2_memory_kib must be ≥ 8 and argon2_iterations ≥ 1".to_owned());
        }
        let fed = &self.federation;
        if let Some(bad) =
            fed.allow_list.iter().chain(&fed.trusted_key_servers).find(|s| ruma::ServerName::parse(s.as_str()).is_err())
        {
            return invalid(format!("federation: {bad:?} is not a valid server name"));
        }
        if !fed.allow_list_url.is_empty() {
            if !fed.allow_list_url.starts_with("https://") || url::Url::parse(&fed.allow_list_url).is_err() {
                return invalid("federation.allow_list_url must be an https URL".to_owned());
            }
            if fed.allow_list_key.is_empty() {
                return invalid("federation.allow_list_url needs federation.allow_list_key".to_owned());
            }
            if fed.allow_list_refresh_secs < 10 {
                return invalid("federation.allow_list_refresh_secs must be at least 10".to_owned());
            }
        }
        if self.limits.max_request_bytes < 1024 {
            return invalid("limits.max_request_bytes must be at least 1024".to_owned());
        }
        for bucket in [
            self.rate_limits.login_per_ip,
            self.rate_limits.login_failures_per_account,
            self.rate_limits.registration_per_ip,
        ] {
            if bucket.per_second.is_nan() || bucket.per_second <= 0.0 || bucket.burst == 0 {
                return invalid("rate limit buckets need per_second > 0 and burst ≥ 1".to_owned());
            }
        }
        Ok(())
    }

    /// The base URL clients are told to use.
    pub fn client_base_url(&self) -> String {
        if self.public_baseurl.is_empty() {
            format!("http://{}", self.listeners.client.addr)
        } else {
            self.public_baseurl.trim_end_matches('/').to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars = env
            .iter()
            .map(|(k, v)| (k.trim_start_matches("POSTSTELLE_").to_lowercase().replace("__", "."), (*v).to_owned()))
            .collect();
        let env = EnvText { vars, metadata: Metadata::named("test environment") };
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)).merge(env);
        Config::from_figment(figment)
    }

    /// Environment values are text: a room version, an all-digit secret and one with a leading
    /// zero arrive as written; numbers and booleans are read from their text; lists and tables
    /// are parsed.
    #[test]
    fn environment_values_are_text() {
        let c = load(
            "",
            &[
                ("POSTSTELLE_ROOMS__DEFAULT_VERSION", "10"),
                ("POSTSTELLE_REGISTRATION__SHARED_SECRET", "0123"),
                ("POSTSTELLE_REGISTRATION__ENABLED", "true"),
                ("POSTSTELLE_DATABASE__MAX_CONNECTIONS", "32"),
                ("POSTSTELLE_REGISTRATION__RESERVED_PREFIXES", r#"["egvp_", "demail_"]"#),
                ("POSTSTELLE_RATE_LIMITS__LOGIN_FAILURES_PER_ACCOUNT", "{per_second=0.5,burst=3}"),
            ],
        )
        .expect("valid");
        assert_eq!(c.registration.reserved_prefixes, ["egvp_", "demail_"]);
        assert_eq!(c.rate_limits.login_failures_per_account.burst, 3);
        assert_eq!(c.rooms.default_version, "10");
        assert_eq!(c.registration.shared_secret, "0123");
        assert!(c.registration.enabled);
        assert_eq!(c.database.max_connections, 32);
        let err = load("", &[("POSTSTELLE_DATABASE__MAX_CONNECTIONS", "many")]).expect_err("not a number");
        assert!(err.to_string().contains("max_connections"), "{err}");
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.listeners.client.addr.to_string(), "127.0.0.1:8008");
        assert_eq!(c.listeners.federation.addr.to_string(), "127.0.0.1:8448");
        assert!(c.database.url.is_empty());
        assert!(!c.registration.enabled);
        assert!(!c.registration.allow_guest_access, "guests only when asked for");
        assert!(c.federation.verify_tls);
        assert!(!c.federation.allow_private_networks);
        assert!(c.federation.allow_list.is_empty());
    }

    #[test]
    fn toml_and_nested_overrides() {
        let c = load(
            "server_name = \"example.org\"\n[listeners.client]\naddr = \"127.0.0.1:9000\"\n",
            &[("POSTSTELLE_FEDERATION__ALLOW_LIST", "a.example, b.example")],
        )
        .unwrap();
        assert_eq!(c.server_name, "example.org");
        assert_eq!(c.listeners.client.addr.port(), 9000);
        assert_eq!(c.federation.allow_list, ["a.example", "b.example"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(load("sever_name = \"typo\"", &[]).is_err());
        assert!(load("server_name = \"bad name!\"", &[]).is_err());
        assert!(load("[login.jwt]\nenabled = true\n", &[]).is_err());
        assert!(
            load("[federation]\nallow_list_url = \"http://lists.example/x\"\nallow_list_key = \"k.pem\"", &[]).is_err()
        );
        assert!(load("[federation]\nallow_list_url = \"https://lists.example/x\"", &[]).is_err());
        assert!(load("", &[("POSTSTELLE_FEDERATION__TRUSTED_KEY_SERVERS", "ok.example, bad name")]).is_err());
    }
}
