//! The device list.

use axum::{Json, extract::State};
use ruma::api::client::device::{
    delete_device::v3 as delete_device, delete_devices::v3 as delete_devices, get_device::v3 as get_device,
    get_devices::v3 as get_devices, update_device::v3 as update_device,
};

use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::uiaa::{Purpose, UiaaService},
    state::AppState,
    storage::devices::DeviceRecord,
};

/// A device as the spec's schema has it: ruma's `Device` writes an unset display name or IP as
/// `null`, where the schema has the field absent.
#[derive(Debug, serde::Serialize)]
pub(super) struct DeviceJson {
    device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ts: Option<u64>,
}

fn to_device(record: DeviceRecord) -> DeviceJson {
    DeviceJson {
        device_id: record.device_id,
        display_name: record.display_name,
        last_seen_ip: record.last_seen_ip,
        last_seen_ts: record.last_seen_ts.and_then(|ts| u64::try_from(ts).ok()),
    }
}

/// # `GET /_matrix/client/v3/devices`
pub(super) async fn list(
    State(state): State<AppState>,
    req: Ruma<get_devices::Request>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let devices = state.sessions.devices(&req.identity.user_id).await?;
    let devices: Vec<DeviceJson> = devices.into_iter().map(to_device).collect();
    Ok(Json(serde_json::json!({ "devices": devices })))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
pub(super) async fn get(
    State(state): State<AppState>,
    req: Ruma<get_device::Request>,
) -> Result<Json<DeviceJson>, ApiError> {
    let device = state.sessions.device(&req.identity.user_id, req.body.device_id.as_str()).await?;
    Ok(Json(to_device(device)))
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
pub(super) async fn update(
    State(state): State<AppState>,
    req: Ruma<update_device::Request>,
) -> ApiResult<update_device::Response> {
    state
        .sessions
        .rename_device(&req.identity.user_id, req.body.device_id.as_str(), req.body.display_name.as_deref())
        .await?;
    Ok(update_device::Response::new().into())
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}` (UIA: password)
pub(super) async fn delete(
    State(state): State<AppState>,
    req: Ruma<delete_device::Request>,
) -> ApiResult<delete_device::Response> {
    let user_id = &req.identity.user_id;
    // No 404 for an unknown device: the spec answers 200 for a device that "had been removed
    // previously" (as Synapse does), after the same UIA as for any other device.
    let ids = [req.body.device_id.to_string()];
    let passed = state
        .uiaa
        .authenticate(
            Purpose::delete_devices(&ids),
            Some(user_id),
            req.body.auth.as_ref(),
            &UiaaService::password_flows(),
        )
        .await?;
    state.sessions.delete_devices(user_id, &ids).await?;
    state.uiaa.finish(passed).await?;
    Ok(delete_device::Response::new().into())
}

/// # `POST /_matrix/client/v3/delete_devices` (UIA: password)
pub(super) async fn delete_many(
    State(state): State<AppState>,
    req: Ruma<delete_devices::Request>,
) -> ApiResult<delete_devices::Response> {
    let user_id = &req.identity.user_id;
    let ids: Vec<String> = req.body.devices.iter().map(ToString::to_string).collect();
    let passed = state
        .uiaa
        .authenticate(
            Purpose::delete_devices(&ids),
            Some(user_id),
            req.body.auth.as_ref(),
            &UiaaService::password_flows(),
        )
        .await?;
    state.sessions.delete_devices(user_id, &ids).await?;
    state.uiaa.finish(passed).await?;
    Ok(delete_devices::Response::new().into())
}
