//! Stored PDUs in the client format: the PDU's protocol fields removed, `event_id`, `room_id`
//! and `unsigned` (age, transaction id, previous content, redaction) added, redactions applied.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    canonical_json::{RedactedBecause, redact_in_place},
    room_version_rules::RedactionRules,
};
use serde_json::{Map, Value as JsonValue, json};

use crate::storage::rooms::EventRow;

/// Who is looking: the transaction id is shown only to the device that sent the event.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
}

/// Fields of a PDU that clients do not see.
const PROTOCOL_FIELDS: &[&str] =
    &["auth_events", "prev_events", "depth", "hashes", "signatures", "origin", "prev_state"];

fn parse(text: &str) -> Option<CanonicalJsonObject> {
    serde_json::from_str(text).ok()
}

/// The event in the client format (`ClientEvent`), with `now` for `unsigned.age`.
pub fn client_event(row: &EventRow, rules: &RedactionRules, viewer: Viewer<'_>, now: i64) -> JsonValue {
    let Some(mut obj) = parse(&row.pdu) else {
        // Stored PDUs are canonical JSON we wrote or verified; this cannot happen short of
        // corruption, and then the client gets the id at least.
        tracing::error!(event_id = %row.event_id, "stored PDU is not JSON");
        return json!({ "event_id": row.event_id, "room_id": row.room_id, "type": row.event_type, "content": {} });
    };
    let mut unsigned = Map::new();
    if row.redacted_by.is_some() {
        let because = row.redaction_pdu.as_deref().and_then(parse).map(|mut r| {
            strip(&mut r);
            if let Some(id) = &row.redacted_by {
                r.insert("event_id".into(), CanonicalJsonValue::String(id.clone()));
            }
            r.insert("room_id".into(), CanonicalJsonValue::String(row.room_id.clone()));
            RedactedBecause::from_json(r)
        });
        if redact_in_place(&mut obj, rules, because).is_err() {
            obj.insert("content".into(), CanonicalJsonValue::Object(CanonicalJsonObject::new()));
        }
    }
    strip(&mut obj);
    let mut value = serde_json::to_value(&obj).unwrap_or_default();
    let Some(map) = value.as_object_mut() else { return value };
    map.insert("event_id".into(), row.event_id.clone().into());
    map.insert("room_id".into(), row.room_id.clone().into());
    // Room version 11 moved `redacts` into the content; clients still read it at the top too.
    if row.event_type == "m.room.redaction"
        && !map.contains_key("redacts")
        && let Some(r) = map.get("content").and_then(|c| c.get("redacts")).cloned()
    {
        map.insert("redacts".into(), r);
    }
    if let Some(JsonValue::Object(existing)) = map.remove("unsigned") {
        unsigned.extend(existing);
    }
    let ts = map.get("origin_server_ts").and_then(JsonValue::as_i64).unwrap_or(now);
    unsigned.insert("age".into(), (now - ts).max(0).into());
    if row.sender == viewer.user_id
        && let (Some(txn), Some(dev), Some(viewer_dev)) = (&row.txn_id, &row.sender_device, viewer.device_id)
        && dev == viewer_dev
    {
        unsigned.insert("transaction_id".into(), txn.clone().into());
    }
    if let Some(prev) = row.prev_pdu.as_deref().and_then(|p| serde_json::from_str::<JsonValue>(p).ok()) {
        if let Some(content) = prev.get("content") {
            unsigned.insert("prev_content".into(), content.clone());
        }
        if let Some(sender) = prev.get("sender") {
            unsigned.insert("prev_sender".into(), sender.clone());
        }
    }
    map.insert("unsigned".into(), JsonValue::Object(unsigned));
    value
}

/// A stored PDU with its content and other non-essential keys removed by the room version's
/// redaction rules, as text; `None` if it is not a JSON object (corruption).
pub fn pruned_pdu(text: &str, rules: &RedactionRules) -> Option<String> {
    let object = ruma::canonical_json::redact(parse(text)?, rules, None).ok()?;
    serde_json::to_string(&object).ok()
}

/// The event as `m.room.*` stripped state for invites and knocks.
pub fn stripped(row: &EventRow) -> JsonValue {
    let pdu: JsonValue = serde_json::from_str(&row.pdu).unwrap_or_default();
    json!({
        "type": row.event_type,
        "state_key": row.state_key,
        "sender": row.sender,
        "content": pdu.get("content").cloned().unwrap_or_else(|| json!({})),
    })
}

fn strip(obj: &mut CanonicalJsonObject) {
    for f in PROTOCOL_FIELDS {
        obj.remove(*f);
    }
}

/// The content of a stored PDU.
pub fn content_of(pdu: &str) -> JsonValue {
    serde_json::from_str::<JsonValue>(pdu)
        .ok()
        .and_then(|mut v| v.get_mut("content").map(JsonValue::take))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use ruma::RoomVersionId;

    use super::*;

    fn row(pdu: JsonValue) -> EventRow {
        EventRow {
            event_id: "$e".into(),
            room_id: "!r:x".into(),
            stream_ordering: 1,
            event_type: pdu["type"].as_str().unwrap().into(),
            state_key: pdu.get("state_key").and_then(|v| v.as_str()).map(Into::into),
            sender: "@a:x".into(),
            pdu: pdu.to_string(),
            redacted_by: None,
            sender_device: Some("DEV".into()),
            txn_id: Some("t1".into()),
            prev_pdu: None,
            redaction_pdu: None,
        }
    }

    #[test]
    fn protocol_fields_are_hidden_and_transaction_id_only_for_the_sender_device() {
        let pdu = json!({"type": "m.room.message", "sender": "@a:x", "content": {"body": "hi"}, "depth": 3,
                         "auth_events": [], "prev_events": [], "hashes": {}, "signatures": {}, "origin_server_ts": 10,
                         "room_id": "!r:x"});
        let rules = RoomVersionId::V11.rules().unwrap().redaction;
        let own = client_event(&row(pdu.clone()), &rules, Viewer { user_id: "@a:x", device_id: Some("DEV") }, 15);
        assert_eq!(own["unsigned"]["transaction_id"], "t1");
        assert_eq!(own["unsigned"]["age"], 5);
        for f in ["depth", "auth_events", "prev_events", "hashes", "signatures"] {
            assert!(own.get(f).is_none(), "{f} leaked");
        }
        let other = client_event(&row(pdu), &rules, Viewer { user_id: "@b:x", device_id: Some("DEV") }, 15);
        assert!(other["unsigned"].get("transaction_id").is_none());
    }

    #[test]
    fn redacted_events_lose_their_content_and_carry_the_redaction() {
        let pdu = json!({"type": "m.room.message", "sender": "@a:x", "content": {"body": "secret"},
                         "origin_server_ts": 10, "room_id": "!r:x", "depth": 1, "auth_events": [], "prev_events": []});
        let mut r = row(pdu);
        r.redacted_by = Some("$red".into());
        r.redaction_pdu = Some(
            json!({"type": "m.room.redaction", "sender": "@a:x", "content": {"redacts": "$e"}, "origin_server_ts": 11})
                .to_string(),
        );
        let rules = RoomVersionId::V11.rules().unwrap().redaction;
        let e = client_event(&r, &rules, Viewer { user_id: "@a:x", device_id: None }, 20);
        assert_eq!(e["content"], json!({}));
        assert_eq!(e["unsigned"]["redacted_because"]["event_id"], "$red");
    }
}
