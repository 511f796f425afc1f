//! How presence changes, as pure functions of the stored row and the time (Synapse's rules):
//! activity makes a user online and currently active; one minute without activity ends
//! "currently active", five minutes make an online user unavailable; 30 seconds after their
//! last sync ends (or their last activity, whichever is later) our users are offline. Other
//! servers' users are offline when their server has not told us about them for 30 minutes,
//! so our users' presence is sent again every 25 minutes while they are not offline.

use crate::storage::presence::{PresenceRow, PresenceWrite};

pub const ONLINE: &str = "online";
pub const UNAVAILABLE: &str = "unavailable";
pub const OFFLINE: &str = "offline";

/// Without activity for this long a user is no longer currently active.
pub const ACTIVE_GRANULARITY_MS: i64 = 60_000;
/// Activity this soon after the last noted one is not written again: `last_active_ago` may be
/// this much older than the truth, "currently active" end this much early.
pub const ACTIVITY_NOTE_MS: i64 = 5_000;
/// Without activity for this long an online user becomes unavailable.
pub const IDLE_AFTER_MS: i64 = 5 * 60_000;
/// This long after their last sync ends (and their last activity) our users are offline.
pub const SYNC_GRACE_MS: i64 = 30_000;
/// Other servers' users are offline when not heard of for this long.
pub const REMOTE_TIMEOUT_MS: i64 = 30 * 60_000;
/// Our users' presence is sent again this often while they are not offline.
pub const REFRESH_REMOTE_MS: i64 = 25 * 60_000;

/// The row of a user without one: offline, never active.
fn offline(user_id: &str) -> PresenceRow {
    PresenceRow {
        user_id: user_id.to_owned(),
        state: OFFLINE.to_owned(),
        status_msg: None,
        last_active_ts: 0,
        currently_active: false,
        last_seen_ts: 0,
        last_federation_ts: 0,
        stream_id: 0,
    }
}

/// Whether others must hear of the change from `old` to `new`: the state, the status message or
/// "currently active" changed, or an online user's last activity moved by more than the
/// granularity (smaller moves show in `last_active_ago` at the next visible change).
pub fn is_visible(old: Option<&PresenceRow>, new: &PresenceRow) -> bool {
    let Some(old) = old else { return new.state != OFFLINE || new.status_msg.is_some() };
    old.state != new.state
        || old.status_msg != new.status_msg
        || old.currently_active != new.currently_active
        || (new.state == ONLINE && new.last_active_ts - old.last_active_ts > ACTIVE_GRANULARITY_MS)
}

fn write(old: Option<&PresenceRow>, row: PresenceRow) -> Option<PresenceWrite> {
    if old == Some(&row) {
        return None;
    }
    let visible = is_visible(old, &row);
    Some(PresenceWrite { row, visible })
}

/// The user set their presence (`PUT …/presence/{userId}/status`).
pub fn set_explicitly(
    old: Option<&PresenceRow>,
    user_id: &str,
    state: &str,
    status_msg: Option<String>,
    now: i64,
) -> Option<PresenceWrite> {
    let mut row = old.cloned().unwrap_or_else(|| offline(user_id));
    row.state = state.to_owned();
    row.status_msg = status_msg;
    row.currently_active = state == ONLINE;
    if state == ONLINE {
        row.last_active_ts = now;
    }
    row.last_seen_ts = row.last_seen_ts.max(now);
    write(old, row)
}

/// The user syncs with `set_presence` `wanted` (online or unavailable) until `until` at the
/// latest. An offline user comes online (or unavailable); `unavailable` is kept against a
/// sync's `online`, since syncing is no activity (activity ends it).
pub fn syncing(old: Option<&PresenceRow>, user_id: &str, wanted: &str, until: i64, now: i64) -> Option<PresenceWrite> {
    let mut row = old.cloned().unwrap_or_else(|| offline(user_id));
    row.last_seen_ts = row.last_seen_ts.max(until);
    match (row.state.as_str(), wanted) {
        (OFFLINE, ONLINE) => {
            row.state = ONLINE.to_owned();
            row.last_active_ts = now;
            row.currently_active = true;
        }
        (OFFLINE | ONLINE, UNAVAILABLE) => {
            row.state = UNAVAILABLE.to_owned();
            row.currently_active = false;
        }
        _ => {}
    }
    write(old, row)
}

