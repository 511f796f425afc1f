//! Aliases, the room directory, the user directory, relations and threads, room upgrades.
//!
//! This module holds aliases (local aliases, canonical aliases, joins by alias), the published
//! room directory (`directory/list/room`, `publicRooms`), room summaries and the user directory.
//! Relations, threads and `timestamp_to_event` are in `relations`, room upgrades in `upgrades`.

mod relations;
mod upgrades;

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use crate::{
    registration::admin_register,
    rooms::{
        create_room, enc, invite, join, leave, member_action, put_state, server_with, set_state, set_user_level,
        state_content,
    },
};

/// `/_matrix/client/v3/directory/room/{alias}`.
pub(crate) fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

pub(crate) async fn put_alias(s: &TestServer, who: &Account, alias: &str, room: &str) -> (StatusCode, Value) {
    s.put(&alias_path(alias), who.token(), json!({"room_id": room})).await
}

/// Adds a local alias, which must succeed.
pub(crate) async fn add_alias(s: &TestServer, who: &Account, alias: &str, room: &str) {
    let (status, body) = put_alias(s, who, alias, room).await;
    assert_eq!(status, StatusCode::OK, "{} adds {alias} for {room}: {body}", who.user_id);
    assert_eq!(body, json!({}));
}

/// The room an alias resolves to, or the error.
pub(crate) async fn resolve(s: &TestServer, alias: &str) -> (StatusCode, Value) {
    s.get(&alias_path(alias), None).await
}

async fn delete_alias(s: &TestServer, who: Option<&str>, alias: &str) -> (StatusCode, Value) {
    s.delete(&alias_path(alias), who, None).await
}

/// `GET /rooms/{room}/aliases`.
pub(crate) async fn local_aliases(s: &TestServer, who: &Account, room: &str) -> (StatusCode, Value) {
    s.get(&crate::rooms::room_path(room, "aliases"), who.token()).await
}

/// The sorted local aliases of a room, as `who` sees them.
pub(crate) async fn alias_list(s: &TestServer, who: &Account, room: &str) -> Vec<String> {
    let (status, body) = local_aliases(s, who, room).await;
    assert_eq!(status, StatusCode::OK, "aliases of {room} as {}: {body}", who.user_id);
    let mut list: Vec<String> =
        body["aliases"].as_array().expect("aliases").iter().map(|a| a.as_str().expect("alias").to_owned()).collect();
    list.sort();
    list
}

fn visibility_path(room: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{}", enc(room))
}

pub(crate) async fn directory_visibility(s: &TestServer, room: &str) -> Value {
    let (status, body) = s.get(&visibility_path(room), None).await;
    assert_eq!(status, StatusCode::OK, "visibility of {room}: {body}");
    body["visibility"].clone()
}

async fn set_visibility(s: &TestServer, who: Option<&str>, room: &str, visibility: &str) -> (StatusCode, Value) {
    s.put(&visibility_path(room), who, json!({"visibility": visibility})).await
}

/// `GET /publicRooms?{query}` without a token.
pub(crate) async fn public_rooms(s: &TestServer, query: &str) -> Value {
    let (status, body) = s.get(&format!("/_matrix/client/v3/publicRooms?{query}"), None).await;
    assert_eq!(status, StatusCode::OK, "publicRooms?{query}: {body}");
    body
}

/// The room ids of a `publicRooms` page.
pub(crate) fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

/// The entry for `room` in a `publicRooms` page.
fn entry<'a>(page: &'a Value, room: &str) -> &'a Value {
    page["chunk"].as_array().expect("chunk").iter().find(|r| r["room_id"] == room).unwrap_or_else(|| {
        panic!("{room} is not listed: {page}");
    })
}

/// The join rule of a directory entry or summary; absent means public.
fn join_rule(room: &Value) -> &str {
    room.get("join_rule").map_or("public", |j| j.as_str().expect("join_rule is a string"))
}

