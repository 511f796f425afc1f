//! Received redactions and their targets. A redaction takes effect on its target only when the
//! target is an event of the room, sent from the redaction's server or by a sender whom the
//! state before the redaction lets redact others' events (room versions 3 and later leave this
//! to the server). A redaction may arrive before the event it names: it stays in the timeline,
//! and when that event is written it is checked the same way and applied then, whether the
//! event joins the timeline, is kept as an outlier (a reported state, a join's state) or is
//! soft-failed.

use std::sync::Arc;

use poststelle_federation::Pdu;
use ruma::{OwnedEventId, room_version_rules::RoomVersionRules};
use serde_json::Value as JsonValue;

use super::{Loaded, StateIds, parse_pdu, redaction_target, state_of};
use crate::{
    service::ServiceResult,
    storage::room_writer::{NamingRedaction, RoomWriter},
};

/// Whether a received redaction applies to its target (see the module). One that does not
/// stays in the timeline without effect.
async fn may_redact(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    redaction: &Pdu,
    target: &ruma::EventId,
    before: &StateIds,
) -> ServiceResult<bool> {
    let create = before.get(&("m.room.create".to_owned(), String::new())).cloned();
    let levels = before.get(&("m.room.power_levels".to_owned(), String::new())).cloned();
    loaded.load(w, [target.to_string()].into_iter().chain(create.clone()).chain(levels.clone())).await?;
    let Some(original) = loaded.get(target) else { return Ok(false) };
    if original.room_id != redaction.room_id {
        return Ok(false);
    }
    if original.sender.server_name() == redaction.sender.server_name() {
        return Ok(true);
    }
    let event = |id: Option<String>| id.and_then(|id| OwnedEventId::try_from(id).ok()).and_then(|id| loaded.get(&id));
    let content = event(levels).and_then(|pl| serde_json::from_str::<JsonValue>(pl.content.get()).ok());
    let power = crate::service::rooms::power::PowerLevels::new(rules, event(create).as_ref(), content);
    Ok(power.can_redact_others(&redaction.sender))
}

/// Applies a redaction just written to the timeline (`before`: the state before it) to its
/// target, if the target is held and the redaction may redact it.
pub(super) async fn apply_to_held_target(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    redaction: &Pdu,
    before: &StateIds,
) -> ServiceResult<()> {
    let Some(target) = redaction_target(redaction) else { return Ok(()) };
    if may_redact(w, loaded, rules, redaction, target, before).await? {
        w.mark_redacted(target.as_str(), redaction.event_id.as_str()).await?;
    }
    Ok(())
}

/// Applies to events just written (to the timeline, as outliers or soft-failed) the first
/// redaction of the room received before each that may redact it (each checked with the state
/// before that redaction). The redactions waiting for all of them are read at once.
pub(super) async fn apply_earlier_redactions(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    events: &[&Pdu],
) -> ServiceResult<()> {
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let waiting = w.redactions_naming(&ids).await?;
    apply_waiting(w, loaded, rules, events, &waiting).await
}

/// [`apply_earlier_redactions`] with the redactions that may wait for the events known already
/// (`waiting`, in stream order; those naming other events are passed over).
pub(super) async fn apply_waiting(
    w: &mut RoomWriter,
    loaded: &mut Loaded,
    rules: &RoomVersionRules,
    events: &[&Pdu],
    waiting: &[NamingRedaction],
) -> ServiceResult<()> {
    let mut done = std::collections::BTreeSet::new();
    for earlier in waiting {
        if done.contains(&earlier.redacts) {
            continue;
        }
        let Some(event) = events.iter().find(|e| e.event_id.as_str() == earlier.redacts) else { continue };
        let redaction = parse_pdu(&earlier.event_id, &earlier.pdu)?;
        let before = match loaded.state(earlier.state_before) {
            Some((_, kept)) => kept,
            None => Arc::new(state_of(w, earlier.state_before).await?),
        };
        let id = earlier.redacts.as_str();
        if may_redact(w, loaded, rules, &redaction, &event.event_id, &before).await? {
            tracing::info!(event_id = id, redaction = %earlier.event_id, "applied a redaction received before its target");
            w.mark_redacted(id, &earlier.event_id).await?;
            done.insert(earlier.redacts.clone());
        } else {
            tracing::info!(event_id = id, redaction = %earlier.event_id, "a redaction received before its target may not redact it");
        }
    }
    Ok(())
}
