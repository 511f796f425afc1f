//! MLS rooms in the room engine (DESIGN §6). A room whose `m.room.encryption` names an
//! `m.mls.v1.*` algorithm is an MLS group ordered by its creator's server, the hub:
//!
//! - `m.mls.commit` state events carry a commit bundle from the client (commit, GroupInfo of the
//!   new epoch, optional Welcome). The hub checks it fully with the group's public state and
//!   accepts exactly one commit per epoch: the check, the group's new state, the commit record
//!   and the Welcome's delivery job are written in the room's write transaction, under its lock,
//!   together with the event. The event keeps only `algorithm`, `ciphertext` and `epoch`; a
//!   commit too large for an event is uploaded to the media repository and the event carries a
//!   reference to it (`de.poststelle.ciphertext_ref`: `mxc://` URI, SHA-256, size) instead of
//!   the ciphertext. The bytes are fetched and checked before the room's transaction begins.
//! - `m.room.encrypted` events must be MLS PrivateMessages of the group at the current epoch;
//!   other message events (plaintext) are refused.
//! - When a member leaves or is removed, the hub proposes the removal of their devices as the
//!   group's external sender; the next commit must carry it out.

use poststelle_mls::{
    DeviceIdentity, Suite,
    ds::{self, DsError, DsGroup},
    reference::{self, COMMIT_REF_FIELD, MediaRef},
};
use serde_json::{Map, Value as JsonValue, json};
use sha2::{Digest, Sha256};

use super::{RoomCtx, RoomService, SendEvent};

mod groups;
use crate::{
    service::{MlsRefusal, ServiceError, ServiceResult},
    storage::{
        now_ms,
        room_writer::{AcceptedCommitRow, RoomWriter, StoredGroup, WelcomeRow},
    },
};
pub(super) use groups::GroupCache;

