//! MLS rooms in the room engine (DESIGN §6). A room whose `m.room.encryption` names an
//! `m.mls.v1.*` algorithm is an MLS group ordered by its creator's server, the hub:
//!
//! - `m.mls.commit` state events carry a commit bundle from the client (commit, GroupInfo of the
//!   new epoch, optional Welcome). The hub checks it fully with the group's public state and
//!   accepts exactly one commit per epoch: the check, the group's new state, the commit record
//!   and the Welcome's delivery job are written in the room's write transaction, under its lock,
//!   together with the event. The event keeps only `algorithm`, `ciphertext` and `epoch`.
//! - `m.room.encrypted` events must be MLS PrivateMessages of the group at the current epoch;
//!   other message events (plaintext) are refused.
//! - When a member leaves or is removed, the hub proposes the removal of their devices as the
//!   group's external sender; the next commit must carry it out.

use poststelle_mls::{
    DeviceIdentity, Suite,
    ds::{self, DsError, DsGroup},
};
use serde_json::{Map, Value as JsonValue, json};
use sha2::{Digest, Sha256};

use super::{RoomCtx, RoomService, SendEvent};
use crate::{
    service::{MlsRefusal, ServiceError, ServiceResult},
    storage::{
        now_ms,
        room_writer::{AcceptedCommitRow, RoomWriter, StoredGroup, WelcomeRow},
    },
};

/// The event type of accepted commits.
pub const COMMIT_TYPE: &str = "m.mls.commit";
/// Bundle fields a client sends alongside a commit, stripped before the event is built.
pub const GROUP_INFO_FIELD: &str = "de.poststelle.group_info";
pub const WELCOME_FIELD: &str = "de.poststelle.welcome";
/// The spec's limit on a PDU, and what an event needs besides the commit (ids, hashes,
/// signatures, auth and prev events): checked before any MLS work, so an oversized commit is
/// refused with 413 and nothing else happens.
const MAX_EVENT_BYTES: usize = 65_536;
const EVENT_OVERHEAD: usize = 2_048;
/// The to-device type that carries a Welcome to the devices a commit added.
pub const WELCOME_TYPE: &str = "de.poststelle.mls.welcome";

/// The MLS algorithm of a room's current `m.room.encryption`, if it is an MLS room.
pub(super) async fn room_algorithm(ctx: &mut RoomCtx) -> ServiceResult<Option<String>> {
    let content = ctx.state_content("m.room.encryption", "").await?;
    Ok(content
        .as_ref()
        .and_then(|c| c.get("algorithm"))
        .and_then(JsonValue::as_str)
        .filter(|a| Suite::is_mls_algorithm(a))
        .map(str::to_owned))
}

/// A `m.room.encryption` content naming an MLS algorithm must name a supported suite.
pub(super) fn check_encryption_content(content: &Map<String, JsonValue>) -> ServiceResult<()> {
    match content.get("algorithm").and_then(JsonValue::as_str) {
        Some(a) if Suite::is_mls_algorithm(a) && Suite::from_algorithm(a).is_none() => {
            Err(ServiceError::InvalidParam(format!("unsupported MLS ciphersuite {a}")))
        }
        _ => Ok(()),
    }
}

fn string_field<'a>(content: &'a Map<String, JsonValue>, field: &str) -> ServiceResult<Option<&'a str>> {
    match content.get(field) {
        None => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(s)),
        Some(_) => Err(ServiceError::BadJson(format!("{field} must be a string"))),
    }
}

impl From<DsError> for ServiceError {
    fn from(e: DsError) -> Self {
        let message = e.to_string();
        ServiceError::Mls(match e {
            DsError::WrongEpoch { current, .. } => MlsRefusal::WrongEpoch { current },
            DsError::PendingProposals(_) => MlsRefusal::PendingProposals(Vec::new()),
            DsError::Malformed(_) => MlsRefusal::Malformed(message),
            DsError::GroupMismatch => MlsRefusal::GroupMismatch(message),
            DsError::Unsupported(_) => MlsRefusal::Unsupported(message),
            DsError::InvalidCommit(_) | DsError::SenderMismatch => MlsRefusal::InvalidCommit(message),
            DsError::InvalidGroupInfo(_) => MlsRefusal::InvalidGroupInfo(message),
            DsError::InvalidWelcome(_) => MlsRefusal::InvalidWelcome(message),
            DsError::State(_) => return ServiceError::Internal(message),
        })
    }
}

