//! `ticketctl load`: a ticket opening against a running cluster, as fans
//! make it, through the services' public HTTP APIs only.
//!
//! A catalog big enough for the run is created through the admin API.
//! Each fan then signs in (a member token of the data folder's development
//! issuer), joins the concert's line, polls until admitted, reads a seat
//! map, races for a seat (a share of fans all want the same few "hot"
//! seats), charges their wallet, and pays. Some fans start short and top
//! up after the payment fails; some hold a seat and walk away, so expiry
//! and its compensation run too. Fans arrive at a fixed rate (open loop) or
//! a fixed number run at once. At the end: a table per step from HDR
//! histograms, the saga's end-to-end latency and outcomes, optionally JSON,
//! and `ticketctl audit` once the cluster has settled.

pub(crate) mod fan;
mod floor;
pub(crate) mod report;

use anyhow::Context as _;
use chrono::TimeDelta;
use clap::Args;
use serde_json::{json, Value};
use shared_events::Service;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticket_runtime::CancellationToken;
use tokio::task::JoinSet;

use crate::inspect::{parse_span, ClusterOptions, ServiceUrls};
use report::{Outcome, Recorder};

/// A ticket opening against a running cluster: N fans join the line, are
/// admitted, race for seats, top up and pay, some walk away from their
/// holds; then a table per step (throughput, p50/p95/p99/max, errors by
/// code), the saga's end-to-end latency and outcomes, and the audit.
/// Exits 1 when the audit finds a violation.
#[derive(Args, Debug, Clone)]
pub struct LoadOptions {
    /// Its admin key creates the catalog, its development issuer signs the
    /// fans' member tokens.
    #[command(flatten)]
    pub cluster: ClusterOptions,
    /// How many fans come (each wants one seat).
    #[arg(long, default_value_t = 200)]
    pub fans: u64,
    /// Stop letting fans in after this long, even if fewer came.
    #[arg(long, value_parser = parse_span)]
    pub duration: Option<TimeDelta>,
    /// Open loop: fans arriving per second, however the cluster keeps up.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many fans at a time (the default, with 50).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Holds alone: every fan is let into the line and admitted first (not
    /// timed), then each asks for a seat of their own (no two fans want the
    /// same seat) and lets it go once it is decided. With `--rate`, fans
    /// come at that rate whatever the cluster does, and a hold is timed from
    /// the moment its fan was due: a slow answer cannot slow the arrivals
    /// nor hide in them. The queue must let every fan in at once
    /// (`max_active` at least `--fans`).
    #[arg(long)]
    pub holds_only: bool,
    /// The share of fans who hold a seat and never pay.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub abandon: f64,
    /// The share of fans whose wallet is short: their first payment fails,
    /// they top up and pay again.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub short: f64,
    /// The share of fans who want one of the hot seats.
    #[arg(long, default_value_t = 0.5, value_parser = share)]
    pub hot_share: f64,
    /// The hot seats: seat numbers 1 to this, of the first schedule.
    #[arg(long, default_value_t = 5)]
    pub hot_seats: u32,
    /// Seats made beyond one per fan, as a share of the fans.
    #[arg(long, default_value_t = 0.25, value_parser = share)]
    pub spare_seats: f64,
    /// Give up on a fan's step (admission, a decision) after this long.
    #[arg(long, default_value = "120s", value_parser = parse_span)]
    pub step_timeout: TimeDelta,
    /// The summary as JSON too, to this file (`-` for standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not run `ticketctl audit` at the end.
    #[arg(long)]
    pub no_audit: bool,
    /// The PostgreSQL server the services' databases are on, as given to
    /// `up --database`: the floor's commits are measured there (in
    /// `ticketing_floor`). Without it, in an SQLite file in the data folder.
    #[arg(long)]
    pub database: Option<String>,
    /// Samples of each part of the floor (broker hop, commit), measured
    /// before the fans come; 0 skips it.
    #[arg(long, default_value_t = 100)]
    pub floor_samples: usize,
    /// How long the audit waits for the cluster to settle.
    #[arg(long, default_value = "120s", value_parser = parse_span)]
    pub settle_timeout: TimeDelta,
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}

/// The run's shape, shared by every fan.
pub struct Plan {
    pub urls: ServiceUrls,
    pub http: reqwest::Client,
    pub issuer: ticket_runtime::dev::issuer::DevIssuer,
    pub concerts: Vec<fan::ConcertSeats>,
    pub abandon: f64,
    pub short: f64,
    pub hot_share: f64,
    pub hot_seats: u32,
    pub step_timeout: Duration,
    /// Fans wait out transient failures (a restarting service) where a
    /// call is safe to repeat, and watch an abandoned hold expire: how
    /// `chaos` runs them, so that most sagas reach an answer.
    pub patient: bool,
}

