//! The Delivery Service's view of a room's group: the hub tracks the public state of every MLS
//! room it orders with openmls' `PublicGroup` (no group secrets) and checks each commit fully
//! (signature, proposals, tree) before it is accepted, each application message's group and epoch,
//! and each Welcome's recipients.
//!
//! Everything here is pure: the state goes in and out as bytes ([`DsGroup::to_bytes`],
//! [`DsGroup::load`]; a compact encoding, see `state`) so the server stores it in the same
//! PostgreSQL transaction that accepts the commit, and may keep the group in memory between
//! commits. A refused commit leaves the group as it was; an accepted one moves it to the next
//! epoch in place, without copying the state.

use openmls::prelude::{
    BasicCredential, Ciphersuite, ContentType, Credential, ExternalProposal, ExternalSender, GroupContext, GroupEpoch,
    GroupId, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, OpenMlsSignaturePublicKey, ProcessedMessageContent,
    ProposalStore, ProtocolMessage, PublicGroup, SenderExtensionIndex, SignaturePublicKey, Verifiable, WireFormat,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{OpenMlsRustCrypto, RustCrypto};
use tls_codec::{Deserialize as _, Serialize as _};

use crate::{DeviceIdentity, Suite, codec};

mod state;
use state::GroupStorage;

/// Why the Delivery Service refused something. Each maps to one Matrix error in the server.
#[derive(Debug, thiserror::Error)]
pub enum DsError {
    #[error("not a well-formed MLS message: {0}")]
    Malformed(String),
    #[error("the MLS message is for another group")]
    GroupMismatch,
    #[error("unsupported MLS message here: {0}")]
    Unsupported(&'static str),
    #[error("the message is for epoch {got}, the group is at epoch {current}")]
    WrongEpoch { current: u64, got: u64 },
    #[error("the commit is not valid: {0}")]
    InvalidCommit(String),
    #[error("the commit's sender is not the device that submitted it")]
    SenderMismatch,
    /// The server's queued removals are kept by the caller, which hands them to the client.
    #[error("the commit leaves out {0} pending removal proposal(s) of the server")]
    PendingProposals(usize),
    #[error("the GroupInfo is not valid: {0}")]
    InvalidGroupInfo(String),
    #[error("the Welcome is not valid: {0}")]
    InvalidWelcome(String),
    #[error("stored group state is unreadable: {0}")]
    State(String),
}

pub type DsResult<T> = Result<T, DsError>;

/// The server's own signing key as an MLS external sender (RFC 9420 §12.1.8.1): it signs Remove
/// proposals for devices that were deleted and users who left, so the next commit takes them out.
pub struct ServerSigner {
    keys: SignatureKeyPair,
    server_name: String,
}

impl ServerSigner {
    /// A new Ed25519 key (every suite Poststelle supports signs with Ed25519).
    pub fn generate(server_name: &str) -> DsResult<Self> {
        let keys = SignatureKeyPair::new(openmls::prelude::SignatureScheme::ED25519)
            .map_err(|e| DsError::State(format!("cannot generate a signing key: {e:?}")))?;
        Ok(ServerSigner { keys, server_name: server_name.to_owned() })
    }

    /// Reads a key written by [`ServerSigner::to_bytes`].
    pub fn from_bytes(server_name: &str, bytes: &[u8]) -> DsResult<Self> {
        let keys = SignatureKeyPair::tls_deserialize_exact(bytes).map_err(|e| DsError::State(e.to_string()))?;
        Ok(ServerSigner { keys, server_name: server_name.to_owned() })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.keys.tls_serialize_detached().unwrap_or_default()
    }

    /// The credential the server signs with: a BasicCredential holding its server name.
    pub fn credential(&self) -> Credential {
        BasicCredential::new(self.server_name.as_bytes().to_vec()).into()
    }

    /// The public key, raw bytes.
    pub fn public_key(&self) -> &[u8] {
        self.keys.public()
    }

    /// What a group creator lists in the ExternalSenders extension.
    pub fn external_sender(&self) -> ExternalSender {
        ExternalSender::new(SignaturePublicKey::from(self.keys.public().to_vec()), self.credential())
    }

    /// The credential TLS-encoded and base64'd, as the client API hands it out.
    pub fn credential_base64(&self) -> String {
        codec::encode(&self.credential().tls_serialize_detached().unwrap_or_default())
    }
}

/// A commit that passed every check, with what the server needs to act on it.
#[derive(Debug)]
pub struct AcceptedCommit {
    /// The epoch the commit starts.
    pub epoch: u64,
    /// Devices the commit added, with the KeyPackage reference each was added by.
    pub added: Vec<DeviceIdentity>,
    /// Devices the commit removed.
    pub removed: Vec<DeviceIdentity>,
    /// The devices the accompanying Welcome is for (each one the commit added).
    pub welcome_recipients: Vec<DeviceIdentity>,
}

/// The public state of one room's group, as the hub keeps it.
#[derive(Debug)]
pub struct DsGroup {
    storage: GroupStorage,
    group: PublicGroup,
}

/// Decodes base64 of an MLS message.
fn decode_message(b64: &str) -> DsResult<MlsMessageIn> {
    let bytes = codec::decode(b64).ok_or_else(|| DsError::Malformed("not base64".into()))?;
    MlsMessageIn::tls_deserialize_exact(&bytes).map_err(|e| DsError::Malformed(e.to_string()))
}

fn group_id_of(room_id: &str) -> GroupId {
    GroupId::from_slice(room_id.as_bytes())
}

impl DsGroup {
    /// Starts tracking a room's group from its creator's GroupInfo for epoch 0 (carrying the
    /// ratchet tree in its extension). The group must be the room's, in a supported suite, hold
    /// exactly the creator's device and list the server as an external sender.
    pub fn create(
        room_id: &str,
        group_info_b64: &str,
        creator: &DeviceIdentity,
        server: &ServerSigner,
    ) -> DsResult<Self> {
        let MlsMessageBodyIn::GroupInfo(group_info) = decode_message(group_info_b64)?.extract() else {
            return Err(DsError::InvalidGroupInfo("not a GroupInfo".into()));
        };
        if group_info.group_id() != &group_id_of(room_id) {
            return Err(DsError::GroupMismatch);
        }
        if Suite::from_ciphersuite(group_info.ciphersuite()).is_none() {
            return Err(DsError::InvalidGroupInfo("unsupported ciphersuite".into()));
        }
        if group_info.epoch().as_u64() != 0 {
            return Err(DsError::InvalidGroupInfo("a new group starts at epoch 0".into()));
        }
        let tree = group_info
            .extensions()
            .ratchet_tree()
            .map(|t| t.ratchet_tree().clone())
            .ok_or_else(|| DsError::InvalidGroupInfo("the GroupInfo must carry the ratchet tree".into()))?;
        let storage = GroupStorage::default();
        let (group, _) =
            PublicGroup::from_external(&RustCrypto::default(), &storage, tree, group_info, ProposalStore::new())
                .map_err(|e| DsError::InvalidGroupInfo(e.to_string()))?;
        let ds = DsGroup { storage, group };
        let members: Vec<_> = ds.members().into_iter().map(|(_, id)| id).collect();
        if members != [creator.clone()] {
            return Err(DsError::InvalidGroupInfo("the new group must hold exactly the creating device".into()));
        }
        if ds.server_sender_index(server).is_none() {
            return Err(DsError::InvalidGroupInfo("the group must list the server as an external sender".into()));
        }
        Ok(ds)
    }

    /// Reads state written by [`DsGroup::to_bytes`] (or by earlier versions, which stored
    /// openmls' in-memory storage as JSON).
    pub fn load(room_id: &str, bytes: &[u8]) -> DsResult<Self> {
        let group_id = group_id_of(room_id);
        let storage = GroupStorage::from_bytes(bytes, &group_id).map_err(|e| DsError::State(e.to_string()))?;
        let group = PublicGroup::load(&storage, &group_id)
            .map_err(|e| DsError::State(e.to_string()))?
            .ok_or_else(|| DsError::State("no group in the stored state".into()))?;
        Ok(DsGroup { storage, group })
    }

    /// The state to store: the group's values in a compact binary encoding, about the size of
    /// its ratchet tree.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.storage.to_bytes()
    }

    /// An independent copy, through the stored form.
    pub fn try_clone(&self) -> DsResult<Self> {
        Self::load(&String::from_utf8_lossy(self.group.group_id().as_slice()), &self.to_bytes())
    }

    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    pub fn ciphersuite(&self) -> Ciphersuite {
        self.group.ciphersuite()
    }

    /// The group's leaves and the device each names (leaves with foreign credentials are left out).
    pub fn members(&self) -> Vec<(u32, DeviceIdentity)> {
        self.group
            .members()
            .filter_map(|m| DeviceIdentity::from_credential(&m.credential).map(|id| (m.index.u32(), id)))
            .collect()
    }

    /// The ratchet tree, TLS-encoded, for clients that resynchronise from a GroupInfo.
    pub fn ratchet_tree(&self) -> Vec<u8> {
        self.group.export_ratchet_tree().tls_serialize_detached().unwrap_or_default()
    }

    /// The group's external senders (the server's own listed among them).
    pub fn external_senders(&self) -> Vec<ExternalSender> {
        self.group.group_context().extensions().external_senders().cloned().unwrap_or_default()
    }

    fn server_sender_index(&self, server: &ServerSigner) -> Option<u32> {
        let senders = self.group.group_context().extensions().external_senders()?;
        senders.iter().position(|s| s == &server.external_sender()).map(|i| i as u32)
    }

    /// Leaves whose removal the server has proposed and no commit has carried out yet.
    fn pending_removals(&self) -> DsResult<Vec<u32>> {
        let queued = self.group.queued_proposals(&self.storage).map_err(|e| DsError::State(e.to_string()))?;
        Ok(queued
            .iter()
            .filter_map(|(_, q)| match q.proposal() {
                openmls::prelude::Proposal::Remove(r) => Some(r.removed().u32()),
                _ => None,
            })
            .collect())
    }

    /// Checks a commit submitted by `submitter` (the device whose access token sent it; `None`
    /// when another server forwarded it for a user, `submitter_user`) at the current epoch (it
    /// must keep `server` an external sender, so the server can still propose removals), the
    /// GroupInfo of the epoch it starts and, optionally, the Welcome for the devices it adds;
    /// then moves the group to that epoch in place (no copy of the state is made).
    ///
    /// On every refusal the group is left as it was; only [`DsError::State`] (the storage failed
    /// while merging) may leave it half-changed, and the caller must then drop it.
    pub fn accept_commit(
        &mut self,
        server: &ExternalSender,
        commit_b64: &str,
        group_info_b64: &str,
        welcome_b64: Option<&str>,
        submitter_user: &str,
        submitter_device: Option<&str>,
    ) -> DsResult<AcceptedCommit> {
        let protocol = framed(
            self.group.group_id(),
            self.epoch(),
            commit_b64,
            (WireFormat::PublicMessage, "commits must be MLS PublicMessages"),
            (ContentType::Commit, "not a commit"),
        )?;

        let processed = self
            .group
            .process_message(&RustCrypto::default(), protocol)
            .map_err(|e| DsError::InvalidCommit(e.to_string()))?;
        let committer = DeviceIdentity::from_credential(processed.credential()).ok_or(DsError::SenderMismatch)?;
        if committer.user_id != submitter_user || submitter_device.is_some_and(|d| d != committer.device_id) {
            return Err(DsError::SenderMismatch);
        }
        let openmls::prelude::Sender::Member(committer_leaf) = *processed.sender() else {
            return Err(DsError::InvalidCommit("commits come from members of the group".into()));
        };
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(DsError::Unsupported("not a commit"));
        };

        // The server's removals must go with the next commit.
        let removed_leaves: Vec<u32> = staged.remove_proposals().map(|r| r.remove_proposal().removed().u32()).collect();
        let missing: Vec<u32> = self.pending_removals()?.into_iter().filter(|l| !removed_leaves.contains(l)).collect();
        if !missing.is_empty() {
            return Err(DsError::PendingProposals(missing.len()));
        }

        let crypto = RustCrypto::default();
        let mut added_refs = Vec::new();
        for add in staged.add_proposals() {
            let key_package = add.add_proposal().key_package();
            let identity = DeviceIdentity::from_credential(key_package.leaf_node().credential())
                .ok_or_else(|| DsError::InvalidCommit("an added member's credential names no Matrix device".into()))?;
            let reference = key_package.hash_ref(&crypto).map_err(|e| DsError::InvalidCommit(e.to_string()))?;
            added_refs.push((reference, identity));
        }
        let removed: Vec<DeviceIdentity> =
            self.members().into_iter().filter(|(leaf, _)| removed_leaves.contains(leaf)).map(|(_, id)| id).collect();

        // The committer signs the GroupInfo with the key of its leaf in the new epoch: the one its
        // UpdatePath brings, else the one it has.
        let signer_key = match staged.update_path_leaf_node() {
            Some(leaf) => leaf.signature_key().clone(),
            None => self
                .group
                .leaf(committer_leaf)
                .ok_or_else(|| DsError::InvalidGroupInfo("the committer is not in the group".into()))?
                .signature_key()
                .clone(),
        };
        let senders = staged.group_context().extensions().external_senders();
        if !senders.is_some_and(|senders| senders.contains(server)) {
            return Err(DsError::InvalidCommit(
                "the commit removes the server from the group's external senders".into(),
            ));
        }
        check_group_info(group_info_b64, staged.group_context(), signer_key)?;
        let epoch = staged.group_context().epoch().as_u64();
        let welcome_recipients = match welcome_b64 {
            Some(welcome) => welcome_recipients(welcome, self.ciphersuite(), &added_refs)?,
            None => Vec::new(),
        };

        self.group.merge_commit(&self.storage, *staged).map_err(|e| DsError::State(e.to_string()))?;
        Ok(AcceptedCommit {
            epoch,
            added: added_refs.into_iter().map(|(_, id)| id).collect(),
            removed,
            welcome_recipients,
        })
    }

    /// Proposes, as the server, the removal of every leaf of `devices` still in the group, and
    /// queues the proposals so the next commit must carry them out. Returns the proposals
    /// (base64 PublicMessages) for the members; none when no such device is in the group.
    pub fn propose_removals(&mut self, devices: &[DeviceIdentity], server: &ServerSigner) -> DsResult<Vec<String>> {
        let index = self
            .server_sender_index(server)
            .ok_or_else(|| DsError::State("the server is not an external sender of the group".into()))?;
        let already = self.pending_removals()?;
        let leaves: Vec<u32> = self
            .members()
            .into_iter()
            .filter(|(leaf, id)| devices.contains(id) && !already.contains(leaf))
            .map(|(leaf, _)| leaf)
            .collect();
        let mut proposals = Vec::new();
        for leaf in leaves {
            let message = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
                LeafNodeIndex::new(leaf),
                self.group.group_id().clone(),
                GroupEpoch::from(self.epoch()),
                &server.keys,
                SenderExtensionIndex::new(index),
            )
            .map_err(|e| DsError::State(format!("cannot build a remove proposal: {e:?}")))?;
            let bytes = message.tls_serialize_detached().map_err(|e| DsError::State(e.to_string()))?;
            let protocol = MlsMessageIn::tls_deserialize_exact(&bytes)
                .map_err(|e| DsError::State(e.to_string()))?
                .try_into_protocol_message()
                .map_err(|e| DsError::State(e.to_string()))?;
            let processed = self
                .group
                .process_message(&RustCrypto::default(), protocol)
                .map_err(|e| DsError::State(format!("own proposal refused: {e}")))?;
            let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
                return Err(DsError::State("own proposal processed as something else".into()));
            };
            self.group.add_proposal(&self.storage, *queued).map_err(|e| DsError::State(e.to_string()))?;
            proposals.push(codec::encode(&bytes));
        }
        Ok(proposals)
    }
}