impl RoomService {
    /// Whether this server orders the room's commits: the creator's server is the hub.
    async fn is_hub(&self, ctx: &mut RoomCtx) -> ServiceResult<bool> {
        let creator = ctx.creator().await?;
        Ok(creator
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .is_some_and(|(_, server)| server == self.server_name.as_str()))
    }

    /// The MLS rules for a client event in an MLS room, before it is built. Returns the event
    /// id when the event was handled here (commits), `None` when it goes on as usual.
    pub(super) async fn mls_send(
        &self,
        ctx: &mut RoomCtx,
        ev: &SendEvent,
        algorithm: &str,
    ) -> ServiceResult<Option<ruma::OwnedEventId>> {
        match (ev.kind.as_str(), ev.state_key.as_deref()) {
            (COMMIT_TYPE, Some("")) => self.append_commit(ctx, ev, algorithm).await.map(Some),
            (COMMIT_TYPE, _) => Err(ServiceError::BadJson("m.mls.commit has an empty state key".into())),
            ("m.room.encryption", Some(_)) => {
                if string_field(&ev.content, "algorithm")? != Some(algorithm) {
                    return Err(ServiceError::Forbidden("an MLS room's algorithm cannot change".into()));
                }
                Ok(None)
            }
            ("m.room.encrypted", None) => {
                if string_field(&ev.content, "algorithm")? != Some(algorithm) {
                    return Err(ServiceError::Mls(MlsRefusal::Unsupported(format!(
                        "messages in this room use {algorithm}"
                    ))));
                }
                let ciphertext = string_field(&ev.content, "ciphertext")?
                    .ok_or_else(|| ServiceError::MissingParam("ciphertext".into()))?;
                let epoch = current_epoch(ctx).await?;
                ds::check_application_message(ctx.room_id(), epoch, ciphertext)?;
                Ok(None)
            }
            (_, Some(_)) | ("m.room.redaction", None) => Ok(None),
            (kind, None) => Err(ServiceError::Forbidden(format!(
                "{kind} would be plaintext: only m.room.encrypted is sent in MLS rooms"
            ))),
        }
    }

