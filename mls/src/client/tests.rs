//! Devices in one process, each with its own state directory, talking through the strings the
//! server would carry. The hub's single rule (one commit per epoch) is the `Hub` below.

use openmls::prelude::{ExternalProposal, GroupEpoch, GroupId, LeafNodeIndex, SenderExtensionIndex};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tempfile::TempDir;
use tls_codec::Serialize as _;

use super::{CommitBundle, ExternalSenderInfo, MlsClientError, MlsDevice};
use crate::key_package::validate_upload;
use crate::{DeviceIdentity, Suite, codec};

const ROOM: &str = "!mailbox:example.org";

/// Orders commits the way the hub does: the first commit for the next epoch wins.
struct Hub {
    epoch: u64,
}

impl Hub {
    fn submit(&mut self, bundle: &CommitBundle) -> bool {
        let accepted = bundle.epoch == self.epoch + 1;
        if accepted {
            self.epoch += 1;
        }
        accepted
    }
}

fn device(user: &str, device_id: &str) -> (TempDir, MlsDevice) {
    let dir = TempDir::new().expect("temporary directory");
    let device = MlsDevice::open(dir.path(), DeviceIdentity::new(user, device_id)).expect("open device");
    (dir, device)
}

/// One KeyPackage of `device`, as the server would hand it to a claimer.
fn claim(device: &mut MlsDevice, suite: Suite) -> String {
    device.key_packages(suite, 1).expect("key package").remove(0).1
}

/// `adder` adds `joiners` through the hub; every one of `others` applies the commit; the
/// joiners join from the Welcome.
fn add(adder: &mut MlsDevice, joiners: &mut [&mut MlsDevice], others: &mut [&mut MlsDevice], hub: &mut Hub) {
    let suite = adder.suite(ROOM).expect("suite");
    let key_packages: Vec<String> = joiners.iter_mut().map(|j| claim(j, suite)).collect();
    let bundle = adder.add_members(ROOM, &key_packages).expect("add");
    assert!(hub.submit(&bundle));
    let outcome = adder.process_commit(ROOM, &bundle.commit).expect("own echo");
    assert!(outcome.own);
    assert_eq!(outcome.added.len(), joiners.len());
    for other in others.iter_mut() {
        let outcome = other.process_commit(ROOM, &bundle.commit).expect("apply add");
        assert!(!outcome.own);
        assert_eq!(outcome.committer.as_ref(), Some(adder.identity()));
    }
    let welcome = bundle.welcome.expect("welcome");
    for joiner in joiners.iter_mut() {
        assert_eq!(joiner.join_from_welcome(&welcome).expect("join"), ROOM);
    }
}

/// A room of Alice and Bob at epoch 1, with `external_senders` listed.
fn alice_and_bob(
    suite: Suite,
    external_senders: &[ExternalSenderInfo],
) -> (Hub, (TempDir, MlsDevice), (TempDir, MlsDevice)) {
    let mut hub = Hub { epoch: 0 };
    let (alice_dir, mut alice) = device("@alice:example.org", "ALICE1");
    let (bob_dir, mut bob) = device("@bob:example.org", "BOB1");
    let group_info = alice.create_group(ROOM, suite, external_senders).expect("create group");
    assert!(codec::decode(&group_info).is_some());
    add(&mut alice, &mut [&mut bob], &mut [], &mut hub);
    (hub, (alice_dir, alice), (bob_dir, bob))
}

/// The server's signature keys and how it publishes itself as external sender.
fn ds_sender() -> (SignatureKeyPair, ExternalSenderInfo) {
    let keys = SignatureKeyPair::new(Suite::DEFAULT.ciphersuite().signature_algorithm()).unwrap();
    let credential = DeviceIdentity::new("@server:example.org", "DS").credential();
    let info = ExternalSenderInfo {
        signature_key: codec::encode(keys.public()),
        credential: codec::encode(&credential.tls_serialize_detached().unwrap()),
    };
    (keys, info)
}

/// The server's proposal to remove the device at `leaf`, signed with `keys`.
fn remove_proposal(keys: &SignatureKeyPair, leaf: usize, epoch: u64) -> String {
    let proposal = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
        LeafNodeIndex::new(leaf as u32),
        GroupId::from_slice(ROOM.as_bytes()),
        GroupEpoch::from(epoch),
        keys,
        SenderExtensionIndex::new(0),
    )
    .unwrap();
    codec::encode(&proposal.tls_serialize_detached().unwrap())
}

