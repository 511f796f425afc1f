//! Media across servers: another server's media fetched once through its
//! `/_matrix/federation/v1/media/download` and kept under its origin (its thumbnails are made
//! here from that copy), and our media and its thumbnails served to other servers.

use ruma::{
    ServerName,
    api::federation::authenticated_media::{FileOrLocation, get_content::v1 as get_content},
    http_headers::ContentDisposition,
};

use super::{MediaService, Thumbnail, thumbnail::Method};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::{StorageError, media::MediaRecord, media::StoredContent},
};

/// Our media as another server receives it: the bytes, the content type, the file name.
pub type FederatedContent = (Vec<u8>, Option<String>, Option<String>);

impl MediaService {
    /// The record of another server's media: our copy, fetched first if we have none.
    pub(super) async fn remote_record(&self, server: &ServerName, media_id: &str) -> ServiceResult<MediaRecord> {
        if let Some(record) = self.storage.media.get(server.as_str(), media_id).await? {
            if record.quarantined_by.is_some() {
                return Err(ServiceError::NotFound("media not found".into()));
            }
            if record.sha256.is_some() {
                return Ok(record);
            }
        }
        let answer =
            self.federation.send(server, get_content::Request::new(media_id.to_owned())).await.map_err(|e| {
                match (&e, e.status().map(|s| s.as_u16())) {
                    (poststelle_federation::ClientError::NotAllowed(_), _) => {
                        ServiceError::Forbidden(format!("this server does not federate with {server}"))
                    }
                    (_, Some(404)) => ServiceError::NotFound("media not found".into()),
                    _ => ServiceError::Upstream(format!("{server}: {e}")),
                }
            })?;
        let FileOrLocation::File(content) = answer.content else {
            return Err(ServiceError::Upstream(format!("{server} redirected the download elsewhere")));
        };
        if u64::try_from(content.file.len()).unwrap_or(u64::MAX) > self.config.max_upload_bytes {
            return Err(ServiceError::TooLarge(format!("{server}'s media is larger than this server takes")));
        }
        let file_name = content.content_disposition.as_ref().and_then(|d| d.filename.clone());
        let staged = self.files.stage_bytes(&content.file).await.map_err(super::io_error)?;
        let (sha256, size) = (staged.sha256.clone(), staged.size);
        let mut lock = self.storage.media.lock_content(&sha256).await?;
        self.files.place(staged).await.map_err(super::io_error)?;
        let stored = StoredContent {
            sha256: &sha256,
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            content_type: content.content_type.as_deref(),
            file_name: file_name.as_deref(),
        };
        match lock.insert_uploaded(server.as_str(), media_id, None, stored).await {
            // Fetched by another request meanwhile: theirs stands.
            Ok(()) | Err(StorageError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        lock.commit().await?;
        tracing::info!(%server, media_id, size, "fetched remote media");
        self.storage
            .media
            .get(server.as_str(), media_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("media not found".into()))
    }

    /// `/federation/v1/media/download/{mediaId}`: our own media, whole (at most the upload
    /// limit), for another server.
    pub async fn federated_content(&self, media_id: &str) -> ServiceResult<FederatedContent> {
        let own = ServerName::parse(&self.server_name).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let record = self.servable(&own, media_id, std::time::Duration::ZERO).await?;
        let (sha256, _) = record.content().ok_or_else(|| ServiceError::NotFound("media not found".into()))?;
        let bytes = self
            .files
            .read_content(sha256)
            .await
            .map_err(super::io_error)?
            .ok_or_else(|| ServiceError::NotFound("media not found".into()))?;
        Ok((bytes, record.content_type, record.file_name))
    }

    /// `/federation/v1/media/thumbnail/{mediaId}`: a thumbnail of our own media, for another
    /// server.
    pub async fn federated_thumbnail(
        &self,
        media_id: &str,
        width: u32,
        height: u32,
        method: Method,
        timeout: std::time::Duration,
    ) -> ServiceResult<Thumbnail> {
        let own = ServerName::parse(&self.server_name).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.thumbnail(&own, media_id, width, height, method, timeout).await
    }
}

/// How a file name travels with federated media.
pub fn disposition(file_name: Option<String>) -> ContentDisposition {
    let mut d = ContentDisposition::new(ruma::http_headers::ContentDispositionType::Attachment);
    d.filename = file_name;
    d
}
