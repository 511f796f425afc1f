//! Login (password, login token, JWT), refresh tokens, logout, token handling, rate limits.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spec_tests::{ServerOptions, StatusCode, TestServer, assert_error};

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

fn password_login(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})
}

#[tokio::test]
async fn login_flows_and_password_logins() {
    let s = TestServer::start().await;
    let (status, flows) = s.get(LOGIN, None).await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = flows["flows"].as_array().unwrap().iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["m.login.password", "m.login.token"]);
    assert_eq!(flows["flows"][1]["get_login_token"], true);

    s.register("alice", "pw").await;
    assert_eq!(s.login("alice", "pw").await.user_id, "@alice:localhost");
    assert_eq!(s.login("@alice:localhost", "pw").await.user_id, "@alice:localhost");
    assert_eq!(s.login("@Alice:localhost", "pw").await.user_id, "@alice:localhost");
    let (status, body) =
        s.post(LOGIN, None, json!({"type": "m.login.password", "user": "alice", "password": "pw"})).await;
    assert_eq!(status, StatusCode::OK, "deprecated `user` field: {body}");

    assert_error(&s.post(LOGIN, None, password_login("alice", "wrong")).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.post(LOGIN, None, password_login("nobody", "pw")).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.post(LOGIN, None, password_login("@alice:elsewhere", "pw")).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let third_party = json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "pw"});
    assert_error(&s.post(LOGIN, None, third_party).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.post(LOGIN, None, json!({"type": "m.login.fancy"})).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    // JWT login is off unless configured.
    assert_error(
        &s.post(LOGIN, None, json!({"type": "org.matrix.login.jwt", "token": "x"})).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
}

#[tokio::test]
async fn devices_and_tokens() {
    let s = TestServer::start().await;
    s.register("bob", "pw").await;
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "pw",
        "device_id": "PHONE", "initial_device_display_name": "Bob's phone"});
    let (status, first) = s.post(LOGIN, None, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["device_id"], "PHONE");
    let old = first["access_token"].as_str().unwrap();
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(old)).await;
    let phone = devices["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == "PHONE").cloned().unwrap();
    assert_eq!(phone["display_name"], "Bob's phone");
    assert!(phone["last_seen_ts"].as_u64().unwrap() > 0);
    // Logging in again with the same device id replaces the device's token.
    let (_, second) = s.post(LOGIN, None, body).await;
    assert_eq!(second["device_id"], "PHONE");
    assert_error(&s.get(WHOAMI, Some(old)).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let new = second["access_token"].as_str().unwrap();
    assert_eq!(s.get(WHOAMI, Some(new)).await.1["device_id"], "PHONE");
    // The deprecated query parameter works too.
    let (status, who) = s.get(&format!("{WHOAMI}?access_token={new}"), None).await;
    assert_eq!((status, who["user_id"].clone()), (StatusCode::OK, json!("@bob:localhost")));
    // Missing and garbage tokens.
    assert_error(&s.get(WHOAMI, None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let garbage = s.get(WHOAMI, Some("pst_garbage")).await;
    assert_error(&garbage, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_ne!(garbage.1["soft_logout"], true, "absent means false");
}

#[tokio::test]
async fn logout_and_logout_all() {
    let s = TestServer::start().await;
    let a1 = s.register("carol", "pw").await;
    let a2 = s.login("carol", "pw").await;
    let a3 = s.login("carol", "pw").await;
    assert_eq!(s.post("/_matrix/client/v3/logout", a1.token(), json!({})).await.0, StatusCode::OK);
    assert_error(&s.get(WHOAMI, a1.token()).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let (_, devices) = s.get("/_matrix/client/v3/devices", a2.token()).await;
    let ids: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert!(!ids.contains(&a1.device_id.as_str()) && ids.len() == 2, "{ids:?}");
    assert_eq!(s.post("/_matrix/client/v3/logout/all", a2.token(), json!({})).await.0, StatusCode::OK);
    for account in [&a2, &a3] {
        assert_error(&s.get(WHOAMI, account.token()).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    }
    let a4 = s.login("carol", "pw").await;
    assert_eq!(s.get("/_matrix/client/v3/devices", a4.token()).await.1["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refresh_tokens_and_soft_logout() {
    let s =
        TestServer::start_with(ServerOptions::default().set("POSTSTELLE_LOGIN__ACCESS_TOKEN_LIFETIME_SECS", 1)).await;
    s.register("dave", "pw").await;
    let mut body = password_login("dave", "pw");
    body["refresh_token"] = json!(true);
    let (status, login) = s.post(LOGIN, None, body).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_eq!(login["expires_in_ms"], 1000);
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    // The access token expires: 401 M_UNKNOWN_TOKEN with soft_logout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let r = s.get(WHOAMI, Some(&access)).await;
        if r.0 == StatusCode::UNAUTHORIZED || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_error(&expired, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.1["soft_logout"], true);
    // Refreshing gives a new pair on the same device.
    let (status, fresh) = s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let new_refresh = fresh["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, refresh);
    let (status, who) = s.get(WHOAMI, fresh["access_token"].as_str()).await;
    assert_eq!((status, who["device_id"].clone()), (StatusCode::OK, login["device_id"].clone()));
    // Once the new pair is used, the old refresh token is gone.
    assert_error(
        &s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": "nope"})).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let (status, _) = s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": new_refresh})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn login_token_with_uia() {
    let s = TestServer::start().await;
    let erin = s.register("erin", "pw").await;
    let path = "/_matrix/client/v1/login/get_token";
    let (status, challenge) = s.post(path, erin.token(), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = challenge["session"].as_str().unwrap();
    let mut wrong = erin.password_auth(session);
    wrong["password"] = json!("wrong");
    let (status, again) = s.post(path, erin.token(), json!({"auth": wrong})).await;
    assert_eq!((status, again["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_FORBIDDEN")), "{again}");
    let (status, issued) = s.post(path, erin.token(), json!({"auth": erin.password_auth(session)})).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["expires_in_ms"], 120_000);
    let token = issued["login_token"].as_str().unwrap();
    let (status, login) = s.post(LOGIN, None, json!({"type": "m.login.token", "token": token})).await;
    assert_eq!((status, login["user_id"].clone()), (StatusCode::OK, json!("@erin:localhost")));
    assert_error(
        &s.post(LOGIN, None, json!({"type": "m.login.token", "token": token})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

fn jwt(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_login_from_an_identity_provider() {
    let s = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_LOGIN__JWT__ENABLED", "true")
            .set("POSTSTELLE_LOGIN__JWT__SECRET", "idp-secret")
            .set("POSTSTELLE_LOGIN__JWT__ISSUER", "https://idp.example")
            .set("POSTSTELLE_LOGIN__JWT__AUDIENCES", "[\"poststelle\"]"),
    )
    .await;
    let (_, flows) = s.get(LOGIN, None).await;
    assert!(flows["flows"].as_array().unwrap().iter().any(|f| f["type"] == "org.matrix.login.jwt"), "{flows}");
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |sub: &str, iss: &str, aud: &str, exp: u64| json!({"sub": sub, "iss": iss, "aud": aud, "exp": exp});
    let login = |token: String| json!({"type": "org.matrix.login.jwt", "token": token});

    let good = jwt(claims("Frank", "https://idp.example", "poststelle", now + 60), "idp-secret");
    let (status, body) = s.post(LOGIN, None, login(good.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@frank:localhost", "account created on first login");
    assert_eq!(s.post(LOGIN, None, login(good)).await.1["user_id"], "@frank:localhost");

    for bad in [
        jwt(claims("frank", "https://idp.example", "poststelle", now + 60), "other-secret"),
        jwt(claims("frank", "https://idp.example", "poststelle", now - 3600), "idp-secret"),
        jwt(claims("frank", "https://evil.example", "poststelle", now + 60), "idp-secret"),
        jwt(claims("frank", "https://idp.example", "someone-else", now + 60), "idp-secret"),
        "not.a.jwt".to_owned(),
    ] {
        assert_error(&s.post(LOGIN, None, login(bad)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let bad_name = jwt(claims("has space", "https://idp.example", "poststelle", now + 60), "idp-secret");
    assert_error(&s.post(LOGIN, None, login(bad_name)).await, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    assert_error(
        &s.post(LOGIN, None, json!({"type": "org.matrix.login.jwt"})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
}

#[tokio::test]
async fn login_rate_limits() {
    let s = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_RATE_LIMITS__ENABLED", "true")
            .set("POSTSTELLE_RATE_LIMITS__LOGIN_PER_IP", "{per_second=0.01,burst=3}")
            .set("POSTSTELLE_RATE_LIMITS__LOGIN_FAILURES_PER_ACCOUNT", "{per_second=0.01,burst=2}"),
    )
    .await;
    s.register("gina", "pw").await;
    // Two failures use up the account's failure budget; then even the right password waits.
    for _ in 0..2 {
        assert_error(&s.post(LOGIN, None, password_login("gina", "wrong")).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let limited = s.post(LOGIN, None, password_login("gina", "pw")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().unwrap() > 0, "{}", limited.1);
    // The per-IP bucket (burst 3) is used up by now, for every account.
    let limited = s.post(LOGIN, None, password_login("someone", "pw")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn identifier_types_and_non_ascii_passwords() {
    let s = TestServer::start().await;
    // Sytest/Complement "registration accepts non-ascii passwords".
    s.register("nonascii", "pässwörd 🔑").await;
    assert_eq!(s.post(LOGIN, None, password_login("nonascii", "pässwörd 🔑")).await.0, StatusCode::OK);
    assert_error(
        &s.post(LOGIN, None, password_login("nonascii", "passwort")).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // A phone number is a known identifier type that names no account here (as Synapse: 403).
    let phone = json!({"type": "m.login.password", "identifier": {"type": "m.id.phone", "country": "DE", "phone": "301234567"}, "password": "pw"});
    assert_error(&s.post(LOGIN, None, phone).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // An identifier type nobody knows is a bad request (as Synapse: 400 M_UNKNOWN).
    let odd = json!({"type": "m.login.password", "identifier": {"type": "org.example.id", "who": "nonascii"}, "password": "pässwörd 🔑"});
    assert_error(&s.post(LOGIN, None, odd).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    // Neither `identifier` nor the deprecated `user`.
    let nobody = json!({"type": "m.login.password", "password": "pw"});
    assert_error(&s.post(LOGIN, None, nobody).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    // The deprecated `user` field with a full user id, and an unknown user through it.
    let legacy = json!({"type": "m.login.password", "user": "@nonascii:localhost", "password": "pässwörd 🔑"});
    assert_eq!(s.post(LOGIN, None, legacy).await.1["user_id"], "@nonascii:localhost");
    let legacy = json!({"type": "m.login.password", "user": "nobody", "password": "pw"});
    assert_error(&s.post(LOGIN, None, legacy).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A login token that was never issued.
    let r = s.post(LOGIN, None, json!({"type": "m.login.token", "token": "pstl_never_issued"})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn jwt_claims_the_configuration_requires() {
    let s = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_LOGIN__JWT__ENABLED", "true")
            .set("POSTSTELLE_LOGIN__JWT__SECRET", "idp-secret")
            .set("POSTSTELLE_LOGIN__JWT__ISSUER", "https://idp.example")
            .set("POSTSTELLE_LOGIN__JWT__AUDIENCES", "[\"poststelle\", \"other-app\"]"),
    )
    .await;
    let exp = jsonwebtoken::get_current_timestamp() + 60;
    let login = |token: String| json!({"type": "org.matrix.login.jwt", "token": token});
    // Any configured audience will do.
    let good = jwt(json!({"sub": "ida", "iss": "https://idp.example", "aud": "other-app", "exp": exp}), "idp-secret");
    assert_eq!(s.post(LOGIN, None, login(good)).await.1["user_id"], "@ida:localhost");
    // A configured issuer or audience makes the claim required (as Synapse's essential claims).
    let refused = [
        json!({"sub": "mallory", "aud": "poststelle", "exp": exp}),
        json!({"sub": "mallory", "iss": "https://idp.example", "exp": exp}),
        json!({"iss": "https://idp.example", "aud": "poststelle", "exp": exp}),
        json!({"sub": "", "iss": "https://idp.example", "aud": "poststelle", "exp": exp}),
    ];
    for claims in refused {
        let r = s.post(LOGIN, None, login(jwt(claims.clone(), "idp-secret"))).await;
        assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // Another algorithm than the configured one, even with the right secret.
    let claims = json!({"sub": "mallory", "iss": "https://idp.example", "aud": "poststelle", "exp": exp});
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"idp-secret"),
    )
    .unwrap();
    assert_error(&s.post(LOGIN, None, login(hs512)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Refused tokens create no account.
    let (status, body) = s.get("/_matrix/client/v3/register/available?username=mallory", None).await;
    assert_eq!((status, body["available"].clone()), (StatusCode::OK, json!(true)));

    // Without create_users, only existing accounts log in by JWT.
    let s = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_LOGIN__JWT__ENABLED", "true")
            .set("POSTSTELLE_LOGIN__JWT__SECRET", "idp-secret")
            .set("POSTSTELLE_LOGIN__JWT__CREATE_USERS", "false"),
    )
    .await;
    let token = jwt(json!({"sub": "jan", "exp": exp}), "idp-secret");
    assert_error(&s.post(LOGIN, None, login(token.clone())).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    s.register("jan", "pw").await;
    assert_eq!(s.post(LOGIN, None, login(token)).await.1["user_id"], "@jan:localhost");
    // Without a configured audience, a token that names one is refused.
    let aud = jwt(json!({"sub": "jan", "aud": "someone", "exp": exp}), "idp-secret");
    assert_error(&s.post(LOGIN, None, login(aud)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn refresh(s: &TestServer, token: &Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": token})).await
}

#[tokio::test]
async fn refresh_token_rotation() {
    let s = TestServer::start().await;
    s.register("kim", "pw").await;
    let mut body = password_login("kim", "pw");
    body["refresh_token"] = json!(true);
    let (_, first) = s.post(LOGIN, None, body.clone()).await;
    assert_eq!(first["expires_in_ms"], 300_000, "the configured default lifetime: {first}");
    let (status, second) = refresh(&s, &first["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    // Using the new refresh token revokes the old one (spec: "The old refresh token remains
    // valid until the new access token or refresh token is used").
    let (status, third) = refresh(&s, &second["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_error(&refresh(&s, &first["refresh_token"]).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // The same once the new access token is used.
    let (status, who) = s.get(WHOAMI, third["access_token"].as_str()).await;
    assert_eq!((status, who["device_id"].clone()), (StatusCode::OK, first["device_id"].clone()));
    assert_error(&refresh(&s, &second["refresh_token"]).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // Logging out ends the refresh chain too.
    assert_eq!(s.post("/_matrix/client/v3/logout", third["access_token"].as_str(), json!({})).await.0, StatusCode::OK);
    assert_error(&refresh(&s, &third["refresh_token"]).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // A refresh token is not an access token, and the field is required.
    assert_error(&s.get(WHOAMI, third["refresh_token"].as_str()).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_error(
        &s.post("/_matrix/client/v3/refresh", None, json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );

    // A refresh whose answer got lost can be retried with the same refresh token, and the
    // retry replaces the lost pair.
    let (_, login) = s.post(LOGIN, None, body).await;
    let (status, lost) = refresh(&s, &login["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{lost}");
    let (status, retried) = refresh(&s, &login["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_error(&refresh(&s, &lost["refresh_token"]).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_error(&s.get(WHOAMI, lost["access_token"].as_str()).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(s.get(WHOAMI, retried["access_token"].as_str()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn logout_needs_a_valid_token() {
    let s = TestServer::start().await;
    let lee = s.register("lee", "pw").await;
    // Sytest "Request to logout without an access token is rejected" / "… with invalid an
    // access token is rejected".
    for path in ["/_matrix/client/v3/logout", "/_matrix/client/v3/logout/all"] {
        assert_error(&s.post(path, None, json!({})).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        assert_error(&s.post(path, Some("pst_garbage"), json!({})).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    }
    // The token as query parameter; afterwards it is unknown, and not "soft" logged out.
    let path = format!("/_matrix/client/v3/logout?access_token={}", lee.access_token);
    assert_eq!(s.post(&path, None, json!({})).await, (StatusCode::OK, json!({})));
    let r = s.get(WHOAMI, lee.token()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_ne!(r.1["soft_logout"], true, "{}", r.1);
    assert_error(&s.post(&path, None, json!({})).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // /login/get_token needs a token too.
    let r = s.post("/_matrix/client/v1/login/get_token", None, json!({})).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn failed_password_checks_count_per_account() {
    // The nested environment form of a bucket: one key per field.
    let s = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_RATE_LIMITS__ENABLED", "true")
            .set("POSTSTELLE_RATE_LIMITS__LOGIN_PER_IP__PER_SECOND", 100)
            .set("POSTSTELLE_RATE_LIMITS__LOGIN_PER_IP__BURST", 100)
            .set("POSTSTELLE_RATE_LIMITS__LOGIN_FAILURES_PER_ACCOUNT", "{per_second=0.01,burst=2}"),
    )
    .await;
    let max = s.register("max", "pw").await;
    s.register("nina", "pw").await;
    // One failed login and one failed UIA password stage use up Max's failure budget.
    assert_error(&s.post(LOGIN, None, password_login("max", "wrong")).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let path = "/_matrix/client/v3/account/password";
    let (_, challenge) = s.post(path, max.token(), json!({"new_password": "x"})).await;
    let mut auth = max.password_auth(challenge["session"].as_str().unwrap());
    auth["password"] = json!("wrong");
    let (status, body) = s.post(path, max.token(), json!({"new_password": "x", "auth": auth})).await;
    assert_eq!((status, body["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_FORBIDDEN")), "{body}");
    // Now even the right password waits, at login and in UIA.
    let limited = s.post(LOGIN, None, password_login("max", "pw")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{}", limited.1);
    auth["password"] = json!("pw");
    let r = s.post(path, max.token(), json!({"new_password": "x", "auth": auth})).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    // Other accounts are not affected.
    assert_eq!(s.post(LOGIN, None, password_login("nina", "pw")).await.0, StatusCode::OK);

    // Logins per IP, with the inline-table form of a bucket: burst 2, one token per 10 s.
    let s = TestServer::start_with(
        ServerOptions::default()
            .set("POSTSTELLE_RATE_LIMITS__ENABLED", "true")
            .set("POSTSTELLE_RATE_LIMITS__LOGIN_PER_IP", "{per_second=0.1,burst=2}"),
    )
    .await;
    s.register("olga", "pw").await;
    for _ in 0..2 {
        assert_eq!(s.post(LOGIN, None, password_login("olga", "pw")).await.0, StatusCode::OK);
    }
    let limited = s.post(LOGIN, None, password_login("olga", "pw")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let retry = limited.1["retry_after_ms"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 10_000, "{}", limited.1);
}
