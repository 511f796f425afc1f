//! A fake origin server that takes part in a real server's room: it serves its key document,
//! joins through the real `/make_join` and `/send_join` v2, builds and signs PDUs on the room
//! (or has them signed by another key), sends them in X-Matrix-signed transactions, and answers
//! the requests the real server makes back (`/send`, and what a test serves: `/get_missing_events`,
//! `/state_ids`, …).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use base64::Engine as _;
use ruma::{
    CanonicalJsonObject, OwnedServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    room_version_rules::RoomVersionRules,
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};
use spec_tests::{
    StatusCode, TestServer,
    fake_peer::{FakePeer, PeerResponse, RawPeerHandler, SeenRequest},
};

use super::host::{self, Hosts};

pub(crate) fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('#', "%23").replace('$', "%24").replace('@', "%40")
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn new_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "test".to_owned()).unwrap()
}

/// Answers the origin gives to requests whose path starts with a prefix: `(prefix, status, body)`.
pub(crate) type Served = Arc<Mutex<Vec<(String, u16, Value)>>>;

/// The origin's media, by media id: content type and bytes.
pub(crate) type MediaFiles = Arc<Mutex<BTreeMap<String, (String, Vec<u8>)>>>;

const MEDIA_DOWNLOAD: &str = "/_matrix/federation/v1/media/download/";

