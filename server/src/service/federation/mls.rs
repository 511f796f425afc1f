//! MLS commits across servers (DESIGN §6): a local user's commit in a room whose hub is another
//! server is forwarded there and stored here only once the hub accepted it; the hub's side of
//! the same request accepts or refuses it exactly as it answers its own users.

use poststelle_mls::reference::COMMIT_REF_FIELD;
use ruma::{OwnedEventId, ServerName};

use super::{FederationService, received};
use crate::{
    api::federation::mls::endpoints::forward_commit,
    service::{
        MlsRefusal, ServiceError, ServiceResult,
        ephemeral::DeviceTarget,
        rooms::{
            SendEvent, StateBefore,
            mls::{ForwardedCommit, GROUP_INFO_FIELD, WELCOME_FIELD, WELCOME_TYPE, commit_reference},
        },
    },
};

fn field<'a>(ev: &'a SendEvent, name: &str) -> Option<&'a str> {
    ev.content.get(name).and_then(serde_json::Value::as_str)
}

impl FederationService {
    /// A local user's commit: ordered here when this server is the room's hub, else forwarded to
    /// the hub; the hub's answer (409 for a lost epoch and the rest) is the client's answer.
    pub async fn send_mls_commit(&self, mut ev: SendEvent) -> ServiceResult<OwnedEventId> {
        // A commit sent by reference is fetched before the room's transaction begins; the room
        // engine checks it against the reference again.
        if let Some(reference) = commit_reference(&ev.content)? {
            if ev.content.contains_key("ciphertext") {
                return Err(ServiceError::BadJson(format!(
                    "a commit is sent as ciphertext or as {COMMIT_REF_FIELD}, not both"
                )));
            }
            let ciphertext = self.mls.fetch_commit(&reference).await?;
            ev.content.insert("ciphertext".into(), ciphertext.into());
        }
        let Some(forward) = self.rooms.commit_for_hub(&ev).await? else {
            return self.rooms.send(ev).await;
        };
        let device =
            ev.sender_device.clone().ok_or_else(|| ServiceError::Forbidden("commits are sent by a device".into()))?;
        let group_info =
            field(&ev, GROUP_INFO_FIELD).ok_or_else(|| ServiceError::MissingParam(GROUP_INFO_FIELD.into()))?.to_owned();
        let welcome = field(&ev, WELCOME_FIELD).map(str::to_owned);
        let request = forward_commit::Request {
            room_id: ev.room_id.clone(),
            pdu: forward.pdu.clone(),
            device_id: device.clone(),
            group_info,
            welcome: welcome.clone(),
        };
        let answer = self.call(&forward.hub, request).await?;
        if let Some(refused) = answer.refused {
            return Err(ServiceError::Mls(refusal_of(refused)));
        }
        let accepted = answer.accepted.ok_or_else(|| ServiceError::Upstream("the hub answered nothing".into()))?;
        if accepted.event_id != forward.event_id {
            return Err(ServiceError::Upstream("the hub accepted another event".into()));
        }
        // Stored here now, as this server's own event: it goes to the room's other servers from
        // here like any local event.
        let Some((_, rules)) = self.rooms.room_rules(ev.room_id.as_str()).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        let verified = self
            .verify_pdu(&forward.pdu, &rules, &ev.room_id)
            .await
            .map_err(|e| ServiceError::Internal(format!("our own commit event: {e}")))?;
        self.rooms.accept_remote(ev.room_id.as_str(), &received(verified, None), StateBefore::Prevs).await?;
        if let (Some(welcome), false) = (welcome, accepted.welcome_recipients.is_empty()) {
            // Too large for a to-device message, it goes through the media repository as the
            // hub's Welcomes do.
            let algorithm = field(&ev, "algorithm").unwrap_or_default();
            let epoch = forward.epoch;
            let content =
                self.mls.welcome_content(ev.room_id.as_str(), algorithm, &welcome, ev.sender.as_str(), epoch).await?;
            let messages = accepted
                .welcome_recipients
                .into_iter()
                .map(|(user, device)| (user, DeviceTarget::Device(device), content.clone()))
                .collect();
            let txn = format!("mls-welcome {}", forward.event_id);
            self.ephemeral.send_to_device(ev.sender.as_str(), &device, &txn, WELCOME_TYPE, messages).await?;
        }
        tracing::info!(room_id = %ev.room_id, hub = %forward.hub, event_id = %forward.event_id, "MLS commit accepted by the hub");
        Ok(forward.event_id)
    }

