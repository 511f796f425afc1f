//! A `/sync` response read into the MLS steps it asks for, in the order they must be taken:
//! Welcomes (to-device) first, so the groups they create exist, then each room's timeline in
//! order, so every commit is applied before the messages of the epoch it starts.
//!
//! Anything that is not what an MLS room should hold is skipped, never a reason to fail: the
//! response comes from the network.

use std::collections::BTreeMap;

use poststelle_mls::reference::{COMMIT_REF_FIELD, MediaRef};
use serde_json::Value;

/// The to-device event type that carries a Welcome.
pub const WELCOME_EVENT: &str = "de.poststelle.mls.welcome";
/// The state event type of accepted commits.
pub const COMMIT_EVENT: &str = "m.mls.commit";

/// One step of a sync, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAction {
    /// Join the group a Welcome invites this device to.
    Welcome { room_id: String, algorithm: String, welcome: WelcomeSource },
    /// Apply an accepted commit.
    Commit { room_id: String, event_id: String, commit: CommitSource, epoch: Option<u64> },
    /// Decrypt an application message.
    Message { room_id: String, event_id: String, sender: String, ciphertext: String },
    /// The user was invited to a room (network membership).
    Invite { room_id: String, inviter: Option<String> },
}

/// Where a Welcome is: inline, or in the media repository when it was too large for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WelcomeSource {
    Inline(String),
    Media(String),
}

/// Where a commit is: inline, or in the media repository when it was too large for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitSource {
    Inline(String),
    Media(MediaRef),
}

/// What one sync response holds for this client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncBatch {
    pub next_batch: String,
    pub actions: Vec<SyncAction>,
    /// Rooms whose timeline was cut (`limited`): commits may be missing in between.
    pub gaps: Vec<String>,
    /// Unused one-time keys by algorithm.
    pub one_time_key_counts: BTreeMap<String, u64>,
    /// Fallback-key algorithms with an unused fallback key; `None` if the server did not say.
    pub unused_fallback_key_types: Option<Vec<String>>,
}

