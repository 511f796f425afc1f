//! Schema conformance: schemathesis fuzzes every operation of the vendored client-server OpenAPI
//! files (`spec-tests/openapi/`, spec v1.19) against one real server. The test fails on any 5xx,
//! any network error (a hang past the request timeout, a dropped connection) and any response
//! that does not match the schema the spec documents for its status code
//! (`not_a_server_error`, `response_schema_conformance`). `scripts/install-test-clients`
//! installs the pinned schemathesis into `.test-clients/schemathesis`.
//!
//! Each file gets its own users, room and events, so destructive operations (logout, leave,
//! ban, deactivate) in one file cannot starve the next. Known-good identifiers reach the
//! generated requests through schemathesis dictionaries: a path parameter such as `roomId`
//! takes a real value most of the time and a generated one otherwise.

use std::{path::Path, process::Command, time::Instant};

use serde_json::json;
use spec_tests::{Account, StatusCode, TestServer};

use crate::real_clients::{repo_root, require};

/// The files run, in order: the foundation (registration, login, logout, account, devices,
/// profile, account data, filters, push rules, versions, capabilities, well-known), the rooms
/// API, the end-to-end encryption keys, the media repository, search and push.
const SPECS: &[&str] = &[
    "versions",
    "wellknown",
    "capabilities",
    "registration",
    "registration_tokens",
    "login",
    "login_token",
    "refresh",
    "logout",
    "whoami",
    "password_management",
    "account_deactivation",
    "device_management",
    "profile",
    "account-data",
    "filter",
    "pushrules",
    "create_room",
    "room_send",
    "room_state",
    "rooms",
    "message_pagination",
    "event_context",
    "redaction",
    "list_joined_rooms",
    "joining",
    "inviting",
    "leaving",
    "kicking",
    "banning",
    "knocking",
    "sync",
    "typing",
    "receipts",
    "read_markers",
    "to_device",
    "directory",
    "list_public_rooms",
    "users",
    "relations",
    "threads_list",
    "room_upgrades",
    "room_summary",
    "room_event_by_timestamp",
    "keys",
    "cross_signing",
    "key_backup",
    "content-repo",
    "authed-content-repo",
    "search",
    "pusher",
    "notifications",
];

/// Generated test cases per operation (the coverage phase adds its own boundary cases).
const EXAMPLES: u32 = 15;
/// Fixed so a failure reproduces; the report prints it, and `SCHEMA_TEST_SEED` overrides it.
const SEED: &str = "20260101";
/// schemathesis processes at once (two cores: the server and PostgreSQL need the rest).
const PARALLEL: usize = 2;

/// Checks switched off for single operations, each a spec quirk rather than a server bug:
/// `(file, operation id, check)`.
const EXCLUDED_CHECKS: &[(&str, &str, &str)] = &[
    // GET /rooms/{roomId}/state/{eventType}/{stateKey}: the 200 schema is `oneOf: [any object,
    // ClientEvent]`, so the full event that `?format=event` asks for matches both branches
    // and fails `oneOf` whatever the server sends (it wants `anyOf`).
    ("rooms", "getRoomStateWithKey", "response_schema_conformance"),
];

/// What one file's run works on: two users, a public room with an alias, a threaded reply and
/// a state event, and a stored filter.
struct Fixture {
    alice: Account,
    bob: Account,
    room_id: String,
    alias: String,
    events: Vec<String>,
    filter_id: String,
    media_id: String,
}

