//! Invites and leaves across servers: our users invited by other servers (`/invite` v2, the
//! event countersigned and kept with the room's stripped state), other servers' users invited
//! by ours (their server signs first, then the event enters the room), declining an invite to a
//! room this server is not in (`/make_leave`, `/send_leave` v2 through the inviting server),
//! other servers' users leaving our rooms the same way, and knocks in both directions
//! (`/make_knock`, `/send_knock`).

use poststelle_federation::incoming::IncomingError;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::{
        RawStrippedState, create_invite::v2 as send_invite, create_knock_event::v1 as send_knock,
        create_leave_event::v2 as send_leave, prepare_knock_event::v1 as make_knock,
        prepare_leave_event::v1 as make_leave,
    },
};
use serde_json::{Value as JsonValue, value::RawValue as RawJsonValue};

use super::{FederationService, received};
use crate::{
    service::{
        ServiceError, ServiceResult,
        rooms::{Accepted, CreateRoom, MembershipChange, Received, SUPPORTED_ROOM_VERSIONS, StateBefore},
    },
    storage::now_ms,
};

/// The state types an invitee sees before joining (the spec's recommendation, and
/// `m.room.guest_access`, so that an invited guest's server can refuse the join before making it).
const INVITE_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.guest_access",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

fn raw(text: String) -> ServiceResult<Box<RawJsonValue>> {
    RawJsonValue::from_string(text).map_err(internal)
}

/// A membership event's `membership`.
fn membership_of(received: &Received) -> Option<String> {
    serde_json::from_str::<JsonValue>(received.pdu.content.get()).ok()?.get("membership")?.as_str().map(str::to_owned)
}

/// The sender of a PDU already accepted (its membership checked by `accept_member_event`).
fn received_sender(pdu: &RawJsonValue) -> ServiceResult<String> {
    #[derive(serde::Deserialize)]
    struct Sender {
        sender: String,
    }
    serde_json::from_str::<Sender>(pdu.get()).map(|s| s.sender).map_err(|e| ServiceError::BadJson(e.to_string()))
}

/// The stripped form (type, state_key, sender, content) of invite state, full PDU or stripped.
fn stripped(state: &[RawStrippedState]) -> JsonValue {
    let items = state
        .iter()
        .filter_map(|s| {
            let text = match s {
                RawStrippedState::Pdu(pdu) => pdu.get(),
                #[allow(deprecated)]
                RawStrippedState::Stripped(raw) => raw.json().get(),
                _ => return None,
            };
            let v: JsonValue = serde_json::from_str(text).ok()?;
            Some(serde_json::json!({
                "type": v.get("type")?, "state_key": v.get("state_key")?,
                "sender": v.get("sender")?, "content": v.get("content")?,
            }))
        })
        .collect();
    JsonValue::Array(items)
}

