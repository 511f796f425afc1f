//! A local user joins a room the fake origin server hosts, and the origin's answers to
//! `/make_join` and `/send_join` go wrong in the ways Sytest's `50federation/30room-join`
//! describes: the client gets a clear Matrix error and the real server keeps nothing of the
//! room, or (for single bad events in the answer) the join succeeds without them.

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error};

use super::origin::{Origin, enc};

const MAKE_JOIN: &str = "/_matrix/federation/v1/make_join/";
const SEND_JOIN: &str = "/_matrix/federation/v2/send_join/";

/// A federating real server with Bob, and a fake origin.
async fn setup() -> (TestServer, Account, Origin) {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let bob = a.register("bob", "pw-bob-12345").await;
    (a, bob, Origin::start().await)
}

/// Bob joins `room_id` through the origin.
pub(crate) async fn join(a: &TestServer, bob: &Account, room_id: &str, origin: &Origin) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/join/{}?via={}", enc(room_id), origin.name);
    a.post(&path, bob.token(), json!({})).await
}

/// The real server holds nothing of the room: no row names it, Bob is in no room.
async fn assert_nothing_stored(a: &TestServer, bob: &Account, room_id: &str) {
    let dump = spec_tests::dump_database(&a.database_url).await;
    let rows: Vec<&str> = dump.lines().filter(|l| l.contains(room_id)).collect();
    assert!(rows.is_empty(), "stored for the room:\n{}", rows.join("\n"));
    let (status, rooms) = a.get("/_matrix/client/v3/joined_rooms", bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{rooms}");
    assert_eq!(rooms["joined_rooms"], json!([]), "{rooms}");
}

/// Whether Bob's `/sync` shows him joined to the room.
pub(crate) async fn synced_join(a: &TestServer, bob: &Account, room_id: &str) -> Value {
    let (status, sync) = a.get("/_matrix/client/v3/sync", bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    let room = sync["rooms"]["join"][room_id].clone();
    let events = room["timeline"]["events"].as_array().cloned().unwrap_or_default();
    let member = events.iter().chain(room["state"]["events"].as_array().into_iter().flatten()).find(|e| {
        e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "join"
    });
    assert!(member.is_some(), "Bob's join is not in his sync: {room}");
    room
}

/// Sytest "Outbound federation passes make_join failures through to the client": the origin's
/// 403 `M_FORBIDDEN` and a 400 with a code of its own reach the client as they are.
#[tokio::test]
async fn make_join_failures_reach_the_client() {
    let (a, bob, origin) = setup().await;
    let room_id = origin.host_room("11", "carol", true);
    origin.serve_status(MAKE_JOIN, 403, json!({"errcode": "M_FORBIDDEN", "error": "You are not invited"}));
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    origin.serve_status(MAKE_JOIN, 400, json!({"errcode": "M_TEST_ERROR_CODE", "error": "denied!"}));
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_TEST_ERROR_CODE");
    // A code about the client's own session is not passed on: Bob's token is fine.
    origin.serve_status(MAKE_JOIN, 403, json!({"errcode": "M_UNKNOWN_TOKEN", "error": "who are you"}));
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(origin.seen(SEND_JOIN).is_empty(), "a join was sent after make_join failed");
    assert_nothing_stored(&a, &bob, &room_id).await;
}

/// Sytest "Outbound federation correctly handles unsupported room versions": the origin's
/// `M_INCOMPATIBLE_ROOM_VERSION` reaches the client with the room's version, whether this
/// server knows that version or not; a template for a version this server does not know is
/// refused with `M_UNSUPPORTED_ROOM_VERSION` before anything is signed or sent.
#[tokio::test]
async fn unsupported_room_versions_are_refused() {
    let (a, bob, origin) = setup().await;
    let room_id = origin.host_room("11", "carol", true);
    // Also when the refusal names a version this server supports (and so named in `ver`): the
    // other server contradicts itself, but the client learns why it cannot join.
    for version in ["sytest-room-ver", "11"] {
        origin.serve_status(
            MAKE_JOIN,
            400,
            json!({"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "y u no upgrade", "room_version": version}),
        );
        let refused = join(&a, &bob, &room_id, &origin).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION");
        assert_eq!(refused.1["room_version"], version, "{}", refused.1);
    }
    let asked = origin.seen(MAKE_JOIN);
    assert!(asked.iter().all(|r| r.path.contains("ver=11")), "make_join without ver=11: {:?}", asked[0].path);

    let template = json!({
        "room_id": room_id, "sender": bob.user_id, "state_key": bob.user_id, "type": "m.room.member",
        "content": {"membership": "join"}, "prev_events": [], "auth_events": [], "depth": 5,
    });
    origin.serve(MAKE_JOIN, json!({"room_version": "sytest-room-ver", "event": template}));
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    // A template that names no version is of version 1, which this server does not support.
    origin.serve(MAKE_JOIN, json!({"event": template}));
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    assert!(origin.seen(SEND_JOIN).is_empty(), "a join was sent for an unsupported version");
    assert_nothing_stored(&a, &bob, &room_id).await;
}

/// A join tried through several servers ends with the most telling failure: the origin's
/// refusal for the room's version (`M_INCOMPATIBLE_ROOM_VERSION` naming version 11, which this
/// server supports) ends the attempts at once, and its `M_FORBIDDEN` wins over the outage of
/// the server the room's id names; neither reaches the client as a 502.
#[tokio::test]
async fn a_refusal_through_one_server_is_not_hidden_by_the_next_servers_outage() {
    let (a, bob, origin) = setup().await;
    // The room's id names a server that is gone (nothing listens there); it is tried after the
    // origin named in `via`.
    let down = format!("127.0.0.1:{}", spec_tests::free_port());
    let room_id = format!("!gone:{down}");
    let path = format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), origin.name);
    origin.serve_status(
        MAKE_JOIN,
        400,
        json!({"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "not for you", "room_version": "11"}),
    );
    let refused = a.post(&path, bob.token(), json!({})).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION");
    assert_eq!(refused.1["room_version"], "11", "{}", refused.1);
    origin.serve_status(MAKE_JOIN, 403, json!({"errcode": "M_FORBIDDEN", "error": "You are not invited"}));
    let refused = a.post(&path, bob.token(), json!({})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(origin.seen(SEND_JOIN).is_empty(), "a join was sent after make_join failed");
    assert_nothing_stored(&a, &bob, &room_id).await;
}

/// Sytest "Outbound federation rejects m.room.create events with an unknown room version": the
/// template says version 11, the create event in the `/send_join` answer names a version this
/// server does not know; the join fails and nothing of the room is kept.
#[tokio::test]
async fn a_create_event_of_an_unknown_version_is_refused() {
    let (a, bob, origin) = setup().await;
    let room_id = origin.host_room_with_create("11", "carol", true, json!({"room_version": "sytest-room-ver"}));
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    assert_eq!(origin.seen(SEND_JOIN).len(), 1, "the join was not sent");
    assert_nothing_stored(&a, &bob, &room_id).await;

    // One naming a version this server knows, but another than the template's, likewise.
    let room_id = origin.host_room_with_create("11", "carol", true, json!({"room_version": "10"}));
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(refused.0, StatusCode::BAD_GATEWAY, "{}", refused.1);
    assert_nothing_stored(&a, &bob, &room_id).await;
}

/// Sytest "Outbound federation rejects send_join responses with no m.room.create event": the
/// join fails with a gateway error naming the problem, and nothing is kept. The same room
/// joined again once the origin answers properly works (nothing stale is in the way).
#[tokio::test]
async fn a_send_join_answer_without_a_create_event_is_refused() {
    let (a, bob, origin) = setup().await;
    let room_id = origin.host_room("12", "carol", true);
    origin.hide_in_send_join(&room_id, "m.room.create");
    let refused = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(refused.0, StatusCode::BAD_GATEWAY, "{}", refused.1);
    assert!(refused.1["error"].as_str().unwrap_or_default().contains("create"), "{}", refused.1);
    assert_nothing_stored(&a, &bob, &room_id).await;

    let room_id = origin.host_room("12", "carol", true);
    let (status, answer) = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    synced_join(&a, &bob, &room_id).await;
}

/// Sytest "Event with an invalid signature in the send_join response should not cause room
/// join to fail": a state event changed after it was signed is dropped, the join succeeds,
/// and the room's state here has the event neither as signed nor as changed.
#[tokio::test]
async fn an_event_with_a_bad_signature_in_the_send_join_answer_is_dropped() {
    let (a, bob, origin) = setup().await;
    let room_id = origin.host_room("11", "carol", true);
    let carol = format!("@carol:{}", origin.name);
    let mut bad = origin.host_build(&room_id, "test", Some(""), &carol, json!({"body": "Test"}));
    bad.json["state_key"] = "something".into();
    origin.host_add(&room_id, &bad);
    origin.host_event(&room_id, "m.room.topic", Some(""), &carol, json!({"topic": "kept"}));

    let (status, answer) = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert_eq!(answer["room_id"], room_id.as_str());
    synced_join(&a, &bob, &room_id).await;
    for key in ["something", ""] {
        let path = format!("/_matrix/client/v3/rooms/{}/state/test/{key}", enc(&room_id));
        let result = a.get(&path, bob.token()).await;
        assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room_id));
    let (status, topic) = a.get(&path, bob.token()).await;
    assert_eq!((status, &topic["topic"]), (StatusCode::OK, &json!("kept")), "the good state event is missing: {topic}");
}

/// Sytest "Membership event with an invalid displayname in the send_join response should not
/// cause room join to fail": Carol's membership names a list as display name and avatar; the
/// join succeeds, her membership is in the state, and the room lists its members.
#[tokio::test]
async fn a_membership_with_an_invalid_displayname_in_the_send_join_answer_does_not_fail_the_join() {
    let (a, bob, origin) = setup().await;
    let room_id = origin.host_room("11", "carol", true);
    let carol = format!("@carol:{}", origin.name);
    let dodgy = json!({"membership": "join", "displayname": [], "avatar_url": []});
    origin.host_event(&room_id, "m.room.member", Some(&carol), &carol, dodgy);

    let (status, answer) = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    synced_join(&a, &bob, &room_id).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&carol));
    let (status, member) = a.get(&path, bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["membership"], "join", "{member}");
    let (status, members) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room_id)), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert!(members["joined"].get(&carol).is_some() && members["joined"].get(&bob.user_id).is_some(), "{members}");
}

/// A state event with a float in its content in the `/send_join` answer of a room version 11
/// room (signed as Synapse signs such JSON) is dropped like one with a bad signature: the join
/// succeeds and the room's state here lacks it, but has the good event after it.
#[tokio::test]
async fn an_event_with_invalid_json_in_the_send_join_answer_is_dropped() {
    let (a, bob, origin) = setup().await;
    let room_id = origin.host_room("11", "carol", true);
    let carol = format!("@carol:{}", origin.name);
    let (event, rules) = origin.host_draft(&room_id, "test", Some(""), &carol, json!({"body": "Test", "bad_val": 1.1}));
    let bad = origin.sign_noncanonical(event, &rules);
    origin.host_add(&room_id, &bad);
    origin.host_event(&room_id, "m.room.topic", Some(""), &carol, json!({"topic": "kept"}));

    let (status, answer) = join(&a, &bob, &room_id, &origin).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    synced_join(&a, &bob, &room_id).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/test/", enc(&room_id));
    assert_error(&a.get(&path, bob.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room_id));
    let (status, topic) = a.get(&path, bob.token()).await;
    assert_eq!((status, &topic["topic"]), (StatusCode::OK, &json!("kept")), "the good state event is missing: {topic}");
}
