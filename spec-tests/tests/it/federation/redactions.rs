//! Redactions received over federation that must not take effect: one by a user without the
//! right to redact the target (accepted, not applied), and one naming an event of another room
//! (refused). (A redaction naming
//! itself, or two naming each other, cannot be built in room versions 10 and later: an event's
//! id is the hash of its content, `redacts` included.)

use serde_json::{Value, json};
use spec_tests::{Account, StatusCode, TestServer};

use super::hostile::{assert_accepted, assert_not_found, assert_refused, event, ids, public_room, timeline};
use super::origin::{Draft, Origin, enc};

/// `unsigned.redacted_because.event_id` of `id` as `who` sees it (`None` when not redacted),
/// and its content.
async fn redaction_of(a: &TestServer, who: &Account, room: &str, id: &str) -> (Option<String>, Value) {
    let (status, seen) = event(a, who, room, id).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let because = seen["unsigned"]["redacted_because"]["event_id"].as_str().map(str::to_owned);
    (because, seen["content"].clone())
}

/// Sytest "Inbound federation ignores redactions from invalid servers room > v3": Mallory's
/// server redacts Alice's message. The auth rules let the redaction in (room versions 3 and
/// later leave the check to when it is applied), but it is not applied: before Alice redacts
/// the message herself, and after (her redaction stays the one named). Versions 11 and 12.
#[tokio::test]
async fn redactions_by_a_server_without_the_right_are_not_applied() {
    let a = TestServer::start_with(spec_tests::ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    for version in ["11", "12"] {
        let room_id = public_room(&a, &alice, version).await;
        let mut room = origin.join(&a, &room_id, "mallory", version).await;
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/hello", enc(&room_id));
        let (status, sent) = a.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "Hello"})).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        let target = sent["event_id"].as_str().unwrap().to_owned();

        let fake = origin
            .event(&room, Draft::of("m.room.redaction", None, json!({"redacts": target})).prev(vec![target.clone()]));
        room.advance(&fake);
        let sentinel = origin.event(&room, Draft::message("sentinel one"));
        room.advance(&sentinel);
        let (status, answer) = origin.send(&a, &format!("fake-{version}"), &[&fake, &sentinel]).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}");
        assert_accepted(&answer, &fake);
        assert_accepted(&answer, &sentinel);
        let (because, content) = redaction_of(&a, &alice, &room_id, &target).await;
        assert_eq!(because, None, "v{version}: the fake redaction was applied");
        assert_eq!(content["body"], "Hello", "v{version}: the content changed");

        // Alice redacts it herself.
        let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room_id), enc(&target));
        let (status, redacted) = a.put(&path, alice.token(), json!({"reason": "mine"})).await;
        assert_eq!(status, StatusCode::OK, "{redacted}");
        let real = redacted["event_id"].as_str().unwrap().to_owned();
        let (because, content) = redaction_of(&a, &alice, &room_id, &target).await;
        assert_eq!((because.as_deref(), &content), (Some(real.as_str()), &json!({})), "v{version}");

        // Another fake redaction, after Alice's: hers stays the one named.
        let again = origin
            .event(&room, Draft::of("m.room.redaction", None, json!({"redacts": target})).prev(vec![real.clone()]));
        room.advance(&again);
        let sentinel = origin.event(&room, Draft::message("sentinel two"));
        let (status, answer) = origin.send(&a, &format!("again-{version}"), &[&again, &sentinel]).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_accepted(&answer, &sentinel);
        let (because, _) = redaction_of(&a, &alice, &room_id, &target).await;
        assert_eq!(because.as_deref(), Some(real.as_str()), "v{version}: the second fake redaction replaced hers");
    }
}

/// Sytest "An event which redacts an event in a different room should be ignored": Mallory
/// sends a message in one room, then in another room a redaction naming it. The redaction is
/// refused and is in neither room; the message keeps its content; a message sent after it is
/// accepted. A redaction naming an event the server does not know is accepted: what it
/// names may arrive later.
#[tokio::test]
async fn a_redaction_naming_an_event_of_another_room_is_ignored() {
    let a = TestServer::start_with(spec_tests::ServerOptions::federating()).await;
    let alice = a.register("alice", "pw-alice-123").await;
    let origin = Origin::start().await;
    let first_id = public_room(&a, &alice, "11").await;
    let second_id = public_room(&a, &alice, "11").await;
    let mut first = origin.join(&a, &first_id, "mallory", "11").await;
    let mut second = origin.join(&a, &second_id, "mallory", "11").await;

    let hi = origin.event(&first, Draft::message("hi"));
    let (_, answer) = origin.send(&a, "hi", &[&hi]).await;
    assert_accepted(&answer, &hi);
    first.advance(&hi);

    let redaction = origin.event(&second, Draft::of("m.room.redaction", None, json!({"redacts": hi.id})));
    let (status, answer) = origin.send(&a, "cross-redaction", &[&redaction]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_refused(&answer, &redaction);
    for room in [&first_id, &second_id] {
        assert_not_found(&event(&a, &alice, room, &redaction.id).await, "the cross-room redaction");
    }
    let sentinel = origin.event(&second, Draft::message("sentinel"));
    let (_, answer) = origin.send(&a, "sentinel", &[&sentinel]).await;
    assert_accepted(&answer, &sentinel);
    second.advance(&sentinel);

    let seen = timeline(&a, &alice, &second_id).await;
    assert!(ids(&seen).contains(&sentinel.id.as_str()), "{seen:?}");
    assert!(!ids(&seen).contains(&redaction.id.as_str()), "the cross-room redaction is shown: {seen:?}");
    let (status, original) = event(&a, &alice, &first_id, &hi.id).await;
    assert_eq!(status, StatusCode::OK, "{original}");
    assert_eq!(original["content"]["body"], "hi", "{original}");
    assert!(original["unsigned"].get("redacted_because").is_none(), "{original}");

    // A redaction of an event nobody here knows: accepted into the timeline.
    let unknown = format!("${}", "U".repeat(43));
    let ahead = origin.event(&second, Draft::of("m.room.redaction", None, json!({"redacts": unknown})));
    let (status, answer) = origin.send(&a, "redacts-unknown", &[&ahead]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accepted(&answer, &ahead);
    assert!(ids(&timeline(&a, &alice, &second_id).await).contains(&ahead.id.as_str()), "not in the timeline");
}
