//! A real Synapse on loopback, as a federation peer: a throwaway config, signing key and
//! self-signed TLS certificate in a temp dir, SQLite, server name `127.0.0.1:<TLS port>`.
//! `scripts/install-test-clients` installs the pinned Synapse into `.test-clients/synapse`.
//!
//! The TLS listener serves the client and federation APIs (Synapse federates only over TLS); a
//! second, plain-HTTP listener serves the client API to the tests. As the recipe for loopback
//! federation says: the federation IP blocklist is empty (an IP-literal server name ignores the
//! allowlist), no notary (`trusted_key_servers: []`: keys come from the origin), peer
//! certificates are not verified (ours is self-signed), registration needs no verification, and
//! the rate limits are raised. Signatures and auth rules are checked as always.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::{Account, StatusCode, free_port};

/// The Synapse virtualenv's Python.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.test-clients/synapse/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/install-test-clients first", python.display());
    python
}

/// A running Synapse process; stopped by its PID on drop.
pub struct Synapse {
    child: Child,
    /// `127.0.0.1:<TLS port>`.
    pub server_name: String,
    /// `http://127.0.0.1:<port>` of the plain client listener.
    pub base: String,
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Synapse {
    /// Starts a fresh Synapse and waits (up to 60 s) until its client API answers.
    pub async fn start() -> Self {
        let python = python();
        let dir = tempfile::Builder::new().prefix("synapse-test").tempdir().expect("temp dir");
        let (tls_port, http_port) = (free_port(), free_port());
        let server_name = format!("127.0.0.1:{tls_port}");
        let path = |name: &str| dir.path().join(name).display().to_string();

        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
        std::fs::write(path("tls.crt"), cert.cert.pem()).expect("writing the certificate");
        std::fs::write(path("tls.key"), cert.key_pair.serialize_pem()).expect("writing the TLS key");
        // An ed25519 signing key is its 32-byte seed: `ed25519 <version> <unpadded base64>`.
        let seed = sha2::Sha256::digest(poststelle_server::service::tokens::random_alphanumeric(43));
        let seed = base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed);
        std::fs::write(path("signing.key"), format!("ed25519 a_test {seed}\n")).expect("writing the signing key");

        let unlimited = json!({"per_second": 1000, "burst_count": 1000});
        let listener = |port: u16, tls: bool, names: Value| {
            json!({
                "port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": tls,
                "x_forwarded": false, "resources": [{"names": names, "compress": false}],
            })
        };
        // JSON is YAML, so no YAML writer is needed.
        let config = json!({
            "server_name": server_name,
            "pid_file": path("homeserver.pid"),
            "report_stats": false,
            "listeners": [
                listener(tls_port, true, json!(["client", "federation"])),
                listener(http_port, false, json!(["client"])),
            ],
            "tls_certificate_path": path("tls.crt"),
            "tls_private_key_path": path("tls.key"),
            "database": {"name": "sqlite3", "args": {"database": path("homeserver.db")}},
            "media_store_path": path("media"),
            "signing_key_path": path("signing.key"),
            "macaroon_secret_key": poststelle_server::service::tokens::random_alphanumeric(32),
            "form_secret": poststelle_server::service::tokens::random_alphanumeric(32),
            "trusted_key_servers": [],
            "suppress_key_server_warning": true,
            "federation_verify_certificates": false,
            "federation_ip_range_blacklist": [],
            "enable_registration": true,
            "enable_registration_without_verification": true,
            "enable_metrics": false,
            "rc_message": unlimited,
            "rc_registration": unlimited,
            "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
            "rc_joins": {"local": unlimited, "remote": unlimited},
            "rc_invites": {"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
            "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 0, "reject_limit": 1000, "concurrent": 100},
        });
        std::fs::write(path("homeserver.yaml"), serde_json::to_string_pretty(&config).expect("config"))
            .expect("writing the config");

        let log = std::fs::File::create(path("synapse.log")).expect("log file");
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c", &path("homeserver.yaml")])
            .current_dir(dir.path())
            .env_remove("SYNAPSE_CONFIG_PATH")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawning Synapse");
        let mut synapse = Self {
            child,
            server_name,
            base: format!("http://127.0.0.1:{http_port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client"),
            dir,
        };
        synapse.wait_ready().await;
        synapse
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/_matrix/client/versions", self.base)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Synapse exited ({status}) before it was ready; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Synapse did not become ready; log:\n{}", self.log());
    }

    /// Synapse's log so far (it logs to stderr without a log config).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a client-API request; returns status and JSON body (`Value::Null` if not JSON).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.expect("request to Synapse failed");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Registers `localpart` with open registration (dummy stage); returns the session.
    pub async fn register(&self, localpart: &str, password: &str) -> Account {
        let (status, body) = self
            .request(
                "POST",
                "/_matrix/client/v3/register",
                None,
                Some(json!({"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {localpart} on Synapse: {body}");
        Account::from_response(&body, password)
    }

    /// Stops the process with SIGTERM and waits (up to 10 s), then SIGKILL.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        crate::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.stop();
    }
}
