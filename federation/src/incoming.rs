//! The first steps of accepting a PDU from another server, before anything is stored: its size
//! and shape, its id (the reference hash), and its signatures and content hash. What fails here
//! is dropped, not stored; an event whose content hash does not match is kept in redacted form,
//! as the spec requires.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, Verified},
};
use serde_json::value::RawValue as RawJsonValue;

use crate::{Pdu, builder::MAX_PDU_BYTES, noncanonical};

/// A PDU as received: well-formed, with its id computed, not yet verified.
#[derive(Clone, Debug)]
pub struct IncomingPdu {
    pub pdu: Pdu,
    /// The canonical JSON to store and pass on (without `unsigned`).
    pub json: CanonicalJsonObject,
}

/// Why a received PDU is dropped.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("the PDU is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("malformed PDU: {0}")]
    Format(String),
    /// A number canonical JSON does not allow (a float, an integer beyond ±(2^53−1)): room
    /// versions 6 and later refuse the event. Its id, when redaction removes the number.
    #[error("invalid JSON for the room: {reason}")]
    InvalidJson { event_id: Option<OwnedEventId>, reason: String },
    #[error("the PDU belongs to room {found}, not {expected}")]
    WrongRoom { expected: OwnedRoomId, found: String },
    #[error("signature check failed: {0}")]
    Signatures(String),
}

/// Reads a PDU of a room of the given version: size, JSON shape and the spec's format rules,
/// then its event id (the reference hash). `room` is the room it must belong to, if known.
pub fn parse(
    raw: &RawJsonValue,
    rules: &RoomVersionRules,
    room: Option<&RoomId>,
) -> Result<IncomingPdu, IncomingError> {
    if raw.get().len() > MAX_PDU_BYTES * 2 {
        // Generous for whitespace; the canonical size is checked below.
        return Err(IncomingError::TooLarge);
    }
    let mut json: CanonicalJsonObject = serde_json::from_str(raw.get()).map_err(|e| invalid_json(raw, rules, e))?;
    json.remove("unsigned");
    // Room versions 3 and later derive the id; one the sender added is not part of the event.
    json.remove("event_id");
    let text = serde_json::to_string(&json).map_err(|e| IncomingError::Format(e.to_string()))?;
    if text.len() > MAX_PDU_BYTES {
        return Err(IncomingError::TooLarge);
    }
    ruma::state_res::check_pdu_format(&json, &rules.event_format).map_err(IncomingError::Format)?;
    let hash = ruma::signatures::reference_hash(&json, rules).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => IncomingError::TooLarge,
        other => IncomingError::Format(other.to_string()),
    })?;
    let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(|e| IncomingError::Format(e.to_string()))?;
    let pdu = Pdu::from_canonical(event_id, &json).map_err(|e| IncomingError::Format(e.0))?;
    if let Some(expected) = room {
        let found = room_of(&pdu, rules).map_err(IncomingError::Format)?;
        if found != expected {
            return Err(IncomingError::WrongRoom { expected: expected.to_owned(), found: found.to_string() });
        }
    }
    Ok(IncomingPdu { pdu, json })
}

/// Why a PDU is not canonical JSON: a number it holds (see [`noncanonical`]), or its shape.
fn invalid_json(raw: &RawJsonValue, rules: &RoomVersionRules, e: serde_json::Error) -> IncomingError {
    let value: Option<serde_json::Value> = serde_json::from_str(raw.get()).ok();
    match value.as_ref().and_then(|v| Some((v, noncanonical::find_invalid(v)?))) {
        Some((value, reason)) => IncomingError::InvalidJson { event_id: noncanonical::event_id(value, rules), reason },
        None => IncomingError::Format(format!("not canonical JSON: {e}")),
    }
}

/// The room a PDU belongs to: its `room_id`, or for a v12 create event the id it defines.
pub fn room_of(pdu: &Pdu, rules: &RoomVersionRules) -> Result<OwnedRoomId, String> {
    match &pdu.room_id {
        Some(room) => Ok(room.clone()),
        None if rules.authorization.room_create_event_id_as_room_id && pdu.kind.to_string() == "m.room.create" => {
            OwnedRoomId::try_from(format!("!{}", pdu.event_id.as_str().trim_start_matches('$')))
                .map_err(|e| e.to_string())
        }
        None => Err("the PDU has no room_id".to_owned()),
    }
}

