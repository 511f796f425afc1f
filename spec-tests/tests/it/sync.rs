//! Sync: initial and incremental, long-poll, filters, lazy-loaded members, leave/invite sections, typing, receipts, read markers, to-device and unread counts.
//!
//! This module holds the sync helpers and the room sections of `/sync`; typing, receipts, read
//! markers, unread counts and to-device messages are in `sync::ephemeral`.

mod ephemeral;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer};

use crate::rooms::{
    bodies, create_room, enc, events, ids, invite, join, leave, member_action, next_txn, page, room_path, send,
    send_text, server_with, set_state, state_event,
};

/// `GET /sync?{query}`, which must succeed with a `next_batch`.
pub(crate) async fn sync(s: &TestServer, who: &Account, query: &str) -> Value {
    let (status, body) = s.get(&format!("/_matrix/client/v3/sync?{query}"), who.token()).await;
    assert_eq!(status, StatusCode::OK, "sync?{query} as {}: {body}", who.user_id);
    assert!(body["next_batch"].as_str().is_some_and(|t| !t.is_empty()), "no next_batch: {body}");
    body
}

/// An incremental sync from `since` (no wait) with more query parameters (`&…`).
pub(crate) async fn sync_since(s: &TestServer, who: &Account, since: &str, more: &str) -> Value {
    sync(s, who, &format!("since={}{more}", enc(since))).await
}

pub(crate) fn next_batch(response: &Value) -> String {
    response["next_batch"].as_str().expect("next_batch").to_owned()
}

/// `filter=<inline JSON>`.
pub(crate) fn inline_filter(filter: &Value) -> String {
    format!("filter={}", enc(&filter.to_string()))
}

/// The ids of the rooms in a section (`join`, `invite`, `leave`, `knock`) of a sync response.
pub(crate) fn section(response: &Value, name: &str) -> Vec<String> {
    match &response["rooms"][name] {
        Value::Null => Vec::new(),
        rooms => rooms.as_object().unwrap_or_else(|| panic!("rooms.{name}: {response}")).keys().cloned().collect(),
    }
}

/// A joined room's entry (`Null` when the room is not in the response).
pub(crate) fn joined<'a>(response: &'a Value, room: &str) -> &'a Value {
    &response["rooms"]["join"][room]
}

/// Whether a room's timeline (`{"events", "limited", "prev_batch"}`) is limited; servers may leave
/// out `limited: false`.
pub(crate) fn limited(timeline: &Value) -> bool {
    match &timeline["limited"] {
        Value::Null => false,
        other => other.as_bool().unwrap_or_else(|| panic!("limited is not a boolean: {timeline}")),
    }
}

pub(crate) fn timeline<'a>(response: &'a Value, room: &str) -> &'a Value {
    &joined(response, room)["timeline"]["events"]
}

/// `(type, state_key)` of a list of state events.
fn state_keys(list: &Value) -> BTreeSet<(String, String)> {
    events(list)
        .iter()
        .map(|e| {
            let key = e["state_key"].as_str().unwrap_or_else(|| panic!("not a state event: {e}"));
            (e["type"].as_str().expect("type").to_owned(), key.to_owned())
        })
        .collect()
}

/// The users whose `m.room.member` events are in a list of events.
fn members_in(list: &Value) -> BTreeSet<String> {
    events(list)
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().expect("state_key").to_owned())
        .collect()
}

fn set<S: AsRef<str>, const N: usize>(items: [S; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.as_ref().to_owned()).collect()
}

fn key(kind: &str, state_key: &str) -> (String, String) {
    (kind.to_owned(), state_key.to_owned())
}

