//! Third-party invites on one server, against a real identity server on loopback
//! (`spec_tests::identity`): inviting an address that is bound (a normal invite of its user) or
//! not yet (an `m.room.third_party_invite`, turned into an invite when the identity server
//! reports the binding on `/3pid/onbind`), joining with a signed invite, and the signatures and
//! keys that must be refused.

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error, identity::IdentityServer};

use crate::rooms::{
    VERSIONS, create_room, enc, get_state, invite, join, leave, member_action, membership_of, state_content,
};

/// A server that may reach identity servers on loopback over plain HTTP, with accounts.
pub(crate) async fn server_with_identity<const N: usize>(names: [&str; N]) -> (TestServer, [Account; N]) {
    let s = TestServer::start_with(identity_options(ServerOptions::default())).await;
    let mut accounts = Vec::with_capacity(N);
    for name in names {
        accounts.push(s.register(name, "pw").await);
    }
    let Ok(accounts) = <[Account; N]>::try_from(accounts) else { unreachable!("one account per name") };
    (s, accounts)
}

/// Lets a server reach identity servers on loopback, over plain HTTP.
pub(crate) fn identity_options(options: ServerOptions) -> ServerOptions {
    options
        .set("POSTSTELLE_IDENTITY_SERVERS__ALLOW_PRIVATE_NETWORKS", true)
        .set("POSTSTELLE_IDENTITY_SERVERS__PLAIN_HTTP", true)
        .set("POSTSTELLE_IDENTITY_SERVERS__ALLOW_LIST", "")
}

/// `POST /rooms/{room}/invite` with an email address at `is`.
pub(crate) async fn invite_address(
    s: &TestServer,
    who: &Account,
    room: &str,
    is: &IdentityServer,
    address: &str,
) -> (StatusCode, Value) {
    let body = json!({
        "id_server": is.name, "id_access_token": is.access_token(), "medium": "email", "address": address,
    });
    member_action(s, who, room, "invite", body).await
}

/// The room's `m.room.third_party_invite` events.
pub(crate) async fn third_party_invites(s: &TestServer, who: &Account, room: &str) -> Vec<Value> {
    let (status, state) = s.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), who.token()).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    state.as_array().into_iter().flatten().filter(|e| e["type"] == "m.room.third_party_invite").cloned().collect()
}

async fn private_room(s: &TestServer, who: &Account, version: &str) -> String {
    create_room(s, who, json!({"preset": "private_chat", "room_version": version, "name": "Private"})).await
}

/// A private room whose members may all invite (invite level 0), as Synapse's private preset has it.
async fn open_private_room(s: &TestServer, who: &Account, version: &str) -> String {
    let body = json!({
        "preset": "private_chat", "room_version": version, "name": "Private",
        "power_level_content_override": {"invite": 0},
    });
    create_room(s, who, body).await
}

/// Sytest "Can invite existing 3pid", "… with no ops into a private room", "… in createRoom": a
/// bound address is an invite of its user, and nothing is stored at the identity server.
#[tokio::test]
async fn an_address_bound_to_a_user_invites_the_user() {
    let (s, [alice, bob, charlie]) = server_with_identity(["alice", "bob", "charlie"]).await;
    let is = IdentityServer::start().await;
    is.bind_quietly("email", "bob@example.org", &bob.user_id);

    let room = private_room(&s, &alice, "11").await;
    let r = invite_address(&s, &alice, &room, &is, "bob@example.org").await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("invite"));

    // A member without power invites the same way.
    let room = open_private_room(&s, &alice, "12").await;
    invite(&s, &alice, &room, &charlie.user_id).await;
    join(&s, &charlie, &room).await;
    let r = invite_address(&s, &charlie, &room, &is, "bob@example.org").await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("invite"));

    let invite_3pid = json!([{
        "id_server": is.name, "id_access_token": is.access_token(), "medium": "email", "address": "bob@example.org",
    }]);
    let room = create_room(&s, &alice, json!({"preset": "private_chat", "invite_3pid": invite_3pid})).await;
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("invite"));
    assert!(is.invites().is_empty(), "a bound address needs no stored invite: {:?}", is.invites());
}

