//! Rooms shared between real `poststelle` processes on loopback: a user of one server joins a
//! room held by another, and events flow both ways through the servers' transactions.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

pub(super) fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('#', "%23").replace('$', "%24")
}

/// Creates a public room of the given version on `s`; its id.
pub(super) async fn public_room(s: &TestServer, owner: &Account, version: &str) -> String {
    let (status, body) = s
        .post(
            "/_matrix/client/v3/createRoom",
            owner.token(),
            json!({"preset": "public_chat", "room_version": version, "name": format!("shared v{version}")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["room_id"].as_str().expect("room id").to_owned()
}

async fn send_text(s: &TestServer, who: &Account, room: &str, txn: &str, body: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let (status, answer) = s.put(&path, who.token(), json!({"msgtype": "m.text", "body": body})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["event_id"].as_str().expect("event id").to_owned()
}

/// The bodies of the room's latest messages as `who` sees them on `s`.
async fn bodies(s: &TestServer, who: &Account, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room));
    let (status, answer) = s.get(&path, who.token()).await;
    if status != StatusCode::OK {
        return Vec::new();
    }
    answer["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Waits (up to 30 s) until `who` sees a message with `body` on `s`.
async fn wait_for_message(s: &TestServer, who: &Account, room: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if bodies(s, who, room).await.iter().any(|b| b == body) {
            return;
        }
        assert!(Instant::now() < deadline, "{body:?} never reached {}; log:\n{}", s.server_name, s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn joined_members(s: &TestServer, who: &Account, room: &str) -> Vec<String> {
    let (status, answer) = s.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room)), who.token()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut members: Vec<String> =
        answer["joined"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    members.sort();
    members
}

/// Bob on B joins Alice's public room on A through A (make_join, send_join), for each room
/// version; then messages flow both ways, and both servers agree on who is in the room.
#[tokio::test]
async fn a_user_joins_a_remote_room_and_messages_flow_both_ways() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    for version in ["10", "11", "12"] {
        let room = public_room(&a, &alice, version).await;
        send_text(&a, &alice, &room, &format!("before{version}"), "before bob").await;

        let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&a.server_name));
        let (status, answer) = b.post(&path, bob.token(), json!({})).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}\nB log:\n{}", b.log());

        // B holds the room's state from the join: name, members.
        let (status, name) =
            b.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)), bob.token()).await;
        assert_eq!((status, name["name"].clone()), (StatusCode::OK, Value::from(format!("shared v{version}"))));
        let both = {
            let mut m = vec![alice.user_id.clone(), bob.user_id.clone()];
            m.sort();
            m
        };
        assert_eq!(joined_members(&b, &bob, &room).await, both, "v{version} on B");

        // Bob's join reaches A, then messages go both ways.
        let deadline = Instant::now() + Duration::from_secs(30);
        while joined_members(&a, &alice, &room).await != both {
            assert!(Instant::now() < deadline, "v{version}: the join never reached A; log:\n{}", a.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        send_text(&a, &alice, &room, &format!("a{version}"), &format!("hello from A v{version}")).await;
        wait_for_message(&b, &bob, &room, &format!("hello from A v{version}")).await;
        send_text(&b, &bob, &room, &format!("b{version}"), &format!("hello from B v{version}")).await;
        wait_for_message(&a, &alice, &room, &format!("hello from B v{version}")).await;
    }
}

