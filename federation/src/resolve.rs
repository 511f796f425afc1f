//! State resolution (v2, and v2.1 from room version 12) through ruma-state-res, over events the
//! caller has loaded: the states to merge, and every event of their auth chains.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedEventId, events::StateEventType, room_version_rules::RoomVersionRules};

use crate::Pdu;

/// A room state: `(type, state_key)` → event id.
pub type State = BTreeMap<(String, String), OwnedEventId>;

/// The auth chain of the given events (all their auth events, recursively, without them),
/// over the events in `events`; events missing from it end the walk there.
pub fn auth_chain<'a>(
    starts: impl IntoIterator<Item = &'a OwnedEventId>,
    events: &BTreeMap<OwnedEventId, Pdu>,
) -> BTreeSet<OwnedEventId> {
    let mut chain = BTreeSet::new();
    let mut stack: Vec<&OwnedEventId> =
        starts.into_iter().filter_map(|id| events.get(id)).flat_map(|p| p.auth_events.iter()).collect();
    while let Some(id) = stack.pop() {
        if chain.insert(id.clone())
            && let Some(pdu) = events.get(id)
        {
            stack.extend(pdu.auth_events.iter());
        }
    }
    chain
}

/// Merges forked states of a room into one, by the room version's resolution algorithm.
/// `events` must hold every event of the states and of their auth chains.
pub fn resolve(
    rules: &RoomVersionRules,
    states: &[State],
    events: &BTreeMap<OwnedEventId, Pdu>,
) -> Result<State, String> {
    match states {
        [] => return Ok(State::new()),
        [one] => return Ok(one.clone()),
        _ => {}
    }
    let maps: Vec<ruma::state_res::StateMap<OwnedEventId>> = states
        .iter()
        .map(|s| s.iter().map(|((t, k), id)| ((StateEventType::from(t.as_str()), k.clone()), id.clone())).collect())
        .collect();
    let auth_chains = states
        .iter()
        .map(|s| {
            let mut chain = auth_chain(s.values(), events);
            chain.extend(s.values().cloned());
            chain.into_iter().collect()
        })
        .collect();
    let state_res = rules.state_res.v2_rules().ok_or("the room version does not use state resolution v2")?;
    let resolved = ruma::state_res::resolve(
        &rules.authorization,
        state_res,
        &maps,
        auth_chains,
        |id| events.get(id).cloned(),
        |conflicted| {
            let ids: BTreeSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
            Some(conflicted_subgraph(&ids, events).into_iter().collect())
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(resolved.into_iter().map(|((t, k), id)| ((t.to_string(), k), id)).collect())
}

/// The conflicted state subgraph (room version 12): the events on auth-event paths from one
/// conflicted event to another.
pub fn conflicted_subgraph(
    conflicted: &BTreeSet<OwnedEventId>,
    events: &BTreeMap<OwnedEventId, Pdu>,
) -> BTreeSet<OwnedEventId> {
    // Whether an event reaches a conflicted event through zero or more auth edges, computed
    // bottom-up with an explicit stack (auth chains can be thousands deep). The auth graph has
    // no cycles (ids are hashes over the auth events), so a parent is always settled before
    // the event that needs it.
    let mut reaches: BTreeMap<&OwnedEventId, bool> = BTreeMap::new();
    let mut visited: BTreeSet<&OwnedEventId> = BTreeSet::new();
    let starts = conflicted.iter().filter_map(|id| events.get(id)).flat_map(|p| p.auth_events.iter());
    let mut stack: Vec<(&OwnedEventId, bool)> = starts.map(|id| (id, false)).collect();
    while let Some((id, settle)) = stack.pop() {
        if settle {
            let via_parent =
                events.get(id).is_some_and(|p| p.auth_events.iter().any(|a| reaches.get(a).copied().unwrap_or(false)));
            reaches.insert(id, conflicted.contains(id) || via_parent);
        } else if visited.insert(id) {
            stack.push((id, true));
            if let Some(p) = events.get(id) {
                stack.extend(p.auth_events.iter().filter(|a| !visited.contains(a)).map(|a| (a, false)));
            }
        }
    }
    // Every visited event is a strict auth ancestor of a conflicted event.
    reaches.into_iter().filter(|(_, r)| *r).map(|(id, _)| id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, owned_room_id, server_name, user_id};
    use serde_json::json;

    use super::*;
    use crate::{
        ProtoEvent, SigningKey,
        builder::{Placement, build_event},
    };

    struct Room {
        key: SigningKey,
        rules: RoomVersionRules,
        events: BTreeMap<OwnedEventId, Pdu>,
        ts: u64,
    }

    impl Room {
        fn new() -> Self {
            let (key, _) = SigningKey::generate().unwrap();
            Self { key, rules: RoomVersionId::V11.rules().unwrap(), events: BTreeMap::new(), ts: 1_700_000_000_000 }
        }

        fn add(
            &mut self,
            sender: &str,
            kind: &str,
            state_key: &str,
            content: serde_json::Value,
            prev: &[&OwnedEventId],
            auth: &[&OwnedEventId],
        ) -> OwnedEventId {
            self.ts += 1;
            let built = build_event(
                ProtoEvent {
                    room_id: Some(owned_room_id!("!r:a.example")),
                    sender: ruma::OwnedUserId::try_from(sender).unwrap(),
                    kind: kind.into(),
                    state_key: Some(state_key.into()),
                    content: content.as_object().unwrap().clone(),
                    redacts: None,
                },
                Placement {
                    prev_events: prev.iter().map(|id| (*id).clone()).collect(),
                    auth_events: auth.iter().map(|id| (*id).clone()).collect(),
                    depth: prev.iter().map(|id| self.events[*id].depth).max().unwrap_or(0) + 1,
                    origin_server_ts: self.ts,
                },
                &self.rules,
                server_name!("a.example"),
                &self.key,
            )
            .unwrap();
            let id = built.pdu.event_id.clone();
            self.events.insert(id.clone(), built.pdu);
            id
        }
    }

    fn key(t: &str, k: &str) -> (String, String) {
        (t.to_owned(), k.to_owned())
    }

    /// Alice (100) and Bob (50, may set the topic) fork: Bob sets the topic while Alice demotes
    /// him to 0 with a topic needing 50. The demotion wins on both sides of the merge, and the
    /// topic change, no longer authorised, drops out.
    #[test]
    fn a_demotion_beats_a_concurrent_topic_change() {
        let alice = user_id!("@alice:a.example").as_str();
        let bob = user_id!("@bob:a.example").as_str();
        let mut r = Room::new();
        let create = r.add(alice, "m.room.create", "", json!({"room_version": "11"}), &[], &[]);
        let a_join = r.add(alice, "m.room.member", alice, json!({"membership": "join"}), &[&create], &[&create]);
        let pl = r.add(
            alice,
            "m.room.power_levels",
            "",
            json!({"users": {alice: 100, bob: 50}, "events": {"m.room.topic": 50}}),
            &[&a_join],
            &[&create, &a_join],
        );
        let rules =
            r.add(alice, "m.room.join_rules", "", json!({"join_rule": "public"}), &[&pl], &[&create, &a_join, &pl]);
        let b_join =
            r.add(bob, "m.room.member", bob, json!({"membership": "join"}), &[&rules], &[&create, &pl, &rules]);
        let topic = r.add(bob, "m.room.topic", "", json!({"topic": "bob's"}), &[&b_join], &[&create, &pl, &b_join]);
        let demote = r.add(
            alice,
            "m.room.power_levels",
            "",
            json!({"users": {alice: 100}, "events": {"m.room.topic": 50}}),
            &[&b_join],
            &[&create, &a_join, &pl],
        );
        let base: State = [
            (key("m.room.create", ""), create.clone()),
            (key("m.room.member", alice), a_join.clone()),
            (key("m.room.power_levels", ""), pl.clone()),
            (key("m.room.join_rules", ""), rules.clone()),
            (key("m.room.member", bob), b_join.clone()),
        ]
        .into();
        let mut bob_side = base.clone();
        bob_side.insert(key("m.room.topic", ""), topic.clone());
        let mut alice_side = base.clone();
        alice_side.insert(key("m.room.power_levels", ""), demote.clone());
        for states in [[bob_side.clone(), alice_side.clone()], [alice_side, bob_side]] {
            let resolved = resolve(&r.rules, &states, &r.events).unwrap();
            assert_eq!(resolved[&key("m.room.power_levels", "")], demote);
            assert!(!resolved.contains_key(&key("m.room.topic", "")), "{resolved:?}");
            assert_eq!(resolved[&key("m.room.member", bob)], b_join);
        }
    }

    #[test]
    fn auth_chain_and_subgraph_follow_auth_edges() {
        let alice = user_id!("@alice:a.example").as_str();
        let mut r = Room::new();
        let create = r.add(alice, "m.room.create", "", json!({"room_version": "11"}), &[], &[]);
        let join = r.add(alice, "m.room.member", alice, json!({"membership": "join"}), &[&create], &[&create]);
        let pl1 = r.add(alice, "m.room.power_levels", "", json!({"users": {alice: 100}}), &[&join], &[&create, &join]);
        let pl2 = r.add(
            alice,
            "m.room.power_levels",
            "",
            json!({"users": {alice: 100}, "ban": 60}),
            &[&pl1],
            &[&create, &join, &pl1],
        );
        let pl3 = r.add(
            alice,
            "m.room.power_levels",
            "",
            json!({"users": {alice: 100}, "ban": 70}),
            &[&pl2],
            &[&create, &join, &pl2],
        );
        let chain = auth_chain([&pl3], &r.events);
        assert_eq!(chain, BTreeSet::from([create.clone(), join.clone(), pl2.clone(), pl1.clone()]));
        // pl1 and pl3 conflict: pl2 lies on the auth path between them; create and join do not
        // lead back to a conflicted event.
        let sub = conflicted_subgraph(&BTreeSet::from([pl1.clone(), pl3.clone()]), &r.events);
        assert!(sub.contains(&pl2) && sub.contains(&pl1), "{sub:?}");
        assert!(!sub.contains(&create) && !sub.contains(&join), "{sub:?}");
    }
}
