//! Rooms shared between real `poststelle` processes on loopback: a user of one server joins a
//! room held by another, and events flow both ways through the servers' transactions.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('#', "%23").replace('$', "%24")
}

/// Creates a public room of the given version on `s`; its id.
async fn public_room(s: &TestServer, owner: &Account, version: &str) -> String {
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

async fn joined_members(s: &TestServer, who: &Account, room: &str) -> Vec<String> {
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
