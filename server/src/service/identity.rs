//! The client side of the identity service API (`/_matrix/identity/v2`), as third-party invites
//! need it: looking an address up (hashed, per `/hash_details`), storing an invite for an unbound
//! address, and asking whether a key the identity server signed with is still valid.
//!
//! Identity servers are named by clients, so the same address guard as for push gateways
//! applies: no loopback or private addresses, and HTTPS only, unless the operator allows them.

use std::time::Duration;

use base64::Engine as _;
use ruma::OwnedUserId;
use serde_json::{Value as JsonValue, json};
use sha2::{Digest as _, Sha256};

use crate::{
    config::IdentityServers,
    service::{ServiceError, ServiceResult, outbound},
};

/// What `/store-invite` answered: the token (the state key of `m.room.third_party_invite`), the
/// keys the identity server will sign the binding with, and a display name for the invitee.
#[derive(Debug, Clone)]
pub struct StoredInvite {
    pub token: String,
    pub display_name: String,
    /// `{public_key, key_validity_url}` objects; the first one is the server's long-term key.
    pub public_keys: Vec<JsonValue>,
}

/// What the invite tells the identity server about the room and the inviter (it may show them
/// in the message it sends to the address).
#[derive(Debug, Clone, Default)]
pub struct InviteDetails {
    pub room_id: String,
    pub sender: String,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
    pub room_avatar_url: Option<String>,
    pub room_join_rules: Option<String>,
    pub sender_display_name: Option<String>,
}

#[derive(Debug)]
pub struct IdentityClient {
    http: reqwest::Client,
    config: IdentityServers,
}

impl IdentityClient {
    pub fn new(config: IdentityServers) -> ServiceResult<Self> {
        let http =
            outbound::client(config.allow_private_networks, Duration::from_secs(15), reqwest::redirect::Policy::none())
                .map_err(|e| ServiceError::Internal(format!("identity server client: {e}")))?;
        Ok(Self { http, config })
    }

    /// The base URL of the identity server a client named (`host[:port]`, no scheme).
    fn base(&self, id_server: &str) -> ServiceResult<reqwest::Url> {
        if ruma::ServerName::parse(id_server).is_err() {
            return Err(ServiceError::InvalidParam(format!("id_server {id_server:?} is not a host name")));
        }
        let scheme = if self.config.plain_http { "http" } else { "https" };
        self.checked(&format!("{scheme}://{id_server}"))
    }

    /// A URL the server may fetch: the configured scheme, and no private address unless allowed.
    fn checked(&self, url: &str) -> ServiceResult<reqwest::Url> {
        let parsed = reqwest::Url::parse(url).map_err(|e| ServiceError::InvalidParam(format!("invalid URL: {e}")))?;
        let scheme_ok = parsed.scheme() == "https" || (self.config.plain_http && parsed.scheme() == "http");
        if !scheme_ok {
            return Err(ServiceError::InvalidParam(format!("{url} is not an https URL")));
        }
        if !self.config.allow_private_networks && outbound::is_private_host(&parsed) {
            return Err(ServiceError::Forbidden("identity servers in private networks are not reachable".into()));
        }
        if !self.allowed(&parsed) {
            return Err(ServiceError::Forbidden("this server does not use that identity server".into()));
        }
        Ok(parsed)
    }

    /// Whether the operator's list of identity servers (if any) names the URL's host.
    fn allowed(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        self.config.allow_list.is_empty() || self.config.allow_list.iter().any(|a| *a == authority || a == host)
    }