/// A sync that expected to last until `until` ended at `now`: unless a later sync pushed
/// `last_seen_ts` further, the user was last seen now.
pub fn sync_ended(old: Option<&PresenceRow>, until: i64, now: i64) -> Option<PresenceWrite> {
    let old = old?;
    if old.last_seen_ts != until || now >= until {
        return None;
    }
    write(Some(old), PresenceRow { last_seen_ts: now, ..old.clone() })
}

/// The user did something (sent an event): online and currently active. Activity within
/// [`ACTIVITY_NOTE_MS`] of the last noted one changes nothing, so a busy sender does not write
/// a row per message.
pub fn active(old: Option<&PresenceRow>, user_id: &str, now: i64) -> Option<PresenceWrite> {
    if let Some(o) = old
        && o.state == ONLINE
        && o.currently_active
        && (0..ACTIVITY_NOTE_MS).contains(&(now - o.last_active_ts))
    {
        return None;
    }
    let mut row = old.cloned().unwrap_or_else(|| offline(user_id));
    row.state = ONLINE.to_owned();
    row.currently_active = true;
    row.last_active_ts = now;
    write(old, row)
}

/// What time alone does to a row: `local` for our users.
pub fn timed_out(old: &PresenceRow, local: bool, now: i64) -> Option<PresenceWrite> {
    let mut row = old.clone();
    if local {
        if row.state == ONLINE && now - row.last_active_ts > ACTIVE_GRANULARITY_MS {
            row.currently_active = false;
        }
        if row.state == ONLINE && now - row.last_active_ts > IDLE_AFTER_MS {
            row.state = UNAVAILABLE.to_owned();
        }
        if row.state != OFFLINE && now - row.last_seen_ts.max(row.last_active_ts) > SYNC_GRACE_MS {
            row.state = OFFLINE.to_owned();
            row.currently_active = false;
        }
    } else if row.state != OFFLINE && now - row.last_federation_ts > REMOTE_TIMEOUT_MS {
        row.state = OFFLINE.to_owned();
        row.currently_active = false;
    }
    write(Some(old), row)
}

/// Whether our user's presence is due to be sent again to the servers sharing a room.
pub fn refresh_due(row: &PresenceRow, now: i64) -> bool {
    row.state != OFFLINE && now - row.last_federation_ts > REFRESH_REMOTE_MS
}

