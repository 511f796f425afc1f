//! The MLS groups this process has loaded, kept between the commits of a room so a commit
//! neither reads nor decodes the group's stored state (about the size of the ratchet tree).
//!
//! An entry is used only while it is provably the stored state: each write of a group's state
//! takes a new number from a PostgreSQL sequence (`state_serial`, migration 0021), and the entry
//! carries the number of the write that produced it. Another process sharing the database
//! writes a new number, so this one's entry no longer matches and the state is read again; a
//! transaction that rolls back leaves its number unused for ever, so an entry stored before its
//! transaction committed can never match a different state. The room's write transaction holds
//! the room's advisory lock, so the number it reads stays current until it commits.

use std::collections::BTreeMap;
use std::sync::Mutex;

use poststelle_mls::ds::DsGroup;

/// How many leaves (summed over the groups) the cache holds at most: about 1 KB of memory each.
const LEAVES_MAX: usize = 200_000;

#[derive(Debug, Default)]
pub(in crate::service::rooms) struct GroupCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    groups: BTreeMap<String, Entry>,
    leaves: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    serial: i64,
    group: DsGroup,
    leaves: usize,
    used: u64,
}

impl GroupCache {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the room's group out if it is the state numbered `serial`; an entry of another
    /// state is dropped.
    pub(in crate::service::rooms) fn take(&self, room_id: &str, serial: i64) -> Option<DsGroup> {
        let mut inner = self.inner();
        let entry = inner.groups.remove(room_id)?;
        inner.leaves -= entry.leaves;
        (entry.serial == serial).then_some(entry.group)
    }

    /// Keeps `group` as the room's state numbered `serial`, making room by dropping the groups
    /// used longest ago.
    pub(in crate::service::rooms) fn put(&self, room_id: &str, serial: i64, group: DsGroup) {
        let leaves = group.members().len().max(1);
        if leaves > LEAVES_MAX {
            return;
        }
        let mut inner = self.inner();
        if let Some(old) = inner.groups.remove(room_id) {
            inner.leaves -= old.leaves;
        }
        while inner.leaves + leaves > LEAVES_MAX {
            let Some(victim) = inner.groups.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else { break };
            if let Some(old) = inner.groups.remove(&victim) {
                inner.leaves -= old.leaves;
            }
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.leaves += leaves;
        inner.groups.insert(room_id.to_owned(), Entry { serial, group, leaves, used });
    }
}