    /// Sends a request to an identity server; its JSON answer. Refusals (4xx) say so, anything
    /// else that went wrong is an upstream failure.
    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> ServiceResult<JsonValue> {
        let response = request
            .send()
            .await
            .map_err(|e| ServiceError::Upstream(format!("identity server unreachable ({what}): {e}")))?;
        let status = response.status();
        let body: JsonValue = response.json().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ServiceError::Forbidden(format!("the identity server refused {what}: {body}")));
        }
        if status.is_client_error() {
            return Err(ServiceError::InvalidParam(format!("the identity server refused {what}: {body}")));
        }
        if !status.is_success() {
            return Err(ServiceError::Upstream(format!("identity server failed {what}: HTTP {status}")));
        }
        Ok(body)
    }

    /// The Matrix user an address is bound to at the identity server, if any (v2 lookup, with
    /// the hashing the server offers: `sha256` where it can, else `none`).
    pub async fn lookup(
        &self,
        id_server: &str,
        token: &str,
        medium: &str,
        address: &str,
    ) -> ServiceResult<Option<OwnedUserId>> {
        let base = self.base(id_server)?;
        let url = |path: &str| base.join(path).map_err(|e| ServiceError::InvalidParam(e.to_string()));
        let details = self
            .call(self.http.get(url("/_matrix/identity/v2/hash_details")?).bearer_auth(token), "hash_details")
            .await?;
        let pepper = details.get("lookup_pepper").and_then(JsonValue::as_str).unwrap_or_default();
        let algorithms: Vec<&str> = details
            .get("algorithms")
            .and_then(JsonValue::as_array)
            .into_iter()
            .flatten()
            .filter_map(JsonValue::as_str)
            .collect();
        let (algorithm, key) = if algorithms.contains(&"sha256") {
            let digest = Sha256::digest(format!("{address} {medium} {pepper}").as_bytes());
            ("sha256", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
        } else if algorithms.contains(&"none") {
            ("none", format!("{address} {medium}"))
        } else {
            return Err(ServiceError::Upstream("the identity server offers no lookup algorithm we know".into()));
        };
        let body = json!({"addresses": [key], "algorithm": algorithm, "pepper": pepper});
        let answer = self
            .call(self.http.post(url("/_matrix/identity/v2/lookup")?).bearer_auth(token).json(&body), "lookup")
            .await?;
        let mxid = answer.get("mappings").and_then(|m| m.get(&key)).and_then(JsonValue::as_str);
        Ok(mxid.and_then(|m| OwnedUserId::try_from(m).ok()))
    }

    /// Stores an invite for an address that is bound to no one yet (`/store-invite`).
    pub async fn store_invite(
        &self,
        id_server: &str,
        token: &str,
        medium: &str,
        address: &str,
        details: &InviteDetails,
    ) -> ServiceResult<StoredInvite> {
        let base = self.base(id_server)?;
        let url =
            base.join("/_matrix/identity/v2/store-invite").map_err(|e| ServiceError::InvalidParam(e.to_string()))?;
        let mut body = json!({
            "medium": medium,
            "address": address,
            "room_id": details.room_id,
            "sender": details.sender,
        });
        for (key, value) in [
            ("room_name", &details.room_name),
            ("room_alias", &details.room_alias),
            ("room_avatar_url", &details.room_avatar_url),
            ("room_join_rules", &details.room_join_rules),
            ("sender_display_name", &details.sender_display_name),
        ] {
            if let Some(value) = value {
                body[key] = value.clone().into();
            }
        }
        let answer = self.call(self.http.post(url).bearer_auth(token).json(&body), "store-invite").await?;
        let bad =
            |what: &str| ServiceError::Upstream(format!("the identity server's store-invite answer lacks {what}"));
        let invite_token = answer.get("token").and_then(JsonValue::as_str).ok_or_else(|| bad("token"))?;
        let public_keys: Vec<JsonValue> = answer
            .get("public_keys")
            .and_then(JsonValue::as_array)
            .into_iter()
            .flatten()
            .filter(|k| k.get("public_key").and_then(JsonValue::as_str).is_some())
            .cloned()
            .collect();
        if public_keys.is_empty() {
            return Err(bad("public_keys"));
        }
        Ok(StoredInvite {
            token: invite_token.to_owned(),
            display_name: answer.get("display_name").and_then(JsonValue::as_str).unwrap_or_default().to_owned(),
            public_keys,
        })
    }

    /// Whether the identity server still vouches for `public_key` (`GET key_validity_url?
    /// public_key=…` answers `{"valid": true}`). Unreachable or any other answer: not valid.
    pub async fn key_is_valid(&self, key_validity_url: &str, public_key: &str) -> bool {
        let mut url = match self.checked(key_validity_url) {
            Ok(url) => url,
            Err(e) => {
                tracing::info!(url = key_validity_url, error = %e, "key validity URL refused");
                return false;
            }
        };
        url.query_pairs_mut().append_pair("public_key", public_key);
        match self.call(self.http.get(url), "the key validity check").await {
            Ok(answer) => answer.get("valid").and_then(JsonValue::as_bool) == Some(true),
            Err(e) => {
                tracing::info!(url = key_validity_url, error = %e, "key validity check failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(allow_private_networks: bool, plain_http: bool) -> IdentityClient {
        IdentityClient::new(IdentityServers { allow_private_networks, plain_http, allow_list: Vec::new() })
            .expect("client")
    }

    #[test]
    fn identity_servers_are_reached_over_https_on_public_addresses_only() {
        let strict = client(false, false);
        assert_eq!(strict.base("id.example.org").expect("public").as_str(), "https://id.example.org/");
        assert!(matches!(strict.base("127.0.0.1:8090"), Err(ServiceError::Forbidden(_))));
        assert!(matches!(strict.base("localhost"), Err(ServiceError::Forbidden(_))));
        assert!(matches!(strict.base("id.example.org/path"), Err(ServiceError::InvalidParam(_))));
        assert!(matches!(
            strict.checked("http://id.example.org/_matrix/identity/v2/pubkey/isvalid"),
            Err(ServiceError::InvalidParam(_))
        ));

        let listed = IdentityClient::new(IdentityServers {
            allow_private_networks: false,
            plain_http: false,
            allow_list: vec!["id.example.org".into(), "other.example.org:8443".into()],
        })
        .expect("client");
        assert!(listed.base("id.example.org").is_ok());
        assert!(listed.base("id.example.org:443").is_ok());
        assert!(listed.checked("https://other.example.org:8443/_matrix/identity/v2/pubkey/isvalid").is_ok());
        assert!(matches!(listed.base("other.example.org"), Err(ServiceError::Forbidden(_))));
        assert!(matches!(listed.base("evil.example.org"), Err(ServiceError::Forbidden(_))));

        let test = client(true, true);
        assert_eq!(test.base("127.0.0.1:8090").expect("allowed").as_str(), "http://127.0.0.1:8090/");
        assert!(matches!(test.checked("ftp://127.0.0.1/x"), Err(ServiceError::InvalidParam(_))));
    }
}
