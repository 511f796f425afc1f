//! The media repository: uploads (`/_matrix/media/v3/upload`, `/_matrix/media/v1/create`),
//! authenticated downloads and thumbnails (`/_matrix/client/v1/media/…`), their deprecated
//! unauthenticated twins under `/_matrix/media/v3` (served only when configured), and the
//! upload limit.
//!
//! Uploads stream to disk and downloads stream from it, so these handlers take a `RumaUpload`
//! and answer with a `MediaResponse` instead of buffering whole files in ruma's `Vec<u8>`.

// The unauthenticated endpoints are deprecated by the spec, and so in ruma; they are served on
// purpose (behind `media.legacy_unauthenticated_download`).
#![allow(deprecated)]

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use ruma::{
    MilliSecondsSinceUnixEpoch, ServerName, UInt,
    api::client::{
        authenticated_media::{
            get_content::v1 as download, get_content_as_filename::v1 as download_named,
            get_content_thumbnail::v1 as thumbnail, get_media_config::v1 as config, get_media_preview::v1 as preview,
        },
        media::{
            create_content::v3 as upload, create_content_async::v3 as upload_async, create_mxc_uri::v1 as create,
            get_content::v3 as legacy_download, get_content_as_filename::v3 as legacy_download_named,
            get_content_thumbnail::v3 as legacy_thumbnail, get_media_config::v3 as legacy_config,
            get_media_preview::v3 as legacy_preview,
        },
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};
use tokio_util::io::ReaderStream;

use super::rooms::user_id;
use crate::{
    http::{
        RumaRouterExt,
        error::ApiError,
        ruma::{ApiResult, Ruma, RumaUpload},
    },
    service::{
        ServiceError,
        media::{
            Download, Thumbnail, UploadMeta,
            thumbnail::{Method, dimension},
        },
    },
    state::AppState,
};

/// The content types a browser may render inline (the spec's "serving inline content" list);
/// everything else is served as an attachment. HTML and SVG are not on it.
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Even content a browser is told to render cannot run script or load anything in our origin.
const MEDIA_CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                         style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// A download or thumbnail with the headers that make it safe to open in a browser.
#[derive(Debug)]
pub(super) struct MediaResponse {
    body: Body,
    length: u64,
    content_type: String,
    disposition: ContentDisposition,
}

impl MediaResponse {
    fn download(d: Download, file_name: Option<String>) -> Self {
        let content_type = d.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
        let inline = is_inline(&content_type);
        let disposition = ContentDisposition::new(if inline {
            ContentDispositionType::Inline
        } else {
            ContentDispositionType::Attachment
        })
        .with_filename(file_name.or(d.file_name));
        // 256 KiB reads: the default 4 KiB meant one blocking-pool hand-off per 4 KiB of file.
        let body = Body::from_stream(ReaderStream::with_capacity(d.file, 256 * 1024));
        Self { body, length: d.size, content_type, disposition }
    }

    fn thumbnail(t: Thumbnail) -> Self {
        let disposition = ContentDisposition::new(ContentDispositionType::Inline).with_filename(Some(t.file_name()));
        Self { length: t.bytes.len() as u64, body: Body::from(t.bytes), content_type: t.content_type, disposition }
    }
}

fn is_inline(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    INLINE_CONTENT_TYPES.contains(&essence.as_str())
}

impl IntoResponse for MediaResponse {
    fn into_response(self) -> Response {
        let mut response = Response::new(self.body);
        let headers = response.headers_mut();
        let content_type = HeaderValue::from_str(&self.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.length));
        if let Ok(v) = HeaderValue::from_str(&self.disposition.to_string()) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(MEDIA_CSP));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(
            header::HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        );
        *response.status_mut() = StatusCode::OK;
        response
    }
}

