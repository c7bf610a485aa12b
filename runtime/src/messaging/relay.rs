//! Transactional outbox. Events are rows written in the state change's own
//! transaction; the relay publishes them right after the commit wakes it
//! (and on a sweep, for leftovers after a crash), and marks a row sent only
//! once the broker acknowledged it. A crash between the acknowledgement and
//! the mark means the event is published again: consumers deduplicate.
//!
//! Order per key: one relay at a time holds the lease, and it publishes in
//! commit-sequence order with at most one unacknowledged event per topic and
//! key: a key's next event goes to the producer once the broker acknowledged
//! the previous one, and a key stops at its first failure (its rest goes out
//! on the next drain, after the failed one). The idempotent producer alone
//! does not keep that order: after a message of a partition fails (timed
//! out, refused by the broker), a later one may still land.
//! A transaction's events are written to the outbox at its end, after the
//! aggregate rows it changed (and locked until its commit), so that
//! concurrent transactions on one aggregate get sequence numbers in commit
//! order.
//!
//! One drain costs two transactions when it finds fewer rows than a batch:
//! taking the lease with reading the rows, and marking them sent with
//! releasing the lease. Whatever the commits that woke it wrote goes to the
//! producer at once (one event in flight per key), and librdkafka packs
//! the events that reach it within `linger.ms` into one produce request
//! per partition.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use shared_events::{Decoded, Envelope, EventType, Reason};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken as CancelToken;
use tracing::Instrument;

use super::kafka::{headers, Kafka};
use super::producer::EventProducer;
use crate::config::OutboxSettings;
use crate::db::outbox::{self, now, PendingEvent};
use crate::db::{database_now, Db, DbError};
use crate::ops::metrics::Metrics;
use crate::ops::telemetry;

/// How long to wait before looking again while another instance's relay
/// holds the lease.
const LEASE_BUSY_RETRY: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct OutboxRelay {
    db: Db,
    kafka: Kafka,
    settings: OutboxSettings,
    metrics: Metrics,
    signal: Arc<Notify>,
    /// This relay's name in the lease table.
    holder: String,
}

