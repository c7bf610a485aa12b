//! Payment rules: `PENDING → COMPLETED`, or `FAILED` with a reason.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::Deserialize;
use std::time::Duration;
use ticket_runtime::ids::{PaymentId, ReservationId, UserId};

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentPolicy {
    pub deadline_secs: i64,
    pub decision_wait_ms: u64,
    pub max_wait_ms: u64,
    pub sweep_interval_ms: u64,
}

impl PaymentPolicy {
    pub fn deadline(&self) -> TimeDelta {
        TimeDelta::seconds(self.deadline_secs)
    }
}

/// How deliveries to the data platform are retried.
#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryRetry {
    pub max_backoff_secs: u64,
}

impl DeliveryRetry {
    /// Exponential: 0.5 s, 1 s, 2 s, … up to the maximum.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exponent = attempts.clamp(0, 20) as u32;
        Duration::from_millis(500u64.saturating_mul(1 << exponent))
            .min(Duration::from_secs(self.max_backoff_secs))
    }
}

ticket_runtime::text_enum! {
    /// Where a payment is in its life.
    pub enum Status {
        Pending = "PENDING",
        Completed = "COMPLETED",
        Failed = "FAILED",
    }
}

/// A payment: one attempt to pay for one reservation.
#[derive(Debug, Clone)]
pub struct Payment {
    pub id: PaymentId,
    pub reservation_id: ReservationId,
    pub user_id: UserId,
    pub amount: i64,
    pub status: Status,
    pub reason: Option<String>,
    pub refunded: bool,
    pub idempotency_key: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A saga event this service heard about a payment.
#[derive(Debug, Clone)]
pub struct Step {
    pub event_type: String,
    pub detail: Option<String>,
    pub at: NaiveDateTime,
}

ticket_runtime::text_enum! {
    /// The reservation as this service last heard of it (its projection).
    pub enum ReservationState {
        Held = "HELD",
        Confirmed = "CONFIRMED",
        Expired = "EXPIRED",
        Cancelled = "CANCELLED",
    }
}

/// Why a reservation cannot be paid now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPayable {
    #[error("it is {0}")]
    NotHeld(ReservationState),
    #[error("its hold has expired")]
    HoldExpired,
}

/// A reservation may be paid while it is held and its hold has not lapsed.
pub fn check_payable(
    state: ReservationState,
    hold_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), NotPayable> {
    if state != ReservationState::Held {
        return Err(NotPayable::NotHeld(state));
    }
    if hold_expires_at <= now {
        return Err(NotPayable::HoldExpired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_backoff_doubles_up_to_the_cap() {
        let settings = DeliveryRetry {
            max_backoff_secs: 5,
        };
        assert_eq!(settings.backoff(0), Duration::from_millis(500));
        assert_eq!(settings.backoff(1), Duration::from_secs(1));
        assert_eq!(settings.backoff(3), Duration::from_secs(4));
        assert_eq!(settings.backoff(4), Duration::from_secs(5));
        assert_eq!(settings.backoff(1000), Duration::from_secs(5));
    }

    #[test]
    fn only_a_live_hold_is_payable() {
        let now = Utc::now();
        let later = now + TimeDelta::minutes(1);
        assert_eq!(check_payable(ReservationState::Held, later, now), Ok(()));
        assert_eq!(
            check_payable(ReservationState::Held, now, now),
            Err(NotPayable::HoldExpired)
        );
        assert_eq!(
            check_payable(ReservationState::Confirmed, later, now),
            Err(NotPayable::NotHeld(ReservationState::Confirmed))
        );
    }
}
