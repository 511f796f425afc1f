//! Device-list updates with their `prev_id` chains (server-server API, "Device management"),
//! with a fake origin on one side so a test sees every update and every request exactly: a real
//! server applies an origin's updates one after another, fetches the whole list
//! (`/user/devices`) only when it has none or an update shows a gap, answers `/keys/query`
//! from the list it keeps (across a restart), and sends its own users' updates chained.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

use super::{
    origin::{Origin, enc},
    rooms::public_room,
};

const DEVICES: &str = "/_matrix/federation/v1/user/devices/";
const KEYS_QUERY: &str = "/_matrix/federation/v1/user/keys/query";

fn keys(user: &str, device: &str) -> Value {
    json!({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{device}"): format!("curve-{device}"), format!("ed25519:{device}"): format!("ed-{device}")},
    })
}

fn update(user: &str, device: &str, stream_id: u64, prev: &[u64], deleted: bool) -> Value {
    let mut content = json!({
        "user_id": user, "device_id": device, "stream_id": stream_id, "prev_id": prev, "deleted": deleted,
    });
    if !deleted {
        content["keys"] = keys(user, device);
    }
    content
}

/// What the origin answers to `/user/devices/{user}`.
fn snapshot(user: &str, stream_id: u64, devices: &[&str]) -> Value {
    let devices: Vec<Value> = devices.iter().map(|d| json!({"device_id": d, "keys": keys(user, d)})).collect();
    json!({"user_id": user, "stream_id": stream_id, "devices": devices})
}

/// The devices `who` on `s` sees for `user` through `/keys/query`, sorted; the answer must name
/// no failures.
async fn devices_seen(s: &TestServer, who: &Account, user: &str) -> Vec<String> {
    let (status, answer) =
        s.post("/_matrix/client/v3/keys/query", who.token(), json!({"device_keys": {user: []}})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["failures"].as_object().is_none_or(|f| f.is_empty()), "{answer}");
    let mut devices: Vec<String> =
        answer["device_keys"][user].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default();
    devices.sort();
    devices
}

/// A federating server with Alice's public room, which Mallory of a fake origin joined: the
/// server, Alice, the origin, Mallory's user id.
async fn alice_and_mallory() -> (TestServer, Account, Origin, String) {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    let room = public_room(&a, &alice, "11").await;
    let mallory = origin.join(&a, &room, "mallory", "11").await.user;
    (a, alice, origin, mallory)
}

async fn send_update(origin: &Origin, a: &TestServer, txn: &str, content: Value) {
    let (status, answer) = origin.send_edus(a, txn, &[("m.device_list_update", content)]).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
}

