//! `ticketctl status`: one line a service — readiness, version, consumer
//! lag, outbox backlog, dead letters — and a non-zero exit when something
//! is wrong.
//!
//! Lag is read from the broker (the group's committed offsets against the
//! partitions' ends), so it is known, and grows, while a service is down.

use anyhow::Context as _;
use chrono::TimeDelta;
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use shared_events::Service;
use std::time::Duration;
use ticket_runtime::messaging::kafka::headers;

use super::{parse_span, KafkaOptions, Reader, ServiceUrls};

/// Every service's readiness, version, consumer lag, outbox backlog and
/// dead letters, one line each; exits 1 when a service is down or not
/// ready, lags by more than --max-lag, or its outbox is older than
/// --max-outbox-age.
#[derive(Args, Debug)]
pub struct StatusOptions {
    #[command(flatten)]
    pub kafka: KafkaOptions,
    #[command(flatten)]
    pub urls: ServiceUrls,
    /// More unconsumed events than this is a problem.
    #[arg(long, default_value_t = 1000)]
    pub max_lag: i64,
    /// An outbox whose oldest event waits longer than this is a problem.
    #[arg(long, default_value = "60s", value_parser = parse_span)]
    pub max_outbox_age: TimeDelta,
    /// One JSON object a service, a line each.
    #[arg(long)]
    pub json: bool,
}

/// Returns whether everything is well (the process exits 1 otherwise).
pub fn run(options: StatusOptions) -> anyhow::Result<bool> {
    let reader = Reader::connect(&options.kafka)?;
    let letters = super::dlq::letters(
        &reader,
        &super::dlq::Selection {
            kafka: options.kafka.clone(),
            topic: None,
            consumer: None,
        },
    )?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let calls = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut healthy = true;
    if !options.json {
        println!(
            "{:<15} {:<10} {:<8} {:>7} {:>14} {:>6}  problems",
            "SERVICE", "READY", "VERSION", "LAG", "OUTBOX", "DLQ"
        );
    }
    for service in Service::ALL {
        let ready = calls.block_on(readiness(&http, options.urls.url(service)));
        let lag = lag(&reader, &options.kafka, service)?;
        let dead_letters = letters
            .iter()
            .filter(|l| l.record.header(headers::DLQ_CONSUMER) == Some(service.as_str()))
            .count();
        let mut problems = Vec::new();
        let state = match &ready {
            Ok(body) => body["status"].as_str().unwrap_or("unknown").to_string(),
            Err(error) => {
                problems.push(format!("unreachable: {error}"));
                "down".to_string()
            }
        };
        if state == "not_ready" {
            problems.push(format!(
                "not ready: {}",
                ready.as_ref().map_or(Value::Null, |b| b["checks"].clone())
            ));
        }
        if lag > options.max_lag {
            problems.push(format!("lag {lag} > {}", options.max_lag));
        }
        let body = ready.as_ref().ok();
        let pending = body.and_then(|b| b["outbox"]["pending"].as_i64());
        let oldest = body.and_then(|b| b["outbox"]["oldest_age_secs"].as_f64());
        if oldest.is_some_and(|age| age > options.max_outbox_age.as_seconds_f64()) {
            problems.push(format!(
                "outbox stuck: oldest event {:.0} s old",
                oldest.unwrap_or_default()
            ));
        }
        if !problems.is_empty() {
            healthy = false;
        }
        let version = body
            .and_then(|b| b["version"].as_str())
            .unwrap_or("-")
            .to_string();
        if options.json {
            println!(
                "{}",
                json!({
                    "service": service.as_str(),
                    "ready": state,
                    "version": version,
                    "lag": lag,
                    "outbox_pending": pending,
                    "outbox_oldest_age_secs": oldest,
                    "dead_letters": dead_letters,
                    "problems": problems,
                })
            );
        } else {
            let outbox = match (pending, oldest) {
                (Some(pending), Some(age)) => format!("{pending} ({age:.0}s)"),
                _ => "-".to_string(),
            };
            println!(
                "{:<15} {:<10} {:<8} {:>7} {:>14} {:>6}  {}",
                service.as_str(),
                state,
                version,
                lag,
                outbox,
                dead_letters,
                problems.join("; ")
            );
        }
    }
    Ok(healthy)
}

/// The service's readiness body (also when it answers 503).
pub(crate) async fn readiness(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let url = format!("{}/health/ready", url.trim_end_matches('/'));
    let response = http.get(&url).send().await.with_context(|| url.clone())?;
    response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))
}

/// Events on the service's topics its consumer group has not committed
/// past: the partitions' ends minus the group's committed offsets (the
/// whole partition where it never committed).
pub(super) fn lag(reader: &Reader, kafka: &KafkaOptions, service: Service) -> anyhow::Result<i64> {
    let group = format!("{}{}", kafka.topic_prefix, service.as_str());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()?;
    let mut partitions = TopicPartitionList::new();
    for topic in service.consumes() {
        let name = reader.on_cluster(topic.name());
        for partition in 0..reader.partitions(topic.name())? {
            partitions.add_partition(&name, partition);
        }
    }
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .with_context(|| format!("reading the committed offsets of group {group}"))?;
    let mut lag = 0;
    for element in committed.elements() {
        let topic = element
            .topic()
            .strip_prefix(kafka.topic_prefix.as_str())
            .unwrap_or(element.topic());
        let (low, high) = reader.watermarks(topic, element.partition())?;
        let done = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        lag += (high - done).max(0);
    }
    Ok(lag)
}
