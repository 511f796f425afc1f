//! Synapse-compatible admin endpoints, so existing admin tooling works: shared-secret
//! registration, registration tokens and media administration.

pub mod endpoints;
mod handlers;
pub mod media;

use axum::Router;

use crate::{http::RumaRouterExt, state::AppState};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    use endpoints::{
        create_registration_token, delete_registration_token, get_register_nonce, get_registration_token,
        list_registration_tokens, shared_secret_register, update_registration_token,
    };
    r.ruma_route::<get_register_nonce::Request, _, _>(handlers::register_nonce)
        .ruma_route::<shared_secret_register::Request, _, _>(handlers::shared_secret_register)
        .ruma_route::<list_registration_tokens::Request, _, _>(handlers::list_tokens)
        .ruma_route::<get_registration_token::Request, _, _>(handlers::get_token)
        .ruma_route::<create_registration_token::Request, _, _>(handlers::create_token)
        .ruma_route::<update_registration_token::Request, _, _>(handlers::update_token)
        .ruma_route::<delete_registration_token::Request, _, _>(handlers::delete_token)
        .ruma_route::<media::delete_media::Request, _, _>(media::delete_media)
        .ruma_route::<media::quarantine_media::Request, _, _>(media::quarantine_media)
        .ruma_route::<media::unquarantine_media::Request, _, _>(media::unquarantine_media)
        .ruma_route::<media::quarantine_user_media::Request, _, _>(media::quarantine_user_media)
        .ruma_route::<media::list_user_media::Request, _, _>(media::list_user_media)
        .ruma_route::<media::delete_user_media::Request, _, _>(media::delete_user_media)
}
