//! The client SDK: one Matrix device's MLS state and every group operation a client needs, with
//! no HTTP. Bridges, Fachverfahren, the command-line client and tests drive it; they carry its
//! base64 outputs to the server and feed it what `/sync` delivers.
//!
//! Rooms follow DESIGN §6: the group id is the room id's bytes, commits are PublicMessages (so the
//! hub verifies them), application messages PrivateMessages, and GroupInfos and Welcomes carry the
//! ratchet tree. A commit the client builds stays pending until the server answers: accepted, it is
//! merged ([`MlsDevice::commit_accepted`], or when its echo arrives through
//! [`MlsDevice::process_commit`]); rejected with 409, it is dropped ([`MlsDevice::commit_rejected`])
//! so the client can apply the winner and build it again.
//!
//! Every mutating call writes the whole state to the device's directory before it returns, so
//! what the caller sent to the server is never lost by a crash.

mod commits;
mod messages;
mod store;
#[cfg(test)]
mod tests;

use std::path::Path;

use openmls::prelude::Credential;
use openmls::prelude::{
    Capabilities, Ciphersuite, CredentialWithKey, Extension, ExtensionType, Extensions, ExternalSender, GroupId,
    KeyPackage, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
    SignaturePublicKey,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::signatures::Signer as _;
use tls_codec::{Deserialize as _, Serialize as _};

pub use messages::Decrypted;
pub use store::write_atomically;
use store::{DeviceProvider, Metadata, StateDir};

use crate::key_package::{KeyPackageError, reference_name};
use crate::{DeviceIdentity, Suite, codec};

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum MlsClientError {
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the state directory is in use by another process")]
    Locked,
    #[error("the saved state is unreadable: {0}")]
    CorruptState(String),
    #[error("the state directory belongs to another device: {0}")]
    IdentityMismatch(DeviceIdentity),
    #[error("the key store lock is poisoned")]
    StoragePoisoned,
    #[error("unsupported ciphersuite")]
    UnsupportedSuite,
    #[error("no MLS group for room {0}")]
    UnknownRoom(String),
    #[error("this device already holds the group of room {0}")]
    RoomExists(String),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("claimed KeyPackage refused: {0}")]
    KeyPackage(#[from] KeyPackageError),
    #[error("the KeyPackage is for another ciphersuite than the room's")]
    KeyPackageSuite,
    #[error("the message is for room {found}, not {expected}")]
    WrongGroup { expected: String, found: String },
    #[error("the message is for epoch {message}, the group is at epoch {group}")]
    WrongEpoch { message: u64, group: u64 },
    #[error("the message was sent by this device")]
    OwnMessage,
    #[error("expected {expected}, got another kind of MLS message")]
    UnexpectedContent { expected: &'static str },
    #[error("{0} is not a member of the group")]
    NotAMember(String),
    #[error("a commit is pending: wait for the server's answer first")]
    CommitPending,
    #[error("no commit is pending")]
    NoPendingCommit,
    #[error("openmls: {0}")]
    Mls(String),
}

/// Maps an openmls error (generic over the storage error) to ours.
fn mls_error(e: impl std::fmt::Display) -> MlsClientError {
    MlsClientError::Mls(e.to_string())
}

type Result<T, E = MlsClientError> = std::result::Result<T, E>;

/// The server as an MLS external sender, as it publishes itself: its Ed25519 signature public
/// key and its TLS-encoded credential, both base64.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExternalSenderInfo {
    pub signature_key: String,
    pub credential: String,
}

/// What the server needs for one commit, all base64 of TLS-encoded MlsMessages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitBundle {
    /// The commit, a PublicMessage.
    pub commit: String,
    /// The Welcome for added devices, when the commit adds any.
    pub welcome: Option<String>,
    /// The GroupInfo of the epoch the commit creates, with the ratchet tree.
    pub group_info: String,
    /// The epoch the commit creates.
    pub epoch: u64,
}

/// One Matrix device's MLS state, kept in a directory.
pub struct MlsDevice {
    identity: DeviceIdentity,
    dir: StateDir,
    provider: DeviceProvider,
    metadata: Metadata,
}

impl std::fmt::Debug for MlsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsDevice").field("identity", &self.identity).field("rooms", &self.metadata.rooms).finish()
    }
}

