//! Two `poststelle` processes on one database: sends through both stay in one order per room
//! (the per-room advisory lock), and a `/sync` waiting on one process wakes for an event or a
//! typing notification that arrived through the other (`LISTEN/NOTIFY`); a room's state cached
//! by one process is not used once the other has written to the room.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, fresh_database};

fn enc(s: &str) -> String {
    s.replace('!', "%21").replace(':', "%3A").replace('@', "%40").replace('$', "%24").replace('#', "%23")
}

async fn send(s: &TestServer, who: &Account, room: &str, body: &str, txn: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let (status, resp) = s.put(&path, who.token(), json!({"msgtype": "m.text", "body": body})).await;
    assert_eq!(status, StatusCode::OK, "send {body}: {resp}");
    resp["event_id"].as_str().unwrap().to_owned()
}

/// Message bodies of the room's timeline, oldest first, as one process serves them.
async fn bodies(s: &TestServer, who: &Account, room: &str) -> Vec<(String, String)> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000", enc(room));
    let (status, resp) = s.get(&path, who.token()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| (e["event_id"].as_str().unwrap().to_owned(), e["content"]["body"].as_str().unwrap().to_owned()))
        .collect()
}

async fn sync(s: &TestServer, who: &Account, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    let (status, resp) = s.get(&path, who.token()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

#[tokio::test]
async fn two_processes_share_one_database() {
    let db = fresh_database().await;
    let one = TestServer::start_with(ServerOptions { database_url: Some(db.clone()), ..Default::default() }).await;
    let two = TestServer::start_with(ServerOptions { database_url: Some(db), ..Default::default() }).await;
    let alice = one.register("alice", "pw").await;
    let bob = two.register("bob", "pw").await;

    let (status, created) =
        one.post("/_matrix/client/v3/createRoom", alice.token(), json!({"preset": "public_chat"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (status, joined) = two.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");

    // Bob waits on process two; Alice sends through process one.
    let since = sync(&two, &bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (woken, sent) = tokio::join!(sync(&two, &bob, Some(&since), 20_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(&one, &alice, &room, "across processes", "x1").await
    });
    assert!(started.elapsed() < Duration::from_secs(15), "the sync waited for its timeout instead of waking");
    let timeline = &woken["rooms"]["join"][&room]["timeline"]["events"];
    assert!(
        timeline.as_array().unwrap().iter().any(|e| e["event_id"] == sent.as_str()),
        "the event sent through the other process is missing: {woken}"
    );

    // Typing through process one reaches a sync waiting on process two. (First catch up with
    // what alice's message also changed: she is online now.)
    let caught_up = sync(&two, &bob, Some(woken["next_batch"].as_str().unwrap()), 0).await;
    let since = caught_up["next_batch"].as_str().unwrap().to_owned();
    let typing_path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    let (woken, typed) = tokio::join!(sync(&two, &bob, Some(&since), 20_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        one.put(&typing_path, alice.token(), json!({"typing": true, "timeout": 10_000})).await
    });
    assert_eq!(typed.0, StatusCode::OK, "{}", typed.1);
    let ephemeral = woken["rooms"]["join"][&room]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
    assert!(
        ephemeral.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!([alice.user_id])),
        "typing from the other process is missing: {woken}"
    );

    // Concurrent sends through both processes: every one stored once, one order for both.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (server, who) = if i % 2 == 0 { (&one, &alice) } else { (&two, &bob) };
        let room = room.as_str();
        tasks.push(async move { send(server, who, room, &format!("m{i}"), &format!("c{i}")).await });
    }
    let ids = futures_util::future::join_all(tasks).await;
    let seen_one = bodies(&one, &alice, &room).await;
    let seen_two = bodies(&two, &bob, &room).await;
    assert_eq!(seen_one, seen_two, "the two processes disagree on the timeline");
    assert_eq!(seen_one.len(), 21, "{seen_one:?}");
    for id in &ids {
        assert_eq!(seen_one.iter().filter(|(e, _)| e == id).count(), 1, "{id} not exactly once");
    }

    // Each process keeps the room's state from its own last write; a change made through the
    // other process must not be missed. Bob sends through process one (which caches the room
    // with Bob joined), Alice bans him through process two, and process one refuses Bob's next
    // send; after an unban and a rejoin through two, one lets him send again.
    send(&one, &bob, &room, "before the ban", "b1").await;
    let ban = json!({"user_id": bob.user_id, "reason": "test"});
    let (status, resp) = two.post(&format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)), alice.token(), ban).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/b2", enc(&room));
    let (status, resp) = one.put(&path, bob.token(), json!({"msgtype": "m.text", "body": "after the ban"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a banned user sent through the other process: {resp}");
    assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
    let unban = json!({"user_id": bob.user_id});
    let (status, resp) =
        two.post(&format!("/_matrix/client/v3/rooms/{}/unban", enc(&room)), alice.token(), unban).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = two.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    send(&one, &bob, &room, "after the rejoin", "b3").await;
}