fn send(from: &mut MlsDevice, to: &mut MlsDevice, text: &str) {
    let ciphertext = from.encrypt(ROOM, text.as_bytes()).expect("encrypt");
    let received = to.decrypt(ROOM, &ciphertext).expect("decrypt");
    assert_eq!(received.plaintext, text.as_bytes());
    assert_eq!(&received.sender, from.identity());
}

#[test]
fn two_devices_join_and_talk_both_ways() {
    let (_hub, (_a, mut alice), (_b, mut bob)) = alice_and_bob(Suite::DEFAULT, &[]);

    assert_eq!(alice.epoch(ROOM).unwrap(), 1);
    assert_eq!(bob.epoch(ROOM).unwrap(), 1);
    assert_eq!(alice.members(ROOM).unwrap(), vec![alice.identity().clone(), bob.identity().clone()]);
    assert_eq!(bob.members(ROOM).unwrap(), alice.members(ROOM).unwrap());
    assert_eq!(bob.rooms(), vec![ROOM.to_owned()]);

    send(&mut alice, &mut bob, "Ihr Bescheid liegt vor.");
    send(&mut bob, &mut alice, "Danke.");
    send(&mut bob, &mut alice, "Eine Rückfrage.");

    // A device whose one-time keys ran out is added with its last-resort KeyPackage.
    let (_c, mut carol) = device("@carol:example.org", "CAROL1");
    let (_, fallback) = carol.last_resort_key_package(Suite::DEFAULT).unwrap();
    let bundle = alice.add_members(ROOM, &[fallback]).unwrap();
    alice.commit_accepted(ROOM).unwrap();
    bob.process_commit(ROOM, &bundle.commit).unwrap();
    carol.join_from_welcome(&bundle.welcome.unwrap()).unwrap();
    send(&mut carol, &mut bob, "Guten Tag.");

    let own = alice.encrypt(ROOM, b"echo").unwrap();
    assert!(matches!(alice.decrypt(ROOM, &own), Err(MlsClientError::OwnMessage)));
    assert!(matches!(bob.decrypt(ROOM, "not base64!"), Err(MlsClientError::Malformed(_))));
    assert!(matches!(bob.decrypt(ROOM, &codec::encode(b"\x00\x01garbage")), Err(MlsClientError::Malformed(_))));
    assert!(matches!(bob.decrypt("!other:example.org", &own), Err(MlsClientError::UnknownRoom(_))));
}

#[test]
fn key_packages_pass_the_servers_upload_checks() {
    let (_d, mut dev) = device("@alice:example.org", "ALICE1");
    let now = super::now_secs();
    for suite in [Suite::DEFAULT, Suite::PQ_HYBRID] {
        let packages = dev.key_packages(suite, 3).unwrap();
        assert_eq!(packages.len(), 3);
        for (key_id, value) in &packages {
            let (algorithm, name) = key_id.rsplit_once(':').unwrap();
            let valid = validate_upload(algorithm, name, value, dev.identity(), false, now).unwrap();
            assert_eq!(valid.suite, suite);
            let signature_key = valid.key_package.leaf_node().signature_key().as_slice().to_vec();
            assert_eq!(signature_key, dev.signature_public_key(suite).unwrap());
        }
        let (key_id, value) = dev.last_resort_key_package(suite).unwrap();
        let (algorithm, name) = key_id.rsplit_once(':').unwrap();
        validate_upload(algorithm, name, &value, dev.identity(), true, now).unwrap();
    }
    assert_eq!(dev.signature_public_key(Suite::DEFAULT).unwrap().len(), 32);
}

