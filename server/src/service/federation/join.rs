//! Joins across servers: ours through a resident server (`/make_join`, `/send_join` v2, the
//! room's state from the answer verified and stored), and other servers' users joining our rooms
//! (the template, then their signed event through the acceptance pipeline and the state before
//! it in the answer). Also the reads other servers make of a room: `/event`, `/state_ids`,
//! `/event_auth`, `/get_missing_events`, `/backfill`.

use ruma::events::room::server_acl::RoomServerAclEventContent;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId,
    ServerName, UserId,
    api::federation::membership::{create_join_event::v2 as send_join, prepare_join_event::v1 as make_join},
};
use serde_json::{Value as JsonValue, value::RawValue as RawJsonValue};

use super::{FederationService, received};
use crate::{
    service::{
        ServiceError, ServiceResult,
        rooms::{
            Accepted, MembershipChange, Received, SUPPORTED_ROOM_VERSIONS,
            guests::{GUEST_ACCESS, guests_may_join, guests_not_allowed},
        },
    },
    storage::{federation::StoredPdu, now_ms},
};

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

fn raw(text: String) -> ServiceResult<Box<RawJsonValue>> {
    RawJsonValue::from_string(text).map_err(internal)
}

/// The create event of a room joined through `server` must name the version its template
/// had: one this server does not know is refused as unsupported, another known one as the
/// resident server's fault. Versions before 3 may leave it out (then it is 1).
fn check_create_version(create: &Received, version: &RoomVersionId, server: &ServerName) -> ServiceResult<()> {
    let named = serde_json::from_str::<JsonValue>(create.pdu.content.get())
        .ok()
        .and_then(|c| c.get("room_version").map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
        .unwrap_or_else(|| "1".to_owned());
    if named == version.as_str() {
        Ok(())
    } else if !SUPPORTED_ROOM_VERSIONS.contains(&named.as_str()) {
        Err(ServiceError::UnsupportedRoomVersion(named))
    } else {
        Err(ServiceError::Upstream(format!("{server}: the create event names version {named}, the template {version}")))
    }
}

/// Whether a failed join was refused for the room's version (the resident server's
/// `M_INCOMPATIBLE_ROOM_VERSION`, or a template of a version this server does not support).
fn is_version_refusal(e: &ServiceError) -> bool {
    use ruma::api::error::ErrorKind as K;
    matches!(e, ServiceError::UnsupportedRoomVersion(_))
        || matches!(e, ServiceError::RemoteRefusal { kind: K::IncompatibleRoomVersion(_), .. })
}

/// The state and auth chain another server needs for an event: `(state PDUs, auth chain
/// PDUs)` as stored.
pub type StateAndAuth = (Vec<Box<RawJsonValue>>, Vec<Box<RawJsonValue>>);

impl FederationService {
    /// Whether this server holds the room with at least one of its users joined.
    pub async fn is_resident(&self, room_id: &RoomId) -> ServiceResult<bool> {
        Ok(self.storage.federation.server_in_room(room_id.as_str(), self.server_name.as_str(), &["join"]).await?)
    }

    /// A local user joins a room: here if this server is in the room, else through the servers
    /// the client named, the server in the room id, or the server that invited the user. The
    /// first local user to join a replacement room brings this server's aliases, directory
    /// entry and users' settings over from its predecessor.
    pub async fn join(&self, change: MembershipChange, via: &[OwnedServerName]) -> ServiceResult<OwnedEventId> {
        let room_id = change.room_id.clone();
        if self.is_resident(&room_id).await? {
            return self.rooms.change_membership(change).await;
        }
        let joined = self.join_first(change, via).await?;
        if let Err(e) = self.rooms.adopt_predecessor(&room_id).await {
            tracing::warn!(%room_id, error = %e, "predecessor room not adopted");
        }
        Ok(joined)
    }

    /// [`Self::join`] of a room no local user is joined to.
    async fn join_first(&self, change: MembershipChange, via: &[OwnedServerName]) -> ServiceResult<OwnedEventId> {
        let room_id = change.room_id.clone();
        let mut servers: Vec<OwnedServerName> = via.to_vec();
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        if let Some(m) = self.storage.rooms.membership(room_id.as_str(), change.sender.as_str()).await?
            && let Some(event) = self.storage.rooms.event(&m.event_id).await?
            && let Ok(inviter) = ruma::UserId::parse(event.sender.as_str())
        {
            servers.push(inviter.server_name().to_owned());
        }
        servers.retain(|s| *s != self.server_name);
        servers.dedup();
        if servers.is_empty() {
            return self.rooms.change_membership(change).await;
        }
        self.join_remote(&change.sender, &room_id, &servers).await
    }

    /// Joins a local user to a room held by other servers, trying `servers` in turn.
    pub async fn join_remote(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
    ) -> ServiceResult<OwnedEventId> {
        let guest = self.rooms.is_local_guest(user_id).await?;
        if guest {
            self.refuse_guest_by_invite_state(user_id, room_id).await?;
        }
        let mut last_error: Option<ServiceError> = None;
        for server in servers.iter().filter(|s| **s != self.server_name) {
            match self.join_through(user_id, room_id, server, guest).await {
                Ok(id) if guest => return self.keep_guest_if_allowed(room_id, id).await,
                Ok(id) => return Ok(id),
                Err(e) => {
                    tracing::info!(room_id = %room_id, %server, error = %e, "could not join through a server");
                    // The room's version is the same through every server: no other does better.
                    if is_version_refusal(&e) {
                        return Err(e);
                    }
                    // A server's refusal tells the client more than another server's outage.
                    let keep = matches!(last_error, Some(ServiceError::RemoteRefusal { .. }))
                        && !matches!(e, ServiceError::RemoteRefusal { .. });
                    if !keep {
                        last_error = Some(e);
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ServiceError::NotFound("no server to join the room through".into())))
    }

    /// One attempt of [`Self::join_remote`]; a `guest`'s join says `"kind": "guest"`.
    async fn join_through(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        server: &ServerName,
        guest: bool,
    ) -> ServiceResult<OwnedEventId> {
        let mut request = make_join::Request::new(room_id.to_owned(), user_id.to_owned());
        request.ver = SUPPORTED_ROOM_VERSIONS.iter().filter_map(|v| RoomVersionId::try_from(*v).ok()).collect();
        let template = self.call_for_client(server, request).await?;
        // A template without a version is of version 1 (the spec's default).
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
            return Err(ServiceError::UnsupportedRoomVersion(version.to_string()));
        }
        let rules = version.rules().ok_or_else(|| internal("room version without rules"))?;
        let mut event: CanonicalJsonObject = serde_json::from_str(template.event.get())
            .map_err(|e| ServiceError::Upstream(format!("{server}: bad template: {e}")))?;
        self.check_template(&event, user_id, room_id, "join")?;
        event.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now_ms().try_into().map_err(internal)?));
        let mut content = match event.remove("content") {
            Some(CanonicalJsonValue::Object(c)) => c,
            _ => CanonicalJsonObject::new(),
        };
        content.insert("membership".into(), CanonicalJsonValue::String("join".into()));
        if let Some(profile) = self.storage.users.get(user_id.as_str()).await? {
            if let Some(name) = profile.displayname {
                content.insert("displayname".into(), CanonicalJsonValue::String(name));
            }
            if let Some(url) = profile.avatar_url {
                content.insert("avatar_url".into(), CanonicalJsonValue::String(url));
            }
        }
        if guest {
            content.insert("kind".into(), CanonicalJsonValue::String("guest".into()));
        }
        event.insert("content".into(), CanonicalJsonValue::Object(content));
        let signed = self.sign_event(event, &rules)?;
        let text = serde_json::to_string(&signed.json).map_err(internal)?;
        let join = Received { pdu: signed.pdu.clone(), text: text.clone(), origin: None };

        let started = std::time::Instant::now();
        let answer = self
            .call(server, send_join::Request::new(room_id.to_owned(), join.pdu.event_id.clone(), raw(text)?))
            .await?;
        let answered = started.elapsed();
        let (state, auth_chain) = self
            .verify_state_and_chain(&answer.room_state.state, &answer.room_state.auth_chain, &rules, room_id, server)
            .await;
        let verified = started.elapsed();
        let Some(create) = state.iter().find(|e| e.pdu.kind.to_string() == "m.room.create") else {
            return Err(ServiceError::Upstream(format!("{server}: the room state has no create event")));
        };
        check_create_version(create, &version, server)?;
        let accepted = self.rooms.accept_join(room_id.as_str(), &version, &state, &auth_chain, &join).await?;
        tracing::debug!(
            %room_id,
            %server,
            state = state.len(),
            auth_chain = auth_chain.len(),
            send_join_ms = answered.as_millis(),
            verify_ms = (verified - answered).as_millis(),
            accept_ms = (started.elapsed() - verified).as_millis(),
            "joined a room through another server"
        );
        match accepted {
            Accepted::Stored | Accepted::AlreadyKnown => Ok(join.pdu.event_id),
            Accepted::SoftFailed => Err(ServiceError::Forbidden("the join is not allowed by the room's state".into())),
            Accepted::Rejected(reason) => Err(ServiceError::Forbidden(reason)),
        }
    }

    /// A `send_join` answer's state and auth chain, verified. The chain repeats most of the
    /// state (memberships authorise later events), so what both carry is verified once.
    async fn verify_state_and_chain(
        &self,
        state: &[Box<RawJsonValue>],
        auth_chain: &[Box<RawJsonValue>],
        rules: &ruma::room_version_rules::RoomVersionRules,
        room_id: &RoomId,
        server: &ServerName,
    ) -> (Vec<Received>, Vec<Received>) {
        let in_state: std::collections::BTreeSet<&str> = state.iter().map(|r| r.get()).collect();
        let mut all: Vec<Box<RawJsonValue>> = state.to_vec();
        all.extend(auth_chain.iter().filter(|r| !in_state.contains(r.get())).cloned());
        let mut verified = self
            .verify_each(&all, rules, room_id, server)
            .await
            .into_iter()
            .map(|v| v.map_err(|e| tracing::info!(%server, %room_id, error = %e, "dropped a PDU")).ok());
        let state_verified: Vec<Option<Received>> = verified.by_ref().take(state.len()).collect();
        let by_text: std::collections::BTreeMap<&str, &Received> =
            state.iter().zip(&state_verified).filter_map(|(raw, v)| v.as_ref().map(|v| (raw.get(), v))).collect();
        let chain = auth_chain
            .iter()
            .filter_map(|raw| match by_text.get(raw.get()) {
                Some(v) => Some((*v).clone()),
                None if in_state.contains(raw.get()) => None,
                None => verified.next().flatten(),
            })
            .collect();
        (state_verified.into_iter().flatten().collect(), chain)
    }

    /// A guest invited to a room on another server: the state that came with the invite
    /// decides before anything is sent, if it says whether guests may join.
    async fn refuse_guest_by_invite_state(&self, user_id: &UserId, room_id: &RoomId) -> ServiceResult<()> {
        let Some(m) = self.storage.rooms.membership(room_id.as_str(), user_id.as_str()).await? else { return Ok(()) };
        let Some(JsonValue::Array(state)) = self.storage.rooms.remote_invite_state(&m.event_id).await? else {
            return Ok(());
        };
        let guest_access = state.iter().find(|s| {
            s.get("type").and_then(JsonValue::as_str) == Some(GUEST_ACCESS)
                && s.get("state_key").and_then(JsonValue::as_str) == Some("")
        });
        match guest_access {
            Some(event) if !guests_may_join(event.get("content")) => Err(guests_not_allowed(room_id.as_str())),
            _ => Ok(()),
        }
    }

    /// After a guest's join through another server (which cannot know the user is a guest):
    /// the room's state now here decides, and a guest in a room that does not allow guests
    /// leaves again at once.
    async fn keep_guest_if_allowed(&self, room_id: &RoomId, join: OwnedEventId) -> ServiceResult<OwnedEventId> {
        if self.rooms.guests_allowed(room_id).await? {
            return Ok(join);
        }
        tracing::info!(room_id = %room_id, event_id = %join, "a guest joined a room without guest access: leaving");
        self.rooms.remove_guests_if_revoked(room_id).await?;
        Err(guests_not_allowed(room_id.as_str()))
    }

    /// A template from another server must describe the membership we asked for.
    pub(super) fn check_template(
        &self,
        event: &CanonicalJsonObject,
        user_id: &UserId,
        room_id: &RoomId,
        membership: &str,
    ) -> ServiceResult<()> {
        let field = |name: &str| match event.get(name) {
            Some(CanonicalJsonValue::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let content_membership = match event.get("content") {
            Some(CanonicalJsonValue::Object(c)) => match c.get("membership") {
                Some(CanonicalJsonValue::String(m)) => Some(m.as_str()),
                _ => None,
            },
            _ => None,
        };
        let ok = field("type") == Some("m.room.member")
            && field("sender") == Some(user_id.as_str())
            && field("state_key") == Some(user_id.as_str())
            && field("room_id") == Some(room_id.as_str())
            && content_membership == Some(membership);
        if ok {
            Ok(())
        } else {
            Err(ServiceError::Upstream("the resident server sent a template for something else".into()))
        }
    }

    /// Hashes and signs an event of ours built from a template.
    pub(super) fn sign_event(
        &self,
        mut event: CanonicalJsonObject,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> ServiceResult<poststelle_federation::incoming::IncomingPdu> {
        event.remove("signatures");
        event.remove("hashes");
        event.remove("event_id");
        event.remove("unsigned");
        self.key.hash_and_sign_event(self.server_name.as_str(), &mut event, &rules.redaction).map_err(internal)?;
        let text = serde_json::to_string(&event).map_err(internal)?;
        let room = match event.get("room_id") {
            Some(CanonicalJsonValue::String(r)) => OwnedRoomId::try_from(r.as_str()).ok(),
            _ => None,
        };
        poststelle_federation::incoming::parse(&raw(text)?, rules, room.as_deref())
            .map_err(|e| ServiceError::BadJson(e.to_string()))
    }

    /// `/make_join`: a join template for a user of `origin`.
    pub async fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        versions: &[RoomVersionId],
    ) -> ServiceResult<(RoomVersionId, Box<RawJsonValue>)> {
        self.check_member_origin(origin, user_id)?;
        let Some((version, _)) = self.rooms.room_rules(room_id.as_str()).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        self.check_acl(origin, room_id.as_str()).await?;
        if !self.is_resident(room_id).await? {
            return Err(ServiceError::NotFound("this server is not in the room".into()));
        }
        if !versions.contains(&version) {
            return Err(ServiceError::IncompatibleRoomVersion(version.to_string()));
        }
        let (version, template) = self.rooms.membership_template(room_id, user_id, "join").await?;
        Ok((version, raw(serde_json::to_string(&template).map_err(internal)?)?))
    }

    /// `/send_join` v2: accepts another server's join and answers with the room's state before
    /// it and the auth chain.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        pdu: &RawJsonValue,
    ) -> ServiceResult<StateAndAuth> {
        self.accept_member_event(origin, room_id, event_id, pdu, "join").await?;
        self.state_and_auth(event_id.as_str(), true).await
    }

    /// `/send_join`, `/send_leave`, `/send_knock`: another server's user's own membership
    /// event, verified (signature, id, that it is that membership of a user of `origin`) and
    /// accepted through the pipeline.
    pub(super) async fn accept_member_event(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        pdu: &RawJsonValue,
        membership: &str,
    ) -> ServiceResult<()> {
        let Some((_, rules)) = self.rooms.room_rules(room_id.as_str()).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        self.check_acl(origin, room_id.as_str()).await?;
        let verified = self.verify_pdu(pdu, &rules, room_id).await.map_err(|e| ServiceError::BadJson(e.to_string()))?;
        if verified.pdu.event_id != event_id {
            return Err(ServiceError::BadJson("the event id does not match the event".into()));
        }
        let sender = verified.pdu.sender.clone();
        let content_membership = serde_json::from_str::<serde_json::Value>(verified.pdu.content.get())
            .ok()
            .and_then(|c| c.get("membership").and_then(|m| m.as_str().map(str::to_owned)));
        if verified.pdu.kind.to_string() != "m.room.member"
            || verified.pdu.state_key.as_deref() != Some(sender.as_str())
            || content_membership.as_deref() != Some(membership)
        {
            return Err(ServiceError::BadJson(format!("not a {membership} event")));
        }
        self.check_member_origin(origin, &sender)?;
        let event = received(verified, Some(origin));
        match self.accept_with_history(origin, room_id, &rules, &event).await? {
            Accepted::Stored | Accepted::AlreadyKnown => Ok(()),
            Accepted::SoftFailed => {
                Err(ServiceError::Forbidden(format!("the {membership} is not allowed by the current state")))
            }
            Accepted::Rejected(reason) => Err(ServiceError::Forbidden(reason)),
        }
    }

    /// The state before (or after) a stored event and its auth chain, as PDUs.
    pub async fn state_and_auth(&self, event_id: &str, before: bool) -> ServiceResult<StateAndAuth> {
        let state_ids: Vec<String> =
            self.storage.rooms.state_ids_at(event_id, before).await?.into_iter().map(|(_, _, id)| id).collect();
        let mut chain_of = state_ids.clone();
        chain_of.push(event_id.to_owned());
        // The state's events are read while the chain is walked.
        let (chain_ids, state) =
            tokio::join!(self.storage.federation.auth_chain_ids(&chain_of), self.storage.federation.pdus(&state_ids));
        let (chain_ids, state) = (chain_ids?, state?);
        let chain = self.storage.federation.pdus(&chain_ids).await?;
        let state = state.into_iter().map(|p| raw(p.pdu)).collect::<ServiceResult<_>>()?;
        let chain = chain.into_iter().map(|p| raw(p.pdu)).collect::<ServiceResult<_>>()?;
        Ok((state, chain))
    }

    /// A server may only act for its own users.
    pub(super) fn check_member_origin(&self, origin: &ServerName, user_id: &UserId) -> ServiceResult<()> {
        if user_id.server_name() == origin {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!("{origin} cannot act for {user_id}")))
        }
    }

    /// Whether the room's server ACL (`m.room.server_acl`) lets `server` take part; a room
    /// without one lets everyone.
    pub(super) async fn check_acl(&self, server: &ServerName, room_id: &str) -> ServiceResult<()> {
        let row = self.storage.rooms.current_state_event(room_id, "m.room.server_acl", "").await?;
        acl_allows(server, row.as_ref().map(|r| (r.event_id.as_str(), r.pdu.as_str())))
    }

    /// Whether `origin` may read the room's events: the room's ACL allows it and it has a
    /// member who joined (or is invited, or left).
    pub async fn check_server_in_room(&self, origin: &ServerName, room_id: &str) -> ServiceResult<()> {
        self.check_acl(origin, room_id).await?;
        if self.storage.federation.server_in_room(room_id, origin.as_str(), &["join", "invite", "leave"]).await? {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!("{origin} is not in the room")))
        }
    }

    /// `/event/{eventId}`. A rejected event is not served: it is not part of the room.
    pub async fn event(&self, origin: &ServerName, event_id: &str) -> ServiceResult<Box<RawJsonValue>> {
        let pdu = self
            .storage
            .federation
            .pdu(event_id)
            .await?
            .filter(|p| !p.rejected)
            .ok_or_else(|| ServiceError::NotFound("unknown event".into()))?;
        self.check_server_in_room(origin, &pdu.room_id).await?;
        let room_id = pdu.room_id.clone();
        self.for_server(origin, &room_id, vec![pdu]).await?.pop().ok_or_else(|| internal("no event"))
    }

    /// `/state_ids`: the state before an event and its auth chain, as ids. Served at timeline
    /// and soft-failed events (whose state is kept); outliers and rejected events have none.
    pub async fn state_ids(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &str,
    ) -> ServiceResult<(Vec<String>, Vec<String>)> {
        let pdu = self
            .storage
            .federation
            .pdu(event_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("unknown event".into()))?;
        if pdu.room_id != room_id.as_str() || !pdu.has_state() {
            return Err(ServiceError::NotFound("unknown event".into()));
        }
        self.check_server_in_room(origin, room_id.as_str()).await?;
        let state: Vec<String> =
            self.storage.rooms.state_ids_at(event_id, true).await?.into_iter().map(|(_, _, id)| id).collect();
        let chain = self.storage.federation.auth_chain_ids(&state).await?;
        Ok((state, chain))
    }

    /// `/state`: the state before an event and its auth chain, as PDUs (where `/state_ids`
    /// serves it).
    pub async fn room_state(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &str,
    ) -> ServiceResult<StateAndAuth> {
        let pdu = self
            .storage
            .federation
            .pdu(event_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("unknown event".into()))?;
        if pdu.room_id != room_id.as_str() || !pdu.has_state() {
            return Err(ServiceError::NotFound("unknown event".into()));
        }
        self.check_server_in_room(origin, room_id.as_str()).await?;
        self.state_and_auth(event_id, true).await
    }

    /// `/event_auth`: the auth chain of an event.
    pub async fn event_auth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &str,
    ) -> ServiceResult<Vec<Box<RawJsonValue>>> {
        let pdu = self
            .storage
            .federation
            .pdu(event_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("unknown event".into()))?;
        if pdu.room_id != room_id.as_str() {
            return Err(ServiceError::NotFound("unknown event".into()));
        }
        self.check_server_in_room(origin, room_id.as_str()).await?;
        let chain = self.storage.federation.auth_chain_ids(&[event_id.to_owned()]).await?;
        self.storage.federation.pdus(&chain).await?.into_iter().map(|p| raw(p.pdu)).collect()
    }

    /// `/get_missing_events`.
    pub async fn missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        min_depth: u64,
        limit: u64,
    ) -> ServiceResult<Vec<Box<RawJsonValue>>> {
        self.check_server_in_room(origin, room_id.as_str()).await?;
        let ids = self
            .storage
            .federation
            .missing_events(
                room_id.as_str(),
                &earliest.iter().map(ToString::to_string).collect::<Vec<_>>(),
                &latest.iter().map(ToString::to_string).collect::<Vec<_>>(),
                i64::try_from(min_depth).unwrap_or(i64::MAX),
                i64::try_from(limit.min(100)).unwrap_or(100),
            )
            .await?;
        self.ordered_pdus(origin, room_id, &ids).await
    }

    /// `/backfill`.
    pub async fn backfill(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: u64,
    ) -> ServiceResult<Vec<Box<RawJsonValue>>> {
        self.check_server_in_room(origin, room_id.as_str()).await?;
        let from: Vec<String> = from.iter().map(ToString::to_string).collect();
        let ids = self
            .storage
            .federation
            .backfill(room_id.as_str(), &from, i64::try_from(limit.min(100)).unwrap_or(100))
            .await?;
        self.ordered_pdus(origin, room_id, &ids).await
    }

    /// The events of `ids` in that order, as `origin` may have them.
    async fn ordered_pdus(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        ids: &[String],
    ) -> ServiceResult<Vec<Box<RawJsonValue>>> {
        let mut stored: std::collections::BTreeMap<String, StoredPdu> =
            self.storage.federation.pdus(ids).await?.into_iter().map(|p| (p.event_id.clone(), p)).collect();
        let ordered = ids.iter().filter_map(|id| stored.remove(id)).collect();
        self.for_server(origin, room_id.as_str(), ordered).await
    }
}

/// Whether the room's server ACL event (id and stored PDU; none: no ACL) lets `server` in.
pub(super) fn acl_allows(server: &ServerName, acl_event: Option<(&str, &str)>) -> ServiceResult<()> {
    let Some((event_id, pdu)) = acl_event else { return Ok(()) };
    let pdu = crate::service::rooms::persist::parse_stored(event_id, pdu)?;
    let Ok(acl) = serde_json::from_str::<RoomServerAclEventContent>(pdu.content.get()) else { return Ok(()) };
    if acl.is_allowed(server) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!("{server} is denied by the room's server ACL")))
    }
}
