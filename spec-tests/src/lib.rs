//! Black-box test harness: real `poststelle` processes, each on its own throwaway database in
//! one throwaway PostgreSQL cluster per test process, driven over real HTTP.
//!
//! The binary is the workspace's `target/<profile>/poststelle`, which `cargo test --workspace`
//! builds (the server crate's own integration tests need it), or `POSTSTELLE_BIN`.

pub mod fake_peer;
pub mod identity;
pub mod mls;
pub mod sydent;
pub mod synapse;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use poststelle_server::managed_pg::{Durability, ManagedPostgres};
pub use reqwest::StatusCode;
use serde_json::{Value, json};

/// The cluster shared by all tests of this process; it dies with the process.
fn cluster() -> &'static ManagedPostgres {
    static CLUSTER: OnceLock<(tempfile::TempDir, ManagedPostgres)> = OnceLock::new();
    &CLUSTER
        .get_or_init(|| {
            sweep_stale_clusters();
            let dir = tempfile::Builder::new().prefix("poststelle-test-pg").tempdir().expect("temp dir");
            let pg = ManagedPostgres::start(&dir.path().join("pg"), Durability { throwaway: true })
                .expect("starting the test PostgreSQL cluster (are the PostgreSQL binaries installed?)");
            (dir, pg)
        })
        .1
}

/// Removes clusters that earlier test processes left in the temp dir: a test process never drops
/// its static cluster directory, while its `postgres` stops with it (parent-death signal) and
/// removes its pid file. A directory without a pid file that is older than a few minutes is
/// not being initialised by a concurrent test process, so it is stale.
fn sweep_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry.file_name().to_string_lossy().starts_with("poststelle-test-pg");
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(300)));
        if is_ours && old && !path.join("pg/cluster/postmaster.pid").exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A fresh, empty database in the test cluster; its URL.
pub async fn fresh_database() -> String {
    let pg = cluster();
    let name = format!("t_{}", poststelle_server::service::tokens::random_alphanumeric(12).to_lowercase());
    poststelle_server::database::ensure_database(&pg.connect_options("postgres"), &name)
        .await
        .expect("creating a test database");
    pg.url(&name)
}

/// Every row of every table of a test database as text (binary columns as hex), for checking
/// what the server stored.
pub async fn dump_database(database_url: &str) -> String {
    use sqlx::{Connection as _, Row as _};
    let mut db = sqlx::PgConnection::connect(database_url).await.expect("connecting to the test database");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(&mut db)
    .await
    .expect("listing tables");
    let mut dump = String::new();
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT t::text FROM {table} t")))
            .fetch_all(&mut db)
            .await
            .expect("reading a table");
        for row in rows {
            dump.push_str(&table);
            dump.push('\t');
            dump.push_str(&row.get::<String, _>(0));
            dump.push('\n');
        }
    }
    dump
}

