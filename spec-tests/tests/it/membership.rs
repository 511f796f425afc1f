//! Membership: join, invite, leave, kick, ban, unban, knock, forget, restricted joins and what each allows.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use crate::rooms::{
    VERSIONS, create_room, enc, ids, invite, join, joined_rooms, leave, member_action, membership_of, messages, page,
    room_path, send_text, server_with, set_state, set_user_level, state_content, state_event, try_send,
};

/// `POST /join/{roomIdOrAlias}`.
async fn join_via(s: &TestServer, who: &Account, target: &str) -> (StatusCode, Value) {
    s.post(&format!("/_matrix/client/v3/join/{}", enc(target)), who.token(), json!({})).await
}

/// `POST /knock/{roomIdOrAlias}`.
async fn knock(s: &TestServer, who: &Account, target: &str, body: Value) -> (StatusCode, Value) {
    s.post(&format!("/_matrix/client/v3/knock/{}", enc(target)), who.token(), body).await
}

fn forbidden(r: &(StatusCode, Value)) {
    assert_error(r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

/// `POST /rooms/{room}/{action}` with a target user and a reason, which must succeed.
async fn act(s: &TestServer, who: &Account, room: &str, action: &str, target: &Account, reason: &str) {
    let r = member_action(s, who, room, action, json!({"user_id": target.user_id, "reason": reason})).await;
    assert_eq!(r.0, StatusCode::OK, "{} {action} {}: {}", who.user_id, target.user_id, r.1);
}

/// `POST /rooms/{room}/{action}` with a target user, which must be refused with 403.
async fn refused(s: &TestServer, who: &Account, room: &str, action: &str, target: &Account) {
    forbidden(&member_action(s, who, room, action, json!({"user_id": target.user_id})).await);
}

#[tokio::test]
async fn join_public_rooms_with_profiles() {
    let (s, [alice, bob, charlie, dave]) = server_with(["alice", "bob", "charlie", "dave"]).await;
    let profile = format!("/_matrix/client/v3/profile/{}", bob.user_id);
    assert_eq!(
        s.put(&format!("{profile}/displayname"), bob.token(), json!({"displayname": "Bob B"})).await.0,
        StatusCode::OK
    );
    let avatar = json!({"avatar_url": "mxc://localhost/bob"});
    assert_eq!(s.put(&format!("{profile}/avatar_url"), bob.token(), avatar).await.0, StatusCode::OK);
    for v in VERSIONS {
        let alias = format!("#pub{v}:localhost");
        let room = create_room(
            &s,
            &alice,
            json!({"room_version": v, "preset": "public_chat", "room_alias_name": format!("pub{v}")}),
        )
        .await;
        // Sytest/Complement "POST /rooms/:room_id/join can join a room": the member event carries
        // the joiner's profile and reason.
        let (status, body) = member_action(&s, &bob, &room, "join", json!({"reason": "hello"})).await;
        assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)), "{body}");
        let member = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(
            member["content"],
            json!({"membership": "join", "displayname": "Bob B", "avatar_url": "mxc://localhost/bob", "reason": "hello"})
        );
        assert_eq!(member["sender"], bob.user_id.as_str());
        // "POST /join/:room_alias can join a room", "POST /join/:room_id can join a room".
        let (status, body) = join_via(&s, &charlie, &alias).await;
        assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)), "{body}");
        let (status, body) = join_via(&s, &dave, &room).await;
        assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)), "{body}");
        // Complement "Joining room twice is idempotent": the same join again is no new event.
        let first = state_event(&s, &alice, &room, "m.room.member", &charlie.user_id).await;
        join(&s, &charlie, &room).await;
        assert_eq!(
            state_event(&s, &alice, &room, "m.room.member", &charlie.user_id).await["event_id"],
            first["event_id"]
        );
        // Sytest "Room members can override their displayname on a room-specific basis".
        set_state(
            &s,
            &bob,
            &room,
            "m.room.member",
            &bob.user_id,
            json!({"membership": "join", "displayname": "Bob here"}),
        )
        .await;
        assert_eq!(state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await["displayname"], "Bob here");
        // "/joined_members return joined members", "/joined_rooms returns only joined rooms".
        let (status, joined) = s.get(&room_path(&room, "joined_members"), alice.token()).await;
        assert_eq!(status, StatusCode::OK, "{joined}");
        assert_eq!(
            joined["joined"],
            json!({
                alice.user_id.clone(): {"display_name": "alice"},
                bob.user_id.clone(): {"display_name": "Bob here", "avatar_url": "mxc://localhost/bob"},
                charlie.user_id.clone(): {"display_name": "charlie"},
                dave.user_id.clone(): {"display_name": "dave"},
            })
        );
        assert!(joined_rooms(&s, &bob).await.contains(&room));

        // Sytest/Complement "Uninvited users cannot join the room".
        let private = create_room(&s, &alice, json!({"room_version": v})).await;
        forbidden(&member_action(&s, &bob, &private, "join", json!({})).await);
        forbidden(&join_via(&s, &bob, &private).await);
        assert_eq!(membership_of(&s, &alice, &private, &bob.user_id).await, None);
    }
    assert_error(&join_via(&s, &bob, "!unknown:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&join_via(&s, &bob, "#unknown:localhost").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn invites_and_their_rules() {
    let (s, [alice, bob, charlie, dave]) = server_with(["alice", "bob", "charlie", "dave"]).await;
    for v in VERSIONS {
        let room = create_room(&s, &alice, json!({"room_version": v, "preset": "private_chat"})).await;
        // Sytest/Complement "POST /rooms/:room_id/invite can send an invite", "Can invite users to
        // invite-only rooms".
        act(&s, &alice, &room, "invite", &bob, "come in").await;
        let invite_event = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(
            (&invite_event["sender"], &invite_event["content"]["membership"], &invite_event["content"]["reason"]),
            (&json!(alice.user_id), &json!("invite"), &json!("come in"))
        );
        // "Users cannot invite themselves to a room".
        refused(&s, &alice, &room, "invite", &alice).await;
        join(&s, &bob, &room).await;
        // "Users cannot invite a user that is already in the room".
        refused(&s, &alice, &room, "invite", &bob).await;
        // Inviting needs membership and the invite level (50 in a private chat).
        refused(&s, &charlie, &room, "invite", &dave).await;
        refused(&s, &bob, &room, "invite", &charlie).await;
        assert_eq!(membership_of(&s, &alice, &room, &charlie.user_id).await, None);
        // A member event sent as state is an invite like any other.
        set_state(&s, &alice, &room, "m.room.member", &charlie.user_id, json!({"membership": "invite"})).await;
        assert_eq!(membership_of(&s, &alice, &room, &charlie.user_id).await.as_deref(), Some("invite"));
        // "Invited user can reject invite".
        leave(&s, &charlie, &room).await;
        assert_eq!(membership_of(&s, &alice, &room, &charlie.user_id).await.as_deref(), Some("leave"));

        // "Test that we can be reinvited to a room we created".
        set_user_level(&s, &alice, &room, &bob.user_id, 100).await;
        leave(&s, &alice, &room).await;
        invite(&s, &bob, &room, &alice.user_id).await;
        join(&s, &alice, &room).await;
        assert_eq!(membership_of(&s, &bob, &room, &alice.user_id).await.as_deref(), Some("join"));

        // "Invited user can reject invite for empty room".
        let empty = create_room(&s, &alice, json!({"room_version": v})).await;
        invite(&s, &alice, &empty, &dave.user_id).await;
        leave(&s, &alice, &empty).await;
        leave(&s, &dave, &empty).await;
        assert!(!joined_rooms(&s, &dave).await.contains(&empty));
    }
    let room = create_room(&s, &alice, json!({})).await;
    let r = member_action(&s, &alice, &room, "invite", json!({})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
}

#[tokio::test]
async fn leave_and_rejoin() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    for v in VERSIONS {
        let room = create_room(&s, &alice, json!({"room_version": v, "preset": "public_chat"})).await;
        join(&s, &bob, &room).await;
        // Sytest/Complement "POST /rooms/:room_id/leave can leave a room".
        let (status, body) = member_action(&s, &bob, &room, "leave", json!({"reason": "bye"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let left = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!((&left["content"]["membership"], &left["content"]["reason"]), (&json!("leave"), &json!("bye")));
        assert!(!joined_rooms(&s, &bob).await.contains(&room));
        forbidden(&try_send(&s, &bob, &room, "m.room.message", json!({"body": "x"})).await);
        join(&s, &bob, &room).await;
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("join"));
        assert!(joined_rooms(&s, &bob).await.contains(&room));
        send_text(&s, &bob, &room, "back again").await;
    }
}

#[tokio::test]
async fn kick_ban_and_unban() {
    let (s, [alice, bob, charlie, dave]) = server_with(["alice", "bob", "charlie", "dave"]).await;
    for v in VERSIONS {
        let room = create_room(&s, &alice, json!({"room_version": v, "preset": "public_chat"})).await;
        join(&s, &bob, &room).await;
        join(&s, &charlie, &room).await;

        // Kicking needs the kick level; the kicked may come back to a public room.
        refused(&s, &charlie, &room, "kick", &bob).await;
        act(&s, &alice, &room, "kick", &bob, "behave").await;
        let kicked = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(
            (&kicked["sender"], &kicked["content"]["membership"], &kicked["content"]["reason"]),
            (&json!(alice.user_id), &json!("leave"), &json!("behave"))
        );
        assert!(!joined_rooms(&s, &bob).await.contains(&room));
        join(&s, &bob, &room).await;
        // Complement TestCannotKickNonPresentUser, TestCannotKickLeftUser; Sytest "Users cannot kick
        // users from a room they are not in".
        refused(&s, &alice, &room, "kick", &dave).await;
        join(&s, &dave, &room).await;
        leave(&s, &dave, &room).await;
        refused(&s, &alice, &room, "kick", &dave).await;
        assert_eq!(membership_of(&s, &alice, &room, &dave.user_id).await.as_deref(), Some("leave"));
        refused(&s, &dave, &room, "kick", &bob).await;

        // Sytest "POST /rooms/:room_id/ban can ban a user", "Banned user is kicked and may not rejoin
        // until unbanned".
        refused(&s, &charlie, &room, "ban", &bob).await;
        act(&s, &alice, &room, "ban", &bob, "spam").await;
        let banned = state_event(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!((&banned["content"]["membership"], &banned["content"]["reason"]), (&json!("ban"), &json!("spam")));
        forbidden(&member_action(&s, &bob, &room, "join", json!({})).await);
        refused(&s, &alice, &room, "invite", &bob).await;
        refused(&s, &charlie, &room, "unban", &bob).await;
        act(&s, &alice, &room, "unban", &bob, "forgiven").await;
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("leave"));
        refused(&s, &alice, &room, "unban", &bob).await;
        join(&s, &bob, &room).await;
        // Someone who was never in the room can be banned ahead of time.
        act(&s, &alice, &room, "ban", &dave, "pre-emptive").await;
        forbidden(&member_action(&s, &dave, &room, "join", json!({})).await);

        // Sytest "Non-present room members cannot ban others" (SYN-343).
        set_user_level(&s, &alice, &room, &charlie.user_id, 60).await;
        leave(&s, &charlie, &room).await;
        refused(&s, &charlie, &room, "ban", &bob).await;
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("join"));
    }
}

#[tokio::test]
async fn knocking() {
    let (s, [alice, bob, charlie, dave, eve]) = server_with(["alice", "bob", "charlie", "dave", "eve"]).await;
    for v in VERSIONS {
        let room = create_room(&s, &alice, json!({"room_version": v, "room_alias_name": format!("knock{v}")})).await;
        // Complement TestKnocking: "Knocking on a room with a join rule other than 'knock' should fail".
        forbidden(&knock(&s, &bob, &room, json!({})).await);
        // "Change the join rule of a room from 'invite' to 'knock'".
        set_state(&s, &alice, &room, "m.room.join_rules", "", json!({"join_rule": "knock"})).await;
        // "Attempting to join a room with join rule 'knock' without an invite should fail".
        forbidden(&member_action(&s, &bob, &room, "join", json!({})).await);
        // "Knocking on a room with join rule 'knock' should succeed", "Users in the room see a
        // user's membership update when they knock".
        let (status, body) = knock(&s, &bob, &room, json!({"reason": "let me in"})).await;
        assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)), "{body}");
        let knocked = state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!((&knocked["membership"], &knocked["reason"]), (&json!("knock"), &json!("let me in")));
        // "A user that has already knocked is allowed to knock again on the same room".
        assert_eq!(knock(&s, &bob, &room, json!({})).await.0, StatusCode::OK);
        // "A user that has knocked on a local room can rescind their knock and then knock again",
        // "A user can knock on a room without a reason".
        leave(&s, &bob, &room).await;
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("leave"));
        assert_eq!(knock(&s, &bob, &room, json!({})).await.0, StatusCode::OK);
        let knocked = state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!((&knocked["membership"], knocked.get("reason")), (&json!("knock"), None), "{knocked}");
        // "A user in the room can reject a knock".
        act(&s, &alice, &room, "kick", &bob, "no").await;
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("leave"));
        // "A user in the room can accept a knock".
        assert_eq!(knock(&s, &bob, &room, json!({})).await.0, StatusCode::OK);
        invite(&s, &alice, &room, &bob.user_id).await;
        join(&s, &bob, &room).await;
        // "A user cannot knock on a room they are already in", "… already invited to", "A user
        // that is banned from a room cannot knock on it".
        forbidden(&knock(&s, &bob, &room, json!({})).await);
        invite(&s, &alice, &room, &charlie.user_id).await;
        forbidden(&knock(&s, &charlie, &room, json!({})).await);
        act(&s, &alice, &room, "ban", &dave, "no").await;
        forbidden(&knock(&s, &dave, &room, json!({})).await);
        // By alias.
        let (status, body) = knock(&s, &eve, &format!("#knock{v}:localhost"), json!({})).await;
        assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)), "{body}");
        assert_eq!(membership_of(&s, &alice, &room, &eve.user_id).await.as_deref(), Some("knock"));
    }
    assert_error(&knock(&s, &bob, "!unknown:localhost", json!({})).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn forgetting_rooms() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let forget = async |who: &Account, room: &str| member_action(&s, who, room, "forget", json!({})).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    // Sytest/Complement "Can't forget room you're still in".
    assert_error(&forget(&alice, &room).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    // "Forgotten room messages cannot be paginated".
    join(&s, &bob, &room).await;
    send_text(&s, &alice, &room, "Hello world!").await;
    assert!(!ids(&page(&s, &bob, &room, "dir=b").await["chunk"]).is_empty());
    leave(&s, &bob, &room).await;
    assert_eq!(forget(&bob, &room).await.0, StatusCode::OK);
    forbidden(&messages(&s, &bob, &room, "dir=b").await);
    assert!(!joined_rooms(&s, &bob).await.contains(&room));
    // "Can forget room you've been kicked from".
    join(&s, &bob, &room).await;
    act(&s, &alice, &room, "kick", &bob, "out").await;
    assert_eq!(forget(&bob, &room).await.0, StatusCode::OK);

    // "Can re-join room if re-invited".
    let private = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    invite(&s, &alice, &private, &bob.user_id).await;
    join(&s, &bob, &private).await;
    let before = send_text(&s, &bob, &private, "Before leave").await;
    leave(&s, &bob, &private).await;
    assert_eq!(forget(&bob, &private).await.0, StatusCode::OK);
    forbidden(&member_action(&s, &bob, &private, "join", json!({})).await);
    invite(&s, &alice, &private, &bob.user_id).await;
    join(&s, &bob, &private).await;
    let history = page(&s, &bob, &private, "dir=b&limit=100").await;
    assert!(ids(&history["chunk"]).contains(&before), "{history}");
    let after = send_text(&s, &bob, &private, "After rejoin").await;
    assert_eq!(ids(&page(&s, &bob, &private, "dir=b&limit=1").await["chunk"]), [after]);

    // "Can forget room we weren't an actual member".
    let other = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    invite(&s, &alice, &other, &bob.user_id).await;
    leave(&s, &bob, &other).await;
    assert_eq!(forget(&bob, &other).await.0, StatusCode::OK);
    leave(&s, &alice, &other).await;
    assert_eq!(forget(&alice, &other).await.0, StatusCode::OK);
}

#[tokio::test]
async fn members_and_joined_members() {
    let (s, [alice, bob, charlie, dave]) = server_with(["alice", "bob", "charlie", "dave"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    send_text(&s, &alice, &room, "alone").await;
    let alone = page(&s, &alice, &room, "dir=b&limit=1").await["start"].as_str().unwrap().to_owned();
    join(&s, &bob, &room).await;
    invite(&s, &alice, &room, &charlie.user_id).await;
    join(&s, &dave, &room).await;
    leave(&s, &dave, &room).await;

    let members = async |query: &str| {
        let (status, body) = s.get(&room_path(&room, &format!("members{query}")), bob.token()).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        let mut list: Vec<(String, String)> = body["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .map(|e| {
                assert_eq!(e["type"], "m.room.member");
                (e["state_key"].as_str().unwrap().to_owned(), e["content"]["membership"].as_str().unwrap().to_owned())
            })
            .collect();
        list.sort();
        list
    };
    let who = |pairs: &[(&Account, &str)]| {
        let mut list: Vec<(String, String)> = pairs.iter().map(|(a, m)| (a.user_id.clone(), (*m).to_owned())).collect();
        list.sort();
        list
    };
    // Sytest/Complement "Can get rooms/{roomId}/members", "Can filter rooms/{roomId}/members".
    assert_eq!(members("").await, who(&[(&alice, "join"), (&bob, "join"), (&charlie, "invite"), (&dave, "leave")]));
    assert_eq!(members("?membership=join").await, who(&[(&alice, "join"), (&bob, "join")]));
    assert_eq!(members("?membership=leave").await, who(&[(&dave, "leave")]));
    assert_eq!(members("?membership=invite").await, who(&[(&charlie, "invite")]));
    assert_eq!(members("?not_membership=leave").await, who(&[(&alice, "join"), (&bob, "join"), (&charlie, "invite")]));
    assert_eq!(members("?not_membership=join&membership=leave").await, who(&[(&dave, "leave")]));
    // "Can get rooms/{roomId}/members at a given point".
    assert_eq!(members(&format!("?at={}", enc(&alone))).await, who(&[(&alice, "join")]));

    // "GET /rooms/:room_id/joined_members fetches my membership".
    let (status, joined) = s.get(&room_path(&room, "joined_members"), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(
        joined,
        json!({"joined": {alice.user_id.clone(): {"display_name": "alice"}, bob.user_id.clone(): {"display_name": "bob"}}})
    );
}

#[tokio::test]
async fn restricted_joins_need_membership_of_an_allowed_room() {
    let (s, [alice, bob, charlie, eve]) = server_with(["alice", "bob", "charlie", "eve"]).await;
    for v in VERSIONS {
        let space = create_room(&s, &alice, json!({"room_version": v, "preset": "public_chat"})).await;
        let allow = json!([{"type": "m.room_membership", "room_id": space}]);
        let room = create_room(
            &s,
            &alice,
            json!({"room_version": v, "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                   "content": {"join_rule": "restricted", "allow": allow}}]}),
        )
        .await;
        // Complement TestRestrictedRoomsLocalJoin: "Join should fail initially".
        forbidden(&member_action(&s, &bob, &room, "join", json!({})).await);
        // "Join should succeed when joined to allowed room": a member who may invite authorises it.
        join(&s, &bob, &space).await;
        join(&s, &bob, &room).await;
        let member = state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(
            (&member["membership"], &member["join_authorised_via_users_server"]),
            (&json!("join"), &json!(alice.user_id))
        );
        // Joining again (to change one's display name) works; an authorising user named for a
        // join → join change plays no part.
        let again = json!({"membership": "join", "displayname": "Bobby", "join_authorised_via_users_server": "unused"});
        set_state(&s, &bob, &room, "m.room.member", &bob.user_id, again).await;
        assert_eq!(state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await["displayname"], "Bobby");
        // "Join should fail when left allowed room".
        leave(&s, &bob, &room).await;
        leave(&s, &bob, &space).await;
        forbidden(&member_action(&s, &bob, &room, "join", json!({})).await);
        // "Join should succeed when invited".
        invite(&s, &alice, &room, &bob.user_id).await;
        join(&s, &bob, &room).await;
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("join"));
        // "Join should fail with mangled join rules".
        join(&s, &charlie, &space).await;
        for mangled in [
            json!(["invalid"]),
            json!("invalid"),
            json!([{"type": "m.room_membership"}, {"type": "org.example.unknown", "room_id": space}]),
        ] {
            let rules = json!({"join_rule": "restricted", "allow": mangled});
            set_state(&s, &alice, &room, "m.room.join_rules", "", rules).await;
            forbidden(&member_action(&s, &charlie, &room, "join", json!({})).await);
        }
        // knock_restricted: members of the allowed room join, others may knock.
        set_state(&s, &alice, &room, "m.room.join_rules", "", json!({"join_rule": "knock_restricted", "allow": allow}))
            .await;
        join(&s, &charlie, &room).await;
        forbidden(&member_action(&s, &eve, &room, "join", json!({})).await);
        assert_eq!(knock(&s, &eve, &room, json!({})).await.0, StatusCode::OK);
        leave(&s, &eve, &room).await;
        leave(&s, &charlie, &space).await;
    }
}
