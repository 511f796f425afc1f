//! MLS (RFC 9420) for Poststelle, on openmls.
//!
//! The MLS profile is DESIGN §6: a room is an MLS group whose id is the room id's bytes; the room
//! creator's server is the Delivery Service ("hub") that accepts exactly one commit per epoch;
//! commits are PublicMessages so the hub verifies them fully; application messages are
//! PrivateMessages in `m.room.encrypted`; KeyPackages are one-time and fallback keys.
//!
//! - [`suite`]: ciphersuites and their `m.mls.v1.<name>` algorithm names.
//! - [`identity`]: the BasicCredential naming a Matrix user and device.
//! - [`key_package`]: validation of uploaded KeyPackages.
//! - [`client`]: the client SDK: a device's groups, commits and messages, kept in a directory.
//! - [`ds`]: the Delivery Service's view of a group (`PublicGroup`), commit and message checks.
//! - [`reference`]: MLS messages too large for an event, named by their upload in the media repository.

pub mod client;
pub mod codec;
pub mod ds;
pub mod identity;
pub mod key_package;
pub mod reference;
pub mod suite;

pub use identity::DeviceIdentity;
pub use suite::Suite;
