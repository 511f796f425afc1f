//! Building a new local event: the PDU fields, the content hash, the server's signature and the
//! reference-hash event id (room versions ≥ 4), with the room id derived from the create event in
//! room versions ≥ 12.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, ServerName,
    canonical_json::to_canonical_value, room_version_rules::RoomVersionRules,
};

use crate::{Pdu, keys::SigningKey};

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// What a client (or the server itself) asks to send, before it becomes a PDU.
#[derive(Clone, Debug)]
pub struct ProtoEvent {
    /// `None` only for the create event of a room whose id derives from it (v12+).
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub kind: String,
    pub state_key: Option<String>,
    pub content: serde_json::Map<String, serde_json::Value>,
    /// For redactions: the redacted event.
    pub redacts: Option<OwnedEventId>,
}

/// Where a new event goes in the room graph.
#[derive(Clone, Debug)]
pub struct Placement {
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: u64,
    pub origin_server_ts: u64,
}

/// A signed, hashed event with its id.
#[derive(Clone, Debug)]
pub struct BuiltEvent {
    pub pdu: Pdu,
    /// The canonical JSON as stored and sent over federation (no `event_id`, no `unsigned`).
    pub json: CanonicalJsonObject,
    /// The canonical JSON text (what the size limit is measured on).
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("event is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("content is not valid canonical JSON: {0}")]
    BadContent(String),
    #[error("{0}")]
    Internal(String),
}

/// Builds and signs a new event in the given room version.
pub fn build_event(
    proto: ProtoEvent,
    placement: Placement,
    rules: &RoomVersionRules,
    origin: &ServerName,
    key: &SigningKey,
) -> Result<BuiltEvent, BuildError> {
    let canonical = |v: serde_json::Value| to_canonical_value(v).map_err(|e| BuildError::BadContent(e.to_string()));
    let ids = |ids: &[OwnedEventId]| {
        CanonicalJsonValue::Array(ids.iter().map(|id| CanonicalJsonValue::String(id.to_string())).collect())
    };
    let is_create = proto.kind == "m.room.create";
    let mut content = proto.content;
    let mut obj = CanonicalJsonObject::new();
    if let Some(redacts) = &proto.redacts {
        // Room version 11 moved `redacts` into the content; older versions keep it at the top.
        if rules.redaction.keep_room_redaction_redacts {
            content.insert("redacts".into(), redacts.to_string().into());
        } else {
            obj.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
    }
    obj.insert("auth_events".into(), ids(&placement.auth_events));
    obj.insert("content".into(), canonical(serde_json::Value::Object(content))?);
    obj.insert("depth".into(), canonical(placement.depth.into())?);
    obj.insert("origin_server_ts".into(), canonical(placement.origin_server_ts.into())?);
    obj.insert("prev_events".into(), ids(&placement.prev_events));
    obj.insert("sender".into(), CanonicalJsonValue::String(proto.sender.to_string()));
    obj.insert("type".into(), CanonicalJsonValue::String(proto.kind.clone()));
    if let Some(room_id) = &proto.room_id {
        obj.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    } else if !(is_create && rules.authorization.room_create_event_id_as_room_id) {
        return Err(BuildError::Internal("only a v12 create event may lack a room id".into()));
    }
    if let Some(state_key) = &proto.state_key {
        obj.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }

    let json_error = |e: ruma::signatures::JsonError| match e {
        ruma::signatures::JsonError::PduTooLarge => BuildError::TooLarge,
        other => BuildError::Internal(other.to_string()),
    };
    ruma::signatures::hash_and_sign_event(origin.as_str(), key.pair(), &mut obj, &rules.redaction)
        .map_err(json_error)?;
    let text = serde_json::to_string(&obj).map_err(|e| BuildError::Internal(e.to_string()))?;
    if text.len() > MAX_PDU_BYTES {
        return Err(BuildError::TooLarge);
    }
    let hash = ruma::signatures::reference_hash(&obj, rules).map_err(json_error)?;
    let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(|e| BuildError::Internal(e.to_string()))?;
    // A v12 create event keeps `room_id: None`, as in its JSON: the auth rules reject one that
    // has a room id. Its room's id is `room_id_of_create_event`.
    let pdu = Pdu::from_canonical(event_id, &obj).map_err(|e| BuildError::Internal(e.to_string()))?;
    Ok(BuiltEvent { pdu, json: obj, text })
}

/// The room id a v12 create event defines: `!` and the event id's reference hash.
pub fn room_id_of_create_event(event_id: &ruma::EventId, _origin: &ServerName) -> Result<OwnedRoomId, BuildError> {
    let hash = event_id.as_str().trim_start_matches('$');
    OwnedRoomId::try_from(format!("!{hash}")).map_err(|e| BuildError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, server_name, user_id};
    use serde_json::json;

    use super::*;

    fn proto(room: Option<&str>, kind: &str, key: Option<&str>, content: serde_json::Value) -> ProtoEvent {
        ProtoEvent {
            room_id: room.map(|r| OwnedRoomId::try_from(r).unwrap()),
            sender: user_id!("@alice:example.org").to_owned(),
            kind: kind.into(),
            state_key: key.map(Into::into),
            content: content.as_object().unwrap().clone(),
            redacts: None,
        }
    }

    fn place() -> Placement {
        Placement { prev_events: vec![], auth_events: vec![], depth: 1, origin_server_ts: 1_700_000_000_000 }
    }

    #[test]
    fn v12_create_event_defines_the_room_id_and_verifies() {
        let (key, _) = SigningKey::generate().unwrap();
        let rules = RoomVersionId::V12.rules().unwrap();
        let origin = server_name!("example.org");
        let built = build_event(
            proto(None, "m.room.create", Some(""), json!({"room_version": "12"})),
            place(),
            &rules,
            origin,
            &key,
        )
        .unwrap();
        assert!(built.pdu.room_id.is_none());
        let room_id = room_id_of_create_event(&built.pdu.event_id, origin).unwrap();
        assert_eq!(room_id.as_str().trim_start_matches('!'), built.pdu.event_id.as_str().trim_start_matches('$'));
        assert!(!built.json.contains_key("room_id"));
        // The signature verifies with the public key, and the content hash matches.
        let mut keys = ruma::signatures::PublicKeyMap::new();
        let mut set = ruma::signatures::PublicKeySet::new();
        set.insert(key.key_id(), ruma::serde::Base64::new(key.public_key().to_vec()));
        keys.insert("example.org".into(), set);
        assert_eq!(
            ruma::signatures::verify_event(&keys, &built.json, &rules).unwrap(),
            ruma::signatures::Verified::All
        );
    }

    #[test]
    fn event_id_is_the_reference_hash_and_tampering_changes_it() {
        let (key, _) = SigningKey::generate().unwrap();
        let rules = RoomVersionId::V11.rules().unwrap();
        let origin = server_name!("example.org");
        let a = build_event(
            proto(Some("!r:example.org"), "m.room.message", None, json!({"body": "a"})),
            place(),
            &rules,
            origin,
            &key,
        )
        .unwrap();
        let again = ruma::signatures::reference_hash(&a.json, &rules).unwrap();
        assert_eq!(a.pdu.event_id.as_str(), format!("${again}"));
        // The reference hash covers the redacted form, so content changes keep it only via the
        // content hash: a different body gives a different hash and so a different id.
        let b = build_event(
            proto(Some("!r:example.org"), "m.room.message", None, json!({"body": "b"})),
            place(),
            &rules,
            origin,
            &key,
        )
        .unwrap();
        assert_ne!(a.pdu.event_id, b.pdu.event_id);
    }

    #[test]
    fn redacts_moves_into_content_from_v11() {
        let (key, _) = SigningKey::generate().unwrap();
        let origin = server_name!("example.org");
        let target = OwnedEventId::try_from("$abc").unwrap();
        for (version, in_content) in [(RoomVersionId::V10, false), (RoomVersionId::V11, true)] {
            let mut p = proto(Some("!r:example.org"), "m.room.redaction", None, json!({}));
            p.redacts = Some(target.clone());
            let built = build_event(p, place(), &version.rules().unwrap(), origin, &key).unwrap();
            assert_eq!(built.json.contains_key("redacts"), !in_content, "{version}");
            assert_eq!(built.pdu.redacts.as_ref(), Some(&target));
        }
    }

    #[test]
    fn oversized_events_are_refused() {
        let (key, _) = SigningKey::generate().unwrap();
        let rules = RoomVersionId::V11.rules().unwrap();
        let big = "x".repeat(MAX_PDU_BYTES);
        let err = build_event(
            proto(Some("!r:example.org"), "m.room.message", None, json!({"body": big})),
            place(),
            &rules,
            server_name!("example.org"),
            &key,
        )
        .unwrap_err();
        assert!(matches!(err, BuildError::TooLarge));
    }
}
