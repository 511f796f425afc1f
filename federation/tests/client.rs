//! The outbound client against a real TLS server on loopback: well-known delegation (SNI and
//! `Host` per the spec), IP literals (no SNI), certificate verification with and without the
//! peer's certificate as a CA, the address guard, the allow-list, X-Matrix signatures, and
//! Matrix errors as typed errors.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use poststelle_federation::{ClientConfig, ClientError, FederationClient, SigningKey};
use ruma::{
    OwnedServerName, RoomAliasId, ServerName,
    api::{
        error::ErrorKind,
        federation::{
            authentication::XMatrix, discovery::get_server_version::v1 as version,
            query::get_room_information::v1 as room_info,
        },
    },
    serde::Base64,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    sni: Option<String>,
    host: String,
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A TLS HTTP/1.1 server on 127.0.0.1 answering every request through `handler`.
struct FakeServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted (also those whose handshake failed).
    connections: Arc<Mutex<usize>>,
}

async fn serve(cert: &rcgen::CertifiedKey, handler: Handler) -> FakeServer {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (seen2, connections2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            *connections2.lock().unwrap() += 1;
            let (acceptor, handler, seen) = (acceptor.clone(), handler.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = tls.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let mut request_line = lines.next().unwrap_or_default().split(' ');
                let (method, path) = (
                    request_line.next().unwrap_or_default().to_owned(),
                    request_line.next().unwrap_or_default().to_owned(),
                );
                let headers: BTreeMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                while buf.len() < head_end + length {
                    let Ok(n) = tls.read(&mut chunk).await else { return };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let request = Seen {
                    sni,
                    host: headers.get("host").cloned().unwrap_or_default(),
                    method,
                    path,
                    authorization: headers.get("authorization").cloned(),
                    body: buf[head_end..].to_vec(),
                };
                let (status, body) = handler(&request);
                seen.lock().unwrap().push(request);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    FakeServer { port, seen, connections }
}

fn certificate() -> rcgen::CertifiedKey {
    rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap()
}

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::generate().unwrap().0)
}

fn config(ca: Option<&rcgen::CertifiedKey>) -> ClientConfig {
    let mut config = ClientConfig::new("origin.test".try_into().unwrap(), key());
    config.ca_pem = ca.map(|c| c.cert.pem().into_bytes());
    config.allow_private_networks = true;
    config.timeout = Duration::from_secs(10);
    config
}

fn version_answer() -> Handler {
    Arc::new(|_| (200, r#"{"server": {"name": "Fake", "version": "1"}}"#.to_owned()))
}

fn name(s: &str) -> OwnedServerName {
    OwnedServerName::try_from(s).unwrap()
}

/// `localhost` has no port: its well-known delegates to `localhost:<port>`, which is then asked
/// with SNI `localhost` and `Host: localhost:<port>`.
#[tokio::test]
async fn well_known_delegation_is_followed_with_the_right_names() {
    let cert = certificate();
    let target = serve(&cert, version_answer()).await;
    let delegated = format!("localhost:{}", target.port);
    let body = format!(r#"{{"m.server": "{delegated}"}}"#);
    let well_known = serve(&cert, Arc::new(move |_| (200, body.clone()))).await;
    let mut config = config(Some(&cert));
    config.well_known_port = well_known.port;
    let client = FederationClient::new(config).unwrap();

    let response = client.send(&name("localhost"), version::Request::new()).await.expect("delegated request");
    assert_eq!(response.server.and_then(|s| s.name).as_deref(), Some("Fake"));
    let wk = well_known.seen.lock().unwrap().clone();
    assert_eq!(wk.len(), 1, "{wk:?}");
    assert_eq!((wk[0].path.as_str(), wk[0].sni.as_deref()), ("/.well-known/matrix/server", Some("localhost")));
    let seen = target.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/_matrix/federation/v1/version");
    assert_eq!(seen[0].sni.as_deref(), Some("localhost"));
    assert_eq!(seen[0].host, delegated);

    // The well-known answer is cached: a second request does not ask again.
    client.send(&name("localhost"), version::Request::new()).await.expect("second request");
    assert_eq!(well_known.seen.lock().unwrap().len(), 1);
}

/// An IP-literal name: no SNI, `Host` is the name; verification against the peer's certificate
/// as a CA succeeds, and without it the unknown certificate is refused.
#[tokio::test]
async fn ip_literals_send_no_sni_and_certificates_are_verified() {
    let cert = certificate();
    let server = serve(&cert, version_answer()).await;
    let destination = name(&format!("127.0.0.1:{}", server.port));

    let trusting = FederationClient::new(config(Some(&cert))).unwrap();
    trusting.send(&destination, version::Request::new()).await.expect("trusted certificate");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!((seen[0].sni.clone(), seen[0].host.clone()), (None, destination.to_string()));

    let strict = FederationClient::new(config(None)).unwrap();
    let err = strict.send(&destination, version::Request::new()).await.expect_err("unknown certificate");
    assert!(matches!(&err, ClientError::Transport(..)), "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");

    let mut lax = config(None);
    lax.verify_tls = false;
    FederationClient::new(lax).unwrap().send(&destination, version::Request::new()).await.expect("verify_tls off");
}

/// Loopback is refused without `allow_private_networks`, and a server not on the allow-list is
/// refused; neither makes a connection.
#[tokio::test]
async fn guard_and_allow_list_refuse_before_any_traffic() {
    let cert = certificate();
    let server = serve(&cert, version_answer()).await;
    let destination = name(&format!("127.0.0.1:{}", server.port));

    let mut guarded = config(Some(&cert));
    guarded.allow_private_networks = false;
    let err = FederationClient::new(guarded).unwrap().send(&destination, version::Request::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::Discovery(..)), "{err}");

    let mut closed = config(Some(&cert));
    closed.allow = Arc::new(|s: &ServerName| s.as_str() == "other.example");
    let err = FederationClient::new(closed).unwrap().send(&destination, version::Request::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::NotAllowed(_)), "{err}");
    assert_eq!(*server.connections.lock().unwrap(), 0, "no connection was made");
}

/// Endpoints with server signatures carry an X-Matrix header that verifies with our key over
/// the path and query as sent; Matrix errors come back with status and errcode.
#[tokio::test]
async fn requests_are_signed_and_errors_are_typed() {
    let cert = certificate();
    let server = serve(
        &cert,
        Arc::new(|seen: &Seen| {
            if seen.path.contains("unknown") {
                (404, r#"{"errcode": "M_NOT_FOUND", "error": "no such alias"}"#.to_owned())
            } else {
                (200, r##"{"room_id": "!r:127.0.0.1", "servers": ["127.0.0.1"]}"##.to_owned())
            }
        }),
    )
    .await;
    let destination = name(&format!("127.0.0.1:{}", server.port));
    let config = config(Some(&cert));
    let key = config.key.clone();
    let client = FederationClient::new(config).unwrap();
    let alias = <&RoomAliasId>::try_from("#known:127.0.0.1").unwrap();
    let answer = client.send(&destination, room_info::Request::new(alias.to_owned())).await.expect("answer");
    assert_eq!(answer.room_id, "!r:127.0.0.1");

    let seen = server.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/_matrix/federation/v1/query/directory?room_alias=%23known%3A127.0.0.1");
    let header = seen.authorization.clone().expect("an Authorization header");
    let xmatrix = XMatrix::parse(&header).expect("X-Matrix");
    assert_eq!(xmatrix.origin, "origin.test");
    assert_eq!(xmatrix.destination.as_deref(), Some(destination.as_ref()));
    let request =
        http::Request::builder().method(seen.method.as_str()).uri(seen.path.as_str()).body(seen.body).unwrap();
    let keys = BTreeMap::from([(
        "origin.test".to_owned(),
        BTreeMap::from([(key.key_id(), Base64::new(key.public_key().to_vec()))]),
    )]);
    xmatrix.verify_http_request(&request, &destination, &keys).expect("a valid signature");
    let other = http::Request::builder()
        .method("GET")
        .uri("/_matrix/federation/v1/query/directory?room_alias=x")
        .body(Vec::new())
        .unwrap();
    assert!(xmatrix.verify_http_request(&other, &destination, &keys).is_err(), "bound to the URI");

    let alias = <&RoomAliasId>::try_from("#unknown:127.0.0.1").unwrap();
    let err = client.send(&destination, room_info::Request::new(alias.to_owned())).await.expect_err("404");
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND), "{err}");
    assert!(matches!(err.error_kind(), Some(ErrorKind::NotFound)), "{err}");
}
