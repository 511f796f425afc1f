//! Sending and reading events: the event, state and history endpoints, pagination with tokens and
//! filters, context, transaction ids, size limits and what non-members are refused.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, assert_error};

use crate::rooms::{
    VERSIONS, bodies, create_room, enc, get_event, get_state, ids, invite, join, messages, next_txn, page, put_state,
    room_path, send, send_text, server_with, set_state, state_content, state_event, try_send,
};

#[tokio::test]
async fn send_and_read_back_events_and_state() {
    let (s, [alice]) = server_with(["alice"]).await;
    for v in VERSIONS {
        let room = create_room(&s, &alice, json!({"room_version": v})).await;
        // Sytest/Complement "PUT /rooms/:room_id/send/:event_type/:txn_id sends a message".
        let txn = next_txn();
        let (status, body) = s
            .put(
                &room_path(&room, &format!("send/m.room.message/{txn}")),
                alice.token(),
                json!({"msgtype": "m.text", "body": "hello"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let id = body["event_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with('$') && !id.contains(':'), "event ids of v4+ rooms are hashes: {id}");
        // Complement TestFetchEvent, TestTxnInEvent.
        let (status, event) = get_event(&s, &alice, &room, &id).await;
        assert_eq!(status, StatusCode::OK, "{event}");
        assert_eq!(event["content"], json!({"msgtype": "m.text", "body": "hello"}));
        assert_eq!(
            (&event["type"], &event["sender"], &event["room_id"], &event["event_id"]),
            (&json!("m.room.message"), &json!(alice.user_id), &json!(room), &json!(id))
        );
        assert!(event["origin_server_ts"].is_i64(), "{event}");
        assert_eq!(event["unsigned"]["transaction_id"], txn.as_str(), "{event}");
        for field in ["hashes", "signatures", "auth_events", "prev_events", "depth", "origin"] {
            assert!(event.get(field).is_none(), "{field} is federation-only: {event}");
        }
        // "GET /rooms/:room_id/messages returns a message".
        let latest = page(&s, &alice, &room, "dir=b&limit=1").await;
        assert_eq!(ids(&latest["chunk"]), std::slice::from_ref(&id));

        // State with and without the trailing slash of an empty state key ("POST /rooms/:room_id/
        // state/m.room.name sets name", "PUT /rooms/:room_id/state/m.room.topic sets topic").
        let (status, body) =
            s.put(&room_path(&room, "state/m.room.name/"), alice.token(), json!({"name": "One"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let name_id = body["event_id"].as_str().unwrap().to_owned();
        let (status, body) =
            s.put(&room_path(&room, "state/m.room.topic"), alice.token(), json!({"topic": "Things"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for path in ["state/m.room.name", "state/m.room.name/"] {
            assert_eq!(s.get(&room_path(&room, path), alice.token()).await, (StatusCode::OK, json!({"name": "One"})));
        }
        assert_eq!(state_content(&s, &alice, &room, "m.room.topic", "").await, json!({"topic": "Things"}));
        // "… ?format=event fetches my membership event".
        let name = state_event(&s, &alice, &room, "m.room.name", "").await;
        assert_eq!((&name["event_id"], &name["content"]), (&json!(name_id), &json!({"name": "One"})));
        let member = state_event(&s, &alice, &room, "m.room.member", &alice.user_id).await;
        assert_eq!((&member["state_key"], &member["content"]["membership"]), (&json!(alice.user_id), &json!("join")));
        // A replaced state event shows what it replaced.
        set_state(&s, &alice, &room, "m.room.name", "", json!({"name": "Two"})).await;
        let name = state_event(&s, &alice, &room, "m.room.name", "").await;
        assert_eq!(name["unsigned"]["prev_content"], json!({"name": "One"}), "{name}");
        // Any state key, encoded in the path.
        set_state(&s, &alice, &room, "org.example.thing", "a key/with ? and #", json!({"n": 1})).await;
        assert_eq!(state_content(&s, &alice, &room, "org.example.thing", "a key/with ? and #").await, json!({"n": 1}));
        assert_error(
            &get_state(&s, &alice, &room, "org.example.thing", "").await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
        // Complement "Setting state twice is idempotent".
        let first = set_state(&s, &alice, &room, "a.test.state.type", "", json!({"a_key": "a_value"})).await;
        let second = set_state(&s, &alice, &room, "a.test.state.type", "", json!({"a_key": "a_value"})).await;
        assert_eq!(first, second, "the same state twice is one event");

        // "GET /rooms/:room_id/state fetches entire room state".
        let (status, all) = s.get(&room_path(&room, "state"), alice.token()).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        let mut keys: Vec<(String, String)> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert!(e["event_id"].is_string() && e["sender"].is_string(), "{e}");
                (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned())
            })
            .collect();
        keys.sort();
        let mut want: Vec<(String, String)> = [
            ("a.test.state.type", ""),
            ("m.room.create", ""),
            ("m.room.guest_access", ""),
            ("m.room.history_visibility", ""),
            ("m.room.join_rules", ""),
            ("m.room.member", alice.user_id.as_str()),
            ("m.room.name", ""),
            ("m.room.power_levels", ""),
            ("m.room.topic", ""),
            ("org.example.thing", "a key/with ? and #"),
        ]
        .iter()
        .map(|(t, k)| ((*t).to_owned(), (*k).to_owned()))
        .collect();
        want.sort();
        assert_eq!(keys, want);
        let name_in_state = all.as_array().unwrap().iter().find(|e| e["type"] == "m.room.name").unwrap();
        assert_eq!(name_in_state["content"], json!({"name": "Two"}));
    }
}

#[tokio::test]
async fn transaction_ids_are_per_device_room_and_endpoint() {
    let (s, [alice]) = server_with(["alice"]).await;
    let laptop = s.login("alice", "pw").await;
    let room = create_room(&s, &alice, json!({})).await;
    let other_room = create_room(&s, &alice, json!({})).await;
    let put = async |who: &Account, room: &str, body: &str| {
        let r = s
            .put(&room_path(room, "send/m.room.message/abc"), who.token(), json!({"msgtype": "m.text", "body": body}))
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        r.1["event_id"].as_str().unwrap().to_owned()
    };
    // Sytest "… deduplicates the same txn id"; Complement TestTxnIdempotency: a retry returns the
    // first event, even with other content.
    let first = put(&alice, &room, "first").await;
    assert_eq!(put(&alice, &room, "first").await, first);
    assert_eq!(put(&alice, &room, "second").await, first);
    // Another device, or another room, is another transaction.
    let from_laptop = put(&laptop, &room, "first").await;
    assert_ne!(from_laptop, first);
    let elsewhere = put(&alice, &other_room, "first").await;
    assert_ne!(elsewhere, first);
    // So is another endpoint: a redaction with the same transaction id is a redaction.
    let (status, body) =
        s.put(&room_path(&room, &format!("redact/{}/abc", enc(&from_laptop))), alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["event_id"], first.as_str());
    let (_, redacted) = get_event(&s, &alice, &room, &from_laptop).await;
    assert_eq!(redacted["content"], json!({}), "{redacted}");

    // Complement TestTxnScopeOnLocalEcho: only the sending device sees its transaction id.
    assert_eq!(get_event(&s, &alice, &room, &first).await.1["unsigned"]["transaction_id"], "abc");
    assert!(get_event(&s, &laptop, &room, &first).await.1["unsigned"].get("transaction_id").is_none());
    let history = page(&s, &alice, &room, "dir=b&limit=10").await;
    assert_eq!(bodies(&history["chunk"]).iter().filter(|b| *b == "first").count(), 1, "{history}");
    assert!(!bodies(&history["chunk"]).contains(&"second".to_owned()));

    // Complement TestTxnIdWithRefreshToken: a refreshed access token is the same device.
    let (status, login) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "pw", "refresh_token": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let phone = Account::from_response(&login, "pw");
    let sent = put(&phone, &room, "from the phone").await;
    let (status, fresh) =
        s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let phone = Account { access_token: fresh["access_token"].as_str().unwrap().to_owned(), ..phone };
    assert_eq!(put(&phone, &room, "from the phone").await, sent);
    assert_eq!(get_event(&s, &phone, &room, &sent).await.1["unsigned"]["transaction_id"], "abc");

    // Logging out ends the device: logging in again with its id starts new transactions.
    assert_eq!(s.post("/_matrix/client/v3/logout", alice.token(), json!({})).await.0, StatusCode::OK);
    let (status, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "pw", "device_id": alice.device_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again = Account::from_response(&body, "pw");
    assert_eq!(again.device_id, alice.device_id);
    assert_ne!(put(&again, &room, "third").await, first);
}

#[tokio::test]
async fn event_size_and_json_limits() {
    let (s, [alice]) = server_with(["alice"]).await;
    let room = create_room(&s, &alice, json!({})).await;
    // Types and state keys: 255 bytes at most (the spec's size limits). Which error a longer one
    // gets is not specified: Synapse says 413 M_TOO_LARGE, a 400 M_BAD_JSON is as good.
    let refused = |r: &(StatusCode, Value)| {
        assert!(
            matches!(
                (r.0, r.1["errcode"].as_str()),
                (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")) | (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
            ),
            "{} {}",
            r.0,
            r.1
        );
    };
    let long_type = "t".repeat(255);
    send(&s, &alice, &room, &long_type, json!({})).await;
    refused(&try_send(&s, &alice, &room, &format!("{long_type}x"), json!({})).await);
    set_state(&s, &alice, &room, &long_type, "", json!({})).await;
    refused(&put_state(&s, &alice, &room, &format!("{long_type}x"), "", json!({})).await);
    let long_key = "ü".repeat(127) + "k";
    assert_eq!(long_key.len(), 255);
    set_state(&s, &alice, &room, "org.example.k", &long_key, json!({})).await;
    refused(&put_state(&s, &alice, &room, "org.example.k", &format!("{long_key}x"), json!({})).await);

    // Complement TestEvent (Sytest "Event size limits"): over 64 KiB as a PDU is 413 M_TOO_LARGE.
    let big = json!({"msgtype": "m.text", "body": "and they dont stop coming ".repeat(2700)});
    assert_error(
        &try_send(&s, &alice, &room, "m.room.message", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    let big_state = json!({"body": "Dormammu, I've Come To Bargain.\n".repeat(2200)});
    assert_error(
        &put_state(&s, &alice, &room, "marvel.universe.fate", "", big_state).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    // Just under the limit is fine, and comes back whole.
    let fits = "x".repeat(60_000);
    let id = send(&s, &alice, &room, "m.room.message", json!({"msgtype": "m.text", "body": fits})).await;
    assert_eq!(get_event(&s, &alice, &room, &id).await.1["content"]["body"].as_str().map(str::len), Some(60_000));

    // Complement TestJson (Sytest "Invalid JSON integers/floats/special values"): canonical JSON
    // has neither floats nor integers beyond 2^53.
    for (i, raw) in
        [r#"{"body": 9007199254740992}"#, r#"{"body": -9007199254740992}"#, r#"{"body": 1.1}"#].into_iter().enumerate()
    {
        let path = room_path(&room, &format!("send/complement.dummy/invalidnum-{i}"));
        assert_error(&s.raw("PUT", &path, alice.token(), raw.into()).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    for (i, raw) in [r#"{"body": Infinity}"#, r#"{"body": -Infinity}"#, r#"{"body": NaN}"#].into_iter().enumerate() {
        let path = room_path(&room, &format!("send/complement.dummy/invalidval-{i}"));
        let r = s.raw("PUT", &path, alice.token(), raw.into()).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{raw}: {}", r.1);
    }
    // Content must be an object.
    let r = s.raw("PUT", &room_path(&room, "send/m.room.message/array"), alice.token(), b"[1]".to_vec()).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    // None of the refusals reached the room.
    let history = page(&s, &alice, &room, "dir=b&limit=50").await;
    assert!(history["chunk"].as_array().unwrap().iter().all(|e| e["type"] != "complement.dummy"), "{history}");
}

#[tokio::test]
async fn non_members_are_refused() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"name": "secret"})).await;
    let id = send_text(&s, &alice, &room, "for members").await;
    let forbidden = |r: (StatusCode, Value)| assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    for stage in ["stranger", "invited"] {
        // Sytest "Local non-members don't see posted message events".
        forbidden(try_send(&s, &bob, &room, "m.room.message", json!({"msgtype": "m.text", "body": "hi"})).await);
        forbidden(put_state(&s, &bob, &room, "m.room.topic", "", json!({"topic": "x"})).await);
        forbidden(s.get(&room_path(&room, "state"), bob.token()).await);
        forbidden(get_state(&s, &bob, &room, "m.room.name", "").await);
        // An invitee may be refused, or shown nothing: this room's history is for members.
        let (status, history) = messages(&s, &bob, &room, "dir=b").await;
        match (stage, status) {
            ("invited", StatusCode::OK) => assert_eq!(bodies(&history["chunk"]), Vec::<String>::new()),
            _ => assert_error(&(status, history), StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        }
        forbidden(s.get(&room_path(&room, "members"), bob.token()).await);
        forbidden(s.get(&room_path(&room, "joined_members"), bob.token()).await);
        // Sytest "/context/ on non world readable room does not work" (an invitee may instead be
        // told the event is not there for them).
        let context = s.get(&room_path(&room, &format!("context/{}", enc(&id))), bob.token()).await;
        match (stage, context.0) {
            ("invited", StatusCode::NOT_FOUND) => assert_error(&context, StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            _ => forbidden(context),
        }
        // Complement TestFetchEventNonWorldReadable: 404, the event's existence is not revealed.
        assert_error(&get_event(&s, &bob, &room, &id).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        if stage == "stranger" {
            invite(&s, &alice, &room, &bob.user_id).await;
        }
    }
    // Complement TestFetchMessagesFromNonExistentRoom.
    forbidden(messages(&s, &alice, "!does-not-exist:localhost", "dir=b").await);
    assert_error(&get_event(&s, &alice, "!does-not-exist:localhost", &id).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.get(&room_path(&room, "messages?dir=b"), None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    // Nothing of Bob's reached the room.
    let history = page(&s, &alice, &room, "dir=b&limit=50").await;
    assert!(history["chunk"].as_array().unwrap().iter().all(|e| e["sender"] == alice.user_id.as_str()), "{history}");
}

/// The body of a message, or the type of any other event.
fn label(event: &Value) -> String {
    event["content"]["body"].as_str().or(event["type"].as_str()).unwrap_or_default().to_owned()
}

fn labels(events: &Value) -> Vec<String> {
    events.as_array().expect("events").iter().map(label).collect()
}

#[tokio::test]
async fn messages_paginate_both_ways_with_tokens_and_filters() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    for i in 0..10 {
        send_text(&s, &alice, &room, &format!("m{i}")).await;
        match i {
            4 => {
                send_text(&s, &bob, &room, "b0").await;
            }
            7 => {
                send(&s, &alice, &room, "org.example.ping", json!({"n": 1})).await;
            }
            _ => {}
        }
    }
    let q = |query: String| {
        let (s, alice, room) = (&s, &alice, &room);
        async move { page(s, alice, room, &query).await }
    };
    // Sytest "Message history can be paginated": backwards, newest first, `end` continues.
    let p1 = q("dir=b&limit=3".into()).await;
    assert_eq!(labels(&p1["chunk"]), ["m9", "m8", "org.example.ping"]);
    assert!(p1["start"].is_string(), "{p1}");
    let end1 = p1["end"].as_str().expect("end").to_owned();
    let p2 = q(format!("dir=b&limit=3&from={}", enc(&end1))).await;
    assert_eq!(labels(&p2["chunk"]), ["m7", "m6", "m5"]);
    assert_eq!(p2["start"], end1.as_str(), "start is the from token");
    let end2 = p2["end"].as_str().expect("end").to_owned();
    let p3 = q(format!("dir=b&limit=3&from={}", enc(&end2))).await;
    assert_eq!(labels(&p3["chunk"]), ["b0", "m4", "m3"]);
    // Tokens lie between events: forwards from one to another gives what lies between.
    let between = q(format!("dir=f&from={}&to={}", enc(&end2), enc(&end1))).await;
    assert_eq!(labels(&between["chunk"]), ["m5", "m6", "m7"]);
    let newest = q(format!("dir=b&limit=100&to={}", enc(&end2))).await;
    assert_eq!(labels(&newest["chunk"]), ["m9", "m8", "org.example.ping", "m7", "m6", "m5"]);
    // The default limit is 10.
    assert_eq!(q("dir=b".into()).await["chunk"].as_array().unwrap().len(), 10);

    // Forwards without a token starts at the beginning; the last page has no `end`.
    let all = q("dir=f&limit=100".into()).await;
    assert!(all.get("end").is_none(), "nothing more to read: {all}");
    let forwards = ids(&all["chunk"]);
    assert_eq!(all["chunk"][0]["type"], "m.room.create");
    let all_labels = labels(&all["chunk"]);
    assert_eq!(
        all_labels[all_labels.len() - 12..],
        ["m0", "m1", "m2", "m3", "m4", "b0", "m5", "m6", "m7", "org.example.ping", "m8", "m9"]
    );
    // Paging backwards to the start sees the same events in reverse, each once.
    let mut backwards = Vec::new();
    let mut from = String::new();
    for _ in 0..50 {
        let p = q(format!("dir=b&limit=4{from}")).await;
        backwards.extend(ids(&p["chunk"]));
        match p["end"].as_str() {
            Some(end) => from = format!("&from={}", enc(end)),
            None => break,
        }
    }
    backwards.reverse();
    assert_eq!(backwards, forwards);

    // Filters (a RoomEventFilter as JSON in the query).
    let filtered =
        async |filter: Value| labels(&q(format!("dir=b&limit=100&filter={}", enc(&filter.to_string()))).await["chunk"]);
    let texts: Vec<String> =
        ["m9", "m8", "m7", "m6", "m5", "b0", "m4", "m3", "m2", "m1", "m0"].iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(filtered(json!({"types": ["m.room.message"]})).await, texts);
    assert!(filtered(json!({"not_types": ["m.room.message"]})).await.iter().all(|l| !texts.contains(l)));
    assert_eq!(filtered(json!({"senders": [bob.user_id]})).await, ["b0", "m.room.member"]);
    assert_eq!(filtered(json!({"types": ["org.*"]})).await, ["org.example.ping"]);
    assert_eq!(filtered(json!({"types": ["m.room.message"], "not_senders": [alice.user_id]})).await, ["b0"]);

    // Bad parameters are 400s, not 500s.
    for query in ["dir=x", "dir=b&from=garbage", "dir=b&filter=notjson", "dir=b&limit=many"] {
        let (status, body) = messages(&s, &alice, &room, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["errcode"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn messages_lazy_load_members() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &charlie, &room).await;
    send_text(&s, &bob, &room, "from bob").await;
    let before = page(&s, &alice, &room, "dir=b&limit=1").await["start"].as_str().unwrap().to_owned();
    send_text(&s, &charlie, &room, "from charlie").await;
    let after = page(&s, &alice, &room, "dir=b&limit=1").await["start"].as_str().unwrap().to_owned();
    // Complement TestRoomMessagesLazyLoading: only the senders of the chunk come with it.
    let lazy = enc(r#"{"lazy_load_members": true}"#);
    let p = page(&s, &alice, &room, &format!("dir=f&from={}&to={}&filter={lazy}", enc(&before), enc(&after))).await;
    assert_eq!(bodies(&p["chunk"]), ["from charlie"]);
    let state = p["state"].as_array().expect("state");
    assert_eq!(state.len(), 1, "{p}");
    assert_eq!(
        (&state[0]["type"], &state[0]["state_key"], &state[0]["content"]["membership"]),
        (&json!("m.room.member"), &json!(charlie.user_id), &json!("join"))
    );
    // Without lazy loading there is no state.
    let p = page(&s, &alice, &room, &format!("dir=f&from={}&to={}", enc(&before), enc(&after))).await;
    assert!(p.get("state").is_none_or(|s| s.as_array().is_some_and(Vec::is_empty)), "{p}");
}

#[tokio::test]
async fn context_around_an_event() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let mut e = Vec::new();
    for i in 1..=5 {
        e.push(send_text(&s, &alice, &room, &format!("e{i}")).await);
    }
    let context = async |who: &Account, event: &str, query: &str| {
        s.get(&room_path(&room, &format!("context/{}?{query}", enc(event))), who.token()).await
    };
    // Sytest "/context/ on joined room works", "/context/ returns correct number of events".
    let (status, body) = context(&alice, &e[2], "limit=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["event_id"], e[2].as_str());
    assert_eq!(body["event"]["content"]["body"], "e3");
    assert_eq!(ids(&body["events_before"]), [e[1].clone()], "{body}");
    assert_eq!(ids(&body["events_after"]), [e[3].clone()]);
    assert!(body["state"].as_array().unwrap().iter().any(|s| s["type"] == "m.room.create"), "{body}");
    // Its tokens continue with /messages.
    let older = page(&s, &alice, &room, &format!("dir=b&limit=1&from={}", enc(body["start"].as_str().unwrap()))).await;
    assert_eq!(ids(&older["chunk"]), [e[0].clone()]);
    let newer = page(&s, &alice, &room, &format!("dir=f&limit=1&from={}", enc(body["end"].as_str().unwrap()))).await;
    assert_eq!(ids(&newer["chunk"]), [e[4].clone()]);
    // limit=0 still returns the event.
    let (status, body) = context(&alice, &e[2], "limit=0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["event_id"], e[2].as_str());
    assert!(
        body["events_before"].as_array().is_none_or(Vec::is_empty)
            && body["events_after"].as_array().is_none_or(Vec::is_empty),
        "{body}"
    );
    // Sytest "/context/ with lazy_load_members filter works": only the senders' members.
    let filter = enc(r#"{"lazy_load_members": true}"#);
    let (status, body) = context(&alice, &e[2], &format!("limit=4&filter={filter}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let members: Vec<&Value> = body["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "m.room.member")
        .map(|s| &s["state_key"])
        .collect();
    assert_eq!(members, [&json!(alice.user_id)], "{body}");
    // The filter applies to the surrounding events, not to the event itself.
    let filter = enc(&json!({"senders": [bob.user_id]}).to_string());
    let (status, body) = context(&bob, &e[2], &format!("limit=4&filter={filter}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["event_id"], e[2].as_str());
    assert!(bodies(&body["events_before"]).is_empty() && bodies(&body["events_after"]).is_empty(), "{body}");
    // Unknown events, and events of another room, are 404s.
    let other = create_room(&s, &alice, json!({})).await;
    let elsewhere = send_text(&s, &alice, &other, "elsewhere").await;
    for event in ["$unknown", elsewhere.as_str()] {
        assert_error(&context(&alice, event, "limit=2").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
}
