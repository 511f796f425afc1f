//! JWT login (`org.matrix.login.jwt`): verifies tokens issued by an external identity provider
//! (BundID, an agency Keycloak) and maps a claim to a localpart.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde_json::{Map, Value as JsonValue};

use super::{ServiceError, ServiceResult};
use crate::config::Jwt as JwtConfig;

/// Refetch a JWKS at most this often when a token names an unknown key.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct JwtVerifier {
    config: JwtConfig,
    algorithm: Algorithm,
    key: KeySource,
}

#[derive(Debug)]
enum KeySource {
    Static(Box<DecodingKey>),
    Jwks { url: String, http: reqwest::Client, cache: Mutex<Option<(JwkSet, Instant)>> },
}

impl JwtVerifier {
    /// `None` when JWT login is off.
    pub fn from_config(config: &JwtConfig) -> ServiceResult<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let bad = |e: String| ServiceError::Internal(format!("login.jwt: {e}"));
        let algorithm: Algorithm = config.algorithm.parse().map_err(|e| bad(format!("{e}")))?;
        let key = if !config.secret.is_empty() {
            KeySource::Static(Box::new(DecodingKey::from_secret(config.secret.as_bytes())))
        } else if !config.public_key_file.is_empty() {
            let pem = std::fs::read(&config.public_key_file)
                .map_err(|e| bad(format!("reading {}: {e}", config.public_key_file)))?;
            let key = match algorithm {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => return Err(bad("public_key_file needs an asymmetric algorithm".into())),
            }
            .map_err(|e| bad(format!("{e}")))?;
            KeySource::Static(Box::new(key))
        } else {
            KeySource::Jwks {
                url: config.jwks_url.clone(),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
                cache: Mutex::new(None),
            }
        };
        Ok(Some(Self { config: config.clone(), algorithm, key }))
    }

    /// Verifies `token` and returns the localpart it names (not yet validated as one).
    pub async fn verify(&self, token: &str) -> ServiceResult<String> {
        let forbidden = |e: &dyn std::fmt::Display| ServiceError::Forbidden(format!("invalid JWT: {e}"));
        let header = decode_header(token).map_err(|e| forbidden(&e))?;
        if header.alg != self.algorithm {
            return Err(ServiceError::Forbidden("invalid JWT: unexpected algorithm".into()));
        }
        let key = match &self.key {
            KeySource::Static(key) => (**key).clone(),
            KeySource::Jwks { .. } => self.jwks_key(header.kid.as_deref()).await?,
        };
        let mut validation = Validation::new(self.algorithm);
        // jsonwebtoken checks `iss` and `aud` only when the token has them; a configured issuer
        // or audience makes the claim required (as Synapse's "essential" claims).
        let mut required = vec!["exp"];
        if !self.config.issuer.is_empty() {
            validation.set_issuer(&[&self.config.issuer]);
            required.push("iss");
        }
        if !self.config.audiences.is_empty() {
            validation.set_audience(&self.config.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let data = decode::<Map<String, JsonValue>>(token, &key, &validation).map_err(|e| forbidden(&e))?;
        match data.claims.get(&self.config.subject_claim) {
            Some(JsonValue::String(s)) if !s.is_empty() => Ok(s.to_lowercase()),
            _ => Err(ServiceError::Forbidden(format!("invalid JWT: no {} claim", self.config.subject_claim))),
        }
    }

    async fn jwks_key(&self, kid: Option<&str>) -> ServiceResult<DecodingKey> {
        let KeySource::Jwks { url, http, cache } = &self.key else { unreachable!("static key") };
        let lookup = |set: &JwkSet| {
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            };
            jwk.and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        };
        let stale = {
            let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            match &*cache {
                Some((set, fetched)) => {
                    if let Some(key) = lookup(set) {
                        return Ok(key);
                    }
                    fetched.elapsed() >= JWKS_MIN_REFRESH
                }
                None => true,
            }
        };
        if !stale {
            return Err(ServiceError::Forbidden("invalid JWT: unknown key id".into()));
        }
        let set: JwkSet = http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| ServiceError::Internal(format!("fetching JWKS: {e}")))?
            .json()
            .await
            .map_err(|e| ServiceError::Internal(format!("parsing JWKS: {e}")))?;
        let key = lookup(&set);
        *cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((set, Instant::now()));
        key.ok_or_else(|| ServiceError::Forbidden("invalid JWT: unknown key id".into()))
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    fn verifier(issuer: &str, audiences: &[&str]) -> JwtVerifier {
        let config = JwtConfig {
            enabled: true,
            secret: "s3cret".into(),
            issuer: issuer.into(),
            audiences: audiences.iter().map(|s| (*s).to_owned()).collect(),
            ..JwtConfig::default()
        };
        JwtVerifier::from_config(&config).unwrap().unwrap()
    }

    fn token(claims: JsonValue, secret: &str) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn exp(offset: i64) -> i64 {
        jsonwebtoken::get_current_timestamp() as i64 + offset
    }

    #[tokio::test]
    async fn accepts_valid_and_rejects_the_rest() {
        let v = verifier("https://idp.example", &["poststelle"]);
        let good = json!({"sub": "Alice", "iss": "https://idp.example", "aud": "poststelle", "exp": exp(60)});
        assert_eq!(v.verify(&token(good.clone(), "s3cret")).await.unwrap(), "alice");
        assert!(v.verify(&token(good, "other")).await.is_err(), "wrong key");
        let expired = json!({"sub": "a", "iss": "https://idp.example", "aud": "poststelle", "exp": exp(-3600)});
        assert!(v.verify(&token(expired, "s3cret")).await.is_err(), "expired");
        let wrong_iss = json!({"sub": "a", "iss": "https://evil", "aud": "poststelle", "exp": exp(60)});
        assert!(v.verify(&token(wrong_iss, "s3cret")).await.is_err(), "issuer");
        let wrong_aud = json!({"sub": "a", "iss": "https://idp.example", "aud": "other", "exp": exp(60)});
        assert!(v.verify(&token(wrong_aud, "s3cret")).await.is_err(), "audience");
        let no_sub = json!({"iss": "https://idp.example", "aud": "poststelle", "exp": exp(60)});
        assert!(v.verify(&token(no_sub, "s3cret")).await.is_err(), "subject");
        let no_iss = json!({"sub": "a", "aud": "poststelle", "exp": exp(60)});
        assert!(v.verify(&token(no_iss, "s3cret")).await.is_err(), "missing issuer");
        let no_aud = json!({"sub": "a", "iss": "https://idp.example", "exp": exp(60)});
        assert!(v.verify(&token(no_aud, "s3cret")).await.is_err(), "missing audience");
        assert!(v.verify("not.a.jwt").await.is_err());
    }
    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    fn rs256_token(kid: Option<&str>) -> String {
        let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-test-rsa.key")).unwrap()).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        encode(&header, &json!({"sub": "grete", "exp": exp(60)}), &key).unwrap()
    }

    #[tokio::test]
    async fn rs256_with_a_public_key_file() {
        let config = JwtConfig {
            enabled: true,
            algorithm: "RS256".into(),
            public_key_file: fixture("jwt-test-rsa.pub").display().to_string(),
            ..JwtConfig::default()
        };
        let v = JwtVerifier::from_config(&config).unwrap().unwrap();
        assert_eq!(v.verify(&rs256_token(None)).await.unwrap(), "grete");
        // An HS256 token made with the public key as secret (algorithm confusion) is refused.
        let pem = std::fs::read(fixture("jwt-test-rsa.pub")).unwrap();
        let forged =
            encode(&Header::default(), &json!({"sub": "grete", "exp": exp(60)}), &EncodingKey::from_secret(&pem))
                .unwrap();
        assert!(v.verify(&forged).await.is_err());
    }

    #[tokio::test]
    async fn rs256_with_keys_from_a_jwks_url() {
        let jwks = std::fs::read_to_string(fixture("jwt-test-jwks.json")).unwrap();
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = jwks.clone();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let config = JwtConfig {
            enabled: true,
            algorithm: "RS256".into(),
            jwks_url: format!("http://{addr}/jwks"),
            ..JwtConfig::default()
        };
        let v = JwtVerifier::from_config(&config).unwrap().unwrap();
        assert_eq!(v.verify(&rs256_token(Some("test-key-1"))).await.unwrap(), "grete");
        assert_eq!(v.verify(&rs256_token(Some("test-key-1"))).await.unwrap(), "grete");
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1, "the key set is cached");
        // Within a minute of the last fetch, an unknown key id is refused without refetching.
        assert!(v.verify(&rs256_token(Some("other-key"))).await.is_err());
        assert!(v.verify(&rs256_token(Some("other-key"))).await.is_err());
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1, "refetches are rate limited");
        server.abort();
    }
}
