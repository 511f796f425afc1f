//! The room's forward extremities around events that are not accepted into the timeline: an
//! event allowed by its own history but not by the room's current state (soft-failed) is kept
//! from clients and must not become a predecessor of the server's next event, while the
//! accepted events beside it must; nor must events kept only as outliers. A soft-failed event
//! keeps its state (served by `/state` and `/state_ids`) and takes a redaction received before it.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer};

use super::hostile::{assert_accepted, ids, setup, timeline};
use super::origin::{Draft, Joined, Origin, Pdu, enc};

/// Alice raises the power needed for `test.sf` events to 50 (Mallory has 0); the new power
/// levels event's id.
async fn block_sf_events(a: &TestServer, alice: &Account, room: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(room));
    let (status, mut levels) = a.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    levels["events"]["test.sf"] = json!(50);
    let (status, sent) = a.put(&path, alice.token(), levels).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    sent["event_id"].as_str().unwrap().to_owned()
}

/// Mallory's `kind` event on `prev`, authorised by the state of her join (before the block).
fn on(origin: &Origin, room: &Joined, kind: &str, body: &str, prev: &Pdu) -> Pdu {
    origin.event(room, Draft::of(kind, None, json!({"body": body})).prev(vec![prev.id.clone()]))
}

/// Sends one PDU in its own transaction and checks the server took it without an error
/// (soft failure is no error for the sender).
async fn deliver(a: &TestServer, origin: &Origin, txn: &str, pdu: &Pdu) {
    let (status, answer) = origin.send(a, txn, &[pdu]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, pdu);
}

/// Alice sends a message; the `prev_events` of its PDU as another server gets it, sorted.
async fn prev_events_of_next_message(a: &TestServer, alice: &Account, origin: &Origin, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/m3", enc(room));
    let (status, sent) = a.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "M3"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let id = sent["event_id"].as_str().unwrap();
    let (status, pdu) = origin.request(a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(id)), None).await;
    assert_eq!(status, StatusCode::OK, "{pdu}");
    let mut prev: Vec<String> = serde_json::from_value(pdu["pdus"][0]["prev_events"].clone()).unwrap();
    prev.sort();
    prev
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn bodies(seen: &[Value]) -> Vec<&str> {
    seen.iter().filter_map(|e| e["content"]["body"].as_str()).collect()
}

/// Sytest "Inbound federation accepts a second soft-failed event": after Alice blocks
/// `test.sf` events (PL1), Mallory sends a message M1 on her join (a fork beside PL1, accepted)
/// and two `test.sf` events on M1, both soft-failed. M1 and PL1 are the room's extremities:
/// Alice's next message names exactly them as predecessors; the soft-failed events are hidden.
#[tokio::test]
async fn a_second_soft_failed_event_is_accepted_and_the_extremities_kept() {
    let (a, alice, origin, room) = setup("11").await;
    let join = Pdu { id: room.join.clone(), json: Value::Null };
    let pl1 = block_sf_events(&a, &alice, &room.room_id).await;

    let m1 = on(&origin, &room, "m.room.message", "M1", &join);
    deliver(&a, &origin, "m1", &m1).await;
    let after_m1 = Joined { depth: room.depth + 1, ..room.clone() };
    let sf1 = on(&origin, &after_m1, "test.sf", "SF1", &m1);
    deliver(&a, &origin, "sf1", &sf1).await;
    let sf2 = on(&origin, &after_m1, "test.sf", "SF2", &m1);
    deliver(&a, &origin, "sf2", &sf2).await;

    let seen = timeline(&a, &alice, &room.room_id).await;
    assert!(ids(&seen).contains(&m1.id.as_str()), "M1 is not shown: {seen:?}");
    let shown = bodies(&seen);
    assert!(!shown.contains(&"SF1") && !shown.contains(&"SF2"), "a soft-failed event is shown: {shown:?}");
    assert_eq!(prev_events_of_next_message(&a, &alice, &origin, &room.room_id).await, sorted(vec![pl1, m1.id.clone()]));
}

/// Sytest "Inbound federation correctly handles soft failed events as extremities": as above,
/// but SF2 follows SF1, and then Mallory sends M2 on PL1 and SF2 (allowed by the current
/// state). The soft-failed events are known with their state (the origin is asked for no
/// missing events and no state). M2 replaces M1 and PL1 as the room's only extremity: Alice's
/// next message names M2 alone.
#[tokio::test]
async fn an_event_after_soft_failed_events_becomes_the_only_extremity() {
    let (a, alice, origin, room) = setup("11").await;
    let join = Pdu { id: room.join.clone(), json: Value::Null };
    let pl1 = block_sf_events(&a, &alice, &room.room_id).await;

    let m1 = on(&origin, &room, "m.room.message", "M1", &join);
    deliver(&a, &origin, "m1", &m1).await;
    let mut chain = Joined { depth: room.depth + 1, ..room.clone() };
    let sf1 = on(&origin, &chain, "test.sf", "SF1", &m1);
    deliver(&a, &origin, "sf1", &sf1).await;
    chain.depth += 1;
    let sf2 = on(&origin, &chain, "test.sf", "SF2", &sf1);
    deliver(&a, &origin, "sf2", &sf2).await;
    chain.depth += 2;
    let mut auth = chain.auth();
    auth[1].clone_from(&pl1);
    let m2 = origin.event(&chain, Draft::message("M2").prev(vec![pl1.clone(), sf2.id.clone()]).auth(auth));
    deliver(&a, &origin, "m2", &m2).await;
    // The soft-failed events are known with their state: no gap to fill.
    for asked in ["/_matrix/federation/v1/get_missing_events/", "/_matrix/federation/v1/state_ids/"] {
        assert!(origin.seen(asked).is_empty(), "the origin was asked {asked}");
    }

    let seen = timeline(&a, &alice, &room.room_id).await;
    assert!(ids(&seen).contains(&m2.id.as_str()) && ids(&seen).contains(&m1.id.as_str()), "{seen:?}");
    let shown = bodies(&seen);
    assert!(!shown.contains(&"SF1") && !shown.contains(&"SF2"), "a soft-failed event is shown: {shown:?}");
    assert_eq!(prev_events_of_next_message(&a, &alice, &origin, &room.room_id).await, vec![m2.id.clone()]);
}

