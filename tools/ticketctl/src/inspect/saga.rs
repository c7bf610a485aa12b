//! `ticketctl saga ID`: one reservation's saga rebuilt from all topics, with
//! a verdict.
//!
//! Cost: every saga event is keyed by the reservation id, so only that
//! key's partition of each of the five topics is read, and only from a
//! little before the reservation was made (ids are UUIDv7: the id carries
//! its creation time). Given a payment id, the payment topic is first read
//! (all partitions, from the payment's time) to find its reservation.

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use shared_events::{Envelope, Event, EventType, Reason, SagaOutcome, Seat, Service, Step, Topic};
use std::time::Instant;
use uuid::Uuid;

use super::events::{fields, time};
use super::{in_causal_order, parse_span, KafkaOptions, Reader, Record};

/// Rebuild one saga's timeline across all topics and judge it: completed,
/// compensated (which branch, why), in flight (waiting for which service)
/// or stuck.
#[derive(Args, Debug)]
pub struct SagaOptions {
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// A reservation id or a payment id.
    pub id: Uuid,
    /// A step still unanswered after this long makes the saga stuck. The
    /// default outlasts the services' own deadlines (30 s for a hold, 60 s
    /// for a payment, 60 s of grace before a seat is released), so a saga
    /// the system will still rescue is not called stuck.
    #[arg(long, default_value = "120s", value_parser = parse_span)]
    pub stuck_after: TimeDelta,
    /// How long before the id's own time to start reading (clocks of
    /// different hosts may disagree).
    #[arg(long, default_value = "60s", value_parser = parse_span)]
    pub slack: TimeDelta,
    /// The timeline and verdict as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Completed,
    Compensated,
    InFlight,
    Stuck,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Completed => "completed",
            State::Compensated => "compensated",
            State::InFlight => "in_flight",
            State::Stuck => "stuck",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub state: State,
    /// The compensations taken, in order, with their reasons.
    pub branches: Vec<(SagaOutcome, Option<Reason>)>,
    /// The service that owes the next step, when one does.
    pub waiting_for: Option<Service>,
    /// The events that would take that step.
    pub expected: &'static [EventType],
    pub detail: String,
}

/// One saga as read from the topics: its events in causal order and the
/// verdict on them.
pub struct Saga {
    pub reservation: Uuid,
    pub records: Vec<Record>,
    pub verdict: Verdict,
    /// How many messages were read to find it.
    pub read: usize,
}

impl Saga {
    fn seat(&self) -> Option<Seat> {
        self.records
            .iter()
            .filter_map(Record::envelope)
            .find_map(|e| e.event.seat())
    }
}

/// The saga of `id`, a reservation id or a payment id (`None` when no
/// saga event names it).
pub fn find(
    reader: &Reader,
    id: Uuid,
    slack: TimeDelta,
    stuck_after: TimeDelta,
) -> anyhow::Result<Option<Saga>> {
    let mut read = 0usize;
    let since = |id: Uuid| created_at(id).map(|at| at - slack);
    let mut records = key_events(reader, &id.to_string(), since(id), &mut read)?;
    let mut reservation = id;
    if records.is_empty() {
        if let Some(found) = reservation_of_payment(reader, id, since(id), &mut read)? {
            reservation = found;
            records = key_events(reader, &found.to_string(), since(found), &mut read)?;
        }
    }
    if records.is_empty() {
        return Ok(None);
    }
    let records = in_causal_order(records);
    let envelopes: Vec<&Envelope> = records.iter().filter_map(Record::envelope).collect();
    let verdict = judge(&envelopes, Utc::now(), stuck_after);
    Ok(Some(Saga {
        reservation,
        records,
        verdict,
        read,
    }))
}

