//! The real matrix-rust-sdk (`matrix-sdk` from crates.io, in-memory stores) against a real
//! `poststelle` process.
//!
//! - `megolm_conversation`: alice and bob, each with their own SDK client and sync, share an
//!   encrypted room (`m.megolm.v1.aes-sha2`); each one's message reaches the other decrypted,
//!   while the server holds only `m.room.encrypted` events (read back raw over HTTP).
//! - `key_backup_restore_and_cross_signing`: alice bootstraps cross-signing (the first upload
//!   without user-interactive auth, a replacement with the password) and enables recovery
//!   (secret storage and server-side key backup, waiting for the upload). A new device of alice
//!   cannot decrypt bob's earlier message; it recovers with the recovery key, which imports the
//!   cross-signing keys and signs the new device, downloads the room keys from the backup and
//!   then decrypts the message. Alice's first device and bob see the new device cross-signed.
//! - `sliding_sync_room_list`: the SDK's sliding sync (MSC4186) lists alice's rooms with their
//!   count and names, then brings only the room with news.

use std::{
    future::{Future, IntoFuture},
    time::Duration,
};

use matrix_sdk::{
    Client, Room,
    config::{RequestConfig, SyncSettings},
    deserialized_responses::{TimelineEvent, TimelineEventKind},
    encryption::{CrossSigningResetAuthType, recovery::RecoveryState},
    ruma::{
        EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::client::{
            room::create_room,
            uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier},
        },
        events::{
            InitialStateEvent,
            room::{encryption::RoomEncryptionEventContent, message::RoomMessageEventContent},
        },
    },
};
use serde_json::Value;
use spec_tests::{StatusCode, TestServer};

const ALICE_PASSWORD: &str = "alice correct horse";
const BOB_PASSWORD: &str = "bob battery staple";
const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// How long any single wait (a sync loop, a backup upload) may take.
const WAIT: Duration = Duration::from_secs(60);
/// Long-poll timeout of each `/sync` in the wait loops.
const POLL: Duration = Duration::from_millis(500);

/// Panics with the server's log: most failures here are the server answering something the SDK
/// did not expect, and the log shows the request.
#[track_caller]
fn ok<T, E: std::fmt::Debug>(server: &TestServer, step: &str, result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{step}: {e:?}\n--- server log ---\n{}", server.log()),
    }
}

/// Runs a step with a deadline, so no SDK future can hang the test.
async fn bounded<T>(server: &TestServer, step: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{step}: no result within {WAIT:?}\n--- server log ---\n{}", server.log()),
    }
}

/// A matrix-sdk client (in-memory stores) logged in with a password on a new device.
async fn login(server: &TestServer, localpart: &str, password: &str, device_name: &str) -> Client {
    let client = ok(
        server,
        "building the client",
        Client::builder()
            .homeserver_url(&server.base)
            .request_config(RequestConfig::new().timeout(Duration::from_secs(30)).retry_limit(2))
            .build()
            .await,
    );
    ok(
        server,
        &format!("login {localpart} ({device_name})"),
        client.matrix_auth().login_username(localpart, password).initial_device_display_name(device_name).await,
    );
    assert!(client.device_id().is_some(), "login of {localpart} gave no device id");
    client
}

/// Syncs (short long-polls, continuing from the client's last token) until `done` holds of the
/// client; panics after `WAIT`.
async fn sync_until<F, Fut>(server: &TestServer, client: &Client, what: &str, mut done: F)
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let settings = SyncSettings::default().timeout(POLL);
        ok(server, &format!("sync while waiting for {what}"), client.sync_once(settings).await);
        if done(client.clone()).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {WAIT:?}\n--- server log ---\n{}",
            server.log()
        );
    }
}

/// The decrypted `m.room.message` body an event carries, with its sender and Megolm session.
struct Plaintext {
    sender: OwnedUserId,
    body: String,
    session_id: String,
}

