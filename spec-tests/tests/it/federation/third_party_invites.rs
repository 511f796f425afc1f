//! Third-party invites between real `poststelle` processes on loopback: the identity server
//! reports a binding to the invitee's server, which passes it to the inviter's server
//! (`/exchange_third_party_invite`); that server checks the signature and invites over
//! federation. And the same flow against a real Sydent, which authenticates our users with
//! OpenID tokens and reports bindings over federation itself.

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, identity::IdentityServer, sydent::Sydent};

use super::rooms::{enc, wait_for_membership};
use crate::third_party_invites::{identity_options, invite_address, third_party_invites};

async fn federating() -> TestServer {
    TestServer::start_with(identity_options(ServerOptions::federating())).await
}

/// A private room whose members may all invite (invite level 0).
async fn private_room(s: &TestServer, who: &Account, version: &str) -> String {
    let (status, body) = s
        .post(
            "/_matrix/client/v3/createRoom",
            who.token(),
            json!({"preset": "private_chat", "room_version": version, "name": "Private",
                   "power_level_content_override": {"invite": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["room_id"].as_str().expect("room id").to_owned()
}

async fn post(s: &TestServer, who: &Account, path: &str, body: Value) -> Value {
    let (status, answer) = s.post(path, who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}\nlog:\n{}", s.log());
    answer
}

/// Sytest "Can invite unbound 3pid over federation" and "… with no ops into a private room":
/// the binding reaches Bob's server B, which has never seen the room; B hands it to the
/// inviter's server A, which invites Bob over federation; Bob joins through A.
#[tokio::test]
async fn an_unbound_address_of_another_servers_user_becomes_an_invite() {
    let (a, b) = (federating().await, federating().await);
    let (alice, charlie) = (a.register("alice", "pw").await, a.register("charlie", "pw").await);
    let bob = b.register("bob", "pw").await;
    let is = IdentityServer::start().await;
    for (n, version) in ["11", "12"].into_iter().enumerate() {
        let room = private_room(&a, &alice, version).await;
        // The second time a member without power invites.
        let inviter = if n == 0 { &alice } else { &charlie };
        if n == 1 {
            post(
                &a,
                &alice,
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
                json!({"user_id": charlie.user_id}),
            )
            .await;
            post(&a, &charlie, &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), json!({})).await;
        }
        let address = format!("bob{version}@example.org");
        let r = invite_address(&a, inviter, &room, &is, &address).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);

        let status = is.bind_and_notify(&b.federation_base, "email", &address, &bob.user_id).await;
        assert_eq!(status, StatusCode::OK);
        wait_for_membership(&a, &alice, &room, &bob.user_id, "invite").await;
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
        let (_, member) = a.get(&path, alice.token()).await;
        assert_eq!(member["third_party_invite"]["display_name"], "b…@example.org", "{member}");
        assert_eq!(member["third_party_invite"]["signed"]["mxid"], json!(bob.user_id));

        // Bob's server got the invite, with the inviter's membership, and Bob joins through A.
        let (_, sync) = b.get("/_matrix/client/v3/sync", bob.token()).await;
        let invite_state = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
        assert!(
            invite_state
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == json!(inviter.user_id)),
            "v{version}: {sync}\nB log:\n{}",
            b.log()
        );
        post(&b, &bob, &format!("/_matrix/client/v3/join/{}", enc(&room)), json!({})).await;
        wait_for_membership(&a, &alice, &room, &bob.user_id, "join").await;
    }
}

/// Sytest "Can invite unbound 3pid over federation with users from both servers": B is in the
/// room already and sees the third-party invite; the binding still becomes A's invite (A's user
/// made it), which both servers see; Bob joins on B.
#[tokio::test]
async fn an_unbound_address_in_a_room_both_servers_share() {
    let (a, b) = (federating().await, federating().await);
    let alice = a.register("alice", "pw").await;
    let (bob, joiner) = (b.register("bob", "pw").await, b.register("joiner", "pw").await);
    let is = IdentityServer::start().await;
    let room = private_room(&a, &alice, "11").await;
    post(&a, &alice, &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), json!({"user_id": joiner.user_id}))
        .await;
    post(&b, &joiner, &format!("/_matrix/client/v3/join/{}", enc(&room)), json!({})).await;

    let r = invite_address(&a, &alice, &room, &is, "bob@example.org").await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while third_party_invites(&b, &joiner, &room).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the third-party invite never reached B");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    assert_eq!(is.bind_and_notify(&b.federation_base, "email", "bob@example.org", &bob.user_id).await, StatusCode::OK);
    wait_for_membership(&a, &alice, &room, &bob.user_id, "invite").await;
    wait_for_membership(&b, &joiner, &room, &bob.user_id, "invite").await;
    post(&b, &bob, &format!("/_matrix/client/v3/join/{}", enc(&room)), json!({})).await;
    wait_for_membership(&a, &alice, &room, &bob.user_id, "join").await;
}

