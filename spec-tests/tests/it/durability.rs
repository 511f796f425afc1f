//! Crashes and concurrency: kill -9 after acknowledged sends, concurrent sends to one room, restarts.
//!
//! Nothing the server acknowledged with an event id may be lost when the process is killed
//! without a chance to shut down, and the tokens clients hold must go on working on the
//! restarted process. Concurrent sends to one room are each stored exactly once, in one order.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, signal};

use crate::rooms::{create_room, enc, events, ids, join, page, room_path, server_with, set_state};
use crate::sync::{inline_filter, joined, limited, next_batch, sync, sync_since, timeline};

/// `PUT /send/m.room.message/{txn}` that tolerates a dead server: `None` when the request did not
/// get an answer.
async fn try_send_txn(s: &TestServer, who: &Account, room: &str, txn: &str, body: &str) -> Option<(StatusCode, Value)> {
    let url = format!("{}{}", s.base, room_path(room, &format!("send/m.room.message/{txn}")));
    let response = s
        .http
        .put(url)
        .bearer_auth(&who.access_token)
        .json(&json!({"msgtype": "m.text", "body": body}))
        .send()
        .await
        .ok()?;
    let status = response.status();
    let bytes = response.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Sends with a transaction id; the event id.
async fn send_txn(s: &TestServer, who: &Account, room: &str, txn: &str, body: &str) -> String {
    let (status, resp) = try_send_txn(s, who, room, txn, body).await.expect("the server answers");
    assert_eq!(status, StatusCode::OK, "send {txn} as {}: {resp}", who.user_id);
    resp["event_id"].as_str().expect("event_id").to_owned()
}

/// The whole timeline of a room, oldest first, through `/messages` pages going forwards.
async fn whole_timeline(s: &TestServer, who: &Account, room: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut query = "dir=f&limit=50".to_owned();
    for _ in 0..100 {
        let p = page(s, who, room, &query).await;
        all.extend(events(&p["chunk"]).iter().cloned());
        match p["end"].as_str() {
            Some(end) if !events(&p["chunk"]).is_empty() => query = format!("dir=f&limit=50&from={}", enc(end)),
            _ => return all,
        }
    }
    panic!("the timeline of {room} did not end after 100 pages");
}

fn message_ids(timeline: &[Value]) -> Vec<String> {
    timeline
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn assert_unique(list: &[String]) {
    let unique: BTreeSet<&String> = list.iter().collect();
    assert_eq!(unique.len(), list.len(), "duplicates in {list:?}");
}

const BIG_TIMELINE: &str = r#"{"room": {"timeline": {"limit": 500}}}"#;

#[tokio::test]
async fn acknowledged_events_survive_kill_9() {
    let (mut s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let big = inline_filter(&serde_json::from_str(BIG_TIMELINE).unwrap());
    let before = next_batch(&sync(&s, &alice, "").await);
    let bob_before = next_batch(&sync(&s, &bob, "").await);
    let history_token = page(&s, &alice, &room, "dir=b&limit=1").await["start"].as_str().unwrap().to_owned();

    // Acknowledged sends from two users, a state change, account data and a to-device message,
    // then SIGKILL at once: no graceful shutdown.
    let mut sent = Vec::new();
    for i in 0..30 {
        let who = if i % 3 == 0 { &bob } else { &alice };
        sent.push(send_txn(&s, who, &room, &format!("k{i}"), &format!("acked {i}")).await);
    }
    let topic = set_state(&s, &alice, &room, "m.room.topic", "", json!({"topic": "survives"})).await;
    let ad = format!("/_matrix/client/v3/user/{}/account_data/org.example.k", enc(&alice.user_id));
    assert_eq!(s.put(&ad, alice.token(), json!({"kept": true})).await.0, StatusCode::OK);
    let td = "/_matrix/client/v3/sendToDevice/org.example.ping/d1";
    let r = s.put(td, bob.token(), json!({"messages": {&alice.user_id: {&alice.device_id: {"kept": true}}}})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    signal(s.pid(), "KILL");
    s.restart().await;

    // Every acknowledged event is in /messages, once, in the order acknowledged; sessions survive.
    let all = whole_timeline(&s, &alice, &room).await;
    assert_eq!(message_ids(&all), sent, "the timeline after the restart");
    assert_eq!(all.last().map(|e| e["event_id"].clone()), Some(json!(topic)));
    // Tokens from before the crash still work: sync, and a /messages token.
    let incr = sync_since(&s, &alice, &before, &format!("&{big}")).await;
    let tl: Vec<Value> = events(timeline(&incr, &room)).to_vec();
    assert_eq!(message_ids(&tl), sent, "{incr}");
    assert!(!limited(&joined(&incr, &room)["timeline"]), "{incr}");
    assert!(
        events(&incr["account_data"]["events"])
            .iter()
            .any(|e| e["type"] == "org.example.k" && e["content"]["kept"] == true)
    );
    let to_device = events(&incr["to_device"]["events"]);
    assert!(to_device.len() == 1 && to_device[0]["content"]["kept"] == true, "{incr}");
    assert_eq!(
        message_ids(events(timeline(&sync_since(&s, &bob, &bob_before, &format!("&{big}")).await, &room))),
        sent
    );
    let forwards = page(&s, &alice, &room, &format!("dir=f&limit=5&from={}", enc(&history_token))).await;
    assert_eq!(ids(&forwards["chunk"]), sent[..5]);

    // Transaction ids survive: a retry after the crash answers with the stored event.
    assert_eq!(send_txn(&s, &alice, &room, "k1", "acked 1").await, sent[1]);
    assert_eq!(send_txn(&s, &bob, &room, "k0", "acked 0").await, sent[0]);
    // New events come after the old ones and new tokens go on from there (no reused positions).
    let after = next_batch(&incr);
    let fresh = send_txn(&s, &alice, &room, "fresh", "after the restart").await;
    let incr = sync_since(&s, &alice, &after, "").await;
    assert_eq!(ids(timeline(&incr, &room)), std::slice::from_ref(&fresh), "{incr}");
    assert!(incr["to_device"]["events"].as_array().is_none_or(Vec::is_empty), "to-device acknowledged: {incr}");
    let all = whole_timeline(&s, &alice, &room).await;
    assert_eq!(message_ids(&all), [sent.clone(), vec![fresh]].concat());

    // A second crash, this time with sends in flight: what was acknowledged is there, and every
    // transaction, retried after the restart, ends up stored exactly once.
    let users = [&alice, &bob];
    let progress = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let acked: Vec<Vec<(String, String)>> = {
        let senders = users.iter().enumerate().map(|(u, who)| {
            let s = &s;
            let room = room.as_str();
            let progress = &progress[u];
            async move {
                let mut acked = Vec::new();
                for i in 0..500 {
                    let txn = format!("f{u}-{i}");
                    match try_send_txn(s, who, room, &txn, &txn).await {
                        Some((StatusCode::OK, body)) => {
                            acked.push((txn, body["event_id"].as_str().unwrap().to_owned()));
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((status, body)) => panic!("{txn}: {status} {body}"),
                        None => break,
                    }
                }
                acked
            }
        });
        // The kill lands once both senders are under way.
        let killer = async {
            let deadline = Instant::now() + Duration::from_secs(30);
            while progress.iter().any(|p| p.load(Ordering::Relaxed) < 5) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            signal(s.pid(), "KILL");
        };
        let (acked, ()) = tokio::join!(join_all(senders), killer);
        acked
    };
    assert!(
        acked.iter().all(|a| !a.is_empty() && a.len() < 500),
        "the kill did not land while the sends were running: {:?}",
        acked.iter().map(Vec::len).collect::<Vec<_>>()
    );
    s.restart().await;
    let stored: BTreeMap<String, String> = whole_timeline(&s, &alice, &room)
        .await
        .iter()
        .filter(|e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with('f')))
        .map(|e| (e["content"]["body"].as_str().unwrap().to_owned(), e["event_id"].as_str().unwrap().to_owned()))
        .collect();
    for (txn, event) in acked.iter().flatten() {
        assert_eq!(stored.get(txn), Some(event), "acknowledged {txn} is missing after kill -9");
    }
    for (u, who) in users.iter().enumerate() {
        let next = acked[u].len();
        for i in 0..=next {
            let txn = format!("f{u}-{i}");
            let event = send_txn(&s, who, &room, &txn, &txn).await;
            if let Some(earlier) = stored.get(&txn) {
                assert_eq!(&event, earlier, "{txn} was stored before the crash, the retry must answer with it");
            }
        }
    }
    let bodies: Vec<String> = whole_timeline(&s, &alice, &room)
        .await
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().filter(|b| b.starts_with('f')).map(str::to_owned))
        .collect();
    let unique: BTreeSet<&String> = bodies.iter().collect();
    assert_eq!(unique.len(), bodies.len(), "a transaction stored twice: {bodies:?}");
    let expected = acked.iter().map(|a| a.len() + 1).sum::<usize>();
    assert_eq!(bodies.len(), expected, "{bodies:?}");
    assert!(!s.log().contains("panicked"), "the server panicked:\n{}", s.log());
}

#[tokio::test]
async fn concurrent_sends_are_stored_once_in_one_order() {
    const USERS: usize = 4;
    const EACH: usize = 25;
    let (s, [alice, bob, charlie, dave]) = server_with(["alice", "bob", "charlie", "dave"]).await;
    let users = [&alice, &bob, &charlie, &dave];
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    for who in &users[1..] {
        join(&s, who, &room).await;
    }
    let since = next_batch(&sync(&s, &alice, "").await);
    let big = inline_filter(&serde_json::from_str(BIG_TIMELINE).unwrap());

    // Four users send 25 messages each, all at the same time; each user's messages in order, and
    // every fifth one twice at once with the same transaction id (a client retrying). Meanwhile
    // a client follows the room with incremental syncs.
    let senders = users.iter().enumerate().map(|(u, who)| {
        let s = &s;
        let room = room.as_str();
        async move {
            let mut sent = Vec::new();
            for i in 0..EACH {
                let txn = format!("c{u}-{i}");
                let body = format!("u{u} m{i}");
                if i % 5 == 0 {
                    let (a, b) = tokio::join!(send_txn(s, who, room, &txn, &body), send_txn(s, who, room, &txn, &body));
                    assert_eq!(a, b, "{txn} sent twice at once gave two events");
                    sent.push(a);
                } else {
                    sent.push(send_txn(s, who, room, &txn, &body).await);
                }
            }
            sent
        }
    });
    let follower = async {
        let mut seen = Vec::new();
        let mut token = since.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < USERS * EACH && Instant::now() < deadline {
            let r = sync_since(&s, &alice, &token, &format!("&timeout=2000&{big}")).await;
            if !joined(&r, &room).is_null() {
                assert!(!limited(&joined(&r, &room)["timeline"]), "{r}");
                seen.extend(message_ids(events(timeline(&r, &room))));
            }
            token = next_batch(&r);
        }
        seen
    };
    let (sent, seen) = tokio::join!(join_all(senders), follower);

    // Every message exactly once, each user's in the order sent, the same order everywhere.
    let all = whole_timeline(&s, &alice, &room).await;
    let stored = message_ids(&all);
    assert_eq!(stored.len(), USERS * EACH, "{stored:?}");
    assert_unique(&stored);
    for (u, mine) in sent.iter().enumerate() {
        assert_unique(mine);
        let order: Vec<&String> = stored.iter().filter(|e| mine.contains(e)).collect();
        assert_eq!(order, mine.iter().collect::<Vec<_>>(), "user {u}'s messages out of order");
    }
    assert_eq!(seen, stored, "the syncing client saw a different sequence (missed, repeated or reordered)");
    let mut backwards = Vec::new();
    let mut query = "dir=b&limit=30".to_owned();
    for _ in 0..50 {
        let p = page(&s, &bob, &room, &query).await;
        backwards.extend(events(&p["chunk"]).iter().cloned());
        match p["end"].as_str() {
            Some(end) if !events(&p["chunk"]).is_empty() => query = format!("dir=b&limit=30&from={}", enc(end)),
            _ => break,
        }
    }
    backwards.reverse();
    assert_eq!(message_ids(&backwards), stored, "backwards and forwards pagination disagree");
    let fresh = sync(&s, &dave, &big).await;
    assert_eq!(message_ids(events(timeline(&fresh, &room))), stored, "an initial sync disagrees");
}

/// Concurrent sends to one room share a transaction; an event refused in it fails alone. While
/// members send at once, a user who is not in the room, one who was kicked, and a member who
/// sends a state event their power level does not allow each get `403 M_FORBIDDEN`, and every
/// member's message is stored.
#[tokio::test]
async fn a_refused_event_in_a_shared_commit_fails_alone() {
    const ROUNDS: usize = 5;
    let (s, [alice, bob, charlie, eve]) = server_with(["alice", "bob", "charlie", "eve"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &charlie, &room).await;
    let (status, resp) =
        s.post(&room_path(&room, "kick"), alice.token(), json!({"user_id": charlie.user_id, "reason": "test"})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    let mut sent = Vec::new();
    for round in 0..ROUNDS {
        let topic_path = room_path(&room, "state/m.room.topic");
        let [txn_a, txn_b, txn_c, txn_e] = ["a", "b", "c", "e"].map(|p| format!("{p}{round}"));
        let [body_a, body_b, body_c, body_e] = ["alice", "bob", "charlie", "eve"].map(|p| format!("{p} {round}"));
        let (a, b, c, e, topic) = tokio::join!(
            try_send_txn(&s, &alice, &room, &txn_a, &body_a),
            try_send_txn(&s, &bob, &room, &txn_b, &body_b),
            try_send_txn(&s, &charlie, &room, &txn_c, &body_c),
            try_send_txn(&s, &eve, &room, &txn_e, &body_e),
            s.put(&topic_path, bob.token(), json!({"topic": format!("bob's topic {round}")})),
        );
        for (who, outcome) in [("alice", &a), ("bob", &b)] {
            let (status, resp) = outcome.as_ref().expect("the server answers");
            assert_eq!(*status, StatusCode::OK, "{who} in round {round}: {resp}");
            sent.push(resp["event_id"].as_str().unwrap().to_owned());
        }
        for (who, outcome) in [("charlie (kicked)", &c), ("eve (never joined)", &e)] {
            let (status, resp) = outcome.as_ref().expect("the server answers");
            assert_eq!(*status, StatusCode::FORBIDDEN, "{who} in round {round}: {resp}");
            assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
        }
        assert_eq!(topic.0, StatusCode::FORBIDDEN, "bob set the topic without power: {}", topic.1);
    }
    let stored = message_ids(&whole_timeline(&s, &alice, &room).await);
    assert_eq!(stored.len(), 2 * ROUNDS, "{stored:?}");
    for id in &sent {
        assert!(stored.contains(id), "{id} acknowledged but not stored");
    }
    assert!(!s.log().contains("panicked"), "the server panicked:\n{}", s.log());
}
