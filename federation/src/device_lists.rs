//! Device-list updates from other servers (`m.device_list_update`): whether an update can be
//! applied to the list held for its user, or shows that an earlier one was lost, so the whole
//! list must be fetched again (`/user/devices/{userId}`).
//!
//! Each update carries the sender's stream id and, as `prev_id`, the stream ids of the updates
//! it sent the same destination before. The held list stands at a stream id: the last update
//! applied, or the snapshot's. Everything up to that id is in the list, so a `prev_id` at or
//! below it is known; one above it names an update that never arrived.

/// What to do with a received update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Older than (or the same as) what the list already holds: nothing to do.
    Ignore,
    /// The next update in the chain: apply it to the list.
    Apply,
    /// No list, a list known to be incomplete, or a gap before this update: fetch the whole list.
    Resync,
}

/// The held list of the update's user: the stream id it stands at, and whether it is stale
/// (a gap was seen and the list not fetched since).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub stream_id: i64,
    pub stale: bool,
}

/// Decides what to do with an update of `stream_id` whose predecessors are `prev_ids`.
pub fn step(held: Option<Held>, stream_id: i64, prev_ids: &[i64]) -> Step {
    match held {
        None | Some(Held { stale: true, .. }) => Step::Resync,
        Some(Held { stream_id: at, .. }) if stream_id <= at => Step::Ignore,
        Some(Held { stream_id: at, .. }) if prev_ids.iter().all(|p| *p <= at) => Step::Apply,
        Some(_) => Step::Resync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_5: Option<Held> = Some(Held { stream_id: 5, stale: false });

    #[test]
    fn the_next_update_in_the_chain_is_applied() {
        assert_eq!(step(AT_5, 6, &[5]), Step::Apply);
        // The first update a destination gets names no predecessor.
        assert_eq!(step(AT_5, 9, &[]), Step::Apply);
        // Predecessors the snapshot already covers.
        assert_eq!(step(AT_5, 9, &[3]), Step::Apply);
    }

    #[test]
    fn a_gap_or_no_list_means_a_resync() {
        assert_eq!(step(AT_5, 8, &[7]), Step::Resync);
        assert_eq!(step(AT_5, 8, &[5, 7]), Step::Resync);
        assert_eq!(step(None, 1, &[]), Step::Resync);
        assert_eq!(step(Some(Held { stream_id: 5, stale: true }), 6, &[5]), Step::Resync);
    }

    #[test]
    fn old_and_repeated_updates_are_ignored() {
        assert_eq!(step(AT_5, 5, &[4]), Step::Ignore);
        assert_eq!(step(AT_5, 2, &[]), Step::Ignore);
    }
}
