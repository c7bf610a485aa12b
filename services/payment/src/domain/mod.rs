//! Payment rules: `PENDING → COMPLETED`, or `FAILED` with a reason.

use chrono::TimeDelta;
use serde::Deserialize;
use std::time::Duration;

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

#[derive(Debug, Clone, Deserialize)]
pub struct DataPlatformSettings {
    pub url: String,
    pub timeout_ms: u64,
    pub max_backoff_secs: u64,
}

impl DataPlatformSettings {
    /// Exponential: 0.5 s, 1 s, 2 s, … up to the maximum.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exponent = attempts.clamp(0, 20) as u32;
        Duration::from_millis(500u64.saturating_mul(1 << exponent))
            .min(Duration::from_secs(self.max_backoff_secs))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Completed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
        }
    }

    pub fn parse(value: &str) -> Option<Status> {
        [Status::Pending, Status::Completed, Status::Failed]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

pub mod reason {
    pub const INSUFFICIENT_BALANCE: &str = "INSUFFICIENT_BALANCE";
    pub const SAGA_TIMED_OUT: &str = "SAGA_TIMED_OUT";
    pub const REFUNDED: &str = "REFUNDED";
}

/// A client's `Idempotency-Key`: 1 to 128 visible ASCII characters.
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_backoff_doubles_up_to_the_cap() {
        let settings = DataPlatformSettings {
            url: String::new(),
            timeout_ms: 1,
            max_backoff_secs: 5,
        };
        assert_eq!(settings.backoff(0), Duration::from_millis(500));
        assert_eq!(settings.backoff(1), Duration::from_secs(1));
        assert_eq!(settings.backoff(3), Duration::from_secs(4));
        assert_eq!(settings.backoff(4), Duration::from_secs(5));
        assert_eq!(settings.backoff(1000), Duration::from_secs(5));
    }

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert!(valid_idempotency_key("pay-1"));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key("a b"));
        assert!(!valid_idempotency_key(&"k".repeat(129)));
    }
}
