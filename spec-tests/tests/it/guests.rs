//! Guest access (the client-server spec's guest access module, Sytest
//! `tests/30rooms/13guestaccess.pl`): guest registration behind `registration.allow_guest_access`,
//! the guest endpoint list, joining only `can_join` rooms, the guests' removal when a room
//! revokes guest access, display names, and the upgrade to a full account.

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error};

pub(crate) fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('#', "%23").replace('@', "%40")
}

/// Server options with guest access allowed.
pub(crate) fn with_guests(options: ServerOptions) -> ServerOptions {
    options.set("POSTSTELLE_REGISTRATION__ALLOW_GUEST_ACCESS", true)
}

/// Registers a guest (`/register?kind=guest` with an empty body, as Sytest's fixture does).
pub(crate) async fn register_guest(s: &TestServer) -> Account {
    let (status, body) = s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Account::from_response(&body, "")
}

/// Creates a room with `preset` on `s`; its id.
pub(crate) async fn create_room(s: &TestServer, owner: &Account, preset: &str) -> String {
    let (status, body) =
        s.post("/_matrix/client/v3/createRoom", owner.token(), json!({"preset": preset, "name": "guests"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["room_id"].as_str().expect("room id").to_owned()
}

/// Sets the room's `m.room.guest_access`.
pub(crate) async fn set_guest_access(s: &TestServer, who: &Account, room: &str, access: &str) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.guest_access/", enc(room));
    s.put(&path, who.token(), json!({"guest_access": access})).await
}

pub(crate) async fn join(s: &TestServer, who: &Account, room: &str) -> (StatusCode, Value) {
    s.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), who.token(), json!({})).await
}

/// `user`'s member event content in the room as `who` reads it on `s` (`Null` if none).
pub(crate) async fn member_content(s: &TestServer, who: &Account, room: &str, user: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(user));
    let (status, content) = s.get(&path, who.token()).await;
    if status == StatusCode::OK { content } else { Value::Null }
}

/// `/whoami`'s `is_guest` (absent means `false`).
fn is_guest(whoami: &Value) -> bool {
    whoami["is_guest"].as_bool().unwrap_or(false)
}

/// Guest registration is off unless configured (as Synapse's `allow_guest_access`).
#[tokio::test]
async fn guest_registration_is_off_by_default() {
    let s = TestServer::start().await;
    let refused = s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}

