//! `ticketctl audit`: the invariants of docs/saga.md checked across the
//! whole cluster, through each service's read-only admin listings (never
//! another service's tables), once the cluster has settled.
//!
//! Settled means every outbox empty, every consumer group caught up and no
//! saga PENDING. Each service is read in turn, so a snapshot taken while
//! events still move can show a passing disagreement: a violation counts
//! only when it is still there after the cluster settled again.

use anyhow::Context as _;
use chrono::TimeDelta;
use clap::Args;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shared_events::Service;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::status::{lag, readiness};
use super::{parse_span, ClusterOptions, Reader, ServiceUrls};

/// Checks the saga's invariants across the cluster (docs/saga.md): seats
/// against holds, payments against confirmations, wallets against their
/// ledgers, debits against refunds. Waits for the cluster to settle first
/// (outboxes empty, consumers caught up, no saga in flight), lists every
/// violation and exits 1 on any. Needs the admin key.
#[derive(Args, Debug)]
pub struct AuditOptions {
    #[command(flatten)]
    pub cluster: ClusterOptions,
    /// How long to wait for the cluster to settle; what is still in
    /// flight then is reported as a violation.
    #[arg(long, default_value = "60s", value_parser = parse_span)]
    pub settle_timeout: TimeDelta,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One broken invariant, about one reservation, payment, member or seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub settled: bool,
    pub reservations: usize,
    pub payments: usize,
    pub wallets: usize,
    pub debits: usize,
    pub taken_seats: usize,
    pub violations: Vec<Violation>,
}

/// Returns whether the cluster passed (the process exits 1 otherwise).
pub fn run(options: AuditOptions) -> anyhow::Result<bool> {
    let report = audit(&options)?;
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "audited {} reservations, {} payments, {} wallets, {} debits, {} taken seats{}",
            report.reservations,
            report.payments,
            report.wallets,
            report.debits,
            report.taken_seats,
            if report.settled {
                ""
            } else {
                " (the cluster did not settle)"
            }
        );
        for v in &report.violations {
            println!("VIOLATION {} {}: {}", v.invariant, v.subject, v.detail);
        }
        if report.violations.is_empty() {
            println!("no violations");
        }
    }
    Ok(report.violations.is_empty())
}