fn plaintext(event: &TimelineEvent) -> Option<Plaintext> {
    let TimelineEventKind::Decrypted(decrypted) = &event.kind else { return None };
    let json: Value = serde_json::from_str(decrypted.event.json().get()).expect("decrypted event is JSON");
    if json["type"] != "m.room.message" {
        return None;
    }
    Some(Plaintext {
        sender: decrypted.encryption_info.sender.clone(),
        body: json["content"]["body"].as_str()?.to_owned(),
        session_id: decrypted.encryption_info.session_id()?.to_owned(),
    })
}

/// Syncs `client` until its timeline of `room_id` holds `body` from `sender`, decrypted; returns
/// the event id and Megolm session id. An event that arrives before its room key is fetched
/// again (and decrypted with the keys the client has by then) after each further sync.
async fn receive_decrypted(
    server: &TestServer,
    client: &Client,
    room_id: &RoomId,
    sender: &UserId,
    body: &str,
) -> (OwnedEventId, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut undecrypted: Vec<OwnedEventId> = Vec::new();
    loop {
        let settings = SyncSettings::default().timeout(POLL);
        let response = ok(server, "sync while waiting for a message", client.sync_once(settings).await);
        let mut candidates: Vec<TimelineEvent> =
            response.rooms.joined.get(room_id).map(|update| update.timeline.events.clone()).unwrap_or_default();
        for event_id in &undecrypted {
            candidates.push(ok(
                server,
                "fetching an undecrypted event",
                room(client, room_id).event(event_id, None).await,
            ));
        }
        for event in &candidates {
            let Some(event_id) = event.event_id() else { continue };
            match plaintext(event) {
                Some(text) if text.sender == sender && text.body == body => return (event_id, text.session_id),
                Some(_) => undecrypted.retain(|id| *id != event_id),
                None if event.kind.is_utd() && !undecrypted.contains(&event_id) => undecrypted.push(event_id),
                None => {}
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{body:?} from {sender} did not arrive decrypted within {WAIT:?} (undecryptable: {undecrypted:?})\n\
             --- server log ---\n{}",
            server.log()
        );
    }
}

/// Alice's and bob's clients, joined to one encrypted room, keys uploaded.
struct Conversation {
    server: TestServer,
    alice: Client,
    bob: Client,
    room_id: OwnedRoomId,
}

/// Registers alice and bob over HTTP, logs both in with the SDK, and has alice create an
/// encrypted room that bob joins; returns once each client has seen the other one's membership.
async fn start_conversation() -> Conversation {
    let server = TestServer::start().await;
    server.register("alice", ALICE_PASSWORD).await;
    server.register("bob", BOB_PASSWORD).await;

    let alice = login(&server, "alice", ALICE_PASSWORD, "alice's first device").await;
    let bob = login(&server, "bob", BOB_PASSWORD, "bob's device").await;
    let alice_id = alice.user_id().expect("alice's user id").to_owned();
    let bob_id = bob.user_id().expect("bob's user id").to_owned();
    assert_eq!(alice_id.as_str(), "@alice:localhost");
    assert_eq!(bob_id.as_str(), "@bob:localhost");

    // A first sync uploads each device's identity and one-time keys.
    for client in [&alice, &bob] {
        ok(&server, "first sync", client.sync_once(SyncSettings::default().timeout(POLL)).await);
    }
    for (client, who) in [(&alice, "alice"), (&bob, "bob")] {
        let device = ok(&server, "reading the own device", client.encryption().get_own_device().await)
            .unwrap_or_else(|| panic!("{who}'s own device is unknown to its client"));
        assert!(device.ed25519_key().is_some(), "{who}'s device has no Ed25519 key");
    }

    let mut request = create_room::v3::Request::new();
    request.name = Some("E2EE interop".to_owned());
    request.invite = vec![bob_id.clone()];
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults()).to_raw_any(),
    ];
    let room = ok(&server, "alice creates the encrypted room", alice.create_room(request).await);
    let room_id = room.room_id().to_owned();
    assert!(
        ok(&server, "encryption state", room.latest_encryption_state().await).is_encrypted(),
        "alice's client does not see the new room as encrypted"
    );

    sync_until(&server, &bob, "bob sees the invite", |c| {
        let room_id = room_id.clone();
        async move { c.get_room(&room_id).is_some_and(|r| r.state() == matrix_sdk::RoomState::Invited) }
    })
    .await;
    ok(&server, "bob joins", bob.join_room_by_id(&room_id).await);
    sync_until(&server, &bob, "bob's client sees the joined, encrypted room", |c| {
        let room_id = room_id.clone();
        async move {
            match c.get_room(&room_id) {
                Some(r) if r.state() == matrix_sdk::RoomState::Joined => {
                    r.latest_encryption_state().await.is_ok_and(|s| s.is_encrypted())
                }
                _ => false,
            }
        }
    })
    .await;
    sync_until(&server, &alice, "alice sees bob's join", |c| {
        let (room_id, bob_id) = (room_id.clone(), bob_id.clone());
        async move { joined(&c, &room_id, &bob_id).await }
    })
    .await;

    Conversation { server, alice, bob, room_id }
}

