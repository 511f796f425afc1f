//! The media repository: uploads (at once, or into an id reserved by `/media/v1/create`),
//! downloads, thumbnails, and the admin's deletion and quarantine. Content is stored once per
//! SHA-256 under `data_dir/media`; what makes a served file safe in a browser is decided by the
//! HTTP layer from the `Download` it gets (content type, disposition, sandboxing headers).

pub mod content_store;
pub mod preview;
pub mod remote;
pub mod thumbnail;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::Stream;
use ruma::{OwnedMxcUri, ServerName};
use tokio::sync::Notify;

use self::{
    content_store::{ContentStore, StageError, StagedFile},
    thumbnail::{Method, ThumbnailError},
};
use super::{ServiceError, ServiceResult, tokens};
use crate::{
    config,
    storage::{
        Storage,
        media::{FillOutcome, MediaRecord, StoredContent, ThumbnailRecord},
        now_ms,
    },
};

/// Media ids are 24 random alphanumerics (~143 bits): unguessable, so knowing an mxc URI is
/// what grants access, as everywhere in Matrix.
const MEDIA_ID_LEN: usize = 24;

/// A file on its way to a client.
#[derive(Debug)]
pub struct Download {
    pub file: tokio::fs::File,
    pub size: u64,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
}

/// A thumbnail on its way to a client.
#[derive(Debug)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

impl Thumbnail {
    /// The file name it is served under.
    pub fn file_name(&self) -> String {
        let extension = if self.content_type == "image/jpeg" { "jpg" } else { "png" };
        format!("thumbnail.{extension}")
    }
}

/// An upload's declared metadata.
#[derive(Debug, Default)]
pub struct UploadMeta {
    pub content_type: Option<String>,
    pub file_name: Option<String>,
}

/// One media item as the admin API lists it.
#[derive(Debug)]
pub struct MediaInfo {
    pub media_id: String,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub size: Option<i64>,
    pub created_ts: i64,
    pub quarantined_by: Option<String>,
}

#[derive(Debug)]
pub struct MediaService {
    storage: Storage,
    files: ContentStore,
    server_name: String,
    config: config::Media,
    /// Woken when this process completes an asynchronous upload (downloads waiting for it).
    uploaded: Notify,
    /// URL previews, when the operator turned them on.
    previewer: Option<preview::Previewer>,
    /// Fetches other servers' media (their `/federation/v1/media/download`).
    federation: Arc<poststelle_federation::FederationClient>,
}

