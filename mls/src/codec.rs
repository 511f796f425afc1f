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

/// The contents of an openmls `MemoryStorage` as bytes, entries sorted by key so equal states
/// give equal bytes: a count, then for each entry the key and value lengths (u64 big-endian) and
/// the bytes.
pub fn storage_to_bytes(storage: &openmls_memory_storage::MemoryStorage) -> Vec<u8> {
    let values = storage.values.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let sorted: std::collections::BTreeMap<&Vec<u8>, &Vec<u8>> = values.iter().collect();
    let mut out = Vec::with_capacity(8 + sorted.iter().map(|(k, v)| 16 + k.len() + v.len()).sum::<usize>());
    out.extend_from_slice(&(sorted.len() as u64).to_be_bytes());
    for (key, value) in sorted {
        out.extend_from_slice(&(key.len() as u64).to_be_bytes());
        out.extend_from_slice(&(value.len() as u64).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    out
}

/// Reads bytes written by [`storage_to_bytes`]; `None` if they are cut short or run on.
pub fn storage_from_bytes(bytes: &[u8]) -> Option<openmls_memory_storage::MemoryStorage> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn length(rest: &mut &[u8]) -> Option<usize> {
        usize::try_from(u64::from_be_bytes(take(rest, 8)?.try_into().ok()?)).ok()
    }
    let mut rest = bytes;
    let count = length(&mut rest)?;
    let storage = openmls_memory_storage::MemoryStorage::default();
    {
        let mut values = storage.values.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..count {
            let key_len = length(&mut rest)?;
            let value_len = length(&mut rest)?;
            let key = take(&mut rest, key_len)?.to_vec();
            let value = take(&mut rest, value_len)?.to_vec();
            values.insert(key, value);
        }
    }
    rest.is_empty().then_some(storage)
}