async fn joined(client: &Client, room_id: &RoomId, user_id: &UserId) -> bool {
    let Some(room) = client.get_room(room_id) else { return false };
    matches!(
        room.get_member_no_sync(user_id).await,
        Ok(Some(member)) if *member.membership() == matrix_sdk::ruma::events::room::member::MembershipState::Join
    )
}

fn room(client: &Client, room_id: &RoomId) -> Room {
    client.get_room(room_id).expect("the client knows the room")
}

async fn send_text(server: &TestServer, client: &Client, room_id: &RoomId, body: &str) -> OwnedEventId {
    let result = ok(
        server,
        &format!("sending {body:?}"),
        room(client, room_id).send(RoomMessageEventContent::text_plain(body)).await,
    );
    let info = result.encryption_info.unwrap_or_else(|| panic!("{body:?} was sent unencrypted"));
    assert!(info.session_id().is_some(), "{body:?} was sent without a Megolm session");
    result.response.event_id
}

/// Reads the room's history raw over HTTP with `token`: every message event the server holds
/// must be an `m.room.encrypted` Megolm event, and no plaintext body may appear anywhere.
async fn assert_stored_encrypted(server: &TestServer, token: &str, room_id: &RoomId, sent: &[(&EventId, &str)]) {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(room_id.as_str()));
    let (status, body) = server.get(&path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "/messages: {body}");
    let chunk = body["chunk"].as_array().expect("chunk");
    let raw = body.to_string();
    for (event_id, text) in sent {
        let event = chunk
            .iter()
            .find(|e| e["event_id"] == event_id.as_str())
            .unwrap_or_else(|| panic!("{event_id} is not in the room's history: {body}"));
        assert_eq!(event["type"], "m.room.encrypted", "stored event: {event}");
        assert_eq!(event["content"]["algorithm"], MEGOLM, "stored event: {event}");
        assert!(event["content"]["ciphertext"].as_str().is_some_and(|c| !c.is_empty()), "stored event: {event}");
        assert!(event["content"]["session_id"].as_str().is_some(), "stored event: {event}");
        assert!(!raw.contains(text), "the plaintext {text:?} is visible on the server: {body}");
    }
    assert!(
        !chunk.iter().any(|e| e["type"] == "m.room.message"),
        "the server holds an unencrypted m.room.message: {body}"
    );
    let encryption = chunk
        .iter()
        .find(|e| e["type"] == "m.room.encryption")
        .unwrap_or_else(|| panic!("no m.room.encryption state event in the history: {body}"));
    assert_eq!(encryption["content"]["algorithm"], MEGOLM);
}

