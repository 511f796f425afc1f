//! The reads another server makes of a room it is in: `/event`, `/state`, `/state_ids`,
//! `/event_auth`, `/backfill`, `/get_missing_events`; and a server with nobody in the room is
//! refused.

use serde_json::{Value, json};
use spec_tests::{ServerOptions, StatusCode, TestServer};

use super::origin::{Origin, enc};

/// The event ids of a list of PDUs, computed as the spec says (reference hashes).
fn ids(pdus: &Value, rules: &ruma::room_version_rules::RoomVersionRules) -> Vec<String> {
    pdus.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let object: ruma::CanonicalJsonObject = serde_json::from_value(p.clone()).expect("canonical JSON");
            format!("${}", ruma::signatures::reference_hash(&object, rules).expect("hash"))
        })
        .collect()
}

#[tokio::test]
async fn other_servers_read_a_room_they_are_in() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({"preset": "public_chat", "room_version": "11"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let origin = Origin::start().await;
    let joined = origin.join(&a, &room, "mallory", "11").await;
    let rules = &joined.rules;

    // /event: the join as A holds it.
    let (status, event) =
        origin.request(&a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(&joined.join)), None).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(ids(&event["pdus"], rules), vec![joined.join.clone()]);

    // /state and /state_ids: the state before the join, the same events both ways, with the
    // auth chain; the join itself is not part of it.
    let path = format!("/_matrix/federation/v1/state/{}?event_id={}", enc(&room), enc(&joined.join));
    let (status, state) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let mut state_ids = ids(&state["pdus"], rules);
    state_ids.sort();
    assert!(state_ids.contains(&joined.create) && state_ids.contains(&joined.power_levels), "{state}");
    assert!(!state_ids.contains(&joined.join));
    assert!(!ids(&state["auth_chain"], rules).is_empty());
    let path = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room), enc(&joined.join));
    let (status, listed) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let mut listed_ids: Vec<String> =
        listed["pdu_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    listed_ids.sort();
    assert_eq!(listed_ids, state_ids);

    // /event_auth: the join's auth chain holds the create event and Mallory's auth events.
    let path = format!("/_matrix/federation/v1/event_auth/{}/{}", enc(&room), enc(&joined.join));
    let (status, auth) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{auth}");
    let chain = ids(&auth["auth_chain"], rules);
    assert!(chain.contains(&joined.create) && chain.contains(&joined.join_rules), "{auth}");

    // /backfill from the join: the join and the events before it, newest first.
    let path = format!("/_matrix/federation/v1/backfill/{}?v={}&limit=5", enc(&room), enc(&joined.join));
    let (status, backfill) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{backfill}");
    let back = ids(&backfill["pdus"], rules);
    assert_eq!(back.first(), Some(&joined.join), "{backfill}");
    assert_eq!(back.len(), 5);

    // /get_missing_events between the create event and the join: what lies between, oldest
    // first, without either end.
    let body = json!({"earliest_events": [joined.create], "latest_events": [joined.join], "limit": 20});
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room));
    let (status, missing) = origin.request(&a, "POST", &path, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{missing}");
    let between = ids(&missing["events"], rules);
    assert!(!between.is_empty() && !between.contains(&joined.create) && !between.contains(&joined.join), "{missing}");
    assert!(between.contains(&joined.power_levels), "{missing}");

    // A server with nobody in the room reads nothing of it.
    let stranger = Origin::start().await;
    let path = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room), enc(&joined.join));
    let (status, _) = stranger.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        stranger.request(&a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(&joined.join)), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Events a server's users may not see by the room's history visibility go to it redacted
