//! Third-party invites: inviting someone by an address (email, phone) that an identity server
//! knows, before or after it is bound to a Matrix user.
//!
//! Inviting looks the address up at the identity server the client names: a bound address is a
//! normal invite of its user; an unbound one is stored at the identity server and becomes an
//! `m.room.third_party_invite` state event (state key: the identity server's token, content:
//! the keys it will sign with). When the address is bound later, the identity server tells the
//! user's server (`/3pid/onbind`) with a signed `{mxid, sender, token}` per invite; the
//! inviter's server then checks that signature against the keys in the room (and that the
//! identity server still vouches for the key) and sends the `m.room.member` invite, whose
//! `third_party_invite` the auth rules check once more on every server.

use std::sync::Arc;

use base64::Engine as _;
use ruma::{
    CanonicalJsonObject, OwnedRoomId, OwnedServerName, OwnedUserId, SigningKeyAlgorithm,
    api::client::membership::{Invite3pid, ThirdPartySigned},
    serde::Raw,
};
use serde_json::{Map, Value as JsonValue, json};

use super::{
    ServiceError, ServiceResult,
    federation::FederationService,
    identity::{IdentityClient, InviteDetails},
    rooms::{CreateRoom, MembershipChange, RoomService, SendEvent},
};
use crate::storage::Storage;

/// One invite of a binding the identity server reports (`/3pid/onbind`).
#[derive(Debug, Clone)]
pub struct BoundInvite {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub mxid: OwnedUserId,
    /// `{mxid, sender, token, signatures}`, signed by the identity server.
    pub signed: JsonValue,
}

#[derive(Debug)]
pub struct ThirdPartyInviteService {
    storage: Storage,
    rooms: Arc<RoomService>,
    federation: Arc<FederationService>,
    identity: IdentityClient,
    server_name: OwnedServerName,
}

impl ThirdPartyInviteService {
    pub fn new(
        storage: Storage,
        rooms: Arc<RoomService>,
        federation: Arc<FederationService>,
        identity: IdentityClient,
        server_name: OwnedServerName,
    ) -> Self {
        Self { storage, rooms, federation, identity, server_name }
    }

    /// `POST /rooms/{roomId}/invite` with an address: the address's user is invited if the
    /// identity server knows one, else the invite is stored there and put into the room.
    pub async fn invite(&self, sender: OwnedUserId, room_id: OwnedRoomId, invite: &Invite3pid) -> ServiceResult<()> {
        let medium = invite.medium.as_str();
        if invite.address.is_empty() || invite.id_access_token.is_empty() {
            return Err(ServiceError::InvalidParam(
                "a third-party invite needs an address and an id_access_token".into(),
            ));
        }
        // Only members invite; the identity server is not bothered for anyone else.
        let member = self.storage.rooms.membership(room_id.as_str(), sender.as_str()).await?;
        if member.is_none_or(|m| m.membership != "join") {
            return Err(ServiceError::Forbidden("you are not joined to this room".into()));
        }
        let (id_server, token) = (invite.id_server.as_str(), invite.id_access_token.as_str());
        if let Some(user) = self.identity.lookup(id_server, token, medium, &invite.address).await? {
            tracing::debug!(room_id = %room_id, invitee = %user, "third-party address is bound: inviting its user");
            let change = MembershipChange {
                room_id,
                sender,
                target: user,
                membership: "invite".into(),
                reason: None,
                extra: Map::new(),
            };
            self.federation.invite(change).await?;
            return Ok(());
        }
        let details = self.invite_details(&room_id, &sender).await?;
        let stored = self.identity.store_invite(id_server, token, medium, &invite.address, &details).await?;
        let first = &stored.public_keys[0];
        let mut content = Map::new();
        content.insert("display_name".into(), stored.display_name.clone().into());
        content.insert("public_key".into(), first.get("public_key").cloned().unwrap_or_default());
        content.insert(
            "key_validity_url".into(),
            first.get("key_validity_url").cloned().unwrap_or_else(|| JsonValue::String(String::new())),
        );
        content.insert("public_keys".into(), stored.public_keys.clone().into());
        tracing::debug!(room_id = %room_id, token = %stored.token, "third-party invite stored at the identity server");
        self.rooms
            .send(SendEvent {
                room_id,
                sender,
                kind: "m.room.third_party_invite".into(),
                state_key: Some(stored.token),
                content,
                redacts: None,
                txn: None,
                sender_device: None,
            })
            .await?;
        Ok(())
    }

    /// `createRoom` with `invite_3pid`: the room, then each third-party invite. A failed one
    /// does not undo the room (as with invites of other servers' users).
    pub async fn create_room(&self, req: CreateRoom, invites: &[Invite3pid]) -> ServiceResult<OwnedRoomId> {
        let creator = req.creator.clone();
        let (room_id, _) = self.federation.create_room(req).await?;
        for invite in invites {
            if let Err(e) = self.invite(creator.clone(), room_id.clone(), invite).await {
                tracing::warn!(room_id = %room_id, error = %e, "could not send a third-party invite of a new room");
            }
        }
        Ok(room_id)
    }

