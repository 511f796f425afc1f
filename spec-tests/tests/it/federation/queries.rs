//! The query endpoints between real `poststelle` processes: profiles, device keys (query and
//! claim), public room directories and device-list updates of users on another server, each
//! asked for by a client of one server and answered by the other, with the public-sector rule
//! that a server learns about a user only while one of its users shares a room with them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error};

use super::origin::{Origin, enc};

/// Two federating servers; Bob on B joined Alice's public room on A, and A has seen the join.
struct Pair {
    a: TestServer,
    b: TestServer,
    alice: Account,
    bob: Account,
    room: String,
}

async fn pair() -> Pair {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let (status, body) = a
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat", "visibility": "public", "room_version": "11", "name": "Bürgeramt"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().expect("room id").to_owned();
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&a.server_name));
    let (status, answer) = b.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}\nB log:\n{}", b.log());
    let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
    wait_until("Bob's join reaches A", &a, || async {
        let (status, content) = a.get(&member, alice.token()).await;
        status == StatusCode::OK && content["membership"] == "join"
    })
    .await;
    Pair { a, b, alice, bob, room }
}

/// Polls `check` (up to 30 s) until it holds.
async fn wait_until<F, Fut>(what: &str, s: &TestServer, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: timed out; log of {}:\n{}", s.server_name, s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn device_keys(who: &Account, curve: &str) -> Value {
    json!({
        "user_id": who.user_id, "device_id": who.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{}", who.device_id): curve, format!("ed25519:{}", who.device_id): "ed-key"},
    })
}

async fn upload(s: &TestServer, who: &Account, body: Value) {
    let (status, answer) = s.post("/_matrix/client/v3/keys/upload", who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Alice on A and Bob on B read each other's profile through their own servers (`/profile`,
/// `/displayname`, `/avatar_url`); Carol on B, who shares no room with Alice, is refused by B.
#[tokio::test]
async fn profiles_of_remote_users_who_share_a_room() {
    let p = pair().await;
    let (a, b, alice, bob) = (&p.a, &p.b, &p.alice, &p.bob);
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    let (status, answer) = a.put(&path, alice.token(), json!({"displayname": "Alice vom Amt"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let path = format!("/_matrix/client/v3/profile/{}/avatar_url", enc(&alice.user_id));
    let (status, answer) = a.put(&path, alice.token(), json!({"avatar_url": "mxc://a/alice"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    let (status, answer) = b.put(&path, bob.token(), json!({"displayname": "Bob Bürger"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let (status, profile) = b.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{profile}\nA log:\n{}", a.log());
    assert_eq!(
        (profile["displayname"].as_str(), profile["avatar_url"].as_str()),
        (Some("Alice vom Amt"), Some("mxc://a/alice"))
    );
    let (status, name) =
        b.get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)), bob.token()).await;
    assert_eq!((status, name["displayname"].as_str()), (StatusCode::OK, Some("Alice vom Amt")), "{name}");
    let (status, avatar) =
        b.get(&format!("/_matrix/client/v3/profile/{}/avatar_url", enc(&alice.user_id)), bob.token()).await;
    assert_eq!((status, avatar["avatar_url"].as_str()), (StatusCode::OK, Some("mxc://a/alice")), "{avatar}");
    let (status, profile) = a.get(&format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id)), alice.token()).await;
    assert_eq!((status, profile["displayname"].as_str()), (StatusCode::OK, Some("Bob Bürger")), "{profile}");

    // Carol shares no room with Alice: her own server refuses before asking.
    let carol = b.register("carol", "pw-carol-123").await;
    let answer = b.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)), carol.token()).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A user A does not have: 404 through B.
    let nobody = format!("@nobody:{}", a.server_name);
    let (status, answer) = b.get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody)), bob.token()).await;
    assert_ne!(status, StatusCode::OK, "{answer}");
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
}

