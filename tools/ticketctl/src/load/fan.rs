//! One fan's way through a ticket opening, and the catalog they buy from.

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use shared_events::Service;
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::report::{Outcome, Recorder, Step, Told};
use super::{error_code, url, Plan};
use crate::inspect::ServiceUrls;

pub const SEATS_PER_SCHEDULE: u64 = 50;
/// Every seat's price (KRW: no minor unit).
const PRICE: i64 = 100_000;
/// The most schedules the concert service takes for one concert.
const SCHEDULES_PER_CONCERT: u64 = 100;
/// How often a fan who waits in line asks for their place.
const QUEUE_POLL: Duration = Duration::from_millis(200);
/// Seats a fan tries before giving up.
const HOLD_ATTEMPTS: u64 = 5;

/// A concert made for the run, with its schedules' ids.
pub struct ConcertSeats {
    pub concert_id: String,
    pub schedules: Vec<String>,
}

/// Concerts with `seats` seats in all, through the admin API.
pub async fn create_catalog(
    http: &reqwest::Client,
    urls: &ServiceUrls,
    admin_key: &str,
    seats: u64,
) -> anyhow::Result<Vec<ConcertSeats>> {
    let run = Utc::now();
    let mut left = seats / SEATS_PER_SCHEDULE;
    let mut concerts = Vec::new();
    while left > 0 {
        let count = left.min(SCHEDULES_PER_CONCERT);
        let schedules: Vec<Value> = (0..count)
            .map(|k| {
                let starts = run + TimeDelta::days(30) + TimeDelta::hours(k as i64);
                json!({ "starts_at": starts.to_rfc3339() })
            })
            .collect();
        let body = json!({
            "title": format!("ticketctl load {} #{}", run.format("%Y-%m-%d %H:%M:%S"), concerts.len() + 1),
            "venue": "Load Test Arena",
            "schedules": schedules,
            "seat_price": PRICE,
        });
        let address = url(urls, Service::Concert, "/v1/admin/concerts");
        let response = http
            .post(&address)
            .header("x-admin-key", admin_key)
            .json(&body)
            .send()
            .await
            .with_context(|| address.clone())?;
        if response.status() != 201 {
            let status = response.status();
            anyhow::bail!(
                "creating a concert: {address} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let created: Value = response.json().await?;
        let concert_id = created["id"].as_str().unwrap_or_default().to_string();
        let schedules = created["schedules"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        concerts.push(ConcertSeats {
            concert_id,
            schedules,
        });
        left -= count;
    }
    Ok(concerts)
}

/// Waits until the queue service sells every concert: it learns them from
/// the catalog's events, a moment after they are created. One probe fan
/// joins each concert's line (and keeps that place until its pass expires).
pub async fn on_sale(plan: &Plan) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let token = plan.issuer.token(Uuid::new_v4(), TimeDelta::minutes(10));
    for concert in &plan.concerts {
        loop {
            let address = url(&plan.urls, Service::Queue, "/v1/queue/tokens");
            let response = plan
                .http
                .post(&address)
                .bearer_auth(&token)
                .json(&json!({ "concert_id": concert.concert_id }))
                .send()
                .await
                .with_context(|| address.clone())?;
            if response.status().is_success() {
                break;
            }
            let code = error_code(response).await;
            if code != "concert_not_found" || started.elapsed() > plan.step_timeout {
                anyhow::bail!(
                    "the queue does not sell concert {}: {code}",
                    concert.concert_id
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(started.elapsed())
}

/// A number in [0, 1) that is the same for the same fan and purpose, so a
/// run's mix (who abandons, who is short, who wants a hot seat) is
/// reproducible. SplitMix64: a few lines, no dependency for it.
pub(crate) fn draw(fan: u64, purpose: u64) -> f64 {
    let mut z = fan
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(purpose.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn pick<T: Copy>(from: &[T], fan: u64, purpose: u64) -> Option<T> {
    let at = (draw(fan, purpose) * from.len() as f64) as usize;
    from.get(at.min(from.len().saturating_sub(1))).copied()
}

/// What one call answered: its body, or the error code it counts as.
enum Answer {
    Ok(u16, Value, Option<String>),
    Failed(String),
}

struct Fan<'a> {
    plan: &'a Plan,
    recorder: &'a Recorder,
    n: u64,
    user: Uuid,
    token: String,
}

/// An answer that a patient fan waits out: the service is restarting, or
/// the cluster is busy recovering (`chaos` makes both on purpose).
fn transient(code: &str) -> bool {
    matches!(
        code,
        "connection" | "timeout" | "unavailable" | "http_502" | "http_503" | "http_504"
    )
}

/// Which calls a patient fan repeats.
#[derive(Clone, Copy)]
enum Repeat {
    /// Reads, and writes with an Idempotency-Key.
    IfSafe,
    /// A write the API makes idempotent by itself.
    Idempotent,
    /// A safe write, repeated on these answers too.
    Until(&'static [&'static str]),
}

/// How long a patient fan waits before asking again.
const RETRY_AFTER: Duration = Duration::from_millis(250);

impl<'a> Fan<'a> {
    /// A new fan, signed in with a member token of the run's issuer.
    fn new(plan: &'a Plan, recorder: &'a Recorder, n: u64) -> Fan<'a> {
        let user = Uuid::new_v4();
        Fan {
            plan,
            recorder,
            n,
            user,
            token: plan.issuer.token(user, TimeDelta::hours(2)),
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Answer {
        self.call_patiently(request, Repeat::IfSafe).await
    }

    /// One call; a patient fan repeats one that is safe to repeat (a read,
    /// a write with an Idempotency-Key, or one the caller knows to be
    /// idempotent) through transient failures, within the step timeout.
    async fn call_patiently(&self, request: reqwest::RequestBuilder, repeat: Repeat) -> Answer {
        let request = match request.bearer_auth(&self.token).build() {
            Ok(request) => request,
            Err(_) => return Answer::Failed("invalid_request".to_string()),
        };
        let repeatable = self.plan.patient
            && (request.method() == reqwest::Method::GET
                || request.headers().contains_key("idempotency-key")
                || matches!(repeat, Repeat::Idempotent | Repeat::Until(_)));
        let also = match repeat {
            Repeat::Until(codes) => codes,
            _ => &[],
        };
        let started = Instant::now();
        let mut request = request;
        loop {
            let again = if repeatable {
                request.try_clone()
            } else {
                None
            };
            let answer = self.call_once(request).await;
            match (answer, again) {
                (Answer::Failed(code), Some(again))
                    if (transient(&code) || also.contains(&code.as_str()))
                        && started.elapsed() < self.plan.step_timeout =>
                {
                    tokio::time::sleep(RETRY_AFTER).await;
                    request = again;
                }
                (answer, _) => return answer,
            }
        }
    }

    async fn call_once(&self, request: reqwest::Request) -> Answer {
        match self.plan.http.execute(request).await {
            Ok(response) if response.status().is_success() => {
                let status = response.status().as_u16();
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match response.json().await {
                    Ok(body) => Answer::Ok(status, body, etag),
                    Err(_) => Answer::Failed("invalid_body".to_string()),
                }
            }
            Ok(response) => Answer::Failed(error_code(response).await),
            Err(e) if e.is_timeout() => Answer::Failed("timeout".to_string()),
            Err(_) => Answer::Failed("connection".to_string()),
        }
    }

    /// Runs a timed call; a failure is counted under the step.
    async fn step(&self, step: Step, request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        // Joining again finds the fan's place in line: the queue keeps
        // one live token per fan and concert.
        let repeat = if step == Step::Join {
            Repeat::Idempotent
        } else {
            Repeat::IfSafe
        };
        let started = Instant::now();
        match self.call_patiently(request, repeat).await {
            Answer::Ok(status, body, _) => {
                self.recorder.time(step, started.elapsed());
                Some((status, body))
            }
            Answer::Failed(code) => {
                self.recorder.error(step, &code);
                None
            }
        }
    }

    fn url(&self, service: Service, path: &str) -> String {
        url(&self.plan.urls, service, path)
    }

    /// Joins and waits for a pass: the queue token's pass.
    async fn admitted(&self, concert_id: &str) -> Option<String> {
        let started = Instant::now();
        let (_, place) = self
            .step(
                Step::Join,
                self.plan
                    .http
                    .post(self.url(Service::Queue, "/v1/queue/tokens"))
                    .json(&json!({ "concert_id": concert_id })),
            )
            .await?;
        let token = place["token"].as_str()?.to_string();
        let mut place = place;
        loop {
            if let Some(pass) = place["pass"].as_str() {
                self.recorder.time(Step::Admit, started.elapsed());
                return Some(pass.to_string());
            }
            if place["status"] == "EXPIRED" {
                self.recorder.error(Step::Admit, "dropped");
                return None;
            }
            if started.elapsed() > self.plan.step_timeout {
                self.recorder.error(Step::Admit, "timeout");
                return None;
            }
            tokio::time::sleep(QUEUE_POLL).await;
            let path = format!("/v1/queue/tokens/{token}");
            place = match self
                .call(self.plan.http.get(self.url(Service::Queue, &path)))
                .await
            {
                Answer::Ok(_, body, _) => body,
                Answer::Failed(code) => {
                    self.recorder.error(Step::Admit, &code);
                    return None;
                }
            };
        }
    }

    async fn charge(&self, amount: i64, attempt: u32) -> bool {
        let path = format!("/v1/members/{}/charges", self.user);
        self.step(
            Step::Charge,
            self.plan
                .http
                .post(self.url(Service::MemberBalance, &path))
                .header(
                    "idempotency-key",
                    format!("load-charge-{}-{attempt}", self.user),
                )
                .json(&json!({ "amount": amount })),
        )
        .await
        .is_some()
    }

    /// Polls `path` (a reservation or payment) until it is not PENDING.
    async fn decided(
        &self,
        service: Service,
        path: &str,
        mut body: Value,
        mut etag: Option<String>,
        started: Instant,
        step: Step,
    ) -> Option<Value> {
        while body["status"] == "PENDING" {
            if started.elapsed() > self.plan.step_timeout {
                self.recorder.error(step, "timeout");
                return None;
            }
            let mut request = self
                .plan
                .http
                .get(self.url(service, &format!("{path}?wait_ms=5000")));
            if let Some(tag) = &etag {
                request = request.header("if-none-match", tag);
            }
            match request.bearer_auth(&self.token).send().await {
                Ok(response) if response.status() == 304 => {}
                Ok(response)
                    if self.plan.patient
                        && response.status().is_server_error()
                        && response.status() != 500 =>
                {
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Err(_) if self.plan.patient => tokio::time::sleep(RETRY_AFTER).await,
                Ok(response) if response.status().is_success() => {
                    etag = response
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    match response.json().await {
                        Ok(next) => body = next,
                        Err(_) => {
                            self.recorder.error(step, "invalid_body");
                            return None;
                        }
                    }
                }
                Ok(response) => {
                    self.recorder.error(step, &error_code(response).await);
                    return None;
                }
                Err(_) => {
                    self.recorder.error(step, "connection");
                    return None;
                }
            }
        }
        Some(body)
    }

    /// Watches an abandoned hold until it is no longer HELD; whether it
    /// ended EXPIRED (false when the step timeout came first).
    async fn expired(&self, path: &str, started: Instant) -> bool {
        loop {
            let request = self.plan.http.get(self.url(Service::Reservation, path));
            match self.call(request).await {
                Answer::Ok(_, body, _) if body["status"] != "HELD" => {
                    return body["status"] == "EXPIRED";
                }
                Answer::Ok(..) => {}
                Answer::Failed(code) => {
                    self.recorder.error(Step::Hold, &code);
                    return false;
                }
            }
            if started.elapsed() > self.plan.step_timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Asks for `seat_no` and waits for the decision: the reservation,
    /// timed from `started` (when the fan asked, or was due to).
    async fn hold(
        &self,
        pass: &str,
        schedule: &str,
        seat_no: i64,
        started: Instant,
    ) -> Option<(Value, Instant)> {
        let request = self
            .plan
            .http
            .post(self.url(Service::Reservation, "/v1/reservations"))
            .header("queue-pass", pass)
            .json(&json!({ "schedule_id": schedule, "seat_no": seat_no }));
        let (body, etag) = match self.call(request).await {
            Answer::Ok(_, body, etag) => (body, etag),
            Answer::Failed(code) => {
                self.recorder.error(Step::Hold, &code);
                return None;
            }
        };
        let path = format!(
            "/v1/reservations/{}",
            body["id"].as_str().unwrap_or_default()
        );
        let decided = self
            .decided(Service::Reservation, &path, body, etag, started, Step::Hold)
            .await?;
        self.recorder.time(Step::Hold, started.elapsed());
        Some((decided, started))
    }

    /// Pays and waits for the outcome: the payment.
    async fn pay(&self, pass: &str, reservation: &str, attempt: u32) -> Option<Value> {
        let started = Instant::now();
        let request = self
            .plan
            .http
            .post(self.url(Service::Payment, "/v1/payments"))
            .header("queue-pass", pass)
            .header(
                "idempotency-key",
                format!("load-pay-{}-{attempt}", self.user),
            )
            .json(&json!({ "reservation_id": reservation }));
        // Under fire the payment service may learn of the hold after the
        // fan did: it answers reservation_not_found until then, and the
        // same Idempotency-Key makes asking again safe.
        let repeat = Repeat::Until(&["reservation_not_found"]);
        let (body, etag) = match self.call_patiently(request, repeat).await {
            Answer::Ok(_, body, etag) => (body, etag),
            Answer::Failed(code) => {
                self.recorder.error(Step::Pay, &code);
                return None;
            }
        };
        let path = format!("/v1/payments/{}", body["id"].as_str().unwrap_or_default());
        let decided = self
            .decided(Service::Payment, &path, body, etag, started, Step::Pay)
            .await?;
        self.recorder.time(Step::Pay, started.elapsed());
        Some(decided)
    }

    /// The seats still AVAILABLE on the schedule, the hot ones first for a
    /// fan who wants one.
    async fn free_seats(&self, schedule: &str, hot: bool) -> Option<Vec<i64>> {
        let path = format!("/v1/schedules/{schedule}/seats");
        let (_, seats) = self
            .step(
                Step::SeatMap,
                self.plan.http.get(self.url(Service::Concert, &path)),
            )
            .await?;
        let free: Vec<i64> = seats
            .as_array()?
            .iter()
            .filter(|s| s["status"] == "AVAILABLE")
            .filter_map(|s| s["seat_no"].as_i64())
            .collect();
        let hot_free: Vec<i64> = free
            .iter()
            .copied()
            .filter(|n| *n <= i64::from(self.plan.hot_seats))
            .collect();
        Some(if hot && !hot_free.is_empty() {
            hot_free
        } else {
            free
        })
    }
}

/// One fan's way from the line to a paid seat (or not).
pub async fn journey(plan: &Plan, recorder: &Recorder, n: u64) -> Outcome {
    let fan = Fan::new(plan, recorder, n);
    let user = fan.user;
    let Some(concert) = plan.concerts.get(n as usize % plan.concerts.len().max(1)) else {
        return Outcome::Error;
    };
    let Some(pass) = fan.admitted(&concert.concert_id).await else {
        return Outcome::Error;
    };
    let short = draw(fan.n, 1) < plan.short;
    if !fan
        .charge(if short { PRICE / 2 } else { PRICE * 2 }, 1)
        .await
    {
        return Outcome::Error;
    }
    let hot = draw(fan.n, 2) < plan.hot_share;
    let mut held = None;
    for attempt in 0..HOLD_ATTEMPTS {
        let schedule = if hot && attempt == 0 {
            concert.schedules.first()
        } else {
            let at = (draw(fan.n, 10 + attempt) * concert.schedules.len() as f64) as usize;
            concert.schedules.get(at)
        };
        let Some(schedule) = schedule else {
            return Outcome::Error;
        };
        let Some(free) = fan.free_seats(schedule, hot && attempt == 0).await else {
            return Outcome::Error;
        };
        let Some(seat_no) = pick(&free, fan.n, 20 + attempt) else {
            continue;
        };
        let Some((reservation, started)) = fan.hold(&pass, schedule, seat_no, Instant::now()).await
        else {
            return Outcome::Error;
        };
        if reservation["status"] == "HELD" {
            held = Some((reservation, started));
            break;
        }
        let reason = reservation["reason"].as_str().unwrap_or("rejected");
        recorder.refused(Step::Hold, reason);
    }
    let Some((reservation, saga_started)) = held else {
        return Outcome::NoSeat;
    };
    let reservation_id = reservation["id"].as_str().unwrap_or_default();
    if draw(fan.n, 3) < plan.abandon {
        if plan.patient {
            // Watches the hold run out, so that what they were told is
            // the saga's end: EXPIRED.
            let path = format!("/v1/reservations/{reservation_id}");
            let expired = fan.expired(&path, saga_started).await;
            recorder.told(
                user,
                Told::Abandoned {
                    reservation_id: reservation_id.to_string(),
                    expired,
                },
            );
        }
        return Outcome::Abandoned;
    }
    let Some(mut payment) = fan.pay(&pass, reservation_id, 1).await else {
        return Outcome::Error;
    };
    if payment["status"] == "FAILED" && payment["reason"] == "INSUFFICIENT_BALANCE" {
        recorder.refused(Step::Pay, "INSUFFICIENT_BALANCE");
        if !fan.charge(PRICE * 2, 2).await {
            return Outcome::Error;
        }
        payment = match fan.pay(&pass, reservation_id, 2).await {
            Some(payment) => payment,
            None => return Outcome::Error,
        };
    }
    if payment["status"] == "COMPLETED" {
        recorder.time(Step::Saga, saga_started.elapsed());
        recorder.told(
            user,
            Told::Completed {
                reservation_id: reservation_id.to_string(),
                payment_id: payment["id"].as_str().unwrap_or_default().to_string(),
            },
        );
        Outcome::Completed
    } else {
        let reason = payment["reason"].as_str().unwrap_or("FAILED");
        recorder.refused(Step::Pay, reason);
        if payment["status"] == "FAILED" {
            recorder.told(
                user,
                Told::PaymentFailed {
                    reservation_id: reservation_id.to_string(),
                },
            );
        }
        Outcome::PaymentFailed
    }
}

/// A fan of a holds-only run, in line with a pass, not yet holding.
pub struct AdmittedFan {
    n: u64,
    user: Uuid,
    token: String,
    pass: String,
}

/// The seat fan `n` of a holds-only run wants: the `n`th of the catalog,
/// so no two fans want the same one; and its concert.
fn own_seat(plan: &Plan, n: u64) -> Option<(&ConcertSeats, &str, i64)> {
    let mut schedule = usize::try_from(n / SEATS_PER_SCHEDULE).ok()?;
    let seat_no = i64::try_from(n % SEATS_PER_SCHEDULE).ok()? + 1;
    for concert in &plan.concerts {
        match concert.schedules.get(schedule) {
            Some(id) => return Some((concert, id, seat_no)),
            None => schedule -= concert.schedules.len(),
        }
    }
    None
}

/// Lets fan `n` of a holds-only run into the line of their seat's concert
/// and waits for their pass.
pub async fn admitted_fan(plan: &Plan, recorder: &Recorder, n: u64) -> Option<AdmittedFan> {
    let fan = Fan::new(plan, recorder, n);
    let (concert, _, _) = own_seat(plan, n)?;
    let pass = fan.admitted(&concert.concert_id).await?;
    Some(AdmittedFan {
        n,
        user: fan.user,
        token: fan.token,
        pass,
    })
}

/// Holds the fan's own seat, timed from `due`, then gives it back so the
/// run leaves the catalog as it found it.
pub async fn hold_and_release(
    plan: &Plan,
    recorder: &Recorder,
    admitted: AdmittedFan,
    due: Instant,
) -> Outcome {
    let fan = Fan {
        plan,
        recorder,
        n: admitted.n,
        user: admitted.user,
        token: admitted.token,
    };
    let Some((_, schedule, seat_no)) = own_seat(plan, fan.n) else {
        return Outcome::Error;
    };
    let Some((reservation, _)) = fan.hold(&admitted.pass, schedule, seat_no, due).await else {
        return Outcome::Error;
    };
    if reservation["status"] != "HELD" {
        let reason = reservation["reason"].as_str().unwrap_or("rejected");
        recorder.refused(Step::Hold, reason);
        return Outcome::HoldRefused;
    }
    let path = format!(
        "/v1/reservations/{}",
        reservation["id"].as_str().unwrap_or_default()
    );
    match fan
        .call(fan.plan.http.delete(fan.url(Service::Reservation, &path)))
        .await
    {
        Answer::Ok(..) => Outcome::Held,
        Answer::Failed(code) => {
            recorder.error(Step::Hold, &format!("release_{code}"));
            Outcome::Error
        }
    }
}
