//! The room facts push rules are evaluated against (member count, the user's display name, power
//! levels), shared by the unread counts in `/sync` and the push-rule evaluation for pushes.

use ruma::{
    OwnedEventId, OwnedRoomId, UInt, UserId,
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx},
};
use serde_json::Value as JsonValue;

use crate::{
    service::{
        ServiceError, ServiceResult,
        rooms::{client_format::content_of, power::PowerLevels},
    },
    storage::rooms::EventRow,
};

/// The push-rule context of `user` in a room whose current state is `current`.
pub fn push_room_context(
    room_id: &str,
    member_count: usize,
    user: &UserId,
    displayname: &str,
    current: &[EventRow],
) -> ServiceResult<PushConditionRoomCtx> {
    let room = OwnedRoomId::try_from(room_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let count = UInt::try_from(member_count).unwrap_or(UInt::MAX);
    let mut ctx = PushConditionRoomCtx::new(room, count, user.to_owned(), displayname.to_owned());
    let create = current.iter().find(|r| r.event_type == "m.room.create");
    let power_content = current.iter().find(|r| r.event_type == "m.room.power_levels").map(|r| content_of(&r.pdu));
    if let Some(create) = create
        && let Ok(version) = ruma::RoomVersionId::try_from(
            content_of(&create.pdu).get("room_version").and_then(JsonValue::as_str).unwrap_or("1"),
        )
        && let Some(version_rules) = version.rules()
    {
        let create_obj: Option<poststelle_federation::Pdu> =
            serde_json::from_str::<ruma::CanonicalJsonObject>(&create.pdu).ok().and_then(|o| {
                poststelle_federation::Pdu::from_canonical(OwnedEventId::try_from(create.event_id.as_str()).ok()?, &o)
                    .ok()
            });
        let levels = PowerLevels::new(&version_rules, create_obj.as_ref(), power_content);
        ctx.power_levels = Some(PushConditionPowerLevelsCtx::from(levels.into_inner()));
    }
    Ok(ctx)
}
