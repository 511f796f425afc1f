//! What clients tell each other outside the timeline, as `/sync` delivers it: typing
//! notifications, read receipts (public, private, threaded), read markers, unread notification
//! counts and to-device messages.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use super::{joined, next_batch, section, sync, sync_since};
use crate::rooms::{create_room, enc, events, join, room_path, send, send_text, server_with};

/// The ephemeral events of one type in a joined room of a sync response.
fn ephemeral(response: &Value, room: &str, kind: &str) -> Vec<Value> {
    events(&joined(response, room)["ephemeral"]["events"]).iter().filter(|e| e["type"] == kind).cloned().collect()
}

/// The users typing in a room, if the response has an `m.typing` event for it.
fn typing_users(response: &Value, room: &str) -> Option<Vec<String>> {
    let typing = ephemeral(response, room, "m.typing");
    assert!(typing.len() <= 1, "one m.typing per room: {typing:?}");
    typing.first().map(|e| {
        assert!(e.get("room_id").is_none(), "Complement: typing events DO NOT include a room_id: {e}");
        e["content"]["user_ids"].as_array().expect("user_ids").iter().map(|u| u.as_str().unwrap().to_owned()).collect()
    })
}

/// `content[event][type][user]` over the `m.receipt` events of a room (`Null` when absent).
fn receipt(response: &Value, room: &str, event: &str, kind: &str, user: &str) -> Value {
    ephemeral(response, room, "m.receipt")
        .iter()
        .inspect(|e| assert!(e.get("room_id").is_none(), "Complement: receipts DO NOT include a room_id: {e}"))
        .map(|e| e["content"][event][kind][user].clone())
        .find(|r| !r.is_null())
        .unwrap_or(Value::Null)
}

async fn set_typing(s: &TestServer, who: &Account, room: &str, user: &str, body: Value) -> (StatusCode, Value) {
    s.put(&room_path(room, &format!("typing/{}", enc(user))), who.token(), body).await
}

async fn post_receipt(
    s: &TestServer,
    who: &Account,
    room: &str,
    kind: &str,
    event: &str,
    body: Value,
) -> (StatusCode, Value) {
    s.post(&room_path(room, &format!("receipt/{kind}/{}", enc(event))), who.token(), body).await
}

