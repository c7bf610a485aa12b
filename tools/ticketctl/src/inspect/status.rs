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
use serde::Serialize;
use serde_json::Value;
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

/// One service's health as `status` reports it.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub service: &'static str,
    /// `ready`, `not_ready`, `down` (no answer) or what the service said.
    pub ready: String,
    pub version: String,
    pub lag: i64,
    pub lag_by_partition: Vec<PartitionLag>,
    pub outbox_pending: Option<i64>,
    pub outbox_oldest_age_secs: Option<f64>,
    pub dead_letters: usize,
    pub problems: Vec<String>,
}

/// What is wrong enough to report.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_lag: i64,
    pub max_outbox_age: TimeDelta,
}

/// Every service's status, read through `reader` and the services' health
/// endpoints (what `status` prints and the console shows).
pub fn collect(
    reader: &Reader,
    kafka: &KafkaOptions,
    urls: &ServiceUrls,
    limits: Limits,
) -> anyhow::Result<Vec<ServiceStatus>> {
    let letters = super::dlq::letters(
        reader,
        &super::dlq::Selection {
            kafka: kafka.clone(),
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
    let mut statuses = Vec::new();
    for service in Service::ALL {
        let ready = calls.block_on(readiness(&http, urls.url(service)));
        let lag_by_partition = lag_by_partition(reader, kafka, service)?;
        let lag = lag_by_partition.iter().map(|p| p.lag).sum();
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
        if lag > limits.max_lag {
            problems.push(format!("lag {lag} > {}", limits.max_lag));
        }
        let body = ready.as_ref().ok();
        let outbox_pending = body.and_then(|b| b["outbox"]["pending"].as_i64());
        let outbox_oldest_age_secs = body.and_then(|b| b["outbox"]["oldest_age_secs"].as_f64());
        if outbox_oldest_age_secs.is_some_and(|age| age > limits.max_outbox_age.as_seconds_f64()) {
            problems.push(format!(
                "outbox stuck: oldest event {:.0} s old",
                outbox_oldest_age_secs.unwrap_or_default()
            ));
        }
        statuses.push(ServiceStatus {
            service: service.as_str(),
            ready: state,
            version: body
                .and_then(|b| b["version"].as_str())
                .unwrap_or("-")
                .to_string(),
            lag,
            lag_by_partition,
            outbox_pending,
            outbox_oldest_age_secs,
            dead_letters,
            problems,
        });
    }
    Ok(statuses)
}

/// Returns whether everything is well (the process exits 1 otherwise).
pub fn run(options: StatusOptions) -> anyhow::Result<bool> {
    let reader = Reader::connect(&options.kafka)?;
    let limits = Limits {
        max_lag: options.max_lag,
        max_outbox_age: options.max_outbox_age,
    };
    let statuses = collect(&reader, &options.kafka, &options.urls, limits)?;
    if !options.json {
        println!(
            "{:<15} {:<10} {:<8} {:>7} {:>14} {:>6}  problems",
            "SERVICE", "READY", "VERSION", "LAG", "OUTBOX", "DLQ"
        );
    }
    for status in &statuses {
        if options.json {
            println!("{}", serde_json::to_string(status)?);
        } else {
            let outbox = match (status.outbox_pending, status.outbox_oldest_age_secs) {
                (Some(pending), Some(age)) => format!("{pending} ({age:.0}s)"),
                _ => "-".to_string(),
            };
            println!(
                "{:<15} {:<10} {:<8} {:>7} {:>14} {:>6}  {}",
                status.service,
                status.ready,
                status.version,
                status.lag,
                outbox,
                status.dead_letters,
                status.problems.join("; ")
            );
        }
    }
    Ok(statuses.iter().all(|s| s.problems.is_empty()))
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

/// Where one group stands in one partition.
#[derive(Debug, Serialize)]
pub struct PartitionLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (`None`: it never committed).
    pub committed: Option<i64>,
    /// The offset after the partition's last event.
    pub end: i64,
    pub lag: i64,
}

/// Events on the service's topics its consumer group has not committed
/// past: the partitions' ends minus the group's committed offsets (the
/// whole partition where it never committed).
pub(super) fn lag(reader: &Reader, kafka: &KafkaOptions, service: Service) -> anyhow::Result<i64> {
    Ok(lag_by_partition(reader, kafka, service)?
        .iter()
        .map(|p| p.lag)
        .sum())
}

/// [`lag`], per partition of each consumed topic.
pub fn lag_by_partition(
    reader: &Reader,
    kafka: &KafkaOptions,
    service: Service,
) -> anyhow::Result<Vec<PartitionLag>> {
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
    let mut lags = Vec::new();
    for element in committed.elements() {
        let topic = element
            .topic()
            .strip_prefix(kafka.topic_prefix.as_str())
            .unwrap_or(element.topic());
        let (low, high) = reader.watermarks(topic, element.partition())?;
        let committed = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        lags.push(PartitionLag {
            group: group.clone(),
            topic: topic.to_string(),
            partition: element.partition(),
            committed,
            end: high,
            lag: (high - committed.unwrap_or(low)).max(0),
        });
    }
    Ok(lags)
}
