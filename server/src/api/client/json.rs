//! Conversions between ruma's typed/raw values and the JSON the services speak.

use ruma::serde::Raw;
use serde_json::Value as JsonValue;

use crate::{http::error::ApiError, service::ServiceError};

/// Any serialisable ruma value (raw or typed) as JSON.
pub(super) fn to_value<T: serde::Serialize>(value: &T) -> Result<JsonValue, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::bad_json(e.to_string()))
}

/// JSON the service produced as a ruma `Raw`.
pub(super) fn from_value<T>(value: &JsonValue) -> Result<Raw<T>, ApiError> {
    let raw = serde_json::value::to_raw_value(value).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(Raw::from_json(raw))
}

/// A list of events as ruma `Raw`s.
pub(super) fn raw_list<T>(values: &[JsonValue]) -> Result<Vec<Raw<T>>, ApiError> {
    values.iter().map(from_value).collect()
}
