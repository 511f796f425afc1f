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

#[cfg(test)]
mod tests {
    use openmls::prelude::{Capabilities, CredentialWithKey, ExtensionType, Lifetime};
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use tls_codec::Serialize as _;

    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    /// A KeyPackage of `id` as uploaded: (key name, value).
    fn upload(id: &DeviceIdentity, suite: Suite, last_resort: bool, lifetime: Option<Lifetime>) -> (String, String) {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(suite.ciphersuite().signature_algorithm()).unwrap();
        let credential = CredentialWithKey { credential: id.credential(), signature_key: signer.public().into() };
        let mut builder = KeyPackage::builder();
        if last_resort {
            // The leaf must declare the extension it carries.
            let capabilities = Capabilities::builder().extensions(vec![ExtensionType::LastResort]).build();
            builder = builder.mark_as_last_resort().leaf_node_capabilities(capabilities);
        }
        if let Some(lifetime) = lifetime {
            builder = builder.key_package_lifetime(lifetime);
        }
        let bundle = builder.build(suite.ciphersuite(), &provider, &signer, credential).unwrap();
        let kp = bundle.key_package();
        (reference_name(kp), codec::encode(&kp.tls_serialize_detached().unwrap()))
    }

    #[test]
    fn uploads_are_checked_against_the_key_id_the_uploader_and_the_clock() {
        let alice = DeviceIdentity::new("@alice:hub.example", "A1");
        let alg = Suite::DEFAULT.algorithm();
        let (name, value) = upload(&alice, Suite::DEFAULT, false, None);
        let valid = validate_upload(&alg, &name, &value, &alice, false, now()).expect("a good KeyPackage");
        assert_eq!((valid.suite, valid.identity, valid.reference), (Suite::DEFAULT, alice.clone(), name.clone()));

        assert_eq!(
            validate_upload(&alg, &name, &value, &alice, true, now()).unwrap_err(),
            KeyPackageError::LastResortMismatch
        );
        let (fb_name, fb_value) = upload(&alice, Suite::DEFAULT, true, None);
        validate_upload(&alg, &fb_name, &fb_value, &alice, true, now()).expect("a last-resort fallback key");
        assert_eq!(
            validate_upload(&alg, &name, &value, &DeviceIdentity::new("@alice:hub.example", "A2"), false, now())
                .unwrap_err(),
            KeyPackageError::ForeignCredential
        );
        assert_eq!(
            validate_upload(&alg, &fb_name, &value, &alice, false, now()).unwrap_err(),
            KeyPackageError::ReferenceMismatch
        );
        assert_eq!(
            validate_upload(&Suite::PQ_HYBRID.algorithm(), &name, &value, &alice, false, now()).unwrap_err(),
            KeyPackageError::SuiteMismatch
        );
        assert_eq!(
            validate_upload("m.mls.v1.MLS_256_DHKEMP521_AES256GCM_SHA512_P521", &name, &value, &alice, false, now())
                .unwrap_err(),
            KeyPackageError::UnsupportedSuite
        );
        assert_eq!(validate_upload(&alg, &name, "%%%", &alice, false, now()).unwrap_err(), KeyPackageError::Malformed);

        // A flipped bit in the signed body breaks a signature.
        let mut bytes = codec::decode(&value).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        let tampered = codec::encode(&bytes);
        assert!(matches!(
            validate_upload(&alg, &name, &tampered, &alice, false, now()),
            Err(KeyPackageError::Invalid(_) | KeyPackageError::Malformed | KeyPackageError::ReferenceMismatch)
        ));

        // Expired, and valid for far too long.
        let t = now();
        let (old_name, old) = upload(&alice, Suite::DEFAULT, false, Some(Lifetime::init(t - 7200, t - 3600)));
        assert_eq!(validate_upload(&alg, &old_name, &old, &alice, false, t).unwrap_err(), KeyPackageError::Expired);
        let (long_name, long) =
            upload(&alice, Suite::DEFAULT, false, Some(Lifetime::init(t - 60, t + 365 * 24 * 3600)));
        assert!(validate_upload(&alg, &long_name, &long, &alice, false, t).is_err());
    }

    #[test]
    fn the_post_quantum_hybrid_suite_is_accepted() {
        let alice = DeviceIdentity::new("@alice:hub.example", "A1");
        let (name, value) = upload(&alice, Suite::PQ_HYBRID, false, None);
        let valid = validate_upload(&Suite::PQ_HYBRID.algorithm(), &name, &value, &alice, false, now()).unwrap();
        assert_eq!(valid.suite, Suite::PQ_HYBRID);
    }
}
