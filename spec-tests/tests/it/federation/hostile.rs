//! Hostile input against the inbound federation pipeline: a fake origin whose user joined a
//! real server's room sends crafted PDUs in `/send` transactions, and the real server's
//! answers and its client API show what it made of them.

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

use super::origin::{Draft, Joined, Origin, Pdu, enc, now_ms};

/// A real server with Alice and her public room of `version`, and a fake origin whose user
/// Mallory joined it.
pub(crate) async fn setup(version: &str) -> (TestServer, Account, Origin, Joined) {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    let room = public_room(&a, &alice, version).await;
    let joined = origin.join(&a, &room, "mallory", version).await;
    (a, alice, origin, joined)
}

pub(crate) async fn public_room(a: &TestServer, alice: &Account, version: &str) -> String {
    let body = json!({"preset": "public_chat", "room_version": version, "name": "shared"});
    let (status, answer) = a.post("/_matrix/client/v3/createRoom", alice.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["room_id"].as_str().unwrap().to_owned()
}

/// `/rooms/{room}/event/{id}` as `who` sees it.
pub(crate) async fn event(a: &TestServer, who: &Account, room: &str, id: &str) -> (StatusCode, Value) {
    a.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id)), who.token()).await
}

#[track_caller]
pub(crate) fn assert_not_found(result: &(StatusCode, Value), what: &str) {
    assert_eq!(result.0, StatusCode::NOT_FOUND, "{what} is visible: {}", result.1);
}

/// The room's latest events as `who` sees them (newest first).
pub(crate) async fn timeline(a: &TestServer, who: &Account, room: &str) -> Vec<Value> {
    let (status, answer) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(room)), who.token()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["chunk"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn ids(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["event_id"].as_str()).collect()
}

pub(crate) async fn state(a: &TestServer, who: &Account, room: &str, kind: &str, key: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(room), enc(key));
    let (status, answer) = a.get(&path, who.token()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// The per-PDU result of `pdu` in a `/send` answer: `Ok` or the error.
#[track_caller]
pub(crate) fn result_of(answer: &Value, pdu: &Pdu) -> Result<(), String> {
    match &answer["pdus"][&pdu.id] {
        Value::Object(o) if o.is_empty() => Ok(()),
        Value::Object(o) => Err(o.get("error").and_then(Value::as_str).unwrap_or("(no error text)").to_owned()),
        other => panic!("no result for {}: {other}; answer {answer}", pdu.id),
    }
}

#[track_caller]
pub(crate) fn assert_accepted(answer: &Value, pdu: &Pdu) {
    assert_eq!(result_of(answer, pdu), Ok(()), "{answer}");
}

#[track_caller]
pub(crate) fn assert_refused(answer: &Value, pdu: &Pdu) {
    assert!(result_of(answer, pdu).is_err(), "{} was accepted: {answer}", pdu.id);
}

/// A PDU signed by another key than the origin's, and PDUs whose sender belongs to the real
/// server or to a third server but that only the origin signed, are refused and not stored;
/// a properly signed PDU in the same transaction is accepted. Room versions 11 and 12.
#[tokio::test]
async fn pdus_not_signed_by_their_senders_server_are_refused() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    for version in ["11", "12"] {
        let room_id = public_room(&a, &alice, version).await;
        let room = origin.join(&a, &room_id, "mallory", version).await;
        let good = origin.event(&room, Draft::message("signed properly"));
        let forged_key = origin.sign_with(&origin.forger, Draft::message("another key").build(&room), &room.rules);
        let as_alice = origin.event(&room, Draft::message("I am alice").sender(&alice.user_id));
        // Nothing listens on port 1: the third server's keys cannot be had, and the origin's
        // signature does not stand in for them.
        let as_third = origin.event(&room, Draft::message("I am eve").sender("@eve:127.0.0.1:1"));
        let (status, answer) =
            origin.send(&a, &format!("sig{version}"), &[&good, &forged_key, &as_alice, &as_third]).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}\n{}", a.log());
        assert_accepted(&answer, &good);
        assert_eq!(event(&a, &alice, &room_id, &good.id).await.0, StatusCode::OK);
        for (pdu, what) in [(&forged_key, "a wrong signature"), (&as_alice, "alice forged"), (&as_third, "eve forged")]
        {
            assert_refused(&answer, pdu);
            assert_not_found(&event(&a, &alice, &room_id, &pdu.id).await, what);
        }
        let bodies: Vec<Value> =
            timeline(&a, &alice, &room_id).await.iter().map(|e| e["content"]["body"].clone()).collect();
        assert!(!bodies.contains(&json!("I am alice")) && !bodies.contains(&json!("another key")), "{bodies:?}");
    }
}

