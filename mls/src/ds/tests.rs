//! The Delivery Service's checks against real groups built with openmls as clients build them.

use openmls::prelude::{CredentialWithKey, GroupId};
use openmls::prelude::{
    Extension, Extensions, KeyPackage, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageOut, ProcessedMessageContent, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use tls_codec::Serialize as _;

use super::*;

const ROOM: &str = "!mailbox:hub.example";

struct Device {
    id: DeviceIdentity,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
}

impl Device {
    fn new(user: &str, device: &str) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(Suite::DEFAULT.ciphersuite().signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        Device { id: DeviceIdentity::new(user, device), provider, signer }
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey { credential: self.id.credential(), signature_key: self.signer.public().into() }
    }

    fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .build(Suite::DEFAULT.ciphersuite(), &self.provider, &self.signer, self.credential())
            .unwrap()
            .key_package()
            .clone()
    }

    fn create_group(&self, server: Option<&ServerSigner>) -> MlsGroup {
        let mut builder = MlsGroupCreateConfig::builder()
            .ciphersuite(Suite::DEFAULT.ciphersuite())
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true);
        if let Some(server) = server {
            builder = builder.with_group_context_extensions(
                Extensions::single(Extension::ExternalSenders(vec![server.external_sender()])).unwrap(),
            );
        }
        MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &builder.build(),
            GroupId::from_slice(ROOM.as_bytes()),
            self.credential(),
        )
        .unwrap()
    }

    fn group_info(&self, group: &MlsGroup) -> String {
        b64(&group.export_group_info(self.provider.crypto(), &self.signer, true).unwrap())
    }

    fn join(&self, welcome: &str) -> MlsGroup {
        let MlsMessageBodyIn::Welcome(welcome) = decode_message(welcome).unwrap().extract() else { panic!("welcome") };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap()
    }
}

fn b64(message: &MlsMessageOut) -> String {
    codec::encode(&message.tls_serialize_detached().unwrap())
}

/// A commit adding `devices`, as (commit, welcome, group info of the next epoch); left pending.
fn add(adder: &Device, group: &mut MlsGroup, devices: &[&Device]) -> (String, String, String) {
    let packages: Vec<KeyPackage> = devices.iter().map(|d| d.key_package()).collect();
    let (commit, welcome, info) = group.add_members(&adder.provider, &adder.signer, &packages).unwrap();
    let info = info.expect("a GroupInfo with the commit");
    (b64(&commit), b64(&welcome), codec::encode(&MlsMessageOut::from(info).tls_serialize_detached().unwrap()))
}

/// A commit updating `device`'s own leaf, as (commit, group info of the next epoch); left pending.
fn self_update(device: &Device, group: &mut MlsGroup) -> (String, String) {
    let (commit, _, info) =
        group.self_update(&device.provider, &device.signer, Default::default()).unwrap().into_messages();
    (b64(&commit), codec::encode(&info.unwrap().tls_serialize_detached().unwrap()))
}

fn hub_with(alice: &Device, server: &ServerSigner) -> (MlsGroup, DsGroup) {
    let group = alice.create_group(Some(server));
    let ds = DsGroup::create(ROOM, &alice.group_info(&group), &alice.id, server).expect("group accepted");
    (group, ds)
}

#[test]
fn a_commit_is_accepted_once_per_epoch_and_its_welcome_reaches_exactly_the_added_devices() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let bob = Device::new("@bob:other.example", "B1");
    let carol = Device::new("@carol:other.example", "C1");
    let (mut group, mut ds) = hub_with(&alice, &server);
    assert_eq!(ds.epoch(), 0);
    assert_eq!(ds.members(), vec![(0, alice.id.clone())]);

    let (commit, welcome, info) = add(&alice, &mut group, &[&bob, &carol]);
    let accepted = ds
        .accept_commit(&server.external_sender(), &commit, &info, Some(&welcome), "@alice:hub.example", Some("A1"))
        .unwrap();
    assert_eq!(accepted.epoch, 1);
    assert_eq!(accepted.added, vec![bob.id.clone(), carol.id.clone()]);
    assert_eq!(accepted.welcome_recipients, vec![bob.id.clone(), carol.id.clone()]);
    assert!(accepted.removed.is_empty());
    assert_eq!(ds.epoch(), 1, "an accepted commit moves the group to its epoch");

    // The same commit again, or any other commit for epoch 0, is stale now.
    let mut next = DsGroup::load(ROOM, &ds.to_bytes()).expect("state round trip");
    assert_eq!(next.epoch(), 1);
    assert_eq!(next.members().len(), 3);
    match next.accept_commit(&server.external_sender(), &commit, &info, None, "@alice:hub.example", Some("A1")) {
        Err(DsError::WrongEpoch { current: 1, got: 0 }) => {}
        other => panic!("expected a stale epoch, got {other:?}"),
    }

    // The members agree with the hub: Bob joins from the Welcome at the hub's epoch.
    group.merge_pending_commit(&alice.provider).unwrap();
    let bob_group = bob.join(&welcome);
    assert_eq!(bob_group.epoch().as_u64(), next.epoch());
}