/// (Sytest "Inbound federation can return missing events for world_readable / shared / invited
/// / joined visibility"): in a room with `joined` history, the messages sent before the
/// origin's user joined come back from `/event`, `/backfill` and `/get_missing_events` without
/// their content but still signed by A (their ids unchanged); those after the join, and all of
/// them once the history is `world_readable`, whole.
#[tokio::test]
async fn events_a_server_may_not_see_are_sent_redacted() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let (status, created) = a
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat", "room_version": "11",
                   "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let send = |body: &'static str, txn: &'static str| {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(&room));
        let (a, token) = (&a, alice.token().to_owned());
        async move {
            let (status, sent) = a.put(&path, token, json!({"msgtype": "m.text", "body": body})).await;
            assert_eq!(status, StatusCode::OK, "{sent}");
            sent["event_id"].as_str().unwrap().to_owned()
        }
    };
    let before = send("before the join", "t1").await;
    let origin = Origin::start().await;
    let joined = origin.join(&a, &room, "mallory", "11").await;
    let rules = &joined.rules;
    let after = send("after the join", "t2").await;

    let event = |id: String| {
        let (origin, a) = (&origin, &a);
        async move {
            let (status, got) =
                origin.request(a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(&id)), None).await;
            assert_eq!(status, StatusCode::OK, "{got}");
            assert_eq!(ids(&got["pdus"], rules), vec![id], "the event's id changed: {got}");
            got["pdus"][0].clone()
        }
    };
    let early = event(before.clone()).await;
    assert_eq!(early["content"], json!({}), "{early}");
    assert!(early["signatures"].get(&a.server_name).is_some(), "{early}");
    assert_eq!(event(after.clone()).await["content"]["body"], "after the join");

    let path = format!("/_matrix/federation/v1/backfill/{}?v={}&limit=50", enc(&room), enc(&after));
    let (status, page) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let by_id = |pdus: &Value, id: &str| {
        let position = ids(pdus, rules).iter().position(|x| x == id).unwrap_or_else(|| panic!("{id} missing: {pdus}"));
        pdus[position].clone()
    };
    assert_eq!(by_id(&page["pdus"], &before)["content"], json!({}), "{page}");
    assert_eq!(by_id(&page["pdus"], &after)["content"]["body"], "after the join");
    // State events are still there in full: the room's creation and its settings.
    assert!(
        page["pdus"].as_array().unwrap().iter().any(|p| p["type"] == "m.room.create" && p["content"] != json!({})),
        "{page}"
    );

    let body = json!({"earliest_events": [joined.create], "latest_events": [after], "limit": 20, "min_depth": 0});
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room));
    let (status, missing) = origin.request(&a, "POST", &path, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{missing}");
    assert_eq!(by_id(&missing["events"], &before)["content"], json!({}), "{missing}");

    // World-readable history goes whole to every server in the room.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", enc(&room));
    let (status, set) = a.put(&path, alice.token(), json!({"history_visibility": "world_readable"})).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let late = send("readable by all", "t3").await;
    assert_eq!(event(late).await["content"]["body"], "readable by all");
}

/// Sytest "Inbound federation redacts events from erased users": Alice's message is served
/// whole over `/event` and `/backfill` until she deactivates her account with `erase`, then
/// redacted (no body, the same event id); Carol's, who only deactivated without erasure, stay
/// whole. Bob keeps the room on this server.
#[tokio::test]
async fn events_of_erased_users_are_served_redacted() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let (alice, bob, carol) = (
        a.register("alice", "pw-alice-123").await,
        a.register("bob", "pw-bob-12345").await,
        a.register("carol", "pw-carol-123").await,
    );
    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({"preset": "public_chat", "room_version": "11"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    for who in [&bob, &carol] {
        let (status, body) = a.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), who.token(), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let origin = Origin::start().await;
    origin.join(&a, &room, "mallory", "11").await;
    let mut sent = Vec::new();
    for (who, body) in [(&alice, "body1"), (&carol, "body2")] {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{body}", enc(&room));
        let (status, answer) = a.put(&path, who.token(), json!({"msgtype": "m.text", "body": body})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        sent.push(answer["event_id"].as_str().unwrap().to_owned());
    }
    let fetch = |id: &str| {
        let path = format!("/_matrix/federation/v1/event/{}", enc(id));
        let origin = &origin;
        let a = &a;
        async move {
            let (status, answer) = origin.request(a, "GET", &path, None).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer["pdus"][0].clone()
        }
    };
    assert_eq!(fetch(&sent[0]).await["content"]["body"], "body1");

    for (who, erase) in [(&alice, true), (&carol, false)] {
        let deactivate = "/_matrix/client/v3/account/deactivate";
        let (_, challenge) = a.post(deactivate, who.token(), json!({"erase": erase})).await;
        let session = challenge["session"].as_str().expect("a UIA session").to_owned();
        let body = json!({"erase": erase, "auth": who.password_auth(&session)});
        let (status, answer) = a.post(deactivate, who.token(), body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let erased = fetch(&sent[0]).await;
    assert!(erased["content"].get("body").is_none(), "not redacted: {erased}");
    assert_eq!(erased["sender"], alice.user_id.as_str());
    let rules = ruma::RoomVersionId::V11.rules().unwrap();
    assert_eq!(ids(&json!([erased]), &rules), vec![sent[0].clone()], "the redacted event keeps its id");
    assert_eq!(fetch(&sent[1]).await["content"]["body"], "body2", "deactivation alone erases nothing");

    let path = format!("/_matrix/federation/v1/backfill/{}?v={}&limit=10", enc(&room), enc(&sent[1]));
    let (status, page) = origin.request(&a, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let pdus = page["pdus"].as_array().unwrap();
    let of =
        |id: &str| pdus.iter().find(|p| ids(&json!([p]), &rules) == [id]).cloned().unwrap_or_else(|| panic!("{page}"));
    assert!(of(&sent[0])["content"].get("body").is_none(), "backfilled unredacted: {page}");
    assert_eq!(of(&sent[1])["content"]["body"], "body2");
}
