//! `ticketctl dlq list` and `ticketctl dlq replay`: the dead letters, and
//! sending them back to their origin topic once their cause is fixed.
//!
//! A letter's id is its own address, `<topic>.dlq/<partition>@<offset>`.
//! A replay is the original message (key, payload, headers) published again
//! on its origin topic with `replay.of` = that id, so the tool can tell a
//! letter that was replayed before: it looks for the header on the origin
//! topic from the time the letter was written (that is the cost of
//! `list` and `replay`: the origin topics from the first letter's time).
//! A letter replayed before is refused, so it is sent back once; should a
//! copy still arrive twice (two operators at the same moment), consumers
//! are idempotent and apply it once. A replay that fails again becomes a
//! new letter with an id of its own.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use shared_events::dead_letter_topic;
use std::collections::HashMap;
use std::time::Duration;
use ticket_runtime::messaging::kafka::headers;

use super::events::time;
use super::{KafkaOptions, Reader, Record};

/// The header that marks a replayed message, with the letter's id.
pub const REPLAY_OF: &str = "replay.of";
const REPLAY_AT: &str = "replay.at";

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters: reason, origin topic/partition/offset, consumer,
    /// attempts, time, and whether they were replayed.
    List(ListOptions),
    /// Publish dead letters again on their origin topic, marked as replays
    /// (after fixing what made them fail).
    Replay(ReplayOptions),
}

#[derive(Args, Debug)]
pub struct Selection {
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// Only letters from this origin topic (e.g. payment.events).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only letters of this consumer (a service name).
    #[arg(long)]
    pub consumer: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListOptions {
    #[command(flatten)]
    pub select: Selection,
    /// One JSON object a line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReplayOptions {
    #[command(flatten)]
    pub select: Selection,
    /// The letter to replay, as `list` names it (repeatable).
    #[arg(long = "letter", value_name = "ID", required_unless_present = "all")]
    pub letters: Vec<String>,
    /// Replay every selected letter.
    #[arg(long, conflicts_with = "letters")]
    pub all: bool,
    /// Only say what would be replayed; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a replay did, or would do, with one letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    WouldReplay,
    Replayed,
    /// Replayed before: never sent twice.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::WouldReplay => "would_replay",
            Outcome::Replayed => "replayed",
            Outcome::Refused => "refused",
        }
    }
}

/// One letter's replay.
#[derive(Debug, Clone)]
pub struct Replay {
    pub id: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// One dead letter and what its headers say about it.
pub struct Letter {
    pub record: Record,
    pub origin_topic: String,
    pub replayed_at: Option<String>,
}

impl Letter {
    pub fn id(&self) -> String {
        self.record.address()
    }

    fn header(&self, name: &str) -> &str {
        self.record.header(name).unwrap_or("-")
    }

    fn failed_at(&self) -> Option<DateTime<Utc>> {
        self.record
            .header(headers::DLQ_FAILED_AT)
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc))
            .or(self.record.timestamp)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id(),
            "origin_topic": self.origin_topic,
            "origin_partition": self.header(headers::DLQ_ORIGIN_PARTITION),
            "origin_offset": self.header(headers::DLQ_ORIGIN_OFFSET),
            "consumer": self.header(headers::DLQ_CONSUMER),
            "reason": self.header(headers::DLQ_REASON),
            "attempts": self.header(headers::DLQ_ATTEMPTS),
            "failed_at": time(self.failed_at()),
            "event_type": self.header(headers::EVENT_TYPE),
            "event_id": self.header(headers::EVENT_ID),
            "key": self.record.key,
            "replayed_at": self.replayed_at,
            "payload": String::from_utf8_lossy(&self.record.payload),
        })
    }
}

pub fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(options) => {
            let reader = Reader::connect(&options.select.kafka)?;
            let letters = letters(&reader, &options.select)?;
            for letter in &letters {
                if options.json {
                    println!("{}", letter.to_json());
                } else {
                    print_letter(letter);
                }
            }
            if !options.json {
                println!("{} dead letter(s)", letters.len());
            }
            Ok(())
        }
        DlqCommand::Replay(options) => {
            let wanted = (!options.all).then_some(options.letters.as_slice());
            let replays = replay(&options.select, wanted, options.dry_run)?;
            for replay in &replays {
                println!("{}: {}", replay.outcome.as_str(), replay.detail);
            }
            if replays.is_empty() {
                println!("no dead letters selected");
            }
            Ok(())
        }
    }
}

fn print_letter(letter: &Letter) {
    println!(
        "{}  {}  from {}/{}@{}  consumer={}  attempts={}  {}  key={}  reason: {}{}",
        letter.id(),
        time(letter.failed_at()),
        letter.origin_topic,
        letter.header(headers::DLQ_ORIGIN_PARTITION),
        letter.header(headers::DLQ_ORIGIN_OFFSET),
        letter.header(headers::DLQ_CONSUMER),
        letter.header(headers::DLQ_ATTEMPTS),
        letter.header(headers::EVENT_TYPE),
        letter.record.key.as_deref().unwrap_or("-"),
        letter.header(headers::DLQ_REASON),
        match &letter.replayed_at {
            Some(at) => format!("  (replayed at {at})"),
            None => String::new(),
        }
    );
}

