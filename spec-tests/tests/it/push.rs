//! Push: pushers, push-rule evaluation into `/notifications`, and delivery to a real HTTP push
//! gateway (a small server in this test process, on loopback) with retry, backoff, rejected push
//! keys and restarts.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode as AxumStatus, routing::post};
use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error, signal};

use crate::rooms::{create_room, join, room_path, send_text};

/// What the test gateway answers, in order; after the script it answers 200 `{"rejected": []}`.
#[derive(Clone, Debug)]
enum Answer {
    Status(u16),
    Reject,
}

#[derive(Default)]
struct GatewayState {
    script: Vec<Answer>,
    /// Every request received, with the status it was answered with.
    received: Vec<(Value, u16)>,
}

/// A push gateway on loopback, stopped when dropped.
struct Gateway {
    url: String,
    state: Arc<Mutex<GatewayState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(State(state): State<Arc<Mutex<GatewayState>>>, Json(body): Json<Value>) -> (AxumStatus, Json<Value>) {
    let mut s = state.lock().unwrap();
    let answer = if s.script.is_empty() { None } else { Some(s.script.remove(0)) };
    let (status, reply) = match answer {
        Some(Answer::Status(code)) => (code, json!({"errcode": "M_UNKNOWN"})),
        Some(Answer::Reject) => {
            let key = body["notification"]["devices"][0]["pushkey"].clone();
            (200, json!({"rejected": [key]}))
        }
        None => (200, json!({"rejected": []})),
    };
    s.received.push((body, status));
    (AxumStatus::from_u16(status).unwrap(), Json(reply))
}

impl Gateway {
    async fn start(script: Vec<Answer>) -> Self {
        let state = Arc::new(Mutex::new(GatewayState { script, received: Vec::new() }));
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    fn set_script(&self, script: Vec<Answer>) {
        self.state.lock().unwrap().script = script;
    }

    /// Event ids of the notifications the gateway accepted (answered 200), in arrival order.
    fn delivered(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.received
            .iter()
            .filter(|(_, status)| *status == 200)
            .filter_map(|(b, _)| b["notification"]["event_id"].as_str().map(str::to_owned))
            .collect()
    }

    fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().received.iter().map(|(b, _)| b.clone()).collect()
    }

