//! A small HTTPS server on loopback for federation tests: it stands in for another Matrix server
//! (serving a key document and answering requests) or for the host of a signed allow-list. It
//! answers every request through a handler and records what it saw, and how many connections
//! arrived — so a test can show that a refused request made no traffic.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// One request as the peer saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Answers a request: status and JSON (or other text) body.
pub type PeerHandler = Arc<dyn Fn(&SeenRequest) -> (u16, String) + Send + Sync>;

/// A whole answer, for bodies that are not JSON (media, multipart).
#[derive(Clone, Debug)]
pub struct PeerResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl PeerResponse {
    pub fn json(status: u16, body: String) -> Self {
        Self { status, content_type: "application/json".into(), body: body.into_bytes() }
    }
}

/// Answers a request with a [`PeerResponse`].
pub type RawPeerHandler = Arc<dyn Fn(&SeenRequest) -> PeerResponse + Send + Sync>;

/// A running peer; it stops with the test process (its task is aborted on drop).
pub struct FakePeer {
    pub port: u16,
    /// `127.0.0.1:<port>`, the peer's server name.
    pub server_name: String,
    /// Its self-signed certificate (for `127.0.0.1`), PEM.
    pub cert_pem: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    connections: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePeer {
    pub async fn start(handler: PeerHandler) -> Self {
        Self::start_raw(Arc::new(move |req| {
            let (status, body) = handler(req);
            PeerResponse::json(status, body)
        }))
        .await
    }

    /// [`Self::start`] with a handler that chooses the content type and answers bytes.
    pub async fn start_raw(handler: RawPeerHandler) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(("127.0.0.1", crate::free_port())).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (seen2, connections2) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                *connections2.lock().expect("lock") += 1;
                let (acceptor, handler, seen) = (acceptor.clone(), handler.clone(), seen2.clone());
                tokio::spawn(async move {
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let Some(request) = read_request(&mut tls).await else { return };
                    let PeerResponse { status, content_type, body } = handler(&request);
                    seen.lock().expect("lock").push(request);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(&[head.as_bytes(), &body].concat()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self { port, server_name: format!("127.0.0.1:{port}"), cert_pem: cert.cert.pem(), seen, connections, task }
    }

    /// The requests answered so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().expect("lock")
    }

    /// Writes the certificate to `path` (for a server's `federation.ca_file`).
    pub fn write_cert(&self, path: &Path) {
        std::fs::write(path, &self.cert_pem).expect("writing the certificate");
    }
}

/// Reads one HTTP/1.1 request (head and a `Content-Length` body), at most 1 MiB.
async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<SeenRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (request_line.next()?.to_owned(), request_line.next()?.to_owned());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0).min(1 << 20);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(SeenRequest { method, path, headers, body: buf[head_end..].to_vec() })
}