/// Another server told us about its user.
pub fn received(
    old: Option<&PresenceRow>,
    user_id: &str,
    state: &str,
    status_msg: Option<String>,
    last_active_ago: Option<i64>,
    currently_active: bool,
    now: i64,
) -> Option<PresenceWrite> {
    let mut row = old.cloned().unwrap_or_else(|| offline(user_id));
    row.state = state.to_owned();
    row.status_msg = status_msg;
    row.currently_active = currently_active && state == ONLINE;
    if let Some(ago) = last_active_ago {
        row.last_active_ts = (now - ago.clamp(0, now)).max(0);
    }
    row.last_federation_ts = now;
    let visible = is_visible(old, &row);
    Some(PresenceWrite { row, visible })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_000_000_000;

    fn apply(old: Option<PresenceRow>, w: Option<PresenceWrite>) -> (PresenceRow, bool) {
        match w {
            Some(w) => (w.row, w.visible),
            None => (old.expect("a row"), false),
        }
    }

    #[test]
    fn syncing_brings_an_offline_user_online_once() {
        let (row, visible) = apply(None, syncing(None, "@a:x", ONLINE, T + 30_000, T));
        assert!(visible);
        assert_eq!((row.state.as_str(), row.currently_active, row.last_active_ts), (ONLINE, true, T));
        // A second sync only moves last_seen: nobody needs to hear of it.
        let w = syncing(Some(&row), "@a:x", ONLINE, T + 60_000, T + 30_000).expect("last_seen moves");
        assert!(!w.visible);
        assert_eq!(w.row.last_seen_ts, T + 60_000);
        // set_presence=unavailable in a sync is kept against later online syncs.
        let (row, visible) = apply(Some(w.row.clone()), syncing(Some(&w.row), "@a:x", UNAVAILABLE, T + 60_000, T));
        assert!(visible);
        assert_eq!(row.state, UNAVAILABLE);
        assert!(syncing(Some(&row), "@a:x", ONLINE, T + 60_000, T + 1).is_none());
    }

    #[test]
    fn time_makes_users_inactive_then_unavailable_then_offline() {
        let (row, _) = apply(None, active(None, "@a:x", T));
        let row = PresenceRow { last_seen_ts: T + 10 * 60_000, ..row };
        assert!(timed_out(&row, true, T + 59_000).is_none());
        let (row, visible) = apply(Some(row.clone()), timed_out(&row, true, T + 61_000));
        assert!(visible && !row.currently_active && row.state == ONLINE);
        let (row, visible) = apply(Some(row.clone()), timed_out(&row, true, T + IDLE_AFTER_MS + 1));
        assert!(visible);
        assert_eq!(row.state, UNAVAILABLE);
        let (row, visible) = apply(Some(row.clone()), timed_out(&row, true, T + 10 * 60_000 + SYNC_GRACE_MS + 1));
        assert!(visible);
        assert_eq!(row.state, OFFLINE);
    }

    #[test]
    fn activity_is_noted_at_most_every_few_seconds() {
        let (row, visible) = apply(None, active(None, "@a:x", T));
        assert!(visible && row.currently_active);
        // A message a second later: nothing to write.
        assert!(active(Some(&row), "@a:x", T + 1_000).is_none());
        // After the interval the activity moves, unseen by others (within the granularity).
        let w = active(Some(&row), "@a:x", T + ACTIVITY_NOTE_MS).expect("noted again");
        assert!(!w.visible);
        assert_eq!(w.row.last_active_ts, T + ACTIVITY_NOTE_MS);
        // A user no longer currently active becomes so at once.
        let idle = PresenceRow { currently_active: false, ..row };
        assert!(active(Some(&idle), "@a:x", T + 1_000).expect("active again").visible);
    }

    #[test]
    fn a_sync_that_ends_early_counts_from_its_end_unless_another_is_running() {
        let (row, _) = apply(None, syncing(None, "@a:x", ONLINE, T + 30_000, T));
        let (ended, _) = apply(Some(row.clone()), sync_ended(Some(&row), T + 30_000, T + 1_000));
        assert_eq!(ended.last_seen_ts, T + 1_000);
        // Another sync moved last_seen further: this one's end changes nothing.
        assert!(sync_ended(Some(&row), T + 20_000, T + 1_000).is_none());
        assert!(timed_out(&ended, true, T + 1_000 + SYNC_GRACE_MS - 1).is_none());
        assert_eq!(apply(Some(ended.clone()), timed_out(&ended, true, T + 1_001 + SYNC_GRACE_MS)).0.state, OFFLINE);
    }

    #[test]
    fn remote_users_time_out_after_the_federation_timeout() {
        let (row, visible) = apply(None, received(None, "@b:y", ONLINE, Some("hi".into()), Some(5_000), true, T));
        assert!(visible);
        assert_eq!((row.last_active_ts, row.status_msg.as_deref()), (T - 5_000, Some("hi")));
        assert!(timed_out(&row, false, T + REMOTE_TIMEOUT_MS).is_none());
        assert_eq!(apply(Some(row.clone()), timed_out(&row, false, T + REMOTE_TIMEOUT_MS + 1)).0.state, OFFLINE);
        // A hostile last_active_ago cannot move the time before the epoch.
        assert_eq!(apply(None, received(None, "@b:y", ONLINE, None, Some(i64::MAX), true, T)).0.last_active_ts, 0);
    }

    #[test]
    fn setting_presence_explicitly() {
        let (row, visible) = apply(None, set_explicitly(None, "@a:x", UNAVAILABLE, Some("away".into()), T));
        assert!(visible);
        assert_eq!((row.state.as_str(), row.currently_active, row.last_seen_ts), (UNAVAILABLE, false, T));
        // The same again is no change at all.
        assert!(set_explicitly(Some(&row), "@a:x", UNAVAILABLE, Some("away".into()), T).is_none());
        let (row, _) = apply(Some(row.clone()), set_explicitly(Some(&row), "@a:x", ONLINE, None, T + 5));
        assert!(row.currently_active && row.last_active_ts == T + 5 && row.status_msg.is_none());
    }
}
