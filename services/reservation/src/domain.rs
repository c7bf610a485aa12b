//! The reservation state machine:
//! `PENDING → HELD → CONFIRMED`, or `REJECTED`, `EXPIRED`, `CANCELLED`.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::Deserialize;
use shared_events::Reason;
use ticket_runtime::ids::{ConcertId, PaymentId, QueueTokenId, ReservationId, ScheduleId, UserId};

pub const SEATS_PER_SCHEDULE: u32 = 50;

#[derive(Debug, Clone, Deserialize)]
pub struct HoldPolicy {
    pub pending_deadline_secs: i64,
    pub decision_wait_ms: u64,
    pub max_wait_ms: u64,
    pub sweep_interval_ms: u64,
    /// Reservations one pass may have PENDING or HELD at once.
    pub max_live_per_pass: u32,
}

impl HoldPolicy {
    pub fn pending_deadline(&self) -> TimeDelta {
        TimeDelta::seconds(self.pending_deadline_secs)
    }

    /// Whether a pass that has `live` reservations asked for or held may ask
    /// for one more: a few at a time, so that one pass cannot take a
    /// schedule's every seat (nor take them all again once they expire).
    pub fn admit_hold(&self, live: i64) -> Result<(), PassHoldLimit> {
        if live < i64::from(self.max_live_per_pass) {
            Ok(())
        } else {
            Err(PassHoldLimit {
                max: self.max_live_per_pass,
            })
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("this pass already has {max} reservations asked for or held: pay for or cancel one first")]
pub struct PassHoldLimit {
    pub max: u32,
}

ticket_runtime::text_enum! {
    /// Where a reservation is in its life.
    pub enum Status {
        Pending = "PENDING",
        Held = "HELD",
        Confirmed = "CONFIRMED",
        Rejected = "REJECTED",
        Expired = "EXPIRED",
        Cancelled = "CANCELLED",
    }
}

impl Status {
    /// Whether a fan may still cancel it.
    pub fn cancellable(self) -> bool {
        matches!(self, Status::Pending | Status::Held)
    }
}

/// A seat number that exists on every schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatNo(u32);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("seat_no must be 1 to {SEATS_PER_SCHEDULE}")]
pub struct InvalidSeat;

impl TryFrom<i64> for SeatNo {
    type Error = InvalidSeat;

    fn try_from(value: i64) -> Result<SeatNo, InvalidSeat> {
        if (1..=i64::from(SEATS_PER_SCHEDULE)).contains(&value) {
            Ok(SeatNo(value as u32))
        } else {
            Err(InvalidSeat)
        }
    }
}

impl SeatNo {
    pub fn get(self) -> u32 {
        self.0
    }
}

/// What a debit for this reservation may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    Confirm,
    /// Already confirmed by this very payment: nothing to do.
    AlreadyConfirmed,
    Reject(Reason),
}

pub struct Hold {
    pub status: Status,
    pub user_id: UserId,
    pub price: Option<i64>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub payment_id: Option<PaymentId>,
}

/// A debit confirms the hold only if it is still held, unexpired, by the
/// payer, for its price, and the payment has not already failed.
pub fn decide_confirmation(
    hold: &Hold,
    payment_id: PaymentId,
    payer: UserId,
    amount: i64,
    payment_failed: bool,
    now: DateTime<Utc>,
) -> Confirmation {
    if hold.status == Status::Confirmed && hold.payment_id == Some(payment_id) {
        return Confirmation::AlreadyConfirmed;
    }
    if payment_failed {
        return Confirmation::Reject(Reason::PaymentFailed);
    }
    if hold.status != Status::Held {
        return Confirmation::Reject(if hold.status == Status::Expired {
            Reason::HoldExpired
        } else {
            Reason::NotHeld
        });
    }
    if hold.hold_expires_at.is_none_or(|at| at <= now) {
        return Confirmation::Reject(Reason::HoldExpired);
    }
    if hold.user_id != payer {
        return Confirmation::Reject(Reason::NotOwner);
    }
    if hold.price != Some(amount) {
        return Confirmation::Reject(Reason::AmountMismatch);
    }
    Confirmation::Confirm
}

/// A fan's reservation of one seat, from request to confirmation or end.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: ReservationId,
    pub user_id: UserId,
    pub concert_id: ConcertId,
    pub schedule_id: ScheduleId,
    pub seat_no: i32,
    pub status: Status,
    pub price: Option<i64>,
    pub hold_expires_at: Option<NaiveDateTime>,
    pub payment_id: Option<PaymentId>,
    pub reason: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The pass it was asked for with (none from before passes were recorded).
    pub pass_token: Option<QueueTokenId>,
}

