//! Accepting events of a room's history that other servers sent on request (`/backfill`):
//! checked like any received event against their auth events and the state before them, then
//! placed below everything this server holds of the room. History is not news: no soft failure
//! against today's state, no change to the current state, memberships or forward extremities,
//! and no wake-up of `/sync`, push, appservices or the federation sender (none of them reads
//! below position zero).

use super::{
    RoomService,
    remote::{Loaded, into_timeline},
};
use crate::{
    service::{
        ServiceResult,
        rooms::{Accepted, Received, StateBefore},
    },
    storage::room_writer::{RoomWriter, StreamSlot},
};

impl RoomService {
    /// Reserves positions for `n` events of a room's history, below everything stored; returns
    /// the lowest (for the oldest event).
    pub async fn reserve_history(&self, room_id: &str, n: usize) -> ServiceResult<i64> {
        let mut w = RoomWriter::begin(&self.storage.pool, room_id).await?;
        let lowest = w.reserve_history_positions(i64::try_from(n).unwrap_or(i64::MAX)).await?;
        w.commit().await?;
        Ok(lowest)
    }

    /// Accepts an event of the room's history at `position` (from [`Self::reserve_history`]).
    /// An outlier of the same id (an auth or state event learnt earlier) joins the timeline.
    pub async fn accept_backfilled(
        &self,
        room_id: &str,
        event: &Received,
        state_before: StateBefore,
        position: i64,
    ) -> ServiceResult<Accepted> {
        let (rules, _guard, mut w) = self.open_known(room_id).await?;
        let mut loaded = Loaded::default();
        let outcome = match self.admit(&mut w, &mut loaded, &rules, event, state_before, None).await? {
            Ok(admitted) => {
                into_timeline(&mut w, &mut loaded, &rules, event, &admitted, StreamSlot::At(position), None).await?;
                Accepted::Stored
            }
            Err(outcome) => outcome,
        };
        w.commit().await?;
        Ok(outcome)
    }
}
