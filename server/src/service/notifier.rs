//! Wake-ups for the tasks that wait on the streams: `/sync` calls, the push evaluator, the
//! federation sender and the MLS Welcome dispatcher. Writers `NOTIFY poststelle_streams` inside
//! their transaction (delivered at commit); one `LISTEN` connection per process turns
//! notifications from every process on the database into wake-ups. Local event writers also
//! wake the waiters directly after commit, so that a waiter in the same process needs no round
//! trip; the notification of such a write, when it comes back, wakes nobody a second time.
//!
//! Each waiter listens to the topic of what it acts on, so that a received event does not run
//! the federation sender's queue pass and a message does not poll the Welcome outbox.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;

use super::typing::TypingService;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Events sent by this server's users (the federation sender queues them).
    LocalEvents,
    /// Events received from other servers.
    RemoteEvents,
    /// Something other servers learn of through an EDU: receipts, typing, to-device messages.
    Edus,
    /// A presence changed visibly, or was queued for other servers.
    Presence,
    /// Devices or cross-signing keys of users (queued for other servers on their own stream).
    DeviceLists,
    /// A Welcome waits in the MLS outbox.
    MlsWelcome,
    /// Anything else a sync shows (account data).
    Other,
}

/// Who waits for what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Every change (`/sync`).
    Any,
    /// Events, local or received (the push evaluator).
    Events,
    /// Local events and EDUs (the federation sender's queue pass).
    Outbound,
    /// Local device-list changes (the federation sender's device-list pass).
    DeviceLists,
    /// Welcomes to deliver.
    Welcomes,
    /// Visible presence changes (what the presence service remembers of activity is stale).
    Presence,
}

impl Change {
    fn topics(self) -> &'static [Topic] {
        match self {
            Change::LocalEvents => &[Topic::Any, Topic::Events, Topic::Outbound],
            Change::RemoteEvents => &[Topic::Any, Topic::Events],
            Change::Edus => &[Topic::Any, Topic::Outbound],
            Change::Presence => &[Topic::Any, Topic::Outbound, Topic::Presence],
            Change::DeviceLists => &[Topic::Any, Topic::DeviceLists],
            Change::MlsWelcome => &[Topic::Welcomes],
            Change::Other => &[Topic::Any],
        }
    }

    /// The change a notification's payload announces: its first word.
    fn of_payload(payload: &str) -> Change {
        match payload.split(' ').next().unwrap_or_default() {
            "events" => Change::LocalEvents,
            "remote_events" => Change::RemoteEvents,
            "typing" | "receipts" | "to_device" => Change::Edus,
            "presence" => Change::Presence,
            "device_lists" => Change::DeviceLists,
            "mls_welcome" => Change::MlsWelcome,
            _ => Change::Other,
        }
    }
}

const TOPICS: [Topic; 6] =
    [Topic::Any, Topic::Events, Topic::Outbound, Topic::DeviceLists, Topic::Welcomes, Topic::Presence];

#[derive(Debug)]
pub struct Notifier {
    topics: [watch::Sender<u64>; TOPICS.len()],
    /// The newest events position this process woke its waiters for after committing it,
    /// local events and received ones apart: their notifications need wake nobody again.
    woken_local: AtomicI64,
    woken_remote: AtomicI64,
}

