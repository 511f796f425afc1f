//! MLS rooms (DESIGN §6) against a real server: KeyPackages as one-time and fallback keys, the
//! hub accepting exactly one commit per epoch, Welcomes released only for accepted commits,
//! application messages gated by epoch, server removal proposals, and no plaintext on the server.

use poststelle_mls::{DeviceIdentity, Suite};
use serde_json::{Value, json};
use spec_tests::{
    Account, ServerOptions, StatusCode, TestServer, assert_error,
    mls::{MlsTestDevice, cli, cli_listen},
};

mod large_commits;

const COMMIT_PATH: &str = "state/m.mls.commit/";

fn alg() -> String {
    Suite::DEFAULT.algorithm()
}

fn device_of(a: &Account) -> MlsTestDevice {
    MlsTestDevice::new(&a.user_id, &a.device_id, Suite::DEFAULT)
}

/// Uploads `n` one-time KeyPackages and a fallback one; returns the upload's counts.
async fn upload_key_packages(s: &TestServer, a: &Account, device: &MlsTestDevice, n: usize) -> Value {
    let one_time: serde_json::Map<String, Value> =
        (0..n).map(|_| device.key_package(false)).map(|(id, v)| (id, v.into())).collect();
    let (id, v) = device.key_package(true);
    let (status, body) = s
        .post("/_matrix/client/v3/keys/upload", a.token(), json!({"one_time_keys": one_time, "fallback_keys": {id: v}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["one_time_key_counts"].clone()
}

async fn claim(s: &TestServer, a: &Account, user: &str, device: &str) -> (String, String) {
    let (status, body) =
        s.post("/_matrix/client/v3/keys/claim", a.token(), json!({"one_time_keys": {user: {device: alg()}}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys = body["one_time_keys"][user][device].as_object().expect("a claimed key");
    let (id, value) = keys.iter().next().expect("one key");
    (id.clone(), value.as_str().expect("a base64 KeyPackage").to_owned())
}

async fn create_mls_room(s: &TestServer, a: &Account) -> String {
    let (status, body) = s
        .post(
            "/_matrix/client/v3/createRoom",
            a.token(),
            json!({"preset": "private_chat", "initial_state": [
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": alg()}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["room_id"].as_str().expect("room id").to_owned()
}

async fn put_commit(s: &TestServer, a: &Account, room: &str, body: Value) -> (StatusCode, Value) {
    s.put(&format!("/_matrix/client/v3/rooms/{room}/{COMMIT_PATH}"), a.token(), body).await
}

/// Creates the room's group on the hub with `device` as its only member.
async fn start_group(s: &TestServer, a: &Account, device: &mut MlsTestDevice, room: &str) -> String {
    let (status, sender) = s.get("/_matrix/client/unstable/de.poststelle/mls/external_sender", a.token()).await;
    assert_eq!(status, StatusCode::OK, "{sender}");
    let info = device.create_group(
        room,
        sender["signature_key"].as_str().expect("key"),
        sender["credential"].as_str().expect("credential"),
    );
    let (status, body) = put_commit(s, a, room, json!({"algorithm": alg(), "de.poststelle.group_info": info})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Starting the group again with the same GroupInfo is the same request.
    let again = put_commit(s, a, room, json!({"algorithm": alg(), "de.poststelle.group_info": info})).await;
    assert_eq!(again, (StatusCode::OK, body.clone()));
    body["event_id"].as_str().expect("event id").to_owned()
}

/// Syncs once from `since`; returns the response.
async fn sync(s: &TestServer, a: &Account, since: Option<&str>) -> Value {
    let path = match since {
        Some(t) => format!("/_matrix/client/v3/sync?since={t}&timeout=0"),
        None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
    };
    let (status, body) = s.get(&path, a.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The Welcomes in a sync response.
fn welcomes(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "de.poststelle.mls.welcome")
        .map(|e| e["content"].clone())
        .collect()
}

/// Waits (bounded) for a Welcome to reach `a`; returns it and the next sync token.
async fn next_welcome(s: &TestServer, a: &Account, since: Option<&str>) -> (Value, String) {
    let mut token = since.map(str::to_owned);
    for _ in 0..50 {
        let body = sync(s, a, token.as_deref()).await;
        token = body["next_batch"].as_str().map(str::to_owned);
        if let Some(w) = welcomes(&body).into_iter().next() {
            return (w, token.expect("next_batch"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no Welcome arrived");
}

/// The `m.room.encrypted` ciphertexts in a room's timeline, oldest first.
async fn ciphertexts(s: &TestServer, a: &Account, room: &str) -> Vec<String> {
    let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), a.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut out: Vec<String> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.encrypted")
        .map(|e| e["content"]["ciphertext"].as_str().expect("ciphertext").to_owned())
        .collect();
    out.reverse();
    out
}

async fn send_encrypted(s: &TestServer, a: &Account, room: &str, txn: &str, ciphertext: &str) -> (StatusCode, Value) {
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/{txn}"),
        a.token(),
        json!({"algorithm": alg(), "ciphertext": ciphertext}),
    )
    .await
}

async fn group_epoch(s: &TestServer, a: &Account, room: &str) -> u64 {
    let (status, body) =
        s.get(&format!("/_matrix/client/unstable/de.poststelle/rooms/{room}/mls/group_info"), a.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["epoch"].as_u64().expect("epoch")
}

/// Alice's room with Bob added (epoch 1) and joined from the Welcome.
struct TwoMembers {
    room: String,
    alice: Account,
    bob: Account,
    alice_mls: MlsTestDevice,
    bob_mls: MlsTestDevice,
}

async fn two_members(s: &TestServer) -> TwoMembers {
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let mut alice_mls = device_of(&alice);
    let mut bob_mls = device_of(&bob);
    upload_key_packages(s, &bob, &bob_mls, 3).await;
    let room = create_mls_room(s, &alice).await;
    start_group(s, &alice, &mut alice_mls, &room).await;
    let (status, body) = s
        .post(&format!("/_matrix/client/v3/rooms/{room}/invite"), alice.token(), json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, kp) = claim(s, &alice, &bob.user_id, &bob.device_id).await;
    let bundle = alice_mls.add(&room, &[kp]);
    let (status, body) = put_commit(s, &alice, &room, bundle.body(&alg(), true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice_mls.merge(&room);
    let (welcome, _) = next_welcome(s, &bob, None).await;
    assert_eq!(welcome["room_id"], room.as_str());
    assert_eq!(bob_mls.join(welcome["welcome"].as_str().expect("inline Welcome")), room);
    let (status, body) = s.post(&format!("/_matrix/client/v3/join/{room}"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    TwoMembers { room, alice, bob, alice_mls, bob_mls }
}

/// Upload validation, listing, counts in /sync, and 50 concurrent claims of 10 KeyPackages.
#[tokio::test]
async fn key_packages_are_validated_listed_counted_and_claimed_once() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let bob_mls = device_of(&bob);
    let counts = upload_key_packages(&s, &bob, &bob_mls, 10).await;
    assert_eq!(counts[alg()], 10, "{counts}");

    // Refused uploads, each 400 M_INVALID_PARAM, and nothing of them stored.
    let upload = |keys: Value| s.post("/_matrix/client/v3/keys/upload", bob.token(), keys);
    let other_device = MlsTestDevice::new(&bob.user_id, "NOTBOBS", Suite::DEFAULT).key_package(false);
    let other_user = MlsTestDevice::new(&alice.user_id, &bob.device_id, Suite::DEFAULT).key_package(false);
    let (good_id, good) = bob_mls.key_package(false);
    let (_, second) = bob_mls.key_package(false);
    let name = good_id.split_once(':').expect("id").1;
    let mut tampered = poststelle_mls::codec::decode(&good).expect("b64");
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    let tampered = poststelle_mls::codec::encode(&tampered);
    let expired = bob_mls.expired_key_package();
    let last_resort = bob_mls.key_package(true);
    for (what, keys) in [
        ("another device's credential", json!({"one_time_keys": {other_device.0: other_device.1}})),
        ("another user's credential", json!({"one_time_keys": {other_user.0: other_user.1}})),
        ("a bad signature", json!({"one_time_keys": {good_id.clone(): tampered}})),
        ("an expired lifetime", json!({"one_time_keys": {expired.0: expired.1}})),
        (
            "a wrong ciphersuite id",
            json!({"one_time_keys": {format!("{}:{name}", Suite::PQ_HYBRID.algorithm()): good}}),
        ),
        ("another KeyPackage's reference", json!({"one_time_keys": {good_id.clone(): second}})),
        ("an object instead of a KeyPackage", json!({"one_time_keys": {good_id.clone(): {"key": "abc"}}})),
        ("a last-resort one-time key", json!({"one_time_keys": {last_resort.0: last_resort.1}})),
        ("a fallback key that is not last-resort", json!({"fallback_keys": {good_id.clone(): good}})),
    ] {
        let refused = upload(keys).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        assert!(refused.1["error"].as_str().is_some(), "{what}");
    }

    let (status, listed) = s.get("/_matrix/client/v3/keys/list", bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["one_time_keys"].as_array().expect("ids").len(), 10, "{listed}");
    assert_eq!(listed["fallback_keys"].as_array().expect("ids").len(), 1, "{listed}");
    let body = sync(&s, &bob, None).await;
    assert_eq!(body["device_one_time_keys_count"][alg()], 10, "{}", body["device_one_time_keys_count"]);
    assert!(
        body["device_unused_fallback_key_types"].as_array().expect("types").iter().any(|t| t == &alg()),
        "{}",
        body["device_unused_fallback_key_types"]
    );

    // Claims need a shared room.
    let (_, room) = s.post("/_matrix/client/v3/createRoom", alice.token(), json!({"invite": [bob.user_id]})).await;
    assert!(room["room_id"].is_string(), "{room}");
    let claims = (0..50).map(|_| claim(&s, &alice, &bob.user_id, &bob.device_id));
    let claimed = futures_util::future::join_all(claims).await;
    let one_time: std::collections::BTreeSet<&str> =
        listed["one_time_keys"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let fallback_id = listed["fallback_keys"][0].as_str().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut fallbacks = 0;
    for (id, value) in &claimed {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        poststelle_mls::key_package::decode_and_verify(value, now).expect("a claimed KeyPackage verifies");
        if id == fallback_id {
            fallbacks += 1;
        } else {
            assert!(one_time.contains(id.as_str()), "{id} was not uploaded");
            assert!(seen.insert(id.clone()), "{id} was handed out twice");
        }
    }
    assert_eq!((seen.len(), fallbacks), (10, 40));
    let (_, listed) = s.get("/_matrix/client/v3/keys/list", bob.token()).await;
    assert_eq!(listed["one_time_keys"], json!([]));
}

/// A conversation in an MLS room: the creator starts the group, adds a member from a claimed
/// KeyPackage, the Welcome arrives only for that device, both exchange messages, and neither the
/// events nor anything else in the database holds a plaintext.
#[tokio::test]
async fn an_mls_room_carries_messages_the_server_cannot_read() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, bob, mut alice_mls, mut bob_mls } = two_members(&s).await;
    assert_eq!(alice_mls.epoch(&room), 1);
    assert_eq!(bob_mls.epoch(&room), 1);
    assert_eq!(group_epoch(&s, &bob, &room).await, 1);
    let outsider = s.register("carol", "pw").await;
    let (status, _) =
        s.get(&format!("/_matrix/client/unstable/de.poststelle/rooms/{room}/mls/group_info"), outsider.token()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let secrets = ["Bescheid über Ihren Antrag vom 3. März", "Vielen Dank, anbei die Unterlagen"];
    let c = alice_mls.encrypt(&room, secrets[0]);
    let (status, body) = send_encrypted(&s, &alice, &room, "m1", &c).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c = bob_mls.encrypt(&room, secrets[1]);
    let (status, body) = send_encrypted(&s, &bob, &room, "m2", &c).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = ciphertexts(&s, &bob, &room).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(bob_mls.decrypt(&room, &seen[0]).as_deref(), Some(secrets[0]));
    assert_eq!(alice_mls.decrypt(&room, &seen[1]).as_deref(), Some(secrets[1]));

    // Plaintext has no way in.
    let refused = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m3"),
            alice.token(),
            json!({"msgtype": "m.text", "body": "plain"}),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let refused = send_encrypted(&s, &alice, &room, "m4", &alice_mls.self_update(&room).commit).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_UNSUPPORTED_MESSAGE");
    alice_mls.discard(&room);

    let dump = spec_tests::dump_database(&s.database_url).await;
    assert!(dump.contains(&room), "the dump holds the room");
    for secret in secrets {
        assert!(!dump.contains(secret), "the database holds a plaintext");
        assert!(!dump.contains(&hex::encode(secret.as_bytes())), "the database holds a plaintext (binary)");
    }
}

/// Two commits for one epoch: exactly one is accepted, the other gets 409 with the new epoch and
/// succeeds after applying the winner; a resubmission is idempotent; invalid commits at the right
/// epoch change nothing.
#[tokio::test]
async fn exactly_one_commit_per_epoch() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, bob, mut alice_mls, mut bob_mls } = two_members(&s).await;
    let from_alice = alice_mls.self_update(&room);
    let from_bob = bob_mls.self_update(&room);
    let (a, b) = tokio::join!(
        put_commit(&s, &alice, &room, from_alice.body(&alg(), false)),
        put_commit(&s, &bob, &room, from_bob.body(&alg(), false)),
    );
    let (winner, loser) = match (a.0, b.0) {
        (StatusCode::OK, StatusCode::CONFLICT) => ((&alice, &from_alice, a.1), (b.1, true)),
        (StatusCode::CONFLICT, StatusCode::OK) => ((&bob, &from_bob, b.1), (a.1, false)),
        other => panic!("expected one 200 and one 409, got {other:?}: {} / {}", a.1, b.1),
    };
    assert_eq!(loser.0["errcode"], "DE.POSTSTELLE.MLS_WRONG_EPOCH", "{}", loser.0);
    assert_eq!(loser.0["current_epoch"], 2, "{}", loser.0);
    let (winner_account, winner_bundle, winner_body) = winner;
    // The same bytes again: the same event.
    let again = put_commit(&s, winner_account, &room, winner_bundle.body(&alg(), false)).await;
    assert_eq!(again, (StatusCode::OK, winner_body.clone()));
    if loser.1 {
        bob_mls.discard(&room);
        alice_mls.merge(&room);
        bob_mls.apply_commit(&room, &from_alice.commit);
    } else {
        alice_mls.discard(&room);
        bob_mls.merge(&room);
        alice_mls.apply_commit(&room, &from_bob.commit);
    }
    assert_eq!((alice_mls.epoch(&room), bob_mls.epoch(&room), group_epoch(&s, &alice, &room).await), (2, 2, 2));
    // The room's state holds the accepted commit with its epoch, without the bundle's extras.
    let (_, state) = s.get(&format!("/_matrix/client/v3/rooms/{room}/{COMMIT_PATH}"), alice.token()).await;
    assert_eq!(state, json!({"algorithm": alg(), "ciphertext": winner_bundle.commit, "epoch": 2}));

    // Invalid commits at the right epoch: another group's member, another device's commit, a
    // message instead of a commit, garbage, no GroupInfo.
    let mut mallory = MlsTestDevice::new(&alice.user_id, &alice.device_id, Suite::DEFAULT);
    let (_, sender) = s.get("/_matrix/client/unstable/de.poststelle/mls/external_sender", alice.token()).await;
    mallory.create_group(&room, sender["signature_key"].as_str().unwrap(), sender["credential"].as_str().unwrap());
    let forged = mallory.self_update(&room);
    let refused = put_commit(&s, &alice, &room, forged.body(&alg(), false)).await;
    assert_error(&refused, StatusCode::CONFLICT, "DE.POSTSTELLE.MLS_WRONG_EPOCH");
    let bobs = bob_mls.self_update(&room);
    let refused = put_commit(&s, &alice, &room, bobs.body(&alg(), false)).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_COMMIT");
    bob_mls.discard(&room);
    let message = alice_mls.encrypt(&room, "not a commit");
    let mut body = alice_mls.self_update(&room).body(&alg(), false);
    alice_mls.discard(&room);
    body["ciphertext"] = message.into();
    assert_error(
        &put_commit(&s, &alice, &room, body.clone()).await,
        StatusCode::BAD_REQUEST,
        "DE.POSTSTELLE.MLS_UNSUPPORTED_MESSAGE",
    );
    body["ciphertext"] = "bm90IGFuIE1MUyBtZXNzYWdl".into();
    assert_error(
        &put_commit(&s, &alice, &room, body.clone()).await,
        StatusCode::BAD_REQUEST,
        "DE.POSTSTELLE.MLS_MALFORMED",
    );
    let no_info = json!({"algorithm": alg(), "ciphertext": alice_mls.self_update(&room).commit});
    alice_mls.discard(&room);
    assert_error(&put_commit(&s, &alice, &room, no_info).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let huge = json!({"algorithm": alg(), "ciphertext": "A".repeat(70_000), "de.poststelle.group_info": "AAAA"});
    assert_error(&put_commit(&s, &alice, &room, huge).await, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    assert_eq!(group_epoch(&s, &alice, &room).await, 2, "refused commits leave the epoch");

    // A commit whose signer is not in the group (Mallory's own group at epoch 2 would be needed
    // to get past the epoch; a forged commit at the right epoch is refused as invalid).
    let mut forger = MlsTestDevice::new(&alice.user_id, &alice.device_id, Suite::DEFAULT);
    forger.create_group(&room, sender["signature_key"].as_str().unwrap(), sender["credential"].as_str().unwrap());
    for name in ["carol", "dave"] {
        let other = MlsTestDevice::new(&format!("@{name}:localhost"), "D", Suite::DEFAULT);
        forger.add(&room, &[other.key_package(false).1]);
        forger.merge(&room);
    }
    let forged = forger.self_update(&room);
    assert_eq!(forger.epoch(&room), 2);
    let refused = put_commit(&s, &alice, &room, forged.body(&alg(), false)).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_COMMIT");
    assert_eq!(group_epoch(&s, &alice, &room).await, 2);
}

/// A refused commit's Welcome is never delivered; an accepted one reaches exactly the devices it
/// adds (and not the existing members).
#[tokio::test]
async fn welcomes_follow_accepted_commits_only() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, bob, mut alice_mls, mut bob_mls } = two_members(&s).await;
    let bob_token = sync(&s, &bob, None).await["next_batch"].as_str().unwrap().to_owned();
    let carol = s.register("carol", "pw").await;
    let carol_mls = device_of(&carol);
    upload_key_packages(&s, &carol, &carol_mls, 2).await;
    let (status, _) = s
        .post(&format!("/_matrix/client/v3/rooms/{room}/invite"), alice.token(), json!({"user_id": carol.user_id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let carol_token = sync(&s, &carol, None).await["next_batch"].as_str().unwrap().to_owned();

    // Bob moves the epoch first: Alice's bundle adding Carol is stale and its Welcome stays.
    let (_, kp) = claim(&s, &alice, &carol.user_id, &carol.device_id).await;
    let stale = alice_mls.add(&room, &[kp]);
    let update = bob_mls.self_update(&room);
    assert_eq!(put_commit(&s, &bob, &room, update.body(&alg(), false)).await.0, StatusCode::OK);
    bob_mls.merge(&room);
    let refused = put_commit(&s, &alice, &room, stale.body(&alg(), true)).await;
    assert_error(&refused, StatusCode::CONFLICT, "DE.POSTSTELLE.MLS_WRONG_EPOCH");
    alice_mls.discard(&room);
    alice_mls.apply_commit(&room, &update.commit);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(welcomes(&sync(&s, &carol, Some(&carol_token)).await).is_empty(), "a refused commit's Welcome arrived");

    // Retried at the new epoch: Carol gets exactly one Welcome, Bob none.
    let (_, kp) = claim(&s, &alice, &carol.user_id, &carol.device_id).await;
    let retry = alice_mls.add(&room, &[kp]);
    assert_eq!(put_commit(&s, &alice, &room, retry.body(&alg(), true)).await.0, StatusCode::OK);
    alice_mls.merge(&room);
    let (welcome, token) = next_welcome(&s, &carol, Some(&carol_token)).await;
    let mut carol_mls = carol_mls;
    assert_eq!(carol_mls.join(welcome["welcome"].as_str().unwrap()), room);
    assert_eq!(carol_mls.epoch(&room), 3);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(welcomes(&sync(&s, &carol, Some(&token)).await).is_empty(), "the Welcome came twice");
    assert!(welcomes(&sync(&s, &bob, Some(&bob_token)).await).is_empty(), "an existing member got the Welcome");
}

/// Messages must be for the group's current epoch; after a commit the old epoch is refused.
#[tokio::test]
async fn messages_for_another_epoch_are_refused() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, bob, mut alice_mls, mut bob_mls } = two_members(&s).await;
    let early = alice_mls.encrypt(&room, "written at epoch 1");
    let update = bob_mls.self_update(&room);
    assert_eq!(put_commit(&s, &bob, &room, update.body(&alg(), false)).await.0, StatusCode::OK);
    bob_mls.merge(&room);
    let refused = send_encrypted(&s, &alice, &room, "late", &early).await;
    assert_error(&refused, StatusCode::CONFLICT, "DE.POSTSTELLE.MLS_WRONG_EPOCH");
    assert_eq!(refused.1["current_epoch"], 2);
    alice_mls.apply_commit(&room, &update.commit);
    let fresh = alice_mls.encrypt(&room, "written at epoch 2");
    assert_eq!(send_encrypted(&s, &alice, &room, "late2", &fresh).await.0, StatusCode::OK);
    let wrong_alg = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/w"),
            alice.token(),
            json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": fresh}),
        )
        .await;
    assert_error(&wrong_alg, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_UNSUPPORTED_MESSAGE");
}

/// When a member leaves, the hub proposes removing their device; the next commit must carry it
/// out, and afterwards the removed device cannot read new messages.
#[tokio::test]
async fn departed_members_are_removed_by_the_next_commit() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, bob, mut alice_mls, mut bob_mls } = two_members(&s).await;
    let (status, _) = s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, info) =
        s.get(&format!("/_matrix/client/unstable/de.poststelle/rooms/{room}/mls/group_info"), alice.token()).await;
    let proposals: Vec<String> = serde_json::from_value(info["proposals"].clone()).expect("proposals");
    assert_eq!(proposals.len(), 1, "{info}");

    // A commit that ignores the proposal is refused with it.
    let ignoring = alice_mls.self_update(&room);
    let refused = put_commit(&s, &alice, &room, ignoring.body(&alg(), false)).await;
    assert_error(&refused, StatusCode::CONFLICT, "DE.POSTSTELLE.MLS_PENDING_PROPOSALS");
    assert_eq!(refused.1["proposals"], json!(proposals));
    alice_mls.discard(&room);
    let removal = alice_mls.commit_proposals(&room, &proposals);
    let (status, body) = put_commit(&s, &alice, &room, removal.body(&alg(), false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice_mls.merge(&room);
    assert_eq!(alice_mls.members(&room), vec![DeviceIdentity::new(&alice.user_id, &alice.device_id)]);

    // Bob still holds the old epoch's secrets but cannot read what is sent now.
    let after = alice_mls.encrypt(&room, "after Bob left");
    assert_eq!(send_encrypted(&s, &alice, &room, "after", &after).await.0, StatusCode::OK);
    assert_eq!(bob_mls.decrypt(&room, &after), None, "a removed device decrypted a new message");
}

/// Deleting a device makes the hub propose its removal.
#[tokio::test]
async fn deleted_devices_are_proposed_for_removal() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, bob, .. } = two_members(&s).await;
    let (status, body) =
        s.delete(&format!("/_matrix/client/v3/devices/{}", bob.device_id), bob.token(), Some(json!({}))).await;
    let session = body["session"].as_str().map(str::to_owned);
    if status == StatusCode::UNAUTHORIZED {
        let auth = bob.password_auth(session.as_deref().unwrap_or_default());
        let (status, body) = s
            .delete(&format!("/_matrix/client/v3/devices/{}", bob.device_id), bob.token(), Some(json!({"auth": auth})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    } else {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, info) =
        s.get(&format!("/_matrix/client/unstable/de.poststelle/rooms/{room}/mls/group_info"), alice.token()).await;
    assert_eq!(info["proposals"].as_array().map(Vec::len), Some(1), "{info}");
}

/// The hub killed right after accepting a commit: after the restart the epoch, the commit event
/// and the Welcome are there exactly once.
#[tokio::test]
async fn an_accepted_commit_survives_a_crash_with_its_welcome() {
    let mut s = TestServer::start().await;
    let TwoMembers { room, alice, mut alice_mls, .. } = two_members(&s).await;
    let carol = s.register("carol", "pw").await;
    let carol_mls = device_of(&carol);
    upload_key_packages(&s, &carol, &carol_mls, 1).await;
    s.post(&format!("/_matrix/client/v3/rooms/{room}/invite"), alice.token(), json!({"user_id": carol.user_id})).await;
    let carol_token = sync(&s, &carol, None).await["next_batch"].as_str().unwrap().to_owned();
    let (_, kp) = claim(&s, &alice, &carol.user_id, &carol.device_id).await;
    let bundle = alice_mls.add(&room, &[kp]);
    let (status, accepted) = put_commit(&s, &alice, &room, bundle.body(&alg(), true)).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    spec_tests::signal(s.pid(), "KILL");
    s.restart().await;
    assert_eq!(group_epoch(&s, &alice, &room).await, 2);
    let again = put_commit(&s, &alice, &room, bundle.body(&alg(), true)).await;
    assert_eq!(again, (StatusCode::OK, accepted), "the accepted commit is remembered");
    let (welcome, token) = next_welcome(&s, &carol, Some(&carol_token)).await;
    assert_eq!(welcome["room_id"], room.as_str());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(welcomes(&sync(&s, &carol, Some(&token)).await).is_empty(), "the Welcome came twice");
    let (_, state) = s.get(&format!("/_matrix/client/v3/rooms/{room}/{COMMIT_PATH}"), alice.token()).await;
    assert_eq!(state["epoch"], 2);
}

/// Rooms name a supported suite; commits only go into MLS rooms; the algorithm cannot change.
#[tokio::test]
async fn mls_rooms_are_created_as_such() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let refused = s
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"initial_state": [{"type": "m.room.encryption", "state_key": "",
                "content": {"algorithm": "m.mls.v1.MLS_256_DHKEMP521_AES256GCM_SHA512_P521"}}]}),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (_, plain) = s.post("/_matrix/client/v3/createRoom", alice.token(), json!({})).await;
    let plain = plain["room_id"].as_str().unwrap();
    let refused = put_commit(&s, &alice, plain, json!({"algorithm": alg(), "de.poststelle.group_info": "AAAA"})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let refused = s
        .put(
            &format!("/_matrix/client/v3/rooms/{plain}/state/m.room.encryption/"),
            alice.token(),
            json!({"algorithm": alg()}),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let room = create_mls_room(&s, &alice).await;
    let refused = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"),
            alice.token(),
            json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A group must start with the creator alone, naming the server as external sender.
    let mut stranger = MlsTestDevice::new(&alice.user_id, &alice.device_id, Suite::DEFAULT);
    let other = poststelle_mls::ds::ServerSigner::generate("elsewhere").unwrap();
    let info =
        stranger.create_group(&room, &poststelle_mls::codec::encode(other.public_key()), &other.credential_base64());
    let refused = put_commit(&s, &alice, &room, json!({"algorithm": alg(), "de.poststelle.group_info": info})).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_GROUP_INFO");
    // Commits before the group exists.
    let refused = put_commit(
        &s,
        &alice,
        &room,
        json!({"algorithm": alg(), "ciphertext": "AAAA", "de.poststelle.group_info": "AAAA"}),
    )
    .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_COMMIT");
}

/// The command-line client holds a conversation between two users: create an MLS room, invite
/// (claim, commit, Welcome), join, text both ways, an encrypted file, the group's members.
#[tokio::test]
async fn the_command_line_client_holds_a_conversation() {
    let s = TestServer::start().await;
    s.register("alice", "pw-alice").await;
    s.register("bob", "pw-bob").await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (a.path().to_owned(), b.path().to_owned());
    // The client is blocking; run it off the test's runtime threads.
    let base = s.base.clone();
    let (room, a, b, lines_b, lines_a) = tokio::task::spawn_blocking(move || {
        cli(&a, &["login", "--homeserver", &base, "--user", "alice", "--password", "pw-alice"]);
        cli(&b, &["login", "--homeserver", &base, "--user", "bob", "--password", "pw-bob"]);
        let room = cli(&a, &["create-room", "--name", "Akte 4711"]).trim().to_owned();
        assert!(room.starts_with('!'), "{room}");
        cli(&a, &["invite", &room, "@bob:localhost"]);
        let _ = cli(&b, &["listen", "--once", "--timeout-ms", "500"]);
        cli(&b, &["join", &room]);
        cli(&a, &["send", &room, "Ihr Bescheid liegt bei"]);
        let lines_b = cli_listen(&b, &b);
        let file = b.join("Antrag.txt");
        std::fs::write(&file, b"Antrag auf Akteneinsicht\n").unwrap();
        cli(&b, &["send", &room, "Danke, anbei mein Antrag"]);
        cli(&b, &["send-file", &room, file.to_str().unwrap()]);
        let mut lines_a = cli_listen(&a, &a);
        if lines_a.len() < 2 {
            lines_a.extend(cli_listen(&a, &a));
        }
        (room, a, b, lines_b, lines_a)
    })
    .await
    .unwrap();
    assert_eq!(lines_b[0]["body"], "Ihr Bescheid liegt bei", "{lines_b:?}");
    assert_eq!(lines_b[0]["sender"], "@alice:localhost");
    assert_eq!(lines_a[0]["body"], "Danke, anbei mein Antrag", "{lines_a:?}");
    assert_eq!(lines_a[1]["sender"], "@bob:localhost", "{lines_a:?}");
    assert_eq!(lines_a[1]["body"], "Antrag.txt", "{lines_a:?}");
    let downloaded = lines_a[1]["file"].as_str().expect("the attachment was downloaded");
    assert_eq!(std::fs::read(downloaded).unwrap(), b"Antrag auf Akteneinsicht\n");
    let members = cli(&a, &["members", &room]);
    assert!(members.contains("@alice:localhost") && members.contains("@bob:localhost"), "{members}");
    let _ = b;
    let dump = spec_tests::dump_database(&s.database_url).await;
    for secret in ["Ihr Bescheid liegt bei", "Danke, anbei mein Antrag", "Antrag auf Akteneinsicht"] {
        assert!(!dump.contains(secret), "the database holds {secret:?}");
    }
}

/// A group of 200 devices: added in commits of 50 (each under the event limit), the last
/// member's Welcome (with a ratchet tree of 200 leaves, over the to-device limit) travels through
/// the media repository, and the new member reads the creator's message.
#[tokio::test]
async fn a_group_of_200_devices_works_end_to_end() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let mut alice_mls = device_of(&alice);
    let mut bob_mls = device_of(&bob);
    upload_key_packages(&s, &bob, &bob_mls, 1).await;
    let room = create_mls_room(&s, &alice).await;
    start_group(&s, &alice, &mut alice_mls, &room).await;
    // 198 devices of people on no server here: the hub checks the group, not who the devices are.
    let others: Vec<MlsTestDevice> =
        (0..198).map(|i| MlsTestDevice::new(&format!("@member{i}:elsewhere.example"), "D", Suite::DEFAULT)).collect();
    for chunk in others.chunks(50) {
        let packages: Vec<String> = chunk.iter().map(|d| d.key_package(false).1).collect();
        let bundle = alice_mls.add(&room, &packages);
        let (status, body) = put_commit(&s, &alice, &room, bundle.body(&alg(), false)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        alice_mls.merge(&room);
    }
    let (status, _) = s
        .post(&format!("/_matrix/client/v3/rooms/{room}/invite"), alice.token(), json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, kp) = claim(&s, &alice, &bob.user_id, &bob.device_id).await;
    let bundle = alice_mls.add(&room, &[kp]);
    let welcome_len = bundle.welcome.as_ref().map_or(0, String::len);
    assert!(welcome_len > 48 * 1024, "the Welcome is small: {welcome_len} bytes");
    let (status, body) = put_commit(&s, &alice, &room, bundle.body(&alg(), true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice_mls.merge(&room);
    assert_eq!(alice_mls.members(&room).len(), 200);

    let (welcome, _) = next_welcome(&s, &bob, None).await;
    assert!(welcome.get("welcome").is_none(), "a large Welcome went inline: {}", welcome.to_string().len());
    let url = welcome["welcome_url"].as_str().expect("a media reference");
    let path = url.strip_prefix("mxc://").expect("an mxc URI");
    let response = s
        .http
        .get(format!("{}/_matrix/client/v1/media/download/{path}", s.base))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.expect("the Welcome");
    assert_eq!(bob_mls.join(&poststelle_mls::codec::encode(&bytes)), room);
    assert_eq!(bob_mls.epoch(&room), 5);
    let (status, _) = s.post(&format!("/_matrix/client/v3/join/{room}"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let hello = alice_mls.encrypt(&room, "an alle 199");
    assert_eq!(send_encrypted(&s, &alice, &room, "hello", &hello).await.0, StatusCode::OK);
    let seen = ciphertexts(&s, &bob, &room).await;
    assert_eq!(bob_mls.decrypt(&room, seen.last().expect("a message")).as_deref(), Some("an alle 199"));
}

/// A room in the post-quantum hybrid suite (X25519 + ML-KEM-768): KeyPackages, group, Welcome
/// and messages in that suite; a KeyPackage of the default suite cannot be claimed for it.
#[tokio::test]
async fn a_room_can_use_the_post_quantum_hybrid_suite() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let pq = Suite::PQ_HYBRID.algorithm();
    let mut alice_mls = MlsTestDevice::new(&alice.user_id, &alice.device_id, Suite::PQ_HYBRID);
    let mut bob_mls = MlsTestDevice::new(&bob.user_id, &bob.device_id, Suite::PQ_HYBRID);
    let (id, kp) = bob_mls.key_package(false);
    let (status, body) =
        s.post("/_matrix/client/v3/keys/upload", bob.token(), json!({"one_time_keys": {id: kp}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["one_time_key_counts"][&pq], 1, "{body}");
    let (status, created) = s
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "private_chat", "invite": [bob.user_id],
                "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": pq}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (_, sender) = s.get("/_matrix/client/unstable/de.poststelle/mls/external_sender", alice.token()).await;
    let info = alice_mls.create_group(
        &room,
        sender["signature_key"].as_str().unwrap(),
        sender["credential"].as_str().unwrap(),
    );
    let (status, body) =
        put_commit(&s, &alice, &room, json!({"algorithm": pq, "de.poststelle.group_info": info})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, claimed) = s
        .post(
            "/_matrix/client/v3/keys/claim",
            alice.token(),
            json!({"one_time_keys": {&bob.user_id: {&bob.device_id: pq}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let kp = claimed["one_time_keys"][&bob.user_id][&bob.device_id].as_object().unwrap().values().next().unwrap();
    let bundle = alice_mls.add(&room, &[kp.as_str().unwrap().to_owned()]);
    let (status, body) = put_commit(&s, &alice, &room, bundle.body(&pq, true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice_mls.merge(&room);
    let (welcome, _) = next_welcome(&s, &bob, None).await;
    assert_eq!(welcome["algorithm"], pq.as_str());
    bob_mls.join(welcome["welcome"].as_str().unwrap());
    let c = alice_mls.encrypt(&room, "quantensicher");
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/pq"),
            alice.token(),
            json!({"algorithm": pq, "ciphertext": c}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(bob_mls.decrypt(&room, &c).as_deref(), Some("quantensicher"));
    // The default suite's algorithm is not this room's.
    let refused = send_encrypted(&s, &alice, &room, "classic", &c).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_UNSUPPORTED_MESSAGE");
}
