//! The client: a logged-in device with its state directory, doing what the command-line tool's
//! commands do. A test or a program drives it the same way.

mod receive;

use std::path::{Path, PathBuf};

use poststelle_mls::client::{CommitBundle, MlsClientError, MlsDevice};
use poststelle_mls::reference::{self, MediaRef};
use poststelle_mls::{DeviceIdentity, Suite, codec};
use serde_json::{Value, json};

pub use receive::{Received, SyncReport};

use crate::api::{CommitAnswer, Homeserver, SendAnswer};
use crate::session::{Session, mls_dir};
use crate::{ClientError, attachment, keys};

/// How often a commit is rebuilt after losing its epoch before the client gives up.
const COMMIT_ATTEMPTS: usize = 5;
/// How often a message is encrypted again after the room's epoch moved.
const SEND_ATTEMPTS: usize = 5;
/// How many short syncs the client waits for a winning commit to arrive.
const CATCH_UP_SYNCS: usize = 10;
const CATCH_UP_TIMEOUT_MS: u64 = 2_000;

/// A logged-in device.
pub struct Client {
    dir: PathBuf,
    session: Session,
    server: Homeserver,
    mls: MlsDevice,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("user_id", &self.session.user_id)
            .field("device_id", &self.session.device_id)
            .finish()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A transaction id that is new for every request.
fn transaction_id() -> String {
    format!("mls{}{:016x}", now_secs(), rand::random::<u64>())
}

impl Client {
    /// Logs in with a password, keeps the session in `dir`, creates the device's MLS state and
    /// publishes its device keys and KeyPackages.
    pub async fn login(dir: &Path, homeserver: &str, user: &str, password: &str) -> Result<Client, ClientError> {
        let mut server = Homeserver::new(homeserver, None)?;
        let (access_token, user_id, device_id) = server.login(user, password).await?;
        let session = Session { homeserver: homeserver.to_owned(), access_token, user_id, device_id, next_batch: None };
        let mut mls = MlsDevice::open(mls_dir(dir), DeviceIdentity::new(&session.user_id, &session.device_id))?;
        let upload = keys::initial_upload(&mut mls)?;
        server.upload_keys(&upload).await?;
        session.save(dir)?;
        Ok(Client { dir: dir.to_path_buf(), session, server, mls })
    }

    /// Opens the session saved in `dir`.
    pub fn open(dir: &Path) -> Result<Client, ClientError> {
        let session = Session::load(dir)?;
        let server = Homeserver::new(&session.homeserver, Some(session.access_token.clone()))?;
        let mls = MlsDevice::open(mls_dir(dir), DeviceIdentity::new(&session.user_id, &session.device_id))?;
        Ok(Client { dir: dir.to_path_buf(), session, server, mls })
    }

    pub fn user_id(&self) -> &str {
        &self.session.user_id
    }

    pub fn device_id(&self) -> &str {
        &self.session.device_id
    }

    /// The device's MLS state, for what the client has no method for.
    pub fn mls(&mut self) -> &mut MlsDevice {
        &mut self.mls
    }

    /// The rooms whose MLS group this device holds.
    pub fn rooms(&self) -> Vec<String> {
        self.mls.rooms()
    }

    /// The devices in a room's MLS group.
    pub fn members(&self, room_id: &str) -> Result<Vec<DeviceIdentity>, ClientError> {
        Ok(self.mls.members(room_id)?)
    }

    /// Creates an MLS room with this device as its only member and initialises its group on the
    /// server (epoch 0, the server listed as external sender when it offers itself).
    pub async fn create_room(&mut self, name: Option<&str>, suite: Suite) -> Result<String, ClientError> {
        let algorithm = suite.algorithm();
        let external_sender = self.server.external_sender().await?;
        let room_id = self.server.create_room(name, &algorithm).await?;
        let group_info = self.mls.create_group(&room_id, suite, external_sender.as_slice())?;
        let body = json!({"algorithm": algorithm, "de.poststelle.group_info": group_info});
        match self.server.put_commit(&room_id, &body).await? {
            CommitAnswer::Accepted { .. } => Ok(room_id),
            other => Err(ClientError::Protocol(format!("the group's initialisation was refused: {other:?}"))),
        }
    }