impl FederationService {
    /// `/invite` v2: another server invites one of our users.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        version: &RoomVersionId,
        event: &RawJsonValue,
        invite_state: &[RawStrippedState],
    ) -> ServiceResult<Box<RawJsonValue>> {
        if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
            return Err(ServiceError::IncompatibleRoomVersion(version.to_string()));
        }
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        self.check_acl(origin, room_id.as_str()).await?;
        let verified =
            self.verify_pdu(event, &rules, room_id).await.map_err(|e| ServiceError::BadJson(e.to_string()))?;
        if verified.pdu.event_id != event_id {
            return Err(ServiceError::BadJson("the event id does not match the event".into()));
        }
        let invite = received(verified.clone(), Some(origin));
        let target = invite.pdu.state_key.clone().unwrap_or_default();
        if invite.pdu.kind.to_string() != "m.room.member" || membership_of(&invite).as_deref() != Some("invite") {
            return Err(ServiceError::BadJson("not an invite".into()));
        }
        if invite.pdu.sender.server_name() != origin {
            return Err(ServiceError::Forbidden(format!("{origin} cannot invite for {}", invite.pdu.sender)));
        }
        let target = UserId::parse(target.as_str()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
        if target.server_name() != self.server_name || self.storage.users.get(target.as_str()).await?.is_none() {
            return Err(ServiceError::NotFound(format!("{target} is not a user of this server")));
        }
        let mut json = verified.json;
        self.key.sign_event(self.server_name.as_str(), &mut json, &rules.redaction).map_err(internal)?;
        let text = serde_json::to_string(&json).map_err(internal)?;
        // A room we are in gets the invite through its transactions as well.
        if !self.is_resident(room_id).await? {
            let invite = Received { pdu: invite.pdu, text: text.clone(), origin: Some(origin.to_string()) };
            self.rooms
                .accept_lone_membership(room_id.as_str(), version, &invite, Some(&stripped(invite_state)))
                .await?;
        }
        raw(text)
    }

    /// A local user invites someone: here for our users, through the invitee's server for others.
    /// `createRoom`: the room with its local invitees; users of other servers are then invited
    /// through their servers (`/invite`), as every remote invite is. A refused remote invite does
    /// not undo the room (the creator may invite again).
    pub async fn create_room(&self, req: CreateRoom) -> ServiceResult<(ruma::OwnedRoomId, Option<String>)> {
        let remote: Vec<ruma::OwnedUserId> =
            req.invite.iter().filter(|u| u.server_name() != self.server_name).cloned().collect();
        let (creator, is_direct) = (req.creator.clone(), req.is_direct);
        let created = self.rooms.create_room(req).await?;
        for target in remote {
            let mut extra = serde_json::Map::new();
            if is_direct {
                extra.insert("is_direct".into(), true.into());
            }
            let change = MembershipChange {
                room_id: created.0.clone(),
                sender: creator.clone(),
                target: target.clone(),
                membership: "invite".into(),
                reason: None,
                extra,
            };
            if let Err(e) = self.invite(change).await {
                tracing::warn!(room_id = %created.0, invitee = %target, error = %e, "could not invite a user of another server");
            }
        }
        Ok(created)
    }

    pub async fn invite(&self, change: MembershipChange) -> ServiceResult<OwnedEventId> {
        if change.target.server_name() == self.server_name {
            return self.rooms.change_membership(change).await;
        }
        let (version, id, text) = self.rooms.prepare_membership(&change).await?;
        let Some(text) = text else { return Ok(id) };
        let destination = change.target.server_name().to_owned();
        let request = send_invite::Request::new(
            change.room_id.clone(),
            id.clone(),
            version.clone(),
            raw(text)?,
            self.invite_state(change.room_id.as_str(), change.sender.as_str()).await?,
        );
        let answer = self.call(&destination, request).await?;
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        // The invitee's server countersigned our event; the event is still ours.
        let signed = self.verify_pdu(&answer.event, &rules, &change.room_id).await.map_err(|e| match e {
            // What the invitee's server signed is no event of the room: the invite is refused.
            IncomingError::InvalidJson { .. } => ServiceError::BadJson(format!("{destination}: {e}")),
            other => ServiceError::Upstream(format!("{destination}: {other}")),
        })?;
        if signed.pdu.event_id != id {
            return Err(ServiceError::Upstream(format!("{destination} changed the invite")));
        }
        let event = received(signed, None);
        match self.rooms.accept_remote(change.room_id.as_str(), &event, StateBefore::Prevs).await? {
            Accepted::Stored | Accepted::AlreadyKnown => Ok(id),
            Accepted::SoftFailed => Err(ServiceError::Forbidden("the invite is no longer allowed".into())),
            Accepted::Rejected(reason) => Err(ServiceError::Forbidden(reason)),
        }
    }

    /// The state an invitee's server gets with the invite: the room's descriptive state and
    /// the inviter's membership, as full PDUs.
    async fn invite_state(&self, room_id: &str, inviter: &str) -> ServiceResult<Vec<RawStrippedState>> {
        let state = self.storage.rooms.current_state(room_id).await?;
        state
            .into_iter()
            .filter(|e| {
                INVITE_STATE_TYPES.contains(&e.event_type.as_str())
                    || (e.event_type == "m.room.member" && e.state_key.as_deref() == Some(inviter))
            })
            .map(|e| Ok(RawStrippedState::Pdu(raw(e.pdu)?)))
            .collect()
    }

    /// A local user leaves: here if this server is in the room; else (an invite to decline)
    /// through the server that invited them.
    pub async fn leave(&self, change: MembershipChange) -> ServiceResult<OwnedEventId> {
        if change.target != change.sender || self.is_resident(&change.room_id).await? {
            return self.rooms.change_membership(change).await;
        }
        let Some(m) = self.storage.rooms.membership(change.room_id.as_str(), change.sender.as_str()).await? else {
            return self.rooms.change_membership(change).await;
        };
        let Some(invite) = self.storage.rooms.event(&m.event_id).await? else {
            return self.rooms.change_membership(change).await;
        };
        let inviter = UserId::parse(invite.sender.as_str()).map_err(internal)?;
        if m.membership != "invite" || inviter.server_name() == self.server_name {
            return self.rooms.change_membership(change).await;
        }
        self.leave_through(&change, inviter.server_name()).await
    }

    async fn leave_through(&self, change: &MembershipChange, server: &ServerName) -> ServiceResult<OwnedEventId> {
        let template =
            self.call(server, make_leave::Request::new(change.room_id.clone(), change.sender.clone())).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
            return Err(ServiceError::UnsupportedRoomVersion(version.to_string()));
        }
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        let mut event: CanonicalJsonObject = serde_json::from_str(template.event.get())
            .map_err(|e| ServiceError::Upstream(format!("{server}: bad template: {e}")))?;
        self.check_template(&event, &change.sender, &change.room_id, "leave")?;
        event.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now_ms().try_into().map_err(internal)?));
        if let Some(reason) = &change.reason
            && let Some(CanonicalJsonValue::Object(content)) = event.get_mut("content")
        {
            content.insert("reason".into(), CanonicalJsonValue::String(reason.clone()));
        }
        let signed = self.sign_event(event, &rules)?;
        let text = serde_json::to_string(&signed.json).map_err(internal)?;
        let id = signed.pdu.event_id.clone();
        self.call(server, send_leave::Request::new(change.room_id.clone(), id.clone(), raw(text.clone())?)).await?;
        let leave = Received { pdu: signed.pdu, text, origin: None };
        self.rooms.accept_lone_membership(change.room_id.as_str(), &version, &leave, None).await?;
        Ok(id)
    }

    /// `/make_leave`: a leave template for a user of `origin`.
    pub async fn make_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> ServiceResult<(RoomVersionId, Box<RawJsonValue>)> {
        self.check_member_origin(origin, user_id)?;
        self.check_acl(origin, room_id.as_str()).await?;
        if !self.is_resident(room_id).await? {
            return Err(ServiceError::NotFound("this server is not in the room".into()));
        }
        let (version, template) = self.rooms.membership_template(room_id, user_id, "leave").await?;
        Ok((version, raw(serde_json::to_string(&template).map_err(internal)?)?))
    }

    /// `/send_leave` v2: another server's user leaves (or declines an invite to) our room.
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        pdu: &RawJsonValue,
    ) -> ServiceResult<()> {
        self.accept_member_event(origin, room_id, event_id, pdu, "leave").await
    }
}