pub fn run(options: SagaOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let reader = Reader::connect(&options.kafka)?;
    let Some(saga) = find(&reader, options.id, options.slack, options.stuck_after)? else {
        anyhow::bail!(
            "no saga events for {} (is it a reservation or payment id, and are --brokers and --topic-prefix right?)",
            options.id
        );
    };
    if options.json {
        println!("{}", to_json(&saga, started.elapsed()));
    } else {
        print_timeline(&saga);
        println!(
            "(read {} messages in {:.2} s: one partition of each topic, from the reservation's time)",
            saga.read,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// A saga in brief, as a list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub reservation_id: Uuid,
    pub verdict: &'static str,
    pub waiting_for: Option<&'static str>,
    pub detail: String,
    pub started_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
    /// Since its last event, for a saga not yet ended.
    pub age_ms: Option<i64>,
}

/// Every saga with an event on the saga topics since `since`, judged at
/// `now`; a saga whose first events are older is judged on what was read.
/// Reads every partition of the five topics from `since`: the console's
/// cost for "stuck" and "a fan's sagas".
pub fn recent(
    reader: &Reader,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    stuck_after: TimeDelta,
) -> anyhow::Result<Vec<(Summary, Vec<Record>)>> {
    let mut ranges = Vec::new();
    for topic in super::event_topics() {
        if reader.partitions(&topic)? > 0 {
            ranges.extend(reader.ranges(&topic, None, Some(since), false)?);
        }
    }
    let mut sagas: std::collections::HashMap<Uuid, Vec<Record>> = Default::default();
    reader.read(&ranges, |record| {
        if let Some(reservation) = record.envelope().and_then(|e| e.event.reservation_id()) {
            sagas.entry(reservation).or_default().push(record);
        }
        true
    })?;
    Ok(sagas
        .into_iter()
        .map(|(reservation, records)| {
            let records = in_causal_order(records);
            let envelopes: Vec<&Envelope> = records.iter().filter_map(Record::envelope).collect();
            let verdict = judge(&envelopes, now, stuck_after);
            let started_at = envelopes.iter().map(|e| e.occurred_at).min();
            let last_at = envelopes.iter().map(|e| e.occurred_at).max();
            let open = matches!(verdict.state, State::InFlight | State::Stuck);
            let summary = Summary {
                reservation_id: reservation,
                verdict: verdict.state.as_str(),
                waiting_for: verdict.waiting_for.map(Service::as_str),
                detail: verdict.detail,
                started_at,
                last_at,
                age_ms: last_at
                    .filter(|_| open)
                    .map(|at| (now - at).num_milliseconds()),
            };
            (summary, records)
        })
        .collect())
}

/// The sagas in flight whose last event is older than `older_than`,
/// stalest first.
pub fn stalled(
    reader: &Reader,
    since: DateTime<Utc>,
    older_than: TimeDelta,
    stuck_after: TimeDelta,
) -> anyhow::Result<Vec<Summary>> {
    let mut stalled: Vec<Summary> = recent(reader, since, Utc::now(), stuck_after)?
        .into_iter()
        .map(|(summary, _)| summary)
        .filter(|s| {
            s.age_ms
                .is_some_and(|age| age > older_than.num_milliseconds())
        })
        .collect();
    stalled.sort_by_key(|s| std::cmp::Reverse(s.age_ms));
    Ok(stalled)
}

/// The sagas of one fan since `since`, newest first: those whose events
/// name the fan as `user_id`.
pub fn of_fan(
    reader: &Reader,
    fan: Uuid,
    since: DateTime<Utc>,
    stuck_after: TimeDelta,
) -> anyhow::Result<Vec<Summary>> {
    let fan = Value::String(fan.to_string());
    let mut found: Vec<Summary> = recent(reader, since, Utc::now(), stuck_after)?
        .into_iter()
        .filter(|(_, records)| {
            records
                .iter()
                .filter_map(Record::envelope)
                .any(|e| payload_of(e).get("user_id") == Some(&fan))
        })
        .map(|(summary, _)| summary)
        .collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.started_at));
    Ok(found)
}