/// Alice's master cross-signing public key as the server serves it from `/keys/query`.
async fn master_key(server: &TestServer, token: &str, user_id: &UserId) -> String {
    let (status, body) = server
        .post("/_matrix/client/v3/keys/query", Some(token), serde_json::json!({"device_keys": {user_id.as_str(): []}}))
        .await;
    assert_eq!(status, StatusCode::OK, "/keys/query: {body}");
    let keys =
        body["master_keys"][user_id.as_str()]["keys"].as_object().unwrap_or_else(|| panic!("no master key: {body}"));
    assert_eq!(keys.len(), 1, "master key: {body}");
    keys.values().next().and_then(Value::as_str).expect("master key").to_owned()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn megolm_conversation() {
    let Conversation { server, alice, bob, room_id } = start_conversation().await;
    let (alice_id, bob_id) = (alice.user_id().unwrap().to_owned(), bob.user_id().unwrap().to_owned());

    let hello = "Guten Tag, Bob — hier ist Alice";
    let hello_id = send_text(&server, &alice, &room_id, hello).await;
    let (received, alice_session) = receive_decrypted(&server, &bob, &room_id, &alice_id, hello).await;
    assert_eq!(received, hello_id);

    let reply = "Hallo Alice, Bob hier";
    let reply_id = send_text(&server, &bob, &room_id, reply).await;
    let (received, bob_session) = receive_decrypted(&server, &alice, &room_id, &bob_id, reply).await;
    assert_eq!(received, reply_id);
    assert_ne!(alice_session, bob_session, "alice and bob encrypted with the same Megolm session");

    let token = bob.access_token().expect("bob's access token");
    assert_stored_encrypted(&server, &token, &room_id, &[(&hello_id, hello), (&reply_id, reply)]).await;
}

#[tokio::test]
async fn key_backup_restore_and_cross_signing() {
    let Conversation { server, alice, bob, room_id } = start_conversation().await;
    let (alice_id, bob_id) = (alice.user_id().unwrap().to_owned(), bob.user_id().unwrap().to_owned());

    // Bob's message reaches alice's first device, the only device alice has so far.
    let secret = "Das Aktenzeichen lautet 4711";
    let secret_id = send_text(&server, &bob, &room_id, secret).await;
    let (_, bob_session) = receive_decrypted(&server, &alice, &room_id, &bob_id, secret).await;

    // Cross-signing. The first upload of a master key needs no user-interactive auth (spec
    // v1.11, MSC3967); replacing it (a reset) asks for the password.
    ok(
        &server,
        "bootstrapping cross-signing (first master key, no UIA)",
        alice.encryption().bootstrap_cross_signing(None).await,
    );
    let alice_token = alice.access_token().expect("alice's access token");
    let first_master = master_key(&server, &alice_token, &alice_id).await;
    let reset = ok(&server, "resetting cross-signing", alice.encryption().reset_cross_signing().await)
        .unwrap_or_else(|| panic!("the server replaced the master key without user-interactive auth"));
    let CrossSigningResetAuthType::Uiaa(uiaa) = reset.auth_type() else {
        panic!("the reset asks for OAuth instead of user-interactive auth: {:?}", reset.auth_type())
    };
    assert!(
        uiaa.flows.iter().any(|f| f.stages.iter().any(|s| s.as_str() == "m.login.password")),
        "no password flow offered for replacing the cross-signing keys: {:?}",
        uiaa.flows
    );
    let mut password = Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new(alice_id.to_string())),
        ALICE_PASSWORD.to_owned(),
    );
    password.session = uiaa.session.clone();
    ok(
        &server,
        "replacing the cross-signing keys with the password",
        bounded(&server, "replacing the cross-signing keys", reset.auth(Some(AuthData::Password(password)))).await,
    );
    let master = master_key(&server, &alice_token, &alice_id).await;
    assert_ne!(master, first_master, "the reset did not replace the master key on the server");
    let status = alice.encryption().cross_signing_status().await.expect("cross-signing status");
    assert!(status.has_master && status.has_self_signing && status.has_user_signing, "{status:?}");

    // Recovery: secret storage plus a server-side key backup, waiting until the keys are uploaded.
    let recovery_key = ok(
        &server,
        "enabling recovery",
        bounded(
            &server,
            "enabling recovery",
            alice.encryption().recovery().enable().wait_for_backups_to_upload().into_future(),
        )
        .await,
    );
    assert_eq!(alice.encryption().recovery().state(), RecoveryState::Enabled);
    assert!(alice.encryption().backups().are_enabled().await, "the backup is not enabled on alice's first device");

    // The server holds the backup and bob's session in it.
    let (status, version) = server.get("/_matrix/client/v3/room_keys/version", Some(&alice_token)).await;
    assert_eq!(status, StatusCode::OK, "backup version: {version}");
    assert_eq!(version["algorithm"], "m.megolm_backup.v1.curve25519-aes-sha2", "{version}");
    assert!(version["count"].as_u64().is_some_and(|c| c >= 1), "the backup holds no keys: {version}");
    let backup_version = version["version"].as_str().expect("backup version").to_owned();
    let path = format!(
        "/_matrix/client/v3/room_keys/keys/{}/{}?version={}",
        enc(room_id.as_str()),
        enc(&bob_session),
        enc(&backup_version)
    );
    let (status, key) = server.get(&path, Some(&alice_token)).await;
    assert_eq!(status, StatusCode::OK, "bob's session is not in the backup: {key}");
    assert!(key["session_data"]["ciphertext"].is_string(), "backed-up session: {key}");

    // A new device of alice: it never got bob's room key by to-device, so bob's message is
    // undecryptable there until it restores the backup.
    let alice3 = login(&server, "alice", ALICE_PASSWORD, "alice's restored device").await;
    let alice3_device = alice3.device_id().expect("device id").to_owned();
    ok(&server, "first sync of the new device", alice3.sync_once(SyncSettings::default().timeout(POLL)).await);
    let before = ok(&server, "fetching bob's message", room(&alice3, &room_id).event(&secret_id, None).await);
    assert!(
        before.kind.is_utd(),
        "the new device could decrypt bob's message before restoring the backup: {:?}",
        plaintext(&before).map(|p| p.body)
    );
    let own = ok(&server, "reading the own device", alice3.encryption().get_own_device().await).expect("own device");
    assert!(!own.is_cross_signed_by_owner(), "the new device is cross-signed before recovery");

    // Recovery with the recovery key imports the cross-signing keys and the backup key, and
    // signs the new device with the self-signing key.
    ok(
        &server,
        "recovering on the new device",
        bounded(&server, "recovering", alice3.encryption().recovery().recover(&recovery_key)).await,
    );
    assert_eq!(alice3.encryption().recovery().state(), RecoveryState::Enabled);
    let status = alice3.encryption().cross_signing_status().await.expect("cross-signing status");
    assert!(
        status.has_master && status.has_self_signing && status.has_user_signing,
        "the new device did not import the cross-signing keys: {status:?}"
    );
    let own = ok(&server, "reading the own device", alice3.encryption().get_own_device().await).expect("own device");
    assert!(own.is_cross_signed_by_owner(), "the new device is not signed by alice's self-signing key");
    assert!(own.is_verified(), "the new device is not verified by alice's own identity");
    let identity = ok(&server, "alice's identity", alice3.encryption().get_user_identity(&alice_id).await)
        .expect("alice's own identity");
    assert!(identity.is_verified(), "the new device does not trust alice's own identity");
    assert!(alice3.encryption().backups().are_enabled().await, "the new device did not enable the backup");

    // Room keys from the backup make bob's old message readable.
    ok(
        &server,
        "downloading the room keys from the backup",
        bounded(&server, "downloading room keys", alice3.encryption().backups().download_room_keys_for_room(&room_id))
            .await,
    );
    let after = ok(&server, "fetching bob's message again", room(&alice3, &room_id).event(&secret_id, None).await);
    let text = plaintext(&after)
        .unwrap_or_else(|| panic!("bob's message is still undecryptable after the restore: {:?}", after.kind.is_utd()));
    assert_eq!(text.body, secret);
    assert_eq!(text.sender, bob_id);
    assert_eq!(text.session_id, bob_session);

    // The signature the new device uploaded reaches alice's first device and bob (device-list
    // changes, then /keys/query with the signatures).
    sync_until(&server, &alice, "alice's first device sees the new device verified", |c| {
        let (alice_id, device) = (alice_id.clone(), alice3_device.clone());
        async move { matches!(c.encryption().get_device(&alice_id, &device).await, Ok(Some(d)) if d.is_verified()) }
    })
    .await;
    sync_until(&server, &bob, "bob sees the new device cross-signed by alice", |c| {
        let (alice_id, device) = (alice_id.clone(), alice3_device.clone());
        async move {
            matches!(c.encryption().get_device(&alice_id, &device).await, Ok(Some(d)) if d.is_cross_signed_by_owner())
        }
    })
    .await;
}

