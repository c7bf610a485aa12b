//! The floor under a run: what the cluster's parts cost with no business
//! logic, measured against the same broker and the same kind of database,
//! just before the fans come, so the saga's latency reads as a multiple of
//! it.
//!
//! * broker hop: a message produced (acks=all, as the relays do) until a
//!   consumer with the services' client settings has it;
//! * commit: a transaction that writes an event to the outbox and commits,
//!   as every saga step does, on a database of its own beside the services'
//!   (an SQLite file in the data folder, or `ticketing_floor` on the
//!   PostgreSQL server given).
//!
//! A step of `hops` hops costs at least `hops` broker hops and `hops + 1`
//! commits (the request's own, then one per service the events reach).

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use ticket_runtime::config::{DatabaseSettings, KafkaSettings, Layers};
use ticket_runtime::messaging::kafka::Kafka;
use ticket_runtime::{Db, DbError, Migrations, Secret};

use crate::inspect::ClusterOptions;

/// Hops and commits of each measured step (docs/saga.md): a hold goes
/// reservation → concert → reservation; a payment payment → member-balance →
/// reservation → concert → payment; the saga is both and the top-up between.
pub const HOLD_HOPS: u32 = 2;
pub const PAY_HOPS: u32 = 4;

pub struct Floor {
    pub broker_hop: Histogram<u64>,
    pub commit: Histogram<u64>,
}

impl Floor {
    pub async fn measure(
        cluster: &ClusterOptions,
        database: Option<&str>,
        samples: usize,
    ) -> anyhow::Result<Floor> {
        let broker_hop = broker_hop(cluster, samples)
            .await
            .context("measuring the broker hop")?;
        let commit = commit(&cluster.data_dir, database, samples)
            .await
            .context("measuring the commit")?;
        Ok(Floor { broker_hop, commit })
    }

    /// The least a step of `hops` hops can take: medians of its parts.
    pub fn of_hops(&self, hops: u32) -> f64 {
        let ms = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64 / 1000.0;
        f64::from(hops) * ms(&self.broker_hop) + f64::from(hops + 1) * ms(&self.commit)
    }

    pub fn summary(&self) -> Value {
        let part = |h: &Histogram<u64>| {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            json!({"samples": h.len(), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0})
        };
        json!({
            "broker_hop": part(&self.broker_hop),
            "commit": part(&self.commit),
            "hold_ms": self.of_hops(HOLD_HOPS),
            "pay_ms": self.of_hops(PAY_HOPS),
            // The top-up between them is one more commit.
            "saga_ms": self.of_hops(HOLD_HOPS) + self.of_hops(PAY_HOPS) + self.of_hops(0),
        })
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn record(histogram: &mut Histogram<u64>, took: Duration) {
    histogram.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
}

fn kafka_settings(cluster: &ClusterOptions) -> anyhow::Result<KafkaSettings> {
    Ok(Layers::new("")?
        .env(std::env::vars())?
        .set("kafka.brokers", &cluster.kafka.brokers)
        .set("kafka.topic_prefix", &cluster.kafka.topic_prefix)
        .kafka()?)
}

async fn broker_hop(cluster: &ClusterOptions, samples: usize) -> anyhow::Result<Histogram<u64>> {
    let settings = kafka_settings(cluster)?;
    let kafka = Kafka::connect(&settings, "ticketctl-floor")?;
    let topic = kafka.prefixed("load-floor");
    kafka.create_topics(std::slice::from_ref(&topic)).await?;
    let consumer: StreamConsumer = kafka.consumer_config("load-floor").create()?;
    // Each partition's end, read before anything is produced and given as
    // an offset: `Offset::End` would be resolved later, and a first message
    // produced before that would be skipped (and waited for in vain).
    let assigned = topic.clone();
    let consumer = tokio::task::spawn_blocking(move || -> anyhow::Result<StreamConsumer> {
        let topic = assigned;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, end) = consumer.fetch_watermarks(&topic, partition.id(), timeout)?;
            assignment.add_partition_offset(&topic, partition.id(), Offset::Offset(end))?;
        }
        consumer.assign(&assignment)?;
        Ok(consumer)
    })
    .await??;
    let producer = kafka.producer();
    let run = uuid::Uuid::new_v4().to_string();
    let mut hops = histogram()?;
    // The first few warm the connections and the consumer's position up.
    let warm_up = 5;
    for n in 0..samples + warm_up {
        let payload = format!("{run}/{n}");
        let sent = Instant::now();
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&payload),
                Duration::from_secs(10),
            )
            .await?;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .context("no message came back within 30 s")??;
            if message.payload() == Some(payload.as_bytes()) {
                break;
            }
        }
        if n >= warm_up {
            record(&mut hops, sent.elapsed());
        }
    }
    Ok(hops)
}

async fn commit(
    data_dir: &Path,
    database: Option<&str>,
    samples: usize,
) -> anyhow::Result<Histogram<u64>> {
    let url = match database {
        // Connecting and creating the database block: off the executor.
        Some(server) => {
            let server = server.to_string();
            tokio::task::spawn_blocking(move || crate::up::postgres_database(&server, "floor"))
                .await??
        }
        None => format!("sqlite://{}", data_dir.join("floor.db").display()),
    };
    let db = Db::connect(
        &DatabaseSettings {
            url: Secret::new(url),
            pool_size: 1,
            connect_timeout_ms: 5000,
        },
        Migrations::NONE,
    )
    .await?;
    let mut commits = histogram()?;
    for _ in 0..samples {
        let envelope = shared_events::Envelope::new(shared_events::BalanceCharged {
            user_id: uuid::Uuid::new_v4(),
            entry_id: uuid::Uuid::new_v4(),
            amount: 1,
            balance_after: 1,
        });
        let started = Instant::now();
        db.transaction(move |tx| {
            tx.publish(&envelope)?;
            Ok::<_, DbError>(())
        })
        .await?;
        record(&mut commits, started.elapsed());
    }
    Ok(commits)
}

/// One line on the floor, for the start of a run.
pub fn describe(floor: &Value) -> String {
    let ms = |part: &str, q: &str| floor[part][q].as_f64().unwrap_or(0.0);
    format!(
        "floor: broker hop p50 {:.1} ms (p99 {:.1}), commit p50 {:.1} ms (p99 {:.1}); \
         so a hold takes at least {:.1} ms, a payment {:.1} ms, a saga {:.1} ms",
        ms("broker_hop", "p50_ms"),
        ms("broker_hop", "p99_ms"),
        ms("commit", "p50_ms"),
        ms("commit", "p99_ms"),
        floor["hold_ms"].as_f64().unwrap_or(0.0),
        floor["pay_ms"].as_f64().unwrap_or(0.0),
        floor["saga_ms"].as_f64().unwrap_or(0.0),
    )
}
