//! History from other servers (`/backfill`): a user of B who joins a room held by A pages back
//! past their join with `/messages`; B fetches the older events from A, checks and stores them,
//! and serves them again from its own database. History visibility applies to them as to local
//! history, and they never show up as new events in `/sync`.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

use super::{
    origin::{Draft, Origin, now_ms},
    synapse::{Hs, before_join, ids, page_back_filtered},
};

fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('#', "%23").replace('$', "%24")
}

pub(crate) async fn send(s: &TestServer, who: &Account, room: &str, path: &str, content: Value) -> String {
    let (status, answer) = s.put(&format!("/_matrix/client/v3/rooms/{}/{path}", enc(room)), who.token(), content).await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    answer["event_id"].as_str().expect("event id").to_owned()
}

/// A public room on A with `visibility`, 64 messages and a topic and name change among them.
async fn room_with_history(a: &TestServer, alice: &Account, visibility: &str) -> String {
    let (status, body) = a
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat", "room_version": "11", "name": "history"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().expect("room id").to_owned();
    send(a, alice, &room, "state/m.room.history_visibility/", json!({"history_visibility": visibility})).await;
    for i in 0..64 {
        send(
            a,
            alice,
            &room,
            &format!("send/m.room.message/m{i}"),
            json!({"msgtype": "m.text", "body": format!("m{i}")}),
        )
        .await;
        if i == 20 {
            send(a, alice, &room, "state/m.room.topic/", json!({"topic": "older topic"})).await;
        }
        if i == 40 {
            send(a, alice, &room, "state/m.room.name/", json!({"name": "renamed"})).await;
        }
    }
    room
}

/// Servers A and B, with Alice on A and Bob on B.
pub(crate) async fn two_servers() -> (TestServer, TestServer, Account, Account) {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    (a, b, alice, bob)
}

/// Bob on B joins the room through A; his first `/sync`'s `next_batch` and the room's
/// `prev_batch` in it.
pub(crate) async fn join_and_sync(b: &TestServer, bob: &Account, room: &str, through: &str) -> (String, String) {
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(room), enc(through));
    let (status, answer) = b.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", b.log());
    let (status, sync) = b.get("/_matrix/client/v3/sync", bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    let prev_batch = sync["rooms"]["join"][room]["timeline"]["prev_batch"].as_str().expect("prev_batch").to_owned();
    (sync["next_batch"].as_str().expect("next_batch").to_owned(), prev_batch)
}

/// Pages back from `from` to the end; the events, newest first.
pub(crate) async fn page_back(s: &TestServer, who: &Account, room: &str, from: &str) -> Vec<Value> {
    super::synapse::page_back(&Hs::Ours(s), who, room, Some(from)).await
}

/// The room's events on A before Bob's join, newest first, as Alice pages them.
async fn history_on_a(a: &TestServer, alice: &Account, room: &str, bob: &Account) -> Vec<String> {
    let all = super::synapse::page_back(&Hs::Ours(a), alice, room, None).await;
    ids(&before_join(&all, &bob.user_id))
}

/// Bob pages back through 64 messages and the state changes before his join, in order, down to
/// the create event, without duplicates or gaps; the second time B serves them without A; and
/// none of them reaches Bob's incremental `/sync`. While A is down, B answers with what it holds.
#[tokio::test]
async fn a_joining_user_pages_back_through_history_fetched_from_the_rooms_server() {
    let (mut a, b, alice, bob) = two_servers().await;
    let room = room_with_history(&a, &alice, "shared").await;
    let (next_batch, prev_batch) = join_and_sync(&b, &bob, &room, &a.server_name).await;

    // A is down: B answers with what it holds, and no error.
    a.stop();
    let held = page_back(&b, &bob, &room, &prev_batch).await;
    assert!(held.iter().all(|e| e["content"]["body"].as_str().is_none_or(|b| !b.starts_with('m'))), "{held:?}");
    a.restart().await;

    let expected = history_on_a(&a, &alice, &room, &bob).await;
    let events = page_back(&b, &bob, &room, &prev_batch).await;
    let got = ids(&events);
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), got.len(), "duplicates: {got:?}");
    assert_eq!(got, expected, "B's history differs from A's");
    assert_eq!(events.last().map(|e| e["type"].clone()), Some(json!("m.room.create")));
    let bodies: Vec<&str> = events.iter().rev().filter_map(|e| e["content"]["body"].as_str()).collect();
    let sent: Vec<String> = (0..64).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, sent);
    for (kind, field, value) in [("m.room.topic", "topic", "older topic"), ("m.room.name", "name", "renamed")] {
        assert!(events.iter().any(|e| e["type"] == kind && e["content"][field] == value), "{kind} missing");
    }

    // None of it is news: Bob's next sync holds only what is new (Alice's next message).
    send(&a, &alice, &room, "send/m.room.message/new", json!({"msgtype": "m.text", "body": "new"})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut since = next_batch;
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Value| e["content"]["body"] == "new") {
        assert!(std::time::Instant::now() < deadline, "the new message never reached B: {seen:?}");
        let (status, sync) = b.get(&format!("/_matrix/client/v3/sync?timeout=5000&since={since}"), bob.token()).await;
        assert_eq!(status, StatusCode::OK, "{sync}");
        seen.extend(sync["rooms"]["join"][&room]["timeline"]["events"].as_array().into_iter().flatten().cloned());
        since = sync["next_batch"].as_str().expect("next_batch").to_owned();
    }
    let old: Vec<&Value> =
        seen.iter().filter(|e| got.contains(&e["event_id"].as_str().unwrap_or_default().to_owned())).collect();
    assert!(old.is_empty(), "history showed up in /sync: {old:?}");

    // Again without A: all of it from B's database.
    a.stop();
    assert_eq!(ids(&page_back(&b, &bob, &room, &prev_batch).await), expected);
}

