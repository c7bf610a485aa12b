//! Benchmarks whose figures are in docs/benchmarks.md.
//!
//! cargo run --release -p ticketctl --example bench -- queue-positions [--postgres]
//! cargo run --release -p ticketctl --example bench -- saga [--postgres]
//! cargo run --release -p ticketctl --example bench -- hop [--postgres]
//! cargo build --release -p ticketctl --bin ticketctl --example bench && ./target/release/examples/bench inspect
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

#[path = "../tests/cluster/support/mod.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "the benchmarks drive part of the test cluster"
)]
mod support;

use chrono::{TimeDelta, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::time::{Duration, Instant};
use ticket_runtime::dev::testkit::TestDatabase;
use ticket_runtime::{Db, DbError};
use uuid::Uuid;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    format!(
        "mean {:>7.1} µs  p50 {:>7.1} µs  p99 {:>7.1} µs",
        mean.as_secs_f64() * 1e6,
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    )
}

/// A line of `n` waiting fans for one concert, 1% of whom stopped polling
/// and are dropped through the service's own sweeper.
async fn fill_line(db: &Db, concert: Uuid, n: i64) {
    let concert_id = concert.to_string();
    db.run(move |conn| {
        let started = Utc::now() - TimeDelta::seconds(5);
        conn.batch_execute(&format!(
            "INSERT INTO queue_lines (concert_id, next_seq, head_seq, active_count, rate_clock) \
             VALUES ('{concert_id}', {}, 1, 0, '{}')",
            n + 1,
            started.naive_utc()
        ))?;
        conn.batch_execute("BEGIN")?;
        for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
            let rows: Vec<String> = chunk
                .iter()
                .map(|seq| {
                    let seen = if seq % 100 == 0 { started - TimeDelta::hours(1) } else { Utc::now() };
                    format!(
                        "('{}', '{}', '{concert_id}', {seq}, 'WAITING', '{}', '{}')",
                        Uuid::new_v4(),
                        Uuid::new_v4(),
                        seen.naive_utc(),
                        started.naive_utc()
                    )
                })
                .collect();
            conn.batch_execute(&format!(
                "INSERT INTO queue_tokens (token, user_id, concert_id, seq, status, last_seen_at, created_at) VALUES {}",
                rows.join(",")
            ))?;
        }
        conn.batch_execute("COMMIT")?;
        Ok::<_, DbError>(())
    })
    .await
    .unwrap();
    let idle_since = Utc::now() - queue_policy().poll_timeout();
    db.transaction(move |tx| {
        queue_service::store::drop_idle_waiters(
            tx.conn(),
            idle_since,
            queue_service::domain::Ended::Dropped,
            i64::MAX,
        )
        .map_err(DbError::from)
    })
    .await
    .unwrap();
}

fn queue_policy() -> queue_service::domain::QueuePolicy {
    queue_service::domain::QueuePolicy {
        max_active: 100,
        admission_rate_per_sec: 50,
        admission_interval_ms: 100,
        pass_ttl_secs: 600,
        poll_timeout_secs: 30,
        sweep_interval_ms: 1000,
    }
}