impl FederationService {
    /// A local user knocks: here if this server is in the room, else through the servers the
    /// client named or the one in the room id.
    pub async fn knock(&self, change: MembershipChange, via: &[OwnedServerName]) -> ServiceResult<OwnedEventId> {
        if self.is_resident(&change.room_id).await? {
            return self.rooms.change_membership(change).await;
        }
        let mut servers: Vec<OwnedServerName> = via.to_vec();
        servers.extend(change.room_id.server_name().map(ToOwned::to_owned));
        servers.retain(|s| *s != self.server_name);
        servers.dedup();
        let mut last_error = ServiceError::NotFound("no server to knock through".into());
        for server in &servers {
            match self.knock_through(&change, server).await {
                Ok(id) => return Ok(id),
                Err(e) => {
                    tracing::info!(room_id = %change.room_id, %server, error = %e, "could not knock through a server");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn knock_through(&self, change: &MembershipChange, server: &ServerName) -> ServiceResult<OwnedEventId> {
        let mut request = make_knock::Request::new(change.room_id.clone(), change.sender.clone());
        request.ver = SUPPORTED_ROOM_VERSIONS.iter().filter_map(|v| RoomVersionId::try_from(*v).ok()).collect();
        let template = self.call(server, request).await?;
        let version = template.room_version;
        if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
            return Err(ServiceError::UnsupportedRoomVersion(version.to_string()));
        }
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        let mut event: CanonicalJsonObject = serde_json::from_str(template.event.get())
            .map_err(|e| ServiceError::Upstream(format!("{server}: bad template: {e}")))?;
        self.check_template(&event, &change.sender, &change.room_id, "knock")?;
        event.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now_ms().try_into().map_err(internal)?));
        if let Some(reason) = &change.reason
            && let Some(CanonicalJsonValue::Object(content)) = event.get_mut("content")
        {
            content.insert("reason".into(), CanonicalJsonValue::String(reason.clone()));
        }
        let signed = self.sign_event(event, &rules)?;
        let text = serde_json::to_string(&signed.json).map_err(internal)?;
        let id = signed.pdu.event_id.clone();
        let answer =
            self.call(server, send_knock::Request::new(change.room_id.clone(), id.clone(), raw(text.clone())?)).await?;
        let knock = Received { pdu: signed.pdu, text, origin: None };
        let state = stripped(&answer.knock_room_state);
        self.rooms.accept_lone_membership(change.room_id.as_str(), &version, &knock, Some(&state)).await?;
        Ok(id)
    }

    /// `/make_knock`: a knock template for a user of `origin`.
    pub async fn make_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        versions: &[RoomVersionId],
    ) -> ServiceResult<(RoomVersionId, Box<RawJsonValue>)> {
        self.check_member_origin(origin, user_id)?;
        self.check_acl(origin, room_id.as_str()).await?;
        let Some((version, _)) = self.rooms.room_rules(room_id.as_str()).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        if !self.is_resident(room_id).await? {
            return Err(ServiceError::NotFound("this server is not in the room".into()));
        }
        if !versions.contains(&version) {
            return Err(ServiceError::IncompatibleRoomVersion(version.to_string()));
        }
        let (version, template) = self.rooms.membership_template(room_id, user_id, "knock").await?;
        Ok((version, raw(serde_json::to_string(&template).map_err(internal)?)?))
    }

    /// `/send_knock`: accepts another server's knock and answers with the room's stripped state.
    pub async fn send_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        pdu: &RawJsonValue,
    ) -> ServiceResult<Vec<RawStrippedState>> {
        self.accept_member_event(origin, room_id, event_id, pdu, "knock").await?;
        let sender = received_sender(pdu)?;
        self.invite_state(room_id.as_str(), &sender).await
    }
}
