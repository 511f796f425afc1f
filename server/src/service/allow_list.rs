//! Closed federation: which servers may federate with us. A static list from the configuration
//! and a signed list (a JWS, RFC 7515, fetched over HTTPS and verified with the operator's public
//! key, as TI-Messenger distributes its federation list) combine as a union. A list that is
//! expired or badly signed is refused and the last valid one stays in force until its own `exp`;
//! with a URL configured and no valid list, nobody is allowed. One handle serves the inbound check
//! and the outbound client.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use poststelle_federation::AllowPolicy;
use ruma::ServerName;

use super::{ServiceError, ServiceResult};
use crate::config::Federation as FederationConfig;

/// An unknown server triggers a refetch of the signed list at most this often.
const ON_DEMAND_MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Largest list accepted.
const MAX_LIST_BYTES: usize = 4 * 1024 * 1024;
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 60;

/// A verified signed list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedList {
    pub servers: BTreeSet<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Where the signed list comes from and who signs it.
struct Source {
    url: String,
    allow_private: bool,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    refresh: Duration,
}

/// The allow-list handle.
pub struct AllowList {
    static_list: BTreeSet<String>,
    source: Option<Source>,
    signed: RwLock<Option<SignedList>>,
    wake: tokio::sync::Notify,
    last_demand: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for AllowList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowList")
            .field("static_list", &self.static_list)
            .field("url", &self.source.as_ref().map(|s| &s.url))
            .finish_non_exhaustive()
    }
}

impl AllowList {
    pub fn from_config(config: &FederationConfig) -> ServiceResult<Arc<Self>> {
        let source = if config.allow_list_url.is_empty() {
            None
        } else {
            let pem = std::fs::read(&config.allow_list_key).map_err(|e| {
                ServiceError::Internal(format!("federation.allow_list_key {}: {e}", config.allow_list_key))
            })?;
            let (key, algorithms) = decoding_key(&pem)?;
            Some(Source {
                url: config.allow_list_url.clone(),
                allow_private: config.allow_private_networks,
                key,
                algorithms,
                refresh: Duration::from_secs(config.allow_list_refresh_secs),
            })
        };
        Ok(Arc::new(Self {
            static_list: config.allow_list.iter().map(|s| s.to_ascii_lowercase()).collect(),
            source,
            signed: RwLock::new(None),
            wake: tokio::sync::Notify::new(),
            last_demand: Mutex::new(None),
        }))
    }

    /// Whether `server` may federate with us. An unknown server wakes the refresher (rate-limited),
    /// so a newly listed server is let in without waiting for the next scheduled fetch.
    pub fn allows(&self, server: &ServerName) -> bool {
        if self.static_list.is_empty() && self.source.is_none() {
            return true;
        }
        let name = server.as_str().to_ascii_lowercase();
        if self.static_list.contains(&name) {
            return true;
        }
        let now = unix_secs();
        let listed = self
            .signed
            .read()
            .is_ok_and(|list| list.as_ref().is_some_and(|l| l.exp + LEEWAY_SECS > now && l.servers.contains(&name)));
        if !listed && self.source.is_some() {
            let mut last = self.last_demand.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= ON_DEMAND_MIN_INTERVAL) {
                *last = Some(Instant::now());
                self.wake.notify_one();
            }
        }
        listed
    }

    /// The handle as the federation client takes it.
    pub fn policy(self: &Arc<Self>) -> AllowPolicy {
        let this = self.clone();
        Arc::new(move |server: &ServerName| this.allows(server))
    }

    /// Verifies a signed list (`token`, JWS compact serialization) at `now` (seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<SignedList, String> {
        let source = self.source.as_ref().ok_or("no allow_list_url configured")?;
        verify_list(token, &source.key, &source.algorithms, now)
    }

    /// Fetches and verifies the signed list once; a refused list leaves the last valid one.
    pub async fn refresh(&self, http: &reqwest::Client) -> Result<usize, String> {
        let Some(source) = &self.source else { return Ok(0) };
        let url = reqwest::Url::parse(&source.url).map_err(|e| e.to_string())?;
        if !source.allow_private && poststelle_federation::net::is_private_host(&url) {
            return Err("the list's URL names a private address".to_owned());
        }
        let mut response = http.get(&source.url).send().await.map_err(|e| format!("fetching the list: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("fetching the list: status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading the list: {e}"))? {
            if body.len() + chunk.len() > MAX_LIST_BYTES {
                return Err("the list is too large".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        let token = String::from_utf8(body).map_err(|_| "the list is not text".to_owned())?;
        let list = self.verify(token.trim(), unix_secs())?;
        let count = list.servers.len();
        if let Ok(mut signed) = self.signed.write() {
            *signed = Some(list);
        }
        Ok(count)
    }

    /// Fetches the signed list now (at start-up), then every `allow_list_refresh_secs` and when an
    /// unknown server appears, over HTTPS with the federation TLS settings (`tls`).
    pub async fn start(self: &Arc<Self>, tls: rustls::ClientConfig) -> ServiceResult<()> {
        let Some(source) = &self.source else { return Ok(()) };
        let http = poststelle_federation::net::https_client(tls, source.allow_private, Duration::from_secs(30))
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.refresh_logged(&http).await;
        let (this, refresh) = (self.clone(), source.refresh);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(refresh) => {}
                    _ = this.wake.notified() => {}
                }
                this.refresh_logged(&http).await;
            }
        });
        Ok(())
    }

    async fn refresh_logged(&self, http: &reqwest::Client) {
        match self.refresh(http).await {
            Ok(servers) => tracing::info!(servers, "signed federation allow-list loaded"),
            Err(reason) => tracing::warn!(%reason, "signed federation allow-list refused; the last valid list stays"),
        }
    }
}