async fn queue_positions(postgres: bool) {
    println!(
        "position lookups ({}), 2000 random waiting fans per size",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    for n in [1_000i64, 10_000, 100_000, 300_000] {
        let database = TestDatabase::on(postgres, "bench");
        let settings: ticket_runtime::Settings<ticket_runtime::NoServiceSettings> =
            ticket_runtime::config::Layers::new("")
                .unwrap()
                .set("database.url", database.url.as_str())
                .build()
                .unwrap();
        let db = Db::connect(&settings.database, queue_service::SCHEMA)
            .await
            .unwrap();
        let concert = Uuid::new_v4();
        let loading = Instant::now();
        fill_line(&db, concert, n).await;
        let loaded = loading.elapsed();
        let probes: Vec<i64> = (0..2000).map(|i| 1 + (i * 7919 + 13) % n).collect();
        let mut tokens = Vec::with_capacity(probes.len());
        for seq in &probes {
            let (concert_id, seq) = (concert.to_string(), *seq);
            let token = db
                .run(move |conn| {
                    diesel::sql_query(format!(
                        "SELECT token FROM queue_tokens WHERE concert_id = '{concert_id}' AND seq = {seq}"
                    ))
                    .load::<TokenRow>(conn)
                    .map_err(DbError::from)
                })
                .await
                .unwrap()
                .remove(0)
                .token;
            tokens.push(Uuid::parse_str(&token).unwrap());
        }
        // Each kind of lookup in its own loop, so neither disturbs the
        // other's caches.
        let mut fenwick = Vec::new();
        for token in tokens {
            let started = Instant::now();
            db.run(move |conn| {
                let found = queue_service::store::find(conn, token.into())?.expect("token");
                queue_service::store::position(conn, &found).map_err(DbError::from)
            })
            .await
            .unwrap();
            fenwick.push(started.elapsed());
        }
        let mut naive = Vec::new();
        for seq in probes {
            let concert_id = concert.to_string();
            let started = Instant::now();
            db.run(move |conn| {
                diesel::sql_query(format!(
                    "SELECT COUNT(*) AS ahead FROM queue_tokens WHERE concert_id = '{concert_id}' \
                     AND status = 'WAITING' AND seq < {seq}"
                ))
                .load::<Ahead>(conn)
                .map_err(DbError::from)
            })
            .await
            .unwrap();
            naive.push(started.elapsed());
        }
        println!("  line {n:>7} (loaded in {:>5.1} s)", loaded.as_secs_f64());
        println!("    position (Fenwick): {}", summary(fenwick));
        println!("    COUNT(*) ahead:     {}", summary(naive));
    }
}

#[derive(QueryableByName)]
struct TokenRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    token: String,
}

#[derive(QueryableByName)]
struct Ahead {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    #[allow(dead_code)]
    ahead: i64,
}