    /// What the identity server may show the invitee: the room's name, alias, avatar and join
    /// rule, and the inviter's display name.
    async fn invite_details(&self, room_id: &OwnedRoomId, sender: &OwnedUserId) -> ServiceResult<InviteDetails> {
        let field = async |kind: &str, key: &str, name: &str| -> ServiceResult<Option<String>> {
            let row = self.storage.rooms.current_state_event(room_id.as_str(), kind, key).await?;
            Ok(row.and_then(|r| {
                let pdu: JsonValue = serde_json::from_str(&r.pdu).ok()?;
                pdu.get("content")?.get(name)?.as_str().map(str::to_owned)
            }))
        };
        Ok(InviteDetails {
            room_id: room_id.to_string(),
            sender: sender.to_string(),
            room_name: field("m.room.name", "", "name").await?,
            room_alias: field("m.room.canonical_alias", "", "alias").await?,
            room_avatar_url: field("m.room.avatar", "", "url").await?,
            room_join_rules: field("m.room.join_rules", "", "join_rule").await?,
            sender_display_name: field("m.room.member", sender.as_str(), "displayname").await?,
        })
    }

    /// `PUT /3pid/onbind`: an address of one of our users got bound; each pending invite of it
    /// becomes a real invite, sent by the inviter's server. One invite failing (a revoked key,
    /// a room gone) does not hold up the others.
    pub async fn on_bind(&self, mxid: &OwnedUserId, invites: Vec<BoundInvite>) -> ServiceResult<()> {
        if mxid.server_name() != self.server_name {
            return Err(ServiceError::InvalidParam(format!("{mxid} is not a user of this server")));
        }
        for invite in invites {
            if invite.mxid != *mxid {
                tracing::info!(mxid = %mxid, invitee = %invite.mxid, "onbind invite for another user ignored");
                continue;
            }
            let room_id = invite.room_id.clone();
            let third_party_invite = json!({"display_name": "", "signed": invite.signed});
            if let Err(e) =
                self.exchange_or_forward(invite.room_id, invite.sender, invite.mxid, third_party_invite).await
            {
                tracing::warn!(room_id = %room_id, invitee = %mxid, error = %e, "a third-party invite could not be turned into an invite");
            }
        }
        Ok(())
    }

    /// `/join` with `third_party_signed`: the invite the signature proves, then the join.
    pub async fn join_signed(
        &self,
        change: MembershipChange,
        signed: &ThirdPartySigned,
        via: &[OwnedServerName],
    ) -> ServiceResult<()> {
        if signed.mxid != change.sender {
            return Err(ServiceError::Forbidden("the signed third-party invite is for another user".into()));
        }
        let signed_json = serde_json::to_value(signed).map_err(|e| ServiceError::BadJson(e.to_string()))?;
        let third_party_invite = json!({"display_name": "", "signed": signed_json});
        self.exchange_or_forward(
            change.room_id.clone(),
            signed.sender.clone(),
            change.sender.clone(),
            third_party_invite,
        )
        .await?;
        self.federation.join(change, via).await?;
        Ok(())
    }

    /// The invite is sent by the inviter's server: here if that is us, else through it.
    async fn exchange_or_forward(
        &self,
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        target: OwnedUserId,
        third_party_invite: JsonValue,
    ) -> ServiceResult<()> {
        if sender.server_name() == self.server_name {
            return self.exchange(room_id, sender, target, third_party_invite).await;
        }
        self.federation.forward_third_party_invite(room_id, sender, target, third_party_invite).await
    }