    /// A commit bundle (or the creator's initial GroupInfo) checked by the hub and appended.
    async fn append_commit(
        &self,
        ctx: &mut RoomCtx,
        ev: &SendEvent,
        algorithm: &str,
    ) -> ServiceResult<ruma::OwnedEventId> {
        if !self.is_hub(ctx).await? {
            return Err(ServiceError::Forbidden(
                "commits of this room are ordered by the server that created it".into(),
            ));
        }
        if string_field(&ev.content, "algorithm")? != Some(algorithm) {
            return Err(ServiceError::InvalidParam(format!("commits in this room use {algorithm}")));
        }
        let device = ev
            .sender_device
            .as_deref()
            .ok_or_else(|| ServiceError::Forbidden("commits are sent by a device".into()))?;
        let submitter = DeviceIdentity::new(ev.sender.as_str(), device);
        let group_info = string_field(&ev.content, GROUP_INFO_FIELD)?
            .ok_or_else(|| ServiceError::MissingParam(GROUP_INFO_FIELD.into()))?;
        let ciphertext = string_field(&ev.content, "ciphertext")?;
        if ciphertext.is_some_and(|c| c.len() + EVENT_OVERHEAD > MAX_EVENT_BYTES) {
            return Err(ServiceError::TooLarge("the commit would make an event over 64 KiB".into()));
        }
        let welcome = string_field(&ev.content, WELCOME_FIELD)?;
        let hashed = ciphertext.unwrap_or(group_info);
        let sha256 = Sha256::digest(hashed.as_bytes()).to_vec();
        if let Some((_, event_id)) = ctx.writer.mls_commit_by_hash(&sha256).await? {
            return ruma::OwnedEventId::try_from(event_id).map_err(|e| ServiceError::Internal(e.to_string()));
        }
        let stored = ctx.writer.mls_group().await?;
        let now = now_ms();
        match (ciphertext, stored) {
            (None, None) => {
                if ctx.creator().await?.as_deref() != Some(ev.sender.as_str()) {
                    return Err(ServiceError::Forbidden("only the room's creator starts its group".into()));
                }
                let group = DsGroup::create(ctx.room_id(), group_info, &submitter, &self.mls_signer)?;
                let mut content = Map::new();
                content.insert("algorithm".into(), algorithm.into());
                content.insert("epoch".into(), 0.into());
                let event_id = self.append_plain(ctx, ev, content).await?;
                let row = AcceptedCommitRow {
                    epoch: 0,
                    event_id: event_id.as_str(),
                    sha256: &sha256,
                    sender: ev.sender.as_str(),
                    state: &group.to_bytes(),
                    group_info,
                };
                ctx.writer.create_mls_group(algorithm, &row, now).await?;
                Ok(event_id)
            }
            (None, Some(stored)) => Err(ServiceError::Mls(MlsRefusal::WrongEpoch { current: stored.epoch as u64 })),
            (Some(_), None) => Err(ServiceError::Mls(MlsRefusal::InvalidCommit(
                "the group has not been started: send the creator's GroupInfo first".into(),
            ))),
            (Some(ciphertext), Some(stored)) => {
                let bundle =
                    CommitBundle { algorithm, ciphertext, group_info, welcome, sender: ev.sender.as_str(), device };
                let accepted = check_commit(ctx.room_id(), &stored, &bundle, &self.mls_signer)?;
                let mut content = Map::new();
                content.insert("algorithm".into(), algorithm.into());
                content.insert("ciphertext".into(), ciphertext.into());
                content.insert("epoch".into(), accepted.epoch.into());
                let event_id = self.append_plain(ctx, ev, content).await?;
                record_commit(&mut ctx.writer, &bundle, &accepted, event_id.as_str(), &sha256, true).await?;
                Ok(event_id)
            }
        }
    }

    /// Appends the event with the given content in place of the client's.
    async fn append_plain(
        &self,
        ctx: &mut RoomCtx,
        ev: &SendEvent,
        content: Map<String, JsonValue>,
    ) -> ServiceResult<ruma::OwnedEventId> {
        let proto = poststelle_federation::ProtoEvent {
            room_id: Some(ev.room_id.clone()),
            sender: ev.sender.clone(),
            kind: ev.kind.clone(),
            state_key: ev.state_key.clone(),
            content,
            redacts: None,
        };
        Ok(ctx.append(self, proto, ev.txn.clone()).await?.event_id)
    }

    /// After members left or were removed in a transaction: the hub proposes removing every
    /// device of theirs still in the room's group, in the same transaction.
    pub(super) async fn propose_mls_removals(&self, w: &mut RoomWriter, departed: &[String]) -> ServiceResult<()> {
        if departed.is_empty() {
            return Ok(());
        }
        let Some(stored) = w.mls_group().await? else { return Ok(()) };
        let mut group = DsGroup::load(w.room_id(), &stored.state)?;
        let devices: Vec<DeviceIdentity> =
            group.members().into_iter().map(|(_, id)| id).filter(|id| departed.contains(&id.user_id)).collect();
        self.propose_device_removals(w, &mut group, stored.pending_proposals, &devices).await
    }

    /// Proposes removing `devices` from the room's group and stores the proposals.
    async fn propose_device_removals(
        &self,
        w: &mut RoomWriter,
        group: &mut DsGroup,
        mut pending: Vec<String>,
        devices: &[DeviceIdentity],
    ) -> ServiceResult<()> {
        // A membership change or a device deletion never fails because of the group: a group the
        // server cannot propose into is logged and left for its members to fix.
        let proposals = match group.propose_removals(devices, &self.mls_signer) {
            Ok(proposals) => proposals,
            Err(e) => {
                tracing::warn!(room_id = w.room_id(), error = %e, "could not propose MLS removals");
                return Ok(());
            }
        };
        if proposals.is_empty() {
            return Ok(());
        }
        tracing::info!(room_id = w.room_id(), proposals = proposals.len(), "proposed MLS removals");
        pending.extend(proposals);
        w.set_mls_proposals(&group.to_bytes(), &pending, now_ms()).await?;
        Ok(())
    }