#[test]
fn commits_that_are_not_valid_are_refused_and_the_epoch_stays() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let bob = Device::new("@bob:other.example", "B1");
    let (mut group, mut ds) = hub_with(&alice, &server);

    // A commit by a forged group with the same id: its signer is no member the hub knows.
    let mallory = Device::new("@alice:hub.example", "A1");
    let mut forged = mallory.create_group(Some(&server));
    let (commit, _, info) = add(&mallory, &mut forged, &[&bob]);
    match ds.accept_commit(&server.external_sender(), &commit, &info, None, "@alice:hub.example", Some("A1")) {
        Err(DsError::InvalidCommit(_)) => {}
        other => panic!("expected an invalid commit, got {other:?}"),
    }

    // A real commit submitted by someone else than its signer.
    let (commit, welcome, info) = add(&alice, &mut group, &[&bob]);
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), &commit, &info, None, "@bob:other.example", None),
        Err(DsError::SenderMismatch)
    ));
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), &commit, &info, None, "@alice:hub.example", Some("A2")),
        Err(DsError::SenderMismatch)
    ));
    // With the GroupInfo of the wrong epoch.
    let old_info = alice.group_info(&group);
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), &commit, &old_info, None, "@alice:hub.example", Some("A1")),
        Err(DsError::InvalidGroupInfo(_))
    ));
    // Garbage, a Welcome in place of a commit, a commit for another group.
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), "not base64!", &info, None, "@alice:hub.example", None),
        Err(DsError::Malformed(_))
    ));
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), &welcome, &info, None, "@alice:hub.example", None),
        Err(DsError::Unsupported(_))
    ));
    let mut elsewhere = DsGroup::create(
        "!other:hub.example",
        &{
            let provider = &alice.provider;
            let other = MlsGroup::new_with_group_id(
                provider,
                &alice.signer,
                &MlsGroupCreateConfig::builder()
                    .ciphersuite(Suite::DEFAULT.ciphersuite())
                    .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
                    .use_ratchet_tree_extension(true)
                    .with_group_context_extensions(
                        Extensions::single(Extension::ExternalSenders(vec![server.external_sender()])).unwrap(),
                    )
                    .build(),
                GroupId::from_slice(b"!other:hub.example"),
                alice.credential(),
            )
            .unwrap();
            alice.group_info(&other)
        },
        &alice.id,
        &server,
    )
    .unwrap();
    assert!(matches!(
        elsewhere.accept_commit(&server.external_sender(), &commit, &info, None, "@alice:hub.example", None),
        Err(DsError::GroupMismatch)
    ));
    assert_eq!(ds.epoch(), 0);
    // And the real one still goes through afterwards.
    ds.accept_commit(&server.external_sender(), &commit, &info, Some(&welcome), "@alice:hub.example", Some("A1"))
        .unwrap();
}

#[test]
fn a_welcome_for_devices_the_commit_does_not_add_is_refused() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let bob = Device::new("@bob:other.example", "B1");
    let carol = Device::new("@carol:other.example", "C1");
    let (mut group, mut ds) = hub_with(&alice, &server);
    // A Welcome from another (never submitted) commit that adds Carol.
    let alice_elsewhere = Device::new("@alice:hub.example", "A1");
    let mut side = alice_elsewhere.create_group(Some(&server));
    let (_, foreign_welcome, _) = add(&alice_elsewhere, &mut side, &[&carol]);
    let (commit, _, info) = add(&alice, &mut group, &[&bob]);
    assert!(matches!(
        ds.accept_commit(
            &server.external_sender(),
            &commit,
            &info,
            Some(&foreign_welcome),
            "@alice:hub.example",
            Some("A1")
        ),
        Err(DsError::InvalidWelcome(_))
    ));
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), &commit, &info, Some(&commit), "@alice:hub.example", Some("A1")),
        Err(DsError::InvalidWelcome(_))
    ));
}

