//! Password hashing with argon2id, off the async executor.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version, password_hash::SaltString,
};

use super::{ServiceError, ServiceResult};

/// Hashes and verifies passwords with the configured cost.
#[derive(Clone, Debug)]
pub struct PasswordHasherService {
    params: Params,
}

impl PasswordHasherService {
    pub fn new(memory_kib: u32, iterations: u32) -> ServiceResult<Self> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| ServiceError::Internal(format!("argon2 parameters: {e}")))?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string for `password`.
    pub async fn hash(&self, password: String) -> ServiceResult<String> {
        let argon2 = self.argon2();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| ServiceError::Internal(format!("hashing: {e}")))
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
    }

    /// Whether `password` matches the PHC string `hash` (parameters are taken from the hash).
    pub async fn verify(&self, password: String, hash: String) -> ServiceResult<bool> {
        let argon2 = self.argon2();
        tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else { return false };
            argon2.verify_password(password.as_bytes(), &parsed).is_ok()
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = PasswordHasherService::new(64, 1).unwrap();
        let hash = h.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(h.verify("correct horse".into(), hash.clone()).await.unwrap());
        assert!(!h.verify("wrong".into(), hash).await.unwrap());
        assert!(!h.verify("x".into(), "not a hash".into()).await.unwrap());
    }
}
