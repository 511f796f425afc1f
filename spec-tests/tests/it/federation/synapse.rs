//! Interop with a real Synapse over TLS on loopback (`spec_tests::synapse`): rooms of room
//! versions 10, 11 and 12 held by either server, joined from the other one, with messages both
//! ways, a leave the other side sees, and a rejoin. One Synapse and one Poststelle per test.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, synapse::Synapse};

fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('#', "%23").replace('$', "%24")
}

/// Either homeserver, driven through its client API.
pub(super) enum Hs<'a> {
    Ours(&'a TestServer),
    Synapse(&'a Synapse),
}

impl Hs<'_> {
    async fn request(&self, method: &str, path: &str, who: &Account, body: Option<Value>) -> (StatusCode, Value) {
        match self {
            Hs::Ours(s) => s.request(method, path, who.token(), body).await,
            Hs::Synapse(s) => s.request(method, path, who.token(), body).await,
        }
    }

    fn name(&self) -> &str {
        match self {
            Hs::Ours(s) => &s.server_name,
            Hs::Synapse(s) => &s.server_name,
        }
    }

    fn describe(&self) -> String {
        match self {
            Hs::Ours(s) => format!("Poststelle {}", s.server_name),
            Hs::Synapse(s) => format!("Synapse {}", s.server_name),
        }
    }
}

/// The last lines of both servers' logs, for failure messages.
fn logs(ours: &TestServer, synapse: &Synapse) -> String {
    fn tail(log: &str) -> String {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }
    format!("--- Poststelle log:\n{}\n--- Synapse log:\n{}", tail(&ours.log()), tail(&synapse.log()))
}

async fn public_room(hs: &Hs<'_>, owner: &Account, version: &str) -> String {
    let body = json!({"preset": "public_chat", "room_version": version, "name": format!("interop v{version}")});
    let (status, answer) = hs.request("POST", "/_matrix/client/v3/createRoom", owner, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "createRoom v{version} on {}: {answer}", hs.describe());
    answer["room_id"].as_str().expect("room id").to_owned()
}

async fn send_text(hs: &Hs<'_>, who: &Account, room: &str, txn: &str, text: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let (status, answer) = hs.request("PUT", &path, who, Some(json!({"msgtype": "m.text", "body": text}))).await;
    assert_eq!(status, StatusCode::OK, "send on {}: {answer}", hs.describe());
}

