//! The HTTP layer: routes generated from ruma endpoint metadata, the `Ruma<R>` extractor,
//! authentication by auth scheme, CORS, metrics and the single error mapping.

pub mod error;
pub mod guest;
pub mod metrics;
pub mod ruma;
pub mod tls;

use std::time::Duration;

use ::ruma::api::IncomingRequest;
use axum::{
    Router,
    extract::State,
    handler::Handler,
    middleware,
    response::{IntoResponse, Response},
    routing::{MethodFilter, get, on},
};
use http::{Method, StatusCode, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::error::ApiError;
use crate::{api, state::AppState};

/// Registers a handler under every path ruma knows for endpoint `R` (unstable, r0, v3, …).
pub(crate) trait RumaRouterExt {
    fn ruma_route<R: IncomingRequest, H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self;

    /// Registers endpoint `R` also under `method`, which deployed servers use instead of the
    /// spec's (the request is then read as sent with the spec's method). Only for endpoints
    /// without request signatures, which cover the method.
    fn ruma_route_also_as<R: IncomingRequest, H: Handler<T, AppState>, T: 'static>(
        self,
        method: Method,
        handler: H,
    ) -> Self;
}

impl RumaRouterExt for Router<AppState> {
    fn ruma_route<R: IncomingRequest, H: Handler<T, AppState>, T: 'static>(mut self, handler: H) -> Self {
        let filter = MethodFilter::try_from(R::METHOD).expect("ruma endpoints use standard methods");
        for path in ::ruma::api::path_builder::PathBuilder::all_paths(&R::PATH_BUILDER) {
            // An empty state key is an empty last segment (`/state/m.room.name/`) or none at
            // all (`/state/m.room.name`); `Ruma<R>` fills in the empty argument.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                self = self.route(prefix, on(filter, handler.clone()));
                self = self.route(&format!("{prefix}/"), on(filter, handler.clone()));
            }
            self = self.route(path, on(filter, handler.clone()));
        }
        self
    }

    fn ruma_route_also_as<R: IncomingRequest, H: Handler<T, AppState>, T: 'static>(
        mut self,
        method: Method,
        handler: H,
    ) -> Self {
        let filter = MethodFilter::try_from(method).expect("a standard method");
        let as_specified = middleware::map_request(|mut request: axum::extract::Request| async move {
            *request.method_mut() = R::METHOD;
            request
        });
        for path in ::ruma::api::path_builder::PathBuilder::all_paths(&R::PATH_BUILDER) {
            self = self.route(path, on(filter, handler.clone()).layer(as_specified.clone()));
        }
        self
    }
}

/// The client-facing application: Matrix APIs, admin APIs, health and metrics.
pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
        .max_age(Duration::from_secs(86400));

    api::routes(Router::new())
        .route("/health", get(health))
        .route("/metrics", get(metrics::render))
        .fallback(unrecognized_path)
        .method_not_allowed_fallback(unrecognized_method)
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(cors)
        .with_state(state)
}

/// The federation listener's application: the server-server API only.
pub fn federation_router(state: AppState) -> Router {
    api::federation::routes(Router::new())
        .fallback(unrecognized_path)
        .method_not_allowed_fallback(unrecognized_method)
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

async fn unrecognized_path() -> ApiError {
    ApiError::unrecognized(StatusCode::NOT_FOUND)
}

async fn unrecognized_method() -> ApiError {
    ApiError::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
}

/// `GET /health`: 200 when the database answers, 503 otherwise.
async fn health(State(state): State<AppState>) -> Response {
    match state.storage.ping().await {
        Ok(()) => (StatusCode::OK, "OK").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}