#[tokio::test]
async fn typing_notifications() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let elsewhere = create_room(&s, &charlie, json!({})).await;
    let bob_since = next_batch(&sync(&s, &bob, "").await);
    let charlie_since = next_batch(&sync(&s, &charlie, "").await);

    // Sytest "PUT /rooms/:room_id/typing/:user_id sets typing notification".
    let r = set_typing(&s, &alice, &room, &alice.user_id, json!({"typing": true, "timeout": 30000})).await;
    assert_eq!(r, (StatusCode::OK, json!({})));
    // "Typing events appear in incremental sync" / "… in initial sync"; Complement "Typing
    // notification sent to local room members".
    let incr = sync_since(&s, &bob, &bob_since, "").await;
    assert_eq!(typing_users(&incr, &room), Some(vec![alice.user_id.clone()]), "{incr}");
    let initial = sync(&s, &bob, "").await;
    assert_eq!(typing_users(&initial, &room), Some(vec![alice.user_id.clone()]), "{initial}");
    // Sytest "Typing notifications don't leak".
    let other = sync_since(&s, &charlie, &charlie_since, "").await;
    assert!(section(&other, "join").iter().all(|r| r == &elsewhere), "{other}");
    assert_eq!(typing_users(&other, &elsewhere), None);
    assert!(!section(&sync(&s, &charlie, "").await, "join").contains(&room));

    // Complement "Typing can be explicitly stopped".
    let since = next_batch(&incr);
    let r = set_typing(&s, &alice, &room, &alice.user_id, json!({"typing": false})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let stopped = sync_since(&s, &bob, &since, "").await;
    assert_eq!(typing_users(&stopped, &room), Some(vec![]), "{stopped}");

    // Sytest "Ephemeral messages received from clients are correctly expired": a waiting sync
    // wakes when the timeout runs out.
    let since = next_batch(&stopped);
    set_typing(&s, &alice, &room, &alice.user_id, json!({"typing": true, "timeout": 1000})).await;
    let typing = sync_since(&s, &bob, &since, "&timeout=10000").await;
    assert_eq!(typing_users(&typing, &room), Some(vec![alice.user_id.clone()]));
    let started = Instant::now();
    let expired = sync_since(&s, &bob, &next_batch(&typing), "&timeout=10000").await;
    assert!(started.elapsed() < Duration::from_secs(8), "the typing notification did not expire in time");
    assert_eq!(typing_users(&expired, &room), Some(vec![]), "{expired}");

    // Typing is only for oneself and for joined rooms.
    let r = set_typing(&s, &bob, &room, &alice.user_id, json!({"typing": true, "timeout": 1000})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let r = set_typing(&s, &charlie, &room, &charlie.user_id, json!({"typing": true, "timeout": 1000})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let r = set_typing(&s, &alice, &room, &alice.user_id, json!({"typing": "yes"})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
}

#[tokio::test]
async fn read_receipts_public_private_and_threaded() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &charlie, &room).await;
    let e1 = send_text(&s, &alice, &room, "read me").await;
    let alice_since = next_batch(&sync(&s, &alice, "").await);

    // Sytest "POST /rooms/:room_id/receipt can create receipts", "New read receipts appear in
    // incremental v2 /sync", "Read receipts appear in initial v2 /sync".
    assert_eq!(post_receipt(&s, &bob, &room, "m.read", &e1, json!({})).await, (StatusCode::OK, json!({})));
    let incr = sync_since(&s, &alice, &alice_since, "").await;
    let bob_read = receipt(&incr, &room, &e1, "m.read", &bob.user_id);
    assert!(bob_read["ts"].is_i64(), "{incr}");
    assert!(receipt(&sync(&s, &alice, "").await, &room, &e1, "m.read", &bob.user_id)["ts"].is_i64());

    // Private receipts reach only their owner.
    let since = next_batch(&incr);
    let charlie_since = next_batch(&sync(&s, &charlie, "").await);
    assert_eq!(post_receipt(&s, &charlie, &room, "m.read.private", &e1, json!({})).await.0, StatusCode::OK);
    let own = sync_since(&s, &charlie, &charlie_since, "").await;
    assert!(receipt(&own, &room, &e1, "m.read.private", &charlie.user_id)["ts"].is_i64(), "{own}");
    let others = sync_since(&s, &alice, &since, "").await;
    assert!(!others["rooms"].to_string().contains(&charlie.user_id), "a private receipt leaked: {others}");
    assert!(!sync(&s, &alice, "").await.to_string().contains("m.read.private"));

    // Threaded receipts carry their thread id (Complement TestThreadedReceipts).
    let root = send_text(&s, &alice, &room, "root").await;
    let reply = send(
        &s,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    let bob_since = next_batch(&sync(&s, &bob, "").await);
    let r = post_receipt(&s, &alice, &room, "m.read", &reply, json!({"thread_id": root})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = post_receipt(&s, &alice, &room, "m.read", &root, json!({"thread_id": "main"})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let incr = sync_since(&s, &bob, &bob_since, "").await;
    assert_eq!(receipt(&incr, &room, &reply, "m.read", &alice.user_id)["thread_id"], root.as_str(), "{incr}");
    assert_eq!(receipt(&incr, &room, &root, "m.read", &alice.user_id)["thread_id"], "main", "{incr}");

    // Bad receipts (receipts.yaml): an event outside the thread, a thread id for a receipt type
    // without threads, an unknown type (Sytest "Receipts must be m.read").
    let r = post_receipt(&s, &alice, &room, "m.read", &e1, json!({"thread_id": root})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let r = post_receipt(&s, &alice, &room, "m.fully_read", &reply, json!({"thread_id": root})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let r = post_receipt(&s, &alice, &room, "m.fully_read", &root, json!({"thread_id": "main"})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let r = post_receipt(&s, &alice, &room, "org.example.seen", &e1, json!({})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    // Only members send receipts.
    let outsider = s.register("outsider", "pw").await;
    let r = post_receipt(&s, &outsider, &room, "m.read", &e1, json!({})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn read_markers() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let e1 = send_text(&s, &bob, &room, "first").await;
    let e2 = send_text(&s, &bob, &room, "second").await;
    let alice_since = next_batch(&sync(&s, &alice, "").await);
    let bob_since = next_batch(&sync(&s, &bob, "").await);
    let fully_read = |response: &Value| -> Vec<Value> {
        events(&joined(response, &room)["account_data"]["events"])
            .iter()
            .filter(|e| e["type"] == "m.fully_read")
            .map(|e| e["content"].clone())
            .collect()
    };
    let markers_path = room_path(&room, "read_markers");
    let markers = |body: Value| s.post(&markers_path, alice.token(), body);

    // Sytest "POST /rooms/:room_id/read_markers can create read marker", "Read markers appear in
    // incremental v2 /sync" / "… in initial v2 /sync".
    assert_eq!(markers(json!({"m.fully_read": e1, "m.read": e1})).await, (StatusCode::OK, json!({})));
    let incr = sync_since(&s, &alice, &alice_since, "").await;
    assert_eq!(fully_read(&incr), [json!({"event_id": e1})], "{incr}");
    assert!(receipt(&incr, &room, &e1, "m.read", &alice.user_id)["ts"].is_i64(), "{incr}");
    assert_eq!(fully_read(&sync(&s, &alice, "").await), [json!({"event_id": e1})]);
    let bob_incr = sync_since(&s, &bob, &bob_since, "").await;
    assert!(receipt(&bob_incr, &room, &e1, "m.read", &alice.user_id)["ts"].is_i64(), "{bob_incr}");
    assert!(fully_read(&bob_incr).is_empty(), "the read marker is private: {bob_incr}");

    // Sytest "Read markers can be updated"; a private receipt with it stays private.
    let since = next_batch(&incr);
    let bob_since = next_batch(&bob_incr);
    assert_eq!(markers(json!({"m.fully_read": e2, "m.read.private": e2})).await.0, StatusCode::OK);
    let incr = sync_since(&s, &alice, &since, "").await;
    assert_eq!(fully_read(&incr), [json!({"event_id": e2})], "{incr}");
    assert!(receipt(&incr, &room, &e2, "m.read.private", &alice.user_id)["ts"].is_i64(), "{incr}");
    let path =
        format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read", enc(&alice.user_id), enc(&room));
    assert_eq!(s.get(&path, alice.token()).await, (StatusCode::OK, json!({"event_id": e2})));
    let bob_incr = sync_since(&s, &bob, &bob_since, "").await;
    assert!(receipt(&bob_incr, &room, &e2, "m.read.private", &alice.user_id).is_null(), "{bob_incr}");

    // Errors: an event of another room, a room one is not in.
    let other = create_room(&s, &bob, json!({})).await;
    let foreign = send_text(&s, &bob, &other, "elsewhere").await;
    let r = markers(json!({"m.fully_read": foreign})).await;
    assert!(r.0.is_client_error() && r.1["errcode"].is_string(), "{} {}", r.0, r.1);
    let r = s.post(&room_path(&other, "read_markers"), alice.token(), json!({"m.fully_read": foreign})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn unread_notification_counts() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    assert_eq!(s.put(&path, alice.token(), json!({"displayname": "Alicia"})).await.0, StatusCode::OK);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let counts = |response: &Value| {
        let c = &joined(response, &room)["unread_notifications"];
        (c["notification_count"].clone(), c["highlight_count"].clone())
    };

    // Sytest "Messages that notify from another user increment unread notification count".
    send_text(&s, &bob, &room, "hello").await;
    send_text(&s, &bob, &room, "how are you").await;
    let initial = sync(&s, &alice, "").await;
    assert_eq!(counts(&initial), (json!(2), json!(0)), "{initial}");
    // "Messages that highlight from another user increment unread highlight count": since v1.17
    // (MSC4210) a mention is an intentional one (`m.mentions`); the display name in the body alone
    // only notifies. One's own messages never count.
    let since = next_batch(&initial);
    send_text(&s, &bob, &room, "Alicia, are you there?").await;
    let mention = send(
        &s,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "Alicia: look at this", "m.mentions": {"user_ids": [alice.user_id]}}),
    )
    .await;
    send_text(&s, &alice, &room, "my own").await;
    let incr = sync_since(&s, &alice, &since, "").await;
    assert_eq!(counts(&incr), (json!(4), json!(1)), "{incr}");

    // Reading clears the counts, also in the incremental sync the receipt causes.
    let since = next_batch(&incr);
    assert_eq!(post_receipt(&s, &alice, &room, "m.read", &mention, json!({})).await.0, StatusCode::OK);
    let incr = sync_since(&s, &alice, &since, "").await;
    assert_eq!(counts(&incr), (json!(0), json!(0)), "{incr}");
    assert_eq!(counts(&sync(&s, &alice, "").await), (json!(0), json!(0)));
    // New messages count again; a private receipt clears them too.
    let since = next_batch(&incr);
    let later = send_text(&s, &bob, &room, "one more").await;
    let incr = sync_since(&s, &alice, &since, "").await;
    assert_eq!(counts(&incr), (json!(1), json!(0)), "{incr}");
    assert_eq!(post_receipt(&s, &alice, &room, "m.read.private", &later, json!({})).await.0, StatusCode::OK);
    assert_eq!(counts(&sync(&s, &alice, "").await), (json!(0), json!(0)));
    // Bob's counts are his own: Alice's messages since he joined.
    assert_eq!(counts(&sync(&s, &bob, "").await).0, json!(1));
}

async fn send_to_device(s: &TestServer, who: &Account, kind: &str, txn: &str, messages: Value) -> (StatusCode, Value) {
    s.put(
        &format!("/_matrix/client/v3/sendToDevice/{}/{}", enc(kind), enc(txn)),
        who.token(),
        json!({"messages": messages}),
    )
    .await
}

/// `(sender, content)` of the to-device events of a sync response, all of type `org.example.ping`.
fn to_device(response: &Value) -> Vec<(String, Value)> {
    events(&response["to_device"]["events"])
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "org.example.ping", "{e}");
            (e["sender"].as_str().expect("sender").to_owned(), e["content"].clone())
        })
        .collect()
}

#[tokio::test]
async fn to_device_messages() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let alice2 = s.login("alice", "pw").await;
    let bob2 = s.login("bob", "pw").await;
    let a1 = next_batch(&sync(&s, &alice, "").await);
    let a2 = next_batch(&sync(&s, &alice2, "").await);
    let ping = |n: i64| json!({"n": n});
    let from_bob = |n: i64| vec![(bob.user_id.clone(), ping(n))];

    // Sytest "Can send a message directly to a device using PUT /sendToDevice", "Can recv a
    // device message using /sync": only the addressed device gets it.
    let r =
        send_to_device(&s, &bob, "org.example.ping", "t1", json!({&alice.user_id: {&alice.device_id: ping(1)}})).await;
    assert_eq!(r, (StatusCode::OK, json!({})));
    let got = sync_since(&s, &alice, &a1, "").await;
    assert_eq!(to_device(&got), from_bob(1), "{got}");
    assert!(to_device(&sync_since(&s, &alice2, &a2, "").await).is_empty());
    // Until a later sync acknowledges it, a retry of the same sync delivers it again; after that
    // it is gone, also for the old token.
    assert_eq!(to_device(&sync_since(&s, &alice, &a1, "").await), from_bob(1));
    let acked = sync_since(&s, &alice, &next_batch(&got), "").await;
    assert!(to_device(&acked).is_empty(), "{acked}");
    assert!(to_device(&sync_since(&s, &alice, &a1, "").await).is_empty(), "deleted once acknowledged");
    let a1 = next_batch(&acked);

    // '*' reaches every device of the user, once each; two users at once (Sytest "Can send a
    // to-device message to two users which both receive it using /sync").
    let messages = json!({&alice.user_id: {"*": ping(2)}, &charlie.user_id: {"*": ping(2)}});
    assert_eq!(send_to_device(&s, &bob, "org.example.ping", "t2", messages).await.0, StatusCode::OK);
    let first = sync_since(&s, &alice, &a1, "").await;
    assert_eq!(to_device(&first), from_bob(2));
    let second = sync_since(&s, &alice2, &a2, "").await;
    assert_eq!(to_device(&second), from_bob(2));
    assert_eq!(to_device(&sync(&s, &charlie, "").await), from_bob(2), "an initial sync delivers what waits");
    let a1 = next_batch(&first);
    let a2 = next_batch(&second);
    assert!(to_device(&sync_since(&s, &alice, &a1, "").await).is_empty());
    assert!(to_device(&sync_since(&s, &alice2, &a2, "").await).is_empty());

    // Sytest "Device messages with the same txn_id are deduplicated"; the transaction is the
    // sending device's, so another device of Bob's with the same id sends anew.
    for _ in 0..2 {
        let r =
            send_to_device(&s, &bob, "org.example.ping", "t3", json!({&alice.user_id: {&alice.device_id: ping(3)}}))
                .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    }
    let r =
        send_to_device(&s, &bob2, "org.example.ping", "t3", json!({&alice.user_id: {&alice.device_id: ping(4)}})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let got = sync_since(&s, &alice, &a1, "").await;
    assert_eq!(to_device(&got), [from_bob(3), from_bob(4)].concat(), "{got}");
    let mut a1 = next_batch(&got);

    // Sytest "Device messages wake up /sync" / "Wildcard device messages wake up /sync".
    for (i, target) in [alice.device_id.as_str(), "*"].into_iter().enumerate() {
        let n = 5 + i64::try_from(i).unwrap();
        let started = Instant::now();
        let (woken, sent) = tokio::join!(sync_since(&s, &alice, &a1, "&timeout=20000"), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            send_to_device(&s, &bob, "org.example.ping", &format!("w{n}"), json!({&alice.user_id: {target: ping(n)}}))
                .await
        });
        assert_eq!(sent.0, StatusCode::OK, "{}", sent.1);
        assert!(started.elapsed() < Duration::from_secs(10), "the sync did not wake for a to-device message");
        assert_eq!(to_device(&woken), from_bob(n), "{woken}");
        let acked = sync_since(&s, &alice, &next_batch(&woken), "").await;
        assert!(to_device(&acked).is_empty());
        a1 = next_batch(&acked);
    }

    // Messages for unknown devices or users are dropped without an error; bad bodies are 400.
    let r = send_to_device(
        &s,
        &bob,
        "org.example.ping",
        "t9",
        json!({"@nobody:localhost": {"X": ping(9)}, &alice.user_id: {"NODEVICE": ping(9)}}),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = send_to_device(
        &s,
        &bob,
        "org.example.ping",
        "t10",
        json!({&alice.user_id: {&alice.device_id: "not an object"}}),
    )
    .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
}
