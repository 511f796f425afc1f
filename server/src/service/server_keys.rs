//! Other servers' verify keys: fetched from the server itself (`/_matrix/key/v2/server`), or
//! from the configured notaries when it cannot be reached, checked (self-signature, server name,
//! notary signature), cached in PostgreSQL and in memory, and fetched again when a needed key is
//! missing or no longer valid at the time it is needed. Also our own key document, and the
//! notary side: other servers' documents served again with our signature.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use poststelle_federation::{FederationClient, SigningKey, keys::verify_key_document};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys::v2 as notary_query, get_server_keys::v2 as server_keys,
    },
    serde::{Base64, Raw},
    signatures::PublicKeyMap,
};

use super::{ServiceError, ServiceResult};
use crate::storage::{
    Storage, now_ms,
    server_keys::{KeyDocument, RemoteKey},
};

/// How long our own key document may be cached by others (about a week; they fetch again when
/// it runs out).
pub const OWN_KEYS_VALID_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// A key is trusted for at most this long after it was fetched, whatever its document claims
/// (the spec's rule for room versions 5 and later, applied to every use).
const MAX_KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;

/// The keys wanted: server → key ids.
pub type KeyQuery = BTreeMap<OwnedServerName, BTreeSet<OwnedServerSigningKeyId>>;

/// Whether a cached key may verify a signature made at `at` (ms; `None`: at any time, as room
/// versions 1–4 allow).
fn usable_at(key: &RemoteKey, at: Option<i64>) -> bool {
    let Some(at) = at else { return true };
    match (key.expired_ts, key.valid_until_ts) {
        (Some(expired), _) => at < expired,
        (None, Some(valid_until)) => at <= valid_until.min(key.fetched_ts.saturating_add(MAX_KEY_VALIDITY_MS)),
        (None, None) => false,
    }
}

pub struct ServerKeyService {
    storage: Storage,
    client: Arc<FederationClient>,
    server_name: OwnedServerName,
    signing_key: Arc<SigningKey>,
    notaries: Vec<OwnedServerName>,
    /// A server's keys are fetched at most this often (a request naming an unknown key id, or
    /// a notary question asking for a later validity, must not make us fetch every time).
    refetch_interval: Duration,
    cache: RwLock<BTreeMap<OwnedServerName, Vec<RemoteKey>>>,
    /// One fetch per server at a time, and when the last one started.
    fetches: tokio::sync::Mutex<BTreeMap<OwnedServerName, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl std::fmt::Debug for ServerKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeyService").field("notaries", &self.notaries).finish_non_exhaustive()
    }
}

