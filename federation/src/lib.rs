//! The Matrix server-server protocol for Poststelle, without I/O policy.
//!
//! Per DESIGN §1 this crate holds the pure protocol parts: the server's signing keys ([`keys`]),
//! PDUs as typed values ([`pdu`]), building new events with content hashes, signatures and
//! reference-hash ids ([`builder`]), and the authorisation rules of the spec applied through
//! ruma-state-res ([`auth`]). Later: X-Matrix request signing, server discovery, the outbound
//! client and the acceptance pipeline for remote PDUs. Nothing here touches the network or a
//! database; `poststelle-server` supplies events and state through closures.

pub mod auth;
pub mod builder;
pub mod incoming;
pub mod keys;
pub mod pdu;
pub mod resolve;

pub use self::{
    builder::{BuildError, BuiltEvent, ProtoEvent},
    keys::SigningKey,
    pdu::{Pdu, PduError},
};
