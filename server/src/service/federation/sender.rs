//! Sending our events to the other servers in their rooms. A consumer of the events stream
//! queues every local event for the servers with a member in its room (and the target's server
//! of a membership change), advancing its stored position in the same transaction; then each
//! destination's queue drains one transaction (at most 50 PDUs, 100 EDUs) at a time, rows
//! leaving the queue only on a 200. Failures back off exponentially per destination; after a
//! restart, whatever was queued is sent. One process at a time sends (an advisory lock). The
//! same loop queues our users' device-list updates from the device-list stream.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId,
    api::federation::transactions::send_transaction_message::v1 as send_transaction, serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;
use tokio::task::JoinSet;

use super::FederationService;
use crate::{
    service::{
        ServiceResult,
        notifier::{Notifier, Topic},
    },
    storage::{federation::PendingTransaction, now_ms},
};

/// How many events one pass queues.
const QUEUE_BATCH: i64 = 500;
/// What woke the sender, and so which passes run.
struct Wakes {
    outbound: tokio::sync::watch::Receiver<u64>,
    device_lists: tokio::sync::watch::Receiver<u64>,
}

/// The passes of one round: over the events stream, over the device-list stream.
struct Pass {
    events: bool,
    devices: bool,
}

/// How long a wake-up waits, while a transaction is in flight, for others to join its pass.
const COALESCE_WHILE_SENDING: Duration = Duration::from_millis(10);
/// How far the stream may run ahead, with nothing of ours in it, before the position moves.
const IDLE_STRETCH: i64 = 200;