impl MediaService {
    pub fn new(
        storage: Storage,
        data_dir: &std::path::Path,
        server_name: String,
        config: config::Media,
        federation: Arc<poststelle_federation::FederationClient>,
    ) -> ServiceResult<Arc<Self>> {
        let files =
            ContentStore::open(data_dir).map_err(|e| ServiceError::Internal(format!("media directory: {e}")))?;
        if let Err(e) = files.clear_temp() {
            tracing::warn!(error = %e, "could not clear interrupted uploads");
        }
        let previewer = if config.url_previews {
            Some(preview::Previewer::new(config.url_preview_allow_private_networks)?)
        } else {
            None
        };
        Ok(Arc::new(Self { storage, files, server_name, config, uploaded: Notify::new(), previewer, federation }))
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.server_name))
    }

    async fn stage<S, E>(&self, body: S, declared_len: Option<u64>) -> ServiceResult<StagedFile>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let limit = self.config.max_upload_bytes;
        if declared_len.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        self.files.stage(body, limit).await.map_err(|e| match e {
            StageError::TooLarge(limit) => too_large(limit),
            StageError::Body(m) => ServiceError::BadJson(format!("the upload was cut off: {m}")),
            StageError::Io(e) => ServiceError::Internal(format!("media storage: {e}")),
        })
    }

    /// `POST /media/v3/upload`: stores the body under a new media id.
    pub async fn upload<S, E>(
        &self,
        user_id: &str,
        meta: UploadMeta,
        body: S,
        declared_len: Option<u64>,
    ) -> ServiceResult<OwnedMxcUri>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let meta = checked(meta)?;
        let staged = self.stage(body, declared_len).await?;
        let media_id = tokens::random_alphanumeric(MEDIA_ID_LEN);
        let (sha256, size) = (staged.sha256.clone(), staged.size);
        let mut lock = self.storage.media.lock_content(&sha256).await?;
        self.files.place(staged).await.map_err(io_error)?;
        lock.insert_uploaded(&self.server_name, &media_id, Some(user_id), stored(&sha256, size, &meta)).await?;
        lock.commit().await?;
        tracing::info!(media_id, size, user_id, "media uploaded");
        Ok(self.mxc(&media_id))
    }

    /// `POST /media/v1/create`: reserves a media id for a later upload.
    pub async fn create(&self, user_id: &str) -> ServiceResult<(OwnedMxcUri, i64)> {
        let media_id = tokens::random_alphanumeric(MEDIA_ID_LEN);
        let expires = now_ms().saturating_add(i64::try_from(self.config.unused_expiry_secs * 1000).unwrap_or(i64::MAX));
        let max_pending = i64::from(self.config.max_pending_uploads);
        if !self.storage.media.reserve(&self.server_name, &media_id, user_id, expires, max_pending).await? {
            return Err(ServiceError::RateLimited { retry_after_ms: 60_000 });
        }
        Ok((self.mxc(&media_id), expires))
    }

    /// `PUT /media/v3/upload/{serverName}/{mediaId}`: fills a reserved media id.
    pub async fn upload_reserved<S, E>(
        &self,
        user_id: &str,
        server_name: &ServerName,
        media_id: &str,
        meta: UploadMeta,
        body: S,
        declared_len: Option<u64>,
    ) -> ServiceResult<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if server_name.as_str() != self.server_name {
            return Err(ServiceError::Forbidden("media can only be uploaded to this server".into()));
        }
        let meta = checked(meta)?;
        // Refuse before reading a body that cannot be stored.
        match self.storage.media.get(&self.server_name, media_id).await? {
            None => return Err(ServiceError::NotFound("unknown media id".into())),
            Some(r) if r.sha256.is_some() => return Err(ServiceError::CannotOverwriteMedia),
            Some(r) if r.uploader.as_deref() != Some(user_id) => {
                return Err(ServiceError::Forbidden("this media id was reserved by another user".into()));
            }
            Some(r) if r.unused_expires_ts.is_some_and(|t| t <= now_ms()) => {
                return Err(ServiceError::NotFound("the media id expired".into()));
            }
            Some(_) => {}
        }
        let staged = self.stage(body, declared_len).await?;
        let (sha256, size) = (staged.sha256.clone(), staged.size);
        let mut lock = self.storage.media.lock_content(&sha256).await?;
        self.files.place(staged).await.map_err(io_error)?;
        let outcome = lock.fill_reserved(&self.server_name, media_id, user_id, stored(&sha256, size, &meta)).await?;
        match outcome {
            FillOutcome::Filled => {
                lock.commit().await?;
                self.uploaded.notify_waiters();
                Ok(())
            }
            // Raced by another upload or the expiry: the placed file stays only if something
            // else names it.
            other => {
                if !lock.is_referenced(&sha256).await? {
                    self.files.remove(&sha256).await.map_err(io_error)?;
                }
                lock.commit().await?;
                Err(match other {
                    FillOutcome::AlreadyUploaded => ServiceError::CannotOverwriteMedia,
                    FillOutcome::NotOwner => {
                        ServiceError::Forbidden("this media id was reserved by another user".into())
                    }
                    _ => ServiceError::NotFound("unknown media id".into()),
                })
            }
        }
    }

    /// The record of uploaded, servable media, waiting up to `timeout` for an asynchronous
    /// upload still pending.
    async fn servable(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> ServiceResult<MediaRecord> {
        if server_name.as_str() != self.server_name {
            return self.remote_record(server_name, media_id).await;
        }
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(120));
        loop {
            let notified = self.uploaded.notified();
            let record = self
                .storage
                .media
                .get(&self.server_name, media_id)
                .await?
                .ok_or_else(|| ServiceError::NotFound("media not found".into()))?;
            if record.quarantined_by.is_some() {
                return Err(ServiceError::NotFound("media not found".into()));
            }
            if record.sha256.is_some() {
                return Ok(record);
            }
            if record.unused_expires_ts.is_some_and(|t| t <= now_ms()) {
                return Err(ServiceError::NotFound("media not found".into()));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ServiceError::NotYetUploaded);
            }
            // Woken by an upload through this process; uploads through another are polled.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(500)), notified).await;
        }
    }

    pub async fn download(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> ServiceResult<Download> {
        let record = self.servable(server_name, media_id, timeout).await?;
        let (sha256, size) = record.content().ok_or_else(|| ServiceError::NotFound("media not found".into()))?;
        let file = self.files.open_content(sha256).await.map_err(io_error)?.ok_or_else(|| {
            tracing::error!(media_id, sha256, "media content file is missing");
            ServiceError::NotFound("media not found".into())
        })?;
        Ok(Download {
            file,
            size: u64::try_from(size).unwrap_or_default(),
            content_type: record.content_type,
            file_name: record.file_name,
        })
    }

    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        width: u32,
        height: u32,
        method: Method,
        timeout: Duration,
    ) -> ServiceResult<Thumbnail> {
        if width == 0 || height == 0 {
            return Err(ServiceError::InvalidParam("width and height must be positive".into()));
        }
        // Thumbnails are kept under the media's origin. Another server's media is thumbnailed
        // by that server when we hold no original (see `remote`); only a server without the
        // thumbnail endpoint makes us fetch the original and thumbnail it here.
        let origin = server_name.as_str();
        let (w, h, method) = thumbnail::choose(width, height, method);
        let (tw, th) = (i32::try_from(w).unwrap_or(i32::MAX), i32::try_from(h).unwrap_or(i32::MAX));
        if origin != self.server_name
            && let Some(thumbnail) = self.remote_thumbnail(server_name, media_id, (w, h, method)).await?
        {
            return Ok(thumbnail);
        }
        let record = self.servable(server_name, media_id, timeout).await?;
        if let Some(cached) = self.cached_thumbnail(origin, media_id, (tw, th, method)).await? {
            return Ok(cached);
        }
        let (sha256, size) = record.content().ok_or_else(|| ServiceError::NotFound("media not found".into()))?;
        if u64::try_from(size).unwrap_or(u64::MAX) > self.config.max_thumbnail_source_bytes {
            return Err(ServiceError::TooLarge("the content is too large to thumbnail".into()));
        }
        let source = self
            .files
            .read_content(sha256)
            .await
            .map_err(io_error)?
            .ok_or_else(|| ServiceError::NotFound("media not found".into()))?;
        let max_pixels = self.config.max_thumbnail_source_pixels;
        let rendered = tokio::task::spawn_blocking(move || thumbnail::render(&source, w, h, method, max_pixels))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| match e {
                ThumbnailError::NotAnImage => ServiceError::CannotThumbnail,
                ThumbnailError::TooLarge => ServiceError::TooLarge("the image is too large to thumbnail".into()),
            })?;
        let staged = self.files.stage_bytes(&rendered.bytes).await.map_err(io_error)?;
        let record = ThumbnailRecord {
            width: tw,
            height: th,
            method: method.as_str().to_owned(),
            content_type: rendered.content_type.to_owned(),
            size_bytes: i64::try_from(staged.size).unwrap_or(i64::MAX),
            sha256: staged.sha256.clone(),
        };
        let mut lock = self.storage.media.lock_content(&record.sha256).await?;
        self.files.place(staged).await.map_err(io_error)?;
        lock.insert_thumbnail(origin, media_id, &record).await?;
        lock.commit().await?;
        Ok(Thumbnail { bytes: rendered.bytes, content_type: record.content_type })
    }

    /// A thumbnail of this size and method made or fetched before.
    async fn cached_thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        (width, height, method): (i32, i32, Method),
    ) -> ServiceResult<Option<Thumbnail>> {
        let Some(cached) = self.storage.media.thumbnail(origin, media_id, width, height, method.as_str()).await? else {
            return Ok(None);
        };
        let bytes = self.files.read_content(&cached.sha256).await.map_err(io_error)?;
        Ok(bytes.map(|bytes| Thumbnail { bytes, content_type: cached.content_type }))
    }

    /// Deletes local media (admin): rows, thumbnails, and files nothing else names.
    pub async fn delete(&self, media_ids: &[String]) -> ServiceResult<Vec<String>> {
        let (deleted, hashes) = self.storage.media.delete(&self.server_name, media_ids).await?;
        for sha256 in hashes {
            let mut lock = self.storage.media.lock_content(&sha256).await?;
            if !lock.is_referenced(&sha256).await? {
                self.files.remove(&sha256).await.map_err(io_error)?;
            }
            lock.commit().await?;
        }
        tracing::info!(count = deleted.len(), "media deleted");
        Ok(deleted)
    }

    pub fn is_local(&self, server_name: &ServerName) -> bool {
        server_name.as_str() == self.server_name
    }

    /// Quarantines (or releases) one media id: it is no longer served. False if unknown.
    pub async fn set_quarantine(&self, media_id: &str, by: Option<&str>) -> ServiceResult<bool> {
        Ok(self.storage.media.set_quarantine(&self.server_name, media_id, by).await?)
    }

    pub async fn quarantine_user_media(&self, user_id: &str, by: &str) -> ServiceResult<u64> {
        Ok(self.storage.media.quarantine_uploader(user_id, by).await?)
    }

    /// A user's media, newest first, and how many there are in all.
    pub async fn user_media(&self, user_id: &str, from: i64, limit: i64) -> ServiceResult<(Vec<MediaInfo>, i64)> {
        let rows = self.storage.media.by_uploader(&self.server_name, user_id, limit, from).await?;
        let total = self.storage.media.count_by_uploader(&self.server_name, user_id).await?;
        let items = rows
            .into_iter()
            .map(|r| MediaInfo {
                media_id: r.media_id,
                content_type: r.content_type,
                file_name: r.file_name,
                size: r.size_bytes,
                created_ts: r.created_ts,
                quarantined_by: r.quarantined_by,
            })
            .collect();
        Ok((items, total))
    }
}

