//! Wallet rules: what a charge may be, and the ledger's entry kinds; and
//! wallets, ledgers and debits as the service shows them.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use ticket_runtime::ids::{LedgerEntryId, PaymentId, ReservationId, UserId};

#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    /// Largest single charge, in minor units.
    pub max_charge: i64,
    /// Largest balance a wallet may hold, in minor units.
    pub max_balance: i64,
}

ticket_runtime::text_enum! {
    /// What moved a wallet's balance.
    pub enum EntryKind {
        Charge = "CHARGE",
        PaymentDebit = "PAYMENT_DEBIT",
        Refund = "REFUND",
    }
}

/// One line of a wallet's ledger: never changed once written.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub id: LedgerEntryId,
    /// The wallet's own count: the ledger's order, and its page cursor.
    pub entry_no: i64,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_after: i64,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A wallet as the audit sees it: its balance and what its ledger adds up to.
#[derive(Debug, Clone)]
pub struct AuditedWallet {
    pub user_id: UserId,
    pub balance: i64,
    pub ledger_total: i64,
}

/// A payment's debit as the audit sees it.
#[derive(Debug, Clone)]
pub struct AuditedDebit {
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub user_id: UserId,
    pub amount: i64,
    /// The ledger entry that gave it back, once refunded.
    pub refund_entry_id: Option<LedgerEntryId>,
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
}
