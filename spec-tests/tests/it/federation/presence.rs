//! Presence across servers: `m.presence` EDUs to the servers sharing a room with the user, shown
//! in `/sync` and `GET /presence` of the other server's users.

use std::time::{Duration, Instant};

use serde_json::json;
use spec_tests::{ServerOptions, StatusCode, TestServer};

use super::rooms::{enc, joined_members, public_room, sync_until};
use crate::presence::{get_presence, presence_of, set_presence};

/// Alice on A and Bob on B come to share a room: each server learns the other's user's presence
/// from before (the join brings it), then each one's presence change reaches the other's
/// `/sync` (state, status message, activity), and `GET /presence` on each server answers for
/// the other.
#[tokio::test]
async fn presence_flows_both_ways_between_servers() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    set_presence(&a, &alice, json!({"presence": "online", "status_msg": "before you came"})).await;
    set_presence(&b, &bob, json!({"presence": "online", "status_msg": "about to join"})).await;
    let room = public_room(&a, &alice, "11").await;
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&a.server_name));
    let (status, answer) = b.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\nB log:\n{}", b.log());
    let both = {
        let mut m = vec![alice.user_id.clone(), bob.user_id.clone()];
        m.sort();
        m
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while joined_members(&a, &alice, &room).await != both {
        assert!(Instant::now() < deadline, "the join never reached A; log:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Sharing a room brings each server the other's user's presence, unchanged since.
    sync_until(&b, &bob, "alice's earlier presence", |r| {
        presence_of(r, &alice.user_id).is_some_and(|p| p["status_msg"] == "before you came")
    })
    .await;
    sync_until(&a, &alice, "bob's earlier presence", |r| {
        presence_of(r, &bob.user_id).is_some_and(|p| p["status_msg"] == "about to join")
    })
    .await;

    // A → B.
    set_presence(&a, &alice, json!({"presence": "online", "status_msg": "from A"})).await;
    let seen = sync_until(&b, &bob, "alice's presence", |r| {
        presence_of(r, &alice.user_id).is_some_and(|p| p["status_msg"] == "from A")
    })
    .await;
    let p = presence_of(&seen, &alice.user_id).expect("alice's presence");
    assert_eq!((p["presence"].clone(), p["currently_active"].clone()), (json!("online"), json!(true)), "{p}");
    assert!(p["last_active_ago"].as_u64().is_some_and(|ago| ago < 30_000), "{p}");
    let (status, direct) = get_presence(&b, &bob, &alice.user_id).await;
    assert_eq!((status, direct["status_msg"].clone()), (StatusCode::OK, json!("from A")), "{direct}");

    // B → A.
    set_presence(&b, &bob, json!({"presence": "unavailable", "status_msg": "from B"})).await;
    let seen = sync_until(&a, &alice, "bob's presence", |r| {
        presence_of(r, &bob.user_id).is_some_and(|p| p["status_msg"] == "from B")
    })
    .await;
    assert_eq!(presence_of(&seen, &bob.user_id).expect("bob's presence")["presence"], "unavailable");

    // A change after that travels too (the state, not just the first message).
    set_presence(&a, &alice, json!({"presence": "unavailable", "status_msg": "gone"})).await;
    sync_until(&b, &bob, "alice unavailable", |r| {
        presence_of(r, &alice.user_id).is_some_and(|p| p["presence"] == "unavailable" && p["status_msg"] == "gone")
    })
    .await;
}
