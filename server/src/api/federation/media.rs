//! Media for other servers: `/_matrix/federation/v1/media/download/{mediaId}`.

use axum::{Router, extract::State};
use ruma::api::federation::authenticated_media::{
    Content, ContentMetadata, FileOrLocation, get_content::v1 as get_content,
};

use crate::{
    http::{
        RumaRouterExt,
        ruma::{ApiResult, Ruma},
    },
    service::media::remote::disposition,
    state::AppState,
};

pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma_route::<get_content::Request, _, _>(download)
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
