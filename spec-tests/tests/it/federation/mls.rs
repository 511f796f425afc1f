//! MLS across servers: a user of the hub (the room creator's server) claims a KeyPackage of a
//! user of another server over federation and adds them; the Welcome travels as a to-device
//! message between the servers; the other user joins over federation and both talk, each with
//! the command-line client. Neither server's database holds a plaintext.

use poststelle_mls::Suite;
use serde_json::json;
use spec_tests::{
    ServerOptions, StatusCode, TestServer, assert_error,
    mls::{cli, cli_listen},
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
    // Only the hub orders commits: the other server refuses to take one from its user.
    let bob = b.login("bob", "pw-bob").await;
    let refused = b
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.mls.commit/"),
            bob.token(),
            json!({"algorithm": Suite::DEFAULT.algorithm(), "ciphertext": "AAAA", "de.poststelle.group_info": "AAAA"}),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
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
