//! Account data (global and per room), sync filters and push rules.
//!
//! Push rules are account data of type `m.push_rules` (as clients see them in `/sync`), starting
//! from the spec's server-default rule set; the server alone writes them.

use ruma::{
    RoomId, UserId,
    push::{
        Action, AnyPushRuleRef, InsertPushRuleError, NewConditionalPushRule, NewPushRule, NewSimplePushRule,
        PushCondition, RemovePushRuleError, RuleKind, Ruleset,
    },
};
use serde_json::{Value as JsonValue, json};

use super::{ServiceError, ServiceResult};
use crate::storage::Storage;

/// Account-data types only the server may write (spec: reject with 405 `M_BAD_JSON`).
const SERVER_MANAGED_TYPES: [&str; 2] = ["m.fully_read", "m.push_rules"];
const PUSH_RULES_TYPE: &str = "m.push_rules";
/// Room account data holding the user's tags of the room.
const TAGS_TYPE: &str = "m.tag";

#[derive(Debug)]
pub struct AccountDataService {
    storage: Storage,
}

impl AccountDataService {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// Sets account data from a client; `room_id` empty for global data.
    pub async fn set(&self, user_id: &str, room_id: &str, data_type: &str, content: &JsonValue) -> ServiceResult<()> {
        if SERVER_MANAGED_TYPES.contains(&data_type) {
            return Err(ServiceError::ServerManagedType(data_type.to_owned()));
        }
        if !content.is_object() {
            return Err(ServiceError::BadJson("account data content must be a JSON object".into()));
        }
        if data_type.is_empty() || data_type.len() > 255 {
            return Err(ServiceError::InvalidParam("invalid account data type".into()));
        }
        self.storage.account_data.set(user_id, room_id, data_type, content).await?;
        Ok(())
    }

    /// Moves the user's read marker in a room: `m.fully_read`, which clients set through
    /// `/read_markers` or a receipt, never as account data.
    pub async fn set_fully_read(&self, user_id: &str, room_id: &str, event_id: &str) -> ServiceResult<()> {
        self.storage.account_data.set(user_id, room_id, "m.fully_read", &json!({ "event_id": event_id })).await?;
        Ok(())
    }

    pub async fn get(&self, user_id: &str, room_id: &str, data_type: &str) -> ServiceResult<JsonValue> {
        if data_type == PUSH_RULES_TYPE && room_id.is_empty() {
            let user = UserId::parse(user_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
            return Ok(json!({ "global": self.push_rules(&user).await? }));
        }
        self.storage
            .account_data
            .get(user_id, room_id, data_type)
            .await?
            .ok_or_else(|| ServiceError::NotFound("account data not found".into()))
    }

    /// Stores a validated filter; returns its id.
    pub async fn create_filter(&self, user_id: &str, filter: &JsonValue) -> ServiceResult<String> {
        // Ruma keeps unknown `event_format` values; the spec allows only these two.
        if let Some(format) = filter.get("event_format")
            && !matches!(format.as_str(), Some("client" | "federation"))
        {
            return Err(ServiceError::BadJson("event_format must be \"client\" or \"federation\"".into()));
        }
        Ok(self.storage.account_data.create_filter(user_id, filter).await?.to_string())
    }

    pub async fn filter(&self, user_id: &str, filter_id: &str) -> ServiceResult<JsonValue> {
        let not_found = || ServiceError::NotFound("no such filter".into());
        let id: i64 = filter_id.parse().map_err(|_| not_found())?;
        self.storage.account_data.filter(user_id, id).await?.ok_or_else(not_found)
    }

    /// The user's push rules (the server defaults until they change one).
    pub async fn push_rules(&self, user_id: &UserId) -> ServiceResult<Ruleset> {
        let stored = self.storage.account_data.get(user_id.as_str(), "", PUSH_RULES_TYPE).await?;
        push_rules_from(user_id, stored)
    }

    async fn save_push_rules(&self, user_id: &UserId, rules: &Ruleset) -> ServiceResult<()> {
        let content = json!({ "global": rules });
        self.storage.account_data.set(user_id.as_str(), "", PUSH_RULES_TYPE, &content).await?;
        Ok(())
    }

    /// Reads one rule with `f`; `NotFound` if it does not exist.
    pub async fn push_rule<T>(
        &self,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
        f: impl FnOnce(AnyPushRuleRef<'_>) -> T,
    ) -> ServiceResult<T> {
        let rules = self.push_rules(user_id).await?;
        rules.get(kind, rule_id).map(f).ok_or_else(rule_not_found)
    }

    pub async fn set_push_rule(
        &self,
        user_id: &UserId,
        rule: NewPushRule,
        after: Option<&str>,
        before: Option<&str>,
    ) -> ServiceResult<()> {
        let actions = match &rule {
            NewPushRule::Override(r) | NewPushRule::Underride(r) => &r.actions,
            NewPushRule::Content(r) => &r.actions,
            NewPushRule::Room(r) => &r.actions,
            NewPushRule::Sender(r) => &r.actions,
            _ => return Err(ServiceError::InvalidParam("unsupported push rule kind".into())),
        };
        check_actions(actions)?;
        let mut rules = self.push_rules(user_id).await?;
        rules.insert(rule, after, before).map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => ServiceError::NotFound(e.to_string()),
            _ => ServiceError::InvalidParam(e.to_string()),
        })?;
        self.save_push_rules(user_id, &rules).await
    }

