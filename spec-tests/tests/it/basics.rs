//! Discovery, health, metrics, and the HTTP layer's handling of bad requests.

use serde_json::json;
use spec_tests::{StatusCode, TestServer, assert_error};

#[tokio::test]
async fn discovery_endpoints() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&str> = body["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(versions.contains(&"v1.1") && versions.contains(&"v1.15"), "{versions:?}");

    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["m.homeserver"]["base_url"], s.base);

    let (status, body) = s.get("/.well-known/matrix/server", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["m.server"].as_str().unwrap().starts_with("localhost:"), "{body}");

    let alice = s.register("alice", "pw").await;
    let (status, body) = s.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ruma leaves out capabilities at their default (enabled); absent means enabled.
    assert_ne!(body["capabilities"]["m.change_password"]["enabled"], false);
    assert_eq!(body["capabilities"]["m.3pid_changes"]["enabled"], false);
    assert_eq!(body["capabilities"]["m.room_versions"]["default"], "10");
    assert_eq!(body["capabilities"]["m.room_versions"]["available"]["12"], "stable");
    assert_error(&s.get("/_matrix/client/v3/capabilities", None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn health_and_metrics() {
    let s = TestServer::start().await;
    let r = s.http.get(format!("{}/health", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.get("/_matrix/client/versions", None).await;
    s.get("/_matrix/client/v3/nonexistent", None).await;
    let r = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            r#"poststelle_http_requests_total{method="GET",endpoint="/_matrix/client/versions",status="200"}"#
        ),
        "{text}"
    );
    assert!(text.contains("poststelle_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("poststelle_db_pool_connections"), "{text}");
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let s = TestServer::start().await;
    assert_error(&s.get("/_matrix/client/v3/no/such/endpoint", None).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(&s.get("/totally/unknown", None).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(
        &s.delete("/_matrix/client/v3/login", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &s.put("/_matrix/client/versions", None, json!({})).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let s = TestServer::start().await;
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/_matrix/client/v3/login", s.base))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let methods = h["access-control-allow-methods"].to_str().unwrap().to_uppercase();
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = h["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for name in ["authorization", "content-type", "x-requested-with"] {
        assert!(headers.contains(name), "{headers}");
    }
    let r = s
        .http
        .get(format!("{}/_matrix/client/versions", s.base))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn malformed_bodies_get_matrix_errors() {
    let s = TestServer::start().await;
    assert_error(
        &s.raw("POST", "/_matrix/client/v3/login", None, b"{not json".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_error(
        &s.raw("POST", "/_matrix/client/v3/login", None, vec![0xff, 0xfe]).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_error(
        &s.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "a"}, "password": 5}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &s.post("/_matrix/client/v3/login", None, json!({"type": 5})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    assert_error(&s.post("/_matrix/client/v3/login", None, json!([1, 2])).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_error(
        &s.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "a"}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    // Schemathesis found this shape crashing Synapse's /login; here it is a clean 4xx.
    let r = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": [null, null], "password": "x"}),
        )
        .await;
    assert!(r.0.is_client_error(), "{r:?}");
    let alice = s.register("alice", "pw").await;
    assert_error(
        &s.put("/_matrix/client/v3/profile/not-a-user-id/displayname", alice.token(), json!({"displayname": "x"}))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let s =
        TestServer::start_with(spec_tests::ServerOptions::default().set("POSTSTELLE_LIMITS__MAX_REQUEST_BYTES", 4096))
            .await;
    let big = json!({"type": "m.login.password", "password": "x".repeat(10_000)});
    assert_error(&s.post("/_matrix/client/v3/login", None, big).await, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // Without a content length (chunked), the limit still holds.
    let stream = futures_stream(vec![b'a'; 20_000]);
    let r = s
        .http
        .post(format!("{}/_matrix/client/v3/login", s.base))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_stream(data: Vec<u8>) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}
