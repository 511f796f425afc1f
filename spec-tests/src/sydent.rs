//! A real Sydent (the Matrix identity server) on loopback, with aiosmtpd as the mail server it
//! sends invitation mails to. `scripts/install-test-clients` installs both, pinned, into
//! `.test-clients/sydent`.
//!
//! Sydent authenticates clients of its v2 API with OpenID tokens of their homeserver, which it
//! checks over federation (`/_matrix/federation/v1/openid/userinfo`), and reports bindings over
//! federation too (`/3pid/onbind`): so the homeserver must be named `127.0.0.1:<federation
//! port>`. As for any loopback peer, Sydent's federation client does not verify our self-signed
//! certificate and loopback is allowed. Bindings are made through Sydent's internal API (what
//! its email validation ends in), so the test needs no mailbox.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{StatusCode, free_port, signal};

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.test-clients/sydent/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/install-test-clients first", python.display());
    python
}

/// Sydent's invitation mail; Python `%` substitutions, as its legacy template setting takes.
const INVITE_TEMPLATE: &str = "Date: %(date)s\r\nFrom: %(from)s\r\nTo: %(to)s\r\nMessage-ID: %(messageid)s\r\n\
Subject: %(subject_header_value)s\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n\
%(sender_display_name)s %(bracketed_verified_sender)sinvited you to a room %(bracketed_room_name)s\r\n";

/// Running Sydent and aiosmtpd processes; both stopped on drop.
pub struct Sydent {
    sydent: Child,
    smtp: Child,
    /// `127.0.0.1:<port>`: what clients give as `id_server`.
    pub name: String,
    base: String,
    internal: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Drop for Sydent {
    fn drop(&mut self) {
        for child in [&mut self.sydent, &mut self.smtp] {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Sydent {
    /// Starts aiosmtpd and Sydent and waits (up to 60 s) until Sydent answers.
    pub async fn start() -> Self {
        let python = python();
        let dir = tempfile::Builder::new().prefix("sydent-test").tempdir().expect("temp dir");
        let (port, internal_port, smtp_port) = (free_port(), free_port(), free_port());
        let path = |name: &str| dir.path().join(name).display().to_string();
        let log = || std::fs::File::options().create(true).append(true).open(path("sydent.log")).expect("log");

        let smtp = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{smtp_port}"), "-c", "aiosmtpd.handlers.Sink"])
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log())
            .spawn()
            .expect("spawning aiosmtpd");

        std::fs::write(path("invite_template.eml"), INVITE_TEMPLATE).expect("writing the template");
        std::fs::create_dir_all(path("templates")).expect("templates dir");
        let config = format!(
            "[general]\nserver.name = 127.0.0.1:{port}\nlog.path = {log}\nlog.level = INFO\npidfile.path = {pid}\n\
             templates.path = {templates}\nip.blacklist =\nip.whitelist = 127.0.0.0/8\n\
             [db]\ndb.file = {db}\n\
             [http]\nclientapi.http.bind_address = 127.0.0.1\nclientapi.http.port = {port}\n\
             internalapi.http.bind_address = 127.0.0.1\ninternalapi.http.port = {internal_port}\n\
             client_http_base = http://127.0.0.1:{port}\nfederation.verifycerts = False\n\
             [email]\nemail.smtphost = 127.0.0.1\nemail.smtpport = {smtp_port}\nemail.hostname = localhost\n\
             email.invite_template = {template}\nemail.from = Sydent <sydent@localhost>\n",
            log = path("sydent.log"),
            pid = path("sydent.pid"),
            templates = path("templates"),
            db = path("sydent.db"),
            template = path("invite_template.eml"),
        );
        std::fs::write(path("sydent.conf"), config).expect("writing the config");
        let sydent = Command::new(&python)
            .args(["-m", "sydent.sydent"])
            .current_dir(dir.path())
            .env("SYDENT_CONF", path("sydent.conf"))
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log())
            .spawn()
            .expect("spawning Sydent");
        let sydent = Self {
            sydent,
            smtp,
            name: format!("127.0.0.1:{port}"),
            base: format!("http://127.0.0.1:{port}"),
            internal: format!("http://127.0.0.1:{internal_port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = sydent.http.get(format!("{}/_matrix/identity/v2", sydent.base)).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "Sydent did not start; log:\n{}", sydent.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sydent
    }

    /// Sydent's and aiosmtpd's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sydent.log")).unwrap_or_default()
    }

    /// An access token for Sydent's v2 API, for the holder of a homeserver's OpenID token
    /// (the answer of `/user/{userId}/openid/request_token`).
    pub async fn register(&self, openid: &Value) -> String {
        let response = self
            .http
            .post(format!("{}/_matrix/identity/v2/account/register", self.base))
            .json(openid)
            .send()
            .await
            .expect("account/register");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 200, "Sydent account/register: {body}\n{}", self.log());
        body["token"].as_str().expect("token").to_owned()
    }

    /// Binds an address to a user, as a finished email validation does; Sydent then reports
    /// the binding, with its pending invites, to the user's homeserver.
    pub async fn bind(&self, medium: &str, address: &str, mxid: &str) -> StatusCode {
        let response = self
            .http
            .post(format!("{}/_matrix/identity/internal/bind", self.internal))
            .json(&json!({"medium": medium, "address": address, "mxid": mxid}))
            .send()
            .await
            .expect("internal bind");
        StatusCode::from_u16(response.status().as_u16()).expect("status")
    }
}
