//! What of a room's history a user may read: redactions (content stripped by each room version's
//! rules), history visibility for late joiners and strangers, and rooms a user has left.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use crate::rooms::{
    VERSIONS, bodies, create_room, enc, get_event, get_state, invite, join, leave, page, room_path, send, send_text,
    server_with, set_state, state_content, state_event,
};

async fn redact(s: &TestServer, who: &Account, room: &str, event: &str, txn: &str, body: Value) -> (StatusCode, Value) {
    s.put(&room_path(room, &format!("redact/{}/{txn}", enc(event))), who.token(), body).await
}

/// The content of an event as `who` reads it.
async fn content(s: &TestServer, who: &Account, room: &str, event: &str) -> Value {
    let (status, body) = get_event(s, who, room, event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["content"].clone()
}

#[tokio::test]
async fn redactions_per_room_version() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    for v in VERSIONS {
        let room = create_room(
            &s,
            &alice,
            json!({"room_version": v, "preset": "public_chat", "power_level_content_override": {"invite": 25}}),
        )
        .await;
        join(&s, &bob, &room).await;
        join(&s, &charlie, &room).await;

        // Sytest "PUT /rooms/:room_id/redact/:event_id/:txn_id as original message sender redacts
        // message"; Complement TestRedact "Event content is redacted".
        let own =
            send(&s, &bob, &room, "m.room.message", json!({"msgtype": "m.text", "body": "oops", "x": {"a": 1}})).await;
        let (status, body) = redact(&s, &bob, &room, &own, "r1", json!({"reason": "typo"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let redaction = body["event_id"].as_str().unwrap().to_owned();
        // "… is idempotent".
        assert_eq!(
            redact(&s, &bob, &room, &own, "r1", json!({"reason": "typo"})).await.1["event_id"],
            redaction.as_str()
        );
        let (_, event) = get_event(&s, &alice, &room, &own).await;
        assert_eq!(
            (&event["type"], &event["sender"], &event["content"]),
            (&json!("m.room.message"), &json!(bob.user_id), &json!({}))
        );
        let because = &event["unsigned"]["redacted_because"];
        assert_eq!(
            (&because["event_id"], &because["type"], &because["sender"]),
            (&json!(redaction), &json!("m.room.redaction"), &json!(bob.user_id)),
            "{event}"
        );
        assert_eq!(because["content"]["reason"], "typo", "{event}");
        let (_, red) = get_event(&s, &alice, &room, &redaction).await;
        assert_eq!(
            (&red["type"], &red["redacts"], &red["content"]["reason"]),
            (&json!("m.room.redaction"), &json!(own), &json!("typo")),
            "{red}"
        );
        if v != "10" {
            // Room version 11 moved `redacts` into the content.
            assert_eq!(red["content"]["redacts"], own.as_str(), "{red}");
        }
        // History shows it redacted too.
        let history = page(&s, &alice, &room, "dir=b&limit=10").await;
        let listed =
            history["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == own.as_str()).expect("listed");
        assert_eq!(listed["content"], json!({}));
        assert_eq!(listed["unsigned"]["redacted_because"]["event_id"], redaction.as_str());

        // "… as random user does not redact message"; "… as power user redacts message".
        let alices = send_text(&s, &alice, &room, "keep me").await;
        assert_error(
            &redact(&s, &charlie, &room, &alices, "r2", json!({})).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        assert_eq!(content(&s, &charlie, &room, &alices).await["body"], "keep me");
        let charlies = send_text(&s, &charlie, &room, "rude").await;
        assert_eq!(redact(&s, &alice, &room, &charlies, "r3", json!({})).await.0, StatusCode::OK);
        assert_eq!(content(&s, &charlie, &room, &charlies).await, json!({}));

        // Sytest "PUT /redact disallows redaction of event in different room".
        let other = create_room(&s, &alice, json!({"room_version": v})).await;
        let foreign = send_text(&s, &alice, &other, "elsewhere").await;
        let r = redact(&s, &alice, &room, &foreign, "r4", json!({})).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
        assert_eq!(content(&s, &alice, &other, &foreign).await["body"], "elsewhere");

        // Sytest "Redaction of a redaction redacts the redaction reason".
        assert_eq!(redact(&s, &alice, &room, &redaction, "r5", json!({"reason": "meta"})).await.0, StatusCode::OK);
        let expected = if v == "10" { json!({}) } else { json!({"redacts": own}) };
        assert_eq!(content(&s, &alice, &room, &redaction).await, expected);

        // State keeps what the auth rules need: a member event its membership ...
        let member = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(member["content"]["displayname"], "bob");
        let id = member["event_id"].as_str().unwrap();
        assert_eq!(redact(&s, &alice, &room, id, "r6", json!({})).await.0, StatusCode::OK);
        assert_eq!(
            state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await,
            json!({"membership": "join"})
        );
        send_text(&s, &bob, &room, "still here").await;
        // ... and power levels their levels: `invite` only from room version 11 on.
        let power = state_event(&s, &alice, &room, "m.room.power_levels", "").await;
        assert_eq!((&power["content"]["invite"], &power["content"]["notifications"]["room"]), (&json!(25), &json!(50)));
        let id = power["event_id"].as_str().unwrap();
        assert_eq!(redact(&s, &alice, &room, id, "r7", json!({})).await.0, StatusCode::OK);
        let power = state_content(&s, &alice, &room, "m.room.power_levels", "").await;
        assert_eq!(power.get("invite").cloned(), if v == "10" { None } else { Some(json!(25)) }, "{power}");
        assert!(power.get("notifications").is_none(), "{power}");
        assert_eq!((&power["ban"], &power["events"]["m.room.name"]), (&json!(50), &json!(50)), "{power}");
        let users = if v == "12" { json!({}) } else { json!({alice.user_id.clone(): 100}) };
        assert_eq!(power["users"], users, "{power}");
    }
}

#[tokio::test]
async fn history_visibility_for_late_joiners_and_strangers() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    // What Bob sees once joined of the events sent before his invite, while invited, after joining
    // (Complement TestFetchHistorical…, Sytest "/event/ does not allow access to events before the
    // user joined").
    for (setting, seen) in [
        ("joined", [false, false, true]),
        ("invited", [false, true, true]),
        ("shared", [true, true, true]),
        ("world_readable", [true, true, true]),
    ] {
        let room = create_room(
            &s,
            &alice,
            json!({"preset": "public_chat", "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": setting}}]}),
        )
        .await;
        let texts = ["before", "while invited", "after join"].map(|t| format!("{setting}: {t}"));
        let mut events = vec![send_text(&s, &alice, &room, &texts[0]).await];
        invite(&s, &alice, &room, &bob.user_id).await;
        events.push(send_text(&s, &alice, &room, &texts[1]).await);
        if setting == "invited" {
            // An invitee already reads from the invite on.
            assert_eq!(get_event(&s, &bob, &room, &events[1]).await.0, StatusCode::OK);
            assert_error(&get_event(&s, &bob, &room, &events[0]).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
        join(&s, &bob, &room).await;
        events.push(send_text(&s, &alice, &room, &texts[2]).await);

        for ((event, text), visible) in events.iter().zip(&texts).zip(seen) {
            let r = get_event(&s, &bob, &room, event).await;
            if visible {
                assert_eq!((r.0, &r.1["content"]["body"]), (StatusCode::OK, &json!(text)), "{text}: {}", r.1);
            } else {
                assert_error(&r, StatusCode::NOT_FOUND, "M_NOT_FOUND");
            }
        }
        let mut expected: Vec<String> = texts.iter().zip(seen).filter(|(_, v)| *v).map(|(t, _)| t.clone()).collect();
        expected.reverse();
        assert_eq!(bodies(&page(&s, &bob, &room, "dir=b&limit=50").await["chunk"]), expected, "{setting}");

        // Someone who was never in the room reads only world-readable rooms.
        if setting == "world_readable" {
            assert_eq!(content(&s, &charlie, &room, &events[0]).await["body"], texts[0].as_str());
            let history = page(&s, &charlie, &room, "dir=b&limit=50").await;
            assert_eq!(bodies(&history["chunk"]), texts.iter().rev().cloned().collect::<Vec<_>>());
            assert_eq!(state_content(&s, &charlie, &room, "m.room.join_rules", "").await["join_rule"], "public");
        } else {
            assert_error(&get_event(&s, &charlie, &room, &events[0]).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
            assert_error(
                &s.get(&room_path(&room, "messages?dir=b"), charlie.token()).await,
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
            );
        }
    }
}

/// Messages by body, setting changes as `hv:<setting>`, member events as `<membership>:<user>`.
fn timeline(events: &Value) -> Vec<String> {
    crate::rooms::events(events)
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("m.room.history_visibility") => format!("hv:{}", e["content"]["history_visibility"].as_str().unwrap()),
            Some("m.room.member") => {
                format!("{}:{}", e["content"]["membership"].as_str().unwrap(), e["state_key"].as_str().unwrap())
            }
            _ => e["content"]["body"].as_str().or(e["type"].as_str()).unwrap().to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn setting_changes_and_own_membership_are_seen_on_boundaries() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    // Sytest "Only see history_visibility changes on boundaries": a setting event is visible when
    // the setting before or after it lets the user see it.
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    for (setting, text) in [("joined", "1"), ("invited", "2"), ("shared", "3")] {
        set_state(&s, &alice, &room, "m.room.history_visibility", "", json!({"history_visibility": setting})).await;
        send_text(&s, &alice, &room, text).await;
    }
    join(&s, &bob, &room).await;
    let mut seen = timeline(&page(&s, &bob, &room, "dir=b&limit=50").await["chunk"]);
    seen.reverse();
    assert_eq!(seen[seen.len() - 4..], ["hv:joined", "hv:shared", "3", &format!("join:{}", bob.user_id)], "{seen:?}");
    assert_eq!(seen.first().map(String::as_str), Some("m.room.create"), "shared before the change: {seen:?}");

    // The same for one's own membership: a member sees their own leave (and their join).
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    send_text(&s, &alice, &room, "before").await;
    join(&s, &bob, &room).await;
    send_text(&s, &alice, &room, "while joined").await;
    leave(&s, &bob, &room).await;
    send_text(&s, &alice, &room, "after").await;
    let mut seen = timeline(&page(&s, &bob, &room, "dir=b&limit=50").await["chunk"]);
    seen.reverse();
    let (join, leave) = (format!("join:{}", bob.user_id), format!("leave:{}", bob.user_id));
    // (What came before the setting was under the default, `shared`.)
    assert_eq!(seen[seen.len() - 4..], ["hv:joined", join.as_str(), "while joined", leave.as_str()], "{seen:?}");
    assert!(!seen.contains(&"before".to_owned()) && !seen.contains(&"after".to_owned()), "{seen:?}");
}

#[tokio::test]
async fn departed_members_read_up_to_their_leave() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Before"})).await;
    join(&s, &bob, &room).await;
    let here = send_text(&s, &alice, &room, "while bob was here").await;
    leave(&s, &bob, &room).await;
    let gone = send_text(&s, &alice, &room, "after bob left").await;
    set_state(&s, &alice, &room, "m.room.name", "", json!({"name": "After"})).await;

    // Sytest/Complement "Can get 'm.room.name' state for a departed room (SPEC-216)": as it was.
    assert_eq!(state_content(&s, &bob, &room, "m.room.name", "").await, json!({"name": "Before"}));
    // "Can get rooms/{roomId}/state for a departed room".
    let (status, state) = s.get(&room_path(&room, "state"), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let name = state.as_array().unwrap().iter().find(|e| e["type"] == "m.room.name").expect("name");
    assert_eq!(name["content"]["name"], "Before");
    // "Can get rooms/{roomId}/members for a departed room".
    let (status, members) = s.get(&room_path(&room, "members"), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    let mine =
        members["chunk"].as_array().unwrap().iter().find(|e| e["state_key"] == bob.user_id.as_str()).expect("bob");
    assert_eq!(mine["content"]["membership"], "leave");
    // "Can get rooms/{roomId}/messages for a departed room", "Getting messages going forward is
    // limited for a departed room".
    let backwards = bodies(&page(&s, &bob, &room, "dir=b&limit=50").await["chunk"]);
    assert_eq!(backwards, ["while bob was here"]);
    let forwards = bodies(&page(&s, &bob, &room, "dir=f&limit=50").await["chunk"]);
    assert_eq!(forwards, ["while bob was here"]);
    assert_eq!(content(&s, &bob, &room, &here).await["body"], "while bob was here");
    assert_error(&get_event(&s, &bob, &room, &gone).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Complement "GET /rooms/:room_id/joined_members is forbidden after leaving room".
    assert_error(&s.get(&room_path(&room, "joined_members"), bob.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A departed member cannot change anything.
    assert_error(&get_state(&s, &bob, &room, "m.room.topic", "").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.put(&room_path(&room, "state/m.room.topic/"), bob.token(), json!({"topic": "x"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

/// Deactivates `who` with `erase`, through UIA.
pub(crate) async fn deactivate(s: &TestServer, who: &Account, erase: bool) {
    let path = "/_matrix/client/v3/account/deactivate";
    let (_, challenge) = s.post(path, who.token(), json!({"erase": erase})).await;
    let session = challenge["session"].as_str().expect("a UIA session").to_owned();
    let (status, body) = s.post(path, who.token(), json!({"erase": erase, "auth": who.password_auth(&session)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The event `id` in a list of events.
fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    crate::rooms::events(list).iter().find(|e| e["event_id"] == id).unwrap_or_else(|| panic!("{id} not in {list}"))
}

/// What a reader sees of Alice's message M and her thread reply R on it: in `/event`,
/// `/messages`, `/context`, `/relations` and an initial `/sync` (each `(where, content)`),
/// and whether a search for a word of M finds it.
async fn seen_of_erased(
    s: &TestServer,
    who: &Account,
    room: &str,
    m: &str,
    r: &str,
) -> (Vec<(&'static str, Value)>, bool) {
    let mut seen = vec![("/event", content(s, who, room, m).await)];
    let history = page(s, who, room, "dir=b&limit=50").await;
    seen.push(("/messages", find(&history["chunk"], m)["content"].clone()));
    let (status, context) = s.get(&room_path(room, &format!("context/{}", enc(m))), who.token()).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    seen.push(("/context", context["event"]["content"].clone()));
    let path = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(room), enc(m));
    let (status, relations) = s.get(&path, who.token()).await;
    assert_eq!(status, StatusCode::OK, "{relations}");
    seen.push(("/relations", find(&relations["chunk"], r)["content"].clone()));
    let query = format!("timeout=0&{}", crate::sync::inline_filter(&json!({"room": {"timeline": {"limit": 50}}})));
    let synced = crate::sync::sync(s, who, &query).await;
    seen.push(("/sync", find(crate::sync::timeline(&synced, room), m)["content"].clone()));
    let body = json!({"search_categories": {"room_events": {"search_term": "confidential"}}});
    let (status, found) = s.post("/_matrix/client/v3/search", who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let hits = found["search_categories"]["room_events"]["results"].as_array().cloned().unwrap_or_default();
    (seen, hits.iter().any(|h| h["result"]["event_id"] == m))
}

/// Events of a user who erased their account, as Synapse serves them: Alice sends a message M
/// and a thread reply R to it in a world-readable room, then deactivates with `erase`. Bob,
/// joined when she sent them, keeps their content everywhere (`/event`, `/messages`,
/// `/context`, `/relations`, `/sync`, search); Carol, who joins afterwards, and Dave, who reads
/// without joining, get them pruned (empty content, same id) and search finds nothing for them.
/// Erin's message, who deactivated without erasure, stays whole for everyone.
#[tokio::test]
async fn events_of_erased_users_are_pruned_for_readers_who_were_not_joined() {
    let (s, [alice, bob, carol, dave, erin]) = server_with(["alice", "bob", "carol", "dave", "erin"]).await;
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    join(&s, &bob, &room).await;
    join(&s, &erin, &room).await;
    let m = send_text(&s, &alice, &room, "confidential plans").await;
    let reply = json!({"msgtype": "m.text", "body": "more detail",
                       "m.relates_to": {"rel_type": "m.thread", "event_id": m}});
    let r = send(&s, &alice, &room, "m.room.message", reply).await;
    let kept = send_text(&s, &erin, &room, "erin stays readable").await;
    deactivate(&s, &alice, true).await;
    deactivate(&s, &erin, false).await;
    join(&s, &carol, &room).await;

    let (seen, found) = seen_of_erased(&s, &bob, &room, &m, &r).await;
    for (endpoint, content) in &seen {
        let expected = if *endpoint == "/relations" { "more detail" } else { "confidential plans" };
        assert_eq!(content["body"], expected, "Bob in {endpoint}: {content}");
    }
    assert!(found, "Bob's search does not find M");
    // The bundled thread summary carries the reply whole for Bob.
    let (_, event) = get_event(&s, &bob, &room, &m).await;
    assert_eq!(
        event["unsigned"]["m.relations"]["m.thread"]["latest_event"]["content"]["body"], "more detail",
        "{event}"
    );

    let (seen, found) = seen_of_erased(&s, &carol, &room, &m, &r).await;
    for (endpoint, content) in &seen {
        assert_eq!(content, &json!({}), "Carol in {endpoint}");
    }
    assert!(!found, "Carol's search finds the erased message");
    let (_, event) = get_event(&s, &carol, &room, &m).await;
    assert_eq!(event["sender"], alice.user_id.as_str(), "{event}");
    let latest = &event["unsigned"]["m.relations"]["m.thread"]["latest_event"];
    assert!(latest.is_null() || latest["content"] == json!({}), "the bundled reply is whole for Carol: {event}");

    // Dave reads the world-readable room without joining.
    assert_eq!(content(&s, &dave, &room, &m).await, json!({}), "Dave in /event");
    let history = page(&s, &dave, &room, "dir=b&limit=50").await;
    assert_eq!(find(&history["chunk"], &m)["content"], json!({}), "Dave in /messages");
    assert_eq!(find(&history["chunk"], &kept)["content"]["body"], "erin stays readable");
    assert_eq!(content(&s, &carol, &room, &kept).await["body"], "erin stays readable");
}