/// An origin's user shares Alice's room on A. A fetches the user's list once (it had none),
/// applies the next updates in the chain without asking again, serves `/keys/query` from the
/// list (the origin is never asked), ignores an old update, and, when an update names a
/// predecessor it never got, fetches the whole list and ends with the origin's true one; Alice's
/// `/sync` lists the user as changed; the list survives a restart of A.
#[tokio::test]
async fn updates_are_applied_in_their_chain_and_a_gap_fetches_the_whole_list() {
    let (mut a, alice, origin, mallory) = alice_and_mallory().await;
    let (_, first) = a.get("/_matrix/client/v3/sync?timeout=0", alice.token()).await;
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();

    // The first update finds no list: the whole list is fetched, once.
    origin.serve(DEVICES, snapshot(&mallory, 11, &["D1", "D2"]));
    send_update(&origin, &a, "u1", update(&mallory, "D2", 11, &[10], false)).await;
    assert_eq!(origin.seen(DEVICES).len(), 1, "the list was not fetched once");
    assert_eq!(devices_seen(&a, &alice, &mallory).await, ["D1", "D2"]);

    // The next ones follow the chain and are applied as they are, without a fetch; a repeated
    // old update changes nothing.
    let steps: [(&str, &str, u64, u64, bool, &[&str]); 3] = [
        ("u2", "D3", 12, 11, false, &["D1", "D2", "D3"]),
        ("u3", "D1", 13, 12, true, &["D2", "D3"]),
        ("u4", "D1", 12, 11, false, &["D2", "D3"]),
    ];
    for (txn, device, stream_id, prev, deleted, expected) in steps {
        send_update(&origin, &a, txn, update(&mallory, device, stream_id, &[prev], deleted)).await;
        assert_eq!(devices_seen(&a, &alice, &mallory).await, expected, "after {txn}");
    }
    assert_eq!(origin.seen(DEVICES).len(), 1, "an update in the chain made A fetch the list");
    let (status, sync) = a.get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    assert!(sync["device_lists"]["changed"].as_array().is_some_and(|c| c.contains(&json!(mallory))), "{sync}");

    // Updates 14 to 19 were lost: 20 names 19. A fetches the list and keeps the origin's truth,
    // not what the update alone says.
    origin.serve(DEVICES, snapshot(&mallory, 20, &["D2", "D4"]));
    send_update(&origin, &a, "u5", update(&mallory, "D5", 20, &[19], false)).await;
    assert_eq!(origin.seen(DEVICES).len(), 2, "a gap did not make A fetch the list");
    assert_eq!(devices_seen(&a, &alice, &mallory).await, ["D2", "D4"]);
    // The chain goes on from there.
    send_update(&origin, &a, "u6", update(&mallory, "D6", 21, &[20], false)).await;
    assert_eq!(devices_seen(&a, &alice, &mallory).await, ["D2", "D4", "D6"]);

    // An update for a user of another server is not the origin's to give.
    let (status, _) =
        origin.send_edus(&a, "u7", &[("m.device_list_update", update(&alice.user_id, "EVIL", 99, &[], false))]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!devices_seen(&a, &alice, &alice.user_id).await.contains(&"EVIL".to_owned()));

    // Kept across a restart; the origin is never asked for keys.
    a.stop();
    a.restart().await;
    assert_eq!(devices_seen(&a, &alice, &mallory).await, ["D2", "D4", "D6"]);
    assert_eq!(origin.seen(DEVICES).len(), 2);
    assert!(origin.seen(KEYS_QUERY).is_empty(), "A asked the origin although it holds the list");
}

