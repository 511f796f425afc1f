//! A network split between two servers sharing a room: each side changes the same state while
//! they cannot reach each other; after the split heals, both resolve the fork to the same state.
//! Each server is reached through a TCP proxy in this test, which can cut every connection.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, free_port};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A TCP proxy on loopback that forwards to a port while open, and drops every connection,
/// old and new, while cut.
struct Proxy {
    open: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(port: u16, target: Arc<std::sync::atomic::AtomicU16>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("proxy port");
        let open = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let is_open = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                if !is_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let to = target.load(Ordering::SeqCst);
                let mut cuts = cuts.clone();
                // Only cuts from now on end this connection.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", to)).await else { return };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { open, cut, task }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('$', "%24").replace('@', "%40")
}

async fn state(s: &TestServer, who: &Account, room: &str) -> Value {
    let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), who.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `(type, state_key) → event id` of a `/state` answer.
fn state_ids(state: &Value) -> std::collections::BTreeMap<(String, String), String> {
    state
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let key = (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["state_key"].as_str().unwrap_or_default().to_owned(),
            );
            (key, e["event_id"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

async fn put_state(s: &TestServer, who: &Account, room: &str, kind: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/", enc(room));
    let (status, body) = s.put(&path, who.token(), content).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn say(s: &TestServer, who: &Account, room: &str, txn: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let (status, body) = s.put(&path, who.token(), json!({"msgtype": "m.text", "body": txn})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Alice (A) and Bob (B, at power 100) share a room. The network between A and B is cut; Alice
/// sets the topic and the name, Bob sets the topic. After the network heals and both sides
/// speak, A and B hold the same state: the same topic event, Alice's name.
#[tokio::test]
async fn a_split_with_conflicting_state_converges_after_it_heals() {
    let (port_a, port_b) = (free_port(), free_port());
    let (target_a, target_b) =
        (Arc::new(std::sync::atomic::AtomicU16::new(0)), Arc::new(std::sync::atomic::AtomicU16::new(0)));
    let proxy_a = Proxy::start(port_a, target_a.clone()).await;
    let proxy_b = Proxy::start(port_b, target_b.clone()).await;
    let a = TestServer::start_with(ServerOptions::federating_behind(port_a)).await;
    let b = TestServer::start_with(ServerOptions::federating_behind(port_b)).await;
    target_a.store(a.federation_port, Ordering::SeqCst);
    target_b.store(b.federation_port, Ordering::SeqCst);
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;

    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({"preset": "public_chat", "room_version": "11"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&a.server_name));
    let (status, joined) = b.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}\n{}", b.log());
    let (_, mut levels) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room)), alice.token()).await;
    levels["users"][&bob.user_id] = json!(100);
    put_state(&a, &alice, &room, "m.room.power_levels", levels).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_ids(&state(&b, &bob, &room).await) != state_ids(&state(&a, &alice, &room).await) {
        assert!(Instant::now() < deadline, "B never caught up before the split; log:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    proxy_a.cut();
    proxy_b.cut();
    put_state(&a, &alice, &room, "m.room.topic", json!({"topic": "alice's topic"})).await;
    put_state(&a, &alice, &room, "m.room.name", json!({"name": "alice's name"})).await;
    put_state(&b, &bob, &room, "m.room.topic", json!({"topic": "bob's topic"})).await;
    say(&a, &alice, &room, "a-during-split").await;
    say(&b, &bob, &room, "b-during-split").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(state_ids(&state(&a, &alice, &room).await), state_ids(&state(&b, &bob, &room).await));

    proxy_a.heal();
    proxy_b.heal();
    say(&a, &alice, &room, "a-after-split").await;
    say(&b, &bob, &room, "b-after-split").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (on_a, on_b) = (state(&a, &alice, &room).await, state(&b, &bob, &room).await);
        let (ids_a, ids_b) = (state_ids(&on_a), state_ids(&on_b));
        if ids_a == ids_b && ids_a.contains_key(&("m.room.name".to_owned(), String::new())) {
            let name = on_a.as_array().unwrap().iter().find(|e| e["type"] == "m.room.name").unwrap();
            assert_eq!(name["content"]["name"], "alice's name");
            assert!(ids_a.contains_key(&("m.room.topic".to_owned(), String::new())));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the states never converged:\nA {ids_a:?}\nB {ids_b:?}\nA log:\n{}\nB log:\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