/// The selected letters of the five dead-letter topics, each with when it
/// was last replayed.
pub fn letters(reader: &Reader, select: &Selection) -> anyhow::Result<Vec<Letter>> {
    let mut letters = Vec::new();
    for topic in super::event_topics() {
        let dlq = dead_letter_topic(&topic);
        if reader.partitions(&dlq)? == 0 {
            continue;
        }
        let ranges = reader.ranges(&dlq, None, None, false)?;
        reader.read(&ranges, |record| {
            let origin = record
                .header(headers::DLQ_ORIGIN_TOPIC)
                .map(|t| {
                    t.strip_prefix(&reader.on_cluster(""))
                        .unwrap_or(t)
                        .to_string()
                })
                .unwrap_or_else(|| topic.clone());
            let wanted = select.topic.as_ref().is_none_or(|t| *t == origin)
                && select
                    .consumer
                    .as_ref()
                    .is_none_or(|c| record.header(headers::DLQ_CONSUMER) == Some(c));
            if wanted {
                letters.push(Letter {
                    record,
                    origin_topic: origin,
                    replayed_at: None,
                });
            }
            true
        })?;
    }
    mark_replays(reader, &mut letters)?;
    Ok(letters)
}

/// Finds earlier replays of the letters on their origin topics.
fn mark_replays(reader: &Reader, letters: &mut [Letter]) -> anyhow::Result<()> {
    let mut since: HashMap<String, DateTime<Utc>> = HashMap::new();
    for letter in letters.iter() {
        let at = letter.failed_at().unwrap_or(DateTime::UNIX_EPOCH);
        let earliest = since.entry(letter.origin_topic.clone()).or_insert(at);
        *earliest = (*earliest).min(at);
    }
    let mut replayed: HashMap<String, String> = HashMap::new();
    for (topic, from) in since {
        let ranges = reader.ranges(&topic, None, Some(from), false)?;
        reader.read(&ranges, |record| {
            if let Some(of) = record.header(REPLAY_OF) {
                let at = record.header(REPLAY_AT).unwrap_or("?").to_string();
                replayed.insert(of.to_string(), at);
            }
            true
        })?;
    }
    for letter in letters.iter_mut() {
        letter.replayed_at = replayed.get(&letter.id()).cloned();
    }
    Ok(())
}

/// Sends the selected letters (all of them when `wanted` is `None`) back
/// to their origin topics, refusing those replayed before; with `dry_run`,
/// sends nothing and says what it would do. An unknown id fails the whole
/// call before anything is sent.
pub fn replay(
    select: &Selection,
    wanted: Option<&[String]>,
    dry_run: bool,
) -> anyhow::Result<Vec<Replay>> {
    let reader = Reader::connect(&select.kafka)?;
    let mut chosen = letters(&reader, select)?;
    if let Some(wanted) = wanted {
        for id in wanted {
            if !chosen.iter().any(|l| l.id() == *id) {
                return Err(UnknownLetter(id.clone()).into());
            }
        }
        chosen.retain(|l| wanted.contains(&l.id()));
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &select.kafka.brokers)
        .set("client.id", "ticketctl-replay")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // As the services' producers: a key keeps its partition.
        .set("partitioner", "consistent_random")
        .set("log_level", "3")
        .create()
        .context("connecting the producer")?;
    let sends = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut replays = Vec::new();
    for letter in &chosen {
        let id = letter.id();
        if let Some(at) = &letter.replayed_at {
            replays.push(Replay {
                detail: format!("{id} was replayed at {at}; a letter goes back once"),
                id,
                outcome: Outcome::Refused,
            });
            continue;
        }
        if dry_run {
            replays.push(Replay {
                detail: format!(
                    "{id} would go back to {} ({}, key {})",
                    letter.origin_topic,
                    letter.header(headers::EVENT_TYPE),
                    letter.record.key.as_deref().unwrap_or("-")
                ),
                id,
                outcome: Outcome::WouldReplay,
            });
            continue;
        }
        let now = Utc::now().to_rfc3339();
        let mut message_headers = OwnedHeaders::new();
        for (key, value) in &letter.record.headers {
            if !key.starts_with("dlq.") && key != REPLAY_OF && key != REPLAY_AT {
                message_headers = message_headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
        }
        for (key, value) in [(REPLAY_OF, id.as_str()), (REPLAY_AT, now.as_str())] {
            message_headers = message_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let topic = reader.on_cluster(&letter.origin_topic);
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic)
            .payload(letter.record.payload.as_slice())
            .headers(message_headers);
        if let Some(key) = &letter.record.key {
            record = record.key(key.as_str());
        }
        let (partition, offset) = sends
            .block_on(producer.send(record, Duration::from_secs(30)))
            .map_err(|(error, _)| error)
            .map(|delivery| (delivery.partition, delivery.offset))
            .with_context(|| format!("replaying {id}"))?;
        replays.push(Replay {
            detail: format!(
                "replayed {id} to {}/{partition}@{offset}",
                letter.origin_topic
            ),
            id,
            outcome: Outcome::Replayed,
        });
    }
    Ok(replays)
}

/// A letter id that names no dead letter.
#[derive(Debug)]
pub struct UnknownLetter(pub String);

impl std::fmt::Display for UnknownLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no dead letter {} (see `ticketctl dlq list`)", self.0)
    }
}

impl std::error::Error for UnknownLetter {}
