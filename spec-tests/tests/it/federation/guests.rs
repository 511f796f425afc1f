//! Guest access over federation: a guest's own server enforces `m.room.guest_access` for rooms
//! held by other servers (which cannot know the user is a guest), and removes its guests when a
//! room it receives events of revokes guest access. Sytest `tests/30rooms/13guestaccess.pl`.

use std::time::{Duration, Instant};

use serde_json::json;
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error};

use crate::guests::{create_room, enc, join, member_content, register_guest, set_guest_access, with_guests};

/// Waits (up to 30 s) until `user`'s membership in the room, as `who` reads it on `s`, is
/// `membership`.
async fn wait_for_membership(s: &TestServer, who: &Account, room: &str, user: &str, membership: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let content = member_content(s, who, room, user).await;
        if content["membership"] == membership {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} never became {membership} on {} (now {content}); log:\n{}",
            s.server_name,
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn invite(s: &TestServer, who: &Account, room: &str, user: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
    let (status, body) = s.post(&path, who.token(), json!({"user_id": user})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits (up to 30 s) until `who`'s sync on `s` shows an invite to the room.
async fn wait_for_invite(s: &TestServer, who: &Account, room: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, sync) = s.get("/_matrix/client/v3/sync?timeout=0", who.token()).await;
        if sync["rooms"]["invite"].get(room).is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "the invite never reached {}; log:\n{}", s.server_name, s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Alice on A invites a guest of B into a private room that allows guests; the guest joins
/// through A, and A sees the guest's join (with `"kind": "guest"`).
/// Sytest: "Guest users can accept invites to private rooms over federation".
#[tokio::test]
async fn guest_users_can_accept_invites_to_private_rooms_over_federation() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(with_guests(ServerOptions::federating())).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let guest = register_guest(&b).await;
    // `private_chat`: invite only, guests can join.
    let room = create_room(&a, &alice, "private_chat").await;
    invite(&a, &alice, &room, &guest.user_id).await;
    wait_for_invite(&b, &guest, &room).await;
    let (status, body) = join(&b, &guest, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}\nB log:\n{}", b.log());
    wait_for_membership(&a, &alice, &room, &guest.user_id, "join").await;
    assert_eq!(member_content(&a, &alice, &room, &guest.user_id).await["kind"], "guest");
}

/// A guest of B invited into a room on A whose guest access is forbidden is refused (403) by its
/// own server; and a guest joining a public room on A without guest access (no invite, so B
/// learns the room's state only from the join) is refused and leaves again at once.
/// Sytest: "Guest users denied access over federation if guest access prohibited".
#[tokio::test]
async fn guest_users_denied_access_over_federation_if_guest_access_prohibited() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(with_guests(ServerOptions::federating())).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let guest = register_guest(&b).await;

    let private = create_room(&a, &alice, "private_chat").await;
    let (status, body) = set_guest_access(&a, &alice, &private, "forbidden").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    invite(&a, &alice, &private, &guest.user_id).await;
    wait_for_invite(&b, &guest, &private).await;
    assert_error(&join(&b, &guest, &private).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(member_content(&a, &alice, &private, &guest.user_id).await["membership"], "invite");

    // `public_chat`: anyone may join, guests may not.
    let public = create_room(&a, &alice, "public_chat").await;
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&public), enc(&a.server_name));
    let refused = b.post(&path, guest.token(), json!({})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    wait_for_membership(&a, &alice, &public, &guest.user_id, "leave").await;
    let (_, rooms) = b.get("/_matrix/client/v3/joined_rooms", guest.token()).await;
    assert_eq!(rooms["joined_rooms"], json!([]), "{rooms}");
}

/// Bob's room on B lets guests in; Alice on A (with power over the room's state) revokes guest
/// access; B receives the change and makes its guest leave, which A sees too.
/// Sytest: "Guest users are kicked from guest_access rooms on revocation of guest_access over
/// federation".
#[tokio::test]
async fn guest_users_are_kicked_on_revocation_of_guest_access_over_federation() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(with_guests(ServerOptions::federating())).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let guest = register_guest(&b).await;
    let room = create_room(&b, &bob, "public_chat").await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room));
    let (_, mut levels) = b.get(&path, bob.token()).await;
    levels["users"][&alice.user_id] = json!(50);
    let (status, body) = b.put(&path, bob.token(), levels).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(set_guest_access(&b, &bob, &room, "can_join").await.0, StatusCode::OK);

    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&b.server_name));
    let (status, body) = a.post(&path, alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}\nA log:\n{}", a.log());
    let (status, body) = join(&b, &guest, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(&a, &alice, &room, &guest.user_id, "join").await;

    let (status, body) = set_guest_access(&a, &alice, &room, "forbidden").await;
    assert_eq!(status, StatusCode::OK, "{body}\nA log:\n{}", a.log());
    wait_for_membership(&b, &bob, &room, &guest.user_id, "leave").await;
    wait_for_membership(&a, &alice, &room, &guest.user_id, "leave").await;
    assert_eq!(member_content(&b, &bob, &room, &alice.user_id).await["membership"], "join");
}