    /// Adds every device of `user_id` that offers the room's suite: claims a KeyPackage of each,
    /// commits the Add and, once the server accepted it (the server then delivers the Welcome),
    /// invites the user to the room. Returns the devices added.
    pub async fn invite(&mut self, room_id: &str, user_id: &str) -> Result<Vec<String>, ClientError> {
        let algorithm = self.mls.suite(room_id)?.algorithm();
        // Invited first: servers show keys only to users who share a room (invites count), and
        // the Welcome only helps once the user may join.
        self.server.invite(room_id, user_id).await?;
        let devices = self.server.query_devices(user_id).await?;
        let offering: Vec<String> = devices
            .iter()
            .filter(|(_, keys)| {
                keys["algorithms"].as_array().is_some_and(|a| a.iter().any(|x| x == algorithm.as_str()))
            })
            .map(|(device, _)| device.clone())
            .collect();
        if offering.is_empty() {
            return Err(ClientError::Refused(format!("{user_id} has no device offering {algorithm}")));
        }
        let claimed = self.server.claim(user_id, &offering, &algorithm).await?;
        let now = now_secs();
        for (device, _, value) in &claimed {
            keys::check_claimed(user_id, device, devices.get(device), value, now)?;
        }
        if claimed.is_empty() {
            return Err(ClientError::Refused(format!("no KeyPackage of {user_id} could be claimed")));
        }
        let key_packages: Vec<String> = claimed.iter().map(|(_, _, value)| value.clone()).collect();
        let room = room_id.to_owned();
        self.commit_with_retry(room_id, move |mls| mls.add_members(&room, &key_packages)).await?;
        Ok(claimed.into_iter().map(|(device, _, _)| device).collect())
    }

    /// Removes every device of `user_id` from the room's group.
    pub async fn remove_user(&mut self, room_id: &str, user_id: &str) -> Result<String, ClientError> {
        let (room, user) = (room_id.to_owned(), user_id.to_owned());
        self.commit_with_retry(room_id, move |mls| mls.remove_user(&room, &user)).await
    }

    /// Joins a room whose Welcome has arrived (syncing once if it has not been seen yet).
    pub async fn join(&mut self, room_id: &str) -> Result<(), ClientError> {
        if !self.mls.rooms().iter().any(|r| r == room_id) {
            let report = self.sync_once(0).await?;
            receive::keep_for_later(&self.dir, report.received)?;
        }
        if !self.mls.rooms().iter().any(|r| r == room_id) {
            return Err(ClientError::Refused(format!("no Welcome for {room_id} has arrived yet")));
        }
        self.server.join(room_id).await
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, room_id: &str, text: &str) -> Result<String, ClientError> {
        self.send_message(room_id, json!({"msgtype": "m.text", "body": text})).await
    }

    /// Encrypts a file as a Matrix encrypted attachment, uploads it and sends it.
    pub async fn send_file(&mut self, room_id: &str, path: &Path) -> Result<String, ClientError> {
        let bytes = std::fs::read(path)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
        let size = bytes.len();
        let (ciphertext, mut file) = attachment::encrypt(&bytes);
        file.url = self.server.upload(ciphertext, "encrypted").await?;
        let content = json!({
            "msgtype": "m.file",
            "body": name,
            "filename": name,
            "info": {"size": size, "mimetype": "application/octet-stream"},
            "file": file,
        });
        self.send_message(room_id, content).await
    }

    /// Downloads and decrypts the attachment an `m.file`-like message content carries.
    pub async fn download_attachment(&self, content: &Value) -> Result<Vec<u8>, ClientError> {
        let file: attachment::EncryptedFile = serde_json::from_value(content["file"].clone())
            .map_err(|e| ClientError::Protocol(format!("no encrypted file in the message: {e}")))?;
        let ciphertext = self.server.download(&file.url).await?;
        Ok(attachment::decrypt(&ciphertext, &file)?)
    }

