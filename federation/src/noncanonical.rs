//! JSON that canonical JSON does not allow: floats and integers outside
//! [-(2^53)+1, 2^53-1]. Room versions 6 and later refuse events that hold such a value (and this
//! server stores none, whatever the version), yet other servers sign and send them: Synapse's
//! `canonicaljson` writes a float in Python's shortest form. Encoding such JSON the same way
//! lets a request carrying one be told apart from a forged request (its X-Matrix signature
//! verifies: a well-authenticated request with a bad event, answered 400 `M_BAD_JSON`, not 401),
//! and lets such a PDU be named by its event id when it is refused.

use ruma::{
    CanonicalJsonObject, OwnedEventId, ServerName, SigningKeyAlgorithm,
    api::federation::authentication::XMatrix,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, verify_canonical_json_bytes},
};
use serde_json::{Number, Value};

/// The largest magnitude of an integer canonical JSON allows.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Where `value` holds a number canonical JSON does not allow, if it does: the path of the
/// first such number (`content.bad_val`) and what is wrong with it.
pub fn find_invalid(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut Vec<String>) -> Option<String> {
        match value {
            Value::Number(n) if !allowed(n) => {
                let kind = if n.is_f64() { "a float" } else { "an integer out of range" };
                Some(format!("{}: {n} is {kind}", if path.is_empty() { "(top)".to_owned() } else { path.join(".") }))
            }
            Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
                path.push(i.to_string());
                let found = walk(v, path);
                path.pop();
                found
            }),
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                path.push(k.clone());
                let found = walk(v, path);
                path.pop();
                found
            }),
            _ => None,
        }
    }
    walk(value, &mut Vec::new())
}

fn allowed(n: &Number) -> bool {
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u <= MAX_SAFE_INTEGER,
        (None, Some(i)) => i.unsigned_abs() <= MAX_SAFE_INTEGER,
        (None, None) => false,
    }
}

/// `value` as canonical JSON (keys sorted by code point, no whitespace, strings escaped as
/// little as JSON allows), with floats as Python writes them (`1.1`, `1e+16`, `1e-05`).
/// Integers beyond 64 bits have been read as floats and so differ from Python's exact digits.
pub fn encode(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) if n.is_f64() => out.push_str(&python_float(n.as_f64().unwrap_or_default())),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        // `serde_json`'s map is ordered by key bytes: UTF-8 order is code point order.
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
        // Null, booleans, integers and strings: serde_json writes them canonically.
        other => out.push_str(&other.to_string()),
    }
}

/// A finite float as Python's `repr`: the shortest digits that read back the same, in
/// positional form for exponents from -4 to 15 (with at least one digit after the point) and
/// otherwise as `d.ddde±XX`.
fn python_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..16).contains(&exponent) {
        let sign_e = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{sign_e}{:02}", exponent.unsigned_abs());
    }
    if exponent < 0 {
        let zeros = "0".repeat(usize::try_from(-exponent - 1).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    let point = usize::try_from(exponent).unwrap_or(0) + 1;
    if digits.len() <= point {
        format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

/// Checks the X-Matrix signature of a request whose JSON body holds numbers canonical JSON does
/// not allow (which ruma cannot encode), over the body encoded as [`encode`] does. `Err` when
/// the body is not such JSON or the signature does not verify with the origin's `keys`.
pub fn verify_request(
    xmatrix: &XMatrix,
    request: &http::Request<&[u8]>,
    destination: &ServerName,
    keys: &PublicKeyMap,
) -> Result<(), String> {
    let body: Value = serde_json::from_slice(request.body()).map_err(|e| format!("the body is not JSON: {e}"))?;
    if find_invalid(&body).is_none() {
        return Err("the body is canonical JSON".to_owned());
    }
    let uri = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or_default();
    let object = serde_json::json!({
        "method": request.method().as_str(),
        "uri": uri,
        "origin": xmatrix.origin,
        "destination": destination,
        "content": body,
    });
    let key = keys
        .get(xmatrix.origin.as_str())
        .and_then(|set| set.get(xmatrix.key.as_str()))
        .ok_or_else(|| format!("no key {} of {}", xmatrix.key, xmatrix.origin))?;
    if xmatrix.key.algorithm() != SigningKeyAlgorithm::Ed25519 {
        return Err(format!("unsupported key algorithm {}", xmatrix.key.algorithm()));
    }
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        key.as_bytes(),
        xmatrix.sig.as_bytes(),
        encode(&object).as_bytes(),
    )
    .map_err(|e| e.to_string())
}

/// The event id of a PDU that holds numbers canonical JSON does not allow, when redaction
/// removes them all (they are in the content of most event types, or in a top-level field of
/// no meaning): the reference hash covers only the redacted event. `None` when a kept field
/// holds one.
pub fn event_id(pdu: &Value, rules: &RoomVersionRules) -> Option<OwnedEventId> {
    /// Stands in for the numbers while ruma redacts; must not survive redaction.
    const STAND_IN: &str = "\u{0}noncanonical number\u{0}";
    fn replace(value: &Value) -> Value {
        match value {
            Value::Number(n) if !allowed(n) => Value::String(STAND_IN.to_owned()),
            Value::Array(items) => Value::Array(items.iter().map(replace).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), replace(v))).collect()),
            other => other.clone(),
        }
    }
    let mut object: CanonicalJsonObject = serde_json::from_value(replace(pdu)).ok()?;
    object.remove("unsigned");
    object.remove("event_id");
    let redacted = ruma::canonical_json::redact(object, &rules.redaction, None).ok()?;
    let survived = serde_json::to_string(&redacted).ok()?.contains("noncanonical number");
    if survived {
        return None;
    }
    let hash = ruma::signatures::reference_hash(&redacted, rules).ok()?;
    OwnedEventId::try_from(format!("${hash}")).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn floats_are_written_as_python_writes_them() {
        let cases = [
            (1.1, "1.1"),
            (100.0, "100.0"),
            (-0.5, "-0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e20, "1.2345e+20"),
            (123_456.789, "123456.789"),
            (1e300, "1e+300"),
        ];
        for (f, python) in cases {
            assert_eq!(python_float(f), python, "{f}");
        }
    }

    #[test]
    fn canonical_encoding_sorts_keys_and_keeps_integers() {
        let value = json!({"b": [1, 2.5, {"z": null, "a": true}], "a": "é\n\"", "c": 9_007_199_254_740_993_u64});
        assert_eq!(encode(&value), r#"{"a":"é\n\"","b":[1,2.5,{"a":true,"z":null}],"c":9007199254740993}"#);
    }

    #[test]
    fn floats_and_big_integers_are_found_with_their_path() {
        assert_eq!(
            find_invalid(&json!({"content": {"ok": 1, "bad_val": 1.1}})).unwrap(),
            "content.bad_val: 1.1 is a float"
        );
        assert!(find_invalid(&json!({"a": [0, 9_007_199_254_740_992_u64]})).unwrap().starts_with("a.1:"));
        assert!(find_invalid(&json!({"a": -9_007_199_254_740_992_i64})).is_some());
        assert!(find_invalid(&json!({"a": [9_007_199_254_740_991_u64, -9_007_199_254_740_991_i64]})).is_none());
    }
}