impl ServerKeyService {
    pub fn new(
        storage: Storage,
        client: Arc<FederationClient>,
        server_name: OwnedServerName,
        signing_key: Arc<SigningKey>,
        notaries: Vec<OwnedServerName>,
        refetch_interval: Duration,
    ) -> Self {
        Self {
            storage,
            client,
            server_name,
            signing_key,
            notaries,
            refetch_interval,
            cache: RwLock::new(BTreeMap::new()),
            fetches: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The public keys of `wanted` that are valid at `valid_at` (ms; `None`: any time), fetched
    /// where missing. Keys that cannot be found are left out, so verification with the map fails
    /// for them — for X-Matrix and PDU signatures alike.
    pub async fn public_keys(&self, wanted: &KeyQuery, valid_at: Option<i64>) -> ServiceResult<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for (server, ids) in wanted {
            let keys = if *server == self.server_name {
                self.own_keys().await?
            } else {
                let mut keys = self.cached(server).await?;
                let complete = |keys: &[RemoteKey]| {
                    ids.iter().all(|id| keys.iter().any(|k| k.key_id == id.as_str() && usable_at(k, valid_at)))
                };
                if !complete(&keys) {
                    self.fetch(server, valid_at).await;
                    keys = self.cached(server).await?;
                }
                keys
            };
            let entry: BTreeMap<String, Base64> = keys
                .into_iter()
                .filter(|k| ids.iter().any(|id| id.as_str() == k.key_id) && usable_at(k, valid_at))
                .map(|k| (k.key_id, Base64::new(k.public_key)))
                .collect();
            if !entry.is_empty() {
                map.insert(server.to_string(), entry);
            }
        }
        Ok(map)
    }

    /// Our own keys as remote ones look: the current one valid for a week, the old ones with expiry.
    async fn own_keys(&self) -> ServiceResult<Vec<RemoteKey>> {
        let now = now_ms();
        let mut keys: Vec<RemoteKey> = self
            .storage
            .keys
            .old_keys()
            .await?
            .into_iter()
            .map(|(key_id, public_key, expired)| RemoteKey {
                key_id,
                public_key,
                valid_until_ts: None,
                expired_ts: Some(expired),
                fetched_ts: now,
            })
            .collect();
        keys.push(RemoteKey {
            key_id: self.signing_key.key_id(),
            public_key: self.signing_key.public_key().to_vec(),
            valid_until_ts: Some(now + OWN_KEYS_VALID_FOR.as_millis() as i64),
            expired_ts: None,
            fetched_ts: now,
        });
        Ok(keys)
    }

    /// The keys known for `server` (memory, else PostgreSQL).
    async fn cached(&self, server: &ServerName) -> ServiceResult<Vec<RemoteKey>> {
        if let Some(keys) = self.cache.read().ok().and_then(|c| c.get(server).cloned()) {
            return Ok(keys);
        }
        let keys = self.storage.server_keys.keys(server.as_str()).await?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(server.to_owned(), keys.clone());
        }
        Ok(keys)
    }

    /// Fetches `server`'s keys (itself, then the notaries), at most once per interval; failures
    /// are logged and leave the cache as it was.
    async fn fetch(&self, server: &ServerName, valid_at: Option<i64>) {
        let lock = self.fetches.lock().await.entry(server.to_owned()).or_default().clone();
        let mut last = lock.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch_direct(server).await {
            Ok(()) => return,
            Err(e) => tracing::info!(%server, error = %e, "fetching keys from the server failed"),
        }
        for notary in self.notaries.iter().filter(|n| n.as_str() != server.as_str()) {
            match self.fetch_from_notary(notary, server, valid_at).await {
                Ok(()) => return,
                Err(e) => tracing::info!(%server, %notary, error = %e, "fetching keys from a notary failed"),
            }
        }
    }

    /// `GET /_matrix/key/v2/server` on the server itself.
    async fn fetch_direct(&self, server: &ServerName) -> ServiceResult<()> {
        let response = self.client.send(server, server_keys::Request::new()).await.map_err(upstream)?;
        let document = parse_object(&response.server_key)?;
        self.store(server, document).await
    }