    pub async fn delete_push_rule(&self, user_id: &UserId, kind: RuleKind, rule_id: &str) -> ServiceResult<()> {
        let mut rules = self.push_rules(user_id).await?;
        rules.remove(kind, rule_id).map_err(|e| match e {
            RemovePushRuleError::NotFound => rule_not_found(),
            _ => ServiceError::InvalidParam(e.to_string()),
        })?;
        self.save_push_rules(user_id, &rules).await
    }

    pub async fn set_push_rule_enabled(
        &self,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
        enabled: bool,
    ) -> ServiceResult<()> {
        let mut rules = self.push_rules(user_id).await?;
        rules.set_enabled(kind, rule_id, enabled).map_err(|_| rule_not_found())?;
        self.save_push_rules(user_id, &rules).await
    }

    pub async fn set_push_rule_actions(
        &self,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
        actions: Vec<Action>,
    ) -> ServiceResult<()> {
        check_actions(&actions)?;
        let mut rules = self.push_rules(user_id).await?;
        rules.set_actions(kind, rule_id, actions).map_err(|_| rule_not_found())?;
        self.save_push_rules(user_id, &rules).await
    }

    /// After a room upgrade: the user's tags of `old` and their own push rules for it (a room
    /// rule, override and underride rules matching its id) apply to `new` as well. What the user
    /// already set for `new` stays.
    pub async fn copy_room_settings(&self, user_id: &UserId, old: &RoomId, new: &RoomId) -> ServiceResult<()> {
        let (user, old_id, new_id) = (user_id.as_str(), old.as_str(), new.as_str());
        if let Some(tags) = self.storage.account_data.get(user, old_id, TAGS_TYPE).await?
            && self.storage.account_data.get(user, new_id, TAGS_TYPE).await?.is_none()
        {
            self.storage.account_data.set(user, new_id, TAGS_TYPE, &tags).await?;
        }
        // Server defaults name no room: only stored rules can.
        if self.storage.account_data.get(user, "", PUSH_RULES_TYPE).await?.is_none() {
            return Ok(());
        }
        let mut rules = self.push_rules(user_id).await?;
        let copies = rules_for_replacement(&rules, old, new);
        if copies.is_empty() {
            return Ok(());
        }
        for (rule, after) in copies {
            let rule_id = rule.rule_id().to_owned();
            if let Err(e) = rules.insert(rule, Some(after.as_str()), None) {
                tracing::warn!(user_id = %user, rule_id = %rule_id, error = %e, "push rule not copied to the replacement room");
            }
        }
        self.save_push_rules(user_id, &rules).await
    }
}

/// The copies, for room `new`, of the enabled rules of the user's own that apply to room `old`,
/// each with the rule it copies (it goes right after it). Rules `new` already has are left out.
fn rules_for_replacement(rules: &Ruleset, old: &RoomId, new: &RoomId) -> Vec<(NewPushRule, String)> {
    let mut copies = Vec::new();
    if let Some(room) = rules.room.get(old.as_str())
        && room.enabled
        && !room.default
        && rules.room.get(new.as_str()).is_none()
    {
        copies.push((NewPushRule::Room(NewSimplePushRule::new(new.to_owned(), room.actions.clone())), old.to_string()));
    }
    for (is_override, set) in [(true, &rules.override_), (false, &rules.underride)] {
        let kind = if is_override { RuleKind::Override } else { RuleKind::Underride };
        for rule in set.iter().filter(|r| r.enabled && !r.default && r.conditions.iter().any(|c| names_room(c, old))) {
            // Clients name a room's rule after the room; other rules are named after the new room.
            let id = if rule.rule_id.contains(old.as_str()) {
                rule.rule_id.replace(old.as_str(), new.as_str())
            } else {
                new.to_string()
            };
            if rules.get(kind.clone(), &id).is_some() {
                continue;
            }
            let conditions = rule.conditions.iter().map(|c| with_room(c, old, new)).collect();
            let copy = NewConditionalPushRule::new(id, conditions, rule.actions.clone());
            let copy = if is_override { NewPushRule::Override(copy) } else { NewPushRule::Underride(copy) };
            copies.push((copy, rule.rule_id.clone()));
        }
    }
    copies
}

