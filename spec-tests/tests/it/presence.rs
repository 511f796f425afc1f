//! Presence: `GET`/`PUT /presence/{userId}/status`, `set_presence` on `/sync`, presence events
//! in initial and incremental syncs for the user and those sharing a room with them (also when
//! they newly share one), long polls woken by presence, the sync filter's `presence` section,
//! activity and the offline timeout, and `presence.enabled = false`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error};

use crate::{
    rooms::{create_room, enc, join, send_text, server_with},
    sync::{inline_filter, next_batch, sync, sync_since},
};

fn status_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user))
}

pub(crate) async fn set_presence(s: &TestServer, who: &Account, body: Value) {
    let (status, answer) = s.put(&status_path(&who.user_id), who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

pub(crate) async fn get_presence(s: &TestServer, who: &Account, user: &str) -> (StatusCode, Value) {
    s.get(&status_path(user), who.token()).await
}

/// The content of the last `m.presence` event about `user` in a sync response.
pub(crate) fn presence_of(response: &Value, user: &str) -> Option<Value> {
    let events = response["presence"]["events"].as_array()?;
    for e in events {
        assert_eq!(e["type"], "m.presence", "{e}");
    }
    events.iter().rev().find(|e| e["sender"] == user).map(|e| e["content"].clone())
}

/// `GET`/`PUT /presence/{userId}/status`: one's own initial status, setting it (with a status
/// message), the errors for someone else's, unknown users, strangers and unknown states.
#[tokio::test]
async fn status_endpoints() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    // Initial status: offline, never active.
    let (status, initial) = get_presence(&s, &alice, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK, "{initial}");
    assert_eq!(initial["presence"], "offline", "{initial}");
    assert!(initial.get("last_active_ago").is_none(), "{initial}");

    set_presence(&s, &alice, json!({"presence": "online", "status_msg": "at my desk"})).await;
    let (status, own) = get_presence(&s, &alice, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((own["presence"].clone(), own["status_msg"].clone()), (json!("online"), json!("at my desk")), "{own}");
    assert_eq!(own["currently_active"], true, "{own}");
    assert!(own["last_active_ago"].as_u64().is_some_and(|ago| ago < 10_000), "{own}");

    set_presence(&s, &alice, json!({"presence": "unavailable"})).await;
    let (_, own) = get_presence(&s, &alice, &alice.user_id).await;
    assert_eq!(own["presence"], "unavailable", "{own}");
    assert!(own.get("status_msg").is_none_or(Value::is_null), "{own}");
    assert_ne!(own["currently_active"], true, "{own}");

    // Someone else's presence cannot be set.
    let r = s.put(&status_path(&alice.user_id), bob.token(), json!({"presence": "online"})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // An unknown state is refused.
    let r = s.put(&status_path(&alice.user_id), alice.token(), json!({"presence": "dancing"})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let r = s.put(&status_path(&alice.user_id), alice.token(), json!({"status_msg": "no state"})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    // Strangers read nothing; unknown users are 404.
    assert_error(&get_presence(&s, &bob, &alice.user_id).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let nobody = format!("@nobody:{}", s.server_name);
    assert_error(&get_presence(&s, &bob, &nobody).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Sharing a room, bob reads alice's presence; carol, outside it, still cannot.
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let (status, seen) = get_presence(&s, &bob, &alice.user_id).await;
    assert_eq!((status, seen["presence"].clone()), (StatusCode::OK, json!("unavailable")), "{seen}");
    assert_error(&get_presence(&s, &carol, &alice.user_id).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

/// Presence in `/sync`: one's own presence (set by syncing), changes of room-mates in
/// incremental syncs (online with a status message, unavailable), nothing about strangers, a
/// long poll woken by a presence change, `set_presence=unavailable|offline`, sending an event as
/// activity (also right after an explicit change), the filter's `presence` section, six-part tokens from before presence, and
/// simplified sliding sync marking the user online.
#[tokio::test]
async fn presence_in_sync() {
    let (s, [alice, bob, carol, dave]) = server_with(["alice", "bob", "carol", "dave"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;

    // Syncing makes bob online; he sees himself in his first sync.
    let first = sync(&s, &bob, "").await;
    let own = presence_of(&first, &bob.user_id).unwrap_or_else(|| panic!("bob's own presence: {first}"));
    assert_eq!((own["presence"].clone(), own["currently_active"].clone()), (json!("online"), json!(true)), "{own}");
    assert!(own["last_active_ago"].as_u64().is_some(), "{own}");
    // Alice never synced: offline, so not in an initial sync.
    assert!(presence_of(&first, &alice.user_id).is_none(), "{first}");
    let mut since = next_batch(&first);

    // Alice's change reaches bob's incremental sync; carol's (no shared room) does not.
    set_presence(&s, &carol, json!({"presence": "online", "status_msg": "private"})).await;
    set_presence(&s, &alice, json!({"presence": "online", "status_msg": "hello"})).await;
    let next = sync_since(&s, &bob, &since, "").await;
    let seen = presence_of(&next, &alice.user_id).unwrap_or_else(|| panic!("alice's presence: {next}"));
    assert_eq!((seen["presence"].clone(), seen["status_msg"].clone()), (json!("online"), json!("hello")), "{seen}");
    assert_eq!(seen["currently_active"], true, "{seen}");
    assert!(seen["last_active_ago"].as_u64().is_some_and(|ago| ago < 10_000), "{seen}");
    assert!(presence_of(&next, &carol.user_id).is_none(), "carol shares no room with bob: {next}");
    since = next_batch(&next);

    // Nothing new: an incremental sync carries no presence (bob's own sync changes nothing,
    // nor does a message of alice's, who is online and active already).
    send_text(&s, &alice, &room, "before lunch").await;
    let quiet = sync_since(&s, &bob, &since, "").await;
    assert!(presence_of(&quiet, &alice.user_id).is_none() && presence_of(&quiet, &bob.user_id).is_none(), "{quiet}");
    since = next_batch(&quiet);

    // A long poll wakes for alice becoming unavailable.
    let started = Instant::now();
    let (woken, ()) = tokio::join!(sync_since(&s, &bob, &since, "&timeout=20000"), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        set_presence(&s, &alice, json!({"presence": "unavailable", "status_msg": "lunch"})).await;
    });
    assert!(started.elapsed() < Duration::from_secs(15), "the long poll was not woken");
    let seen = presence_of(&woken, &alice.user_id).unwrap_or_else(|| panic!("alice unavailable: {woken}"));
    assert_eq!((seen["presence"].clone(), seen["status_msg"].clone()), (json!("unavailable"), json!("lunch")));
    since = next_batch(&woken);

    // Sending an event is activity: alice is online again, though her last message came only
    // seconds before she went unavailable.
    send_text(&s, &alice, &room, "back").await;
    let next = sync_since(&s, &bob, &since, "").await;
    let seen = presence_of(&next, &alice.user_id).unwrap_or_else(|| panic!("alice active: {next}"));
    assert_eq!((seen["presence"].clone(), seen["currently_active"].clone()), (json!("online"), json!(true)), "{seen}");
    assert_eq!(seen["status_msg"], "lunch", "activity keeps the status message: {seen}");

    // The filter's presence section: excluded types or senders drop the events.
    for filter in [json!({"presence": {"not_types": ["m.presence"]}}), json!({"presence": {"types": []}})] {
        let filtered = sync_since(&s, &bob, &since, &format!("&{}", inline_filter(&filter))).await;
        assert!(filtered["presence"]["events"].as_array().is_none_or(Vec::is_empty), "{filter}: {filtered}");
    }
    let filter = json!({"presence": {"not_senders": [alice.user_id]}});
    let filtered = sync_since(&s, &bob, &since, &format!("&{}", inline_filter(&filter))).await;
    assert!(presence_of(&filtered, &alice.user_id).is_none(), "{filtered}");
    let filter = json!({"presence": {"senders": [alice.user_id]}});
    let filtered = sync_since(&s, &bob, &since, &format!("&{}", inline_filter(&filter))).await;
    assert!(presence_of(&filtered, &alice.user_id).is_some(), "{filtered}");

    // A token from before presence (six parts) is still accepted, and carries everything since.
    let old: Vec<&str> = since.split('_').take(6).collect();
    let answer = sync_since(&s, &bob, &old.join("_"), "").await;
    assert!(presence_of(&answer, &alice.user_id).is_some(), "{answer}");

    // set_presence on /sync: unavailable is kept; offline does not make the user online.
    sync(&s, &carol, "set_presence=unavailable").await;
    let (_, carols) = get_presence(&s, &carol, &carol.user_id).await;
    assert_eq!(carols["presence"], "unavailable", "{carols}");
    let offline_sync = sync(&s, &dave, "set_presence=offline").await;
    let (_, daves) = get_presence(&s, &dave, &dave.user_id).await;
    assert_eq!(daves["presence"], "offline", "{daves}");
    assert!(presence_of(&offline_sync, &dave.user_id).is_none_or(|p| p["presence"] == "offline"), "{offline_sync}");
    let bad = s.get("/_matrix/client/v3/sync?set_presence=dancing", dave.token()).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Simplified sliding sync counts as syncing too (its set_presence=offline does not).
    let sliding = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let (status, answer) = s.post(&format!("{sliding}?set_presence=offline"), dave.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(get_presence(&s, &dave, &dave.user_id).await.1["presence"], "offline");
    let (status, answer) = s.post(sliding, dave.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(get_presence(&s, &dave, &dave.user_id).await.1["presence"], "online");
}

/// Newly sharing a room brings presence without a presence change: the joiner's next
/// incremental sync carries the room's members', and the members' carries the joiner's.
#[tokio::test]
async fn presence_of_newly_joined_members() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    set_presence(&s, &alice, json!({"presence": "online", "status_msg": "here"})).await;
    let alice_since = next_batch(&sync(&s, &alice, "").await);
    let bob_since = next_batch(&sync(&s, &bob, "").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;

    let bobs = sync_since(&s, &bob, &bob_since, "").await;
    let seen = presence_of(&bobs, &alice.user_id).unwrap_or_else(|| panic!("alice's presence for bob: {bobs}"));
    assert_eq!((seen["presence"].clone(), seen["status_msg"].clone()), (json!("online"), json!("here")), "{seen}");
    let alices = sync_since(&s, &alice, &alice_since, "").await;
    let seen = presence_of(&alices, &bob.user_id).unwrap_or_else(|| panic!("bob's presence for alice: {alices}"));
    assert_eq!(seen["presence"], "online", "{seen}");
}

/// A user who stops syncing is offline about 30 s after their last sync, and room-mates see it.
#[tokio::test]
async fn users_who_stop_syncing_go_offline() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    sync(&s, &alice, "").await;
    let last_sync = Instant::now();
    let since = next_batch(&sync(&s, &bob, "").await);
    let (_, now) = get_presence(&s, &bob, &alice.user_id).await;
    assert_eq!(now["presence"], "online", "{now}");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, p) = get_presence(&s, &bob, &alice.user_id).await;
        if p["presence"] == "offline" {
            break;
        }
        assert!(Instant::now() < deadline, "alice never went offline: {p}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last_sync.elapsed() >= Duration::from_secs(29), "offline too early: {:?}", last_sync.elapsed());
    let next = sync_since(&s, &bob, &since, "").await;
    let seen = presence_of(&next, &alice.user_id).unwrap_or_else(|| panic!("alice offline: {next}"));
    assert_eq!(seen["presence"], "offline", "{seen}");
}

/// `presence.enabled = false`: the endpoints answer, everyone reads offline, syncs show nothing.
#[tokio::test]
async fn disabled_presence_is_neither_kept_nor_shown() {
    let s = TestServer::start_with(ServerOptions::default().set("POSTSTELLE_PRESENCE__ENABLED", false)).await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = next_batch(&sync(&s, &bob, "").await);
    set_presence(&s, &alice, json!({"presence": "online", "status_msg": "hidden"})).await;
    let (status, p) = get_presence(&s, &bob, &alice.user_id).await;
    assert_eq!((status, p["presence"].clone()), (StatusCode::OK, json!("offline")), "{p}");
    assert!(p.get("status_msg").is_none_or(Value::is_null), "{p}");
    let next = sync_since(&s, &bob, &since, "").await;
    assert!(next["presence"]["events"].as_array().is_none_or(Vec::is_empty), "{next}");
    let first = sync(&s, &alice, "").await;
    assert!(first["presence"]["events"].as_array().is_none_or(Vec::is_empty), "{first}");
}
