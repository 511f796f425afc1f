//! History visibility: which events of a room a user may see, from the history of the room's
//! `m.room.history_visibility` setting and of the user's own membership (spec, "History
//! visibility"). Pure: the caller loads both histories as `(stream position, value)` lists.

/// The facts one user's read access in one room depends on.
#[derive(Clone, Debug, Default)]
pub struct Visibility {
    /// `(position, history_visibility)` in position order.
    pub settings: Vec<(i64, String)>,
    /// `(position, membership)` of the user's own membership events, in position order.
    pub memberships: Vec<(i64, String)>,
}

/// The value in force just after `pos` (`<=`) or just before it (`<`).
fn at<'a>(list: &'a [(i64, String)], pos: i64, including: bool) -> Option<&'a str> {
    list.iter().take_while(|(p, _)| *p < pos || (including && *p == pos)).last().map(|(_, v)| v.as_str())
}

impl Visibility {
    /// Whether the event at `pos` is visible to the user. The setting and the membership in
    /// force for an event are the ones before it; a setting event itself, and the user's own
    /// membership events, are visible when the value before or after them allows it.
    pub fn allows(&self, pos: i64) -> bool {
        let settings = [false, true].map(|after| at(&self.settings, pos, after).unwrap_or("shared"));
        let memberships = [false, true].map(|after| at(&self.memberships, pos, after));
        settings.iter().any(|setting| memberships.iter().any(|membership| self.allows_with(pos, setting, *membership)))
    }

    fn allows_with(&self, pos: i64, setting: &str, membership: Option<&str>) -> bool {
        match setting {
            "world_readable" => true,
            _ if membership == Some("join") => true,
            "shared" => self.memberships.iter().any(|(p, m)| *p > pos && m == "join"),
            // Unlike `shared`, a later join does not open what was sent before the invite.
            "invited" => membership == Some("invite"),
            _ => false,
        }
    }

    /// Whether the event at `pos` goes unredacted to a server that has this user among its
    /// users: as for the user, except that `shared` history is visible to every server in the
    /// room, as Synapse treats servers.
    pub fn allows_server(&self, pos: i64) -> bool {
        let settings = [false, true].map(|after| at(&self.settings, pos, after).unwrap_or("shared"));
        settings.iter().any(|s| matches!(*s, "shared" | "world_readable")) || self.allows(pos)
    }

    /// Whether the user was joined when the event at `pos` was sent: the event's content is
    /// theirs to keep even after its sender erased their account (see `RoomService::prune_erased`).
    pub fn joined_at(&self, pos: i64) -> bool {
        at(&self.memberships, pos, true) == Some("join")
    }

    /// The user's membership right now.
    pub fn current_membership(&self) -> Option<&str> {
        self.memberships.last().map(|(_, m)| m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(settings: &[(i64, &str)], memberships: &[(i64, &str)]) -> Visibility {
        Visibility {
            settings: settings.iter().map(|(p, s)| (*p, (*s).to_owned())).collect(),
            memberships: memberships.iter().map(|(p, s)| (*p, (*s).to_owned())).collect(),
        }
    }

    #[test]
    fn shared_history_is_visible_to_later_joiners_but_not_to_outsiders() {
        let joined_later = v(&[(2, "shared")], &[(10, "join")]);
        assert!(joined_later.allows(5));
        assert!(joined_later.allows(12));
        let never_joined = v(&[(2, "shared")], &[(10, "invite")]);
        assert!(!never_joined.allows(5));
    }

    #[test]
    fn joined_history_starts_at_the_join_and_ends_at_the_leave() {
        let vis = v(&[(2, "joined")], &[(10, "join"), (20, "leave")]);
        assert!(!vis.allows(5));
        assert!(vis.allows(10));
        assert!(vis.allows(15));
        assert!(!vis.allows(25));
    }

    #[test]
    fn invited_history_starts_at_the_invite() {
        let vis = v(&[(2, "invited")], &[(10, "invite")]);
        assert!(!vis.allows(5));
        assert!(vis.allows(11));
    }

    #[test]
    fn setting_events_and_own_membership_count_on_both_sides() {
        // The change to `shared` is visible to a later joiner although `invited` was before it.
        let vis = v(&[(2, "joined"), (4, "invited"), (6, "shared")], &[(10, "join")]);
        assert!(vis.allows(2) && vis.allows(6) && vis.allows(7));
        assert!(!vis.allows(3) && !vis.allows(4) && !vis.allows(5));
        // One's own leave is visible; what follows it is not.
        let vis = v(&[(2, "joined")], &[(10, "join"), (20, "leave")]);
        assert!(vis.allows(10) && vis.allows(20));
        assert!(!vis.allows(21));
    }

    #[test]
    fn servers_see_shared_history_and_joined_history_only_while_one_of_their_users_is_joined() {
        let joined_later = v(&[(2, "joined")], &[(10, "join")]);
        assert!(!joined_later.allows_server(5));
        assert!(joined_later.allows_server(11));
        let shared = v(&[(2, "shared")], &[(10, "join")]);
        assert!(shared.allows_server(5));
        let invited = v(&[(2, "invited")], &[(8, "invite"), (10, "join")]);
        assert!(!invited.allows_server(5));
        assert!(invited.allows_server(9));
        let changed = v(&[(2, "shared"), (20, "joined")], &[(10, "join"), (30, "leave")]);
        assert!(changed.allows_server(25));
        assert!(!changed.allows_server(35));
    }

    #[test]
    fn joined_at_is_the_membership_in_force_at_the_event() {
        let vis = v(&[(2, "shared")], &[(10, "join"), (20, "leave"), (30, "join")]);
        assert!(!vis.joined_at(5) && vis.joined_at(10) && vis.joined_at(15));
        assert!(!vis.joined_at(25) && vis.joined_at(35));
        assert!(!v(&[(2, "world_readable")], &[]).joined_at(5));
    }

    #[test]
    fn world_readable_needs_no_membership() {
        assert!(v(&[(2, "world_readable")], &[]).allows(5));
    }
}