#[tokio::test]
async fn initial_and_incremental_sync() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let quiet = create_room(&s, &alice, json!({})).await;
    // Complement "Can /sync newly created room"; Sytest "Can sync a room with a single message".
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Sync room"})).await;
    let txn = next_txn();
    let (status, body) = s
        .put(
            &room_path(&room, &format!("send/m.room.message/{txn}")),
            alice.token(),
            json!({"msgtype": "m.text", "body": "one"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let one = body["event_id"].as_str().unwrap().to_owned();
    let two = send_text(&s, &alice, &room, "two").await;

    // Sytest "Can sync a joined room", "State is included in the timeline in the initial sync".
    let initial = sync(&s, &alice, "").await;
    assert_eq!(section(&initial, "join").into_iter().collect::<BTreeSet<_>>(), set([&quiet, &room]));
    // The end-to-end encryption fields are well formed before any key is uploaded: no one-time
    // keys, no fallback key, no device-list changes; the optional sections absent or lists.
    assert_eq!(initial["device_one_time_keys_count"], json!({"signed_curve25519": 0}), "{initial}");
    assert_eq!(initial["device_unused_fallback_key_types"], json!([]), "{initial}");
    assert!(initial.get("to_device").is_none() || initial["to_device"]["events"].is_array(), "{initial}");
    for list in ["changed", "left"] {
        let entry = &initial["device_lists"][list];
        assert!(entry.is_null() || entry == &json!([]), "{initial}");
    }
    assert!(initial.get("presence").is_none() || initial["presence"]["events"].is_array(), "{initial}");
    let r = joined(&initial, &room);
    let tl = &r["timeline"]["events"];
    let all_ids = ids(tl);
    assert_eq!(all_ids[all_ids.len().saturating_sub(2)..], [one.clone(), two.clone()], "{r}");
    assert!(!limited(&r["timeline"]), "{r}");
    let mut all = state_keys(&r["state"]["events"]);
    all.extend(
        events(tl)
            .iter()
            .filter(|e| e.get("state_key").is_some())
            .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned())),
    );
    for k in [
        key("m.room.create", ""),
        key("m.room.power_levels", ""),
        key("m.room.join_rules", ""),
        key("m.room.history_visibility", ""),
        key("m.room.name", ""),
        key("m.room.member", &alice.user_id),
    ] {
        assert!(all.contains(&k), "{k:?} missing from state and timeline: {r}");
    }
    // Sytest "Can sync a room with a message with a transaction id": the sending device sees it.
    let first = events(tl).iter().find(|e| e["event_id"] == one.as_str()).unwrap();
    assert_eq!(first["unsigned"]["transaction_id"], txn.as_str(), "{first}");
    assert_eq!((&first["sender"], &first["content"]["body"]), (&json!(alice.user_id), &json!("one")));
    assert!(first["origin_server_ts"].is_i64(), "{first}");
    // Bob is not in the room.
    let bob_initial = sync(&s, &bob, "").await;
    assert!(section(&bob_initial, "join").is_empty(), "{bob_initial}");
    let bob_since = next_batch(&bob_initial);

    // Sytest "A message sent after an initial sync appears in the timeline of an incremental
    // sync", "Changes to state are included in an incremental sync".
    let since = next_batch(&initial);
    join(&s, &bob, &room).await;
    let bob_join = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await["event_id"].clone();
    let three = send_text(&s, &bob, &room, "three").await;
    let topic = set_state(&s, &alice, &room, "m.room.topic", "", json!({"topic": "new"})).await;
    let incr = sync_since(&s, &alice, &since, "").await;
    assert_eq!(section(&incr, "join"), std::slice::from_ref(&room), "a room without news is left out: {incr}");
    assert_eq!(ids(timeline(&incr, &room)), [bob_join.as_str().unwrap(), &three, &topic]);
    assert!(!limited(&joined(&incr, &room)["timeline"]), "{incr}");
    // Another device does not see the transaction id.
    let other_txn = events(timeline(&incr, &room)).iter().find(|e| e["event_id"] == three.as_str()).unwrap();
    assert!(other_txn["unsigned"].get("transaction_id").is_none(), "{other_txn}");
    // "A change to displayname should not result in a full state sync": no gap, no state.
    assert!(events(&joined(&incr, &room)["state"]["events"]).is_empty(), "{incr}");
    // A token is not used up: the same request gives the same events.
    assert_eq!(ids(timeline(&sync_since(&s, &alice, &since, "").await, &room)), ids(timeline(&incr, &room)));
    // Nothing new: no rooms, and the token stays usable.
    let empty = sync_since(&s, &alice, &next_batch(&incr), "&timeout=0").await;
    assert!(section(&empty, "join").is_empty(), "{empty}");
    // Sytest "A next_batch token can be used in the v1 messages API".
    let latest = page(&s, &alice, &room, &format!("dir=b&limit=1&from={}", enc(&next_batch(&incr)))).await;
    assert_eq!(ids(&latest["chunk"]), std::slice::from_ref(&topic));

    // Complement "Newly joined room is included in an incremental sync" / "… has correct timeline
    // in incremental sync": Bob's own join, what came after, and the state before the timeline.
    let bob_incr = sync_since(&s, &bob, &bob_since, "").await;
    let bob_room = joined(&bob_incr, &room);
    let bob_ids = ids(&bob_room["timeline"]["events"]);
    assert!(bob_ids.ends_with(&[bob_join.as_str().unwrap().to_owned(), three.clone(), topic.clone()]), "{bob_room}");
    let mut bob_state = state_keys(&bob_room["state"]["events"]);
    bob_state.extend(state_keys(&json!(
        events(&bob_room["timeline"]["events"]).iter().filter(|e| e.get("state_key").is_some()).collect::<Vec<_>>()
    )));
    for k in [key("m.room.create", ""), key("m.room.name", ""), key("m.room.member", &alice.user_id)] {
        assert!(bob_state.contains(&k), "{k:?} missing for the new member: {bob_room}");
    }

    // Sytest "A change to displayname should appear in incremental /sync".
    let since = next_batch(&incr);
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(s.put(&path, bob.token(), json!({"displayname": "Bobby"})).await.0, StatusCode::OK);
    let incr = sync_since(&s, &alice, &since, "").await;
    let changed = events(timeline(&incr, &room))
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("no member event for the new displayname: {incr}"))
        .clone();
    assert_eq!(changed["content"]["displayname"], "Bobby", "{changed}");
    assert!(events(&joined(&incr, &room)["state"]["events"]).is_empty(), "{incr}");
}

