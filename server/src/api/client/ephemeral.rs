//! Typing notifications, receipts, read markers and to-device messages. Starting to type and
//! reading count as the user's activity for presence, as sending does.

use axum::extract::State;
use ruma::api::client::{
    read_marker::set_read_marker::v3 as read_markers, receipt::create_receipt::v3 as receipt,
    to_device::send_event_to_device::v3 as to_device, typing::create_typing_event::v3 as typing,
};
use ruma::events::receipt::ReceiptThread;
use ruma::to_device::DeviceIdOrAllDevices;

use super::json::to_value;
use crate::{
    http::ruma::{ApiResult, Ruma},
    service::ephemeral::DeviceTarget,
    state::AppState,
};

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub(super) async fn set_typing(
    State(state): State<AppState>,
    req: Ruma<typing::Request>,
) -> ApiResult<typing::Response> {
    let b = req.body;
    let timeout = match b.state {
        typing::Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    let typing = timeout.is_some();
    state.ephemeral.set_typing(&req.identity.user_id, b.user_id.as_str(), b.room_id.as_str(), timeout).await?;
    if typing {
        state.presence.note_activity(&req.identity.user_id).await;
    }
    Ok(typing::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub(super) async fn create_receipt(
    State(state): State<AppState>,
    req: Ruma<receipt::Request>,
) -> ApiResult<receipt::Response> {
    let b = req.body;
    let thread = match &b.thread {
        ReceiptThread::Unthreaded => String::new(),
        ReceiptThread::Main => "main".to_owned(),
        ReceiptThread::Thread(root) => root.to_string(),
        other => other.as_str().unwrap_or_default().to_owned(),
    };
    state
        .ephemeral
        .receipt(&req.identity.user_id, b.room_id.as_str(), b.receipt_type.as_str(), &thread, b.event_id.as_str())
        .await?;
    state.presence.note_activity(&req.identity.user_id).await;
    Ok(receipt::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub(super) async fn set_read_markers(
    State(state): State<AppState>,
    req: Ruma<read_markers::Request>,
) -> ApiResult<read_markers::Response> {
    let b = req.body;
    state
        .ephemeral
        .read_markers(
            &req.identity.user_id,
            b.room_id.as_str(),
            b.fully_read.as_deref().map(|e| e.as_str()),
            b.read_receipt.as_deref().map(|e| e.as_str()),
            b.private_read_receipt.as_deref().map(|e| e.as_str()),
        )
        .await?;
    state.presence.note_activity(&req.identity.user_id).await;
    Ok(read_markers::Response::new().into())
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
pub(super) async fn send_to_device(
    State(state): State<AppState>,
    req: Ruma<to_device::Request>,
) -> ApiResult<to_device::Response> {
    let b = req.body;
    let mut messages = Vec::new();
    for (user, devices) in &b.messages {
        for (device, content) in devices {
            let target = match device {
                DeviceIdOrAllDevices::DeviceId(d) => DeviceTarget::Device(d.to_string()),
                DeviceIdOrAllDevices::AllDevices => DeviceTarget::All,
            };
            messages.push((user.to_string(), target, to_value(content)?));
        }
    }
    state
        .ephemeral
        .send_to_device(
            &req.identity.user_id,
            &req.identity.device_id,
            b.txn_id.as_str(),
            &b.event_type.to_string(),
            messages,
        )
        .await?;
    Ok(to_device::Response::new().into())
}
