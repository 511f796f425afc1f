//! Commits: building them (adds, removals, self-updates, the server's proposals), learning the
//! server's answer, and applying the commits the room delivers.

use std::collections::BTreeSet;

use openmls::prelude::{
    KeyPackage, LeafNodeIndex, MlsGroup, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, Proposal,
    ProtocolMessage, Sender, StagedCommit,
};
use openmls_traits::OpenMlsProvider as _;
use tls_codec::Deserialize as _;

use super::{CommitBundle, MlsClientError, MlsDevice, Result, encode_message, mls_error, now_secs};
use crate::key_package::decode_and_verify;
use crate::{DeviceIdentity, codec};

/// What a commit seen in the room did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitOutcome {
    /// The group's epoch after the commit.
    pub epoch: u64,
    /// The commit was this device's pending one, echoed back by the server.
    pub own: bool,
    /// The commit is from an epoch this device has already left behind (a replay); nothing changed.
    pub already_applied: bool,
    /// The member that committed; `None` for a replay.
    pub committer: Option<DeviceIdentity>,
    pub added: Vec<DeviceIdentity>,
    pub removed: Vec<DeviceIdentity>,
    /// This device was removed: the group is gone from this device and it can read no more.
    pub removed_self: bool,
}

/// The change a commit of ours makes, besides the proposals already queued.
enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<LeafNodeIndex>),
    SelfUpdate,
    QueuedProposals,
}

impl MlsDevice {
    /// Commits the addition of the devices whose claimed KeyPackages are given (base64), after
    /// checking each one's signatures, lifetime and suite. The commit stays pending.
    pub fn add_members(&mut self, room_id: &str, key_packages: &[String]) -> Result<CommitBundle> {
        let group = self.group(room_id)?;
        let now = now_secs();
        let key_packages = key_packages
            .iter()
            .map(|value| {
                let key_package = decode_and_verify(value, now)?;
                if key_package.ciphersuite() != group.ciphersuite() {
                    return Err(MlsClientError::KeyPackageSuite);
                }
                Ok(key_package)
            })
            .collect::<Result<Vec<_>>>()?;
        self.commit(group, Change::Add(key_packages))
    }

    /// Commits the removal of the given devices (each must be in the group).
    pub fn remove_devices(&mut self, room_id: &str, devices: &[DeviceIdentity]) -> Result<CommitBundle> {
        let group = self.group(room_id)?;
        let mut leaves = Vec::new();
        for device in devices {
            let leaf = group
                .members()
                .find(|m| DeviceIdentity::from_credential(&m.credential).as_ref() == Some(device))
                .ok_or_else(|| MlsClientError::NotAMember(device.to_string()))?;
            leaves.push(leaf.index);
        }
        self.commit(group, Change::Remove(leaves))
    }

    /// Commits the removal of every device of `user_id`.
    pub fn remove_user(&mut self, room_id: &str, user_id: &str) -> Result<CommitBundle> {
        let group = self.group(room_id)?;
        let leaves: Vec<_> = group
            .members()
            .filter(|m| DeviceIdentity::from_credential(&m.credential).is_some_and(|d| d.user_id == user_id))
            .map(|m| m.index)
            .collect();
        if leaves.is_empty() {
            return Err(MlsClientError::NotAMember(user_id.to_owned()));
        }
        self.commit(group, Change::Remove(leaves))
    }

    /// Commits fresh key material for this device's leaf (post-compromise security).
    pub fn self_update(&mut self, room_id: &str) -> Result<CommitBundle> {
        let group = self.group(room_id)?;
        self.commit(group, Change::SelfUpdate)
    }

