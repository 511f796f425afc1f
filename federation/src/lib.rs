//! The Matrix server-server protocol for Poststelle, without I/O policy.
//!
//! This crate will hold, per DESIGN §1: the server's signing keys; X-Matrix request signing and
//! verification; event hashing, signing and redaction; server discovery (`.well-known`, SRV);
//! the outbound rustls HTTP client with SSRF protection; and the PDU acceptance pipeline
//! (format, signatures, auth rules, state resolution v2 via ruma-state-res). It declares the
//! storage traits it needs; `poststelle-server` implements them. It has no code yet: the
//! federation work arrives with its own issue.
