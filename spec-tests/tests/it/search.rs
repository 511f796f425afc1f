//! Server-side search (`POST /search`): full-text matches in messages, names and topics of the
//! rooms a user is (or was) in, limited by history visibility, ordered by rank or recency, paged,
//! with highlights, context, state and groupings.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use crate::rooms::{create_room, invite, join, leave, room_path, send_text, server_with, set_state};

async fn try_search(s: &TestServer, who: &Account, body: Value, next_batch: Option<&str>) -> (StatusCode, Value) {
    let path = match next_batch {
        Some(token) => format!("/_matrix/client/v3/search?next_batch={}", crate::rooms::enc(token)),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    s.post(&path, who.token(), body).await
}

/// The `room_events` category of a search.
async fn search(s: &TestServer, who: &Account, criteria: Value, next_batch: Option<&str>) -> Value {
    let (status, resp) = try_search(s, who, json!({"search_categories": {"room_events": criteria}}), next_batch).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["search_categories"]["room_events"].clone()
}

fn bodies(events: &Value) -> Vec<String> {
    // An empty list may be left out.
    events["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Sytest/Complement "Can search for an event by body", "Can get context around search results";
/// keys, highlights, state and groupings.
#[tokio::test]
async fn search_by_body_with_highlights_context_and_state() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "private_chat", "name": "Akten"})).await;
    invite(&s, &alice, &room, &bob.user_id).await;
    join(&s, &bob, &room).await;
    s.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
        alice.token(),
        json!({"displayname": "Alice Amt"}),
    )
    .await;
    send_text(&s, &alice, &room, "before").await;
    let first = send_text(&s, &alice, &room, "Der Bescheid ist fertig").await;
    send_text(&s, &bob, &room, "nichts dazu").await;
    let second = send_text(&s, &bob, &room, "Noch ein BESCHEID, bitte prüfen").await;
    send_text(&s, &alice, &room, "after").await;
    set_state(&s, &alice, &room, "m.room.topic", "", json!({"topic": "Bescheide des Amtes"})).await;

    // All keys: both messages and the topic; newest first with recent ordering.
    let found = search(&s, &bob, json!({"search_term": "bescheid", "order_by": "recent"}), None).await;
    assert_eq!(found["count"], 3, "{found}");
    let ids: Vec<&str> =
        found["results"].as_array().unwrap().iter().filter_map(|r| r["result"]["event_id"].as_str()).collect();
    assert_eq!(ids.len(), 3, "{found}");
    assert_eq!(&ids[1..], [second.as_str(), first.as_str()], "{found}");
    let highlights: Vec<&str> = found["highlights"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for word in ["Bescheid", "BESCHEID", "Bescheide"] {
        assert!(highlights.contains(&word), "{word} not in {highlights:?}");
    }
    assert!(found["results"][0]["rank"].as_f64().is_some(), "{found}");
    assert!(found.get("next_batch").is_none(), "{found}");

    // Only message bodies; two words must both match (prefixes count).
    let found = search(&s, &bob, json!({"search_term": "bescheid prüf", "keys": ["content.body"]}), None).await;
    assert_eq!(bodies(&found), ["Noch ein BESCHEID, bitte prüfen"], "{found}");
    let found = search(&s, &bob, json!({"search_term": "bescheid", "keys": ["content.topic"]}), None).await;
    assert_eq!(found["results"][0]["result"]["content"]["topic"], "Bescheide des Amtes", "{found}");
    assert_eq!(found["count"], 1);

    // Context with profiles, the room's state, groupings.
    let found = search(
        &s,
        &bob,
        json!({
            "search_term": "fertig",
            "event_context": {"before_limit": 1, "after_limit": 2, "include_profile": true},
            "include_state": true,
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        }),
        None,
    )
    .await;
    let result = &found["results"][0];
    assert_eq!(result["result"]["event_id"], first.as_str(), "{found}");
    let context = &result["context"];
    assert_eq!(
        bodies(
            &json!({"results": context["events_before"].as_array().unwrap().iter().map(|e| json!({"result": e})).collect::<Vec<_>>()})
        ),
        ["before"],
        "{context}"
    );
    let after: Vec<&str> =
        context["events_after"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(after, ["nichts dazu", "Noch ein BESCHEID, bitte prüfen"], "{context}");
    assert!(context["start"].is_string() && context["end"].is_string(), "{context}");
    assert_eq!(context["profile_info"][&alice.user_id]["displayname"], "Alice Amt", "{context}");
    let state = found["state"][&room].as_array().expect("state of the room");
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "{found}");
    assert_eq!(found["groups"]["room_id"][&room]["results"], json!([first]), "{found}");
    assert_eq!(found["groups"]["sender"][&alice.user_id]["results"], json!([first]), "{found}");

    // The filter narrows by sender and room.
    let found =
        search(&s, &bob, json!({"search_term": "bescheid", "filter": {"senders": [bob.user_id.clone()]}}), None).await;
    assert_eq!(bodies(&found), ["Noch ein BESCHEID, bitte prüfen"]);
    let found =
        search(&s, &bob, json!({"search_term": "bescheid", "filter": {"not_rooms": [room.clone()]}}), None).await;
    assert!(bodies(&found).is_empty(), "{found}");
}

