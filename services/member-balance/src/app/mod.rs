//! The application layer: each use case in one local transaction, and the
//! decision of which events it publishes. HTTP calls come through
//! [`Wallets`]; events through [`saga`].

pub mod saga;

use chrono::Utc;
use shared_events::{BalanceCharged, Envelope};
use ticket_runtime::http::idempotency::{IdempotencyKey, InvalidIdempotencyKey};
use ticket_runtime::ids::{LedgerEntryId, PaymentId, UserId};
use ticket_runtime::{Db, DbError};

use crate::domain::{ChargeAmount, EntryKind, InvalidAmount, Limits};
use crate::store::{self, AuditedDebit, AuditedWallet, LedgerEntry};

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error(transparent)]
    InvalidAmount(#[from] InvalidAmount),
    #[error(transparent)]
    InvalidKey(#[from] InvalidIdempotencyKey),
    #[error("limit must be 1 to {0}")]
    InvalidLimit(i64),
    #[error("cursor must be a number from a previous page's next_cursor")]
    InvalidCursor,
    #[error("this Idempotency-Key was used for a charge of {first_amount}")]
    KeyReused { first_amount: i64 },
    #[error("the balance may not exceed {max}")]
    BalanceLimit { max: i64 },
    #[error("a member may only see and charge their own wallet")]
    NotYours,
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for BalanceError {
    /// Besides the database's own aborts, a unique violation: two first
    /// requests with one Idempotency-Key raced, and the loser's
    /// transaction, run again, replays the winner's charge.
    fn is_transient(&self) -> bool {
        matches!(self, BalanceError::Unexpected(e) if e.is_transient() || e.is_unique_violation())
    }
}

impl From<diesel::result::Error> for BalanceError {
    fn from(error: diesel::result::Error) -> BalanceError {
        BalanceError::Unexpected(DbError::Query(error))
    }
}

/// What a charge left: the first answer again for a retried key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeReceipt {
    pub balance: i64,
    pub entry_id: LedgerEntryId,
    /// The answer of an earlier request with the same key.
    pub replayed: bool,
}

/// The longest ledger page.
pub const MAX_PAGE: i64 = 100;

#[derive(Clone)]
pub struct Wallets {
    pub db: Db,
    pub limits: Limits,
}

impl Wallets {
    pub async fn balance(&self, user: UserId) -> Result<i64, BalanceError> {
        self.db
            .run(move |conn| Ok(store::balance_of(conn, user)?))
            .await
    }

    pub fn charge_amount(&self, amount: i64) -> Result<ChargeAmount, BalanceError> {
        Ok(ChargeAmount::parse(amount, &self.limits)?)
    }

    /// The ledger page size asked for (20 by default).
    pub fn page_limit(&self, limit: Option<i64>) -> Result<i64, BalanceError> {
        let limit = limit.unwrap_or(20);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(BalanceError::InvalidLimit(MAX_PAGE));
        }
        Ok(limit)
    }

    /// Adds `amount` to the wallet, once per Idempotency-Key.
    pub async fn charge(
        &self,
        user: UserId,
        amount: ChargeAmount,
        key: Option<IdempotencyKey>,
    ) -> Result<ChargeReceipt, BalanceError> {
        let max_balance = self.limits.max_balance;
        self.db
            .transaction(move |tx| {
                let key = key.as_ref().map(IdempotencyKey::as_str);
                if let Some(key) = key {
                    if let Some(first) = store::charge_request(tx.conn(), user, key)? {
                        if first.amount != amount.get() {
                            return Err(BalanceError::KeyReused {
                                first_amount: first.amount,
                            });
                        }
                        return Ok(ChargeReceipt {
                            balance: first.balance_after,
                            entry_id: first.entry_id,
                            replayed: true,
                        });
                    }
                }
                let entry = store::apply(
                    tx.conn(),
                    user,
                    EntryKind::Charge,
                    amount.get(),
                    key,
                    max_balance,
                    Utc::now(),
                )?
                .ok_or(BalanceError::BalanceLimit { max: max_balance })?;
                if let Some(key) = key {
                    store::record_charge_request(tx.conn(), user, key, &entry)?;
                }
                tx.publish(&Envelope::new(BalanceCharged {
                    user_id: user.get(),
                    entry_id: entry.id.get(),
                    amount: entry.amount,
                    balance_after: entry.balance_after,
                }))?;
                Ok(ChargeReceipt {
                    balance: entry.balance_after,
                    entry_id: entry.id,
                    replayed: false,
                })
            })
            .await
    }

    /// A page of the ledger, newest first, strictly before entry number
    /// `before`.
    pub async fn ledger(
        &self,
        user: UserId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, BalanceError> {
        if before.is_some_and(|b| b <= 0) {
            return Err(BalanceError::InvalidCursor);
        }
        self.db
            .run(move |conn| Ok(store::ledger_page(conn, user, before, limit)?))
            .await
    }

    /// Every wallet with its ledger's sum, a page at a time, for the admin audit.
    pub async fn audit_wallets(
        &self,
        after: Option<UserId>,
        limit: i64,
    ) -> Result<Vec<AuditedWallet>, BalanceError> {
        self.db
            .run(move |conn| Ok(store::wallet_page(conn, after, limit)?))
            .await
    }

    /// Every payment debit, a page at a time, for the admin audit.
    pub async fn audit_debits(
        &self,
        after: Option<PaymentId>,
        limit: i64,
    ) -> Result<Vec<AuditedDebit>, BalanceError> {
        self.db
            .run(move |conn| Ok(store::debit_page(conn, after, limit)?))
            .await
    }
}
