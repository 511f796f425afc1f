//! Redactions received over federation that must not take effect: one by a user without the
//! right to redact the target (accepted, not applied), and one naming an event of another room
//! (refused). A redaction received before the event it names applies when that event arrives,
//! if it may redact it, also when that event is kept as an outlier. (A redaction naming
//! itself, or two naming each other, cannot be built in room versions 10 and later: an event's
//! id is the hash of its content, `redacts` included.)

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer};

use super::backfill::{join_and_sync, page_back, send, two_servers};
use super::hostile::{assert_accepted, assert_not_found, assert_refused, event, ids, public_room, setup, timeline};
use super::origin::{Draft, Origin, enc};
use crate::sync::{inline_filter, sync};

/// `unsigned.redacted_because.event_id` of `id` as `who` sees it (`None` when not redacted),
/// and its content.
async fn redaction_of(a: &TestServer, who: &Account, room: &str, id: &str) -> (Option<String>, Value) {
    let (status, seen) = event(a, who, room, id).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let because = seen["unsigned"]["redacted_because"]["event_id"].as_str().map(str::to_owned);
    (because, seen["content"].clone())
}

/// Sytest "Inbound federation ignores redactions from invalid servers room > v3": Mallory's
/// server redacts Alice's message. The auth rules let the redaction in (room versions 3 and
/// later leave the check to when it is applied), but it is not applied: before Alice redacts
/// the message herself, and after (her redaction stays the one named). Versions 11 and 12.
#[tokio::test]
async fn redactions_by_a_server_without_the_right_are_not_applied() {
    let a = TestServer::start_with(spec_tests::ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    for version in ["11", "12"] {
        let room_id = public_room(&a, &alice, version).await;
        let mut room = origin.join(&a, &room_id, "mallory", version).await;
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/hello", enc(&room_id));
        let (status, sent) = a.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "Hello"})).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        let target = sent["event_id"].as_str().unwrap().to_owned();

        let fake = origin
            .event(&room, Draft::of("m.room.redaction", None, json!({"redacts": target})).prev(vec![target.clone()]));
        room.advance(&fake);
        let sentinel = origin.event(&room, Draft::message("sentinel one"));
        room.advance(&sentinel);
        let (status, answer) = origin.send(&a, &format!("fake-{version}"), &[&fake, &sentinel]).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}");
        assert_accepted(&answer, &fake);
        assert_accepted(&answer, &sentinel);
        let (because, content) = redaction_of(&a, &alice, &room_id, &target).await;
        assert_eq!(because, None, "v{version}: the fake redaction was applied");
        assert_eq!(content["body"], "Hello", "v{version}: the content changed");

        // Alice redacts it herself.
        let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room_id), enc(&target));
        let (status, redacted) = a.put(&path, alice.token(), json!({"reason": "mine"})).await;
        assert_eq!(status, StatusCode::OK, "{redacted}");
        let real = redacted["event_id"].as_str().unwrap().to_owned();
        let (because, content) = redaction_of(&a, &alice, &room_id, &target).await;
        assert_eq!((because.as_deref(), &content), (Some(real.as_str()), &json!({})), "v{version}");

        // Another fake redaction, after Alice's: hers stays the one named.
        let again = origin
            .event(&room, Draft::of("m.room.redaction", None, json!({"redacts": target})).prev(vec![real.clone()]));
        room.advance(&again);
        let sentinel = origin.event(&room, Draft::message("sentinel two"));
        let (status, answer) = origin.send(&a, &format!("again-{version}"), &[&again, &sentinel]).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_accepted(&answer, &sentinel);
        let (because, _) = redaction_of(&a, &alice, &room_id, &target).await;
        assert_eq!(because.as_deref(), Some(real.as_str()), "v{version}: the second fake redaction replaced hers");
    }
}

