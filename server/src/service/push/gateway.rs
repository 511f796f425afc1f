//! The HTTP client for push gateways (`POST /_matrix/push/v1/notify`). Unless the operator allows
//! it, it refuses to connect to loopback, private, link-local and other non-public addresses
//! (`service::outbound`).

use std::time::Duration;

use serde_json::Value as JsonValue;

pub use crate::service::outbound::is_private_host;
use crate::service::{ServiceError, ServiceResult, outbound};

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Worth retrying: network errors, timeouts, 5xx, 429.
    #[error("push gateway unavailable: {0}")]
    Transient(String),
    /// The gateway refused the request (4xx): retrying the same request will not help.
    #[error("push gateway refused the notification: {0}")]
    Refused(String),
}

#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl GatewayClient {
    pub fn new(allow_private: bool) -> ServiceResult<Self> {
        let http = outbound::client(allow_private, Duration::from_secs(15), reqwest::redirect::Policy::none())
            .map_err(|e| ServiceError::Internal(format!("push client: {e}")))?;
        Ok(Self { http, allow_private })
    }

    /// Sends one notification; the push keys the gateway rejected.
    pub async fn notify(&self, url: &str, body: &JsonValue) -> Result<Vec<String>, GatewayError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| GatewayError::Refused(e.to_string()))?;
        if !self.allow_private && is_private_host(&parsed) {
            return Err(GatewayError::Refused("the gateway address is in a private network".into()));
        }
        let response =
            self.http.post(parsed).json(body).send().await.map_err(|e| GatewayError::Transient(e.to_string()))?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(GatewayError::Transient(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(GatewayError::Refused(format!("HTTP {status}")));
        }
        let answer: JsonValue = response.json().await.unwrap_or_default();
        Ok(answer
            .get("rejected")
            .and_then(JsonValue::as_array)
            .map(|r| r.iter().filter_map(JsonValue::as_str).map(str::to_owned).collect())
            .unwrap_or_default())
    }
}
