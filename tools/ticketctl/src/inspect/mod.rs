//! Looking at a running cluster as an operator does: the event topics
//! (`events`, `saga`, `dlq`), each service's health (`status`) and the
//! saga's invariants across services (`audit`).
//!
//! The reader never joins or moves a service's consumer group: it assigns
//! itself partitions and commits nothing, so looking changes nothing.

pub mod audit;
pub mod dlq;
pub mod events;
pub mod saga;
pub mod status;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use shared_events::{Decoded, Envelope, Service, Topic};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the events are.
#[derive(Args, Clone, Debug)]
pub struct KafkaOptions {
    /// Kafka bootstrap servers; the broker of `ticketctl up` by default.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The prefix the services put before topic names
    /// (their APP__KAFKA__TOPIC_PREFIX); none by default.
    #[arg(long, env = "APP__KAFKA__TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
}

/// Where each service answers HTTP; `ticketctl up`'s ports by default.
#[derive(Args, Clone, Debug)]
pub struct ServiceUrls {
    #[arg(long, env = "CONCERT_URL", default_value = "http://127.0.0.1:8081")]
    pub concert_url: String,
    #[arg(long, env = "QUEUE_URL", default_value = "http://127.0.0.1:8082")]
    pub queue_url: String,
    #[arg(long, env = "RESERVATION_URL", default_value = "http://127.0.0.1:8083")]
    pub reservation_url: String,
    #[arg(
        long,
        env = "MEMBER_BALANCE_URL",
        default_value = "http://127.0.0.1:8084"
    )]
    pub member_balance_url: String,
    #[arg(long, env = "PAYMENT_URL", default_value = "http://127.0.0.1:8085")]
    pub payment_url: String,
}

impl ServiceUrls {
    pub fn url(&self, service: Service) -> &str {
        match service {
            Service::Concert => &self.concert_url,
            Service::Queue => &self.queue_url,
            Service::Reservation => &self.reservation_url,
            Service::MemberBalance => &self.member_balance_url,
            Service::Payment => &self.payment_url,
        }
    }
}

/// A running cluster as the tools that act on it reach it: its broker, its
/// services, and the data folder with its admin key and identity provider.
#[derive(Args, Clone, Debug)]
pub struct ClusterOptions {
    #[command(flatten)]
    pub kafka: KafkaOptions,
    #[command(flatten)]
    pub urls: ServiceUrls,
    /// The data folder of `ticketctl up` (or `secrets`): its `admin-key`,
    /// and its development issuer for fans' member tokens.
    #[arg(long, env = "TICKETCTL_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

impl ClusterOptions {
    /// The deployment's admin key, from the data folder.
    pub fn admin_key(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("admin-key");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading the admin key from {}", path.display()))?
            .trim()
            .to_string())
    }
}

/// The partition librdkafka's default partitioner (`consistent_random`,
/// which the services' producers set explicitly) gives a key: CRC-32 of
/// the key modulo the partition count. A saga's events are keyed by its
/// reservation id, so this is the one partition per topic to read.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let partitions = partitions.max(1) as u32;
    (crc32fast::hash(key.as_bytes()) % partitions) as i32
}

/// One part of a topic to read: offsets `start..end` (to the end of time
/// when `end` is `None`).
#[derive(Debug, Clone)]
pub struct Range {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: Option<i64>,
}

/// What a message holds.
#[derive(Debug, Clone)]
pub enum Body {
    Event(Box<Envelope>),
    /// A well-formed envelope of a type this build does not know.
    UnknownType {
        event_type: String,
    },
    /// Not an event envelope at all: shown raw, never a crash.
    Raw {
        error: String,
    },
}

/// One message, as read.
#[derive(Debug, Clone)]
pub struct Record {
    /// The topic's contract name (without the prefix).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<DateTime<Utc>>,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    pub body: Body,
}

impl Record {
    pub fn envelope(&self) -> Option<&Envelope> {
        match &self.body {
            Body::Event(envelope) => Some(envelope),
            _ => None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// When the event happened: its own `occurred_at`, else the broker's time.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        self.envelope().map(|e| e.occurred_at).or(self.timestamp)
    }

    /// `topic/partition@offset`, the message's address.
    pub fn address(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// The record as one JSON object (for `--json`).
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": self.key,
        });
        if !self.headers.is_empty() {
            let headers: serde_json::Map<String, Value> = self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            out["headers"] = Value::Object(headers);
        }
        match &self.body {
            Body::Event(envelope) => {
                out["event"] = serde_json::from_str(&envelope.to_json()).unwrap_or(Value::Null);
            }
            Body::UnknownType { event_type } => {
                out["unknown_event_type"] = json!(event_type);
                out["raw"] = json!(String::from_utf8_lossy(&self.payload));
            }
            Body::Raw { error } => {
                out["not_an_event"] = json!(error);
                out["raw"] = json!(String::from_utf8_lossy(&self.payload));
            }
        }
        out
    }
}

