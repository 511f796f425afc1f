//! MLS (RFC 9420) for Poststelle, on openmls.
//!
//! This crate will hold, per DESIGN §6: Delivery-Service validation of commits with
//! `PublicGroup`, KeyPackage validation, the wire types of MLS events, and a client SDK
//! (device identity, KeyPackages, create/add/remove, encrypt/decrypt, durable state) used by
//! bridges, Fachverfahren, tests and the command-line client. It has no code yet: MLS arrives
//! with its own issue.
