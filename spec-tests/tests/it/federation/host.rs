//! Rooms the fake origin server hosts: it creates them with events it builds and signs, and
//! answers a real server's `/make_join` and `/send_join` v2 for them, so a local user of the
//! real server can join a room whose every event the test controls (rooms without power levels,
//! state events with bad signatures, create events of unknown versions, answers without a
//! create event). The real server's events sent back in `/send` are added to the room.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use ruma::{CanonicalJsonObject, room_version_rules::RoomVersionRules};
use serde_json::{Value, json};

use super::origin::{Origin, Pdu, now_ms};

/// Numbers the hosted rooms of versions before 12 (whose ids are made up).
static ROOMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The rooms an origin hosts, by room id; shared with its request handler.
pub(crate) type Hosts = Arc<Mutex<BTreeMap<String, HostedRoom>>>;

/// A room the origin holds the whole of.
pub(crate) struct HostedRoom {
    pub room_id: String,
    pub version: String,
    rules: RoomVersionRules,
    /// Every event by id.
    events: BTreeMap<String, Value>,
    /// The current state: `(type, state_key)` → event id.
    state: BTreeMap<(String, String), String>,
    tip: String,
    depth: u64,
    /// Event types left out of the state in `/send_join` answers.
    pub hidden_in_send_join: BTreeSet<String>,
}

impl HostedRoom {
    fn state_id(&self, kind: &str, key: &str) -> Option<String> {
        self.state.get(&(kind.to_owned(), key.to_owned())).cloned()
    }

    /// The `auth_events` the auth rules select for an event: the create event (not listed from
    /// v12 on), the power levels, the sender's membership; for a membership also the target's
    /// and, for joins and invites, the join rules.
    fn auth_for(&self, kind: &str, state_key: Option<&str>, sender: &str, content: &Value) -> Vec<String> {
        let mut auth = Vec::new();
        if !self.rules.authorization.room_create_event_id_as_room_id {
            auth.extend(self.state_id("m.room.create", ""));
        }
        auth.extend(self.state_id("m.room.power_levels", ""));
        auth.extend(self.state_id("m.room.member", sender));
        if kind == "m.room.member" {
            if let Some(target) = state_key.filter(|t| *t != sender) {
                auth.extend(self.state_id("m.room.member", target));
            }
            if matches!(content["membership"].as_str(), Some("join" | "invite" | "knock")) {
                auth.extend(self.state_id("m.room.join_rules", ""));
            }
        }
        auth.dedup();
        auth
    }

    /// An unsigned event on the room's tip.
    fn draft(&self, kind: &str, state_key: Option<&str>, sender: &str, content: Value) -> Value {
        let auth = self.auth_for(kind, state_key, sender, &content);
        let mut event = json!({
            "room_id": self.room_id,
            "sender": sender,
            "type": kind,
            "content": content,
            "prev_events": [self.tip],
            "auth_events": auth,
            "depth": self.depth + 1,
            "origin_server_ts": now_ms(),
        });
        if let Some(key) = state_key {
            event["state_key"] = key.into();
        }
        event
    }

    /// Adds an event (as sent) to the room and moves the tip to it.
    fn add(&mut self, id: &str, json: Value) {
        if let (Some(kind), Some(key)) = (json["type"].as_str(), json["state_key"].as_str()) {
            self.state.insert((kind.to_owned(), key.to_owned()), id.to_owned());
        }
        self.depth = self.depth.max(json["depth"].as_u64().unwrap_or(0));
        self.tip = id.to_owned();
        self.events.insert(id.to_owned(), json);
    }

    fn id_of(&self, json: &Value) -> Option<String> {
        let object: CanonicalJsonObject = serde_json::from_value(json.clone()).ok()?;
        Some(format!("${}", ruma::signatures::reference_hash(&object, &self.rules).ok()?))
    }