    /// `PUT /exchange_third_party_invite/{roomId}`: another server passes on a binding for an
    /// invite one of our users made.
    pub async fn exchange_for_server(
        &self,
        origin: &ruma::ServerName,
        room_id: OwnedRoomId,
        event_type: &str,
        sender: OwnedUserId,
        target: OwnedUserId,
        content: &Raw<ruma::events::room::member::RoomMemberEventContent>,
    ) -> ServiceResult<()> {
        if event_type != "m.room.member" {
            return Err(ServiceError::InvalidParam("the exchanged event must be an m.room.member event".into()));
        }
        if sender.server_name() != self.server_name {
            return Err(ServiceError::Forbidden(format!("{sender} is not a user of this server")));
        }
        let content: JsonValue =
            serde_json::from_str(content.json().get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
        if content.get("membership").and_then(JsonValue::as_str) != Some("invite") {
            return Err(ServiceError::InvalidParam("the exchanged membership must be invite".into()));
        }
        let Some(third_party_invite) = content.get("third_party_invite").cloned() else {
            return Err(ServiceError::MissingParam("content.third_party_invite".into()));
        };
        tracing::debug!(%origin, room_id = %room_id, invitee = %target, "third-party invite exchange");
        self.exchange(room_id, sender, target, third_party_invite).await
    }

    /// Checks a signed binding against the room's `m.room.third_party_invite` and sends the
    /// invite as the user who made the third-party invite.
    async fn exchange(
        &self,
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        target: OwnedUserId,
        third_party_invite: JsonValue,
    ) -> ServiceResult<()> {
        let signed = third_party_invite.get("signed").cloned().unwrap_or_default();
        let Some(signed_object) = signed.as_object() else {
            return Err(ServiceError::BadJson("third_party_invite.signed must be an object".into()));
        };
        let field = |name: &str| signed_object.get(name).and_then(JsonValue::as_str);
        let (Some(token), Some(mxid)) = (field("token"), field("mxid")) else {
            return Err(ServiceError::BadJson("third_party_invite.signed needs mxid and token".into()));
        };
        if mxid != target.as_str() {
            return Err(ServiceError::Forbidden("the signed invite is for another user".into()));
        }
        if field("sender").is_some_and(|s| s != sender.as_str()) {
            return Err(ServiceError::Forbidden("the signed invite names another inviter".into()));
        }
        let Some(row) =
            self.storage.rooms.current_state_event(room_id.as_str(), "m.room.third_party_invite", token).await?
        else {
            return Err(ServiceError::Forbidden("no third-party invite in this room matches the token".into()));
        };
        if row.sender != sender.as_str() {
            return Err(ServiceError::Forbidden("the third-party invite was made by someone else".into()));
        }
        let pdu: JsonValue = serde_json::from_str(&row.pdu).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let invite_content = pdu.get("content").cloned().unwrap_or_default();
        self.check_signature(&invite_content, &signed).await?;
        let display_name = invite_content.get("display_name").cloned().unwrap_or_default();
        let mut extra = Map::new();
        extra.insert("third_party_invite".into(), json!({"display_name": display_name, "signed": signed}));
        let change = MembershipChange { room_id, sender, target, membership: "invite".into(), reason: None, extra };
        self.federation.invite(change).await?;
        Ok(())
    }

    /// Whether one of the identity server's keys named in the room's `m.room.third_party_invite`
    /// signed `signed`, and the identity server still vouches for that key (its
    /// `key_validity_url`; unreachable counts as revoked).
    async fn check_signature(&self, invite_content: &JsonValue, signed: &JsonValue) -> ServiceResult<()> {
        let mut keys: Vec<(String, Option<String>)> = Vec::new();
        if let Some(key) = invite_content.get("public_key").and_then(JsonValue::as_str) {
            let url = invite_content.get("key_validity_url").and_then(JsonValue::as_str).filter(|u| !u.is_empty());
            keys.push((key.to_owned(), url.map(str::to_owned)));
        }
        for entry in invite_content.get("public_keys").and_then(JsonValue::as_array).into_iter().flatten() {
            if let Some(key) = entry.get("public_key").and_then(JsonValue::as_str) {
                let url = entry.get("key_validity_url").and_then(JsonValue::as_str).map(str::to_owned);
                keys.push((key.to_owned(), url));
            }
        }
        let object: CanonicalJsonObject =
            serde_json::from_value(signed.clone()).map_err(|e| ServiceError::BadJson(format!("signed: {e}")))?;
        let canonical = ruma::signatures::to_canonical_json_string_for_signing(&object)
            .map_err(|e| ServiceError::BadJson(format!("signed: {e}")))?;
        let signatures: Vec<&str> = signed
            .get("signatures")
            .and_then(JsonValue::as_object)
            .into_iter()
            .flat_map(|entities| entities.values())
            .filter_map(JsonValue::as_object)
            .flat_map(|by_key| by_key.iter())
            .filter(|(key_id, _)| key_id.starts_with("ed25519:"))
            .filter_map(|(_, signature)| signature.as_str())
            .collect();
        for (key, url) in &keys {
            let Some(key_bytes) = decode_base64(key) else { continue };
            let signed_by_key = signatures.iter().filter_map(|s| decode_base64(s)).any(|signature| {
                ruma::signatures::verify_canonical_json_bytes(
                    &SigningKeyAlgorithm::Ed25519,
                    &key_bytes,
                    &signature,
                    canonical.as_bytes(),
                )
                .is_ok()
            });
            if !signed_by_key {
                continue;
            }
            match url {
                Some(url) if !self.identity.key_is_valid(url, key).await => {
                    tracing::info!(public_key = %key, "third-party invite signed with a key the identity server no longer vouches for");
                }
                _ => return Ok(()),
            }
        }
        Err(ServiceError::Forbidden(
            "the third-party invite is not signed by a valid key of the identity server".into(),
        ))
    }
}

/// Identity servers write keys and signatures in unpadded standard or URL-safe base64.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD.decode(trimmed).or_else(|_| URL_SAFE_NO_PAD.decode(trimmed)).ok()
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn keys_and_signatures_decode_in_either_base64_alphabet() {
        assert_eq!(decode_base64("+/8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("+/8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("not base64!"), None);
    }
}
