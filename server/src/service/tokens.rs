//! Random secrets (access, refresh and login tokens, session ids) and their stored hashes.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new random token: a recognisable prefix and 256 bits of randomness.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database stores instead of the token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A random alphanumeric string (device ids, UIA session ids, nonces).
pub fn random_alphanumeric(len: usize) -> String {
    use rand::{Rng, distributions::Alphanumeric};
    rand::rngs::OsRng.sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// A device id as Synapse makes them: ten upper-case letters.
pub fn new_device_id() -> String {
    use rand::Rng;
    (0..10).map(|_| char::from(b'A' + rand::rngs::OsRng.gen_range(0..26))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let a = new_token("pst");
        let b = new_token("pst");
        assert_ne!(a, b);
        assert!(a.starts_with("pst_") && a.len() > 40);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        let d = new_device_id();
        assert_eq!(d.len(), 10);
        assert!(d.chars().all(|c| c.is_ascii_uppercase()));
    }
}