/// The `poststelle` binary under test.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("POSTSTELLE_BIN") {
        return bin.into();
    }
    // target/<profile>/deps/<test binary> → target/<profile>/poststelle
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("poststelle");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p poststelle-server` (or `cargo test --workspace`) first",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback that no other server of this test process was given. Ports come
/// from a counter below the kernel's ephemeral range, each checked by binding it: asking the
/// kernel for any free port (`:0`) could hand the same port to two tests starting at once, and
/// the second test would then talk to the first one's server.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let offset = u16::try_from(std::process::id() % 100).unwrap_or(0) * 100;
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000;
        let port = 20_000 + (offset + n) % 10_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 29999 on 127.0.0.1");
}

const SHARED_SECRET: &str = "test-shared-secret";

/// Starts `poststelle serve` on a database and data directory, its output appended to `log`.
/// `ports`: the client listener's and the federation listener's.
fn spawn(data_dir: &Path, database_url: &str, ports: (u16, u16), log: &Path, env: &BTreeMap<String, String>) -> Child {
    let log = || std::fs::File::options().create(true).append(true).open(log).expect("log file");
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("POSTSTELLE_SERVER_NAME", "localhost")
        .env("POSTSTELLE_DATA_DIR", data_dir)
        .env("POSTSTELLE_DATABASE__URL", database_url)
        .env("POSTSTELLE_DATABASE__MAX_CONNECTIONS", "4")
        .env("POSTSTELLE_LISTENERS__CLIENT__ADDR", format!("127.0.0.1:{}", ports.0))
        .env("POSTSTELLE_LISTENERS__FEDERATION__ADDR", format!("127.0.0.1:{}", ports.1))
        .env("POSTSTELLE_REGISTRATION__ENABLED", "true")
        .env("POSTSTELLE_REGISTRATION__SHARED_SECRET", SHARED_SECRET)
        .env("POSTSTELLE_RATE_LIMITS__ENABLED", "false")
        // Closed federation unless a test federates: a test's server never looks up or reaches
        // another server's name (no DNS, no traffic off loopback). `federating()` opens it.
        .env("POSTSTELLE_FEDERATION__ALLOW_LIST", "no-federation.invalid")
        // Likewise no identity server (third-party invites) unless a test names one.
        .env("POSTSTELLE_IDENTITY_SERVERS__ALLOW_LIST", "no-identity-server.invalid")
        // Cheap hashes keep tests fast; the cost is configuration, not code.
        .env("POSTSTELLE_LOGIN__ARGON2_MEMORY_KIB", "256")
        .env("POSTSTELLE_LOGIN__ARGON2_ITERATIONS", "1")
        .env("POSTSTELLE_LOG", "info,poststelle_server=debug")
        .stdin(Stdio::null())
        .stdout(log())
        .stderr(log());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("spawning poststelle")
}

/// A running homeserver process.
pub struct TestServer {
    child: Child,
    pub base: String,
    /// `https://127.0.0.1:<port>` of the federation listener (self-signed certificate).
    pub federation_base: String,
    pub server_name: String,
    /// Named `127.0.0.1:<federation port>` (`ServerOptions::federating`): a restart keeps the port.
    federation_name: bool,
    /// The federation listener's port (what a proxy in front of it forwards to).
    pub federation_port: u16,
    pub shared_secret: String,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
    log: PathBuf,
    /// The database this server runs on (a restart starts the next process on it).
    pub database_url: String,
    env: BTreeMap<String, String>,
}

/// Options for a test server; `env` entries are `POSTSTELLE_*` overrides.
#[derive(Default)]
pub struct ServerOptions {
    pub env: BTreeMap<String, String>,
    /// Use this database URL instead of a fresh one (restart tests).
    pub database_url: Option<String>,
    /// Name the server `127.0.0.1:<federation port>`, as peers on loopback reach it.
    pub federation_name: bool,
    /// Name it `127.0.0.1:<this port>` instead, where the test puts something in front of the
    /// federation listener (a proxy that can cut the network).
    pub public_port: Option<u16>,
    /// The loopback address the federation listener binds and the server is named after
    /// (default 127.0.0.1): servers on different addresses can be told apart by room ACLs,
    /// which compare server names without their ports.
    pub federation_ip: Option<std::net::Ipv4Addr>,
}

impl ServerOptions {
    /// A server that federates over loopback: named `127.0.0.1:<federation port>`, private
    /// networks allowed, peer certificates not verified (see `trusting` for verification).
    pub fn federating() -> Self {
        Self { federation_name: true, ..Self::default() }
            .set("POSTSTELLE_FEDERATION__ALLOW_PRIVATE_NETWORKS", true)
            .set("POSTSTELLE_FEDERATION__VERIFY_TLS", false)
            .set("POSTSTELLE_FEDERATION__ALLOW_LIST", "")
    }

    /// A federating server that peers reach through `port` (e.g. a test's proxy).
    pub fn federating_behind(port: u16) -> Self {
        Self { public_port: Some(port), ..Self::federating() }
    }

    /// A federating server on another loopback address (e.g. 127.0.0.2).
    pub fn federating_on(ip: std::net::Ipv4Addr) -> Self {
        Self { federation_ip: Some(ip), ..Self::federating() }
    }