    /// Waits (at most 30 s) until the gateway accepted `n` notifications.
    async fn wait_delivered(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let delivered = self.delivered();
            if delivered.len() >= n {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} notifications arrived: {:?}",
                delivered.len(),
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn http_pusher(url: &str, pushkey: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": "de.poststelle.test",
        "pushkey": pushkey,
        "app_display_name": "Poststelle Test",
        "device_display_name": "Testgerät",
        "lang": "de",
        "data": {"url": url, "extra": "kept"},
    })
}

async fn set_pusher(s: &TestServer, who: &Account, body: Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/pushers/set", who.token(), body).await
}

async fn pushers(s: &TestServer, who: &Account) -> Vec<Value> {
    let (status, resp) = s.get("/_matrix/client/v3/pushers", who.token()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["pushers"].as_array().cloned().unwrap_or_default()
}

/// A server whose pushers may point at loopback gateways.
async fn push_server(extra: &[(&str, &str)]) -> (TestServer, Account, Account) {
    let mut options = ServerOptions::default().set("POSTSTELLE_PUSH__ALLOW_PRIVATE_NETWORKS", "true");
    for (k, v) in extra {
        options = options.set(k, v);
    }
    let s = TestServer::start_with(options).await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    (s, alice, bob)
}

/// Alice and Bob in a private room of two (so every message notifies Bob).
async fn shared_room(s: &TestServer, alice: &Account, bob: &Account) -> String {
    let room = create_room(s, alice, json!({"preset": "trusted_private_chat", "invite": [bob.user_id.clone()]})).await;
    join(s, bob, &room).await;
    room
}

/// Sytest "Can create a pusher", "Pushers created with a different access token are deleted on
/// token invalidation", "Setting the same pusher twice replaces it", bad pushers refused.
#[tokio::test]
async fn pushers_are_set_listed_replaced_and_removed() {
    let (s, alice, bob) = push_server(&[]).await;
    let url = "http://127.0.0.1:9/_matrix/push/v1/notify";
    let (status, resp) = set_pusher(&s, &alice, http_pusher(url, "key-a")).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let listed = pushers(&s, &alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pushkey"], "key-a");
    assert_eq!(listed[0]["data"], json!({"url": url, "extra": "kept"}));
    assert_eq!(listed[0]["device_display_name"], "Testgerät");
    // The same ids again: replaced, not added.
    let mut changed = http_pusher(url, "key-a");
    changed["device_display_name"] = json!("Neues Gerät");
    assert_eq!(set_pusher(&s, &alice, changed).await.0, StatusCode::OK);
    let listed = pushers(&s, &alice).await;
    assert_eq!((listed.len(), listed[0]["device_display_name"].clone()), (1, json!("Neues Gerät")));
    // Bob takes over the push key (the device changed hands): Alice's pusher goes...
    assert_eq!(set_pusher(&s, &bob, http_pusher(url, "key-a")).await.0, StatusCode::OK);
    assert!(pushers(&s, &alice).await.is_empty());
    // ...unless `append` keeps both.
    let mut appended = http_pusher(url, "key-a");
    appended["append"] = json!(true);
    assert_eq!(set_pusher(&s, &alice, appended).await.0, StatusCode::OK);
    assert_eq!((pushers(&s, &alice).await.len(), pushers(&s, &bob).await.len()), (1, 1));
    // Deleting with `kind: null`.
    let delete = json!({"kind": null, "app_id": "de.poststelle.test", "pushkey": "key-a"});
    assert_eq!(set_pusher(&s, &alice, delete).await.0, StatusCode::OK);
    assert!(pushers(&s, &alice).await.is_empty());

    // Bad pushers.
    let mut no_url = http_pusher(url, "k");
    no_url["data"] = json!({});
    assert_error(&set_pusher(&s, &alice, no_url).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let wrong_path = http_pusher("http://127.0.0.1:9/notify", "k");
    assert_error(&set_pusher(&s, &alice, wrong_path).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut email = http_pusher(url, "alice@example.org");
    email["kind"] = json!("email");
    assert_error(&set_pusher(&s, &alice, email).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut no_app = http_pusher(url, "k");
    no_app.as_object_mut().unwrap().remove("app_id");
    let (status, _) = set_pusher(&s, &alice, no_app).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut long_key = http_pusher(url, &"k".repeat(513));
    long_key["pushkey"] = json!("k".repeat(513));
    assert_error(&set_pusher(&s, &alice, long_key).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // A pusher belongs to its session: logging out removes it.
    let second = s.login("alice", "pw").await;
    assert_eq!(set_pusher(&s, &second, http_pusher(url, "key-b")).await.0, StatusCode::OK);
    assert_eq!(pushers(&s, &alice).await.len(), 1);
    let (status, _) = s.post("/_matrix/client/v3/logout", second.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(pushers(&s, &alice).await.is_empty());

    // Without the operator's consent, gateways in private networks are refused.
    let strict = TestServer::start().await;
    let carol = strict.register("carol", "pw").await;
    for private in [
        "http://127.0.0.1:9/_matrix/push/v1/notify",
        "http://10.0.0.1/_matrix/push/v1/notify",
        "http://[::1]/_matrix/push/v1/notify",
        "http://localhost/_matrix/push/v1/notify",
    ] {
        assert_error(
            &set_pusher(&strict, &carol, http_pusher(private, "k")).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
}

/// Push rules are evaluated per event and member: Sytest "Notifications can be viewed with GET
/// /notifications", "Test that a message is pushed", "Test that rejected pushers are removed";
/// the gateway gets ids and counts but not the content (by default).
#[tokio::test]
async fn messages_are_pushed_and_listed_in_notifications() {
    let gateway = Gateway::start(vec![]).await;
    let (s, alice, bob) = push_server(&[]).await;
    let room = shared_room(&s, &alice, &bob).await;
    assert_eq!(set_pusher(&s, &bob, http_pusher(&gateway.url, "bob-phone")).await.0, StatusCode::OK);
    s.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
        bob.token(),
        json!({"displayname": "Bob"}),
    )
    .await;

    let first = send_text(&s, &alice, &room, "Ihr Bescheid ist da").await;
    let delivered = gateway.wait_delivered(1).await;
    assert_eq!(delivered, std::slice::from_ref(&first));
    let n = &gateway.requests()[0]["notification"];
    assert_eq!(n["room_id"], room.as_str(), "{n}");
    // The badge count: every unread notifying event (the invite to the room counts too).
    let unread = n["counts"]["unread"].as_i64().expect("unread count");
    assert!(unread >= 1, "{n}");
    assert_eq!(n["devices"][0]["pushkey"], "bob-phone", "{n}");
    assert_eq!(n["devices"][0]["app_id"], "de.poststelle.test", "{n}");
    assert_eq!(n["devices"][0]["data"], json!({"extra": "kept"}), "the url stays with the server: {n}");
    assert!(n.get("content").is_none() && n.get("sender_display_name").is_none(), "content leaked: {n}");
    // Alice's own messages do not notify her; Bob's own ones not him.
    send_text(&s, &bob, &room, "Danke").await;

    // A mention of Bob (intentional mentions, spec v1.7) highlights.
    let content = json!({"msgtype": "m.text", "body": "Bob, bitte unterschreiben", "m.mentions": {"user_ids": [bob.user_id.clone()]}});
    let mention = crate::rooms::send(&s, &alice, &room, "m.room.message", content).await;
    assert_eq!(gateway.wait_delivered(2).await, [first.clone(), mention.clone()]);
    let n = &gateway.requests()[1]["notification"];
    assert_eq!(n["prio"], "high", "{n}");
    assert_eq!(n["devices"][0]["tweaks"]["highlight"], true, "{n}");
    assert_eq!(n["counts"]["unread"], unread + 1, "{n}");

    let (status, listed) = s.get("/_matrix/client/v3/notifications", bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let ids: Vec<&str> =
        listed["notifications"].as_array().unwrap().iter().filter_map(|n| n["event"]["event_id"].as_str()).collect();
    assert_eq!(&ids[..2], [mention.as_str(), first.as_str()], "{listed}");
    // Before them, the invite to the room (`.m.rule.invite_for_me`).
    assert_eq!(ids.len(), 3, "{listed}");
    assert_eq!(listed["notifications"][2]["event"]["content"]["membership"], "invite", "{listed}");
    assert_eq!(listed["notifications"][0]["read"], false);
    assert_eq!(listed["notifications"][0]["room_id"], room.as_str());
    assert!(
        listed["notifications"][0]["actions"].as_array().is_some_and(|a| a.iter().any(|x| x == "notify")),
        "{listed}"
    );
    let (_, highlights) = s.get("/_matrix/client/v3/notifications?only=highlight", bob.token()).await;
    assert_eq!(highlights["notifications"].as_array().map(Vec::len), Some(1), "{highlights}");
    let (_, page) = s.get("/_matrix/client/v3/notifications?limit=1", bob.token()).await;
    let next = page["next_token"].as_str().expect("next_token").to_owned();
    let (_, page2) = s.get(&format!("/_matrix/client/v3/notifications?limit=1&from={next}"), bob.token()).await;
    assert_eq!(page2["notifications"][0]["event"]["event_id"], first.as_str(), "{page2}");
    assert_error(
        &s.get("/_matrix/client/v3/notifications?from=abc", bob.token()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // Reading marks them read, and what was read before delivery is not pushed.
    let (status, _) = s
        .post(&room_path(&room, &format!("receipt/m.read/{}", crate::rooms::enc(&mention))), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) = s.get("/_matrix/client/v3/notifications", bob.token()).await;
    assert_eq!(listed["notifications"][0]["read"], true, "{listed}");

    // A gateway that rejects the push key loses the pusher.
    gateway.set_script(vec![Answer::Reject]);
    send_text(&s, &alice, &room, "noch etwas").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pushers(&s, &bob).await.is_empty() {
        assert!(Instant::now() < deadline, "the rejected pusher was not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A failing gateway is retried with backoff and gets every notification once it recovers, in
/// order — also when the server was killed in between (nothing acknowledged is lost).
#[tokio::test]
async fn failing_gateways_are_retried_across_restarts() {
    let gateway = Gateway::start(vec![Answer::Status(500), Answer::Status(503)]).await;
    let (mut s, alice, bob) = push_server(&[]).await;
    let room = shared_room(&s, &alice, &bob).await;
    assert_eq!(set_pusher(&s, &bob, http_pusher(&gateway.url, "bob-phone")).await.0, StatusCode::OK);
    let sent = [send_text(&s, &alice, &room, "eins").await, send_text(&s, &alice, &room, "zwei").await];
    assert_eq!(gateway.wait_delivered(2).await, sent, "after two failures, both in order");
    assert!(gateway.requests().len() >= 4, "the failures were retried: {:?}", gateway.requests());

    // The gateway is down while the server dies with a notification pending.
    gateway.set_script(vec![Answer::Status(502); 1000]);
    let third = send_text(&s, &alice, &room, "drei").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.requests().len() < 5 {
        assert!(Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(s.pid(), "KILL");
    gateway.set_script(vec![]);
    s.restart().await;
    let delivered = gateway.wait_delivered(3).await;
    assert_eq!(delivered, [sent[0].clone(), sent[1].clone(), third]);
}

/// With `push.include_content`, the gateway gets the content and names, unless the pusher asked
/// for `event_id_only`.
#[tokio::test]
async fn content_is_pushed_only_when_enabled() {
    let gateway = Gateway::start(vec![]).await;
    let (s, alice, bob) = push_server(&[("POSTSTELLE_PUSH__INCLUDE_CONTENT", "true")]).await;
    let room = shared_room(&s, &alice, &bob).await;
    set_state_name(&s, &alice, &room).await;
    assert_eq!(set_pusher(&s, &bob, http_pusher(&gateway.url, "full")).await.0, StatusCode::OK);
    let mut minimal = http_pusher(&gateway.url, "minimal");
    minimal["data"]["format"] = json!("event_id_only");
    assert_eq!(set_pusher(&s, &bob, minimal).await.0, StatusCode::OK);
    send_text(&s, &alice, &room, "Termin am Montag").await;
    gateway.wait_delivered(2).await;
    let requests = gateway.requests();
    let by_key = |key: &str| {
        requests.iter().find(|r| r["notification"]["devices"][0]["pushkey"] == key).expect("a request").clone()
    };
    let full = &by_key("full")["notification"];
    assert_eq!(full["content"]["body"], "Termin am Montag", "{full}");
    assert_eq!(full["sender"], alice.user_id.as_str(), "{full}");
    assert_eq!(full["room_name"], "Bürgeramt", "{full}");
    assert_eq!(full["type"], "m.room.message", "{full}");
    let minimal = &by_key("minimal")["notification"];
    assert!(minimal.get("content").is_none() && minimal.get("sender").is_none(), "{minimal}");
}

async fn set_state_name(s: &TestServer, who: &Account, room: &str) {
    crate::rooms::set_state(s, who, room, "m.room.name", "", json!({"name": "Bürgeramt"})).await;
}
