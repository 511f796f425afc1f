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
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}
