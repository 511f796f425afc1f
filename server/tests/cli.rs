//! The binary's command line with the managed PostgreSQL: start, stop, restart with data kept,
//! no `postgres` left behind (also after SIGKILL), `user create` with and without a running
//! server, `config check`.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_poststelle");

fn command(data_dir: &Path, port: u16) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("POSTSTELLE_DATA_DIR", data_dir)
        .env("POSTSTELLE_LISTENERS__CLIENT__ADDR", format!("127.0.0.1:{port}"))
        // Port 0: the kernel picks a free one (the CLI tests do not talk federation).
        .env("POSTSTELLE_LISTENERS__FEDERATION__ADDR", "127.0.0.1:0")
        .env("POSTSTELLE_LOGIN__ARGON2_MEMORY_KIB", "256")
        .env("POSTSTELLE_LOGIN__ARGON2_ITERATIONS", "1")
        .stdin(Stdio::null());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// PIDs of `postgres` processes whose command line mentions `dir`.
fn postgres_pids(dir: &Path) -> Vec<String> {
    let out = Command::new("pgrep").args(["-f", &format!("postgres.*{}", dir.display())]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}

fn start(data_dir: &Path, port: u16) -> Child {
    let child = command(data_dir, port).arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("the server to answer /health", || {
        http_get(port, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    child
}

fn stop(child: &mut Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "serve exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("serve did not stop after SIGTERM");
}

fn run(data_dir: &Path, args: &[&str]) -> Output {
    command(data_dir, free_port()).args(args).output().unwrap()
}

#[test]
fn managed_cluster_lifecycle() {
    let tmp = tempfile::Builder::new().prefix("poststelle-cli").tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();

    // First start creates the cluster; a user created from the CLI while it runs can log in.
    let mut server = start(&data, port);
    assert!(!postgres_pids(&data).is_empty(), "the managed cluster runs");
    let out = run(&data, &["user", "create", "alice", "--password", "secret", "--admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("@alice:localhost (admin)"));
    assert!(!postgres_pids(&data).is_empty(), "the CLI did not stop the server's cluster");
    let out = run(&data, &["user", "create", "alice", "--password", "x"]);
    assert!(!out.status.success(), "a taken name is refused");

    // SIGTERM: server and cluster gone.
    stop(&mut server);
    wait_until("postgres to exit after SIGTERM", || postgres_pids(&data).is_empty());

    // With no server running, the CLI starts and stops the cluster itself.
    let out = run(&data, &["user", "create", "bob"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("password: "), "a password is generated: {stdout}");
    assert!(postgres_pids(&data).is_empty(), "the CLI stopped the cluster it started");
    assert!(run(&data, &["migrate"]).status.success());
    assert!(postgres_pids(&data).is_empty());

    // Restart: the data is kept (alice exists, so creating her again fails).
    let mut server = start(&data, port);
    let out = run(&data, &["user", "create", "alice", "--password", "x"]);
    assert!(!out.status.success());
    let out = run(&data, &["user", "create", "carol", "--password", "x"]);
    assert!(out.status.success());

    // SIGKILL: the cluster follows its parent (parent-death signal), nothing stays behind.
    server.kill().unwrap();
    server.wait().unwrap();
    wait_until("postgres to exit after SIGKILL of the server", || postgres_pids(&data).is_empty());

    // And it starts again after the crash, with everything acknowledged still there.
    let mut server = start(&data, port);
    let out = run(&data, &["user", "create", "carol", "--password", "x"]);
    assert!(!out.status.success(), "carol survived the crash");
    stop(&mut server);
    wait_until("postgres to exit", || postgres_pids(&data).is_empty());
}

#[test]
fn config_check() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("poststelle.toml");
    std::fs::write(&file, "server_name = \"example.org\"\n[registration]\nshared_secret = \"hush\"\n").unwrap();
    let out = run(tmp.path(), &["--config", file.to_str().unwrap(), "config", "check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"server_name\": \"example.org\""), "{stdout}");
    assert!(!stdout.contains("hush"), "secrets are not printed");
    assert!(stdout.contains("configuration OK"));

    std::fs::write(&file, "sever_name = \"typo\"\n").unwrap();
    let out = run(tmp.path(), &["--config", file.to_str().unwrap(), "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sever_name"));

    let out =
        command(tmp.path(), 1).env("POSTSTELLE_SERVER_NAME", "bad name!").args(["config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
