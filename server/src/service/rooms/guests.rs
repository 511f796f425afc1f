//! Guest accounts in rooms. The auth rules know nothing of guests, so the guest's own server
//! enforces `m.room.guest_access`: a guest joins only rooms where it is `can_join` (its member
//! event says `"kind": "guest"`, as Synapse's do), and when a room stops allowing guests, each
//! server makes its own guests leave (rather than a room member kicking them, which would need
//! power and would decide about another server's users).

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value as JsonValue};

use super::{MembershipChange, RoomCtx, RoomService, client_format::content_of};
use crate::service::{ServiceError, ServiceResult};

/// The state event that decides whether guests may join.
pub const GUEST_ACCESS: &str = "m.room.guest_access";

/// Whether `m.room.guest_access` content (none: the room has no such event) lets guests join.
pub fn guests_may_join(content: Option<&JsonValue>) -> bool {
    content.and_then(|c| c.get("guest_access")).and_then(JsonValue::as_str) == Some("can_join")
}

/// The refusal a guest gets for a room that does not allow guests.
pub fn guests_not_allowed(room_id: &str) -> ServiceError {
    ServiceError::Forbidden(format!("guest access is not allowed in {room_id}"))
}

impl RoomService {
    /// Whether `user_id` is a guest account of this server.
    pub async fn is_local_guest(&self, user_id: &UserId) -> ServiceResult<bool> {
        if user_id.server_name() != &*self.server_name {
            return Ok(false);
        }
        Ok(self.storage.users.is_guest(user_id.as_str()).await?)
    }

    /// A local user's own join: a guest needs a room that allows guests, and says it is one.
    pub(super) async fn check_guest_join(
        &self,
        ctx: &mut RoomCtx,
        user: &UserId,
        content: &mut Map<String, JsonValue>,
    ) -> ServiceResult<()> {
        if !self.is_local_guest(user).await? {
            return Ok(());
        }
        if !guests_may_join(ctx.state_content(GUEST_ACCESS, "").await?.as_ref()) {
            return Err(guests_not_allowed(ctx.room_id()));
        }
        content.insert("kind".into(), "guest".into());
        Ok(())
    }

    /// Whether the room's current state (as this server holds it) lets guests join.
    pub async fn guests_allowed(&self, room_id: &RoomId) -> ServiceResult<bool> {
        let event = self.storage.rooms.current_state_event(room_id.as_str(), GUEST_ACCESS, "").await?;
        let content = event.filter(|e| e.redacted_by.is_none()).map(|e| content_of(&e.pdu));
        Ok(guests_may_join(content.as_ref()))
    }

    /// After `m.room.guest_access` changed: unless the room still lets guests join, every guest
    /// of this server joined to or invited into it leaves. Failures are logged per guest.
    pub async fn remove_guests_if_revoked(&self, room_id: &RoomId) -> ServiceResult<()> {
        if self.guests_allowed(room_id).await? {
            return Ok(());
        }
        for guest in self.storage.users.guests_in_room(room_id.as_str()).await? {
            let Ok(guest) = OwnedUserId::try_from(guest) else { continue };
            let change = MembershipChange {
                room_id: room_id.to_owned(),
                sender: guest.clone(),
                target: guest.clone(),
                membership: "leave".into(),
                reason: Some("guest access was revoked".into()),
                extra: Map::new(),
            };
            match self.change_membership(change).await {
                Ok(_) => tracing::info!(room_id = %room_id, user_id = %guest, "guest left: guest access revoked"),
                Err(e) => {
                    tracing::warn!(room_id = %room_id, user_id = %guest, error = %e, "could not remove a guest");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::guests_may_join;

    #[test]
    fn only_can_join_lets_guests_in() {
        assert!(guests_may_join(Some(&json!({"guest_access": "can_join"}))));
        assert!(!guests_may_join(Some(&json!({"guest_access": "forbidden"}))));
        assert!(!guests_may_join(Some(&json!({"guest_access": 1}))));
        assert!(!guests_may_join(Some(&json!({}))));
        assert!(!guests_may_join(None));
    }
}