/// A read-only view of the cluster's topics.
pub struct Reader {
    consumer: BaseConsumer,
    prefix: String,
}

impl Reader {
    pub fn connect(options: &KafkaOptions) -> anyhow::Result<Reader> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("client.id", "ticketctl")
            // Needed by librdkafka to read at all; never joined (no
            // subscribe) and never committed to.
            .set("group.id", format!("ticketctl-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("log_level", "3")
            .create()
            .with_context(|| format!("connecting to Kafka at {}", options.brokers))?;
        Ok(Reader {
            consumer,
            prefix: options.topic_prefix.clone(),
        })
    }

    /// The topic's name on the cluster.
    pub fn on_cluster(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// How many partitions a topic has (0 when it does not exist).
    pub fn partitions(&self, topic: &str) -> anyhow::Result<i32> {
        let name = self.on_cluster(topic);
        let metadata = self
            .consumer
            .fetch_metadata(Some(&name), TIMEOUT)
            .with_context(|| format!("reading the metadata of {name}"))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32))
    }

    /// The first offset and the offset after the last message.
    pub fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        let name = self.on_cluster(topic);
        self.consumer
            .fetch_watermarks(&name, partition, TIMEOUT)
            .with_context(|| format!("reading the offsets of {name}/{partition}"))
    }

    /// The first offset at or after `at` in each partition (the end
    /// where nothing is that recent).
    pub fn offsets_at(
        &self,
        topic: &str,
        partitions: &[i32],
        at: DateTime<Utc>,
    ) -> anyhow::Result<HashMap<i32, i64>> {
        let name = self.on_cluster(topic);
        let mut wanted = TopicPartitionList::new();
        for &partition in partitions {
            wanted.add_partition_offset(&name, partition, Offset::Offset(at.timestamp_millis()))?;
        }
        let found = self
            .consumer
            .offsets_for_times(wanted, TIMEOUT)
            .with_context(|| format!("finding offsets by time in {name}"))?;
        let mut offsets = HashMap::new();
        for element in found.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => self.watermarks(topic, element.partition())?.1,
            };
            offsets.insert(element.partition(), offset);
        }
        Ok(offsets)
    }

    /// The ranges that cover `topic` from `since` (or its beginning) to its
    /// current end, in the given partitions (all when `None`).
    pub fn ranges(
        &self,
        topic: &str,
        only: Option<&[i32]>,
        since: Option<DateTime<Utc>>,
        follow: bool,
    ) -> anyhow::Result<Vec<Range>> {
        let count = self.partitions(topic)?;
        let partitions: Vec<i32> = match only {
            Some(only) => only.iter().copied().filter(|p| *p < count).collect(),
            None => (0..count).collect(),
        };
        let starts = match since {
            Some(at) if !partitions.is_empty() => Some(self.offsets_at(topic, &partitions, at)?),
            _ => None,
        };
        let mut ranges = Vec::new();
        for partition in partitions {
            let (low, high) = self.watermarks(topic, partition)?;
            let start = match &starts {
                Some(starts) => starts.get(&partition).copied().unwrap_or(high).max(low),
                None => low,
            };
            ranges.push(Range {
                topic: topic.to_string(),
                partition,
                start,
                end: (!follow).then_some(high),
            });
        }
        Ok(ranges)
    }

    /// Reads the ranges, handing each message to `visit` until it returns
    /// false or every bounded range is read.
    pub fn read(
        &self,
        ranges: &[Range],
        mut visit: impl FnMut(Record) -> bool,
    ) -> anyhow::Result<()> {
        let mut assignment = TopicPartitionList::new();
        let mut open: HashSet<(String, i32)> = HashSet::new();
        let mut ends: HashMap<(String, i32), Option<i64>> = HashMap::new();
        for range in ranges {
            let unbounded = range.end.is_none();
            if !unbounded && range.end <= Some(range.start) {
                continue;
            }
            let name = self.on_cluster(&range.topic);
            assignment.add_partition_offset(&name, range.partition, Offset::Offset(range.start))?;
            open.insert((name.clone(), range.partition));
            ends.insert((name, range.partition), range.end);
        }
        if open.is_empty() {
            return Ok(());
        }
        self.consumer.assign(&assignment)?;
        let follow = ends.values().any(Option::is_none);
        while follow || !open.is_empty() {
            let message = match self.consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(message)) => message,
            };
            let id = (message.topic().to_string(), message.partition());
            let end = ends.get(&id).copied().flatten();
            if end.is_some_and(|end| message.offset() >= end) {
                open.remove(&id);
                continue;
            }
            if end.is_some_and(|end| message.offset() + 1 >= end) {
                open.remove(&id);
            }
            if !visit(self.record(&message)) {
                break;
            }
        }
        self.consumer.unassign()?;
        Ok(())
    }

    fn record(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        let payload = message.payload().unwrap_or_default().to_vec();
        let body = match Envelope::decode(&payload) {
            Ok(Decoded::Known(envelope)) => Body::Event(envelope),
            Ok(Decoded::UnknownType { event_type, .. }) => Body::UnknownType { event_type },
            Err(error) => Body::Raw {
                error: if payload.is_empty() {
                    "empty message".into()
                } else {
                    error.to_string()
                },
            },
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_string(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: message
                .topic()
                .strip_prefix(self.prefix.as_str())
                .unwrap_or(message.topic())
                .to_string(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            payload,
            body,
        }
    }
}

/// The five event topics' contract names.
pub fn event_topics() -> Vec<String> {
    Topic::ALL.iter().map(|t| t.name().to_string()).collect()
}

/// Puts records in the order things happened: by time, and a cause always
/// before its effects (two services' clocks may disagree by a little). An
/// effect met before its cause waits for it, then follows it at once.
pub fn in_causal_order(mut records: Vec<Record>) -> Vec<Record> {
    records.sort_by_key(|r| (r.at(), r.envelope().map(|e| e.event_id)));
    let present: HashSet<uuid::Uuid> = records
        .iter()
        .filter_map(|r| r.envelope().map(|e| e.event_id))
        .collect();
    let mut placed: HashSet<uuid::Uuid> = HashSet::new();
    let mut waiting: HashMap<uuid::Uuid, Vec<Record>> = HashMap::new();
    let mut ordered = Vec::with_capacity(records.len());
    for record in records {
        let cause = record.envelope().and_then(|e| e.causation_id);
        match cause {
            Some(cause) if present.contains(&cause) && !placed.contains(&cause) => {
                waiting.entry(cause).or_default().push(record);
            }
            _ => {
                let mut next = vec![record];
                while let Some(record) = next.pop() {
                    if let Some(id) = record.envelope().map(|e| e.event_id) {
                        placed.insert(id);
                        // Its effects come next, earliest first.
                        if let Some(mut effects) = waiting.remove(&id) {
                            effects.reverse();
                            next.extend(effects);
                        }
                    }
                    ordered.push(record);
                }
            }
        }
    }
    // Causes that never came (a cycle cannot happen: ids are unique).
    ordered.extend(waiting.into_values().flatten());
    ordered
}

/// A point in time: RFC 3339 (`2026-11-21T12:00:00Z`) or a span ago
/// (`90s`, `15m`, `2h`, `1d`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    parse_span(text).map(|span| Utc::now() - span)
}