/// Sliding sync (MSC4186), as Element X lists rooms: the SDK's sliding sync with one list over
/// alice's rooms gets the room count, the rooms with their names, and then the news of one room.
#[tokio::test]
async fn sliding_sync_room_list() {
    use matrix_sdk::{SlidingSyncList, SlidingSyncMode, ruma::events::StateEventType, sliding_sync::Version};

    let server = TestServer::start().await;
    let alice = server.register("alice", ALICE_PASSWORD).await;
    let mut rooms = Vec::new();
    for n in 0..3 {
        let (status, created) = server
            .post("/_matrix/client/v3/createRoom", alice.token(), serde_json::json!({"name": format!("Akte {n}")}))
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        rooms.push(created["room_id"].as_str().expect("room_id").to_owned());
    }
    let client = login(&server, "alice", ALICE_PASSWORD, "sliding").await;
    let list = SlidingSyncList::builder("all")
        .sync_mode(SlidingSyncMode::new_selective().add_range(0..=9))
        .timeline_limit(1)
        .required_state(vec![(StateEventType::RoomName, String::new()), (StateEventType::RoomCreate, String::new())]);
    let sliding = ok(
        &server,
        "building sliding sync",
        client.sliding_sync("roomlist").map(|b| b.version(Version::Native).add_list(list)),
    );
    let sliding = ok(&server, "building sliding sync", sliding.build().await);
    let stream = sliding.sync();
    let mut stream = std::pin::pin!(stream);

    let first = ok(&server, "first sliding sync", next_update(&server, &mut stream).await);
    // The SDK's summary may name a room more than once.
    let mut seen: Vec<String> = first.rooms.iter().map(ToString::to_string).collect();
    seen.sort();
    seen.dedup();
    let mut expected = rooms.clone();
    expected.sort();
    assert_eq!(seen, expected, "the room list");
    let count = sliding.on_list("all", |l| std::future::ready(l.maximum_number_of_rooms())).await;
    assert_eq!(count, Some(Some(3)));
    for (n, room) in rooms.iter().enumerate() {
        let room_id = OwnedRoomId::try_from(room.as_str()).expect("room id");
        let room = client.get_room(&room_id).expect("the SDK knows the room");
        assert_eq!(room.name().as_deref(), Some(format!("Akte {n}").as_str()));
    }

    // News in one room: only that room comes.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", rooms[1]);
    let (status, _) = server.put(&path, alice.token(), serde_json::json!({"msgtype": "m.text", "body": "neu"})).await;
    assert_eq!(status, StatusCode::OK);
    let mut updated = Vec::new();
    for _ in 0..5 {
        let update = ok(&server, "next sliding sync", next_update(&server, &mut stream).await);
        updated.extend(update.rooms.iter().map(ToString::to_string));
        updated.dedup();
        if !updated.is_empty() {
            break;
        }
    }
    assert_eq!(updated, [rooms[1].clone()], "only the room with news");
}

/// The next item of the sliding sync stream, bounded by `WAIT`.
async fn next_update<S: futures_util::Stream + Unpin>(server: &TestServer, stream: &mut S) -> S::Item {
    use futures_util::StreamExt;
    bounded(server, "a sliding sync response", stream.next()).await.expect("the sliding sync stream ended")
}
