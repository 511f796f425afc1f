//! Media across servers: a user of B downloads media uploaded on A through B, which fetches it
//! once from A (`/_matrix/federation/v1/media/download`) and keeps it.

use spec_tests::{Account, ServerOptions, StatusCode, TestServer};

/// Downloads `mxc://{server}/{id}` through `s` with the authenticated client endpoint.
async fn download(s: &TestServer, who: &Account, server: &str, id: &str) -> (StatusCode, Vec<u8>, String) {
    let url = format!("{}/_matrix/client/v1/media/download/{server}/{id}", s.base);
    let r = s.http.get(url).bearer_auth(&who.access_token).send().await.expect("download");
    let status = r.status();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, r.bytes().await.expect("body").to_vec(), content_type)
}

/// Uploads `body` as `who` on `s`; the media id.
async fn upload(s: &TestServer, who: &Account, file_name: &str, content_type: &str, body: Vec<u8>) -> String {
    let uri = crate::media::upload(s, who, content_type, Some(file_name), body).await;
    uri.rsplit('/').next().expect("a media id").to_owned()
}

#[tokio::test]
async fn remote_media_is_fetched_once_and_kept() {
    let mut a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let id = upload(&a, &alice, "report.bin", "application/octet-stream", body.clone()).await;
    let server = a.server_name.clone();

    let (status, bytes, content_type) = download(&b, &bob, &server, &id).await;
    assert_eq!(status, StatusCode::OK, "{}\nB log:\n{}", String::from_utf8_lossy(&bytes), b.log());
    assert_eq!(bytes, body);
    assert_eq!(content_type, "application/octet-stream");
    let (status, _, _) = download(&b, &bob, &server, "doesnotexist").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // B kept it: with A gone, B still serves it.
    a.stop();
    let (status, bytes, _) = download(&b, &bob, &server, &id).await;
    assert_eq!((status, bytes == body), (StatusCode::OK, true));
}

/// A thumbnail of `mxc://{server}/{id}` through `s`: status, bytes, content type.
async fn thumbnail(
    s: &TestServer,
    who: &Account,
    server: &str,
    id: &str,
    query: &str,
) -> (StatusCode, Vec<u8>, String) {
    let url = format!("{}/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}", s.base);
    let r = s.http.get(url).bearer_auth(&who.access_token).send().await.expect("thumbnail");
    let status = r.status();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, r.bytes().await.expect("body").to_vec(), content_type)
}

/// Thumbnails of another server's media: B asks A's thumbnail endpoint and keeps what A made,
/// without fetching the original (with A stopped, the kept size is served, but a new size and
/// the original are not to be had). Once a client downloads the original through B, B makes new
/// sizes from its copy, with A stopped again.
#[tokio::test]
async fn remote_media_is_thumbnailed() {
    let mut a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let original = crate::media::png(400, 200);
    let id = upload(&a, &alice, "photo.png", "image/png", original.clone()).await;
    let server = a.server_name.clone();

    let (status, bytes, content_type) = thumbnail(&b, &bob, &server, &id, "width=64&height=64&method=scale").await;
    assert_eq!(status, StatusCode::OK, "{}\nB log:\n{}", String::from_utf8_lossy(&bytes), b.log());
    assert_eq!(content_type, "image/png");
    let image = image::load_from_memory(&bytes).expect("a thumbnail image");
    assert!(image.width() < 400 && image.height() < 200, "{}x{}", image.width(), image.height());
    assert_eq!(image.width(), 2 * image.height(), "scaled keeps the aspect ratio");
    // The same size again comes from B's cache.
    let (status, again, _) = thumbnail(&b, &bob, &server, &id, "width=64&height=64&method=scale").await;
    assert_eq!((status, again == bytes), (StatusCode::OK, true));
    let (status, _, _) = thumbnail(&b, &bob, &server, "doesnotexist", "width=64&height=64").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A gone: B still has the thumbnail it kept, but never had the original.
    a.stop();
    let (status, kept, _) = thumbnail(&b, &bob, &server, &id, "width=64&height=64&method=scale").await;
    assert_eq!((status, kept == bytes), (StatusCode::OK, true));
    let (status, body, _) = thumbnail(&b, &bob, &server, &id, "width=32&height=32&method=crop").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(&body));
    let (status, body, _) = download(&b, &bob, &server, &id).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "B had the original: {} bytes", body.len());

    // The original downloaded through B; then, A gone again, B thumbnails its copy itself.
    a.restart().await;
    let (status, body, _) = download(&b, &bob, &server, &id).await;
    assert_eq!((status, body == original), (StatusCode::OK, true), "{}", b.log());
    a.stop();
    let (status, bytes, _) = thumbnail(&b, &bob, &server, &id, "width=32&height=32&method=crop").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let image = image::load_from_memory(&bytes).expect("a cropped thumbnail");
    assert_eq!((image.width(), image.height()), (32, 32));
}

