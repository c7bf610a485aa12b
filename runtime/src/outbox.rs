//! Transactional outbox. Events are rows written in the state change's own
//! transaction; the relay publishes them right after the commit wakes it
//! (and on a sweep, for leftovers after a crash), and marks a row sent only
//! once the broker acknowledged it. A crash between the acknowledgement and
//! the mark means the event is published again: consumers deduplicate.
//!
//! Order per key: one relay at a time holds the lease, and it publishes in
//! commit-sequence order through an idempotent producer. Writers must change
//! their aggregate's row before publishing its event, so that concurrent
//! transactions on one aggregate get sequence numbers in commit order.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use shared_events::Envelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken as CancelToken;
use tracing::Instrument;

use crate::config::OutboxSettings;
use crate::db::{AnyConnection, Db, DbError};
use crate::kafka::{headers, Kafka};
use crate::metrics::Metrics;
use crate::schema::{outbox, outbox_relay_lease};
use crate::telemetry;

/// How long a relay may hold the lease without renewing it (a dead relay's
/// lease is taken over after this).
const LEASE_TTL: chrono::TimeDelta = chrono::TimeDelta::seconds(15);
/// How long to wait for another instance's relay to finish draining.
const LEASE_BUSY_RETRY: Duration = Duration::from_millis(20);

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    event_id: String,
    topic: &'a str,
    partition_key: &'a str,
    event_type: &'a str,
    payload: String,
    traceparent: Option<String>,
    created_at: NaiveDateTime,
}

/// A row waiting to be published.
#[derive(Debug, Clone, Queryable)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub topic: String,
    pub partition_key: String,
    pub event_type: String,
    pub payload: String,
    pub traceparent: Option<String>,
}

pub(crate) fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

pub(crate) fn enqueue(conn: &mut AnyConnection, envelope: &Envelope) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values(NewOutboxRow {
            event_id: envelope.event_id.to_string(),
            topic: envelope.topic().name(),
            partition_key: &envelope.partition_key,
            event_type: envelope.event_type().as_str(),
            payload: envelope.to_json(),
            traceparent: telemetry::current_traceparent(),
            created_at: now(),
        })
        .execute(conn)
        .map(|_| ())
}

