//! `ticketctl events`: the event topics, filtered, one readable line an
//! event (or `--json` lines).

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use serde_json::Value;
use shared_events::EventType;
use std::io::Write;
use uuid::Uuid;

use super::{in_causal_order, parse_time, Body, KafkaOptions, Reader, Record};

/// Read the event topics: filter by topic, type, key, correlation and time;
/// from the beginning (the default), from a time, or live (`--follow`).
/// Never joins or moves a service's consumer group.
#[derive(Args, Debug)]
pub struct EventsOptions {
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// A topic to read (repeatable); the five event topics by default. A
    /// dead-letter topic by its name, e.g. payment.events.dlq.
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Only events of this type (repeatable), e.g. PaymentFailed.
    #[arg(long = "type", value_name = "EVENT_TYPE", value_parser = parse_event_type)]
    pub types: Vec<EventType>,
    /// Only messages with this key (a reservation id for saga events);
    /// reads just the key's partition of each topic.
    #[arg(long)]
    pub key: Option<String>,
    /// Only the events of one saga (their correlation id).
    #[arg(long)]
    pub correlation: Option<Uuid>,
    /// Start at this time: RFC 3339 or a span ago (15m, 2h, 1d).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Stop at this time (RFC 3339 or a span ago).
    #[arg(long, value_parser = parse_time, conflicts_with = "follow")]
    pub until: Option<DateTime<Utc>>,
    /// Keep reading new events as they come (from now, or from --since).
    #[arg(long)]
    pub follow: bool,
    /// One JSON object a line, for scripts.
    #[arg(long)]
    pub json: bool,
}

fn parse_event_type(name: &str) -> Result<EventType, String> {
    EventType::parse(name).ok_or_else(|| {
        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        format!("unknown event type {name:?}; one of {}", known.join(", "))
    })
}

impl EventsOptions {
    fn keeps(&self, record: &Record) -> bool {
        if self
            .key
            .as_ref()
            .is_some_and(|key| record.key.as_ref() != Some(key))
        {
            return false;
        }
        if self.until.is_some_and(|until| record.at() > Some(until)) {
            return false;
        }
        let envelope = record.envelope();
        if !self.types.is_empty() && !envelope.is_some_and(|e| self.types.contains(&e.event_type()))
        {
            return false;
        }
        if let Some(correlation) = self.correlation {
            return envelope.is_some_and(|e| e.correlation_id == correlation);
        }
        true
    }
}

pub fn run(options: EventsOptions) -> anyhow::Result<()> {
    let reader = Reader::connect(&options.kafka)?;
    let topics = if options.topics.is_empty() {
        super::event_topics()
    } else {
        options.topics.clone()
    };
    let mut ranges = Vec::new();
    for topic in &topics {
        let partitions = reader.partitions(topic)?;
        if partitions == 0 {
            anyhow::bail!("no topic {} on this cluster", reader.on_cluster(topic));
        }
        let only = options
            .key
            .as_ref()
            .map(|key| vec![super::partition_for(key, partitions)]);
        // Live without --since: from now on.
        let since = match (options.follow, options.since) {
            (true, None) => Some(Utc::now()),
            (_, since) => since,
        };
        ranges.extend(reader.ranges(topic, only.as_deref(), since, options.follow)?);
    }
    let mut out = std::io::stdout().lock();
    if options.follow {
        // Live: print each event as it comes (per-partition order).
        let mut failed = None;
        reader.read(&ranges, |record| {
            if options.keeps(&record) {
                if let Err(error) = print(&mut out, &record, options.json) {
                    failed = Some(error);
                    return false;
                }
            }
            true
        })?;
        return failed.map_or(Ok(()), Err);
    }
    let mut found = Vec::new();
    reader.read(&ranges, |record| {
        if options.keeps(&record) {
            found.push(record);
        }
        true
    })?;
    for record in in_causal_order(found) {
        print(&mut out, &record, options.json)?;
    }
    Ok(())
}

fn print(out: &mut impl Write, record: &Record, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", record.to_json())?;
    } else {
        writeln!(out, "{}", line(record))?;
    }
    Ok(())
}

pub fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".repeat(24),
        |at| at.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// One event on one line: time, address, producer, type, key, correlation,
/// then the payload's fields.
pub fn line(record: &Record) -> String {
    let key = record.key.as_deref().unwrap_or("-");
    let head = format!("{}  {:<24}", time(record.at()), record.address());
    match &record.body {
        Body::Event(envelope) => {
            let payload: Value = serde_json::from_str(&envelope.to_json())
                .ok()
                .and_then(|mut v: Value| v.get_mut("payload").map(Value::take))
                .unwrap_or(Value::Null);
            format!(
                "{head}  {:<14}  {:<31}  key={key}  correlation={}  {}",
                envelope.producer.as_str(),
                envelope.event_type().as_str(),
                envelope.correlation_id,
                fields(&payload)
            )
        }
        Body::UnknownType { event_type } => format!(
            "{head}  [unknown event type {event_type}]  key={key}  {}",
            raw(&record.payload)
        ),
        Body::Raw { error } => format!(
            "{head}  [not an event: {error}]  key={key}  {}",
            raw(&record.payload)
        ),
    }
}

/// `name=value` for each field of a payload.
pub fn fields(payload: &Value) -> String {
    match payload {
        Value::Object(map) => map
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => format!("{name}={text}"),
                other => format!("{name}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Bytes as text, escaped and cut short.
fn raw(payload: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(payload).chars().take(200).collect();
    format!("raw={:?}", text)
}