/// A server refuses to exchange a third-party invite for a user of another server, and one
/// whose token matches no invite in the room.
#[tokio::test]
async fn exchanges_that_do_not_match_an_invite_are_refused() {
    let (a, b) = (federating().await, federating().await);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let is = IdentityServer::start().await;
    let room = private_room(&a, &alice, "11").await;
    let r = invite_address(&a, &alice, &room, &is, "bob@example.org").await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);

    // A binding whose invite names a token the room does not hold: B passes it on, A refuses,
    // and the report itself is still taken.
    let mut body = is.bind("email", "bob@example.org", &bob.user_id);
    body["invites"][0]["signed"]["token"] = json!("no-such-token");
    assert_eq!(is.notify(&b.federation_base, &body).await, StatusCode::OK);
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
    assert_eq!(a.get(&path, alice.token()).await.0, StatusCode::NOT_FOUND);
    assert!(b.log().contains("could not be turned into an invite"), "B log:\n{}", b.log());
}

/// The same flows against a real Sydent: its lookup finds a bound address ("Can invite existing
/// 3pid"), its `/store-invite` stores an invite and mails it, and its binding report reaches our
/// server over federation and becomes an invite the invitee accepts ("Can invite unbound 3pid").
#[tokio::test]
async fn third_party_invites_through_sydent() {
    let s = federating().await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let sydent = Sydent::start().await;
    let openid =
        post(&s, &alice, &format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&alice.user_id)), json!({}))
            .await;
    let token = sydent.register(&openid).await;
    let invite = |address: &str| json!({"id_server": sydent.name, "id_access_token": token, "medium": "email", "address": address});

    // A bound address: a plain invite.
    assert_eq!(sydent.bind("email", "bob.bound@example.org", &bob.user_id).await, StatusCode::OK, "{}", sydent.log());
    let room = private_room(&s, &alice, "11").await;
    post(&s, &alice, &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), invite("bob.bound@example.org")).await;
    wait_for_membership(&s, &alice, &room, &bob.user_id, "invite").await;

    // An unbound address: stored at Sydent, then bound.
    let room = private_room(&s, &alice, "12").await;
    post(&s, &alice, &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), invite("bob@example.org")).await;
    let events = third_party_invites(&s, &alice, &room).await;
    assert_eq!(events.len(), 1, "{events:?}\nSydent log:\n{}", sydent.log());
    assert!(events[0]["content"]["key_validity_url"].as_str().is_some_and(|u| u.contains(&sydent.name)));
    assert_eq!(sydent.bind("email", "bob@example.org", &bob.user_id).await, StatusCode::OK, "{}", sydent.log());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
    loop {
        let (status, member) = s.get(&path, alice.token()).await;
        if status == StatusCode::OK {
            assert_eq!(member["membership"], "invite", "{member}");
            assert!(member["third_party_invite"]["signed"]["signatures"][&sydent.name].is_object(), "{member}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Sydent's binding never became an invite\nSydent log:\n{}\nlog:\n{}",
            sydent.log(),
            s.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    post(&s, &bob, &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), json!({})).await;
    wait_for_membership(&s, &alice, &room, &bob.user_id, "join").await;
}