/// History fetched from A obeys the room's history visibility like local history: under
/// `joined`, Bob sees no message from before his join, and of the events before it exactly
/// those a later local joiner on A sees (the ones from before the setting, which count as
/// `shared`).
#[tokio::test]
async fn fetched_history_obeys_joined_history_visibility() {
    let (a, b, alice, bob) = two_servers().await;
    let room = room_with_history(&a, &alice, "joined").await;
    let (_, prev_batch) = join_and_sync(&b, &bob, &room, &a.server_name).await;
    let seen_by_bob = page_back(&b, &bob, &room, &prev_batch).await;
    let messages: Vec<&Value> = seen_by_bob.iter().filter(|e| e["type"] == "m.room.message").collect();
    assert!(messages.is_empty(), "pre-join messages visible under `joined`: {messages:?}");

    let before_bob = history_on_a(&a, &alice, &room, &bob).await;
    assert!(before_bob.len() > 64, "{before_bob:?}");
    let carol = a.register("carol", "pw-carol-123").await;
    let (status, answer) = a.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), carol.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let seen_by_carol = super::synapse::page_back(&Hs::Ours(&a), &carol, &room, None).await;
    let carol_before_bob: Vec<String> = ids(&seen_by_carol).into_iter().filter(|id| before_bob.contains(id)).collect();
    assert_eq!(ids(&seen_by_bob), carol_before_bob);
}

/// A server in the room that answers `/backfill` with an event of another room, a forged event
/// and garbage is not believed: with the room's creator A down, B asks it, stores and shows
/// none of it, and answers with what it holds; once A is back, the history comes from A.
#[tokio::test]
async fn history_from_a_lying_server_is_refused_and_another_server_is_asked() {
    let (mut a, b, alice, bob) = two_servers().await;
    let room = room_with_history(&a, &alice, "shared").await;
    let other = room_with_history(&a, &alice, "shared").await;
    let origin = Origin::start().await;
    let joined = origin.join(&a, &room, "mallory", "11").await;
    let joined_other = origin.join(&a, &other, "mallory", "11").await;
    let wrong_room = origin.event(&joined_other, Draft::message("from another room"));
    let forged = origin.sign_with(&origin.forger, Draft::message("forged").build(&joined), &joined.rules);
    let pdus = json!([wrong_room.json, forged.json, {"garbage": true}, "not an event"]);
    origin.serve(
        "/_matrix/federation/v1/backfill/",
        json!({"origin": origin.name, "origin_server_ts": now_ms(), "pdus": pdus}),
    );
    let (_, prev_batch) = join_and_sync(&b, &bob, &room, &a.server_name).await;

    a.stop();
    let held = page_back(&b, &bob, &room, &prev_batch).await;
    assert!(
        origin.peer.seen().iter().any(|r| r.path.starts_with("/_matrix/federation/v1/backfill/")),
        "the other server in the room was not asked"
    );
    assert!(held.iter().all(|e| e["content"]["body"].is_null()), "{held:?}");
    for id in [&wrong_room.id, &forged.id] {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
        let (status, answer) = b.get(&path, bob.token()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    }

    a.restart().await;
    assert_eq!(ids(&page_back(&b, &bob, &room, &prev_batch).await), history_on_a(&a, &alice, &room, &bob).await);
}

/// A client that pages with a filter (only messages) gets every message of the fetched history:
/// a page that runs out of held events matching the filter while history is still being
/// fetched keeps an `end`.
#[tokio::test]
async fn a_filtered_pagination_reaches_every_fetched_message() {
    let (a, b, alice, bob) = two_servers().await;
    let room = room_with_history(&a, &alice, "shared").await;
    let (_, prev_batch) = join_and_sync(&b, &bob, &room, &a.server_name).await;
    let filter = json!({"types": ["m.room.message"]});
    let events = page_back_filtered(&Hs::Ours(&b), &bob, &room, Some(&prev_batch), Some(&filter)).await;
    let bodies: Vec<&str> = events.iter().rev().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, (0..64).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e["type"] == "m.room.message"));
}

