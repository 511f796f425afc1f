//! The `presence` section of `/sync`: changes of the user's and their room-mates' presence since
//! the token, and the presence of users the user newly shares a room with.

use ruma::api::client::sync::sync_events::v3::Presence;
use serde_json::json;

use super::{SyncRequest, SyncService, SyncToken, raw};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::now_ms,
};

impl SyncService {
    /// A sync with `set_presence` (empty: not a client's sync) that may wait `wait` starts;
    /// returns what `PresenceService::sync_ended` needs when it ends.
    pub(super) async fn presence_syncing(
        &self,
        user: &str,
        set_presence: &str,
        wait: std::time::Duration,
    ) -> ServiceResult<Option<i64>> {
        if !["", "online", "unavailable", "offline"].contains(&set_presence) {
            return Err(ServiceError::InvalidParam(format!("unknown set_presence {set_presence:?}")));
        }
        let until = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        Ok(self.presence.syncing(user, set_presence, until).await)
    }

    pub(super) async fn presence_section(
        &self,
        req: &SyncRequest,
        since: Option<SyncToken>,
        now: SyncToken,
        members_changed: bool,
    ) -> ServiceResult<Presence> {
        let mut section = Presence::new();
        let filter = &req.filter.presence;
        if !self.presence.enabled() || !filter.allows_type("m.presence") {
            return Ok(section);
        }
        let user = req.user_id.as_str();
        let extra = match since {
            Some(s) if s.events < now.events && members_changed => {
                self.storage.presence.newly_shared(user, s.events, now.events).await?
            }
            _ => Vec::new(),
        };
        let events = self.presence.for_sync(user, since.map(|s| s.presence), now.presence, &extra).await?;
        section.events = events
            .into_iter()
            .filter(|(sender, _)| {
                !filter.not_senders.contains(sender) && filter.senders.as_ref().is_none_or(|s| s.contains(sender))
            })
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|(sender, content)| raw(&json!({"type": "m.presence", "sender": sender, "content": content})))
            .collect();
        Ok(section)
    }
}
