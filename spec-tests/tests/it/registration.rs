//! Registration: open (dummy), by token, shared-secret admin registration, username rules.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use spec_tests::{ServerOptions, StatusCode, TestServer, assert_error};

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn registration_is_off_by_default_setting() {
    let s = TestServer::start_with(ServerOptions::default().set("POSTSTELLE_REGISTRATION__ENABLED", "false")).await;
    let r = s.post(REGISTER, None, json!({"username": "a", "password": "p", "auth": {"type": "m.login.dummy"}})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn dummy_flow_with_uia_session() {
    let s = TestServer::start().await;
    let (status, body) = s.post(REGISTER, None, json!({"username": "bob", "password": "pw"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let session = body["session"].as_str().unwrap().to_owned();
    let flows: Vec<Value> = body["flows"].as_array().unwrap().clone();
    assert!(flows.iter().any(|f| f["stages"] == json!(["m.login.dummy"])), "{body}");
    let (status, body) = s
        .post(
            REGISTER,
            None,
            json!({"username": "bob", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@bob:localhost");
    assert!(body["access_token"].as_str().unwrap().len() > 20);
    // The new token works.
    let (status, who) = s.get("/_matrix/client/v3/account/whoami", body["access_token"].as_str()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["user_id"], "@bob:localhost");
    assert_eq!(who["device_id"], body["device_id"]);
    // A finished session cannot be replayed.
    let r = s
        .post(
            REGISTER,
            None,
            json!({"username": "bob2", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{:?}", r.1);
}

#[tokio::test]
async fn username_rules_and_availability() {
    let s = TestServer::start().await;
    s.register("carol", "pw").await;
    let dummy = json!({"type": "m.login.dummy"});
    assert_error(
        &s.post(REGISTER, None, json!({"username": "carol", "password": "p", "auth": dummy})).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    assert_error(
        &s.post(REGISTER, None, json!({"username": "CAROL", "password": "p", "auth": dummy})).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    for bad in ["has space", "ümlaut", "_reserved", "a:b", "", &"x".repeat(300)] {
        let r = s.post(REGISTER, None, json!({"username": bad, "password": "p", "auth": dummy})).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    }
    let (status, body) = s.get("/_matrix/client/v3/register/available?username=dave", None).await;
    assert_eq!((status, body["available"].clone()), (StatusCode::OK, json!(true)));
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=carol", None).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=Bad%20Name", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &s.get("/_matrix/client/v3/register/available", None).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    // No username: the server picks one.
    let (status, body) = s.post(REGISTER, None, json!({"password": "p", "auth": dummy})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["user_id"].as_str().unwrap().ends_with(":localhost"));
    // Guests are not allowed.
    let r = s.post(&format!("{REGISTER}?kind=guest"), None, json!({})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn reserved_prefixes_are_exclusive() {
    let s = TestServer::start_with(
        ServerOptions::default().set("POSTSTELLE_REGISTRATION__RESERVED_PREFIXES", "[\"egvp_\"]"),
    )
    .await;
    let r =
        s.post(REGISTER, None, json!({"username": "egvp_x", "password": "p", "auth": {"type": "m.login.dummy"}})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
}

#[tokio::test]
async fn inhibit_login_returns_no_token() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(
            REGISTER,
            None,
            json!({"username": "quiet", "password": "p", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    s.login("quiet", "p").await;
}

/// Synapse's shared-secret admin registration, as `register_new_matrix_user` does it.
pub(crate) async fn admin_register(s: &TestServer, user: &str, password: &str, admin: bool) -> (StatusCode, Value) {
    let (_, nonce) = s.get("/_synapse/admin/v1/register", None).await;
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();
    let mac = mac(&s.shared_secret, &nonce, user, password, admin);
    s.post(
        "/_synapse/admin/v1/register",
        None,
        json!({"nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac}),
    )
    .await
}

fn mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    let admin = if admin { "admin" } else { "notadmin" };
    mac.update(format!("{nonce}\0{user}\0{password}\0{admin}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn shared_secret_registration() {
    let s = TestServer::start().await;
    let (status, body) = admin_register(&s, "root", "pw", true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@root:localhost");
    assert_eq!(body["home_server"], "localhost");
    // A wrong MAC is refused and does not consume the nonce.
    let (_, nonce) = s.get("/_synapse/admin/v1/register", None).await;
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();
    let bad = mac("wrong secret", &nonce, "eve", "pw", false);
    let r = s
        .post(
            "/_synapse/admin/v1/register",
            None,
            json!({"nonce": nonce, "username": "eve", "password": "pw", "mac": bad}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let good = mac(&s.shared_secret, &nonce, "eve", "pw", false);
    let body = json!({"nonce": nonce, "username": "eve", "password": "pw", "admin": false, "mac": good});
    assert_eq!(s.post("/_synapse/admin/v1/register", None, body.clone()).await.0, StatusCode::OK);
    // A nonce is single use.
    let r = s.post("/_synapse/admin/v1/register", None, body).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{:?}", r.1);
    // Without a configured secret the endpoint is off.
    let off = TestServer::start_with(ServerOptions::default().set("POSTSTELLE_REGISTRATION__SHARED_SECRET", "")).await;
    assert_eq!(off.get("/_synapse/admin/v1/register", None).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn registration_tokens() {
    let s =
        TestServer::start_with(ServerOptions::default().set("POSTSTELLE_REGISTRATION__REQUIRES_TOKEN", "true")).await;
    let (_, admin) = admin_register(&s, "admin", "pw", true).await;
    let admin_token = admin["access_token"].as_str().unwrap();
    let (_, user) = admin_register(&s, "plain", "pw", false).await;
    let tokens = "/_synapse/admin/v1/registration_tokens";

    // Only admins manage tokens.
    assert_error(&s.get(tokens, user["access_token"].as_str()).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, created) =
        s.post(&format!("{tokens}/new"), Some(admin_token), json!({"token": "once", "uses_allowed": 1})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created, json!({"token": "once", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": null}));
    assert_eq!(
        s.post(&format!("{tokens}/new"), Some(admin_token), json!({"token": "once"})).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.post(&format!("{tokens}/new"), Some(admin_token), json!({"token": "bad token!"})).await.0,
        StatusCode::BAD_REQUEST
    );
    let (_, generated) = s.post(&format!("{tokens}/new"), Some(admin_token), json!({"length": 20})).await;
    assert_eq!(generated["token"].as_str().unwrap().len(), 20);

    // The validity endpoint.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    assert_eq!(s.get(&format!("{validity}?token=once"), None).await.1["valid"], true);
    assert_eq!(s.get(&format!("{validity}?token=nope"), None).await.1["valid"], false);

    // Only the token flow is offered, and dummy does not pass it.
    let (status, body) = s.post(REGISTER, None, json!({"username": "new1", "password": "p"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = body["session"].as_str().unwrap();
    let (status, body) = s
        .post(
            REGISTER,
            None,
            json!({"username": "new1", "password": "p", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A wrong token is reported in the 401.
    let (status, body) = s
        .post(REGISTER, None, json!({"username": "new1", "password": "p", "auth": {"type": "m.login.registration_token", "token": "nope", "session": session}}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    // The right one registers and is counted.
    let (status, body) = s
        .post(REGISTER, None, json!({"username": "new1", "password": "p", "auth": {"type": "m.login.registration_token", "token": "once", "session": session}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, token) = s.get(&format!("{tokens}/once"), Some(admin_token)).await;
    assert_eq!((token["completed"].clone(), token["pending"].clone()), (json!(1), json!(0)));
    // Used up.
    assert_eq!(s.get(&format!("{validity}?token=once"), None).await.1["valid"], false);
    let (_, body) = s.post(REGISTER, None, json!({"username": "new2", "password": "p"})).await;
    let session = body["session"].as_str().unwrap();
    let (status, body) = s
        .post(REGISTER, None, json!({"username": "new2", "password": "p", "auth": {"type": "m.login.registration_token", "token": "once", "session": session}}))
        .await;
    assert_eq!((status, body["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_UNAUTHORIZED")));

    // Update, list with the validity filter, delete.
    let (status, updated) = s.put(&format!("{tokens}/once"), Some(admin_token), json!({"uses_allowed": null})).await;
    assert_eq!((status, updated["uses_allowed"].clone()), (StatusCode::OK, Value::Null));
    let (_, list) = s.get(&format!("{tokens}?valid=true"), Some(admin_token)).await;
    assert_eq!(list["registration_tokens"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(s.delete(&format!("{tokens}/once"), Some(admin_token), None).await.0, StatusCode::OK);
    assert_error(&s.get(&format!("{tokens}/once"), Some(admin_token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.delete(&format!("{tokens}/once"), Some(admin_token), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}
