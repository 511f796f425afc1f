//! A small identity server on loopback for third-party invite tests: the identity service API's
//! lookup (hashed, with a pepper), invite storage and key validity endpoints, with real ed25519
//! keys that can be rotated (the old key then reads as revoked), and the binding step, which
//! signs the pending invites of an address and reports them to the user's homeserver over its
//! federation listener (`PUT /_matrix/federation/v1/3pid/onbind`), as an identity server does
//! after validating an address.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use base64::Engine as _;
use ruma::{CanonicalJsonObject, signatures::Ed25519KeyPair};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const PEPPER: &str = "matrixrocks";
const ACCESS_TOKEN: &str = "identity-access-token";

/// An invite stored for an address that was bound to no one then.
#[derive(Clone, Debug)]
pub struct StoredInvite {
    pub medium: String,
    pub address: String,
    pub room_id: String,
    pub sender: String,
    pub token: String,
    /// The whole `/store-invite` request body, as the homeserver sent it.
    pub request: Value,
}

struct Key {
    pair: Ed25519KeyPair,
    valid: bool,
}

struct Inner {
    /// Long-term keys, the current one last.
    keys: Vec<Key>,
    ephemeral: Key,
    bindings: BTreeMap<(String, String), String>,
    invites: Vec<StoredInvite>,
    base: String,
}

type Shared = Arc<Mutex<Inner>>;

/// A running identity server; it stops on [`IdentityServer::stop`] or with the test.
pub struct IdentityServer {
    /// `127.0.0.1:<port>`, what clients give as `id_server`.
    pub name: String,
    inner: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_key(version: usize) -> Key {
    let document = Ed25519KeyPair::generate();
    Key { pair: Ed25519KeyPair::from_der(&document, version.to_string()).expect("ed25519 key"), valid: true }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

impl IdentityServer {
    pub async fn start() -> Self {
        let port = crate::free_port();
        let name = format!("127.0.0.1:{port}");
        let inner = Arc::new(Mutex::new(Inner {
            keys: vec![new_key(0)],
            ephemeral: new_key(100),
            bindings: BTreeMap::new(),
            invites: Vec::new(),
            base: format!("http://{name}"),
        }));
        let app = Router::new()
            .route("/_matrix/identity/v2/hash_details", get(hash_details))
            .route("/_matrix/identity/v2/lookup", post(lookup))
            .route("/_matrix/identity/v2/store-invite", post(store_invite))
            .route("/_matrix/identity/v2/pubkey/isvalid", get(key_is_valid))
            .route("/_matrix/identity/v2/pubkey/ephemeral/isvalid", get(ephemeral_is_valid))
            .route("/_matrix/identity/v2/pubkey/{key_id}", get(public_key))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("http client");
        Self { name, inner, shutdown: Some(shutdown), task, http }
    }

    /// The token clients send as `id_access_token`.
    pub fn access_token(&self) -> &'static str {
        ACCESS_TOKEN
    }

    /// The invites stored so far.
    pub fn invites(&self) -> Vec<StoredInvite> {
        self.inner.lock().expect("lock").invites.clone()
    }

    /// Binds an address to a user without telling anyone (an address bound before it is invited).
    pub fn bind_quietly(&self, medium: &str, address: &str, mxid: &str) {
        self.inner.lock().expect("lock").bindings.insert((medium.to_owned(), address.to_owned()), mxid.to_owned());
    }

    /// A new long-term key signs from now on; the old one reads as revoked.
    pub fn rotate_keys(&self) {
        let mut inner = self.inner.lock().expect("lock");
        for key in &mut inner.keys {
            key.valid = false;
        }
        let next = inner.keys.len();
        inner.keys.push(new_key(next));
    }

    /// Stops answering: the listener closes, idle connections are shut down.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task).await;
    }

    /// Signs `object` (e.g. `{mxid, sender, token}`) with the ephemeral key of the invites.
    pub fn sign_ephemeral(&self, object: Value) -> Value {
        let inner = self.inner.lock().expect("lock");
        sign(&self.name, &inner.ephemeral.pair, object)
    }

    /// Binds an address: records it and returns the `onbind` body with its pending invites,
    /// each signed with the current long-term key (not sent yet: see [`Self::notify`]).
    pub fn bind(&self, medium: &str, address: &str, mxid: &str) -> Value {
        let mut inner = self.inner.lock().expect("lock");
        inner.bindings.insert((medium.to_owned(), address.to_owned()), mxid.to_owned());
        let key = &inner.keys.last().expect("a key").pair;
        let invites: Vec<Value> = inner
            .invites
            .iter()
            .filter(|i| i.medium == medium && i.address == address)
            .map(|i| {
                let signed = sign(&self.name, key, json!({"mxid": mxid, "sender": i.sender, "token": i.token}));
                json!({
                    "medium": medium, "address": address, "mxid": mxid,
                    "room_id": i.room_id, "sender": i.sender, "signed": signed,
                })
            })
            .collect();
        json!({"medium": medium, "address": address, "mxid": mxid, "invites": invites})
    }