impl Reservation {
    pub fn seat(&self) -> u32 {
        // Written from a `SeatNo` (1 to 50); a negative number cannot be stored.
        self.seat_no.unsigned_abs()
    }

    pub fn hold_expires_at(&self) -> Option<DateTime<Utc>> {
        self.hold_expires_at.map(|at| at.and_utc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const FAN: UserId = UserId(Uuid::from_u128(1));
    const STRANGER: UserId = UserId(Uuid::from_u128(2));
    const P: PaymentId = PaymentId(Uuid::from_u128(10));
    const Q: PaymentId = PaymentId(Uuid::from_u128(11));

    fn held(now: DateTime<Utc>) -> Hold {
        Hold {
            status: Status::Held,
            user_id: FAN,
            price: Some(100),
            hold_expires_at: Some(now + TimeDelta::minutes(5)),
            payment_id: None,
        }
    }

    #[test]
    fn only_a_live_hold_of_the_payer_at_its_price_is_confirmed() {
        let now = Utc::now();
        assert_eq!(
            decide_confirmation(&held(now), P, FAN, 100, false, now),
            Confirmation::Confirm
        );
        assert_eq!(
            decide_confirmation(&held(now), P, FAN, 100, false, now + TimeDelta::minutes(6)),
            Confirmation::Reject(Reason::HoldExpired)
        );
        assert_eq!(
            decide_confirmation(&held(now), P, STRANGER, 100, false, now),
            Confirmation::Reject(Reason::NotOwner)
        );
        assert_eq!(
            decide_confirmation(&held(now), P, FAN, 99, false, now),
            Confirmation::Reject(Reason::AmountMismatch)
        );
        assert_eq!(
            decide_confirmation(&held(now), P, FAN, 100, true, now),
            Confirmation::Reject(Reason::PaymentFailed)
        );
        for status in [Status::Pending, Status::Cancelled, Status::Rejected] {
            let hold = Hold {
                status,
                ..held(now)
            };
            assert_eq!(
                decide_confirmation(&hold, P, FAN, 100, false, now),
                Confirmation::Reject(Reason::NotHeld)
            );
        }
        let expired = Hold {
            status: Status::Expired,
            ..held(now)
        };
        assert_eq!(
            decide_confirmation(&expired, P, FAN, 100, false, now),
            Confirmation::Reject(Reason::HoldExpired)
        );
    }

    #[test]
    fn a_confirmed_hold_is_confirmed_again_only_for_its_own_payment() {
        let now = Utc::now();
        let confirmed = Hold {
            status: Status::Confirmed,
            payment_id: Some(P),
            ..held(now)
        };
        assert_eq!(
            decide_confirmation(&confirmed, P, FAN, 100, false, now),
            Confirmation::AlreadyConfirmed
        );
        assert_eq!(
            decide_confirmation(&confirmed, Q, FAN, 100, false, now),
            Confirmation::Reject(Reason::NotHeld)
        );
    }

    #[test]
    fn a_pass_may_have_a_few_holds_at_once() {
        let policy = HoldPolicy {
            pending_deadline_secs: 30,
            decision_wait_ms: 0,
            max_wait_ms: 0,
            sweep_interval_ms: 500,
            max_live_per_pass: 4,
        };
        for live in 0..4 {
            assert_eq!(policy.admit_hold(live), Ok(()));
        }
        for live in [4, 5, 50] {
            assert_eq!(policy.admit_hold(live), Err(PassHoldLimit { max: 4 }));
        }
    }

    #[test]
    fn seats_are_numbered_one_to_fifty() {
        assert!(SeatNo::try_from(1).is_ok());
        assert!(SeatNo::try_from(50).is_ok());
        for bad in [0, -1, 51, i64::MAX] {
            assert_eq!(SeatNo::try_from(bad), Err(InvalidSeat));
        }
    }
}
