//! The media repository: uploads (at once and asynchronous), authenticated downloads with safe
//! headers, thumbnails, limits, the deprecated unauthenticated endpoints, the admin's deletion and
//! quarantine, and durability across a crash.

use std::path::Path;

use serde_json::{Value, json};
use spec_tests::{Account, ServerOptions, StatusCode, TestServer, assert_error, signal};

use crate::registration::admin_register;
use crate::rooms::server_with;

/// A response with its headers and raw body.
struct Fetched {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn fetch(s: &TestServer, path: String, token: Option<&str>) -> Fetched {
    let mut req = s.http.get(format!("{}{path}", s.base));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.expect("request");
    Fetched { status: r.status(), headers: r.headers().clone(), body: r.bytes().await.expect("body").to_vec() }
}

/// Uploads `body`; returns the mxc URI.
pub(crate) async fn upload(
    s: &TestServer,
    who: &Account,
    content_type: &str,
    file_name: Option<&str>,
    body: Vec<u8>,
) -> String {
    let (status, resp) = upload_raw(s, who, content_type, file_name, body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["content_uri"].as_str().expect("content_uri").to_owned()
}

async fn upload_raw(
    s: &TestServer,
    who: &Account,
    content_type: &str,
    file_name: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut url = format!("{}/_matrix/media/v3/upload", s.base);
    if let Some(name) = file_name {
        url = format!("{url}?filename={}", crate::rooms::enc(name));
    }
    let r = s
        .http
        .post(url)
        .bearer_auth(&who.access_token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `server/mediaId` of an mxc URI.
fn mxc_path(uri: &str) -> &str {
    uri.strip_prefix("mxc://").expect("an mxc URI")
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.filter_map(Result::ok).map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

fn content_files(s: &TestServer) -> usize {
    files_under(&s.data_dir.path().join("media/content"))
}

pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let img =
        image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).expect("png");
    out
}

/// CRC-32 (ISO-HDLC), for a hand-edited PNG chunk.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 64]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).expect("jpeg");
    out
}

/// Sytest "Can upload", "Can download", "Can download with Unicode file name locally",
/// "Can download specifying a different Unicode file name", "Can download file 'ascii'",
/// "Can fetch images in room" (as far as it is local), "GET /media/v3/config"; Complement
/// TestContentMediaV1 (authenticated downloads), TestMediaWithoutFileName, TestMediaFilenames.
#[tokio::test]
async fn upload_download_and_config() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let text = b"Bescheid vom 27.11.\n".to_vec();
    let uri = upload(&s, &alice, "text/plain", Some("bescheid.txt"), text.clone()).await;
    assert!(uri.starts_with("mxc://localhost/"), "{uri}");
    let path = mxc_path(&uri);

    // Anyone logged in can download it (knowing the URI is what grants access).
    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{path}"), bob.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, text);
    assert_eq!(got.header("content-type"), "text/plain");
    assert_eq!(got.header("content-disposition"), "inline; filename=bescheid.txt");
    assert_eq!(got.header("content-length"), text.len().to_string());
    // The file name in the path wins; a non-ASCII one is encoded (RFC 8187).
    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{path}/%C3%BCbersicht.txt"), bob.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-disposition"), "inline; filename*=utf-8''%C3%BCbersicht.txt");
    // Without a file name or content type.
    let bare = upload(&s, &alice, "", None, vec![0, 1, 2, 3]).await;
    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{}", mxc_path(&bare)), bob.token()).await;
    assert_eq!((got.status, got.body.clone()), (StatusCode::OK, vec![0, 1, 2, 3]));
    assert_eq!(got.header("content-type"), "application/octet-stream");
    assert_eq!(got.header("content-disposition"), "attachment");

    // Authenticated means authenticated.
    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{path}"), None).await;
    assert_eq!((got.status, got.json()["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_MISSING_TOKEN")));
    // The deprecated unauthenticated endpoints serve nothing by default (Synapse likewise).
    let got = fetch(&s, format!("/_matrix/media/v3/download/{path}"), None).await;
    assert_eq!((got.status, got.json()["errcode"].clone()), (StatusCode::NOT_FOUND, json!("M_NOT_FOUND")));
    let got = fetch(&s, format!("/_matrix/media/v3/thumbnail/{path}?width=32&height=32"), None).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);

    // Unknown ids, remote servers, bad server names.
    assert_error(
        &s.get("/_matrix/client/v1/media/download/localhost/doesnotexist", bob.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Test servers do not federate unless a test says so (see `ServerOptions::federating`):
    // another server's media is refused without a lookup (federation::media fetches it).
    assert_error(
        &s.get("/_matrix/client/v1/media/download/elsewhere.example/abc", bob.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, _) = s.get("/_matrix/client/v1/media/download/bad%20name/abc", bob.token()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The same content twice: two media ids, one file.
    let files = content_files(&s);
    let again = upload(&s, &bob, "text/plain", None, text.clone()).await;
    assert_ne!(again, uri);
    assert_eq!(content_files(&s), files);

    // The upload limit, both ways.
    let (status, resp) = s.get("/_matrix/client/v1/media/config", alice.token()).await;
    assert_eq!((status, resp["m.upload.size"].clone()), (StatusCode::OK, json!(50 * 1024 * 1024)), "{resp}");
    let (status, resp) = s.get("/_matrix/media/v3/config", alice.token()).await;
    assert_eq!((status, resp["m.upload.size"].clone()), (StatusCode::OK, json!(50 * 1024 * 1024)), "{resp}");
    assert_error(&s.get("/_matrix/client/v1/media/config", None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    // Uploads need a token; bad file names are refused.
    let r = s.http.post(format!("{}/_matrix/media/v3/upload", s.base)).body("x").send().await.expect("upload");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_error(
        &upload_raw(&s, &alice, "text/plain", Some("../../etc/passwd"), b"x".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

/// Complement TestMediaConfig / Sytest "Uploading too large a file is refused" (413 M_TOO_LARGE),
/// with and without a declared length; nothing of a refused upload stays on disk.
#[tokio::test]
async fn uploads_over_the_limit_are_refused() {
    let s = TestServer::start_with(ServerOptions::default().set("POSTSTELLE_MEDIA__MAX_UPLOAD_BYTES", 1000)).await;
    let alice = s.register("alice", "pw").await;
    let (status, resp) = s.get("/_matrix/client/v1/media/config", alice.token()).await;
    assert_eq!((status, resp["m.upload.size"].clone()), (StatusCode::OK, json!(1000)));

    upload(&s, &alice, "application/octet-stream", None, vec![7; 1000]).await;
    assert_error(
        &upload_raw(&s, &alice, "application/octet-stream", None, vec![7; 1001]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    // Chunked, so the server learns the size only while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![1u8; 200])).collect();
    let r = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", s.base))
        .bearer_auth(&alice.access_token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json::<Value>().await.expect("json")["errcode"], "M_TOO_LARGE");
    assert_eq!(files_under(&s.data_dir.path().join("media/tmp")), 0, "a refused upload left a temporary file");
    assert_eq!(content_files(&s), 1);
}

/// An uploaded HTML or SVG file is never served so that a browser renders it in our origin:
/// it comes as an attachment, and every download is sandboxed by CSP and not sniffed.
#[tokio::test]
async fn html_and_svg_are_never_rendered_in_our_origin() {
    let (s, [alice]) = server_with(["alice"]).await;
    let html = b"<html><body><script>alert(document.cookie)</script></body></html>".to_vec();
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
    for (content_type, name, body) in [
        ("text/html", "page.html", html.clone()),
        ("text/html; charset=utf-8", "page.htm", html.clone()),
        ("image/svg+xml", "image.svg", svg.clone()),
        ("application/xhtml+xml", "page.xhtml", html.clone()),
        ("TEXT/HTML", "PAGE.HTML", html.clone()),
    ] {
        let uri = upload(&s, &alice, content_type, Some(name), body.clone()).await;
        let got = fetch(&s, format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri)), alice.token()).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, body);
        assert!(got.header("content-disposition").starts_with("attachment"), "{content_type}: {:?}", got.headers);
        assert!(got.header("content-security-policy").starts_with("sandbox;"), "{:?}", got.headers);
        assert!(got.header("content-security-policy").contains("script-src 'none'"), "{:?}", got.headers);
        assert_eq!(got.header("x-content-type-options"), "nosniff");
    }
    // HTML declared as plain text stays plain text: inline, but neither sniffed nor scriptable.
    let uri = upload(&s, &alice, "text/plain", Some("x.txt"), html.clone()).await;
    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri)), alice.token()).await;
    assert_eq!(got.header("content-type"), "text/plain");
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert!(got.header("content-security-policy").starts_with("sandbox;"));
    // A file name cannot break out of its header parameter.
    let uri = upload(&s, &alice, "text/plain", Some("a\"; filename=evil.html"), b"x".to_vec()).await;
    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri)), alice.token()).await;
    assert_eq!(got.header("content-disposition"), r#"inline; filename="a\"; filename=evil.html""#);
    // Thumbnails of SVG are refused rather than rendered.
    let uri = upload(&s, &alice, "image/svg+xml", None, svg).await;
    let got =
        fetch(&s, format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32", mxc_path(&uri)), alice.token())
            .await;
    assert_eq!((got.status, got.json()["errcode"].clone()), (StatusCode::BAD_REQUEST, json!("M_UNKNOWN")));
}

/// Asynchronous uploads (`/media/v1/create` + `PUT`): Complement TestAsyncUpload — a download
/// waits for the content or times out with 504 M_NOT_YET_UPLOADED, only the creator may upload,
/// once (409 M_CANNOT_OVERWRITE_MEDIA), and pending reservations are limited (429).
#[tokio::test]
async fn asynchronous_upload() {
    let s = TestServer::start_with(ServerOptions::default().set("POSTSTELLE_MEDIA__MAX_PENDING_UPLOADS", 2)).await;
    let alice = s.register("alice", "pw").await;
    let bob = s.register("bob", "pw").await;
    let (status, created) = s.post("/_matrix/media/v1/create", alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let uri = created["content_uri"].as_str().expect("content_uri").to_owned();
    assert!(created["unused_expires_at"].as_i64().expect("unused_expires_at") > 0, "{created}");
    let path = mxc_path(&uri).to_owned();

    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{path}?timeout_ms=100"), bob.token()).await;
    assert_eq!((got.status, got.json()["errcode"].clone()), (StatusCode::GATEWAY_TIMEOUT, json!("M_NOT_YET_UPLOADED")));

    let put = |who: &Account, path: &str, body: &'static [u8]| {
        let req = s
            .http
            .put(format!("{}/_matrix/media/v3/upload/{path}?filename=later.txt", s.base))
            .bearer_auth(&who.access_token)
            .header("content-type", "text/plain")
            .body(body);
        async move {
            let r = req.send().await.expect("put");
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Bob may not fill Alice's reservation.
    assert_error(&put(&bob, &path, b"bob's").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A download waiting for the content gets it once Alice uploads.
    let waiting = fetch(&s, format!("/_matrix/client/v1/media/download/{path}?timeout_ms=20000"), bob.token());
    let uploading = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        put(&alice, &path, b"arrived later").await
    };
    let (got, put_result) = tokio::join!(waiting, uploading);
    assert_eq!(put_result.0, StatusCode::OK, "{}", put_result.1);
    assert_eq!((got.status, got.body.as_slice()), (StatusCode::OK, b"arrived later".as_slice()));
    assert_eq!(got.header("content-disposition"), "inline; filename=later.txt");
    // Once only.
    assert_error(&put(&alice, &path, b"again").await, StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA");
    assert_error(&put(&alice, "localhost/unknownmediaid", b"x").await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&put(&alice, "elsewhere.example/x", b"x").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Two reservations may wait; the third is refused until one is used.
    for _ in 0..2 {
        let (status, _) = s.post("/_matrix/media/v1/create", alice.token(), json!({})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let refused = s.post("/_matrix/media/v1/create", alice.token(), json!({})).await;
    assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let (status, _) = s.post("/_matrix/media/v1/create", bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "the limit is per user");
}

/// Thumbnails: Sytest "POSTed media can be thumbnailed", Complement TestMediaThumbnails — crop and
/// scale to the nearest generated size, JPEG stays JPEG, non-images and bad sizes are 400.
#[tokio::test]
async fn thumbnails() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let uri = upload(&s, &alice, "image/png", Some("wide.png"), png(400, 200)).await;
    let path = mxc_path(&uri).to_owned();
    let thumb = |query: &str| fetch(&s, format!("/_matrix/client/v1/media/thumbnail/{path}?{query}"), bob.token());

    let got = thumb("width=32&height=32&method=crop").await;
    assert_eq!(got.status, StatusCode::OK, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), "image/png");
    assert_eq!(got.header("content-disposition"), "inline; filename=thumbnail.png");
    let img = image::load_from_memory(&got.body).expect("a PNG");
    assert_eq!((img.width(), img.height()), (32, 32));
    // Scale keeps the aspect ratio within the chosen box (320×240 for 100×100).
    let got = thumb("width=100&height=100&method=scale").await;
    let img = image::load_from_memory(&got.body).expect("a PNG");
    assert_eq!((img.width(), img.height()), (320, 160));
    // Asked again: the cached one, the same bytes.
    let again = thumb("width=100&height=100&method=scale").await;
    assert_eq!(again.body, got.body);
    // JPEG in, JPEG out.
    let photo = upload(&s, &alice, "image/jpeg", None, jpeg(1000, 800)).await;
    let got =
        fetch(&s, format!("/_matrix/client/v1/media/thumbnail/{}?width=640&height=480", mxc_path(&photo)), bob.token())
            .await;
    assert_eq!((got.status, got.header("content-type")), (StatusCode::OK, "image/jpeg"));
    let img = image::load_from_memory(&got.body).expect("a JPEG");
    assert_eq!((img.width(), img.height()), (600, 480));

    // Bad input.
    assert_eq!(thumb("width=0&height=32").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(thumb("width=32&height=32&method=stretch").await.status, StatusCode::BAD_REQUEST);
    let missing = thumb("width=32").await;
    assert_eq!(
        (missing.status, missing.json()["errcode"].clone()),
        (StatusCode::BAD_REQUEST, json!("M_MISSING_PARAM"))
    );
    let text = upload(&s, &alice, "text/plain", None, b"not an image".to_vec()).await;
    let got =
        fetch(&s, format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32", mxc_path(&text)), bob.token())
            .await;
    assert_eq!((got.status, got.json()["errcode"].clone()), (StatusCode::BAD_REQUEST, json!("M_UNKNOWN")));
    // A PNG header announcing a huge image is refused before it is decoded.
    let mut bomb = png(1, 1);
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let bomb = upload(&s, &alice, "image/png", None, bomb).await;
    let got =
        fetch(&s, format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32", mxc_path(&bomb)), bob.token())
            .await;
    assert_eq!((got.status, got.json()["errcode"].clone()), (StatusCode::PAYLOAD_TOO_LARGE, json!("M_TOO_LARGE")));
}

/// Synapse's media admin API: quarantine (not served, kept) and release, a user's media listed,
/// quarantined and deleted; deletion removes the file once nothing refers to it. Not for
/// non-admins.
#[tokio::test]
async fn admin_deletes_and_quarantines_media() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let (status, resp) = admin_register(&s, "root", "rootpw", true).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let admin = Account::from_response(&resp, "rootpw");

    let one = upload(&s, &alice, "image/png", Some("one.png"), png(64, 64)).await;
    let two = upload(&s, &alice, "text/plain", Some("two.txt"), b"two".to_vec()).await;
    let shared = upload(&s, &bob, "text/plain", None, b"two".to_vec()).await;
    let download = |uri: &str| fetch(&s, format!("/_matrix/client/v1/media/download/{}", mxc_path(uri)), bob.token());
    // A thumbnail, so deletion has one to remove too.
    let got = fetch(
        &s,
        format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32&method=crop", mxc_path(&one)),
        bob.token(),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);

    let one_id = mxc_path(&one).to_owned();
    assert_error(
        &s.post(&format!("/_synapse/admin/v1/media/quarantine/{one_id}"), bob.token(), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, resp) =
        s.post(&format!("/_synapse/admin/v1/media/quarantine/{one_id}"), admin.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(download(&one).await.status, StatusCode::NOT_FOUND);
    let thumb = fetch(&s, format!("/_matrix/client/v1/media/thumbnail/{one_id}?width=32&height=32"), bob.token()).await;
    assert_eq!(thumb.status, StatusCode::NOT_FOUND);
    let (status, _) =
        s.post(&format!("/_synapse/admin/v1/media/unquarantine/{one_id}"), admin.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(download(&one).await.status, StatusCode::OK);
    assert_error(
        &s.post("/_synapse/admin/v1/media/quarantine/localhost/nosuchmedia", admin.token(), json!({})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Alice's media, listed.
    let (status, listed) = s.get(&format!("/_synapse/admin/v1/users/{}/media", alice.user_id), admin.token()).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["total"], 2, "{listed}");
    let names: Vec<&str> =
        listed["media"].as_array().expect("media").iter().filter_map(|m| m["upload_name"].as_str()).collect();
    assert_eq!(names, ["two.txt", "one.png"], "{listed}");
    let (status, page) =
        s.get(&format!("/_synapse/admin/v1/users/{}/media?limit=1", alice.user_id), admin.token()).await;
    assert_eq!(
        (status, page["next_token"].clone(), page["media"].as_array().map(Vec::len)),
        (StatusCode::OK, json!(1), Some(1))
    );

    // Deleting `one` removes its file and its thumbnail's; `two` shares content with Bob's upload.
    let files = content_files(&s);
    let (status, resp) = s.delete(&format!("/_synapse/admin/v1/media/{one_id}"), admin.token(), None).await;
    assert_eq!((status, resp["total"].clone()), (StatusCode::OK, json!(1)), "{resp}");
    assert_eq!(content_files(&s), files - 2);
    assert_eq!(download(&one).await.status, StatusCode::NOT_FOUND);
    let (status, resp) =
        s.delete(&format!("/_synapse/admin/v1/users/{}/media", alice.user_id), admin.token(), None).await;
    assert_eq!((status, resp["total"].clone()), (StatusCode::OK, json!(1)), "{resp}");
    assert_eq!(download(&two).await.status, StatusCode::NOT_FOUND);
    assert_eq!(download(&shared).await.body, b"two", "content another media id names stays");
    assert_eq!(content_files(&s), files - 2);

    // Quarantining all of a user's media.
    let (status, resp) =
        s.post(&format!("/_synapse/admin/v1/user/{}/media/quarantine", bob.user_id), admin.token(), json!({})).await;
    assert_eq!((status, resp["num_quarantined"].clone()), (StatusCode::OK, json!(1)), "{resp}");
    assert_eq!(download(&shared).await.status, StatusCode::NOT_FOUND);
    assert_error(
        &s.delete("/_synapse/admin/v1/media/elsewhere.example/x", admin.token(), None).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
}

/// An acknowledged upload survives the server being killed (content synced before the 200).
#[tokio::test]
async fn uploaded_media_survives_a_crash() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let uri = upload(&s, &alice, "application/pdf", Some("akte.pdf"), body.clone()).await;
    signal(s.pid(), "KILL");
    s.restart().await;
    let got = fetch(&s, format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri)), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, body);
    assert_eq!(got.header("content-disposition"), "attachment; filename=akte.pdf");
}

async fn preview(s: &TestServer, who: &Account, url: &str) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v1/media/preview_url?url={}", crate::rooms::enc(url));
    s.get(&path, who.token()).await
}

/// A small web site on loopback for URL previews: a page with OpenGraph tags, its image, and a
/// redirect to the page.
async fn web_site(image: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::{Router, http::header, response::Redirect, routing::get};
    let page = r#"<html><head><title>Ignored</title>
        <meta property="og:title" content="Bürgeramt &amp; Termine">
        <meta property="og:description" content="Online einen Termin buchen">
        <meta property="og:image" content="/bild.png"></head><body>…</body></html>"#;
    let app = Router::new()
        .route("/seite", get(move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) }))
        .route("/bild.png", get(move || async move { ([(header::CONTENT_TYPE, "image/png")], image.clone()) }))
        .route("/weiter", get(|| async { Redirect::temporary("/seite") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

/// URL previews are off unless enabled; enabled, they read OpenGraph tags and store the preview
/// image in the media repository; private networks only when allowed; bad URLs 400, unreachable
/// ones 502.
#[tokio::test]
async fn url_previews_only_when_enabled() {
    let image = png(40, 20);
    let (site, task) = web_site(image.clone()).await;

    let (off, [alice]) = server_with(["alice"]).await;
    assert_error(&preview(&off, &alice, &format!("{site}/seite")).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");

    let guarded = TestServer::start_with(ServerOptions::default().set("POSTSTELLE_MEDIA__URL_PREVIEWS", true)).await;
    let bob = guarded.register("bob", "pw").await;
    assert_error(&preview(&guarded, &bob, &format!("{site}/seite")).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&preview(&guarded, &bob, "http://localhost:1/").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&preview(&guarded, &bob, "ftp://example.org/x").await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    assert_error(&preview(&guarded, &bob, "not a url").await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let open = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_MEDIA__URL_PREVIEWS", true)
            .set("POSTSTELLE_MEDIA__URL_PREVIEW_ALLOW_PRIVATE_NETWORKS", true),
    )
    .await;
    let carol = open.register("carol", "pw").await;
    for url in [format!("{site}/seite"), format!("{site}/weiter")] {
        let (status, og) = preview(&open, &carol, &url).await;
        assert_eq!(status, StatusCode::OK, "{og}");
        assert_eq!(og["og:title"], "Bürgeramt & Termine", "{og}");
        assert_eq!(og["og:description"], "Online einen Termin buchen", "{og}");
        assert_eq!(og["matrix:image:size"], image.len(), "{og}");
        let mxc = og["og:image"].as_str().expect("og:image");
        let got = fetch(&open, format!("/_matrix/client/v1/media/download/{}", mxc_path(mxc)), carol.token()).await;
        assert_eq!((got.status, got.body.clone()), (StatusCode::OK, image.clone()));
    }
    // An image itself previews as its image.
    let (status, og) = preview(&open, &carol, &format!("{site}/bild.png")).await;
    assert_eq!((status, og["og:image:type"].clone()), (StatusCode::OK, json!("image/png")), "{og}");
    // Nothing listens there.
    let closed = format!("http://127.0.0.1:{}/", spec_tests::free_port());
    let (status, body) = preview(&open, &carol, &closed).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    task.abort();
}
