//! Room upgrades seen from a server that did not upgrade: when its first user joins the
//! replacement room, its own aliases, directory entry and users' tags and push rules follow.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

use super::rooms::{enc, wait_for_membership};
use crate::directory::{add_alias, directory_visibility, public_rooms, resolve, room_ids};

fn tag_path(who: &Account, room: &str) -> String {
    format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag", enc(&who.user_id), enc(room))
}

fn rule_path(kind: &str, rule_id: &str) -> String {
    format!("/_matrix/client/v3/pushrules/global/{kind}/{}", enc(rule_id))
}

async fn ok(r: (StatusCode, Value), what: &str) -> Value {
    assert_eq!(r.0, StatusCode::OK, "{what}: {}", r.1);
    r.1
}

/// Joins `room` on `s` through server `through`.
async fn join_through(s: &TestServer, who: &Account, room: &str, through: &str) {
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(room), enc(through));
    let (status, answer) = s.post(&path, who.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{} joins {room}: {answer}\nlog:\n{}", who.user_id, s.log());
}

/// Waits (up to 30 s) until `who` on `s` sees the old room's tombstone naming `new`.
async fn wait_for_tombstone(s: &TestServer, who: &Account, old: &str, new: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.tombstone/", enc(old));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, content) = s.get(&path, who.token()).await;
        if status == StatusCode::OK {
            assert_eq!(content["replacement_room"], new, "{content}");
            return;
        }
        assert!(Instant::now() < deadline, "the tombstone never reached {}; log:\n{}", s.server_name, s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sytest "/upgrade moves remote aliases to the new room" and "Local and remote users'
/// homeservers remove a room from their public directory on upgrade": Alice upgrades her room on
/// A. Bob's alias for it on B and B's directory entry stay with the old room until Bob follows
/// the upgrade; then both name the new room, and Bob's and Carol's (B's other member of the old
/// room) tags and Bob's push rules for the old room apply to the new one. Only the first join
/// moves anything: an alias added to the old room later stays there when Carol joins too.
#[tokio::test]
async fn remote_aliases_directory_and_settings_follow_an_upgrade() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let carol = b.register("carol", "pw-carol-123").await;
    let create = json!({"preset": "public_chat", "visibility": "public", "room_version": "11",
                        "power_level_content_override": {"users": {alice.user_id.clone(): 100, bob.user_id.clone(): 50}}});
    let old = ok(a.post("/_matrix/client/v3/createRoom", alice.token(), create).await, "createRoom").await["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    join_through(&b, &bob, &old, &a.server_name).await;
    join_through(&b, &carol, &old, &a.server_name).await;
    wait_for_membership(&a, &alice, &old, &carol.user_id, "join").await;

    // B's own alias and directory entry for A's room; Bob (power 50) may publish it.
    let alias = format!("#hall:{}", b.server_name);
    add_alias(&b, &bob, &alias, &old).await;
    let path = format!("/_matrix/client/v3/directory/list/room/{}", enc(&old));
    ok(b.put(&path, bob.token(), json!({"visibility": "public"})).await, "publish on B").await;
    assert!(room_ids(&public_rooms(&b, "").await).contains(&old));
    // Tags and push rules of B's users for the old room.
    let tags = json!({"tags": {"u.work": {"order": 0.25}}});
    ok(b.put(&tag_path(&bob, &old), bob.token(), tags.clone()).await, "bob's tags").await;
    let carol_tags = json!({"tags": {"m.favourite": {}}});
    ok(b.put(&tag_path(&carol, &old), carol.token(), carol_tags.clone()).await, "carol's tags").await;
    ok(b.put(&rule_path("room", &old), bob.token(), json!({"actions": []})).await, "room rule").await;
    let mute = json!({"actions": [], "conditions": [{"kind": "event_match", "key": "room_id", "pattern": old}]});
    ok(b.put(&rule_path("override", &old), bob.token(), mute).await, "override rule").await;

    let upgraded = a
        .post(&format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)), alice.token(), json!({"new_version": "12"}))
        .await;
    let new = ok(upgraded, "upgrade").await["replacement_room"].as_str().expect("replacement room").to_owned();
    wait_for_tombstone(&b, &bob, &old, &new).await;
    // A moved its own directory entry at once; B has not joined the new room yet.
    assert_eq!(
        (directory_visibility(&a, &new).await, directory_visibility(&a, &old).await),
        ("public".into(), "private".into())
    );
    assert_eq!(resolve(&b, &alias).await.1["room_id"], old.as_str());
    assert_eq!(directory_visibility(&b, &old).await, "public");

    join_through(&b, &bob, &new, &a.server_name).await;
    let (status, resolved) = resolve(&b, &alias).await;
    assert_eq!((status, resolved["room_id"].as_str()), (StatusCode::OK, Some(new.as_str())), "{resolved}");
    assert_eq!(directory_visibility(&b, &new).await, "public");
    assert_eq!(directory_visibility(&b, &old).await, "private");
    let listed = room_ids(&public_rooms(&b, "").await);
    assert!(listed.contains(&new) && !listed.contains(&old), "{listed:?}");
    assert_eq!(ok(b.get(&tag_path(&bob, &new), bob.token()).await, "bob's new tags").await, tags);
    assert_eq!(ok(b.get(&tag_path(&carol, &new), carol.token()).await, "carol's new tags").await, carol_tags);
    let room_rule = ok(b.get(&rule_path("room", &new), bob.token()).await, "copied room rule").await;
    assert_eq!((&room_rule["rule_id"], &room_rule["actions"]), (&json!(new), &json!([])), "{room_rule}");
    let override_rule = ok(b.get(&rule_path("override", &new), bob.token()).await, "copied override rule").await;
    assert_eq!(override_rule["conditions"][0]["pattern"], new.as_str(), "{override_rule}");
    // The originals stay.
    ok(b.get(&rule_path("room", &old), bob.token()).await, "original room rule").await;

    // Once: what B's users give the old room afterwards stays with it.
    let late = format!("#late:{}", b.server_name);
    add_alias(&b, &carol, &late, &old).await;
    join_through(&b, &carol, &new, &a.server_name).await;
    assert_eq!(resolve(&b, &late).await.1["room_id"], old.as_str());
    assert_eq!(resolve(&b, &alias).await.1["room_id"], new.as_str());
}