    /// Why the hub does not let a received event into an MLS room it orders, if it does not:
    /// commits are accepted only through its Delivery Service (a commit it did not accept would
    /// fork the group), and message events must be MLS ciphertexts of the group (no plaintext).
    pub(super) async fn mls_refusal_of_received(
        &self,
        w: &mut RoomWriter,
        pdu: &poststelle_federation::Pdu,
    ) -> ServiceResult<Option<String>> {
        let kind = pdu.kind.to_string();
        if pdu.state_key.is_some() && kind != COMMIT_TYPE {
            return Ok(None);
        }
        let Some(room_algorithm) = w.mls_algorithm().await? else { return Ok(None) };
        let content: Map<String, JsonValue> = serde_json::from_str(pdu.content.get()).unwrap_or_default();
        let refusal = match kind.as_str() {
            COMMIT_TYPE => (!w.mls_commit_event_known(pdu.event_id.as_str()).await?)
                .then(|| "MLS commits of this room are accepted only through its hub".to_owned()),
            "m.room.encrypted" => {
                let ciphertext = content.get("ciphertext").and_then(JsonValue::as_str).unwrap_or_default();
                let algorithm = content.get("algorithm").and_then(JsonValue::as_str);
                if algorithm != Some(room_algorithm.as_str()) {
                    Some(format!("messages in this room use {room_algorithm}"))
                } else {
                    // Any epoch: a message may have been written just before the last commit.
                    ds::check_application_message(w.room_id(), u64::MAX, ciphertext)
                        .err()
                        .filter(|e| !matches!(e, DsError::WrongEpoch { .. }))
                        .map(|e| e.to_string())
                }
            }
            "m.room.redaction" => None,
            other => Some(format!("{other} would be plaintext in an MLS room")),
        };
        Ok(refusal)
    }

    /// Removes a deleted device from every group this server orders that holds it.
    pub async fn mls_device_deleted(&self, user_id: &str, device_id: &str) -> ServiceResult<()> {
        let device = DeviceIdentity::new(user_id, device_id);
        for room_id in self.storage.mls.hub_rooms_of(user_id).await? {
            self.write(&room_id, async |ctx| {
                let Some(stored) = ctx.writer.mls_group().await? else { return Ok(()) };
                let mut group = DsGroup::load(ctx.room_id(), &stored.state)?;
                let pending = stored.pending_proposals;
                self.propose_device_removals(&mut ctx.writer, &mut group, pending, std::slice::from_ref(&device)).await
            })
            .await?;
        }
        Ok(())
    }
}

/// A commit as its sender's device submitted it.
pub(super) struct CommitBundle<'a> {
    pub algorithm: &'a str,
    pub ciphertext: &'a str,
    pub group_info: &'a str,
    pub welcome: Option<&'a str>,
    pub sender: &'a str,
    pub device: &'a str,
}

/// The Delivery Service's verdict on a commit for the stored group (no writes).
pub(super) fn check_commit(
    room_id: &str,
    stored: &StoredGroup,
    b: &CommitBundle<'_>,
    server: &poststelle_mls::ds::ServerSigner,
) -> ServiceResult<poststelle_mls::ds::AcceptedCommit> {
    let group = DsGroup::load(room_id, &stored.state)?;
    let accepted =
        group.accept_commit(b.ciphertext, b.group_info, b.welcome, b.sender, Some(b.device)).map_err(|e| match e {
            DsError::PendingProposals(_) => {
                ServiceError::Mls(MlsRefusal::PendingProposals(stored.pending_proposals.clone()))
            }
            other => other.into(),
        })?;
    if !accepted.group.lists_external_sender(server) {
        return Err(ServiceError::Mls(MlsRefusal::InvalidCommit(
            "the commit removes the server from the group's external senders".into(),
        )));
    }
    Ok(accepted)
}

