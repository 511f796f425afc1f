//! Media across servers: another server's media fetched once through its
//! `/_matrix/federation/v1/media/download` and kept under its origin; its thumbnails fetched
//! from its `/_matrix/federation/v1/media/thumbnail` and kept, without the original (made here
//! from the original only when we hold it or the server has no thumbnail endpoint); and our
//! media and its thumbnails served to other servers.

use poststelle_federation::ClientError;
use ruma::{
    ServerName, UInt,
    api::error::ErrorKind,
    api::federation::authenticated_media::{
        FileOrLocation, get_content::v1 as get_content, get_content_thumbnail::v1 as get_thumbnail,
    },
    http_headers::ContentDisposition,
};

use super::{MediaService, Thumbnail, thumbnail::Method};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::{
        StorageError,
        media::{MediaRecord, StoredContent, ThumbnailRecord},
    },
};

/// What a failed request for another server's thumbnail means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ThumbnailFailure {
    /// The server does not know the media.
    NotFound,
    /// We do not federate with the server.
    NotAllowed,
    /// The server has no thumbnail endpoint, or could not answer: try the original.
    FetchOriginal,
}

/// Classifies a failed thumbnail request by the server's status and whether its `errcode` was
/// `M_UNRECOGNIZED` (the endpoint is unknown there, whatever the status).
fn thumbnail_failure(not_allowed: bool, status: Option<u16>, unrecognized: bool) -> ThumbnailFailure {
    match (not_allowed, status, unrecognized) {
        (true, _, _) => ThumbnailFailure::NotAllowed,
        (false, _, true) => ThumbnailFailure::FetchOriginal,
        (false, Some(404), false) => ThumbnailFailure::NotFound,
        _ => ThumbnailFailure::FetchOriginal,
    }
}

/// The content type of a thumbnail, from its bytes: only the image formats we thumbnail.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    use image::ImageFormat;
    match image::guess_format(bytes).ok()? {
        format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) => {
            Some(format.to_mime_type())
        }
        _ => None,
    }
}

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

    /// Another server's thumbnail: kept from before, or fetched from that server's thumbnail
    /// endpoint and kept. `None` when we hold the original (thumbnailed here) or the server has
    /// no thumbnail endpoint (the original must be fetched).
    pub(super) async fn remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        (width, height, method): (u32, u32, Method),
    ) -> ServiceResult<Option<Thumbnail>> {
        let origin = server.as_str();
        let (tw, th) = (i32::try_from(width).unwrap_or(i32::MAX), i32::try_from(height).unwrap_or(i32::MAX));
        if let Some(record) = self.storage.media.get(origin, media_id).await? {
            if record.quarantined_by.is_some() {
                return Err(ServiceError::NotFound("media not found".into()));
            }
            if let Some(cached) = self.cached_thumbnail(origin, media_id, (tw, th, method)).await? {
                return Ok(Some(cached));
            }
            if record.sha256.is_some() {
                return Ok(None);
            }
        }
        let mut request = get_thumbnail::Request::new(media_id.to_owned(), UInt::from(width), UInt::from(height));
        request.method = Some(match method {
            Method::Crop => ruma::media::Method::Crop,
            Method::Scale => ruma::media::Method::Scale,
        });
        let answer = match self.federation.send(server, request).await {
            Ok(answer) => answer,
            Err(e) => {
                let unrecognized = matches!(e.error_kind(), Some(ErrorKind::Unrecognized));
                let not_allowed = matches!(e, ClientError::NotAllowed(_));
                return match thumbnail_failure(not_allowed, e.status().map(|s| s.as_u16()), unrecognized) {
                    ThumbnailFailure::NotFound => Err(ServiceError::NotFound("media not found".into())),
                    ThumbnailFailure::NotAllowed => {
                        Err(ServiceError::Forbidden(format!("this server does not federate with {server}")))
                    }
                    ThumbnailFailure::FetchOriginal => {
                        tracing::info!(%server, media_id, error = %e, "no thumbnail from the media's server; fetching the original");
                        Ok(None)
                    }
                };
            }
        };
        let FileOrLocation::File(content) = answer.content else {
            return Ok(None);
        };
        if u64::try_from(content.file.len()).unwrap_or(u64::MAX) > self.config.max_upload_bytes {
            return Err(ServiceError::TooLarge(format!("{server}'s thumbnail is larger than this server takes")));
        }
        let content_type = image_type(&content.file)
            .ok_or_else(|| ServiceError::Upstream(format!("{server} answered a thumbnail that is no image")))?;
        let staged = self.files.stage_bytes(&content.file).await.map_err(super::io_error)?;
        let record = ThumbnailRecord {
            width: tw,
            height: th,
            method: method.as_str().to_owned(),
            content_type: content_type.to_owned(),
            size_bytes: i64::try_from(staged.size).unwrap_or(i64::MAX),
            sha256: staged.sha256.clone(),
        };
        let mut lock = self.storage.media.lock_content(&record.sha256).await?;
        self.files.place(staged).await.map_err(super::io_error)?;
        lock.insert_thumbnails_only(origin, media_id).await?;
        lock.insert_thumbnail(origin, media_id, &record).await?;
        lock.commit().await?;
        tracing::info!(%server, media_id, width, height, "fetched a remote thumbnail");
        Ok(Some(Thumbnail { bytes: content.file, content_type: record.content_type }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_endpoint_or_a_failure_fetches_the_original() {
        assert_eq!(thumbnail_failure(false, Some(404), true), ThumbnailFailure::FetchOriginal);
        assert_eq!(thumbnail_failure(false, Some(400), true), ThumbnailFailure::FetchOriginal);
        assert_eq!(thumbnail_failure(false, Some(502), false), ThumbnailFailure::FetchOriginal);
        assert_eq!(thumbnail_failure(false, None, false), ThumbnailFailure::FetchOriginal);
        assert_eq!(thumbnail_failure(false, Some(404), false), ThumbnailFailure::NotFound);
        assert_eq!(thumbnail_failure(true, None, false), ThumbnailFailure::NotAllowed);
    }

    #[test]
    fn thumbnails_are_typed_by_their_bytes() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n0000"), Some("image/png"));
        assert_eq!(image_type(b"<html>not an image</html>"), None);
    }
}
