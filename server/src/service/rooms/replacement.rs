//! What this server keeps for a room follows the room to its replacement after an upgrade: the
//! local aliases, the room's place in the public directory, and its local members' tags and
//! push rules. The upgrading server does this at once; every other server when its first local
//! user joins the replacement room.

use ruma::{OwnedUserId, RoomId};
use serde_json::Value as JsonValue;

use super::{RoomService, client_format::content_of};
use crate::service::ServiceResult;

impl RoomService {
    /// After this server's first local user joined `room_id`: when its create event names a
    /// predecessor this server knows, and that room's tombstone names `room_id` as its
    /// replacement, this server's aliases, directory entry and its users' settings move over.
    /// The tombstone is required so that a room cannot claim another room's aliases by naming it.
    pub async fn adopt_predecessor(&self, room_id: &RoomId) -> ServiceResult<()> {
        let new = room_id.as_str();
        let Some(create) = self.storage.rooms.current_state_event(new, "m.room.create", "").await? else {
            return Ok(());
        };
        let content = content_of(&create.pdu);
        let Some(old) = content.get("predecessor").and_then(|p| p.get("room_id")).and_then(JsonValue::as_str) else {
            return Ok(());
        };
        if old == new || self.storage.rooms.room_version(old).await?.is_none() {
            return Ok(());
        }
        let replacement =
            self.storage.rooms.current_state_event(old, "m.room.tombstone", "").await?.and_then(|t| {
                content_of(&t.pdu).get("replacement_room").and_then(JsonValue::as_str).map(str::to_owned)
            });
        if replacement.as_deref() != Some(new) {
            tracing::info!(
                room_id = %new,
                predecessor = %old,
                tombstone_names = ?replacement,
                "predecessor not adopted: its tombstone does not name this room"
            );
            return Ok(());
        }
        self.transfer_to_replacement(old, new).await
    }

    /// Moves this server's aliases of `old` to `new`, publishes `new` in the directory in place
    /// of `old` if `old` was published, and copies the tags and push rules of the local users
    /// joined to `old`.
    pub(super) async fn transfer_to_replacement(&self, old: &str, new: &str) -> ServiceResult<()> {
        let aliases = self.storage.rooms.move_aliases(old, new).await?;
        let was_public = self.storage.rooms.is_public(old).await?.unwrap_or(false);
        if was_public {
            self.storage.rooms.set_public(old, false).await?;
            self.storage.rooms.set_public(new, true).await?;
        }
        let (Ok(old_id), Ok(new_id)) = (RoomId::parse(old), RoomId::parse(new)) else { return Ok(()) };
        let mut users = 0;
        for member in self.storage.rooms.members(old).await? {
            let Ok(user) = OwnedUserId::try_from(member.user_id.as_str()) else { continue };
            if member.membership != "join" || user.server_name() != &*self.server_name {
                continue;
            }
            users += 1;
            if let Err(e) = self.account_data.copy_room_settings(&user, &old_id, &new_id).await {
                tracing::warn!(user_id = %user, old_room = %old, new_room = %new, error = %e, "settings not copied");
            }
        }
        tracing::info!(
            old_room = %old,
            new_room = %new,
            aliases = aliases.len(),
            published = was_public,
            users,
            "carried over to the replacement room"
        );
        Ok(())
    }
}