#[test]
fn application_messages_must_be_private_at_the_current_epoch() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let bob = Device::new("@bob:other.example", "B1");
    let (mut group, mut ds) = hub_with(&alice, &server);
    let at_zero = b64(&group.create_message(&alice.provider, &alice.signer, b"epoch zero").unwrap());
    check_application_message(ROOM, ds.epoch(), &at_zero).expect("current epoch");

    let (commit, _, info) = add(&alice, &mut group, &[&bob]);
    ds.accept_commit(&server.external_sender(), &commit, &info, None, "@alice:hub.example", Some("A1")).unwrap();
    group.merge_pending_commit(&alice.provider).unwrap();
    match check_application_message(ROOM, ds.epoch(), &at_zero) {
        Err(DsError::WrongEpoch { current: 1, got: 0 }) => {}
        other => panic!("expected a stale epoch, got {other:?}"),
    }
    let at_one = b64(&group.create_message(&alice.provider, &alice.signer, b"epoch one").unwrap());
    check_application_message(ROOM, ds.epoch(), &at_one).expect("current epoch");
    assert!(matches!(check_application_message(ROOM, ds.epoch(), &commit), Err(DsError::Unsupported(_))));
    assert!(matches!(check_application_message(ROOM, 1, "AAAA"), Err(DsError::Malformed(_))));
}

#[test]
fn the_server_proposes_removals_and_the_next_commit_must_carry_them_out() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let bob = Device::new("@bob:other.example", "B1");
    let carol = Device::new("@carol:other.example", "C1");
    let (mut group, mut ds) = hub_with(&alice, &server);
    let (commit, welcome, info) = add(&alice, &mut group, &[&bob, &carol]);
    ds.accept_commit(&server.external_sender(), &commit, &info, Some(&welcome), "@alice:hub.example", Some("A1"))
        .unwrap();
    group.merge_pending_commit(&alice.provider).unwrap();
    let mut bob_group = bob.join(&welcome);

    let proposals = ds.propose_removals(std::slice::from_ref(&carol.id), &server).unwrap();
    assert_eq!(proposals.len(), 1);
    assert!(ds.propose_removals(std::slice::from_ref(&carol.id), &server).unwrap().is_empty(), "proposed once");
    let mut ds = DsGroup::load(ROOM, &ds.to_bytes()).expect("queued proposals survive a reload");

    // A commit that ignores the proposal (Alice updates herself) is refused.
    let (update, update_info) = self_update(&alice, &mut group);
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), &update, &update_info, None, "@alice:hub.example", Some("A1")),
        Err(DsError::PendingProposals(1))
    ));
    group.clear_pending_commit(alice.provider.storage()).unwrap();

    // Bob takes the proposal in and commits it.
    let message = decode_message(&proposals[0]).unwrap().try_into_protocol_message().unwrap();
    let processed = bob_group.process_message(&bob.provider, message).unwrap();
    let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else { panic!("a proposal") };
    bob_group.store_pending_proposal(bob.provider.storage(), *queued).unwrap();
    let (commit, _, info) = bob_group.commit_to_pending_proposals(&bob.provider, &bob.signer).unwrap();
    let info = codec::encode(&MlsMessageOut::from(info.unwrap()).tls_serialize_detached().unwrap());
    let accepted = ds
        .accept_commit(&server.external_sender(), &b64(&commit), &info, None, "@bob:other.example", Some("B1"))
        .unwrap();
    assert_eq!(accepted.removed, vec![carol.id.clone()]);
    assert_eq!(accepted.epoch, 2);
    assert!(!ds.members().iter().any(|(_, id)| id == &carol.id));
}

#[test]
fn a_new_group_must_be_the_creators_alone_and_name_the_server() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let bob = Device::new("@bob:other.example", "B1");
    let alice_without = Device::new("@alice:hub.example", "A1");
    let without = alice_without.create_group(None);
    assert!(matches!(
        DsGroup::create(ROOM, &alice_without.group_info(&without), &alice.id, &server),
        Err(DsError::InvalidGroupInfo(_))
    ));
    let group = alice.create_group(Some(&server));
    assert!(matches!(
        DsGroup::create(ROOM, &alice.group_info(&group), &bob.id, &server),
        Err(DsError::InvalidGroupInfo(_))
    ));
    assert!(matches!(
        DsGroup::create("!elsewhere:hub.example", &alice.group_info(&group), &alice.id, &server),
        Err(DsError::GroupMismatch)
    ));
    let other_server = ServerSigner::generate("hub.example").unwrap();
    assert!(matches!(
        DsGroup::create(ROOM, &alice.group_info(&group), &alice.id, &other_server),
        Err(DsError::InvalidGroupInfo(_))
    ));
    let restored = ServerSigner::from_bytes("hub.example", &server.to_bytes()).unwrap();
    DsGroup::create(ROOM, &alice.group_info(&group), &alice.id, &restored).expect("the same key after a restart");
}