    /// Verifies proposals the server made as external sender (base64 PublicMessages, e.g. the
    /// Remove of a deleted device) and queues them, so the next commit of this device includes
    /// them by value. Proposals already queued are skipped.
    pub fn receive_proposals(&mut self, room_id: &str, proposals: &[String]) -> Result<()> {
        let mut group = self.group(room_id)?;
        for proposal in proposals {
            let message = decode_protocol_message(proposal, "proposal")?;
            check_epoch(&group, &message)?;
            let processed = group.process_message(&self.provider, message).map_err(mls_error)?;
            let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
                return Err(MlsClientError::UnexpectedContent { expected: "a proposal" });
            };
            let known =
                group.pending_proposals().any(|p| p.proposal_reference_ref() == queued.proposal_reference_ref());
            if !known {
                group.store_pending_proposal(self.provider.storage(), *queued).map_err(mls_error)?;
            }
        }
        self.save()
    }

    /// Queues the server's proposals ([`Self::receive_proposals`]) and commits them.
    pub fn commit_proposals(&mut self, room_id: &str, proposals: &[String]) -> Result<CommitBundle> {
        self.receive_proposals(room_id, proposals)?;
        let group = self.group(room_id)?;
        self.commit(group, Change::QueuedProposals)
    }

    /// The server accepted our pending commit: merge it.
    pub fn commit_accepted(&mut self, room_id: &str) -> Result<()> {
        let mut group = self.group(room_id)?;
        if group.pending_commit().is_none() {
            return Err(MlsClientError::NoPendingCommit);
        }
        let removed_self = group.pending_commit().is_some_and(StagedCommit::self_removed);
        group.merge_pending_commit(&self.provider).map_err(mls_error)?;
        if removed_self {
            self.forget_room(room_id, &mut group)?;
        }
        self.save()
    }

    /// The server refused our pending commit (409): drop it, so the winner can be applied and
    /// the change built again on top of it. Queued proposals stay queued.
    pub fn commit_rejected(&mut self, room_id: &str) -> Result<()> {
        let mut group = self.group(room_id)?;
        group.clear_pending_commit(self.provider.storage()).map_err(mls_error)?;
        self.save()
    }

    /// Applies a commit the room delivered (base64 PublicMessage from an `m.mls.commit` event):
    /// the echo of our pending commit is merged; anyone else's is verified and merged (dropping
    /// a pending commit of ours that lost); one from an epoch already left behind is ignored.
    pub fn process_commit(&mut self, room_id: &str, commit: &str) -> Result<CommitOutcome> {
        let mut group = self.group(room_id)?;
        let message = decode_protocol_message(commit, "commit")?;
        let group_epoch = group.epoch().as_u64();
        if message.epoch().as_u64() < group_epoch {
            return Ok(CommitOutcome { epoch: group_epoch, already_applied: true, ..CommitOutcome::default() });
        }
        check_epoch(&group, &message)?;
        let processed = group.process_message(&self.provider, message).map_err(mls_error)?;
        let committer = sender_identity(&group, processed.sender());
        let mut outcome = CommitOutcome { committer, ..CommitOutcome::default() };
        match processed.into_content() {
            ProcessedMessageContent::OwnPendingCommit => {
                let staged = group.pending_commit().ok_or(MlsClientError::NoPendingCommit)?;
                describe(&group, staged, &mut outcome);
                outcome.own = true;
                group.merge_pending_commit(&self.provider).map_err(mls_error)?;
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                describe(&group, &staged, &mut outcome);
                group.merge_staged_commit(&self.provider, *staged).map_err(mls_error)?;
            }
            _ => return Err(MlsClientError::UnexpectedContent { expected: "a commit" }),
        }
        outcome.epoch = group.epoch().as_u64();
        if outcome.removed_self {
            self.forget_room(room_id, &mut group)?;
        }
        self.save()?;
        Ok(outcome)
    }

    /// Builds, stages and saves a commit of `change` plus every queued proposal.
    fn commit(&mut self, mut group: MlsGroup, change: Change) -> Result<CommitBundle> {
        if group.pending_commit().is_some() {
            return Err(MlsClientError::CommitPending);
        }
        let signer = self.signer(group.ciphersuite())?;
        let epoch = group.epoch().as_u64() + 1;
        // The server's queued proposals go in by value: the other members never saw them, and
        // a proposal by reference would be one they cannot resolve.
        let queued: Vec<Proposal> = group.pending_proposals().map(|p| p.proposal().clone()).collect();
        let queued_removals: BTreeSet<LeafNodeIndex> = queued
            .iter()
            .filter_map(|p| match p {
                Proposal::Remove(remove) => Some(remove.removed()),
                _ => None,
            })
            .collect();
        let builder = group.commit_builder().consume_proposal_store(false).add_proposals(queued);
        let builder = match change {
            Change::Add(key_packages) => builder.propose_adds(key_packages),
            // A removal the server already proposed is covered by its proposal.
            Change::Remove(leaves) => {
                builder.propose_removals(leaves.into_iter().filter(|l| !queued_removals.contains(l)))
            }
            Change::SelfUpdate => builder.force_self_update(true),
            Change::QueuedProposals => builder,
        };
        let bundle = builder
            .load_psks(self.provider.storage())
            .map_err(mls_error)?
            .build(self.provider.rand(), self.provider.crypto(), &signer, |_| true)
            .map_err(mls_error)?
            .stage_commit(&self.provider)
            .map_err(mls_error)?;
        let (commit, welcome, group_info) = bundle.into_messages();
        let group_info = group_info.ok_or_else(|| MlsClientError::Mls("the commit produced no GroupInfo".into()))?;
        let bundle = CommitBundle {
            commit: encode_message(&commit)?,
            welcome: welcome.as_ref().map(encode_message).transpose()?,
            group_info: encode_message(&group_info)?,
            epoch,
        };
        self.save()?;
        Ok(bundle)
    }

    /// Drops a group this device was removed from.
    fn forget_room(&mut self, room_id: &str, group: &mut MlsGroup) -> Result<()> {
        group.delete(self.provider.storage()).map_err(mls_error)?;
        self.metadata.rooms.remove(room_id);
        Ok(())
    }
}