#[tokio::test]
async fn long_poll_wakes_up_or_times_out() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = next_batch(&sync(&s, &alice, "").await);

    // Sytest "Sync can be polled for updates": the poll returns with the event, not at its timeout.
    let started = Instant::now();
    let (woken, sent) = tokio::join!(sync_since(&s, &alice, &since, "&timeout=20000"), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        send_text(&s, &bob, &room, "wake up").await
    });
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "the sync waited {waited:?} instead of waking for the event");
    assert!(waited >= Duration::from_millis(400), "the sync returned before anything happened: {woken}");
    assert_eq!(ids(timeline(&woken, &room)), [sent]);

    // Nothing happens: an empty response after the timeout. (Bob's message made him online,
    // which alice may hear of; presence is filtered out here.)
    let no_presence = format!("&{}", inline_filter(&json!({"presence": {"types": []}})));
    let since = next_batch(&woken);
    let started = Instant::now();
    let quiet = sync_since(&s, &alice, &since, &format!("&timeout=1500{no_presence}")).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "returned after {waited:?} with nothing new: {quiet}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?} for a 1.5 s timeout");
    assert!(section(&quiet, "join").is_empty() && section(&quiet, "leave").is_empty(), "{quiet}");
    // Its token goes on from where the previous one was.
    let again = sync_since(&s, &alice, &next_batch(&quiet), "").await;
    assert!(section(&again, "join").is_empty(), "{again}");

    // Sytest "Sync is woken up for leaves": a poll wakes for the user's own leave.
    let since = next_batch(&sync(&s, &bob, "").await);
    let started = Instant::now();
    let query = format!("&timeout=20000{no_presence}");
    let (woken, ()) = tokio::join!(sync_since(&s, &bob, &since, &query), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        leave(&s, &bob, &room).await;
    });
    assert!(started.elapsed() < Duration::from_secs(10), "the sync did not wake for the leave");
    assert_eq!(section(&woken, "leave"), std::slice::from_ref(&room), "{woken}");
}