    /// Sends `m.room.message` content, encrypted for the room's current epoch; when the server
    /// says the epoch moved, applies the new commits and encrypts again.
    pub async fn send_message(&mut self, room_id: &str, content: Value) -> Result<String, ClientError> {
        let plaintext = json!({"type": "m.room.message", "content": content}).to_string();
        let algorithm = self.mls.suite(room_id)?.algorithm();
        for _ in 0..SEND_ATTEMPTS {
            let ciphertext = self.mls.encrypt(room_id, plaintext.as_bytes())?;
            let body = json!({"algorithm": algorithm, "ciphertext": ciphertext});
            match self.server.send_encrypted(room_id, &transaction_id(), &body).await? {
                SendAnswer::Sent { event_id } => return Ok(event_id),
                SendAnswer::WrongEpoch { current_epoch } => {
                    let target = current_epoch.unwrap_or(self.mls.epoch(room_id)? + 1);
                    self.catch_up(room_id, target).await?;
                }
            }
        }
        Err(ClientError::Refused(format!("the room's epoch kept moving; gave up after {SEND_ATTEMPTS} attempts")))
    }

    /// Builds a commit with `build` and submits it until the server accepts it: after a 409 the
    /// pending commit is dropped, the winner (or the server's proposals) applied, and the commit
    /// built again. Returns the commit's event id.
    pub async fn commit_with_retry(
        &mut self,
        room_id: &str,
        build: impl Fn(&mut MlsDevice) -> Result<CommitBundle, MlsClientError>,
    ) -> Result<String, ClientError> {
        let algorithm = self.mls.suite(room_id)?.algorithm();
        for _ in 0..COMMIT_ATTEMPTS {
            let bundle = build(&mut self.mls)?;
            let mut body = json!({
                "algorithm": algorithm,
                "de.poststelle.group_info": bundle.group_info,
            });
            if reference::commit_needs_reference(&bundle.commit) {
                // Too large for an event: the commit goes through the media repository.
                let bytes = codec::decode(&bundle.commit).ok_or(MlsClientError::Malformed("commit"))?;
                let url = self.server.upload(bytes.clone(), "commit.mls").await?;
                body[reference::COMMIT_REF_FIELD] = json!(MediaRef::of(&url, &bytes));
            } else {
                body["ciphertext"] = json!(bundle.commit);
            }
            if let Some(welcome) = &bundle.welcome {
                body["de.poststelle.welcome"] = json!(welcome);
            }
            let answer = match self.server.put_commit(room_id, &body).await {
                Ok(answer) => answer,
                Err(refused @ ClientError::Server { .. }) => {
                    self.mls.commit_rejected(room_id)?;
                    return Err(refused);
                }
                // The outcome is unknown: the commit stays pending until its echo or a winner arrives.
                Err(other) => return Err(other),
            };
            match answer {
                CommitAnswer::Accepted { event_id } => {
                    self.mls.commit_accepted(room_id)?;
                    return Ok(event_id);
                }
                CommitAnswer::WrongEpoch { current_epoch } => {
                    self.mls.commit_rejected(room_id)?;
                    self.catch_up(room_id, current_epoch).await?;
                }
                CommitAnswer::PendingProposals(proposals) => {
                    self.mls.commit_rejected(room_id)?;
                    if let Err(MlsClientError::WrongEpoch { message, .. }) =
                        self.mls.receive_proposals(room_id, &proposals)
                    {
                        self.catch_up(room_id, message).await?;
                        self.mls.receive_proposals(room_id, &proposals)?;
                    }
                }
            }
        }
        Err(ClientError::Refused(format!("the commit lost {COMMIT_ATTEMPTS} times; gave up")))
    }

    /// Syncs until the room's group reaches `epoch`, keeping the messages it receives meanwhile
    /// for the next [`Client::sync_once`].
    async fn catch_up(&mut self, room_id: &str, epoch: u64) -> Result<(), ClientError> {
        for _ in 0..CATCH_UP_SYNCS {
            if self.mls.epoch(room_id)? >= epoch {
                return Ok(());
            }
            let report = self.sync_once(CATCH_UP_TIMEOUT_MS).await?;
            receive::keep_for_later(&self.dir, report.received)?;
        }
        if self.mls.epoch(room_id)? >= epoch {
            return Ok(());
        }
        Err(ClientError::Refused(format!("the room's commits up to epoch {epoch} did not arrive")))
    }
}
