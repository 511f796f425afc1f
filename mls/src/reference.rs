//! MLS messages too large for an event travel through the media repository (DESIGN §6): the
//! event names the upload by a reference holding its `mxc://` URI, SHA-256 and size, and whoever
//! uses the message (the hub before it accepts a commit, members before they apply it) fetches
//! the bytes and checks them against the reference.

use sha2::{Digest, Sha256};

use crate::codec;

/// The field of an `m.mls.commit` content that holds a [`MediaRef`] in place of `ciphertext`.
pub const COMMIT_REF_FIELD: &str = "de.poststelle.ciphertext_ref";
/// The spec's limit on a PDU.
pub const MAX_EVENT_BYTES: usize = 65_536;
/// Room an event needs besides its commit (ids, hashes, signatures, auth and prev events).
pub const EVENT_OVERHEAD: usize = 2_048;
/// The longest commit (base64) an event carries inline; longer ones go by reference.
pub const INLINE_COMMIT_MAX: usize = MAX_EVENT_BYTES - EVENT_OVERHEAD;
/// The largest commit accepted by reference (a commit adding a thousand members is about 350 KB).
pub const MAX_COMMIT_BYTES: u64 = 4 * 1024 * 1024;

/// Where the bytes of an MLS message are and what they must be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaRef {
    /// The `mxc://` URI of the upload.
    pub url: String,
    /// SHA-256 of the bytes (the TLS-encoded message, not its base64), unpadded base64.
    pub sha256: String,
    /// The number of bytes.
    pub size: u64,
}

/// Why fetched bytes are not the ones a reference names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefMismatch {
    #[error("the referenced media has {got} bytes, the reference says {expected}")]
    Size { expected: u64, got: u64 },
    #[error("the referenced media's SHA-256 is not the reference's")]
    Hash,
}

impl MediaRef {
    /// The reference to `bytes` uploaded at `url`.
    pub fn of(url: &str, bytes: &[u8]) -> Self {
        MediaRef { url: url.to_owned(), sha256: sha256(bytes), size: bytes.len() as u64 }
    }

    /// Checks that `bytes` are the referenced ones.
    pub fn check(&self, bytes: &[u8]) -> Result<(), RefMismatch> {
        if bytes.len() as u64 != self.size {
            return Err(RefMismatch::Size { expected: self.size, got: bytes.len() as u64 });
        }
        if sha256(bytes) != self.sha256.trim_end_matches('=') {
            return Err(RefMismatch::Hash);
        }
        Ok(())
    }

    /// The server name and media id of the URI, if it is an `mxc://` URI.
    pub fn server_and_id(&self) -> Option<(&str, &str)> {
        let (server, id) = self.url.strip_prefix("mxc://")?.split_once('/')?;
        (!server.is_empty() && !id.is_empty() && !id.contains('/')).then_some((server, id))
    }
}

/// SHA-256, unpadded standard base64 (as Matrix writes hashes).
pub fn sha256(bytes: &[u8]) -> String {
    codec::encode(&Sha256::digest(bytes))
}

/// Whether a commit (base64) is too long for an event and must go by reference.
pub fn commit_needs_reference(commit_b64: &str) -> bool {
    commit_b64.len() > INLINE_COMMIT_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_accepts_exactly_its_bytes() {
        let bytes = vec![7u8; 70_000];
        let reference = MediaRef::of("mxc://hub.example/abc", &bytes);
        assert_eq!(reference.server_and_id(), Some(("hub.example", "abc")));
        reference.check(&bytes).unwrap();
        let mut other = bytes.clone();
        other[5] = 8;
        assert_eq!(reference.check(&other), Err(RefMismatch::Hash));
        assert_eq!(reference.check(&bytes[1..]), Err(RefMismatch::Size { expected: 70_000, got: 69_999 }));
        for bad in ["https://hub.example/abc", "mxc://hub.example", "mxc:///abc", "mxc://hub.example/a/b"] {
            assert_eq!(MediaRef { url: bad.into(), ..reference.clone() }.server_and_id(), None, "{bad}");
        }
        assert!(commit_needs_reference(&"A".repeat(INLINE_COMMIT_MAX + 1)));
        assert!(!commit_needs_reference(&"A".repeat(INLINE_COMMIT_MAX)));
    }
}