/// The key and the algorithms it may sign with, by the key's type.
fn decoding_key(pem: &[u8]) -> ServiceResult<(DecodingKey, Vec<Algorithm>)> {
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]));
    }
    Err(ServiceError::Internal("federation.allow_list_key is not an Ed25519, EC or RSA public key (PEM)".to_owned()))
}

/// Verifies a signed list: signature, algorithm, `exp` (required). The payload lists servers as
/// `{"servers": [...]}` or, TI-Messenger style, `{"domainList": [{"domain": ...}]}`.
pub fn verify_list(token: &str, key: &DecodingKey, algorithms: &[Algorithm], now: u64) -> Result<SignedList, String> {
    #[derive(serde::Deserialize)]
    struct Payload {
        #[serde(default)]
        servers: Vec<String>,
        #[serde(default, rename = "domainList")]
        domain_list: Vec<Domain>,
        exp: u64,
    }
    #[derive(serde::Deserialize)]
    struct Domain {
        domain: String,
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWS: {e}"))?;
    if !algorithms.contains(&header.alg) {
        return Err(format!("algorithm {:?} does not fit the key", header.alg));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = algorithms.to_vec();
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_exp = false; // checked below against `now`, so tests can pass a time
    validation.validate_aud = false;
    let payload = jsonwebtoken::decode::<Payload>(token, key, &validation)
        .map_err(|e| format!("bad signature or payload: {e}"))?
        .claims;
    if payload.exp + LEEWAY_SECS <= now {
        return Err(format!("the list expired at {}", payload.exp));
    }
    let servers = payload
        .servers
        .into_iter()
        .chain(payload.domain_list.into_iter().map(|d| d.domain))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    Ok(SignedList { servers, exp: payload.exp })
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    fn keys() -> (EncodingKey, DecodingKey) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let encoding = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
        let decoding = DecodingKey::from_ed_pem(pair.public_key_pem().as_bytes()).unwrap();
        (encoding, decoding)
    }

    fn sign(key: &EncodingKey, payload: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &payload, key).unwrap()
    }

    #[test]
    fn signed_lists_are_verified() {
        let (enc, dec) = keys();
        let now = 1_800_000_000;
        let algs = [Algorithm::EdDSA];
        let list =
            sign(&enc, serde_json::json!({"servers": ["A.example", "b.example:8448"], "iat": now, "exp": now + 3600}));
        let verified = verify_list(&list, &dec, &algs, now).unwrap();
        assert_eq!(verified.servers, BTreeSet::from(["a.example".to_owned(), "b.example:8448".to_owned()]));

        let ti = sign(
            &enc,
            serde_json::json!({"domainList": [{"domain": "c.example", "telematikID": "1"}], "exp": now + 10}),
        );
        assert!(verify_list(&ti, &dec, &algs, now).unwrap().servers.contains("c.example"));

        let expired = sign(&enc, serde_json::json!({"servers": ["a.example"], "exp": now - 3600}));
        assert!(verify_list(&expired, &dec, &algs, now).unwrap_err().contains("expired"));
        let no_exp = sign(&enc, serde_json::json!({"servers": ["a.example"]}));
        assert!(verify_list(&no_exp, &dec, &algs, now).is_err());

        let (other, _) = keys();
        let forged = sign(&other, serde_json::json!({"servers": ["a.example"], "exp": now + 3600}));
        assert!(verify_list(&forged, &dec, &algs, now).is_err());
        // A tampered payload with the original signature.
        let mut parts: Vec<&str> = list.split('.').collect();
        let tampered_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::json!({"servers": ["evil.example"], "exp": now + 3600}).to_string(),
        );
        parts[1] = &tampered_payload;
        assert!(verify_list(&parts.join("."), &dec, &algs, now).is_err());
        assert!(verify_list("not a jws", &dec, &algs, now).is_err());
        // An HMAC token cannot pass for a list signed with a public key.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"servers": ["a.example"], "exp": now + 3600}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(verify_list(&hs, &dec, &algs, now).is_err());
    }
}