/// The join configuration every group of ours uses: PublicMessage commits, encrypted
/// application messages, GroupInfos with the ratchet tree.
fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl MlsDevice {
    /// Opens the device's state in `dir`, creating it (with fresh signature keys) the first time.
    pub fn open(dir: impl AsRef<Path>, identity: DeviceIdentity) -> Result<Self> {
        let dir = StateDir::lock(dir.as_ref())?;
        let (provider, metadata, fresh) = match dir.load(&identity)? {
            Some((provider, metadata)) => (provider, metadata, false),
            None => (DeviceProvider::default(), Metadata::default(), true),
        };
        let mut device = MlsDevice { identity, dir, provider, metadata };
        let mut changed = fresh;
        for suite in Suite::all() {
            changed |= device.ensure_signature_key(suite)?;
        }
        if changed {
            device.save()?;
        }
        Ok(device)
    }

    /// The user and device this state belongs to.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// The public signature key this device signs with in groups of `suite` (for Ed25519 the
    /// 32 raw bytes): the device's MLS key published in its device keys.
    pub fn signature_public_key(&self, suite: Suite) -> Result<Vec<u8>> {
        Ok(self.signer(suite.ciphersuite())?.to_public_vec())
    }

    /// Signs `payload` with the device's signature key of `suite`, e.g. the canonical JSON of
    /// its device keys.
    pub fn sign(&self, suite: Suite, payload: &[u8]) -> Result<Vec<u8>> {
        self.signer(suite.ciphersuite())?.sign(payload).map_err(|e| MlsClientError::Mls(format!("{e:?}")))
    }

    /// `count` fresh KeyPackages to upload as one-time keys: `(key id, base64 KeyPackage)` with
    /// key id `m.mls.v1.<suite>:<reference>`.
    pub fn key_packages(&mut self, suite: Suite, count: usize) -> Result<Vec<(String, String)>> {
        let packages = (0..count).map(|_| self.new_key_package(suite, false)).collect::<Result<Vec<_>>>()?;
        self.save()?;
        Ok(packages)
    }

    /// A last-resort KeyPackage to upload as the fallback key, in the same shape.
    pub fn last_resort_key_package(&mut self, suite: Suite) -> Result<(String, String)> {
        let package = self.new_key_package(suite, true)?;
        self.save()?;
        Ok(package)
    }

    /// Creates the group of `room_id` at epoch 0 with this device as its only member and the
    /// server(s) as external senders; returns the base64 GroupInfo the server stores.
    pub fn create_group(
        &mut self,
        room_id: &str,
        suite: Suite,
        external_senders: &[ExternalSenderInfo],
    ) -> Result<String> {
        if self.metadata.rooms.contains_key(room_id) {
            return Err(MlsClientError::RoomExists(room_id.to_owned()));
        }
        let senders = external_senders.iter().map(decode_external_sender).collect::<Result<Vec<_>>>()?;
        let extensions = if senders.is_empty() {
            Extensions::empty()
        } else {
            Extensions::single(Extension::ExternalSenders(senders)).map_err(mls_error)?
        };
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(suite.ciphersuite())
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .with_group_context_extensions(extensions)
            .build();
        let signer = self.signer(suite.ciphersuite())?;
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &signer,
            &config,
            GroupId::from_slice(room_id.as_bytes()),
            self.credential_with_key(&signer),
        )
        .map_err(mls_error)?;
        let group_info = group.export_group_info(self.provider.crypto(), &signer, true).map_err(mls_error)?;
        self.metadata.rooms.insert(room_id.to_owned(), suite.algorithm());
        self.save()?;
        encode_message(&group_info)
    }

    /// The rooms whose group this device holds.
    pub fn rooms(&self) -> Vec<String> {
        self.metadata.rooms.keys().cloned().collect()
    }

    /// The ciphersuite of a room's group.
    pub fn suite(&self, room_id: &str) -> Result<Suite> {
        let algorithm = self.metadata.rooms.get(room_id).ok_or_else(|| unknown_room(room_id))?;
        Suite::from_algorithm(algorithm).ok_or(MlsClientError::UnsupportedSuite)
    }

    /// The group's current epoch.
    pub fn epoch(&self, room_id: &str) -> Result<u64> {
        Ok(self.group(room_id)?.epoch().as_u64())
    }

    /// The devices in the group, in leaf order.
    pub fn members(&self, room_id: &str) -> Result<Vec<DeviceIdentity>> {
        let group = self.group(room_id)?;
        Ok(group.members().filter_map(|m| DeviceIdentity::from_credential(&m.credential)).collect())
    }

    /// Whether a commit of ours awaits the server's answer.
    pub fn has_pending_commit(&self, room_id: &str) -> Result<bool> {
        Ok(self.group(room_id)?.pending_commit().is_some())
    }

    fn save(&self) -> Result<()> {
        self.dir.save(&self.identity, &self.provider, &self.metadata)
    }

    fn group(&self, room_id: &str) -> Result<MlsGroup> {
        if !self.metadata.rooms.contains_key(room_id) {
            return Err(unknown_room(room_id));
        }
        MlsGroup::load(self.provider.storage(), &GroupId::from_slice(room_id.as_bytes()))
            .map_err(mls_error)?
            .ok_or_else(|| unknown_room(room_id))
    }

    /// Creates the signature key for `suite`'s scheme if the device has none; true if it did.
    fn ensure_signature_key(&mut self, suite: Suite) -> Result<bool> {
        let scheme = suite.ciphersuite().signature_algorithm();
        if self.metadata.signature_keys.contains_key(&(scheme as u16)) {
            return Ok(false);
        }
        let keys = SignatureKeyPair::new(scheme).map_err(mls_error)?;
        keys.store(self.provider.storage()).map_err(mls_error)?;
        self.metadata.signature_keys.insert(scheme as u16, codec::encode(keys.public()));
        Ok(true)
    }

    fn signer(&self, ciphersuite: Ciphersuite) -> Result<SignatureKeyPair> {
        let scheme = ciphersuite.signature_algorithm();
        let public = self
            .metadata
            .signature_keys
            .get(&(scheme as u16))
            .and_then(|k| codec::decode(k))
            .ok_or(MlsClientError::UnsupportedSuite)?;
        SignatureKeyPair::read(self.provider.storage(), &public, scheme)
            .ok_or_else(|| MlsClientError::CorruptState("a signature key is missing from the store".into()))
    }

    fn credential_with_key(&self, signer: &SignatureKeyPair) -> CredentialWithKey {
        CredentialWithKey { credential: self.identity.credential(), signature_key: signer.public().into() }
    }

    fn new_key_package(&self, suite: Suite, last_resort: bool) -> Result<(String, String)> {
        let signer = self.signer(suite.ciphersuite())?;
        let mut builder = KeyPackage::builder();
        if last_resort {
            // A KeyPackage extension must be listed in the leaf's capabilities to validate.
            let capabilities = Capabilities::builder().extensions(vec![ExtensionType::LastResort]).build();
            builder = builder.mark_as_last_resort().leaf_node_capabilities(capabilities);
        }
        let bundle = builder
            .build(suite.ciphersuite(), &self.provider, &signer, self.credential_with_key(&signer))
            .map_err(mls_error)?;
        let key_package = bundle.key_package();
        let bytes = key_package.tls_serialize_detached().map_err(mls_error)?;
        Ok((format!("{}:{}", suite.algorithm(), reference_name(key_package)), codec::encode(&bytes)))
    }
}

fn unknown_room(room_id: &str) -> MlsClientError {
    MlsClientError::UnknownRoom(room_id.to_owned())
}

fn encode_message(message: &impl tls_codec::Serialize) -> Result<String> {
    Ok(codec::encode(&message.tls_serialize_detached().map_err(mls_error)?))
}

fn decode_external_sender(info: &ExternalSenderInfo) -> Result<ExternalSender> {
    let key = codec::decode(&info.signature_key).ok_or(MlsClientError::Malformed("external sender key"))?;
    let credential = codec::decode(&info.credential)
        .and_then(|bytes| Credential::tls_deserialize_exact(bytes).ok())
        .ok_or(MlsClientError::Malformed("external sender credential"))?;
    Ok(ExternalSender::new(SignaturePublicKey::from(key), credential))
}
