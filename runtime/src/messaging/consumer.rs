//! Idempotent event consumption, in batches. The messages that have
//! arrived (up to `consumer.batch_size`, without waiting for more) are
//! decoded and applied in arrival order — so in order per partition — in
//! one local transaction: each event inside a savepoint that checks
//! `(consumer, event_id)`, applies the handler's effects and records the
//! pair; the events the handlers published are written to the outbox in
//! one statement at the end; then one COMMIT. Only after that commit are
//! the offsets stored, for librdkafka to commit on its interval
//! (`consumer.commit_interval_ms`), and the handlers' `committed` called.
//! A redelivered event therefore changes nothing.
//!
//! An event the handler rejects is undone alone (its savepoint) and goes to
//! `<topic>.dlq` after the commit; the others' work stands. An event that
//! fails otherwise ends the batch there: what came before it commits, it is
//! retried alone with backoff (and dead-lettered when it keeps failing), and
//! the events after it form the next batch. Messages that break the
//! contract (see `PoisonKind`) go to `<topic>.dlq` with the reason.

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use shared_events::{DecodeError, Decoded, Envelope, EventType, Service, Topic, MAX_MESSAGE_BYTES};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::ConsumerSettings;
use crate::db::{processed, Db, DbError, Tx};
use crate::messaging::kafka::{headers, Kafka};
use crate::ops::metrics::Metrics;
use crate::ops::telemetry;

/// A service's reaction to other services' events.
pub trait EventHandler: Send + Sync + 'static {
    /// The consumer's name: its consumer group and its key in `processed_events`.
    fn name(&self) -> &str;
    fn topics(&self) -> Vec<Topic>;
    /// Event types this handler reacts to; others are skipped without a transaction.
    fn handles(&self, event_type: EventType) -> bool;
    /// Applies `event` inside `tx`. Business refusals are not errors: publish
    /// the refusal as an event. Errors are retried, except [`HandlerError::Rejected`].
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError>;
    /// Called after the transaction that applied `event` committed (to wake
    /// requests waiting for the change, say).
    fn committed(&self, _event: &Envelope) {}
}

/// A service's consumer, subscribed as the contract declares: named after
/// the service, reading the topics [`Service::consumes`] lists and acting
/// on the event types whose [`EventType::consumers`] include it. Every one
/// is an [`EventHandler`]; implement that directly only for a consumer the
/// contract does not describe (a test's, a benchmark's).
pub trait ServiceHandler: Send + Sync + 'static {
    /// The service whose consumer this is.
    const SERVICE: Service;
    /// As [`EventHandler::handle`].
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError>;
    /// As [`EventHandler::committed`].
    fn committed(&self, _event: &Envelope) {}
}

impl<H: ServiceHandler> EventHandler for H {
    fn name(&self) -> &str {
        H::SERVICE.as_str()
    }

    fn topics(&self) -> Vec<Topic> {
        H::SERVICE.consumes().to_vec()
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type.consumers().contains(&H::SERVICE)
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        ServiceHandler::handle(self, tx, event)
    }

