//! Test-only: JSON that canonical JSON does not allow (floats, integers beyond ±(2^53−1)),
//! signed as another server would sign it. ruma's canonical JSON cannot hold such values, so the
//! fake origin signs these requests and events here: canonical JSON as Python's
//! `canonicaljson` (what Synapse signs with) writes it — keys sorted, no whitespace, floats in
//! their shortest form — then the X-Matrix request object, the content hash, the event's
//! signature and its id (the reference hash of the redacted event) over that text.
//!
//! Only floats Python and Rust write alike are supported (between 1e-4 and 1e16: `1.1`), and
//! only events whose bad values redaction removes (in the content of a message or member
//! event, or a top-level field of no meaning): the signature and id cover the redacted event,
//! which ruma then handles.

use base64::Engine as _;
use ruma::{CanonicalJsonObject, room_version_rules::RoomVersionRules, signatures::Ed25519KeyPair};
use serde_json::Value;
use sha2::Digest as _;
use spec_tests::{StatusCode, TestServer};

use super::origin::{Origin, Pdu};

/// Stands in for a bad number while ruma redacts; redaction must remove it.
const STAND_IN: &str = "(number canonical JSON does not allow)";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// `value` as canonical JSON, floats included.
pub(crate) fn canonical(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap();
            assert!((1e-4..1e16).contains(&f.abs()), "{f} is written differently by Python");
            let text = f.to_string();
            if text.contains('.') { text } else { format!("{text}.0") }
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        // serde_json's map (without `preserve_order`) iterates in key order.
        Value::Object(map) => {
            let fields: Vec<String> =
                map.iter().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v))).collect();
            format!("{{{}}}", fields.join(","))
        }
        other => other.to_string(),
    }
}

/// The value with every bad number replaced by [`STAND_IN`]: canonical JSON for ruma.
fn stand_in(value: &Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() || n.as_i64().is_none_or(|i| i.unsigned_abs() >= 1 << 53) => {
            Value::String(STAND_IN.to_owned())
        }
        Value::Array(items) => Value::Array(items.iter().map(stand_in).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), stand_in(v))).collect()),
        other => other.clone(),
    }
}

/// Adds `extra` top-level fields (which redaction removes) to `event` and `server`'s signature
/// with `key`, as a server countersigning an invite does; the hashes stay as they were.
pub(crate) fn countersign(
    server: &str,
    key: &Ed25519KeyPair,
    mut event: Value,
    extra: &serde_json::Map<String, Value>,
    rules: &RoomVersionRules,
) -> Value {
    event.as_object_mut().unwrap().extend(extra.clone());
    let object: CanonicalJsonObject = serde_json::from_value(stand_in(&event)).unwrap();
    let mut redacted = ruma::canonical_json::redact(object, &rules.redaction, None).unwrap();
    assert!(!serde_json::to_string(&redacted).unwrap().contains(STAND_IN), "redaction keeps a bad number");
    ruma::signatures::sign_json(server, key, &mut redacted).unwrap();
    event["signatures"] = serde_json::to_value(&redacted["signatures"]).unwrap();
    event
}

impl Origin {
    /// Hashes and signs `event` (which may hold bad numbers where redaction removes them) as
    /// this origin: its id and JSON.
    pub(crate) fn sign_noncanonical(&self, mut event: Value, rules: &RoomVersionRules) -> Pdu {
        let object = event.as_object_mut().unwrap();
        for field in ["signatures", "hashes", "event_id", "unsigned"] {
            object.remove(field);
        }
        let hash = sha2::Sha256::digest(canonical(&event).as_bytes());
        event["hashes"] = serde_json::json!({"sha256": b64(&hash)});
        let object: CanonicalJsonObject = serde_json::from_value(stand_in(&event)).unwrap();
        let mut redacted = ruma::canonical_json::redact(object, &rules.redaction, None).unwrap();
        assert!(!serde_json::to_string(&redacted).unwrap().contains(STAND_IN), "redaction keeps a bad number");
        ruma::signatures::sign_json(&self.name, self.key(), &mut redacted).unwrap();
        event["signatures"] = serde_json::to_value(&redacted["signatures"]).unwrap();
        let id = format!("${}", ruma::signatures::reference_hash(&redacted, rules).unwrap());
        Pdu { id, json: event }
    }

    /// An X-Matrix-signed request whose body may hold bad numbers; the status and the answer.
    pub(crate) async fn request_noncanonical(
        &self,
        to: &TestServer,
        method: &str,
        path: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        self.request_noncanonical_signed(self.key(), to, method, path, body).await
    }

    /// [`Self::request_noncanonical`] with the X-Matrix signature made with `key` (a forger's).
    pub(crate) async fn request_noncanonical_signed(
        &self,
        key: &Ed25519KeyPair,
        to: &TestServer,
        method: &str,
        path: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let signed = serde_json::json!({
            "method": method, "uri": path, "origin": self.name, "destination": to.server_name, "content": body,
        });
        let signature = ruma::signatures::KeyPair::sign(key, canonical(&signed).as_bytes());
        let header = format!(
            "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{}\"",
            self.name,
            to.server_name,
            signature.id(),
            b64(signature.as_bytes())
        );
        let response = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", to.federation_base))
            .header("authorization", header)
            .header("content-type", "application/json")
            .body(canonical(body))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends a transaction of PDUs that may hold bad numbers; the status and the answer.
    pub(crate) async fn send_noncanonical(&self, to: &TestServer, txn: &str, pdus: &[&Pdu]) -> (StatusCode, Value) {
        let pdus: Vec<Value> = pdus.iter().map(|p| p.json.clone()).collect();
        let body = serde_json::json!({"origin": self.name, "origin_server_ts": super::origin::now_ms(), "pdus": pdus});
        self.request_noncanonical(to, "PUT", &format!("/_matrix/federation/v1/send/{txn}"), &body).await
    }
}

#[test]
fn the_test_encoding_is_canonical_json_with_python_floats() {
    let value = serde_json::json!({"b": [1.1, 100.0, {"z": null}], "a": "é\"", "c": 9_007_199_254_740_992_u64});
    assert_eq!(canonical(&value), r#"{"a":"é\"","b":[1.1,100.0,{"z":null}],"c":9007199254740992}"#);
}
