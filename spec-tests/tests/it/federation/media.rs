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

#[tokio::test]
async fn remote_media_is_fetched_once_and_kept() {
    let mut a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = a
        .http
        .post(format!("{}/_matrix/media/v3/upload?filename=report.bin", a.base))
        .bearer_auth(&alice.access_token)
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::OK);
    let uri: serde_json::Value = r.json().await.expect("json");
    let uri = uri["content_uri"].as_str().expect("content_uri").to_owned();
    let id = uri.rsplit('/').next().unwrap().to_owned();
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

/// Thumbnails of another server's media: B fetches the original from A once and thumbnails it
/// itself, keyed by the media's origin; with A stopped, B still makes new sizes from its copy.
#[tokio::test]
async fn remote_media_is_thumbnailed() {
    let mut a = TestServer::start_with(ServerOptions::federating()).await;
    let b = TestServer::start_with(ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let bob = b.register("bob", "pw-bob-123").await;
    let r = a
        .http
        .post(format!("{}/_matrix/media/v3/upload?filename=photo.png", a.base))
        .bearer_auth(&alice.access_token)
        .header("content-type", "image/png")
        .body(crate::media::png(400, 200))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::OK);
    let uri: serde_json::Value = r.json().await.expect("json");
    let id = uri["content_uri"].as_str().expect("content_uri").rsplit('/').next().unwrap().to_owned();
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

    // A gone: B thumbnails its copy of the original in another size.
    a.stop();
    let (status, bytes, _) = thumbnail(&b, &bob, &server, &id, "width=32&height=32&method=crop").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let image = image::load_from_memory(&bytes).expect("a cropped thumbnail");
    assert_eq!((image.width(), image.height()), (32, 32));
}