/// A PDU whose content does not match its content hash (but whose signature is good) is kept
/// in redacted form: the spec's rule. A state event so changed keeps only what redaction keeps.
#[tokio::test]
async fn a_pdu_whose_content_does_not_match_its_hash_is_stored_redacted() {
    let (a, alice, origin, mut room) = setup("11").await;
    let signed = origin.event(&room, Draft::message("what was signed"));
    let tampered = signed.with_content(json!({"msgtype": "m.text", "body": "what was sent"}));
    let (status, answer) = origin.send(&a, "hash1", &[&tampered]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &tampered);
    room.advance(&tampered);
    let (status, stored) = event(&a, &alice, &room.room_id, &tampered.id).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(
        (stored["type"].as_str(), stored["sender"].as_str()),
        (Some("m.room.message"), Some(room.user.as_str()))
    );
    assert_eq!(stored["content"], json!({}), "{stored}");
    let seen = timeline(&a, &alice, &room.room_id).await;
    let in_timeline = seen.iter().find(|e| e["event_id"] == tampered.id.as_str()).expect("in the timeline");
    assert_eq!(in_timeline["content"], json!({}));

    // Mallory's own member event with a display name not covered by the hash: the membership
    // (which redaction keeps) stays, the name goes.
    let key = room.user.clone();
    let mut auth = room.auth();
    auth.push(room.join_rules.clone());
    let content = json!({"membership": "join", "displayname": "signed"});
    let renamed = origin
        .event(&room, Draft::of("m.room.member", Some(&key), content).auth(auth))
        .with_content(json!({"membership": "join", "displayname": "Alice (admin)"}));
    let (_, answer) = origin.send(&a, "hash2", &[&renamed]).await;
    assert_accepted(&answer, &renamed);
    let member = state(&a, &alice, &room.room_id, "m.room.member", &key).await;
    assert_eq!(member, json!({"membership": "join"}));
}