/// The event type of accepted commits.
pub const COMMIT_TYPE: &str = "m.mls.commit";
/// Bundle fields a client sends alongside a commit, stripped before the event is built.
pub const GROUP_INFO_FIELD: &str = "de.poststelle.group_info";
pub const WELCOME_FIELD: &str = "de.poststelle.welcome";
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
        let commit = commit_of(&ev.content, None)?;
        let ciphertext = commit.as_ref().map(|c| c.ciphertext);
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
                let event_id = self.append_plain(ctx, ev, commit_content(algorithm, None, 0)).await?;
                let row = AcceptedCommitRow {
                    epoch: 0,
                    event_id: event_id.as_str(),
                    sha256: &sha256,
                    sender: ev.sender.as_str(),
                    state: &group.to_bytes(),
                    group_info,
                };
                let serial = ctx.writer.create_mls_group(algorithm, &row, now).await?;
                self.mls_groups.put(ctx.room_id(), serial, group);
                Ok(event_id)
            }
            (None, Some(stored)) => Err(ServiceError::Mls(MlsRefusal::WrongEpoch { current: stored.epoch as u64 })),
            (Some(_), None) => Err(ServiceError::Mls(MlsRefusal::InvalidCommit(
                "the group has not been started: send the creator's GroupInfo first".into(),
            ))),
            (Some(ciphertext), Some(stored)) => {
                let bundle =
                    CommitBundle { algorithm, ciphertext, group_info, welcome, sender: ev.sender.as_str(), device };
                let (group, accepted) = self.check_commit(&mut ctx.writer, &stored, &bundle).await?;
                let content = commit_content(algorithm, commit.as_ref(), accepted.epoch);
                let event_id = self.append_plain(ctx, ev, content).await?;
                let commit =
                    RecordedCommit { bundle: &bundle, accepted: &accepted, group: &group, event_id: event_id.as_str() };
                let serial = record_commit(&mut ctx.writer, &commit, &sha256, true).await?;
                self.mls_groups.put(ctx.room_id(), serial, group);
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
        let group = self.group_of(w, &stored).await?;
        let devices: Vec<DeviceIdentity> =
            group.members().into_iter().map(|(_, id)| id).filter(|id| departed.contains(&id.user_id)).collect();
        self.propose_device_removals(w, group, stored, &devices).await
    }

    /// Proposes removing `devices` from the room's group and stores the proposals.
    async fn propose_device_removals(
        &self,
        w: &mut RoomWriter,
        mut group: DsGroup,
        stored: StoredGroup,
        devices: &[DeviceIdentity],
    ) -> ServiceResult<()> {
        // A membership change or a device deletion never fails because of the group: a group the
        // server cannot propose into is logged and left for its members to fix (and not kept, as
        // some of the proposals may have been queued in it).
        let proposals = match group.propose_removals(devices, &self.mls_signer) {
            Ok(proposals) => proposals,
            Err(e) => {
                tracing::warn!(room_id = w.room_id(), error = %e, "could not propose MLS removals");
                return Ok(());
            }
        };
        if proposals.is_empty() {
            self.mls_groups.put(w.room_id(), stored.state_serial, group);
            return Ok(());
        }
        tracing::info!(room_id = w.room_id(), proposals = proposals.len(), "proposed MLS removals");
        let mut pending = stored.pending_proposals;
        pending.extend(proposals);
        let serial = w.set_mls_proposals(&group.to_bytes(), &pending, now_ms()).await?;
        self.mls_groups.put(w.room_id(), serial, group);
        Ok(())
    }

    /// The room's group as stored: the one this process keeps, if it is still the stored state,
    /// else read from the database.
    async fn group_of(&self, w: &mut RoomWriter, stored: &StoredGroup) -> ServiceResult<DsGroup> {
        if let Some(group) = self.mls_groups.take(w.room_id(), stored.state_serial) {
            return Ok(group);
        }
        let state = w
            .mls_group_state(stored.state_serial)
            .await?
            .ok_or_else(|| ServiceError::Internal("the group's state changed under the room's lock".into()))?;
        Ok(DsGroup::load(w.room_id(), &state)?)
    }

    /// The Delivery Service's verdict on a commit for the stored group: the group moved to the
    /// commit's epoch (not stored yet), or the refusal, the group then kept unchanged.
    pub(super) async fn check_commit(
        &self,
        w: &mut RoomWriter,
        stored: &StoredGroup,
        b: &CommitBundle<'_>,
    ) -> ServiceResult<(DsGroup, poststelle_mls::ds::AcceptedCommit)> {
        let mut group = self.group_of(w, stored).await?;
        match group.accept_commit(
            &self.mls_signer.external_sender(),
            b.ciphertext,
            b.group_info,
            b.welcome,
            b.sender,
            Some(b.device),
        ) {
            Ok(accepted) => Ok((group, accepted)),
            Err(DsError::State(e)) => Err(ServiceError::Internal(e)),
            Err(refused) => {
                self.mls_groups.put(w.room_id(), stored.state_serial, group);
                Err(match refused {
                    DsError::PendingProposals(_) => {
                        ServiceError::Mls(MlsRefusal::PendingProposals(stored.pending_proposals.clone()))
                    }
                    other => other.into(),
                })
            }
        }
    }

    /// Why the hub does not let a received event into an MLS room it orders, if it does not:
    /// commits are accepted only through its Delivery Service (a commit it did not accept would
    /// fork the group), and message events must be MLS ciphertexts of the group (no plaintext).
    pub(super) async fn mls_refusal_of_received(
        &self,
        w: &mut RoomWriter,
        pdu: &poststelle_federation::Pdu,
        room_algorithm: Option<&str>,
    ) -> ServiceResult<Option<String>> {
        let kind = pdu.kind.to_string();
        if pdu.state_key.is_some() && kind != COMMIT_TYPE {
            return Ok(None);
        }
        let Some(room_algorithm) = room_algorithm else { return Ok(None) };
        let content: Map<String, JsonValue> = serde_json::from_str(pdu.content.get()).unwrap_or_default();
        let refusal = match kind.as_str() {
            COMMIT_TYPE => (!w.mls_commit_event_known(pdu.event_id.as_str()).await?)
                .then(|| "MLS commits of this room are accepted only through its hub".to_owned()),
            "m.room.encrypted" => {
                let ciphertext = content.get("ciphertext").and_then(JsonValue::as_str).unwrap_or_default();
                let algorithm = content.get("algorithm").and_then(JsonValue::as_str);
                if algorithm != Some(room_algorithm) {
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
                let group = self.group_of(&mut ctx.writer, &stored).await?;
                self.propose_device_removals(&mut ctx.writer, group, stored, std::slice::from_ref(&device)).await
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

/// An accepted commit, its group in the new epoch and its event, to record.
pub(super) struct RecordedCommit<'a> {
    pub bundle: &'a CommitBundle<'a>,
    pub accepted: &'a poststelle_mls::ds::AcceptedCommit,
    pub group: &'a DsGroup,
    pub event_id: &'a str,
}

/// Records an accepted commit with its event in the room's write transaction: the group's next
/// state, the commit row (one per epoch), and, when this server delivers it, the Welcome.
/// Returns the serial of the state written.
pub(super) async fn record_commit(
    w: &mut RoomWriter,
    c: &RecordedCommit<'_>,
    sha256: &[u8],
    deliver_welcome: bool,
) -> ServiceResult<i64> {
    let (b, accepted) = (c.bundle, c.accepted);
    let epoch = i64::try_from(accepted.epoch).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let now = now_ms();
    let row = AcceptedCommitRow {
        epoch,
        event_id: c.event_id,
        sha256,
        sender: b.sender,
        state: &c.group.to_bytes(),
        group_info: b.group_info,
    };
    let serial = w.advance_mls_group(&row, now).await?;
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
    Ok(serial)
}

/// The commit an `m.mls.commit` content carries: inline, or by reference with its bytes.
#[derive(Debug)]
pub(crate) struct CommitCiphertext<'a> {
    /// The commit, base64.
    pub ciphertext: &'a str,
    /// Where it was uploaded, when it went by reference.
    pub reference: Option<MediaRef>,
}

/// The reference of a commit content, if it has one.
pub(crate) fn commit_reference(content: &Map<String, JsonValue>) -> ServiceResult<Option<MediaRef>> {
    content
        .get(COMMIT_REF_FIELD)
        .map(|r| serde_json::from_value::<MediaRef>(r.clone()))
        .transpose()
        .map_err(|e| ServiceError::BadJson(format!("{COMMIT_REF_FIELD}: {e}")))
}

/// The commit of a content: its inline `ciphertext` (at most what an event can hold), or its
/// reference together with the bytes fetched for it, base64: `fetched`, or the content's
/// `ciphertext` the sending path put there after fetching. Checked against the reference here,
/// so whatever path the content took, a reference never stands for other bytes.
pub(crate) fn commit_of<'a>(
    content: &'a Map<String, JsonValue>,
    fetched: Option<&'a str>,
) -> ServiceResult<Option<CommitCiphertext<'a>>> {
    let inline = string_field(content, "ciphertext")?;
    let Some(reference) = commit_reference(content)? else {
        if inline.is_some_and(reference::commit_needs_reference) {
            return Err(ServiceError::TooLarge(format!(
                "the commit would make an event over 64 KiB: upload it and send {COMMIT_REF_FIELD}"
            )));
        }
        return Ok(inline.map(|ciphertext| CommitCiphertext { ciphertext, reference: None }));
    };
    let ciphertext = fetched
        .or(inline)
        .ok_or_else(|| ServiceError::Mls(MlsRefusal::BadReference("the referenced commit was not fetched".into())))?;
    let bytes = poststelle_mls::codec::decode(ciphertext)
        .ok_or_else(|| ServiceError::Mls(MlsRefusal::Malformed("the commit is not base64".into())))?;
    reference.check(&bytes).map_err(|e| ServiceError::Mls(MlsRefusal::BadReference(e.to_string())))?;
    Ok(Some(CommitCiphertext { ciphertext, reference: Some(reference) }))
}

