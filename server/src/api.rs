//! Thin endpoint handlers: ruma request in, typed identity from the auth scheme, a service
//! call, ruma response out. Routes come from ruma's endpoint metadata.

pub mod admin;
pub mod client;
pub mod federation;

use axum::Router;

use crate::state::AppState;

/// Every Matrix and admin endpoint this server implements.
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    admin::routes(client::routes(router))
}
