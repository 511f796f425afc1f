//! KeyPackages uploaded as one-time and fallback keys: what the server checks before it hands one
//! to anybody.
//!
//! A KeyPackage is uploaded under the key id `m.mls.v1.<ciphersuite>:<reference>` with the
//! base64 of its TLS encoding as the value. It is accepted only if both its signatures verify
//! (openmls `KeyPackageIn::validate`), its suite is the one the key id names, the reference is its
//! hash reference, its credential names the uploading user and device, it is valid now and not for
//! longer than [`MAX_LIFETIME_SECS`], and it is a last-resort KeyPackage exactly when uploaded as a
//! fallback key.

use openmls::prelude::{KeyPackage, KeyPackageIn, KeyPackageVerifyError, ProtocolVersion};
use openmls::treesync::errors::LifetimeError;
use openmls_rust_crypto::RustCrypto;
use tls_codec::Deserialize as _;

use crate::{DeviceIdentity, Suite, codec};

/// The longest validity a KeyPackage may claim from now: 90 days (and the clock skew margin).
pub const MAX_LIFETIME_SECS: u64 = 90 * 24 * 3600 + 3600;

/// Why an uploaded KeyPackage was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyPackageError {
    #[error("the key algorithm is not a supported MLS ciphersuite")]
    UnsupportedSuite,
    #[error("the KeyPackage is not base64 of a TLS-encoded KeyPackage")]
    Malformed,
    #[error("the KeyPackage does not verify: {0}")]
    Invalid(String),
    #[error("the KeyPackage's ciphersuite is not the one its key id names")]
    SuiteMismatch,
    #[error("the key id's reference is not the KeyPackage's hash reference")]
    ReferenceMismatch,
    #[error("the KeyPackage's credential does not name the uploading user and device")]
    ForeignCredential,
    #[error("the KeyPackage has expired")]
    Expired,
    #[error("the KeyPackage is not valid yet")]
    NotYetValid,
    #[error("the KeyPackage claims a lifetime longer than 90 days")]
    LifetimeTooLong,
    #[error("a fallback key must be a last-resort KeyPackage, and a one-time key must not be one")]
    LastResortMismatch,
}

/// A KeyPackage that passed every check.
#[derive(Debug, Clone)]
pub struct ValidKeyPackage {
    pub suite: Suite,
    /// The hash reference as written in key ids.
    pub reference: String,
    pub identity: DeviceIdentity,
    /// Seconds since the epoch after which the KeyPackage must not be handed out.
    pub not_after: u64,
    pub key_package: KeyPackage,
}

/// The name part of a KeyPackage's key id: its hash reference, URL-safe base64.
pub fn reference_name(key_package: &KeyPackage) -> String {
    let crypto = RustCrypto::default();
    // Hashing with a supported suite does not fail.
    key_package.hash_ref(&crypto).map(|r| codec::encode_ref(r.as_slice())).unwrap_or_default()
}

/// Decodes and verifies a KeyPackage's signatures and lifetime, without the upload's
/// expectations; for a claimer checking what another server handed out.
pub fn decode_and_verify(value: &str, now_secs: u64) -> Result<KeyPackage, KeyPackageError> {
    let bytes = codec::decode(value).ok_or(KeyPackageError::Malformed)?;
    let unverified = KeyPackageIn::tls_deserialize_exact(&bytes).map_err(|_| KeyPackageError::Malformed)?;
    let crypto = RustCrypto::default();
    let key_package = unverified.validate(&crypto, ProtocolVersion::Mls10).map_err(|e| match e {
        KeyPackageVerifyError::LifetimeError(LifetimeError::Expired { .. }) => KeyPackageError::Expired,
        KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet { .. }) => KeyPackageError::NotYetValid,
        other => KeyPackageError::Invalid(other.to_string()),
    })?;
    let lifetime = key_package.life_time();
    if lifetime.not_after() <= now_secs {
        return Err(KeyPackageError::Expired);
    }
    if lifetime.not_before() > now_secs + 300 {
        return Err(KeyPackageError::NotYetValid);
    }
    Ok(key_package)
}

/// Checks a KeyPackage uploaded by `uploader` under `algorithm:key_name`, as a fallback key when
/// `fallback`.
pub fn validate_upload(
    algorithm: &str,
    key_name: &str,
    value: &str,
    uploader: &DeviceIdentity,
    fallback: bool,
    now_secs: u64,
) -> Result<ValidKeyPackage, KeyPackageError> {
    let suite = Suite::from_algorithm(algorithm).ok_or(KeyPackageError::UnsupportedSuite)?;
    let key_package = decode_and_verify(value, now_secs)?;
    if key_package.ciphersuite() != suite.ciphersuite() {
        return Err(KeyPackageError::SuiteMismatch);
    }
    let reference = reference_name(&key_package);
    if reference != key_name {
        return Err(KeyPackageError::ReferenceMismatch);
    }
    let identity = DeviceIdentity::from_credential(key_package.leaf_node().credential())
        .ok_or(KeyPackageError::ForeignCredential)?;
    if &identity != uploader {
        return Err(KeyPackageError::ForeignCredential);
    }
    let not_after = key_package.life_time().not_after();
    if not_after > now_secs + MAX_LIFETIME_SECS {
        return Err(KeyPackageError::LifetimeTooLong);
    }
    if key_package.last_resort() != fallback {
        return Err(KeyPackageError::LastResortMismatch);
    }
    Ok(ValidKeyPackage { suite, reference, identity, not_after, key_package })
}
