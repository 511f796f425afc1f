//! MLS across servers: a user of the hub (the room creator's server) claims a KeyPackage of a
//! user of another server over federation and adds them; the Welcome travels as a to-device
//! message between the servers; the other user joins over federation and both talk, each with
//! the command-line client. Neither server's database holds a plaintext.

use poststelle_mls::Suite;
use serde_json::{Value, json};
use spec_tests::{
    Account, ServerOptions, StatusCode, TestServer, assert_error,
    mls::{self as mls_kit, MlsTestDevice, cli, cli_listen},
};

use super::origin::{Draft, Origin, enc};

#[tokio::test]
async fn two_users_on_two_servers_talk_in_an_mls_room() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    a.register("alice", "pw-alice").await;
    b.register("bob", "pw-bob").await;
    let bob_id = format!("@bob:{}", b.server_name);
    let alice_id = format!("@alice:{}", a.server_name);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (state_a, state_b) = (dir_a.path().to_owned(), dir_b.path().to_owned());
    let (base_a, base_b) = (a.base.clone(), b.base.clone());
    let secrets = ["Ihre Akte wurde angelegt", "Danke, Rückfragen folgen"];
    let (room, lines_b, lines_a, members) = tokio::task::spawn_blocking(move || {
        cli(&state_a, &["login", "--homeserver", &base_a, "--user", "alice", "--password", "pw-alice"]);
        cli(&state_b, &["login", "--homeserver", &base_b, "--user", "bob", "--password", "pw-bob"]);
        let room = cli(&state_a, &["create-room", "--name", "Akte 0815"]).trim().to_owned();
        cli(&state_a, &["invite", &room, &bob_id]);
        // The Welcome arrives at B as a to-device message from A.
        let mut welcomed = false;
        for _ in 0..40 {
            let _ = cli(&state_b, &["listen", "--once", "--timeout-ms", "500"]);
            if cli(&state_b, &["rooms"]).contains(&room) {
                welcomed = true;
                break;
            }
        }
        assert!(welcomed, "no Welcome reached the other server");
        cli(&state_b, &["join", &room]);
        cli(&state_a, &["send", &room, secrets[0]]);
        let lines_b = cli_listen(&state_b, &state_b);
        cli(&state_b, &["send", &room, secrets[1]]);
        let lines_a = cli_listen(&state_a, &state_a);
        let members = cli(&state_b, &["members", &room]);
        (room, lines_b, lines_a, members)
    })
    .await
    .unwrap();
    assert_eq!(lines_b[0]["body"], secrets[0], "{lines_b:?}\nA:\n{}\nB:\n{}", a.log(), b.log());
    assert_eq!(lines_b[0]["sender"], alice_id.as_str());
    assert_eq!(lines_a[0]["body"], secrets[1], "{lines_a:?}");
    assert!(members.contains(&alice_id) && members.contains("@bob:"), "{members}");
    // Commits of the other server's users go to the hub, which checks them like its own.
    let bob = b.login("bob", "pw-bob").await;
    let refused = b
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.mls.commit/"),
            bob.token(),
            json!({"algorithm": Suite::DEFAULT.algorithm(), "ciphertext": "AAAA", "de.poststelle.group_info": "AAAA"}),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_MALFORMED");
    // Bob leaves on his server; the hub learns it over federation and proposes his removal.
    let (status, _) = b.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let alice = a.login("alice", "pw-alice").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, info) =
            a.get(&format!("/_matrix/client/unstable/de.poststelle/rooms/{room}/mls/group_info"), alice.token()).await;
        if info["proposals"].as_array().is_some_and(|p| p.len() == 1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no removal proposal for the departed member: {info}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    for server in [&a, &b] {
        let dump = spec_tests::dump_database(&server.database_url).await;
        for secret in secrets {
            assert!(!dump.contains(secret), "{} stored {secret:?}", server.server_name);
        }
    }
}

async fn put_commit(s: &TestServer, who: &Account, room: &str, body: Value) -> (StatusCode, Value) {
    s.put(&format!("/_matrix/client/v3/rooms/{room}/state/m.mls.commit/"), who.token(), body).await
}

/// Waits (bounded) until `who` on `s` sees the room's commit at `epoch`; returns its content.
async fn commit_content_at(s: &TestServer, who: &Account, room: &str, epoch: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, state) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.mls.commit/"), who.token()).await;
        if state["epoch"] == epoch {
            return state;
        }
        assert!(std::time::Instant::now() < deadline, "epoch {epoch} never reached {}: {state}", s.server_name);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The commit (inline ciphertext) of the room's commit at `epoch`, once `who` on `s` sees it.
