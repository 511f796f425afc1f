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
        self.write(room_id.as_str(), async |ctx| self.append_membership(ctx, &change).await).await
    }

    /// A membership event of ours that another server must see first (an invite of one of its
    /// users): built and checked like [`Self::change_membership`], but not stored. Returns the
    /// room's version, the event id and the signed event's canonical JSON text (`None` when the
    /// membership is already what was asked: nothing new was built).
    pub async fn prepare_membership(
        &self,
        change: &MembershipChange,
    ) -> ServiceResult<(ruma::RoomVersionId, OwnedEventId, Option<String>)> {
        if self.storage.rooms.room_version(change.room_id.as_str()).await?.is_none() {
            return Err(ServiceError::NotFound("unknown room".into()));
        }
        let mut ctx = RoomCtx::open(self, change.room_id.as_str()).await?;
        let id = self.append_membership(&mut ctx, change).await?;
        let text = ctx.last_built().map(str::to_owned);
        // Dropped without commit: the transaction rolls back.
        Ok((ctx.version.clone(), id, text))
    }

    /// Appends a membership change to a room transaction, after the checks the auth rules do not make.
    async fn append_membership(&self, ctx: &mut RoomCtx, change: &MembershipChange) -> ServiceResult<OwnedEventId> {
        let mut content = change.extra.clone();
        content.insert("membership".into(), change.membership.clone().into());
        if let Some(reason) = &change.reason {
            content.insert("reason".into(), reason.clone().into());
        }
        if change.membership == "join" && change.target == change.sender {
            // The server names who authorised a restricted join, never the client.
            content.remove("join_authorised_via_users_server");
            self.add_profile(change.sender.as_str(), &mut content).await?;
            self.check_guest_join(ctx, &change.sender, &mut content).await?;
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
        // A kick needs someone to kick: a member, an invitee, a knock (or a ban, for unbans).
        if change.membership == "leave"
            && change.target != change.sender
            && !matches!(
                ctx.membership(change.target.as_str()).await?.as_deref(),
                Some("join" | "invite" | "knock" | "ban")
            )
        {
            return Err(ServiceError::Forbidden(format!("{} is not in this room", change.target)));
        }
        if let Some(existing) =
            ctx.same_state(&change.sender, "m.room.member", change.target.as_str(), &content).await?
        {
            return Ok(existing);
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

impl RoomService {
    /// A room id, or the room a local alias points to.
    pub async fn resolve_room(&self, target: &ruma::RoomOrAliasId) -> ServiceResult<OwnedRoomId> {
        let target: &str = target.as_str();
        if target.starts_with('!') {
            return OwnedRoomId::try_from(target).map_err(|e| ServiceError::InvalidParam(e.to_string()));
        }
        match self.storage.rooms.alias(target).await? {
            Some((room_id, _)) => OwnedRoomId::try_from(room_id).map_err(|e| ServiceError::Internal(e.to_string())),
            None => Err(ServiceError::NotFound(format!("room alias {target} not found"))),
        }
    }

    /// Lifts a ban (the target's membership becomes `leave`); refused when they are not banned.
    pub async fn unban(&self, change: MembershipChange) -> ServiceResult<OwnedEventId> {
        let current = self.storage.rooms.membership(change.room_id.as_str(), change.target.as_str()).await?;
        if current.is_none_or(|m| m.membership != "ban") {
            return Err(ServiceError::Forbidden(format!("{} is not banned from this room", change.target)));
        }
        self.change_membership(change).await
    }

    /// Forgets a room the user has left: it no longer appears in their sync.
    pub async fn forget(&self, user_id: &str, room_id: &str) -> ServiceResult<()> {
        match self.storage.rooms.membership(room_id, user_id).await? {
            Some(m) if m.membership == "join" || m.membership == "invite" || m.membership == "knock" => {
                Err(ServiceError::StillInRoom(format!("{user_id} is still {} in {room_id}", m.membership)))
            }
            Some(_) => {
                self.storage.rooms.forget(room_id, user_id).await?;
                Ok(())
            }
            None => Err(ServiceError::NotFound(format!("{user_id} has never been in {room_id}"))),
        }
    }

    /// After a profile change: a new member event with the new display name and avatar in every
    /// room the user is joined to. Failures are logged per room; the profile change stands.
    pub async fn propagate_profile(&self, user_id: &ruma::UserId) -> ServiceResult<()> {
        let profile = self.storage.users.get(user_id.as_str()).await?;
        let (name, avatar) = profile.map(|u| (u.displayname, u.avatar_url)).unwrap_or_default();
        for room_id in self.joined_rooms(user_id.as_str()).await? {
            let result = self
                .write(room_id.as_str(), async |ctx| {
                    let Some(JsonValue::Object(mut content)) =
                        ctx.state_content("m.room.member", user_id.as_str()).await?
                    else {
                        return Ok(());
                    };
                    if content.get("membership").and_then(JsonValue::as_str) != Some("join") {
                        return Ok(());
                    }
                    for (field, value) in [("displayname", &name), ("avatar_url", &avatar)] {
                        match value {
                            Some(v) => content.insert(field.into(), v.clone().into()),
                            None => content.remove(field),
                        };
                    }
                    content.remove("join_authorised_via_users_server");
                    let proto = ProtoEvent {
                        room_id: Some(room_id.clone()),
                        sender: user_id.to_owned(),
                        kind: "m.room.member".into(),
                        state_key: Some(user_id.to_string()),
                        content,
                        redacts: None,
                    };
                    ctx.append(self, proto, None).await?;
                    Ok(())
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(room_id = %room_id, user_id = %user_id, error = %e, "profile change not sent to room");
            }
        }
        Ok(())
    }

    /// The rooms a user is joined to.
    pub async fn joined_rooms(&self, user_id: &str) -> ServiceResult<Vec<OwnedRoomId>> {
        Ok(self
            .storage
            .rooms
            .memberships_of(user_id)
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .filter_map(|m| OwnedRoomId::try_from(m.room_id).ok())
            .collect())
    }
}
