//! Ciphersuites and the Matrix algorithm names that carry them.
//!
//! A room's MLS algorithm is `m.mls.v1.<ciphersuite name>` (MSC4256), e.g.
//! `m.mls.v1.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`. The same string is the algorithm of
//! KeyPackages uploaded as one-time keys, so a KeyPackage claimed for a room fits its group.

use openmls::prelude::Ciphersuite;

/// The prefix of every MLS algorithm name.
pub const ALGORITHM_PREFIX: &str = "m.mls.v1.";

/// The ciphersuites Poststelle accepts, with their RFC 9420 / draft names.
///
/// The mandatory-to-implement suite is the default; the X25519+ML-KEM-768 hybrid
/// (`draft-ietf-mls-pq-ciphersuites`) can be chosen per room for post-quantum confidentiality.
const SUITES: &[(Ciphersuite, &str)] = &[
    (Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"),
    (
        Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
        "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
    ),
    (Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519, "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519"),
];

/// An MLS ciphersuite Poststelle supports, named the way Matrix events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite(Ciphersuite);

impl Suite {
    /// The mandatory-to-implement suite (RFC 9420 §17.1), used when a room names no other.
    pub const DEFAULT: Suite = Suite(Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519);
    /// The post-quantum hybrid: X25519 combined with ML-KEM-768, AES-128-GCM, Ed25519.
    pub const PQ_HYBRID: Suite = Suite(Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519);

    /// The suite for an openmls ciphersuite, if Poststelle supports it.
    pub fn from_ciphersuite(cs: Ciphersuite) -> Option<Suite> {
        SUITES.iter().any(|(c, _)| *c == cs).then_some(Suite(cs))
    }

    /// Parses `m.mls.v1.<name>`; `None` for anything else, including unsupported suites.
    pub fn from_algorithm(algorithm: &str) -> Option<Suite> {
        let name = algorithm.strip_prefix(ALGORITHM_PREFIX)?;
        SUITES.iter().find(|(_, n)| *n == name).map(|(c, _)| Suite(*c))
    }

    /// Whether an algorithm name is an MLS one at all (supported or not).
    pub fn is_mls_algorithm(algorithm: &str) -> bool {
        algorithm.starts_with(ALGORITHM_PREFIX)
    }

    /// The name of the suite, as RFC 9420 writes it.
    pub fn name(self) -> &'static str {
        SUITES.iter().find(|(c, _)| *c == self.0).map(|(_, n)| *n).unwrap_or("unknown")
    }

    /// `m.mls.v1.<name>`.
    pub fn algorithm(self) -> String {
        format!("{ALGORITHM_PREFIX}{}", self.name())
    }

    /// The openmls ciphersuite.
    pub fn ciphersuite(self) -> Ciphersuite {
        self.0
    }

    /// Every supported suite.
    pub fn all() -> impl Iterator<Item = Suite> {
        SUITES.iter().map(|(c, _)| Suite(*c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for suite in Suite::all() {
            assert_eq!(Suite::from_algorithm(&suite.algorithm()), Some(suite));
        }
        assert_eq!(Suite::DEFAULT.algorithm(), "m.mls.v1.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519");
        assert_eq!(Suite::from_algorithm("m.mls.v1.MLS_256_DHKEMP521_AES256GCM_SHA512_P521"), None);
        assert_eq!(Suite::from_algorithm("m.megolm.v1.aes-sha2"), None);
        assert!(Suite::is_mls_algorithm("m.mls.v1.anything"));
        assert!(!Suite::is_mls_algorithm("m.megolm.v1.aes-sha2"));
    }
}
