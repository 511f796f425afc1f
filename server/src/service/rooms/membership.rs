//! Membership changes of local users: join (including restricted joins), invite, leave, kick,
//! ban, unban, knock. The auth rules decide what is allowed; this adds what they cannot see
//! (profiles, the authorising user of a restricted join).

use poststelle_federation::ProtoEvent;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde_json::{Map, Value as JsonValue};

use super::{RoomCtx, RoomService};
use crate::service::{ServiceError, ServiceResult};

/// A membership change.
#[derive(Debug)]
pub struct MembershipChange {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub target: OwnedUserId,
    /// `join`, `invite`, `leave`, `ban`, `knock`.
    pub membership: String,
    pub reason: Option<String>,
    /// The target's profile (for joins, copied into the member event).
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Further content fields (e.g. `is_direct` on invites, or a client's member event content).
    pub extra: Map<String, JsonValue>,
}

impl RoomService {
    pub async fn change_membership(&self, change: MembershipChange) -> ServiceResult<OwnedEventId> {
        if !matches!(change.membership.as_str(), "join" | "invite" | "leave" | "ban" | "knock") {
            return Err(ServiceError::BadJson(format!("unknown membership {}", change.membership)));
        }
        if self.storage.rooms.room_version(change.room_id.as_str()).await?.is_none() {
            // Rooms on other servers become reachable with federation.
            return Err(ServiceError::NotFound("unknown room".into()));
        }
        let room_id = change.room_id.clone();
        self.write(room_id.as_str(), async |ctx| {
            let mut content = change.extra.clone();
            content.insert("membership".into(), change.membership.clone().into());
            if let Some(reason) = &change.reason {
                content.insert("reason".into(), reason.clone().into());
            }
            if change.membership == "join" && change.target == change.sender {
                if let Some(d) = &change.displayname {
                    content.entry("displayname").or_insert_with(|| d.clone().into());
                }
                if let Some(a) = &change.avatar_url {
                    content.entry("avatar_url").or_insert_with(|| a.clone().into());
                }
                self.authorise_restricted_join(ctx, change.sender.as_str(), &mut content).await?;
            }
            if change.membership == "invite"
                && let Some(current) = ctx.membership(change.target.as_str()).await?
                && (current == "join" || current == "ban")
            {
                return Err(ServiceError::Forbidden(format!("{} is already {current} in this room", change.target)));
            }
            if change.membership == "leave"
                && change.target == change.sender
                && ctx.membership(change.sender.as_str()).await?.as_deref().is_none_or(|m| m == "leave")
            {
                return Err(ServiceError::Forbidden("you are not a member of this room".into()));
            }
            let proto = ProtoEvent {
                room_id: Some(change.room_id.clone()),
                sender: change.sender.clone(),
                kind: "m.room.member".into(),
                state_key: Some(change.target.to_string()),
                content,
                redacts: None,
            };
            Ok(ctx.append(self, proto, None).await?.event_id)
        })
        .await
    }

    /// For rooms with a `restricted` join rule: a user who is neither invited nor joined may join
    /// if they are in one of the allowed rooms; the join then names a local member who may
    /// invite (`join_authorised_via_users_server`).
    async fn authorise_restricted_join(
        &self,
        ctx: &mut RoomCtx,
        user: &str,
        content: &mut Map<String, JsonValue>,
    ) -> ServiceResult<()> {
        let Some(rules) = ctx.state_content("m.room.join_rules", "").await? else { return Ok(()) };
        let rule = rules.get("join_rule").and_then(JsonValue::as_str).unwrap_or_default();
        if rule != "restricted" && rule != "knock_restricted" {
            return Ok(());
        }
        if matches!(ctx.membership(user).await?.as_deref(), Some("join" | "invite")) {
            return Ok(());
        }
        let allowed: Vec<String> = rules
            .get("allow")
            .and_then(JsonValue::as_array)
            .into_iter()
            .flatten()
            .filter(|a| a.get("type").and_then(JsonValue::as_str) == Some("m.room_membership"))
            .filter_map(|a| a.get("room_id").and_then(JsonValue::as_str).map(str::to_owned))
            .collect();
        let mut qualifies = false;
        for room in &allowed {
            if self.storage.rooms.membership(room, user).await?.is_some_and(|m| m.membership == "join") {
                qualifies = true;
                break;
            }
        }
        if !qualifies {
            return Err(ServiceError::Forbidden("you are not a member of any room that grants access".into()));
        }
        // A local joined member with the invite power level authorises the join.
        let power = ctx.power_levels().await?;
        let members: Vec<(String, String)> = ctx.state.keys().filter(|(t, _)| t == "m.room.member").cloned().collect();
        for (_, member) in members {
            let Ok(member_id) = ruma::UserId::parse(member.as_str()) else { continue };
            if member_id.server_name() != &*self.server_name {
                continue;
            }
            if ctx.membership(&member).await?.as_deref() != Some("join") {
                continue;
            }
            if power_can_invite(&power, &member_id, ctx).await? {
                content.insert("join_authorised_via_users_server".into(), member.into());
                return Ok(());
            }
        }
        Err(ServiceError::Forbidden("no local member can authorise this join".into()))
    }
}

async fn power_can_invite(
    power: &super::power::PowerLevels,
    user: &ruma::UserId,
    ctx: &mut RoomCtx,
) -> ServiceResult<bool> {
    let invite_level = ctx
        .state_content("m.room.power_levels", "")
        .await?
        .and_then(|c| c.get("invite").and_then(JsonValue::as_i64))
        .unwrap_or(0);
    Ok(match power.for_user(user) {
        ruma::events::room::power_levels::UserPowerLevel::Infinite => true,
        ruma::events::room::power_levels::UserPowerLevel::Int(level) => i64::from(level) >= invite_level,
        _ => false,
    })
}