/// Waits (up to 30 s) until `user`'s membership in the room, as `who` reads it on `s`, is
/// `membership`.
pub(super) async fn wait_for_membership(s: &TestServer, who: &Account, room: &str, user: &str, membership: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(user));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, content) = s.get(&path, who.token()).await;
        if status == StatusCode::OK && content["membership"] == membership {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} never became {membership} on {}: {content}; log:\n{}",
            s.server_name,
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Alice on A invites Bob on B into a private room: Bob's client sees the invite with the
/// room's name (the state A sent along), joins through A, and they talk; Bob's leave reaches A.
/// Then Bob invites Alice into a room on B and Alice declines through B.
#[tokio::test]
async fn invites_across_servers_are_accepted_and_declined() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    for version in ["10", "11", "12"] {
        let (status, created) = a
            .post(
                "/_matrix/client/v3/createRoom",
                alice.token(),
                json!({"preset": "private_chat", "room_version": version, "name": format!("private v{version}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let room = created["room_id"].as_str().unwrap().to_owned();
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
        let (status, answer) = a.post(&path, alice.token(), json!({"user_id": bob.user_id})).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}\nA log:\n{}", a.log());

        // Bob's sync shows the invite with the name A sent along.
        let (status, sync) = b.get("/_matrix/client/v3/sync", bob.token()).await;
        assert_eq!(status, StatusCode::OK, "{sync}");
        let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
        let names: Vec<&Value> =
            invite.as_array().into_iter().flatten().filter(|e| e["type"] == "m.room.name").collect();
        assert_eq!(
            names.first().map(|e| e["content"]["name"].clone()),
            Some(json!(format!("private v{version}"))),
            "{sync}"
        );

        // Bob joins through the inviting server, without naming it.
        let (status, answer) = b.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), bob.token(), json!({})).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}\nB log:\n{}", b.log());
        wait_for_membership(&a, &alice, &room, &bob.user_id, "join").await;
        send_text(&b, &bob, &room, &format!("hi{version}"), &format!("thanks for the invite v{version}")).await;
        wait_for_message(&a, &alice, &room, &format!("thanks for the invite v{version}")).await;
        let (status, answer) =
            b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), bob.token(), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        wait_for_membership(&a, &alice, &room, &bob.user_id, "leave").await;
    }

    // Declining: Bob invites Alice into a room on B; Alice leaves through B.
    let room = public_room(&b, &bob, "11").await;
    let (status, answer) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            bob.token(),
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}\nB log:\n{}", b.log());
    wait_for_membership(&b, &bob, &room, &alice.user_id, "invite").await;
    let (status, answer) =
        a.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\nA log:\n{}", a.log());
    wait_for_membership(&b, &bob, &room, &alice.user_id, "leave").await;
    // Alice's client no longer lists the invite.
    let (_, sync) = a.get("/_matrix/client/v3/sync", alice.token()).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");
}

