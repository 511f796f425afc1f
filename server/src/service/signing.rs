//! The server's signing key: generated on first start, kept in the database, shared by every
//! process on that database.

use std::sync::Arc;

use poststelle_federation::SigningKey;

use super::{ServiceError, ServiceResult};
use crate::storage::{Storage, now_ms};

/// Loads the current key, or generates and stores one (the first process to store wins).
pub async fn load_or_generate(storage: &Storage) -> ServiceResult<Arc<SigningKey>> {
    for _ in 0..2 {
        if let Some(stored) = storage.keys.current().await? {
            let version = stored.key_id.trim_start_matches("ed25519:").to_owned();
            let key =
                SigningKey::from_pkcs8(&stored.pkcs8, version).map_err(|e| ServiceError::Internal(e.to_string()))?;
            return Ok(Arc::new(key));
        }
        let (key, der) = SigningKey::generate().map_err(|e| ServiceError::Internal(e.to_string()))?;
        if storage.keys.insert_current(&key.key_id(), &der, &key.public_key(), now_ms()).await? {
            tracing::info!(key_id = %key.key_id(), "generated the server signing key");
            return Ok(Arc::new(key));
        }
    }
    Err(ServiceError::Internal("could not load or store a signing key".into()))
}

/// Replaces the current signing key with a new one; the old one stays published under
/// `old_verify_keys` (with when it expired) so signatures made with it can still be checked.
/// Running servers keep signing with the key they loaded until they restart.
pub async fn rotate(storage: &Storage) -> ServiceResult<String> {
    let (key, der) = SigningKey::generate().map_err(|e| ServiceError::Internal(e.to_string()))?;
    storage.keys.rotate(&key.key_id(), &der, &key.public_key(), now_ms()).await?;
    tracing::info!(key_id = %key.key_id(), "rotated the server signing key");
    Ok(key.key_id())
}