/// Records an accepted commit with its event in the room's write transaction: the group's next
/// state, the commit row (one per epoch), and, when this server delivers it, the Welcome.
pub(super) async fn record_commit(
    w: &mut RoomWriter,
    b: &CommitBundle<'_>,
    accepted: &poststelle_mls::ds::AcceptedCommit,
    event_id: &str,
    sha256: &[u8],
    deliver_welcome: bool,
) -> ServiceResult<()> {
    let epoch = i64::try_from(accepted.epoch).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let now = now_ms();
    let row = AcceptedCommitRow {
        epoch,
        event_id,
        sha256,
        sender: b.sender,
        state: &accepted.group.to_bytes(),
        group_info: b.group_info,
    };
    w.advance_mls_group(&row, now).await?;
    if let (Some(welcome), false, true) = (b.welcome, accepted.welcome_recipients.is_empty(), deliver_welcome) {
        let content = json!({"room_id": w.room_id(), "algorithm": b.algorithm, "welcome": welcome});
        let row = WelcomeRow {
            epoch,
            sender: b.sender,
            sender_device: b.device,
            recipients: &welcome_recipients_json(&accepted.welcome_recipients),
            content: &content,
        };
        w.queue_mls_welcome(&row, now).await?;
    }
    tracing::info!(
        room_id = w.room_id(),
        epoch,
        added = accepted.added.len(),
        removed = accepted.removed.len(),
        "MLS commit accepted"
    );
    Ok(())
}

/// `[[user, device], …]`, as the outbox and the forwarding answer list a Welcome's recipients.
pub(super) fn welcome_recipients_json(recipients: &[DeviceIdentity]) -> JsonValue {
    JsonValue::Array(recipients.iter().map(|d| json!([d.user_id, d.device_id])).collect())
}

/// The epoch of the room's current `m.mls.commit` (0 before the first commit).
async fn current_epoch(ctx: &mut RoomCtx) -> ServiceResult<u64> {
    Ok(ctx.state_content(COMMIT_TYPE, "").await?.and_then(|c| c.get("epoch").and_then(JsonValue::as_u64)).unwrap_or(0))
}

/// A commit of another server's user, forwarded to this hub with what the event leaves out.
#[derive(Debug)]
pub struct ForwardedCommit<'a> {
    /// The device that made the commit (its server authenticated it).
    pub device: &'a str,
    pub group_info: &'a str,
    pub welcome: Option<&'a str>,
}

/// A commit of a local user to send to the room's hub on another server: the event, signed by
/// this server but not stored until the hub accepts it.
#[derive(Debug)]
pub struct CommitForHub {
    pub hub: ruma::OwnedServerName,
    pub event_id: ruma::OwnedEventId,
    pub pdu: Box<serde_json::value::RawValue>,
}

impl RoomService {
    /// The hub's check of a commit another server forwards, inside the transaction that stores
    /// its event; returns the devices its Welcome is for (the forwarding server delivers it).
    pub(super) async fn accept_forwarded_in(
        &self,
        w: &mut RoomWriter,
        pdu: &poststelle_federation::Pdu,
        f: &ForwardedCommit<'_>,
    ) -> ServiceResult<Vec<DeviceIdentity>> {
        if pdu.kind.to_string() != COMMIT_TYPE || pdu.state_key.as_deref() != Some("") {
            return Err(ServiceError::BadJson("not an m.mls.commit event".into()));
        }
        let content: Map<String, JsonValue> =
            serde_json::from_str(pdu.content.get()).map_err(|e| ServiceError::BadJson(e.to_string()))?;
        let stored = w
            .mls_group()
            .await?
            .ok_or_else(|| ServiceError::Forbidden("this server orders no MLS group for the room".into()))?;
        let algorithm = string_field(&content, "algorithm")?.unwrap_or_default();
        if algorithm != stored.algorithm {
            return Err(ServiceError::InvalidParam(format!("commits in this room use {}", stored.algorithm)));
        }
        let ciphertext =
            string_field(&content, "ciphertext")?.ok_or_else(|| ServiceError::MissingParam("ciphertext".into()))?;
        let sha256 = Sha256::digest(ciphertext.as_bytes()).to_vec();
        if w.mls_commit_by_hash(&sha256).await?.is_some() {
            return Err(ServiceError::Mls(MlsRefusal::WrongEpoch { current: stored.epoch as u64 }));
        }
        let bundle = CommitBundle {
            algorithm,
            ciphertext,
            group_info: f.group_info,
            welcome: f.welcome,
            sender: pdu.sender.as_str(),
            device: f.device,
        };
        let accepted = check_commit(w.room_id(), &stored, &bundle, &self.mls_signer)?;
        if content.get("epoch").and_then(JsonValue::as_u64) != Some(accepted.epoch) {
            return Err(ServiceError::BadJson("the event's epoch is not the one the commit starts".into()));
        }
        record_commit(w, &bundle, &accepted, pdu.event_id.as_str(), &sha256, false).await?;
        Ok(accepted.welcome_recipients)
    }

