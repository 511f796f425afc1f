//! Account data (global and per room) and sync filters.

use serde_json::{Value, json};
use spec_tests::{StatusCode, TestServer, assert_error};

fn global(user: &str, data_type: &str) -> String {
    format!("/_matrix/client/v3/user/{user}/account_data/{data_type}")
}

fn room(user: &str, room_id: &str, data_type: &str) -> String {
    format!("/_matrix/client/v3/user/{user}/rooms/{room_id}/account_data/{data_type}")
}

fn filters(user: &str) -> String {
    format!("/_matrix/client/v3/user/{user}/filter")
}

#[tokio::test]
async fn global_and_room_account_data() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let me = alice.user_id.as_str();
    let settings = json!({"theme": "dark", "nested": {"list": [1, "two", null], "flag": true}});

    // Sytest "Can add account data" / "Can get account data without syncing".
    let r = s.put(&global(me, "org.example.settings"), alice.token(), settings.clone()).await;
    assert_eq!(r, (StatusCode::OK, json!({})));
    assert_eq!(s.get(&global(me, "org.example.settings"), alice.token()).await, (StatusCode::OK, settings.clone()));
    // Setting again replaces the content.
    s.put(&global(me, "org.example.settings"), alice.token(), json!({"theme": "light"})).await;
    assert_eq!(s.get(&global(me, "org.example.settings"), alice.token()).await.1, json!({"theme": "light"}));

    // "Can add account data to room" / "Can get room account data without syncing".
    let room_id = "!room:localhost";
    let tag = json!({"tags": {"u.work": {"order": 0.5}}});
    assert_eq!(s.put(&room(me, room_id, "org.example.tag"), alice.token(), tag.clone()).await.0, StatusCode::OK);
    assert_eq!(s.get(&room(me, room_id, "org.example.tag"), alice.token()).await, (StatusCode::OK, tag));
    // Global and per-room data, and different rooms, are separate namespaces.
    assert_error(&s.get(&global(me, "org.example.tag"), alice.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.get(&room(me, room_id, "org.example.settings"), alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&room(me, "!other:localhost", "org.example.tag"), alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(&s.get(&global(me, "org.example.unset"), alice.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Types the server manages: 405 M_BAD_JSON, globally and per room.
    for data_type in ["m.push_rules", "m.fully_read"] {
        let r = s.put(&global(me, data_type), alice.token(), json!({})).await;
        assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
        let r = s.put(&room(me, room_id, data_type), alice.token(), json!({"event_id": "$e"})).await;
        assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
    }
    assert_error(&s.get(&room(me, room_id, "m.fully_read"), alice.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Content must be a JSON object.
    for body in [b"[1, 2]".to_vec(), b"\"text\"".to_vec(), b"5".to_vec(), b"null".to_vec()] {
        let r = s.raw("PUT", &global(me, "org.example.x"), alice.token(), body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    let r = s.raw("PUT", &global(me, "org.example.x"), alice.token(), b"{nope".to_vec()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    // Bad room ids and over-long types.
    assert_error(
        &s.put(&room(me, "not-a-room", "org.example.x"), alice.token(), json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&global(me, &"t".repeat(300)), alice.token(), json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // Another user's account data: 403 both ways, and nothing leaks or changes.
    let bob = s.register("bob", "pw").await;
    assert_error(&s.get(&global(me, "org.example.settings"), bob.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.put(&global(me, "org.example.settings"), bob.token(), json!({"theme": "evil"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&room(me, room_id, "org.example.tag"), bob.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.put(&room(me, room_id, "org.example.tag"), bob.token(), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(s.get(&global(me, "org.example.settings"), alice.token()).await.1, json!({"theme": "light"}));
    assert_error(
        &s.get(&global(&bob.user_id, "org.example.settings"), bob.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(&s.get(&global(me, "org.example.settings"), None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn filters_round_trip() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let path = filters(&alice.user_id);
    let filter = json!({
        "room": {
            "not_rooms": ["!excluded:localhost"],
            "timeline": {"limit": 10, "types": ["m.room.message"], "not_senders": ["@spam:localhost"]},
            "state": {"lazy_load_members": true},
        },
        "presence": {"not_types": ["*"]},
        "account_data": {"types": ["m.*"]},
        "event_fields": ["type", "content.body"],
        "event_format": "federation",
    });

    // Sytest/Complement "Can create filter" / "Can download filter".
    let (status, created) = s.post(&path, alice.token(), filter.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["filter_id"].as_str().expect("filter_id is a string").to_owned();
    let (status, stored) = s.get(&format!("{path}/{id}"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    for pointer in [
        "/room/not_rooms",
        "/room/timeline/limit",
        "/room/timeline/types",
        "/room/timeline/not_senders",
        "/room/state/lazy_load_members",
        "/presence/not_types",
        "/account_data/types",
        "/event_fields",
        "/event_format",
    ] {
        assert_eq!(stored.pointer(pointer), filter.pointer(pointer), "{pointer} in {stored}");
    }
    // Ids are distinct, per filter.
    let (status, second) = s.post(&path, alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["filter_id"], created["filter_id"]);
    assert_eq!(
        s.get(&format!("{path}/{}", second["filter_id"].as_str().unwrap()), alice.token()).await.0,
        StatusCode::OK
    );

    // Unknown ids.
    for unknown in ["4711", "not-a-number", "-1"] {
        assert_error(&s.get(&format!("{path}/{unknown}"), alice.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }

    // Sytest "Check creating invalid filters returns 4xx" (here: exactly 400 M_BAD_JSON).
    let invalid: Vec<Value> = vec![
        json!({"presence": "not_an_object"}),
        json!({"room": {"timeline": "not_an_object"}}),
        json!({"room": {"state": "not_an_object"}}),
        json!({"room": {"ephemeral": "not_an_object"}}),
        json!({"room": {"account_data": "not_an_object"}}),
        json!({"room": {"timeline": {"rooms": "not_a_list"}}}),
        json!({"room": {"timeline": {"not_rooms": "not_a_list"}}}),
        json!({"room": {"timeline": {"senders": "not_a_list"}}}),
        json!({"room": {"timeline": {"not_senders": "not_a_list"}}}),
        json!({"room": {"timeline": {"types": "not_a_list"}}}),
        json!({"room": {"timeline": {"not_types": "not_a_list"}}}),
        json!({"room": {"timeline": {"types": [0]}}}),
        json!({"room": {"timeline": {"rooms": ["not_a_room_id"]}}}),
        json!({"room": {"timeline": {"senders": ["not_a_sender_id"]}}}),
        json!({"room": {"timeline": {"limit": "x"}}}),
        json!({"room": {"timeline": {"limit": -1}}}),
        json!({"event_fields": "not_a_list"}),
        json!({"event_fields": [1]}),
        json!({"event_format": "neither_client_nor_federation"}),
    ];
    for bad in invalid {
        let r = s.post(&path, alice.token(), bad.clone()).await;
        assert_eq!((r.0, r.1["errcode"].clone()), (StatusCode::BAD_REQUEST, json!("M_BAD_JSON")), "{bad} → {}", r.1);
    }

    // Another user's filters: 403 both ways; filter ids are per user.
    let bob = s.register("bob", "pw").await;
    assert_error(&s.post(&path, bob.token(), json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.get(&format!("{path}/{id}"), bob.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.get(&format!("{}/{id}", filters(&bob.user_id)), bob.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(&s.post(&path, None, json!({})).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
