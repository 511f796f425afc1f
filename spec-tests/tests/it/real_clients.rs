//! Real third-party clients against a real server: matrix-nio (Python) and matrix-js-sdk
//! 37.5.0 (Node) log in, set a display name, upload and read a filter, read the default push
//! rules, round-trip account data and log out. `scripts/install-test-clients` installs them
//! into `.test-clients/`. Each client runs once (one scenario), not once per check.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use spec_tests::TestServer;

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

pub(crate) fn require(path: &Path) -> &Path {
    assert!(path.exists(), "{} is missing: run scripts/install-test-clients first", path.display());
    path
}

/// Runs a client script against a fresh server with a registered user; asserts every step.
async fn run_client(program: &Path, script: &Path, expected_steps: &[&str]) {
    let server = TestServer::start().await;
    server.register("alice", "correct horse").await;
    let url = server.base.clone();
    let (program, script) = (program.to_owned(), script.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(program)
            .arg(script)
            .args(["--url", &url, "--user", "alice", "--password", "correct horse"])
            .output()
            .expect("running the client")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed ({}):\n{stdout}\n{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    for step in expected_steps {
        assert!(stdout.lines().any(|l| l == format!("ok {step}")), "step {step:?} missing:\n{stdout}");
    }
}

#[tokio::test]
async fn matrix_nio() {
    let root = repo_root();
    let python = root.join(".test-clients/venv/bin/python");
    run_client(
        require(&python),
        &root.join("spec-tests/clients/nio_client.py"),
        &[
            "versions",
            "login",
            "whoami",
            "display name round trip",
            "filter round trip",
            "default push rules",
            "account data round trip",
            "old token refused after logout",
        ],
    )
    .await;
}

#[tokio::test]
async fn matrix_js_sdk() {
    let root = repo_root();
    require(&root.join(".test-clients/node/node_modules/matrix-js-sdk"));
    run_client(
        Path::new("node"),
        &root.join("spec-tests/clients/js/client.mjs"),
        &[
            "login",
            "whoami",
            "display name round trip",
            "filter round trip",
            "default push rules",
            "account data round trip",
            "old token refused after logout",
        ],
    )
    .await;
}