/// Sytest "Can invite unbound 3pid" and "… with no ops into a private room", in each room
/// version: the invite is stored at the identity server and put into the room; when the address
/// is bound, the identity server's signed report makes it an invite of the user, who joins.
#[tokio::test]
async fn an_unbound_address_becomes_an_invite_when_bound() {
    let (s, [alice, bob, charlie]) = server_with_identity(["alice", "bob", "charlie"]).await;
    let is = IdentityServer::start().await;
    for (n, version) in VERSIONS.iter().enumerate() {
        let room = open_private_room(&s, &alice, version).await;
        // Alternately the owner and a member without power invite.
        let inviter = if n % 2 == 0 { &alice } else { &charlie };
        if n % 2 == 1 {
            invite(&s, &alice, &room, &charlie.user_id).await;
            join(&s, &charlie, &room).await;
        }
        let address = format!("bob{version}@example.org");
        let r = invite_address(&s, inviter, &room, &is, &address).await;
        assert_eq!(r.0, StatusCode::OK, "v{version}: {}", r.1);

        // The identity server holds the invite, with what it may tell the invitee.
        let stored = is.invites().into_iter().find(|i| i.address == address).expect("stored invite");
        assert_eq!((stored.room_id.as_str(), stored.sender.as_str()), (room.as_str(), inviter.user_id.as_str()));
        assert_eq!(stored.request["room_name"], "Private");
        assert_eq!(stored.request["room_join_rules"], "invite");
        // The room holds it as state under the identity server's token, with its keys.
        let events = third_party_invites(&s, &alice, &room).await;
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!((&event["state_key"], &event["sender"]), (&json!(stored.token), &json!(inviter.user_id)));
        assert_eq!(event["content"]["display_name"], "b…@example.org");
        assert!(event["content"]["public_key"].as_str().is_some_and(|k| !k.is_empty()), "{event}");
        assert!(event["content"]["key_validity_url"].as_str().is_some_and(|u| u.ends_with("/pubkey/isvalid")));
        assert_eq!(event["content"]["public_keys"].as_array().map(Vec::len), Some(2), "{event}");
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await, None);

        // Bob proves he owns the address; the identity server tells his server.
        let status = is.bind_and_notify(&s.federation_base, "email", &address, &bob.user_id).await;
        assert_eq!(status, StatusCode::OK);
        let member = state_content(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(member["membership"], "invite", "v{version}: {member}");
        assert_eq!(member["third_party_invite"]["display_name"], "b…@example.org");
        assert_eq!(member["third_party_invite"]["signed"]["token"], json!(stored.token));

        // Bob sees the invite with the inviter's membership in its state, and joins.
        let (_, sync) = s.get("/_matrix/client/v3/sync", bob.token()).await;
        let invite_state = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
        assert!(
            invite_state
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == json!(inviter.user_id)),
            "v{version}: {sync}"
        );
        join(&s, &bob, &room).await;
        assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("join"));
    }
}

/// Sytest "Can accept unbound 3pid invite after inviter leaves": the invite is still the
/// inviter's (the auth rules want the third-party invite's sender), even though they left.
#[tokio::test]
async fn the_invite_stands_after_the_inviter_left() {
    let (s, [alice, other, bob]) = server_with_identity(["alice", "other", "bob"]).await;
    let is = IdentityServer::start().await;
    let room = private_room(&s, &alice, "11").await;
    invite(&s, &alice, &room, &other.user_id).await;
    join(&s, &other, &room).await;
    let r = invite_address(&s, &alice, &room, &is, "bob@example.org").await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    leave(&s, &alice, &room).await;

    assert_eq!(is.bind_and_notify(&s.federation_base, "email", "bob@example.org", &bob.user_id).await, StatusCode::OK);
    join(&s, &bob, &room).await;
    assert_eq!(membership_of(&s, &other, &room, &bob.user_id).await.as_deref(), Some("join"));
    let member = state_content(&s, &other, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "join");
}