    fn committed(&self, event: &Envelope) {
        ServiceHandler::committed(self, event)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event can never be applied here; retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl crate::db::Transient for HandlerError {
    fn is_transient(&self) -> bool {
        match self {
            HandlerError::Db(e) => e.is_transient(),
            HandlerError::Other(e) => e
                .downcast_ref::<DbError>()
                .is_some_and(crate::db::Transient::is_transient),
            HandlerError::Rejected(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    Applied,
    Duplicate,
    /// The handler refused it ([`HandlerError::Rejected`]): what it did was
    /// undone, and the other events' work stands.
    Rejected(String),
}

/// What one batch transaction committed: an outcome for each event, in
/// order, up to the first event that failed otherwise. That event (`failed`,
/// with its error) was undone, and the events after it were not tried.
#[derive(Debug)]
pub struct BatchOutcome {
    pub outcomes: Vec<EventOutcome>,
    pub failed: Option<HandlerError>,
}

/// Applies `events` in order in one transaction, each in a savepoint and
/// unless `(consumer, event_id)` was already recorded (also by an earlier
/// event of the same batch), inside its span. Stops at the first event that
/// fails other than by rejection (see [`BatchOutcome`]). An error is the
/// transaction's as a whole (the database is down, a savepoint could not
/// be rolled back, a handler panicked): nothing of the batch committed.
/// Public so that tests can deliver batches directly.
pub async fn apply_batch(
    db: &Db,
    handler: Arc<dyn EventHandler>,
    events: Vec<(Arc<Envelope>, tracing::Span)>,
) -> Result<BatchOutcome, HandlerError> {
    db.transaction(move |tx| {
        let consumer = handler.name().to_string();
        let mut outcomes = Vec::with_capacity(events.len());
        for (event, span) in &events {
            let _entered = span.enter();
            let applied = tx.savepoint(|tx| {
                let event_id = event.event_id.to_string();
                if processed::already_applied(tx.conn(), &consumer, &event_id)? {
                    return Ok(EventOutcome::Duplicate);
                }
                handler.handle(tx, event)?;
                processed::record_applied(tx.conn(), &consumer, &event_id)?;
                Ok::<_, HandlerError>(EventOutcome::Applied)
            })?;
            match applied {
                Ok(outcome) => outcomes.push(outcome),
                Err(HandlerError::Rejected(reason)) => {
                    outcomes.push(EventOutcome::Rejected(reason))
                }
                Err(error) => {
                    return Ok(BatchOutcome {
                        outcomes,
                        failed: Some(error),
                    })
                }
            }
        }
        Ok(BatchOutcome {
            outcomes,
            failed: None,
        })
    })
    .await
}

/// Runs `handler` inside one transaction unless `(consumer, event_id)` was
/// already recorded. Public so that tests can deliver an event twice directly.
pub async fn apply_once(
    db: &Db,
    handler: Arc<dyn EventHandler>,
    event: Arc<Envelope>,
) -> Result<Outcome, HandlerError> {
    db.transaction(move |tx| {
        let consumer = handler.name().to_string();
        let event_id = event.event_id.to_string();
        if processed::already_applied(tx.conn(), &consumer, &event_id)? {
            return Ok(Outcome::Duplicate);
        }
        handler.handle(tx, &event)?;
        processed::record_applied(tx.conn(), &consumer, &event_id)?;
        Ok(Outcome::Applied)
    })
    .await
}

/// Notes when the consumer has joined its group (been given its share of
/// partitions, possibly none), so readiness can wait for it; and exports
/// librdkafka's per-partition lag from its statistics.
struct GroupMembership {
    joined: Arc<AtomicBool>,
    consumer: String,
    metrics: Metrics,
    /// The partitions whose lag was last exported, so that a partition
    /// given to another instance stops being reported here.
    reported: Mutex<HashSet<(String, i32)>>,
}

impl ClientContext for GroupMembership {
    fn stats(&self, statistics: Statistics) {
        let mut now_reported = HashSet::new();
        for (topic, stats) in &statistics.topics {
            for partition in stats.partitions.values() {
                // -1 is librdkafka's internal partition; a lag of -1 is unknown.
                if partition.partition < 0 || !partition.desired || partition.consumer_lag < 0 {
                    continue;
                }
                let label = partition.partition.to_string();
                self.metrics
                    .consumer_lag
                    .with_label_values(&[self.consumer.as_str(), topic.as_str(), label.as_str()])
                    .set(partition.consumer_lag);
                now_reported.insert((topic.clone(), partition.partition));
            }
        }
        let mut reported = match self.reported.lock() {
            Ok(reported) => reported,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (topic, partition) in reported.difference(&now_reported) {
            let label = partition.to_string();
            let _ = self.metrics.consumer_lag.remove_label_values(&[
                self.consumer.as_str(),
                topic.as_str(),
                label.as_str(),
            ]);
        }
        *reported = now_reported;
    }
}

impl ConsumerContext for GroupMembership {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // A rebalance pauses the whole group's consumption: worth a line
        // when a consumer stalls.
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(consumer = %self.consumer, partitions = partitions.count(), "partitions assigned")
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(consumer = %self.consumer, partitions = partitions.count(), "partitions revoked")
            }
            Rebalance::Error(error) => {
                tracing::warn!(consumer = %self.consumer, %error, "rebalance failed")
            }
        }
        self.joined
            .store(matches!(rebalance, Rebalance::Assign(_)), Ordering::SeqCst);
    }
}

pub struct EventConsumer {
    db: Db,
    kafka: Kafka,
    settings: ConsumerSettings,
    metrics: Metrics,
    handler: Arc<dyn EventHandler>,
    joined: Arc<AtomicBool>,
}

impl EventConsumer {
    pub fn new(
        db: Db,
        kafka: Kafka,
        settings: ConsumerSettings,
        metrics: Metrics,
        handler: Arc<dyn EventHandler>,
    ) -> EventConsumer {
        EventConsumer {
            db,
            kafka,
            settings,
            metrics,
            handler,
            joined: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once the consumer has joined its group.
    pub fn joined(&self) -> Arc<AtomicBool> {
        self.joined.clone()
    }

    /// Subscribes and processes messages until `stop`.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let membership = GroupMembership {
            joined: self.joined.clone(),
            consumer: self.handler.name().to_string(),
            metrics: self.metrics.clone(),
            reported: Mutex::new(HashSet::new()),
        };
        let consumer: StreamConsumer<GroupMembership> = self
            .kafka
            .consumer_config(self.handler.name())
            .set(
                "statistics.interval.ms",
                self.settings.stats_interval_ms.to_string(),
            )
            .set(
                "auto.commit.interval.ms",
                self.settings.commit_interval_ms.to_string(),
            )
            .create_with_context(membership)?;
        let topics: Vec<String> = self
            .handler
            .topics()
            .into_iter()
            .map(|t| self.kafka.topic_name(t))
            .collect();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        tracing::info!(consumer = self.handler.name(), ?topics, "consuming");
        let most = self.settings.batch_size.max(1);
        {
            let mut messages = consumer.stream();
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => break,
                    message = messages.next() => message,
                };
                let mut batch = match first {
                    Some(Ok(message)) => vec![message],
                    Some(Err(error)) => {
                        tracing::warn!(%error, "consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    None => break,
                };
                // What has already arrived joins the batch; nothing waits
                // for more.
                while batch.len() < most {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(message))) => batch.push(message),
                        Some(Some(Err(error))) => {
                            tracing::warn!(%error, "consumer error");
                            break;
                        }
                        Some(None) | None => break,
                    }
                }
                if !self.process(&batch, &stop).await {
                    break;
                }
                // Only now, after the local commit (and the dead letters'
                // acknowledgements), may the positions move past them.
                for message in &batch {
                    if let Err(error) = consumer.store_offset_from_message(message) {
                        tracing::warn!(%error, "offset store failed; the event may be redelivered");
                    }
                }
            }
        }
        // A clean stop leaves nothing to replay: commit what was stored since
        // the last interval (with nothing stored librdkafka says so; harmless).
        // A synchronous commit waits for the broker: off the executor.
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await;
        if let Ok(Err(error)) = committed {
            tracing::debug!(%error, "final offset commit");
        }
        Ok(())
    }

