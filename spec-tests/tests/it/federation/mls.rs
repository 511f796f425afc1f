//! MLS across servers: a user of the hub (the room creator's server) claims a KeyPackage of a
//! user of another server over federation and adds them; the Welcome travels as a to-device
//! message between the servers; the other user joins over federation and both talk, each with
//! the command-line client. Neither server's database holds a plaintext.

use poststelle_mls::Suite;
use serde_json::{Value, json};
use spec_tests::{
    Account, ServerOptions, StatusCode, TestServer, assert_error,
    mls::{MlsTestDevice, cli, cli_listen},
};

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

/// Waits (bounded) until `who` on `s` sees the room's commit at `epoch`; returns its ciphertext.
async fn commit_at(s: &TestServer, who: &Account, room: &str, epoch: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, state) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.mls.commit/"), who.token()).await;
        if state["epoch"] == epoch {
            return state["ciphertext"].as_str().expect("ciphertext").to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "epoch {epoch} never reached {}: {state}", s.server_name);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A commit of a user of another server goes to the hub through federation: accepted there,
/// stored on both servers; of two commits for one epoch, one local at the hub and one through
/// federation, exactly one is accepted and the other gets 409 with the new epoch; the loser
/// applies the winner and retries.
#[tokio::test]
async fn commits_of_other_servers_users_are_ordered_by_the_hub() {
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
    let (status, claimed) = a
        .post(
            "/_matrix/client/v3/keys/claim",
            alice.token(),
            json!({"one_time_keys": {&bob.user_id: {&bob.device_id: alg}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let kp = claimed["one_time_keys"][&bob.user_id][&bob.device_id]
        .as_object()
        .and_then(|k| k.values().next())
        .unwrap_or_else(|| panic!("nothing claimed: {claimed}"))
        .clone();
    let bundle = alice_mls.add(&room, &[kp.as_str().unwrap().to_owned()]);
    let (status, body) = put_commit(&a, &alice, &room, bundle.body(&alg, false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice_mls.merge(&room);
    bob_mls.join(bundle.welcome.as_deref().unwrap());
    let (status, body) = b.post(&format!("/_matrix/client/v3/join/{room}"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    commit_at(&b, &bob, &room, 1).await;

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