#[test]
fn a_stale_commit_is_rejected_then_rebuilt_on_the_winner() {
    let (mut hub, (_a, mut alice), (_b, mut bob)) = alice_and_bob(Suite::DEFAULT, &[]);
    let (_c, mut carol) = device("@carol:example.org", "CAROL1");

    // Both commit at epoch 1; Bob's reaches the hub first.
    let carol_package = claim(&mut carol, Suite::DEFAULT);
    let alices = alice.add_members(ROOM, std::slice::from_ref(&carol_package)).unwrap();
    let bobs = bob.self_update(ROOM).unwrap();
    assert!(alice.has_pending_commit(ROOM).unwrap());
    assert!(matches!(alice.encrypt(ROOM, b"x"), Err(MlsClientError::CommitPending)));
    assert!(matches!(alice.self_update(ROOM), Err(MlsClientError::CommitPending)));
    assert!(hub.submit(&bobs));
    assert!(!hub.submit(&alices));

    alice.commit_rejected(ROOM).unwrap();
    assert!(!alice.has_pending_commit(ROOM).unwrap());
    let winner = alice.process_commit(ROOM, &bobs.commit).unwrap();
    assert!(!winner.own);
    assert_eq!(winner.epoch, 2);
    assert_eq!(winner.committer.as_ref(), Some(bob.identity()));
    assert!(bob.process_commit(ROOM, &bobs.commit).unwrap().own);
    // The loser's commit, were it delivered anyway, is from a past epoch.
    assert!(bob.process_commit(ROOM, &alices.commit).unwrap().already_applied);

    let retried = alice.add_members(ROOM, &[carol_package]).unwrap();
    assert_eq!(retried.epoch, 3);
    assert!(hub.submit(&retried));
    alice.commit_accepted(ROOM).unwrap();
    assert!(matches!(alice.commit_accepted(ROOM), Err(MlsClientError::NoPendingCommit)));
    let seen = bob.process_commit(ROOM, &retried.commit).unwrap();
    assert_eq!(seen.added, vec![carol.identity().clone()]);
    carol.join_from_welcome(retried.welcome.as_deref().unwrap()).unwrap();

    send(&mut carol, &mut alice, "hallo");
    send(&mut alice, &mut bob, "hallo");
    send(&mut bob, &mut carol, "hallo");
}

#[test]
fn a_pending_commit_that_lost_is_dropped_when_the_winner_is_applied() {
    let (mut hub, (_a, mut alice), (_b, mut bob)) = alice_and_bob(Suite::DEFAULT, &[]);
    let _lost = alice.self_update(ROOM).unwrap();
    let won = bob.self_update(ROOM).unwrap();
    assert!(hub.submit(&won));
    // Alice sees the winner in /sync before the server's 409 reaches her.
    assert!(!alice.process_commit(ROOM, &won.commit).unwrap().own);
    assert!(!alice.has_pending_commit(ROOM).unwrap());
    bob.commit_accepted(ROOM).unwrap();
    send(&mut alice, &mut bob, "still in step");
}

#[test]
fn a_removed_device_cannot_read_what_follows() {
    let (mut hub, (_a, mut alice), (_b, mut bob)) = alice_and_bob(Suite::DEFAULT, &[]);
    let (carol_dir, mut carol) = device("@carol:example.org", "CAROL1");
    add(&mut alice, &mut [&mut carol], &mut [&mut bob], &mut hub);
    send(&mut alice, &mut carol, "before");

    // A copy of Carol's state as an attacker who stole it would hold.
    let stolen = TempDir::new().unwrap();
    std::fs::copy(carol_dir.path().join("mls-state.json"), stolen.path().join("mls-state.json")).unwrap();

    let removal = alice.remove_devices(ROOM, &[carol.identity().clone()]).unwrap();
    assert!(removal.welcome.is_none());
    assert!(hub.submit(&removal));
    alice.process_commit(ROOM, &removal.commit).unwrap();
    let at_bob = bob.process_commit(ROOM, &removal.commit).unwrap();
    assert_eq!(at_bob.removed, vec![carol.identity().clone()]);
    let at_carol = carol.process_commit(ROOM, &removal.commit).unwrap();
    assert!(at_carol.removed_self);
    assert!(carol.rooms().is_empty());

    let after = alice.encrypt(ROOM, b"after").unwrap();
    assert_eq!(bob.decrypt(ROOM, &after).unwrap().plaintext, b"after");
    assert!(matches!(carol.decrypt(ROOM, &after), Err(MlsClientError::UnknownRoom(_))));

    // The stolen state is one epoch behind and stays there: the new epoch's secrets were never
    // encrypted to Carol's leaf.
    drop(carol);
    let mut thief = MlsDevice::open(stolen.path(), DeviceIdentity::new("@carol:example.org", "CAROL1")).unwrap();
    assert!(matches!(thief.decrypt(ROOM, &after), Err(MlsClientError::WrongEpoch { message: 3, group: 2 })));
    assert!(thief.process_commit(ROOM, &removal.commit).unwrap().removed_self);
    assert!(thief.decrypt(ROOM, &after).is_err());

    assert!(matches!(
        alice.remove_devices(ROOM, &[DeviceIdentity::new("@carol:example.org", "CAROL1")]),
        Err(MlsClientError::NotAMember(_))
    ));
}