    /// Handles a batch of messages, each to a defined end: applied (or a
    /// duplicate, or ignored) and committed, or dead-lettered. Returns false
    /// if stopped midway (the offsets are then not stored and the messages
    /// come again; what committed changes nothing the second time).
    async fn process(&self, messages: &[BorrowedMessage<'_>], stop: &CancellationToken) -> bool {
        let consumer = self.handler.name();
        // Sent once the events before them are settled, in message order.
        let mut letters: Vec<Letter> = Vec::new();
        let mut events: Vec<Admitted> = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let envelope = match self.admit(message) {
                Ok(envelope) => envelope,
                Err(poison) => {
                    letters.push(Letter {
                        index,
                        reason: poison.to_string(),
                        event_type: poison.event_type,
                        attempts: 0,
                    });
                    continue;
                }
            };
            let event_type = envelope.event_type();
            if !self.handler.handles(event_type) {
                self.count(consumer, event_type.as_str(), "ignored");
                continue;
            }
            let span = tracing::info_span!(
                "event.consume",
                consumer = %consumer,
                event_type = %event_type,
                event_id = %envelope.event_id,
                correlation_id = %envelope.correlation_id,
            );
            if let Some(traceparent) = header(message, headers::TRACEPARENT) {
                telemetry::continue_trace(&span, &traceparent);
            }
            events.push(Admitted {
                index,
                envelope: Arc::new(envelope),
                span,
            });
        }

        let mut rest = &events[..];
        while let Some(first) = rest.first() {
            // One event needs no savepoint: the transaction is its own.
            if rest.len() == 1 {
                match self.apply_alone(first, None, stop).await {
                    Alone::Settled(letter) => letters.extend(letter),
                    Alone::Stopped => return false,
                }
                break;
            }
            let batch = rest
                .iter()
                .map(|event| (event.envelope.clone(), event.span.clone()))
                .collect();
            let started = Instant::now();
            let result = apply_batch(&self.db, self.handler.clone(), batch).await;
            self.metrics
                .handler_duration
                .with_label_values(&[consumer])
                .observe(started.elapsed().as_secs_f64());
            let (alone, failure) = match result {
                Ok(BatchOutcome { outcomes, failed }) => {
                    let settled = outcomes.len();
                    for (event, outcome) in rest.iter().zip(outcomes) {
                        if let Some(letter) = self.settled(event, outcome, 1) {
                            letters.push(letter);
                        }
                    }
                    rest = &rest[settled..];
                    match (rest.first(), failed) {
                        (Some(failing), Some(error)) => (failing, Some(error)),
                        _ => continue,
                    }
                }
                // The transaction failed as a whole (the database is down,
                // a handler panicked): no event's fault yet. The first goes
                // alone, so that a failure is pinned on the event it is.
                Err(error) => {
                    tracing::warn!(consumer, events = rest.len(), error = %format!("{error:#}"), "batch failed as a whole; applying its first event alone");
                    (first, None)
                }
            };
            match self.apply_alone(alone, failure, stop).await {
                Alone::Settled(letter) => letters.extend(letter),
                Alone::Stopped => return false,
            }
            rest = &rest[1..];
        }

        letters.sort_by_key(|letter| letter.index);
        for letter in letters {
            let message = &messages[letter.index];
            if !self
                .dead_letter(
                    message,
                    &letter.reason,
                    letter.event_type,
                    letter.attempts,
                    stop,
                )
                .await
            {
                return false;
            }
        }
        true
    }