    /// `GET /_matrix/key/v2/query/{server}` on a notary, whose signature is checked with its own
    /// keys, fetched from it directly.
    async fn fetch_from_notary(
        &self,
        notary: &ServerName,
        server: &ServerName,
        valid_at: Option<i64>,
    ) -> ServiceResult<()> {
        let minimum = valid_at.unwrap_or_else(now_ms).max(0);
        let minimum = MilliSecondsSinceUnixEpoch(ruma::UInt::try_from(minimum as u64).unwrap_or_default());
        let response =
            self.client.send(notary, notary_query::Request::new(server.to_owned(), minimum)).await.map_err(upstream)?;
        let mut stored = false;
        for raw in &response.server_keys {
            let document = parse_object(raw)?;
            let signers: Vec<String> = match document.get("signatures") {
                Some(ruma::CanonicalJsonValue::Object(s)) => match s.get(notary.as_str()) {
                    Some(ruma::CanonicalJsonValue::Object(by_notary)) => by_notary.keys().cloned().collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            if self.cached(notary).await?.is_empty() {
                self.fetch_direct(notary).await?;
            }
            let notary_keys = self.cached(notary).await?;
            let signed_by_notary = signers.iter().any(|id| {
                notary_keys.iter().filter(|k| &k.key_id == id && usable_at(k, Some(now_ms()))).any(|k| {
                    poststelle_federation::keys::verify_signature_by(&document, notary.as_str(), id, &k.public_key)
                        .is_ok()
                })
            });
            if !signed_by_notary {
                return Err(ServiceError::Upstream(format!("{notary} did not sign the keys of {server}")));
            }
            self.store(server, document).await?;
            stored = true;
        }
        if stored { Ok(()) } else { Err(ServiceError::Upstream(format!("{notary} knows no keys of {server}"))) }
    }

    /// Checks a key document of `server` and stores it with its keys.
    async fn store(&self, server: &ServerName, document: CanonicalJsonObject) -> ServiceResult<()> {
        let checked = verify_key_document(server, &document)
            .map_err(|e| ServiceError::Upstream(format!("the key document of {server} is invalid: {e}")))?;
        let now = now_ms();
        let mut keys: Vec<RemoteKey> = checked
            .verify_keys
            .iter()
            .map(|(id, key)| RemoteKey {
                key_id: id.clone(),
                public_key: key.to_vec(),
                valid_until_ts: Some(checked.valid_until_ts.max(0)),
                expired_ts: None,
                fetched_ts: now,
            })
            .collect();
        keys.extend(checked.old_verify_keys.iter().map(|(id, key, expired)| RemoteKey {
            key_id: id.clone(),
            public_key: key.to_vec(),
            valid_until_ts: None,
            expired_ts: Some((*expired).max(0)),
            fetched_ts: now,
        }));
        let json = serde_json::to_value(&document).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.storage
            .server_keys
            .store_document(server.as_str(), &json, checked.valid_until_ts.max(0), now, &keys)
            .await?;
        tracing::info!(%server, keys = keys.len(), valid_until_ts = checked.valid_until_ts, "stored server keys");
        let fresh = self.storage.server_keys.keys(server.as_str()).await?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(server.to_owned(), fresh);
        }
        Ok(())
    }

    /// Our key document for `/_matrix/key/v2/server`: the current key, valid for a week, and
    /// the keys it replaced.
    pub async fn own_document(&self) -> ServiceResult<CanonicalJsonObject> {
        let valid_until = u64::try_from(now_ms()).unwrap_or_default() + OWN_KEYS_VALID_FOR.as_millis() as u64;
        let old = self.storage.keys.old_keys().await?;
        self.signing_key
            .server_keys(self.server_name.as_str(), valid_until, &old)
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// The notary answer for `server` about the keys `key_ids` (none: all it knows): our own
    /// document, or the last verified documents of another server that listed those keys,
    /// with our signature added. They are fetched again first when a wanted key has no
    /// document valid until `minimum_valid_until`; when that fails, or the server's answer
    /// leaves a key out, the documents already held are the answer, expired or not. Empty when
    /// the server cannot be asked and nothing is held.
    pub async fn notary_documents(
        &self,
        server: &ServerName,
        key_ids: &[String],
        minimum_valid_until: i64,
    ) -> ServiceResult<Vec<Raw<ServerSigningKeys>>> {
        if server == self.server_name {
            let own = self.own_document().await?;
            return Ok(vec![to_raw(&self.only_signatures_of(server, own))?]);
        }
        if !self.client.allows(server) {
            return Ok(Vec::new());
        }
        let mut held = self.storage.server_keys.documents(server.as_str()).await?;
        if !answers(&held, key_ids, minimum_valid_until) {
            self.fetch(server, Some(minimum_valid_until)).await;
            held = self.storage.server_keys.documents(server.as_str()).await?;
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for doc in held.into_iter().filter(|d| key_ids.is_empty() || key_ids.contains(&d.key_id)) {
            if !seen.insert(doc.document.to_string()) {
                continue;
            }
            let mut document: CanonicalJsonObject =
                serde_json::from_value(doc.document).map_err(|e| ServiceError::Internal(e.to_string()))?;
            self.signing_key
                .sign_json(self.server_name.as_str(), &mut document)
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            out.push(to_raw(&self.only_signatures_of(server, document))?);
        }
        Ok(out)
    }

    /// Only the origin's and our signatures travel (not a third party's we relayed from).
    fn only_signatures_of(&self, server: &ServerName, mut document: CanonicalJsonObject) -> CanonicalJsonObject {
        if let Some(ruma::CanonicalJsonValue::Object(signatures)) = document.get_mut("signatures") {
            signatures.retain(|entity, _| entity == server.as_str() || entity == self.server_name.as_str());
        }
        document
    }
}

/// Whether the documents held answer a notary question without asking the server: each wanted
/// key (or, with none named, some key) has a document valid until `minimum`.
fn answers(held: &[KeyDocument], key_ids: &[String], minimum: i64) -> bool {
    let fresh = |d: &&KeyDocument| d.valid_until_ts >= minimum;
    if key_ids.is_empty() {
        held.iter().any(|d| fresh(&d))
    } else {
        key_ids.iter().all(|id| held.iter().filter(fresh).any(|d| &d.key_id == id))
    }
}

fn to_raw(document: &CanonicalJsonObject) -> ServiceResult<Raw<ServerSigningKeys>> {
    let raw = serde_json::value::to_raw_value(document).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(Raw::from_json(raw))
}

fn parse_object<T>(raw: &Raw<T>) -> ServiceResult<CanonicalJsonObject> {
    serde_json::from_str(raw.json().get())
        .map_err(|e| ServiceError::Upstream(format!("a key document is not canonical JSON: {e}")))
}

fn upstream(e: poststelle_federation::ClientError) -> ServiceError {
    ServiceError::Upstream(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{KeyDocument, MAX_KEY_VALIDITY_MS, RemoteKey, answers, usable_at};

    #[test]
    fn held_documents_answer_when_each_wanted_key_is_valid_long_enough() {
        let doc = |key_id: &str, valid_until_ts| KeyDocument {
            key_id: key_id.into(),
            document: serde_json::json!({}),
            valid_until_ts,
        };
        let held = [doc("ed25519:a", 100), doc("ed25519:b", 50)];
        assert!(answers(&held, &["ed25519:a".into()], 100));
        assert!(!answers(&held, &["ed25519:a".into()], 101));
        assert!(!answers(&held, &["ed25519:a".into(), "ed25519:b".into()], 60), "b is not valid long enough");
        assert!(!answers(&held, &["ed25519:c".into()], 0), "c has no document");
        assert!(answers(&held, &[], 100), "any key will do when none is named");
        assert!(!answers(&held, &[], 101));
        assert!(!answers(&[], &[], 0));
    }

    #[test]
    fn keys_are_usable_within_their_validity_capped_at_a_week() {
        let key = |valid_until, expired| RemoteKey {
            key_id: "ed25519:a".into(),
            public_key: vec![0; 32],
            valid_until_ts: valid_until,
            expired_ts: expired,
            fetched_ts: 1_000,
        };
        let current = key(Some(5_000), None);
        assert!(usable_at(&current, Some(5_000)));
        assert!(!usable_at(&current, Some(5_001)));
        assert!(usable_at(&current, None), "room versions 1-4 do not enforce validity");
        let forever = key(Some(i64::MAX), None);
        assert!(usable_at(&forever, Some(1_000 + MAX_KEY_VALIDITY_MS)));
        assert!(!usable_at(&forever, Some(1_001 + MAX_KEY_VALIDITY_MS)), "capped at a week after fetching");
        let old = key(None, Some(3_000));
        assert!(usable_at(&old, Some(2_999)));
        assert!(!usable_at(&old, Some(3_000)));
    }
}