/// Decodes base64 of an MlsMessage that must be a PublicMessage or PrivateMessage.
pub(super) fn decode_protocol_message(value: &str, what: &'static str) -> Result<ProtocolMessage> {
    let bytes = codec::decode(value).ok_or(MlsClientError::Malformed(what))?;
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| MlsClientError::Malformed(what))?;
    match message.extract() {
        MlsMessageBodyIn::PublicMessage(m) => Ok(m.into()),
        MlsMessageBodyIn::PrivateMessage(m) => Ok(m.into()),
        _ => Err(MlsClientError::Malformed(what)),
    }
}

/// Refuses a message for another group or another epoch than the group's current one.
pub(super) fn check_epoch(group: &MlsGroup, message: &ProtocolMessage) -> Result<()> {
    if message.group_id() != group.group_id() {
        return Err(MlsClientError::WrongGroup {
            expected: String::from_utf8_lossy(group.group_id().as_slice()).into_owned(),
            found: String::from_utf8_lossy(message.group_id().as_slice()).into_owned(),
        });
    }
    let (message, group) = (message.epoch().as_u64(), group.epoch().as_u64());
    if message != group {
        return Err(MlsClientError::WrongEpoch { message, group });
    }
    Ok(())
}

/// The device behind a member sender, looked up in the group before the commit is merged.
fn sender_identity(group: &MlsGroup, sender: &Sender) -> Option<DeviceIdentity> {
    match sender {
        Sender::Member(leaf) => group.member(*leaf).and_then(DeviceIdentity::from_credential),
        _ => None,
    }
}

/// Fills in who a staged commit adds and removes.
fn describe(group: &MlsGroup, staged: &StagedCommit, outcome: &mut CommitOutcome) {
    outcome.added = staged
        .add_proposals()
        .filter_map(|p| DeviceIdentity::from_credential(p.add_proposal().key_package().leaf_node().credential()))
        .collect();
    outcome.removed = staged
        .remove_proposals()
        .filter_map(|p| group.member(p.remove_proposal().removed()).and_then(DeviceIdentity::from_credential))
        .collect();
    outcome.removed_self = staged.self_removed();
}
