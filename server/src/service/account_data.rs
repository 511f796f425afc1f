//! Account data (global and per room), sync filters and push rules.
//!
//! Push rules are account data of type `m.push_rules` (as clients see them in `/sync`), starting
//! from the spec's server-default rule set; the server alone writes them.

use ruma::{
    UserId,
    push::{Action, AnyPushRuleRef, InsertPushRuleError, NewPushRule, RemovePushRuleError, RuleKind, Ruleset},
};
use serde_json::{Value as JsonValue, json};

use super::{ServiceError, ServiceResult};
use crate::storage::Storage;

/// Account-data types only the server may write (spec: reject with 405 `M_BAD_JSON`).
const SERVER_MANAGED_TYPES: [&str; 2] = ["m.fully_read", "m.push_rules"];
const PUSH_RULES_TYPE: &str = "m.push_rules";

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
        Ok(match stored.and_then(|v| v.get("global").cloned()) {
            Some(global) => {
                serde_json::from_value(global).map_err(|e| ServiceError::Internal(format!("stored push rules: {e}")))?
            }
            None => Ruleset::server_default(user_id),
        })
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