/// Rows not yet acknowledged by the broker.
pub fn pending_count(conn: &mut AnyConnection) -> QueryResult<i64> {
    outbox::table
        .filter(outbox::sent_at.is_null())
        .count()
        .get_result(conn)
}

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
            if let Err(error) = self.drain().await {
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

    /// Publishes everything pending. Returns how many events were acknowledged.
    pub async fn drain(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            if !self.acquire_lease().await? {
                // Another instance is draining; it will also publish our rows,
                // but wait for it so nothing is left behind when it stops.
                tokio::time::sleep(LEASE_BUSY_RETRY).await;
                if self.pending().await? == 0 {
                    return Ok(total);
                }
                continue;
            }
            let outcome = self.drain_holding_lease().await;
            self.release_lease().await?;
            let published = outcome?;
            total += published;
            return Ok(total);
        }
    }

    async fn drain_holding_lease(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let batch = self.claim_batch().await?;
            if batch.is_empty() {
                return Ok(total);
            }
            let full = batch.len() as i64 == self.settings.batch_size;
            let acked = self.publish(&batch).await;
            let failed = acked.len() < batch.len();
            self.mark_sent(acked.clone()).await?;
            total += acked.len();
            if failed {
                return Err(RelayError::Broker(format!(
                    "{} of {} events not acknowledged",
                    batch.len() - acked.len(),
                    batch.len()
                )));
            }
            if !full {
                return Ok(total);
            }
            self.renew_lease().await?;
        }
    }

    async fn pending(&self) -> Result<i64, RelayError> {
        Ok(self
            .db
            .run(|conn| pending_count(conn).map_err(DbError::from))
            .await?)
    }

    async fn acquire_lease(&self) -> Result<bool, RelayError> {
        let holder = self.holder.clone();
        let taken = self
            .db
            .run(move |conn| {
                let now = now();
                diesel::update(outbox_relay_lease::table)
                    .filter(outbox_relay_lease::name.eq("relay"))
                    .filter(
                        outbox_relay_lease::holder
                            .is_null()
                            .or(outbox_relay_lease::holder.eq(&holder))
                            .or(outbox_relay_lease::expires_at.lt(now)),
                    )
                    .set((
                        outbox_relay_lease::holder.eq(&holder),
                        outbox_relay_lease::expires_at.eq(now + LEASE_TTL),
                    ))
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await?;
        Ok(taken == 1)
    }

    async fn renew_lease(&self) -> Result<(), RelayError> {
        if self.acquire_lease().await? {
            Ok(())
        } else {
            Err(RelayError::LeaseLost)
        }
    }

    async fn release_lease(&self) -> Result<(), RelayError> {
        let holder = self.holder.clone();
        self.db
            .run(move |conn| {
                diesel::update(outbox_relay_lease::table)
                    .filter(outbox_relay_lease::name.eq("relay"))
                    .filter(outbox_relay_lease::holder.eq(&holder))
                    .set(outbox_relay_lease::holder.eq(None::<String>))
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await?;
        Ok(())
    }

    /// The oldest pending rows, in commit-sequence order.
    pub async fn claim_batch(&self) -> Result<Vec<PendingEvent>, RelayError> {
        let limit = self.settings.batch_size.max(1);
        Ok(self
            .db
            .run(move |conn| {
                outbox::table
                    .filter(outbox::sent_at.is_null())
                    .order(outbox::seq)
                    .limit(limit)
                    .select((
                        outbox::seq,
                        outbox::event_id,
                        outbox::topic,
                        outbox::partition_key,
                        outbox::event_type,
                        outbox::payload,
                        outbox::traceparent,
                    ))
                    .load::<PendingEvent>(conn)
                    .map_err(DbError::from)
            })
            .await?)
    }

    /// Sends the batch and waits for the broker; returns the acknowledged seqs.
    pub async fn publish(&self, batch: &[PendingEvent]) -> Vec<i64> {
        let topics: Vec<String> = batch
            .iter()
            .map(|e| self.kafka.prefixed(&e.topic))
            .collect();
        let mut deliveries = Vec::with_capacity(batch.len());
        for (event, topic) in batch.iter().zip(&topics) {
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
            let record = FutureRecord::to(topic)
                .key(event.partition_key.as_str())
                .payload(event.payload.as_str())
                .headers(message_headers);
            let delivery = self
                .kafka
                .producer()
                .send(record, Timeout::After(Duration::from_secs(10)));
            let seq = event.seq;
            deliveries.push(async move { (seq, delivery.await) }.instrument(span));
        }
        let mut acked = Vec::with_capacity(batch.len());
        for (seq, result) in futures::future::join_all(deliveries).await {
            match result {
                Ok(_) => acked.push(seq),
                Err((error, _)) => {
                    self.metrics.outbox_failures.inc();
                    tracing::warn!(seq, %error, "broker did not acknowledge event");
                }
            }
        }
        self.metrics.outbox_published.inc_by(acked.len() as u64);
        acked
    }

    pub async fn mark_sent(&self, seqs: Vec<i64>) -> Result<(), RelayError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.db
            .run(move |conn| {
                diesel::update(outbox::table.filter(outbox::seq.eq_any(&seqs)))
                    .set(outbox::sent_at.eq(now()))
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await?;
        Ok(())
    }

    async fn prune(&self) -> Result<(), RelayError> {
        let cutoff = now() - chrono::TimeDelta::seconds(self.settings.retention_secs);
        self.db
            .run(move |conn| {
                diesel::delete(outbox::table.filter(outbox::sent_at.lt(cutoff)))
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await?;
        Ok(())
    }
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
