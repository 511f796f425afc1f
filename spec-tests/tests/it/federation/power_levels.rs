//! Attempts to take over a room's power levels: through the state another server reports, and
//! in rooms without power levels that the fake origin hosts.

use serde_json::json;
use spec_tests::{ServerOptions, StatusCode, TestServer, assert_error};

use super::hostile::{setup, state};
use super::origin::{Draft, Origin, enc};
use super::outbound_join::{join, synced_join};

/// Sytest "Should not be able to take over the room by pretending there is no PL event":
/// Mallory makes up a power levels event X giving her 100 and Alice 0, authorised only by the
/// create event and her join (as if the room had no power levels), on an event nobody has.
/// She sends E after D after C, C on an unknown event; asked for the missing events, her
/// server gives D only, and asked for the state before E, the create event, her join and X.
/// The room's power levels stay Alice's: she keeps 100, Mallory gets nothing, and Alice can
/// still change the room's name.
#[tokio::test]
async fn a_made_up_power_levels_event_in_a_reported_state_does_not_take_over_the_room() {
    let (a, alice, origin, mut room) = setup("11").await;
    let nowhere = format!("${}", "N".repeat(43));
    let users = json!({room.user.clone(): 100, alice.user_id.clone(): 0});
    let x = origin.event(
        &room,
        Draft::of("m.room.power_levels", Some(""), json!({"users": users}))
            .prev(vec![nowhere.clone()])
            .auth(vec![room.create.clone(), room.join.clone()]),
    );
    room.depth += 8;
    let c = origin.event(&room, Draft::message("hehehe...").prev(vec![nowhere]));
    room.advance(&c);
    let d = origin.event(&room, Draft::message("totes legit"));
    room.advance(&d);
    let e = origin.event(&room, Draft::message("nothing to see"));
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": [d.json]}));
    origin.serve(
        "/_matrix/federation/v1/state_ids/",
        json!({"pdu_ids": [room.create, room.join, x.id], "auth_chain_ids": [room.create, room.join]}),
    );
    origin.serve(
        "/_matrix/federation/v1/event/",
        json!({"origin": origin.name, "origin_server_ts": 0, "pdus": [x.json]}),
    );
    let (status, answer) = origin.send(&a, "takeover", &[&e]).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert!(origin.seen("/_matrix/federation/v1/get_missing_events/").len() == 1, "no /get_missing_events");
    assert!(!origin.seen("/_matrix/federation/v1/state_ids/").is_empty(), "the origin was not asked for the state");

    let levels = state(&a, &alice, &room.room_id, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");
    assert!(levels["users"].get(&room.user).is_none(), "{levels}");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room.room_id));
    let (status, answer) = a.put(&path, alice.token(), json!({"name": "still Alice's"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Nor is Mallory allowed what X would give her.
    room.advance(&e);
    let rename = origin.event(&room, Draft::of("m.room.name", Some(""), json!({"name": "Mallory's"})));
    let (_, answer) = origin.send(&a, "rename", &[&rename]).await;
    assert!(answer["pdus"][&rename.id].get("error").is_some(), "Mallory renamed the room: {answer}");
    assert_eq!(state(&a, &alice, &room.room_id, "m.room.name", "").await["name"], "still Alice's");
}

/// Sytest "Remote servers cannot set power levels in rooms without existing powerlevels": Bob
/// joined a room the origin hosts that has no power levels event; his attempt to give himself
/// 1000 is refused (403: without power levels state events need 50, he has 0) and nothing is
/// sent to the origin. The room's creator could (see the next test).
#[tokio::test]
async fn remote_servers_cannot_set_power_levels_in_rooms_without_power_levels() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let bob = a.register("bob", "pw-bob-12345").await;
    let origin = Origin::start().await;
    let room_id = origin.host_room("11", "creator", false);
    let (status, answer) = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    synced_join(&a, &bob, &room_id).await;

    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room_id));
    let attempt = a.put(&path, bob.token(), json!({"ban": 50, "users": {bob.user_id.clone(): 1000}})).await;
    assert_error(&attempt, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = a.get(&path, bob.token()).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let sent = origin.seen("/_matrix/federation/v1/send/");
    assert!(
        sent.iter().all(|r| !String::from_utf8_lossy(&r.body).contains("m.room.power_levels")),
        "a power levels event was sent to the origin"
    );
}

/// Sytest "Remote servers should reject attempts by non-creators to set the power levels": in
/// a room the origin hosts without power levels, where the origin's users creator and other
/// joined, Bob's server sees other's membership and no power levels. other's power levels event
/// (giving himself 100) sent over federation is rejected; the creator's is accepted.
#[tokio::test]
async fn non_creators_cannot_set_the_power_levels() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let bob = a.register("bob", "pw-bob-12345").await;
    let origin = Origin::start().await;
    let room_id = origin.host_room("11", "creator", false);
    let (creator, other) = (format!("@creator:{}", origin.name), format!("@other:{}", origin.name));
    origin.host_event(&room_id, "m.room.member", Some(&other), &other, json!({"membership": "join"}));
    let (status, answer) = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    synced_join(&a, &bob, &room_id).await;
    let state_path =
        |kind: &str, key: &str| format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(&room_id), enc(key));
    let (status, member) = a.get(&state_path("m.room.member", &other), bob.token()).await;
    assert_eq!((status, member["membership"].as_str()), (StatusCode::OK, Some("join")), "{member}");
    let none = a.get(&state_path("m.room.power_levels", ""), bob.token()).await;
    assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let grab =
        origin.host_build(&room_id, "m.room.power_levels", Some(""), &other, json!({"users": {other.clone(): 100}}));
    let (status, answer) = origin.send(&a, "grab", &[&grab]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["pdus"][&grab.id].get("error").is_some(), "other's power levels accepted: {answer}");
    let none = a.get(&state_path("m.room.power_levels", ""), bob.token()).await;
    assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let levels = json!({"users": {creator.clone(): 100, other.clone(): 50}});
    let proper = origin.host_event(&room_id, "m.room.power_levels", Some(""), &creator, levels);
    let (status, answer) = origin.send(&a, "proper", &[&proper]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][&proper.id], json!({}), "the creator's power levels refused: {answer}");
    let (status, current) = a.get(&state_path("m.room.power_levels", ""), bob.token()).await;
    assert_eq!((status, &current["users"][&other]), (StatusCode::OK, &json!(50)), "{current}");
}