    /// Counts a committed outcome and calls the handler's `committed` for an
    /// applied event; a rejected one becomes a letter after `attempts`.
    fn settled(&self, event: &Admitted, outcome: EventOutcome, attempts: u32) -> Option<Letter> {
        let consumer = self.handler.name();
        let event_type = event.envelope.event_type();
        match outcome {
            EventOutcome::Applied => {
                self.handler.committed(&event.envelope);
                self.count(consumer, event_type.as_str(), "applied");
                None
            }
            EventOutcome::Duplicate => {
                self.count(consumer, event_type.as_str(), "duplicate");
                None
            }
            EventOutcome::Rejected(reason) => Some(Letter {
                index: event.index,
                reason: format!("rejected: {reason}"),
                event_type: Some(event_type),
                attempts,
            }),
        }
    }

    /// Applies one event in a transaction of its own until it commits, the
    /// handler rejects it, or it has failed `consumer.max_attempts` times
    /// (counting `failure`, its failure in the batch), with backoff between
    /// attempts.
    async fn apply_alone(
        &self,
        event: &Admitted,
        mut failure: Option<HandlerError>,
        stop: &CancellationToken,
    ) -> Alone {
        let consumer = self.handler.name();
        let event_type = event.envelope.event_type();
        let mut attempt = 0u32;
        let mut backoff = Duration::from_millis(self.settings.backoff_initial_ms.max(1));
        loop {
            if let Some(error) = failure.take() {
                if let HandlerError::Rejected(reason) = error {
                    return Alone::Settled(self.settled(
                        event,
                        EventOutcome::Rejected(reason),
                        attempt + 1,
                    ));
                }
                // A database that is down is not this event's fault: wait
                // without spending the event's attempts.
                let infrastructure = matches!(&error, HandlerError::Db(DbError::Unavailable(_)));
                if !infrastructure {
                    attempt += 1;
                }
                if attempt >= self.settings.max_attempts {
                    return Alone::Settled(Some(Letter {
                        index: event.index,
                        reason: format!(
                            "retries_exhausted: failed {attempt} times; last error: {error:#}"
                        ),
                        event_type: Some(event_type),
                        attempts: attempt,
                    }));
                }
                tracing::warn!(parent: &event.span, attempt, error = %format!("{error:#}"), "event handling failed; retrying");
                if !crate::ops::jobs::pause(stop, backoff).await {
                    return Alone::Stopped;
                }
                backoff = (backoff * 2).min(Duration::from_millis(self.settings.backoff_max_ms));
            }
            let started = Instant::now();
            let result = apply_once(&self.db, self.handler.clone(), event.envelope.clone())
                .instrument(event.span.clone())
                .await;
            self.metrics
                .handler_duration
                .with_label_values(&[consumer])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(Outcome::Applied) => {
                    return Alone::Settled(self.settled(event, EventOutcome::Applied, 0))
                }
                Ok(Outcome::Duplicate) => {
                    return Alone::Settled(self.settled(event, EventOutcome::Duplicate, 0))
                }
                Err(error) => failure = Some(error),
            }
        }
    }

    /// The message's envelope, if it keeps the contract: within the size
    /// limit, a known event type from its rightful producer, on that
    /// producer's topic, keyed by its partition key.
    fn admit(&self, message: &BorrowedMessage<'_>) -> Result<Envelope, Poison> {
        let size = message_bytes(message);
        if size > MAX_MESSAGE_BYTES {
            return Err(Poison::new(
                PoisonKind::Oversized,
                format!(
                    "{size} bytes, over the {MAX_MESSAGE_BYTES}-byte limit; \
                     the letter keeps at most {MAX_MESSAGE_BYTES} bytes of its payload"
                ),
            ));
        }
        let payload = message.payload().unwrap_or_default();
        if payload.is_empty() {
            return Err(Poison::new(PoisonKind::Empty, "empty message".into()));
        }
        let envelope = match Envelope::decode(payload) {
            Ok(Decoded::Known(envelope)) => *envelope,
            // Dead-lettered rather than skipped: once this consumer knows the
            // type, `ticketctl dlq replay` gives it the events it missed.
            Ok(Decoded::UnknownType {
                event_type,
                event_id,
            }) => {
                return Err(Poison::new(
                    PoisonKind::UnknownEventType,
                    format!("event {event_id} has the type {event_type:?}, unknown to this build"),
                ))
            }
            Err(error) => return Err(Poison::undecodable(error)),
        };
        let event_type = envelope.event_type();
        let rightful_topic = self.kafka.topic_name(envelope.topic());
        if message.topic() != rightful_topic {
            let detail = format!(
                "{event_type} by {} belongs on {rightful_topic}",
                envelope.producer
            );
            return Err(Poison::new(PoisonKind::WrongTopic, detail).of(event_type));
        }
        // The key picks the partition, and the partition is what keeps one
        // saga's events in order: a message keyed otherwise may overtake.
        match message.key() {
            None | Some([]) => {
                let detail = format!("no key; expected {}", envelope.partition_key);
                Err(Poison::new(PoisonKind::MissingKey, detail).of(event_type))
            }
            Some(key) if key != envelope.partition_key.as_bytes() => {
                let detail = format!(
                    "key {:?} is not the partition key {}",
                    String::from_utf8_lossy(key),
                    envelope.partition_key
                );
                Err(Poison::new(PoisonKind::KeyMismatch, detail).of(event_type))
            }
            Some(_) => Ok(envelope),
        }
    }

    /// Publishes the message to `<topic>.dlq` with the reason and origin in
    /// headers, retrying until the broker acknowledges it. The message is
    /// kept as it was, except that of an oversized one the letter keeps at
    /// most `MAX_MESSAGE_BYTES` of its payload, and its key and headers only
    /// if each is within that: a letter the producer refused would stop the
    /// consumer for good.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        event_type: Option<EventType>,
        attempts: u32,
        stop: &CancellationToken,
    ) -> bool {
        let consumer = self.handler.name();
        let dlq = self.kafka.dead_letter_name(message.topic());
        // A label from a fixed set: poison chooses its own headers.
        let event_type = event_type
            .or_else(|| header(message, headers::EVENT_TYPE).and_then(|t| EventType::parse(&t)))
            .map_or("unknown", EventType::as_str);
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            %reason,
            "sending message to dead-letter topic"
        );
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let attempts = attempts.to_string();
        let failed_at = Utc::now().to_rfc3339();
        let payload = message.payload().unwrap_or_default();
        let payload = &payload[..payload.len().min(MAX_MESSAGE_BYTES)];
        let key = message.key().filter(|key| key.len() <= MAX_MESSAGE_BYTES);
        let original_headers = message
            .headers()
            .filter(|original| headers_bytes(original) <= MAX_MESSAGE_BYTES);
        let mut backoff = Duration::from_millis(self.settings.backoff_initial_ms.max(1));
        loop {
            let mut dlq_headers = OwnedHeaders::new();
            if let Some(original) = original_headers {
                for h in original.iter() {
                    dlq_headers = dlq_headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            for (key, value) in [
                (headers::DLQ_REASON, reason),
                (headers::DLQ_CONSUMER, consumer),
                (headers::DLQ_ORIGIN_TOPIC, message.topic()),
                (headers::DLQ_ORIGIN_PARTITION, partition.as_str()),
                (headers::DLQ_ORIGIN_OFFSET, offset.as_str()),
                (headers::DLQ_ATTEMPTS, attempts.as_str()),
                (headers::DLQ_FAILED_AT, failed_at.as_str()),
            ] {
                dlq_headers = dlq_headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&dlq).payload(payload).headers(dlq_headers);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self
                .kafka
                .producer()
                .send(record, Duration::from_secs(30))
                .await
            {
                Ok(_) => {
                    self.count(consumer, event_type, "dead_lettered");
                    self.metrics
                        .dead_letters
                        .with_label_values(&[consumer, message.topic()])
                        .inc();
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, "dead-letter publish failed; retrying");
                }
            }
            if !crate::ops::jobs::pause(stop, backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_millis(self.settings.backoff_max_ms));
        }
    }

    fn count(&self, consumer: &str, event_type: &str, outcome: &str) {
        self.metrics
            .events_consumed
            .with_label_values(&[consumer, event_type, outcome])
            .inc();
    }
}

