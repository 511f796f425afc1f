//! Byte encodings used on the Matrix side: MLS messages travel as unpadded standard base64 (as
//! Matrix encodes keys; padded input is accepted too), references in key ids as unpadded URL-safe
//! base64 so they never contain `/` or `:`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Unpadded standard base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Standard base64, with or without padding.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if text.ends_with('=') { STANDARD.decode(text).ok() } else { STANDARD_NO_PAD.decode(text).ok() }
}

/// Unpadded URL-safe base64, for reference names inside key ids.
pub fn encode_ref(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
