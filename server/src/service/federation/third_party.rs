//! Third-party invites across servers: a binding reported to our server for a room whose
//! inviter is on another server is handed to the inviter's server
//! (`PUT /exchange_third_party_invite/{roomId}`), which checks the identity server's signature
//! and sends the invite itself (the auth rules want the inviter as the invite's sender, and the
//! sender's server signs its users' events).

use ruma::{OwnedRoomId, OwnedUserId, api::federation::thirdparty::exchange_invite::v1 as exchange, serde::Raw};
use serde_json::Value as JsonValue;

use super::FederationService;
use crate::service::{ServiceError, ServiceResult};

impl FederationService {
    /// Asks `sender`'s server to invite `target` with the identity server's signed binding.
    pub async fn forward_third_party_invite(
        &self,
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        target: OwnedUserId,
        third_party_invite: JsonValue,
    ) -> ServiceResult<()> {
        let destination = sender.server_name().to_owned();
        let content = serde_json::json!({"membership": "invite", "third_party_invite": third_party_invite});
        let content = Raw::from_json(
            serde_json::value::to_raw_value(&content).map_err(|e| ServiceError::Internal(e.to_string()))?,
        );
        tracing::debug!(room_id = %room_id, %destination, invitee = %target, "forwarding a third-party invite");
        self.call(&destination, exchange::Request::new(room_id, sender, target, content)).await?;
        Ok(())
    }
}
