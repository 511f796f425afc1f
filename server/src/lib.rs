//! Poststelle: a federated Matrix homeserver for public bodies, backed by PostgreSQL.
//!
//! Layers (DESIGN §2): `http` and `api` (thin handlers) → `service` (domain logic) →
//! `storage` (all SQL). `AppState` carries every dependency, built once in `main`.

pub mod api;
pub mod cli;
pub mod config;
pub mod database;
pub mod http;
pub mod managed_pg;
pub mod service;
pub mod state;
pub mod storage;
