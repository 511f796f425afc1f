//! The federation listener: TLS (a self-signed pair generated into `data_dir`, or the operator's
//! PEM files), clients without SNI, the server's self-signed key document and its version, key
//! rotation.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use spec_tests::{ServerOptions, StatusCode, TestServer, signal};

/// A client for the self-signed listener. Connecting to an IP address sends no SNI.
fn tls_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn get(s: &TestServer, path: &str) -> (StatusCode, Value) {
    let r = tls_client().get(format!("{}{path}", s.federation_base)).send().await.expect("request over TLS");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Verifies the key document's self-signature and returns its key id and public key.
fn verify_key_document(doc: &Value, server_name: &str) -> (String, String) {
    use ruma::serde::Base64;
    let (key_id, key) = doc["verify_keys"].as_object().and_then(|k| k.iter().next()).expect("a verify key");
    let key = key["key"].as_str().expect("key").to_owned();
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(
        server_name.to_owned(),
        std::collections::BTreeMap::from([(key_id.clone(), Base64::parse(&key).expect("unpadded base64"))]),
    );
    let object: ruma::CanonicalJsonObject = serde_json::from_value(doc.clone()).expect("canonical JSON");
    ruma::signatures::verify_json(&keys, &object).expect("the document is signed by its own key");
    (key_id.clone(), key)
}

/// `/_matrix/key/v2/server` over TLS without SNI: self-signed, valid for days, stable across a
/// restart, rotated by `poststelle keys rotate`; `/_matrix/federation/v1/version`; nothing else on
/// this port (yet).
#[tokio::test]
async fn key_document_and_version_over_tls() {
    let mut s = TestServer::start().await;
    let (status, doc) = get(&s, "/_matrix/key/v2/server").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["server_name"], "localhost");
    let (key_id, key) = verify_key_document(&doc, "localhost");
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let valid_until = doc["valid_until_ts"].as_u64().expect("valid_until_ts");
    assert!(valid_until > now + 6 * 24 * 3600 * 1000, "{doc}");
    assert_eq!(doc["old_verify_keys"], serde_json::json!({}));

    let (status, version) = get(&s, "/_matrix/federation/v1/version").await;
    assert_eq!((status, version["server"]["name"].clone()), (StatusCode::OK, "Poststelle".into()), "{version}");
    let (status, unknown) = get(&s, "/_matrix/federation/v1/nothing").await;
    assert_eq!((status, unknown["errcode"].clone()), (StatusCode::NOT_FOUND, "M_UNRECOGNIZED".into()));
    let (status, _) = get(&s, "/_matrix/client/versions").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the client API is not served on the federation port");
    // Plain HTTP gets no answer from the TLS port.
    let plain = s.federation_base.replace("https://", "http://");
    assert!(tls_client().get(format!("{plain}/_matrix/federation/v1/version")).send().await.is_err());

    // The generated pair: the key readable by the owner only, both kept across restarts, like
    // the signing key.
    let cert_path = s.data_dir.path().join("federation-tls.crt");
    let key_path = s.data_dir.path().join("federation-tls.key");
    let cert = std::fs::read(&cert_path).expect("generated certificate");
    assert_eq!(std::fs::metadata(&key_path).expect("generated key").permissions().mode() & 0o777, 0o600);
    signal(s.pid(), "TERM");
    s.restart().await;
    assert_eq!(std::fs::read(&cert_path).unwrap(), cert, "the certificate was replaced");
    let (status, again) = get(&s, "/_matrix/key/v2/server").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verify_key_document(&again, "localhost"), (key_id.clone(), key.clone()));

    // `poststelle keys rotate`: a new current key after the restart; the old one published as
    // expired, so what it signed can still be verified.
    signal(s.pid(), "TERM");
    let rotated = std::process::Command::new(spec_tests::binary())
        .args(["keys", "rotate"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("POSTSTELLE_DATA_DIR", s.data_dir.path())
        .env("POSTSTELLE_DATABASE__URL", &s.database_url)
        .output()
        .expect("running keys rotate");
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    s.restart().await;
    let (status, after) = get(&s, "/_matrix/key/v2/server").await;
    assert_eq!(status, StatusCode::OK);
    let (new_id, _) = verify_key_document(&after, "localhost");
    assert_ne!(new_id, key_id);
    assert!(String::from_utf8_lossy(&rotated.stdout).contains(&new_id), "{}", String::from_utf8_lossy(&rotated.stdout));
    assert_eq!(after["old_verify_keys"][&key_id]["key"], key.as_str(), "{after}");
    assert!(after["old_verify_keys"][&key_id]["expired_ts"].as_u64().is_some_and(|t| t <= valid_until), "{after}");

    // The operator's own files.
    let other = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_LISTENERS__FEDERATION__TLS_CERT", cert_path.display())
            .set("POSTSTELLE_LISTENERS__FEDERATION__TLS_KEY", key_path.display()),
    )
    .await;
    assert!(!other.data_dir.path().join("federation-tls.crt").exists(), "no pair generated when files are given");
    let (status, doc) = get(&other, "/_matrix/key/v2/server").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    verify_key_document(&doc, "localhost");
}

mod acl;
mod backfill;
mod device_lists;
mod floats;
mod gaps;
mod guests;
mod host;
mod hostile;
mod inbound;
mod media;
mod mls;
mod notary;
mod origin;
mod outbound_join;
mod power_levels;
mod presence;
mod queries;
mod reads;
mod redactions;
mod rooms;
mod soft_fail;
mod split;
mod synapse;
mod third_party_invites;
mod transport;
mod upgrades;
