//! The services' Kafka producer: librdkafka's, with each delivery report
//! handed to the send that waits for it.
//!
//! Not rdkafka's `FutureProducer`, for what it costs at rest: its polling
//! thread polls in 100 ms rounds, and rdkafka 0.39 passes the remaining time
//! to librdkafka in whole milliseconds, so the last fraction of every round
//! is polled with a zero timeout in a loop — about 0.9% of a core per idle
//! service, most of an idle cluster's CPU (measured with `perf`: the thread
//! spends its time in `clock_gettime`). Here the thread polls in one-second
//! rounds, so that spin is a thousandth of the time; a delivery report still
//! wakes it at once, so a send waits no longer.

use rdkafka::client::Client;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{DeliveryResult, Message, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where the broker put an acknowledged message: partition and offset.
pub type Placed = (i32, i64);

/// The broker's answer for one message, once librdkafka has it.
pub type Delivery = oneshot::Receiver<Result<Placed, KafkaError>>;

/// A record librdkafka would not take, with the reason; boxed, as it is
/// large and rare.
pub type Refused<'a, K, P> = Box<(KafkaError, FutureRecord<'a, K, P>)>;

/// A cheap handle; the producer and its polling thread end with the last one.
#[derive(Clone)]
pub struct EventProducer {
    shared: Arc<Shared>,
}

struct Shared {
    producer: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The thread sees it within one round and drops the producer.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How long one poll round lasts: the spin at its end is at most a
/// millisecond, and a stopped producer's thread ends within a round.
const POLL_ROUND: Duration = Duration::from_secs(1);

impl EventProducer {
    pub fn new(config: &ClientConfig) -> KafkaResult<EventProducer> {
        let producer: Arc<BaseProducer<Deliveries>> =
            Arc::new(config.create_with_context(Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("producer-poll".into())
            .spawn({
                let (producer, stop) = (producer.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(POLL_ROUND);
                    }
                }
            })
            .map_err(|error| {
                KafkaError::ClientCreation(format!("the producer's polling thread: {error}"))
            })?;
        Ok(EventProducer {
            shared: Arc::new(Shared { producer, stop }),
        })
    }

    pub fn client(&self) -> &Client<Deliveries> {
        self.shared.producer.client()
    }

    /// Hands `record` to librdkafka at once; the answer comes on the
    /// returned [`Delivery`]. A refusal (the local queue is full, the
    /// producer failed fatally) gives the record back.
    pub fn send_result<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
    ) -> Result<Delivery, Refused<'a, K, P>>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (acknowledge, delivery) = oneshot::channel();
        let base = BaseRecord {
            topic: record.topic,
            partition: record.partition,
            payload: record.payload,
            key: record.key,
            timestamp: record.timestamp,
            headers: record.headers,
            delivery_opaque: Box::new(acknowledge),
        };
        self.shared
            .producer
            .send(base)
            .map(|()| delivery)
            .map_err(|(error, base)| {
                let record = FutureRecord {
                    topic: base.topic,
                    partition: base.partition,
                    payload: base.payload,
                    key: base.key,
                    timestamp: base.timestamp,
                    headers: base.headers,
                };
                Box::new((error, record))
            })
    }

    /// Sends `record` and waits for the broker's answer; a full local queue
    /// is tried again until `queue_timeout` has passed.
    pub async fn send<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: Duration,
    ) -> Result<Placed, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let deadline = Instant::now() + queue_timeout;
        let delivery = loop {
            match self.send_result(record).map_err(|refused| *refused) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again))
                    if Instant::now() < deadline =>
                {
                    record = again;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((error, _)) => return Err(error),
            }
        };
        delivery.await.unwrap_or(Err(KafkaError::Canceled))
    }
}

/// Routes each delivery report to the sender that waits for it.
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<Result<Placed, KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, acknowledge: Self::DeliveryOpaque) {
        let answer = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        // The sender may have stopped waiting; the answer then has no reader.
        let _ = acknowledge.send(answer);
    }
}