    /// The auth chain of `ids`: every event reachable through `auth_events`.
    fn auth_chain(&self, ids: impl IntoIterator<Item = String>) -> Vec<Value> {
        let mut todo: Vec<String> = ids.into_iter().collect();
        let mut seen = BTreeSet::new();
        while let Some(id) = todo.pop() {
            let Some(event) = self.events.get(&id) else { continue };
            for auth in event["auth_events"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if seen.insert(auth.to_owned()) {
                    todo.push(auth.to_owned());
                }
            }
        }
        seen.iter().filter_map(|id| self.events.get(id).cloned()).collect()
    }

    /// `/make_join` for `user`: a template on the tip.
    fn make_join(&self, user: &str) -> Value {
        let mut event = self.draft("m.room.member", Some(user), user, json!({"membership": "join"}));
        event.as_object_mut().unwrap().remove("origin_server_ts");
        json!({"room_version": self.version, "event": event})
    }

    /// `/send_join` v2: the state before the join (without hidden types) and its auth chain;
    /// the join becomes part of the room.
    fn send_join(&mut self, origin: &str, join: Value) -> Value {
        let state: Vec<Value> = self
            .state
            .iter()
            .filter(|((kind, _), _)| !self.hidden_in_send_join.contains(kind))
            .filter_map(|(_, id)| self.events.get(id).cloned())
            .collect();
        let mut roots: Vec<String> = self.state.values().cloned().collect();
        roots
            .extend(join["auth_events"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)));
        let auth_chain = self.auth_chain(roots);
        if let Some(id) = self.id_of(&join) {
            self.add(&id, join);
        }
        json!({"origin": origin, "state": state, "auth_chain": auth_chain, "members_omitted": false})
    }
}

/// Percent-decodes a path segment.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = segment.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The origin's answer to a request about a hosted room, if it is one: `/make_join`,
/// `/send_join` v2, `/event`, and the PDUs of `/send` recorded.
pub(crate) fn answer(hosts: &Hosts, origin: &str, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut hosts = hosts.lock().unwrap();
    let segments: Vec<String> = path.split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["", "_matrix", "federation", "v1", "make_join", room, user] => {
            let room = hosts.get(*room)?;
            Some((200, room.make_join(user).to_string()))
        }
        ["", "_matrix", "federation", "v2", "send_join", room, _] if method == "PUT" => {
            let room = hosts.get_mut(*room)?;
            let join: Value = serde_json::from_slice(body).ok()?;
            Some((200, room.send_join(origin, join).to_string()))
        }
        ["", "_matrix", "federation", "v1", "event", id] => {
            let event = hosts.values().find_map(|r| r.events.get(*id).cloned())?;
            Some((200, json!({"origin": origin, "origin_server_ts": now_ms(), "pdus": [event]}).to_string()))
        }
        ["", "_matrix", "federation", "v1", "send", _] if method == "PUT" => {
            let txn: Value = serde_json::from_slice(body).ok()?;
            for pdu in txn["pdus"].as_array().into_iter().flatten() {
                if let Some(room) = pdu["room_id"].as_str().and_then(|r| hosts.get_mut(r))
                    && let Some(id) = room.id_of(pdu)
                {
                    room.add(&id, pdu.clone());
                }
            }
            None
        }
        _ => None,
    }
}

impl Origin {
    /// Creates a room of `version` hosted here, created by `creator` (a localpart of this
    /// origin), public, with power levels giving the creator 100 only if `power_levels`; its id.
    pub(crate) fn host_room(&self, version: &str, creator: &str, power_levels: bool) -> String {
        self.host_room_with_create(version, creator, power_levels, json!({"room_version": version}))
    }

