//! What a load run measured: a latency histogram and error counts per
//! step, the fans' outcomes, live progress while it runs, and the summary
//! (a table, and the same as JSON).

use hdrhistogram::Histogram;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The steps of a fan's way, each timed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// POST /v1/queue/tokens.
    Join,
    /// From joining to holding a pass.
    Admit,
    /// GET /v1/schedules/{id}/seats.
    SeatMap,
    /// POST /v1/reservations until HELD or REJECTED.
    Hold,
    /// POST /v1/members/{id}/charges.
    Charge,
    /// POST /v1/payments until COMPLETED or FAILED.
    Pay,
    /// The saga end to end: from asking for the hold to the payment COMPLETED.
    Saga,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::Join,
        Step::Admit,
        Step::SeatMap,
        Step::Hold,
        Step::Charge,
        Step::Pay,
        Step::Saga,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Join => "join",
            Step::Admit => "admit",
            Step::SeatMap => "seat_map",
            Step::Hold => "hold",
            Step::Charge => "charge",
            Step::Pay => "pay",
            Step::Saga => "saga",
        }
    }
}

/// How a fan's way ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Paid: the seat is theirs.
    Completed,
    /// Held a seat and walked away; the hold expires.
    Abandoned,
    /// Held a seat and gave it back (a holds-only run).
    Held,
    /// Their hold was refused (a holds-only run: the seat is theirs alone,
    /// so the reason is the cluster's, say `HOLD_TIMED_OUT`).
    HoldRefused,
    /// Every seat they tried was taken.
    NoSeat,
    /// Their payment failed for a reason a top-up does not cure.
    PaymentFailed,
    /// A call failed (counted under its step's errors).
    Error,
    /// The run was stopped while they were on their way.
    Stopped,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Abandoned => "abandoned",
            Outcome::Held => "held",
            Outcome::HoldRefused => "hold_refused",
            Outcome::NoSeat => "no_seat",
            Outcome::PaymentFailed => "payment_failed",
            Outcome::Error => "error",
            Outcome::Stopped => "stopped",
        }
    }
}

/// The last thing a fan was told about their saga: what `chaos` holds
/// against the cluster's end state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    /// The payment answered COMPLETED: the seat is theirs, paid once.
    Completed {
        reservation_id: String,
        payment_id: String,
    },
    /// The payment answered FAILED: no seat, no net debit.
    PaymentFailed { reservation_id: String },
    /// They walked away from a hold and saw it EXPIRED (or gave up
    /// watching it while still HELD): no seat, no debit.
    Abandoned {
        reservation_id: String,
        expired: bool,
    },
}

/// One fan's last word from the cluster.
#[derive(Debug, Clone)]
pub struct FanRecord {
    pub user_id: uuid::Uuid,
    pub told: Told,
}

struct Counts {
    latency: BTreeMap<Step, Histogram<u64>>,
    errors: BTreeMap<Step, BTreeMap<String, u64>>,
    refused: BTreeMap<Step, BTreeMap<String, u64>>,
    outcomes: BTreeMap<Outcome, u64>,
    told: Vec<FanRecord>,
}

/// Shared by every fan of a run. One lock: the cost of recording is a
/// histogram increment, small beside the HTTP calls being timed.
pub struct Recorder {
    counts: Mutex<Counts>,
    _bars: MultiProgress,
    fans: ProgressBar,
    outcomes: ProgressBar,
}

