//! Room upgrades: who may upgrade, what the new room inherits, what happens to the old one.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use super::{alias_list, directory_visibility, public_rooms, resolve, room_ids};
use crate::rooms::{
    create_room, join, member_action, room_path, send_text, server_with, state_content, state_event, try_send,
};

async fn try_upgrade(s: &TestServer, who: &Account, room: &str, body: Value) -> (StatusCode, Value) {
    s.post(&room_path(room, "upgrade"), who.token(), body).await
}

/// Upgrades a room; the replacement room's id.
async fn upgrade(s: &TestServer, who: &Account, room: &str, version: &str) -> String {
    let (status, body) = try_upgrade(s, who, room, json!({"new_version": version})).await;
    assert_eq!(status, StatusCode::OK, "upgrade {room} to {version} as {}: {body}", who.user_id);
    body["replacement_room"].as_str().expect("replacement_room").to_owned()
}

fn forbidden(r: &(StatusCode, Value)) {
    assert_error(r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn upgrade_moves_state_aliases_and_bans() {
    let (s, [alice, bob, carol, dave]) = server_with(["alice", "bob", "carol", "dave"]).await;
    for (from, to) in [("10", "11"), ("11", "12")] {
        let alias = format!("#hall{from}:localhost");
        let extra = format!("#hall{from}-extra:localhost");
        let events = json!({"m.room.name": 75, "m.room.power_levels": 100, "m.room.tombstone": 100,
                            "m.room.canonical_alias": 50, "org.example.custom": 20});
        let old = create_room(
            &s,
            &alice,
            json!({"room_version": from, "preset": "public_chat", "visibility": "public",
                   "name": "Great hall", "topic": "Where everyone meets", "room_alias_name": format!("hall{from}"),
                   "creation_content": {"m.federate": false},
                   "initial_state": [{"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}],
                   "power_level_content_override": {
                       "users": {alice.user_id.clone(): 100, bob.user_id.clone(): 50},
                       "events": events, "ban": 60, "state_default": 40}}),
        )
        .await;
        super::add_alias(&s, &alice, &extra, &old).await;
        join(&s, &bob, &old).await;
        join(&s, &carol, &old).await;
        join(&s, &dave, &old).await;
        let r = member_action(&s, &alice, &old, "ban", json!({"user_id": dave.user_id, "reason": "spam"})).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        let old_power = state_content(&s, &alice, &old, "m.room.power_levels", "").await;

        // Sytest "/upgrade is rejected if the user can't send state events": carol (0) and bob
        // (50, below the tombstone's 100); "/upgrade to an unknown version is rejected".
        forbidden(&try_upgrade(&s, &carol, &old, json!({"new_version": to})).await);
        forbidden(&try_upgrade(&s, &bob, &old, json!({"new_version": to})).await);
        for bad in ["99", "9", "1", "org.example.unknown"] {
            let r = try_upgrade(&s, &alice, &old, json!({"new_version": bad})).await;
            assert_error(&r, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
        }
        assert!(state_content_opt(&s, &alice, &old, "m.room.tombstone").await.is_none(), "no upgrade yet");

        // "/upgrade creates a new room": of the requested version, naming its predecessor.
        let new = upgrade(&s, &alice, &old, to).await;
        assert_ne!(new, old);
        let create = state_event(&s, &alice, &new, "m.room.create", "").await;
        assert_eq!(create["content"]["room_version"], to, "{create}");
        assert_eq!(create["content"]["predecessor"]["room_id"], old.as_str(), "{create}");
        assert_eq!(create["sender"], alice.user_id.as_str(), "{create}");
        // "/upgrade preserves room federation ability".
        assert_eq!(create["content"]["m.federate"], false, "{create}");
        // The old room carries a tombstone pointing to the new one.
        let tombstone = state_event(&s, &alice, &old, "m.room.tombstone", "").await;
        assert_eq!(tombstone["content"]["replacement_room"], new.as_str(), "{tombstone}");
        assert!(tombstone["content"]["body"].is_string(), "{tombstone}");
        assert_eq!(tombstone["sender"], alice.user_id.as_str());

        // "/upgrade copies important state to the new room".
        assert_eq!(state_content(&s, &alice, &new, "m.room.name", "").await["name"], "Great hall");
        assert_eq!(state_content(&s, &alice, &new, "m.room.topic", "").await["topic"], "Where everyone meets");
        assert_eq!(state_content(&s, &alice, &new, "m.room.join_rules", "").await["join_rule"], "public");
        assert_eq!(state_content(&s, &alice, &new, "m.room.guest_access", "").await["guest_access"], "can_join");
        assert_eq!(
            state_content(&s, &alice, &new, "m.room.history_visibility", "").await,
            state_content(&s, &alice, &old, "m.room.history_visibility", "").await
        );
        // "/upgrade copies the power levels to the new room"; the upgrader keeps their power
        // ("/upgrade preserves the power level of the upgrading user in old and new rooms"), from
        // v12 on as the creator rather than in `users`.
        let power = state_content(&s, &alice, &new, "m.room.power_levels", "").await;
        assert_eq!(power["events"], old_power["events"], "{power}");
        assert_eq!((&power["ban"], &power["state_default"]), (&json!(60), &json!(40)), "{power}");
        assert_eq!(power["users"][&bob.user_id], 50, "{power}");
        if to == "12" {
            assert!(power["users"].get(&alice.user_id).is_none(), "{power}");
        } else {
            assert_eq!(power["users"][&alice.user_id], 100, "{power}");
        }
        // "/upgrade copies ban events to the new room".
        let ban = state_content(&s, &alice, &new, "m.room.member", &dave.user_id).await;
        assert_eq!(ban["membership"], "ban", "{ban}");
        let r = member_action(&s, &dave, &new, "join", json!({})).await;
        forbidden(&r);

        // "/upgrade moves aliases to the new room": every local alias and the canonical one.
        assert_eq!(resolve(&s, &alias).await.1["room_id"], new.as_str());
        assert_eq!(resolve(&s, &extra).await.1["room_id"], new.as_str());
        let mut moved = vec![alias.clone(), extra.clone()];
        moved.sort();
        assert_eq!(alias_list(&s, &alice, &new).await, moved);
        assert!(alias_list(&s, &alice, &old).await.is_empty());
        assert_eq!(state_content(&s, &alice, &new, "m.room.canonical_alias", "").await["alias"], alias.as_str());
        let old_canonical = state_content(&s, &alice, &old, "m.room.canonical_alias", "").await;
        assert!(old_canonical.get("alias").is_none(), "{old_canonical}");

        // "/upgrade should preserve room visibility for public rooms"; "… remove a room from their
        // public directory on upgrade".
        assert_eq!(directory_visibility(&s, &new).await, "public");
        assert_eq!(directory_visibility(&s, &old).await, "private");
        let listed = room_ids(&public_rooms(&s, "").await);
        assert!(listed.contains(&new) && !listed.contains(&old), "{listed:?}");

        // "/upgrade restricts power levels in the old room": members can no longer speak or
        // invite; the upgrader still can.
        let restricted = state_content(&s, &alice, &old, "m.room.power_levels", "").await;
        assert!(restricted["events_default"].as_i64().expect("events_default") >= 50, "{restricted}");
        assert!(restricted["invite"].as_i64().expect("invite") >= 50, "{restricted}");
        assert_eq!(restricted["users"][&alice.user_id], 100, "{restricted}");
        forbidden(&try_send(&s, &carol, &old, "m.room.message", json!({"msgtype": "m.text", "body": "hi"})).await);
        send_text(&s, &alice, &old, "we moved").await;

        // Members follow by joining the new room; only the upgrader is in it at first.
        let (status, members) = s.get(&room_path(&new, "joined_members"), alice.token()).await;
        assert_eq!(status, StatusCode::OK, "{members}");
        assert_eq!(members["joined"].as_object().expect("joined").len(), 1, "{members}");
        join(&s, &bob, &new).await;
        join(&s, &carol, &new).await;
        send_text(&s, &carol, &new, "hello again").await;
    }
}

/// The content of a state event, or `None` if there is none.
async fn state_content_opt(s: &TestServer, who: &Account, room: &str, kind: &str) -> Option<Value> {
    let (status, body) = crate::rooms::get_state(s, who, room, kind, "").await;
    match status {
        StatusCode::OK => Some(body),
        StatusCode::NOT_FOUND => None,
        _ => panic!("{kind} in {room}: {status} {body}"),
    }
}

#[tokio::test]
async fn upgrade_edge_cases() {
    let (s, [alice, bob, carol]) = server_with(["alice", "bob", "carol"]).await;

    // Sytest "/upgrade of a bogus room fails gracefully"; outsiders and anonymous callers.
    let r = try_upgrade(&s, &alice, "!bogus:localhost", json!({"new_version": "11"})).await;
    assert!(matches!(r.0, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND), "{} {}", r.0, r.1);
    assert!(matches!(r.1["errcode"].as_str(), Some("M_FORBIDDEN" | "M_NOT_FOUND")), "{}", r.1);
    let private =
        create_room(&s, &alice, json!({"preset": "private_chat", "room_version": "10", "name": "Backroom"})).await;
    forbidden(&try_upgrade(&s, &carol, &private, json!({"new_version": "11"})).await);
    assert_error(
        &s.post(&room_path(&private, "upgrade"), None, json!({"new_version": "11"})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let r = try_upgrade(&s, &alice, &private, json!({})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);

    // "/upgrade should preserve room visibility for private rooms": invite-only stays so, and
    // unlisted.
    let new = upgrade(&s, &alice, &private, "11").await;
    assert_eq!(state_content(&s, &alice, &new, "m.room.join_rules", "").await["join_rule"], "invite");
    assert_eq!(directory_visibility(&s, &new).await, "private");
    assert_eq!(state_content(&s, &alice, &new, "m.room.name", "").await["name"], "Backroom");
    forbidden(&member_action(&s, &bob, &new, "join", json!({})).await);

    // "/upgrade restricts power levels in the old room when the old PLs are unusual": with
    // users_default 60, the old room needs 61 to speak or invite.
    let unusual = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "room_version": "11",
               "power_level_content_override": {"users_default": 60, "events_default": 10}}),
    )
    .await;
    join(&s, &bob, &unusual).await;
    send_text(&s, &bob, &unusual, "still allowed").await;
    upgrade(&s, &alice, &unusual, "11").await;
    let restricted = state_content(&s, &alice, &unusual, "m.room.power_levels", "").await;
    assert_eq!((&restricted["events_default"], &restricted["invite"]), (&json!(61), &json!(61)), "{restricted}");
    forbidden(&try_send(&s, &bob, &unusual, "m.room.message", json!({"msgtype": "m.text", "body": "hi"})).await);

    // Complement "m.room.tombstone needs PL150 in the PL event" (v12): an admin at 100 who is no
    // creator may not upgrade; the creator may, and may name additional creators.
    let v12 = create_room(&s, &alice, json!({"preset": "public_chat", "room_version": "12"})).await;
    join(&s, &bob, &v12).await;
    crate::rooms::set_user_level(&s, &alice, &v12, &bob.user_id, 100).await;
    forbidden(&try_upgrade(&s, &bob, &v12, json!({"new_version": "12"})).await);
    let (status, body) =
        try_upgrade(&s, &alice, &v12, json!({"new_version": "12", "additional_creators": [bob.user_id]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new12 = body["replacement_room"].as_str().expect("replacement_room");
    let create = state_event(&s, &alice, new12, "m.room.create", "").await;
    assert_eq!(create["content"]["additional_creators"], json!([bob.user_id]), "{create}");
    assert_eq!(create["content"]["predecessor"]["room_id"], v12.as_str(), "{create}");
    let power = state_content(&s, &alice, new12, "m.room.power_levels", "").await;
    assert!(power["users"].get(&alice.user_id).is_none() && power["users"].get(&bob.user_id).is_none(), "{power}");
}