/// A server none of whose users shares a room with Alice gets neither her profile nor her
/// devices (403); once its user joins her room, it gets both. Unknown users are 404, malformed
/// queries 400.
#[tokio::test]
async fn a_server_learns_about_a_user_only_while_sharing_a_room() {
    let p = pair().await;
    let (a, alice) = (&p.a, &p.alice);
    upload(a, alice, json!({"device_keys": device_keys(alice, "alice-curve")})).await;
    let origin = Origin::start().await;
    let profile = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&alice.user_id));
    let devices = format!("/_matrix/federation/v1/user/devices/{}", enc(&alice.user_id));
    let query = json!({"device_keys": {alice.user_id.clone(): []}});

    let answer = origin.request(a, "GET", &profile, None).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let answer = origin.request(a, "GET", &devices, None).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, keys) = origin.request(a, "POST", "/_matrix/federation/v1/user/keys/query", Some(&query)).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert!(keys["device_keys"].get(&alice.user_id).is_none(), "keys leaked to a stranger: {keys}");

    // Unknown and foreign users, malformed queries.
    let nobody = format!("@nobody:{}", a.server_name);
    let answer =
        origin.request(a, "GET", &format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&nobody)), None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let answer = origin.request(a, "GET", &format!("/_matrix/federation/v1/user/devices/{}", enc(&nobody)), None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let foreign = format!("@someone:{}", origin.name);
    let answer = origin
        .request(a, "GET", &format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&foreign)), None)
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, answer) =
        origin.request(a, "GET", "/_matrix/federation/v1/query/profile?user_id=not-a-user-id", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(["M_BAD_JSON", "M_INVALID_PARAM"].contains(&answer["errcode"].as_str().unwrap_or_default()), "{answer}");
    let (status, answer) = origin
        .request(a, "POST", "/_matrix/federation/v1/user/keys/query", Some(&json!({"device_keys": "nope"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(["M_BAD_JSON", "M_NOT_JSON"].contains(&answer["errcode"].as_str().unwrap_or_default()), "{answer}");

    // The origin's user joins Alice's room: now its server may know her.
    origin.join(a, &p.room, "olga", "11").await;
    let (status, answer) = origin.request(a, "GET", &profile, None).await;
    assert_eq!((status, answer["displayname"].as_str()), (StatusCode::OK, Some("alice")), "{answer}");
    let (status, answer) = origin.request(a, "GET", &devices, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user_id"], alice.user_id.as_str());
    let listed: Vec<&str> =
        answer["devices"].as_array().into_iter().flatten().filter_map(|d| d["device_id"].as_str()).collect();
    assert_eq!(listed, vec![alice.device_id.as_str()], "{answer}");
    assert!(answer["stream_id"].as_u64().is_some_and(|n| n > 0), "{answer}");
    let (status, keys) = origin.request(a, "POST", "/_matrix/federation/v1/user/keys/query", Some(&query)).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let curve =
        &keys["device_keys"][&alice.user_id][&alice.device_id]["keys"][format!("curve25519:{}", alice.device_id)];
    assert_eq!(curve, "alice-curve", "{keys}");
}

/// Alice on A queries and claims keys of Bob on B through her server: his device keys come
/// back, a one-time key is handed out once, and when B is down the failure is reported under
/// B's name (not a 500).
#[tokio::test]
async fn keys_of_remote_users_are_queried_and_claimed() {
    let mut p = pair().await;
    let (a, alice, bob) = (&p.a, &p.alice, &p.bob);
    upload(
        &p.b,
        bob,
        json!({
            "device_keys": device_keys(bob, "bob-curve"),
            "one_time_keys": {"signed_curve25519:AAAA": {"key": "otk-1", "signatures": {}}},
        }),
    )
    .await;

    let query = json!({"device_keys": {bob.user_id.clone(): []}, "timeout": 10000});
    let (status, keys) = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let device = &keys["device_keys"][&bob.user_id][&bob.device_id];
    assert_eq!(device["keys"][format!("curve25519:{}", bob.device_id)], "bob-curve", "{keys}\nB log:\n{}", p.b.log());
    assert!(keys["failures"].as_object().is_none_or(serde_json::Map::is_empty), "{keys}");

    let claim = json!({"one_time_keys": {bob.user_id.clone(): {bob.device_id.clone(): "signed_curve25519"}}});
    let (status, claimed) = a.post("/_matrix/client/v3/keys/claim", alice.token(), claim.clone()).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(
        claimed["one_time_keys"][&bob.user_id][&bob.device_id]["signed_curve25519:AAAA"]["key"], "otk-1",
        "{claimed}"
    );
    let (status, again) = a.post("/_matrix/client/v3/keys/claim", alice.token(), claim.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(again["one_time_keys"].get(&bob.user_id).is_none(), "a one-time key was handed out twice: {again}");

    // B goes away: its users' keys come from A's copy of Bob's device list if A keeps one by
    // then (it does while they share a room, once fetched), else they are a failure under B's
    // name; a one-time key can only come from B.
    let b_name = p.b.server_name.clone();
    p.b.stop();
    let (status, keys) = a.post("/_matrix/client/v3/keys/query", alice.token(), query).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let kept = &keys["device_keys"][&bob.user_id][&bob.device_id]["keys"][format!("curve25519:{}", bob.device_id)];
    assert!(kept == "bob-curve" || keys["failures"].get(&b_name).is_some(), "{keys}");
    let (status, claimed) = a.post("/_matrix/client/v3/keys/claim", alice.token(), claim).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert!(claimed["failures"].get(&b_name).is_some(), "{claimed}");
}

/// Bob on B lists A's public room directory (GET and POST with a search term) through B.
#[tokio::test]
async fn the_public_room_directory_of_another_server() {
    let p = pair().await;
    let (b, bob) = (&p.b, &p.bob);
    let path = format!("/_matrix/client/v3/publicRooms?server={}", enc(&p.a.server_name));
    let (status, list) = b.get(&path, bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{list}\nA log:\n{}", p.a.log());
    let rooms: Vec<&str> =
        list["chunk"].as_array().into_iter().flatten().filter_map(|r| r["room_id"].as_str()).collect();
    assert_eq!(rooms, vec![p.room.as_str()], "{list}");
    assert_eq!(list["chunk"][0]["name"], "Bürgeramt");

    let (status, hit) = b.post(&path, bob.token(), json!({"filter": {"generic_search_term": "bürger"}})).await;
    assert_eq!(status, StatusCode::OK, "{hit}");
    assert_eq!(hit["chunk"].as_array().map(Vec::len), Some(1), "{hit}");
    let (status, miss) = b.post(&path, bob.token(), json!({"filter": {"generic_search_term": "finanzamt"}})).await;
    assert_eq!(status, StatusCode::OK, "{miss}");
    assert_eq!(miss["chunk"].as_array().map(Vec::len), Some(0), "{miss}");

    // B's own directory is empty; an unreachable server is a gateway error, not a 500.
    let (status, own) = b.get("/_matrix/client/v3/publicRooms", bob.token()).await;
    assert_eq!((status, own["chunk"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{own}");
    let (status, answer) = b.get("/_matrix/client/v3/publicRooms?server=127.0.0.1%3A1", bob.token()).await;
    assert!(status.is_client_error() || status == StatusCode::BAD_GATEWAY, "{status} {answer}");
}

fn changed(sync: &Value, user: &str) -> bool {
    sync["device_lists"]["changed"].as_array().is_some_and(|l| l.iter().any(|u| u == user))
}

/// Syncs as `who` on `s` from `since` until `user` is listed in `device_lists.changed`
/// (up to 30 s); the next token.
async fn wait_for_changed(s: &TestServer, who: &Account, since: &str, user: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since = since.to_owned();
    loop {
        let (status, sync) = s.get(&format!("/_matrix/client/v3/sync?timeout=1000&since={since}"), who.token()).await;
        assert_eq!(status, StatusCode::OK, "{sync}");
        since = sync["next_batch"].as_str().expect("next_batch").to_owned();
        if changed(&sync, user) {
            return since;
        }
        assert!(Instant::now() < deadline, "{what} never reached the sync; log:\n{}", s.log());
    }
}

/// When Bob on B uploads new device keys or a cross-signing key, or a device of his logs out,
/// B sends A an `m.device_list_update` / `m.signing_key_update`: Alice's `/sync` lists Bob in
/// `device_lists.changed`, and her next `/keys/query` returns his current keys, which A keeps
/// and still answers with B stopped.
#[tokio::test]
async fn device_list_updates_reach_the_other_server() {
    let mut p = pair().await;
    let (a, b, alice, bob) = (&p.a, &p.b, &p.alice, &p.bob);
    let (status, first) = a.get("/_matrix/client/v3/sync?timeout=0", alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    let query = json!({"device_keys": {bob.user_id.clone(): []}});
    let curve_of = |keys: &Value| {
        keys["device_keys"][&bob.user_id][&bob.device_id]["keys"][format!("curve25519:{}", bob.device_id)].clone()
    };

    // Bob's first keys, then new identity keys for the same device: each change reaches A.
    upload(b, bob, json!({"device_keys": device_keys(bob, "bob-curve-1")})).await;
    let since = wait_for_changed(a, alice, &since, &bob.user_id, "Bob's first keys").await;
    let (_, keys) = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await;
    assert_eq!(curve_of(&keys), "bob-curve-1", "{keys}");
    upload(b, bob, json!({"device_keys": device_keys(bob, "bob-curve-2")})).await;
    let since = wait_for_changed(a, alice, &since, &bob.user_id, "Bob's new keys").await;
    let (_, keys) = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await;
    assert_eq!(curve_of(&keys), "bob-curve-2", "{keys}");

    // A cross-signing key: an m.signing_key_update.
    let master = json!({"user_id": bob.user_id, "usage": ["master"], "keys": {"ed25519:bobmaster": "bobmaster"}});
    let (status, answer) =
        b.post("/_matrix/client/v3/keys/device_signing/upload", bob.token(), json!({"master_key": master})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let since = wait_for_changed(a, alice, &since, &bob.user_id, "Bob's master key").await;
    let (_, keys) = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await;
    assert_eq!(keys["master_keys"][&bob.user_id]["keys"]["ed25519:bobmaster"], "bobmaster", "{keys}");

    // A second device of Bob's appears, then logs out: A learns both.
    let phone = b.login("bob", "pw-bob-123").await;
    upload(b, &phone, json!({"device_keys": device_keys(&phone, "phone-curve")})).await;
    let since = wait_for_changed(a, alice, &since, &bob.user_id, "Bob's phone").await;
    let (_, keys) = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await;
    assert!(keys["device_keys"][&bob.user_id].get(&phone.device_id).is_some(), "{keys}");
    let (status, answer) = b.post("/_matrix/client/v3/logout", phone.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    wait_for_changed(a, alice, &since, &bob.user_id, "the deletion of Bob's phone").await;
    let (_, keys) = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await;
    assert!(keys["device_keys"][&bob.user_id].get(&phone.device_id).is_none(), "{keys}");
    assert!(keys["device_keys"][&bob.user_id].get(&bob.device_id).is_some(), "{keys}");

    // A kept Bob's list from the updates (Sytest "Device list doesn't change if remote server
    // is down"): with B stopped, the same answer, no failure.
    p.b.stop();
    let (status, down) = p.a.post("/_matrix/client/v3/keys/query", p.alice.token(), query).await;
    assert_eq!(status, StatusCode::OK, "{down}");
    assert!(down["failures"].as_object().is_none_or(|f| f.is_empty()), "{down}");
    assert_eq!(down["device_keys"], keys["device_keys"], "{down}");
    assert_eq!(down["master_keys"], keys["master_keys"], "{down}");
}

/// Alice requests an OpenID token from A; another party redeems it at A's
/// `/openid/userinfo` and learns it is Alice. Unknown tokens are 401; a token for someone else
/// is refused.
#[tokio::test]
async fn openid_tokens_prove_who_a_user_is() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = a.register("bob", "pw-bob-123").await;
    let path = format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&alice.user_id));
    let (status, token) = a.post(&path, alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(
        (token["token_type"].as_str(), token["matrix_server_name"].as_str()),
        (Some("Bearer"), Some(a.server_name.as_str()))
    );
    assert!(token["expires_in"].as_u64().is_some_and(|s| s > 0 && s <= 3600), "{token}");
    let access = token["access_token"].as_str().expect("access_token");
    let answer = a.post(&path, bob.token(), json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let userinfo = |t: &str| {
        let url = format!("{}/_matrix/federation/v1/openid/userinfo?access_token={t}", a.federation_base);
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.expect("userinfo");
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, info) = userinfo(access).await;
    assert_eq!((status, info["sub"].as_str()), (StatusCode::OK, Some(alice.user_id.as_str())), "{info}");
    let answer = userinfo("oid_not-a-token").await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // The client access token is not an OpenID token.
    let answer = userinfo(&alice.access_token).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}
