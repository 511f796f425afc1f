//! The session part of the state directory: where the client logs in and how far it synced.
//! The MLS state lives beside it, in the `mls` folder.

use std::path::{Path, PathBuf};

use poststelle_mls::client::write_atomically;
use serde::{Deserialize, Serialize};

use crate::ClientError;

const SESSION_FILE: &str = "session.json";

/// What a logged-in client remembers between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub homeserver: String,
    pub access_token: String,
    pub user_id: String,
    pub device_id: String,
    /// The `/sync` token up to which everything has been processed.
    #[serde(default)]
    pub next_batch: Option<String>,
}

impl Session {
    /// Reads the session of a state directory.
    pub fn load(dir: &Path) -> Result<Session, ClientError> {
        let bytes = match std::fs::read(dir.join(SESSION_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ClientError::NotLoggedIn),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::CorruptSession(e.to_string()))
    }

    /// Replaces the saved session atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        std::fs::create_dir_all(dir)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ClientError::CorruptSession(e.to_string()))?;
        Ok(write_atomically(dir, SESSION_FILE, &bytes)?)
    }
}

/// Where a state directory keeps its MLS state.
pub fn mls_dir(dir: &Path) -> PathBuf {
    dir.join("mls")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_and_absence_is_not_logged_in() {
        let dir = tempfile::TempDir::new().unwrap();
        assert!(matches!(Session::load(dir.path()), Err(ClientError::NotLoggedIn)));
        let mut session = Session {
            homeserver: "http://127.0.0.1:8008".into(),
            access_token: "syt_token".into(),
            user_id: "@alice:example.org".into(),
            device_id: "ALICE1".into(),
            next_batch: None,
        };
        session.save(dir.path()).unwrap();
        assert_eq!(Session::load(dir.path()).unwrap(), session);
        session.next_batch = Some("s17".into());
        session.save(dir.path()).unwrap();
        assert_eq!(Session::load(dir.path()).unwrap(), session);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(SESSION_FILE)]);
        std::fs::write(dir.path().join(SESSION_FILE), b"{").unwrap();
        assert!(matches!(Session::load(dir.path()), Err(ClientError::CorruptSession(_))));
    }
}
