//! One round of `/sync`: Welcomes joined, commits applied and messages decrypted in the order
//! the server delivered them, KeyPackages topped up, and the sync token saved only afterwards.

use std::path::Path;

use poststelle_mls::client::{MlsClientError, write_atomically};
use poststelle_mls::codec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Client;
use crate::sync::{self, CommitSource, SyncAction, WelcomeSource};
use crate::{ClientError, keys};

/// Messages received while the client waited for a commit, kept until the next sync hands
/// them out.
const INBOX_FILE: &str = "inbox.json";

/// A decrypted room event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub room_id: String,
    pub event_id: String,
    /// The Matrix user, as the MLS credential names it (and the event's sender agrees).
    pub sender: String,
    pub device: String,
    /// The inner event type, e.g. `m.room.message`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub content: Value,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub received: Vec<Received>,
    /// Rooms whose group this device joined from a Welcome.
    pub welcomed: Vec<String>,
    /// Rooms the user was invited to.
    pub invites: Vec<String>,
    /// Rooms whose group removed this device.
    pub removed_from: Vec<String>,
    /// What could not be processed, one line each; processing went on.
    pub problems: Vec<String>,
}

/// Appends messages to the inbox of the state directory.
pub(super) fn keep_for_later(dir: &Path, received: Vec<Received>) -> Result<(), ClientError> {
    if received.is_empty() {
        return Ok(());
    }
    let mut inbox = read_inbox(dir)?;
    inbox.extend(received);
    let bytes = serde_json::to_vec(&inbox).map_err(|e| ClientError::CorruptSession(e.to_string()))?;
    Ok(write_atomically(dir, INBOX_FILE, &bytes)?)
}