/// A decoded event of a batch that this consumer handles.
struct Admitted {
    /// Its message's place in the batch.
    index: usize,
    envelope: Arc<Envelope>,
    span: tracing::Span,
}

/// A message of a batch bound for the dead-letter topic.
struct Letter {
    index: usize,
    reason: String,
    event_type: Option<EventType>,
    attempts: u32,
}

/// How an event applied alone ended.
enum Alone {
    /// Committed, or to be dead-lettered with this letter.
    Settled(Option<Letter>),
    /// Stopped before either.
    Stopped,
}

fn header(message: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    message.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Why a message cannot be an event here. Its code starts the letter's
/// `dlq.reason` (`<code>: <detail>`); docs/operations.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoisonKind {
    Oversized,
    Empty,
    /// Not JSON at all.
    Malformed,
    /// JSON cut short.
    Truncated,
    /// JSON, but not an envelope.
    NotAnEnvelope,
    UnsupportedSchema,
    /// An envelope whose payload is not its event type's.
    InvalidPayload,
    /// The envelope's `producer` does not own its event type.
    WrongProducer,
    UnknownEventType,
    /// A rightful event of one producer on another producer's topic.
    WrongTopic,
    MissingKey,
    KeyMismatch,
}

impl PoisonKind {
    fn code(self) -> &'static str {
        match self {
            PoisonKind::Oversized => "oversized",
            PoisonKind::Empty => "empty",
            PoisonKind::Malformed => "malformed",
            PoisonKind::Truncated => "truncated",
            PoisonKind::NotAnEnvelope => "not_an_envelope",
            PoisonKind::UnsupportedSchema => "unsupported_schema",
            PoisonKind::InvalidPayload => "invalid_payload",
            PoisonKind::WrongProducer => "wrong_producer",
            PoisonKind::UnknownEventType => "unknown_event_type",
            PoisonKind::WrongTopic => "wrong_topic",
            PoisonKind::MissingKey => "missing_key",
            PoisonKind::KeyMismatch => "key_mismatch",
        }
    }
}

