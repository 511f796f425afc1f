//! What other servers get of a room's timeline (`/event`, `/backfill`, `/get_missing_events`):
//! events that none of the asking server's users may see by the room's history visibility
//! (`joined` or `invited` history from before any of them was in the room) go out redacted, as
//! the spec asks of servers ("Servers should ... only send events that the requesting server
//! is allowed to see"). Events of users who erased their account go out redacted too.
//! Redacted events still verify: signatures cover the redacted form.

use ruma::{CanonicalJsonObject, ServerName, room_version_rules::RoomVersionRules};
use serde_json::value::RawValue as RawJsonValue;

use super::FederationService;
use crate::{
    service::{ServiceError, ServiceResult, rooms::visibility::Visibility},
    storage::federation::StoredPdu,
};

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// An event with its content and other non-essential keys removed.
fn redacted(text: &str, rules: &RoomVersionRules) -> ServiceResult<Box<RawJsonValue>> {
    let object: CanonicalJsonObject = serde_json::from_str(text).map_err(internal)?;
    let object = ruma::canonical_json::redact(object, &rules.redaction, None).map_err(internal)?;
    RawJsonValue::from_string(serde_json::to_string(&object).map_err(internal)?).map_err(internal)
}

/// The `sender` of a stored PDU.
fn sender_of(pdu: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Sender {
        sender: String,
    }
    serde_json::from_str::<Sender>(pdu).ok().map(|s| s.sender)
}

impl FederationService {
    /// The events of one room as `origin` may have them, in the order given: whole where one of
    /// its users may see them (outliers, auth and state learnt from others, always), else
    /// redacted.
    pub(super) async fn for_server(
        &self,
        origin: &ServerName,
        room_id: &str,
        pdus: Vec<StoredPdu>,
    ) -> ServiceResult<Vec<Box<RawJsonValue>>> {
        let Some((_, rules)) = self.rooms.room_rules(room_id).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        let settings = self.rooms.history_settings(room_id).await?;
        // Shared or world-readable history goes whole without asking who the server's users are.
        let anyone = Visibility { settings: settings.clone(), memberships: Vec::new() };
        let mut readers = vec![anyone];
        if !pdus.iter().all(|p| p.outlier || readers[0].allows_server(p.stream_ordering)) {
            for user in self.storage.federation.server_users(room_id, origin.as_str()).await? {
                let memberships = self.rooms.membership_history(room_id, &user).await?;
                readers.push(Visibility { settings: settings.clone(), memberships });
            }
        }
        let senders: Vec<Option<String>> = pdus.iter().map(|p| sender_of(&p.pdu)).collect();
        let ours = format!(":{}", self.server_name);
        let local: Vec<String> = senders.iter().flatten().filter(|s| s.ends_with(&ours)).cloned().collect();
        let erased: std::collections::BTreeSet<String> =
            self.storage.users.erased_among(&local).await?.into_iter().collect();
        pdus.into_iter()
            .zip(senders)
            .map(|(p, sender)| {
                if sender.is_some_and(|s| erased.contains(&s)) {
                    tracing::debug!(%origin, event_id = p.event_id, "an event of an erased user sent redacted");
                    redacted(&p.pdu, &rules)
                } else if p.outlier || readers.iter().any(|r| r.allows_server(p.stream_ordering)) {
                    RawJsonValue::from_string(p.pdu).map_err(internal)
                } else {
                    tracing::debug!(%origin, event_id = p.event_id, "an event sent redacted by history visibility");
                    redacted(&p.pdu, &rules)
                }
            })
            .collect()
    }
}
