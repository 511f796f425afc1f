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
    /// Adds this server's signature to another server's event (an invite of one of our users),
    /// leaving its hashes as they are.
    pub fn sign_event(
        &self,
        origin: &str,
        event: &mut ruma::CanonicalJsonObject,
        rules: &ruma::room_version_rules::RedactionRules,
    ) -> Result<(), ruma::signatures::JsonError> {
        ruma::signatures::sign_event(origin, &self.pair, event, rules)
    }

    pub fn hash_and_sign_event(
        &self,
        origin: &str,
        event: &mut ruma::CanonicalJsonObject,
        rules: &ruma::room_version_rules::RedactionRules,
    ) -> Result<(), ruma::signatures::JsonError> {
        ruma::signatures::hash_and_sign_event(origin, &self.pair, event, rules)
    }
}

/// A server's key document after its checks: the keys it publishes, as `(key id, public key)`,
/// the keys it replaced with their expiry, and how long the document is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDocument {
    pub valid_until_ts: i64,
    pub verify_keys: Vec<(String, [u8; 32])>,
    pub old_verify_keys: Vec<(String, [u8; 32], i64)>,
}

/// Checks a key document (`/_matrix/key/v2/server`, or one a notary relays): it names
/// `expected` as its server, and every current ed25519 key has signed it. Other signatures (a
/// notary's) are left to the caller. Keys of other algorithms are ignored.
pub fn verify_key_document(
    expected: &ruma::ServerName,
    document: &ruma::CanonicalJsonObject,
) -> Result<KeyDocument, KeyError> {
    use ruma::CanonicalJsonValue as V;
    let bad = |msg: &str| KeyError(msg.to_owned());
    match document.get("server_name") {
        Some(V::String(name)) if name == expected.as_str() => {}
        _ => return Err(bad("the document names another server")),
    }
    let valid_until_ts = match document.get("valid_until_ts") {
        Some(V::Integer(ts)) => i64::from(*ts),
        _ => return Err(bad("valid_until_ts is missing")),
    };
    let key_of = |value: &V| -> Option<[u8; 32]> {
        let V::Object(entry) = value else { return None };
        let V::String(text) = entry.get("key")? else { return None };
        ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(text).ok()?.as_bytes().try_into().ok()
    };
    let mut verify_keys = Vec::new();
    if let Some(V::Object(keys)) = document.get("verify_keys") {
        for (id, value) in keys.iter().filter(|(id, _)| id.starts_with("ed25519:")) {
            verify_keys.push((id.clone(), key_of(value).ok_or_else(|| bad("a verify key is not 32 bytes"))?));
        }
    }
    if verify_keys.is_empty() {
        return Err(bad("the document has no ed25519 verify key"));
    }
    let mut old_verify_keys = Vec::new();
    if let Some(V::Object(keys)) = document.get("old_verify_keys") {
        for (id, value) in keys.iter().filter(|(id, _)| id.starts_with("ed25519:")) {
            let expired = match value {
                V::Object(entry) => match entry.get("expired_ts") {
                    Some(V::Integer(ts)) => i64::from(*ts),
                    _ => return Err(bad("an old verify key has no expired_ts")),
                },
                _ => return Err(bad("an old verify key is not an object")),
            };
            old_verify_keys.push((
                id.clone(),
                key_of(value).ok_or_else(|| bad("an old key is not 32 bytes"))?,
                expired,
            ));
        }
    }
    for (id, key) in &verify_keys {
        verify_signature_by(document, expected.as_str(), id, key)?;
    }
    Ok(KeyDocument { valid_until_ts, verify_keys, old_verify_keys })
}

/// Checks the one signature `entity`/`key_id` on a signed JSON object, whoever else signed it
/// (ruma's `verify_json` insists on keys for every signer).
pub fn verify_signature_by(
    object: &ruma::CanonicalJsonObject,
    entity: &str,
    key_id: &str,
    public_key: &[u8],
) -> Result<(), KeyError> {
    use ruma::CanonicalJsonValue as V;
    let missing = || KeyError(format!("no signature by {entity} with {key_id}"));
    let Some(V::Object(signatures)) = object.get("signatures") else { return Err(missing()) };
    let Some(V::Object(by_entity)) = signatures.get(entity) else { return Err(missing()) };
    let Some(V::String(signature)) = by_entity.get(key_id) else { return Err(missing()) };
    let signature = ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(signature)
        .map_err(|_| KeyError(format!("the signature by {key_id} is not base64")))?;
    let canonical =
        ruma::signatures::to_canonical_json_string_for_signing(object).map_err(|e| KeyError(e.to_string()))?;
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        public_key,
        signature.as_bytes(),
        canonical.as_bytes(),
    )
    .map_err(|e| KeyError(format!("the signature by {entity} with {key_id} does not verify: {e}")))
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

    #[test]
    fn key_documents_are_checked() {
        let (key, _) = SigningKey::generate().unwrap();
        let name = <&ruma::ServerName>::try_from("a.example").unwrap();
        let doc = key.server_keys("a.example", 1_900_000_000_000, &[("ed25519:old".into(), vec![7; 32], 5)]).unwrap();
        let checked = super::verify_key_document(name, &doc).expect("valid");
        assert_eq!(checked.valid_until_ts, 1_900_000_000_000);
        assert_eq!(checked.verify_keys, vec![(key.key_id(), key.public_key())]);
        assert_eq!(checked.old_verify_keys, vec![("ed25519:old".to_owned(), [7; 32], 5)]);

        // Another server's name, a change after signing, a signature by another key.
        let other = <&ruma::ServerName>::try_from("b.example").unwrap();
        assert!(super::verify_key_document(other, &doc).is_err());
        let mut changed = doc.clone();
        changed.insert(
            "valid_until_ts".into(),
            ruma::CanonicalJsonValue::Integer(2_000_000_000_000u64.try_into().unwrap()),
        );
        assert!(super::verify_key_document(name, &changed).is_err());
        let (impostor, _) = SigningKey::generate().unwrap();
        let mut forged = impostor.server_keys("a.example", 1_900_000_000_000, &[]).unwrap();
        // The impostor's document claims the real key.
        let ruma::CanonicalJsonValue::Object(keys) = doc["verify_keys"].clone() else { panic!() };
        forged.insert("verify_keys".into(), ruma::CanonicalJsonValue::Object(keys));
        assert!(super::verify_key_document(name, &forged).is_err());

        // A notary's signature on top does not disturb the origin's, and is checked on its own.
        let (notary, _) = SigningKey::generate().unwrap();
        let mut relayed = doc.clone();
        notary.sign_json("notary.example", &mut relayed).unwrap();
        super::verify_key_document(name, &relayed).expect("still valid");
        super::verify_signature_by(&relayed, "notary.example", &notary.key_id(), &notary.public_key()).expect("notary");
        assert!(super::verify_signature_by(&doc, "notary.example", &notary.key_id(), &notary.public_key()).is_err());
    }
}
