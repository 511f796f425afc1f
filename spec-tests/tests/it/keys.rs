//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, and the key counts in
//! `/sync`. The keys are opaque to the server apart from their ids and owners, so the tests upload
//! well-formed placeholders.

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer};

use crate::rooms::{create_room, join, server_with};
use crate::sync::{next_batch, sync, sync_since};

fn device_keys(who: &Account) -> Value {
    json!({
        "user_id": who.user_id,
        "device_id": who.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", who.device_id): "curve-key-of-".to_owned() + &who.device_id,
            format!("ed25519:{}", who.device_id): "ed-key-of-".to_owned() + &who.device_id,
        },
        "signatures": {who.user_id.clone(): {format!("ed25519:{}", who.device_id): "signature"}},
    })
}

fn signed_key(n: u32) -> Value {
    json!({"key": format!("otk-{n}"), "signatures": {"@x:localhost": {"ed25519:X": "sig"}}})
}

async fn upload(s: &TestServer, who: &Account, body: Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/keys/upload", who.token(), body).await
}

async fn claim(s: &TestServer, who: &Account, target: &Account) -> Value {
    let body = json!({"one_time_keys": {target.user_id.clone(): {target.device_id.clone(): "signed_curve25519"}}});
    let (status, resp) = s.post("/_matrix/client/v3/keys/claim", who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

/// Sytest "Can upload device keys", "Should reject keys claiming to belong to a different user",
/// "Can query device keys using POST", "Can claim one time key using POST", "Can claim fallback
/// keys"; Complement TestKeysQueryWithDeviceIDAsObjectFails (bad input is 400).
#[tokio::test]
async fn upload_query_and_claim_keys() {
    let (s, [alice, bob, eve]) = server_with(["alice", "bob", "eve"]).await;

    // Device keys and three one-time keys; the counts come back.
    let mut otks = serde_json::Map::new();
    for n in 1..=3 {
        otks.insert(format!("signed_curve25519:AAAA{n}"), signed_key(n));
    }
    let (status, resp) = upload(&s, &alice, json!({"device_keys": device_keys(&alice), "one_time_keys": otks})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["one_time_key_counts"]["signed_curve25519"], 3, "{resp}");
    // The same keys again change nothing; a known key id with another key is refused.
    let (status, resp) = upload(&s, &alice, json!({"one_time_keys": otks})).await;
    assert_eq!((status, resp["one_time_key_counts"]["signed_curve25519"].clone()), (StatusCode::OK, json!(3)));
    let (status, resp) =
        upload(&s, &alice, json!({"one_time_keys": {"signed_curve25519:AAAA1": signed_key(99)}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(resp["errcode"], "M_INVALID_PARAM", "{resp}");
    // Device keys of another user or device are refused.
    let (status, resp) = upload(&s, &alice, json!({"device_keys": device_keys(&bob)})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    let (status, _) = upload(&s, &alice, json!({"one_time_keys": {"signed_curve25519:B": 5}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A fallback key.
    let (status, resp) = upload(&s, &alice, json!({"fallback_keys": {"signed_curve25519:FB1": signed_key(100)}})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    // The counts in Alice's /sync.
    let r = sync(&s, &alice, "").await;
    assert_eq!(r["device_one_time_keys_count"]["signed_curve25519"], 3, "{r}");
    assert_eq!(r["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{r}");

    // Bob shares no room with Alice: her keys are not his to see or claim.
    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let (status, resp) = s.post("/_matrix/client/v3/keys/query", bob.token(), query.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp["device_keys"].get(&alice.user_id).is_none(), "{resp}");
    assert!(claim(&s, &bob, &alice).await["one_time_keys"].get(&alice.user_id).is_none());

    // In a room together, Bob sees Alice's device with its display name and claims her keys:
    // the oldest one-time key first, each once, then the fallback key.
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    let (status, _) = s.put(&path, alice.token(), json!({"display_name": "Alice's phone"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = s.post("/_matrix/client/v3/keys/query", bob.token(), query).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let device = &resp["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"], device_keys(&alice)["keys"], "{resp}");
    assert_eq!(device["unsigned"]["device_display_name"], "Alice's phone", "{resp}");
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let resp = claim(&s, &bob, &alice).await;
        let keys = resp["one_time_keys"][&alice.user_id][&alice.device_id].as_object().cloned().unwrap_or_default();
        assert_eq!(keys.len(), 1, "{resp}");
        claimed.extend(keys.keys().cloned());
    }
    assert_eq!(
        claimed,
        ["signed_curve25519:AAAA1", "signed_curve25519:AAAA2", "signed_curve25519:AAAA3", "signed_curve25519:FB1"]
    );
    // The fallback key goes on being handed out, and Alice's sync says it was used.
    let again = claim(&s, &bob, &alice).await;
    assert!(again["one_time_keys"][&alice.user_id][&alice.device_id].get("signed_curve25519:FB1").is_some());
    let r = sync(&s, &alice, "").await;
    assert_eq!(r["device_one_time_keys_count"]["signed_curve25519"], 0, "{r}");
    assert_eq!(r["device_unused_fallback_key_types"], json!([]), "{r}");
    // A new fallback key is unused again.
    let (status, _) = upload(&s, &alice, json!({"fallback_keys": {"signed_curve25519:FB2": signed_key(101)}})).await;
    assert_eq!(status, StatusCode::OK);
    let r = sync(&s, &alice, "").await;
    assert_eq!(r["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{r}");

    // Eve, never in a room with Alice, still sees nothing; users of other servers she shares no
    // room with are not even asked for (so their server is no failure either).
    let query = json!({"device_keys": {alice.user_id.clone(): [], "@someone:elsewhere.example": []}});
    let (status, resp) = s.post("/_matrix/client/v3/keys/query", eve.token(), query).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp["device_keys"].get(&alice.user_id).is_none(), "{resp}");
    assert!(resp["device_keys"].get("@someone:elsewhere.example").is_none(), "{resp}");
    assert!(resp["failures"].get("elsewhere.example").is_none(), "{resp}");
    // Bad input.
    let (status, resp) =
        s.post("/_matrix/client/v3/keys/query", eve.token(), json!({"device_keys": {alice.user_id.clone(): {}}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    let (status, resp) = s.post("/_matrix/client/v3/keys/upload", None, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");

    // Logging the device out deletes it, and its keys with it.
    let (status, _) = s.post("/_matrix/client/v3/logout", alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let (_, resp) = s.post("/_matrix/client/v3/keys/query", bob.token(), query).await;
    let devices = resp["device_keys"][&alice.user_id].as_object().cloned().unwrap_or_default();
    assert!(devices.is_empty(), "{resp}");
}

fn listed(r: &Value, list: &str, who: &Account) -> bool {
    r["device_lists"][list].as_array().is_some_and(|l| l.iter().any(|u| u == who.user_id.as_str()))
}

/// Sytest "Local device key changes appear in v2 /sync", "Local new device changes appear in v2
/// /sync", "Local update device changes appear in v2 /sync", "Get left notifs for other users in
/// sync and /keys/changes when user leaves", "Local device key changes get to remote servers"
/// (locally), "Can query /keys/changes"; a long-polling /sync wakes for a key upload.
#[tokio::test]
async fn device_list_changes_in_sync_and_key_changes() {
    let (s, [alice, bob, charlie, eve]) = server_with(["alice", "bob", "charlie", "eve"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let t0 = next_batch(&sync(&s, &bob, "").await);

    // Alice uploads her device keys while Bob waits: his sync wakes with her in `changed`.
    let started = std::time::Instant::now();
    let (woken, uploaded) = tokio::join!(sync_since(&s, &bob, &t0, "&timeout=10000"), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        upload(&s, &alice, json!({"device_keys": device_keys(&alice)})).await
    });
    assert_eq!(uploaded.0, StatusCode::OK, "{}", uploaded.1);
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "the sync waited for its timeout");
    assert!(listed(&woken, "changed", &alice), "{woken}");
    let t1 = next_batch(&woken);

    // Eve shares no room with Bob: her keys are none of his business.
    let (status, _) = upload(&s, &eve, json!({"device_keys": device_keys(&eve)})).await;
    assert_eq!(status, StatusCode::OK);
    let r = sync_since(&s, &bob, &t1, "").await;
    assert!(!listed(&r, "changed", &eve), "{r}");
    let t2 = next_batch(&r);
    let (status, changes) = s.get(&format!("/_matrix/client/v3/keys/changes?from={t0}&to={t2}"), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert!(changes["changed"].as_array().unwrap().iter().any(|u| u == alice.user_id.as_str()), "{changes}");
    assert!(!changes["changed"].as_array().unwrap().iter().any(|u| u == eve.user_id.as_str()), "{changes}");

    // Charlie joins: Bob's clients must learn his devices.
    join(&s, &charlie, &room).await;
    let r = sync_since(&s, &bob, &t2, "").await;
    assert!(listed(&r, "changed", &charlie), "{r}");

    // Bob leaves: Alice's sync and /keys/changes list him under `left`.
    let ta = next_batch(&sync(&s, &alice, "").await);
    let (status, resp) = s.post(&crate::rooms::room_path(&room, "leave"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let r = sync_since(&s, &alice, &ta, "").await;
    assert!(listed(&r, "left", &bob), "{r}");
    let tb = next_batch(&r);
    let (status, changes) = s.get(&format!("/_matrix/client/v3/keys/changes?from={ta}&to={tb}"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert!(changes["left"].as_array().unwrap().iter().any(|u| u == bob.user_id.as_str()), "{changes}");

    // A deleted device is a change too: Charlie's second device logs out.
    let second = s.login("charlie", &charlie.password).await;
    let (status, _) = upload(&s, &second, json!({"device_keys": device_keys(&second)})).await;
    assert_eq!(status, StatusCode::OK);
    let r = sync_since(&s, &alice, &tb, "").await;
    let tc = next_batch(&r);
    let (status, _) = s.post("/_matrix/client/v3/logout", second.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let r = sync_since(&s, &alice, &tc, "").await;
    assert!(listed(&r, "changed", &charlie), "{r}");

    // Bad tokens.
    let (status, resp) = s.get("/_matrix/client/v3/keys/changes?from=nonsense&to=s1_1_1_1_1_1", alice.token()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
}

/// An ed25519 key pair as clients make them for cross-signing: the key id is the public key.
struct SigningKey {
    der: Vec<u8>,
    pair: ruma::signatures::Ed25519KeyPair,
    public: String,
}

impl SigningKey {
    fn new() -> Self {
        let der = ruma::signatures::Ed25519KeyPair::generate();
        let probe = ruma::signatures::Ed25519KeyPair::from_der(&der, String::new()).expect("key pair");
        let public = ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(probe.public_key().to_vec()).encode();
        let pair = ruma::signatures::Ed25519KeyPair::from_der(&der, public.clone()).expect("key pair");
        Self { der: der.to_vec(), pair, public }
    }

    /// The cross-signing key object for `usage`, signed by `signer` if given.
    fn key(&self, who: &Account, usage: &str, signer: Option<&SigningKey>) -> Value {
        let mut key = json!({
            "user_id": who.user_id,
            "usage": [usage],
            "keys": {format!("ed25519:{}", self.public): self.public},
        });
        if let Some(signer) = signer {
            let mut object: ruma::CanonicalJsonObject = serde_json::from_value(key).expect("canonical");
            ruma::signatures::sign_json(&who.user_id, &signer.pair, &mut object).expect("sign");
            key = serde_json::to_value(object).expect("json");
        }
        key
    }
}

/// Sytest "Can upload self-signing keys", "Fails to upload self-signing keys with no auth"
/// (here: only when replacing a master key, MSC3967), "Fails to upload self-signing key without
/// master key", "Can query cross-signing keys"; a self-signing key not signed by the master key
/// is refused; the user-signing key is shown only to its owner.
#[tokio::test]
async fn cross_signing_keys() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    let (master, self_signing, user_signing, stranger) =
        (SigningKey::new(), SigningKey::new(), SigningKey::new(), SigningKey::new());

    // A self-signing key without any master key, or signed by another key, is refused.
    let (status, resp) = s
        .post(path, alice.token(), json!({"self_signing_key": self_signing.key(&alice, "self_signing", Some(&master))}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    let bad = json!({
        "master_key": master.key(&alice, "master", None),
        "self_signing_key": self_signing.key(&alice, "self_signing", Some(&stranger)),
    });
    let (status, resp) = s.post(path, alice.token(), bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    // A key of another user is refused.
    let (status, _) = s.post(path, alice.token(), json!({"master_key": master.key(&bob, "master", None)})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The first upload needs no password.
    let keys = json!({
        "master_key": master.key(&alice, "master", None),
        "self_signing_key": self_signing.key(&alice, "self_signing", Some(&master)),
        "user_signing_key": user_signing.key(&alice, "user_signing", Some(&master)),
    });
    let (status, resp) = s.post(path, alice.token(), keys.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    // The same again needs none either; a new master key does.
    let (status, resp) = s.post(path, alice.token(), keys).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let new_master = SigningKey::new();
    let replace = json!({"master_key": new_master.key(&alice, "master", None)});
    let (status, resp) = s.post(path, alice.token(), replace.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    let session = resp["session"].as_str().expect("UIA session").to_owned();

    // Bob sees Alice's master and self-signing keys, not her user-signing key; Alice sees all.
    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let (status, resp) = s.post("/_matrix/client/v3/keys/query", bob.token(), query.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["master_keys"][&alice.user_id]["keys"][format!("ed25519:{}", master.public)], master.public);
    assert!(resp["self_signing_keys"].get(&alice.user_id).is_some(), "{resp}");
    assert!(resp.get("user_signing_keys").is_none_or(|k| k.get(&alice.user_id).is_none()), "{resp}");
    let (_, resp) = s.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await;
    assert!(resp["user_signing_keys"].get(&alice.user_id).is_some(), "{resp}");

    // With her password Alice replaces the master key; Bob's sync lists her as changed.
    let t0 = next_batch(&sync(&s, &bob, "").await);
    let mut body = replace;
    body["auth"] = json!({
        "type": "m.login.password", "session": session, "password": alice.password,
        "identifier": {"type": "m.id.user", "user": alice.user_id},
    });
    let (status, resp) = s.post(path, alice.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (_, resp) = s.post("/_matrix/client/v3/keys/query", bob.token(), query).await;
    assert_eq!(
        resp["master_keys"][&alice.user_id]["keys"][format!("ed25519:{}", new_master.public)],
        new_master.public
    );
    let r = sync_since(&s, &bob, &t0, "").await;
    assert!(listed(&r, "changed", &alice), "{r}");
}

/// Signs a key object as `who` with `key`, under the key id `key_id`.
fn signed_as(who: &Account, key: &SigningKey, key_id: &str, object: &Value) -> Value {
    let pair = ruma::signatures::Ed25519KeyPair::from_der(&key.der, key_id.to_owned()).expect("key pair");
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(object.clone()).expect("canonical");
    ruma::signatures::sign_json(&who.user_id, &pair, &mut object).expect("sign");
    serde_json::to_value(object).expect("json")
}

/// Sytest "Can upload a signature for a device", "Can upload a signature for a master key",
/// "Can upload a signature for another user's master key" (visible to the signer only),
/// "uploading signed devices gets propagated over federation" (locally: the owner's contacts see
/// it); a bad signature or an object that is not the stored key is a failure.
#[tokio::test]
async fn key_signatures() {
    let (s, [alice, bob, charlie]) = server_with(["alice", "bob", "charlie"]).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    join(&s, &charlie, &room).await;
    let signing = "/_matrix/client/v3/keys/device_signing/upload";
    let signatures = "/_matrix/client/v3/keys/signatures/upload";

    // Alice: a device with a real ed25519 key, and cross-signing keys. Bob: a master key.
    let device = SigningKey::new();
    let mut alice_device = device_keys(&alice);
    alice_device["keys"][format!("ed25519:{}", alice.device_id)] = json!(device.public);
    let (status, resp) = upload(&s, &alice, json!({"device_keys": alice_device})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (master, ssk, usk) = (SigningKey::new(), SigningKey::new(), SigningKey::new());
    let alice_master = master.key(&alice, "master", None);
    let keys = json!({
        "master_key": alice_master,
        "self_signing_key": ssk.key(&alice, "self_signing", Some(&master)),
        "user_signing_key": usk.key(&alice, "user_signing", Some(&master)),
    });
    assert_eq!(s.post(signing, alice.token(), keys).await.0, StatusCode::OK);
    let bob_key = SigningKey::new();
    let bob_master = bob_key.key(&bob, "master", None);
    assert_eq!(s.post(signing, bob.token(), json!({"master_key": bob_master})).await.0, StatusCode::OK);

    // Alice's self-signing key signs her device; her device signs her master key; her
    // user-signing key signs Bob's master key.
    let ssk_id = format!("ed25519:{}", ssk.public);
    let device_id = format!("ed25519:{}", alice.device_id);
    let usk_id = format!("ed25519:{}", usk.public);
    let body = json!({
        alice.user_id.clone(): {
            alice.device_id.clone(): signed_as(&alice, &ssk, &ssk.public, &alice_device),
            master.public.clone(): signed_as(&alice, &device, &alice.device_id, &alice_master),
        },
        bob.user_id.clone(): {bob_key.public.clone(): signed_as(&alice, &usk, &usk.public, &bob_master)},
    });
    let (status, resp) = s.post(signatures, alice.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp.get("failures").is_none_or(|f| f.as_object().is_some_and(|f| f.is_empty())), "{resp}");

    // Charlie sees Alice's own signatures on her device and master key, not hers on Bob's key.
    let query = json!({"device_keys": {alice.user_id.clone(): [], bob.user_id.clone(): []}});
    let (_, resp) = s.post("/_matrix/client/v3/keys/query", charlie.token(), query.clone()).await;
    let dev = &resp["device_keys"][&alice.user_id][&alice.device_id];
    assert!(dev["signatures"][&alice.user_id][&ssk_id].is_string(), "{resp}");
    assert!(resp["master_keys"][&alice.user_id]["signatures"][&alice.user_id][&device_id].is_string(), "{resp}");
    assert!(resp["master_keys"][&bob.user_id]["keys"].is_object(), "{resp}");
    assert!(resp["master_keys"][&bob.user_id]["signatures"].get(&alice.user_id).is_none(), "{resp}");
    // Alice sees her signature of Bob's master key.
    let (_, resp) = s.post("/_matrix/client/v3/keys/query", alice.token(), query).await;
    assert!(resp["master_keys"][&bob.user_id]["signatures"][&alice.user_id][&usk_id].is_string(), "{resp}");

    // A signature by a key that is not Alice's self-signing key, and a changed object, fail.
    let stranger = SigningKey::new();
    let mut changed = alice_device.clone();
    changed["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let body = json!({
        alice.user_id.clone(): {alice.device_id.clone(): signed_as(&alice, &stranger, &ssk.public, &alice_device)},
        bob.user_id.clone(): {bob_key.public.clone(): signed_as(&alice, &usk, &usk.public, &json!({"user_id": bob.user_id}))},
    });
    let (status, resp) = s.post(signatures, alice.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE", "{resp}");
    assert_eq!(resp["failures"][&bob.user_id][&bob_key.public]["errcode"], "M_INVALID_SIGNATURE", "{resp}");
    let body =
        json!({alice.user_id.clone(): {alice.device_id.clone(): signed_as(&alice, &ssk, &ssk.public, &changed)}});
    let (_, resp) = s.post(signatures, alice.token(), body).await;
    assert_eq!(resp["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE", "{resp}");
}

fn backup_key(first_message_index: u64, forwarded_count: u64, is_verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ephemeral": tag, "ciphertext": tag, "mac": tag},
    })
}

/// Sytest "Can create backup version", "Can update backup version", "Responds correctly when
/// backup is empty", "Can backup keys", "Can update keys with better versions", "Will not update
/// keys with worse versions", "Will not back up to an old backup version", "Can delete backup",
/// "Deleted & recreated backups are empty", "Can create more than 10 backup versions" (numbers
/// are never reused); Complement TestE2EKeyBackupReplaceRoomKeyRules.
#[tokio::test]
async fn key_backup() {
    let (s, [alice, bob]) = server_with(["alice", "bob"]).await;
    let algorithm =
        json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abcdefg"}});
    let (status, resp) = s.get("/_matrix/client/v3/room_keys/version", alice.token()).await;
    assert_eq!((status, resp["errcode"].clone()), (StatusCode::NOT_FOUND, json!("M_NOT_FOUND")), "{resp}");

    let (status, resp) = s.post("/_matrix/client/v3/room_keys/version", alice.token(), algorithm.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let v1 = resp["version"].as_str().expect("version").to_owned();
    let (status, info) = s.get("/_matrix/client/v3/room_keys/version", alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!((info["version"].as_str(), info["count"].as_u64()), (Some(v1.as_str()), Some(0)), "{info}");
    assert_eq!(info["auth_data"], algorithm["auth_data"], "{info}");
    // Bob has no backup of his own.
    let (status, _) = s.get(&format!("/_matrix/client/v3/room_keys/version/{v1}"), bob.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // New auth data; the algorithm cannot change.
    let mut updated = algorithm.clone();
    updated["auth_data"] = json!({"public_key": "hijklmnop"});
    let path = format!("/_matrix/client/v3/room_keys/version/{v1}");
    assert_eq!(s.put(&path, alice.token(), updated.clone()).await.0, StatusCode::OK);
    let (_, info) = s.get(&path, alice.token()).await;
    assert_eq!(info["auth_data"]["public_key"], "hijklmnop", "{info}");
    let (status, _) =
        s.put(&path, alice.token(), json!({"algorithm": "m.other", "auth_data": {"public_key": "x"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let unknown = json!({"algorithm": "m.other", "auth_data": {}});
    let (status, resp) = s.post("/_matrix/client/v3/room_keys/version", alice.token(), unknown).await;
    assert_eq!((status, resp["errcode"].clone()), (StatusCode::BAD_REQUEST, json!("M_INVALID_PARAM")), "{resp}");

    // Keys: stored, then replaced only by better copies.
    let room = "!room:localhost";
    let keys = format!("/_matrix/client/v3/room_keys/keys?version={v1}");
    let body =
        json!({"rooms": {room: {"sessions": {"s1": backup_key(3, 1, false, "a"), "s2": backup_key(0, 0, true, "b")}}}});
    let (status, resp) = s.put(&keys, alice.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["count"], 2, "{resp}");
    let etag = resp["etag"].clone();
    let session = |id: &str| format!("/_matrix/client/v3/room_keys/keys/{room}/{id}?version={v1}");
    // Worse (unverified over verified, later first message) changes nothing; better replaces.
    assert_eq!(s.put(&session("s2"), alice.token(), backup_key(0, 0, false, "worse")).await.0, StatusCode::OK);
    assert_eq!(s.put(&session("s1"), alice.token(), backup_key(5, 0, false, "worse")).await.0, StatusCode::OK);
    let (status, resp) = s.put(&session("s1"), alice.token(), backup_key(1, 0, false, "better")).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_ne!(resp["etag"], etag, "the etag did not change: {resp}");
    let (_, got) = s.get(&session("s2"), alice.token()).await;
    assert_eq!(got["session_data"]["ciphertext"], "b", "{got}");
    let (_, got) = s.get(&session("s1"), alice.token()).await;
    assert_eq!(got["session_data"]["ciphertext"], "better", "{got}");
    let (_, all) = s.get(&keys, alice.token()).await;
    assert_eq!(all["rooms"][room]["sessions"].as_object().map(serde_json::Map::len), Some(2), "{all}");
    let (status, none) = s.get(&session("s9"), alice.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{none}");

    // A new version: the old one takes no more keys, and says which is current.
    let (_, resp) = s.post("/_matrix/client/v3/room_keys/version", alice.token(), algorithm.clone()).await;
    let v2 = resp["version"].as_str().expect("version").to_owned();
    assert_ne!(v1, v2);
    let (status, resp) = s.put(&session("s3"), alice.token(), backup_key(0, 0, false, "c")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{resp}");
    assert_eq!(resp["errcode"], "M_WRONG_ROOM_KEYS_VERSION", "{resp}");
    assert_eq!(resp["current_version"], v2.as_str(), "{resp}");

    // Deleting keys and versions; a deleted version is gone and its number not reused.
    let (status, resp) = s.delete(&session("s1"), alice.token(), None).await;
    assert_eq!((status, resp["count"].clone()), (StatusCode::OK, json!(1)), "{resp}");
    assert_eq!(
        s.delete(&format!("/_matrix/client/v3/room_keys/version/{v2}"), alice.token(), None).await.0,
        StatusCode::OK
    );
    let (status, _) = s.get(&format!("/_matrix/client/v3/room_keys/version/{v2}"), alice.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, info) = s.get("/_matrix/client/v3/room_keys/version", alice.token()).await;
    assert_eq!((info["version"].as_str(), info["count"].as_u64()), (Some(v1.as_str()), Some(1)), "{info}");
    let (_, resp) = s.post("/_matrix/client/v3/room_keys/version", alice.token(), algorithm).await;
    let v3 = resp["version"].as_str().expect("version");
    assert!(v3 != v1 && v3 != v2, "a version number was reused: {v3}");
    let (_, resp) = s.get(&format!("/_matrix/client/v3/room_keys/keys?version={v3}"), alice.token()).await;
    assert_eq!(resp["rooms"], json!({}), "{resp}");
    // Bad input.
    let (status, _) = s.put(&session("s4"), alice.token(), json!({"first_message_index": -1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