impl Notifier {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            topics: std::array::from_fn(|_| watch::channel(0).0),
            woken_local: AtomicI64::new(0),
            woken_remote: AtomicI64::new(0),
        })
    }

    fn sender(&self, topic: Topic) -> &watch::Sender<u64> {
        let index = TOPICS.iter().position(|t| *t == topic).unwrap_or(0);
        &self.topics[index]
    }

    /// Something changed: wake the waiters of its topics.
    pub fn changed(&self, change: Change) {
        for topic in change.topics() {
            self.sender(*topic).send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Events up to `position` were committed by this process: wake their waiters now.
    pub fn events_committed(&self, change: Change, position: i64) {
        let woken = if change == Change::LocalEvents { &self.woken_local } else { &self.woken_remote };
        woken.fetch_max(position, Ordering::AcqRel);
        self.changed(change);
    }

    /// Wakes everyone (after the listener lost its connection: anything may have happened).
    fn everything(&self) {
        for topic in TOPICS {
            self.sender(topic).send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn subscribe(&self, topic: Topic) -> watch::Receiver<u64> {
        self.sender(topic).subscribe()
    }

    /// Whether a notification only repeats a wake-up this process already gave: events at or
    /// before a position it committed and woke for itself. Positions are taken under the
    /// stream head's row lock and so commit in order: a waiter woken after our commit reads
    /// every event up to our position, another process's included.
    fn already_woken(&self, change: Change, payload: &str) -> bool {
        let woken = match change {
            Change::LocalEvents => &self.woken_local,
            Change::RemoteEvents => &self.woken_remote,
            _ => return false,
        };
        payload
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse::<i64>().ok())
            .is_some_and(|p| p <= woken.load(Ordering::Acquire))
    }

    /// Listens for notifications until the process ends, reconnecting after errors.
    pub fn spawn_listener(self: &Arc<Self>, pool: PgPool, typing: Arc<TypingService>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.listen(&pool, &typing).await {
                    tracing::warn!(error = %e, "stream listener lost its connection; reconnecting");
                }
                this.everything();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn listen(&self, pool: &PgPool, typing: &TypingService) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen("poststelle_streams").await?;
        loop {
            let n = listener.recv().await?;
            let payload = n.payload();
            if let Some(rest) = payload.strip_prefix("typing ") {
                typing.apply_remote(rest);
            }
            let change = Change::of_payload(payload);
            if !self.already_woken(change, payload) {
                self.changed(change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_change() {
        assert_eq!(Change::of_payload("events 12"), Change::LocalEvents);
        assert_eq!(Change::of_payload("remote_events 12"), Change::RemoteEvents);
        assert_eq!(Change::of_payload("typing !r:x [\"@a:x\"]"), Change::Edus);
        assert_eq!(Change::of_payload("presence"), Change::Presence);
        assert_eq!(Change::of_payload("device_lists 4"), Change::DeviceLists);
        assert_eq!(Change::of_payload("mls_welcome"), Change::MlsWelcome);
        assert_eq!(Change::of_payload("account_data"), Change::Other);
        assert_eq!(Change::of_payload("something new"), Change::Other);
    }

    #[test]
    fn a_received_event_does_not_wake_the_sender_or_the_welcomes() {
        let n = Notifier::new();
        let (any, outbound, events, welcomes) = (
            n.subscribe(Topic::Any),
            n.subscribe(Topic::Outbound),
            n.subscribe(Topic::Events),
            n.subscribe(Topic::Welcomes),
        );
        n.changed(Change::RemoteEvents);
        assert!(any.has_changed().unwrap() && events.has_changed().unwrap());
        assert!(!outbound.has_changed().unwrap() && !welcomes.has_changed().unwrap());
        n.changed(Change::LocalEvents);
        assert!(outbound.has_changed().unwrap() && !welcomes.has_changed().unwrap());
    }

    #[test]
    fn the_echo_of_an_own_commit_wakes_nobody() {
        let n = Notifier::new();
        n.events_committed(Change::LocalEvents, 10);
        assert!(n.already_woken(Change::LocalEvents, "events 10"));
        assert!(n.already_woken(Change::LocalEvents, "events 9"));
        assert!(!n.already_woken(Change::LocalEvents, "events 11"));
        // A received event's position says nothing about local ones, nor the reverse.
        assert!(!n.already_woken(Change::RemoteEvents, "remote_events 10"));
        n.events_committed(Change::RemoteEvents, 20);
        assert!(n.already_woken(Change::RemoteEvents, "remote_events 20"));
        assert!(!n.already_woken(Change::LocalEvents, "events 11"));
        assert!(!n.already_woken(Change::Edus, "receipts"));
    }
}
