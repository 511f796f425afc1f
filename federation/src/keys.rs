//! The server's ed25519 signing key.

use ruma::signatures::{Ed25519KeyPair, KeyPair};

/// A signing key with its id (`ed25519:<version>`), as the server signs events and requests.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    version: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

/// A key that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid signing key: {0}")]
pub struct KeyError(String);

impl SigningKey {
    /// A fresh key: its PKCS#8 document (to store) and a version derived from the public key.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let der = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&der, String::new()).map_err(|e| KeyError(e.to_string()))?;
        // A short, stable version from the public key: unique per key, valid in a key id.
        let version = format!("a_{}", &hex_prefix(&probe.public_key()));
        let key = Self::from_pkcs8(&der, version)?;
        Ok((key, der.to_vec()))
    }

    /// A stored key.
    pub fn from_pkcs8(der: &[u8], version: String) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_der(der, version.clone()).map_err(|e| KeyError(e.to_string()))?;
        Ok(Self { pair, version })
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.version)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.pair.public_key()
    }

    pub(crate) fn pair(&self) -> &impl KeyPair {
        &self.pair
    }

    /// ruma's key pair, for its signing helpers (X-Matrix request signatures).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

impl SigningKey {
    /// Signs a JSON object in place (adds `signatures.<origin>.<key id>`), as requests, key
    /// documents and notary responses are signed.
    pub fn sign_json(&self, origin: &str, object: &mut ruma::CanonicalJsonObject) -> Result<(), KeyError> {
        ruma::signatures::sign_json(origin, &self.pair, object).map_err(|e| KeyError(e.to_string()))
    }

    /// The server's key document for `/_matrix/key/v2/server`: its current verify key, valid
    /// until `valid_until_ts`, and the keys it replaced (`(key id, public key, expired_ts)`),
    /// signed by the current key.
    pub fn server_keys(
        &self,
        server_name: &str,
        valid_until_ts: u64,
        old_keys: &[(String, Vec<u8>, i64)],
    ) -> Result<ruma::CanonicalJsonObject, KeyError> {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        let old: serde_json::Map<String, serde_json::Value> = old_keys
            .iter()
            .map(|(id, key, expired)| (id.clone(), serde_json::json!({ "key": b64(key), "expired_ts": expired })))
            .collect();
        let document = serde_json::json!({
            "server_name": server_name,
            "valid_until_ts": valid_until_ts,
            "verify_keys": { self.key_id(): { "key": b64(&self.public_key()) } },
            "old_verify_keys": old,
        });
        let mut object: ruma::CanonicalJsonObject =
            serde_json::from_value(document).map_err(|e| KeyError(e.to_string()))?;
        self.sign_json(server_name, &mut object)?;
        Ok(object)
    }
}

impl SigningKey {
    /// Adds the content hash and this server's signature to an event (one of ours built from
    /// another server's template).
    pub fn hash_and_sign_event(
        &self,
        origin: &str,
        event: &mut ruma::CanonicalJsonObject,
        rules: &ruma::room_version_rules::RedactionRules,
    ) -> Result<(), ruma::signatures::JsonError> {
        ruma::signatures::hash_and_sign_event(origin, &self.pair, event, rules)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::SigningKey;

    #[test]
    fn the_key_document_is_signed_by_its_own_key() {
        let (key, _) = SigningKey::generate().unwrap();
        let doc = key
            .server_keys("poststelle.example", 1_900_000_000_000, &[("ed25519:old".into(), vec![7; 32], 5)])
            .unwrap();
        assert!(
            matches!(&doc["old_verify_keys"], ruma::CanonicalJsonValue::Object(o) if o.contains_key("ed25519:old"))
        );
        assert_eq!(doc["server_name"], ruma::CanonicalJsonValue::String("poststelle.example".into()));
        let mut keys = BTreeMap::new();
        let mut server_keys = BTreeMap::new();
        server_keys.insert(key.key_id(), ruma::serde::Base64::new(key.public_key().to_vec()));
        keys.insert("poststelle.example".to_owned(), server_keys);
        ruma::signatures::verify_json(&keys, &doc).expect("a valid self-signature");
        // Tampering breaks it.
        let mut changed = doc.clone();
        changed.insert("valid_until_ts".into(), ruma::CanonicalJsonValue::Integer(1u32.into()));
        assert!(ruma::signatures::verify_json(&keys, &changed).is_err());
    }
}