/// The bodies of the room's latest messages as `who` sees them through `/messages`.
async fn bodies(hs: &Hs<'_>, who: &Account, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room));
    let (status, answer) = hs.request("GET", &path, who, None).await;
    if status != StatusCode::OK {
        return Vec::new();
    }
    answer["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Pages back with `/messages` from `from` (or from the newest event) in pages of 10 until no
/// `end` comes (at most 100 pages); the events, newest first.
pub(super) async fn page_back(hs: &Hs<'_>, who: &Account, room: &str, from: Option<&str>) -> Vec<Value> {
    page_back_filtered(hs, who, room, from, None).await
}

/// [`page_back`] with a room event filter.
pub(super) async fn page_back_filtered(
    hs: &Hs<'_>,
    who: &Account,
    room: &str,
    from: Option<&str>,
    filter: Option<&Value>,
) -> Vec<Value> {
    let filter = filter.map(|f| format!("&filter={}", url_encode(&f.to_string()))).unwrap_or_default();
    let mut events = Vec::new();
    let mut token = from.map(str::to_owned);
    for _ in 0..100 {
        let from = token.as_deref().map(|t| format!("&from={}", enc(t))).unwrap_or_default();
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10{from}{filter}", enc(room));
        let (status, page) = hs.request("GET", &path, who, None).await;
        assert_eq!(status, StatusCode::OK, "/messages on {}: {page}", hs.describe());
        events.extend(page["chunk"].as_array().into_iter().flatten().cloned());
        match page["end"].as_str() {
            Some(end) => token = Some(end.to_owned()),
            None => return events,
        }
    }
    panic!("pagination on {} did not end after 100 pages", hs.describe());
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The event ids of events.
pub(super) fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event_id"].as_str().expect("event id").to_owned()).collect()
}

/// The events before `user`'s join, newest first, from a list of events newest first.
pub(super) fn before_join(events: &[Value], user: &str) -> Vec<Value> {
    let join = events
        .iter()
        .position(|e| e["type"] == "m.room.member" && e["state_key"] == user && e["content"]["membership"] == "join")
        .expect("the user's join");
    events[join + 1..].to_vec()
}

/// `who`'s membership of `user` in `room` as `hs` holds it (`None` if it holds none).
async fn membership(hs: &Hs<'_>, who: &Account, room: &str, user: &str) -> Option<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(user));
    let (status, answer) = hs.request("GET", &path, who, None).await;
    (status == StatusCode::OK).then(|| answer["membership"].as_str().unwrap_or_default().to_owned())
}

/// Polls `check` every 200 ms for up to 60 s; panics with `what` and both logs if it never holds.
async fn eventually<F, Fut>(what: &str, ours: &TestServer, synapse: &Synapse, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 60 s\n{}", logs(ours, synapse));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One room: `host_user` on `host` creates it, sends a message and invites `guest` on
/// `guest_hs`, whose client sees the invite; the guest joins through `host`'s name and its
/// server holds the room's state; messages both ways; the guest
/// leaves and the host sees it; the guest rejoins and gets the next message.
#[allow(clippy::too_many_arguments)]
async fn join_talk_leave_rejoin(
    (host, host_user): (&Hs<'_>, &Account),
    (guest_hs, guest): (&Hs<'_>, &Account),
    version: &str,
    ours: &TestServer,
    synapse: &Synapse,
) {
    let room = public_room(host, host_user, version).await;
    let before = format!("before the join v{version}");
    send_text(host, host_user, &room, &format!("b{version}"), &before).await;
    // The host invites the guest; the invite reaches the guest's client through its server.
    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let (status, answer) = host.request("POST", &invite_path, host_user, Some(json!({"user_id": guest.user_id}))).await;
    assert_eq!(status, StatusCode::OK, "v{version}: invite: {answer}\n{}", logs(ours, synapse));
    // Incremental syncs: Synapse answers a repeated initial sync from a cache.
    let since = std::sync::Mutex::new(String::new());
    eventually(&format!("v{version}: the invite reached {}", guest_hs.describe()), ours, synapse, || async {
        let from = since.lock().unwrap().clone();
        let path = if from.is_empty() {
            "/_matrix/client/v3/sync".to_owned()
        } else {
            format!("/_matrix/client/v3/sync?timeout=1000&since={}", enc(&from))
        };
        let (status, sync) = guest_hs.request("GET", &path, guest, None).await;
        if let Some(next) = sync["next_batch"].as_str() {
            *since.lock().unwrap() = next.to_owned();
        }
        status == StatusCode::OK && !sync["rooms"]["invite"][&room].is_null()
    })
    .await;
    let join_path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(host.name()));
    let (status, answer) = guest_hs.request("POST", &join_path, guest, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "v{version}: join through {}: {answer}\n{}", host.name(), logs(ours, synapse));

    // The guest's server holds the room's state from the join.
    let (status, name) = guest_hs
        .request("GET", &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)), guest, None)
        .await;
    assert_eq!((status, name["name"].clone()), (StatusCode::OK, Value::from(format!("interop v{version}"))));
    eventually(&format!("v{version}: the join reached {}", host.describe()), ours, synapse, || async {
        membership(host, host_user, &room, &guest.user_id).await.as_deref() == Some("join")
    })
    .await;

    // The guest's server pulls the history before its user's join from the host (`/backfill`)
    // when the guest pages back.
    eventually(
        &format!("v{version}: the history before the join reached {}", guest_hs.describe()),
        ours,
        synapse,
        || async { bodies(guest_hs, guest, &room).await.contains(&before) },
    )
    .await;

    // Messages both ways, each read back with /messages on the other side.
    let from_host = format!("from {} v{version}", host.describe());
    send_text(host, host_user, &room, &format!("h{version}"), &from_host).await;
    eventually(&format!("v{version}: {from_host:?} reached the guest"), ours, synapse, || async {
        bodies(guest_hs, guest, &room).await.contains(&from_host)
    })
    .await;
    let from_guest = format!("from {} v{version}", guest_hs.describe());
    send_text(guest_hs, guest, &room, &format!("g{version}"), &from_guest).await;
    eventually(&format!("v{version}: {from_guest:?} reached the host"), ours, synapse, || async {
        bodies(host, host_user, &room).await.contains(&from_guest)
    })
    .await;

    // The guest leaves; the host sees the leave.
    let (status, answer) = guest_hs
        .request("POST", &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), guest, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "v{version}: leave: {answer}\n{}", logs(ours, synapse));
    eventually(&format!("v{version}: the leave reached {}", host.describe()), ours, synapse, || async {
        membership(host, host_user, &room, &guest.user_id).await.as_deref() == Some("leave")
    })
    .await;

    // The guest rejoins (its server is no longer in the room, so through the host again) and
    // gets what the host sends next.
    let (status, answer) = guest_hs.request("POST", &join_path, guest, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "v{version}: rejoin: {answer}\n{}", logs(ours, synapse));
    eventually(&format!("v{version}: the rejoin reached {}", host.describe()), ours, synapse, || async {
        membership(host, host_user, &room, &guest.user_id).await.as_deref() == Some("join")
    })
    .await;
    let again = format!("again from {} v{version}", host.describe());
    send_text(host, host_user, &room, &format!("h2{version}"), &again).await;
    eventually(&format!("v{version}: {again:?} reached the rejoined guest"), ours, synapse, || async {
        bodies(guest_hs, guest, &room).await.contains(&again)
    })
    .await;
}

/// A Synapse user's public rooms (v10, v11, v12), joined by a Poststelle user through Synapse.
#[tokio::test]
async fn a_poststelle_user_joins_synapse_rooms() {
    let synapse = Synapse::start().await;
    let ours = TestServer::start_with(ServerOptions::federating()).await;
    let alice = synapse.register("alice", "pw-alice-123").await;
    let bob = ours.register("bob", "pw-bob-123").await;
    for version in ["10", "11", "12"] {
        join_talk_leave_rejoin((&Hs::Synapse(&synapse), &alice), (&Hs::Ours(&ours), &bob), version, &ours, &synapse)
            .await;
    }
}

/// A Poststelle user's public rooms (v10, v11, v12), joined by a Synapse user through Poststelle.
#[tokio::test]
async fn a_synapse_user_joins_poststelle_rooms() {
    let synapse = Synapse::start().await;
    let ours = TestServer::start_with(ServerOptions::federating()).await;
    let alice = ours.register("alice", "pw-alice-123").await;
    let bob = synapse.register("bob", "pw-bob-123").await;
    for version in ["10", "11", "12"] {
        join_talk_leave_rejoin((&Hs::Ours(&ours), &alice), (&Hs::Synapse(&synapse), &bob), version, &ours, &synapse)
            .await;
    }
}

/// A Synapse room with 64 messages and a topic change before a Poststelle user joins: the user
/// pages back from the room's `prev_batch` in their first sync to the create event, through
/// history Poststelle fetches from Synapse (`/backfill`), and gets the events Synapse holds
/// before the join, in Synapse's order, each once.
#[tokio::test]
async fn a_poststelle_user_pages_back_through_a_synapse_rooms_history() {
    let synapse = Synapse::start().await;
    let ours = TestServer::start_with(ServerOptions::federating()).await;
    let alice = synapse.register("alice", "pw-alice-123").await;
    let bob = ours.register("bob", "pw-bob-123").await;
    let host = Hs::Synapse(&synapse);
    let room = public_room(&host, &alice, "11").await;
    for i in 0..64 {
        send_text(&host, &alice, &room, &format!("m{i}"), &format!("m{i}")).await;
        if i == 30 {
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
            let (status, answer) = host.request("PUT", &path, &alice, Some(json!({"topic": "older topic"}))).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    }
    let join_path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(host.name()));
    let (status, answer) = ours.post(&join_path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "join: {answer}\n{}", logs(&ours, &synapse));
    let (status, sync) = ours.get("/_matrix/client/v3/sync", bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    let prev_batch = sync["rooms"]["join"][&room]["timeline"]["prev_batch"].as_str().expect("prev_batch");

    let got = page_back(&Hs::Ours(&ours), &bob, &room, Some(prev_batch)).await;
    let on_synapse = before_join(&page_back(&host, &alice, &room, None).await, &bob.user_id);
    assert_eq!(ids(&got), ids(&on_synapse), "\n{}", logs(&ours, &synapse));
    assert_eq!(got.last().map(|e| e["type"].clone()), Some(json!("m.room.create")));
    let bodies: Vec<&str> = got.iter().rev().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, (0..64).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(got.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "older topic"));
}