/// The steps the contract still expects on the way to completion after
/// the saga's owed step: each answer's first (successful) event, then the
/// steps that one calls for, and so on. A hold that waits for its fan
/// expects the fan's payment request first.
pub fn still_to_come(verdict: &Verdict) -> Vec<(Service, EventType)> {
    let mut next = match verdict.state {
        State::InFlight | State::Stuck => verdict
            .expected
            .first()
            .map(|&first| (first.producer(), first)),
        State::Completed | State::Compensated => None,
    };
    let mut path = Vec::new();
    while let Some((by, event)) = next {
        if path.iter().any(|(_, e)| *e == event) {
            break;
        }
        path.push((by, event));
        next = event
            .steps()
            .iter()
            .find(|step| step.after.is_none())
            .and_then(|step| step.answers.first().map(|&answer| (step.by, answer)));
    }
    path
}

/// When a UUIDv7 was made.
fn created_at(id: Uuid) -> Option<DateTime<Utc>> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(secs as i64, nanos)
}

/// Every message keyed `key` on the five topics, from `since`.
fn key_events(
    reader: &Reader,
    key: &str,
    since: Option<DateTime<Utc>>,
    read: &mut usize,
) -> anyhow::Result<Vec<Record>> {
    let mut ranges = Vec::new();
    for topic in super::event_topics() {
        let partitions = reader.partitions(&topic)?;
        if partitions == 0 {
            continue;
        }
        let partition = super::partition_for(key, partitions);
        ranges.extend(reader.ranges(&topic, Some(&[partition]), since, false)?);
    }
    let mut found = Vec::new();
    reader.read(&ranges, |record| {
        *read += 1;
        if record.key.as_deref() == Some(key) && record.envelope().is_some() {
            found.push(record);
        }
        true
    })?;
    Ok(found)
}

/// The reservation a payment was for, from the first of its events on the
/// payment topic.
fn reservation_of_payment(
    reader: &Reader,
    payment: Uuid,
    since: Option<DateTime<Utc>>,
    read: &mut usize,
) -> anyhow::Result<Option<Uuid>> {
    let ranges = reader.ranges(Topic::PaymentEvents.name(), None, since, false)?;
    let mut found = None;
    reader.read(&ranges, |record| {
        *read += 1;
        if let Some(event) = record.envelope().map(|e| &e.event) {
            if event.payment_id() == Some(payment) {
                found = event.reservation_id();
                return false;
            }
        }
        true
    })?;
    Ok(found)
}

/// What ends a hold. A hold waits for its fan, not for a service, so no
/// declared step answers `ReservationHeld`: its wait is judged by its
/// expiry instead, and one of these events ends it.
const HOLD_ENDS: &[EventType] = &[
    EventType::ReservationExpired,
    EventType::ReservationCancelled,
    EventType::ReservationConfirmed,
];

/// A step some service owes because of an earlier event.
struct Owed<'a> {
    cause: &'a Envelope,
    step: &'static Step,
}

