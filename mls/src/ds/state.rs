//! Where the hub keeps one group's public state while it works on it, and the bytes it stores.
//!
//! openmls persists a `PublicGroup` through a storage provider. Its in-memory provider encodes
//! every value as JSON, where each byte of a key or signature becomes up to four characters: a
//! group of 1,000 members took about 1 MB, written with every commit. This provider holds the
//! few values of one group encoded with postcard (a byte is a byte), so the stored state is about
//! as large as the ratchet tree itself, and it never copies more than the value asked for.

use std::sync::{Mutex, MutexGuard};

use openmls::ciphersuite::hash_ref::ProposalRef;
use openmls::group::InterimTranscriptHash;
use openmls::prelude::{GroupId, PublicGroup, QueuedProposal};
use openmls_traits::public_storage::PublicStorageProvider;
use openmls_traits::storage::{CURRENT_VERSION, traits};
use serde::{Serialize, de::DeserializeOwned};

use crate::codec;

/// What the stored bytes begin with; states written before this format (openmls' in-memory
/// storage as JSON) begin with a zero byte and are still read.
const MAGIC: &[u8; 5] = b"PSDS\x01";

/// Why a value did not encode or decode.
#[derive(Debug, thiserror::Error)]
#[error("group state: {0}")]
pub(super) struct StateError(String);

/// The public state of exactly one group, each value postcard-encoded.
#[derive(Debug, Default)]
pub(super) struct GroupStorage {
    values: Mutex<Values>,
}

#[derive(Debug, Default)]
struct Values {
    tree: Option<Vec<u8>>,
    context: Option<Vec<u8>>,
    interim_transcript_hash: Option<Vec<u8>>,
    confirmation_tag: Option<Vec<u8>>,
    /// Queued proposals in the order they were queued: (reference, proposal).
    proposals: Vec<(Vec<u8>, Vec<u8>)>,
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, StateError> {
    postcard::to_stdvec(value).map_err(|e| StateError(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    postcard::from_bytes(bytes).map_err(|e| StateError(e.to_string()))
}

fn decode_option<T: DeserializeOwned>(bytes: Option<&Vec<u8>>) -> Result<Option<T>, StateError> {
    bytes.map(|b| decode(b)).transpose()
}

impl GroupStorage {
    fn values(&self) -> MutexGuard<'_, Values> {
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state as stored: the magic, then the four values and the proposals, each
    /// length-prefixed (u32 big-endian).
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let values = self.values();
        let parts = [&values.tree, &values.context, &values.interim_transcript_hash, &values.confirmation_tag];
        let size = parts.iter().map(|p| 4 + p.as_ref().map_or(0, Vec::len)).sum::<usize>()
            + values.proposals.iter().map(|(r, p)| 8 + r.len() + p.len()).sum::<usize>();
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + size);
        out.extend_from_slice(MAGIC);
        for part in parts {
            put(&mut out, part.as_deref().unwrap_or_default());
        }
        out.extend_from_slice(&(values.proposals.len() as u32).to_be_bytes());
        for (reference, proposal) in &values.proposals {
            put(&mut out, reference);
            put(&mut out, proposal);
        }
        out
    }

    /// Reads [`GroupStorage::to_bytes`] output, or a state in the earlier JSON format.
    pub(super) fn from_bytes(bytes: &[u8], group_id: &GroupId) -> Result<Self, StateError> {
        match bytes.strip_prefix(MAGIC.as_slice()) {
            Some(rest) => Self::read(rest).ok_or_else(|| StateError("truncated group state".into())),
            None => Self::from_legacy(bytes, group_id),
        }
    }

    fn read(mut rest: &[u8]) -> Option<Self> {
        let mut part = || -> Option<Option<Vec<u8>>> {
            let bytes = take(&mut rest)?;
            Some((!bytes.is_empty()).then_some(bytes))
        };
        let (tree, context, interim_transcript_hash, confirmation_tag) = (part()?, part()?, part()?, part()?);
        let count = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        let mut proposals = Vec::new();
        for _ in 0..count {
            let reference = take(&mut rest)?;
            proposals.push((reference, take(&mut rest)?));
        }
        rest.is_empty().then(|| GroupStorage {
            values: Mutex::new(Values { tree, context, interim_transcript_hash, confirmation_tag, proposals }),
        })
    }

    /// A state openmls' in-memory storage held (JSON values), moved into this storage.
    fn from_legacy(bytes: &[u8], group_id: &GroupId) -> Result<Self, StateError> {
        let memory = codec::storage_from_bytes(bytes).ok_or_else(|| StateError("truncated group state".into()))?;
        let legacy = |e: openmls_memory_storage::MemoryStorageError| StateError(e.to_string());
        let group = PublicGroup::load(&memory, group_id)
            .map_err(legacy)?
            .ok_or_else(|| StateError("no group in the stored state".into()))?;
        let interim: Option<InterimTranscriptHash> =
            openmls_traits::storage::StorageProvider::interim_transcript_hash(&memory, group_id).map_err(legacy)?;
        let proposals: Vec<(ProposalRef, QueuedProposal)> =
            openmls_traits::storage::StorageProvider::queued_proposals(&memory, group_id).map_err(legacy)?;
        let storage = GroupStorage::default();
        storage.write_tree(group_id, group.treesync())?;
        storage.write_context(group_id, group.group_context())?;
        storage.write_confirmation_tag(group_id, group.confirmation_tag())?;
        if let Some(interim) = interim {
            storage.write_interim_transcript_hash(group_id, &interim)?;
        }
        for (reference, proposal) in proposals {
            storage.queue_proposal(group_id, &reference, &proposal)?;
        }
        Ok(storage)
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let bytes = rest.get(4..4 + len)?.to_vec();
    *rest = &rest[4 + len..];
    Some(bytes)
}

// The group id is not part of any key: the storage holds one group, the one `DsGroup` names.
impl PublicStorageProvider<CURRENT_VERSION> for GroupStorage {
    type PublicError = StateError;

    fn write_tree<G: traits::GroupId<CURRENT_VERSION>, T: traits::TreeSync<CURRENT_VERSION>>(
        &self,
        _: &G,
        tree: &T,
    ) -> Result<(), StateError> {
        self.values().tree = Some(encode(tree)?);
        Ok(())
    }

    fn write_interim_transcript_hash<
        G: traits::GroupId<CURRENT_VERSION>,
        H: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        _: &G,
        hash: &H,
    ) -> Result<(), StateError> {
        self.values().interim_transcript_hash = Some(encode(hash)?);
        Ok(())
    }

    fn write_context<G: traits::GroupId<CURRENT_VERSION>, C: traits::GroupContext<CURRENT_VERSION>>(
        &self,
        _: &G,
        context: &C,
    ) -> Result<(), StateError> {
        self.values().context = Some(encode(context)?);
        Ok(())
    }

    fn write_confirmation_tag<G: traits::GroupId<CURRENT_VERSION>, T: traits::ConfirmationTag<CURRENT_VERSION>>(
        &self,
        _: &G,
        tag: &T,
    ) -> Result<(), StateError> {
        self.values().confirmation_tag = Some(encode(tag)?);
        Ok(())
    }

    fn queue_proposal<
        G: traits::GroupId<CURRENT_VERSION>,
        R: traits::ProposalRef<CURRENT_VERSION>,
        P: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        _: &G,
        reference: &R,
        proposal: &P,
    ) -> Result<(), StateError> {
        let (reference, proposal) = (encode(reference)?, encode(proposal)?);
        let mut values = self.values();
        values.proposals.retain(|(r, _)| *r != reference);
        values.proposals.push((reference, proposal));
        Ok(())
    }

