//! Push rules (the spec's default rule set, then the user's changes).

use axum::extract::State;
use ruma::{
    OwnedUserId,
    api::client::push::{
        delete_pushrule::v3 as delete_rule, get_pushrule::v3 as get_rule, get_pushrule_actions::v3 as get_actions,
        get_pushrule_enabled::v3 as get_enabled, get_pushrules_all::v3 as get_all,
        get_pushrules_global_scope::v3 as get_global, set_pushrule::v3 as set_rule,
        set_pushrule_actions::v3 as set_actions, set_pushrule_enabled::v3 as set_enabled,
    },
};

use crate::{
    http::ruma::{ApiResult, Ruma},
    service::{ServiceError, sessions::Session},
    state::AppState,
};

/// `PUT /pushrules/global/{kind}/{ruleId}` as ruma parses it, except that `conditions` may be
/// left out of override and underride rules: the spec requires only `actions` ("a rule with no
/// conditions always matches"), while ruma's request type insists on `conditions`.
#[derive(Debug)]
pub(super) struct SetRuleRequest(set_rule::Request);

impl ruma::api::Metadata for SetRuleRequest {
    const METHOD: http::Method = <set_rule::Request as ruma::api::Metadata>::METHOD;
    const RATE_LIMITED: bool = <set_rule::Request as ruma::api::Metadata>::RATE_LIMITED;
    type Authentication = <set_rule::Request as ruma::api::Metadata>::Authentication;
    type PathBuilder = <set_rule::Request as ruma::api::Metadata>::PathBuilder;
    const PATH_BUILDER: Self::PathBuilder = <set_rule::Request as ruma::api::Metadata>::PATH_BUILDER;
}

impl ruma::api::IncomingRequest for SetRuleRequest {
    type EndpointError = <set_rule::Request as ruma::api::IncomingRequest>::EndpointError;
    type OutgoingResponse = set_rule::Response;

    fn try_from_http_request_inner(
        request: http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, ruma::api::error::DeserializationError> {
        let conditional = matches!(path_args.first(), Some(&("override" | "underride")));
        let patched;
        let request = match serde_json::from_slice::<serde_json::Value>(request.body()) {
            Ok(serde_json::Value::Object(mut body)) if conditional && !body.contains_key("conditions") => {
                body.insert("conditions".to_owned(), serde_json::Value::Array(Vec::new()));
                patched = serde_json::to_vec(&body)?;
                let (parts, _) = request.into_parts();
                http::Request::from_parts(parts, patched.as_slice())
            }
            _ => request,
        };
        <set_rule::Request as ruma::api::IncomingRequest>::try_from_http_request_inner(request, path_args).map(Self)
    }
}

fn user(session: &Session) -> Result<OwnedUserId, ServiceError> {
    OwnedUserId::try_from(session.user_id.as_str()).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// # `GET /_matrix/client/v3/pushrules/`
pub(super) async fn get_all(
    State(state): State<AppState>,
    req: Ruma<get_all::Request>,
) -> ApiResult<get_all::Response> {
    Ok(get_all::Response::new(state.account_data.push_rules(&user(&req.identity)?).await?).into())
}

/// # `GET /_matrix/client/v3/pushrules/global/`
pub(super) async fn get_global(
    State(state): State<AppState>,
    req: Ruma<get_global::Request>,
) -> ApiResult<get_global::Response> {
    Ok(get_global::Response::new(state.account_data.push_rules(&user(&req.identity)?).await?).into())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub(super) async fn get_rule(
    State(state): State<AppState>,
    req: Ruma<get_rule::Request>,
) -> ApiResult<get_rule::Response> {
    let b = req.body;
    let rule = state.account_data.push_rule(&user(&req.identity)?, b.kind, &b.rule_id, |r| r.to_owned()).await?;
    Ok(get_rule::Response::new(rule.into()).into())
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub(super) async fn set_rule(
    State(state): State<AppState>,
    req: Ruma<SetRuleRequest>,
) -> ApiResult<set_rule::Response> {
    let SetRuleRequest(b) = req.body;
    state.account_data.set_push_rule(&user(&req.identity)?, b.rule, b.after.as_deref(), b.before.as_deref()).await?;
    Ok(set_rule::Response::new().into())
}

/// # `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub(super) async fn delete_rule(
    State(state): State<AppState>,
    req: Ruma<delete_rule::Request>,
) -> ApiResult<delete_rule::Response> {
    let b = req.body;
    state.account_data.delete_push_rule(&user(&req.identity)?, b.kind, &b.rule_id).await?;
    Ok(delete_rule::Response::new().into())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub(super) async fn get_enabled(
    State(state): State<AppState>,
    req: Ruma<get_enabled::Request>,
) -> ApiResult<get_enabled::Response> {
    let b = req.body;
    let enabled = state.account_data.push_rule(&user(&req.identity)?, b.kind, &b.rule_id, |r| r.enabled()).await?;
    Ok(get_enabled::Response::new(enabled).into())
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub(super) async fn set_enabled(
    State(state): State<AppState>,
    req: Ruma<set_enabled::Request>,
) -> ApiResult<set_enabled::Response> {
    let b = req.body;
    state.account_data.set_push_rule_enabled(&user(&req.identity)?, b.kind, &b.rule_id, b.enabled).await?;
    Ok(set_enabled::Response::new().into())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub(super) async fn get_actions(
    State(state): State<AppState>,
    req: Ruma<get_actions::Request>,
) -> ApiResult<get_actions::Response> {
    let b = req.body;
    let actions =
        state.account_data.push_rule(&user(&req.identity)?, b.kind, &b.rule_id, |r| r.actions().to_vec()).await?;
    Ok(get_actions::Response::new(actions).into())
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub(super) async fn set_actions(
    State(state): State<AppState>,
    req: Ruma<set_actions::Request>,
) -> ApiResult<set_actions::Response> {
    let b = req.body;
    state.account_data.set_push_rule_actions(&user(&req.identity)?, b.kind, &b.rule_id, b.actions).await?;
    Ok(set_actions::Response::new().into())
}