pub(super) fn routes(r: Router<AppState>) -> Router<AppState> {
    use ruma::api::client::{authenticated_media as authed, media as m};
    r.ruma_route::<m::create_content::v3::Request, _, _>(upload)
        .ruma_route::<m::create_mxc_uri::v1::Request, _, _>(create_mxc_uri)
        .ruma_route::<m::create_content_async::v3::Request, _, _>(upload_reserved)
        .ruma_route::<authed::get_media_config::v1::Request, _, _>(get_config)
        .ruma_route::<authed::get_content::v1::Request, _, _>(get_content)
        .ruma_route::<authed::get_content_as_filename::v1::Request, _, _>(get_content_as_filename)
        .ruma_route::<authed::get_content_thumbnail::v1::Request, _, _>(get_thumbnail)
        .ruma_route::<m::get_media_config::v3::Request, _, _>(get_legacy_config)
        .ruma_route::<m::get_content::v3::Request, _, _>(get_legacy_content)
        .ruma_route::<m::get_content_as_filename::v3::Request, _, _>(get_legacy_content_as_filename)
        .ruma_route::<m::get_content_thumbnail::v3::Request, _, _>(get_legacy_thumbnail)
        .ruma_route::<authed::get_media_preview::v1::Request, _, _>(get_preview)
        .ruma_route::<m::get_media_preview::v3::Request, _, _>(get_legacy_preview)
}

fn upload_meta(content_type: Option<String>, file_name: Option<String>) -> UploadMeta {
    UploadMeta { content_type, file_name }
}

/// # `POST /_matrix/media/v3/upload`
pub(super) async fn upload(
    State(state): State<AppState>,
    upload: RumaUpload<upload::Request>,
) -> ApiResult<upload::Response> {
    let RumaUpload { request, body, declared_length } = upload;
    let meta = upload_meta(request.body.content_type, request.body.filename);
    let stream = body.into_data_stream();
    let uri = state.media.upload(&request.identity.user_id, meta, stream, declared_length).await?;
    Ok(upload::Response::new(uri).into())
}