/// PDUs that fail the auth rules (Mallory, at power 0, raising her power, renaming the room,
/// kicking Alice) are rejected: an error per PDU, the state unchanged, nothing shown. A
/// redaction of Alice's message by Mallory passes the auth rules but is not applied.
#[tokio::test]
async fn pdus_failing_the_auth_rules_are_rejected() {
    let (a, alice, origin, mut room) = setup("11").await;
    let powers = json!({"users": {alice.user_id.clone(): 100, room.user.clone(): 100}, "state_default": 50});
    let power_grab = origin.event(&room, Draft::of("m.room.power_levels", Some(""), powers));
    let rename = origin.event(&room, Draft::of("m.room.name", Some(""), json!({"name": "hijacked"})));
    let kick = origin.event(&room, Draft::of("m.room.member", Some(&alice.user_id), json!({"membership": "leave"})));
    let fine = origin.event(&room, Draft::message("allowed"));
    let (status, answer) = origin.send(&a, "auth1", &[&power_grab, &rename, &kick, &fine]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &fine);
    for pdu in [&power_grab, &rename, &kick] {
        assert_refused(&answer, pdu);
        assert_not_found(&event(&a, &alice, &room.room_id, &pdu.id).await, "a rejected event");
    }
    room.advance(&fine);
    let seen = timeline(&a, &alice, &room.room_id).await;
    assert!(ids(&seen).contains(&fine.id.as_str()));
    for pdu in [&power_grab, &rename, &kick] {
        assert!(!ids(&seen).contains(&pdu.id.as_str()), "{} is in the timeline", pdu.id);
    }
    // Nor are they served to other servers.
    let path = format!("/_matrix/federation/v1/event/{}", enc(&power_grab.id));
    let (status, served) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a rejected event is served: {served}");
    for endpoint in ["state", "state_ids"] {
        for pdu in [&power_grab, &rename] {
            let path = format!("/_matrix/federation/v1/{endpoint}/{}?event_id={}", enc(&room.room_id), enc(&pdu.id));
            let (status, served) = origin.request(&a, "GET", &path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "/{endpoint} at a rejected event: {served}");
            assert_eq!(served["errcode"], "M_NOT_FOUND", "{served}");
        }
    }
    let levels = state(&a, &alice, &room.room_id, "m.room.power_levels", "").await;
    assert!(levels["users"].get(&room.user).is_none(), "{levels}");
    assert_eq!(state(&a, &alice, &room.room_id, "m.room.name", "").await["name"], "shared");
    let members =
        a.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room.room_id)), alice.token()).await;
    assert!(members.1["joined"].get(&alice.user_id).is_some(), "{}", members.1);

    // Alice says something; Mallory redacts it.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&room.room_id));
    let (status, sent) = a.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "alice's words"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let target = sent["event_id"].as_str().unwrap().to_owned();
    let redaction =
        origin.event(&room, Draft::of("m.room.redaction", None, json!({"redacts": target})).prev(vec![target.clone()]));
    let (_, answer) = origin.send(&a, "auth2", &[&redaction]).await;
    // The auth rules of room versions 3 and later let it in; the server must not apply it.
    assert_accepted(&answer, &redaction);
    let (status, original) = event(&a, &alice, &room.room_id, &target).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(original["content"]["body"], "alice's words", "Mallory's redaction was applied: {original}");
    // Her own message she may redact.
    room.advance(&redaction);
    let own = origin.event(&room, Draft::of("m.room.redaction", None, json!({"redacts": fine.id})));
    let (_, answer) = origin.send(&a, "auth3", &[&own]).await;
    assert_accepted(&answer, &own);
    let (status, redacted) = event(&a, &alice, &room.room_id, &fine.id).await;
    assert_eq!((status, &redacted["content"]), (StatusCode::OK, &json!({})), "{redacted}");
}

