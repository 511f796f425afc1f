//! Room server ACLs (`m.room.server_acl`) enforced on federation: a denied server cannot join,
//! and its events stop being accepted once the ACL denies it.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('$', "%24")
}

async fn bodies(s: &TestServer, who: &Account, room: &str) -> Vec<String> {
    let (_, answer) =
        s.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room)), who.token()).await;
    answer["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

async fn say(s: &TestServer, who: &Account, room: &str, text: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{text}", enc(room));
    let (status, body) = s.put(&path, who.token(), json!({"msgtype": "m.text", "body": text})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn join(s: &TestServer, who: &Account, room: &str, via: &str) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(room), enc(via));
    s.post(&path, who.token(), json!({})).await
}

/// A's room denies C by its ACL: C's user cannot join through A. B's user joins and talks;
/// once the ACL also denies B, what B's user sends is no longer accepted by A (B still holds
/// it), while A's own messages go on.
#[tokio::test]
async fn server_acls_keep_denied_servers_out() {
    // Three loopback addresses: ACL entries name hosts, not ports.
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating_on(Ipv4Addr::new(127, 0, 0, 2))).await;
    let c = TestServer::start_with(ServerOptions::federating_on(Ipv4Addr::new(127, 0, 0, 3))).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let carol = c.register("carol", "pw-carol-123").await;
    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({"preset": "public_chat", "room_version": "11"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let acl_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room));
    let acl = json!({"allow": ["*"], "deny": ["127.0.0.3"], "allow_ip_literals": true});
    let (status, body) = a.put(&acl_path, alice.token(), acl).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = join(&c, &carol, &room, &a.server_name).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = join(&b, &bob, &room, &a.server_name).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", b.log());
    say(&b, &bob, &room, "allowed").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bodies(&a, &alice, &room).await.contains(&"allowed".to_owned()) {
        assert!(Instant::now() < deadline, "B's message never reached A; log:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let acl = json!({"allow": ["*"], "deny": ["127.0.0.3", "127.0.0.2"], "allow_ip_literals": true});
    let (status, body) = a.put(&acl_path, alice.token(), acl).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // B learns of the ACL (A sends it to every server in the room, B included).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, acl) = b.get(&acl_path, bob.token()).await;
        if acl["deny"].as_array().is_some_and(|d| d.len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the ACL never reached B; log:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(&b, &bob, &room, "denied").await;
    assert!(bodies(&b, &bob, &room).await.contains(&"denied".to_owned()));
    say(&a, &alice, &room, "still here").await;
    // B's transactions reach A within a second when A accepts them (as "allowed" did); give
    // them five, then check A has not taken the message.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let on_a = bodies(&a, &alice, &room).await;
    assert!(on_a.contains(&"still here".to_owned()) && !on_a.contains(&"denied".to_owned()), "{on_a:?}");
}