/// A federation media download answer: `multipart/mixed`, the (empty) metadata as JSON, then
/// the content with its type (spec: `GET /_matrix/federation/v1/media/download/{mediaId}`).
fn multipart_media(content_type: &str, bytes: &[u8]) -> PeerResponse {
    let boundary = "origin-media-boundary";
    let mut body =
        format!("--{boundary}\r\ncontent-type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n").into_bytes();
    body.extend_from_slice(format!("content-type: {content_type}\r\n\r\n").as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    PeerResponse { status: 200, content_type: format!("multipart/mixed; boundary={boundary}"), body }
}

pub(crate) struct Origin {
    pub peer: FakePeer,
    pub name: String,
    key: Ed25519KeyPair,
    /// Another key with the same key id: what it signs does not verify.
    pub forger: Ed25519KeyPair,
    pub served: Served,
    /// The rooms this origin hosts (see `host`).
    pub hosts: Hosts,
    /// Media it serves at its federation download endpoint.
    pub media: MediaFiles,
    /// When set, `/invite` v2 is answered with the event countersigned, these fields added.
    pub invite_extra: Arc<Mutex<Option<serde_json::Map<String, Value>>>>,
}

/// A room the origin's user joined: the ids a new PDU is built on.
#[derive(Clone)]
pub(crate) struct Joined {
    pub room_id: String,
    pub rules: RoomVersionRules,
    pub user: String,
    pub create: String,
    pub power_levels: String,
    pub join_rules: String,
    pub join: String,
    /// The room's state after the join (ids).
    pub state: Vec<String>,
    /// The latest event the origin knows (its join, then what it sent).
    pub tip: String,
    pub depth: u64,
}

impl Joined {
    /// `auth_events` for an event of the origin's user: create (not listed from v12 on), power
    /// levels, the user's join.
    pub(crate) fn auth(&self) -> Vec<String> {
        let mut auth = vec![self.power_levels.clone(), self.join.clone()];
        if !self.rules.authorization.room_create_event_id_as_room_id {
            auth.insert(0, self.create.clone());
        }
        auth
    }

    /// Moves the tip to an event the origin sent (accepted).
    pub(crate) fn advance(&mut self, pdu: &Pdu) {
        self.tip = pdu.id.clone();
        self.depth += 1;
    }
}

impl Origin {
    pub(crate) async fn start() -> Self {
        let der = Ed25519KeyPair::generate();
        let key = Ed25519KeyPair::from_der(&der, "test".to_owned()).unwrap();
        let signer = Ed25519KeyPair::from_der(&der, "test".to_owned()).unwrap();
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
        let name = Arc::new(OnceLock::<String>::new());
        let served: Served = Arc::default();
        let hosts: Hosts = Arc::default();
        let media: MediaFiles = Arc::default();
        let invite_extra: Arc<Mutex<Option<serde_json::Map<String, Value>>>> = Arc::default();
        let (name2, served2, hosts2, media2) = (name.clone(), served.clone(), hosts.clone(), media.clone());
        let extra2 = invite_extra.clone();
        let handler: RawPeerHandler = Arc::new(move |req: &SeenRequest| {
            let server_name = name2.get().cloned().unwrap_or_default();
            let path = req.path.split('?').next().unwrap_or_default();
            if let Some(id) = path.strip_prefix(MEDIA_DOWNLOAD)
                && let Some((content_type, bytes)) = media2.lock().unwrap().get(id)
            {
                return multipart_media(content_type, bytes);
            }
            let (status, body) = if path == "/_matrix/key/v2/server" {
                let doc = json!({
                    "server_name": server_name,
                    "valid_until_ts": now_ms() + 86_400_000,
                    "verify_keys": {"ed25519:test": {"key": public}},
                    "old_verify_keys": {},
                });
                let mut object: CanonicalJsonObject = serde_json::from_value(doc).unwrap();
                ruma::signatures::sign_json(&server_name, &signer, &mut object).unwrap();
                (200, serde_json::to_string(&object).unwrap())
            } else if let Some((_, status, body)) =
                served2.lock().unwrap().iter().find(|(p, _, _)| path.starts_with(p.as_str()))
            {
                (*status, body.to_string())
            } else if path.starts_with("/_matrix/federation/v2/invite/")
                && let Some(extra) = extra2.lock().unwrap().clone()
            {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let version = ruma::RoomVersionId::try_from(body["room_version"].as_str().unwrap_or_default());
                let rules = version.ok().and_then(|v| v.rules()).expect("a known room version");
                let event = super::floats::countersign(&server_name, &signer, body["event"].clone(), &extra, &rules);
                (200, json!({"event": event}).to_string())
            } else if let Some(answer) = host::answer(&hosts2, &server_name, &req.method, path, &req.body) {
                answer
            } else if path.starts_with("/_matrix/federation/v1/send/") {
                (200, json!({"pdus": {}}).to_string())
            } else {
                (404, json!({"errcode": "M_NOT_FOUND", "error": "nothing here"}).to_string())
            };
            PeerResponse::json(status, body)
        });
        let peer = FakePeer::start_raw(handler).await;
        name.set(peer.server_name.clone()).unwrap();
        Self { name: peer.server_name.clone(), peer, key, forger: new_key(), served, hosts, media, invite_extra }
    }

    /// Serves `bytes` as the media `mxc://{origin}/{media_id}` at the federation download
    /// endpoint.
    pub(crate) fn serve_media(&self, media_id: &str, content_type: &str, bytes: Vec<u8>) {
        self.media.lock().unwrap().insert(media_id.to_owned(), (content_type.to_owned(), bytes));
    }

    /// The origin's signing key (for requests and events signed outside ruma, see `floats`).
    pub(crate) fn key(&self) -> &Ed25519KeyPair {
        &self.key
    }

    /// An X-Matrix-signed request to `to`'s federation port.
    pub(crate) async fn request(
        &self,
        to: &TestServer,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let response = self.signed(to, method, path, body).await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// An X-Matrix-signed `GET` whose answer is not JSON: status, content type, body.
    pub(crate) async fn get_bytes(&self, to: &TestServer, path: &str) -> (StatusCode, String, Vec<u8>) {
        let response = self.signed(to, "GET", path, None).await;
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (status, content_type, response.bytes().await.unwrap().to_vec())
    }

    async fn signed(&self, to: &TestServer, method: &str, path: &str, body: Option<&Value>) -> reqwest::Response {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        let request = http::Request::builder().method(method).uri(path).body(bytes.clone()).unwrap();
        let origin = OwnedServerName::try_from(self.name.as_str()).unwrap();
        let destination = OwnedServerName::try_from(to.server_name.as_str()).unwrap();
        let xmatrix =
            XMatrix::sign_http_request(&request, XMatrixSigningInput::new(origin, destination, &self.key)).unwrap();
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut builder = client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", to.federation_base))
            .header("authorization", xmatrix.to_string());
        if body.is_some() {
            builder = builder.header("content-type", "application/json").body(bytes);
        }
        builder.send().await.unwrap()
    }

    /// Hashes and signs an event with `key` as this origin; its id and JSON.
    pub(crate) fn sign_with(
        &self,
        key: &Ed25519KeyPair,
        mut event: CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Pdu {
        for field in ["signatures", "hashes", "event_id", "unsigned"] {
            event.remove(field);
        }
        ruma::signatures::hash_and_sign_event(&self.name, key, &mut event, &rules.redaction).unwrap();
        let id = format!("${}", ruma::signatures::reference_hash(&event, rules).unwrap());
        Pdu { id, json: serde_json::to_value(&event).unwrap() }
    }

    /// Hashes and signs an event with this origin's key.
    pub(crate) fn sign_as_origin(&self, event: CanonicalJsonObject, rules: &RoomVersionRules) -> Pdu {
        self.sign_with(&self.key, event, rules)
    }

    /// An event of the room, signed by this origin.
    pub(crate) fn event(&self, room: &Joined, draft: Draft<'_>) -> Pdu {
        self.sign_with(&self.key, draft.build(room), &room.rules)
    }

    /// The join of `user` (a localpart of this origin) to `room_id` on `to`, from `to`'s
    /// `/make_join` template, signed by this origin but not sent: the event and its depth.
    pub(crate) async fn signed_join(
        &self,
        to: &TestServer,
        room_id: &str,
        localpart: &str,
        version: &str,
    ) -> (Pdu, u64) {
        let user = format!("@{localpart}:{}", self.name);
        let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver={version}", enc(room_id), enc(&user));
        let (status, answer) = self.request(to, "GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "make_join: {answer}\n{}", to.log());
        assert_eq!(answer["room_version"], version);
        let rules = ruma::RoomVersionId::try_from(version).unwrap().rules().unwrap();
        let mut template: CanonicalJsonObject = serde_json::from_value(answer["event"].clone()).unwrap();
        template.insert("origin_server_ts".into(), ruma::CanonicalJsonValue::Integer(now_ms().try_into().unwrap()));
        let depth = answer["event"]["depth"].as_u64().expect("depth");
        (self.sign_with(&self.key, template, &rules), depth)
    }

    /// Joins `user` (a localpart of this origin) to `room_id` on `to`.
    pub(crate) async fn join(&self, to: &TestServer, room_id: &str, localpart: &str, version: &str) -> Joined {
        let user = format!("@{localpart}:{}", self.name);
        let rules = ruma::RoomVersionId::try_from(version).unwrap().rules().unwrap();
        let (join, depth) = self.signed_join(to, room_id, localpart, version).await;
        let path = format!("/_matrix/federation/v2/send_join/{}/{}", enc(room_id), enc(&join.id));
        let (status, answer) = self.request(to, "PUT", &path, Some(&join.json)).await;
        assert_eq!(status, StatusCode::OK, "send_join: {answer}\n{}", to.log());
        let mut ids = BTreeMap::new();
        let mut state = vec![join.id.clone()];
        for pdu in answer["state"].as_array().expect("state") {
            let object: CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
            let id = format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap());
            if pdu["state_key"] != user.as_str() {
                state.push(id.clone());
            }
            ids.insert(pdu["type"].as_str().unwrap().to_owned(), id);
        }
        Joined {
            room_id: room_id.to_owned(),
            user,
            create: ids["m.room.create"].clone(),
            power_levels: ids["m.room.power_levels"].clone(),
            join_rules: ids["m.room.join_rules"].clone(),
            join: join.id.clone(),
            state,
            tip: join.id,
            depth,
            rules,
        }
    }

    /// Answers requests whose path starts with `prefix` with `body` (200).
    pub(crate) fn serve(&self, prefix: &str, body: Value) {
        self.serve_status(prefix, 200, body);
    }

    /// Answers requests whose path starts with `prefix` with `status` and `body`.
    pub(crate) fn serve_status(&self, prefix: &str, status: u16, body: Value) {
        self.served.lock().unwrap().insert(0, (prefix.to_owned(), status, body));
    }

    /// Answers `/event/{id}` for this PDU with it (the id as sent, escaped or not).
    pub(crate) fn serve_event(&self, pdu: &Pdu) {
        let body = json!({"origin": self.name, "origin_server_ts": now_ms(), "pdus": [pdu.json]});
        for id in [enc(&pdu.id), pdu.id.clone()] {
            self.serve(&format!("/_matrix/federation/v1/event/{id}"), body.clone());
        }
    }

    /// Whether the real server asked this origin for the event `id` (`/event/{id}`).
    pub(crate) fn asked_for_event(&self, id: &str) -> bool {
        self.seen("/_matrix/federation/v1/event/").iter().any(|r| r.path.contains(&enc(id)) || r.path.contains(id))
    }

    /// Sends a transaction of PDUs; the status and the answer.
    pub(crate) async fn send(&self, to: &TestServer, txn: &str, pdus: &[&Pdu]) -> (StatusCode, Value) {
        self.transaction(to, txn, pdus.iter().map(|p| p.json.clone()).collect(), Vec::new()).await
    }

    /// Sends a transaction of EDUs (`(edu_type, content)`); the status and the answer.
    pub(crate) async fn send_edus(&self, to: &TestServer, txn: &str, edus: &[(&str, Value)]) -> (StatusCode, Value) {
        let edus = edus.iter().map(|(kind, content)| json!({"edu_type": kind, "content": content})).collect();
        self.transaction(to, txn, Vec::new(), edus).await
    }

    async fn transaction(&self, to: &TestServer, txn: &str, pdus: Vec<Value>, edus: Vec<Value>) -> (StatusCode, Value) {
        let body = json!({"origin": self.name, "origin_server_ts": now_ms(), "pdus": pdus, "edus": edus});
        self.request(to, "PUT", &format!("/_matrix/federation/v1/send/{txn}"), Some(&body)).await
    }

    /// The requests this origin received whose path starts with `prefix`.
    pub(crate) fn seen(&self, prefix: &str) -> Vec<SeenRequest> {
        self.peer.seen().into_iter().filter(|r| r.path.starts_with(prefix)).collect()
    }
}

/// A signed PDU: its id (the reference hash) and JSON.
#[derive(Clone, Debug)]
pub(crate) struct Pdu {
    pub id: String,
    pub json: Value,
}

impl Pdu {
    /// The same event with other content (its hashes and signatures unchanged).
    pub(crate) fn with_content(&self, content: Value) -> Pdu {
        let mut json = self.json.clone();
        json["content"] = content;
        Pdu { id: self.id.clone(), json }
    }
}

/// An event to build on a joined room; by default a message of the origin's user on the tip.
pub(crate) struct Draft<'a> {
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: Value,
    pub sender: Option<&'a str>,
    pub prev: Option<Vec<String>>,
    pub auth: Option<Vec<String>>,
}

impl<'a> Draft<'a> {
    pub(crate) fn message(body: &str) -> Self {
        Self::of("m.room.message", None, json!({"msgtype": "m.text", "body": body}))
    }

    pub(crate) fn of(kind: &'a str, state_key: Option<&'a str>, content: Value) -> Self {
        Self { kind, state_key, content, sender: None, prev: None, auth: None }
    }

    pub(crate) fn sender(mut self, sender: &'a str) -> Self {
        self.sender = Some(sender);
        self
    }

    pub(crate) fn prev(mut self, prev: Vec<String>) -> Self {
        self.prev = Some(prev);
        self
    }

    pub(crate) fn auth(mut self, auth: Vec<String>) -> Self {
        self.auth = Some(auth);
        self
    }

    pub(crate) fn build(self, room: &Joined) -> CanonicalJsonObject {
        let mut event = json!({
            "room_id": room.room_id,
            "sender": self.sender.unwrap_or(&room.user),
            "type": self.kind,
            "content": self.content,
            "prev_events": self.prev.unwrap_or_else(|| vec![room.tip.clone()]),
            "auth_events": self.auth.unwrap_or_else(|| room.auth()),
            "depth": room.depth + 1,
            "origin_server_ts": now_ms(),
        });
        if let Some(key) = self.state_key {
            event["state_key"] = key.into();
        }
        serde_json::from_value(event).unwrap()
    }
}