/// Judges a saga from its events (in causal order) at `now`: the steps the
/// contract declares ([`EventType::steps`]) that its events call for and
/// that are still unanswered, then how it ended.
pub fn judge(events: &[&Envelope], now: DateTime<Utc>, stuck_after: TimeDelta) -> Verdict {
    use EventType as T;
    let saga: Vec<&Event> = events.iter().map(|e| &e.event).collect();
    let has = |types: &[EventType]| saga.iter().any(|e| types.contains(&e.event_type()));
    let unanswered = events
        .iter()
        .flat_map(|&cause| {
            cause
                .event_type()
                .steps()
                .iter()
                .map(move |step| Owed { cause, step })
        })
        .filter(|o| {
            o.step.is_owed(&o.cause.event, &saga) && !o.step.is_answered(&o.cause.event, &saga)
        })
        .min_by_key(|o| o.cause.occurred_at);
    let branches: Vec<(SagaOutcome, Option<Reason>)> = events
        .iter()
        .filter_map(|e| e.event.saga_outcome())
        .filter(|(outcome, _)| *outcome != SagaOutcome::Completed)
        .map(|(outcome, reason)| (outcome, reason.cloned()))
        .collect();
    if let Some(owed) = unanswered {
        let waited = now - owed.cause.occurred_at;
        let state = if waited > stuck_after {
            State::Stuck
        } else {
            State::InFlight
        };
        return Verdict {
            state,
            branches,
            waiting_for: Some(owed.step.by),
            expected: owed.step.answers,
            detail: format!(
                "waiting for {} to answer {} ({}) for {:.1} s",
                owed.step.by,
                owed.cause.event_type(),
                one_of(owed.step.answers),
                waited.as_seconds_f64()
            ),
        };
    }
    let held_until = events.iter().rev().find_map(|e| match &e.event {
        Event::ReservationHeld(held) => Some(held.hold_expires_at),
        _ => None,
    });
    let hold_ended = has(HOLD_ENDS);
    if let (Some(until), false) = (held_until, hold_ended) {
        if now > until + stuck_after {
            return Verdict {
                state: State::Stuck,
                branches,
                waiting_for: Some(Service::Reservation),
                expected: HOLD_ENDS,
                detail: format!(
                    "the hold expired at {} and was never ended",
                    time(Some(until))
                ),
            };
        }
        if !branches.is_empty() {
            return Verdict {
                state: State::Compensated,
                branches,
                waiting_for: None,
                expected: &[],
                detail: format!("the seat stays held until {}", time(Some(until))),
            };
        }
        return Verdict {
            state: State::InFlight,
            branches,
            waiting_for: None,
            // The fan's payment request is what takes the next step.
            expected: &[T::PaymentRequested],
            detail: format!(
                "held until {}, waiting for the fan to pay",
                time(Some(until))
            ),
        };
    }
    let completed = events
        .iter()
        .rposition(|e| e.event_type() == T::PaymentCompleted);
    let undone = completed.is_some_and(|at| {
        events[at..]
            .iter()
            .any(|e| e.event_type() == T::ReservationCancelled)
    });
    if completed.is_some() && !undone {
        return Verdict {
            state: State::Completed,
            branches,
            waiting_for: None,
            expected: &[],
            detail: "paid, confirmed and sold".into(),
        };
    }
    if let Some((outcome, reason)) = branches.last() {
        let detail = match reason {
            Some(reason) => format!("ended by {outcome} ({reason})"),
            None => format!("ended by {outcome}"),
        };
        return Verdict {
            state: State::Compensated,
            branches,
            waiting_for: None,
            expected: &[],
            detail,
        };
    }
    Verdict {
        state: State::InFlight,
        branches,
        waiting_for: None,
        expected: &[],
        detail: "no step is owed, yet the saga has not ended".into(),
    }
}

/// "A or B" of event names.
fn one_of(types: &[EventType]) -> String {
    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    names.join(" or ")
}

