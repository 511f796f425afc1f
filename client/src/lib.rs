//! A Matrix client for Poststelle's MLS rooms: the library behind the `poststelle-client`
//! command, usable by scripts, Fachverfahren and tests.
//!
//! - [`Client`]: a logged-in device: create rooms, invite, join, send text and files, sync.
//! - [`api`]: the client-server endpoints it calls.
//! - [`sync`]: a `/sync` response read into ordered MLS steps.
//! - [`attachment`]: encrypted attachments (AES-256-CTR, SHA-256, `v2`).
//! - [`keys`]: device keys and KeyPackages published, claimed KeyPackages checked.
//! - [`session`]: the state directory's session file.
//!
//! The MLS work itself is [`poststelle_mls::client`].

pub mod api;
pub mod attachment;
mod client;
mod error;
pub mod keys;
pub mod session;
pub mod sync;

pub use client::{Client, Received, SyncReport};
pub use error::ClientError;
