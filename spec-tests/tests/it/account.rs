//! The account: whoami, password change and deactivation, and how UIA sessions bind to one
//! user and one operation.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer, assert_error};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const PASSWORD: &str = "/_matrix/client/v3/account/password";
const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";
const LOGIN: &str = "/_matrix/client/v3/login";

fn login_body(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})
}

/// Sends `body` without `auth` and checks the 401 UIA challenge (password flow, a session,
/// params, no error); returns the session id.
pub(crate) async fn uia_challenge(
    s: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> String {
    let (status, challenge) = s.request(method, path, token, Some(body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.password"]}]), "{challenge}");
    assert!(challenge["params"].is_object(), "{challenge}");
    assert!(challenge.get("errcode").is_none(), "a fresh challenge carries no error: {challenge}");
    challenge["session"].as_str().expect("session").to_owned()
}

/// `account`'s password stage with a wrong password.
pub(crate) fn wrong_password_auth(account: &Account, session: &str) -> Value {
    let mut auth = account.password_auth(session);
    auth["password"] = json!("definitely not the password");
    auth
}

#[tokio::test]
async fn whoami_reports_user_and_device() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let (status, body) = s.get(WHOAMI, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    assert_eq!(body["device_id"], alice.device_id.as_str());
    // `is_guest` is optional and defaults to false; ruma leaves it out when false.
    assert!(body["is_guest"].is_null() || body["is_guest"] == false, "{body}");
    // A second device has its own id.
    let other = s.login("alice", "pw").await;
    let (_, body) = s.get(WHOAMI, other.token()).await;
    assert_eq!(body["device_id"], other.device_id.as_str());
    assert_ne!(other.device_id, alice.device_id);
    // Complement: "Login with uppercase username works and GET /whoami afterwards also".
    let upper = s.login("ALICE", "pw").await;
    assert_eq!(s.get(WHOAMI, upper.token()).await.1["user_id"], "@alice:localhost");

    assert_error(&s.get(WHOAMI, None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    assert_error(&s.get(WHOAMI, Some("pst_not_a_token")).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn change_password_with_uia() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "old-pw").await;
    let other = s.login("alice", "old-pw").await;

    // No auth: the password flow is offered.
    let session = uia_challenge(&s, "POST", PASSWORD, alice.token(), json!({"new_password": "new-pw"})).await;
    // A wrong password: still 401, with M_FORBIDDEN and the same session.
    let (status, body) = s
        .post(PASSWORD, alice.token(), json!({"new_password": "new-pw", "auth": wrong_password_auth(&alice, &session)}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(body["session"], session.as_str());
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]));
    // The new password must be there (checked before UIA, by the request schema).
    assert_error(
        &s.post(PASSWORD, alice.token(), json!({"auth": alice.password_auth(&session)})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    // The right password.
    let (status, body) =
        s.post(PASSWORD, alice.token(), json!({"new_password": "new-pw", "auth": alice.password_auth(&session)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Sytest/Complement "After changing password, …":
    assert_error(&s.post(LOGIN, None, login_body("alice", "old-pw")).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) = s.post(LOGIN, None, login_body("alice", "new-pw")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.get(WHOAMI, alice.token()).await.0, StatusCode::OK, "the session that changed it stays");
    assert_error(&s.get(WHOAMI, other.token()).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

    // With logout_devices: false, other sessions are kept.
    let alice = Account { password: "new-pw".into(), ..alice };
    let kept = s.login("alice", "new-pw").await;
    let session = uia_challenge(&s, "POST", PASSWORD, alice.token(), json!({"new_password": "newer"})).await;
    let (status, body) = s
        .post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "newer", "logout_devices": false, "auth": alice.password_auth(&session)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.get(WHOAMI, kept.token()).await.0, StatusCode::OK);
    assert_eq!(s.post(LOGIN, None, login_body("alice", "newer")).await.0, StatusCode::OK);

    // A finished session cannot be replayed.
    assert_error(
        &s.post(PASSWORD, alice.token(), json!({"new_password": "x", "auth": alice.password_auth(&session)})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post(PASSWORD, None, json!({"new_password": "x"})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn uia_sessions_are_bound_to_user_and_operation() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-pw").await;
    let bob = s.register("bob", "bob-pw").await;
    let session = uia_challenge(&s, "POST", PASSWORD, alice.token(), json!({"new_password": "stolen"})).await;

    // Bob cannot continue Alice's session, even with his own (correct) password.
    let r = s.post(PASSWORD, bob.token(), json!({"new_password": "stolen", "auth": bob.password_auth(&session)})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Alice's token with Bob's credentials does not pass Alice's UIA (Sytest: "requires UI auth
    // user to match device owner").
    let r =
        s.post(PASSWORD, alice.token(), json!({"new_password": "stolen", "auth": bob.password_auth(&session)})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Nor can a session started for one operation authorise another.
    let r = s.post(DEACTIVATE, alice.token(), json!({"auth": alice.password_auth(&session)})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(s.get(WHOAMI, alice.token()).await.0, StatusCode::OK, "Alice is still active");
    // An unknown session.
    let r = s
        .post(PASSWORD, alice.token(), json!({"new_password": "x", "auth": alice.password_auth("no-such-session")}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Nothing changed: both log in with their passwords, and Alice can still finish her session.
    assert_eq!(s.post(LOGIN, None, login_body("alice", "alice-pw")).await.0, StatusCode::OK);
    assert_eq!(s.post(LOGIN, None, login_body("bob", "bob-pw")).await.0, StatusCode::OK);
    let r = s
        .post(PASSWORD, alice.token(), json!({"new_password": "alice-new", "auth": alice.password_auth(&session)}))
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
}

#[tokio::test]
async fn deactivate_account_with_uia() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let other = s.login("alice", "pw").await;
    // Complement "Password flow is available", then "Can't deactivate account with wrong password".
    let session = uia_challenge(&s, "POST", DEACTIVATE, alice.token(), json!({})).await;
    let (status, body) =
        s.post(DEACTIVATE, alice.token(), json!({"auth": wrong_password_auth(&alice, &session)})).await;
    assert_eq!((status, body["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_FORBIDDEN")), "{body}");
    assert_eq!(s.get(WHOAMI, alice.token()).await.0, StatusCode::OK);
    // "Can deactivate account".
    let (status, body) = s.post(DEACTIVATE, alice.token(), json!({"auth": alice.password_auth(&session)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");

    // "After deactivating account, can't log in with password".
    assert_error(&s.post(LOGIN, None, login_body("alice", "pw")).await, StatusCode::FORBIDDEN, "M_USER_DEACTIVATED");
    // Every token is dead.
    for token in [alice.token(), other.token()] {
        assert_error(&s.get(WHOAMI, token).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    }
    // The user id is never handed out again.
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=alice", None).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    assert_error(&s.post(DEACTIVATE, None, json!({})).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