/// Reads a sync response; `None` only when it has no `next_batch`.
pub fn parse(response: &Value) -> Option<SyncBatch> {
    let next_batch = response.get("next_batch")?.as_str()?.to_owned();
    let mut batch = SyncBatch { next_batch, ..SyncBatch::default() };

    for event in array(response.pointer("/to_device/events")) {
        if let Some(action) = welcome(event) {
            batch.actions.push(action);
        }
    }
    for (room_id, room) in object(response.pointer("/rooms/invite")) {
        let inviter = array(room.pointer("/invite_state/events"))
            .find(|e| str_at(e, "/type") == Some("m.room.member") && str_at(e, "/content/membership") == Some("invite"))
            .and_then(|e| str_at(e, "/sender"))
            .map(str::to_owned);
        batch.actions.push(SyncAction::Invite { room_id: room_id.clone(), inviter });
    }
    for (room_id, room) in object(response.pointer("/rooms/join")) {
        if room.pointer("/timeline/limited").and_then(Value::as_bool) == Some(true) {
            batch.gaps.push(room_id.clone());
        }
        for event in array(room.pointer("/timeline/events")) {
            if let Some(action) = timeline_action(room_id, event) {
                batch.actions.push(action);
            }
        }
    }
    for (algorithm, count) in object(response.get("device_one_time_keys_count")) {
        if let Some(count) = count.as_u64() {
            batch.one_time_key_counts.insert(algorithm.clone(), count);
        }
    }
    batch.unused_fallback_key_types = response
        .get("device_unused_fallback_key_types")
        .and_then(Value::as_array)
        .map(|types| types.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    Some(batch)
}

fn welcome(event: &Value) -> Option<SyncAction> {
    if str_at(event, "/type")? != WELCOME_EVENT {
        return None;
    }
    let content = event.get("content")?;
    let welcome = match (str_at(content, "/welcome"), str_at(content, "/welcome_url")) {
        (Some(inline), _) => WelcomeSource::Inline(inline.to_owned()),
        (None, Some(url)) => WelcomeSource::Media(url.to_owned()),
        (None, None) => return None,
    };
    Some(SyncAction::Welcome {
        room_id: str_at(content, "/room_id")?.to_owned(),
        algorithm: str_at(content, "/algorithm")?.to_owned(),
        welcome,
    })
}

fn timeline_action(room_id: &str, event: &Value) -> Option<SyncAction> {
    let event_id = str_at(event, "/event_id")?.to_owned();
    let content = event.get("content")?;
    match str_at(event, "/type")? {
        // The epoch-0 initialisation carries neither ciphertext nor reference: skipped.
        COMMIT_EVENT if str_at(event, "/state_key") == Some("") => {
            let commit = match (str_at(content, "/ciphertext"), content.get(COMMIT_REF_FIELD)) {
                (Some(inline), _) => CommitSource::Inline(inline.to_owned()),
                (None, Some(reference)) => CommitSource::Media(serde_json::from_value(reference.clone()).ok()?),
                (None, None) => return None,
            };
            Some(SyncAction::Commit {
                room_id: room_id.to_owned(),
                event_id,
                commit,
                epoch: content.get("epoch").and_then(Value::as_u64),
            })
        }
        "m.room.encrypted" => Some(SyncAction::Message {
            room_id: room_id.to_owned(),
            event_id,
            sender: str_at(event, "/sender")?.to_owned(),
            ciphertext: str_at(content, "/ciphertext")?.to_owned(),
        }),
        _ => None,
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn array(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

fn object(value: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    value.and_then(Value::as_object).into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ROOM: &str = "!mailbox:example.org";

    fn commit(event_id: &str, ciphertext: Option<&str>, epoch: u64) -> Value {
        let mut content = json!({"algorithm": "m.mls.v1.X", "epoch": epoch});
        if let Some(c) = ciphertext {
            content["ciphertext"] = json!(c);
        }
        json!({"type": COMMIT_EVENT, "state_key": "", "event_id": event_id, "sender": "@a:x", "content": content})
    }

    fn message(event_id: &str, ciphertext: &str) -> Value {
        json!({"type": "m.room.encrypted", "event_id": event_id, "sender": "@a:x",
               "content": {"algorithm": "m.mls.v1.X", "ciphertext": ciphertext}})
    }

    #[test]
    fn welcomes_come_first_then_each_timeline_in_order() {
        let response = json!({
            "next_batch": "s42",
            "rooms": {
                "join": {ROOM: {"timeline": {"limited": false, "events": [
                    commit("$init", None, 0),
                    message("$m1", "AAA"),
                    commit("$c2", Some("CCC"), 2),
                    {"type": "m.room.message", "event_id": "$plain", "sender": "@a:x", "content": {"body": "x"}},
                    message("$m2", "BBB"),
                    {"type": COMMIT_EVENT, "state_key": "", "event_id": "$c3", "content": {"epoch": 3,
                        COMMIT_REF_FIELD: {"url": "mxc://x/big", "sha256": "SHA", "size": 70000}}},
                    {"type": COMMIT_EVENT, "state_key": "", "event_id": "$bad", "content": {"epoch": 4,
                        COMMIT_REF_FIELD: {"url": "mxc://x/big"}}},
                    {"type": "m.mls.commit", "state_key": "other", "event_id": "$odd", "content": {"ciphertext": "Z"}},
                    {"type": "m.room.encrypted", "content": {"ciphertext": "no event id"}},
                    "not even an object",
                ]}}},
                "invite": {"!other:example.org": {"invite_state": {"events": [
                    {"type": "m.room.member", "state_key": "@b:x", "sender": "@a:x", "content": {"membership": "invite"}}
                ]}}}
            },
            "to_device": {"events": [
                {"type": "m.room_key", "content": {}},
                {"type": WELCOME_EVENT, "sender": "@a:x", "content": {"room_id": ROOM, "algorithm": "m.mls.v1.X", "welcome": "WWW"}},
                {"type": WELCOME_EVENT, "sender": "@a:x", "content": {"room_id": "!big:x", "algorithm": "m.mls.v1.X", "welcome_url": "mxc://x/abc"}},
                {"type": WELCOME_EVENT, "sender": "@a:x", "content": {"room_id": "!broken:x"}},
            ]},
            "device_one_time_keys_count": {"m.mls.v1.X": 3, "signed_curve25519": "nonsense"},
            "device_unused_fallback_key_types": ["m.mls.v1.X"]
        });
        let batch = parse(&response).unwrap();
        assert_eq!(batch.next_batch, "s42");
        let x = "m.mls.v1.X".to_owned();
        assert_eq!(
            batch.actions,
            vec![
                SyncAction::Welcome {
                    room_id: ROOM.into(),
                    algorithm: x.clone(),
                    welcome: WelcomeSource::Inline("WWW".into())
                },
                SyncAction::Welcome {
                    room_id: "!big:x".into(),
                    algorithm: x.clone(),
                    welcome: WelcomeSource::Media("mxc://x/abc".into())
                },
                SyncAction::Invite { room_id: "!other:example.org".into(), inviter: Some("@a:x".into()) },
                SyncAction::Message {
                    room_id: ROOM.into(),
                    event_id: "$m1".into(),
                    sender: "@a:x".into(),
                    ciphertext: "AAA".into()
                },
                SyncAction::Commit {
                    room_id: ROOM.into(),
                    event_id: "$c2".into(),
                    commit: CommitSource::Inline("CCC".into()),
                    epoch: Some(2)
                },
                SyncAction::Message {
                    room_id: ROOM.into(),
                    event_id: "$m2".into(),
                    sender: "@a:x".into(),
                    ciphertext: "BBB".into()
                },
                SyncAction::Commit {
                    room_id: ROOM.into(),
                    event_id: "$c3".into(),
                    commit: CommitSource::Media(MediaRef {
                        url: "mxc://x/big".into(),
                        sha256: "SHA".into(),
                        size: 70_000
                    }),
                    epoch: Some(3)
                },
            ]
        );
        assert!(batch.gaps.is_empty());
        assert_eq!(batch.one_time_key_counts, [(x.clone(), 3)].into_iter().collect());
        assert_eq!(batch.unused_fallback_key_types, Some(vec![x]));
    }

    #[test]
    fn limited_timelines_and_missing_fields() {
        let response =
            json!({"next_batch": "s1", "rooms": {"join": {ROOM: {"timeline": {"limited": true, "events": []}}}}});
        let batch = parse(&response).unwrap();
        assert_eq!(batch.gaps, vec![ROOM.to_owned()]);
        assert_eq!(batch.unused_fallback_key_types, None);
        assert!(parse(&json!({"rooms": {}})).is_none());
        assert!(parse(&json!([1, 2])).is_none());
        assert_eq!(parse(&json!({"next_batch": "s2", "rooms": "garbage", "to_device": 5})).unwrap().actions, vec![]);
    }
}