fn too_large(limit: u64) -> ServiceError {
    ServiceError::TooLarge(format!("uploads are limited to {limit} bytes"))
}

fn io_error(e: std::io::Error) -> ServiceError {
    ServiceError::Internal(format!("media storage: {e}"))
}

/// File names and content types are stored as given, within bounds that keep them headers.
fn checked(meta: UploadMeta) -> ServiceResult<UploadMeta> {
    if meta.file_name.as_ref().is_some_and(|n| n.len() > 255 || n.contains(['\0', '/', '\\'])) {
        return Err(ServiceError::InvalidParam("filename must be at most 255 bytes without '/', '\\' or NUL".into()));
    }
    if meta
        .content_type
        .as_ref()
        .is_some_and(|t| t.len() > 255 || !t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
    {
        return Err(ServiceError::InvalidParam("invalid Content-Type".into()));
    }
    Ok(UploadMeta {
        content_type: meta.content_type.filter(|t| !t.is_empty()),
        file_name: meta.file_name.filter(|n| !n.is_empty()),
    })
}

fn stored<'a>(sha256: &'a str, size: u64, meta: &'a UploadMeta) -> StoredContent<'a> {
    StoredContent {
        sha256,
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        content_type: meta.content_type.as_deref(),
        file_name: meta.file_name.as_deref(),
    }
}