    /// Verify peer certificates, trusting the PEM certificate(s) in `ca_file` besides the web PKI.
    pub fn trusting(self, ca_file: &Path) -> Self {
        self.set("POSTSTELLE_FEDERATION__VERIFY_TLS", true).set("POSTSTELLE_FEDERATION__CA_FILE", ca_file.display())
    }

    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.env.insert(key.to_owned(), value.to_string());
        self
    }
}

impl TestServer {
    /// A server with registration on, a shared secret, and no rate limits.
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    pub async fn start_with(options: ServerOptions) -> Self {
        let database_url = match options.database_url {
            Some(url) => url,
            None => fresh_database().await,
        };
        let data_dir = tempfile::Builder::new().prefix("poststelle-test").tempdir().expect("temp dir");
        let (port, federation_port) = (free_port(), free_port());
        let log = data_dir.path().join("server.log");
        let mut env = options.env;
        let ip = options.federation_ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        if options.federation_ip.is_some() {
            env.insert("POSTSTELLE_LISTENERS__FEDERATION__ADDR".to_owned(), format!("{ip}:{federation_port}"));
        }
        let server_name = if options.federation_name {
            let name = format!("{ip}:{}", options.public_port.unwrap_or(federation_port));
            env.insert("POSTSTELLE_SERVER_NAME".to_owned(), name.clone());
            name
        } else {
            "localhost".to_owned()
        };
        let child = spawn(data_dir.path(), &database_url, (port, federation_port), &log, &env);
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            federation_base: format!("https://{ip}:{federation_port}"),
            server_name,
            federation_name: options.federation_name,
            federation_port,
            shared_secret: SHARED_SECRET.to_owned(),
            data_dir,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client"),
            log,
            database_url,
            env,
        };
        server.wait_healthy().await;
        server
    }

    /// Starts the server again, on the same database and data directory and a new port, once
    /// the current process has exited (after `stop()` or a `signal`; waits up to 30 s for it).
    pub async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "the server process did not exit, so it cannot restart");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let port = free_port();
        let federation_port = if self.federation_name { self.federation_port } else { free_port() };
        self.federation_port = federation_port;
        self.child = spawn(self.data_dir.path(), &self.database_url, (port, federation_port), &self.log, &self.env);
        self.base = format!("http://127.0.0.1:{port}");
        self.federation_base = format!("https://127.0.0.1:{federation_port}");
        self.wait_healthy().await;
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/health", self.base)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not become healthy; log:\n{}", self.log());
    }

    /// The federation listener's certificate (generated into `data_dir` at the first start).
    pub fn federation_cert(&self) -> PathBuf {
        self.data_dir.path().join("federation-tls.crt")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a request; returns status and JSON body (`Value::Null` if the body is not JSON).
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
        let response = req.send().await.expect("request failed");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Sends raw bytes as the body.
    pub async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base)).body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let response = req.send().await.expect("request failed");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request("POST", path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request("PUT", path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.request("DELETE", path, token, body).await
    }

    /// Registers `localpart` with open registration (dummy stage); returns the session.
    pub async fn register(&self, localpart: &str, password: &str) -> Account {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {localpart}: {body}");
        Account::from_response(&body, password)
    }

    /// Logs in with a password; returns the session.
    pub async fn login(&self, localpart: &str, password: &str) -> Account {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {localpart}: {body}");
        Account::from_response(&body, password)
    }

    /// Stops the process with SIGTERM and waits (bounded), then SIGKILL.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal by name to a process (via `kill`, so tests need no unsafe code).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Account {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
    pub password: String,
}

impl Account {
    pub fn from_response(body: &Value, password: &str) -> Self {
        Self {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            access_token: body["access_token"].as_str().expect("access_token").to_owned(),
            password: password.to_owned(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }

    /// A UIA password stage for this account.
    pub fn password_auth(&self, session: &str) -> Value {
        json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": self.password,
            "session": session,
        })
    }
}

/// Asserts a Matrix error response.
#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(result.0, status, "unexpected status, body: {}", result.1);
    assert_eq!(result.1["errcode"], errcode, "unexpected errcode, body: {}", result.1);
}