#[tokio::test]
async fn limited_timelines_continue_with_prev_batch() {
    let (s, [alice]) = server_with(["alice"]).await;
    let room = create_room(&s, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..15 {
        sent.push(send_text(&s, &alice, &room, &format!("m{i}")).await);
    }
    let limit5 = inline_filter(&json!({"room": {"timeline": {"limit": 5}}}));

    // Sytest "A prev_batch token can be used in the v1 messages API".
    let initial = sync(&s, &alice, &limit5).await;
    let t = &joined(&initial, &room)["timeline"];
    assert_eq!(ids(&t["events"]), sent[10..], "{t}");
    assert!(limited(t), "{t}");
    // The state before the timeline comes in `state`.
    let state = state_keys(&joined(&initial, &room)["state"]["events"]);
    assert!(state.contains(&key("m.room.create", "")) && state.contains(&key("m.room.member", &alice.user_id)));
    let mut from = t["prev_batch"].as_str().expect("prev_batch").to_owned();
    let mut older = Vec::new();
    for _ in 0..20 {
        let p = page(&s, &alice, &room, &format!("dir=b&limit=4&from={}", enc(&from))).await;
        older.extend(events(&p["chunk"]).iter().cloned());
        match p["end"].as_str() {
            Some(end) if !events(&p["chunk"]).is_empty() => from = end.to_owned(),
            _ => break,
        }
    }
    older.reverse();
    assert_eq!(older.first().map(|e| e["type"].clone()), Some(json!("m.room.create")), "paginated to the start");
    let older_messages: Vec<String> = older
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(older_messages, sent[..10], "the pages before the timeline, each event once");

    // A gap in an incremental sync: limited, and its prev_batch continues into the gap
    // (Sytest "A prev_batch token from incremental sync can be used in the v1 messages API").
    // A state change in the gap comes in `state` (Sytest "Changes to state are included in an
    // gapped incremental sync"), state from before `since` does not.
    let since = next_batch(&initial);
    set_state(&s, &alice, &room, "m.room.topic", "", json!({"topic": "in the gap"})).await;
    let mut more = Vec::new();
    for i in 0..8 {
        more.push(send_text(&s, &alice, &room, &format!("n{i}")).await);
    }
    let incr = sync_since(&s, &alice, &since, &format!("&{limit5}")).await;
    let t = &joined(&incr, &room)["timeline"];
    assert_eq!((ids(&t["events"]), limited(t)), (more[3..].to_vec(), true), "{t}");
    let gap_state = &joined(&incr, &room)["state"]["events"];
    assert_eq!(state_keys(gap_state), BTreeSet::from([key("m.room.topic", "")]), "{gap_state}");
    assert_eq!(events(gap_state)[0]["content"]["topic"], "in the gap");
    let gap = page(&s, &alice, &room, &format!("dir=b&limit=3&from={}", enc(t["prev_batch"].as_str().unwrap()))).await;
    assert_eq!(ids(&gap["chunk"]), [more[2].clone(), more[1].clone(), more[0].clone()]);
    // No gap: not limited.
    let since = next_batch(&incr);
    let last = [send_text(&s, &alice, &room, "o1").await, send_text(&s, &alice, &room, "o2").await];
    let incr = sync_since(&s, &alice, &since, &format!("&{limit5}")).await;
    let t = &joined(&incr, &room)["timeline"];
    assert_eq!((ids(&t["events"]), limited(t)), (last.to_vec(), false), "{t}");

    // Sytest "Syncing a new room with a large timeline limit isn't limited".
    let fresh = create_room(&s, &alice, json!({})).await;
    let big = sync(&s, &alice, &inline_filter(&json!({"room": {"rooms": [fresh], "timeline": {"limit": 100}}}))).await;
    let t = &joined(&big, &fresh)["timeline"];
    assert_eq!((limited(t), &events(&t["events"])[0]["type"]), (false, &json!("m.room.create")), "{t}");

    // Sytest "A filtered timeline reaches its limit": the limit counts events the filter lets through.
    let hello = send_text(&s, &alice, &fresh, "hello").await;
    for _ in 0..12 {
        send(&s, &alice, &fresh, "org.example.noise", json!({})).await;
    }
    let only = json!({"room": {"rooms": [fresh], "timeline": {"limit": 1, "types": ["m.room.message"]}}});
    let filtered = sync(&s, &alice, &inline_filter(&only)).await;
    assert_eq!(ids(timeline(&filtered, &fresh)), [hello]);
}

#[tokio::test]
async fn filters_by_id_and_inline() {
    let (s, [alice]) = server_with(["alice"]).await;
    let a = create_room(&s, &alice, json!({})).await;
    let b = create_room(&s, &alice, json!({})).await;
    send_text(&s, &alice, &a, "in a").await;
    send(&s, &alice, &a, "org.example.noise", json!({})).await;
    send_text(&s, &alice, &b, "in b").await;

    let filter = json!({"room": {"rooms": [a], "timeline": {"not_types": ["org.example.noise"]}}});
    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    let (status, created) = s.post(&path, alice.token(), filter.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["filter_id"].as_str().unwrap();
    // Sytest "Can pass a JSON filter as a query parameter"; a filter id does the same.
    for query in [format!("filter={}", enc(id)), inline_filter(&filter)] {
        let r = sync(&s, &alice, &query).await;
        assert_eq!(section(&r, "join"), std::slice::from_ref(&a), "{query}: {r}");
        let tl = timeline(&r, &a);
        assert!(bodies(tl).contains(&"in a".to_owned()), "{r}");
        assert!(events(tl).iter().all(|e| e["type"] != "org.example.noise"), "{query}: not_types ignored: {r}");
        assert!(events(tl).iter().any(|e| e["type"] == "m.room.create"), "other types stay: {r}");
    }
    // not_rooms, and `types` on the timeline.
    let r = sync(&s, &alice, &inline_filter(&json!({"room": {"not_rooms": [a]}}))).await;
    assert_eq!(section(&r, "join"), std::slice::from_ref(&b), "{r}");
    let r = sync(&s, &alice, &inline_filter(&json!({"room": {"timeline": {"types": ["org.example.noise"]}}}))).await;
    assert_eq!(
        events(timeline(&r, &a)).iter().map(|e| e["type"].clone()).collect::<Vec<_>>(),
        [json!("org.example.noise")]
    );

    // Bad filters are client errors.
    let r = s.get(&format!("/_matrix/client/v3/sync?filter={}", enc("{\"room\": 5}")), alice.token()).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    assert!(r.1["errcode"].is_string(), "{}", r.1);
    let r = s.get("/_matrix/client/v3/sync?filter=4711", alice.token()).await;
    assert!(r.0.is_client_error() && r.1["errcode"].is_string(), "unknown filter id: {} {}", r.0, r.1);
}

#[tokio::test]
async fn lazy_loaded_members() {
    let (s, [alice, bob, charlie, dave, eve]) = server_with(["alice", "bob", "charlie", "dave", "eve"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    for who in [&bob, &charlie, &dave] {
        join(&s, who, &room).await;
    }
    send_text(&s, &charlie, &room, "c1").await;
    send_text(&s, &bob, &room, "b1").await;
    send_text(&s, &bob, &room, "b2").await;
    let ll = json!({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": true}}});
    let ll_query = inline_filter(&ll);

    // Sytest "The only membership state included in an initial sync is for all the senders in the
    // timeline"; the syncing user's own membership comes with a full state (spec).
    let initial = sync(&s, &alice, &ll_query).await;
    let state = &joined(&initial, &room)["state"]["events"];
    assert_eq!(members_in(state), set([&alice.user_id, &bob.user_id]), "{state}");
    assert!(state_keys(state).contains(&key("m.room.create", "")), "other state stays: {state}");
    // Without lazy loading every member comes.
    let full = sync(&s, &alice, &inline_filter(&json!({"room": {"timeline": {"limit": 2}}}))).await;
    let all = set([&alice.user_id, &bob.user_id, &charlie.user_id, &dave.user_id]);
    assert_eq!(members_in(&joined(&full, &room)["state"]["events"]), all);

    // A gappy incremental sync: members who changed in the gap come whether or not they speak
    // (Sytest "Members from the gap are included in gappy incr LL sync"), and an old member who
    // starts speaking comes with the timeline ("Old members are included in gappy incr LL sync if
    // they start speaking"); a silent, unchanged member does not.
    let since = next_batch(&initial);
    join(&s, &eve, &room).await;
    for i in 0..5 {
        send_text(&s, &bob, &room, &format!("filler {i}")).await;
    }
    send_text(&s, &dave, &room, "d1").await;
    send_text(&s, &dave, &room, "d2").await;
    let gappy = sync_since(&s, &alice, &since, &format!("&{ll_query}")).await;
    let r = joined(&gappy, &room);
    assert!(limited(&r["timeline"]), "{r}");
    assert_eq!(bodies(&r["timeline"]["events"]), ["d1", "d2"]);
    let members = members_in(&r["state"]["events"]);
    assert!(members.contains(&eve.user_id), "a join in the gap is missing: {r}");
    assert!(members.contains(&dave.user_id), "the speaker's membership is missing: {r}");
    assert!(!members.contains(&charlie.user_id), "a silent member came along: {r}");

    // Sytest "We do send redundant membership state across incremental syncs if asked".
    let since = next_batch(&gappy);
    send_text(&s, &bob, &room, "b3").await;
    let mut redundant = ll.clone();
    redundant["room"]["state"]["include_redundant_members"] = json!(true);
    let incr = sync_since(&s, &alice, &since, &format!("&{}", inline_filter(&redundant))).await;
    assert_eq!(bodies(timeline(&incr, &room)), ["b3"]);
    assert!(members_in(&joined(&incr, &room)["state"]["events"]).contains(&bob.user_id), "{incr}");

    // Sytest "Lazy loading parameters in the filter are strictly boolean".
    for bad in [
        json!({"room": {"state": {"lazy_load_members": "true"}}}),
        json!({"room": {"state": {"include_redundant_members": 1}}}),
    ] {
        let r = s.get(&format!("/_matrix/client/v3/sync?{}", inline_filter(&bad)), alice.token()).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{bad}: {}", r.1);
    }
}

#[tokio::test]
async fn invites_leaves_bans_and_knocks() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let room = create_room(&s, &alice, json!({"preset": "private_chat", "name": "Invite only"})).await;
    let bob_since = next_batch(&sync(&s, &bob, "").await);
    invite(&s, &alice, &room, &bob.user_id).await;

    // Sytest "Rooms a user is invited to appear in an incremental sync" / "… in an initial sync":
    // stripped state with the invitee's own membership.
    for response in [sync_since(&s, &bob, &bob_since, "").await, sync(&s, &bob, "").await] {
        assert_eq!(section(&response, "invite"), std::slice::from_ref(&room), "{response}");
        assert!(section(&response, "join").is_empty(), "{response}");
        let stripped = &response["rooms"]["invite"][&room]["invite_state"]["events"];
        for e in events(stripped) {
            for field in ["type", "state_key", "sender", "content"] {
                assert!(e.get(field).is_some(), "{field} missing in stripped state {e}");
            }
        }
        let find = |kind: &str, state_key: &str| {
            events(stripped)
                .iter()
                .find(|e| e["type"] == kind && e["state_key"] == state_key)
                .unwrap_or_else(|| panic!("{kind} missing from the invite state: {stripped}"))
                .clone()
        };
        let me = find("m.room.member", &bob.user_id);
        assert_eq!((&me["content"]["membership"], &me["sender"]), (&json!("invite"), &json!(alice.user_id)));
        assert_eq!(find("m.room.name", "")["content"]["name"], "Invite only");
        assert_eq!(find("m.room.join_rules", "")["content"]["join_rule"], "invite");
        find("m.room.create", "");
    }

    // Sytest "Newly joined room is included in an incremental sync after invite".
    let since = next_batch(&sync(&s, &bob, "").await);
    join(&s, &bob, &room).await;
    let incr = sync_since(&s, &bob, &since, "").await;
    assert_eq!((section(&incr, "join"), section(&incr, "invite")), (vec![room.clone()], vec![]), "{incr}");

    // Sytest "Newly left rooms appear in the leave section of incremental sync"; the timeline
    // ends with the leave ("Archived rooms only contain history from before the user left").
    let since = next_batch(&incr);
    send_text(&s, &alice, &room, "before").await;
    leave(&s, &bob, &room).await;
    send_text(&s, &alice, &room, "after the leave").await;
    let incr = sync_since(&s, &bob, &since, "").await;
    assert_eq!((section(&incr, "leave"), section(&incr, "join")), (vec![room.clone()], vec![]), "{incr}");
    let left = &incr["rooms"]["leave"][&room]["timeline"]["events"];
    assert_eq!(bodies(left), ["before"], "{left}");
    let last = events(left).last().unwrap();
    assert_eq!((&last["state_key"], &last["content"]["membership"]), (&json!(bob.user_id), &json!("leave")));
    // Sytest "Previously left rooms don't appear in the leave section of sync".
    let next = sync_since(&s, &bob, &next_batch(&incr), "").await;
    assert!(section(&next, "leave").is_empty(), "{next}");
    // Complement "Left rooms appear in the leave section of sync" (with include_leave), not without.
    assert!(section(&sync(&s, &bob, "").await, "leave").is_empty());
    let include_leave = inline_filter(&json!({"room": {"include_leave": true}}));
    let archive = sync(&s, &bob, &include_leave).await;
    assert_eq!(section(&archive, "leave"), std::slice::from_ref(&room), "{archive}");
    assert!(!bodies(&archive["rooms"]["leave"][&room]["timeline"]["events"]).contains(&"after the leave".to_owned()));
    // Complement "Forgetting room does not show up in v2 initial /sync".
    assert_eq!(member_action(&s, &bob, &room, "forget", json!({})).await.0, StatusCode::OK);
    assert!(section(&sync(&s, &bob, &include_leave).await, "leave").is_empty(), "a forgotten room came back");

    // Sytest "Newly banned rooms appear in the leave section of incremental sync".
    let public = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &charlie, &public).await;
    let since = next_batch(&sync(&s, &charlie, "").await);
    let r = member_action(&s, &alice, &public, "ban", json!({"user_id": charlie.user_id, "reason": "spam"})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let incr = sync_since(&s, &charlie, &since, "").await;
    assert_eq!(section(&incr, "leave"), std::slice::from_ref(&public), "{incr}");
    let ban = events(&incr["rooms"]["leave"][&public]["timeline"]["events"]).last().unwrap().clone();
    assert_eq!(ban["content"]["membership"], "ban", "{ban}");

    // Knocks: the knocker sees the room under `knock` with stripped state, members see the knock.
    let knockable = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    set_state(&s, &alice, &knockable, "m.room.join_rules", "", json!({"join_rule": "knock"})).await;
    let since = next_batch(&sync(&s, &charlie, "").await);
    let alice_since = next_batch(&sync(&s, &alice, "").await);
    let path = format!("/_matrix/client/v3/knock/{}", enc(&knockable));
    let r = s.post(&path, charlie.token(), json!({"reason": "let me in"})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let incr = sync_since(&s, &charlie, &since, "").await;
    assert_eq!(section(&incr, "knock"), std::slice::from_ref(&knockable), "{incr}");
    let stripped = &incr["rooms"]["knock"][&knockable]["knock_state"]["events"];
    let mine =
        events(stripped).iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == charlie.user_id.as_str());
    assert_eq!(mine.map(|e| e["content"]["membership"].clone()), Some(json!("knock")), "{stripped}");
    assert!(events(stripped).iter().any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "knock"));
    // Complement "Users in the room see a user's membership update when they knock".
    let seen = sync_since(&s, &alice, &alice_since, "").await;
    let knock =
        events(timeline(&seen, &knockable)).iter().find(|e| e["state_key"] == charlie.user_id.as_str()).cloned();
    assert_eq!(knock.map(|e| e["content"]["membership"].clone()), Some(json!("knock")), "{seen}");
}

#[tokio::test]
async fn full_state_syncs() {
    let (s, [alice]) = server_with(["alice"]).await;
    let room = create_room(&s, &alice, json!({"name": "Full"})).await;
    let old = send_text(&s, &alice, &room, "old").await;
    let since = next_batch(&sync(&s, &alice, "").await);
    let new = send_text(&s, &alice, &room, "new").await;

    // Sytest "A full_state incremental update returns all state" / "… returns only recent
    // timeline": all state, while the timeline still starts at `since`.
    let r = sync_since(&s, &alice, &since, "&full_state=true").await;
    let room_entry = joined(&r, &room);
    assert_eq!(ids(&room_entry["timeline"]["events"]), std::slice::from_ref(&new), "{room_entry}");
    assert!(!ids(&room_entry["timeline"]["events"]).contains(&old));
    let state = state_keys(&room_entry["state"]["events"]);
    for k in [
        key("m.room.create", ""),
        key("m.room.name", ""),
        key("m.room.power_levels", ""),
        key("m.room.member", &alice.user_id),
    ] {
        assert!(state.contains(&k), "{k:?} missing from a full state sync: {room_entry}");
    }
    // Complement "Full state sync includes joined rooms": even without news, and at once (the
    // timeout is ignored).
    let started = Instant::now();
    let r = sync_since(&s, &alice, &next_batch(&r), "&full_state=true&timeout=10000").await;
    assert!(started.elapsed() < Duration::from_secs(5), "full_state waited for its timeout");
    let room_entry = joined(&r, &room);
    assert!(ids(&room_entry["timeline"]["events"]).is_empty(), "{room_entry}");
    assert!(state_keys(&room_entry["state"]["events"]).contains(&key("m.room.name", "")), "{room_entry}");
}

#[tokio::test]
async fn account_data_in_sync() {
    let (s, [alice]) = server_with(["alice"]).await;
    let room = create_room(&s, &alice, json!({})).await;
    let global = |t: &str| format!("/_matrix/client/v3/user/{}/account_data/{t}", enc(&alice.user_id));
    let per_room =
        |t: &str| format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/{t}", enc(&alice.user_id), enc(&room));
    let of_type = |list: &Value, t: &str| -> Vec<Value> {
        events(list).iter().filter(|e| e["type"] == t).map(|e| e["content"].clone()).collect()
    };
    for (path, body) in [
        (global("org.example.a"), json!({"v": 1})),
        (global("org.example.a"), json!({"v": 2})),
        (per_room("org.example.r"), json!({"r": 1})),
    ] {
        assert_eq!(s.put(&path, alice.token(), body).await.0, StatusCode::OK);
    }

    // Sytest "Latest account data appears in v2 /sync" (once, the latest content); room account
    // data comes with its room.
    let initial = sync(&s, &alice, "").await;
    assert_eq!(of_type(&initial["account_data"]["events"], "org.example.a"), [json!({"v": 2})]);
    assert_eq!(of_type(&joined(&initial, &room)["account_data"]["events"], "org.example.r"), [json!({"r": 1})]);
    // Complement "Push rules come down in an initial /sync".
    let rules = of_type(&initial["account_data"]["events"], "m.push_rules");
    assert!(rules.len() == 1 && rules[0]["global"]["override"].is_array(), "{initial}");

    // Sytest "New account data appears in incremental v2 /sync": only what changed.
    let since = next_batch(&initial);
    s.put(&global("org.example.a"), alice.token(), json!({"v": 3})).await;
    let incr = sync_since(&s, &alice, &since, "").await;
    let types: Vec<Value> = events(&incr["account_data"]["events"]).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, [json!("org.example.a")], "{incr}");
    assert_eq!(of_type(&incr["account_data"]["events"], "org.example.a"), [json!({"v": 3})]);
    assert!(joined(&incr, &room)["account_data"]["events"].as_array().is_none_or(Vec::is_empty), "{incr}");
    // Room account data in an incremental sync brings its room along.
    let since = next_batch(&incr);
    s.put(&per_room("org.example.r"), alice.token(), json!({"r": 2})).await;
    let incr = sync_since(&s, &alice, &since, "").await;
    assert_eq!(of_type(&joined(&incr, &room)["account_data"]["events"], "org.example.r"), [json!({"r": 2})]);
    assert!(events(&incr["account_data"]["events"]).is_empty(), "{incr}");
    // The account data filters, global and per room.
    let f = json!({"account_data": {"not_types": ["org.example.a"]}, "room": {"account_data": {"types": ["none"]}}});
    let filtered = sync(&s, &alice, &inline_filter(&f)).await;
    assert!(of_type(&filtered["account_data"]["events"], "org.example.a").is_empty(), "{filtered}");
    assert!(of_type(&joined(&filtered, &room)["account_data"]["events"], "org.example.r").is_empty(), "{filtered}");
}

#[tokio::test]
async fn room_summaries() {
    let names = ["alice", "bob", "charlie", "dave", "eve", "frank", "grace"];
    let (s, [alice, bob, charlie, dave, eve, frank, grace]) = server_with(names).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    invite(&s, &alice, &room, &charlie.user_id).await;

    // Sytest "Unnamed room comes with a name summary".
    let r = sync(&s, &alice, "").await;
    let summary = &joined(&r, &room)["summary"];
    assert_eq!(
        (&summary["m.joined_member_count"], &summary["m.invited_member_count"]),
        (&json!(2), &json!(1)),
        "{summary}"
    );
    let heroes: BTreeSet<String> =
        summary["m.heroes"].as_array().expect("m.heroes").iter().map(|h| h.as_str().unwrap().to_owned()).collect();
    assert_eq!(heroes, set([&bob.user_id, &charlie.user_id]), "never the user themself: {summary}");

    // Sytest "Named room comes with just joined member count summary".
    let named = create_room(&s, &alice, json!({"name": "Named"})).await;
    let summary = joined(&sync(&s, &alice, "").await, &named)["summary"].clone();
    assert_eq!(summary["m.joined_member_count"], 1, "{summary}");
    assert!(summary["m.heroes"].as_array().is_none_or(Vec::is_empty), "{summary}");

    // Sytest "Room summary counts change when membership changes".
    let since = next_batch(&sync(&s, &alice, "").await);
    leave(&s, &bob, &room).await;
    let incr = sync_since(&s, &alice, &since, "").await;
    assert_eq!(joined(&incr, &room)["summary"]["m.joined_member_count"], 1, "{incr}");

    // Sytest "Room summary only has 5 heroes".
    for who in [&charlie, &dave, &eve, &frank, &grace] {
        join(&s, who, &room).await;
    }
    join(&s, &bob, &room).await;
    let summary = joined(&sync(&s, &alice, "").await, &room)["summary"].clone();
    let heroes = summary["m.heroes"].as_array().expect("m.heroes");
    assert_eq!(heroes.len(), 5, "{summary}");
    assert!(heroes.iter().all(|h| h != alice.user_id.as_str()), "{summary}");
    assert_eq!(summary["m.joined_member_count"], 7, "{summary}");
}

/// What a woken sync says of a room's state (its summary, the power levels its unread counts are
/// evaluated with) follows every state change and redaction of a state event between two
/// incremental syncs, also when the server keeps the room's state between syncs.
#[tokio::test]
async fn incremental_syncs_follow_state_changes_and_redacted_state() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Named"})).await;
    join(&s, &bob, &room).await;
    let summary_of = |r: &Value| joined(r, &room)["summary"].clone();
    let heroes = |summary: &Value| -> BTreeSet<String> {
        summary["m.heroes"].as_array().into_iter().flatten().map(|h| h.as_str().unwrap().to_owned()).collect()
    };
    let counts = |r: &Value| {
        let c = &joined(r, &room)["unread_notifications"];
        (c["notification_count"].as_i64().unwrap_or(0), c["highlight_count"].as_i64().unwrap_or(0))
    };

    let mut since = next_batch(&sync(&s, &alice, "").await);
    // A message changes no state: the summary stays that of a named room of two.
    send_text(&s, &bob, &room, "hello").await;
    let r = sync_since(&s, &alice, &since, "").await;
    assert_eq!(summary_of(&r)["m.joined_member_count"], 2, "{r}");
    assert!(heroes(&summary_of(&r)).is_empty(), "a named room has no heroes: {r}");
    since = next_batch(&r);

    // The name redacted: the state is the same set of events, but the room has no name now.
    let name_event = state_event(&s, &alice, &room, "m.room.name", "").await["event_id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .put(&room_path(&room, &format!("redact/{}/{}", enc(&name_event), next_txn())), alice.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = sync_since(&s, &alice, &since, "").await;
    assert_eq!(heroes(&summary_of(&r)), set([&bob.user_id]), "the redacted name leaves the room unnamed: {r}");
    since = next_batch(&r);
    send_text(&s, &bob, &room, "still here").await;
    let r = sync_since(&s, &alice, &since, "").await;
    assert_eq!(heroes(&summary_of(&r)), set([&bob.user_id]), "{r}");
    since = next_batch(&r);

    // A join: the counts follow.
    join(&s, &charlie, &room).await;
    send_text(&s, &bob, &room, "welcome").await;
    let r = sync_since(&s, &alice, &since, "").await;
    assert_eq!(summary_of(&r)["m.joined_member_count"], 3, "{r}");
    assert_eq!(heroes(&summary_of(&r)), set([&bob.user_id, &charlie.user_id]), "{r}");
    since = next_batch(&r);

    // A room mention highlights only from senders with the power level for it: Bob gets it
    // between two of his mentions.
    let room_mention = |body: &str| json!({"msgtype": "m.text", "body": body, "m.mentions": {"room": true}});
    send(&s, &bob, &room, "m.room.message", room_mention("@room first")).await;
    let r = sync_since(&s, &alice, &since, "").await;
    let before = counts(&r);
    since = next_batch(&r);
    crate::rooms::set_user_level(&s, &alice, &room, &bob.user_id, 50).await;
    send(&s, &bob, &room, "m.room.message", room_mention("@room second")).await;
    let r = sync_since(&s, &alice, &since, "").await;
    let after = counts(&r);
    assert_eq!(before.1, 0, "Bob may not mention the room yet: {before:?}");
    assert_eq!(after.1, 1, "the new power level counts for the next mention: {before:?} -> {after:?}");
}

#[tokio::test]
async fn invalid_since_tokens_are_400() {
    let (s, [alice]) = server_with(["alice"]).await;
    for bad in ["garbage", "s1_2", "s-1_0_0_0_0", "t5", "s1_2_3_4_x"] {
        let r = s.get(&format!("/_matrix/client/v3/sync?since={}", enc(bad)), alice.token()).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "since={bad}: {}", r.1);
        assert!(r.1["errcode"].is_string(), "{}", r.1);
    }
    // Sytest "Multiple calls to /sync should not cause 500 errors": many at once.
    let since = next_batch(&sync(&s, &alice, "").await);
    let calls = (0..8).map(|_| sync_since(&s, &alice, &since, "&timeout=200"));
    for r in futures_util::future::join_all(calls).await {
        assert!(r["next_batch"].is_string());
    }
    // A sync needs a valid access token.
    let r = s.get("/_matrix/client/v3/sync", Some("not-a-token")).await;
    assert_eq!((r.0, r.1["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_UNKNOWN_TOKEN")));
}
