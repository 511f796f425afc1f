//! Relations (annotations, references, edits, threads): `/relations`, `/threads`, the
//! aggregations bundled into `unsigned.m.relations`, and `timestamp_to_event`.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use crate::rooms::{create_room, enc, get_event, ids, invite, join, page, send, send_text, server_with};

/// `/_matrix/client/v1/rooms/{room}/{rest}`.
fn v1(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/{rest}", enc(room))
}

/// `GET /relations/{event}{filter}?{query}`; `filter` is "" or "/relType[/eventType]".
async fn relations(
    s: &TestServer,
    who: &Account,
    room: &str,
    event: &str,
    filter: &str,
    query: &str,
) -> (StatusCode, Value) {
    s.get(&v1(room, &format!("relations/{}{filter}?{query}", enc(event))), who.token()).await
}

/// The event ids `/relations` returns, which must succeed.
async fn related(s: &TestServer, who: &Account, room: &str, event: &str, filter: &str, query: &str) -> Vec<String> {
    let (status, body) = relations(s, who, room, event, filter, query).await;
    assert_eq!(status, StatusCode::OK, "relations{filter}?{query}: {body}");
    ids(&body["chunk"])
}

/// Every event id of `/relations`, page by page (`limit` each), following `next_batch`.
async fn all_pages(s: &TestServer, who: &Account, room: &str, event: &str, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let from_q = from.as_deref().map(|f| format!("&from={}", enc(f))).unwrap_or_default();
        let (status, body) = relations(s, who, room, event, "", &format!("limit={limit}&{query}{from_q}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let chunk = ids(&body["chunk"]);
        assert!(chunk.len() <= limit, "{body}");
        out.extend(chunk);
        match body["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => return out,
        }
    }
    panic!("relations pagination did not end: {out:?}");
}

fn relates(rel_type: &str, parent: &str) -> Value {
    json!({"rel_type": rel_type, "event_id": parent})
}

async fn react(s: &TestServer, who: &Account, room: &str, parent: &str, key: &str) -> String {
    let mut rel = relates("m.annotation", parent);
    rel["key"] = json!(key);
    send(s, who, room, "m.reaction", json!({"m.relates_to": rel})).await
}

async fn reply_in_thread(s: &TestServer, who: &Account, room: &str, root: &str, text: &str) -> String {
    let content = json!({"msgtype": "m.text", "body": text, "m.relates_to": relates("m.thread", root)});
    send(s, who, room, "m.room.message", content).await
}

async fn edit(s: &TestServer, who: &Account, room: &str, original: &str, text: &str) -> String {
    let content = json!({
        "msgtype": "m.text", "body": format!("* {text}"),
        "m.new_content": {"msgtype": "m.text", "body": text},
        "m.relates_to": relates("m.replace", original),
    });
    send(s, who, room, "m.room.message", content).await
}

async fn reference(s: &TestServer, who: &Account, room: &str, parent: &str) -> String {
    let content = json!({"msgtype": "m.text", "body": "see above", "m.relates_to": relates("m.reference", parent)});
    send(s, who, room, "m.room.message", content).await
}

fn rev(v: &[String]) -> Vec<String> {
    v.iter().rev().cloned().collect()
}

#[tokio::test]
async fn relations_by_type_with_pages_and_recursion() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let root = send_text(&s, &alice, &room, "root").await;
    let other = send_text(&s, &alice, &room, "another message").await;

    // One relation of each kind, in this order, plus noise that relates to something else.
    let thumbs = react(&s, &bob, &room, &root, "👍").await;
    let party = react(&s, &alice, &room, &root, "🎉").await;
    let cites = reference(&s, &alice, &room, &root).await;
    let edited = edit(&s, &alice, &room, &root, "root, edited").await;
    // A `/messages` token from before the thread reply.
    let before_reply = page(&s, &alice, &room, "dir=b&limit=1").await["start"].as_str().expect("start").to_owned();
    let reply = reply_in_thread(&s, &bob, &room, &root, "in a thread").await;
    send_text(&s, &bob, &room, "unrelated").await;
    react(&s, &bob, &room, &other, "👀").await;
    let chronological = vec![thumbs.clone(), party.clone(), cites.clone(), edited.clone(), reply.clone()];

    // Complement TestRelations: all of them, newest first by default, oldest first with dir=f.
    assert_eq!(related(&s, &alice, &room, &root, "", "").await, rev(&chronological));
    assert_eq!(related(&s, &alice, &room, &root, "", "dir=b").await, rev(&chronological));
    assert_eq!(related(&s, &alice, &room, &root, "", "dir=f").await, chronological);
    let (_, body) = relations(&s, &alice, &room, &root, "", "").await;
    assert!(body.get("next_batch").is_none_or(Value::is_null), "{body}");
    assert!(body.get("recursion_depth").is_none(), "recursion_depth without recurse: {body}");
    let first = &body["chunk"][0];
    assert_eq!((&first["type"], &first["sender"]), (&json!("m.room.message"), &json!(bob.user_id)), "{first}");
    assert_eq!(first["content"]["m.relates_to"]["rel_type"], "m.thread", "{first}");

    // Filtered by relation type, and by relation and event type.
    let f = |filter: &'static str| related(&s, &alice, &room, &root, filter, "dir=f");
    assert_eq!(f("/m.annotation").await, [thumbs.clone(), party.clone()]);
    assert_eq!(f("/m.annotation/m.reaction").await, [thumbs.clone(), party.clone()]);
    assert!(f("/m.annotation/m.room.message").await.is_empty());
    assert_eq!(f("/m.reference").await, [cites.as_str()]);
    assert_eq!(f("/m.replace").await, [edited.as_str()]);
    assert_eq!(f("/m.replace/m.room.message").await, [edited.as_str()]);
    assert_eq!(f("/m.thread").await, [reply.as_str()]);
    assert!(f("/org.example.unknown").await.is_empty());
    assert!(related(&s, &alice, &room, &reply, "", "").await.is_empty());

    // Complement TestRelationsPagination: pages of two in both directions, each event once.
    assert_eq!(all_pages(&s, &alice, &room, &root, "dir=b", 2).await, rev(&chronological));
    assert_eq!(all_pages(&s, &alice, &room, &root, "dir=f", 2).await, chronological);
    let (_, body) = relations(&s, &alice, &room, &root, "", "limit=2").await;
    assert_eq!(ids(&body["chunk"]), [reply.clone(), edited.clone()]);
    assert!(body["next_batch"].is_string(), "{body}");
    // `from` also takes a `/messages` token: backwards from before the reply.
    let from = format!("from={}", enc(&before_reply));
    assert_eq!(related(&s, &alice, &room, &root, "", &from).await, rev(&chronological[..4]));
    let (status, body) = relations(&s, &alice, &room, &root, "", "from=garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // recurse: relations of relations (an edit of the thread reply, a reaction to the edit).
    let edit_of_reply = edit(&s, &bob, &room, &reply, "in a thread, edited").await;
    let deep = react(&s, &alice, &room, &edit_of_reply, "💯").await;
    let direct = related(&s, &alice, &room, &root, "", "dir=f").await;
    assert!(!direct.contains(&edit_of_reply) && !direct.contains(&deep), "{direct:?}");
    let (status, body) = relations(&s, &alice, &room, &root, "", "dir=f&recurse=true").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = ids(&body["chunk"]);
    assert_eq!(found, [chronological.clone(), vec![edit_of_reply.clone(), deep.clone()]].concat());
    let depth = body["recursion_depth"].as_u64().expect("recursion_depth with recurse");
    assert!((2..=3).contains(&depth), "{body}");
    // recurse combined with a filter keeps only matching events at every depth.
    let annotations = related(&s, &alice, &room, &root, "/m.annotation", "dir=f&recurse=true").await;
    assert_eq!(annotations, [thumbs.clone(), party.clone(), deep.clone()]);

    // The parent must be visible: unknown events and outsiders get 404.
    let r = relations(&s, &alice, &room, "$unknown", "", "").await;
    assert_error(&r, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let private = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    let secret = send_text(&s, &alice, &private, "secret").await;
    react(&s, &alice, &private, &secret, "🤫").await;
    assert_error(&relations(&s, &carol, &private, &secret, "", "").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.get(&v1(&room, &format!("relations/{}", enc(&root))), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

/// `GET /threads?{query}`: the root ids and `next_batch`.
async fn threads(s: &TestServer, who: &Account, room: &str, query: &str) -> (Vec<String>, Option<String>, Value) {
    let (status, body) = s.get(&v1(room, &format!("threads?{query}")), who.token()).await;
    assert_eq!(status, StatusCode::OK, "threads?{query} as {}: {body}", who.user_id);
    (ids(&body["chunk"]), body["next_batch"].as_str().map(str::to_owned), body)
}

/// The bundled aggregations of an event as `who` reads it from `/event`.
async fn bundled(s: &TestServer, who: &Account, room: &str, event: &str) -> Value {
    let (status, body) = get_event(s, who, room, event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["unsigned"]["m.relations"].clone()
}

#[tokio::test]
async fn threads_list_roots_by_activity() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &carol, &room).await;

    // Complement TestThreadsEndpoint: alice's root gets a reply by bob, then bob's root one by
    // carol; latest activity first.
    let first = send_text(&s, &alice, &room, "first root").await;
    let second = send_text(&s, &bob, &room, "second root").await;
    send_text(&s, &carol, &room, "not a thread").await;
    reply_in_thread(&s, &bob, &room, &first, "bob in first").await;
    reply_in_thread(&s, &carol, &room, &second, "carol in second").await;
    assert_eq!(threads(&s, &alice, &room, "").await.0, [second.clone(), first.clone()]);
    assert_eq!(threads(&s, &alice, &room, "include=all").await.0, [second.clone(), first.clone()]);
    // New activity moves a thread to the front.
    let latest = reply_in_thread(&s, &carol, &room, &first, "carol in first").await;
    let (roots, next, body) = threads(&s, &alice, &room, "").await;
    assert_eq!(roots, [first.clone(), second.clone()]);
    assert!(next.is_none(), "{body}");
    // The roots come with their thread summary.
    let summary = &body["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 2, "{body}");
    assert_eq!(summary["latest_event"]["event_id"], latest.as_str(), "{body}");

    // include=participated: alice wrote the first root, bob replied to it and wrote the second,
    // carol replied to both; a new user took part in none.
    assert_eq!(threads(&s, &alice, &room, "include=participated").await.0, [first.as_str()]);
    assert_eq!(threads(&s, &bob, &room, "include=participated").await.0, [first.clone(), second.clone()]);
    assert_eq!(threads(&s, &carol, &room, "include=participated").await.0, [first.clone(), second.clone()]);
    let dave = s.register("dave", "pw").await;
    join(&s, &dave, &room).await;
    assert!(threads(&s, &dave, &room, "include=participated").await.0.is_empty());

    // Pages of one follow next_batch.
    let (page1, next, body) = threads(&s, &alice, &room, "limit=1").await;
    assert_eq!(page1, [first.as_str()]);
    let next = next.unwrap_or_else(|| panic!("next_batch: {body}"));
    let (page2, next, body) = threads(&s, &alice, &room, &format!("limit=1&from={}", enc(&next))).await;
    assert_eq!(page2, [second.as_str()]);
    if let Some(next) = next {
        let (page3, _, _) = threads(&s, &alice, &room, &format!("limit=1&from={}", enc(&next))).await;
        assert!(page3.is_empty(), "{body}");
    }

    // Outsiders of a room that is not world-readable get nothing.
    let private = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    let root = send_text(&s, &alice, &private, "private root").await;
    reply_in_thread(&s, &alice, &private, &root, "private reply").await;
    assert_error(&s.get(&v1(&private, "threads"), dave.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    invite(&s, &alice, &private, &dave.user_id).await;
    join(&s, &dave, &private).await;
    assert_eq!(threads(&s, &dave, &private, "").await.0, [root.as_str()]);
}

#[tokio::test]
async fn bundled_aggregations_on_event_and_messages() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &carol, &room).await;
    let root = send_text(&s, &alice, &room, "original").await;
    let plain = send_text(&s, &alice, &room, "nothing relates to me").await;

    // Nothing related yet: no m.relations.
    assert!(bundled(&s, &alice, &room, &root).await.is_null());

    // m.thread: count, the latest reply in full, and whether the reader took part.
    reply_in_thread(&s, &bob, &room, &root, "one").await;
    let latest = reply_in_thread(&s, &bob, &room, &root, "two").await;
    // m.replace: the latest edit by the original sender; an edit by someone else does not count.
    edit(&s, &alice, &room, &root, "first edit").await;
    let edit2 = edit(&s, &alice, &room, &root, "second edit").await;
    edit(&s, &bob, &room, &root, "hijacked").await;
    // m.reference: the referring event ids.
    let cites = reference(&s, &carol, &room, &root).await;
    // m.annotation is not bundled.
    react(&s, &carol, &room, &root, "👍").await;

    for who in [&alice, &bob, &carol] {
        let rel = bundled(&s, who, &room, &root).await;
        let thread = &rel["m.thread"];
        assert_eq!(thread["count"], 2, "{rel}");
        assert_eq!(thread["latest_event"]["event_id"], latest.as_str(), "{rel}");
        assert_eq!(thread["latest_event"]["content"]["body"], "two", "{rel}");
        assert_eq!(thread["latest_event"]["sender"], bob.user_id.as_str(), "{rel}");
        // alice wrote the root, bob replied; carol only referenced and reacted.
        let participated = who.user_id != carol.user_id;
        assert_eq!(thread["current_user_participated"], participated, "as {}: {rel}", who.user_id);
        assert_eq!(rel["m.replace"]["event_id"], edit2.as_str(), "{rel}");
        assert_eq!(rel["m.replace"]["content"]["m.new_content"]["body"], "second edit", "{rel}");
        assert_eq!(rel["m.reference"], json!({"chunk": [{"event_id": cites}]}), "{rel}");
        assert!(rel.get("m.annotation").is_none(), "{rel}");
    }
    // The original content is served as sent (the spec no longer replaces it with the edit).
    let (_, event) = get_event(&s, &alice, &room, &root).await;
    assert_eq!(event["content"]["body"], "original", "{event}");
    assert!(bundled(&s, &alice, &room, &plain).await.is_null());

    // /messages bundles the same.
    let msgs = page(&s, &carol, &room, "dir=b&limit=50").await;
    let in_timeline = msgs["chunk"].as_array().expect("chunk").iter().find(|e| e["event_id"] == root.as_str());
    let rel = &in_timeline.unwrap_or_else(|| panic!("root in /messages: {msgs}"))["unsigned"]["m.relations"];
    assert_eq!(rel["m.thread"]["count"], 2, "{rel}");
    assert_eq!(rel["m.thread"]["latest_event"]["event_id"], latest.as_str(), "{rel}");
    assert_eq!(rel["m.thread"]["current_user_participated"], false, "{rel}");
    assert_eq!(rel["m.replace"]["event_id"], edit2.as_str(), "{rel}");
    assert_eq!(rel["m.reference"]["chunk"][0]["event_id"], cites.as_str(), "{rel}");

    // Taking part later flips current_user_participated for carol.
    reply_in_thread(&s, &carol, &room, &root, "three").await;
    let rel = bundled(&s, &carol, &room, &root).await;
    assert_eq!((&rel["m.thread"]["count"], &rel["m.thread"]["current_user_participated"]), (&json!(3), &json!(true)));
}

/// `GET /timestamp_to_event?ts=..&dir=..`.
async fn event_at(s: &TestServer, who: &Account, room: &str, ts: u64, dir: &str) -> (StatusCode, Value) {
    s.get(&v1(room, &format!("timestamp_to_event?ts={ts}&dir={dir}")), who.token()).await
}

async fn origin_ts(s: &TestServer, who: &Account, room: &str, event: &str) -> u64 {
    let (status, body) = get_event(s, who, room, event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["origin_server_ts"].as_u64().expect("origin_server_ts")
}

#[tokio::test]
async fn timestamp_to_event_in_both_directions() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let mut sent = Vec::new();
    for text in ["a", "b", "c"] {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        let id = send_text(&s, &alice, &room, text).await;
        sent.push((id.clone(), origin_ts(&s, &alice, &room, &id).await));
    }
    let [(a, ta), (b, tb), (c, tc)] = <[(String, u64); 3]>::try_from(sent).expect("three");
    assert!(ta < tb && tb < tc, "{ta} {tb} {tc}");

    // Complement TestJumpToDateEndpoint: "should find event after given timestamp", "… before
    // given timestamp"; an event at exactly the timestamp is found in both directions.
    let found = |r: (StatusCode, Value)| {
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        (r.1["event_id"].as_str().expect("event_id").to_owned(), r.1["origin_server_ts"].as_u64().expect("ts"))
    };
    assert_eq!(found(event_at(&s, &alice, &room, ta + 1, "f").await), (b.clone(), tb));
    assert_eq!(found(event_at(&s, &alice, &room, tc - 1, "b").await), (b.clone(), tb));
    assert_eq!(found(event_at(&s, &alice, &room, tb, "f").await).0, b);
    assert_eq!(found(event_at(&s, &alice, &room, tb, "b").await).0, b);
    assert_eq!(found(event_at(&s, &alice, &room, tc + 1, "b").await).0, c);
    assert!(found(event_at(&s, &alice, &room, ta - 1, "b").await).1 < ta);
    // Looking forwards from before the room existed finds its first event, the create event.
    let (first, _) = found(event_at(&s, &alice, &room, 1, "f").await);
    let (status, ev) = get_event(&s, &alice, &room, &first).await;
    assert_eq!((status, &ev["type"]), (StatusCode::OK, &json!("m.room.create")), "{ev}");
    assert_eq!(found(event_at(&s, &alice, &room, ta, "f").await).0, a);

    // "should find nothing before the earliest timestamp", "… after the latest timestamp".
    assert_error(&event_at(&s, &alice, &room, 1, "b").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&event_at(&s, &alice, &room, tc + 3_600_000, "f").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // "should not be able to query a public room you are not a member of", and so for private
    // rooms; a bad direction is a bad request.
    assert_error(&event_at(&s, &bob, &room, tb, "f").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let private = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    assert_error(&event_at(&s, &bob, &private, tb, "f").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let r = event_at(&s, &alice, &room, tb, "sideways").await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    let r = s.get(&v1(&room, &format!("timestamp_to_event?ts={tb}")), alice.token()).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    // A member finds events; after joining, bob does too.
    join(&s, &bob, &room).await;
    assert_eq!(found(event_at(&s, &bob, &room, tb, "f").await).0, b);
}
