//! The key notary's corner cases (Sytest `50federation/01keys`): a server on loopback whose key
//! document the test changes between questions, and a real server asked about it as notary.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};
use spec_tests::{
    ServerOptions, TestServer,
    fake_peer::{FakePeer, PeerHandler},
};

use super::origin::now_ms;

const KEY_PATH: &str = "/_matrix/key/v2/server";

/// A server that answers `/_matrix/key/v2/server` with whatever the test set last.
struct KeyServer {
    peer: FakePeer,
    answer: Arc<Mutex<(u16, String)>>,
}

impl KeyServer {
    async fn start() -> Self {
        let answer = Arc::new(Mutex::new((404, "{}".to_owned())));
        let answer2 = answer.clone();
        let handler: PeerHandler = Arc::new(move |req| {
            if req.path == KEY_PATH {
                answer2.lock().unwrap().clone()
            } else {
                (404, json!({"errcode": "M_NOT_FOUND", "error": "nothing here"}).to_string())
            }
        });
        Self { peer: FakePeer::start(handler).await, answer }
    }

    fn answer(&self, status: u16, body: &Value) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    /// A document listing `key` (named `ed25519:<version>`) only, valid until `valid_until`,
    /// signed by it.
    fn document(&self, key: &Ed25519KeyPair, valid_until: u64) -> Value {
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
        let doc = json!({
            "server_name": self.peer.server_name,
            "valid_until_ts": valid_until,
            "verify_keys": {format!("ed25519:{}", key.version()): {"key": public}},
            "old_verify_keys": {},
        });
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(doc).unwrap();
        ruma::signatures::sign_json(&self.peer.server_name, key, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }

    /// How often the notary asked for the document.
    fn asked(&self) -> usize {
        self.peer.seen().iter().filter(|r| r.path == KEY_PATH).count()
    }
}

fn key(version: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version.to_owned()).unwrap()
}

/// A notary that asks a server again whenever a question needs a later validity.
async fn notary() -> TestServer {
    TestServer::start_with(ServerOptions::federating().set("POSTSTELLE_FEDERATION__KEY_REFETCH_INTERVAL_SECS", 0)).await
}

/// `POST /_matrix/key/v2/query` for one key of `server`; the documents of the answer.
async fn query(notary: &TestServer, server: &str, key_id: &str, minimum_valid_until: u64) -> Vec<Value> {
    let body = json!({"server_keys": {server: {key_id: {"minimum_valid_until_ts": minimum_valid_until}}}});
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let response =
        http.post(format!("{}/_matrix/key/v2/query", notary.federation_base)).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let answer: Value = response.json().await.unwrap();
    answer["server_keys"].as_array().cloned().unwrap_or_else(|| panic!("no server_keys: {answer}"))
}

/// The one document of an answer that lists `key_id`, signed by the notary too.
#[track_caller]
fn document_with<'a>(documents: &'a [Value], key_id: &str, notary: &TestServer) -> &'a Value {
    let found: Vec<&Value> = documents.iter().filter(|d| d["verify_keys"].get(key_id).is_some()).collect();
    assert_eq!(found.len(), 1, "no single document with {key_id}: {documents:?}");
    assert!(found[0]["signatures"].get(&notary.server_name).is_some(), "not signed by the notary: {}", found[0]);
    found[0]
}

/// Sytest "Key notary server should return an expired key if it can't find any others": the
/// server's only document expired a day ago. Asked for a later validity, the notary asks the
/// server again and answers with the same expired document; when the server then fails (400),
/// it still answers with it.
#[tokio::test]
async fn an_expired_key_is_returned_when_no_other_can_be_found() {
    let n = notary().await;
    let server = KeyServer::start().await;
    let name = server.peer.server_name.clone();
    let key_0 = key("key_0");
    let expiry = now_ms() - 86_400_000;
    server.answer(200, &server.document(&key_0, expiry));

    let first = query(&n, &name, "ed25519:key_0", 0).await;
    assert_eq!(document_with(&first, "ed25519:key_0", &n)["valid_until_ts"], expiry);
    assert_eq!(server.asked(), 1);

    let second = query(&n, &name, "ed25519:key_0", expiry + 1000).await;
    assert_eq!(server.asked(), 2, "the server was not asked for a later document");
    assert_eq!(document_with(&second, "ed25519:key_0", &n)["valid_until_ts"], expiry);

    server.answer(400, &json!({}));
    let third = query(&n, &name, "ed25519:key_0", expiry + 1000).await;
    assert_eq!(server.asked(), 3, "the server was not asked again");
    assert_eq!(document_with(&third, "ed25519:key_0", &n)["valid_until_ts"], expiry, "{third:?}\n{}", n.log());
}

/// Sytest "Key notary server must not overwrite a valid key with a spurious result from the
/// origin server": after the notary held a document with key_1, the server answers a later
/// question with a document listing only key_2. key_1 keeps its document: asked about it with
/// the old minimum validity, the notary answers with it without asking the server; key_2 is
/// answered with the new one.
#[tokio::test]
async fn a_spurious_answer_does_not_overwrite_a_held_key() {
    let n = notary().await;
    let server = KeyServer::start().await;
    let name = server.peer.server_name.clone();
    let (key_1, key_2) = (key("key_1"), key("key_2"));
    let expiry_1 = now_ms() - 86_400_000;
    server.answer(200, &server.document(&key_1, expiry_1));
    let first = query(&n, &name, "ed25519:key_1", 0).await;
    document_with(&first, "ed25519:key_1", &n);

    server.answer(200, &server.document(&key_2, expiry_1 + 1000));
    let second = query(&n, &name, "ed25519:key_1", now_ms()).await;
    assert_eq!(server.asked(), 2, "the server was not asked for a later document");
    assert_eq!(document_with(&second, "ed25519:key_1", &n)["valid_until_ts"], expiry_1, "{second:?}");

    let third = query(&n, &name, "ed25519:key_1", expiry_1).await;
    assert_eq!(server.asked(), 2, "the held document was valid long enough");
    let held = document_with(&third, "ed25519:key_1", &n);
    assert_eq!(held["valid_until_ts"], expiry_1);
    assert!(held["verify_keys"].get("ed25519:key_2").is_none(), "{held}");
    let other = query(&n, &name, "ed25519:key_2", 0).await;
    assert_eq!(document_with(&other, "ed25519:key_2", &n)["valid_until_ts"], expiry_1 + 1000);
}