#[test]
fn removing_a_user_removes_all_their_devices() {
    let (mut hub, (_a, mut alice), (_b1, mut phone)) = alice_and_bob(Suite::DEFAULT, &[]);
    let (_b2, mut laptop) = device("@bob:example.org", "LAPTOP");
    add(&mut alice, &mut [&mut laptop], &mut [&mut phone], &mut hub);
    assert_eq!(alice.members(ROOM).unwrap().len(), 3);
    let removal = alice.remove_user(ROOM, "@bob:example.org").unwrap();
    assert!(hub.submit(&removal));
    alice.commit_accepted(ROOM).unwrap();
    assert_eq!(alice.members(ROOM).unwrap(), vec![alice.identity().clone()]);
    assert!(phone.process_commit(ROOM, &removal.commit).unwrap().removed_self);
    assert!(matches!(alice.remove_user(ROOM, "@bob:example.org"), Err(MlsClientError::NotAMember(_))));
}

#[test]
fn a_servers_remove_proposal_is_committed_by_a_member() {
    let (server_keys, server) = ds_sender();
    let (mut hub, (_a, mut alice), (_b, mut bob)) = alice_and_bob(Suite::DEFAULT, &[server]);
    let (_c, mut carol) = device("@carol:example.org", "CAROL1");
    add(&mut alice, &mut [&mut carol], &mut [&mut bob], &mut hub);

    // Carol's device was deleted: the server proposes her removal.
    let carol_leaf = alice.members(ROOM).unwrap().iter().position(|d| d == carol.identity()).unwrap();
    let proposal = remove_proposal(&server_keys, carol_leaf, hub.epoch);
    let bundle = bob.commit_proposals(ROOM, std::slice::from_ref(&proposal)).unwrap();
    assert!(hub.submit(&bundle));
    let outcome = bob.process_commit(ROOM, &bundle.commit).unwrap();
    assert!(outcome.own);
    assert_eq!(outcome.removed, vec![carol.identity().clone()]);
    // Alice never saw the proposal: it travels inside the commit.
    assert_eq!(alice.process_commit(ROOM, &bundle.commit).unwrap().removed, vec![carol.identity().clone()]);
    assert!(carol.process_commit(ROOM, &bundle.commit).unwrap().removed_self);
    send(&mut alice, &mut bob, "without carol");

    // A proposal signed by anyone but the listed external sender is refused.
    let (impostor, _) = ds_sender();
    let forged = remove_proposal(&impostor, 0, hub.epoch);
    assert!(alice.receive_proposals(ROOM, &[forged]).is_err());
    // And a proposal of a past epoch is refused as such.
    assert!(matches!(alice.receive_proposals(ROOM, &[proposal]), Err(MlsClientError::WrongEpoch { .. })));
}

#[test]
fn a_server_proposal_rides_along_with_an_add() {
    let (server_keys, server) = ds_sender();
    let (mut hub, (_a, mut alice), (_b, bob)) = alice_and_bob(Suite::DEFAULT, &[server]);
    let (_d, mut dave) = device("@dave:example.org", "DAVE1");

    // The server answered the first attempt with its pending proposal; the retry carries it.
    let proposal = remove_proposal(&server_keys, 1, hub.epoch);
    let dave_package = claim(&mut dave, Suite::DEFAULT);
    let first = alice.add_members(ROOM, std::slice::from_ref(&dave_package)).unwrap();
    alice.commit_rejected(ROOM).unwrap();
    alice.receive_proposals(ROOM, &[proposal]).unwrap();
    let retried = alice.add_members(ROOM, &[dave_package]).unwrap();
    assert_ne!(first.commit, retried.commit);
    assert!(hub.submit(&retried));
    let outcome = alice.process_commit(ROOM, &retried.commit).unwrap();
    assert_eq!(outcome.added, vec![dave.identity().clone()]);
    assert_eq!(outcome.removed, vec![bob.identity().clone()]);
    dave.join_from_welcome(&retried.welcome.unwrap()).unwrap();
    send(&mut dave, &mut alice, "hallo");
}

