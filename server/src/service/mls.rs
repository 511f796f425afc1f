//! The MLS hub outside the room engine: the server's external-sender key, the latest GroupInfo
//! for members, and the delivery of Welcomes once their commit is accepted (DESIGN §6).
//!
//! Welcomes wait in an outbox written by the transaction that accepted their commit. The
//! dispatcher here empties it whenever the events stream moves and at start, so a Welcome is
//! never sent for a refused commit, and a crash between acceptance and delivery delays it but
//! does not lose it. Delivery is idempotent: local devices by a fixed to-device transaction id,
//! other servers by a fixed message id their side de-duplicates.

use std::sync::Arc;

use poststelle_mls::{
    codec,
    ds::ServerSigner,
    reference::{MAX_COMMIT_BYTES, MediaRef},
};
use serde_json::{Value as JsonValue, json};

use super::{MlsRefusal, ServiceError, ServiceResult, media::MediaService, rooms::mls::WELCOME_TYPE};
use crate::storage::{Storage, mls::OutboxRow, now_ms};

/// Welcomes larger than this travel through the media repository: a to-device message must fit
/// in a federation transaction's EDU (the spec's 64 KiB event limit, with room for the envelope).
const INLINE_WELCOME_MAX: usize = 48 * 1024;
/// How long fetching a referenced commit waits for an upload still in progress.
const REFERENCE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Loads the external-sender key all processes on the database share, generating it once.
pub async fn load_server_signer(storage: &Storage, server_name: &str) -> ServiceResult<Arc<ServerSigner>> {
    let candidate = ServerSigner::generate(server_name).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let stored = storage.mls.server_key(&candidate.to_bytes(), now_ms()).await?;
    let signer = ServerSigner::from_bytes(server_name, &stored).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(Arc::new(signer))
}

/// What a member gets to resynchronise with the group.
#[derive(Debug)]
pub struct GroupInfoView {
    pub algorithm: String,
    pub epoch: u64,
    pub group_info: String,
    pub proposals: Vec<String>,
}

pub struct MlsService {
    storage: Storage,
    signer: Arc<ServerSigner>,
    media: Arc<MediaService>,
    server_name: String,
}