    fn queued_proposals<
        G: traits::GroupId<CURRENT_VERSION>,
        R: traits::ProposalRef<CURRENT_VERSION>,
        P: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        _: &G,
    ) -> Result<Vec<(R, P)>, StateError> {
        self.values().proposals.iter().map(|(r, p)| Ok((decode(r)?, decode(p)?))).collect()
    }

    fn tree<G: traits::GroupId<CURRENT_VERSION>, T: traits::TreeSync<CURRENT_VERSION>>(
        &self,
        _: &G,
    ) -> Result<Option<T>, StateError> {
        decode_option(self.values().tree.as_ref())
    }

    fn group_context<G: traits::GroupId<CURRENT_VERSION>, C: traits::GroupContext<CURRENT_VERSION>>(
        &self,
        _: &G,
    ) -> Result<Option<C>, StateError> {
        decode_option(self.values().context.as_ref())
    }

    fn interim_transcript_hash<
        G: traits::GroupId<CURRENT_VERSION>,
        H: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        _: &G,
    ) -> Result<Option<H>, StateError> {
        decode_option(self.values().interim_transcript_hash.as_ref())
    }

    fn confirmation_tag<G: traits::GroupId<CURRENT_VERSION>, T: traits::ConfirmationTag<CURRENT_VERSION>>(
        &self,
        _: &G,
    ) -> Result<Option<T>, StateError> {
        decode_option(self.values().confirmation_tag.as_ref())
    }

    fn delete_tree<G: traits::GroupId<CURRENT_VERSION>>(&self, _: &G) -> Result<(), StateError> {
        self.values().tree = None;
        Ok(())
    }

    fn delete_confirmation_tag<G: traits::GroupId<CURRENT_VERSION>>(&self, _: &G) -> Result<(), StateError> {
        self.values().confirmation_tag = None;
        Ok(())
    }

    fn delete_context<G: traits::GroupId<CURRENT_VERSION>>(&self, _: &G) -> Result<(), StateError> {
        self.values().context = None;
        Ok(())
    }

    fn delete_interim_transcript_hash<G: traits::GroupId<CURRENT_VERSION>>(&self, _: &G) -> Result<(), StateError> {
        self.values().interim_transcript_hash = None;
        Ok(())
    }

    fn remove_proposal<G: traits::GroupId<CURRENT_VERSION>, R: traits::ProposalRef<CURRENT_VERSION>>(
        &self,
        _: &G,
        reference: &R,
    ) -> Result<(), StateError> {
        let reference = encode(reference)?;
        self.values().proposals.retain(|(r, _)| *r != reference);
        Ok(())
    }

    fn clear_proposal_queue<G: traits::GroupId<CURRENT_VERSION>, R: traits::ProposalRef<CURRENT_VERSION>>(
        &self,
        _: &G,
    ) -> Result<(), StateError> {
        self.values().proposals.clear();
        Ok(())
    }
}
