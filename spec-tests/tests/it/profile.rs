//! Profiles: display name and avatar, and who may read them.

use serde_json::json;
use spec_tests::{ServerOptions, StatusCode, TestServer, assert_error};

use crate::registration::admin_register;

fn profile(user: &str) -> String {
    format!("/_matrix/client/v3/profile/{user}")
}

#[tokio::test]
async fn set_and_get_own_profile() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let me = profile(&alice.user_id);

    // A new account starts with its localpart as display name and no avatar.
    let (status, body) = s.get(&me, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"displayname": "alice"}));

    // Sytest/Complement "PUT /profile/:user_id/displayname sets my name".
    let r = s.put(&format!("{me}/displayname"), alice.token(), json!({"displayname": "Alice Liddell"})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(s.get(&format!("{me}/displayname"), alice.token()).await.1, json!({"displayname": "Alice Liddell"}));
    // "PUT /profile/:user_id/avatar_url sets my avatar".
    let r = s.put(&format!("{me}/avatar_url"), alice.token(), json!({"avatar_url": "mxc://localhost/abcdef"})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(
        s.get(&format!("{me}/avatar_url"), alice.token()).await.1,
        json!({"avatar_url": "mxc://localhost/abcdef"})
    );
    assert_eq!(
        s.get(&me, alice.token()).await.1,
        json!({"displayname": "Alice Liddell", "avatar_url": "mxc://localhost/abcdef"})
    );

    // Bad input changes nothing.
    assert_error(
        &s.put(&format!("{me}/avatar_url"), alice.token(), json!({"avatar_url": "https://example.com/a.png"})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&format!("{me}/avatar_url"), alice.token(), json!({"avatar_url": 5})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &s.put(&format!("{me}/displayname"), alice.token(), json!({"displayname": "x".repeat(257)})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&format!("{me}/displayname"), alice.token(), json!({"displayname": ["x"]})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_eq!(
        s.get(&me, alice.token()).await.1,
        json!({"displayname": "Alice Liddell", "avatar_url": "mxc://localhost/abcdef"})
    );
    // 256 bytes (128 two-byte characters) is the longest name.
    let longest = "ü".repeat(128);
    assert_eq!(
        s.put(&format!("{me}/displayname"), alice.token(), json!({"displayname": longest})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.get(&format!("{me}/displayname"), alice.token()).await.1["displayname"], longest.as_str());

    // Removing both fields.
    assert_eq!(s.put(&format!("{me}/displayname"), alice.token(), json!({})).await.0, StatusCode::OK);
    assert_eq!(s.put(&format!("{me}/avatar_url"), alice.token(), json!({})).await.0, StatusCode::OK);
    assert_eq!(s.get(&me, alice.token()).await.1, json!({}));
    assert!(s.get(&format!("{me}/displayname"), alice.token()).await.1["displayname"].is_null());

    // Another user's profile cannot be set; without a token nothing can.
    let bob = s.register("bob", "pw").await;
    let bobs = profile(&bob.user_id);
    assert_error(
        &s.put(&format!("{bobs}/displayname"), alice.token(), json!({"displayname": "Mallory"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.put(&format!("{bobs}/avatar_url"), alice.token(), json!({"avatar_url": "mxc://localhost/x"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(s.get(&bobs, bob.token()).await.1, json!({"displayname": "bob"}), "Bob's profile is untouched");
    assert_error(
        &s.put(&format!("{me}/displayname"), None, json!({"displayname": "x"})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn private_profiles_by_default() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let alices = profile(&alice.user_id);
    // Other users (and anonymous clients) get 403 for every profile endpoint.
    for path in [alices.clone(), format!("{alices}/displayname"), format!("{alices}/avatar_url")] {
        assert_error(&s.get(&path, bob.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert_error(&s.get(&path, None).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // Unknown local users look the same as private ones (no account enumeration).
    assert_error(&s.get(&profile("@nobody:localhost"), bob.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Users of other servers follow the same rule: no shared room, no question to their server.
    assert_error(&s.get(&profile("@carol:remote.example"), bob.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Admins read every local profile.
    let (status, admin) = admin_register(&s, "root", "pw", true).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    let (status, body) = s.get(&alices, admin["access_token"].as_str()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"displayname": "alice"})));
    assert_error(
        &s.get(&profile("@nobody:localhost"), admin["access_token"].as_str()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn public_profiles_when_configured() {
    let s = TestServer::start_with(ServerOptions::default().set("POSTSTELLE_PRIVACY__PUBLIC_PROFILES", "true")).await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let alices = profile(&alice.user_id);
    s.put(&format!("{alices}/avatar_url"), alice.token(), json!({"avatar_url": "mxc://localhost/pic"})).await;
    // Sytest/Complement "GET /profile/:user_id/displayname publicly accessible" (and avatar_url).
    assert_eq!(s.get(&format!("{alices}/displayname"), None).await, (StatusCode::OK, json!({"displayname": "alice"})));
    assert_eq!(
        s.get(&format!("{alices}/avatar_url"), None).await,
        (StatusCode::OK, json!({"avatar_url": "mxc://localhost/pic"}))
    );
    assert_eq!(
        s.get(&alices, bob.token()).await,
        (StatusCode::OK, json!({"displayname": "alice", "avatar_url": "mxc://localhost/pic"}))
    );
    // Reading is public, writing is not.
    assert_error(
        &s.put(&format!("{alices}/displayname"), bob.token(), json!({"displayname": "x"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Unknown local users and remote users: 404.
    for path in [profile("@nobody:localhost"), format!("{}/displayname", profile("@nobody:localhost"))] {
        assert_error(&s.get(&path, bob.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    // Remote users are asked for at their server (federation::queries); this test server does
    // not federate, so it refuses without asking.
    assert_error(&s.get(&profile("@carol:remote.example"), None).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Not a user id at all.
    assert_error(&s.get(&profile("alice"), None).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

/// Users who share a room see each other's profiles; a profile change reaches the rooms as a new
/// member event.
#[tokio::test]
async fn room_members_see_profiles_and_profile_changes() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let carol = s.register("carol", "pw").await;
    let (status, created) =
        s.post("/_matrix/client/v3/createRoom", alice.token(), json!({"preset": "public_chat"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let room_path = room.replace('!', "%21").replace(':', "%3A");
    let r = s.post(&format!("/_matrix/client/v3/rooms/{room_path}/join"), bob.token(), json!({})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);

    // Bob shares a room with Alice now; Carol does not.
    assert_eq!(s.get(&profile(&alice.user_id), bob.token()).await.1, json!({"displayname": "alice"}));
    assert_error(&s.get(&profile(&alice.user_id), carol.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // A new display name and avatar show in Alice's member event.
    let me = profile(&alice.user_id);
    let r = s.put(&format!("{me}/displayname"), alice.token(), json!({"displayname": "Alice L."})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = s.put(&format!("{me}/avatar_url"), alice.token(), json!({"avatar_url": "mxc://localhost/pic"})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let member_path = format!(
        "/_matrix/client/v3/rooms/{room_path}/state/m.room.member/{}",
        alice.user_id.replace('@', "%40").replace(':', "%3A")
    );
    let (status, member) = s.get(&member_path, bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member, json!({"membership": "join", "displayname": "Alice L.", "avatar_url": "mxc://localhost/pic"}));

    // Bob leaves: no shared room any more, so no profile.
    let r = s.post(&format!("/_matrix/client/v3/rooms/{room_path}/leave"), bob.token(), json!({})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_error(&s.get(&profile(&alice.user_id), bob.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}