/// Sytest "An event which redacts an event in a different room should be ignored": Mallory
/// sends a message in one room, then in another room a redaction naming it. The redaction is
/// refused and is in neither room; the message keeps its content; a message sent after it is
/// accepted. A redaction naming an event the server does not know is accepted: what it
/// names may arrive later.
#[tokio::test]
async fn a_redaction_naming_an_event_of_another_room_is_ignored() {
    let a = TestServer::start_with(spec_tests::ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    let first_id = public_room(&a, &alice, "11").await;
    let second_id = public_room(&a, &alice, "11").await;
    let mut first = origin.join(&a, &first_id, "mallory", "11").await;
    let mut second = origin.join(&a, &second_id, "mallory", "11").await;

    let hi = origin.event(&first, Draft::message("hi"));
    let (_, answer) = origin.send(&a, "hi", &[&hi]).await;
    assert_accepted(&answer, &hi);
    first.advance(&hi);

    let redaction = origin.event(&second, Draft::of("m.room.redaction", None, json!({"redacts": hi.id})));
    let (status, answer) = origin.send(&a, "cross-redaction", &[&redaction]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_refused(&answer, &redaction);
    for room in [&first_id, &second_id] {
        assert_not_found(&event(&a, &alice, room, &redaction.id).await, "the cross-room redaction");
    }
    let sentinel = origin.event(&second, Draft::message("sentinel"));
    let (_, answer) = origin.send(&a, "sentinel", &[&sentinel]).await;
    assert_accepted(&answer, &sentinel);
    second.advance(&sentinel);

    let seen = timeline(&a, &alice, &second_id).await;
    assert!(ids(&seen).contains(&sentinel.id.as_str()), "{seen:?}");
    assert!(!ids(&seen).contains(&redaction.id.as_str()), "the cross-room redaction is shown: {seen:?}");
    let (status, original) = event(&a, &alice, &first_id, &hi.id).await;
    assert_eq!(status, StatusCode::OK, "{original}");
    assert_eq!(original["content"]["body"], "hi", "{original}");
    assert!(original["unsigned"].get("redacted_because").is_none(), "{original}");

    // A redaction of an event nobody here knows: accepted into the timeline.
    let unknown = format!("${}", "U".repeat(43));
    let ahead = origin.event(&second, Draft::of("m.room.redaction", None, json!({"redacts": unknown})));
    let (status, answer) = origin.send(&a, "redacts-unknown", &[&ahead]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &ahead);
    assert!(ids(&timeline(&a, &alice, &second_id).await).contains(&ahead.id.as_str()), "not in the timeline");
}

/// Where an event was seen, its `unsigned.redacted_because.event_id` there (`None` when not
/// redacted) and its content there.
type Seen = (&'static str, Option<String>, Value);

/// How `who` sees the event `id` in `/event`, in `/messages` and in an initial `/sync`.
async fn seen_everywhere(a: &TestServer, who: &Account, room: &str, id: &str) -> Vec<Seen> {
    let pick =
        |e: &Value| (e["unsigned"]["redacted_because"]["event_id"].as_str().map(str::to_owned), e["content"].clone());
    let (status, single) = event(a, who, room, id).await;
    assert_eq!(status, StatusCode::OK, "{id}: {single}");
    let listed = timeline(a, who, room).await;
    let listed =
        listed.iter().find(|e| e["event_id"] == id).unwrap_or_else(|| panic!("{id} not in /messages: {listed:?}"));
    let query = format!("timeout=0&{}", inline_filter(&json!({"room": {"timeline": {"limit": 100}}})));
    let synced = sync(a, who, &query).await;
    let timeline = synced["rooms"]["join"][room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
    let synced = timeline.iter().find(|e| e["event_id"] == id).unwrap_or_else(|| panic!("{id} not in /sync: {synced}"));
    let ((b1, c1), (b2, c2), (b3, c3)) = (pick(&single), pick(listed), pick(synced));
    vec![("/event", b1, c1), ("/messages", b2, c2), ("/sync", b3, c3)]
}

#[track_caller]
fn assert_seen(seen: &[Seen], because: Option<&str>, content: &Value, what: &str) {
    for (endpoint, b, c) in seen {
        assert_eq!((b.as_deref(), c), (because, content), "{what} in {endpoint}");
    }
}

/// A redaction received before the event it names applies when that event arrives (the
/// server checks it on receipt of the target, as for a redaction of a held event): Mallory's
/// server redacts her message M1 before sending it; it redacts M2 before M2 reaches the server
/// as the missing predecessor of a later message (`/get_missing_events`); Alice, who may
/// redact others' events, redacts Mallory's M3 before the server has seen it. Each arrives
/// redacted: no content and `unsigned.redacted_because` naming its redaction in `/event`,
/// `/messages` and `/sync`; the later message keeps its content.
#[tokio::test]
async fn a_redaction_received_before_its_target_applies_when_the_target_arrives() {
    let (a, alice, origin, mut room) = setup("11").await;
    let room_id = room.room_id.clone();

    // M1: its redaction in one transaction, M1 in a later one (both built on the same event).
    let m1 = origin.event(&room, Draft::message("one"));
    let r1 = origin.event(&room, Draft::of("m.room.redaction", None, json!({"redacts": m1.id})));
    let (status, answer) = origin.send(&a, "r1", &[&r1]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &r1);
    assert_not_found(&event(&a, &alice, &room_id, &m1.id).await, "M1 before it was sent");
    let (status, answer) = origin.send(&a, "m1", &[&m1]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &m1);
    room.advance(&m1);

    // M2: its redaction first; then a message after M2, M2 fetched as its missing predecessor.
    let m2 = origin.event(&room, Draft::message("two"));
    let r2 = origin.event(&room, Draft::of("m.room.redaction", None, json!({"redacts": m2.id})));
    let (_, answer) = origin.send(&a, "r2", &[&r2]).await;
    assert_accepted(&answer, &r2);
    room.advance(&m2);
    let after = origin.event(&room, Draft::message("after two"));
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": [m2.json]}));
    let (_, answer) = origin.send(&a, "after-two", &[&after]).await;
    assert_accepted(&answer, &after);
    assert!(!origin.seen("/_matrix/federation/v1/get_missing_events/").is_empty(), "M2 was not fetched");
    room.advance(&after);
    origin.serve("/_matrix/federation/v1/get_missing_events/", json!({"events": []}));

    // M3: Alice redacts it before the server has seen it.
    let m3 = origin.event(&room, Draft::message("three"));
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r3", enc(&room_id), enc(&m3.id));
    let (status, redacted) = a.put(&path, alice.token(), json!({"reason": "ahead"})).await;
    assert_eq!(status, StatusCode::OK, "{redacted}");
    let r3 = redacted["event_id"].as_str().unwrap().to_owned();
    let (_, answer) = origin.send(&a, "m3", &[&m3]).await;
    assert_accepted(&answer, &m3);

    for (target, redaction, what) in [(&m1.id, &r1.id, "M1"), (&m2.id, &r2.id, "M2"), (&m3.id, &r3, "M3")] {
        let seen = seen_everywhere(&a, &alice, &room_id, target).await;
        assert_seen(&seen, Some(redaction), &json!({}), what);
    }
    let seen = seen_everywhere(&a, &alice, &room_id, &after.id).await;
    assert_seen(&seen, None, &json!({"msgtype": "m.text", "body": "after two"}), "the message after M2");
}

/// A redaction received before its target by a user who may not redact it does not apply when
/// the target arrives: Eve (of a second server, without the power to redact others' events)
/// redacts a message M of Mallory's that this server has not seen; M then arrives whole, without
/// `redacted_because` (`/event`, `/messages`, `/sync`). Of two redactions waiting for another
/// message, Eve's and then Mallory's server's own, the first that may redact it applies.
#[tokio::test]
async fn a_redaction_received_before_its_target_without_the_right_is_not_applied() {
    let (a, alice, origin, mut room) = setup("11").await;
    let room_id = room.room_id.clone();
    let other = Origin::start().await;
    let mut eve_room = other.join(&a, &room_id, "eve", "11").await;

    let m = origin.event(&room, Draft::message("kept"));
    let by_eve = other.event(&eve_room, Draft::of("m.room.redaction", None, json!({"redacts": m.id})));
    let (status, answer) = other.send(&a, "eve-1", &[&by_eve]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &by_eve);
    eve_room.advance(&by_eve);
    let (_, answer) = origin.send(&a, "m", &[&m]).await;
    assert_accepted(&answer, &m);
    room.advance(&m);
    let seen = seen_everywhere(&a, &alice, &room_id, &m.id).await;
    assert_seen(&seen, None, &json!({"msgtype": "m.text", "body": "kept"}), "M");

    let n = origin.event(&room, Draft::message("gone"));
    let again = other.event(&eve_room, Draft::of("m.room.redaction", None, json!({"redacts": n.id})));
    let (_, answer) = other.send(&a, "eve-2", &[&again]).await;
    assert_accepted(&answer, &again);
    let own = origin.event(&room, Draft::of("m.room.redaction", None, json!({"redacts": n.id})));
    let (_, answer) = origin.send(&a, "own", &[&own]).await;
    assert_accepted(&answer, &own);
    let (_, answer) = origin.send(&a, "n", &[&n]).await;
    assert_accepted(&answer, &n);
    let seen = seen_everywhere(&a, &alice, &room_id, &n.id).await;
    assert_seen(&seen, Some(&own.id), &json!({}), "N");
}

/// A redaction held before the event it names, which then comes with the room's history
/// (`/backfill`): Bob on B joins Alice's room on A after her message M, and Alice then redacts
/// M. B takes the redaction without M (history from before Bob's join); when Bob pages back,
/// B fetches M from A and stores it redacted: no content and `unsigned.redacted_because` naming
/// Alice's redaction, in the page and in `/event`.
#[tokio::test]
async fn a_target_fetched_with_the_rooms_history_is_redacted_by_a_redaction_held_before() {
    let (a, b, alice, bob) = two_servers().await;
    let room = public_room(&a, &alice, "11").await;
    let m = send(&a, &alice, &room, "send/m.room.message/old", json!({"msgtype": "m.text", "body": "old"})).await;
    let (_, prev_batch) = join_and_sync(&b, &bob, &room, &a.server_name).await;
    assert_not_found(&event(&b, &bob, &room, &m).await, "M on B before paging back");
    let r = send(&a, &alice, &room, &format!("redact/{}/r", enc(&m)), json!({"reason": "old news"})).await;
    let mut tries = 0;
    while event(&b, &bob, &room, &r).await.0 != StatusCode::OK {
        tries += 1;
        assert!(tries < 100, "the redaction did not reach B");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_not_found(&event(&b, &bob, &room, &m).await, "M on B with the redaction");

    let page = page_back(&b, &bob, &room, &prev_batch).await;
    let fetched =
        page.iter().find(|e| e["event_id"] == m.as_str()).unwrap_or_else(|| panic!("M not fetched: {page:?}"));
    let (status, single) = event(&b, &bob, &room, &m).await;
    assert_eq!(status, StatusCode::OK, "{single}");
    for (what, seen) in [("the page", fetched), ("/event", &single)] {
        assert_eq!(seen["unsigned"]["redacted_because"]["event_id"], r.as_str(), "{what}: {seen}");
        assert_eq!(seen["content"], json!({}), "{what}: {seen}");
    }
}

/// A redaction received before its target applies also when the target arrives as an outlier:
/// Mallory's server redacts her member event S (a new display name) before the server has S;
/// then her message E on S arrives after a gap, the state before E (her server's `/state_ids`)
/// names S, and the server fetches S and keeps it as an outlier. S is the room's state now,
/// redacted: Alice reads her membership without the display name and with
/// `unsigned.redacted_because` naming the redaction; E keeps its content.
#[tokio::test]
async fn a_redaction_received_before_its_target_applies_to_the_target_kept_as_an_outlier() {
    let (a, alice, origin, mut room) = setup("11").await;
    let room_id = room.room_id.clone();
    let auth = vec![room.create.clone(), room.power_levels.clone(), room.join_rules.clone(), room.join.clone()];
    let content = json!({"membership": "join", "displayname": "soon gone"});
    let redaction_room = room.clone();
    let s = origin.event(&room, Draft::of("m.room.member", Some(room.user.as_str()), content).auth(auth));
    let redaction = origin.event(&redaction_room, Draft::of("m.room.redaction", None, json!({"redacts": s.id})));
    let (_, answer) = origin.send(&a, "redaction", &[&redaction]).await;
    assert_accepted(&answer, &redaction);
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

    let (status, state) = a.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room_id)), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let member = state.as_array().unwrap().iter().find(|e| e["state_key"] == room.user.as_str()).expect("her member");
    assert_eq!(member["event_id"], s.id.as_str(), "S is not the room's state: {member}");
    assert_eq!(member["content"], json!({"membership": "join"}), "S is not redacted: {member}");
    assert_eq!(member["unsigned"]["redacted_because"]["event_id"], redaction.id.as_str(), "{member}");
    let seen = seen_everywhere(&a, &alice, &room_id, &e.id).await;
    assert_seen(&seen, None, &json!({"msgtype": "m.text", "body": "on the outlier"}), "E");
}

/// The PDUs of one transaction are written together (its messages in one statement), each in
/// its place all the same. One transaction of Mallory's server holds a message M1 and its
/// redaction R1; a redaction R2 and the message M2 it names (siblings, R2 first); a change of her
/// display name built on both; a message M3, and M3 again. All are accepted; `/messages` lists
/// them in that order, M3 once; M1 and M2 are redacted by R1 and R2 in `/event`, `/messages` and
/// `/sync`; the display name changed; M3 keeps its content.
#[tokio::test]
async fn the_events_of_one_transaction_are_accepted_together_in_order() {
    let (a, alice, origin, mut room) = setup("11").await;
    let room_id = room.room_id.clone();
    let m1 = origin.event(&room, Draft::message("one"));
    room.advance(&m1);
    let r1 = origin.event(&room, Draft::of("m.room.redaction", None, json!({"redacts": m1.id})));
    room.advance(&r1);
    let m2 = origin.event(&room, Draft::message("two"));
    let r2 = origin.event(&room, Draft::of("m.room.redaction", None, json!({"redacts": m2.id})));
    room.advance(&m2);
    let mut auth = room.auth();
    auth.push(room.join_rules.clone());
    let user = room.user.clone();
    let renamed = origin.event(
        &room,
        Draft::of("m.room.member", Some(&user), json!({"membership": "join", "displayname": "Mallory B"}))
            .prev(vec![r2.id.clone(), m2.id.clone()])
            .auth(auth),
    );
    room.advance(&renamed);
    let m3 = origin.event(&room, Draft::message("three"));
    room.advance(&m3);

    let all = [&m1, &r1, &r2, &m2, &renamed, &m3, &m3];
    let (status, answer) = origin.send(&a, "together", &all).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for pdu in all {
        assert_accepted(&answer, pdu);
    }
    let listed = timeline(&a, &alice, &room_id).await;
    let newest: Vec<&str> = ids(&listed).into_iter().take(6).collect();
    let sent = [&m3.id, &renamed.id, &m2.id, &r2.id, &r1.id, &m1.id].map(String::as_str);
    assert_eq!(newest, sent, "the order of /messages");
    for (target, redaction, what) in [(&m1.id, &r1.id, "M1"), (&m2.id, &r2.id, "M2")] {
        let seen = seen_everywhere(&a, &alice, &room_id, target).await;
        assert_seen(&seen, Some(redaction), &json!({}), what);
    }
    let seen = seen_everywhere(&a, &alice, &room_id, &m3.id).await;
    assert_seen(&seen, None, &json!({"msgtype": "m.text", "body": "three"}), "M3");
    let member = super::hostile::state(&a, &alice, &room_id, "m.room.member", &user).await;
    assert_eq!(member["displayname"], "Mallory B", "{member}");
    let query = format!("timeout=0&{}", inline_filter(&json!({"room": {"timeline": {"limit": 100}}})));
    let synced = sync(&a, &alice, &query).await;
    let in_sync = synced["rooms"]["join"][&room_id]["timeline"]["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(in_sync.iter().filter(|e| e["event_id"] == m3.id.as_str()).count(), 1, "M3 in /sync: {synced}");
}