/// More than 50 PDUs (or 100 EDUs) in a transaction: 400 and nothing stored. A retried
/// transaction id gets the first answer again and its PDUs are not processed again.
#[tokio::test]
async fn transaction_bounds_and_retries() {
    let (a, alice, origin, mut room) = setup("11").await;
    let many: Vec<Pdu> = (0..51).map(|i| origin.event(&room, Draft::message(&format!("flood {i}")))).collect();
    let (status, answer) = origin.send(&a, "flood", &many.iter().collect::<Vec<_>>()).await;
    assert_eq!((status, answer["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")), "{answer}");
    assert_not_found(&event(&a, &alice, &room.room_id, &many[0].id).await, "a PDU of a refused transaction");
    let edus: Vec<Value> = (0..101).map(|_| json!({"edu_type": "m.typing", "content": {}})).collect();
    let body = json!({"origin": origin.name, "origin_server_ts": now_ms(), "pdus": [many[0].json], "edus": edus});
    let (status, answer) = origin.request(&a, "PUT", "/_matrix/federation/v1/send/edus", Some(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_not_found(&event(&a, &alice, &room.room_id, &many[0].id).await, "a PDU of a refused transaction");
    assert!(!timeline(&a, &alice, &room.room_id).await.iter().any(|e| e["content"]["body"] == "flood 0"));

    // Garbage among the PDUs: dropped, without an answer for it; the good PDU passes.
    let good = origin.event(&room, Draft::message("among garbage"));
    let mut elsewhere = origin.event(&room, Draft::message("another room")).json;
    elsewhere["room_id"] = json!(format!("!nowhere:{}", origin.name));
    let mut no_sender = good.json.clone();
    no_sender.as_object_mut().unwrap().remove("sender");
    no_sender["content"]["body"] = json!("no sender");
    let pdus = json!([42, "text", [], {}, {"room_id": room.room_id}, elsewhere, no_sender, good.json]);
    let body = json!({"origin": origin.name, "origin_server_ts": now_ms(), "pdus": pdus, "edus": []});
    let (status, answer) = origin.request(&a, "PUT", "/_matrix/federation/v1/send/garbage", Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert_accepted(&answer, &good);
    room.advance(&good);
    // A body that is not a transaction: 400.
    let (status, answer) =
        origin.request(&a, "PUT", "/_matrix/federation/v1/send/broken", Some(&json!({"pdus": "many"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["errcode"].as_str().is_some_and(|c| c == "M_BAD_JSON" || c == "M_NOT_JSON"), "{answer}");

    // The same transaction id again, now with another PDU: the first answer, nothing new.
    let once = origin.event(&room, Draft::message("once"));
    let refused = origin.event(&room, Draft::of("m.room.name", Some(""), json!({"name": "x"})));
    let (status, first) = origin.send(&a, "retry", &[&once, &refused]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_accepted(&first, &once);
    assert_refused(&first, &refused);
    room.advance(&once);
    let later = origin.event(&room, Draft::message("sneaked into a retry"));
    let (status, again) = origin.send(&a, "retry", &[&once, &refused, &later]).await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    assert_not_found(&event(&a, &alice, &room.room_id, &later.id).await, "a PDU of a retried transaction");
    let onces = timeline(&a, &alice, &room.room_id).await.iter().filter(|e| e["content"]["body"] == "once").count();
    assert_eq!(onces, 1);

    // The same PDU ten times in one transaction (Sytest "Server correctly handles transactions
    // that break edu limits", beside the 51 PDUs above): accepted once.
    let tenfold = origin.event(&room, Draft::message("tenfold"));
    let (status, answer) = origin.send(&a, "tenfold", &[&tenfold; 10]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &tenfold);
    room.advance(&tenfold);
    let copies = timeline(&a, &alice, &room.room_id).await.iter().filter(|e| e["content"]["body"] == "tenfold").count();
    assert_eq!(copies, 1);
}

/// A PDU after events the server has not seen: the server fetches them from the origin with
/// `/get_missing_events` and accepts them in order. A PDU whose auth event nobody can serve,
/// and one whose predecessors nobody serves, are not accepted.
#[tokio::test]
async fn missing_predecessors_are_fetched_and_unknown_auth_events_refused() {
    let (a, alice, origin, mut room) = setup("11").await;
    let first = origin.event(&room, Draft::message("first, held back"));
    room.advance(&first);
    let second = origin.event(&room, Draft::message("second"));
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": [first.json]}));
    let (status, answer) = origin.send(&a, "gap1", &[&second]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &second);
    room.advance(&second);
    let asked = origin.peer.seen().iter().any(|r| r.method == "POST" && r.path.contains("/get_missing_events/"));
    assert!(asked, "the origin was not asked for the missing events");
    let seen = timeline(&a, &alice, &room.room_id).await;
    let order = ids(&seen);
    let (at_first, at_second) = (order.iter().position(|i| *i == first.id), order.iter().position(|i| *i == second.id));
    assert!(at_first.is_some() && at_second < at_first, "newest first: {order:?}");
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": []}));

    // An auth event nobody knows (the origin's /event_auth answers 404).
    let mut auth = room.auth();
    auth.push(format!("${}", "A".repeat(43)));
    let unknown_auth = origin.event(&room, Draft::message("unknown auth").auth(auth));
    // A predecessor the origin does not serve either.
    let orphan = origin.event(&room, Draft::message("orphan").prev(vec![format!("${}", "B".repeat(43))]));
    let (status, answer) = origin.send(&a, "gap2", &[&unknown_auth, &orphan]).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    for pdu in [&unknown_auth, &orphan] {
        assert_refused(&answer, pdu);
        assert_not_found(&event(&a, &alice, &room.room_id, &pdu.id).await, "an event on unknown events");
    }
}

/// After Alice bans Mallory, a message Mallory builds on an event before the ban is authorised
/// by its own history but not by the current state: soft-failed, hidden from clients. One built
/// after the ban is rejected.
#[tokio::test]
async fn soft_failed_events_are_hidden_from_clients() {
    let (a, alice, origin, mut room) = setup("11").await;
    // A second user of the origin keeps it in the room (and allowed to read it) after the ban.
    let watcher = origin.join(&a, &room.room_id, "watcher", "11").await;
    (room.tip, room.depth) = (watcher.tip.clone(), watcher.depth);
    let before = origin.event(&room, Draft::message("before the ban"));
    let (_, answer) = origin.send(&a, "soft1", &[&before]).await;
    assert_accepted(&answer, &before);
    room.advance(&before);

    let path = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room.room_id));
    let (status, answer) = a.post(&path, alice.token(), json!({"user_id": room.user, "reason": "spam"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ban = timeline(&a, &alice, &room.room_id).await[0]["event_id"].as_str().unwrap().to_owned();

    let late = origin.event(&room, Draft::message("sent as if not banned"));
    room.depth += 1;
    let after = origin.event(&room, Draft::message("sent after the ban").prev(vec![ban.clone()]));
    let (status, answer) = origin.send(&a, "soft2", &[&late, &after]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Soft failure is not an error for the sender; the rejection is.
    assert_accepted(&answer, &late);
    assert_refused(&answer, &after);
    let seen = timeline(&a, &alice, &room.room_id).await;
    assert_eq!(ids(&seen)[0], ban, "the ban stays the latest event: {seen:?}");
    for pdu in [&late, &after] {
        assert!(!ids(&seen).contains(&pdu.id.as_str()), "{} is in the timeline", pdu.id);
        assert_not_found(&event(&a, &alice, &room.room_id, &pdu.id).await, "a soft-failed or rejected event");
    }
    let (status, sync) = a.get("/_matrix/client/v3/sync", alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    let events = &sync["rooms"]["join"][&room.room_id]["timeline"]["events"];
    assert!(!events.to_string().contains(&late.id), "{events}");

    // Alice's next message is not built on the soft-failed event.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t2", enc(&room.room_id));
    let (status, sent) = a.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "after"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let next = sent["event_id"].as_str().unwrap();
    let (status, pdu) = origin.request(&a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(next)), None).await;
    assert_eq!(status, StatusCode::OK, "{pdu}");
    assert_eq!(pdu["pdus"][0]["prev_events"], json!([ban]), "{pdu}");
}

/// A PDU after a gap, with the state before it as its origin reports it (`/state_ids`): an
/// older state (before Alice renamed the room) does not replace the room's current state; it
/// is resolved with it, and Alice's later rename stands.
#[tokio::test]
async fn a_reported_state_after_a_gap_does_not_roll_the_room_back() {
    let (a, alice, origin, mut room) = setup("11").await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room.room_id));
    let (status, answer) = a.put(&path, alice.token(), json!({"name": "renamed"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // Mallory's message after one A never gets, both on the state of her join.
    let hidden = origin.event(&room, Draft::message("never served"));
    room.advance(&hidden);
    let after_gap = origin.event(&room, Draft::message("after a gap"));
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": []}));
    origin.serve("/_matrix/federation/v1/state_ids/", json!({"pdu_ids": room.state, "auth_chain_ids": []}));
    let (status, answer) = origin.send(&a, "gap", &[&after_gap]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        origin.peer.seen().iter().any(|r| r.path.contains("/state_ids/")),
        "the origin was not asked for the state"
    );
    assert_accepted(&answer, &after_gap);
    assert!(ids(&timeline(&a, &alice, &room.room_id).await).contains(&after_gap.id.as_str()));
    assert_eq!(state(&a, &alice, &room.room_id, "m.room.name", "").await["name"], "renamed");
    // Alice's next event builds on both branches' state: the name still stands after it.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&room.room_id));
    let (status, _) = a.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "still here"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state(&a, &alice, &room.room_id, "m.room.name", "").await["name"], "renamed");
}

/// The PDUs of one transaction that build on each other, sent in any order, are accepted
/// together: a chain of 46 of Mallory's events (her display-name change and a redaction of
/// one of her own messages among them), sent newest first beside an event that fails the auth
/// rules. The chain is in Alice's timeline in its order, the state change and the redaction
/// applied, the rejected event nowhere; the room goes on from the chain's end.
#[tokio::test]
async fn a_transaction_of_events_building_on_each_other_is_accepted_in_order() {
    let (a, alice, origin, mut room) = setup("11").await;
    let mallory = room.user.clone();
    let member_auth = vec![room.create.clone(), room.power_levels.clone(), room.join_rules.clone(), room.join.clone()];
    let mut chain: Vec<Pdu> = Vec::new();
    for i in 0..46 {
        let draft = match i {
            20 => {
                Draft::of("m.room.member", Some(&mallory), json!({"membership": "join", "displayname": "Mallory M."}))
                    .auth(member_auth.clone())
            }
            30 => Draft::of("m.room.redaction", None, json!({"redacts": chain[5].id})),
            _ => Draft::message(&format!("run {i}")),
        };
        let pdu = origin.event(&room, draft);
        room.advance(&pdu);
        chain.push(pdu);
    }
    let rename = origin
        .event(&room, Draft::of("m.room.name", Some(""), json!({"name": "hijacked"})).prev(vec![chain[10].id.clone()]));
    let mut sent: Vec<&Pdu> = chain.iter().rev().collect();
    sent.insert(17, &rename);
    let (status, answer) = origin.send(&a, "run1", &sent).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for pdu in &chain {
        assert_accepted(&answer, pdu);
    }
    assert_refused(&answer, &rename);

    let seen = timeline(&a, &alice, &room.room_id).await;
    let chain_ids: Vec<&str> = chain.iter().map(|p| p.id.as_str()).collect();
    let mut in_timeline: Vec<&str> = ids(&seen).into_iter().filter(|id| chain_ids.contains(id)).collect();
    in_timeline.reverse();
    assert_eq!(in_timeline, chain_ids, "the chain is not in the timeline in its order");
    assert!(!ids(&seen).contains(&rename.id.as_str()));
    assert_not_found(&event(&a, &alice, &room.room_id, &rename.id).await, "a rejected event");
    assert_eq!(state(&a, &alice, &room.room_id, "m.room.name", "").await["name"], "shared");
    assert_eq!(state(&a, &alice, &room.room_id, "m.room.member", &mallory).await["displayname"], "Mallory M.");
    let (status, redacted) = event(&a, &alice, &room.room_id, &chain[5].id).await;
    assert_eq!((status, &redacted["content"]), (StatusCode::OK, &json!({})), "{redacted}");

    // The room's head is the chain's end: Alice's next message follows it, and so does Mallory's.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/after-run", enc(&room.room_id));
    let (status, reply) = a.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "after the run"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, stored) = event(&a, &alice, &room.room_id, reply["event_id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    let path = format!("/_matrix/federation/v1/event/{}", enc(reply["event_id"].as_str().unwrap()));
    let (status, served) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{served}");
    assert_eq!(served["pdus"][0]["prev_events"], json!([chain[45].id]), "{served}");
}

/// Events must build on their own room (Sytest "Backfilled events whose prev_events are in a
/// different room do not allow cross-room back-pagination", here for received events, which
/// share the checks with backfilled ones): a PDU whose predecessor, or one of whose auth
/// events, is an event of another room this server holds is rejected and not in the timeline;
/// a proper PDU in the same transaction is accepted.
#[tokio::test]
async fn events_building_on_another_room_are_rejected() {
    let (a, alice, origin, room) = setup("11").await;
    let other_id = public_room(&a, &alice, "11").await;
    let other = origin.join(&a, &other_id, "mallory", "11").await;
    let cross_prev = origin.event(&room, Draft::message("after another room's event").prev(vec![other.tip.clone()]));
    let mut auth = room.auth();
    auth[1] = other.power_levels.clone();
    let cross_auth = origin.event(&room, Draft::message("authorised by another room").auth(auth));
    let fine = origin.event(&room, Draft::message("of this room"));
    let (status, answer) = origin.send(&a, "cross", &[&cross_prev, &cross_auth, &fine]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_refused(&answer, &cross_prev);
    assert_refused(&answer, &cross_auth);
    assert_accepted(&answer, &fine);
    for pdu in [&cross_prev, &cross_auth] {
        assert_not_found(&event(&a, &alice, &room.room_id, &pdu.id).await, "an event built on another room");
    }
    let seen = timeline(&a, &alice, &room.room_id).await;
    assert!(ids(&seen).contains(&fine.id.as_str()));
    assert!(!seen.iter().any(|e| e["room_id"] != room.room_id.as_str()), "{seen:?}");
}

/// Sytest "/$endpoint returns M_NOT_FOUND for an outlier": Mallory renames herself (S) and
/// sends a message E on S; the server only gets E. Asked for the state before E her server
/// names S, which the server fetches and keeps as an outlier. `/state` and `/state_ids` at S
/// answer 404 `M_NOT_FOUND` (its state is unknown); `/event` serves S.
#[tokio::test]
async fn state_at_an_outlier_is_not_found_but_the_outlier_is_served() {
    let (a, _alice, origin, mut room) = setup("11").await;
    let auth = vec![room.create.clone(), room.power_levels.clone(), room.join_rules.clone(), room.join.clone()];
    let content = json!({"membership": "join", "displayname": "outlier"});
    let s = origin.event(&room, Draft::of("m.room.member", Some(room.user.as_str()), content).auth(auth));
    room.advance(&s);
    let e = origin.event(&room, Draft::message("on the outlier"));
    let mut state_before_e: Vec<String> = room.state.iter().filter(|id| **id != room.join).cloned().collect();
    state_before_e.push(s.id.clone());
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": []}));
    origin.serve("/_matrix/federation/v1/state_ids/", json!({"pdu_ids": state_before_e, "auth_chain_ids": []}));
    origin.serve_event(&s);
    let (status, answer) = origin.send(&a, "outlier", &[&e]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &e);
    assert!(origin.asked_for_event(&s.id), "S was not fetched");

    for endpoint in ["state", "state_ids"] {
        let path = format!("/_matrix/federation/v1/{endpoint}/{}?event_id={}", enc(&room.room_id), enc(&s.id));
        let (status, served) = origin.request(&a, "GET", &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "/{endpoint} at an outlier: {served}");
        assert_eq!(served["errcode"], "M_NOT_FOUND", "{served}");
        // At the timeline event after it, the state is known.
        let path = format!("/_matrix/federation/v1/{endpoint}/{}?event_id={}", enc(&room.room_id), enc(&e.id));
        let (status, served) = origin.request(&a, "GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "/{endpoint} at E: {served}");
    }
    let (status, served) =
        origin.request(&a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(&s.id)), None).await;
    assert_eq!(status, StatusCode::OK, "the outlier is not served: {served}");
    assert_eq!(served["pdus"][0]["content"]["displayname"], "outlier", "{served}");
}

/// A transaction with a good message and messages holding a float and an integer beyond 2^53-1
/// in a room version 11 room (the rule holds from version 6 on), signed as Synapse signs such JSON: the transaction is taken (200),
/// the good message is accepted and shows, the others get an error each and are not stored
/// (Sytest "Server discards events with invalid JSON in a version 6 room"; its alternative
/// "Server rejects invalid JSON in a version 6 room", refusing the whole transaction, is
/// Dendrite's behaviour and not the spec's).
#[tokio::test]
async fn pdus_with_invalid_json_are_refused_one_by_one() {
    let (a, alice, origin, room) = setup("11").await;
    let good = origin.event(&room, Draft::message("Good event"));
    let bad = |value: Value| {
        let mut event = serde_json::to_value(Draft::message("Bad event").build(&room)).unwrap();
        event["content"]["bad_val"] = value;
        origin.sign_noncanonical(event, &room.rules)
    };
    let (float, big) = (bad(json!(1.1)), bad(json!(-9_007_199_254_740_992_i64)));
    let (status, answer) = origin.send_noncanonical(&a, "badjson", &[&good, &float, &big]).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert_accepted(&answer, &good);
    for pdu in [&float, &big] {
        assert_refused(&answer, pdu);
        assert_not_found(&event(&a, &alice, &room.room_id, &pdu.id).await, "an event with invalid JSON");
    }
    assert_eq!(event(&a, &alice, &room.room_id, &good.id).await.0, StatusCode::OK);
    let bodies: Vec<Value> =
        timeline(&a, &alice, &room.room_id).await.iter().map(|e| e["content"]["body"].clone()).collect();
    assert!(bodies.contains(&json!("Good event")) && !bodies.contains(&json!("Bad event")), "{bodies:?}");
}