impl Recorder {
    pub fn new(fans: u64) -> anyhow::Result<Recorder> {
        // Hidden when standard error is not a terminal (CI, pipes).
        let bars = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} fans done ({per_sec})",
        )?
        .progress_chars("=> ");
        let fans_bar = bars.add(ProgressBar::new(fans).with_style(style));
        let outcomes = bars.add(ProgressBar::new_spinner());
        outcomes.enable_steady_tick(Duration::from_millis(250));
        let mut latency = BTreeMap::new();
        for step in Step::ALL {
            // 1 µs to 1 h at three significant figures.
            latency.insert(step, Histogram::new_with_bounds(1, 3_600_000_000, 3)?);
        }
        Ok(Recorder {
            counts: Mutex::new(Counts {
                latency,
                errors: BTreeMap::new(),
                refused: BTreeMap::new(),
                outcomes: BTreeMap::new(),
                told: Vec::new(),
            }),
            _bars: bars,
            fans: fans_bar,
            outcomes,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut counts)
    }

    pub fn time(&self, step: Step, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.with(|c| {
            if let Some(h) = c.latency.get_mut(&step) {
                h.saturating_record(micros);
            }
        });
    }

    /// A call that failed: an error code of the API, a timeout, no connection.
    pub fn error(&self, step: Step, code: &str) {
        self.with(|c| {
            *c.errors
                .entry(step)
                .or_default()
                .entry(code.to_string())
                .or_default() += 1
        });
    }

    /// A decision against the fan (a seat taken, a payment refused): the
    /// system working, counted apart from errors.
    pub fn refused(&self, step: Step, reason: &str) {
        self.with(|c| {
            *c.refused
                .entry(step)
                .or_default()
                .entry(reason.to_string())
                .or_default() += 1
        });
    }

    pub fn outcome(&self, outcome: Outcome) {
        let line = self.with(|c| {
            *c.outcomes.entry(outcome).or_default() += 1;
            c.outcomes
                .iter()
                .map(|(o, n)| format!("{} {n}", o.name()))
                .collect::<Vec<_>>()
                .join(", ")
        });
        self.fans.inc(1);
        self.outcomes.set_message(line);
    }

    /// What a fan was told last.
    pub fn told(&self, user_id: uuid::Uuid, told: Told) {
        self.with(|c| c.told.push(FanRecord { user_id, told }));
    }

    /// Every fan's last word, in the order they ended.
    pub fn fans_told(&self) -> Vec<FanRecord> {
        self.with(|c| c.told.clone())
    }

    pub fn finish(&self) {
        self.fans.finish_and_clear();
        self.outcomes.finish_and_clear();
    }

    /// Everything measured, as JSON: per step the count, the rate over
    /// the run, p50/p95/p99/max in milliseconds, errors and refusals by
    /// code; the outcomes.
    pub fn summary(&self, elapsed: Duration) -> Value {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        self.with(|c| {
            let mut steps = Map::new();
            for step in Step::ALL {
                let Some(h) = c.latency.get(&step) else {
                    continue;
                };
                let ms = |micros: u64| micros as f64 / 1000.0;
                steps.insert(
                    step.name().to_string(),
                    json!({
                        "count": h.len(),
                        "per_sec": h.len() as f64 / seconds,
                        "p50_ms": ms(h.value_at_quantile(0.50)),
                        "p95_ms": ms(h.value_at_quantile(0.95)),
                        "p99_ms": ms(h.value_at_quantile(0.99)),
                        "max_ms": ms(h.max()),
                        "errors": c.errors.get(&step).cloned().unwrap_or_default(),
                        "refused": c.refused.get(&step).cloned().unwrap_or_default(),
                    }),
                );
            }
            let outcomes: Map<String, Value> = c
                .outcomes
                .iter()
                .map(|(o, n)| (o.name().to_string(), json!(n)))
                .collect();
            json!({
                "elapsed_secs": seconds,
                "steps": steps,
                "outcomes": outcomes,
            })
        })
    }
}

/// The summary as a table, one line a step, then the outcomes.
pub fn table(summary: &Value) -> String {
    let mut out = format!(
        "{:<9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  errors; refused\n",
        "step", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    let codes = |v: &Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    for step in Step::ALL {
        let s = &summary["steps"][step.name()];
        // A step the run never took (a holds-only run takes one).
        if s["count"].as_u64() == Some(0) && s["errors"] == json!({}) && s["refused"] == json!({}) {
            continue;
        }
        let number = |key: &str| s[key].as_f64().unwrap_or(0.0);
        let errors = codes(&s["errors"]);
        let refused = codes(&s["refused"]);
        out.push_str(&format!(
            "{:<9} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}{}{}\n",
            step.name(),
            s["count"].as_u64().unwrap_or(0),
            number("per_sec"),
            number("p50_ms"),
            number("p95_ms"),
            number("p99_ms"),
            number("max_ms"),
            if errors.is_empty() { "-" } else { &errors },
            if refused.is_empty() { "" } else { "; " },
            refused,
        ));
    }
    let floor = &summary["floor"];
    if !floor.is_null() {
        let ratio = |step: &str, key: &str| {
            let p50 = summary["steps"][step]["p50_ms"].as_f64().unwrap_or(0.0);
            let least = floor[key].as_f64().unwrap_or(0.0);
            if least > 0.0 {
                format!("{step} {:.1}x ({least:.1} ms)", p50 / least)
            } else {
                format!("{step} -")
            }
        };
        out.push_str(&format!(
            "p50 over the floor: {}, {}, {}\n",
            ratio("hold", "hold_ms"),
            ratio("pay", "pay_ms"),
            ratio("saga", "saga_ms"),
        ));
    }
    out.push_str(&format!(
        "fans: {} in {:.1} s\n",
        codes(&summary["outcomes"]),
        summary["elapsed_secs"].as_f64().unwrap_or(0.0)
    ));
    out
}
