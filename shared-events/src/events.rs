//! Event payloads. Money is in integer minor units (`i64`), times are UTC,
//! ids are UUIDs. Saga events are keyed by the reservation id so that every
//! step of one saga lands on one partition, in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::reason::Reason;
use crate::topics::Service;

/// Declares every event: its producer, the payload field that is its Kafka
/// key, what it is about besides (`reservation`, `payment`, `seat`: the
/// accessors [`Event::reservation_id`], [`Event::payment_id`] and
/// [`Event::seat`] read those fields), the services that react to it, and
/// the saga steps it calls for: `S answers [A, B]` means service `S` owes
/// one of the events `A`, `B` in reply; `unless [C]` names the asker's own
/// events after which the answer is no longer awaited; `after E` owes the
/// step only in a saga that holds an `E` (of the same payment). The
/// contract is this one list; `docs/design.md`'s event catalog is checked
/// against it by a test, and `ticketctl saga` judges sagas by it.
macro_rules! events {
    (@after) => { None };
    (@after $after:ident) => { Some(EventType::$after) };
    // What a payload is about, one accessor per word of `about [...]`.
    (@about reservation) => {
        fn reservation_id(&self) -> Option<Uuid> {
            Some(self.reservation_id)
        }
    };
    (@about payment) => {
        const PAYMENT: bool = true;
        fn payment_id(&self) -> Option<Uuid> {
            named(self.payment_id)
        }
    };
    (@about seat) => {
        fn seat(&self) -> Option<Seat> {
            Some(Seat {
                schedule_id: self.schedule_id,
                seat_no: self.seat_no,
            })
        }
    };
    ($($(#[$doc:meta])* $name:ident by $producer:ident, keyed by $key:ident,
        about [$($about:ident),*], for [$($consumer:ident),*]
        $(, $by:ident answers [$($answer:ident),+] $(unless [$($moot:ident),+])? $(after $after:ident)?)*;)+) => {
        /// The name of an event, as it appears in the envelope's `event_type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($name,)+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$name,)+];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$name => stringify!($name),)+ }
            }

            pub fn parse(name: &str) -> Option<EventType> {
                match name { $(stringify!($name) => Some(EventType::$name),)+ _ => None }
            }

            /// The only service allowed to publish this event type.
            pub fn producer(self) -> Service {
                match self { $(EventType::$name => Service::$producer,)+ }
            }

            /// The payload field whose value is the event's Kafka key.
            pub fn key_field(self) -> &'static str {
                match self { $(EventType::$name => stringify!($key),)+ }
            }

            /// The services whose consumers act on this event type (the others
            /// reading its topic skip it without a transaction).
            pub fn consumers(self) -> &'static [Service] {
                match self { $(EventType::$name => &[$(Service::$consumer),*],)+ }
            }

            /// Whether events of this type name a payment (some of them, at
            /// least: a cancellation names one only when a debit was taken).
            pub fn names_payment(self) -> bool {
                match self { $(EventType::$name => <$name as About>::PAYMENT,)+ }
            }

            /// The saga steps an event of this type calls for.
            pub fn steps(self) -> &'static [Step] {
                match self {
                    $(EventType::$name => &[$(Step {
                        cause: EventType::$name,
                        by: Service::$by,
                        answers: &[$(EventType::$answer),+],
                        unless: &[$($(EventType::$moot),+)?],
                        after: events!(@after $($after)?),
                    }),*],)+
                }
            }
        }

        impl std::fmt::Display for EventType {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// A typed event payload.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event { $($(#[$doc])* $name($name),)+ }

        impl Event {
            pub fn event_type(&self) -> EventType {
                match self { $(Event::$name(_) => EventType::$name,)+ }
            }

            /// The Kafka key: the value of [`EventType::key_field`]. Saga
            /// events are keyed by their reservation, so one saga's steps share
            /// a partition and arrive in order; the others by the entity they
            /// are about (a schedule, a fan).
            pub fn partition_key(&self) -> Uuid {
                match self { $(Event::$name(p) => p.$key,)+ }
            }

            /// The reservation whose saga this event is a step of, if any.
            pub fn reservation_id(&self) -> Option<Uuid> {
                match self { $(Event::$name(p) => About::reservation_id(p),)+ }
            }

            /// The payment this event is a step of, if it names one.
            pub fn payment_id(&self) -> Option<Uuid> {
                match self { $(Event::$name(p) => About::payment_id(p),)+ }
            }

            /// The seat this event is about, if any.
            pub fn seat(&self) -> Option<Seat> {
                match self { $(Event::$name(p) => About::seat(p),)+ }
            }

            pub(crate) fn payload_json(&self) -> serde_json::Result<serde_json::Value> {
                match self { $(Event::$name(p) => serde_json::to_value(p),)+ }
            }

            pub(crate) fn from_payload(
                event_type: EventType,
                payload: &serde_json::value::RawValue,
            ) -> serde_json::Result<Event> {
                match event_type {
                    $(EventType::$name => serde_json::from_str(payload.get()).map(Event::$name),)+
                }
            }
        }

        $(impl From<$name> for Event {
            fn from(payload: $name) -> Event { Event::$name(payload) }
        })+

        $(impl About for $name { $(events!(@about $about);)* })+
    };
}