/// Returns whether the run passed its audit (the process exits 1 otherwise).
pub async fn run(options: LoadOptions) -> anyhow::Result<bool> {
    let plan = prepare(&options, false).await?;
    let floor = if options.floor_samples > 0 {
        let floor = floor::Floor::measure(
            &options.cluster,
            options.database.as_deref(),
            options.floor_samples,
        )
        .await?;
        eprintln!("{}", floor::describe(&floor.summary()));
        Some(floor)
    } else {
        None
    };
    measured_run(options, plan, floor).await
}

/// The run's catalog, made through the admin API and on sale, and the
/// shape every fan shares.
pub async fn prepare(options: &LoadOptions, patient: bool) -> anyhow::Result<Arc<Plan>> {
    let admin_key = options.cluster.admin_key()?;
    let issuer = crate::secrets::dev_issuer(&options.cluster.data_dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build()?;
    let seats = seats_needed(options.fans, options.spare_seats);
    let concerts = fan::create_catalog(&http, &options.cluster.urls, &admin_key, seats).await?;
    eprintln!(
        "catalog: {} concert(s), {} schedules, {} seats for {} fans",
        concerts.len(),
        concerts.iter().map(|c| c.schedules.len()).sum::<usize>(),
        seats,
        options.fans
    );
    let plan = Arc::new(Plan {
        urls: options.cluster.urls.clone(),
        http,
        issuer,
        concerts,
        abandon: options.abandon,
        short: options.short,
        hot_share: options.hot_share,
        hot_seats: options.hot_seats,
        step_timeout: options.step_timeout.to_std().unwrap_or(Duration::MAX),
        patient,
    });
    let on_sale = fan::on_sale(&plan).await?;
    eprintln!(
        "on sale {} ms after the catalog was created",
        on_sale.as_millis()
    );
    Ok(plan)
}

async fn measured_run(
    options: LoadOptions,
    plan: Arc<Plan>,
    floor: Option<floor::Floor>,
) -> anyhow::Result<bool> {
    let recorder = Arc::new(Recorder::new(options.fans)?);
    let stop = CancellationToken::new();
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (stop, interrupted) = (stop.clone(), interrupted.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                eprintln!("\nstopping: fans in flight give up; the summary follows (Ctrl-C again to quit now)");
                stop.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let mut started = Instant::now();
    if options.holds_only {
        // The run is the holds; the admissions before them are set-up.
        started = drive_holds(&options, &plan, &recorder, &stop).await?;
    } else {
        drive(&options, &plan, &recorder, &stop).await;
    }
    let elapsed = started.elapsed();
    recorder.finish();

    let mut summary = recorder.summary(elapsed);
    summary["interrupted"] = json!(interrupted.load(std::sync::atomic::Ordering::SeqCst));
    summary["options"] = json!({
        "fans": options.fans,
        "rate": options.rate,
        "concurrency": options.rate.is_none().then_some(concurrency(&options)),
        "abandon": options.abandon,
        "short": options.short,
        "hot_share": options.hot_share,
        "hot_seats": options.hot_seats,
        "holds_only": options.holds_only,
    });
    if let Some(floor) = &floor {
        summary["floor"] = floor.summary();
    }
    print!("{}", report::table(&summary));

    let mut passed = true;
    if !options.no_audit {
        eprintln!("auditing once the cluster settles ...");
        let audit = crate::inspect::audit::AuditOptions {
            cluster: options.cluster.clone(),
            settle_timeout: options.settle_timeout,
            json: false,
        };
        let report = tokio::task::spawn_blocking(move || crate::inspect::audit::audit(&audit))
            .await
            .context("the audit stopped")??;
        passed = report.violations.is_empty();
        for v in &report.violations {
            println!("VIOLATION {} {}: {}", v.invariant, v.subject, v.detail);
        }
        println!(
            "audit: {}",
            if passed {
                "no violations".to_string()
            } else {
                format!("{} violations", report.violations.len())
            }
        );
        summary["audit"] = serde_json::to_value(&report)?;
    }
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&summary)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(passed)
}

fn concurrency(options: &LoadOptions) -> usize {
    options.concurrency.unwrap_or(50).max(1)
}

/// One seat a fan and the spare share, in whole schedules of 50.
fn seats_needed(fans: u64, spare: f64) -> u64 {
    let wanted = (fans as f64 * (1.0 + spare)).ceil() as u64;
    wanted.max(1).div_ceil(fan::SEATS_PER_SCHEDULE) * fan::SEATS_PER_SCHEDULE
}

/// Lets the fans in, at the rate or the concurrency asked, until all came,
/// the duration passed or the run was stopped; then waits for those in
/// flight (who give up when stopped).
pub async fn drive(
    options: &LoadOptions,
    plan: &Arc<Plan>,
    recorder: &Arc<Recorder>,
    stop: &CancellationToken,
) {
    let deadline = options
        .duration
        .and_then(|d| d.to_std().ok())
        .map(|d| tokio::time::Instant::now() + d);
    let over = |n: u64| {
        n >= options.fans
            || stop.is_cancelled()
            || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
    };
    let mut fans = JoinSet::new();
    let mut started = 0u64;
    let start_one = |fans: &mut JoinSet<()>, n: u64| {
        let (plan, recorder, stop) = (plan.clone(), recorder.clone(), stop.clone());
        fans.spawn(async move {
            let outcome = tokio::select! {
                outcome = fan::journey(&plan, &recorder, n) => outcome,
                _ = stop.cancelled() => Outcome::Stopped,
            };
            recorder.outcome(outcome);
        });
    };
    match options.rate {
        Some(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !over(started) {
                tokio::select! {
                    _ = ticks.tick() => {
                        start_one(&mut fans, started);
                        started += 1;
                    }
                    Some(_) = fans.join_next() => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        None => {
            let at_once = concurrency(options);
            while !over(started) {
                while fans.len() < at_once && !over(started) {
                    start_one(&mut fans, started);
                    started += 1;
                }
                tokio::select! {
                    _ = fans.join_next() => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
    while fans.join_next().await.is_some() {}
}

/// The holds-only run: admits every fan (64 at a time, reported apart),
/// then lets them ask for their seats at the rate or the concurrency
/// asked. Returns when the holds began.
async fn drive_holds(
    options: &LoadOptions,
    plan: &Arc<Plan>,
    recorder: &Arc<Recorder>,
    stop: &CancellationToken,
) -> anyhow::Result<Instant> {
    const ADMITTING_AT_ONCE: usize = 64;
    let admitting = Instant::now();
    let setup = Arc::new(Recorder::new(options.fans)?);
    let mut admissions = JoinSet::new();
    let mut admitted = Vec::new();
    let mut next = 0u64;
    while next < options.fans || !admissions.is_empty() {
        while admissions.len() < ADMITTING_AT_ONCE && next < options.fans {
            let (plan, setup, n) = (plan.clone(), setup.clone(), next);
            admissions.spawn(async move { fan::admitted_fan(&plan, &setup, n).await });
            next += 1;
        }
        tokio::select! {
            Some(joined) = admissions.join_next() => {
                if let Ok(Some(fan)) = joined {
                    admitted.push(fan);
                }
            }
            _ = stop.cancelled() => return Ok(Instant::now()),
        }
    }
    setup.finish();
    eprint!(
        "admitted first ({:.1} s), not part of the run:\n{}",
        admitting.elapsed().as_secs_f64(),
        report::table(&setup.summary(admitting.elapsed()))
    );
    anyhow::ensure!(
        !admitted.is_empty(),
        "no fan was admitted: is the queue's max_active at least --fans?"
    );
    let holds_began = Instant::now();
    let mut holds = JoinSet::new();
    let start_one = |holds: &mut JoinSet<()>, fan: fan::AdmittedFan, due: Instant| {
        let (plan, recorder, stop) = (plan.clone(), recorder.clone(), stop.clone());
        holds.spawn(async move {
            let outcome = tokio::select! {
                outcome = fan::hold_and_release(&plan, &recorder, fan, due) => outcome,
                _ = stop.cancelled() => Outcome::Stopped,
            };
            recorder.outcome(outcome);
        });
    };
    let mut waiting = admitted.into_iter();
    match options.rate {
        Some(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let first_due = holds_began;
            let mut due_count = 0u32;
            'arrivals: loop {
                let due = first_due + period * due_count;
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {
                        let Some(fan) = waiting.next() else { break 'arrivals };
                        start_one(&mut holds, fan, due);
                        due_count += 1;
                    }
                    Some(_) = holds.join_next() => {}
                    _ = stop.cancelled() => break 'arrivals,
                }
            }
        }
        None => {
            let at_once = concurrency(options);
            loop {
                while holds.len() < at_once && !stop.is_cancelled() {
                    let Some(fan) = waiting.next() else { break };
                    start_one(&mut holds, fan, Instant::now());
                }
                if holds.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = holds.join_next() => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
    while holds.join_next().await.is_some() {}
    Ok(holds_began)
}

/// The URL of `path` at `service`.
pub fn url(urls: &ServiceUrls, service: Service, path: &str) -> String {
    format!("{}{path}", urls.url(service).trim_end_matches('/'))
}

/// The `code` of an error body, else the status.
pub async fn error_code(response: reqwest::Response) -> String {
    let status = response.status().as_u16();
    match response.json::<Value>().await {
        Ok(body) => body["code"]
            .as_str()
            .map_or_else(|| format!("http_{status}"), str::to_string),
        Err(_) => format!("http_{status}"),
    }
}