    /// The hub's side: another server's user's commit, verified as a PDU of that server and
    /// accepted or refused by the Delivery Service.
    pub async fn receive_forwarded_commit(
        &self,
        origin: &ServerName,
        req: forward_commit::Request,
    ) -> ServiceResult<forward_commit::Response> {
        let room = &req.room_id;
        let Some((_, rules)) = self.rooms.room_rules(room.as_str()).await? else {
            return Err(ServiceError::NotFound("unknown room".into()));
        };
        self.check_acl(origin, room.as_str()).await?;
        let verified =
            self.verify_pdu(&req.pdu, &rules, room).await.map_err(|e| ServiceError::BadJson(e.to_string()))?;
        self.check_member_origin(origin, &verified.pdu.sender)?;
        let event_id = verified.pdu.event_id.clone();
        let event = received(verified, Some(origin));
        self.ensure_auth_events(origin, room, &rules, &event).await?;
        let state_before = self.fill_gap(origin, room, &rules, &event).await?;
        let content: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(event.pdu.content.get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
        let fetched = match commit_reference(&content) {
            Ok(Some(reference)) => match self.mls.fetch_commit(&reference).await {
                Ok(ciphertext) => Some(ciphertext),
                Err(ServiceError::Mls(refusal)) => return Ok(refused(refusal)),
                Err(other) => return Err(other),
            },
            Ok(None) => None,
            Err(other) => return Err(other),
        };
        let commit = ForwardedCommit {
            device: &req.device_id,
            ciphertext: fetched.as_deref(),
            group_info: &req.group_info,
            welcome: req.welcome.as_deref(),
        };
        let state_before = state_before.map_or(StateBefore::Prevs, StateBefore::Reported);
        match self.rooms.accept_forwarded_commit(room.as_str(), &event, state_before, &commit).await {
            Ok(recipients) => Ok(forward_commit::Response {
                accepted: Some(forward_commit::Accepted {
                    event_id,
                    welcome_recipients: recipients.into_iter().map(|d| (d.user_id, d.device_id)).collect(),
                }),
                refused: None,
            }),
            Err(ServiceError::Mls(refusal)) => Ok(refused(refusal)),
            Err(other) => Err(other),
        }
    }
}

fn refused(refusal: MlsRefusal) -> forward_commit::Response {
    forward_commit::Response { accepted: None, refused: Some(refused_of(refusal)) }
}

/// The hub's refusal as data for the forwarding server.
fn refused_of(refusal: MlsRefusal) -> forward_commit::Refused {
    let error = refusal.to_string();
    let (errcode, current_epoch, proposals) = match refusal {
        MlsRefusal::WrongEpoch { current } => ("DE.POSTSTELLE.MLS_WRONG_EPOCH", Some(current), None),
        MlsRefusal::PendingProposals(p) => ("DE.POSTSTELLE.MLS_PENDING_PROPOSALS", None, Some(p)),
        MlsRefusal::Malformed(_) => ("DE.POSTSTELLE.MLS_MALFORMED", None, None),
        MlsRefusal::GroupMismatch(_) => ("DE.POSTSTELLE.MLS_GROUP_MISMATCH", None, None),
        MlsRefusal::Unsupported(_) => ("DE.POSTSTELLE.MLS_UNSUPPORTED_MESSAGE", None, None),
        MlsRefusal::InvalidCommit(_) => ("DE.POSTSTELLE.MLS_INVALID_COMMIT", None, None),
        MlsRefusal::InvalidGroupInfo(_) => ("DE.POSTSTELLE.MLS_INVALID_GROUP_INFO", None, None),
        MlsRefusal::InvalidWelcome(_) => ("DE.POSTSTELLE.MLS_INVALID_WELCOME", None, None),
        MlsRefusal::BadReference(_) => ("DE.POSTSTELLE.MLS_BAD_REFERENCE", None, None),
    };
    forward_commit::Refused { errcode: errcode.to_owned(), error, current_epoch, proposals }
}

/// The hub's refusal as this server's answer to its user.
fn refusal_of(refused: forward_commit::Refused) -> MlsRefusal {
    match refused.errcode.as_str() {
        "DE.POSTSTELLE.MLS_WRONG_EPOCH" => {
            MlsRefusal::WrongEpoch { current: refused.current_epoch.unwrap_or_default() }
        }
        "DE.POSTSTELLE.MLS_PENDING_PROPOSALS" => MlsRefusal::PendingProposals(refused.proposals.unwrap_or_default()),
        "DE.POSTSTELLE.MLS_MALFORMED" => MlsRefusal::Malformed(refused.error),
        "DE.POSTSTELLE.MLS_GROUP_MISMATCH" => MlsRefusal::GroupMismatch(refused.error),
        "DE.POSTSTELLE.MLS_UNSUPPORTED_MESSAGE" => MlsRefusal::Unsupported(refused.error),
        "DE.POSTSTELLE.MLS_INVALID_GROUP_INFO" => MlsRefusal::InvalidGroupInfo(refused.error),
        "DE.POSTSTELLE.MLS_INVALID_WELCOME" => MlsRefusal::InvalidWelcome(refused.error),
        "DE.POSTSTELLE.MLS_BAD_REFERENCE" => MlsRefusal::BadReference(refused.error),
        _ => MlsRefusal::InvalidCommit(refused.error),
    }
}