/// Sytest "Can accept third party invite with /join": the invitee brings the identity server's
/// signature (here by the invite's ephemeral key) to `/join`, which invites and joins at once.
#[tokio::test]
async fn join_with_a_signed_third_party_invite() {
    let (s, [alice, bob, eve]) = server_with_identity(["alice", "bob", "eve"]).await;
    let is = IdentityServer::start().await;
    let room = private_room(&s, &alice, "12").await;
    let r = invite_address(&s, &alice, &room, &is, "bob@example.org").await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let token = third_party_invites(&s, &alice, &room).await[0]["state_key"].as_str().expect("token").to_owned();

    // Someone else cannot use Bob's signed invite.
    let signed = is.sign_ephemeral(json!({"mxid": bob.user_id, "sender": alice.user_id, "token": token}));
    let r = s
        .post(&format!("/_matrix/client/v3/join/{}", enc(&room)), eve.token(), json!({"third_party_signed": signed}))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Nor a signature by a key the room does not name.
    let other = IdentityServer::start().await;
    let forged = other.sign_ephemeral(json!({"mxid": bob.user_id, "sender": alice.user_id, "token": token}));
    let r = member_action(&s, &bob, &room, "join", json!({"third_party_signed": forged})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let r = s
        .post(&format!("/_matrix/client/v3/join/{}", enc(&room)), bob.token(), json!({"third_party_signed": signed}))
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(membership_of(&s, &alice, &room, &bob.user_id).await.as_deref(), Some("join"));
    assert_eq!(membership_of(&s, &alice, &room, &eve.user_id).await, None);
}

/// What the identity server does to its keys between storing the invite and reporting the binding.
#[derive(Clone, Copy, Debug)]
enum Mishap {
    /// A new key signs the binding: the signature is valid, but by a key the room does not name.
    NewKeyBeforeBinding,
    /// The key that signed is revoked before the invitee's server checks it.
    RevokedAfterSigning,
    /// The identity server is gone when its key's validity is checked.
    Unreachable,
}

/// Sytest "3pid invite join with wrong but valid signature are rejected", "… valid signature but
/// revoked keys are rejected", "… valid signature but unreachable ID server are rejected": no
/// invite is made, so the invitee cannot join the private room.
#[tokio::test]
async fn bindings_with_wrong_revoked_or_unverifiable_keys_are_refused() {
    let (s, [alice, bob]) = server_with_identity(["alice", "bob"]).await;
    for mishap in [Mishap::NewKeyBeforeBinding, Mishap::RevokedAfterSigning, Mishap::Unreachable] {
        let mut is = IdentityServer::start().await;
        let room = private_room(&s, &alice, "11").await;
        let r = invite_address(&s, &alice, &room, &is, "bob@example.org").await;
        assert_eq!(r.0, StatusCode::OK, "{mishap:?}: {}", r.1);
        if let Mishap::NewKeyBeforeBinding = mishap {
            is.rotate_keys();
        }
        let body = is.bind("email", "bob@example.org", &bob.user_id);
        match mishap {
            Mishap::RevokedAfterSigning => is.rotate_keys(),
            Mishap::Unreachable => is.stop().await,
            Mishap::NewKeyBeforeBinding => {}
        }
        // The report is taken; the invite in it is not.
        assert_eq!(is.notify(&s.federation_base, &body).await, StatusCode::OK, "{mishap:?}");
        let r = member_action(&s, &bob, &room, "join", json!({})).await;
        assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (status, _) = get_state(&s, &alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{mishap:?}: Bob must have no membership");
    }
}

/// Bad third-party invites get Matrix errors: a non-member, an `id_server` that is no host name,
/// a wrong identity access token, an identity server that is down, and one in a private network
/// when the server may not reach those. Bad `onbind` reports and exchanges are refused too.
#[tokio::test]
async fn bad_third_party_invites_are_refused() {
    let (s, [alice, bob]) = server_with_identity(["alice", "bob"]).await;
    let mut is = IdentityServer::start().await;
    let room = private_room(&s, &alice, "11").await;

    let r = invite_address(&s, &bob, &room, &is, "carol@example.org").await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let body =
        json!({"id_server": "not a host/x", "id_access_token": "t", "medium": "email", "address": "c@example.org"});
    assert_error(&member_action(&s, &alice, &room, "invite", body).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let body = json!({"id_server": is.name, "id_access_token": "wrong", "medium": "email", "address": "c@example.org"});
    assert_error(&member_action(&s, &alice, &room, "invite", body).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(third_party_invites(&s, &alice, &room).await.is_empty());

    // onbind for a user of another server, and an exchange that is not an invite.
    let status = is
        .notify(
            &s.federation_base,
            &json!({"medium": "email", "address": "x@example.org", "mxid": "@x:elsewhere.example", "invites": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let status = is.notify(&s.federation_base, &json!({"medium": "email", "address": "x@example.org"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    is.stop().await;
    let r = invite_address(&s, &alice, &room, &is, "carol@example.org").await;
    assert_error(&r, StatusCode::BAD_GATEWAY, "M_UNKNOWN");

    // A server with the defaults refuses identity servers on loopback (any identity server).
    let strict =
        TestServer::start_with(ServerOptions::default().set("POSTSTELLE_IDENTITY_SERVERS__ALLOW_LIST", "")).await;
    let alice = strict.register("alice", "pw").await;
    let is = IdentityServer::start().await;
    let room = private_room(&strict, &alice, "11").await;
    let r = invite_address(&strict, &alice, &room, &is, "carol@example.org").await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(is.invites().is_empty());
    // And one that lists its identity servers refuses the others, even where it may reach them.
    let listed = TestServer::start_with(
        identity_options(ServerOptions::default()).set("POSTSTELLE_IDENTITY_SERVERS__ALLOW_LIST", "id.example.org"),
    )
    .await;
    let alice = listed.register("alice", "pw").await;
    let room = private_room(&listed, &alice, "11").await;
    let r = invite_address(&listed, &alice, &room, &is, "carol@example.org").await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(is.invites().is_empty());
}