    /// Reports a binding to a homeserver's federation listener (`https://…`); its status.
    pub async fn notify(&self, federation_base: &str, body: &Value) -> StatusCode {
        let response = self
            .http
            .put(format!("{federation_base}/_matrix/federation/v1/3pid/onbind"))
            .json(body)
            .send()
            .await
            .expect("onbind request");
        StatusCode::from_u16(response.status().as_u16()).expect("status")
    }

    /// [`Self::bind`] and [`Self::notify`]: what an identity server does once the user proved
    /// they own the address.
    pub async fn bind_and_notify(&self, federation_base: &str, medium: &str, address: &str, mxid: &str) -> StatusCode {
        let body = self.bind(medium, address, mxid);
        self.notify(federation_base, &body).await
    }
}

fn sign(entity: &str, key: &Ed25519KeyPair, object: Value) -> Value {
    let mut object: CanonicalJsonObject = serde_json::from_value(object).expect("canonical JSON");
    ruma::signatures::sign_json(entity, key, &mut object).expect("signing");
    serde_json::to_value(object).expect("JSON")
}

fn authorised(headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let expected = format!("Bearer {ACCESS_TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str()) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, Json(json!({"errcode": "M_UNAUTHORIZED", "error": "unknown token"}))))
    }
}

type Answer = Result<Json<Value>, (StatusCode, Json<Value>)>;

async fn hash_details(headers: HeaderMap) -> Answer {
    authorised(&headers)?;
    Ok(Json(json!({"lookup_pepper": PEPPER, "algorithms": ["none", "sha256"]})))
}

async fn lookup(State(inner): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Answer {
    authorised(&headers)?;
    if body["pepper"] != PEPPER {
        return Err((StatusCode::BAD_REQUEST, Json(json!({"errcode": "M_INVALID_PEPPER", "error": "wrong pepper"}))));
    }
    let inner = inner.lock().expect("lock");
    let mut mappings = serde_json::Map::new();
    for asked in body["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        for ((medium, address), mxid) in &inner.bindings {
            let key = match body["algorithm"].as_str() {
                Some("sha256") => base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(format!("{address} {medium} {PEPPER}").as_bytes())),
                _ => format!("{address} {medium}"),
            };
            if key == asked {
                mappings.insert(asked.to_owned(), mxid.clone().into());
            }
        }
    }
    Ok(Json(json!({"mappings": mappings})))
}

/// `a…@example.org` for `alice@example.org`: the invitee's name for the room, not the address.
fn redacted(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => format!("{}…@{domain}", local.chars().next().unwrap_or('?')),
        None => format!("{}…", address.chars().take(3).collect::<String>()),
    }
}

async fn store_invite(State(inner): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Answer {
    authorised(&headers)?;
    let field = |name: &str| body[name].as_str().map(str::to_owned);
    let (Some(medium), Some(address), Some(room_id), Some(sender)) =
        (field("medium"), field("address"), field("room_id"), field("sender"))
    else {
        return Err((StatusCode::BAD_REQUEST, Json(json!({"errcode": "M_MISSING_PARAMS", "error": "missing fields"}))));
    };
    let mut inner = inner.lock().expect("lock");
    if inner.bindings.contains_key(&(medium.clone(), address.clone())) {
        return Err((StatusCode::BAD_REQUEST, Json(json!({"errcode": "M_THREEPID_IN_USE", "error": "bound"}))));
    }
    let token = format!("tok{}", inner.invites.len() + 1);
    let display_name = redacted(&address);
    inner.invites.push(StoredInvite { medium, address, room_id, sender, token: token.clone(), request: body.clone() });
    let long_term = b64(&inner.keys.last().expect("a key").pair.public_key());
    let ephemeral = b64(&inner.ephemeral.pair.public_key());
    let base = &inner.base;
    Ok(Json(json!({
        "token": token,
        "display_name": display_name,
        "public_keys": [
            {"public_key": long_term, "key_validity_url": format!("{base}/_matrix/identity/v2/pubkey/isvalid")},
            {"public_key": ephemeral, "key_validity_url": format!("{base}/_matrix/identity/v2/pubkey/ephemeral/isvalid")},
        ],
    })))
}

async fn key_is_valid(State(inner): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Json<Value> {
    let inner = inner.lock().expect("lock");
    let asked = q.get("public_key").cloned().unwrap_or_default();
    let valid = inner.keys.iter().any(|k| k.valid && b64(&k.pair.public_key()) == asked);
    Json(json!({"valid": valid}))
}

async fn ephemeral_is_valid(State(inner): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Json<Value> {
    let inner = inner.lock().expect("lock");
    let asked = q.get("public_key").cloned().unwrap_or_default();
    Json(json!({"valid": inner.ephemeral.valid && b64(&inner.ephemeral.pair.public_key()) == asked}))
}

async fn public_key(State(inner): State<Shared>, Path(key_id): Path<String>) -> Answer {
    let inner = inner.lock().expect("lock");
    let found = inner
        .keys
        .iter()
        .chain(std::iter::once(&inner.ephemeral))
        .find(|k| k.pair.version() == key_id.trim_start_matches("ed25519:"));
    match found {
        Some(k) => Ok(Json(json!({"public_key": b64(&k.pair.public_key())}))),
        None => Err((StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND", "error": "no such key"})))),
    }
}