fn read_inbox(dir: &Path) -> Result<Vec<Received>, ClientError> {
    match std::fs::read(dir.join(INBOX_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ClientError::CorruptSession(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// A Welcome downloaded from the media repository: base64 text or the raw TLS bytes.
fn welcome_from_media(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes).map(str::trim) {
        Ok(text) if codec::decode(text).is_some() => text.to_owned(),
        _ => codec::encode(bytes),
    }
}

impl Client {
    /// One `/sync` (long-polling up to `timeout_ms`), fully processed.
    pub async fn sync_once(&mut self, timeout_ms: u64) -> Result<SyncReport, ClientError> {
        let response = self.server.sync(self.session.next_batch.as_deref(), timeout_ms).await?;
        let batch = sync::parse(&response).ok_or_else(|| ClientError::Protocol("sync without next_batch".into()))?;
        let mut report = SyncReport { received: read_inbox(&self.dir)?, ..SyncReport::default() };
        for action in batch.actions.iter().cloned() {
            self.apply(action, &mut report).await?;
        }
        for room_id in &batch.gaps {
            if self.mls.rooms().contains(room_id) {
                report.problems.push(format!("{room_id}: the timeline has a gap; commits in it may be missing"));
            }
        }
        if let Some(upload) = keys::top_up_after_sync(&mut self.mls, &batch)? {
            self.server.upload_keys(&upload).await?;
        }
        self.session.next_batch = Some(batch.next_batch);
        self.session.save(&self.dir)?;
        if !report.received.is_empty() {
            std::fs::remove_file(self.dir.join(INBOX_FILE)).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })?;
        }
        Ok(report)
    }

    /// Takes one step of a sync. MLS failures of one event are reported, not fatal; losing the
    /// connection to the server is.
    async fn apply(&mut self, action: SyncAction, report: &mut SyncReport) -> Result<(), ClientError> {
        match action {
            SyncAction::Welcome { room_id, welcome, .. } => {
                let welcome = match welcome {
                    WelcomeSource::Inline(welcome) => welcome,
                    WelcomeSource::Media(url) => match self.server.download(&url).await {
                        Ok(bytes) => welcome_from_media(&bytes),
                        // The server refused: retrying the sync would not help.
                        Err(refused @ ClientError::Server { .. }) => {
                            report.problems.push(format!("{room_id}: Welcome not downloadable: {refused}"));
                            return Ok(());
                        }
                        // A transport failure: fail the sync so it is repeated from the same token.
                        Err(other) => return Err(other),
                    },
                };
                match self.mls.join_from_welcome(&welcome) {
                    Ok(joined) if joined == room_id => report.welcomed.push(joined),
                    Ok(joined) => {
                        report.problems.push(format!("a Welcome announced for {room_id} was for {joined}"));
                        report.welcomed.push(joined);
                    }
                    Err(MlsClientError::RoomExists(_)) => {}
                    Err(e) => report.problems.push(format!("{room_id}: Welcome not usable: {e}")),
                }
            }
            SyncAction::Invite { room_id, .. } => report.invites.push(room_id),
            SyncAction::Commit { room_id, event_id, commit, .. } => {
                if !self.mls.rooms().contains(&room_id) {
                    return Ok(());
                }
                let ciphertext = match commit {
                    CommitSource::Inline(ciphertext) => ciphertext,
                    CommitSource::Media(reference) => match self.server.download(&reference.url).await {
                        Ok(bytes) => match reference.check(&bytes) {
                            Ok(()) => codec::encode(&bytes),
                            Err(e) => {
                                report.problems.push(format!("{room_id} {event_id}: commit not applied: {e}"));
                                return Ok(());
                            }
                        },
                        Err(refused @ ClientError::Server { .. }) => {
                            report.problems.push(format!("{room_id} {event_id}: commit not downloadable: {refused}"));
                            return Ok(());
                        }
                        Err(other) => return Err(other),
                    },
                };
                match self.mls.process_commit(&room_id, &ciphertext) {
                    Ok(outcome) if outcome.removed_self => report.removed_from.push(room_id),
                    Ok(_) => {}
                    Err(e) => report.problems.push(format!("{room_id} {event_id}: commit not applied: {e}")),
                }
            }
            SyncAction::Message { room_id, event_id, sender, ciphertext } => {
                if !self.mls.rooms().contains(&room_id) {
                    return Ok(());
                }
                match self.mls.decrypt(&room_id, &ciphertext) {
                    Ok(decrypted) if decrypted.sender.user_id != sender => report.problems.push(format!(
                        "{room_id} {event_id}: sent by {sender} but encrypted by {}; dropped",
                        decrypted.sender
                    )),
                    Ok(decrypted) => match serde_json::from_slice::<Value>(&decrypted.plaintext) {
                        Ok(Value::Object(mut event)) => report.received.push(Received {
                            room_id,
                            event_id,
                            sender,
                            device: decrypted.sender.device_id,
                            event_type: event.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
                            content: event.remove("content").unwrap_or(Value::Null),
                        }),
                        _ => report.problems.push(format!("{room_id} {event_id}: the plaintext is not an event")),
                    },
                    Err(MlsClientError::OwnMessage) => {}
                    Err(e) => report.problems.push(format!("{room_id} {event_id}: not decrypted: {e}")),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use poststelle_mls::client::MlsDevice;
    use poststelle_mls::{DeviceIdentity, Suite};
    use serde_json::json;

    use super::*;
    use crate::session::Session;

    const ROOM: &str = "!mailbox:example.org";

    /// A sync as the server would deliver it to Bob: the Welcome, then a message, a commit and
    /// messages of the commit's epoch; one of them claims a sender that did not encrypt it.
    #[tokio::test]
    async fn a_sync_is_applied_in_order() {
        let bob_dir = tempfile::TempDir::new().unwrap();
        Session {
            homeserver: "http://127.0.0.1:9".into(),
            access_token: "unused".into(),
            user_id: "@bob:example.org".into(),
            device_id: "BOB1".into(),
            next_batch: None,
        }
        .save(bob_dir.path())
        .unwrap();
        let mut bob = Client::open(bob_dir.path()).unwrap();
        let (_, bob_package) = bob.mls().key_packages(Suite::DEFAULT, 1).unwrap().remove(0);

        let alice_dir = tempfile::TempDir::new().unwrap();
        let mut alice = MlsDevice::open(alice_dir.path(), DeviceIdentity::new("@alice:example.org", "ALICE1")).unwrap();
        alice.create_group(ROOM, Suite::DEFAULT, &[]).unwrap();
        let add = alice.add_members(ROOM, &[bob_package]).unwrap();
        alice.commit_accepted(ROOM).unwrap();
        let event = |text: &str| json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": text}});
        let first = alice.encrypt(ROOM, event("eins").to_string().as_bytes()).unwrap();
        let update = alice.self_update(ROOM).unwrap();
        alice.commit_accepted(ROOM).unwrap();
        let second = alice.encrypt(ROOM, event("zwei").to_string().as_bytes()).unwrap();
        let spoofed = alice.encrypt(ROOM, event("gefälscht").to_string().as_bytes()).unwrap();

        let encrypted = |id: &str, sender: &str, ciphertext: &str| {
            json!({"type": "m.room.encrypted", "event_id": id, "sender": sender,
                   "content": {"algorithm": Suite::DEFAULT.algorithm(), "ciphertext": ciphertext}})
        };
        let response = json!({
            "next_batch": "s1",
            "rooms": {"join": {ROOM: {"timeline": {"events": [
                {"type": "m.mls.commit", "state_key": "", "event_id": "$add", "sender": "@alice:example.org",
                 "content": {"ciphertext": add.commit, "epoch": 1}},
                encrypted("$1", "@alice:example.org", &first),
                {"type": "m.mls.commit", "state_key": "", "event_id": "$update", "sender": "@alice:example.org",
                 "content": {"ciphertext": update.commit, "epoch": 2}},
                encrypted("$2", "@alice:example.org", &second),
                encrypted("$3", "@mallory:example.org", &spoofed),
            ]}}}},
            "to_device": {"events": [{"type": sync::WELCOME_EVENT, "sender": "@alice:example.org",
                "content": {"room_id": ROOM, "algorithm": Suite::DEFAULT.algorithm(), "welcome": add.welcome}}]},
        });
        let batch = sync::parse(&response).unwrap();
        let mut report = SyncReport::default();
        for action in batch.actions {
            bob.apply(action, &mut report).await.unwrap();
        }
        assert_eq!(report.welcomed, vec![ROOM.to_owned()]);
        let bodies: Vec<&Value> = report.received.iter().map(|r| &r.content["body"]).collect();
        assert_eq!(bodies, vec!["eins", "zwei"]);
        assert_eq!(report.received[0].device, "ALICE1");
        assert_eq!(report.received[0].event_type, "m.room.message");
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].contains("encrypted by @alice:example.org/ALICE1"));
        assert_eq!(bob.mls().epoch(ROOM).unwrap(), 2);
    }

    #[test]
    fn welcomes_from_media_may_be_base64_or_raw() {
        assert_eq!(welcome_from_media(b"AAEC\n"), "AAEC");
        assert_eq!(welcome_from_media(&[0, 1, 0xff]), codec::encode(&[0, 1, 0xff]));
    }

    #[test]
    fn the_inbox_keeps_messages_in_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let message = |n: u32| Received {
            room_id: "!r:x".into(),
            event_id: format!("${n}"),
            sender: "@a:x".into(),
            device: "A".into(),
            event_type: "m.room.message".into(),
            content: serde_json::json!({"body": n}),
        };
        assert!(read_inbox(dir.path()).unwrap().is_empty());
        keep_for_later(dir.path(), vec![message(1)]).unwrap();
        keep_for_later(dir.path(), vec![message(2), message(3)]).unwrap();
        assert_eq!(read_inbox(dir.path()).unwrap(), vec![message(1), message(2), message(3)]);
    }
}