/// Whether a condition matches the events of room `room` by its id.
fn names_room(condition: &PushCondition, room: &RoomId) -> bool {
    matches!(condition, PushCondition::EventMatch(m) if m.key == "room_id" && m.pattern == room.as_str())
}

/// The condition, matching room `new` where it matched room `old`.
fn with_room(condition: &PushCondition, old: &RoomId, new: &RoomId) -> PushCondition {
    match condition {
        PushCondition::EventMatch(m) if names_room(condition, old) => {
            let mut m = m.clone();
            m.pattern = new.to_string();
            PushCondition::EventMatch(m)
        }
        other => other.clone(),
    }
}

/// Ruma keeps unknown actions; like Synapse, refuse them. `dont_notify` and `coalesce` are the
/// spec's historical actions, which clients may still send and servers treat as no-ops.
fn check_actions(actions: &[Action]) -> ServiceResult<()> {
    for action in actions {
        let json = serde_json::to_value(action).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let known = match &json {
            JsonValue::String(s) => matches!(s.as_str(), "notify" | "dont_notify" | "coalesce"),
            JsonValue::Object(o) => o.get("set_tweak").is_some_and(JsonValue::is_string),
            _ => false,
        };
        if !known {
            return Err(ServiceError::InvalidParam(format!("unknown push rule action {json}")));
        }
    }
    Ok(())
}

fn rule_not_found() -> ServiceError {
    ServiceError::NotFound("push rule not found".into())
}

/// The user's push rules from their stored `m.push_rules` account data: the server's defaults
/// until they change a rule.
pub fn push_rules_from(user_id: &UserId, stored: Option<JsonValue>) -> ServiceResult<Ruleset> {
    Ok(match stored.and_then(|v| v.get("global").cloned()) {
        Some(global) => {
            serde_json::from_value(global).map_err(|e| ServiceError::Internal(format!("stored push rules: {e}")))?
        }
        None => Ruleset::server_default(user_id),
    })
}

#[cfg(test)]
mod tests {
    use ruma::{
        owned_room_id, owned_user_id,
        push::{Action, NewConditionalPushRule, NewPushRule, NewSimplePushRule, PushCondition, Ruleset},
    };

    use super::rules_for_replacement;

    fn room_match(room: &str) -> PushCondition {
        PushCondition::EventMatch(ruma::push::EventMatchConditionData::new("room_id".into(), room.into()))
    }

    #[test]
    fn a_rooms_own_rules_are_copied_for_its_replacement() {
        let (old, new, other) = (owned_room_id!("!old:a"), owned_room_id!("!new:a"), owned_room_id!("!other:a"));
        let mut rules = Ruleset::server_default(&owned_user_id!("@u:a"));
        let room = NewSimplePushRule::new(old.clone(), vec![]);
        rules.insert(NewPushRule::Room(room), None, None).unwrap();
        let mute = NewConditionalPushRule::new(old.to_string(), vec![room_match(old.as_str())], vec![]);
        rules.insert(NewPushRule::Override(mute), None, None).unwrap();
        let named = NewConditionalPushRule::new("loud".into(), vec![room_match(old.as_str())], vec![Action::Notify]);
        rules.insert(NewPushRule::Underride(named), None, None).unwrap();
        let elsewhere = NewConditionalPushRule::new("x".into(), vec![room_match(other.as_str())], vec![]);
        rules.insert(NewPushRule::Override(elsewhere), None, None).unwrap();

        let copies = rules_for_replacement(&rules, &old, &new);
        let ids: Vec<(String, String)> =
            copies.iter().map(|(r, after)| (r.rule_id().to_owned(), after.clone())).collect();
        assert_eq!(
            ids,
            [(new.to_string(), old.to_string()), (new.to_string(), old.to_string()), (new.to_string(), "loud".into())]
        );
        for (rule, after) in copies {
            if let NewPushRule::Override(r) | NewPushRule::Underride(r) = &rule {
                assert!(matches!(&r.conditions[0], PushCondition::EventMatch(m) if m.pattern == new.as_str()));
            }
            rules.insert(rule, Some(after.as_str()), None).unwrap();
        }
        // Once copied, nothing is copied again.
        assert!(rules_for_replacement(&rules, &old, &new).is_empty());
        assert!(rules.get(ruma::push::RuleKind::Underride, new.as_str()).is_some());
    }
}