/// A span: a whole number and a unit, `s`, `m`, `h` or `d`.
pub fn parse_span(text: &str) -> Result<TimeDelta, String> {
    let bad = || format!("{text:?} is neither RFC 3339 nor a span like 90s, 15m, 2h or 1d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    match unit {
        "s" => Ok(TimeDelta::seconds(number)),
        "m" => Ok(TimeDelta::minutes(number)),
        "h" => Ok(TimeDelta::hours(number)),
        "d" => Ok(TimeDelta::days(number)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::{SeatReleased, SeatSold};

    fn record(envelope: Envelope) -> Record {
        Record {
            topic: "concert.events".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(envelope.partition_key.clone()),
            headers: Vec::new(),
            payload: Vec::new(),
            body: Body::Event(Box::new(envelope)),
        }
    }

    #[test]
    fn a_cause_comes_before_its_effects_even_with_an_earlier_clock() {
        let released = |seat_no| SeatReleased {
            reservation_id: uuid::Uuid::nil(),
            schedule_id: uuid::Uuid::nil(),
            seat_no,
        };
        let cause = Envelope::new(released(1));
        let mut effect = Envelope::caused_by(
            &cause,
            SeatSold {
                reservation_id: uuid::Uuid::nil(),
                payment_id: uuid::Uuid::nil(),
                schedule_id: uuid::Uuid::nil(),
                seat_no: 1,
            },
        );
        // The effect's host clock runs 5 ms behind the cause's.
        effect.occurred_at = cause.occurred_at - TimeDelta::milliseconds(5);
        let mut unrelated = Envelope::new(released(2));
        unrelated.occurred_at = cause.occurred_at - TimeDelta::milliseconds(10);
        let mut later = Envelope::new(released(3));
        later.occurred_at = cause.occurred_at + TimeDelta::milliseconds(1);
        let ids = [&unrelated, &cause, &effect, &later].map(|e| e.event_id);
        let ordered = in_causal_order(vec![
            record(later.clone()),
            record(effect.clone()),
            record(cause.clone()),
            record(unrelated.clone()),
        ]);
        let got: Vec<_> = ordered
            .iter()
            .map(|r| r.envelope().unwrap().event_id)
            .collect();
        assert_eq!(got, ids);
    }

    #[test]
    fn times_are_rfc3339_or_a_span_ago() {
        let at = parse_time("2026-11-21T12:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-21T12:00:00+00:00");
        let ago = Utc::now() - parse_time("15m").unwrap();
        assert!((ago - TimeDelta::minutes(15)).num_seconds().abs() <= 1);
        assert_eq!(parse_span("2h").unwrap(), TimeDelta::hours(2));
        for bad in ["", "m", "15", "15w", "-5m", "yesterday"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