/// Settles, checks, and checks again after settling while anything is
/// found, up to three times.
pub fn audit(options: &AuditOptions) -> anyhow::Result<Report> {
    let admin_key = options.cluster.admin_key()?;
    let Connections {
        reader,
        http,
        calls,
    } = Connections::open(&options.cluster)?;
    let deadline = Instant::now()
        + options
            .settle_timeout
            .to_std()
            .unwrap_or(Duration::from_secs(60));
    let mut attempt = 0;
    loop {
        let mut in_flight = wait_until_quiet(&options.cluster, &reader, &http, &calls, deadline)?;
        let snapshot =
            match calls.block_on(Snapshot::fetch(&http, &options.cluster.urls, &admin_key)) {
                Ok(snapshot) => snapshot,
                // A service restarting (or the broker) is waited for within
                // the settle timeout, as any other work still in flight.
                Err(error) if Instant::now() < deadline => {
                    eprintln!("audit: waiting for the services to answer: {error:#}");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Err(error) => return Err(error),
            };
        attempt += 1;
        let pending = snapshot.pending();
        in_flight.extend(pending.iter().cloned());
        let settled = in_flight.is_empty();
        let mut violations = snapshot.violations();
        let retry = !violations.is_empty() || !pending.is_empty();
        if !retry || attempt == 3 || Instant::now() >= deadline {
            violations.extend(in_flight.into_iter().map(|what| Violation {
                invariant: "saga_settles",
                subject: what.0,
                detail: what.1,
            }));
            return Ok(Report {
                settled,
                reservations: snapshot.reservations.len(),
                payments: snapshot.payments.len(),
                wallets: snapshot.wallets.len(),
                debits: snapshot.debits.len(),
                taken_seats: snapshot.seats.len(),
                violations,
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until every outbox is empty and every consumer group caught up,
/// or `timeout` passes; returns what was still moving then.
pub fn wait_until_settled(
    cluster: &ClusterOptions,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, String)>> {
    let c = Connections::open(cluster)?;
    wait_until_quiet(
        cluster,
        &c.reader,
        &c.http,
        &c.calls,
        Instant::now() + timeout,
    )
}

/// What settling and reading the cluster take: the broker, HTTP, and a
/// runtime to make the calls on.
struct Connections {
    reader: Reader,
    http: reqwest::Client,
    calls: tokio::runtime::Runtime,
}

impl Connections {
    fn open(cluster: &ClusterOptions) -> anyhow::Result<Connections> {
        Ok(Connections {
            reader: Reader::connect(&cluster.kafka)?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            calls: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }
}

fn wait_until_quiet(
    cluster: &ClusterOptions,
    reader: &Reader,
    http: &reqwest::Client,
    calls: &tokio::runtime::Runtime,
    deadline: Instant,
) -> anyhow::Result<Vec<(String, String)>> {
    loop {
        let mut moving = Vec::new();
        for service in Service::ALL {
            // A service that does not answer (restarting, say) is still
            // moving: waited for until the deadline, never a failure at once.
            match calls.block_on(readiness(http, cluster.urls.url(service))) {
                Ok(body) => {
                    if body["status"] != "ready" {
                        moving.push((service.to_string(), "not ready".to_string()));
                    }
                    let pending = body["outbox"]["pending"].as_i64().unwrap_or(0);
                    if pending > 0 {
                        moving.push((
                            service.to_string(),
                            format!("{pending} events still in its outbox"),
                        ));
                    }
                }
                Err(error) => {
                    moving.push((service.to_string(), format!("does not answer: {error:#}")))
                }
            }
            match lag(reader, &cluster.kafka, service) {
                Ok(0) => {}
                Ok(lag) => moving.push((
                    service.to_string(),
                    format!("{lag} events not yet consumed"),
                )),
                Err(error) => moving.push((
                    service.to_string(),
                    format!("its consumer lag is unknown: {error:#}"),
                )),
            }
        }
        if moving.is_empty() || Instant::now() >= deadline {
            return Ok(moving);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    items: Vec<T>,
    next: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub user_id: String,
    pub schedule_id: String,
    pub seat_no: i64,
    pub status: String,
    pub payment_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payment {
    pub id: String,
    pub reservation_id: String,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Wallet {
    pub user_id: String,
    pub balance: i64,
    pub ledger_total: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Debit {
    pub user_id: String,
    pub payment_id: String,
    pub reservation_id: String,
    pub refunded: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TakenSeat {
    pub reservation_id: Option<String>,
    pub schedule_id: String,
    pub seat_no: i64,
    pub status: String,
    pub payment_id: Option<String>,
}

/// Every service's view, read through its admin listings.
pub struct Snapshot {
    pub reservations: Vec<Reservation>,
    pub payments: Vec<Payment>,
    pub wallets: Vec<Wallet>,
    pub debits: Vec<Debit>,
    pub seats: Vec<TakenSeat>,
}

impl Snapshot {
    pub async fn fetch(
        http: &reqwest::Client,
        urls: &ServiceUrls,
        admin_key: &str,
    ) -> anyhow::Result<Snapshot> {
        let list = Lister { http, admin_key };
        Ok(Snapshot {
            reservations: list
                .all(urls.url(Service::Reservation), "/v1/admin/reservations")
                .await?,
            payments: list
                .all(urls.url(Service::Payment), "/v1/admin/payments")
                .await?,
            wallets: list
                .all(urls.url(Service::MemberBalance), "/v1/admin/wallets")
                .await?,
            debits: list
                .all(urls.url(Service::MemberBalance), "/v1/admin/debits")
                .await?,
            seats: list
                .all(urls.url(Service::Concert), "/v1/admin/seats")
                .await?,
        })
    }

    /// Sagas not yet decided: (subject, what).
    fn pending(&self) -> Vec<(String, String)> {
        let reservations = self
            .reservations
            .iter()
            .filter(|r| r.status == "PENDING")
            .map(|r| (format!("reservation {}", r.id), "still PENDING".to_string()));
        let payments = self
            .payments
            .iter()
            .filter(|p| p.status == "PENDING")
            .map(|p| (format!("payment {}", p.id), "still PENDING".to_string()));
        reservations.chain(payments).collect()
    }

    fn violations(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        let mut violation = |invariant, subject: String, detail: String| {
            found.push(Violation {
                invariant,
                subject,
                detail,
            })
        };
        let reservations: HashMap<&str, &Reservation> = self
            .reservations
            .iter()
            .map(|r| (r.id.as_str(), r))
            .collect();
        let seat_of: HashMap<&str, &TakenSeat> = self
            .seats
            .iter()
            .filter_map(|s| Some((s.reservation_id.as_deref()?, s)))
            .collect();

        // No seat is claimed by two live reservations.
        let mut claims: HashMap<(&str, i64), Vec<&str>> = HashMap::new();
        for r in self
            .reservations
            .iter()
            .filter(|r| r.status == "HELD" || r.status == "CONFIRMED")
        {
            claims
                .entry((r.schedule_id.as_str(), r.seat_no))
                .or_default()
                .push(&r.id);
        }
        for ((schedule, seat_no), holders) in &claims {
            if holders.len() > 1 {
                violation(
                    "one_reservation_per_seat",
                    format!("seat {schedule}/{seat_no}"),
                    format!("claimed by reservations {}", holders.join(", ")),
                );
            }
        }

        // Every HELD or CONFIRMED reservation owns its seat, HELD or SOLD.
        for r in self
            .reservations
            .iter()
            .filter(|r| r.status == "HELD" || r.status == "CONFIRMED")
        {
            let expected = if r.status == "HELD" { "HELD" } else { "SOLD" };
            let seat = seat_of.get(r.id.as_str());
            let owns = seat.is_some_and(|s| {
                s.schedule_id == r.schedule_id && s.seat_no == r.seat_no && s.status == expected
            });
            if !owns {
                violation(
                    "reservation_owns_seat",
                    format!("reservation {}", r.id),
                    format!(
                        "{} for seat {}/{}, but the concert service has {}",
                        r.status,
                        r.schedule_id,
                        r.seat_no,
                        seat.map_or("no seat taken for it".to_string(), |s| format!(
                            "seat {}/{} {}",
                            s.schedule_id, s.seat_no, s.status
                        ))
                    ),
                );
            }
        }

        // Every taken seat belongs to a reservation that holds it.
        for s in &self.seats {
            let subject = format!("seat {}/{}", s.schedule_id, s.seat_no);
            let Some(holder_id) = s.reservation_id.as_deref() else {
                violation(
                    "seat_has_holder",
                    subject,
                    format!("{} for no reservation", s.status),
                );
                continue;
            };
            let holder = reservations.get(holder_id);
            let expected = if s.status == "HELD" {
                "HELD"
            } else {
                "CONFIRMED"
            };
            if holder.is_none_or(|r| r.status != expected) {
                violation(
                    "seat_has_holder",
                    subject,
                    format!(
                        "{} for reservation {holder_id}, which is {}",
                        s.status,
                        holder.map_or("unknown", |r| r.status.as_str())
                    ),
                );
            }
        }

        // Every wallet: balance = charges - debits + refunds >= 0.
        for w in &self.wallets {
            if w.balance < 0 || w.balance != w.ledger_total {
                violation(
                    "balance_is_ledger_sum",
                    format!("member {}", w.user_id),
                    format!(
                        "balance {} but the ledger adds up to {}",
                        w.balance, w.ledger_total
                    ),
                );
            }
        }

        // Every COMPLETED payment: one CONFIRMED reservation, its seat SOLD
        // for this payment, and its debit kept.
        let debit_of: HashMap<&str, &Debit> = self
            .debits
            .iter()
            .map(|d| (d.payment_id.as_str(), d))
            .collect();
        for p in self.payments.iter().filter(|p| p.status == "COMPLETED") {
            let confirmed: Vec<&Reservation> = self
                .reservations
                .iter()
                .filter(|r| r.status == "CONFIRMED" && r.payment_id.as_deref() == Some(&p.id))
                .collect();
            let subject = format!("payment {}", p.id);
            match confirmed.as_slice() {
                [r] if r.id == p.reservation_id => {
                    let sold = seat_of.get(r.id.as_str()).is_some_and(|s| {
                        s.status == "SOLD" && s.payment_id.as_deref() == Some(&p.id)
                    });
                    if !sold {
                        violation(
                            "completed_payment_sold_seat",
                            subject.clone(),
                            format!("the seat of reservation {} is not SOLD for it", r.id),
                        );
                    }
                }
                _ => violation(
                    "completed_payment_confirmed",
                    subject.clone(),
                    format!(
                        "COMPLETED for reservation {}, confirmed by {} reservations",
                        p.reservation_id,
                        confirmed.len()
                    ),
                ),
            }
            match debit_of.get(p.id.as_str()) {
                Some(d) if !d.refunded => {}
                Some(_) => violation(
                    "completed_payment_debited",
                    subject,
                    "COMPLETED but its debit was refunded".to_string(),
                ),
                None => violation(
                    "completed_payment_debited",
                    subject,
                    "COMPLETED without a debit".to_string(),
                ),
            }
        }

        // Every CONFIRMED reservation was paid by a COMPLETED payment.
        let payment_of: HashMap<&str, &Payment> =
            self.payments.iter().map(|p| (p.id.as_str(), p)).collect();
        for r in self.reservations.iter().filter(|r| r.status == "CONFIRMED") {
            let paid = r
                .payment_id
                .as_deref()
                .and_then(|id| payment_of.get(id))
                .is_some_and(|p| p.status == "COMPLETED" && p.reservation_id == r.id);
            if !paid {
                violation(
                    "confirmed_reservation_paid",
                    format!("reservation {}", r.id),
                    format!(
                        "CONFIRMED by payment {}, which is not COMPLETED for it",
                        r.payment_id.as_deref().unwrap_or("(none)")
                    ),
                );
            }
        }

        // Every debit kept (not refunded) paid for a reservation it confirmed.
        for d in self.debits.iter().filter(|d| !d.refunded) {
            let confirmed = reservations
                .get(d.reservation_id.as_str())
                .is_some_and(|r| {
                    r.status == "CONFIRMED" && r.payment_id.as_deref() == Some(&d.payment_id)
                });
            if !confirmed {
                violation(
                    "unconfirmed_debit_refunded",
                    format!("payment {}", d.payment_id),
                    format!(
                        "its debit is kept, but reservation {} was not confirmed by it",
                        d.reservation_id
                    ),
                );
            }
        }
        found
    }
}

pub struct Lister<'a> {
    pub http: &'a reqwest::Client,
    pub admin_key: &'a str,
}

impl Lister<'_> {
    /// Every page of an admin listing.
    pub async fn all<T: DeserializeOwned>(&self, base: &str, path: &str) -> anyhow::Result<Vec<T>> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut page_url = reqwest::Url::parse(&url).with_context(|| url.clone())?;
            page_url.query_pairs_mut().append_pair("limit", "1000");
            if let Some(after) = &after {
                page_url.query_pairs_mut().append_pair("after", after);
            }
            let response = self
                .http
                .get(page_url)
                .header("x-admin-key", self.admin_key)
                .send()
                .await
                .with_context(|| url.clone())?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                anyhow::bail!("{url} answered {status}: {body}");
            }
            let page: Page<T> = response
                .json()
                .await
                .with_context(|| format!("{url} did not answer a page"))?;
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }
}