/// Results respect membership and history visibility: outsiders find nothing, a later joiner
/// of a `joined` room only what came after the join, a leaver only what came before the leave.
#[tokio::test]
async fn search_respects_history_visibility_and_membership() {
    let (s, [alice, bob, eve, mallory]) = server_with(["alice", "bob", "eve", "mallory"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    set_state(&s, &alice, &room, "m.room.history_visibility", "", json!({"history_visibility": "joined"})).await;
    join(&s, &eve, &room).await;
    send_text(&s, &alice, &room, "geheim eins").await;
    join(&s, &bob, &room).await;
    send_text(&s, &alice, &room, "geheim zwei").await;
    leave(&s, &eve, &room).await;
    send_text(&s, &alice, &room, "geheim drei").await;

    let term = json!({"search_term": "geheim", "order_by": "recent"});
    assert_eq!(bodies(&search(&s, &alice, term.clone(), None).await), ["geheim drei", "geheim zwei", "geheim eins"]);
    assert_eq!(bodies(&search(&s, &bob, term.clone(), None).await), ["geheim drei", "geheim zwei"]);
    assert_eq!(bodies(&search(&s, &eve, term.clone(), None).await), ["geheim zwei", "geheim eins"]);
    assert!(bodies(&search(&s, &mallory, term, None).await).is_empty());
}

/// Sytest/Complement "Can back-paginate search results" in both orders; redacted events are not
/// found ("Search results with rank/recent ordering do not include redacted events").
#[tokio::test]
async fn search_pages_in_rank_and_recent_order_without_redacted_events() {
    let (s, [alice]) = server_with(["alice"]).await;
    let room = create_room(&s, &alice, json!({})).await;
    let mut sent = Vec::new();
    for n in 0..25 {
        // Every fifth message says it three times, so it ranks higher.
        let text = if n % 5 == 0 { format!("akte {n} akte akte") } else { format!("akte {n}") };
        sent.push(send_text(&s, &alice, &room, &text).await);
    }
    let redacted = sent.remove(12);
    let (status, resp) = s
        .put(&room_path(&room, "redact/{}/r1").replace("{}", &crate::rooms::enc(&redacted)), alice.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    for order in ["recent", "rank"] {
        let criteria = json!({"search_term": "akte", "order_by": order, "filter": {"limit": 10}});
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        for page in 0.. {
            assert!(page < 5, "paging does not end");
            let found = search(&s, &alice, criteria.clone(), token.as_deref()).await;
            assert_eq!(found["count"], 24, "{found}");
            let ids: Vec<String> = found["results"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|r| r["result"]["event_id"].as_str().map(str::to_owned))
                .collect();
            assert!(ids.len() <= 10);
            if order == "rank" && page == 0 {
                // The five repeated ones first.
                let top = bodies(&found);
                assert!(top[..4].iter().all(|b| b.ends_with("akte akte")), "{top:?}");
            }
            seen.extend(ids);
            match found["next_batch"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        assert!(!seen.contains(&redacted), "{order}: the redacted event was found");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "{order}: a result came twice");
        let mut expected = sent.clone();
        expected.sort();
        assert_eq!(sorted, expected, "{order}: not every message was found once");
        if order == "recent" {
            let mut newest_first = sent.clone();
            newest_first.reverse();
            assert_eq!(seen, newest_first);
        }
    }
}

/// Bad input is a Matrix error, not a 500.
#[tokio::test]
async fn bad_search_requests_are_refused() {
    let (s, [alice]) = server_with(["alice"]).await;
    let body = |criteria: Value| json!({"search_categories": {"room_events": criteria}});
    assert_error(&try_search(&s, &alice, body(json!({})), None).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    assert_error(
        &try_search(&s, &alice, body(json!({"search_term": "x", "keys": ["content.secret"]})), None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &try_search(&s, &alice, body(json!({"search_term": "x", "order_by": "loudest"})), None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &try_search(&s, &alice, body(json!({"search_term": "x"})), Some("not-a-token")).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (status, _) = s.post("/_matrix/client/v3/search", None, body(json!({"search_term": "x"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Operators of text search are plain characters: nothing breaks, nothing matches.
    let found = search(&s, &alice, json!({"search_term": "!&|:*()'\\"}), None).await;
    assert!(bodies(&found).is_empty(), "{found}");
}