async fn fixture(s: &TestServer, n: usize) -> Fixture {
    let alice = s.register(&format!("alice{n}"), "correct horse").await;
    let bob = s.register(&format!("bob{n}"), "battery staple").await;
    let ok = |r: (StatusCode, serde_json::Value), what: &str| {
        assert_eq!(r.0, StatusCode::OK, "{what}: {}", r.1);
        r.1
    };
    let alias_name = format!("room{n}");
    let created = ok(
        s.post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat", "name": "Schema", "room_alias_name": alias_name, "visibility": "public"}),
        )
        .await,
        "createRoom",
    );
    let room_id = created["room_id"].as_str().expect("room_id").to_owned();
    let room = format!("/_matrix/client/v3/rooms/{room_id}");
    ok(s.post(&format!("{room}/join"), bob.token(), json!({})).await, "join");
    let send = |token: Option<&str>, txn: &str, body: serde_json::Value| {
        let path = format!("{room}/send/m.room.message/{txn}");
        let token = token.map(str::to_owned);
        async move { s.put(&path, token.as_deref(), body).await }
    };
    let root = ok(send(alice.token(), "t1", json!({"msgtype": "m.text", "body": "root"})).await, "send");
    let root = root["event_id"].as_str().expect("event_id").to_owned();
    let reply =
        json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let reply = ok(send(bob.token(), "t2", reply).await, "send reply");
    let topic = ok(s.put(&format!("{room}/state/m.room.topic/"), alice.token(), json!({"topic": "t"})).await, "topic");
    let filter = ok(
        s.post(
            &format!("/_matrix/client/v3/user/{}/filter", alice.user_id),
            alice.token(),
            json!({"room": {"timeline": {"limit": 5}}}),
        )
        .await,
        "filter",
    );
    // A PNG to download and thumbnail.
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    let uploaded = s
        .http
        .post(format!("{}/_matrix/media/v3/upload?filename=red.png", s.base))
        .bearer_auth(&alice.access_token)
        .header("content-type", "image/png")
        .body(png)
        .send()
        .await
        .expect("upload");
    let uploaded: serde_json::Value = uploaded.json().await.expect("upload response");
    let media_id = uploaded["content_uri"].as_str().and_then(|u| u.rsplit('/').next()).expect("content_uri").to_owned();
    Fixture {
        media_id,
        events: [root.as_str(), reply["event_id"].as_str().unwrap(), topic["event_id"].as_str().unwrap()]
            .map(str::to_owned)
            .to_vec(),
        alias: format!("#{alias_name}:{}", s.server_name),
        filter_id: filter["filter_id"].as_str().expect("filter_id").to_owned(),
        room_id,
        alice,
        bob,
    }
}

/// The schemathesis configuration for one run: alice's token for the operations that declare
/// `accessTokenBearer`, and dictionaries of real identifiers for the path parameters.
fn config(f: &Fixture, file: &str) -> String {
    let list =
        |values: &[&str]| format!("[{}]", values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", "));
    let events: Vec<&str> = f.events.iter().map(String::as_str).collect();
    let dictionaries = [
        ("userId", "users", list(&[&f.alice.user_id, &f.bob.user_id])),
        ("roomId", "rooms", list(&[&f.room_id])),
        ("roomIdOrAlias", "room_or_alias", list(&[&f.room_id, &f.alias])),
        ("roomAlias", "aliases", list(&[&f.alias])),
        ("eventId", "events", list(&events)),
        ("filterId", "filters", list(&[&f.filter_id])),
        ("deviceId", "devices", list(&[&f.alice.device_id])),
        ("eventType", "event_types", list(&["m.room.topic", "m.room.message", "m.room.member"])),
        ("stateKey", "state_keys", list(&["", &f.alice.user_id])),
        ("keyName", "profile_keys", list(&["displayname", "avatar_url"])),
        ("relType", "rel_types", list(&["m.thread"])),
        ("serverName", "server_names", list(&["localhost"])),
        ("mediaId", "media_ids", list(&[&f.media_id])),
    ];
    let mut toml = String::from("[dictionaries]\n");
    for (_, name, values) in &dictionaries {
        toml += &format!("{name} = {{ values = {values} }}\n");
    }
    // A long-poll would only slow the run down: sync and friends mostly wait 0 ms.
    toml += "timeouts = { values = [0] }\n\n[parameters]\n";
    for (param, name, _) in &dictionaries {
        toml += &format!("\"path.{param}\" = {{ dictionary = \"{name}\", probability = 0.9 }}\n");
    }
    toml += "\"query.timeout\" = { dictionary = \"timeouts\", probability = 0.95 }\n\n";
    toml += &format!("[auth.openapi]\naccessTokenBearer = {{ bearer = {:?} }}\n\n", f.alice.access_token);
    // The strict default set also fails on what no Matrix server does (405 for TRACE, status
    // codes the spec leaves undocumented); these two are the conformance contract. Set here
    // rather than by `--checks`, which would override the per-operation exclusions.
    toml +=
        "[checks]\nenabled = false\nnot_a_server_error.enabled = true\nresponse_schema_conformance.enabled = true\n";
    for (_, operation, check) in EXCLUDED_CHECKS.iter().filter(|(f, ..)| *f == file) {
        toml += &format!("\n[[operations]]\ninclude-operation-id = {operation:?}\nchecks.{check}.enabled = false\n");
    }
    toml
}