/// Sytest "Backfilled events whose prev_events are in a different room do not allow cross-room
/// back-pagination": with the room's creator down, the other server in the room answers
/// `/backfill` with an event of the room that builds on an event of another room B holds. B
/// refuses it (404, not in any page) and paging back never leads into the other room.
#[tokio::test]
async fn backfilled_events_building_on_another_room_are_refused() {
    let (mut a, b, alice, bob) = two_servers().await;
    let room = room_with_history(&a, &alice, "shared").await;
    let other = room_with_history(&a, &alice, "shared").await;
    let origin = Origin::start().await;
    let joined = origin.join(&a, &room, "mallory", "11").await;
    // B holds an event of the other room in its timeline: Bob is in it too.
    join_and_sync(&b, &bob, &other, &a.server_name).await;
    let held = send(&a, &alice, &other, "send/m.room.message/held", json!({"msgtype": "m.text", "body": "held"})).await;
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&other), enc(&held));
    let mut tries = 0;
    while b.get(&path, bob.token()).await.0 != StatusCode::OK {
        tries += 1;
        assert!(tries < 100, "the other room's message did not reach B");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let cross = origin.event(&joined, Draft::message("built on another room").prev(vec![held]));
    origin.serve(
        "/_matrix/federation/v1/backfill/",
        json!({"origin": origin.name, "origin_server_ts": now_ms(), "pdus": [cross.json]}),
    );
    let (_, prev_batch) = join_and_sync(&b, &bob, &room, &a.server_name).await;

    a.stop();
    let page = page_back(&b, &bob, &room, &prev_batch).await;
    assert!(
        origin.peer.seen().iter().any(|r| r.path.starts_with("/_matrix/federation/v1/backfill/")),
        "the other server in the room was not asked"
    );
    assert!(page.iter().all(|e| e["room_id"] == room.as_str()), "{page:?}");
    assert!(!page.iter().any(|e| e["event_id"] == cross.id.as_str()), "{page:?}");
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&cross.id));
    let (status, answer) = b.get(&path, bob.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

/// Sytest "Outbound federation rejects backfill containing invalid JSON for events in room
/// version 6": Bob joins a room version 11 room the fake origin holds, with a message holding a
/// float (signed as Synapse signs such JSON) after a good one. Paging back, the server fetches
/// both with `/backfill`: the bad message is dropped, never shown nor stored; the good one is.
#[tokio::test]
async fn backfilled_events_with_invalid_json_are_dropped() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let bob = a.register("bob", "pw-bob-123").await;
    let origin = Origin::start().await;
    let room = origin.host_room("11", "carol", true);
    let carol = format!("@carol:{}", origin.name);
    origin.host_event(&room, "m.room.message", None, &carol, json!({"msgtype": "m.text", "body": "Good event"}));
    let content = json!({"msgtype": "m.text", "body": "Bad event", "bad_val": 1.1});
    let (event, rules) = origin.host_draft(&room, "m.room.message", None, &carol, content);
    let bad = origin.sign_noncanonical(event, &rules);
    origin.host_add(&room, &bad);

    let (_, prev_batch) = join_and_sync(&a, &bob, &room, &origin.name).await;
    let history = origin.host_history(&room);
    origin.serve(
        "/_matrix/federation/v1/backfill/",
        json!({"origin": origin.name, "origin_server_ts": now_ms(), "pdus": history}),
    );
    let events = page_back(&a, &bob, &room, &prev_batch).await;
    assert!(!origin.seen("/_matrix/federation/v1/backfill/").is_empty(), "nothing was backfilled");
    let bodies: Vec<&str> = events.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(bodies.contains(&"Good event") && !bodies.contains(&"Bad event"), "{bodies:?}\n{}", a.log());
    let (status, answer) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&bad.id)), bob.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the bad event is stored: {answer}");
}