/// # `POST /_matrix/media/v1/create`
pub(super) async fn create_mxc_uri(
    State(state): State<AppState>,
    req: Ruma<create::Request>,
) -> ApiResult<create::Response> {
    let user = user_id(&req.identity)?;
    let (uri, expires) = state.media.create(user.as_str()).await?;
    let mut response = create::Response::new(uri);
    response.unused_expires_at =
        Some(MilliSecondsSinceUnixEpoch(UInt::try_from(expires.max(0).unsigned_abs()).unwrap_or(UInt::MAX)));
    Ok(response.into())
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub(super) async fn upload_reserved(
    State(state): State<AppState>,
    upload: RumaUpload<upload_async::Request>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let RumaUpload { request, body, declared_length } = upload;
    let r = request.body;
    let meta = upload_meta(r.content_type, r.filename);
    let stream = body.into_data_stream();
    state
        .media
        .upload_reserved(&request.identity.user_id, &r.server_name, &r.media_id, meta, stream, declared_length)
        .await?;
    // ruma's (empty, non-exhaustive) response type has no constructor for servers.
    Ok(axum::Json(serde_json::json!({})))
}

/// # `GET /_matrix/client/v1/media/config`
pub(super) async fn get_config(State(state): State<AppState>, _: Ruma<config::Request>) -> ApiResult<config::Response> {
    Ok(config::Response::new(upload_size(&state)).into())
}

/// # `GET /_matrix/media/v3/config`
pub(super) async fn get_legacy_config(
    State(state): State<AppState>,
    _: Ruma<legacy_config::Request>,
) -> ApiResult<legacy_config::Response> {
    Ok(legacy_config::Response::new(upload_size(&state)).into())
}

fn upload_size(state: &AppState) -> UInt {
    UInt::try_from(state.media.max_upload_bytes()).unwrap_or(UInt::MAX)
}

async fn serve_download(
    state: &AppState,
    server_name: &ServerName,
    media_id: &str,
    timeout: Duration,
    file_name: Option<String>,
) -> Result<MediaResponse, ApiError> {
    let download = state.media.download(server_name, media_id, timeout).await?;
    Ok(MediaResponse::download(download, file_name))
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub(super) async fn get_content(
    State(state): State<AppState>,
    req: Ruma<download::Request>,
) -> Result<MediaResponse, ApiError> {
    let r = req.body;
    serve_download(&state, &r.server_name, &r.media_id, r.timeout_ms, None).await
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub(super) async fn get_content_as_filename(
    State(state): State<AppState>,
    req: Ruma<download_named::Request>,
) -> Result<MediaResponse, ApiError> {
    let r = req.body;
    serve_download(&state, &r.server_name, &r.media_id, r.timeout_ms, Some(r.filename)).await
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub(super) async fn get_thumbnail(
    State(state): State<AppState>,
    req: Ruma<thumbnail::Request>,
) -> Result<MediaResponse, ApiError> {
    let r = req.body;
    let (w, h, m) = (dimension(r.width)?, dimension(r.height)?, Method::from_request(r.method.as_ref())?);
    let thumb = state.media.thumbnail(&r.server_name, &r.media_id, w, h, m, r.timeout_ms).await?;
    Ok(MediaResponse::thumbnail(thumb))
}

/// The deprecated unauthenticated endpoints serve nothing unless the operator opted in.
fn legacy_allowed(state: &AppState) -> Result<(), ApiError> {
    if state.config.media.legacy_unauthenticated_download {
        Ok(())
    } else {
        Err(ServiceError::NotFound("unauthenticated media is not served; use /_matrix/client/v1/media".into()).into())
    }
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated)
pub(super) async fn get_legacy_content(
    State(state): State<AppState>,
    req: Ruma<legacy_download::Request>,
) -> Result<MediaResponse, ApiError> {
    legacy_allowed(&state)?;
    let r = req.body;
    serve_download(&state, &r.server_name, &r.media_id, r.timeout_ms, None).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated)
pub(super) async fn get_legacy_content_as_filename(
    State(state): State<AppState>,
    req: Ruma<legacy_download_named::Request>,
) -> Result<MediaResponse, ApiError> {
    legacy_allowed(&state)?;
    let r = req.body;
    serve_download(&state, &r.server_name, &r.media_id, r.timeout_ms, Some(r.filename)).await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated)
pub(super) async fn get_legacy_thumbnail(
    State(state): State<AppState>,
    req: Ruma<legacy_thumbnail::Request>,
) -> Result<MediaResponse, ApiError> {
    legacy_allowed(&state)?;
    let r = req.body;
    let (w, h, m) = (dimension(r.width)?, dimension(r.height)?, Method::from_request(r.method.as_ref())?);
    let thumb = state.media.thumbnail(&r.server_name, &r.media_id, w, h, m, r.timeout_ms).await?;
    Ok(MediaResponse::thumbnail(thumb))
}

fn preview_response<T>(
    data: serde_json::Value,
    build: impl FnOnce(Box<serde_json::value::RawValue>) -> T,
) -> Result<T, ApiError> {
    let raw = serde_json::value::to_raw_value(&data).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(build(raw))
}

/// # `GET /_matrix/client/v1/media/preview_url` (only with `media.url_previews`)
pub(super) async fn get_preview(
    State(state): State<AppState>,
    req: Ruma<preview::Request>,
) -> ApiResult<preview::Response> {
    let data = state.media.preview_url(&req.body.url).await?;
    Ok(preview_response(data, preview::Response::from_raw_value)?.into())
}

/// # `GET /_matrix/media/v3/preview_url` (deprecated; only with `media.url_previews`)
pub(super) async fn get_legacy_preview(
    State(state): State<AppState>,
    req: Ruma<legacy_preview::Request>,
) -> ApiResult<legacy_preview::Response> {
    let data = state.media.preview_url(&req.body.url).await?;
    Ok(preview_response(data, legacy_preview::Response::from_raw_value)?.into())
}
