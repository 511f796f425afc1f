//! Attempts to take over a room's power levels through the state another server reports.

use serde_json::json;
use spec_tests::StatusCode;

use super::hostile::{setup, state};
use super::origin::{Draft, enc};

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