/// A keeps a user's list while one of its users shares a joined room with them, and forgets it
/// when none does any more (Sytest "Server correctly resyncs when server leaves and rejoins a
/// room"): after Alice leaves the last room she shared with Mallory, the next update, though
/// it follows the chain, makes A fetch the list again once Bob shares a room with Mallory.
#[tokio::test]
async fn a_list_is_forgotten_when_no_room_is_shared_and_fetched_again() {
    let (a, alice, origin, mallory) = alice_and_mallory().await;
    let first = a.get("/_matrix/client/v3/joined_rooms", alice.token()).await.1["joined_rooms"][0].clone();
    let second = public_room(&a, &alice, "11").await;
    origin.join(&a, &second, "mallory", "11").await;
    origin.serve(DEVICES, snapshot(&mallory, 11, &["D1"]));
    send_update(&origin, &a, "f1", update(&mallory, "D1", 11, &[10], false)).await;
    assert_eq!(origin.seen(DEVICES).len(), 1);

    // Still sharing the second room: the list is kept and follows the chain.
    let leave = |room: &str| format!("/_matrix/client/v3/rooms/{}/leave", enc(room));
    let (status, answer) = a.post(&leave(first.as_str().unwrap()), alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    send_update(&origin, &a, "f2", update(&mallory, "D2", 12, &[11], false)).await;
    assert_eq!(devices_seen(&a, &alice, &mallory).await, ["D1", "D2"]);
    assert_eq!(origin.seen(DEVICES).len(), 1, "a kept list was fetched");

    // No room shared: forgotten. Bob shares one later; the next update finds no list.
    let (status, answer) = a.post(&leave(&second), alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let bob = a.register("bob", "pw-bob-123").await;
    let third = public_room(&a, &bob, "11").await;
    origin.join(&a, &third, "mallory", "11").await;
    origin.serve(DEVICES, snapshot(&mallory, 13, &["D1", "D2", "D3"]));
    send_update(&origin, &a, "f3", update(&mallory, "D3", 13, &[12], false)).await;
    assert_eq!(origin.seen(DEVICES).len(), 2, "the list outlived the shared rooms");
    assert_eq!(devices_seen(&a, &bob, &mallory).await, ["D1", "D2", "D3"]);
}

/// A's own user's device changes reach a server in her room as `m.device_list_update` EDUs
/// (Sytest "Local device key changes get to remote servers with correct prev_id"): increasing
/// stream ids, the first naming no predecessor, each next one naming the one before; a new
/// device, its new name and its deletion each one update, with the device as it is then; `/user/devices` answers at the last
/// stream id.
#[tokio::test]
async fn our_updates_carry_a_prev_id_chain() {
    let (a, alice, origin, _) = alice_and_mallory().await;

    let upload = |who: &Account| {
        let body = json!({"device_keys": keys(&who.user_id, &who.device_id)});
        let (a, token) = (&a, who.token().map(str::to_owned));
        async move {
            let (status, answer) = a.post("/_matrix/client/v3/keys/upload", token.as_deref(), body).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    };
    upload(&alice).await;
    let phone = a.login("alice", "pw-alice-123").await;
    upload(&phone).await;
    let path = format!("/_matrix/client/v3/devices/{}", enc(&phone.device_id));
    let (status, answer) = a.put(&path, alice.token(), json!({"display_name": "Diensthandy"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // An update tells the device as it is when it is sent: the new name before the logout.
    wait_for_updates(&origin, &a, &alice.user_id, 3).await;
    let (status, answer) = a.post("/_matrix/client/v3/logout", phone.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let updates = wait_for_updates(&origin, &a, &alice.user_id, 4).await;
    let devices: Vec<(&str, bool)> =
        updates.iter().map(|u| (u["device_id"].as_str().unwrap(), u["deleted"].as_bool().unwrap())).collect();
    let laptop = alice.device_id.as_str();
    let handy = phone.device_id.as_str();
    assert_eq!(devices, [(laptop, false), (handy, false), (handy, false), (handy, true)], "{updates:?}");
    assert_eq!(updates[0]["keys"]["keys"][format!("curve25519:{laptop}")], format!("curve-{laptop}"));
    assert_eq!(updates[2]["device_display_name"], "Diensthandy");
    assert_eq!(updates[0]["prev_id"], json!([]), "{updates:?}");
    for pair in updates.windows(2) {
        let (before, after) = (pair[0]["stream_id"].as_u64().unwrap(), pair[1]["stream_id"].as_u64().unwrap());
        assert!(after > before, "{updates:?}");
        assert_eq!(pair[1]["prev_id"], json!([before]), "{updates:?}");
    }
    let path = format!("{DEVICES}{}", enc(&alice.user_id));
    let (status, list) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["stream_id"], updates[3]["stream_id"], "{list}");
    assert_eq!(list["devices"].as_array().map(Vec::len), Some(1), "{list}");
}

/// The `m.device_list_update` EDUs for `user` the origin received, in order, once there are
/// `count` (up to 30 s).
async fn wait_for_updates(origin: &Origin, a: &TestServer, user: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let updates: Vec<Value> = origin
            .seen("/_matrix/federation/v1/send/")
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .flat_map(|t| t["edus"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["edu_type"] == "m.device_list_update" && e["content"]["user_id"] == user)
            .map(|e| e["content"].clone())
            .collect();
        if updates.len() >= count {
            return updates;
        }
        assert!(Instant::now() < deadline, "{} of {count} updates arrived: {updates:?}\n{}", updates.len(), a.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
