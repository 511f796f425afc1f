//! What another server may ask of ours and what it may not (Sytest `50federation`): a server
//! acts only for its own users (joins, leaves, typing, receipts), joins only rooms of a version
//! it supports and that this server is in, and reads state only of events of the room asked
//! about; events holding JSON that room versions 6 and later forbid are refused, sent or answered. Each
//! refusal beside the same request allowed, so a refusal cannot pass by accident.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error};

use super::{
    origin::{Draft, Origin, enc, now_ms},
    rooms::public_room,
};

/// A federating server with Alice and her public room of version 11.
async fn alice_and_her_room() -> (TestServer, Account, String) {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let room = public_room(&a, &alice, "11").await;
    (a, alice, room)
}

async fn membership(a: &TestServer, alice: &Account, room: &str, user: &str) -> Option<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(user));
    let (status, content) = a.get(&path, alice.token()).await;
    (status == StatusCode::OK).then(|| content["membership"].as_str().unwrap_or_default().to_owned())
}

/// `/make_join` and `/make_leave` only for the asking server's own users (Sytest "Inbound
/// /v1/make_join rejects remote attempts to join local users to rooms", "Inbound federation
/// rejects remote attempts to kick local users to rooms"); only for a room version the asking
/// server names ("Inbound federation rejects attempts to join v2 rooms from servers lacking
/// version support", "… accepts attempts to join v2 rooms from servers with support"); only
/// for rooms this server is in ("Inbound /make_join rejects attempts to join rooms where all
/// users have left").
#[tokio::test]
async fn make_join_and_make_leave_only_for_the_servers_own_users_and_versions() {
    let (a, alice, room) = alice_and_her_room().await;
    let origin = Origin::start().await;
    let mallory = format!("@mallory:{}", origin.name);
    let make = |kind: &str, user: &str, query: &str| {
        format!("/_matrix/federation/v1/{kind}/{}/{}{query}", enc(&room), enc(user))
    };

    for (kind, user) in [("make_join", alice.user_id.as_str()), ("make_leave", alice.user_id.as_str())] {
        let answer = origin.request(&a, "GET", &make(kind, user, "?ver=11"), None).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let answer = origin.request(&a, "GET", &make("make_join", "@eve:127.0.0.1:1", "?ver=11"), None).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Versions: none named means version 1 only.
    for query in ["", "?ver=1", "?ver=10&ver=12"] {
        let answer = origin.request(&a, "GET", &make("make_join", &mallory, query), None).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION");
        assert_eq!(answer.1["room_version"], "11", "{}", answer.1);
    }
    let (status, template) = origin.request(&a, "GET", &make("make_join", &mallory, "?ver=10&ver=11"), None).await;
    assert_eq!(status, StatusCode::OK, "{template}");
    assert_eq!(
        (template["room_version"].as_str(), template["event"]["sender"].as_str()),
        (Some("11"), Some(mallory.as_str()))
    );
    assert_eq!(template["event"]["content"]["membership"], "join");

    // Unknown rooms, and a room every user of this server has left.
    let unknown = format!("/_matrix/federation/v1/make_join/{}/{}?ver=11", enc("!nothing:example.org"), enc(&mallory));
    let answer = origin.request(&a, "GET", &unknown, None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, answer) =
        a.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer = origin.request(&a, "GET", &make("make_join", &mallory, "?ver=11"), None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

/// `/send_join` takes the asking server's own user's join only: a join of a third server's
/// user, signed properly by that server, relayed by another is refused (Sytest "Inbound
/// /v1/send_join rejects joins from other servers"); so is a join whose signature does not
/// verify ("Inbound /v1/send_join rejects incorrectly-signed joins"). Neither user is in the
/// room afterwards; the third server's user then joins through their own server.
#[tokio::test]
async fn send_join_takes_only_the_servers_own_users_signed_join() {
    let (a, alice, room) = alice_and_her_room().await;
    let relay = Origin::start().await;
    let third = Origin::start().await;
    let send_join = |id: &str| format!("/_matrix/federation/v2/send_join/{}/{}", enc(&room), enc(id));

    let (eve_join, _) = third.signed_join(&a, &room, "eve", "11").await;
    let answer = relay.request(&a, "PUT", &send_join(&eve_join.id), Some(&eve_join.json)).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let eve = format!("@eve:{}", third.name);
    assert_eq!(membership(&a, &alice, &room, &eve).await, None);

    let (mallory_join, _) = relay.signed_join(&a, &room, "mallory", "11").await;
    let mut forged = mallory_join.json.clone();
    let signatures = forged["signatures"][&relay.name].as_object_mut().expect("the relay's signature");
    for signature in signatures.values_mut() {
        *signature = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    }
    let (status, answer) = relay.request(&a, "PUT", &send_join(&mallory_join.id), Some(&forged)).await;
    assert!(status.is_client_error(), "{status} {answer}");
    assert!(answer["errcode"].as_str().is_some_and(|c| c.starts_with("M_")), "{answer}");
    let mallory = format!("@mallory:{}", relay.name);
    assert_eq!(membership(&a, &alice, &room, &mallory).await, None);

    // The same join sent by Eve's own server is accepted.
    let (status, answer) = third.request(&a, "PUT", &send_join(&eve_join.id), Some(&eve_join.json)).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert_eq!(membership(&a, &alice, &room, &eve).await.as_deref(), Some("join"));
}

/// `/state` and `/state_ids` need `event_id` (Sytest "Inbound federation of state requires
/// event_id as a mandatory paramater", "… of state_ids …"), and the event must belong to the
/// room named ("Getting state checks the events requested belong to the room", "Getting state
/// IDs checks …"); `/event_auth` likewise.
#[tokio::test]
async fn state_is_read_only_at_an_event_of_the_room() {
    let (a, alice, room) = alice_and_her_room().await;
    let other = public_room(&a, &alice, "11").await;
    let origin = Origin::start().await;
    let joined = origin.join(&a, &room, "mallory", "11").await;
    let elsewhere = origin.join(&a, &other, "mallory", "11").await;

    for endpoint in ["state", "state_ids"] {
        let path = format!("/_matrix/federation/v1/{endpoint}/{}", enc(&room));
        let (status, answer) = origin.request(&a, "GET", &path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{endpoint}: {answer}");
        assert!(answer["errcode"].as_str().is_some_and(|c| c.starts_with("M_")), "{answer}");
        let at = |event: &str| format!("{path}?event_id={}", enc(event));
        let answer = origin.request(&a, "GET", &at(&elsewhere.join), None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (status, answer) = origin.request(&a, "GET", &at(&joined.join), None).await;
        assert_eq!(status, StatusCode::OK, "{endpoint}: {answer}");
    }
    let auth = |event: &str| format!("/_matrix/federation/v1/event_auth/{}/{}", enc(&room), enc(event));
    let answer = origin.request(&a, "GET", &auth(&elsewhere.join), None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, answer) = origin.request(&a, "GET", &auth(&joined.join), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Typing notifications and read receipts only for the sending server's own users (Sytest
/// "Inbound federation rejects typing notifications from wrong remote", "Inbound federation
/// rejects receipts from wrong remote"): those naming Alice are dropped; Mallory's in the same
/// transactions arrive.
#[tokio::test]
async fn typing_and_receipts_only_for_the_servers_own_users() {
    let (a, alice, room) = alice_and_her_room().await;
    let origin = Origin::start().await;
    let joined = origin.join(&a, &room, "mallory", "11").await;
    let (_, first) = a.get("/_matrix/client/v3/sync?timeout=0", alice.token()).await;
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();

    let typing = |user: &str| ("m.typing", json!({"room_id": room, "user_id": user, "typing": true}));
    let receipt = |user: &str| {
        let read = json!({user: {"event_ids": [joined.join], "data": {"ts": now_ms()}}});
        ("m.receipt", json!({room.clone(): {"m.read": read}}))
    };
    let edus = [typing(&alice.user_id), receipt(&alice.user_id), typing(&joined.user), receipt(&joined.user)];
    let (status, answer) = origin.send_edus(&a, "edus1", &edus).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // Alice's sync until Mallory's typing and receipt are there; Alice's never are.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut typing_users, mut readers) = (Vec::new(), Vec::new());
    let mut since = since;
    while !(typing_users.contains(&joined.user) && readers.contains(&joined.user)) {
        assert!(Instant::now() < deadline, "typing {typing_users:?}, receipts {readers:?}\n{}", a.log());
        let (status, sync) = a.get(&format!("/_matrix/client/v3/sync?timeout=1000&since={since}"), alice.token()).await;
        assert_eq!(status, StatusCode::OK, "{sync}");
        since = sync["next_batch"].as_str().expect("next_batch").to_owned();
        for event in sync["rooms"]["join"][&room]["ephemeral"]["events"].as_array().into_iter().flatten() {
            match event["type"].as_str() {
                Some("m.typing") => {
                    typing_users = event["content"]["user_ids"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect();
                }
                Some("m.receipt") => readers.extend(receipt_users(event, &joined.join)),
                _ => {}
            }
        }
    }
    assert!(!typing_users.contains(&alice.user_id), "{typing_users:?}");
    assert!(!readers.contains(&alice.user_id), "{readers:?}");
}

/// The users with an `m.read` receipt for `event_id` in a receipt event.
fn receipt_users(event: &Value, event_id: &str) -> Vec<String> {
    event["content"][event_id]["m.read"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

/// `/send_leave` takes the asking server's own user's leave only: Eve's leave, signed by her
/// server but relayed by another, is refused and she stays joined (Sytest "Inbound
/// /v1/send_leave rejects leaves from other servers"); the same leave from her own server is
/// accepted.
#[tokio::test]
async fn send_leave_takes_only_the_servers_own_users_leave() {
    let (a, alice, room) = alice_and_her_room().await;
    let relay = Origin::start().await;
    let third = Origin::start().await;
    let joined = third.join(&a, &room, "eve", "11").await;
    let eve = joined.user.clone();
    assert_eq!(membership(&a, &alice, &room, &eve).await.as_deref(), Some("join"));
    let leave = third.event(&joined, Draft::of("m.room.member", Some(&eve), json!({"membership": "leave"})));
    let send_leave = format!("/_matrix/federation/v2/send_leave/{}/{}", enc(&room), enc(&leave.id));

    let answer = relay.request(&a, "PUT", &send_leave, Some(&leave.json)).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(membership(&a, &alice, &room, &eve).await.as_deref(), Some("join"));

    let (status, answer) = third.request(&a, "PUT", &send_leave, Some(&leave.json)).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert_eq!(membership(&a, &alice, &room, &eve).await.as_deref(), Some("leave"));
}

/// A join of a room version 11 room (the rule holds from version 6 on; this server has versions
/// 10 to 12) with a float in its content, signed (event and request) as
/// Synapse signs such JSON: 400 `M_BAD_JSON` and Mallory is not in the room (Sytest "Inbound:
/// send_join rejects invalid JSON for room version 6"); so is an integer beyond 2^53-1. A leave
/// with a float in a top-level field, sent to a wrong event id, likewise (after Sytest "Inbound
/// federation rejects invite rejections which include invalid JSON for room version 6", which
/// declines an invite; here the leave of a member). The same body signed with another key, or
/// not at all, is 401; the join without the bad value is accepted.
#[tokio::test]
async fn send_join_and_send_leave_refuse_invalid_json() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let room = public_room(&a, &alice, "11").await;
    let origin = Origin::start().await;
    let mallory = format!("@mallory:{}", origin.name);
    let rules = ruma::RoomVersionId::V11.rules().unwrap();
    let (join, _) = origin.signed_join(&a, &room, "mallory", "11").await;
    let send_join = |id: &str| format!("/_matrix/federation/v2/send_join/{}/{}", enc(&room), enc(id));

    for bad in [json!(1.1), json!(9_007_199_254_740_992_u64)] {
        let mut event = join.json.clone();
        event["content"]["bad_val"] = bad.clone();
        let pdu = origin.sign_noncanonical(event, &rules);
        let answer = origin.request_noncanonical(&a, "PUT", &send_join(&pdu.id), &pdu.json).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        assert_eq!(membership(&a, &alice, &room, &mallory).await, None, "a join with {bad} was stored");

        let path = send_join(&pdu.id);
        let forged = origin.request_noncanonical_signed(&origin.forger, &a, "PUT", &path, &pdu.json).await;
        assert_error(&forged, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
        let unsigned = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        let response = unsigned
            .put(format!("{}{}", a.federation_base, send_join(&pdu.id)))
            .header("content-type", "application/json")
            .body(super::floats::canonical(&pdu.json))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let (status, answer) = origin.request(&a, "PUT", &send_join(&join.id), Some(&join.json)).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert_eq!(membership(&a, &alice, &room, &mallory).await.as_deref(), Some("join"));

    let (status, template) = origin
        .request(&a, "GET", &format!("/_matrix/federation/v1/make_leave/{}/{}", enc(&room), enc(&mallory)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{template}");
    let mut leave = template["event"].clone();
    leave["origin_server_ts"] = json!(now_ms());
    leave["contents"] = json!({"bad_val": 1.1});
    let leave = origin.sign_noncanonical(leave, &rules);
    let path = format!("/_matrix/federation/v2/send_leave/{}/{}", enc(&room), enc("$xxx"));
    let answer = origin.request_noncanonical(&a, "PUT", &path, &leave.json).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_eq!(membership(&a, &alice, &room, &mallory).await.as_deref(), Some("join"));
}

/// An invite to Alice into a room version 11 room of another server, with a float in its
/// content: 400 `M_BAD_JSON`, and Alice has no invite (Sytest "Inbound federation rejects
/// invites which include invalid JSON for room version 6"). The same invite without it is
/// taken.
#[tokio::test]
async fn invites_with_invalid_json_are_refused() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    let room = origin.host_room("11", "carol", true);
    let carol = format!("@carol:{}", origin.name);
    let invite = |content: Value| {
        let (event, rules) = origin.host_draft(&room, "m.room.member", Some(&alice.user_id), &carol, content);
        origin.sign_noncanonical(event, &rules)
    };
    let path = |id: &str| format!("/_matrix/federation/v2/invite/{}/{}", enc(&room), enc(id));

    let bad = invite(json!({"membership": "invite", "bad_val": 1.1}));
    let body = json!({"room_version": "11", "event": bad.json, "invite_room_state": []});
    let answer = origin.request_noncanonical(&a, "PUT", &path(&bad.id), &body).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert!(!invited_to(&a, &alice, &room).await, "the invite with a float was kept");

    let good = invite(json!({"membership": "invite"}));
    let body = json!({"room_version": "11", "event": good.json, "invite_room_state": []});
    let (status, answer) = origin.request(&a, "PUT", &path(&good.id), Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert!(invited_to(&a, &alice, &room).await, "the invite was not kept");
}

async fn invited_to(a: &TestServer, who: &Account, room: &str) -> bool {
    let (status, sync) = a.get("/_matrix/client/v3/sync", who.token()).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    !sync["rooms"]["invite"][room].is_null()
}

/// Sytest "Outbound federation rejects invite response which include invalid JSON for room
/// version 6": Alice invites a user of another server into her room version 11 room; that server
/// countersigns the invite with a float added in a top-level field: Alice gets 400
/// `M_BAD_JSON` and the user is not invited. Countersigned as it came, the invite goes through.
#[tokio::test]
async fn invite_answers_with_invalid_json_are_refused() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let room = public_room(&a, &alice, "11").await;
    let origin = Origin::start().await;
    let bob = format!("@bob:{}", origin.name);
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));

    *origin.invite_extra.lock().unwrap() = json!({"bad_val": 1.1}).as_object().cloned();
    let answer = a.post(&path, alice.token(), json!({"user_id": bob})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_eq!(origin.seen("/_matrix/federation/v2/invite/").len(), 1, "the invite was not sent");
    assert_eq!(membership(&a, &alice, &room, &bob).await, None);

    *origin.invite_extra.lock().unwrap() = Some(serde_json::Map::new());
    let (status, answer) = a.post(&path, alice.token(), json!({"user_id": bob})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", a.log());
    assert_eq!(membership(&a, &alice, &room, &bob).await.as_deref(), Some("invite"));
}
