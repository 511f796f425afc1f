//! Federation transport between real processes on loopback: X-Matrix-signed requests and key
//! fetching (two `poststelle` servers, and a fake origin whose key the test holds), the notary
//! endpoints, certificate verification, the address guard, and closed federation by a static and
//! a signed allow-list.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use ruma::{
    OwnedServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};
use spec_tests::{
    ServerOptions, StatusCode, TestServer, assert_error,
    fake_peer::{FakePeer, PeerHandler},
};

fn enc(alias: &str) -> String {
    alias.replace('#', "%23").replace(':', "%3A")
}

fn tls_client() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).timeout(Duration::from_secs(30)).build().unwrap()
}

/// A room on `s` with the alias `#<name>:<server name>`; the room id.
async fn room_with_alias(s: &TestServer, name: &str) -> String {
    let user = s.register(&format!("owner{name}"), "pw-owner-123").await;
    let (status, body) = s.post("/_matrix/client/v3/createRoom", user.token(), json!({"room_alias_name": name})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

/// Verifies one signature on a signed JSON object with a base64 public key.
fn check_signature(doc: &Value, entity: &str, key_id: &str, key_b64: &str) {
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(doc.clone()).unwrap();
    // ruma checks every signer it finds: keep only the one under test.
    if let Some(ruma::CanonicalJsonValue::Object(sigs)) = object.get_mut("signatures") {
        sigs.retain(|e, _| e == entity);
    }
    let keys = std::collections::BTreeMap::from([(
        entity.to_owned(),
        std::collections::BTreeMap::from([(key_id.to_owned(), Base64::parse(key_b64).unwrap())]),
    )]);
    ruma::signatures::verify_json(&keys, &object).unwrap_or_else(|e| panic!("{entity} {key_id}: {e}; {doc}"));
}

/// A's user resolves an alias of B: A signs `query/directory` with X-Matrix, B fetches A's key
/// document and verifies it. B's notary endpoints then relay A's keys with B's signature added.
/// A verifies B's certificate with B's certificate as its CA; a server verifying without it is
/// refused by TLS.
#[tokio::test]
async fn servers_authenticate_each_other_and_relay_keys() {
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let a = TestServer::start_with(ServerOptions::federating().trusting(&b.federation_cert())).await;
    let room_id = room_with_alias(&b, "lobby").await;
    let alias = format!("#lobby:{}", b.server_name);

    let alice = a.register("alice", "pw-alice-123").await;
    let (status, body) = a.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}\nA:\n{}\nB:\n{}", a.log(), b.log());
    assert_eq!(body["room_id"], room_id.as_str());
    assert_eq!(body["servers"], json!([b.server_name]));
    // An alias B does not know: B's 404 arrives as a 404.
    let missing = format!("#nothing:{}", b.server_name);
    let result = a.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&missing)), alice.token()).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // B now holds A's keys; its notary endpoints relay them, signed by A and by B.
    let http = tls_client();
    let own = |s: &TestServer| {
        let (http, base) = (http.clone(), s.federation_base.clone());
        async move { http.get(format!("{base}/_matrix/key/v2/server")).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let (a_doc, b_doc) = (own(&a).await, own(&b).await);
    let first_key = |doc: &Value| {
        let (id, key) = doc["verify_keys"].as_object().unwrap().iter().next().unwrap();
        (id.clone(), key["key"].as_str().unwrap().to_owned())
    };
    let ((a_id, a_key), (b_id, b_key)) = (first_key(&a_doc), first_key(&b_doc));
    let batch: Value = http
        .post(format!("{}/_matrix/key/v2/query", b.federation_base))
        .json(&json!({"server_keys": {a.server_name.clone(): {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let relayed = &batch["server_keys"][0];
    assert_eq!(relayed["server_name"], a.server_name.as_str(), "{batch}");
    assert_eq!(relayed["verify_keys"][&a_id]["key"], a_key.as_str());
    check_signature(relayed, &a.server_name, &a_id, &a_key);
    check_signature(relayed, &b.server_name, &b_id, &b_key);
    let one: Value = http
        .get(format!("{}/_matrix/key/v2/query/{}", b.federation_base, a.server_name))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check_signature(&one["server_keys"][0], &b.server_name, &b_id, &b_key);
    // B about itself: its own document.
    let about_b: Value = http
        .get(format!("{}/_matrix/key/v2/query/{}", b.federation_base, b.server_name))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(about_b["server_keys"][0]["verify_keys"][&b_id]["key"], b_key.as_str(), "{about_b}");

    // Verification on without B's certificate: the handshake fails and the client gets 502.
    let strict =
        TestServer::start_with(ServerOptions::federating().set("POSTSTELLE_FEDERATION__VERIFY_TLS", true)).await;
    let carol = strict.register("carol", "pw-carol-123").await;
    let result = strict.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), carol.token()).await;
    assert_error(&result, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    assert!(strict.log().to_lowercase().contains("certificate"), "{}", strict.log());
}

/// An origin the test controls: its key document is served from a TLS server on loopback.
struct FakeOrigin {
    peer: FakePeer,
    pair: Ed25519KeyPair,
}

impl FakeOrigin {
    async fn start() -> Self {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, "test".to_owned()).unwrap();
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(pair.public_key());
        let signer = Ed25519KeyPair::from_der(&der, "test".to_owned()).unwrap();
        let name = Arc::new(std::sync::OnceLock::<String>::new());
        let name2 = name.clone();
        let handler: PeerHandler = Arc::new(move |req| {
            if req.path != "/_matrix/key/v2/server" {
                return (404, json!({"errcode": "M_NOT_FOUND", "error": "nothing here"}).to_string());
            }
            let server_name = name2.get().cloned().unwrap_or_default();
            let valid_until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                as u64
                + 86_400_000;
            let doc = json!({
                "server_name": server_name,
                "valid_until_ts": valid_until,
                "verify_keys": {"ed25519:test": {"key": public}},
                "old_verify_keys": {},
            });
            let mut object: ruma::CanonicalJsonObject = serde_json::from_value(doc).unwrap();
            ruma::signatures::sign_json(&server_name, &signer, &mut object).unwrap();
            (200, serde_json::to_string(&object).unwrap())
        });
        let peer = FakePeer::start(handler).await;
        name.set(peer.server_name.clone()).unwrap();
        Self { peer, pair }
    }

    /// Sends `GET <path>` to `to`'s federation port, X-Matrix-signed by this origin for
    /// `destination` over `signed_path` (normally `path`).
    async fn get(&self, to: &TestServer, path: &str, signed_path: &str, destination: &str) -> (StatusCode, Value) {
        let request = http::Request::builder().method("GET").uri(signed_path).body(Vec::<u8>::new()).unwrap();
        let origin = OwnedServerName::try_from(self.peer.server_name.as_str()).unwrap();
        let destination = OwnedServerName::try_from(destination).unwrap();
        let xmatrix =
            XMatrix::sign_http_request(&request, XMatrixSigningInput::new(origin, destination, &self.pair)).unwrap();
        let response = tls_client()
            .get(format!("{}{path}", to.federation_base))
            .header("authorization", xmatrix.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A correctly signed request passes (an unknown alias is then a 404); a signature over another
/// URI, none at all, or one for another destination is 401 `M_UNAUTHORIZED`.
#[tokio::test]
async fn x_matrix_signatures_are_checked() {
    let b = TestServer::start_with(ServerOptions::federating()).await;
    room_with_alias(&b, "hall").await;
    let origin = FakeOrigin::start().await;
    let path = |alias: &str| format!("/_matrix/federation/v1/query/directory?room_alias={}", enc(alias));
    let known = path(&format!("#hall:{}", b.server_name));
    let unknown = path(&format!("#nope:{}", b.server_name));

    let (status, body) = origin.get(&b, &known, &known, &b.server_name).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", b.log());
    assert_eq!(body["servers"], json!([b.server_name]));
    assert_eq!(origin.peer.seen().iter().filter(|r| r.path == "/_matrix/key/v2/server").count(), 1);
    assert_error(&origin.get(&b, &unknown, &unknown, &b.server_name).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // The key was cached: no second fetch.
    assert_eq!(origin.peer.seen().len(), 1);

    assert_error(&origin.get(&b, &known, &unknown, &b.server_name).await, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    assert_error(
        &origin.get(&b, &known, &known, "elsewhere.example").await,
        StatusCode::UNAUTHORIZED,
        "M_UNAUTHORIZED",
    );
    let unsigned = tls_client().get(format!("{}{known}", b.federation_base)).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unsigned.json::<Value>().await.unwrap()["errcode"], "M_UNAUTHORIZED");
    let garbage = tls_client()
        .get(format!("{}{known}", b.federation_base))
        .header("authorization", "X-Matrix key=\"ed25519:x\",sig=\"!!\"")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    // An origin that is no server name makes the request malformed (see below).
    let bad_name = tls_client()
        .get(format!("{}{known}", b.federation_base))
        .header("authorization", "X-Matrix origin=\"bad name!\",key=\"ed25519:x\",sig=\"!!\"")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_name.status(), StatusCode::BAD_REQUEST);
    // A body that is no JSON (`NaN`) cannot be what was signed: malformed, not unauthorised.
    let send = "/_matrix/federation/v1/send/nan-1";
    let request = http::Request::builder().method("PUT").uri(send).body(Vec::<u8>::new()).unwrap();
    let xmatrix = XMatrix::sign_http_request(
        &request,
        XMatrixSigningInput::new(
            OwnedServerName::try_from(origin.peer.server_name.as_str()).unwrap(),
            OwnedServerName::try_from(b.server_name.as_str()).unwrap(),
            &origin.pair,
        ),
    )
    .unwrap();
    let not_json = tls_client()
        .put(format!("{}{send}", b.federation_base))
        .header("authorization", xmatrix.to_string())
        .header("content-type", "application/json")
        .body(r#"{"origin_server_ts": 1, "pdus": [{"depth": NaN}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(not_json.json::<Value>().await.unwrap()["errcode"], "M_NOT_JSON");
}

/// A static allow-list: a signed request from a server not on it is 403 `M_FORBIDDEN` without
/// its keys being fetched, and requests to it are refused before any connection. Without
/// `allow_private_networks` the client refuses loopback addresses altogether.
#[tokio::test]
async fn closed_federation_and_the_address_guard_refuse_without_traffic() {
    let origin = FakeOrigin::start().await;
    let closed =
        TestServer::start_with(ServerOptions::federating().set("POSTSTELLE_FEDERATION__ALLOW_LIST", "friend.example"))
            .await;
    let path =
        format!("/_matrix/federation/v1/query/directory?room_alias={}", enc(&format!("#x:{}", closed.server_name)));
    assert_error(&origin.get(&closed, &path, &path, &closed.server_name).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let user = closed.register("dora", "pw-dora-1234").await;
    let remote_alias = format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#x:{}", origin.peer.server_name)));
    assert_error(&closed.get(&remote_alias, user.token()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(origin.peer.connections(), 0, "neither the key fetch nor the request reached the origin");

    let guarded =
        TestServer::start_with(ServerOptions::federating().set("POSTSTELLE_FEDERATION__ALLOW_PRIVATE_NETWORKS", false))
            .await;
    let user = guarded.register("emil", "pw-emil-1234").await;
    assert_error(&guarded.get(&remote_alias, user.token()).await, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    assert_eq!(origin.peer.connections(), 0, "loopback was not contacted");
}

/// A signed allow-list (JWS, EdDSA) served over HTTPS: a valid list lets the listed origin in;
/// an expired one and one signed by another key are refused, leaving nobody allowed.
#[tokio::test]
async fn signed_allow_lists_are_verified() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let origin = FakeOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key_file = dir.path().join("list-key.pem");
    std::fs::write(&key_file, pair.public_key_pem()).unwrap();
    let signing = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    let forger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let forged_key = EncodingKey::from_ed_pem(forger.serialize_pem().as_bytes()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sign = |key: &EncodingKey, exp: u64| {
        let payload = json!({"servers": [origin.peer.server_name], "iat": now, "exp": exp});
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &payload, key).unwrap()
    };
    let lists = [
        ("valid", sign(&signing, now + 3600)),
        ("expired", sign(&signing, now - 3600)),
        ("forged", sign(&forged_key, now + 3600)),
    ];
    let served = lists.clone();
    let host = FakePeer::start(Arc::new(move |req| {
        let name = req.path.trim_start_matches('/');
        served.iter().find(|(n, _)| *n == name).map_or((404, String::new()), |(_, jws)| (200, jws.clone()))
    }))
    .await;

    for (name, _) in &lists {
        let server = TestServer::start_with(
            ServerOptions::federating()
                .set("POSTSTELLE_FEDERATION__ALLOW_LIST_URL", format!("https://{}/{name}", host.server_name))
                .set("POSTSTELLE_FEDERATION__ALLOW_LIST_KEY", key_file.display()),
        )
        .await;
        let path =
            format!("/_matrix/federation/v1/query/directory?room_alias={}", enc(&format!("#x:{}", server.server_name)));
        let result = origin.get(&server, &path, &path, &server.server_name).await;
        if *name == "valid" {
            assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
            assert!(server.log().contains("signed federation allow-list loaded"), "{}", server.log());
        } else {
            assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
            assert!(server.log().contains("allow-list refused"), "{name}: {}", server.log());
        }
    }
    assert!(host.seen().iter().any(|r| r.path == "/expired") && host.seen().iter().any(|r| r.path == "/forged"));
}

/// Sytest "Non-numeric ports in server names are rejected": a request whose X-Matrix origin
/// is `localhost:http` is 400 `M_INVALID_PARAM` (its keys are never looked for); a destination
/// so named likewise. A client naming such a server (to join through, in an alias or a user
/// id) and a notary question about one get 400 too, and the server tries no connection.
#[tokio::test]
async fn non_numeric_ports_in_server_names_are_rejected() {
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let bob = b.register("bob", "pw-bob-12345").await;
    let http = tls_client();
    let profile = format!("/_matrix/federation/v1/query/profile?user_id={}&field=displayname", enc(&bob.user_id));
    let sig = "a".repeat(86);
    for header in [
        format!(r#"X-Matrix origin="localhost:http",destination="{}",key="ed25519:1",sig="{sig}""#, b.server_name),
        format!(r#"X-Matrix origin=localhost:http,key="ed25519:1",sig="{sig}""#),
        format!(r#"X-Matrix origin="127.0.0.1:1",destination="localhost:http",key="ed25519:1",sig="{sig}""#),
    ] {
        let response =
            http.get(format!("{}{profile}", b.federation_base)).header("authorization", &header).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_error(&(status, body), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    // A well-formed header with a bad signature is still 401.
    let header =
        format!(r#"X-Matrix origin="127.0.0.1:1",destination="{}",key="ed25519:1",sig="{sig}""#, b.server_name);
    let response =
        http.get(format!("{}{profile}", b.federation_base)).header("authorization", header).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let room = room_with_alias(&b, "ports").await;
    let joins = [
        format!("/_matrix/client/v3/join/{}?via=localhost:http", enc(&room)),
        format!("/_matrix/client/v3/join/{}", enc("#ports:localhost:http")),
    ];
    for path in joins {
        let result = b.post(&path, bob.token(), json!({})).await;
        assert_eq!(result.0, StatusCode::BAD_REQUEST, "{path}: {}", result.1);
    }
    let result = b.get(&format!("/_matrix/client/v3/profile/{}", enc("@alice:localhost:http")), bob.token()).await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST, "{}", result.1);
    let response = http.get(format!("{}/_matrix/key/v2/query/localhost:http", b.federation_base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = http
        .post(format!("{}/_matrix/key/v2/query", b.federation_base))
        .json(&json!({"server_keys": {"localhost:http": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
