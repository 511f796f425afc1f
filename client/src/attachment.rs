//! Encrypted attachments as the Matrix spec defines them (`file` objects, version `v2`): the
//! file is encrypted with AES-256-CTR under a fresh random key and IV before upload, and the
//! SHA-256 of the ciphertext lets the receiver check what the media repository returned. The key
//! travels only inside the MLS-encrypted event.

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit as _, StreamCipher as _};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Why an attachment could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttachmentError {
    #[error("unsupported encrypted file version {0:?}")]
    Version(String),
    #[error("unsupported key: {0}")]
    Key(&'static str),
    #[error("the IV is not 16 bytes of base64")]
    Iv,
    #[error("the SHA-256 of the downloaded file does not match")]
    HashMismatch,
}

/// The spec's JSON Web Key for an attachment key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub kty: String,
    pub key_ops: Vec<String>,
    pub alg: String,
    /// The key, unpadded URL-safe base64.
    pub k: String,
    pub ext: bool,
}

/// The spec's `EncryptedFile`: where the ciphertext is and how to decrypt and check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedFile {
    pub url: String,
    pub key: AttachmentKey,
    /// The initial counter block, unpadded base64.
    pub iv: String,
    /// `sha256`: unpadded base64 of the ciphertext's hash.
    pub hashes: std::collections::BTreeMap<String, String>,
    pub v: String,
}

/// Encrypts `plaintext` under a fresh key; the returned file object still needs its `url`.
pub fn encrypt(plaintext: &[u8]) -> (Vec<u8>, EncryptedFile) {
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    // The low 64 bits start at zero so the counter cannot wrap within a file, as other clients do.
    rand::rngs::OsRng.fill_bytes(&mut iv[..8]);
    encrypt_with(&key, &iv, plaintext)
}

fn encrypt_with(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> (Vec<u8>, EncryptedFile) {
    let mut data = plaintext.to_vec();
    Ctr128BE::<Aes256>::new(key.into(), iv.into()).apply_keystream(&mut data);
    let hash = STANDARD_NO_PAD.encode(Sha256::digest(&data));
    let file = EncryptedFile {
        url: String::new(),
        key: AttachmentKey {
            kty: "oct".into(),
            key_ops: vec!["encrypt".into(), "decrypt".into()],
            alg: "A256CTR".into(),
            k: URL_SAFE_NO_PAD.encode(key),
            ext: true,
        },
        iv: STANDARD_NO_PAD.encode(iv),
        hashes: [("sha256".to_owned(), hash)].into_iter().collect(),
        v: "v2".into(),
    };
    (data, file)
}

/// Checks the ciphertext's hash and decrypts it.
pub fn decrypt(ciphertext: &[u8], file: &EncryptedFile) -> Result<Vec<u8>, AttachmentError> {
    if file.v != "v2" {
        return Err(AttachmentError::Version(file.v.clone()));
    }
    if file.key.kty != "oct" || file.key.alg != "A256CTR" {
        return Err(AttachmentError::Key("not an A256CTR octet key"));
    }
    let key: [u8; 32] = decode_any(&file.key.k)
        .and_then(|k| k.try_into().ok())
        .ok_or(AttachmentError::Key("not 32 bytes of base64"))?;
    let iv: [u8; 16] = decode_any(&file.iv).and_then(|iv| iv.try_into().ok()).ok_or(AttachmentError::Iv)?;
    let expected = file.hashes.get("sha256").and_then(|h| decode_any(h)).ok_or(AttachmentError::HashMismatch)?;
    if Sha256::digest(ciphertext)[..] != expected[..] {
        return Err(AttachmentError::HashMismatch);
    }
    let mut data = ciphertext.to_vec();
    Ctr128BE::<Aes256>::new((&key).into(), (&iv).into()).apply_keystream(&mut data);
    Ok(data)
}

/// Base64 in any of the alphabets and paddings clients write.
fn decode_any(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD.decode(trimmed).ok().or_else(|| URL_SAFE_NO_PAD.decode(trimmed).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// NIST SP 800-38A, F.5.5 (CTR-AES256.Encrypt), first two blocks.
    #[test]
    fn aes_256_ctr_matches_the_nist_vector() {
        let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4").try_into().unwrap();
        let iv: [u8; 16] = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
        let plaintext = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let (ciphertext, file) = encrypt_with(&key, &iv, &plaintext);
        assert_eq!(ciphertext, hex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"));
        assert_eq!(file.hashes["sha256"], STANDARD_NO_PAD.encode(Sha256::digest(&ciphertext)));
        assert_eq!(file.key.k, URL_SAFE_NO_PAD.encode(key));
        assert_eq!(decrypt(&ciphertext, &file).unwrap(), plaintext);
    }

    #[test]
    fn sha_256_matches_the_fips_vector() {
        assert_eq!(
            Sha256::digest(b"abc").to_vec(),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let plaintext = b"Bescheid vom 27.11.".repeat(100);
        let (ciphertext, file) = encrypt(&plaintext);
        assert_ne!(ciphertext, plaintext);
        assert_eq!(&file.iv.len(), &22);
        assert_eq!(decrypt(&ciphertext, &file).unwrap(), plaintext);

        let json = serde_json::to_value(&file).unwrap();
        assert_eq!(json["v"], "v2");
        assert_eq!(json["key"]["alg"], "A256CTR");
        assert_eq!(serde_json::from_value::<EncryptedFile>(json).unwrap(), file);

        let mut tampered = ciphertext.clone();
        tampered[0] ^= 1;
        assert_eq!(decrypt(&tampered, &file), Err(AttachmentError::HashMismatch));
        let mut other_version = file.clone();
        other_version.v = "v1".into();
        assert!(matches!(decrypt(&ciphertext, &other_version), Err(AttachmentError::Version(_))));
        let mut short_key = file;
        short_key.key.k = "AAAA".into();
        assert!(matches!(decrypt(&ciphertext, &short_key), Err(AttachmentError::Key(_))));
    }
}
