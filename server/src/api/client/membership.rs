//! Membership: joining, inviting, leaving, kicking, banning, knocking, forgetting, and who is in
//! a room.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::api::client::{
    knock::knock_room::v3 as knock,
    membership::{
        ban_user::v3 as ban, forget_room::v3 as forget, get_member_events::v3 as members, invite_user::v3 as invite,
        join_room_by_id::v3 as join_by_id, join_room_by_id_or_alias::v3 as join, joined_members::v3 as joined_members,
        joined_rooms::v3 as joined_rooms, kick_user::v3 as kick, leave_room::v3 as leave, unban_user::v3 as unban,
    },
};
use serde_json::Map;

use super::json::raw_list;
use crate::{
    http::{
        error::ApiError,
        ruma::{ApiResult, Ruma},
    },
    service::{rooms::MembershipChange, sessions::Session},
    state::AppState,
};

fn me(session: &Session) -> Result<ruma::OwnedUserId, ApiError> {
    ruma::OwnedUserId::try_from(session.user_id.as_str()).map_err(|e| ApiError::bad_json(e.to_string()))
}

/// A change of `target`'s membership by the session's user.
fn change(
    session: &Session,
    room_id: ruma::OwnedRoomId,
    target: ruma::OwnedUserId,
    membership: &str,
    reason: Option<String>,
) -> Result<MembershipChange, ApiError> {
    Ok(MembershipChange {
        room_id,
        sender: me(session)?,
        target,
        membership: membership.into(),
        reason,
        extra: Map::new(),
    })
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
pub(super) async fn join_room_by_id(
    State(state): State<AppState>,
    req: Ruma<join_by_id::Request>,
) -> ApiResult<join_by_id::Response> {
    let user = me(&req.identity)?;
    let room_id = req.body.room_id;
    let change = change(&req.identity, room_id.clone(), user, "join", req.body.reason)?;
    match &req.body.third_party_signed {
        Some(signed) => state.third_party_invites.join_signed(change, signed, &[]).await?,
        None => drop(state.federation.join(change, &[]).await?),
    }
    Ok(join_by_id::Response::new(room_id).into())
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub(super) async fn join_room_by_id_or_alias(
    State(state): State<AppState>,
    req: Ruma<join::Request>,
) -> ApiResult<join::Response> {
    let room_id = state.rooms.resolve_room(&req.body.room_id_or_alias).await?;
    let user = me(&req.identity)?;
    let change = change(&req.identity, room_id.clone(), user, "join", req.body.reason)?;
    match &req.body.third_party_signed {
        Some(signed) => state.third_party_invites.join_signed(change, signed, &req.body.via).await?,
        None => drop(state.federation.join(change, &req.body.via).await?),
    }
    Ok(join::Response::new(room_id).into())
}

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
pub(super) async fn knock_room(State(state): State<AppState>, req: Ruma<knock::Request>) -> ApiResult<knock::Response> {
    let room_id = state.rooms.resolve_room(&req.body.room_id_or_alias).await?;
    let user = me(&req.identity)?;
    let change = change(&req.identity, room_id.clone(), user, "knock", req.body.reason)?;
    state.federation.knock(change, &req.body.via).await?;
    Ok(knock::Response::new(room_id).into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub(super) async fn invite_user(
    State(state): State<AppState>,
    req: Ruma<invite::Request>,
) -> ApiResult<invite::Response> {
    let body = req.body;
    match body.recipient {
        invite::InvitationRecipient::UserId(recipient) => {
            let (user_id, reason) = (recipient.user_id, recipient.reason);
            state.federation.invite(change(&req.identity, body.room_id, user_id, "invite", reason)?).await?;
        }
        invite::InvitationRecipient::ThirdPartyId(invite) => {
            state.third_party_invites.invite(me(&req.identity)?, body.room_id, &invite).await?;
        }
        _ => return Err(ApiError::bad_json("unknown kind of invitation recipient")),
    }
    Ok(invite::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub(super) async fn leave_room(State(state): State<AppState>, req: Ruma<leave::Request>) -> ApiResult<leave::Response> {
    let user = me(&req.identity)?;
    state.federation.leave(change(&req.identity, req.body.room_id, user, "leave", req.body.reason)?).await?;
    Ok(leave::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub(super) async fn kick_user(State(state): State<AppState>, req: Ruma<kick::Request>) -> ApiResult<kick::Response> {
    let b = req.body;
    state.rooms.change_membership(change(&req.identity, b.room_id, b.user_id, "leave", b.reason)?).await?;
    Ok(kick::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub(super) async fn ban_user(State(state): State<AppState>, req: Ruma<ban::Request>) -> ApiResult<ban::Response> {
    let b = req.body;
    state.rooms.change_membership(change(&req.identity, b.room_id, b.user_id, "ban", b.reason)?).await?;
    Ok(ban::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub(super) async fn unban_user(State(state): State<AppState>, req: Ruma<unban::Request>) -> ApiResult<unban::Response> {
    let b = req.body;
    state.rooms.unban(change(&req.identity, b.room_id, b.user_id, "leave", b.reason)?).await?;
    Ok(unban::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub(super) async fn forget_room(
    State(state): State<AppState>,
    req: Ruma<forget::Request>,
) -> ApiResult<forget::Response> {
    state.rooms.forget(&req.identity.user_id, req.body.room_id.as_str()).await?;
    Ok(forget::Response::new().into())
}

/// # `GET /_matrix/client/v3/joined_rooms`
pub(super) async fn joined_rooms(
    State(state): State<AppState>,
    req: Ruma<joined_rooms::Request>,
) -> ApiResult<joined_rooms::Response> {
    let rooms = state.rooms.joined_rooms(&req.identity.user_id).await?;
    Ok(joined_rooms::Response::new(rooms).into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
pub(super) async fn get_member_events(
    State(state): State<AppState>,
    req: Ruma<members::Request>,
) -> ApiResult<members::Response> {
    let b = req.body;
    let viewer = crate::service::rooms::client_format::Viewer {
        user_id: &req.identity.user_id,
        device_id: Some(&req.identity.device_id),
    };
    let chunk = state
        .rooms
        .members_for(
            viewer,
            b.room_id.as_str(),
            b.at.as_deref(),
            b.membership.as_ref().map(|m| m.as_str()),
            b.not_membership.as_ref().map(|m| m.as_str()),
        )
        .await?;
    Ok(members::Response::new(raw_list(&chunk)?).into())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub(super) async fn get_joined_members(
    State(state): State<AppState>,
    req: Ruma<joined_members::Request>,
) -> ApiResult<joined_members::Response> {
    let members = state.rooms.joined_members_for(&req.identity.user_id, req.body.room_id.as_str()).await?;
    let mut joined = BTreeMap::new();
    for (user, displayname, avatar_url) in members {
        let Ok(user) = ruma::OwnedUserId::try_from(user) else { continue };
        let mut m = joined_members::RoomMember::new();
        m.display_name = displayname;
        m.avatar_url = avatar_url.map(Into::into);
        joined.insert(user, m);
    }
    Ok(joined_members::Response::new(joined).into())
}
