//! Wallet rules: what a charge may be, and the ledger's entry kinds.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    /// Largest single charge, in minor units.
    pub max_charge: i64,
    /// Largest balance a wallet may hold, in minor units.
    pub max_balance: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Charge,
    PaymentDebit,
    Refund,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Charge => "CHARGE",
            EntryKind::PaymentDebit => "PAYMENT_DEBIT",
            EntryKind::Refund => "REFUND",
        }
    }
}

/// A charge amount that passed validation: positive and within the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeAmount(i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("amount must be a whole number from 1 to {max}")]
pub struct InvalidAmount {
    pub max: i64,
}

impl ChargeAmount {
    pub fn parse(amount: i64, limits: &Limits) -> Result<ChargeAmount, InvalidAmount> {
        if (1..=limits.max_charge).contains(&amount) {
            Ok(ChargeAmount(amount))
        } else {
            Err(InvalidAmount {
                max: limits.max_charge,
            })
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A client's `Idempotency-Key`: 1 to 128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Idempotency-Key must be 1 to 128 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl TryFrom<&str> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;

    fn try_from(value: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey);
        }
        Ok(IdempotencyKey(value.to_string()))
    }
}

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_amounts_are_positive_and_bounded() {
        let limits = Limits {
            max_charge: 1_000,
            max_balance: 10_000,
        };
        assert_eq!(
            ChargeAmount::parse(1, &limits).map(ChargeAmount::get),
            Ok(1)
        );
        assert_eq!(
            ChargeAmount::parse(1_000, &limits).map(ChargeAmount::get),
            Ok(1_000)
        );
        for bad in [0, -1, 1_001, i64::MAX, i64::MIN] {
            assert!(ChargeAmount::parse(bad, &limits).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert!(IdempotencyKey::try_from("order-42").is_ok());
        for bad in ["", "with space", "é", &"k".repeat(129)] {
            assert!(IdempotencyKey::try_from(bad).is_err(), "{bad:?}");
        }
    }
}
