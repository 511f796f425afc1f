//! What a `/sync` asks for: its token (a vector of stream positions) and its filter.

use std::time::Duration;

use ruma::OwnedUserId;
use serde_json::Value as JsonValue;

use crate::service::{ServiceError, ServiceResult, filter::EventFilter};

/// Positions of every stream a sync token covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub events: i64,
    pub receipts: i64,
    pub to_device: i64,
    pub account_data: i64,
    pub typing: u64,
    pub device_lists: i64,
    pub presence: i64,
}

impl SyncToken {
    /// Tokens from before the device-list stream (five parts) or the presence stream (six
    /// parts) read as their start.
    pub fn parse(s: &str) -> ServiceResult<Self> {
        let bad = || ServiceError::InvalidParam(format!("unknown sync token {s:?}"));
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('_').collect();
        let (e, r, t, a, y, d, p) = match parts.as_slice() {
            [e, r, t, a, y] => (e, r, t, a, y, &"0", &"0"),
            [e, r, t, a, y, d] => (e, r, t, a, y, d, &"0"),
            [e, r, t, a, y, d, p] => (e, r, t, a, y, d, p),
            _ => return Err(bad()),
        };
        let n = |x: &str| x.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(bad);
        Ok(Self {
            events: n(e)?,
            receipts: n(r)?,
            to_device: n(t)?,
            account_data: n(a)?,
            typing: y.parse().map_err(|_| bad())?,
            device_lists: n(d)?,
            presence: n(p)?,
        })
    }

    pub fn render(&self) -> String {
        format!(
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.receipts,
            self.to_device,
            self.account_data,
            self.typing,
            self.device_lists,
            self.presence
        )
    }
}

/// The sync filter in domain terms.
#[derive(Clone, Debug)]
pub struct SyncFilter {
    pub rooms: EventFilter,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub account_data: EventFilter,
    pub room_account_data: EventFilter,
    /// The filter's `presence` section (types, senders, limit).
    pub presence: EventFilter,
    pub to_device_limit: usize,
    pub include_leave: bool,
}

impl Default for SyncFilter {
    fn default() -> Self {
        Self {
            rooms: EventFilter::default(),
            timeline: EventFilter::default(),
            state: EventFilter::default(),
            ephemeral: EventFilter::default(),
            account_data: EventFilter::default(),
            room_account_data: EventFilter::default(),
            presence: EventFilter::default(),
            to_device_limit: 100,
            include_leave: false,
        }
    }
}

impl SyncFilter {
    /// Reads a filter definition (`FilterDefinition` JSON).
    pub fn from_json(v: &JsonValue) -> ServiceResult<Self> {
        let bad = |e: String| ServiceError::BadJson(format!("invalid filter: {e}"));
        if !v.is_object() {
            return Err(bad("must be a JSON object".into()));
        }
        let room = v.get("room").cloned().unwrap_or(JsonValue::Null);
        let sub = |name: &str| EventFilter::from_json(room.get(name).unwrap_or(&JsonValue::Null)).map_err(bad);
        let include_leave = match room.get("include_leave") {
            None | Some(JsonValue::Null) => false,
            Some(JsonValue::Bool(b)) => *b,
            Some(_) => return Err(bad("include_leave must be a boolean".into())),
        };
        Ok(Self {
            rooms: EventFilter::from_json(&room).map_err(bad)?,
            timeline: sub("timeline")?,
            state: sub("state")?,
            ephemeral: sub("ephemeral")?,
            room_account_data: sub("account_data")?,
            account_data: EventFilter::from_json(v.get("account_data").unwrap_or(&JsonValue::Null)).map_err(bad)?,
            presence: EventFilter::from_json(v.get("presence").unwrap_or(&JsonValue::Null)).map_err(bad)?,
            to_device_limit: 100,
            include_leave,
        })
    }
}

/// A sync request in domain terms.
#[derive(Debug)]
pub struct SyncRequest {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub since: Option<String>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: SyncFilter,
    /// `set_presence`: `online` (the default), `unavailable` or `offline` (presence untouched).
    pub set_presence: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let t = SyncToken {
            events: 5,
            receipts: 2,
            to_device: 9,
            account_data: 3,
            typing: 7,
            device_lists: 4,
            presence: 6,
        };
        assert_eq!(SyncToken::parse(&t.render()).unwrap(), t);
        let old = SyncToken::parse("s5_2_9_3_7").unwrap();
        assert_eq!(old, SyncToken { device_lists: 0, presence: 0, ..t });
        assert_eq!(SyncToken::parse("s5_2_9_3_7_4").unwrap(), SyncToken { presence: 0, ..t });
        for bad in [
            "",
            "s1_2",
            "x1_2_3_4_5",
            "s1_2_3_4_x",
            "s-1_2_3_4_5",
            "s1_2_3_4_5_x",
            "s1_2_3_4_5_6_x",
            "s1_2_3_4_5_6_7_8",
        ] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}
