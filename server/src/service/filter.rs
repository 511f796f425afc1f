//! Event filters (`RoomEventFilter` of the client API) applied to stored events, and the
//! parsing of filters given by id or inline JSON.

use serde_json::Value as JsonValue;

use crate::storage::rooms::EventRow;

/// The parts of a `RoomEventFilter` that select events.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub limit: Option<usize>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    pub unread_thread_notifications: bool,
}

fn strings(v: Option<&JsonValue>) -> Result<Option<Vec<String>>, String> {
    match v {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| "filter lists hold strings".to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err("filter fields must be lists of strings".to_owned()),
    }
}

/// `*` matches any run of characters, as filters allow.
fn matches(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len()
                && value.starts_with(head)
                && (0..=value.len() - head.len())
                    .any(|i| value.is_char_boundary(head.len() + i) && matches(tail, &value[head.len() + i..]))
        }
    }
}

impl EventFilter {
    /// Reads a `RoomEventFilter` JSON object.
    pub fn from_json(v: &JsonValue) -> Result<Self, String> {
        if v.is_null() {
            return Ok(Self::default());
        }
        let JsonValue::Object(_) = v else { return Err("a filter must be a JSON object".into()) };
        let limit = match v.get("limit") {
            None | Some(JsonValue::Null) => None,
            Some(l) => Some(
                l.as_u64().filter(|n| *n > 0).ok_or_else(|| "filter limit must be a positive integer".to_owned())?
                    as usize,
            ),
        };
        let flag = |name: &str| -> Result<bool, String> {
            match v.get(name) {
                None | Some(JsonValue::Null) => Ok(false),
                Some(JsonValue::Bool(b)) => Ok(*b),
                Some(_) => Err(format!("{name} must be a boolean")),
            }
        };
        Ok(Self {
            limit,
            types: strings(v.get("types"))?,
            not_types: strings(v.get("not_types"))?.unwrap_or_default(),
            senders: strings(v.get("senders"))?,
            not_senders: strings(v.get("not_senders"))?.unwrap_or_default(),
            rooms: strings(v.get("rooms"))?,
            not_rooms: strings(v.get("not_rooms"))?.unwrap_or_default(),
            contains_url: match v.get("contains_url") {
                None | Some(JsonValue::Null) => None,
                Some(JsonValue::Bool(b)) => Some(*b),
                Some(_) => return Err("contains_url must be a boolean".into()),
            },
            lazy_load_members: flag("lazy_load_members")?,
            include_redundant_members: flag("include_redundant_members")?,
            unread_thread_notifications: flag("unread_thread_notifications")?,
        })
    }

    pub fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self.rooms.as_ref().is_none_or(|rs| rs.iter().any(|r| r == room_id))
    }

    pub fn allows_type(&self, kind: &str) -> bool {
        !self.not_types.iter().any(|p| matches(p, kind))
            && self.types.as_ref().is_none_or(|ts| ts.iter().any(|p| matches(p, kind)))
    }

    pub fn allows(&self, row: &EventRow) -> bool {
        if !self.allows_type(&row.event_type) || !self.allows_room(&row.room_id) {
            return false;
        }
        if self.not_senders.iter().any(|s| *s == row.sender)
            || self.senders.as_ref().is_some_and(|s| !s.contains(&row.sender))
        {
            return false;
        }
        if let Some(want) = self.contains_url {
            let has =
                crate::service::rooms::client_format::content_of(&row.pdu).get("url").is_some_and(JsonValue::is_string);
            if has != want {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_prefixes() {
        assert!(matches("m.room.*", "m.room.message"));
        assert!(matches("*", "anything"));
        assert!(!matches("m.room.*", "m.call.invite"));
        assert!(matches("m.*.message", "m.room.message"));
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(EventFilter::from_json(&serde_json::json!({"limit": -1})).is_err());
        assert!(EventFilter::from_json(&serde_json::json!({"types": "m.room.message"})).is_err());
        assert!(EventFilter::from_json(&serde_json::json!([])).is_err());
        let f = EventFilter::from_json(&serde_json::json!({"not_types": ["m.room.member"], "limit": 3})).unwrap();
        assert!(!f.allows_type("m.room.member"));
        assert_eq!(f.limit, Some(3));
    }
}