impl OutboxRelay {
    pub fn new(db: Db, kafka: Kafka, settings: OutboxSettings, metrics: Metrics) -> OutboxRelay {
        OutboxRelay {
            signal: db.outbox_signal(),
            db,
            kafka,
            settings,
            metrics,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Publishes after every commit that wrote events, and sweeps on an interval.
    pub async fn run(self, stop: CancelToken) {
        let sweep = Duration::from_millis(self.settings.sweep_interval_ms.max(10));
        let mut last_prune = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.signal.notified() => {}
                _ = tokio::time::sleep(sweep) => {}
            }
            self.recover_producer();
            if let Err(error) = self.drain(&stop).await {
                tracing::warn!(%error, "outbox relay could not publish; will retry");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(sweep) => {}
                }
                self.signal.notify_one();
            }
            if last_prune.elapsed() >= sweep * 60 {
                last_prune = std::time::Instant::now();
                if let Err(error) = self.prune().await {
                    tracing::warn!(%error, "outbox prune failed");
                }
            }
        }
    }

    /// A producer that failed fatally publishes nothing ever again: replace it.
    fn recover_producer(&self) {
        let Some(fatal) = self.kafka.producer_fatal_error() else {
            return;
        };
        match self.kafka.replace_failed_producer() {
            Ok(true) => {
                self.metrics.producer_restarts.inc();
                tracing::error!(error = %fatal, "the producer failed fatally; replaced it");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(error = %fatal, cause = %error, "the producer failed fatally and cannot be replaced yet");
            }
        }
    }

    /// Publishes everything pending, unless `stop` comes first. Returns how
    /// many events were acknowledged.
    pub async fn drain(&self, stop: &CancelToken) -> Result<usize, RelayError> {
        loop {
            if let Some(first) = self.acquire_lease_and_claim().await? {
                return match self.drain_holding_lease(first).await {
                    Ok(total) => Ok(total),
                    Err(error) => {
                        self.release_lease().await?;
                        Err(error)
                    }
                };
            }
            // Another instance is draining; it also publishes our rows, but
            // wait for it so nothing is left behind when it stops.
            tokio::select! {
                _ = stop.cancelled() => return Ok(0),
                _ = tokio::time::sleep(LEASE_BUSY_RETRY) => {}
            }
            if self.pending().await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Publishes `batch` and what is pending after it; on success the lease
    /// has been released (with the last batch's mark, in one transaction),
    /// on an error the caller releases it.
    async fn drain_holding_lease(&self, mut batch: Vec<PendingEvent>) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            if batch.is_empty() {
                self.release_lease().await?;
                return Ok(total);
            }
            let full = batch.len() as i64 == self.settings.batch_size;
            // The lease is renewed while the batch is in flight: one slow
            // publish must not let a second relay start beside this one.
            let acked = tokio::select! {
                acked = self.publish(&batch) => acked,
                lost = self.keep_lease() => return Err(lost),
            };
            let sent = acknowledged_prefix(&batch, &acked);
            total += sent.len();
            if sent.len() < batch.len() {
                self.mark_sent(sent.clone()).await?;
                return Err(RelayError::Broker(format!(
                    "{} of {} events not acknowledged, or held back behind an earlier event of their key",
                    batch.len() - sent.len(),
                    batch.len()
                )));
            }
            if !full {
                self.mark_sent_and_release(sent).await?;
                return Ok(total);
            }
            self.mark_sent(sent).await?;
            self.renew_lease().await?;
            batch = self.claim_batch().await?;
        }
    }

    /// Renews the lease every third of its time-to-live; returns only when
    /// it was lost.
    async fn keep_lease(&self) -> RelayError {
        let every = self.lease_ttl() / 3;
        loop {
            tokio::time::sleep(every.to_std().unwrap_or(Duration::from_secs(1))).await;
            if let Err(error) = self.renew_lease().await {
                return error;
            }
        }
    }

    fn lease_ttl(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::milliseconds(self.settings.lease_ttl_ms.max(30) as i64)
    }

    async fn pending(&self) -> Result<i64, RelayError> {
        Ok(self.db.run(outbox::pending_count).await?)
    }

    /// Takes the lease if it is free, ours, or ran out, and sets it to run
    /// out after its time-to-live; both judged on the database's clock, so
    /// that a relay whose own clock runs ahead cannot take over a lease
    /// that another relay still holds.
    async fn acquire_lease(&self) -> Result<bool, RelayError> {
        let holder = self.holder.clone();
        let ttl = self.lease_ttl();
        let taken = self
            .db
            .run(move |conn| {
                let now = database_now(conn)?.naive_utc();
                outbox::take_lease(conn, &holder, now, ttl).map_err(DbError::from)
            })
            .await?;
        Ok(taken)
    }

    async fn renew_lease(&self) -> Result<(), RelayError> {
        if self.acquire_lease().await? {
            Ok(())
        } else {
            Err(RelayError::LeaseLost)
        }
    }

    /// Takes the lease as [`OutboxRelay::acquire_lease`] does and, if it
    /// was taken, reads the first batch, in one transaction: the rows
    /// pending then, or `None` while another relay holds the lease.
    async fn acquire_lease_and_claim(&self) -> Result<Option<Vec<PendingEvent>>, RelayError> {
        let holder = self.holder.clone();
        let ttl = self.lease_ttl();
        let limit = self.settings.batch_size.max(1);
        let claimed = self
            .db
            .transaction(move |tx| {
                let conn = tx.conn();
                let now = database_now(conn)?.naive_utc();
                if !outbox::take_lease(conn, &holder, now, ttl)? {
                    return Ok(None);
                }
                Ok::<_, DbError>(Some(outbox::oldest_pending(conn, limit)?))
            })
            .await?;
        Ok(claimed)
    }

    async fn release_lease(&self) -> Result<(), RelayError> {
        let holder = self.holder.clone();
        self.db
            .run(move |conn| outbox::release_lease(conn, &holder).map_err(DbError::from))
            .await?;
        Ok(())
    }

    /// The oldest pending rows, in commit-sequence order.
    pub async fn claim_batch(&self) -> Result<Vec<PendingEvent>, RelayError> {
        let limit = self.settings.batch_size.max(1);
        Ok(self
            .db
            .run(move |conn| outbox::oldest_pending(conn, limit).map_err(DbError::from))
            .await?)
    }

    /// Publishes the batch with at most one unacknowledged event per topic
    /// and key: a key's next event goes to the producer only once the
    /// broker acknowledged the previous one, and none after one that failed.
    /// Keys go concurrently. Returns the acknowledged seqs.
    ///
    /// Why not the whole batch at once: librdkafka sends a key's events in
    /// several requests when they do not fit one, and after one of them
    /// fails (timed out, refused by the broker) a later one may still land,
    /// idempotent producer or not; consumers would apply the later event
    /// first, and the failed one when it goes out again.
    pub async fn publish(&self, batch: &[PendingEvent]) -> Vec<i64> {
        let producer = self.kafka.producer();
        let acked = one_in_flight_per_key(batch, |event| self.send(&producer, event)).await;
        self.metrics.outbox_published.inc_by(acked.len() as u64);
        self.count_saga_outcomes(batch, &acked);
        acked
    }

    /// Hands one event to the producer and waits for the broker's
    /// acknowledgement; says whether it came.
    async fn send(&self, producer: &EventProducer, event: &PendingEvent) -> bool {
        let topic = self.kafka.prefixed(&event.topic);
        let span = tracing::info_span!(
            "outbox.publish",
            event_id = %event.event_id,
            event_type = %event.event_type,
            topic = %event.topic,
        );
        if let Some(parent) = &event.traceparent {
            telemetry::continue_trace(&span, parent);
        }
        let traceparent = span.in_scope(telemetry::current_traceparent);
        let mut message_headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(event.event_id.as_str()),
            })
            .insert(Header {
                key: headers::EVENT_TYPE,
                value: Some(event.event_type.as_str()),
            });
        if let Some(traceparent) = &traceparent {
            message_headers = message_headers.insert(Header {
                key: headers::TRACEPARENT,
                value: Some(traceparent.as_str()),
            });
        }
        let record = FutureRecord::to(&topic)
            .key(event.partition_key.as_str())
            .payload(event.payload.as_str())
            .headers(message_headers);
        let seq = event.seq;
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            Err(refused) => {
                let error = &refused.0;
                self.metrics.outbox_failures.inc();
                tracing::warn!(parent: &span, seq, %error, "the producer refused the event; its key waits");
                return false;
            }
        };
        match delivery.instrument(span.clone()).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                self.metrics.outbox_failures.inc();
                tracing::warn!(parent: &span, seq, %error, "broker did not acknowledge event; its key waits");
                false
            }
            Err(_) => {
                self.metrics.outbox_failures.inc();
                tracing::warn!(parent: &span, seq, "the producer dropped the event before delivery; its key waits");
                false
            }
        }
    }

    /// Counts the saga endings among the acknowledged events. An event
    /// published again after a crash counts again: rare, and the count is
    /// for alerting on rates, not for accounting.
    /// Only outcome events are decoded (for their reason): the rest of the
    /// batch costs a lookup of its type name.
    fn count_saga_outcomes(&self, batch: &[PendingEvent], acked: &[i64]) {
        let acked: HashSet<i64> = acked.iter().copied().collect();
        let endings = batch.iter().filter(|e| {
            acked.contains(&e.seq)
                && EventType::parse(&e.event_type).is_some_and(|t| t.saga_outcome().is_some())
        });
        for event in endings {
            if let Ok(Decoded::Known(envelope)) = Envelope::decode(event.payload.as_bytes()) {
                if let Some((outcome, reason)) = envelope.event.saga_outcome() {
                    let reason = reason.map(Reason::as_str).unwrap_or("");
                    self.metrics
                        .saga_outcomes
                        .with_label_values(&[outcome.as_str(), reason])
                        .inc();
                }
            }
        }
    }

    pub async fn mark_sent(&self, seqs: Vec<i64>) -> Result<(), RelayError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.db
            .run(move |conn| outbox::mark_sent(conn, &seqs).map_err(DbError::from))
            .await?;
        Ok(())
    }

    /// Marks the last rows of a drain sent and releases the lease, in one
    /// transaction.
    async fn mark_sent_and_release(&self, seqs: Vec<i64>) -> Result<(), RelayError> {
        let holder = self.holder.clone();
        self.db
            .transaction(move |tx| {
                let conn = tx.conn();
                if !seqs.is_empty() {
                    outbox::mark_sent(conn, &seqs)?;
                }
                outbox::release_lease(conn, &holder)?;
                Ok::<_, DbError>(())
            })
            .await?;
        Ok(())
    }

    async fn prune(&self) -> Result<(), RelayError> {
        let cutoff = now() - chrono::TimeDelta::seconds(self.settings.retention_secs);
        self.db
            .run(move |conn| outbox::prune_sent_before(conn, cutoff).map_err(DbError::from))
            .await?;
        Ok(())
    }
}