/// The epoch a commit was made at (from its plaintext header), for the server of a member who
/// forwards it to the hub.
pub fn commit_epoch(commit_b64: &str) -> DsResult<u64> {
    let protocol =
        decode_message(commit_b64)?.try_into_protocol_message().map_err(|e| DsError::Malformed(e.to_string()))?;
    if protocol.content_type() != ContentType::Commit {
        return Err(DsError::Unsupported("not a commit"));
    }
    Ok(protocol.epoch().as_u64())
}

/// Checks an application message for the room's group at `epoch` (the epoch of the room's
/// current `m.mls.commit`): a PrivateMessage of the group carrying application data at that
/// epoch. Needs only the message's plaintext header, not the group's state.
pub fn check_application_message(room_id: &str, epoch: u64, ciphertext_b64: &str) -> DsResult<()> {
    framed(
        &group_id_of(room_id),
        epoch,
        ciphertext_b64,
        (WireFormat::PrivateMessage, "application messages must be MLS PrivateMessages"),
        (ContentType::Application, "only application data may be sent as a room message"),
    )
    .map(drop)
}

/// Decodes a message that must have the given framing and content, for the group at `epoch`.
fn framed(
    group_id: &GroupId,
    epoch: u64,
    b64: &str,
    (wire_format, wire_format_error): (WireFormat, &'static str),
    (content_type, content_type_error): (ContentType, &'static str),
) -> DsResult<ProtocolMessage> {
    let message = decode_message(b64)?;
    if message.wire_format() != wire_format {
        return Err(DsError::Unsupported(wire_format_error));
    }
    let protocol = message.try_into_protocol_message().map_err(|e| DsError::Malformed(e.to_string()))?;
    if protocol.group_id() != group_id {
        return Err(DsError::GroupMismatch);
    }
    if protocol.content_type() != content_type {
        return Err(DsError::Unsupported(content_type_error));
    }
    let got = protocol.epoch().as_u64();
    if got != epoch {
        return Err(DsError::WrongEpoch { current: epoch, got });
    }
    Ok(protocol)
}

/// A GroupInfo must describe the group at the epoch the commit starts (its group context, which
/// holds the tree hash, equal to the staged one) and be signed by the committer. Checked against
/// the tree the hub holds: the tree a GroupInfo may carry is not rebuilt here (members check it
/// against the tree hash when they use it).
fn check_group_info(group_info_b64: &str, context: &GroupContext, signer: SignaturePublicKey) -> DsResult<()> {
    let MlsMessageBodyIn::GroupInfo(group_info) = decode_message(group_info_b64)?.extract() else {
        return Err(DsError::InvalidGroupInfo("not a GroupInfo".into()));
    };
    if group_info.group_id() != context.group_id() || group_info.epoch() != context.epoch() {
        return Err(DsError::InvalidGroupInfo("not for this group and epoch".into()));
    }
    if group_info.group_context() != context {
        return Err(DsError::InvalidGroupInfo("its group context differs from the committed one".into()));
    }
    let key = OpenMlsSignaturePublicKey::from_signature_key(signer, context.ciphersuite().signature_algorithm());
    group_info
        .verify_no_out(&RustCrypto::default(), &key)
        .map_err(|_| DsError::InvalidGroupInfo("not signed by the committer".into()))
}

/// The devices a Welcome is for: each of its secrets must be for a KeyPackage the commit added.
fn welcome_recipients(
    welcome_b64: &str,
    ciphersuite: Ciphersuite,
    added: &[(openmls::prelude::KeyPackageRef, DeviceIdentity)],
) -> DsResult<Vec<DeviceIdentity>> {
    let MlsMessageBodyIn::Welcome(welcome) =
        decode_message(welcome_b64).map_err(|e| DsError::InvalidWelcome(e.to_string()))?.extract()
    else {
        return Err(DsError::InvalidWelcome("not a Welcome".into()));
    };
    if welcome.ciphersuite() != ciphersuite {
        return Err(DsError::InvalidWelcome("another ciphersuite than the group's".into()));
    }
    let mut recipients = Vec::new();
    for secret in welcome.secrets() {
        let reference = secret.new_member();
        let (_, identity) = added
            .iter()
            .find(|(r, _)| *r == reference)
            .ok_or_else(|| DsError::InvalidWelcome("it is for a KeyPackage the commit does not add".into()))?;
        if !recipients.contains(identity) {
            recipients.push(identity.clone());
        }
    }
    Ok(recipients)
}

#[cfg(test)]
mod tests;