    /// Accepts a forwarded commit's event as a received PDU with the Delivery Service's checks
    /// in the same transaction: stored and recorded together, or neither.
    pub async fn accept_forwarded_commit(
        &self,
        room_id: &str,
        event: &super::Received,
        state_before: super::StateBefore,
        commit: &ForwardedCommit<'_>,
    ) -> ServiceResult<Vec<DeviceIdentity>> {
        match self.accept_remote_with(room_id, event, state_before, Some(commit)).await? {
            (super::Accepted::Stored, recipients) => Ok(recipients),
            (super::Accepted::AlreadyKnown, _) => {
                Err(ServiceError::Mls(MlsRefusal::InvalidCommit("this commit event is known already".into())))
            }
            (super::Accepted::Rejected(reason), _) => Err(ServiceError::Forbidden(reason)),
            (super::Accepted::SoftFailed, _) => {
                Err(ServiceError::Forbidden("the commit is not allowed by the room's current state".into()))
            }
        }
    }

    /// For a commit in an MLS room whose hub is another server: checks what this server can
    /// (membership, algorithm, size), builds and signs the event, and returns it without storing
    /// it. `None` when this server is the hub (the commit goes through [`RoomService::send`]).
    pub async fn commit_for_hub(&self, ev: &SendEvent) -> ServiceResult<Option<CommitForHub>> {
        let room_id = ev.room_id.to_string();
        let _guard = self.stripe(&room_id).lock().await;
        let mut ctx = RoomCtx::open(self, &room_id).await?;
        let creator = ctx.creator().await?.unwrap_or_default();
        let hub = creator.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
        if hub == self.server_name.as_str() {
            return Ok(None);
        }
        let algorithm =
            room_algorithm(&mut ctx).await?.ok_or_else(|| ServiceError::Forbidden("not an MLS room".into()))?;
        super::require_joined(&mut ctx, ev.sender.as_str()).await?;
        if string_field(&ev.content, "algorithm")? != Some(algorithm.as_str()) {
            return Err(ServiceError::InvalidParam(format!("commits in this room use {algorithm}")));
        }
        let ciphertext =
            string_field(&ev.content, "ciphertext")?.ok_or_else(|| ServiceError::MissingParam("ciphertext".into()))?;
        if ciphertext.len() + EVENT_OVERHEAD > MAX_EVENT_BYTES {
            return Err(ServiceError::TooLarge("the commit would make an event over 64 KiB".into()));
        }
        string_field(&ev.content, GROUP_INFO_FIELD)?
            .ok_or_else(|| ServiceError::MissingParam(GROUP_INFO_FIELD.into()))?;
        let epoch = ds::commit_epoch(ciphertext)? + 1;
        let mut content = Map::new();
        content.insert("algorithm".into(), algorithm.into());
        content.insert("ciphertext".into(), ciphertext.into());
        content.insert("epoch".into(), epoch.into());
        let event_id = self.append_plain(&mut ctx, ev, content).await?;
        let text = ctx.last_built().ok_or_else(|| ServiceError::Internal("no event was built".into()))?.to_owned();
        // Dropping the context rolls its transaction back: the event is stored once the hub has
        // accepted it.
        drop(ctx);
        let pdu = serde_json::value::RawValue::from_string(text).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let hub = ruma::OwnedServerName::try_from(hub).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(Some(CommitForHub { hub, event_id, pdu }))
    }
}