async fn commit_at(s: &TestServer, who: &Account, room: &str, epoch: u64) -> String {
    commit_content_at(s, who, room, epoch).await["ciphertext"].as_str().expect("ciphertext").to_owned()
}

/// Alice on the hub A and Bob on B in an MLS room of Alice's, both in the group at epoch 1.
struct SharedRoom {
    a: TestServer,
    b: TestServer,
    room: String,
    alice: Account,
    bob: Account,
    alice_mls: MlsTestDevice,
    bob_mls: MlsTestDevice,
}

async fn shared_room() -> SharedRoom {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice").await;
    let bob = b.register("bob", "pw-bob").await;
    let alg = Suite::DEFAULT.algorithm();
    let mut alice_mls = MlsTestDevice::new(&alice.user_id, &alice.device_id, Suite::DEFAULT);
    let mut bob_mls = MlsTestDevice::new(&bob.user_id, &bob.device_id, Suite::DEFAULT);
    let (kp_id, kp) = bob_mls.key_package(false);
    let (status, body) =
        b.post("/_matrix/client/v3/keys/upload", bob.token(), json!({"one_time_keys": {kp_id: kp}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, created) = a
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            // Bob is invited by createRoom itself: through his server, as any remote invite.
            json!({"preset": "private_chat", "invite": [bob.user_id],
                "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": alg}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (_, sender) = a.get("/_matrix/client/unstable/de.poststelle/mls/external_sender", alice.token()).await;
    let info = alice_mls.create_group(
        &room,
        sender["signature_key"].as_str().unwrap(),
        sender["credential"].as_str().unwrap(),
    );
    let (status, body) =
        put_commit(&a, &alice, &room, json!({"algorithm": alg, "de.poststelle.group_info": info})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kp = claim_key_package(&a, &alice, &bob).await;
    let bundle = alice_mls.add(&room, &[kp]);
    let (status, body) = put_commit(&a, &alice, &room, bundle.body(&alg, false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice_mls.merge(&room);
    bob_mls.join(bundle.welcome.as_deref().unwrap());
    let (status, body) = b.post(&format!("/_matrix/client/v3/join/{room}"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    commit_at(&b, &bob, &room, 1).await;

    SharedRoom { a, b, room, alice, bob, alice_mls, bob_mls }
}

/// A commit of a user of another server goes to the hub through federation: accepted there,
/// stored on both servers; of two commits for one epoch, one local at the hub and one through
/// federation, exactly one is accepted and the other gets 409 with the new epoch; the loser
/// applies the winner and retries.
#[tokio::test]
async fn commits_of_other_servers_users_are_ordered_by_the_hub() {
    let SharedRoom { a, b, room, alice, bob, mut alice_mls, mut bob_mls } = shared_room().await;
    let alg = Suite::DEFAULT.algorithm();

    // Bob's commit through his server: accepted by the hub, then in the room on both servers.
    let update = bob_mls.self_update(&room);
    let (status, body) = put_commit(&b, &bob, &room, update.body(&alg, false)).await;
    assert_eq!(status, StatusCode::OK, "{body}\nA:\n{}\nB:\n{}", a.log(), b.log());
    bob_mls.merge(&room);
    assert_eq!(commit_at(&a, &alice, &room, 2).await, update.commit);
    assert_eq!(commit_at(&b, &bob, &room, 2).await, update.commit);
    alice_mls.apply_commit(&room, &update.commit);

    // One local and one forwarded commit for epoch 2: exactly one wins.
    let from_alice = alice_mls.self_update(&room);
    let from_bob = bob_mls.self_update(&room);
    let (at_a, at_b) = tokio::join!(
        put_commit(&a, &alice, &room, from_alice.body(&alg, false)),
        put_commit(&b, &bob, &room, from_bob.body(&alg, false)),
    );
    let (loser, winner_commit) = match (at_a.0, at_b.0) {
        (StatusCode::OK, StatusCode::CONFLICT) => (at_b.1.clone(), from_alice.commit.clone()),
        (StatusCode::CONFLICT, StatusCode::OK) => (at_a.1.clone(), from_bob.commit.clone()),
        other => panic!("expected one 200 and one 409, got {other:?}: {} / {}", at_a.1, at_b.1),
    };
    assert_eq!(loser["errcode"], "DE.POSTSTELLE.MLS_WRONG_EPOCH", "{loser}");
    assert_eq!(loser["current_epoch"], 3, "{loser}");
    assert_eq!(commit_at(&a, &alice, &room, 3).await, winner_commit);
    assert_eq!(commit_at(&b, &bob, &room, 3).await, winner_commit);
    if at_a.0 == StatusCode::OK {
        alice_mls.merge(&room);
        bob_mls.discard(&room);
        bob_mls.apply_commit(&room, &winner_commit);
        // The loser retries at the new epoch, through federation.
        let retry = bob_mls.self_update(&room);
        assert_eq!(put_commit(&b, &bob, &room, retry.body(&alg, false)).await.0, StatusCode::OK);
    } else {
        bob_mls.merge(&room);
        alice_mls.discard(&room);
        alice_mls.apply_commit(&room, &winner_commit);
        let retry = alice_mls.self_update(&room);
        assert_eq!(put_commit(&a, &alice, &room, retry.body(&alg, false)).await.0, StatusCode::OK);
    }
    commit_at(&a, &alice, &room, 4).await;
    commit_at(&b, &bob, &room, 4).await;
}

/// Waits (bounded) for a Welcome to reach `who` on `s`; returns its content.
async fn welcome_for(s: &TestServer, who: &Account) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut since: Option<String> = None;
    loop {
        let path = match &since {
            Some(t) => format!("/_matrix/client/v3/sync?since={t}&timeout=500"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let (status, body) = s.get(&path, who.token()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let found = body["to_device"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == "de.poststelle.mls.welcome")
            .map(|e| e["content"].clone());
        if let Some(content) = found {
            return content;
        }
        assert!(std::time::Instant::now() < deadline, "no Welcome reached {}", who.user_id);
        since = body["next_batch"].as_str().map(str::to_owned);
    }
}

/// A commit of another server's user over the 64 KiB event limit (adding 171 devices) is
/// uploaded to that server's media repository and forwarded by reference; the hub fetches it
/// over federation, checks it and accepts it. Its Welcome, over the to-device limit, goes
/// through the forwarding server's media repository as the hub's own do. A member on the hub
/// applies the commit from the reference; the added user joins and reads the next message.
#[tokio::test]
async fn a_forwarded_commit_and_its_welcome_go_through_media() {
    let SharedRoom { a, b, room, alice, bob, mut alice_mls, mut bob_mls } = shared_room().await;
    let alg = Suite::DEFAULT.algorithm();
    let carol = b.register("carol", "pw-carol").await;
    let mut carol_mls = MlsTestDevice::new(&carol.user_id, &carol.device_id, Suite::DEFAULT);
    let (kp_id, kp) = carol_mls.key_package(false);
    let (status, body) =
        b.post("/_matrix/client/v3/keys/upload", carol.token(), json!({"one_time_keys": {kp_id: kp}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let invite = json!({"user_id": carol.user_id});
    let (status, body) = a.post(&format!("/_matrix/client/v3/rooms/{room}/invite"), alice.token(), invite).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut packages: Vec<String> = (0..170)
        .map(|i| MlsTestDevice::new(&format!("@member{i}:elsewhere.example"), "D", Suite::DEFAULT).key_package(false).1)
        .collect();
    packages.push(claim_key_package(&b, &bob, &carol).await);
    let bundle = bob_mls.add(&room, &packages);
    assert!(bundle.commit.len() > 64 * 1024, "the commit is small: {} bytes", bundle.commit.len());
    assert!(bundle.welcome.as_ref().is_some_and(|w| w.len() > 48 * 1024), "the Welcome is small");

    let url = mls_kit::upload(&b, bob.token(), bundle.commit_bytes()).await;
    let (status, body) = put_commit(&b, &bob, &room, bundle.body_by_reference(&alg, &url, true)).await;
    assert_eq!(status, StatusCode::OK, "{body}\nA:\n{}\nB:\n{}", a.log(), b.log());
    bob_mls.merge(&room);

    // Carol's Welcome, delivered by her own server, names its upload there.
    let welcome = welcome_for(&b, &carol).await;
    assert!(welcome.get("welcome").is_none(), "a large Welcome went inline");
    let welcome_url = welcome["welcome_url"].as_str().expect("a Welcome by reference");
    let welcome_bytes = mls_kit::download(&b, &carol.access_token, welcome_url).await;
    assert_eq!(carol_mls.join(&poststelle_mls::codec::encode(&welcome_bytes)), room);

    // Alice, on the hub, gets the commit by its reference to B's media, through her server.
    let content = commit_content_at(&a, &alice, &room, 2).await;
    assert!(content.get("ciphertext").is_none(), "{content}");
    assert_eq!(content["de.poststelle.ciphertext_ref"]["url"], url.as_str());
    alice_mls.apply_commit(&room, &mls_kit::commit_of(&a, &alice.access_token, &content).await);
    assert_eq!(alice_mls.members(&room).len(), 173);

    let (status, body) = b.post(&format!("/_matrix/client/v3/join/{room}"), carol.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hello = alice_mls.encrypt(&room, "willkommen");
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/w1");
    let (status, body) = a.put(&path, alice.token(), json!({"algorithm": alg, "ciphertext": hello})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, page) = b.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"), carol.token()).await;
        let latest = page["chunk"].as_array().into_iter().flatten().find(|e| e["type"] == "m.room.encrypted");
        if let Some(ciphertext) = latest.and_then(|e| e["content"]["ciphertext"].as_str()) {
            assert_eq!(carol_mls.decrypt(&room, ciphertext).as_deref(), Some("willkommen"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the message never reached B: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A KeyPackage of `owner`'s device, claimed by `claimer` on `s`.
async fn claim_key_package(s: &TestServer, claimer: &Account, owner: &Account) -> String {
    let alg = Suite::DEFAULT.algorithm();
    let claim = json!({"one_time_keys": {&owner.user_id: {&owner.device_id: alg}}});
    let (status, claimed) = s.post("/_matrix/client/v3/keys/claim", claimer.token(), claim).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    claimed["one_time_keys"][&owner.user_id][&owner.device_id]
        .as_object()
        .and_then(|k| k.values().next())
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("nothing claimed: {claimed}"))
        .to_owned()
}

/// A commit PDU the hub did not accept through its Delivery Service (here one a hostile server
/// sends for its user in the room) is soft-failed at the hub: not in the room's state or
/// timeline, the epoch unchanged, and the group goes on.
#[tokio::test]
async fn a_commit_pdu_the_hub_did_not_accept_is_soft_failed() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice").await;
    let alg = Suite::DEFAULT.algorithm();
    let create = json!({"preset": "public_chat", "room_version": "11",
        "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": alg}}]});
    let (status, created) = a.post("/_matrix/client/v3/createRoom", alice.token(), create).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (_, sender) = a.get("/_matrix/client/unstable/de.poststelle/mls/external_sender", alice.token()).await;
    let (key, credential) = (sender["signature_key"].as_str().unwrap(), sender["credential"].as_str().unwrap());
    let mut alice_mls = MlsTestDevice::new(&alice.user_id, &alice.device_id, Suite::DEFAULT);
    let info = alice_mls.create_group(&room, key, credential);
    let (status, body) =
        put_commit(&a, &alice, &room, json!({"algorithm": alg, "de.poststelle.group_info": info})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let origin = Origin::start().await;
    let joined = origin.join(&a, &room, "mallory", "11").await;
    // Mallory's own group under the room's id, and a commit of it for epoch 0, as an event.
    let mut forger = MlsTestDevice::new(&joined.user, "M", Suite::DEFAULT);
    forger.create_group(&room, key, credential);
    let forged = forger.self_update(&room);
    let content = json!({"algorithm": alg, "ciphertext": forged.commit, "epoch": 1});
    let pdu = origin.event(&joined, Draft::of("m.mls.commit", Some(""), content));
    let (status, answer) = origin.send(&a, "mls1", &[&pdu]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Soft failure is no error for the sender.
    assert_eq!(answer["pdus"][&pdu.id], json!({}), "{answer}");

    let (status, state) = a.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.mls.commit/"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["epoch"], 0, "the forged commit became the room's state: {state}");
    let (status, _) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&pdu.id)), alice.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the soft-failed commit is visible");
    let (_, group) =
        a.get(&format!("/_matrix/client/unstable/de.poststelle/rooms/{room}/mls/group_info"), alice.token()).await;
    assert_eq!(group["epoch"], 0, "{group}");
    let update = alice_mls.self_update(&room);
    let (status, body) = put_commit(&a, &alice, &room, update.body(&alg, false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