impl FederationService {
    /// Sends for this server while this process holds the sender's lock (one process at a
    /// time, among all that share the database), trying to take it every few seconds.
    pub async fn run_sender(self: Arc<Self>, notifier: Arc<Notifier>) {
        loop {
            match self.storage.federation.try_lead().await {
                Ok(Some(lock)) => {
                    tracing::info!("this process sends to other servers");
                    let wakes = Wakes {
                        outbound: notifier.subscribe(Topic::Outbound),
                        device_lists: notifier.subscribe(Topic::DeviceLists),
                    };
                    tokio::select! {
                        () = self.clone().send_forever(wakes) => {}
                        () = lock.lost() => tracing::warn!("lost the federation sender lock"),
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "federation sender election failed"),
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// Queues local events and EDUs whenever they change, device-list updates whenever a local
    /// device changes, and drains the ready destinations' queues; every second both passes run
    /// (for destinations whose backoff ran out, and for what a wake-up may have missed).
    async fn send_forever(self: Arc<Self>, mut wakes: Wakes) {
        let mut in_flight: JoinSet<OwnedServerName> = JoinSet::new();
        let mut busy: BTreeSet<OwnedServerName> = BTreeSet::new();
        // The consumer's position, kept here while this process holds the sender's lock; read
        // again when another process turns out to have moved it.
        let mut position: Option<i64> = None;
        let mut pass = Pass { events: true, devices: true };
        loop {
            let started = std::time::Instant::now();
            let (events, devices) = tokio::join!(
                async { if pass.events { self.queue_new_events(&mut position).await.map(Some) } else { Ok(None) } },
                async { if pass.devices { self.e2ee.queue_device_list_updates().await } else { Ok(false) } }
            );
            let devices_queued = devices.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not queue device-list updates for other servers");
                false
            });
            // Queueing events also read which destinations are ready, unless device-list
            // updates were queued beside it (the read may have missed them). A pass over the
            // device lists alone that queued nothing made no destination ready.
            let ready = match events {
                Ok(Some(Some(ready))) if !devices_queued => Ok(ready),
                Ok(None) if !devices_queued => Ok(Vec::new()),
                Err(e) => {
                    position = None;
                    tracing::warn!(error = %e, "could not queue events for other servers");
                    self.ready_destinations().await
                }
                _ => self.ready_destinations().await,
            };
            match ready {
                Ok(ready) => {
                    for (destination, in_hand) in ready {
                        let Ok(destination) = OwnedServerName::try_from(destination) else { continue };
                        if !busy.insert(destination.clone()) {
                            continue;
                        }
                        tracing::debug!(
                            %destination,
                            queue_us = started.elapsed().as_micros(),
                            in_hand = in_hand.is_some(),
                            "sending to a destination"
                        );
                        let me = self.clone();
                        in_flight.spawn(async move {
                            me.send_one_transaction(&destination, in_hand).await;
                            destination
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read the federation queue"),
            }
            pass = tokio::select! {
                _ = wakes.outbound.changed() => {
                    // While a transaction is out, what is queued now mostly waits for it: the
                    // wake-ups of a busy stretch share a pass, at the latest when it returns.
                    if !in_flight.is_empty() {
                        tokio::select! {
                            Some(Ok(done)) = in_flight.join_next() => { busy.remove(&done); }
                            () = tokio::time::sleep(COALESCE_WHILE_SENDING) => {}
                        }
                    }
                    Pass { events: true, devices: false }
                }
                _ = wakes.device_lists.changed() => Pass { events: false, devices: true },
                // A destination is free again: its queue may hold more.
                Some(Ok(done)) = in_flight.join_next() => {
                    busy.remove(&done);
                    Pass { events: true, devices: false }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => Pass { events: true, devices: true },
            };
            while let Some(Ok(done)) = in_flight.try_join_next() {
                busy.remove(&done);
            }
        }
    }

    /// Queues local events after the consumer's position for their destinations: the servers
    /// in the room at the event, and the target's server of a membership change. Returns the
    /// destinations ready to send to, as read by the last pass, if one ran.
    async fn queue_new_events(
        &self,
        position: &mut Option<i64>,
    ) -> ServiceResult<Option<Vec<(String, Option<PendingTransaction>)>>> {
        loop {
            let from = match *position {
                Some(p) => p,
                None => *position.insert(self.storage.federation.consumer_position().await?),
            };
            let pass = self
                .storage
                .federation
                .queue_local_events(from, self.server_name.as_str(), QUEUE_BATCH, IDLE_STRETCH, now_ms())
                .await?;
            if pass.moved {
                *position = Some(pass.upto);
                if pass.full {
                    continue;
                }
            } else if pass.upto > from && (pass.wanted || pass.upto - from >= IDLE_STRETCH) {
                // There was something to queue, and another process queued it first.
                *position = None;
                return Ok(None);
            }
            return Ok(Some(pass.ready));
        }
    }

    /// The destinations with something queued that may be tried now (their next transaction
    /// is read when it is sent).
    async fn ready_destinations(&self) -> crate::storage::StorageResult<Vec<(String, Option<PendingTransaction>)>> {
        Ok(self.storage.federation.ready_destinations(now_ms()).await?.into_iter().map(|d| (d, None)).collect())
    }

    /// Sends the destination's next transaction (`in_hand` when the queue pass could tell it,
    /// else read from the queue); a failure backs it off.
    async fn send_one_transaction(&self, destination: &OwnedServerName, in_hand: Option<PendingTransaction>) {
        let started = std::time::Instant::now();
        let pending = match in_hand {
            Some(p) => p,
            None => match self.storage.federation.pending(destination.as_str()).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(%destination, error = %e, "could not read the queue");
                    return;
                }
            },
        };
        if pending.pdus.is_empty() && pending.edus.is_empty() {
            return;
        }
        let pdus: Vec<Box<RawJsonValue>> =
            pending.pdus.iter().filter_map(|(_, _, pdu)| RawJsonValue::from_string(pdu.clone()).ok()).collect();
        let edus = pending
            .edus
            .iter()
            .filter_map(|(_, kind, content)| {
                let edu = serde_json::json!({"edu_type": kind, "content": content});
                serde_json::value::to_raw_value(&edu).ok().map(Raw::from_json)
            })
            .collect();
        // Derived from what it carries, so a retry of the same content reuses the id.
        let txn_id = format!(
            "{}-{}",
            pending.pdus.first().map_or(0, |(p, _, _)| *p),
            pending.edus.first().map_or(0, |(p, _, _)| *p)
        );
        let mut request = send_transaction::Request::new(
            OwnedTransactionId::from(txn_id),
            self.server_name.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus;
        request.edus = edus;
        let sent_pdus: Vec<i64> = pending.pdus.iter().map(|(p, _, _)| *p).collect();
        let sent_edus: Vec<i64> = pending.edus.iter().map(|(p, _, _)| *p).collect();
        let read_us = started.elapsed().as_micros();
        match self.client.send(destination, request).await {
            Ok(response) => {
                tracing::debug!(
                    %destination,
                    pdus = sent_pdus.len(),
                    edus = sent_edus.len(),
                    read_us,
                    answered_us = started.elapsed().as_micros(),
                    "sent a transaction"
                );
                for (event_id, result) in &response.pdus {
                    if let Err(reason) = result {
                        tracing::info!(%destination, %event_id, %reason, "a server did not accept our event");
                    }
                }
                if let Err(e) = self.storage.federation.sent(destination.as_str(), &sent_pdus, &sent_edus).await {
                    tracing::warn!(%destination, error = %e, "could not dequeue a sent transaction");
                }
            }
            Err(e) => {
                tracing::info!(%destination, error = %e, "a transaction failed; backing off");
                if let Err(e) = self.storage.federation.failed(destination.as_str(), &e.to_string(), now_ms()).await {
                    tracing::warn!(%destination, error = %e, "could not record a failed transaction");
                }
            }
        }
    }
}