fn branch_text(branches: &[(SagaOutcome, Option<Reason>)]) -> String {
    branches
        .iter()
        .map(|(outcome, reason)| match reason {
            Some(reason) => format!("{outcome} ({reason})"),
            None => outcome.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

fn print_timeline(saga: &Saga) {
    let Saga {
        reservation,
        records,
        verdict,
        ..
    } = saga;
    match saga.seat() {
        Some(seat) => println!(
            "saga of reservation {reservation} (seat {} of schedule {})",
            seat.seat_no, seat.schedule_id
        ),
        None => println!("saga of reservation {reservation}"),
    }
    let mut previous: Option<DateTime<Utc>> = None;
    for record in records {
        let Some(envelope) = record.envelope() else {
            continue;
        };
        let step = previous.map_or_else(
            || "      start".to_string(),
            |p| format!("{:>+10.3}s", (envelope.occurred_at - p).as_seconds_f64()),
        );
        previous = Some(envelope.occurred_at);
        let compensation = match envelope.event.saga_outcome() {
            Some((SagaOutcome::Completed, _)) | None => "",
            Some(_) => "  ↩ compensation",
        };
        let payload = payload_of(envelope);
        println!(
            "  {step}  {}  {:<14}  {:<31}  {}{compensation}",
            time(Some(envelope.occurred_at)),
            envelope.producer.as_str(),
            envelope.event_type().as_str(),
            fields(&payload)
        );
    }
    let mut line = format!("verdict: {}", verdict.state.as_str());
    if !verdict.branches.is_empty() {
        line.push_str(&format!(" — {}", branch_text(&verdict.branches)));
    }
    println!("{line}; {}", verdict.detail);
    let to_come = still_to_come(verdict);
    if !to_come.is_empty() {
        let path: Vec<String> = to_come
            .iter()
            .map(|(by, event)| format!("{by} {event}"))
            .collect();
        println!("still to come: {}", path.join(" → "));
    }
}

fn payload_of(envelope: &Envelope) -> Value {
    serde_json::from_str::<Value>(&envelope.to_json())
        .ok()
        .and_then(|mut v| v.get_mut("payload").map(Value::take))
        .unwrap_or(Value::Null)
}

/// The saga as one JSON object (for `--json` and the console).
pub fn to_json(saga: &Saga, elapsed: std::time::Duration) -> Value {
    let Saga {
        reservation,
        records,
        verdict,
        read,
    } = saga;
    let seat = saga.seat();
    let mut previous: Option<DateTime<Utc>> = None;
    let steps: Vec<Value> = records
        .iter()
        .filter_map(|record| {
            let envelope = record.envelope()?;
            let since_previous = previous.map(|p| (envelope.occurred_at - p).num_milliseconds());
            previous = Some(envelope.occurred_at);
            Some(json!({
                "at": time(Some(envelope.occurred_at)),
                "since_previous_ms": since_previous,
                "address": record.address(),
                "producer": envelope.producer.as_str(),
                "event_type": envelope.event_type().as_str(),
                "event_id": envelope.event_id,
                "correlation_id": envelope.correlation_id,
                "causation_id": envelope.causation_id,
                "payload": payload_of(envelope),
                "compensation": envelope.event.saga_outcome()
                    .is_some_and(|(o, _)| o != SagaOutcome::Completed),
            }))
        })
        .collect();
    json!({
        "reservation_id": reservation,
        "seat": seat.map(|s| json!({ "schedule_id": s.schedule_id, "seat_no": s.seat_no })),
        "verdict": verdict.state.as_str(),
        "branches": verdict.branches.iter().map(|(outcome, reason)| json!({
            "outcome": outcome.as_str(),
            "reason": reason.as_ref().map(Reason::as_str),
        })).collect::<Vec<_>>(),
        "waiting_for": verdict.waiting_for.map(Service::as_str),
        "expected": verdict.expected.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "still_to_come": still_to_come(verdict).iter().map(|(by, event)| json!({
            "by": by.as_str(),
            "event_type": event.as_str(),
        })).collect::<Vec<_>>(),
        "detail": verdict.detail,
        "steps": steps,
        "messages_read": read,
        "elapsed_ms": elapsed.as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::{
        BalanceDebitRejected, BalanceDebited, BalanceRefunded, PaymentCompleted, PaymentFailed,
        PaymentRequested, ReservationCancelled, ReservationConfirmed, ReservationHeld,
        ReservationRequested, SeatHeld, SeatReleased, SeatSaleRejected, SeatSold,
    };

    /// A held reservation's first three steps, each caused by the one before.
    fn held(now: DateTime<Utc>) -> Vec<Envelope> {
        let id = Uuid::now_v7();
        let requested = Envelope::new(ReservationRequested {
            reservation_id: id,
            user_id: Uuid::nil(),
            concert_id: Uuid::nil(),
            schedule_id: Uuid::nil(),
            seat_no: 1,
        });
        let until = now + TimeDelta::minutes(5);
        let seat = Envelope::caused_by(
            &requested,
            SeatHeld {
                reservation_id: id,
                schedule_id: Uuid::nil(),
                seat_no: 1,
                price: 100,
                hold_expires_at: Some(until),
            },
        );
        let reservation = Envelope::caused_by(
            &seat,
            ReservationHeld {
                reservation_id: id,
                user_id: Uuid::nil(),
                concert_id: Uuid::nil(),
                schedule_id: Uuid::nil(),
                seat_no: 1,
                price: 100,
                hold_expires_at: until,
            },
        );
        vec![requested, seat, reservation]
    }

    fn requested(saga: &[Envelope]) -> Envelope {
        let id = Uuid::parse_str(&saga[0].partition_key).unwrap();
        Envelope::new(PaymentRequested {
            payment_id: Uuid::from_u128(7),
            reservation_id: id,
            user_id: Uuid::nil(),
            amount: 100,
        })
    }

    fn judged(saga: &[Envelope], now: DateTime<Utc>) -> Verdict {
        let refs: Vec<&Envelope> = saga.iter().collect();
        judge(&refs, now, TimeDelta::seconds(120))
    }

    #[test]
    fn a_held_seat_waits_for_the_fan() {
        let now = Utc::now();
        let verdict = judged(&held(now), now);
        assert_eq!(verdict.state, State::InFlight);
        assert_eq!(verdict.waiting_for, None);
        // The contract's way to completion, from the fan's payment on.
        assert_eq!(
            still_to_come(&verdict),
            [
                (Service::Payment, EventType::PaymentRequested),
                (Service::MemberBalance, EventType::BalanceDebited),
                (Service::Reservation, EventType::ReservationConfirmed),
                (Service::Concert, EventType::SeatSold),
                (Service::Payment, EventType::PaymentCompleted),
            ]
        );
    }

    #[test]
    fn an_unanswered_step_is_in_flight_then_stuck() {
        let now = Utc::now();
        let mut saga = held(now);
        saga.push(requested(&saga));
        let verdict = judged(&saga, now);
        assert_eq!(verdict.state, State::InFlight);
        assert_eq!(verdict.waiting_for, Some(Service::MemberBalance));
        let verdict = judged(&saga, now + TimeDelta::seconds(121));
        assert_eq!(verdict.state, State::Stuck);
        assert_eq!(verdict.waiting_for, Some(Service::MemberBalance));
        assert_eq!(
            still_to_come(&verdict).first(),
            Some(&(Service::MemberBalance, EventType::BalanceDebited)),
            "the owed step comes first"
        );
    }

    #[test]
    fn a_refused_debit_is_a_compensation_and_the_hold_stays() {
        let now = Utc::now();
        let mut saga = held(now);
        let request = requested(&saga);
        let rejected = Envelope::caused_by(
            &request,
            BalanceDebitRejected {
                payment_id: Uuid::from_u128(7),
                reservation_id: Uuid::nil(),
                user_id: Uuid::nil(),
                amount: 100,
                reason: Reason::InsufficientBalance,
            },
        );
        let failed = Envelope::caused_by(
            &rejected,
            PaymentFailed {
                payment_id: Uuid::from_u128(7),
                reservation_id: Uuid::nil(),
                user_id: Uuid::nil(),
                reason: Reason::InsufficientBalance,
                refunded: false,
            },
        );
        saga.extend([request, rejected]);
        let verdict = judged(&saga, now);
        assert_eq!(verdict.waiting_for, Some(Service::Payment), "{verdict:?}");
        saga.push(failed);
        let verdict = judged(&saga, now);
        assert_eq!(verdict.state, State::Compensated);
        assert_eq!(
            verdict.branches,
            [(
                SagaOutcome::PaymentFailed,
                Some(Reason::InsufficientBalance)
            )]
        );
        assert!(verdict.detail.contains("stays held"), "{verdict:?}");
    }

    /// The events of payment 7 for the held reservation of `saga`, up to
    /// its confirmation, each caused by the one before.
    fn confirmed(saga: &mut Vec<Envelope>) {
        let id = Uuid::parse_str(&saga[0].partition_key).unwrap();
        let request = requested(saga);
        let debited = Envelope::caused_by(
            &request,
            BalanceDebited {
                payment_id: Uuid::from_u128(7),
                reservation_id: id,
                user_id: Uuid::nil(),
                entry_id: Uuid::nil(),
                amount: 100,
            },
        );
        let confirmed = Envelope::caused_by(
            &debited,
            ReservationConfirmed {
                reservation_id: id,
                payment_id: Uuid::from_u128(7),
                schedule_id: Uuid::nil(),
                seat_no: 1,
            },
        );
        saga.extend([request, debited, confirmed]);
    }

    #[test]
    fn a_paid_confirmed_and_sold_saga_is_completed() {
        let now = Utc::now();
        let mut saga = held(now);
        confirmed(&mut saga);
        let id = Uuid::parse_str(&saga[0].partition_key).unwrap();
        let verdict = judged(&saga, now);
        assert_eq!(verdict.waiting_for, Some(Service::Concert), "{verdict:?}");
        assert_eq!(
            verdict.expected,
            [EventType::SeatSold, EventType::SeatSaleRejected]
        );
        let sold = Envelope::caused_by(
            &saga[5],
            SeatSold {
                reservation_id: id,
                payment_id: Uuid::from_u128(7),
                schedule_id: Uuid::nil(),
                seat_no: 1,
            },
        );
        let completed = Envelope::caused_by(
            &sold,
            PaymentCompleted {
                payment_id: Uuid::from_u128(7),
                reservation_id: id,
                user_id: Uuid::nil(),
                concert_id: Uuid::nil(),
                amount: 100,
            },
        );
        saga.push(sold);
        assert_eq!(judged(&saga, now).waiting_for, Some(Service::Payment));
        saga.push(completed);
        let verdict = judged(&saga, now);
        assert_eq!(verdict.state, State::Completed, "{verdict:?}");
        assert!(verdict.branches.is_empty());
        assert!(still_to_come(&verdict).is_empty(), "nothing after the end");
    }

    /// A sale refused after the seat was released: the confirmation is
    /// cancelled, which owes the seat's release and the debit's refund, and
    /// the refund owes the payment's failure.
    #[test]
    fn an_unsold_confirmation_is_undone_step_by_step() {
        let now = Utc::now();
        let mut saga = held(now);
        confirmed(&mut saga);
        let id = Uuid::parse_str(&saga[0].partition_key).unwrap();
        let payment = Uuid::from_u128(7);
        let rejected = Envelope::caused_by(
            &saga[5],
            SeatSaleRejected {
                reservation_id: id,
                payment_id: payment,
                reason: Reason::NotHeld,
            },
        );
        let cancelled = Envelope::caused_by(
            &rejected,
            ReservationCancelled {
                reservation_id: id,
                schedule_id: Uuid::nil(),
                seat_no: 1,
                reason: Reason::SeatNotSold,
                payment_id: Some(payment),
            },
        );
        let released = Envelope::caused_by(
            &cancelled,
            SeatReleased {
                reservation_id: id,
                schedule_id: Uuid::nil(),
                seat_no: 1,
            },
        );
        let refunded = Envelope::caused_by(
            &cancelled,
            BalanceRefunded {
                payment_id: payment,
                reservation_id: id,
                user_id: Uuid::nil(),
                entry_id: Uuid::nil(),
                amount: 100,
                reason: Some(Reason::SeatNotSold),
            },
        );
        let failed = Envelope::caused_by(
            &refunded,
            PaymentFailed {
                payment_id: payment,
                reservation_id: id,
                user_id: Uuid::nil(),
                reason: Reason::SeatNotSold,
                refunded: true,
            },
        );
        saga.push(rejected);
        assert_eq!(judged(&saga, now).waiting_for, Some(Service::Reservation));
        saga.push(cancelled);
        let verdict = judged(&saga, now);
        assert_eq!(verdict.waiting_for, Some(Service::Concert), "{verdict:?}");
        assert_eq!(verdict.expected, [EventType::SeatReleased]);
        saga.push(released);
        let verdict = judged(&saga, now);
        assert_eq!(
            verdict.waiting_for,
            Some(Service::MemberBalance),
            "{verdict:?}"
        );
        assert_eq!(verdict.expected, [EventType::BalanceRefunded]);
        saga.push(refunded);
        assert_eq!(judged(&saga, now).waiting_for, Some(Service::Payment));
        saga.push(failed);
        let verdict = judged(&saga, now);
        assert_eq!(verdict.state, State::Compensated, "{verdict:?}");
        assert_eq!(
            verdict.detail, "ended by payment_failed (SEAT_NOT_SOLD)",
            "{verdict:?}"
        );
    }
}
