//! The shared framework of Poststelle's legacy-channel bridges (application services).
//!
//! This crate will hold, per DESIGN §7: the appservice transaction endpoint, ghost users,
//! portal rooms, MLS membership, proof events with the raw signed artefacts, bridge state and
//! send status. The bridges for EGVP, De-Mail and BundID-Postfach will be crates beside it. It
//! has no code yet: the bridges arrive with their own issues.
