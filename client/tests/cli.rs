//! The binary's surface that needs no server: its commands exist and a state directory without
//! a session is refused with a message, not a panic.

use std::process::Command;

fn client() -> Command {
    Command::new(env!("CARGO_BIN_EXE_poststelle-client"))
}

#[test]
fn every_command_is_documented() {
    let output = client().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for command in ["login", "create-room", "invite", "join", "send", "send-file", "listen", "members", "rooms"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn a_state_directory_without_a_session_asks_for_login() {
    let state = tempfile::TempDir::new().unwrap();
    for args in [vec!["rooms"], vec!["send", "!r:example.org", "hallo"], vec!["listen", "--once"]] {
        let output = client().arg("--state").arg(state.path()).args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("log in first"), "{args:?}");
    }
}

#[test]
fn login_to_an_unreachable_server_fails_cleanly_and_saves_nothing() {
    let state = tempfile::TempDir::new().unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let output = client()
        .arg("--state")
        .arg(state.path())
        .args(["login", "--homeserver", "http://127.0.0.1:9", "--user", "alice", "--password", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("error: HTTP"));
    assert!(!state.path().join("session.json").exists());
}
