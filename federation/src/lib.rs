//! The Matrix server-server protocol for Poststelle, without I/O policy.
//!
//! Per DESIGN §1 this crate holds the pure protocol parts: the server's signing keys ([`keys`]),
//! PDUs as typed values ([`pdu`]), building new events with content hashes, signatures and
//! reference-hash ids ([`builder`]), and the authorisation rules of the spec applied through
//! ruma-state-res ([`auth`]), server discovery ([`discovery`]), the address guard and TLS client
//! configuration ([`net`]) and the outbound client that signs requests with X-Matrix
//! ([`client`]); the first steps of accepting a received PDU ([`incoming`]), with JSON that
//! canonical JSON does not allow ([`noncanonical`]), and state resolution over loaded events
//! ([`resolve`]); whether a received device-list update applies or shows a gap
//! ([`device_lists`]). Only the client and discovery touch the network, and never a database; `poststelle-server` supplies events, state and the
//! allow-list policy.

pub mod auth;
pub mod builder;
pub mod client;
pub mod device_lists;
pub mod discovery;
pub mod incoming;
pub mod keys;
pub mod net;
pub mod noncanonical;
pub mod pdu;
pub mod resolve;

pub use self::{
    builder::{BuildError, BuiltEvent, ProtoEvent},
    client::{AllowPolicy, ClientConfig, ClientError, FederationClient},
    keys::SigningKey,
    pdu::{Pdu, PduError},
};
