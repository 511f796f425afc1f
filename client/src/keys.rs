//! What the client publishes about its device (the signed device keys naming its MLS key,
//! KeyPackages as one-time and fallback keys) and the checks on what it claims of others.

use std::collections::BTreeMap;

use poststelle_mls::client::MlsDevice;
use poststelle_mls::key_package::decode_and_verify;
use poststelle_mls::{DeviceIdentity, Suite, codec};
use serde_json::{Map, Value, json};

use crate::ClientError;
use crate::sync::SyncBatch;

/// The suites this client offers KeyPackages for: the default and the post-quantum hybrid.
pub const OFFERED_SUITES: [Suite; 2] = [Suite::DEFAULT, Suite::PQ_HYBRID];
/// How many unused one-time KeyPackages per suite the client keeps on the server.
pub const ONE_TIME_TARGET: u64 = 10;
/// Below this many the client uploads more.
const ONE_TIME_LOW: u64 = 5;

/// Matrix canonical JSON: object keys sorted, no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect::<Map<_, _>>())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// The device keys object: the device's MLS signature key under `ed25519:<device>`, signed
/// with that key over the canonical JSON.
pub fn signed_device_keys(mls: &MlsDevice) -> Result<Value, ClientError> {
    let identity = mls.identity();
    let key_id = format!("ed25519:{}", identity.device_id);
    let algorithms: Vec<String> = OFFERED_SUITES.iter().map(|s| s.algorithm()).collect();
    let mut keys = json!({
        "user_id": identity.user_id,
        "device_id": identity.device_id,
        "algorithms": algorithms,
        "keys": {&key_id: codec::encode(&mls.signature_public_key(Suite::DEFAULT)?)},
    });
    let signature = mls.sign(Suite::DEFAULT, canonical_json(&keys).as_bytes())?;
    keys["signatures"] = json!({&identity.user_id: {&key_id: codec::encode(&signature)}});
    Ok(keys)
}

/// The upload for a fresh device: device keys, one-time and fallback KeyPackages per suite.
pub fn initial_upload(mls: &mut MlsDevice) -> Result<Value, ClientError> {
    let mut body = top_up_upload(mls, &BTreeMap::new(), Some(&[]))?.unwrap_or_else(|| json!({}));
    body["device_keys"] = signed_device_keys(mls)?;
    Ok(body)
}

/// The KeyPackages to upload after a sync that reported `counts` and `unused_fallbacks`;
/// `None` when nothing is missing.
pub fn top_up_upload(
    mls: &mut MlsDevice,
    counts: &BTreeMap<String, u64>,
    unused_fallbacks: Option<&[String]>,
) -> Result<Option<Value>, ClientError> {
    let mut one_time = Map::new();
    let mut fallback = Map::new();
    for suite in OFFERED_SUITES {
        let algorithm = suite.algorithm();
        let have = counts.get(&algorithm).copied().unwrap_or(0);
        if have < ONE_TIME_LOW {
            for (key_id, value) in mls.key_packages(suite, (ONE_TIME_TARGET - have) as usize)? {
                one_time.insert(key_id, json!(value));
            }
        }
        if unused_fallbacks.is_some_and(|types| !types.contains(&algorithm)) {
            let (key_id, value) = mls.last_resort_key_package(suite)?;
            fallback.insert(key_id, json!(value));
        }
    }
    if one_time.is_empty() && fallback.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({"one_time_keys": one_time, "fallback_keys": fallback})))
}

/// The upload a sync asks for; the server must have reported counts at all (an empty report
/// may just mean a server that does not count).
pub fn top_up_after_sync(mls: &mut MlsDevice, batch: &SyncBatch) -> Result<Option<Value>, ClientError> {
    if batch.one_time_key_counts.is_empty() && batch.unused_fallback_key_types.is_none() {
        return Ok(None);
    }
    let counts = if batch.one_time_key_counts.is_empty() {
        // Only the fallback list was reported: leave the one-time keys alone.
        OFFERED_SUITES.iter().map(|s| (s.algorithm(), ONE_TIME_TARGET)).collect()
    } else {
        batch.one_time_key_counts.clone()
    };
    top_up_upload(mls, &counts, batch.unused_fallback_key_types.as_deref())
}

