//! Password hashing with argon2id, off the async executor, in bounded memory.
//!
//! Each hash needs `argon2_memory_kib` of working memory. Allocating it per request lets the
//! allocator keep a copy in every arena the blocking pool touches (measured: ~1 GB resident
//! after a login burst), so the service keeps one reusable block buffer per CPU and lets at most
//! that many hashes run at once.

use std::sync::{Arc, Mutex};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use tokio::sync::Semaphore;

use super::{ServiceError, ServiceResult};

/// Length of the stored hash output, in bytes.
const OUTPUT_LEN: usize = 32;

/// Hashes and verifies passwords with the configured cost.
#[derive(Clone, Debug)]
pub struct PasswordHasherService {
    params: Params,
    slots: Arc<Semaphore>,
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl PasswordHasherService {
    pub fn new(memory_kib: u32, iterations: u32) -> ServiceResult<Self> {
        let params = Params::new(memory_kib, iterations, 1, Some(OUTPUT_LEN))
            .map_err(|e| ServiceError::Internal(format!("argon2 parameters: {e}")))?;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self { params, slots: Arc::new(Semaphore::new(parallel)), buffers: Arc::new(Mutex::new(Vec::new())) })
    }

    /// Runs one argon2id computation with a pooled block buffer; returns the raw output.
    async fn compute(&self, params: Params, password: String, salt: Vec<u8>) -> ServiceResult<Vec<u8>> {
        let _permit = self.slots.acquire().await.map_err(|e| ServiceError::Internal(e.to_string()))?;
        let buffers = self.buffers.clone();
        let standard = self.params.block_count();
        tokio::task::spawn_blocking(move || {
            let needed = params.block_count();
            let mut blocks =
                if needed == standard { buffers.lock().unwrap_or_else(|e| e.into_inner()).pop() } else { None }
                    .unwrap_or_else(|| vec![Block::default(); needed]);
            let mut out = vec![0u8; params.output_len().unwrap_or(OUTPUT_LEN)];
            let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut out,
                &mut blocks,
            );
            if needed == standard {
                buffers.lock().unwrap_or_else(|e| e.into_inner()).push(blocks);
            }
            result.map(|()| out).map_err(|e| ServiceError::Internal(format!("hashing: {e}")))
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
    }

    /// The PHC string for `password`.
    pub async fn hash(&self, password: String) -> ServiceResult<String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_raw =
            salt.decode_b64(&mut salt_bytes).map_err(|e| ServiceError::Internal(format!("salt: {e}")))?.to_vec();
        let out = self.compute(self.params.clone(), password, salt_raw).await?;
        let internal = |e: argon2::password_hash::Error| ServiceError::Internal(format!("hash encoding: {e}"));
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(internal)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(internal)?),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` matches the PHC string `hash` (parameters are taken from the hash).
    pub async fn verify(&self, password: String, hash: String) -> ServiceResult<bool> {
        let Ok(parsed) = PasswordHash::new(&hash) else { return Ok(false) };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return Ok(false);
        }
        let (Ok(params), Some(expected), Some(salt)) = (Params::try_from(&parsed), parsed.hash, parsed.salt) else {
            return Ok(false);
        };
        let mut salt_bytes = [0u8; 64];
        let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else { return Ok(false) };
        let out = self.compute(params, password, salt_raw.to_vec()).await?;
        // `Output` compares in constant time.
        Ok(Output::new(&out).is_ok_and(|out| out == expected))
    }
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;

    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = PasswordHasherService::new(64, 1).unwrap();
        let hash = h.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(h.verify("correct horse".into(), hash.clone()).await.unwrap());
        assert!(!h.verify("wrong".into(), hash.clone()).await.unwrap());
        assert!(!h.verify("x".into(), "not a hash".into()).await.unwrap());
        // The PHC string is the standard one: the argon2 crate's own verifier accepts it.
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
    }

    #[tokio::test]
    async fn verifies_hashes_made_with_other_costs() {
        use argon2::PasswordHasher;
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(128, 2, 1, None).unwrap())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let h = PasswordHasherService::new(64, 1).unwrap();
        assert!(h.verify("pw".into(), other.clone()).await.unwrap());
        assert!(!h.verify("nope".into(), other).await.unwrap());
    }
}
