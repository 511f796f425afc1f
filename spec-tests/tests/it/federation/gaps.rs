//! Events after a gap in the server's copy of a room: the state before such an event is taken
//! from its origin (`/state_ids`, then `/event` for what the server lacks). The answer may be
//! incomplete or name events that must not count; what the server makes of it shows in the
//! event's acceptance and the room's state.

use serde_json::{Value, json};
use spec_tests::StatusCode;

use super::hostile::{assert_accepted, assert_not_found, event, ids, public_room, setup, state, timeline};
use super::origin::{Draft, Joined, Origin, Pdu, enc};

/// Mallory's member event in `room` with `content`, authorised by `member` (her current
/// membership) and the room's create, power levels and join rules.
fn member_update(origin: &Origin, room: &Joined, content: Value, member: &str) -> Pdu {
    let auth = vec![room.create.clone(), room.power_levels.clone(), room.join_rules.clone(), member.to_owned()];
    origin.event(room, Draft::of("m.room.member", Some(room.user.as_str()), content).auth(auth))
}

/// The room's state after the join, with Mallory's member event replaced by `member`, and
/// `extra` events.
fn state_with(room: &Joined, member: &str, extra: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = room.state.iter().filter(|id| **id != room.join).cloned().collect();
    ids.push(member.to_owned());
    ids.extend(extra.iter().map(|id| (*id).to_owned()));
    ids
}

/// Sytest "Federation handles empty auth_events in state_ids sanely": Mallory renames herself
/// twice (T, then S authorised by T) and sends a message H and then E, all of which the
/// server misses but E. Asked for the state before E her server names S among it and an empty
/// auth chain. The server fetches S, and T which S needs, and accepts E with S in the state
/// before it.
#[tokio::test]
async fn an_empty_auth_chain_in_a_reported_state_is_filled_in() {
    let (a, alice, origin, mut room) = setup("11").await;
    let t = member_update(&origin, &room, json!({"membership": "join", "displayname": "T"}), &room.join);
    room.advance(&t);
    let s = member_update(&origin, &room, json!({"membership": "join", "displayname": "S"}), &t.id);
    room.advance(&s);
    let h = origin.event(&room, Draft::message("never served"));
    room.advance(&h);
    let e = origin.event(&room, Draft::message("after a gap"));

    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": []}));
    origin.serve(
        "/_matrix/federation/v1/state_ids/",
        json!({"pdu_ids": state_with(&room, &s.id, &[]), "auth_chain_ids": []}),
    );
    origin.serve_event(&s);
    origin.serve_event(&t);
    let (status, answer) = origin.send(&a, "empty-chain", &[&e]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(!origin.seen("/_matrix/federation/v1/state_ids/").is_empty(), "the origin was not asked for the state");
    assert_accepted(&answer, &e);
    assert!(origin.asked_for_event(&s.id) && origin.asked_for_event(&t.id), "S and T were not both fetched");
    assert!(ids(&timeline(&a, &alice, &room.room_id).await).contains(&e.id.as_str()), "E is not in the timeline");
    // The state before E, as this server now serves it, holds S.
    let path = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room.room_id), enc(&e.id));
    let (status, at_e) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{at_e}");
    assert!(at_e["pdu_ids"].as_array().unwrap().contains(&json!(s.id)), "S is not in the state before E: {at_e}");
}

/// Sytest "outliers whose auth_events are in a different room are correctly rejected": Alice
/// gives Mallory power in one room; in another (where she has none) Mallory's server reports,
/// for the state before an event E after a gap, a room name N whose auth events are those of
/// the first room (there N would be allowed). N is fetched and rejected: it is not served to
/// other servers and not part of the state; E, allowed without it, is accepted, and the room
/// keeps its name.
#[tokio::test]
async fn an_outlier_authorised_by_another_room_is_rejected() {
    let (a, alice, origin, elsewhere) = setup("11").await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&elsewhere.room_id));
    let (status, mut levels) = a.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    levels["users"][&elsewhere.user] = json!(100);
    let (status, sent) = a.put(&path, alice.token(), levels).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let mighty = sent["event_id"].as_str().unwrap().to_owned();

    let room_id = public_room(&a, &alice, "11").await;
    let mut room = origin.join(&a, &room_id, "mallory", "11").await;
    let borrowed = vec![elsewhere.create.clone(), mighty, elsewhere.join.clone()];
    let name = origin.event(&room, Draft::of("m.room.name", Some(""), json!({"name": "hijacked"})).auth(borrowed));
    room.advance(&name);
    let h = origin.event(&room, Draft::message("never served"));
    room.advance(&h);
    let e = origin.event(&room, Draft::message("after a gap"));

    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": []}));
    origin.serve(
        "/_matrix/federation/v1/state_ids/",
        json!({"pdu_ids": state_with(&room, &room.join, &[&name.id]), "auth_chain_ids": []}),
    );
    origin.serve_event(&name);
    let (status, answer) = origin.send(&a, "borrowed-auth", &[&e]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(origin.asked_for_event(&name.id), "N was not fetched");
    assert_accepted(&answer, &e);
    assert!(ids(&timeline(&a, &alice, &room_id).await).contains(&e.id.as_str()), "E is not in the timeline");
    assert_eq!(state(&a, &alice, &room_id, "m.room.name", "").await["name"], "shared");
    let (status, served) =
        origin.request(&a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(&name.id)), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the rejected outlier is served: {served}");
    let path = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room_id), enc(&e.id));
    let (status, at_e) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{at_e}");
    assert!(!at_e["pdu_ids"].to_string().contains(&name.id), "N is in the state before E: {at_e}");
}

/// Sytest "Outbound federation will ignore a missing event with bad JSON for room version 6":
/// in a room version 11 room, Mallory sends M2 whose predecessor M1 holds a float; the server
/// asks for M1 with `/get_missing_events` and the answer's M1 is dropped, never stored. M2,
/// whose predecessor cannot be had, does not enter the room either; the room goes on with
/// Mallory's next message built on what the server holds.
#[tokio::test]
async fn a_missing_event_with_invalid_json_is_ignored() {
    let (a, alice, origin, mut room) = setup("11").await;
    let mut m1 = serde_json::to_value(Draft::message("Message 1").build(&room)).unwrap();
    m1["content"]["bad_val"] = json!(1.1);
    let m1 = origin.sign_noncanonical(m1, &room.rules);
    let before = room.clone();
    room.advance(&m1);
    let m2 = origin.event(&room, Draft::message("Message 2"));

    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": [m1.json]}));
    let (status, answer) = origin.send(&a, "bad-missing", &[&m2]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(!origin.seen("/_matrix/federation/v1/get_missing_events/").is_empty(), "M1 was not asked for");
    assert_not_found(&event(&a, &alice, &room.room_id, &m1.id).await, "M1, with a float");
    assert_not_found(&event(&a, &alice, &room.room_id, &m2.id).await, "M2, after M1");

    let m3 = origin.event(&before, Draft::message("Message 3"));
    let (status, answer) = origin.send(&a, "after-bad-missing", &[&m3]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &m3);
    let bodies: Vec<Value> =
        timeline(&a, &alice, &room.room_id).await.iter().map(|e| e["content"]["body"].clone()).collect();
    assert!(bodies.contains(&json!("Message 3")) && !bodies.contains(&json!("Message 1")), "{bodies:?}");
}
