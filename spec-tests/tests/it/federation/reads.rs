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