#[test]
fn the_group_info_must_be_the_committers() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let bob = Device::new("@bob:other.example", "B1");
    let (mut group, mut ds) = hub_with(&alice, &server);
    let (commit, welcome, info) = add(&alice, &mut group, &[&bob]);
    ds.accept_commit(&server.external_sender(), &commit, &info, Some(&welcome), "@alice:hub.example", Some("A1"))
        .unwrap();
    group.merge_pending_commit(&alice.provider).unwrap();
    let mut bob_group = bob.join(&welcome);

    let (update, update_info) = self_update(&alice, &mut group);
    // Bob applies Alice's commit and signs a GroupInfo of the same epoch and context himself.
    let message = decode_message(&update).unwrap().try_into_protocol_message().unwrap();
    let ProcessedMessageContent::StagedCommitMessage(staged) =
        bob_group.process_message(&bob.provider, message).unwrap().into_content()
    else {
        panic!("a commit")
    };
    bob_group.merge_staged_commit(&bob.provider, *staged).unwrap();
    let bobs_info = bob.group_info(&bob_group);
    assert!(matches!(
        ds.accept_commit(&server.external_sender(), &update, &bobs_info, None, "@alice:hub.example", Some("A1")),
        Err(DsError::InvalidGroupInfo(_))
    ));
    ds.accept_commit(&server.external_sender(), &update, &update_info, None, "@alice:hub.example", Some("A1"))
        .expect("Alice's own");
}

#[test]
fn a_commit_that_drops_the_server_as_external_sender_is_refused_and_changes_nothing() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let (mut group, mut ds) = hub_with(&alice, &server);
    let before = ds.to_bytes();
    let (commit, _, info) =
        group.update_group_context_extensions(&alice.provider, Extensions::empty(), &alice.signer).unwrap();
    let info = codec::encode(&MlsMessageOut::from(info.unwrap()).tls_serialize_detached().unwrap());
    match ds.accept_commit(&server.external_sender(), &b64(&commit), &info, None, "@alice:hub.example", Some("A1")) {
        Err(DsError::InvalidCommit(reason)) => assert!(reason.contains("external senders"), "{reason}"),
        other => panic!("expected the commit refused, got {other:?}"),
    }
    assert_eq!(ds.epoch(), 0);
    assert_eq!(ds.to_bytes(), before, "a refused commit leaves the group as it was");
}

#[test]
fn the_stored_state_is_compact_and_states_of_the_earlier_format_still_load() {
    let server = ServerSigner::generate("hub.example").unwrap();
    let alice = Device::new("@alice:hub.example", "A1");
    let others: Vec<Device> = (0..30).map(|i| Device::new(&format!("@u{i}:other.example"), "D")).collect();
    let (mut group, mut ds) = hub_with(&alice, &server);
    let (commit, welcome, info) = add(&alice, &mut group, &others.iter().collect::<Vec<_>>());
    ds.accept_commit(&server.external_sender(), &commit, &info, Some(&welcome), "@alice:hub.example", Some("A1"))
        .unwrap();
    group.merge_pending_commit(&alice.provider).unwrap();
    let proposals = ds.propose_removals(std::slice::from_ref(&others[3].id), &server).unwrap();

    // The same group as openmls' in-memory storage kept it (JSON values), the earlier format.
    let MlsMessageBodyIn::GroupInfo(group_info) = decode_message(&info).unwrap().extract() else { panic!("info") };
    let tree = group_info.extensions().ratchet_tree().unwrap().ratchet_tree().clone();
    let memory = openmls_memory_storage::MemoryStorage::default();
    let (mut public, _) =
        PublicGroup::from_external(&RustCrypto::default(), &memory, tree, group_info, ProposalStore::new()).unwrap();
    let proposal = decode_message(&proposals[0]).unwrap().try_into_protocol_message().unwrap();
    let processed = public.process_message(&RustCrypto::default(), proposal).unwrap();
    let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else { panic!("a proposal") };
    public.add_proposal(&memory, *queued).unwrap();
    let legacy = codec::storage_to_bytes(&memory);

    let compact = ds.to_bytes();
    let tree_size = ds.ratchet_tree().len();
    assert!(compact.len() < tree_size * 2, "state {} bytes for a tree of {tree_size}", compact.len());
    assert!(compact.len() * 2 < legacy.len(), "compact {} bytes, earlier format {}", compact.len(), legacy.len());

    let mut from_legacy = DsGroup::load(ROOM, &legacy).expect("a state of the earlier format loads");
    assert_eq!(from_legacy.to_bytes(), compact, "both formats hold the same group");
    assert_eq!(from_legacy.members(), ds.members());
    // And the group goes on from it: the next commit must carry the queued removal.
    let (update, update_info) = self_update(&alice, &mut group);
    assert!(matches!(
        from_legacy.accept_commit(
            &server.external_sender(),
            &update,
            &update_info,
            None,
            "@alice:hub.example",
            Some("A1")
        ),
        Err(DsError::PendingProposals(1))
    ));
    assert!(DsGroup::load(ROOM, &compact[..compact.len() - 1]).is_err(), "a cut state is refused");
}