/// The file's base path (`servers[0].variables.basePath.default`).
fn base_path(spec: &Path) -> String {
    let text = std::fs::read_to_string(spec).unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    let after = text.split_once("basePath:").unwrap_or_else(|| panic!("{}: no basePath", spec.display())).1;
    let line = after.lines().find(|l| l.trim_start().starts_with("default:")).expect("basePath default");
    line.trim_start().trim_start_matches("default:").trim().to_owned()
}

struct Outcome {
    file: &'static str,
    passed: bool,
    seconds: f64,
    report: String,
}

fn run_schemathesis(exe: &Path, file: &'static str, base_url: &str, config: String, seed: &str) -> Outcome {
    let spec = repo_root().join(format!("spec-tests/openapi/data/api/client-server/{file}.yaml"));
    let work = tempfile::tempdir().expect("temp dir");
    let config_path = work.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("writing the config");
    let url = format!("{base_url}{}", base_path(&spec));
    let mut command = Command::new(exe);
    command
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(&spec)
        .args(["--url", &url])
        .args(["--max-examples", &EXAMPLES.to_string(), "--seed", seed])
        .args(["--request-timeout", "15", "--generation-database", "none", "--no-color"])
        // Only the configured bearer token: a generated `access_token` query parameter next to
        // the header is refused as mixing both (401 M_MISSING_TOKEN, as in Synapse), which the
        // spec's UIA-shaped 401 schemas cannot describe.
        .args(["--generation-with-security-parameters", "false"]);
    let started = Instant::now();
    let output = command.output().expect("running schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Outcome { file, passed: output.status.success(), seconds: started.elapsed().as_secs_f64(), report }
}

/// The number of test cases a report says it generated (`Test cases:\n  N generated, …`).
fn generated(report: &str) -> u64 {
    report.lines().filter_map(|l| l.trim().split_once(" generated")).find_map(|(n, _)| n.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_server_openapi_conformance() {
    let exe = repo_root().join(".test-clients/schemathesis/bin/schemathesis");
    require(&exe);
    let seed = std::env::var("SCHEMA_TEST_SEED").unwrap_or_else(|_| SEED.to_owned());
    let s = TestServer::start().await;
    let started = Instant::now();

    let mut running = tokio::task::JoinSet::new();
    let mut outcomes = Vec::new();
    for (n, file) in SPECS.iter().copied().enumerate() {
        if running.len() == PARALLEL {
            outcomes.push(running.join_next().await.expect("a run").expect("schemathesis task"));
        }
        let config = config(&fixture(&s, n).await, file);
        let (exe, base, seed) = (exe.clone(), s.base.clone(), seed.clone());
        running.spawn_blocking(move || run_schemathesis(&exe, file, &base, config, &seed));
    }
    while let Some(outcome) = running.join_next().await {
        outcomes.push(outcome.expect("schemathesis task"));
    }

    let mut summary = String::new();
    let mut failures = String::new();
    for o in &outcomes {
        summary += &format!("{:<24} {:>5.1}s {}\n", o.file, o.seconds, if o.passed { "ok" } else { "FAILED" });
        // A run that tested nothing (every operation filtered out, a schema it could not
        // load) proves nothing either.
        if !o.passed || generated(&o.report) == 0 {
            failures += &format!("\n===== {} =====\n{}\n", o.file, o.report);
        }
    }
    eprintln!("schemathesis seed {seed}, {:.0}s in all:\n{summary}", started.elapsed().as_secs_f64());
    assert_eq!(outcomes.len(), SPECS.len());
    assert!(failures.is_empty(), "schema conformance failures (seed {seed}):\n{summary}{failures}");
    // The server answered throughout: a crash would have shown as network errors above, and
    // it still serves now.
    assert_eq!(s.get("/_matrix/client/versions", None).await.0, StatusCode::OK);
}