impl std::fmt::Debug for MlsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsService").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl MlsService {
    pub fn new(storage: Storage, signer: Arc<ServerSigner>, media: Arc<MediaService>, server_name: String) -> Self {
        Self { storage, signer, media, server_name }
    }

    /// The server's external-sender key and credential, base64, for group creators.
    pub fn external_sender(&self) -> (String, String) {
        (codec::encode(self.signer.public_key()), self.signer.credential_base64())
    }

    /// The latest GroupInfo of a group this server orders, for its joined and invited members.
    pub async fn group_info(&self, user_id: &str, room_id: &str) -> ServiceResult<GroupInfoView> {
        let membership = self.storage.rooms.membership(room_id, user_id).await?;
        if !membership.is_some_and(|m| m.membership == "join" || m.membership == "invite") {
            return Err(ServiceError::Forbidden("only members of the room see its group".into()));
        }
        let row = self
            .storage
            .mls
            .group_info(room_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("this server orders no MLS group for the room".into()))?;
        Ok(GroupInfoView {
            algorithm: row.algorithm,
            epoch: u64::try_from(row.epoch).unwrap_or_default(),
            group_info: row.group_info,
            proposals: row.pending_proposals,
        })
    }

    /// Empties the Welcome outbox whenever the events stream moves (accepted commits move it)
    /// and every few seconds, for Welcomes left by a process that stopped before sending them.
    pub async fn run_welcome_dispatcher(self: Arc<Self>, mut wake: tokio::sync::watch::Receiver<u64>) {
        loop {
            if let Err(e) = self.deliver_welcomes().await {
                tracing::warn!(error = %e, "could not deliver MLS Welcomes");
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wake.changed()).await;
        }
    }

    /// Delivers every waiting Welcome; returns how many.
    pub async fn deliver_welcomes(&self) -> ServiceResult<usize> {
        let mut delivered = 0;
        loop {
            let batch = self.storage.mls.welcome_outbox(50).await?;
            if batch.is_empty() {
                return Ok(delivered);
            }
            for row in batch {
                self.deliver(&row).await?;
                self.storage.mls.welcome_delivered(&row.room_id, row.epoch).await?;
                delivered += 1;
            }
        }
    }

    async fn deliver(&self, row: &OutboxRow) -> ServiceResult<()> {
        let content = self.inline_or_by_reference(row).await?;
        let recipients: Vec<(String, String)> = serde_json::from_value(row.recipients.clone())
            .map_err(|e| ServiceError::Internal(format!("welcome recipients: {e}")))?;
        let txn_id = format!("mls-welcome {} {}", row.room_id, row.epoch);
        let suffix = format!(":{}", self.server_name);
        let (local, remote): (Vec<_>, Vec<_>) = recipients.into_iter().partition(|(user, _)| user.ends_with(&suffix));
        let mut by_server: std::collections::BTreeMap<String, serde_json::Map<String, JsonValue>> = Default::default();
        for (user, device) in remote {
            let server = user.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
            let users = by_server.entry(server).or_default();
            let devices = users.entry(user).or_insert_with(|| json!({}));
            devices[device] = content.clone();
        }
        for (server, messages) in by_server {
            let edu = json!({
                "sender": row.sender, "type": WELCOME_TYPE,
                "message_id": txn_id.replace(' ', "_"), "messages": messages,
            });
            self.storage.federation.queue_edu(&[server], "m.direct_to_device", &edu, now_ms()).await?;
        }
        let local: Vec<(String, String, JsonValue)> =
            local.into_iter().map(|(user, device)| (user, device, content.clone())).collect();
        self.storage
            .ephemeral
            .send_to_device(&row.sender, &row.sender_device, &txn_id, WELCOME_TYPE, &local, now_ms())
            .await?;
        tracing::info!(room_id = row.room_id, epoch = row.epoch, "MLS Welcome delivered");
        Ok(())
    }

    /// The to-device content: the Welcome itself, or a reference to it in the media repository
    /// when it is too large for a to-device message.
    async fn inline_or_by_reference(&self, row: &OutboxRow) -> ServiceResult<JsonValue> {
        let Some(welcome) = row.content.get("welcome").and_then(JsonValue::as_str) else {
            return Ok(row.content.clone());
        };
        let algorithm = row.content.get("algorithm").and_then(JsonValue::as_str).unwrap_or_default();
        self.welcome_content(&row.room_id, algorithm, welcome, &row.sender, row.epoch).await
    }

    /// The to-device content that carries a Welcome of the commit that started `epoch`: inline,
    /// or uploaded to the media repository (as `uploader`) and named by `welcome_url` when it
    /// is too large for a to-device message.
    pub async fn welcome_content(
        &self,
        room_id: &str,
        algorithm: &str,
        welcome: &str,
        uploader: &str,
        epoch: i64,
    ) -> ServiceResult<JsonValue> {
        if welcome.len() <= INLINE_WELCOME_MAX {
            return Ok(json!({"room_id": room_id, "algorithm": algorithm, "welcome": welcome}));
        }
        let bytes = codec::decode(welcome).ok_or_else(|| ServiceError::Internal("the Welcome is not base64".into()))?;
        let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes))]);
        let meta = super::media::UploadMeta {
            content_type: Some("message/mls".into()),
            file_name: Some(format!("welcome-{epoch}.mls")),
        };
        let mxc = self.media.upload(uploader, meta, body, None).await?;
        Ok(json!({"room_id": room_id, "algorithm": algorithm, "welcome_url": mxc.to_string()}))
    }

    /// The commit a reference names, base64: fetched from the media repository (this server's,
    /// or the uploader's server over federation) and checked against the reference's size and
    /// SHA-256 before anyone uses it.
    pub async fn fetch_commit(&self, reference: &MediaRef) -> ServiceResult<String> {
        let refused = |why: String| ServiceError::Mls(MlsRefusal::BadReference(why));
        if reference.size > MAX_COMMIT_BYTES {
            return Err(ServiceError::TooLarge(format!("commits are accepted up to {MAX_COMMIT_BYTES} bytes")));
        }
        let (server, media_id) =
            reference.server_and_id().ok_or_else(|| refused(format!("{} is not an mxc:// URI", reference.url)))?;
        let server = ruma::OwnedServerName::try_from(server).map_err(|e| refused(format!("{}: {e}", reference.url)))?;
        let download = match self.media.download(&server, media_id, REFERENCE_WAIT).await {
            Ok(download) => download,
            Err(ServiceError::NotFound(_) | ServiceError::NotYetUploaded) => {
                return Err(refused(format!("{} was not found", reference.url)));
            }
            Err(other) => return Err(other),
        };
        if download.size != reference.size {
            return Err(refused(format!(
                "{} has {} bytes, the reference says {}",
                reference.url, download.size, reference.size
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(reference.size).unwrap_or_default());
        tokio::io::AsyncReadExt::read_to_end(
            &mut tokio::io::AsyncReadExt::take(download.file, reference.size + 1),
            &mut bytes,
        )
        .await
        .map_err(|e| ServiceError::Internal(format!("reading {}: {e}", reference.url)))?;
        reference.check(&bytes).map_err(|e| refused(format!("{}: {e}", reference.url)))?;
        Ok(codec::encode(&bytes))
    }
}