#[derive(Debug)]
struct Poison {
    kind: PoisonKind,
    detail: String,
    /// The event's type when it decoded (a metric label).
    event_type: Option<EventType>,
}

impl Poison {
    fn new(kind: PoisonKind, detail: String) -> Poison {
        Poison {
            kind,
            detail,
            event_type: None,
        }
    }

    fn of(self, event_type: EventType) -> Poison {
        Poison {
            event_type: Some(event_type),
            ..self
        }
    }

    fn undecodable(error: DecodeError) -> Poison {
        let kind = match &error {
            DecodeError::Envelope(json) => match json.classify() {
                serde_json::error::Category::Eof => PoisonKind::Truncated,
                serde_json::error::Category::Data => PoisonKind::NotAnEnvelope,
                serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                    PoisonKind::Malformed
                }
            },
            DecodeError::UnsupportedSchema { .. } => PoisonKind::UnsupportedSchema,
            DecodeError::Payload { .. } => PoisonKind::InvalidPayload,
            DecodeError::WrongProducer { .. } => PoisonKind::WrongProducer,
        };
        Poison::new(kind, error.to_string())
    }
}

impl std::fmt::Display for Poison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

/// What the message weighs on the wire: key, headers and payload.
fn message_bytes(message: &BorrowedMessage<'_>) -> usize {
    message.payload().map_or(0, <[u8]>::len)
        + message.key().map_or(0, <[u8]>::len)
        + message.headers().map_or(0, headers_bytes)
}

fn headers_bytes(headers: &rdkafka::message::BorrowedHeaders) -> usize {
    headers
        .iter()
        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
        .sum()
}