/// The rows that may be marked sent: per topic and key, the events up to the
/// first one the broker did not acknowledge. A later event of that key may
/// have been acknowledged, but it goes out again after the failed one, so
/// that consumers meet them in commit order.
pub fn acknowledged_prefix(batch: &[PendingEvent], acked: &[i64]) -> Vec<i64> {
    let acked: HashSet<i64> = acked.iter().copied().collect();
    let mut broken: HashSet<(&str, &str)> = HashSet::new();
    let mut sent = Vec::with_capacity(acked.len());
    for event in batch {
        let key = (event.topic.as_str(), event.partition_key.as_str());
        if broken.contains(&key) {
            continue;
        }
        if acked.contains(&event.seq) {
            sent.push(event.seq);
        } else {
            broken.insert(key);
        }
    }
    sent
}

/// Sends each key's events one after another, in commit-sequence order,
/// the next only once `send` says the previous was acknowledged, and none
/// after one that was not; different keys are in flight together. Returns
/// the acknowledged seqs: for each key a prefix of its events, so
/// [`acknowledged_prefix`] keeps them all.
async fn one_in_flight_per_key<'a, S, F>(batch: &'a [PendingEvent], send: S) -> Vec<i64>
where
    S: Fn(&'a PendingEvent) -> F,
    F: std::future::Future<Output = bool>,
{
    let send = &send;
    let keys = events_by_key(batch).into_iter().map(|events| async move {
        let mut acked = Vec::with_capacity(events.len());
        for event in events {
            if !send(event).await {
                break;
            }
            acked.push(event.seq);
        }
        acked
    });
    futures::future::join_all(keys)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The batch's events grouped by topic and key, each group in batch order,
/// the groups in the order of their first event.
fn events_by_key(batch: &[PendingEvent]) -> Vec<Vec<&PendingEvent>> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut groups: Vec<Vec<&PendingEvent>> = Vec::new();
    for event in batch {
        let key = (event.topic.as_str(), event.partition_key.as_str());
        let group = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(event);
    }
    groups
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("broker: {0}")]
    Broker(String),
    #[error("another relay took over the outbox lease")]
    LeaseLost,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, key: &str) -> PendingEvent {
        PendingEvent {
            seq,
            event_id: format!("e{seq}"),
            topic: "reservation.events".into(),
            partition_key: key.into(),
            event_type: "ReservationRequested".into(),
            payload: "{}".into(),
            traceparent: None,
        }
    }

    #[test]
    fn only_the_acknowledged_prefix_of_each_key_is_sent() {
        let batch = [
            event(1, "a"),
            event(2, "b"),
            event(3, "a"),
            event(4, "b"),
            event(5, "a"),
            event(6, "c"),
        ];
        // 1 (key a) failed; 3 and 5 of key a were acknowledged but must go
        // out again after 1. 4 (key b) failed after 2 was acknowledged.
        let sent = acknowledged_prefix(&batch, &[2, 3, 5, 6]);
        assert_eq!(sent, vec![2, 6]);
        assert_eq!(acknowledged_prefix(&batch, &[1, 2, 3, 4, 5, 6]).len(), 6);
        assert!(acknowledged_prefix(&batch, &[]).is_empty());
    }

    fn event_on(seq: i64, topic: &str, key: &str) -> PendingEvent {
        PendingEvent {
            topic: topic.into(),
            ..event(seq, key)
        }
    }

    #[test]
    fn events_are_grouped_by_topic_and_key_in_batch_order() {
        let batch = [
            event(1, "a"),
            event(2, "b"),
            event_on(3, "payment.events", "a"),
            event(4, "a"),
            event(5, "b"),
        ];
        let seqs: Vec<Vec<i64>> = events_by_key(&batch)
            .iter()
            .map(|events| events.iter().map(|e| e.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![1, 4], vec![2, 5], vec![3]]);
    }

    /// What a fake producer saw: the order of sends, and how many events
    /// were unacknowledged at once, per key and in all.
    #[derive(Default)]
    struct InFlight {
        sent: Vec<i64>,
        now: HashMap<String, usize>,
        most_per_key: usize,
        most_in_all: usize,
    }

    #[tokio::test]
    async fn a_key_has_one_event_in_flight_and_stops_at_its_first_failure() {
        let batch = [
            event(1, "a"),
            event(2, "b"),
            event(3, "a"),
            event(4, "b"),
            event(5, "a"),
            event(6, "c"),
            event(7, "b"),
        ];
        // 3 (key a) is never acknowledged: 5 must not even be sent.
        let failing = [3];
        let seen = std::cell::RefCell::new(InFlight::default());
        let acked = one_in_flight_per_key(&batch, |event| {
            let seen = &seen;
            async move {
                {
                    let mut seen = seen.borrow_mut();
                    seen.sent.push(event.seq);
                    let key = seen.now.entry(event.partition_key.clone()).or_default();
                    *key += 1;
                    let key = *key;
                    let in_all = seen.now.values().sum();
                    seen.most_per_key = seen.most_per_key.max(key);
                    seen.most_in_all = seen.most_in_all.max(in_all);
                }
                // The broker's answer takes a while: the other sends may start.
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                if let Some(count) = seen.borrow_mut().now.get_mut(&event.partition_key) {
                    *count -= 1;
                }
                !failing.contains(&event.seq)
            }
        })
        .await;
        let seen = seen.into_inner();

        let mut sorted = acked.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 2, 4, 6, 7]);
        assert_eq!(acknowledged_prefix(&batch, &acked).len(), acked.len());
        assert!(
            !seen.sent.contains(&5),
            "nothing after a failure of its key"
        );
        assert_eq!(seen.most_per_key, 1, "one unacknowledged event per key");
        assert!(seen.most_in_all > 1, "keys are in flight together");
        let of_key = |key: &str| -> Vec<i64> {
            let seqs: Vec<i64> = batch
                .iter()
                .filter(|e| e.partition_key == key)
                .map(|e| e.seq)
                .collect();
            seen.sent
                .iter()
                .copied()
                .filter(|s| seqs.contains(s))
                .collect()
        };
        assert_eq!(of_key("a"), vec![1, 3]);
        assert_eq!(of_key("b"), vec![2, 4, 7], "in commit order");
    }
}
