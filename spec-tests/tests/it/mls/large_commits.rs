//! Commits and groups at their limits: commits over the event limit through the media
//! repository, a commit dropping the server as external sender, two processes sharing the
//! hub's groups, and the client library's commits by reference.

use super::*;

/// The `m.mls.commit` events of a room as `a` sees them, oldest first.
async fn commit_events(s: &TestServer, a: &Account, room: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), a.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut out: Vec<Value> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.mls.commit")
        .map(|e| e["content"].clone())
        .collect();
    out.reverse();
    out
}

/// A commit over the 64 KiB event limit (adding 171 devices at once) goes through the media
/// repository: refused inline with 413, refused by reference when the media is missing or is
/// not the referenced bytes (epoch unchanged), accepted by reference; the event carries the
/// reference, an existing member applies the commit from the media, and an added member joins
/// from its Welcome (through media too) and reads the next message.
#[tokio::test]
async fn a_commit_over_the_event_limit_travels_through_media() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, bob, mut alice_mls, mut bob_mls } = two_members(&s).await;
    let carol = s.register("carol", "pw").await;
    let mut carol_mls = device_of(&carol);
    upload_key_packages(&s, &carol, &carol_mls, 1).await;
    let (status, _) = s
        .post(&format!("/_matrix/client/v3/rooms/{room}/invite"), alice.token(), json!({"user_id": carol.user_id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, carols) = claim(&s, &alice, &carol.user_id, &carol.device_id).await;
    let mut packages: Vec<String> = (0..170)
        .map(|i| MlsTestDevice::new(&format!("@member{i}:elsewhere.example"), "D", Suite::DEFAULT).key_package(false).1)
        .collect();
    packages.push(carols);
    let bundle = alice_mls.add(&room, &packages);
    assert!(bundle.commit.len() > 64 * 1024, "the commit is small: {} bytes", bundle.commit.len());

    assert_error(
        &put_commit(&s, &alice, &room, bundle.body(&alg(), true)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    let url = spec_tests::mls::upload(&s, alice.token(), bundle.commit_bytes()).await;
    let mut tampered = bundle.commit_bytes();
    tampered[100] ^= 1;
    let tampered_url = spec_tests::mls::upload(&s, alice.token(), tampered).await;
    let mut wrong = bundle.body_by_reference(&alg(), &url, true);
    wrong["de.poststelle.ciphertext_ref"]["url"] = tampered_url.into();
    let refused = put_commit(&s, &alice, &room, wrong).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_BAD_REFERENCE");
    assert!(refused.1["error"].as_str().unwrap().contains("SHA-256"), "{}", refused.1);
    let mut missing = bundle.body_by_reference(&alg(), &url, true);
    missing["de.poststelle.ciphertext_ref"]["url"] = format!("mxc://{}/nothing_here", s.server_name).into();
    assert_error(
        &put_commit(&s, &alice, &room, missing).await,
        StatusCode::BAD_REQUEST,
        "DE.POSTSTELLE.MLS_BAD_REFERENCE",
    );
    let mut both = bundle.body_by_reference(&alg(), &url, true);
    both["ciphertext"] = bundle.commit.clone().into();
    assert_error(&put_commit(&s, &alice, &room, both).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_eq!(group_epoch(&s, &alice, &room).await, 1, "refused references leave the epoch");
    let bob_since = sync(&s, &bob, None).await["next_batch"].as_str().unwrap().to_owned();
    assert!(welcomes(&sync(&s, &carol, None).await).is_empty(), "a Welcome of a refused commit arrived");

    let (status, accepted) = put_commit(&s, &alice, &room, bundle.body_by_reference(&alg(), &url, true)).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    let again = put_commit(&s, &alice, &room, bundle.body_by_reference(&alg(), &url, true)).await;
    assert_eq!(again, (StatusCode::OK, accepted.clone()), "resubmission by reference is idempotent");
    alice_mls.merge(&room);
    assert_eq!(group_epoch(&s, &alice, &room).await, 2);

    // The event names the upload; Bob, a member already, applies the commit from the media.
    let content = commit_events(&s, &bob, &room).await.pop().expect("the commit event");
    assert!(content.get("ciphertext").is_none(), "the large commit went inline: {content}");
    assert_eq!(content["de.poststelle.ciphertext_ref"]["url"], url.as_str(), "{content}");
    assert_eq!(content["epoch"], 2);
    let commit = spec_tests::mls::commit_of(&s, &bob.access_token, &content).await;
    bob_mls.apply_commit(&room, &commit);
    assert_eq!(bob_mls.epoch(&room), 2);
    assert!(welcomes(&sync(&s, &bob, Some(&bob_since)).await).is_empty(), "an existing member got a Welcome");

    // Carol joins from her Welcome (with a tree of 173 leaves: through media as well).
    let (welcome, _) = next_welcome(&s, &carol, None).await;
    let welcome_url = welcome["welcome_url"].as_str().expect("a Welcome by reference");
    let welcome_bytes = spec_tests::mls::download(&s, &carol.access_token, welcome_url).await;
    assert_eq!(carol_mls.join(&poststelle_mls::codec::encode(&welcome_bytes)), room);
    assert_eq!(alice_mls.members(&room).len(), 173);
    let hello = alice_mls.encrypt(&room, "an alle 172");
    assert_eq!(send_encrypted(&s, &alice, &room, "big", &hello).await.0, StatusCode::OK);
    let (status, _) = s.post(&format!("/_matrix/client/v3/join/{room}"), carol.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let seen = ciphertexts(&s, &carol, &room).await;
    assert_eq!(carol_mls.decrypt(&room, seen.last().expect("a message")).as_deref(), Some("an alle 172"));
    assert_eq!(bob_mls.decrypt(&room, seen.last().unwrap()).as_deref(), Some("an alle 172"));
}

/// A commit that drops the server from the group's external senders (so it could no longer
/// propose removals) is refused, the epoch unchanged.
#[tokio::test]
async fn a_commit_dropping_the_server_as_external_sender_is_refused() {
    let s = TestServer::start().await;
    let TwoMembers { room, alice, mut alice_mls, .. } = two_members(&s).await;
    let bundle = alice_mls.drop_external_senders(&room);
    let refused = put_commit(&s, &alice, &room, bundle.body(&alg(), false)).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "DE.POSTSTELLE.MLS_INVALID_COMMIT");
    assert!(refused.1["error"].as_str().unwrap().contains("external senders"), "{}", refused.1);
    alice_mls.discard(&room);
    assert_eq!(group_epoch(&s, &alice, &room).await, 1);
    // The group goes on: the refusal left the hub's state (and what it keeps in memory) intact.
    let update = alice_mls.self_update(&room);
    let (status, body) = put_commit(&s, &alice, &room, update.body(&alg(), false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(group_epoch(&s, &alice, &room).await, 2);
}

/// Two processes on one database order one room's commits: each keeps the group it last wrote
/// in memory, and neither uses it once the other has replaced the stored state, whether by a
/// commit (new epoch) or by a removal proposal (same epoch).
#[tokio::test]
async fn two_processes_never_use_a_group_the_other_replaced() {
    let db = spec_tests::fresh_database().await;
    let one = TestServer::start_with(ServerOptions { database_url: Some(db.clone()), ..Default::default() }).await;
    let two = TestServer::start_with(ServerOptions { database_url: Some(db), ..Default::default() }).await;
    let TwoMembers { room, alice, bob, mut alice_mls, mut bob_mls } = two_members(&one).await;
    for epoch in 2..6 {
        // Alternating: each commit goes to the process that did not order the previous one.
        let (server, who, committer) =
            if epoch % 2 == 0 { (&two, &bob, &mut bob_mls) } else { (&one, &alice, &mut alice_mls) };
        let update = committer.self_update(&room);
        let (status, body) = put_commit(server, who, &room, update.body(&alg(), false)).await;
        assert_eq!(status, StatusCode::OK, "epoch {epoch}: {body}");
        committer.merge(&room);
        let other = if epoch % 2 == 0 { &mut alice_mls } else { &mut bob_mls };
        other.apply_commit(&room, &update.commit);
        assert_eq!(group_epoch(&one, &alice, &room).await, epoch);
    }
    // Bob leaves through process two, which proposes his removal: the state changes, the
    // epoch does not. Process one ordered the last commit and must see the proposal.
    let (status, _) = two.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let ignoring = alice_mls.self_update(&room);
    let refused = put_commit(&one, &alice, &room, ignoring.body(&alg(), false)).await;
    assert_error(&refused, StatusCode::CONFLICT, "DE.POSTSTELLE.MLS_PENDING_PROPOSALS");
    alice_mls.discard(&room);
    let proposals: Vec<String> = serde_json::from_value(refused.1["proposals"].clone()).expect("proposals");
    let removal = alice_mls.commit_proposals(&room, &proposals);
    let (status, body) = put_commit(&one, &alice, &room, removal.body(&alg(), false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice_mls.merge(&room);
    assert_eq!(alice_mls.members(&room), vec![DeviceIdentity::new(&alice.user_id, &alice.device_id)]);
    assert_eq!(group_epoch(&two, &alice, &room).await, 6);
}

/// The client library under `poststelle-client` sends a commit over the event limit by
/// reference on its own, and the command-line client of a member applies it from the media
/// repository (after checking it) and reads the message that follows.
#[tokio::test]
async fn the_client_sends_and_applies_commits_by_reference() {
    let s = TestServer::start().await;
    s.register("alice", "pw-alice").await;
    s.register("bob", "pw-bob").await;
    let bob_id = format!("@bob:{}", s.server_name);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let state_b = dir_b.path().to_owned();
    let base = s.base.clone();
    let login_b = state_b.clone();
    tokio::task::spawn_blocking(move || {
        cli(&login_b, &["login", "--homeserver", &base, "--user", "bob", "--password", "pw-bob"]);
    })
    .await
    .unwrap();
    let mut alice = poststelle_client::Client::login(dir_a.path(), &s.base, "alice", "pw-alice").await.unwrap();
    let room = alice.create_room(Some("Sammelakte"), Suite::DEFAULT).await.unwrap();
    alice.invite(&room, &bob_id).await.unwrap();
    let (joined_b, joined_room) = (state_b.clone(), room.clone());
    tokio::task::spawn_blocking(move || {
        for _ in 0..40 {
            let _ = cli(&joined_b, &["listen", "--once", "--timeout-ms", "500"]);
            if cli(&joined_b, &["rooms"]).contains(&joined_room) {
                cli(&joined_b, &["join", &joined_room]);
                return;
            }
        }
        panic!("no Welcome reached bob");
    })
    .await
    .unwrap();

    let packages: Vec<String> = (0..170)
        .map(|i| MlsTestDevice::new(&format!("@member{i}:elsewhere.example"), "D", Suite::DEFAULT).key_package(false).1)
        .collect();
    let event_id = alice.commit_with_retry(&room, |mls| mls.add_members(&room, &packages)).await.unwrap();
    let reader = s.login("alice", "pw-alice").await;
    let (status, event) = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), reader.token()).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert!(event["content"].get("ciphertext").is_none(), "the large commit went inline");
    assert!(event["content"]["de.poststelle.ciphertext_ref"]["url"].is_string(), "{event}");
    assert_eq!(alice.members(&room).unwrap().len(), 172);

    alice.send_text(&room, "nach dem großen Commit").await.unwrap();
    let lines = tokio::task::spawn_blocking(move || cli_listen(&state_b, &state_b)).await.unwrap();
    assert_eq!(lines.last().unwrap()["body"], "nach dem großen Commit", "{lines:?}");
}