async fn saga(postgres: bool) {
    let cluster = support::Cluster::start(postgres, support::Knobs::default()).await;
    let concerts = cluster
        .get_json(cluster.url(shared_events::Service::Concert, "/v1/concerts"))
        .await;
    let concert = concerts[0]["id"].as_str().unwrap().to_string();
    let schedules = cluster
        .get_json(cluster.url(
            shared_events::Service::Concert,
            &format!("/v1/concerts/{concert}/schedules"),
        ))
        .await;
    let schedule = schedules[0]["id"].as_str().unwrap().to_string();
    cluster.settle().await;

    let (mut holds, mut payments) = (Vec::new(), Vec::new());
    for seat in 1..=50 {
        let fan = cluster.fan(&concert).await;
        cluster.charge(&fan, 1_000_000).await;
        let started = Instant::now();
        let (status, held) = cluster.reserve(&fan, &schedule, seat).await;
        assert_eq!(status, 201, "{held}");
        holds.push(started.elapsed());
        let started = Instant::now();
        let (_, payment) = cluster.pay(&fan, held["id"].as_str().unwrap(), None).await;
        let done = if payment["status"] == "COMPLETED" {
            payment
        } else {
            cluster
                .payment_outcome(&fan, payment["id"].as_str().unwrap())
                .await
        };
        assert_eq!(done["status"], "COMPLETED");
        payments.push(started.elapsed());
    }
    println!(
        "saga latency ({}), 50 fans one after another",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    println!(
        "  seat hold   (POST → HELD, 2 hops):        {}",
        summary(holds)
    );
    println!(
        "  payment     (POST → COMPLETED, 4 hops):   {}",
        summary(payments)
    );

    let schedule = schedules[1]["id"].as_str().unwrap().to_string();
    let fans = futures::future::join_all((0..50).map(|_| cluster.fan(&concert))).await;
    for fan in &fans {
        cluster.charge(fan, 1_000_000).await;
    }
    let started = Instant::now();
    futures::future::join_all(fans.iter().enumerate().map(|(i, fan)| {
        let cluster = &cluster;
        let schedule = schedule.clone();
        async move {
            let (_, held) = cluster.reserve(fan, &schedule, i as i64 + 1).await;
            let held = cluster
                .reservation_reaches(fan, held["id"].as_str().unwrap(), "HELD")
                .await;
            let (_, payment) = cluster.pay(fan, held["id"].as_str().unwrap(), None).await;
            let done = cluster
                .payment_outcome(fan, payment["id"].as_str().unwrap())
                .await;
            assert_eq!(done["status"], "COMPLETED");
        }
    }))
    .await;
    let elapsed = started.elapsed();
    println!(
        "  50 concurrent sagas (hold + pay): {:.2} s, {:.1} sagas/s",
        elapsed.as_secs_f64(),
        50.0 / elapsed.as_secs_f64()
    );
    cluster.stop().await;
}

/// Records when each event reached the handler.
struct Stopwatch {
    arrivals: std::sync::Arc<std::sync::Mutex<Vec<(Uuid, Instant)>>>,
}

impl ticket_runtime::EventHandler for Stopwatch {
    fn name(&self) -> &str {
        "stopwatch"
    }

    fn topics(&self) -> Vec<shared_events::Topic> {
        vec![shared_events::Topic::BalanceEvents]
    }

    fn handles(&self, event_type: shared_events::EventType) -> bool {
        event_type == shared_events::EventType::BalanceCharged
    }

    fn handle(
        &self,
        _: &mut ticket_runtime::Tx<'_>,
        event: &shared_events::Envelope,
    ) -> Result<(), ticket_runtime::HandlerError> {
        self.arrivals
            .lock()
            .unwrap()
            .push((event.event_id, Instant::now()));
        Ok(())
    }
}

/// One hop: a local transaction with an outbox event, the relay, the broker,
/// and an idempotent consumer's transaction in another service.
async fn hop(postgres: bool) {
    ticket_runtime::dev::testkit::init_tracing();
    let make = |label: &str| TestDatabase::on(postgres, label);
    let (db_a, db_b) = (make("hop_a"), make("hop_b"));
    let prefix = ticket_runtime::dev::testkit::unique_prefix();
    let settings = |db: &TestDatabase| {
        let mut settings = ticket_runtime::dev::testkit::settings::<
            ticket_runtime::NoServiceSettings,
        >("", &db.url, &prefix);
        if let Some(wait) = std::env::var("FETCH_WAIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            settings.kafka.fetch_wait_max_ms = wait;
        }
        settings
    };
    let fetch_wait = settings(&db_a).kafka.fetch_wait_max_ms;
    let a = ticket_runtime::ServiceRuntime::start(
        shared_events::Service::MemberBalance,
        settings(&db_a),
        member_balance_service::SCHEMA,
    )
    .await
    .unwrap();
    let mut b = ticket_runtime::ServiceRuntime::start(
        shared_events::Service::Payment,
        settings(&db_b),
        payment_service::SCHEMA,
    )
    .await
    .unwrap();
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    b.consume(std::sync::Arc::new(Stopwatch {
        arrivals: arrivals.clone(),
    }));
    let running_b = b.serve(|_| {}).unwrap();
    let ready = format!("{}/health/ready", running_b.url());
    while reqwest::get(&ready)
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut latencies, mut to_ack, mut to_handler) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..201 {
        let envelope = shared_events::Envelope::new(shared_events::BalanceCharged {
            user_id: Uuid::new_v4(),
            entry_id: Uuid::new_v4(),
            amount: 1,
            balance_after: 1,
        });
        let id = envelope.event_id;
        let started = Instant::now();
        a.db.transaction(move |tx| {
            tx.publish(&envelope)?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
        let mut acked = None;
        let arrived = loop {
            if let Some((_, at)) = arrivals.lock().unwrap().iter().find(|(e, _)| *e == id) {
                break *at;
            }
            if acked.is_none() {
                let pending =
                    a.db.run(|conn| {
                        ticket_runtime::db::outbox::pending_count(conn).map_err(DbError::from)
                    })
                    .await
                    .unwrap();
                if pending == 0 {
                    acked = Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        if i > 0 {
            latencies.push(arrived - started);
            if let Some(acked) = acked {
                to_ack.push(acked - started);
                to_handler.push(arrived.saturating_duration_since(acked));
            }
        }
    }
    println!(
        "one hop ({}, fetch.wait.max.ms={fetch_wait}), 200 events one after another",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    println!(
        "  commit → handler in the other service: {}",
        summary(latencies)
    );
    println!(
        "    commit → marked sent (broker ack):   {}",
        summary(to_ack)
    );
    println!(
        "    marked sent → handler:               {}",
        summary(to_handler)
    );
    running_b.stop().await;
}

/// One completed saga's eight events, keyed by its reservation, a few
/// milliseconds apart from `at` (ids and broker timestamps both from it).
fn completed_saga(at: chrono::DateTime<Utc>) -> Vec<shared_events::Envelope> {
    use shared_events::*;
    let stamp = |offset_ms: i64| {
        let t = at + TimeDelta::milliseconds(offset_ms);
        uuid::Timestamp::from_unix(
            uuid::NoContext,
            t.timestamp() as u64,
            t.timestamp_subsec_nanos(),
        )
    };
    let id = Uuid::new_v7(stamp(0));
    let payment = Uuid::new_v7(stamp(300));
    let (user, concert, schedule) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let until = at + TimeDelta::minutes(5);
    let events: Vec<Event> = vec![
        ReservationRequested {
            reservation_id: id,
            user_id: user,
            concert_id: concert,
            schedule_id: schedule,
            seat_no: 7,
        }
        .into(),
        SeatHeld {
            reservation_id: id,
            schedule_id: schedule,
            seat_no: 7,
            price: 55_000,
            hold_expires_at: Some(until),
        }
        .into(),
        ReservationHeld {
            reservation_id: id,
            user_id: user,
            concert_id: concert,
            schedule_id: schedule,
            seat_no: 7,
            price: 55_000,
            hold_expires_at: until,
        }
        .into(),
        PaymentRequested {
            payment_id: payment,
            reservation_id: id,
            user_id: user,
            amount: 55_000,
        }
        .into(),
        BalanceDebited {
            payment_id: payment,
            reservation_id: id,
            user_id: user,
            entry_id: Uuid::new_v4(),
            amount: 55_000,
        }
        .into(),
        ReservationConfirmed {
            reservation_id: id,
            payment_id: payment,
            schedule_id: schedule,
            seat_no: 7,
        }
        .into(),
        SeatSold {
            reservation_id: id,
            payment_id: payment,
            schedule_id: schedule,
            seat_no: 7,
        }
        .into(),
        PaymentCompleted {
            payment_id: payment,
            reservation_id: id,
            user_id: user,
            concert_id: concert,
            amount: 55_000,
        }
        .into(),
    ];
    let mut saga: Vec<Envelope> = Vec::new();
    for (step, event) in events.into_iter().enumerate() {
        let mut envelope = match saga.last() {
            Some(cause) => Envelope::caused_by(cause, event),
            None => Envelope::new(event),
        };
        let offset = 100 * step as i64;
        envelope.occurred_at = at + TimeDelta::milliseconds(offset);
        envelope.event_id = Uuid::new_v7(stamp(offset));
        if step == 0 {
            envelope.correlation_id = envelope.event_id;
        }
        saga.push(envelope);
    }
    saga
}

/// Runs the release `ticketctl` beside this example; its output is
/// summarised: what it found and, for `saga`, how many messages it read.
fn timed_ticketctl(args: &[&str], brokers: &str, prefix: &str) -> (Duration, String) {
    let exe = std::env::current_exe().unwrap();
    let ticketctl = exe.parent().unwrap().parent().unwrap().join("ticketctl");
    let started = Instant::now();
    let output = std::process::Command::new(&ticketctl)
        .args(args)
        .env("KAFKA_BROKERS", brokers)
        .env("APP__KAFKA__TOPIC_PREFIX", prefix)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it with --bin ticketctl)",
                ticketctl.display()
            )
        });
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let read = match serde_json::from_str::<serde_json::Value>(&stdout) {
        Ok(saga) => format!(
            "{} steps, {}; read {} messages",
            saga["steps"].as_array().map_or(0, Vec::len),
            saga["verdict"],
            saga["messages_read"]
        ),
        Err(_) => format!("{} events printed", stdout.lines().count()),
    };
    (elapsed, read)
}

/// `ticketctl saga` and `events --key` on topics holding SAGAS × 8 events
/// spread over the last day, against reading every topic in full.
async fn inspect() {
    let sagas: usize = std::env::var("SAGAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(125_000);
    let partitions: i32 = std::env::var("PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let brokers = ticket_runtime::dev::testkit::broker().to_string();
    let prefix = ticket_runtime::dev::testkit::unique_prefix();
    let mut settings = ticket_runtime::dev::testkit::settings::<ticket_runtime::NoServiceSettings>(
        "",
        "sqlite://unused.db",
        &prefix,
    );
    settings.kafka.partitions = partitions;
    settings.kafka.brokers = brokers.clone();
    let kafka = ticket_runtime::messaging::kafka::Kafka::connect(&settings.kafka, "bench").unwrap();
    kafka.ensure_topics().await.unwrap();
    let producer = kafka.producer();
    let day = TimeDelta::hours(24);
    let start = Utc::now() - day;
    let step = day / sagas as i32;
    let (mut first, mut middle, mut last) = (String::new(), String::new(), String::new());
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..sagas {
        let saga = completed_saga(start + step * i as i32);
        let key = saga[0].partition_key.clone();
        match i {
            0 => first = key,
            i if i == sagas / 2 => middle = key,
            i if i == sagas - 1 => last = key,
            _ => {}
        }
        for envelope in saga {
            let topic = kafka.topic_name(envelope.topic());
            let payload = envelope.to_json();
            let record = rdkafka::producer::FutureRecord::to(&topic)
                .key(&envelope.partition_key)
                .payload(&payload)
                .timestamp(envelope.occurred_at.timestamp_millis());
            let delivery = producer
                .send_result(record)
                .map_err(|refused| refused.0)
                .unwrap();
            pending.push_back(delivery);
            if pending.len() >= 20_000 {
                pending.pop_front().unwrap().await.unwrap().unwrap();
            }
        }
        if i % 12_500 == 0 {
            eprintln!("  {} events produced", i * 8);
        }
    }
    for delivery in pending {
        delivery.await.unwrap().unwrap();
    }
    let events = sagas * 8;
    println!(
        "{events} events ({sagas} completed sagas over 24 h, {partitions} partitions per topic) produced in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let runs: Vec<(String, Vec<&str>)> = vec![
        (
            "saga, oldest reservation".into(),
            vec!["saga", &first, "--json"],
        ),
        (
            "saga, reservation 12 h old".into(),
            vec!["saga", &middle, "--json"],
        ),
        (
            "saga, newest reservation".into(),
            vec!["saga", &last, "--json"],
        ),
        (
            "events --key, newest reservation".into(),
            vec!["events", "--key", &last, "--json"],
        ),
        (
            "events --since 1h".into(),
            vec!["events", "--since", "1h", "--json"],
        ),
        (
            "events, every topic in full".into(),
            vec!["events", "--json"],
        ),
    ];
    for (label, args) in runs {
        let (elapsed, read) = timed_ticketctl(&args, &brokers, &prefix);
        println!("  {label:<36} {:>8.2} s   {read}", elapsed.as_secs_f64());
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let postgres = args.iter().any(|a| a == "--postgres");
    match args.first().map(String::as_str) {
        Some("queue-positions") => queue_positions(postgres).await,
        Some("saga") => saga(postgres).await,
        Some("hop") => hop(postgres).await,
        Some("inspect") => inspect().await,
        _ => eprintln!("usage: bench <queue-positions|saga|hop|inspect> [--postgres]"),
    }
}
