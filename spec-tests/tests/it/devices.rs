//! The device list: list, get, rename, delete (UIA) and bulk delete (UIA).

use serde_json::json;
use spec_tests::{Account, StatusCode, TestServer, assert_error};

use crate::account::{uia_challenge, wrong_password_auth};

const DEVICES: &str = "/_matrix/client/v3/devices";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// Logs in `user` on a new device with the given id and display name.
async fn login_device(s: &TestServer, user: &Account, device_id: &str, name: &str) -> Account {
    let (status, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user.user_id},
                "password": user.password,
                "device_id": device_id,
                "initial_device_display_name": name,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], device_id);
    Account::from_response(&body, &user.password)
}

async fn device_ids(s: &TestServer, token: Option<&str>) -> Vec<String> {
    let (status, body) = s.get(DEVICES, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn list_get_and_rename() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    login_device(&s, &alice, "device_1", "display 1").await;
    login_device(&s, &alice, "device_2", "display 2").await;

    // Sytest/Complement "GET /devices".
    let (status, body) = s.get(DEVICES, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3, "{body}");
    for (id, name) in [("device_1", "display 1"), ("device_2", "display 2")] {
        let device = devices.iter().find(|d| d["device_id"] == id).unwrap_or_else(|| panic!("{id} in {body}"));
        assert_eq!(device["display_name"], name);
        assert!(device["last_seen_ts"].as_u64().is_some_and(|ts| ts > 0), "{device}");
        assert_eq!(device["last_seen_ip"], "127.0.0.1");
    }
    assert!(devices.iter().any(|d| d["device_id"] == alice.device_id.as_str()));

    // "GET /device/{deviceId}".
    let (status, device) = s.get(&format!("{DEVICES}/device_1"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!((device["device_id"].clone(), device["display_name"].clone()), (json!("device_1"), json!("display 1")));

    // "PUT /device/{deviceId} updates device fields".
    let r = s.put(&format!("{DEVICES}/device_1"), alice.token(), json!({"display_name": "new display name"})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(s.get(&format!("{DEVICES}/device_1"), alice.token()).await.1["display_name"], "new display name");
    // Without `display_name` the name stays as it is (spec: "If not given, … unchanged").
    assert_eq!(s.put(&format!("{DEVICES}/device_1"), alice.token(), json!({})).await.0, StatusCode::OK);
    assert_eq!(s.get(&format!("{DEVICES}/device_1"), alice.token()).await.1["display_name"], "new display name");
    // Bad names.
    assert_error(
        &s.put(&format!("{DEVICES}/device_1"), alice.token(), json!({"display_name": "x".repeat(257)})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&format!("{DEVICES}/device_1"), alice.token(), json!({"display_name": 5})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );

    // "… gives a 404 for unknown devices".
    assert_error(
        &s.get(&format!("{DEVICES}/unknown_device"), alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.put(&format!("{DEVICES}/unknown_device"), alice.token(), json!({"display_name": "x"})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Another user's device is not visible, nor can it be renamed.
    let bob = s.register("bob", "pw").await;
    let bobs = format!("{DEVICES}/{}", bob.device_id);
    assert_error(&s.get(&bobs, alice.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.put(&bobs, alice.token(), json!({"display_name": "mine"})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert!(s.get(&bobs, bob.token()).await.1["display_name"].is_null(), "Bob's device is unchanged");
    assert_eq!(device_ids(&s, bob.token()).await, [bob.device_id.as_str()]);

    assert_error(&s.get(DEVICES, None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn delete_device_with_uia() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let other = login_device(&s, &alice, "login_device", "device display").await;
    let path = format!("{DEVICES}/login_device");

    // Sytest "DELETE /device/{deviceId} with no body gives a 401", and with an empty object.
    let (status, body) = s.delete(&path, alice.token(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["session"].is_string() && body["params"].is_object() && body["flows"].is_array(), "{body}");
    let session = uia_challenge(&s, "DELETE", &path, alice.token(), json!({})).await;
    // A wrong password: 401 with M_FORBIDDEN.
    let (status, body) =
        s.delete(&path, alice.token(), Some(json!({"auth": wrong_password_auth(&alice, &session)}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(body["session"], session.as_str());
    assert_eq!(s.get(WHOAMI, other.token()).await.0, StatusCode::OK, "not deleted yet");
    // The right password.
    let r = s.delete(&path, alice.token(), Some(json!({"auth": alice.password_auth(&session)}))).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_error(&s.get(&path, alice.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.get(WHOAMI, other.token()).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(device_ids(&s, alice.token()).await, [alice.device_id.as_str()]);

    // Sytest "DELETE /device/{deviceId} requires UI auth user to match device owner": Eve, with
    // Alice's token, cannot pass Alice's UIA with her own credentials.
    let eve = s.register("eve", "eve-pw").await;
    login_device(&s, &alice, "second", "device display").await;
    let r = s
        .delete(
            &format!("{DEVICES}/second"),
            alice.token(),
            Some(json!({"auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": eve.user_id},
                "password": "eve-pw",
            }})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(s.get(&format!("{DEVICES}/second"), alice.token()).await.0, StatusCode::OK, "still there");

    // Sytest "The operation must be consistent through an interactive authentication session":
    // a session started to delete one device cannot delete another.
    login_device(&s, &alice, "third", "device display").await;
    let session = uia_challenge(&s, "DELETE", &format!("{DEVICES}/second"), alice.token(), json!({})).await;
    let r = s
        .delete(&format!("{DEVICES}/third"), alice.token(), Some(json!({"auth": alice.password_auth(&session)})))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(s.get(&format!("{DEVICES}/third"), alice.token()).await.1["display_name"], "device display");
    // The session still works for the device it was started for.
    let r = s
        .delete(&format!("{DEVICES}/second"), alice.token(), Some(json!({"auth": alice.password_auth(&session)})))
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_error(&s.get(&format!("{DEVICES}/second"), alice.token()).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // An unknown device: the spec answers 200 ("or had been removed previously") after UIA.
    let session = uia_challenge(&s, "DELETE", &format!("{DEVICES}/unknown_device"), alice.token(), json!({})).await;
    let r = s
        .delete(
            &format!("{DEVICES}/unknown_device"),
            alice.token(),
            Some(json!({"auth": alice.password_auth(&session)})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    // Another user's device id only ever names one's own devices: Bob's device survives.
    let bob = s.register("bob", "pw").await;
    let bobs = format!("{DEVICES}/{}", bob.device_id);
    let session = uia_challenge(&s, "DELETE", &bobs, alice.token(), json!({})).await;
    let r = s.delete(&bobs, alice.token(), Some(json!({"auth": alice.password_auth(&session)}))).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(s.get(WHOAMI, bob.token()).await.0, StatusCode::OK);
    assert_eq!(s.get(&bobs, bob.token()).await.0, StatusCode::OK);

    assert_error(&s.delete(&path, None, None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn delete_devices_in_bulk() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let d1 = login_device(&s, &alice, "D1", "one").await;
    let d2 = login_device(&s, &alice, "D2", "two").await;
    let d3 = login_device(&s, &alice, "D3", "three").await;
    let path = "/_matrix/client/v3/delete_devices";
    let devices = json!(["D1", "D2", "no_such_device"]);

    let session = uia_challenge(&s, "POST", path, alice.token(), json!({"devices": devices})).await;
    let (status, body) =
        s.post(path, alice.token(), json!({"devices": devices, "auth": wrong_password_auth(&alice, &session)})).await;
    assert_eq!((status, body["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_FORBIDDEN")), "{body}");
    // The session is bound to this set of devices.
    let r = s.post(path, alice.token(), json!({"devices": ["D3"], "auth": alice.password_auth(&session)})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // The same set in another order is the same operation.
    let r = s
        .post(
            path,
            alice.token(),
            json!({"devices": ["no_such_device", "D2", "D1"], "auth": alice.password_auth(&session)}),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);

    for gone in [&d1, &d2] {
        assert_error(&s.get(WHOAMI, gone.token()).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    }
    assert_eq!(s.get(WHOAMI, d3.token()).await.0, StatusCode::OK);
    let mut left = device_ids(&s, alice.token()).await;
    left.sort();
    let mut expected = vec![alice.device_id.clone(), "D3".to_owned()];
    expected.sort();
    assert_eq!(left, expected);

    // `devices` is required; its items must be strings.
    assert_error(&s.post(path, alice.token(), json!({})).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    assert_error(&s.post(path, alice.token(), json!({"devices": [1]})).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_error(&s.post(path, None, json!({"devices": ["D3"]})).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