fn forbidden(r: &(StatusCode, Value)) {
    assert_error(r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn aliases_create_resolve_and_list() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&s, &alice, json!({})).await;

    // Sytest/Complement "PUT /directory/room/:room_alias creates alias", "GET
    // /directory/room/:room_alias yields room ID": resolving needs no token and names this server.
    add_alias(&s, &alice, "#lobby:localhost", &room).await;
    let (status, body) = resolve(&s, "#lobby:localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["servers"], json!(["localhost"]));

    // "Room aliases can contain Unicode".
    add_alias(&s, &alice, "#☕Kuchen:localhost", &room).await;
    assert_eq!(resolve(&s, "#☕Kuchen:localhost").await.1["room_id"], room.as_str());

    // A taken alias is a conflict, for the same room and for another one, and keeps its room.
    for target in [&room, &other] {
        let r = put_alias(&s, &alice, "#lobby:localhost", target).await;
        assert_eq!(r.0, StatusCode::CONFLICT, "{}", r.1);
        assert!(r.1["errcode"].is_string(), "{}", r.1);
    }
    assert_eq!(resolve(&s, "#lobby:localhost").await.1["room_id"], room.as_str());

    // Aliases of other servers cannot be made here; malformed aliases are no aliases.
    assert_error(
        &put_alias(&s, &alice, "#lobby:elsewhere.example", &room).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    for bad in ["lobby", "#nocolon", "!lobby:localhost", "#:"] {
        let r = put_alias(&s, &alice, bad, &room).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{bad}: {}", r.1);
        assert!(matches!(r.1["errcode"].as_str(), Some("M_INVALID_PARAM" | "M_BAD_JSON")), "{bad}: {}", r.1);
    }
    // The room must exist and the user must be in it.
    let r = put_alias(&s, &alice, "#ghost:localhost", "!unknown:localhost").await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.1);
    forbidden(&put_alias(&s, &bob, "#bobs:localhost", &room).await);
    assert_error(&resolve(&s, "#bobs:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&resolve(&s, "#nobody:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.put(&alias_path("#anon:localhost"), None, json!({"room_id": room})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );

    // "GET /rooms/:room_id/aliases lists aliases"; "Only room members can list aliases of a room".
    assert_eq!(alias_list(&s, &alice, &room).await, ["#lobby:localhost", "#☕Kuchen:localhost"]);
    assert_eq!(alias_list(&s, &alice, &other).await, Vec::<String>::new());
    forbidden(&local_aliases(&s, &bob, &room).await);
    join(&s, &bob, &room).await;
    assert_eq!(alias_list(&s, &bob, &room).await.len(), 2);
    leave(&s, &bob, &room).await;
    forbidden(&local_aliases(&s, &bob, &room).await);

    // "Regular users can add and delete aliases in the default room configuration".
    join(&s, &bob, &room).await;
    add_alias(&s, &bob, "#bobs:localhost", &room).await;
    assert_eq!(alias_list(&s, &bob, &room).await.len(), 3);
    assert_eq!(delete_alias(&s, bob.token(), "#bobs:localhost").await.0, StatusCode::OK);
    assert_eq!(alias_list(&s, &bob, &room).await.len(), 2);
}

#[tokio::test]
async fn deleting_aliases() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &carol, &room).await;

    // "Deleting a non-existent alias should return a 404".
    assert_error(&delete_alias(&s, alice.token(), "#nothing:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &delete_alias(&s, alice.token(), "#lobby:elsewhere.example").await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // "Users can't delete other's aliases": carol has no power to, bob made it.
    add_alias(&s, &bob, "#bobs:localhost", &room).await;
    forbidden(&delete_alias(&s, carol.token(), "#bobs:localhost").await);
    assert_error(&delete_alias(&s, None, "#bobs:localhost").await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    assert_eq!(resolve(&s, "#bobs:localhost").await.1["room_id"], room.as_str());
    // "Users with sufficient power-level can delete other's aliases".
    assert_eq!(delete_alias(&s, alice.token(), "#bobs:localhost").await.0, StatusCode::OK);
    assert_error(&resolve(&s, "#bobs:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&delete_alias(&s, alice.token(), "#bobs:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // "Alias creators can delete alias with no ops", also after leaving the room and while the
    // alias is the canonical one ("Alias creators can delete canonical alias with no ops").
    add_alias(&s, &carol, "#carols:localhost", &room).await;
    set_state(&s, &alice, &room, "m.room.canonical_alias", "", json!({"alias": "#carols:localhost"})).await;
    leave(&s, &carol, &room).await;
    assert_eq!(delete_alias(&s, carol.token(), "#carols:localhost").await.0, StatusCode::OK);
    assert_error(&resolve(&s, "#carols:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // "Can delete canonical alias" (by a room admin).
    add_alias(&s, &alice, "#main:localhost", &room).await;
    set_state(&s, &alice, &room, "m.room.canonical_alias", "", json!({"alias": "#main:localhost"})).await;
    assert_eq!(delete_alias(&s, alice.token(), "#main:localhost").await.0, StatusCode::OK);
    assert_error(&resolve(&s, "#main:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // A room member who may change the canonical alias may delete other people's aliases; a
    // server admin may delete any alias without being in the room.
    add_alias(&s, &alice, "#alices:localhost", &room).await;
    forbidden(&delete_alias(&s, bob.token(), "#alices:localhost").await);
    set_user_level(&s, &alice, &room, &bob.user_id, 50).await;
    assert_eq!(delete_alias(&s, bob.token(), "#alices:localhost").await.0, StatusCode::OK);
    add_alias(&s, &alice, "#alices:localhost", &room).await;
    let (status, admin) = admin_register(&s, "root", "pw", true).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(delete_alias(&s, admin["access_token"].as_str(), "#alices:localhost").await.0, StatusCode::OK);
    assert_error(&resolve(&s, "#alices:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(alias_list(&s, &alice, &room).await, Vec::<String>::new());
}

#[tokio::test]
async fn canonical_alias_must_point_to_the_room() {
    let (s, [alice]) = server_with(["alice"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let elsewhere = create_room(&s, &alice, json!({})).await;
    add_alias(&s, &alice, "#here:localhost", &room).await;
    add_alias(&s, &alice, "#also:localhost", &room).await;
    add_alias(&s, &alice, "#there:localhost", &elsewhere).await;
    let canonical = |content: Value| {
        let s = &s;
        let alice = &alice;
        let room = &room;
        async move { put_state(s, alice, room, "m.room.canonical_alias", "", content).await }
    };

    // Complement TestRoomCanonicalAlias: "accepts present aliases", "accepts present alt_aliases".
    let ok = json!({"alias": "#here:localhost", "alt_aliases": ["#also:localhost"]});
    assert_eq!(canonical(ok.clone()).await.0, StatusCode::OK);
    assert_eq!(state_content(&s, &alice, &room, "m.room.canonical_alias", "").await, ok);
    // "rejects missing aliases", "rejects alias pointing to different local room", for `alias`
    // and in `alt_aliases`: M_BAD_ALIAS, and the state stays as it was.
    for bad in [
        json!({"alias": "#missing:localhost"}),
        json!({"alias": "#there:localhost"}),
        json!({"alias": "#here:localhost", "alt_aliases": ["#missing:localhost"]}),
        json!({"alias": "#here:localhost", "alt_aliases": ["#also:localhost", "#there:localhost"]}),
    ] {
        assert_error(&canonical(bad).await, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    }
    // "rejects invalid aliases": M_INVALID_PARAM.
    for bad in [
        json!({"alias": "not an alias"}),
        json!({"alias": "#here:localhost", "alt_aliases": ["%also:localhost"]}),
        json!({"alias": "#here:localhost", "alt_aliases": "#also:localhost"}),
    ] {
        assert_error(&canonical(bad).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    assert_eq!(state_content(&s, &alice, &room, "m.room.canonical_alias", "").await, ok);
    // "setting rejects deleted aliases".
    assert_eq!(delete_alias(&s, alice.token(), "#also:localhost").await.0, StatusCode::OK);
    assert_error(&canonical(json!({"alias": "#also:localhost"})).await, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    // Aliases of other servers are not checked here; an empty event clears the canonical alias.
    assert_eq!(canonical(json!({"alt_aliases": ["#far:elsewhere.example"]})).await.0, StatusCode::OK);
    assert_eq!(canonical(json!({})).await.0, StatusCode::OK);
    assert_eq!(state_content(&s, &alice, &room, "m.room.canonical_alias", "").await, json!({}));
}

#[tokio::test]
async fn join_by_alias() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let private = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    add_alias(&s, &alice, "#open:localhost", &room).await;
    add_alias(&s, &alice, "#closed:localhost", &private).await;
    let join_alias = |who: &Account, alias: &str, body: Value| {
        let path = format!("/_matrix/client/v3/join/{}", enc(alias));
        let token = who.access_token.clone();
        let s = &s;
        async move { s.post(&path, Some(&token), body).await }
    };

    // Sytest "POST /join/:room_alias can join a room", with a reason in the member event.
    let (status, body) = join_alias(&bob, "#open:localhost", json!({"reason": "hi"})).await;
    assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)), "{body}");
    let member = state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!((&member["membership"], &member["reason"]), (&json!("join"), &json!("hi")), "{member}");
    // An invite-only room stays closed by alias; an invite opens it.
    forbidden(&join_alias(&bob, "#closed:localhost", json!({})).await);
    invite(&s, &alice, &private, &bob.user_id).await;
    let (status, body) = join_alias(&bob, "#closed:localhost", json!({})).await;
    assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(private)), "{body}");
    // Unknown and deleted aliases are 404.
    assert_error(&join_alias(&carol, "#nothing:localhost", json!({})).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(delete_alias(&s, alice.token(), "#open:localhost").await.0, StatusCode::OK);
    assert_error(&join_alias(&carol, "#open:localhost", json!({})).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let r = member_action(&s, &carol, &room, "join", json!({})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
}

#[tokio::test]
async fn directory_visibility_needs_power() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let public = create_room(&s, &alice, json!({"preset": "public_chat", "visibility": "public"})).await;
    let private = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &private).await;

    // GET needs no token; createRoom's visibility decides the start.
    assert_eq!(directory_visibility(&s, &public).await, "public");
    assert_eq!(directory_visibility(&s, &private).await, "private");
    let r = s.get(&visibility_path("!unknown:localhost"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Only members with the power to change the canonical alias publish (bob has 0 of 50); people
    // outside the room never, and a token is required.
    forbidden(&set_visibility(&s, bob.token(), &private, "public").await);
    forbidden(&set_visibility(&s, carol.token(), &private, "public").await);
    forbidden(&set_visibility(&s, carol.token(), &public, "private").await);
    assert_error(&set_visibility(&s, None, &private, "public").await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    assert_eq!(directory_visibility(&s, &private).await, "private");
    assert!(!room_ids(&public_rooms(&s, "").await).contains(&private));
    set_user_level(&s, &alice, &private, &bob.user_id, 50).await;
    assert_eq!(set_visibility(&s, bob.token(), &private, "public").await.0, StatusCode::OK);
    assert_eq!(directory_visibility(&s, &private).await, "public");
    assert!(room_ids(&public_rooms(&s, "").await).contains(&private));

    // Unpublishing removes the room from the list; unknown visibilities are refused.
    assert_eq!(set_visibility(&s, alice.token(), &public, "private").await.0, StatusCode::OK);
    assert_eq!(directory_visibility(&s, &public).await, "private");
    assert!(!room_ids(&public_rooms(&s, "").await).contains(&public));
    let r = set_visibility(&s, alice.token(), &public, "everyone").await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    assert_eq!(directory_visibility(&s, &public).await, "private");
    let r = set_visibility(&s, alice.token(), "!unknown:localhost", "public").await;
    assert_error(&r, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // A server admin may publish any room.
    let (status, admin) = admin_register(&s, "root", "pw", true).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(set_visibility(&s, admin["access_token"].as_str(), &public, "public").await.0, StatusCode::OK);
    assert_eq!(directory_visibility(&s, &public).await, "public");
}

#[tokio::test]
async fn public_rooms_fields_search_and_pages() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    // Sytest "GET /publicRooms lists newly-created room", "Name/topic keys are correct".
    let zoo = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Zoo", "topic": "Lions and Zebras",
               "room_alias_name": "zoo"}),
    )
    .await;
    let cafe = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Café",
               "initial_state": [
                   {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                   {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
                   {"type": "m.room.avatar", "content": {"url": "mxc://localhost/cafe"}}]}),
    )
    .await;
    let bare = create_room(&s, &alice, json!({"preset": "public_chat", "visibility": "public"})).await;
    let hidden = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Hidden Zebra"})).await;
    join(&s, &bob, &zoo).await;
    join(&s, &carol, &zoo).await;
    join(&s, &bob, &cafe).await;

    // No token needed; published rooms only.
    let all = public_rooms(&s, "").await;
    let mut listed = room_ids(&all);
    listed.sort();
    let mut expected = vec![zoo.clone(), cafe.clone(), bare.clone()];
    expected.sort();
    assert_eq!(listed, expected, "{all}");
    assert_eq!(all["total_room_count_estimate"], 3, "{all}");
    let z = entry(&all, &zoo);
    assert_eq!(z["name"], "Zoo", "{z}");
    assert_eq!(z["topic"], "Lions and Zebras", "{z}");
    assert_eq!(z["canonical_alias"], "#zoo:localhost", "{z}");
    assert_eq!(z["num_joined_members"], 3, "{z}");
    assert_eq!((&z["world_readable"], &z["guest_can_join"]), (&json!(false), &json!(false)), "{z}");
    assert_eq!(join_rule(z), "public", "{z}");
    let c = entry(&all, &cafe);
    assert_eq!((&c["name"], &c["num_joined_members"]), (&json!("Café"), &json!(2)), "{c}");
    assert_eq!((&c["world_readable"], &c["guest_can_join"]), (&json!(true), &json!(true)), "{c}");
    // Sytest "GET /publicRooms includes avatar URLs".
    assert_eq!(c["avatar_url"], "mxc://localhost/cafe", "{c}");
    assert!(c.get("topic").is_none() && c.get("canonical_alias").is_none(), "{c}");
    let b = entry(&all, &bare);
    assert!(b.get("name").is_none(), "{b}");
    assert_eq!(b["num_joined_members"], 1, "{b}");

    // Member counts follow joins and leaves.
    leave(&s, &carol, &zoo).await;
    assert_eq!(entry(&public_rooms(&s, "").await, &zoo)["num_joined_members"], 2);

    // Sytest "Can paginate public room list": limit/since walk all rooms once, forwards and back.
    let first = public_rooms(&s, "limit=2").await;
    assert_eq!(room_ids(&first).len(), 2, "{first}");
    assert!(first.get("prev_batch").is_none_or(Value::is_null), "{first}");
    let next = first["next_batch"].as_str().expect("next_batch");
    let second = public_rooms(&s, &format!("limit=2&since={}", enc(next))).await;
    assert_eq!(room_ids(&second).len(), 1, "{second}");
    assert!(second.get("next_batch").is_none_or(Value::is_null), "{second}");
    let mut paged = [room_ids(&first), room_ids(&second)].concat();
    paged.sort();
    assert_eq!(paged, expected);
    let prev = second["prev_batch"].as_str().expect("prev_batch");
    assert_eq!(room_ids(&public_rooms(&s, &format!("limit=2&since={}", enc(prev))).await), room_ids(&first));
    let r = s.get("/_matrix/client/v3/publicRooms?since=garbage", None).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);

    // Complement "Can search public room list": POST with generic_search_term matches name, topic
    // and alias case-insensitively; published rooms only (the hidden one has "Zebra" in its name).
    let search = |body: Value| {
        let s = &s;
        let token = alice.access_token.clone();
        async move {
            let (status, page) = s.post("/_matrix/client/v3/publicRooms", Some(&token), body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{body}: {page}");
            page
        }
    };
    for term in ["zebra", "ZOO", "#zoo:", "lions"] {
        let page = search(json!({"filter": {"generic_search_term": term}})).await;
        assert_eq!(room_ids(&page), [zoo.as_str()], "{term}: {page}");
    }
    let page = search(json!({"filter": {"generic_search_term": "café"}})).await;
    assert_eq!(room_ids(&page), [cafe.as_str()], "{page}");
    assert!(room_ids(&search(json!({"filter": {"generic_search_term": "nothing like it"}})).await).is_empty());
    assert!(!room_ids(&search(json!({"filter": {"generic_search_term": "hidden"}})).await).contains(&hidden));
    let page = search(json!({"limit": 1, "filter": {}})).await;
    assert_eq!(room_ids(&page).len(), 1, "{page}");
    let rest = search(json!({"limit": 5, "since": page["next_batch"]})).await;
    assert_eq!(room_ids(&rest).len(), 2, "{rest}");
    assert!(!room_ids(&rest).contains(&room_ids(&page)[0]), "{page} {rest}");
    // POST needs a token.
    assert_error(
        &s.post("/_matrix/client/v3/publicRooms", None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

/// `POST /user_directory/search`: the user ids found and `limited`.
async fn search_users(s: &TestServer, who: &Account, term: &str, limit: Option<u64>) -> (Vec<String>, bool) {
    let mut body = json!({"search_term": term});
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    let (status, resp) = s.post("/_matrix/client/v3/user_directory/search", who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "search {term:?} as {}: {resp}", who.user_id);
    let found = resp["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|u| u["user_id"].as_str().expect("user_id").to_owned())
        .collect();
    (found, resp["limited"].as_bool().expect("limited"))
}

#[tokio::test]
async fn user_directory_search() {
    let (s, [alice, bob, carol, dave, eve]) = server_with(["alice", "bob", "carol", "dave", "eve"]).await;
    let name = |who: &Account, n: &str| {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", who.user_id);
        let token = who.access_token.clone();
        let body = json!({"displayname": n});
        let s = &s;
        async move { assert_eq!(s.put(&path, Some(&token), body).await.0, StatusCode::OK) }
    };
    name(&bob, "Roberta Searchable").await;
    name(&carol, "Carola Searchable").await;
    name(&dave, "Dave Searchable").await;

    // Sytest "User in private room doesn't appear in user directory": dave is only in a private
    // room alice is not in.
    let dave_room = create_room(&s, &dave, json!({"preset": "private_chat"})).await;
    let (found, limited) = search_users(&s, &alice, "searchable", None).await;
    assert!(found.is_empty() && !limited, "{found:?}");

    // "User in shared private room does appear in user directory".
    let shared = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    invite(&s, &alice, &shared, &bob.user_id).await;
    join(&s, &bob, &shared).await;
    assert_eq!(search_users(&s, &alice, "searchable", None).await.0, [bob.user_id.as_str()]);
    // Search by user id and by display name, case-insensitively.
    assert_eq!(search_users(&s, &alice, "ROBERTA", None).await.0, [bob.user_id.as_str()]);
    assert_eq!(search_users(&s, &alice, "@bob", None).await.0, [bob.user_id.as_str()]);
    let (status, resp) =
        s.post("/_matrix/client/v3/user_directory/search", alice.token(), json!({"search_term": "roberta"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["results"][0]["display_name"], "Roberta Searchable", "{resp}");
    // Sytest "User directory correctly update on display name change".
    name(&bob, "Bobbie Searchable").await;
    assert!(search_users(&s, &alice, "roberta", None).await.0.is_empty());
    assert_eq!(search_users(&s, &alice, "bobbie", None).await.0, [bob.user_id.as_str()]);

    // Sytest "User appears in user directory": carol is in a room with a public join rule.
    let open = create_room(&s, &eve, json!({"preset": "public_chat", "visibility": "public"})).await;
    join(&s, &carol, &open).await;
    let (mut found, limited) = search_users(&s, &alice, "searchable", None).await;
    found.sort();
    assert_eq!(found, [bob.user_id.clone(), carol.user_id.clone()]);
    assert!(!limited);
    // The spec counts public join rules and world-readable history, published or not.
    let unlisted = create_room(&s, &eve, json!({"preset": "public_chat"})).await;
    join(&s, &dave, &unlisted).await;
    let (found, _) = search_users(&s, &alice, "dave", None).await;
    assert_eq!(found, [dave.user_id.as_str()], "a member of a public, unlisted room");
    leave(&s, &dave, &unlisted).await;
    let readable = create_room(
        &s,
        &eve,
        json!({"preset": "private_chat",
               "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    invite(&s, &eve, &readable, &dave.user_id).await;
    join(&s, &dave, &readable).await;
    let (found, _) = search_users(&s, &alice, "dave", None).await;
    assert_eq!(found, [dave.user_id.as_str()], "a member of a world-readable room");
    leave(&s, &dave, &readable).await;
    assert!(search_users(&s, &alice, "dave", None).await.0.is_empty());
    let _ = dave_room;

    // `limited` says results were cut.
    let (found, limited) = search_users(&s, &alice, "searchable", Some(1)).await;
    assert_eq!((found.len(), limited), (1, true), "{found:?}");

    // "User in shared private room does appear in user directory until leave"; "User joining then
    // leaving public room appears and dissappears from directory".
    leave(&s, &bob, &shared).await;
    leave(&s, &carol, &open).await;
    assert!(search_users(&s, &alice, "searchable", None).await.0.is_empty());
    // A token is required.
    assert_error(
        &s.post("/_matrix/client/v3/user_directory/search", None, json!({"search_term": "bob"})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

/// `GET /_matrix/client/v1/room_summary/{target}`.
async fn summary(s: &TestServer, who: Option<&Account>, target: &str) -> (StatusCode, Value) {
    s.get(&format!("/_matrix/client/v1/room_summary/{}", enc(target)), who.and_then(Account::token)).await
}

#[tokio::test]
async fn room_summaries() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;
    let public = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "room_version": "11", "name": "Town hall", "topic": "Everyone welcome",
               "room_alias_name": "townhall"}),
    )
    .await;
    join(&s, &bob, &public).await;

    // A public room, by alias and by id, for a non-member and without a token.
    for (who, target) in
        [(Some(&carol), "#townhall:localhost"), (Some(&carol), public.as_str()), (None, public.as_str())]
    {
        let (status, body) = summary(&s, who, target).await;
        assert_eq!(status, StatusCode::OK, "{target}: {body}");
        assert_eq!(body["room_id"], public.as_str(), "{body}");
        assert_eq!(body["name"], "Town hall", "{body}");
        assert_eq!(body["topic"], "Everyone welcome", "{body}");
        assert_eq!(body["canonical_alias"], "#townhall:localhost", "{body}");
        assert_eq!(body["num_joined_members"], 2, "{body}");
        assert_eq!(join_rule(&body), "public", "{body}");
        assert_eq!(body["room_version"], "11", "{body}");
        assert_eq!((&body["world_readable"], &body["guest_can_join"]), (&json!(false), &json!(false)), "{body}");
        assert!(body.get("membership").is_none_or(|m| m == "leave"), "{body}");
    }
    // Members see their membership.
    let (status, body) = summary(&s, Some(&bob), &public).await;
    assert_eq!((status, &body["membership"]), (StatusCode::OK, &json!("join")), "{body}");

    // A private room is hidden from outsiders, with or without a token, by id and by alias.
    let private = create_room(&s, &alice, json!({"preset": "private_chat", "name": "Back office"})).await;
    add_alias(&s, &alice, "#office:localhost", &private).await;
    for (who, target) in
        [(Some(&carol), private.as_str()), (Some(&carol), "#office:localhost"), (None, private.as_str())]
    {
        let r = summary(&s, who, target).await;
        assert!(matches!(r.0, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN), "{target}: {} {}", r.0, r.1);
        assert!(matches!(r.1["errcode"].as_str(), Some("M_NOT_FOUND" | "M_FORBIDDEN")), "{}", r.1);
        assert!(r.1.get("name").is_none(), "{}", r.1);
    }
    // The invited see it, and so do members.
    invite(&s, &alice, &private, &carol.user_id).await;
    let (status, body) = summary(&s, Some(&carol), "#office:localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["name"], &body["membership"]), (&json!("Back office"), &json!("invite")), "{body}");
    assert_eq!(join_rule(&body), "invite", "{body}");
    let (status, body) = summary(&s, Some(&alice), &private).await;
    assert_eq!((status, &body["membership"]), (StatusCode::OK, &json!("join")), "{body}");

    // Unknown rooms and aliases are 404.
    assert_error(&summary(&s, Some(&carol), "!unknown:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&summary(&s, Some(&carol), "#unknown:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}
