//! Push rules: the server-default rule set, user rules (add, order, enable, actions, delete) and
//! the errors for rules that cannot exist.

use serde_json::{Value, json};
use spec_tests::{StatusCode, TestServer, assert_error};

const RULES: &str = "/_matrix/client/v3/pushrules/global";

fn rule(kind: &str, id: &str) -> String {
    format!("{RULES}/{kind}/{id}")
}

/// The rule ids of one kind, in priority order.
fn ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset[kind]
        .as_array()
        .map_or_else(Vec::new, |rules| rules.iter().map(|r| r["rule_id"].as_str().unwrap().to_owned()).collect())
}

async fn global_rules(s: &TestServer, token: Option<&str>) -> Value {
    let (status, body) = s.get(&format!("{RULES}/"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn hello() -> Value {
    json!([{"kind": "event_match", "key": "content.body", "pattern": "hello"}])
}

#[tokio::test]
async fn server_default_rules() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let (status, all) = s.get("/_matrix/client/v3/pushrules/", alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let global = &all["global"];

    let overrides = ids(global, "override");
    assert_eq!(overrides[0], ".m.rule.master", "the master rule comes first: {overrides:?}");
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ] {
        assert!(overrides.iter().any(|r| r == id), "{id} missing from {overrides:?}");
    }
    let underrides = ids(global, "underride");
    for id in [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ] {
        assert!(underrides.iter().any(|r| r == id), "{id} missing from {underrides:?}");
    }
    let master = &global["override"][0];
    assert_eq!((master["enabled"].clone(), master["default"].clone()), (json!(false), json!(true)), "{master}");
    let message = global["underride"].as_array().unwrap().iter().find(|r| r["rule_id"] == ".m.rule.message").unwrap();
    assert_eq!(message["enabled"], true);
    assert_eq!(message["actions"], json!(["notify"]), "{message}");
    // Every default rule says so.
    for kind in ["override", "underride", "content", "room", "sender"] {
        for r in global[kind].as_array().into_iter().flatten() {
            assert_eq!(r["default"], true, "{r}");
        }
    }
    // The same rule set under /pushrules/global/ and as m.push_rules account data.
    assert_eq!(&global_rules(&s, alice.token()).await, global);
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.push_rules", alice.user_id);
    let (status, data) = s.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(&data["global"], global);
    // One rule.
    let (status, body) = s.get(&rule("override", ".m.rule.master"), alice.token()).await;
    assert_eq!((status, &body), (StatusCode::OK, master));

    assert_error(&s.get("/_matrix/client/v3/pushrules/", None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn user_rules_add_order_and_delete() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let t = alice.token();

    // Sytest "Can add global push rule for override".
    let actions = json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]);
    let r = s.put(&rule("override", "mine"), t, json!({"conditions": hello(), "actions": actions})).await;
    assert_eq!(r, (StatusCode::OK, json!({})));
    let (status, body) = s.get(&rule("override", "mine"), t).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"rule_id": "mine", "default": false, "enabled": true, "conditions": hello(), "actions": actions})
    );
    // User override rules come right after the master rule, before the other defaults.
    assert_eq!(ids(&global_rules(&s, t).await, "override")[..2], [".m.rule.master", "mine"]);

    // "Adding the same push rule twice is idempotent": one rule, with the new content.
    let r = s.put(&rule("override", "mine"), t, json!({"conditions": hello(), "actions": ["notify"]})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let overrides = ids(&global_rules(&s, t).await, "override");
    assert_eq!(overrides.iter().filter(|r| *r == "mine").count(), 1, "{overrides:?}");
    assert_eq!(s.get(&format!("{}/actions", rule("override", "mine")), t).await.1, json!({"actions": ["notify"]}));

    // "New rules appear before old rules by default".
    s.put(&rule("override", "newer"), t, json!({"conditions": hello(), "actions": ["notify"]})).await;
    assert_eq!(ids(&global_rules(&s, t).await, "override")[..3], [".m.rule.master", "newer", "mine"]);
    // "Can add global push rule after an existing rule" / "… before an existing rule".
    let r = s.put(&format!("{}?after=mine", rule("override", "after_mine")), t, json!({"actions": ["notify"]})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = s.put(&format!("{}?before=newer", rule("override", "first")), t, json!({"actions": ["notify"]})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(
        ids(&global_rules(&s, t).await, "override")[..5],
        [".m.rule.master", "first", "newer", "mine", "after_mine"]
    );
    // Override rules without conditions are allowed (spec: a rule with no conditions always
    // matches); they are stored with an empty list.
    assert_eq!(s.get(&rule("override", "first"), t).await.1["conditions"], json!([]));

    // "Can add global push rule for …" the other kinds.
    let r = s.put(&rule("underride", "under"), t, json!({"conditions": hello(), "actions": ["notify"]})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = s.put(&rule("content", "cake"), t, json!({"pattern": "cake*lie", "actions": ["notify"]})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = s.put(&rule("room", "!abc:localhost"), t, json!({"actions": ["dont_notify"]})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = s.put(&rule("sender", "@bob:localhost"), t, json!({"actions": []})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let ruleset = global_rules(&s, t).await;
    assert_eq!(ids(&ruleset, "underride")[0], "under", "user underrides come before the defaults");
    assert_eq!(ids(&ruleset, "content"), ["cake"]);
    assert_eq!(ids(&ruleset, "room"), ["!abc:localhost"]);
    assert_eq!(ids(&ruleset, "sender"), ["@bob:localhost"]);
    assert_eq!(s.get(&rule("content", "cake"), t).await.1["pattern"], "cake*lie");
    assert_eq!(s.get(&rule("room", "!abc:localhost"), t).await.1["actions"], json!(["dont_notify"]));
    // The account-data view follows.
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.push_rules", alice.user_id);
    assert_eq!(s.get(&path, t).await.1["global"], ruleset);

    // "Can delete a push rule".
    assert_eq!(s.delete(&rule("override", "mine"), t, None).await, (StatusCode::OK, json!({})));
    assert_error(&s.get(&rule("override", "mine"), t).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.delete(&rule("override", "mine"), t, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert!(!ids(&global_rules(&s, t).await, "override").contains(&"mine".to_owned()));
    assert_eq!(s.delete(&rule("room", "!abc:localhost"), t, None).await.0, StatusCode::OK);
    assert_eq!(ids(&global_rules(&s, t).await, "room"), Vec::<String>::new());

    // Another user's rules are their own.
    let bob = s.register("bob", "pw").await;
    let bobs = global_rules(&s, bob.token()).await;
    assert!(!ids(&bobs, "override").contains(&"newer".to_owned()), "{bobs}");
    assert_eq!(ids(&bobs, "content"), Vec::<String>::new());
}

#[tokio::test]
async fn enabled_and_actions() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let t = alice.token();
    let master = rule("override", ".m.rule.master");

    // "Can enable/disable default rules".
    assert_eq!(s.get(&format!("{master}/enabled"), t).await, (StatusCode::OK, json!({"enabled": false})));
    assert_eq!(s.put(&format!("{master}/enabled"), t, json!({"enabled": true})).await, (StatusCode::OK, json!({})));
    assert_eq!(s.get(&format!("{master}/enabled"), t).await.1, json!({"enabled": true}));
    assert_eq!(s.get(&master, t).await.1["enabled"], true);
    let message = rule("underride", ".m.rule.message");
    s.put(&format!("{message}/enabled"), t, json!({"enabled": false})).await;
    assert_eq!(s.get(&format!("{message}/enabled"), t).await.1, json!({"enabled": false}));
    s.put(&format!("{master}/enabled"), t, json!({"enabled": false})).await;
    assert_eq!(s.get(&format!("{master}/enabled"), t).await.1, json!({"enabled": false}));

    // "Can change the actions of default rules".
    assert_eq!(s.get(&format!("{master}/actions"), t).await, (StatusCode::OK, json!({"actions": []})));
    let r = s.put(&format!("{master}/actions"), t, json!({"actions": ["notify", {"set_tweak": "highlight"}]})).await;
    assert_eq!(r, (StatusCode::OK, json!({})));
    assert_eq!(
        s.get(&format!("{master}/actions"), t).await.1,
        json!({"actions": ["notify", {"set_tweak": "highlight"}]})
    );
    // The defaults stay defaults: they cannot be deleted.
    assert_error(&s.delete(&master, t, None).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    assert_eq!(s.get(&master, t).await.0, StatusCode::OK);

    // "Can disable a push rule" / "Can change the actions of a user specified rule".
    s.put(&rule("override", "mine"), t, json!({"conditions": hello(), "actions": ["notify"]})).await;
    let mine = rule("override", "mine");
    assert_eq!(s.put(&format!("{mine}/enabled"), t, json!({"enabled": false})).await.0, StatusCode::OK);
    assert_eq!(s.get(&format!("{mine}/enabled"), t).await.1, json!({"enabled": false}));
    assert_eq!(s.put(&format!("{mine}/actions"), t, json!({"actions": ["dont_notify"]})).await.0, StatusCode::OK);
    assert_eq!(s.get(&mine, t).await.1["actions"], json!(["dont_notify"]));
    // Updating the rule keeps it disabled.
    s.put(&mine, t, json!({"conditions": hello(), "actions": ["notify"]})).await;
    assert_eq!(s.get(&mine, t).await.1["enabled"], false);

    // "Enabling an unknown default rule fails with 404", "Changing the actions of an unknown
    // (default) rule fails with 404".
    for unknown in [rule("override", ".m.rule.nonexistent"), rule("override", "not_a_rule_id")] {
        assert_error(&s.get(&unknown, t).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        assert_error(&s.get(&format!("{unknown}/enabled"), t).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        assert_error(&s.get(&format!("{unknown}/actions"), t).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        assert_error(
            &s.put(&format!("{unknown}/enabled"), t, json!({"enabled": true})).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
        assert_error(
            &s.put(&format!("{unknown}/actions"), t, json!({"actions": ["notify"]})).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
    // Sytest "Trying to add push rule with invalid value for enabled fails with 400".
    assert_error(
        &s.put(&format!("{master}/enabled"), t, json!({"enabled": "not a boolean"})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(&s.put(&format!("{master}/enabled"), t, json!({})).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    assert_error(
        &s.put(&format!("{master}/actions"), t, json!({"actions": ["not_an_action"]})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&format!("{master}/actions"), t, json!({"actions": "notify"})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_eq!(
        s.get(&format!("{master}/actions"), t).await.1,
        json!({"actions": ["notify", {"set_tweak": "highlight"}]})
    );
}

#[tokio::test]
async fn rules_that_cannot_exist() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw").await;
    let t = alice.token();
    let ok = json!({"conditions": hello(), "actions": ["notify"]});
    s.put(&rule("override", "existing"), t, ok.clone()).await;
    let before = global_rules(&s, t).await;

    // Rule ids: a leading dot is reserved for server defaults; no (back)slashes.
    assert_error(&s.put(&rule("override", ".mine"), t, ok.clone()).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    assert_error(
        &s.put(&rule("override", ".m.rule.master"), t, ok.clone()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(&s.put(&rule("override", "a%5Cb"), t, ok.clone()).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Placement relative to unknown rules (this server: 404) or to server defaults (400).
    assert_error(
        &s.put(&format!("{}?before=nope", rule("override", "x")), t, ok.clone()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.put(&format!("{}?after=.m.rule.master", rule("override", "x")), t, ok.clone()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // Sytest "Trying to add push rule with …": unknown kind, missing pieces, bad actions.
    assert_error(&s.put(&rule("not_a_template", "x"), t, ok.clone()).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    assert_error(&s.put(&rule("override", "x"), t, json!({})).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    assert_error(
        &s.put(&rule("underride", "x"), t, json!({"conditions": [{}], "actions": ["notify"]})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    assert_error(
        &s.put(&rule("content", "x"), t, json!({"actions": ["notify"]})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    assert_error(
        &s.put(&rule("room", "!room:localhost"), t, json!({"actions": ["not_an_action"]})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&rule("room", "%23spam:example.com"), t, json!({"actions": ["notify"]})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&rule("sender", "not_a_user"), t, json!({"actions": ["notify"]})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&rule("override", "x"), t, json!({"conditions": hello(), "actions": [{"value": "no set_tweak"}]})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.raw("PUT", &rule("override", "x"), t, b"{not json".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    // Nothing above changed the rule set.
    assert_eq!(global_rules(&s, t).await, before);

    // Reads: unknown rules and kinds are 404 here; paths without a rule id are not endpoints.
    assert_error(&s.get(&rule("override", "not_a_rule_id"), t).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.get(&rule("not_a_template", "x"), t).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.get(&format!("{RULES}/override/"), t).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(&s.get("/_matrix/client/v3/pushrules/not_a_scope/", t).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(&s.delete(&rule("not_a_template", "x"), t, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(&s.put(&rule("override", "x"), None, ok).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