#[test]
fn state_survives_a_restart() {
    let (mut hub, (alice_dir, mut alice), (bob_dir, mut bob)) = alice_and_bob(Suite::DEFAULT, &[]);
    send(&mut alice, &mut bob, "one");

    // A KeyPackage uploaded before the restart is still usable after it.
    let (_c, mut carol) = device("@carol:example.org", "CAROL1");
    let carol_package = claim(&mut carol, Suite::DEFAULT);
    let carol_dir = TempDir::new().unwrap();
    drop(carol);
    std::fs::copy(_c.path().join("mls-state.json"), carol_dir.path().join("mls-state.json")).unwrap();

    // A pending commit survives too, and its echo is recognised afterwards.
    let pending = alice.add_members(ROOM, &[carol_package]).unwrap();
    let public_key = alice.signature_public_key(Suite::DEFAULT).unwrap();
    drop(alice);
    drop(bob);

    let alice_id = DeviceIdentity::new("@alice:example.org", "ALICE1");
    assert!(matches!(
        MlsDevice::open(alice_dir.path(), DeviceIdentity::new("@mallory:example.org", "M")),
        Err(MlsClientError::IdentityMismatch(_))
    ));
    let mut alice = MlsDevice::open(alice_dir.path(), alice_id.clone()).unwrap();
    assert!(matches!(MlsDevice::open(alice_dir.path(), alice_id), Err(MlsClientError::Locked)));
    let mut bob = MlsDevice::open(bob_dir.path(), DeviceIdentity::new("@bob:example.org", "BOB1")).unwrap();
    let mut carol = MlsDevice::open(carol_dir.path(), DeviceIdentity::new("@carol:example.org", "CAROL1")).unwrap();
    assert_eq!(alice.signature_public_key(Suite::DEFAULT).unwrap(), public_key);
    assert_eq!(alice.rooms(), vec![ROOM.to_owned()]);
    assert!(alice.has_pending_commit(ROOM).unwrap());

    assert!(hub.submit(&pending));
    assert!(alice.process_commit(ROOM, &pending.commit).unwrap().own);
    bob.process_commit(ROOM, &pending.commit).unwrap();
    carol.join_from_welcome(&pending.welcome.unwrap()).unwrap();
    send(&mut bob, &mut alice, "two");
    send(&mut alice, &mut carol, "three");
    send(&mut carol, &mut bob, "four");
    assert_eq!(alice.epoch(ROOM).unwrap(), 2);
}

#[test]
fn a_corrupt_state_file_is_an_error() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("mls-state.json"), b"{ not json").unwrap();
    let opened = MlsDevice::open(dir.path(), DeviceIdentity::new("@a:example.org", "A"));
    assert!(matches!(opened, Err(MlsClientError::CorruptState(_))));
}

#[test]
fn the_post_quantum_hybrid_suite_works_end_to_end() {
    let (mut hub, (_a, mut alice), (_b, mut bob)) = alice_and_bob(Suite::PQ_HYBRID, &[]);
    let (_c, mut carol) = device("@carol:example.org", "CAROL1");
    assert_eq!(alice.suite(ROOM).unwrap(), Suite::PQ_HYBRID);
    assert_eq!(bob.suite(ROOM).unwrap(), Suite::PQ_HYBRID);
    send(&mut alice, &mut bob, "quantensicher");
    send(&mut bob, &mut alice, "ja");
    add(&mut bob, &mut [&mut carol], &mut [&mut alice], &mut hub);
    send(&mut carol, &mut alice, "auch ich");

    // A KeyPackage of the classical suite does not fit a hybrid room.
    let (_d, mut dave) = device("@dave:example.org", "DAVE1");
    let classical = claim(&mut dave, Suite::DEFAULT);
    assert!(matches!(alice.add_members(ROOM, &[classical]), Err(MlsClientError::KeyPackageSuite)));
}