/// A guest registers without credentials (numeric user id, a device and a token); `/whoami`
/// says it is a guest. Guests reach the guest endpoints only: others answer 403
/// `M_GUEST_ACCESS_FORBIDDEN`. Numeric usernames are kept for guests.
/// Sytest: "Guest user cannot call /events globally".
#[tokio::test]
async fn guests_register_without_credentials_and_reach_only_guest_endpoints() {
    let s = TestServer::start_with(with_guests(ServerOptions::default())).await;
    let guest = register_guest(&s).await;
    let localpart = guest.user_id.trim_start_matches('@').split(':').next().expect("localpart");
    assert!(localpart.bytes().all(|b| b.is_ascii_digit()), "{}", guest.user_id);
    let second = register_guest(&s).await;
    assert_ne!(second.user_id, guest.user_id);

    let (status, me) = s.get("/_matrix/client/v3/account/whoami", guest.token()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!((me["user_id"].as_str(), me["is_guest"].as_bool()), (Some(guest.user_id.as_str()), Some(true)));
    assert_eq!(me["device_id"], guest.device_id.as_str());
    let alice = s.register("alice", "pw-alice-123").await;
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", alice.token()).await;
    assert!(!is_guest(&me), "{me}");

    // Allowed: sync, devices, keys, push rules, profiles, the room directory.
    for path in [
        "/_matrix/client/v3/sync?timeout=0",
        "/_matrix/client/v3/devices",
        "/_matrix/client/v3/pushrules/",
        "/_matrix/client/v3/joined_rooms",
        "/_matrix/client/v3/publicRooms",
        "/_matrix/client/versions",
    ] {
        let (status, body) = s.get(path, guest.token()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, body) = s.post("/_matrix/client/v3/keys/upload", guest.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        s.post("/_matrix/client/v3/keys/query", guest.token(), json!({"device_keys": {&alice.user_id: []}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Refused: creating rooms, account data, avatars, key backups, the global event stream.
    let forbidden = "M_GUEST_ACCESS_FORBIDDEN";
    let create = s.post("/_matrix/client/v3/createRoom", guest.token(), json!({})).await;
    assert_error(&create, StatusCode::FORBIDDEN, forbidden);
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example", enc(&guest.user_id));
    assert_error(&s.put(&path, guest.token(), json!({"a": 1})).await, StatusCode::FORBIDDEN, forbidden);
    let path = format!("/_matrix/client/v3/profile/{}/avatar_url", enc(&guest.user_id));
    let avatar = s.put(&path, guest.token(), json!({"avatar_url": "mxc://localhost/abc"})).await;
    assert_error(&avatar, StatusCode::FORBIDDEN, forbidden);
    let backup = s
        .post(
            "/_matrix/client/v3/room_keys/version",
            guest.token(),
            json!({"algorithm": "m.megolm_backup.v1", "auth_data": {}}),
        )
        .await;
    assert_error(&backup, StatusCode::FORBIDDEN, forbidden);
    let (status, body) = s.get("/_matrix/client/v3/events?timeout=0", guest.token()).await;
    assert!(status.is_client_error(), "/events: {status} {body}");

    // Numeric localparts are the guests'.
    let numeric = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "12345", "password": "pw-numeric-1", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&numeric, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
}

/// A guest joins a room only while its `m.room.guest_access` is `can_join` (403 `M_FORBIDDEN`
/// otherwise), its member event says `"kind": "guest"`, and it may send messages but no other
/// event types. `/publicRooms` shows which rooms guests can join.
/// Sytest: "Guest users can join guest_access rooms", "Guest users can send messages to
/// guest_access rooms if joined".
#[tokio::test]
async fn guest_users_join_guest_access_rooms_and_send_messages() {
    let s = TestServer::start_with(with_guests(ServerOptions::default())).await;
    let alice = s.register("alice", "pw-alice-123").await;
    let guest = register_guest(&s).await;
    // `public_chat` rooms start with guest access forbidden.
    let room = create_room(&s, &alice, "public_chat").await;
    assert_error(&join(&s, &guest, &room).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let path = format!("/_matrix/client/v3/directory/list/room/{}", enc(&room));
    let (status, body) = s.put(&path, alice.token(), json!({"visibility": "public"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed =
        |body: &Value| body["chunk"].as_array().into_iter().flatten().find(|r| r["room_id"] == room.as_str()).cloned();
    let (_, rooms) = s.get("/_matrix/client/v3/publicRooms", guest.token()).await;
    assert_eq!(listed(&rooms).map(|r| r["guest_can_join"].clone()), Some(json!(false)), "{rooms}");

    let (status, body) = set_guest_access(&s, &alice, &room, "can_join").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, rooms) = s.get("/_matrix/client/v3/publicRooms", guest.token()).await;
    assert_eq!(listed(&rooms).map(|r| r["guest_can_join"].clone()), Some(json!(true)), "{rooms}");
    let (status, body) = join(&s, &guest, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let member = member_content(&s, &alice, &room, &guest.user_id).await;
    assert_eq!((member["membership"].as_str(), member["kind"].as_str()), (Some("join"), Some("guest")), "{member}");

    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/g1", enc(&room));
    let (status, body) = s.put(&path, guest.token(), json!({"msgtype": "m.text", "body": "sup"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&room));
    let (status, page) = s.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let latest = &page["chunk"][0];
    assert_eq!(
        (latest["sender"].as_str(), latest["content"]["body"].as_str()),
        (Some(guest.user_id.as_str()), Some("sup"))
    );
    // The guest reads the room too.
    let (status, page) = s.get(&path, guest.token()).await;
    assert_eq!((status, page["chunk"][0]["content"]["body"].as_str()), (StatusCode::OK, Some("sup")), "{page}");

    let path = format!("/_matrix/client/v3/rooms/{}/send/m.reaction/g2", enc(&room));
    let reaction = s.put(&path, guest.token(), json!({})).await;
    assert_error(&reaction, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&guest.user_id));
    let (status, body) = s.put(&typing, guest.token(), json!({"typing": true, "timeout": 1000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let leave = s.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), guest.token(), json!({})).await;
    assert_eq!(leave.0, StatusCode::OK, "{}", leave.1);
}

/// When a room's guest access changes away from `can_join`, the server makes its guests leave
/// (their own leave events; invited guests decline); full members stay.
/// Sytest: "Guest users are kicked from guest_access rooms on revocation of guest_access".
#[tokio::test]
async fn guest_users_are_kicked_on_revocation_of_guest_access() {
    let s = TestServer::start_with(with_guests(ServerOptions::default())).await;
    let alice = s.register("alice", "pw-alice-123").await;
    let bob = s.register("bob", "pw-bob-123").await;
    let guest = register_guest(&s).await;
    let invited = register_guest(&s).await;
    let room = create_room(&s, &alice, "public_chat").await;
    set_guest_access(&s, &alice, &room, "can_join").await;
    assert_eq!(join(&s, &guest, &room).await.0, StatusCode::OK);
    assert_eq!(join(&s, &bob, &room).await.0, StatusCode::OK);
    assert_eq!(member_content(&s, &alice, &room, &guest.user_id).await["membership"], "join");
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let (status, body) = s.post(&path, alice.token(), json!({"user_id": invited.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = set_guest_access(&s, &alice, &room, "forbidden").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = format!("/_matrix/client/v3/rooms/{}/state", enc(&room));
    let (_, state) = s.get(&path, alice.token()).await;
    let leave = state
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == guest.user_id.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(leave["content"]["membership"], "leave", "{state}");
    assert_eq!(leave["sender"], guest.user_id.as_str(), "the guest leaves itself: {leave}");
    assert_eq!(member_content(&s, &alice, &room, &bob.user_id).await["membership"], "join");
    // An invited guest's invite is declined the same way.
    assert_eq!(member_content(&s, &alice, &room, &invited.user_id).await["membership"], "leave");
    // Back in only when guests are allowed again.
    assert_error(&join(&s, &guest, &room).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

/// A guest sets its display name; its profile and its member event follow.
/// Sytest: "Guest user can set display names".
#[tokio::test]
async fn guest_user_can_set_display_names() {
    let s = TestServer::start_with(with_guests(ServerOptions::default())).await;
    let alice = s.register("alice", "pw-alice-123").await;
    let guest = register_guest(&s).await;
    let room = create_room(&s, &alice, "public_chat").await;
    set_guest_access(&s, &alice, &room, "can_join").await;
    assert_eq!(join(&s, &guest, &room).await.0, StatusCode::OK);
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&guest.user_id));
    let (status, body) = s.get(&path, guest.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.put(&path, guest.token(), json!({"displayname": "creeper"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.get(&path, guest.token()).await;
    assert_eq!((status, body["displayname"].as_str()), (StatusCode::OK, Some("creeper")), "{body}");
    let member = member_content(&s, &guest, &room, &guest.user_id).await;
    assert_eq!((member["displayname"].as_str(), member["kind"].as_str()), (Some("creeper"), Some("guest")), "{member}");
    // Another user's display name stays theirs.
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    let other = s.put(&path, guest.token(), json!({"displayname": "not alice"})).await;
    assert_eq!(other.0, StatusCode::FORBIDDEN, "{}", other.1);
}

/// `/register` with the guest's `guest_access_token` (after UIA) turns the guest into a full
/// account with the same user id: new tokens, a password, no guest limits.
/// Sytest: "Guest user can upgrade to fully featured user".
#[tokio::test]
async fn guest_user_can_upgrade_to_fully_featured_user() {
    let s = TestServer::start_with(with_guests(ServerOptions::default())).await;
    let alice = s.register("alice", "pw-alice-123").await;
    let room = create_room(&s, &alice, "public_chat").await;
    let guest = register_guest(&s).await;
    let localpart = guest.user_id.trim_start_matches('@').split(':').next().expect("localpart").to_owned();
    let request =
        json!({"username": localpart, "password": "SIR_Arthur_David", "guest_access_token": guest.access_token});
    let (status, challenge) = s.post("/_matrix/client/v3/register", None, request.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    let mut request = request;
    request["auth"] = json!({"type": "m.login.dummy", "session": challenge["session"]});
    let (status, body) = s.post("/_matrix/client/v3/register", None, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], guest.user_id.as_str());
    let upgraded = Account::from_response(&body, "SIR_Arthur_David");

    let (_, me) = s.get("/_matrix/client/v3/account/whoami", upgraded.token()).await;
    assert_eq!((me["user_id"].as_str(), is_guest(&me)), (Some(guest.user_id.as_str()), false), "{me}");
    // A room without guest access: open to the full account.
    let (status, body) = join(&s, &upgraded, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.post("/_matrix/client/v3/createRoom", upgraded.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let login = s.login(&localpart, "SIR_Arthur_David").await;
    assert_eq!(login.user_id, guest.user_id);
    // The guest's own token now acts for a full account too, and cannot upgrade again.
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", guest.token()).await;
    assert!(!is_guest(&me), "{me}");
}

/// A guest's token upgrades only that guest; a full account's token upgrades nobody.
/// Sytest: "Guest user cannot upgrade other users".
#[tokio::test]
async fn guest_user_cannot_upgrade_other_users() {
    let s = TestServer::start_with(with_guests(ServerOptions::default())).await;
    let first = register_guest(&s).await;
    let second = register_guest(&s).await;
    let alice = s.register("alice", "pw-alice-123").await;
    let localpart = first.user_id.trim_start_matches('@').split(':').next().expect("localpart").to_owned();
    for token in [&second.access_token, &alice.access_token] {
        let request = json!({
            "username": localpart, "password": "SIR_Arthur_David", "guest_access_token": token,
            "auth": {"type": "m.login.dummy"},
        });
        let (status, body) = s.post("/_matrix/client/v3/register", None, request).await;
        assert!(status.is_client_error() && status != StatusCode::UNAUTHORIZED, "{status} {body}");
    }
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", first.token()).await;
    assert_eq!(me["is_guest"], true, "{me}");
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", second.token()).await;
    assert_eq!(me["is_guest"], true, "{me}");
}