/// The keys that must be known to check the PDU's signatures: for every server whose
/// signature the spec requires, the key ids it signed with.
pub fn required_keys(
    incoming: &IncomingPdu,
    rules: &RoomVersionRules,
) -> Result<BTreeMap<OwnedServerName, BTreeSet<String>>, IncomingError> {
    let servers = ruma::signatures::required_server_signatures_to_verify_event(&incoming.json, &rules.signatures)
        .map_err(|e| IncomingError::Signatures(e.to_string()))?;
    let signatures = match incoming.json.get("signatures") {
        Some(CanonicalJsonValue::Object(s)) => s,
        _ => return Err(IncomingError::Signatures("no signatures".into())),
    };
    let mut out = BTreeMap::new();
    for server in servers {
        let ids: BTreeSet<String> = match signatures.get(server.as_str()) {
            Some(CanonicalJsonValue::Object(keys)) => {
                keys.keys().filter(|k| k.starts_with("ed25519:")).cloned().collect()
            }
            _ => BTreeSet::new(),
        };
        if ids.is_empty() {
            return Err(IncomingError::Signatures(format!("not signed by {server}")));
        }
        out.insert(server, ids);
    }
    Ok(out)
}

/// Checks the signatures the spec requires against the given keys, and the content hash: a
/// PDU whose content does not match its hash is redacted (what was signed is still the event).
pub fn verify(
    incoming: IncomingPdu,
    keys: &PublicKeyMap,
    rules: &RoomVersionRules,
) -> Result<IncomingPdu, IncomingError> {
    match ruma::signatures::verify_event(keys, &incoming.json, rules) {
        Ok(Verified::All) => Ok(incoming),
        Ok(Verified::Signatures) => {
            let redacted = ruma::canonical_json::redact(incoming.json, &rules.redaction, None)
                .map_err(|e| IncomingError::Format(e.to_string()))?;
            let pdu = Pdu::from_canonical(incoming.pdu.event_id, &redacted).map_err(|e| IncomingError::Format(e.0))?;
            Ok(IncomingPdu { pdu, json: redacted })
        }
        Err(e) => Err(IncomingError::Signatures(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, owned_room_id, server_name, user_id};
    use serde_json::json;

    use super::*;
    use crate::{
        ProtoEvent, SigningKey,
        builder::{Placement, build_event},
    };

    fn built(key: &SigningKey, body: &str) -> crate::BuiltEvent {
        let rules = RoomVersionId::V11.rules().unwrap();
        build_event(
            ProtoEvent {
                room_id: Some(owned_room_id!("!r:a.example")),
                sender: user_id!("@alice:a.example").to_owned(),
                kind: "m.room.message".into(),
                state_key: None,
                content: json!({"body": body, "msgtype": "m.text"}).as_object().unwrap().clone(),
                redacts: None,
            },
            Placement {
                prev_events: vec![OwnedEventId::try_from("$prev").unwrap()],
                auth_events: vec![OwnedEventId::try_from("$create").unwrap()],
                depth: 2,
                origin_server_ts: 1_700_000_000_000,
            },
            &rules,
            server_name!("a.example"),
            key,
        )
        .unwrap()
    }

    fn keys(key: &SigningKey) -> PublicKeyMap {
        let mut set = ruma::signatures::PublicKeySet::new();
        set.insert(key.key_id(), ruma::serde::Base64::new(key.public_key().to_vec()));
        PublicKeyMap::from([("a.example".to_owned(), set)])
    }

    fn raw(json: &CanonicalJsonObject) -> Box<RawJsonValue> {
        serde_json::value::to_raw_value(json).unwrap()
    }

    #[test]
    fn a_signed_event_parses_to_its_id_and_verifies() {
        let (key, _) = SigningKey::generate().unwrap();
        let rules = RoomVersionId::V11.rules().unwrap();
        let event = built(&key, "hello");
        let mut sent = event.json.clone();
        sent.insert("unsigned".into(), CanonicalJsonValue::Object(CanonicalJsonObject::new()));
        let incoming = parse(&raw(&sent), &rules, Some(&owned_room_id!("!r:a.example"))).unwrap();
        assert_eq!(incoming.pdu.event_id, event.pdu.event_id);
        assert!(!incoming.json.contains_key("unsigned"));
        let needed = required_keys(&incoming, &rules).unwrap();
        assert_eq!(needed.len(), 1);
        assert!(needed[server_name!("a.example")].contains(&key.key_id()));
        let verified = verify(incoming, &keys(&key), &rules).unwrap();
        assert_eq!(verified.json, event.json);
    }

    #[test]
    fn a_changed_content_is_redacted_and_a_changed_signed_field_fails() {
        let (key, _) = SigningKey::generate().unwrap();
        let rules = RoomVersionId::V11.rules().unwrap();
        let event = built(&key, "hello");
        let mut tampered = event.json.clone();
        tampered.insert(
            "content".into(),
            CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                "body".to_owned(),
                CanonicalJsonValue::String("changed".into()),
            )])),
        );
        let incoming = parse(&raw(&tampered), &rules, None).unwrap();
        // Content is not part of the reference hash of a message: the id stays the same.
        assert_eq!(incoming.pdu.event_id, event.pdu.event_id);
        let verified = verify(incoming, &keys(&key), &rules).unwrap();
        assert_eq!(verified.pdu.content.get(), "{}");

        let mut forged = event.json.clone();
        forged.insert("sender".into(), CanonicalJsonValue::String("@mallory:a.example".into()));
        let incoming = parse(&raw(&forged), &rules, None).unwrap();
        assert!(matches!(verify(incoming, &keys(&key), &rules), Err(IncomingError::Signatures(_))));

        let (other, _) = SigningKey::generate().unwrap();
        let incoming = parse(&raw(&event.json), &rules, None).unwrap();
        assert!(matches!(verify(incoming, &keys(&other), &rules), Err(IncomingError::Signatures(_))));
    }

    #[test]
    fn floats_and_big_integers_are_invalid_json_named_by_the_events_id() {
        let (key, _) = SigningKey::generate().unwrap();
        let rules = RoomVersionId::V11.rules().unwrap();
        let event = built(&key, "hello");
        for bad in [json!(1.1), json!(9_007_199_254_740_992_u64)] {
            let mut sent = serde_json::to_value(&event.json).unwrap();
            sent["content"]["bad_val"] = bad;
            let raw = serde_json::value::to_raw_value(&sent).unwrap();
            match parse(&raw, &rules, None) {
                Err(IncomingError::InvalidJson { event_id, reason }) => {
                    assert_eq!(event_id.as_ref(), Some(&event.pdu.event_id));
                    assert!(reason.starts_with("content.bad_val"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
            // Where redaction keeps it, the event cannot be named.
            let mut kept = serde_json::to_value(&event.json).unwrap();
            kept["depth"] = json!(2.5);
            let raw = serde_json::value::to_raw_value(&kept).unwrap();
            assert!(matches!(parse(&raw, &rules, None), Err(IncomingError::InvalidJson { event_id: None, .. })));
        }
    }

    #[test]
    fn wrong_room_malformed_and_oversized_pdus_are_refused() {
        let (key, _) = SigningKey::generate().unwrap();
        let rules = RoomVersionId::V11.rules().unwrap();
        let event = built(&key, "hello");
        let wrong = parse(&raw(&event.json), &rules, Some(&owned_room_id!("!other:a.example")));
        assert!(matches!(wrong, Err(IncomingError::WrongRoom { .. })));
        let mut no_sender = event.json.clone();
        no_sender.remove("sender");
        assert!(matches!(parse(&raw(&no_sender), &rules, None), Err(IncomingError::Format(_))));
        let mut big = event.json.clone();
        big.insert(
            "content".into(),
            CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                "body".to_owned(),
                CanonicalJsonValue::String("x".repeat(MAX_PDU_BYTES)),
            )])),
        );
        assert!(matches!(parse(&raw(&big), &rules, None), Err(IncomingError::TooLarge)));
    }
}
