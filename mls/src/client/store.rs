//! The device's durable state: one JSON file holding the openmls key-value store and the little
//! the SDK adds (who the device is, its signature keys, its rooms), replaced atomically after
//! every change so a crash leaves either the old or the new state, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};

use super::MlsClientError;
use crate::{DeviceIdentity, codec};

const STATE_FILE: &str = "mls-state.json";
const LOCK_FILE: &str = "mls-state.lock";
const FORMAT: u32 = 1;

/// The openmls provider of one device: the RustCrypto backend and the device's key-value store.
#[derive(Default)]
pub(crate) struct DeviceProvider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for DeviceProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// What the SDK keeps besides openmls' own store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Metadata {
    /// Public signature keys by signature scheme (its IANA code point); the private halves live
    /// in the openmls store.
    pub(crate) signature_keys: BTreeMap<u16, String>,
    /// The rooms whose group this device holds, with the room's MLS algorithm.
    pub(crate) rooms: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    user_id: String,
    device_id: String,
    metadata: Metadata,
    /// The openmls key-value store, keys and values in base64.
    storage: BTreeMap<String, String>,
}

/// The state directory of one device, locked against a second process for as long as it is open.
pub(crate) struct StateDir {
    path: PathBuf,
    /// Holds the exclusive lock; released when dropped.
    _lock: File,
}

impl StateDir {
    /// Creates the directory if needed and takes its lock.
    pub(crate) fn lock(dir: &Path) -> Result<Self, MlsClientError> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        lock.try_lock().map_err(|_| MlsClientError::Locked)?;
        Ok(StateDir { path: dir.to_path_buf(), _lock: lock })
    }

    /// Reads the saved state, `None` if the directory holds none yet.
    pub(crate) fn load(&self, identity: &DeviceIdentity) -> Result<Option<(DeviceProvider, Metadata)>, MlsClientError> {
        let bytes = match fs::read(self.path.join(STATE_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let file: StateFile =
            serde_json::from_slice(&bytes).map_err(|e| MlsClientError::CorruptState(e.to_string()))?;
        if file.format != FORMAT {
            return Err(MlsClientError::CorruptState(format!("unknown state format {}", file.format)));
        }
        if file.user_id != identity.user_id || file.device_id != identity.device_id {
            return Err(MlsClientError::IdentityMismatch(DeviceIdentity::new(file.user_id, file.device_id)));
        }
        let provider = DeviceProvider::default();
        {
            let mut values = provider.storage.values.write().map_err(|_| MlsClientError::StoragePoisoned)?;
            for (key, value) in file.storage {
                let (Some(key), Some(value)) = (codec::decode(&key), codec::decode(&value)) else {
                    return Err(MlsClientError::CorruptState("a store entry is not base64".into()));
                };
                values.insert(key, value);
            }
        }
        Ok(Some((provider, file.metadata)))
    }

    /// Writes the state to a temporary file, syncs it and renames it over the old one.
    pub(crate) fn save(
        &self,
        identity: &DeviceIdentity,
        provider: &DeviceProvider,
        metadata: &Metadata,
    ) -> Result<(), MlsClientError> {
        let storage = {
            let values = provider.storage.values.read().map_err(|_| MlsClientError::StoragePoisoned)?;
            values.iter().map(|(k, v)| (codec::encode(k), codec::encode(v))).collect()
        };
        let file = StateFile {
            format: FORMAT,
            user_id: identity.user_id.clone(),
            device_id: identity.device_id.clone(),
            metadata: metadata.clone(),
            storage,
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| MlsClientError::CorruptState(e.to_string()))?;
        Ok(write_atomically(&self.path, STATE_FILE, &bytes)?)
    }
}

/// Replaces `dir/name` with `bytes`: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = dir.join(format!(".{name}.tmp"));
    {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}