/// What a payload is about besides its key: implemented for every payload
/// by the `events!` declaration, from its `about [...]` list.
trait About {
    /// Whether the type has a payment id field (see [`EventType::names_payment`]).
    const PAYMENT: bool = false;
    fn reservation_id(&self) -> Option<Uuid> {
        None
    }
    fn payment_id(&self) -> Option<Uuid> {
        None
    }
    fn seat(&self) -> Option<Seat> {
        None
    }
}

/// A payment id field, whether every event of the type names one or only
/// some do (`Option<Uuid>`).
fn named(id: impl Into<Option<Uuid>>) -> Option<Uuid> {
    id.into()
}

/// One seat of one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seat {
    pub schedule_id: Uuid,
    pub seat_no: u32,
}

events! {
    /// A concert schedule was created with its seats.
    ConcertScheduled by Concert, keyed by schedule_id, about [], for [Queue, Reservation];
    /// The concert service held the requested seat for a reservation.
    SeatHeld by Concert, keyed by reservation_id, about [reservation, seat], for [Reservation],
        Reservation answers [ReservationHeld, ReservationRejected, ReservationExpired, ReservationCancelled];
    /// The seat could not be held (taken, unknown, wrong concert).
    SeatHoldRejected by Concert, keyed by reservation_id, about [reservation, seat], for [Reservation],
        Reservation answers [ReservationRejected];
    /// A held seat is AVAILABLE again (hold expired or cancelled).
    SeatReleased by Concert, keyed by reservation_id, about [reservation, seat], for [Reservation];
    /// A held seat was sold to its confirmed reservation.
    SeatSold by Concert, keyed by reservation_id, about [reservation, payment, seat], for [Payment],
        Payment answers [PaymentCompleted, PaymentFailed];
    /// The seat could not be sold (no longer held by that reservation).
    SeatSaleRejected by Concert, keyed by reservation_id, about [reservation, payment], for [Reservation, Payment],
        Reservation answers [ReservationCancelled];
    /// A fan was admitted from the waiting line and received a pass.
    QueueTokenAdmitted by Queue, keyed by user_id, about [], for [];
    /// A pass stopped being valid before its expiry (its payment completed).
    QueuePassEnded by Queue, keyed by user_id, about [], for [Reservation, Payment];
    /// A fan asked to hold a seat; the concert service decides.
    ReservationRequested by Reservation, keyed by reservation_id, about [reservation, seat], for [Concert],
        Concert answers [SeatHeld, SeatHoldRejected] unless [ReservationRejected, ReservationCancelled];
    /// The reservation holds its seat until `hold_expires_at`.
    ReservationHeld by Reservation, keyed by reservation_id, about [reservation, seat], for [Payment];
    /// The seat hold was refused.
    ReservationRejected by Reservation, keyed by reservation_id, about [reservation], for [];
    /// The hold ran out before it was confirmed.
    ReservationExpired by Reservation, keyed by reservation_id, about [reservation, seat], for [Concert, Payment],
        Concert answers [SeatReleased];
    /// The hold was cancelled by its fan or by a compensation.
    ReservationCancelled by Reservation, keyed by reservation_id, about [reservation, payment, seat],
        for [Concert, MemberBalance, Payment],
        Concert answers [SeatReleased] after SeatHeld,
        MemberBalance answers [BalanceRefunded] after BalanceDebited;
    /// The hold was confirmed by a payment.
    ReservationConfirmed by Reservation, keyed by reservation_id, about [reservation, payment, seat], for [Concert, Payment],
        Concert answers [SeatSold, SeatSaleRejected];
    /// A payment could not confirm the hold (expired, cancelled, not held).
    ReservationConfirmationRejected by Reservation, keyed by reservation_id, about [reservation, payment],
        for [MemberBalance, Payment],
        MemberBalance answers [BalanceRefunded];
    /// A member topped up a wallet.
    BalanceCharged by MemberBalance, keyed by user_id, about [], for [];
    /// A payment's amount was taken from the wallet.
    BalanceDebited by MemberBalance, keyed by reservation_id, about [reservation, payment], for [Reservation, Payment],
        Reservation answers [ReservationConfirmed, ReservationConfirmationRejected, ReservationCancelled];
    /// The debit was refused (insufficient balance).
    BalanceDebitRejected by MemberBalance, keyed by reservation_id, about [reservation, payment], for [Payment],
        Payment answers [PaymentFailed];
    /// A debit was given back because the saga could not finish.
    BalanceRefunded by MemberBalance, keyed by reservation_id, about [reservation, payment], for [Payment],
        Payment answers [PaymentFailed];
    /// A fan started paying for a held reservation.
    PaymentRequested by Payment, keyed by reservation_id, about [reservation, payment], for [MemberBalance],
        MemberBalance answers [BalanceDebited, BalanceDebitRejected];
    /// The payment saga finished: money taken, reservation confirmed, seat sold.
    PaymentCompleted by Payment, keyed by reservation_id, about [reservation, payment], for [Queue];
    /// The payment saga ended without a sale; `refunded` says whether money went back.
    PaymentFailed by Payment, keyed by reservation_id, about [reservation, payment], for [MemberBalance, Reservation],
        MemberBalance answers [BalanceRefunded] after BalanceDebited;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcertScheduled {
    pub concert_id: Uuid,
    pub schedule_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub seat_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatHeld {
    pub reservation_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
    pub price: i64,
    /// When the concert service releases the seat unless it was sold: the
    /// hold's expiry travels with the hold, so the seat's owner can end it
    /// on its own data whatever happens to later events. Absent from
    /// events of concert services older than this field (a compatible
    /// addition); see [`SeatHeld::LEGACY_HOLD`].
    #[serde(default)]
    pub hold_expires_at: Option<DateTime<Utc>>,
}

impl SeatHeld {
    /// How long a hold lasted before its expiry travelled with it (the
    /// reservation service's default then), for events without one.
    pub const LEGACY_HOLD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

    /// The hold's expiry: as sent, or the legacy length from `received`.
    pub fn expires_at(&self, received: DateTime<Utc>) -> DateTime<Utc> {
        self.hold_expires_at
            .unwrap_or(received + SeatHeld::LEGACY_HOLD)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatHoldRejected {
    pub reservation_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatReleased {
    pub reservation_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatSold {
    pub reservation_id: Uuid,
    pub payment_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatSaleRejected {
    pub reservation_id: Uuid,
    pub payment_id: Uuid,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTokenAdmitted {
    pub token: Uuid,
    pub user_id: Uuid,
    pub concert_id: Uuid,
    pub pass_expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePassEnded {
    pub token: Uuid,
    pub user_id: Uuid,
    pub concert_id: Uuid,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRequested {
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub concert_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationHeld {
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub concert_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
    pub price: i64,
    pub hold_expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRejected {
    pub reservation_id: Uuid,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationExpired {
    pub reservation_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationCancelled {
    pub reservation_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
    pub reason: Reason,
    /// The payment whose debit must be given back, when one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationConfirmed {
    pub reservation_id: Uuid,
    pub payment_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationConfirmationRejected {
    pub reservation_id: Uuid,
    pub payment_id: Uuid,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceCharged {
    pub user_id: Uuid,
    pub entry_id: Uuid,
    pub amount: i64,
    pub balance_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceDebited {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub entry_id: Uuid,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceDebitRejected {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceRefunded {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub entry_id: Uuid,
    pub amount: i64,
    /// Why the debit was given back (the reason of the event that caused it),
    /// so the payment can say why it failed whichever event it hears first.
    #[serde(default)]
    pub reason: Option<Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequested {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub concert_id: Uuid,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub reason: Reason,
    pub refunded: bool,
}

/// How a saga (or one branch of it) ended: completed, or the compensation
/// it took. Services count these; tools name them in a saga's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaOutcome {
    /// Money taken, reservation confirmed, seat sold.
    Completed,
    /// The payment ended without a sale (its reason says why).
    PaymentFailed,
    /// The seat could not be held.
    HoldRejected,
    /// The hold ran out; the seat goes back.
    HoldExpired,
    /// The hold was cancelled (by its fan or by a compensation).
    ReservationCancelled,
    /// A debit was given back.
    Refunded,
}

impl SagaOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaOutcome::Completed => "completed",
            SagaOutcome::PaymentFailed => "payment_failed",
            SagaOutcome::HoldRejected => "hold_rejected",
            SagaOutcome::HoldExpired => "hold_expired",
            SagaOutcome::ReservationCancelled => "reservation_cancelled",
            SagaOutcome::Refunded => "refunded",
        }
    }
}

impl std::fmt::Display for SagaOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventType {
    /// The saga ending events of this type announce, if they announce one.
    pub fn saga_outcome(self) -> Option<SagaOutcome> {
        Some(match self {
            EventType::PaymentCompleted => SagaOutcome::Completed,
            EventType::PaymentFailed => SagaOutcome::PaymentFailed,
            EventType::ReservationRejected => SagaOutcome::HoldRejected,
            EventType::ReservationExpired => SagaOutcome::HoldExpired,
            EventType::ReservationCancelled => SagaOutcome::ReservationCancelled,
            EventType::BalanceRefunded => SagaOutcome::Refunded,
            _ => return None,
        })
    }
}

impl Event {
    /// The saga ending this event announces, with its reason, if it is one.
    pub fn saga_outcome(&self) -> Option<(SagaOutcome, Option<&Reason>)> {
        let outcome = self.event_type().saga_outcome()?;
        let reason = match self {
            Event::PaymentFailed(e) => Some(&e.reason),
            Event::ReservationRejected(e) => Some(&e.reason),
            Event::ReservationCancelled(e) => Some(&e.reason),
            Event::BalanceRefunded(e) => e.reason.as_ref(),
            _ => None,
        };
        Some((outcome, reason))
    }
}

/// A step of the saga: an event some service must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The event that calls for the step.
    pub cause: EventType,
    /// The service that owes it: a consumer of `cause`, the producer of
    /// every answer.
    pub by: Service,
    /// The events that answer it.
    pub answers: &'static [EventType],
    /// Events of the cause's producer after which no answer is awaited:
    /// it stopped waiting (a reservation that gave up on its seat).
    pub unless: &'static [EventType],
    /// The step is owed only in a saga that holds an event of this type:
    /// a seat is released only if it was held, a debit given back only if
    /// it was taken.
    pub after: Option<EventType>,
}

impl Step {
    /// Whether `cause` (an event of type `self.cause`) calls for this step
    /// in the saga of `events`.
    pub fn is_owed(&self, cause: &Event, events: &[&Event]) -> bool {
        self.after.is_none_or(|after| {
            events
                .iter()
                .any(|e| e.event_type() == after && same_payment(cause, e))
        })
    }

    /// Whether the saga of `events` answered `cause`, or its asker stopped
    /// waiting for the answer.
    pub fn is_answered(&self, cause: &Event, events: &[&Event]) -> bool {
        events.iter().any(|e| {
            let event_type = e.event_type();
            (self.answers.contains(&event_type) || self.unless.contains(&event_type))
                && same_payment(cause, e)
        })
    }
}

/// Whether `event` belongs to the same payment as `cause`: events of a type
/// that never names a payment belong to every payment of the saga; the
/// others must name the cause's payment, or none when the cause names none
/// (a fan's cancellation does not answer a payment's debit).
fn same_payment(cause: &Event, event: &Event) -> bool {
    !event.event_type().names_payment() || event.payment_id() == cause.payment_id()
}
