//! A PDU as a typed value: the fields the room engine needs, read lazily from the canonical
//! JSON, plus the JSON itself for storage and federation.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UInt, UserId, events::TimelineEventType,
};
use serde_json::value::RawValue as RawJsonValue;

/// A PDU (room event as servers exchange it) with its id.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// `None` only for the create event of a v12+ room (its id is the room id).
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    /// The redacted event: top-level `redacts` before v11, `content.redacts` from v11 on.
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    pub rejected: bool,
}

/// A PDU that does not have the shape the spec requires.
#[derive(Debug, thiserror::Error)]
#[error("malformed PDU: {0}")]
pub struct PduError(pub String);

fn field<'a>(obj: &'a CanonicalJsonObject, name: &str) -> Result<&'a CanonicalJsonValue, PduError> {
    obj.get(name).ok_or_else(|| PduError(format!("missing field `{name}`")))
}

fn string<'a>(obj: &'a CanonicalJsonObject, name: &str) -> Result<&'a str, PduError> {
    match field(obj, name)? {
        CanonicalJsonValue::String(s) => Ok(s),
        _ => Err(PduError(format!("field `{name}` is not a string"))),
    }
}

fn event_ids(obj: &CanonicalJsonObject, name: &str) -> Result<Vec<OwnedEventId>, PduError> {
    match field(obj, name)? {
        CanonicalJsonValue::Array(items) => items
            .iter()
            .map(|v| match v {
                CanonicalJsonValue::String(s) => {
                    OwnedEventId::try_from(s.as_str()).map_err(|e| PduError(format!("`{name}`: {e}")))
                }
                _ => Err(PduError(format!("`{name}` holds a non-string"))),
            })
            .collect(),
        _ => Err(PduError(format!("field `{name}` is not an array"))),
    }
}

impl Pdu {
    /// Reads a PDU whose id is known (room versions ≥ 3 do not carry it in the JSON).
    pub fn from_canonical(event_id: OwnedEventId, obj: &CanonicalJsonObject) -> Result<Self, PduError> {
        let room_id = match obj.get("room_id") {
            Some(CanonicalJsonValue::String(s)) => {
                Some(OwnedRoomId::try_from(s.as_str()).map_err(|e| PduError(format!("room_id: {e}")))?)
            }
            Some(_) => return Err(PduError("field `room_id` is not a string".into())),
            None => None,
        };
        let sender = OwnedUserId::try_from(string(obj, "sender")?).map_err(|e| PduError(format!("sender: {e}")))?;
        let origin_server_ts = match field(obj, "origin_server_ts")? {
            CanonicalJsonValue::Integer(i) => MilliSecondsSinceUnixEpoch(
                UInt::try_from(i64::from(*i)).map_err(|_| PduError("negative origin_server_ts".into()))?,
            ),
            _ => return Err(PduError("origin_server_ts is not an integer".into())),
        };
        let depth = match field(obj, "depth")? {
            CanonicalJsonValue::Integer(i) => {
                u64::try_from(i64::from(*i)).map_err(|_| PduError("negative depth".into()))?
            }
            _ => return Err(PduError("depth is not an integer".into())),
        };
        let content = match field(obj, "content")? {
            v @ CanonicalJsonValue::Object(_) => {
                serde_json::value::to_raw_value(v).map_err(|e| PduError(format!("content: {e}")))?
            }
            _ => return Err(PduError("content is not an object".into())),
        };
        let state_key = match obj.get("state_key") {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            Some(_) => return Err(PduError("state_key is not a string".into())),
            None => None,
        };
        let redacts = match obj.get("redacts") {
            Some(CanonicalJsonValue::String(s)) => Some(s.as_str()),
            _ => match obj.get("content") {
                Some(CanonicalJsonValue::Object(c)) => match c.get("redacts") {
                    Some(CanonicalJsonValue::String(s)) => Some(s.as_str()),
                    _ => None,
                },
                _ => None,
            },
        }
        .map(OwnedEventId::try_from)
        .transpose()
        .map_err(|e| PduError(format!("redacts: {e}")))?;
        Ok(Self {
            event_id,
            room_id,
            sender,
            origin_server_ts,
            kind: TimelineEventType::from(string(obj, "type")?),
            content,
            state_key,
            prev_events: event_ids(obj, "prev_events")?,
            auth_events: event_ids(obj, "auth_events")?,
            redacts,
            depth,
            rejected: false,
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