/// The newest `/sync` of `who` on `s` after `since` (a long poll of up to 5 s).
async fn sync(s: &TestServer, who: &Account, since: Option<&str>) -> Value {
    let path = match since {
        Some(t) => format!("/_matrix/client/v3/sync?timeout=5000&since={t}"),
        None => "/_matrix/client/v3/sync".to_owned(),
    };
    let (status, body) = s.get(&path, who.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Syncs `who` on `s` until `check` holds for a response (up to 30 s); returns it.
pub(super) async fn sync_until(s: &TestServer, who: &Account, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since: Option<String> = None;
    loop {
        let body = sync(s, who, since.as_deref()).await;
        if check(&body) {
            return body;
        }
        since = body["next_batch"].as_str().map(str::to_owned);
        assert!(Instant::now() < deadline, "{what} never reached {}; log:\n{}", s.server_name, s.log());
    }
}

/// Three servers share a room held by A: B and C join; messages, typing, read receipts and
/// to-device messages flow all ways. B stops while A and C keep talking; after B restarts it
/// catches up with nothing missing.
#[tokio::test]
async fn three_servers_share_a_room_and_a_stopped_server_catches_up() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let mut b = TestServer::start_with(ServerOptions::federating()).await;
    let c = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let carol = c.register("carol", "pw-carol-123").await;
    let room = public_room(&a, &alice, "11").await;
    for (s, who) in [(&b, &bob), (&c, &carol)] {
        let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&a.server_name));
        let (status, answer) = s.post(&path, who.token(), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{answer}\n{}", s.log());
    }
    for (s, who) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while joined_members(s, who, &room).await.len() != 3 {
            assert!(Instant::now() < deadline, "{} never saw all three joined; log:\n{}", s.server_name, s.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Messages all ways.
    for (s, who, text) in [(&a, &alice, "from A"), (&b, &bob, "from B"), (&c, &carol, "from C")] {
        send_text(s, who, &room, text, text).await;
    }
    for (s, who) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
        for text in ["from A", "from B", "from C"] {
            wait_for_message(s, who, &room, text).await;
        }
    }

    // Typing on C shows on A; a read receipt on B shows on C.
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&carol.user_id));
    let (status, answer) = c.put(&path, carol.token(), json!({"typing": true, "timeout": 20000})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let carol_id = carol.user_id.clone();
    sync_until(&a, &alice, "carol's typing", |s| {
        s["rooms"]["join"][&room]["ephemeral"]["events"].as_array().into_iter().flatten().any(|e| {
            e["type"] == "m.typing" && e["content"]["user_ids"].as_array().is_some_and(|u| u.contains(&json!(carol_id)))
        })
    })
    .await;
    let last = send_text(&a, &alice, &room, "read me", "read me").await;
    wait_for_message(&b, &bob, &room, "read me").await;
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last));
    let (status, answer) = b.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let bob_id = bob.user_id.clone();
    sync_until(&c, &carol, "bob's receipt", |s| {
        s["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "m.receipt" && !e["content"][&last]["m.read"][&bob_id].is_null())
    })
    .await;

    // A to-device message from Alice to Carol's device.
    let path = "/_matrix/client/v3/sendToDevice/m.test.hello/t1";
    let body = json!({"messages": {carol.user_id.clone(): {carol.device_id.clone(): {"hello": "carol"}}}});
    let (status, answer) = a.put(path, alice.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    sync_until(&c, &carol, "alice's to-device message", |s| {
        s["to_device"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "m.test.hello" && e["content"]["hello"] == "carol" && e["sender"] == alice.user_id)
    })
    .await;

    // B stops; A and C keep talking; B restarts and catches up.
    b.stop();
    for i in 0..5 {
        send_text(&a, &alice, &room, &format!("while-b-down-a{i}"), &format!("A while B was down {i}")).await;
        send_text(&c, &carol, &room, &format!("while-b-down-c{i}"), &format!("C while B was down {i}")).await;
    }
    wait_for_message(&a, &alice, &room, "C while B was down 4").await;
    b.restart().await;
    // B talks again: its transaction tells A and C it is up, so they stop backing off.
    send_text(&b, &bob, &room, "back", "B is back").await;
    wait_for_message(&a, &alice, &room, "B is back").await;
    wait_for_message(&c, &carol, &room, "B is back").await;
    for i in 0..5 {
        wait_for_message(&b, &bob, &room, &format!("A while B was down {i}")).await;
        wait_for_message(&b, &bob, &room, &format!("C while B was down {i}")).await;
    }
    // Every message A holds from that time, B holds too.
    let on_a = bodies(&a, &alice, &room).await;
    let on_b = bodies(&b, &bob, &room).await;
    let down: Vec<&String> = on_a.iter().filter(|t| t.contains("while B was down")).collect();
    assert_eq!(down.len(), 10, "{on_a:?}");
    for text in &down {
        assert!(on_b.contains(text), "{text} missing on B: {on_b:?}");
    }
}

/// Bob on B knocks on Alice's knock-only room on A (through A); A sees the knock, Bob's client
/// sees the room's name under `knock`; Alice lets him in with an invite and he joins.
#[tokio::test]
async fn a_user_knocks_on_a_remote_room_and_is_let_in() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let (status, created) = a
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "private_chat", "room_version": "11", "name": "knock here",
                   "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/knock/{}?server_name={}", enc(&room), enc(&a.server_name));
    let (status, answer) = b.post(&path, bob.token(), json!({"reason": "let me in"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\nB log:\n{}", b.log());
    wait_for_membership(&a, &alice, &room, &bob.user_id, "knock").await;
    let (status, sync) = b.get("/_matrix/client/v3/sync", bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    let knocked = &sync["rooms"]["knock"][&room]["knock_state"]["events"];
    assert!(
        knocked
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "knock here"),
        "{sync}"
    );

    let (status, answer) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}\nA log:\n{}", a.log());
    let (status, answer) = b.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\nB log:\n{}", b.log());
    wait_for_membership(&a, &alice, &room, &bob.user_id, "join").await;
}

/// A room upgrade over federation: Alice on A upgrades a v11 room Bob on B is in to v12; the
/// tombstone reaches B, Bob follows it into the replacement room through A (whose create event
/// names the old room as predecessor on B too), messages flow there both ways, and the old
/// room no longer lets Bob speak (its power levels were raised by the upgrade).
#[tokio::test]
async fn a_room_upgrade_is_followed_across_servers() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let old = public_room(&a, &alice, "11").await;
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&old), enc(&a.server_name));
    let (status, answer) = b.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    wait_for_membership(&a, &alice, &old, &bob.user_id, "join").await;

    let (status, upgraded) = a
        .post(&format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)), alice.token(), json!({"new_version": "12"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{upgraded}");
    let new = upgraded["replacement_room"].as_str().expect("replacement room").to_owned();

    // The tombstone reaches B.
    let tombstone = format!("/_matrix/client/v3/rooms/{}/state/m.room.tombstone/", enc(&old));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, content) = b.get(&tombstone, bob.token()).await;
        if status == StatusCode::OK {
            assert_eq!(content["replacement_room"], new.as_str(), "{content}");
            break;
        }
        assert!(Instant::now() < deadline, "the tombstone never reached B; log:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bob follows it through A.
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&new), enc(&a.server_name));
    let (status, answer) = b.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\nB log:\n{}", b.log());
    let (status, create) =
        b.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create/", enc(&new)), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{create}");
    assert_eq!(create["predecessor"]["room_id"], old.as_str(), "{create}");
    wait_for_membership(&a, &alice, &new, &bob.user_id, "join").await;
    send_text(&a, &alice, &new, "up-a", "in the new room from A").await;
    wait_for_message(&b, &bob, &new, "in the new room from A").await;
    send_text(&b, &bob, &new, "up-b", "in the new room from B").await;
    wait_for_message(&a, &alice, &new, "in the new room from B").await;

    // The old room is closed to him.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/old-b", enc(&old));
    let (status, answer) = b.put(&path, bob.token(), json!({"msgtype": "m.text", "body": "too late"})).await;
    assert_eq!((status, answer["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{answer}");
}

/// Bob on B joins a room of A whose state holds hundreds of events (enough that B writes them
/// on several connections at once), and so does Dan on C, whose pool is too small for that (C
/// writes them in the join's own transaction): each holds every state event with its content,
/// every member, and the room works afterwards.
#[tokio::test]
async fn a_room_with_hundreds_of_state_events_is_joined_whole() {
    const ENTRIES: usize = 450;
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let c = TestServer::start_with(ServerOptions::federating().set("POSTSTELLE_DATABASE__MAX_CONNECTIONS", 3)).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let carol = a.register("carol", "pw-carol-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let dan = c.register("dan", "pw-dan-123").await;
    let room = public_room(&a, &alice, "11").await;
    let (status, answer) = a.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), carol.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for i in 0..ENTRIES {
        let path = format!("/_matrix/client/v3/rooms/{}/state/de.poststelle.test.entry/k{i:03}", enc(&room));
        let (status, answer) = a.put(&path, alice.token(), json!({"n": i})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    let mut members = vec![alice.user_id.clone(), carol.user_id.clone()];
    for (s, who) in [(&b, &bob), (&c, &dan)] {
        let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&a.server_name));
        let (status, answer) = s.post(&path, who.token(), json!({})).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{answer}
log:
{}",
            s.log()
        );

        let (status, state) = s.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), who.token()).await;
        assert_eq!(status, StatusCode::OK, "{state}");
        let mut entries: Vec<(String, i64)> = state
            .as_array()
            .expect("a list of state events")
            .iter()
            .filter(|e| e["type"] == "de.poststelle.test.entry")
            .map(|e| (e["state_key"].as_str().unwrap_or_default().to_owned(), e["content"]["n"].as_i64().unwrap_or(-1)))
            .collect();
        entries.sort();
        let expected: Vec<(String, i64)> = (0..ENTRIES).map(|i| (format!("k{i:03}"), i as i64)).collect();
        assert_eq!(entries, expected, "{}'s copy of the room's state", s.server_name);
        members.push(who.user_id.clone());
        members.sort();
        assert_eq!(joined_members(s, who, &room).await, members);

        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
        let (status, answer) = s.put(&path, who.token(), json!({"topic": "written later"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a member without power may not set the topic: {answer}");
        let body = format!("hello after a large join from {}", who.user_id);
        send_text(s, who, &room, "after-join", &body).await;
        wait_for_message(&a, &alice, &room, &body).await;
    }
}