/// Our media's thumbnails for other servers (`/_matrix/federation/v1/media/thumbnail`, what
/// Synapse asks for): a signed request gets a multipart answer with the thumbnail image, an
/// unsigned one is refused, unknown media is 404.
#[tokio::test]
async fn our_thumbnails_are_served_to_other_servers() {
    let a = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let id = upload(&a, &alice, "photo.png", "image/png", crate::media::png(300, 300)).await;
    let origin = super::origin::Origin::start().await;

    let path = format!("/_matrix/federation/v1/media/thumbnail/{id}?width=32&height=32&method=crop");
    let (status, content_type, body) = origin.get_bytes(&a, &path).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(content_type.starts_with("multipart/mixed"), "{content_type}");
    let png_at = body.windows(4).position(|w| w == b"\x89PNG").expect("a PNG part");
    let image = image::load_from_memory(&body[png_at..]).expect("the thumbnail");
    assert_eq!((image.width(), image.height()), (32, 32));

    let (status, _, _) = origin.get_bytes(&a, "/_matrix/federation/v1/media/thumbnail/nope?width=32&height=32").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unsigned = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let r = unsigned.get(format!("{}{path}", a.federation_base)).send().await.expect("unsigned request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Thumbnails of media on a server without the federation thumbnail endpoint (the fake origin
/// answers it 404 `M_UNRECOGNIZED`): B fetches the original once through
/// `/_matrix/federation/v1/media/download` (a `multipart/mixed` answer) and thumbnails it
/// itself, in the size class asked for; another size and the original come from that copy.
#[tokio::test]
async fn thumbnails_are_made_here_when_the_media_server_has_no_thumbnail_endpoint() {
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let bob = b.register("bob", "pw-bob-123").await;
    let origin = super::origin::Origin::start().await;
    let original = crate::media::png(400, 200);
    origin.serve_media("photo", "image/png", original.clone());
    let unrecognized = serde_json::json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"});
    origin.serve_status("/_matrix/federation/v1/media/thumbnail/", 404, unrecognized);
    let asked = |prefix: &str| origin.peer.seen().iter().filter(|r| r.path.starts_with(prefix)).count();

    // 64x64 scaled is answered from the 320x240 scale class: 320x160 for a 400x200 image.
    let (status, bytes, content_type) =
        thumbnail(&b, &bob, &origin.name, "photo", "width=64&height=64&method=scale").await;
    assert_eq!(status, StatusCode::OK, "{}\nB log:\n{}", String::from_utf8_lossy(&bytes), b.log());
    assert_eq!(content_type, "image/png");
    let image = image::load_from_memory(&bytes).expect("a thumbnail image");
    assert_eq!((image.width(), image.height()), (320, 160));
    assert_eq!(asked("/_matrix/federation/v1/media/thumbnail/photo"), 1, "the thumbnail endpoint was asked");

    let (status, bytes, _) = thumbnail(&b, &bob, &origin.name, "photo", "width=32&height=32&method=crop").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let image = image::load_from_memory(&bytes).expect("a cropped thumbnail");
    assert_eq!((image.width(), image.height()), (32, 32));
    let (status, body, content_type) = download(&b, &bob, &origin.name, "photo").await;
    assert_eq!((status, body == original, content_type.as_str()), (StatusCode::OK, true, "image/png"));

    // One download of the original; the thumbnail endpoint is not asked again once B has it.
    assert_eq!(asked("/_matrix/federation/v1/media/download/photo"), 1, "{:?}", origin.peer.seen());
    assert_eq!(asked("/_matrix/federation/v1/media/thumbnail/"), 1);
}
