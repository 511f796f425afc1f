//! Simplified sliding sync (MSC4186): room lists sorted by recency with windows, per-room
//! timeline limits and required state, incremental updates per connection, room subscriptions,
//! list filters, extensions, long-polling and bad positions.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use crate::rooms::{create_room, enc, invite, join, room_path, send_text, server_with};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn try_slide(s: &TestServer, who: &Account, pos: Option<&str>, query: &str, body: Value) -> (StatusCode, Value) {
    let mut path = format!("{PATH}?{query}");
    if let Some(pos) = pos {
        path = format!("{path}&pos={}", enc(pos));
    }
    s.post(&path, who.token(), body).await
}

async fn slide(s: &TestServer, who: &Account, pos: Option<&str>, body: Value) -> Value {
    let (status, resp) = try_slide(s, who, pos, "timeout=0", body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

fn pos(resp: &Value) -> String {
    resp["pos"].as_str().expect("pos").to_owned()
}

fn rooms_of(resp: &Value) -> Vec<String> {
    resp["rooms"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn list(range_end: u64, timeline_limit: u64) -> Value {
    json!({
        "lists": {"all": {
            "ranges": [[0, range_end]],
            "timeline_limit": timeline_limit,
            "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]],
        }}
    })
}

/// The list window holds the most recently active rooms; a known room comes back with its news
/// only; a room that moves into the window comes whole (`initial`).
#[tokio::test]
async fn room_list_windows_and_incremental_updates() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let mut rooms = Vec::new();
    for n in 0..5 {
        let room = create_room(&s, &alice, json!({"name": format!("Akte {n}"), "preset": "public_chat"})).await;
        join(&s, &bob, &room).await;
        send_text(&s, &bob, &room, &format!("erste Nachricht {n}")).await;
        send_text(&s, &bob, &room, &format!("zweite Nachricht {n}")).await;
        rooms.push(room);
    }

    let first = slide(&s, &alice, None, list(2, 1)).await;
    assert_eq!(first["lists"]["all"]["count"], 5, "{first}");
    let mut sent = rooms_of(&first);
    sent.sort();
    let mut newest = rooms[2..].to_vec();
    newest.sort();
    assert_eq!(sent, newest, "the window holds the three most recent rooms");
    let room4 = &first["rooms"][&rooms[4]];
    assert_eq!(room4["initial"], true, "{room4}");
    assert_eq!(room4["name"], "Akte 4", "{room4}");
    assert_eq!(bodies(room4), ["zweite Nachricht 4"], "{room4}");
    assert_eq!(room4["limited"], true, "{room4}");
    assert!(room4["prev_batch"].is_string(), "{room4}");
    assert_eq!(room4["joined_count"], 2, "{room4}");
    assert!(
        room4["bump_stamp"].as_u64().is_some_and(|b| b > first["rooms"][&rooms[2]]["bump_stamp"].as_u64().unwrap())
    );
    // Required state: the name, and the member event of the timeline's sender only.
    let state = room4["required_state"].as_array().expect("required_state");
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "{room4}");
    let members: Vec<&str> =
        state.iter().filter(|e| e["type"] == "m.room.member").filter_map(|e| e["state_key"].as_str()).collect();
    assert_eq!(members, [bob.user_id.as_str()], "{room4}");
    assert!(!state.iter().any(|e| e["type"] == "m.room.join_rules"), "{room4}");
    // The previous batch continues with /messages.
    let (status, older) = s
        .get(
            &room_path(
                &rooms[4],
                &format!("messages?dir=b&limit=1&from={}", enc(room4["prev_batch"].as_str().unwrap())),
            ),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{older}");
    assert_eq!(older["chunk"][0]["content"]["body"], "erste Nachricht 4", "{older}");

    // Nothing new: no rooms.
    let again = slide(&s, &alice, Some(&pos(&first)), list(2, 1)).await;
    assert!(rooms_of(&again).is_empty(), "{again}");
    assert_eq!(again["lists"]["all"]["count"], 5);

    // A message in a known room: only the news.
    let news = send_text(&s, &bob, &rooms[3], "neu in drei").await;
    let update = slide(&s, &alice, Some(&pos(&again)), list(2, 1)).await;
    assert_eq!(rooms_of(&update), [rooms[3].clone()], "{update}");
    let room3 = &update["rooms"][&rooms[3]];
    assert!(room3.get("initial").is_none(), "{room3}");
    assert_eq!(room3["timeline"][0]["event_id"], news.as_str(), "{room3}");
    assert_eq!(room3["num_live"], 1, "{room3}");
    assert!(room3.get("name").is_none(), "unchanged names are not resent: {room3}");

    // Room 0 becomes the most recent: it enters the window whole.
    send_text(&s, &bob, &rooms[0], "wieder aktiv").await;
    let moved = slide(&s, &alice, Some(&pos(&update)), list(2, 1)).await;
    assert_eq!(moved["rooms"][&rooms[0]]["initial"], true, "{moved}");
    assert_eq!(moved["rooms"][&rooms[0]]["name"], "Akte 0", "{moved}");
    assert_eq!(bodies(&moved["rooms"][&rooms[0]]), ["wieder aktiv"]);

    // A retried request with an older position is answered again (rooms sent since count as unsent).
    let retried = slide(&s, &alice, Some(&pos(&update)), list(2, 1)).await;
    assert_eq!(retried["rooms"][&rooms[0]]["initial"], true, "{retried}");

    // A bigger timeline limit changes the room configuration: the rooms come whole again.
    let bigger = slide(&s, &alice, Some(&pos(&moved)), list(2, 5)).await;
    let room4 = &bigger["rooms"][&rooms[4]];
    assert_eq!(room4["initial"], true, "{bigger}");
    assert_eq!(bodies(room4), ["erste Nachricht 4", "zweite Nachricht 4"], "{room4}");
}

/// Subscriptions, list filters (invites, direct chats, encryption) and room membership limits.
#[tokio::test]
async fn subscriptions_and_list_filters() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let plain = create_room(&s, &alice, json!({"name": "Normal"})).await;
    let encrypted = create_room(
        &s,
        &alice,
        json!({"name": "Geheim", "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let dm = create_room(&s, &bob, json!({"is_direct": true, "invite": [alice.user_id.clone()]})).await;
    join(&s, &alice, &dm).await;
    s.put(
        &format!("/_matrix/client/v3/user/{}/account_data/m.direct", alice.user_id),
        alice.token(),
        json!({bob.user_id.clone(): [dm.clone()]}),
    )
    .await;
    let invited = create_room(&s, &carol, json!({"name": "Einladung"})).await;
    invite(&s, &carol, &invited, &alice.user_id).await;
    let foreign = create_room(&s, &carol, json!({"name": "Fremd", "preset": "private_chat"})).await;

    let body = json!({
        "lists": {
            "dms": {"ranges": [[0, 9]], "timeline_limit": 0, "filters": {"is_dm": true}},
            "encrypted": {"ranges": [[0, 9]], "timeline_limit": 0, "filters": {"is_encrypted": true}},
            "invites": {"ranges": [[0, 9]], "timeline_limit": 0, "filters": {"is_invite": true}},
            "none": {"ranges": [[0, 0]], "timeline_limit": 0, "filters": {"is_dm": true, "is_encrypted": true}},
        },
        "room_subscriptions": {
            plain.clone(): {"timeline_limit": 1, "required_state": [["m.room.create", ""]]},
            foreign.clone(): {"timeline_limit": 1},
        },
    });
    let resp = slide(&s, &alice, None, body).await;
    let count = |name: &str| resp["lists"][name]["count"].as_u64().unwrap_or_default();
    assert_eq!((count("dms"), count("encrypted"), count("invites"), count("none")), (1, 1, 1, 0), "{resp}");
    let mut expected = vec![plain.clone(), encrypted.clone(), dm.clone(), invited.clone()];
    expected.sort();
    let mut got = rooms_of(&resp);
    got.sort();
    assert_eq!(got, expected, "a room the user is not in is not subscribable: {resp}");
    assert_eq!(resp["rooms"][&dm]["is_dm"], true, "{resp}");
    let invite_state = resp["rooms"][&invited]["invite_state"].as_array().expect("invite_state");
    assert!(invite_state.iter().any(|e| e["type"] == "m.room.name"), "{resp}");
    let plain_state = resp["rooms"][&plain]["required_state"].as_array().expect("required_state");
    assert_eq!(plain_state.len(), 1, "{resp}");
    assert_eq!(plain_state[0]["type"], "m.room.create");
}

/// Extensions: to-device (delivered until acknowledged), e2ee (key counts, device lists), account
/// data, receipts and typing for the rooms in the window.
#[tokio::test]
async fn extensions() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let message = send_text(&s, &bob, &room, "hallo").await;
    s.put(
        "/_matrix/client/v3/sendToDevice/m.test/txn1",
        bob.token(),
        json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"n": 1}}}}),
    )
    .await;
    let ext = |since: Option<&str>| {
        let mut to_device = json!({"enabled": true});
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({
            "lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1}},
            "extensions": {
                "to_device": to_device,
                "e2ee": {"enabled": true},
                "account_data": {"enabled": true},
                "receipts": {"enabled": true},
                "typing": {"enabled": true},
            },
        })
    };
    let first = slide(&s, &alice, None, ext(None)).await;
    let e = &first["extensions"];
    assert_eq!(e["to_device"]["events"][0]["content"]["n"], 1, "{e}");
    assert_eq!(e["to_device"]["events"][0]["sender"], bob.user_id.as_str(), "{e}");
    let next = e["to_device"]["next_batch"].as_str().expect("next_batch").to_owned();
    assert!(e["e2ee"]["device_one_time_keys_count"].is_object(), "{e}");
    let global: Vec<&str> =
        e["account_data"]["global"].as_array().unwrap().iter().filter_map(|x| x["type"].as_str()).collect();
    assert!(global.contains(&"m.push_rules"), "{e}");

    // Acknowledged to-device messages are gone; receipts and typing arrive.
    s.post(&room_path(&room, &format!("receipt/m.read/{}", enc(&message))), bob.token(), json!({})).await;
    s.put(
        &room_path(&room, &format!("typing/{}", enc(&bob.user_id))),
        bob.token(),
        json!({"typing": true, "timeout": 10000}),
    )
    .await;
    let second = slide(&s, &alice, Some(&pos(&first)), ext(Some(&next))).await;
    let e = &second["extensions"];
    assert!(e["to_device"]["events"].as_array().is_none_or(Vec::is_empty), "{e}");
    assert!(e["receipts"]["rooms"][&room]["content"][&message]["m.read"][&bob.user_id].is_object(), "{e}");
    assert_eq!(e["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob.user_id.clone()]), "{e}");
}

/// The e2ee extension: the device's one-time key counts and unused fallback key types, and
/// device-list changes of the users the syncing user shares a room with, after a member joins
/// and after a member's device keys change; nothing when neither happened.
#[tokio::test]
async fn e2ee_extension_follows_keys_and_device_lists() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let otk = |n: u32| json!({"key": format!("otk-{n}"), "signatures": {"@x:localhost": {"ed25519:X": "sig"}}});
    let (status, resp) = s
        .post(
            "/_matrix/client/v3/keys/upload",
            alice.token(),
            json!({
                "one_time_keys": {"signed_curve25519:A1": otk(1), "signed_curve25519:A2": otk(2)},
                "fallback_keys": {"signed_curve25519:F1": otk(3)},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let e2ee =
        json!({"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1}}, "extensions": {"e2ee": {"enabled": true}}});
    let first = slide(&s, &alice, None, e2ee.clone()).await;
    let e = &first["extensions"]["e2ee"];
    assert_eq!(e["device_one_time_keys_count"]["signed_curve25519"], 2, "{e}");
    assert_eq!(e["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{e}");

    // Carol joins the shared room: her devices are news to Alice.
    join(&s, &carol, &room).await;
    let second = slide(&s, &alice, Some(&pos(&first)), e2ee.clone()).await;
    let e = &second["extensions"]["e2ee"];
    assert_eq!(e["device_lists"]["changed"], json!([carol.user_id.clone()]), "{e}");

    // Bob claims one of Alice's keys and uploads device keys of his own.
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let (status, resp) = s.post("/_matrix/client/v3/keys/claim", bob.token(), claim).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let keys = json!({
        "user_id": bob.user_id,
        "device_id": bob.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {format!("curve25519:{}", bob.device_id): "curve", format!("ed25519:{}", bob.device_id): "ed"},
        "signatures": {bob.user_id.clone(): {format!("ed25519:{}", bob.device_id): "signature"}},
    });
    let (status, resp) = s.post("/_matrix/client/v3/keys/upload", bob.token(), json!({"device_keys": keys})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let third = slide(&s, &alice, Some(&pos(&second)), e2ee.clone()).await;
    let e = &third["extensions"]["e2ee"];
    assert_eq!(e["device_lists"]["changed"], json!([bob.user_id.clone()]), "{e}");
    assert_eq!(e["device_one_time_keys_count"]["signed_curve25519"], 1, "{e}");

    // A message moves the events stream but changes no membership and no device.
    send_text(&s, &bob, &room, "hallo").await;
    let fourth = slide(&s, &alice, Some(&pos(&third)), e2ee).await;
    let e = &fourth["extensions"]["e2ee"];
    assert!(e["device_lists"]["changed"].as_array().is_none_or(Vec::is_empty), "{e}");
    assert_eq!(rooms_of(&fourth), vec![room.clone()], "{fourth}");
}

/// Long-polling wakes for news and times out otherwise; bad positions and ranges are refused;
/// `/versions` advertises the API.
#[tokio::test]
async fn long_polling_errors_and_versions() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let first = slide(&s, &alice, None, list(9, 1)).await;
    let p = pos(&first);

    let started = Instant::now();
    let (status, idle) = try_slide(&s, &alice, Some(&p), "timeout=300", list(9, 1)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(rooms_of(&idle).is_empty(), "{idle}");
    assert!(started.elapsed() >= Duration::from_millis(250), "returned before the timeout");

    let waiting = try_slide(&s, &alice, Some(&p), "timeout=20000", list(9, 1));
    let sending = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_text(&s, &bob, &room, "wach auf").await
    };
    let started = Instant::now();
    let ((status, woke), sent) = tokio::join!(waiting, sending);
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(15), "the long poll did not wake");
    assert_eq!(woke["rooms"][&room]["timeline"][0]["event_id"], sent.as_str(), "{woke}");

    // Unknown positions: the client must start over.
    for bad in ["garbage", "99.s1_0_0_0_0_0", "1.s-1_0_0_0_0_0"] {
        assert_error(&try_slide(&s, &alice, Some(bad), "", list(9, 1)).await, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    }
    // Another user's position is not this user's.
    assert_error(&try_slide(&s, &bob, Some(&p), "", list(9, 1)).await, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    let bad_range = json!({"lists": {"all": {"ranges": [[5, 1]], "timeline_limit": 1}}});
    assert_error(&try_slide(&s, &alice, None, "", bad_range).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (status, _) = s.post(PATH, None, list(9, 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true, "{versions}");
}