/// The content of a commit's event: the algorithm, the epoch the commit starts and the commit
/// itself or its reference (none for the group's start at epoch 0).
fn commit_content(algorithm: &str, commit: Option<&CommitCiphertext<'_>>, epoch: u64) -> Map<String, JsonValue> {
    let mut content = Map::new();
    content.insert("algorithm".into(), algorithm.into());
    match commit {
        Some(CommitCiphertext { reference: Some(reference), .. }) => {
            content.insert(COMMIT_REF_FIELD.into(), json!(reference));
        }
        Some(CommitCiphertext { ciphertext, reference: None }) => {
            content.insert("ciphertext".into(), (*ciphertext).into());
        }
        None => {}
    }
    content.insert("epoch".into(), epoch.into());
    content
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
    /// The commit (base64) fetched for the event's reference, when it has one.
    pub ciphertext: Option<&'a str>,
    pub group_info: &'a str,
    pub welcome: Option<&'a str>,
}

/// A commit of a local user to send to the room's hub on another server: the event, signed by
/// this server but not stored until the hub accepts it.
#[derive(Debug)]
pub struct CommitForHub {
    pub hub: ruma::OwnedServerName,
    pub event_id: ruma::OwnedEventId,
    /// The epoch the commit starts.
    pub epoch: i64,
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
        let commit =
            commit_of(&content, f.ciphertext)?.ok_or_else(|| ServiceError::MissingParam("ciphertext".into()))?;
        let ciphertext = commit.ciphertext;
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
        let (group, accepted) = self.check_commit(w, &stored, &bundle).await?;
        if content.get("epoch").and_then(JsonValue::as_u64) != Some(accepted.epoch) {
            return Err(ServiceError::BadJson("the event's epoch is not the one the commit starts".into()));
        }
        let commit =
            RecordedCommit { bundle: &bundle, accepted: &accepted, group: &group, event_id: pdu.event_id.as_str() };
        let serial = record_commit(w, &commit, &sha256, false).await?;
        self.mls_groups.put(w.room_id(), serial, group);
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
        let commit = commit_of(&ev.content, None)?.ok_or_else(|| ServiceError::MissingParam("ciphertext".into()))?;
        string_field(&ev.content, GROUP_INFO_FIELD)?
            .ok_or_else(|| ServiceError::MissingParam(GROUP_INFO_FIELD.into()))?;
        let epoch = ds::commit_epoch(commit.ciphertext)? + 1;
        let content = commit_content(&algorithm, Some(&commit), epoch);
        let event_id = self.append_plain(&mut ctx, ev, content).await?;
        let text = ctx.last_built().ok_or_else(|| ServiceError::Internal("no event was built".into()))?.to_owned();
        // Dropping the context rolls its transaction back: the event is stored once the hub has
        // accepted it.
        drop(ctx);
        let pdu = serde_json::value::RawValue::from_string(text).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let hub = ruma::OwnedServerName::try_from(hub).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let epoch = i64::try_from(epoch).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(Some(CommitForHub { hub, event_id, epoch, pdu }))
    }
}
