//! Room creation, sending, state, messages, context, redaction and the auth-rule errors a client sees.
//!
//! This module holds the room helpers the other room modules share, room creation (versions,
//! presets, options), power levels (v12's privileged creators), sending and reading events and
//! state, transaction ids and size limits. Pagination, context, redaction and history visibility
//! are in `room_history`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

/// The room versions this server creates.
pub(crate) const VERSIONS: [&str; 3] = ["10", "11", "12"];

/// A fresh server with one registered account (password `pw`) per name.
pub(crate) async fn server_with<const N: usize>(names: [&str; N]) -> (TestServer, [Account; N]) {
    let s = TestServer::start().await;
    let mut accounts = Vec::with_capacity(N);
    for name in names {
        accounts.push(s.register(name, "pw").await);
    }
    let Ok(accounts) = <[Account; N]>::try_from(accounts) else { unreachable!("one account per name") };
    (s, accounts)
}

/// Percent-encodes a path segment or query value (room and event ids, aliases, filters).
pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `/_matrix/client/v3/rooms/{room}/{rest}`.
pub(crate) fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

pub(crate) async fn try_create_room(s: &TestServer, who: &Account, body: Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/createRoom", who.token(), body).await
}

/// Creates a room; its id.
pub(crate) async fn create_room(s: &TestServer, who: &Account, body: Value) -> String {
    let (status, resp) = try_create_room(s, who, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "createRoom {body}: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

/// A transaction id no other request of this test process uses.
pub(crate) fn next_txn() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("txn{}", N.fetch_add(1, Ordering::Relaxed))
}

pub(crate) async fn try_send(
    s: &TestServer,
    who: &Account,
    room: &str,
    kind: &str,
    content: Value,
) -> (StatusCode, Value) {
    s.put(&room_path(room, &format!("send/{}/{}", enc(kind), next_txn())), who.token(), content).await
}

/// Sends a message event; its id.
pub(crate) async fn send(s: &TestServer, who: &Account, room: &str, kind: &str, content: Value) -> String {
    let (status, body) = try_send(s, who, room, kind, content).await;
    assert_eq!(status, StatusCode::OK, "send {kind} as {}: {body}", who.user_id);
    body["event_id"].as_str().expect("event_id").to_owned()
}

pub(crate) async fn send_text(s: &TestServer, who: &Account, room: &str, text: &str) -> String {
    send(s, who, room, "m.room.message", json!({"msgtype": "m.text", "body": text})).await
}

fn state_path(room: &str, kind: &str, key: &str) -> String {
    room_path(room, &format!("state/{}/{}", enc(kind), enc(key)))
}

pub(crate) async fn put_state(
    s: &TestServer,
    who: &Account,
    room: &str,
    kind: &str,
    key: &str,
    content: Value,
) -> (StatusCode, Value) {
    s.put(&state_path(room, kind, key), who.token(), content).await
}

/// Sets a state event; its id.
pub(crate) async fn set_state(
    s: &TestServer,
    who: &Account,
    room: &str,
    kind: &str,
    key: &str,
    content: Value,
) -> String {
    let (status, body) = put_state(s, who, room, kind, key, content).await;
    assert_eq!(status, StatusCode::OK, "set {kind}/{key} as {}: {body}", who.user_id);
    body["event_id"].as_str().expect("event_id").to_owned()
}

pub(crate) async fn get_state(s: &TestServer, who: &Account, room: &str, kind: &str, key: &str) -> (StatusCode, Value) {
    s.get(&state_path(room, kind, key), who.token()).await
}

/// The content of a state event.
pub(crate) async fn state_content(s: &TestServer, who: &Account, room: &str, kind: &str, key: &str) -> Value {
    let (status, body) = get_state(s, who, room, kind, key).await;
    assert_eq!(status, StatusCode::OK, "get {kind}/{key} as {}: {body}", who.user_id);
    body
}

/// A state event in the client format (`?format=event`).
pub(crate) async fn state_event(s: &TestServer, who: &Account, room: &str, kind: &str, key: &str) -> Value {
    let (status, body) = s.get(&format!("{}?format=event", state_path(room, kind, key)), who.token()).await;
    assert_eq!(status, StatusCode::OK, "get {kind}/{key} as {}: {body}", who.user_id);
    body
}

pub(crate) async fn get_event(s: &TestServer, who: &Account, room: &str, event_id: &str) -> (StatusCode, Value) {
    s.get(&room_path(room, &format!("event/{}", enc(event_id))), who.token()).await
}

/// Gives `user` a power level in `room` (as `who`, who must be allowed to).
pub(crate) async fn set_user_level(s: &TestServer, who: &Account, room: &str, user: &str, level: i64) {
    let mut power = state_content(s, who, room, "m.room.power_levels", "").await;
    power["users"][user] = json!(level);
    set_state(s, who, room, "m.room.power_levels", "", power).await;
}

/// `POST /rooms/{room}/{action}` (join, invite, leave, kick, ban, unban, forget).
pub(crate) async fn member_action(
    s: &TestServer,
    who: &Account,
    room: &str,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    s.post(&room_path(room, action), who.token(), body).await
}

pub(crate) async fn join(s: &TestServer, who: &Account, room: &str) {
    let (status, body) = member_action(s, who, room, "join", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{} joins {room}: {body}", who.user_id);
    assert_eq!(body["room_id"], room, "{body}");
}

pub(crate) async fn invite(s: &TestServer, who: &Account, room: &str, user_id: &str) {
    let (status, body) = member_action(s, who, room, "invite", json!({"user_id": user_id})).await;
    assert_eq!(status, StatusCode::OK, "{} invites {user_id}: {body}", who.user_id);
}

pub(crate) async fn leave(s: &TestServer, who: &Account, room: &str) {
    let (status, body) = member_action(s, who, room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{} leaves {room}: {body}", who.user_id);
}

/// `user`'s membership in `room` as `who` sees it (`None` without a member event).
pub(crate) async fn membership_of(s: &TestServer, who: &Account, room: &str, user: &str) -> Option<String> {
    let (status, body) = get_state(s, who, room, "m.room.member", user).await;
    match status {
        StatusCode::OK => Some(body["membership"].as_str().expect("membership").to_owned()),
        StatusCode::NOT_FOUND => None,
        _ => panic!("member state of {user} as {}: {status} {body}", who.user_id),
    }
}

/// `GET /rooms/{room}/messages?{query}`.
pub(crate) async fn messages(s: &TestServer, who: &Account, room: &str, query: &str) -> (StatusCode, Value) {
    s.get(&room_path(room, &format!("messages?{query}")), who.token()).await
}

/// A page of `/messages` that must succeed.
pub(crate) async fn page(s: &TestServer, who: &Account, room: &str, query: &str) -> Value {
    let (status, body) = messages(s, who, room, query).await;
    assert_eq!(status, StatusCode::OK, "messages?{query} as {}: {body}", who.user_id);
    body
}

/// The events of an optional list (servers may leave out empty ones).
pub(crate) fn events(list: &Value) -> &[Value] {
    match list {
        Value::Null => &[],
        other => other.as_array().unwrap_or_else(|| panic!("not a list of events: {other}")),
    }
}

/// The event ids of a list of events.
pub(crate) fn ids(list: &Value) -> Vec<String> {
    events(list).iter().map(|e| e["event_id"].as_str().expect("event_id").to_owned()).collect()
}

/// The bodies of the messages in a list of events (other events are left out).
pub(crate) fn bodies(list: &Value) -> Vec<String> {
    events(list).iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
}

pub(crate) async fn joined_rooms(s: &TestServer, who: &Account) -> Vec<String> {
    let (status, body) = s.get("/_matrix/client/v3/joined_rooms", who.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["joined_rooms"].as_array().expect("joined_rooms").iter().map(|r| r.as_str().unwrap().to_owned()).collect()
}

/// The largest integer canonical JSON allows (2^53 - 1).
const MAX_CANONICAL_INT: i64 = 9_007_199_254_740_991;

#[tokio::test]
async fn create_rooms_of_each_version() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    for v in VERSIONS {
        // Sytest/Complement "POST /createRoom makes a private room with invites", "… with a name",
        // "… with a topic", "… creates a room with the given version", SYN-205.
        let room = create_room(
            &s,
            &alice,
            json!({"room_version": v, "preset": "private_chat", "name": format!("Room {v}"),
                   "topic": format!("About {v}"), "invite": [bob.user_id], "is_direct": true}),
        )
        .await;
        let create = state_event(&s, &alice, &room, "m.room.create", "").await;
        assert_eq!(create["content"]["room_version"], v, "{create}");
        assert_eq!(
            (&create["sender"], &create["state_key"], &create["room_id"]),
            (&json!(alice.user_id), &json!(""), &json!(room))
        );
        match v {
            // Room version 12: the room id is the create event's reference hash, with no server name.
            "12" => {
                let event_id = create["event_id"].as_str().unwrap();
                assert_eq!(room[1..], event_id[1..], "v12 room id derives from the create event");
                assert!(room.starts_with('!') && !room.contains(':'), "{room}");
            }
            _ => assert!(room.starts_with('!') && room.ends_with(":localhost"), "{room}"),
        }
        // `creator` was dropped from the create event in room version 11.
        if v == "10" {
            assert_eq!(create["content"]["creator"], alice.user_id.as_str(), "{create}");
        } else {
            assert!(create["content"].get("creator").is_none(), "{create}");
        }
        assert_eq!(state_content(&s, &alice, &room, "m.room.join_rules", "").await, json!({"join_rule": "invite"}));
        assert_eq!(
            state_content(&s, &alice, &room, "m.room.history_visibility", "").await,
            json!({"history_visibility": "shared"})
        );
        assert_eq!(
            state_content(&s, &alice, &room, "m.room.guest_access", "").await,
            json!({"guest_access": "can_join"})
        );

        // Complement TestPowerLevels / TestMSC4289PrivilegedRoomCreators: every level is a number;
        // before v12 the creator is listed at 100, from v12 on not at all (and tombstones need 150).
        let power = state_content(&s, &alice, &room, "m.room.power_levels", "").await;
        for key in ["ban", "kick", "redact", "invite", "state_default", "events_default", "users_default"] {
            assert!(power[key].is_i64(), "{key} in {power}");
        }
        assert!(power["events"].as_object().unwrap().values().all(Value::is_i64), "{power}");
        if v == "12" {
            assert_eq!(power["users"], json!({}), "{power}");
            assert_eq!(power["events"]["m.room.tombstone"], 150, "{power}");
        } else {
            assert_eq!(power["users"], json!({alice.user_id.clone(): 100}), "{power}");
        }

        assert_eq!(state_content(&s, &alice, &room, "m.room.name", "").await, json!({"name": format!("Room {v}")}));
        // Complement "… makes a room with a topic and writes rich topic representation".
        let topic = state_content(&s, &alice, &room, "m.room.topic", "").await;
        assert_eq!(topic["topic"], format!("About {v}"), "{topic}");
        assert_eq!(topic["m.topic"]["m.text"][0]["body"], format!("About {v}"), "{topic}");
        let invite = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!((&invite["sender"], &invite["content"]["membership"]), (&json!(alice.user_id), &json!("invite")));
        assert_eq!(invite["content"]["is_direct"], true, "{invite}");
        // The creator's join carries their display name (a new account's is its localpart).
        assert_eq!(
            state_content(&s, &alice, &room, "m.room.member", &alice.user_id).await,
            json!({"membership": "join", "displayname": "alice"})
        );
        // Sytest "GET /joined_rooms lists newly-created room".
        assert!(joined_rooms(&s, &alice).await.contains(&room));
        assert!(!joined_rooms(&s, &bob).await.contains(&room), "an invite is not a join");
    }
}

#[tokio::test]
async fn presets_set_rules_and_trusted_invitees() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let rules = async |room: &str| {
        let join_rule = state_content(&s, &alice, room, "m.room.join_rules", "").await["join_rule"].clone();
        let history =
            state_content(&s, &alice, room, "m.room.history_visibility", "").await["history_visibility"].clone();
        let guests = state_content(&s, &alice, room, "m.room.guest_access", "").await["guest_access"].clone();
        (join_rule, history, guests)
    };
    for v in VERSIONS {
        // Sytest/Complement "POST /createRoom makes a public room".
        let public = create_room(&s, &alice, json!({"room_version": v, "preset": "public_chat"})).await;
        assert_eq!(rules(&public).await, (json!("public"), json!("shared"), json!("forbidden")));
        // Without a preset, the visibility decides: public means public_chat, private (the default)
        // private_chat ("POST /createRoom makes a private room").
        let listed = create_room(&s, &alice, json!({"room_version": v, "visibility": "public"})).await;
        assert_eq!(rules(&listed).await, (json!("public"), json!("shared"), json!("forbidden")));
        let private = create_room(&s, &alice, json!({"room_version": v})).await;
        assert_eq!(rules(&private).await, (json!("invite"), json!("shared"), json!("can_join")));

        // trusted_private_chat: invitees get the creator's power; in v12 by becoming creators.
        let trusted = create_room(
            &s,
            &alice,
            json!({"room_version": v, "preset": "trusted_private_chat", "invite": [bob.user_id], "is_direct": true}),
        )
        .await;
        assert_eq!(rules(&trusted).await, (json!("invite"), json!("shared"), json!("can_join")));
        let create = state_content(&s, &alice, &trusted, "m.room.create", "").await;
        let power = state_content(&s, &alice, &trusted, "m.room.power_levels", "").await;
        if v == "12" {
            // Complement TestMSC4289PrivilegedRoomCreators_InvitedAreCreators.
            assert_eq!(create["additional_creators"], json!([bob.user_id]), "{create}");
            assert_eq!(power["users"], json!({}), "{power}");
        } else {
            assert!(create.get("additional_creators").is_none(), "{create}");
            assert_eq!(power["users"], json!({alice.user_id.clone(): 100, bob.user_id.clone(): 100}), "{power}");
        }
        join(&s, &bob, &trusted).await;
        set_state(&s, &bob, &trusted, "m.room.name", "", json!({"name": "Bob's"})).await;
        // Equal power: neither may kick the other (a creator may not be kicked at all).
        for (kicker, target) in [(&alice, &bob), (&bob, &alice)] {
            assert_error(
                &member_action(&s, kicker, &trusted, "kick", json!({"user_id": target.user_id})).await,
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
            );
        }
    }

    // Complement TestMSC4289PrivilegedRoomCreators_AdditionalCreatorsAndInvited: both lists merge.
    let room = create_room(
        &s,
        &alice,
        json!({"room_version": "12", "preset": "trusted_private_chat", "invite": [bob.user_id],
               "creation_content": {"additional_creators": [charlie.user_id]}}),
    )
    .await;
    let mut creators: Vec<String> = state_content(&s, &alice, &room, "m.room.create", "").await["additional_creators"]
        .as_array()
        .expect("additional_creators")
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    creators.sort();
    assert_eq!(creators, [bob.user_id.clone(), charlie.user_id.clone()]);

    // Complement TestMSC4289PrivilegedRoomCreators_Additional and _AdditionalValidation.
    for bad in [json!("not-an-array"), json!(["@foo:example.com", 42]), json!(["@foo:example.com", "not-a-user-id"])] {
        let r = try_create_room(
            &s,
            &alice,
            json!({"room_version": "12", "preset": "public_chat", "creation_content": {"additional_creators": bad}}),
        )
        .await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "additional_creators {bad}: {}", r.1);
    }
    let room = create_room(
        &s,
        &alice,
        json!({"room_version": "12", "preset": "public_chat",
               "creation_content": {"additional_creators": [bob.user_id, "@bar:baz.example"]}}),
    )
    .await;
    join(&s, &bob, &room).await;
    assert_error(
        &member_action(&s, &alice, &room, "kick", json!({"user_id": bob.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    set_state(&s, &bob, &room, "m.room.name", "", json!({"name": "Bob's room name"})).await;
    // A creator cannot be listed in the power levels.
    let r = put_state(&s, &alice, &room, "m.room.power_levels", "", json!({"users": {bob.user_id.clone(): 100}})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
}

#[tokio::test]
async fn power_levels_decide_who_may_do_what() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    for v in VERSIONS {
        let room = create_room(&s, &alice, json!({"room_version": v, "preset": "public_chat"})).await;
        join(&s, &bob, &room).await;
        // Insufficient power for state: 403.
        assert_error(
            &put_state(&s, &bob, &room, "m.room.name", "", json!({"name": "mine"})).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        // Sytest "Unprivileged users can set m.room.topic if it only needs level 0".
        let mut power = state_content(&s, &alice, &room, "m.room.power_levels", "").await;
        power["events"]["m.room.topic"] = json!(0);
        set_state(&s, &alice, &room, "m.room.power_levels", "", power.clone()).await;
        set_state(&s, &bob, &room, "m.room.topic", "", json!({"topic": "bob's topic"})).await;
        // "PUT /rooms/:room_id/state/m.room.power_levels can set levels": read back as sent.
        power["users"][&bob.user_id] = json!(50);
        power["events"]["m.room.power_levels"] = json!(50);
        let id = set_state(&s, &alice, &room, "m.room.power_levels", "", power.clone()).await;
        assert_eq!(get_event(&s, &alice, &room, &id).await.1["content"], power);

        // Sytest "Users cannot set $levelname powerlevel higher than their own" (and notifications).
        for key in ["ban", "kick", "redact", "invite", "state_default", "events_default", "users_default"] {
            let mut p = power.clone();
            p[key] = json!(75);
            let r = put_state(&s, &bob, &room, "m.room.power_levels", "", p).await;
            assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        }
        let mut p = power.clone();
        p["notifications"]["room"] = json!(75);
        assert_error(
            &put_state(&s, &bob, &room, "m.room.power_levels", "", p).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let mut p = power.clone();
        p["users"][&bob.user_id] = json!(60);
        assert_error(
            &put_state(&s, &bob, &room, "m.room.power_levels", "", p).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        // Lowering within one's own level is fine.
        let mut p = power.clone();
        p["ban"] = json!(40);
        set_state(&s, &bob, &room, "m.room.power_levels", "", p.clone()).await;
        let power = p;

        // Equal power levels: nobody kicks a peer, except that a v12 creator outranks everyone,
        // even at the largest level canonical JSON can express (Complement "creator can kick admin…",
        // "admin with >PL100 cannot kick creator").
        let mut p = power.clone();
        p["users"][&bob.user_id] = json!(if v == "12" { MAX_CANONICAL_INT } else { 100 });
        set_state(&s, &alice, &room, "m.room.power_levels", "", p).await;
        assert_error(
            &member_action(&s, &bob, &room, "kick", json!({"user_id": alice.user_id})).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let kick = member_action(&s, &alice, &room, "kick", json!({"user_id": bob.user_id})).await;
        if v == "12" {
            assert_eq!(kick.0, StatusCode::OK, "{}", kick.1);
            assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("leave"));
        } else {
            assert_error(&kick, StatusCode::FORBIDDEN, "M_FORBIDDEN");
            assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("join"));
        }
    }
}

#[tokio::test]
async fn power_level_edge_cases() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    for v in VERSIONS {
        let room = create_room(&s, &alice, json!({"room_version": v, "invite": [bob.user_id]})).await;
        // Complement "power level cannot be set beyond max canonical JSON int".
        let r = put_state(
            &s,
            &alice,
            &room,
            "m.room.power_levels",
            "",
            json!({"users": {bob.user_id.clone(): MAX_CANONICAL_INT + 1}}),
        )
        .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "M_BAD_JSON");

        // Sytest/Complement "PUT power_levels should not explode if the old power levels were empty".
        let me = json!({alice.user_id.clone(): 100});
        if v == "12" {
            set_state(&s, &alice, &room, "m.room.power_levels", "", json!({"users": {}})).await;
            set_state(&s, &alice, &room, "m.room.power_levels", "", json!({})).await;
            // Complement "creator cannot set self in PL event".
            let r = put_state(&s, &alice, &room, "m.room.power_levels", "", json!({"users": me})).await;
            assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
        } else {
            set_state(&s, &alice, &room, "m.room.power_levels", "", json!({"users": me})).await;
            set_state(&s, &alice, &room, "m.room.power_levels", "", json!({})).await;
            // Alice demoted herself to the default 0; state needs 50 now.
            let r = put_state(&s, &alice, &room, "m.room.power_levels", "", json!({"users": {}})).await;
            assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        }
        assert_eq!(state_content(&s, &alice, &room, "m.room.power_levels", "").await, json!({}));

        // power_level_content_override: an initial state the creator cannot set is
        // M_INVALID_ROOM_STATE before v12; a v12 creator can always set it.
        let r = try_create_room(
            &s,
            &alice,
            json!({"room_version": v, "name": "unreachable", "power_level_content_override": {"state_default": 101}}),
        )
        .await;
        if v == "12" {
            assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        } else {
            assert_error(&r, StatusCode::BAD_REQUEST, "M_INVALID_ROOM_STATE");
        }
    }
    // Complement TestDemotingUsersViaUsersDefault: at users_default 100, an admin may lower it.
    for v in VERSIONS {
        let mut users = json!({alice.user_id.clone(): 100, bob.user_id.clone(): 100});
        if v == "12" {
            users.as_object_mut().unwrap().remove(&alice.user_id);
        }
        let levels = json!({"users_default": 100, "users": users, "events": {}, "notifications": {}});
        let room = create_room(
            &s,
            &alice,
            json!({"room_version": v, "preset": "public_chat", "power_level_content_override": levels}),
        )
        .await;
        join(&s, &bob, &room).await;
        let lowered = json!({"users_default": 40, "users": users, "events": {}, "notifications": {}});
        set_state(&s, &bob, &room, "m.room.power_levels", "", lowered).await;
    }
    // Complement "power_level_content_override can be set" / "… cannot set the room creator".
    let room = create_room(
        &s,
        &alice,
        json!({"room_version": "12", "invite": [bob.user_id],
               "power_level_content_override": {"users": {bob.user_id.clone(): 100}}}),
    )
    .await;
    assert_eq!(
        state_content(&s, &alice, &room, "m.room.power_levels", "").await["users"],
        json!({bob.user_id.clone(): 100})
    );
    let r = try_create_room(
        &s,
        &alice,
        json!({"room_version": "12", "power_level_content_override": {"users": {alice.user_id.clone(): 100}}}),
    )
    .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
}

#[tokio::test]
async fn create_room_options() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;

    // The default version is 11. Sytest "POST /createRoom ignores attempts to set the room version
    // via creation_content", "POST /createRoom with creation content".
    let room = create_room(
        &s,
        &alice,
        json!({"creation_content": {"m.federate": false, "room_version": "10", "creator": "@mallory:localhost"}}),
    )
    .await;
    let create = state_content(&s, &alice, &room, "m.room.create", "").await;
    assert_eq!(create, json!({"room_version": "11", "m.federate": false}));
    let room =
        create_room(&s, &alice, json!({"room_version": "10", "creation_content": {"creator": "@mallory:localhost"}}))
            .await;
    assert_eq!(state_content(&s, &alice, &room, "m.room.create", "").await["creator"], alice.user_id.as_str());

    // initial_state beats the preset; name and topic beat initial_state (Complement "… makes a room
    // with a topic via initial_state overwritten by topic").
    let room = create_room(
        &s,
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [
                {"type": "org.example.custom", "state_key": "k", "content": {"a": 1}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                {"type": "m.room.topic", "state_key": "", "content": {"topic": "from initial_state"}},
                {"type": "m.room.name", "content": {"name": "from initial_state"}},
            ],
            "name": "from name",
            "topic": "from topic",
        }),
    )
    .await;
    assert_eq!(state_content(&s, &alice, &room, "org.example.custom", "k").await, json!({"a": 1}));
    assert_eq!(
        state_content(&s, &alice, &room, "m.room.history_visibility", "").await,
        json!({"history_visibility": "joined"})
    );
    assert_eq!(state_content(&s, &alice, &room, "m.room.join_rules", "").await, json!({"join_rule": "public"}));
    assert_eq!(state_content(&s, &alice, &room, "m.room.name", "").await, json!({"name": "from name"}));
    assert_eq!(state_content(&s, &alice, &room, "m.room.topic", "").await["topic"], "from topic");
    // Complement "… makes a room with a topic via initial_state".
    let room = create_room(
        &s,
        &alice,
        json!({"initial_state": [{"type": "m.room.topic", "state_key": "", "content": {"topic": "only here"}}]}),
    )
    .await;
    assert_eq!(state_content(&s, &alice, &room, "m.room.topic", "").await, json!({"topic": "only here"}));

    // power_level_content_override is laid over the defaults.
    let room = create_room(
        &s,
        &alice,
        json!({"power_level_content_override": {"events_default": 20,
               "users": {alice.user_id.clone(): 100, bob.user_id.clone(): 30}}}),
    )
    .await;
    let power = state_content(&s, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(power["events_default"], 20, "{power}");
    assert_eq!(power["users"], json!({alice.user_id.clone(): 100, bob.user_id.clone(): 30}));
    assert_eq!((&power["ban"], &power["state_default"]), (&json!(50), &json!(50)), "{power}");

    // room_alias_name: a canonical alias that resolves ("GET /directory/room/:room_alias yields
    // room ID"); a taken alias is M_ROOM_IN_USE.
    let room = create_room(&s, &alice, json!({"room_alias_name": "lobby"})).await;
    assert_eq!(
        state_content(&s, &alice, &room, "m.room.canonical_alias", "").await,
        json!({"alias": "#lobby:localhost"})
    );
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#lobby:localhost")), bob.token()).await;
    assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)), "{body}");
    assert_error(
        &try_create_room(&s, &bob, json!({"room_alias_name": "lobby"})).await,
        StatusCode::BAD_REQUEST,
        "M_ROOM_IN_USE",
    );
    assert_error(
        &try_create_room(&s, &bob, json!({"room_alias_name": "has:colon"})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // Sytest "… rejects attempts to create rooms with unknown versions" / "… numeric versions".
    for version in ["99", "9", "1"] {
        assert_error(
            &try_create_room(&s, &alice, json!({"room_version": version})).await,
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
        );
    }
    assert_error(
        &try_create_room(&s, &alice, json!({"room_version": 11})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let r = try_create_room(&s, &alice, json!({"preset": "party_chat"})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    assert!(matches!(r.1["errcode"].as_str(), Some("M_BAD_JSON" | "M_INVALID_PARAM")), "{}", r.1);
    assert_error(
        &s.post("/_matrix/client/v3/createRoom", None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    // No room was created by the refusals.
    assert_eq!(joined_rooms(&s, &bob).await, Vec::<String>::new());
}