/// Checks a KeyPackage claimed for `user`'s `device`: its signatures and lifetime, that its
/// credential names that device, and that it is signed by the MLS key the device published.
pub fn check_claimed(
    user_id: &str,
    device_id: &str,
    device_keys: Option<&Value>,
    value: &str,
    now_secs: u64,
) -> Result<(), ClientError> {
    let key_package = decode_and_verify(value, now_secs).map_err(poststelle_mls::client::MlsClientError::from)?;
    let named = DeviceIdentity::from_credential(key_package.leaf_node().credential());
    if named != Some(DeviceIdentity::new(user_id, device_id)) {
        return Err(ClientError::Refused(format!(
            "the KeyPackage claimed for {user_id}/{device_id} names another device"
        )));
    }
    let published = device_keys
        .and_then(|keys| keys.pointer(&format!("/keys/ed25519:{device_id}")))
        .and_then(Value::as_str)
        .and_then(codec::decode);
    if published.as_deref() != Some(key_package.leaf_node().signature_key().as_slice()) {
        return Err(ClientError::Refused(format!(
            "the KeyPackage claimed for {user_id}/{device_id} is not signed by the device's published key"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use poststelle_mls::key_package::validate_upload;

    use super::*;

    fn device(dir: &tempfile::TempDir) -> MlsDevice {
        MlsDevice::open(dir.path(), DeviceIdentity::new("@alice:example.org", "ALICE1")).unwrap()
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let value = json!({"b": 1, "a": {"z": [3, {"y": 1, "x": 2}], "c": "ü"}});
        assert_eq!(canonical_json(&value), r#"{"a":{"c":"ü","z":[3,{"x":2,"y":1}]},"b":1}"#);
    }

    #[test]
    fn device_keys_are_signed_by_the_published_mls_key() {
        let dir = tempfile::TempDir::new().unwrap();
        let mls = device(&dir);
        let keys = signed_device_keys(&mls).unwrap();
        let public = codec::decode(keys["keys"]["ed25519:ALICE1"].as_str().unwrap()).unwrap();
        assert_eq!(public, mls.signature_public_key(Suite::DEFAULT).unwrap());
        let signature =
            codec::decode(keys["signatures"]["@alice:example.org"]["ed25519:ALICE1"].as_str().unwrap()).unwrap();
        let mut unsigned = keys.clone();
        unsigned.as_object_mut().unwrap().remove("signatures");
        // Ed25519 is deterministic: the same key over the same bytes gives the same signature.
        assert_eq!(signature, mls.sign(Suite::DEFAULT, canonical_json(&unsigned).as_bytes()).unwrap());
        assert_eq!(keys["algorithms"][1], Suite::PQ_HYBRID.algorithm());
    }

    #[test]
    fn uploads_fill_up_what_the_server_lacks() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut mls = device(&dir);
        let body = initial_upload(&mut mls).unwrap();
        assert_eq!(body["one_time_keys"].as_object().unwrap().len(), 2 * ONE_TIME_TARGET as usize);
        assert_eq!(body["fallback_keys"].as_object().unwrap().len(), 2);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        for (slot, fallback) in [("one_time_keys", false), ("fallback_keys", true)] {
            for (key_id, value) in body[slot].as_object().unwrap() {
                let (algorithm, name) = key_id.rsplit_once(':').unwrap();
                validate_upload(algorithm, name, value.as_str().unwrap(), mls.identity(), fallback, now).unwrap();
            }
        }

        let mut batch = SyncBatch::default();
        assert_eq!(top_up_after_sync(&mut mls, &batch).unwrap(), None);
        batch.one_time_key_counts = OFFERED_SUITES.iter().map(|s| (s.algorithm(), 9)).collect();
        batch.unused_fallback_key_types = Some(OFFERED_SUITES.iter().map(|s| s.algorithm()).collect());
        assert_eq!(top_up_after_sync(&mut mls, &batch).unwrap(), None);
        batch.one_time_key_counts.insert(Suite::DEFAULT.algorithm(), 2);
        batch.unused_fallback_key_types = Some(vec![Suite::DEFAULT.algorithm()]);
        let body = top_up_after_sync(&mut mls, &batch).unwrap().unwrap();
        assert_eq!(body["one_time_keys"].as_object().unwrap().len(), 8);
        let fallbacks: Vec<&String> = body["fallback_keys"].as_object().unwrap().keys().collect();
        assert_eq!(fallbacks.len(), 1);
        assert!(fallbacks[0].starts_with(&Suite::PQ_HYBRID.algorithm()));
    }

    #[test]
    fn a_claimed_key_package_must_be_the_devices_own() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut mls = device(&dir);
        let keys = signed_device_keys(&mls).unwrap();
        let (_, value) = mls.key_packages(Suite::DEFAULT, 1).unwrap().remove(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        check_claimed("@alice:example.org", "ALICE1", Some(&keys), &value, now).unwrap();
        assert!(check_claimed("@alice:example.org", "OTHER", Some(&keys), &value, now).is_err());
        assert!(check_claimed("@alice:example.org", "ALICE1", None, &value, now).is_err());
        let other_dir = tempfile::TempDir::new().unwrap();
        let other = device(&other_dir);
        let other_keys = signed_device_keys(&other).unwrap();
        assert!(check_claimed("@alice:example.org", "ALICE1", Some(&other_keys), &value, now).is_err());
        assert!(check_claimed("@alice:example.org", "ALICE1", Some(&keys), "garbage", now).is_err());
    }
}
