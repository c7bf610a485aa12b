//! `ticketctl chaos`: a ticket opening under fire. It starts a cluster of
//! its own (as `up` does, in a data folder of its own), lets the `load`
//! fans in, and meanwhile kills, pauses and cuts off the processes at
//! moments drawn from a seed. Then it lets the cluster settle and checks
//! that nothing was lost or doubled: the audit, no saga PENDING, every
//! outbox empty, no valid event dead-lettered, every fan's last answer
//! true of the end state. Last, the replay: with the services stopped,
//! every consumer group is rewound to the start of its topics; after the
//! restart the audit must still pass and every service's state must be
//! exactly what it was.

mod faults;
mod verdict;

use anyhow::Context as _;
use chrono::TimeDelta;
use clap::Args;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ticket_runtime::CancellationToken;

use crate::inspect::audit::{self, AuditOptions, Snapshot, Violation};
use crate::inspect::parse_span;
use crate::load::{self, report::Recorder, LoadOptions};
use crate::up::{Cluster, Output, UpOptions};
use faults::{Availability, Injector, Schedule};

/// A ticket opening under fire: starts a cluster of its own, runs the
/// `load` fans against it while killing (`kill -9`) and pausing (SIGSTOP
/// past the consumer session timeout) services and the broker, and on
/// PostgreSQL terminating a service's connections, at moments drawn from
/// --seed. Then checks that nothing was lost or doubled (the audit, no
/// saga PENDING, outboxes empty, no valid event dead-lettered, each fan's
/// last answer true of the end state) and that replaying every topic from
/// the start changes nothing. Exits 1 on any violation.
#[derive(Args, Debug)]
pub struct ChaosOptions {
    /// A new folder for the cluster's data and its log (cluster.log);
    /// by default one in the temporary folder, removed after a clean run.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The services' databases on this PostgreSQL server instead of SQLite
    /// files: postgres://host/NAME uses NAME_concert, ... (default
    /// chaos_*), DROPPED and made anew at the start.
    #[arg(long, value_parser = crate::up::postgres_url)]
    pub database: Option<String>,
    /// Draws the faults: the same seed, the same faults at the same times
    /// (a random one when absent; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long fans arrive and faults are injected.
    #[arg(long, default_value = "10m", value_parser = parse_span)]
    pub duration: TimeDelta,
    /// The mean time between two faults (each wait is drawn from half to
    /// one and a half of it).
    #[arg(long, default_value = "8s", value_parser = parse_span)]
    pub fault_every: TimeDelta,
    /// Fans arriving per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The services listen on BASE+1 to BASE+5, the data platform on BASE+10.
    #[arg(long, default_value_t = 18080)]
    pub port_base: u16,
    /// The port of the cluster's broker.
    #[arg(long, default_value_t = 19092)]
    pub broker_port: u16,
    /// How long the cluster may take to settle after the faults.
    #[arg(long, default_value = "300s", value_parser = parse_span)]
    pub settle_timeout: TimeDelta,
    /// Skip the replay of every topic at the end.
    #[arg(long)]
    pub no_replay: bool,
    /// The report as JSON too, to this file (`-` for standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// How long a held seat waits for payment in a chaos run: short, so that
/// the holds fans walk away from expire, and their compensation runs,
/// under fire too.
const HOLD_TTL_SECS: &str = "20";

/// Returns whether the run found no violation (the process exits 1 otherwise).
pub async fn run(options: ChaosOptions) -> anyhow::Result<bool> {
    let seed = options.seed.unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        u64::from_le_bytes(bytes) % 1_000_000
    });
    let data_dir = match &options.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "ticketctl-chaos-{seed}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        )),
    };
    if data_dir.join("admin-key").exists() {
        anyhow::bail!(
            "{} holds a cluster already: chaos starts from nothing, give it a new folder",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let postgres = match &options.database {
        Some(url) => Some(tokio::task::block_in_place(|| fresh_databases(url))?),
        None => None,
    };
    let log = data_dir.join("cluster.log");
    let log_file = std::fs::File::create(&log)?;
    eprintln!(
        "chaos: seed {seed}, {} of faults every ~{}s on {}; cluster in {} (its output in {})",
        humane(options.duration),
        options.fault_every.num_seconds(),
        if postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        data_dir.display(),
        log.display()
    );
    let up = UpOptions {
        data_dir: data_dir.clone(),
        database: options.database.clone().map(|url| database_url(&url)),
        kafka: None,
        port_base: options.port_base,
        broker_port: options.broker_port,
        demo_data: false,
    };
    let env = [
        ("APP__CONCERT__HOLD_TTL_SECS", HOLD_TTL_SECS),
        // The admission policy is not what is under test: it must not be
        // what bounds the run.
        ("APP__QUEUE__ADMISSION_RATE_PER_SEC", "1000"),
        ("APP__QUEUE__MAX_ACTIVE", "100000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut cluster =
        Cluster::start(&up, &env, Output::File(Arc::new(Mutex::new(log_file)))).await?;
    let outcome = under_fire(&options, seed, postgres, &mut cluster).await;
    cluster.stop().await;
    let report = outcome?;
    let passed = report["violations"]
        .as_array()
        .is_some_and(|violations| violations.is_empty());
    print!("{}", describe(&report));
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if passed && options.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!(
            "the cluster's data and log are kept in {}",
            data_dir.display()
        );
    }
    Ok(passed)
}

/// The run proper, on a started cluster: fans and faults, settling, the
/// checks, the replay. Returns the report.
async fn under_fire(
    options: &ChaosOptions,
    seed: u64,
    postgres: Option<(String, String)>,
    cluster: &mut Cluster,
) -> anyhow::Result<Value> {
    let duration = options.duration.to_std().unwrap_or(Duration::ZERO);
    let fans = (options.rate * duration.as_secs_f64()).ceil().max(1.0) as u64;
    let load = LoadOptions {
        cluster: cluster.inspect.clone(),
        fans,
        duration: Some(options.duration),
        rate: Some(options.rate),
        concurrency: None,
        holds_only: false,
        abandon: 0.1,
        short: 0.1,
        hot_share: 0.5,
        hot_seats: 5,
        spare_seats: 0.25,
        step_timeout: TimeDelta::seconds(120),
        json: None,
        no_audit: true,
        database: options.database.clone(),
        floor_samples: 0,
        settle_timeout: options.settle_timeout,
    };
    let plan = load::prepare(&load, true).await?;
    let recorder = Arc::new(Recorder::new(fans)?);

    // Ctrl-C: no more faults and no more fans; the checks and the report
    // still come. A second Ctrl-C quits at once.
    let stop = CancellationToken::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (stop, interrupted) = (stop.clone(), interrupted.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                eprintln!("\nchaos: stopping the faults and the fans; the checks and the report follow (Ctrl-C again to quit now)");
                stop.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let watching = CancellationToken::new();
    let availability = Availability::watch(
        cluster.inspect.urls.clone(),
        Some(cluster.inspect.kafka.brokers.clone()),
        watching.clone(),
    )?;
    let mut fans_task = {
        let (load, plan, recorder, stop) =
            (load.clone(), plan.clone(), recorder.clone(), stop.clone());
        tokio::spawn(async move { load::drive(&load, &plan, &recorder, &stop).await })
    };

    let mut schedule = Schedule::new(
        seed,
        options
            .fault_every
            .to_std()
            .unwrap_or(Duration::from_secs(8)),
        postgres.is_some(),
    );
    let mut injector = Injector::new(postgres);
    let started = Instant::now();
    let mut next_fault = started + schedule.next_wait();
    let mut fans_done = false;
    while !fans_done {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => {}
            _ = &mut fans_task => fans_done = true,
        }
        cluster.supervise_once();
        injector.wake(stop.is_cancelled());
        let firing = !stop.is_cancelled() && started.elapsed() < duration;
        if firing && Instant::now() >= next_fault {
            let fault = schedule.next_fault(&injector.paused());
            let at = started.elapsed().as_secs_f64();
            // A connection fault talks to PostgreSQL synchronously: off
            // the executor's own threads.
            let injected = tokio::task::block_in_place(|| injector.inject(cluster, fault));
            match injected {
                Ok(true) => eprintln!(
                    "chaos: {at:>7.1}s {} {}",
                    fault.kind(),
                    fault.target().name()
                ),
                Ok(false) => eprintln!(
                    "chaos: {at:>7.1}s {} {} skipped: not running (restarting)",
                    fault.kind(),
                    fault.target().name()
                ),
                Err(error) => eprintln!("chaos: {at:>7.1}s {fault:?} failed: {error:#}"),
            }
            next_fault = Instant::now() + schedule.next_wait();
        }
    }
    injector.wake(true);
    recorder.finish();
    let elapsed = started.elapsed();
    eprintln!(
        "chaos: fans done after {:.0}s; waiting for every process to be back",
        elapsed.as_secs_f64()
    );
    let back = tokio::time::Instant::now() + Duration::from_secs(180);
    while let Err(error) = ready_everywhere(&cluster.inspect).await {
        if tokio::time::Instant::now() > back {
            return Err(error.context("the cluster did not come back after the faults"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        cluster.supervise_once();
    }
    watching.cancel();

    eprintln!("chaos: settling and checking ...");
    let mut violations = Vec::new();
    let inspect = cluster.inspect.clone();
    let settle = options.settle_timeout;
    let told = recorder.fans_told();
    let (checked, snapshot, letters) = supervised(cluster, async move {
        let audit_options = AuditOptions {
            cluster: inspect.clone(),
            settle_timeout: settle,
            json: false,
        };
        let report = tokio::task::spawn_blocking(move || audit::audit(&audit_options)).await??;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut found = report.violations;
        found.extend(verdict::outboxes(&http, &inspect).await);
        let dead = {
            let inspect = inspect.clone();
            tokio::task::spawn_blocking(move || verdict::dead_letters(&inspect)).await??
        };
        found.extend(dead.0);
        let admin_key = inspect.admin_key()?;
        let snapshot = Snapshot::fetch(&http, &inspect.urls, &admin_key).await?;
        found.extend(verdict::fans(&told, &snapshot));
        Ok::<_, anyhow::Error>((found, snapshot, dead.1))
    })
    .await?;
    violations.extend(checked);

    let replay = if options.no_replay || stop.is_cancelled() {
        Value::Null
    } else {
        let (replay, found) = replay(options, cluster).await?;
        violations.extend(found);
        replay
    };

    let summary = recorder.summary(elapsed);
    let by_status = |statuses: Vec<&str>| {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for status in statuses {
            *counts.entry(status.to_string()).or_default() += 1;
        }
        counts
    };
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_target = Vec::new();
    for ((kind, target), count) in &injector.injected {
        *by_kind.entry(kind).or_default() += count;
        by_target.push(json!({ "kind": kind, "target": target, "count": count }));
    }
    Ok(json!({
        "seed": seed,
        "database": if options.database.is_some() { "postgresql" } else { "sqlite" },
        "duration_secs": elapsed.as_secs_f64(),
        "interrupted": stop.is_cancelled(),
        "faults": {
            "total": by_kind.values().sum::<u64>(),
            "by_kind": by_kind,
            "by_target": by_target,
        },
        "fans": summary["outcomes"],
        "fans_checked": recorder.fans_told().len(),
        "steps": summary["steps"],
        "sagas": {
            "payments": by_status(snapshot.payments.iter().map(|p| p.status.as_str()).collect()),
            "reservations": by_status(snapshot.reservations.iter().map(|r| r.status.as_str()).collect()),
        },
        "unavailable": availability.outages(),
        "dead_letters": letters,
        "replay": replay,
        "violations": violations,
    }))
}

/// Stops the services, rewinds every consumer group to the start of its
/// topics, starts them again and checks that the audit passes and that
/// every service's state is what it was.
async fn replay(
    options: &ChaosOptions,
    cluster: &mut Cluster,
) -> anyhow::Result<(Value, Vec<Violation>)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let data_platform = format!("http://127.0.0.1:{}", options.port_base + 10);
    let before = verdict::state(&http, &cluster.inspect, &data_platform).await?;
    eprintln!("chaos: replay: stopping the services and rewinding every consumer group");
    cluster.stop_services().await;
    let inspect = cluster.inspect.clone();
    let replayed =
        tokio::task::spawn_blocking(move || verdict::rewind_consumer_groups(&inspect)).await??;
    eprintln!("chaos: replay: {replayed} events to read again; starting the services");
    cluster.start_services().await?;
    let inspect = cluster.inspect.clone();
    let settle = options.settle_timeout;
    let report = supervised(cluster, async move {
        let audit_options = AuditOptions {
            cluster: inspect,
            settle_timeout: settle,
            json: false,
        };
        tokio::task::spawn_blocking(move || audit::audit(&audit_options)).await?
    })
    .await?;
    let after = verdict::state(&http, &cluster.inspect, &data_platform).await?;
    let mut found = report.violations;
    found.extend(verdict::differences(&before, &after));
    let replay = json!({
        "events_replayed": replayed,
        "digest_before": verdict::digest(&before),
        "digest_after": verdict::digest(&after),
        "unchanged": before == after,
        "items": before.iter().map(|(name, items)| (name.to_string(), items.len())).collect::<BTreeMap<_, _>>(),
    });
    Ok((replay, found))
}

/// Runs `work` while the cluster stays supervised (a process that dies
/// meanwhile is started again, as always).
async fn supervised<T>(
    cluster: &mut Cluster,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = tokio::time::sleep(Duration::from_millis(250)) => cluster.supervise_once(),
        }
    }
}

/// Ok once every service answers ready.
async fn ready_everywhere(cluster: &crate::inspect::ClusterOptions) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for service in shared_events::Service::ALL {
        let body = crate::inspect::status::readiness(&http, cluster.urls.url(service)).await?;
        if body["status"] != "ready" {
            anyhow::bail!("{service} is not ready: {body}");
        }
    }
    Ok(())
}

/// The server part of a `--database` URL and the prefix of the services'
/// database names (NAME of postgres://host/NAME, `chaos` without one).
fn database_parts(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let name = path.split('?').next().unwrap_or_default();
    let prefix = if name.is_empty() { "chaos" } else { name };
    (format!("{scheme}://{authority}"), prefix.to_string())
}

/// The URL `up` gets: the server with the prefix as its database name.
fn database_url(url: &str) -> String {
    let (server, prefix) = database_parts(url);
    format!("{server}/{prefix}")
}

/// Drops the services' databases of a previous run: chaos starts from
/// nothing, so that every check is about this run alone.
fn fresh_databases(url: &str) -> anyhow::Result<(String, String)> {
    let (server, prefix) = database_parts(url);
    let admin_url = format!("{server}/postgres");
    for service in shared_events::Service::ALL {
        let name = format!("{prefix}_{}", service.as_str().replace('-', "_"));
        ticket_runtime::db::postgres::drop_database(&admin_url, &name)
            .with_context(|| format!("dropping {name}"))?;
    }
    Ok((server, prefix))
}

fn humane(span: TimeDelta) -> String {
    let seconds = span.num_seconds();
    if seconds % 60 == 0 && seconds > 0 {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

/// The report for people.
fn describe(report: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "chaos run: seed {}, {}, {:.0} s{}",
            report["seed"],
            report["database"].as_str().unwrap_or_default(),
            report["duration_secs"].as_f64().unwrap_or_default(),
            if report["interrupted"] == true {
                " (interrupted)"
            } else {
                ""
            }
        ),
    );
    line(
        &mut out,
        format!(
            "faults: {} in all: {}",
            report["faults"]["total"],
            pairs(&report["faults"]["by_kind"])
        ),
    );
    for fault in report["faults"]["by_target"]
        .as_array()
        .into_iter()
        .flatten()
    {
        line(
            &mut out,
            format!(
                "  {:<22} {:<15} {}",
                fault["kind"].as_str().unwrap_or_default(),
                fault["target"].as_str().unwrap_or_default(),
                fault["count"]
            ),
        );
    }
    line(&mut out, format!("fans: {}", pairs(&report["fans"])));
    line(
        &mut out,
        format!("payments: {}", pairs(&report["sagas"]["payments"])),
    );
    line(
        &mut out,
        format!("reservations: {}", pairs(&report["sagas"]["reservations"])),
    );
    line(
        &mut out,
        "unavailable (outages, total, longest):".to_string(),
    );
    if let Some(outages) = report["unavailable"].as_object() {
        for (name, o) in outages {
            line(
                &mut out,
                format!(
                    "  {:<15} {:>3} {:>7.1} s {:>6.1} s",
                    name,
                    o["outages"],
                    o["total_secs"].as_f64().unwrap_or_default(),
                    o["longest_secs"].as_f64().unwrap_or_default()
                ),
            );
        }
    }
    line(
        &mut out,
        format!("dead letters: {}", report["dead_letters"]),
    );
    if report["replay"].is_object() {
        line(
            &mut out,
            format!(
                "replay: {} events read again; state {} -> {} ({})",
                report["replay"]["events_replayed"],
                report["replay"]["digest_before"]
                    .as_str()
                    .unwrap_or_default(),
                report["replay"]["digest_after"]
                    .as_str()
                    .unwrap_or_default(),
                if report["replay"]["unchanged"] == true {
                    "unchanged"
                } else {
                    "CHANGED"
                }
            ),
        );
    }
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    for v in &violations {
        line(
            &mut out,
            format!(
                "VIOLATION {} {}: {}",
                v["invariant"].as_str().unwrap_or_default(),
                v["subject"].as_str().unwrap_or_default(),
                v["detail"].as_str().unwrap_or_default()
            ),
        );
    }
    line(
        &mut out,
        if violations.is_empty() {
            "no violations".to_string()
        } else {
            format!("{} violations", violations.len())
        },
    );
    out
}

fn pairs(value: &Value) -> String {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