    /// [`Self::host_room`] with the create event's content given (e.g. naming another version).
    pub(crate) fn host_room_with_create(
        &self,
        version: &str,
        creator: &str,
        power_levels: bool,
        mut create_content: Value,
    ) -> String {
        let rules = ruma::RoomVersionId::try_from(version).unwrap().rules().unwrap();
        let creator = format!("@{creator}:{}", self.name);
        if !rules.authorization.use_room_create_sender {
            create_content["creator"] = creator.clone().into();
        }
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let mut create = json!({
            "sender": creator,
            "type": "m.room.create",
            "state_key": "",
            "content": create_content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": now_ms(),
        });
        if !v12 {
            let n = ROOMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            create["room_id"] = format!("!hosted{}x{n}:{}", now_ms(), self.name).into();
        }
        let create = self.sign_json(create, &rules);
        let room_id = match create.json["room_id"].as_str() {
            Some(id) => id.to_owned(),
            None => format!("!{}", &create.id[1..]),
        };
        let room = HostedRoom {
            room_id: room_id.clone(),
            version: version.to_owned(),
            rules,
            events: BTreeMap::new(),
            state: BTreeMap::new(),
            tip: String::new(),
            depth: 0,
            hidden_in_send_join: BTreeSet::new(),
        };
        self.hosts.lock().unwrap().insert(room_id.clone(), room);
        self.host_add(&room_id, &create);
        self.host_event(&room_id, "m.room.member", Some(&creator), &creator, json!({"membership": "join"}));
        if power_levels {
            // From v12 on creators have infinite power and may not be listed.
            let levels = if v12 { json!({"users": {}}) } else { json!({"users": {creator.clone(): 100}}) };
            self.host_event(&room_id, "m.room.power_levels", Some(""), &creator, levels);
        }
        self.host_event(&room_id, "m.room.join_rules", Some(""), &creator, json!({"join_rule": "public"}));
        self.host_event(
            &room_id,
            "m.room.history_visibility",
            Some(""),
            &creator,
            json!({"history_visibility": "shared"}),
        );
        room_id
    }

    /// The origin's user `sender` sends an event into a hosted room: built on its tip with the
    /// auth events the rules select, signed, added to the room (not sent anywhere).
    pub(crate) fn host_event(
        &self,
        room_id: &str,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> Pdu {
        let pdu = self.host_build(room_id, kind, state_key, sender, content);
        self.host_add(room_id, &pdu);
        pdu
    }

    /// An event of `sender` on a hosted room's tip, signed but not added to the room.
    pub(crate) fn host_build(
        &self,
        room_id: &str,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> Pdu {
        let (draft, rules) = self.host_draft(room_id, kind, state_key, sender, content);
        self.sign_json(draft, &rules)
    }

    /// An unsigned event of `sender` on a hosted room's tip, and the room's rules.
    pub(crate) fn host_draft(
        &self,
        room_id: &str,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> (Value, RoomVersionRules) {
        let hosts = self.hosts.lock().unwrap();
        let room = &hosts[room_id];
        (room.draft(kind, state_key, sender, content), room.rules.clone())
    }

    /// Every event of a hosted room, newest (deepest) first.
    pub(crate) fn host_history(&self, room_id: &str) -> Vec<Value> {
        let hosts = self.hosts.lock().unwrap();
        let mut events: Vec<Value> = hosts[room_id].events.values().cloned().collect();
        events.sort_by_key(|e| std::cmp::Reverse(e["depth"].as_u64()));
        events
    }

    /// Adds an event (e.g. one changed after signing) to a hosted room as it is.
    pub(crate) fn host_add(&self, room_id: &str, pdu: &Pdu) {
        self.hosts.lock().unwrap().get_mut(room_id).unwrap().add(&pdu.id, pdu.json.clone());
    }

    /// Leaves events of `kind` out of the state of this room's `/send_join` answers.
    pub(crate) fn hide_in_send_join(&self, room_id: &str, kind: &str) {
        self.hosts.lock().unwrap().get_mut(room_id).unwrap().hidden_in_send_join.insert(kind.to_owned());
    }

    fn sign_json(&self, event: Value, rules: &RoomVersionRules) -> Pdu {
        self.sign_as_origin(serde_json::from_value(event).unwrap(), rules)
    }
}