/// Sytest "Forward extremities remain so even after the next events are populated as
/// outliers": Mallory (given power by Alice: B) sends E from a user who never joined, after D
/// of the same user, after C, her own state event. Asked for the missing events her server
/// gives D; asked for the state before E, the state with C, which is fetched and kept as an
/// outlier. D and E are not accepted, and B stays the room's only extremity: another join's
/// template (`/make_join`) names B alone.
#[tokio::test]
async fn extremities_stay_when_the_next_events_are_only_outliers() {
    let (a, alice, origin, mut room) = setup("11").await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room.room_id));
    let (status, mut levels) = a.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    levels["users"][&room.user] = json!(100);
    let (status, sent) = a.put(&path, alice.token(), levels).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let b = sent["event_id"].as_str().unwrap().to_owned();

    let fake = format!("@fake_user:{}", origin.name);
    let mut auth = room.auth();
    auth[1].clone_from(&b);
    room.depth += 1;
    let c = origin
        .event(&room, Draft::of("test_state", Some("C"), json!({"body": "event_c"})).prev(vec![b.clone()]).auth(auth));
    room.advance(&c);
    let d = origin.event(&room, Draft::message("event_d").sender(&fake));
    room.advance(&d);
    let e = origin.event(&room, Draft::message("event_e").sender(&fake));
    let mut state_before_c: Vec<String> = room.state.clone();
    state_before_c.retain(|id| *id != room.power_levels);
    state_before_c.extend([b.clone(), c.id.clone()]);
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": [d.json]}));
    origin.serve(
        "/_matrix/federation/v1/state_ids/",
        json!({"pdu_ids": state_before_c, "auth_chain_ids": c.json["auth_events"]}),
    );
    origin.serve(
        "/_matrix/federation/v1/event/",
        json!({"origin": origin.name, "origin_server_ts": 0, "pdus": [c.json]}),
    );
    let (status, answer) = origin.send(&a, "outliers", &[&e]).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert!(answer["pdus"][&e.id].get("error").is_some(), "E was accepted: {answer}");
    assert!(!origin.seen("/_matrix/federation/v1/get_missing_events/").is_empty(), "no /get_missing_events");

    let seen = timeline(&a, &alice, &room.room_id).await;
    assert_eq!(ids(&seen)[0], b, "B is no longer the latest event: {seen:?}");
    let (join, _) = origin.signed_join(&a, &room.room_id, "late", "11").await;
    assert_eq!(join.json["prev_events"], json!([b]), "{}", join.json);
}

/// Which redaction the server applied to the event `id` (the `events.redacted_by` it stored):
/// a soft-failed event is shown to nobody, so its redaction is read where it is kept.
pub(crate) async fn stored_redaction(a: &TestServer, id: &str) -> Option<String> {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&a.database_url).await.expect("connecting to the test database");
    sqlx::query_scalar("SELECT redacted_by FROM events WHERE event_id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .expect("the event is stored")
}

/// A soft-failed event keeps the state before it: `/state_ids` and `/state` at it answer that
/// state (Mallory's join and the power levels before Alice blocked `test.sf`, not the block),
/// as at a timeline event. And a redaction received before it applies to it: Mallory's
/// server redacts SF (after the block) before sending SF, which is then soft-failed and kept
/// redacted by that redaction.
#[tokio::test]
async fn a_soft_failed_event_has_its_state_served_and_takes_an_earlier_redaction() {
    let (a, alice, origin, room) = setup("11").await;
    let join = Pdu { id: room.join.clone(), json: Value::Null };
    let pl1 = block_sf_events(&a, &alice, &room.room_id).await;
    let m1 = on(&origin, &room, "m.room.message", "M1", &join);
    deliver(&a, &origin, "m1", &m1).await;
    let after_m1 = Joined { depth: room.depth + 1, ..room.clone() };
    let sf = on(&origin, &after_m1, "test.sf", "SF", &m1);
    let redaction = origin
        .event(&after_m1, Draft::of("m.room.redaction", None, json!({"redacts": sf.id})).prev(vec![m1.id.clone()]));
    deliver(&a, &origin, "redaction", &redaction).await;
    assert_eq!(stored_redaction(&a, &redaction.id).await, None);
    deliver(&a, &origin, "sf", &sf).await;
    assert_eq!(stored_redaction(&a, &sf.id).await, Some(redaction.id.clone()), "the earlier redaction was not applied");

    let path = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room.room_id), enc(&sf.id));
    let (status, ids_at) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "/state_ids at a soft-failed event: {ids_at}");
    let state: Vec<String> = serde_json::from_value(ids_at["pdu_ids"].clone()).unwrap();
    assert!(state.contains(&room.join) && state.contains(&room.power_levels), "{ids_at}");
    assert!(!state.contains(&pl1) && !state.contains(&sf.id), "{ids_at}");
    let path = format!("/_matrix/federation/v1/state/{}?event_id={}", enc(&room.room_id), enc(&sf.id));
    let (status, at) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "/state at a soft-failed event: {at}");
    assert_eq!(at["pdus"].as_array().map(Vec::len), Some(state.len()), "{at}");
    assert!(!at["auth_chain"].as_array().unwrap().is_empty(), "{at}");
}
