//! Kafka clients: one producer per service (outbox relay and dead letters),
//! consumers per handler, and idempotent topic creation at start-up.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use shared_events::{dead_letter_topic, Topic};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::KafkaSettings;
use crate::messaging::producer::EventProducer;

/// Headers the runtime writes on every message.
pub mod headers {
    pub const TRACEPARENT: &str = "traceparent";
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const DLQ_REASON: &str = "dlq.reason";
    pub const DLQ_CONSUMER: &str = "dlq.consumer";
    pub const DLQ_ORIGIN_TOPIC: &str = "dlq.origin.topic";
    pub const DLQ_ORIGIN_PARTITION: &str = "dlq.origin.partition";
    pub const DLQ_ORIGIN_OFFSET: &str = "dlq.origin.offset";
    pub const DLQ_ATTEMPTS: &str = "dlq.attempts";
    pub const DLQ_FAILED_AT: &str = "dlq.failed_at";
}

#[derive(Clone)]
pub struct Kafka {
    settings: KafkaSettings,
    client_id: String,
    /// Replaced as a whole when it fails fatally (an idempotent producer
    /// that was fenced or lost its sequence): a fatal producer never
    /// publishes again, so a new one is the only way back.
    producer: Arc<RwLock<EventProducer>>,
}

impl Kafka {
    pub fn connect(settings: &KafkaSettings, client_id: &str) -> Result<Kafka, KafkaError> {
        Ok(Kafka {
            settings: settings.clone(),
            client_id: client_id.to_string(),
            producer: Arc::new(RwLock::new(new_producer(settings, client_id)?)),
        })
    }

    /// The current producer (a cheap handle).
    pub fn producer(&self) -> EventProducer {
        match self.producer.read() {
            Ok(producer) => producer.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The producer's fatal error, if it has one: nothing it sends will be
    /// published until [`Kafka::replace_failed_producer`] replaces it.
    pub fn producer_fatal_error(&self) -> Option<String> {
        self.producer()
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Replaces a producer that failed fatally with a new one; true if it did.
    pub fn replace_failed_producer(&self) -> Result<bool, KafkaError> {
        let mut current = match self.producer.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.client().fatal_error().is_none() {
            return Ok(false);
        }
        *current = new_producer(&self.settings, &self.client_id)?;
        Ok(true)
    }

    /// The topic's name on this cluster (with the configured prefix).
    pub fn topic_name(&self, topic: Topic) -> String {
        format!("{}{}", self.settings.topic_prefix, topic.name())
    }

    pub fn prefixed(&self, name: &str) -> String {
        format!("{}{}", self.settings.topic_prefix, name)
    }

    pub fn dead_letter_name(&self, topic_on_cluster: &str) -> String {
        dead_letter_topic(topic_on_cluster)
    }

    /// A consumer group id, namespaced like the topics.
    pub fn group_id(&self, consumer: &str) -> String {
        format!("{}{}", self.settings.topic_prefix, consumer)
    }

    /// Settings for a consumer that stores each offset itself, after its
    /// work; librdkafka commits what was stored (on its interval, on a
    /// rebalance and on close), never a message not yet stored.
    pub fn consumer_config(&self, consumer: &str) -> ClientConfig {
        let mut config = base_config(&self.settings, &format!("{}-{consumer}", self.client_id));
        config
            .set("group.id", self.group_id(consumer))
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "fetch.wait.max.ms",
                self.settings.fetch_wait_max_ms.to_string(),
            )
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        config
    }

    /// Creates every contract topic and its dead-letter twin; existing ones are kept.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let mut names: Vec<String> = Vec::new();
        for topic in Topic::ALL {
            let name = self.topic_name(topic);
            names.push(dead_letter_topic(&name));
            names.push(name);
        }
        self.create_topics(&names).await
    }

    pub async fn create_topics(&self, names: &[String]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> =
            base_config(&self.settings, &self.client_id).create()?;
        let min_insync_replicas = self.settings.min_insync_replicas.map(|n| n.to_string());
        let new_topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                let topic = NewTopic::new(
                    name,
                    self.settings.partitions,
                    TopicReplication::Fixed(self.settings.replication_factor),
                );
                match &min_insync_replicas {
                    Some(count) => topic.set("min.insync.replicas", count),
                    None => topic,
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::error!(topic = %name, error = %code, "topic creation failed");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }

    /// Whether a broker answers a metadata request within a second.
    pub async fn is_reachable(&self) -> bool {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

fn new_producer(settings: &KafkaSettings, client_id: &str) -> Result<EventProducer, KafkaError> {
    let mut config = base_config(settings, client_id);
    config
        .set("acks", "all")
        .set(
            "enable.idempotence",
            settings.enable_idempotence.to_string(),
        )
        .set("linger.ms", settings.linger_ms.to_string())
        // librdkafka's default, set so that tools can count on it: a key's
        // partition is CRC-32(key) mod the partition count, which is how
        // `ticketctl saga` finds one saga's events without reading them all.
        .set("partitioner", "consistent_random")
        .set(
            "message.timeout.ms",
            settings.message_timeout_ms.to_string(),
        );
    EventProducer::new(&config)
}

fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        .set("log_level", "4");
    config
}
