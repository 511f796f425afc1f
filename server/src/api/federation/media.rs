//! Media for other servers: `/_matrix/federation/v1/media/download/{mediaId}` and
//! `/_matrix/federation/v1/media/thumbnail/{mediaId}`.

use axum::{Router, extract::State};
use ruma::{
    api::federation::authenticated_media::{
        Content, ContentMetadata, FileOrLocation, get_content::v1 as get_content,
        get_content_thumbnail::v1 as get_thumbnail,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};

use crate::{
    http::{
        RumaRouterExt,
        ruma::{ApiResult, Ruma},
    },
    service::media::{
        remote::disposition,
        thumbnail::{Method, dimension},
    },
    state::AppState,
};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<get_content::Request, _, _>(download).ruma_route::<get_thumbnail::Request, _, _>(thumbnail)
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn download(State(state): State<AppState>, req: Ruma<get_content::Request>) -> ApiResult<get_content::Response> {
    let (file, content_type, file_name) = state.media.federated_content(&req.body.media_id).await?;
    let content = Content::new(
        file,
        content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
        disposition(file_name),
    );
    Ok(get_content::Response::new(ContentMetadata::new(), FileOrLocation::File(content)).into())
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail(
    State(state): State<AppState>,
    req: Ruma<get_thumbnail::Request>,
) -> ApiResult<get_thumbnail::Response> {
    let r = req.body;
    let (w, h, m) = (dimension(r.width)?, dimension(r.height)?, Method::from_request(r.method.as_ref())?);
    let thumb = state.media.federated_thumbnail(&r.media_id, w, h, m, r.timeout_ms).await?;
    let disposition = ContentDisposition::new(ContentDispositionType::Inline).with_filename(Some(thumb.file_name()));
    let content = Content::new(thumb.bytes, thumb.content_type, disposition);
    Ok(get_thumbnail::Response::new(ContentMetadata::new(), FileOrLocation::File(content)).into())
}
