//! TLS for the federation listener: the operator's PEM files, or a self-signed pair generated
//! into `data_dir` on first start (peers authenticate servers by their signing keys; the
//! certificate only has to exist). Handshakes run in tasks of their own, so a slow or silent
//! client holds up nobody, and clients that send no SNI are served like any other.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::config::Config;

/// File names of the generated pair in `data_dir`.
const GENERATED_CERT: &str = "federation-tls.crt";
const GENERATED_KEY: &str = "federation-tls.key";
/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration of the federation listener.
pub fn server_config(config: &Config) -> anyhow::Result<ServerConfig> {
    let fed = &config.listeners.federation;
    let (cert_path, key_path) = if fed.tls_cert.is_empty() && fed.tls_key.is_empty() {
        let cert = config.data_dir.join(GENERATED_CERT);
        let key = config.data_dir.join(GENERATED_KEY);
        if !cert.exists() || !key.exists() {
            generate(&config.server_name, &cert, &key)?;
        }
        (cert, key)
    } else if fed.tls_cert.is_empty() || fed.tls_key.is_empty() {
        anyhow::bail!("listeners.federation.tls_cert and tls_key must be set together");
    } else {
        (fed.tls_cert.clone().into(), fed.tls_key.clone().into())
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert_path.display());
    let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let mut tls = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the federation certificate and key do not fit together")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// A self-signed certificate for the server name, its key readable by the owner only.
fn generate(server_name: &str, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    let host = server_name
        .rsplit_once(':')
        .map_or(server_name, |(host, port)| if port.chars().all(|c| c.is_ascii_digit()) { host } else { server_name });
    let pair = rcgen::generate_simple_self_signed(vec![host.trim_matches(['[', ']']).to_owned()])
        .context("generating the federation certificate")?;
    std::fs::write(cert_path, pair.cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(key_path, pair.key_pair.serialize_pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed federation certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Accepted TLS connections, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub async fn bind(addr: SocketAddr, tls: ServerConfig) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let (tx, connections) = mpsc::channel(128);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "federation accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Answers go out at once rather than waiting for the peer's acknowledgement.
                let _ = stream.set_nodelay(true);
                let (acceptor, sender) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { connections, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
