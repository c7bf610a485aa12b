//! Wallet storage. Every balance change is one conditional update of the
//! wallet row plus one ledger row, in the caller's transaction, so the
//! balance never goes negative and always equals the sum of the ledger.

mod schema;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use ticket_runtime::{AnyConnection, Tx};
use uuid::Uuid;

use crate::domain::{ChargeAmount, EntryKind, IdempotencyKey, Limits};
use schema::{charge_requests, ledger_entries, payment_debits, wallets};

#[derive(Debug, Clone, Queryable, Serialize)]
pub struct LedgerEntry {
    pub id: String,
    #[serde(skip)]
    pub entry_no: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub reference: Option<String>,
    #[serde(rename = "at", serialize_with = "utc")]
    pub created_at: NaiveDateTime,
}

fn utc<S: serde::Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        &at.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// The result of a charge, replayed for a retried Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeReceipt {
    pub balance: i64,
    pub entry_id: String,
    #[serde(skip)]
    pub amount: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChargeRefused {
    #[error("this Idempotency-Key was used for a charge of {first_amount}")]
    KeyReused { first_amount: i64 },
    #[error("the balance may not exceed {max}")]
    BalanceLimit { max: i64 },
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

pub fn balance_of(conn: &mut AnyConnection, user_id: &str) -> QueryResult<i64> {
    Ok(wallets::table
        .find(user_id)
        .select(wallets::balance)
        .first(conn)
        .optional()?
        .unwrap_or(0))
}

fn ensure_wallet(conn: &mut AnyConnection, user_id: &str) -> QueryResult<()> {
    let wallet = (
        wallets::user_id.eq(user_id),
        wallets::balance.eq(0),
        wallets::entry_count.eq(0),
        wallets::updated_at.eq(now()),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(wallets::table)
        .values(wallet)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// Moves the balance by `delta` and appends the ledger entry, or returns
/// `None` (changing nothing) when the result would leave `0..=max_balance`.
pub fn apply(
    conn: &mut AnyConnection,
    user_id: &str,
    kind: EntryKind,
    delta: i64,
    reference: Option<&str>,
    max_balance: i64,
) -> QueryResult<Option<LedgerEntry>> {
    ensure_wallet(conn, user_id)?;
    let updated = diesel::update(wallets::table.find(user_id))
        .filter((wallets::balance + delta).ge(0))
        .filter((wallets::balance + delta).le(max_balance))
        .set((
            wallets::balance.eq(wallets::balance + delta),
            wallets::entry_count.eq(wallets::entry_count + 1),
            wallets::updated_at.eq(now()),
        ))
        .execute(conn)?;
    if updated == 0 {
        return Ok(None);
    }
    let (balance, entry_no): (i64, i64) = wallets::table
        .find(user_id)
        .select((wallets::balance, wallets::entry_count))
        .first(conn)?;
    let entry = LedgerEntry {
        id: Uuid::now_v7().to_string(),
        entry_no,
        kind: kind.as_str().to_string(),
        amount: delta.abs(),
        balance_after: balance,
        reference: reference.map(str::to_string),
        created_at: now(),
    };
    diesel::insert_into(ledger_entries::table)
        .values((
            ledger_entries::id.eq(&entry.id),
            ledger_entries::user_id.eq(user_id),
            ledger_entries::entry_no.eq(entry.entry_no),
            ledger_entries::kind.eq(&entry.kind),
            ledger_entries::amount.eq(entry.amount),
            ledger_entries::balance_after.eq(entry.balance_after),
            ledger_entries::reference.eq(&entry.reference),
            ledger_entries::created_at.eq(entry.created_at),
        ))
        .execute(conn)?;
    Ok(Some(entry))
}

/// A charge, or the first answer to the same Idempotency-Key.
pub fn charge(
    tx: &mut Tx<'_>,
    user_id: Uuid,
    amount: ChargeAmount,
    key: Option<&IdempotencyKey>,
    limits: &Limits,
) -> Result<(ChargeReceipt, Option<LedgerEntry>), ChargeRefused> {
    let user = user_id.to_string();
    if let Some(key) = key {
        let first: Option<(i64, String, i64)> = charge_requests::table
            .find((&user, key.as_str()))
            .select((
                charge_requests::amount,
                charge_requests::entry_id,
                charge_requests::balance_after,
            ))
            .first(tx.conn())
            .optional()?;
        if let Some((first_amount, entry_id, balance)) = first {
            if first_amount != amount.get() {
                return Err(ChargeRefused::KeyReused { first_amount });
            }
            let receipt = ChargeReceipt {
                balance,
                entry_id,
                amount: first_amount,
            };
            return Ok((receipt, None));
        }
    }
    let entry = apply(
        tx.conn(),
        &user,
        EntryKind::Charge,
        amount.get(),
        key.map(IdempotencyKey::as_str),
        limits.max_balance,
    )?
    .ok_or(ChargeRefused::BalanceLimit {
        max: limits.max_balance,
    })?;
    if let Some(key) = key {
        diesel::insert_into(charge_requests::table)
            .values((
                charge_requests::user_id.eq(&user),
                charge_requests::idempotency_key.eq(key.as_str()),
                charge_requests::amount.eq(amount.get()),
                charge_requests::entry_id.eq(&entry.id),
                charge_requests::balance_after.eq(entry.balance_after),
                charge_requests::created_at.eq(entry.created_at),
            ))
            .execute(tx.conn())?;
    }
    let receipt = ChargeReceipt {
        balance: entry.balance_after,
        entry_id: entry.id.clone(),
        amount: amount.get(),
    };
    Ok((receipt, Some(entry)))
}

/// A page of the ledger, newest first, strictly before entry number `before`.
pub fn ledger_page(
    conn: &mut AnyConnection,
    user_id: &str,
    before: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<LedgerEntry>> {
    let mut query = ledger_entries::table
        .filter(ledger_entries::user_id.eq(user_id))
        .order(ledger_entries::entry_no.desc())
        .limit(limit)
        .select((
            ledger_entries::id,
            ledger_entries::entry_no,
            ledger_entries::kind,
            ledger_entries::amount,
            ledger_entries::balance_after,
            ledger_entries::reference,
            ledger_entries::created_at,
        ))
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(ledger_entries::entry_no.lt(before));
    }
    query.load(conn)
}

pub enum Debit {
    Taken(LedgerEntry),
    /// This payment was debited before (a redelivered request changes nothing).
    AlreadyTaken,
    Insufficient,
}

/// Takes a payment's amount from the wallet, once per payment.
pub fn debit_for_payment(
    conn: &mut AnyConnection,
    payment_id: Uuid,
    reservation_id: Uuid,
    user_id: Uuid,
    amount: i64,
) -> QueryResult<Debit> {
    let payment = payment_id.to_string();
    let seen: i64 = payment_debits::table
        .find(&payment)
        .count()
        .get_result(conn)?;
    if seen > 0 {
        return Ok(Debit::AlreadyTaken);
    }
    let user = user_id.to_string();
    let Some(entry) = apply(
        conn,
        &user,
        EntryKind::PaymentDebit,
        -amount,
        Some(&payment),
        i64::MAX,
    )?
    else {
        return Ok(Debit::Insufficient);
    };
    diesel::insert_into(payment_debits::table)
        .values((
            payment_debits::payment_id.eq(&payment),
            payment_debits::reservation_id.eq(reservation_id.to_string()),
            payment_debits::user_id.eq(&user),
            payment_debits::amount.eq(amount),
            payment_debits::debit_entry_id.eq(&entry.id),
        ))
        .execute(conn)?;
    Ok(Debit::Taken(entry))
}

pub struct Refund {
    pub entry: LedgerEntry,
    pub user_id: Uuid,
    pub reservation_id: Uuid,
}

/// Gives a payment's debit back, if it was taken and not yet given back.
pub fn refund_payment(conn: &mut AnyConnection, payment_id: Uuid) -> QueryResult<Option<Refund>> {
    let payment = payment_id.to_string();
    let debit: Option<(String, String, i64)> = payment_debits::table
        .find(&payment)
        .filter(payment_debits::refund_entry_id.is_null())
        .select((
            payment_debits::user_id,
            payment_debits::reservation_id,
            payment_debits::amount,
        ))
        .first(conn)
        .optional()?;
    let Some((user, reservation, amount)) = debit else {
        return Ok(None);
    };
    // A refund restores money that was there: no balance ceiling applies.
    let entry = apply(
        conn,
        &user,
        EntryKind::Refund,
        amount,
        Some(&payment),
        i64::MAX,
    )?
    .expect("a refund never takes the balance out of range");
    diesel::update(payment_debits::table.find(&payment))
        .set(payment_debits::refund_entry_id.eq(&entry.id))
        .execute(conn)?;
    Ok(Some(Refund {
        entry,
        user_id: Uuid::parse_str(&user).expect("stored uuid"),
        reservation_id: Uuid::parse_str(&reservation).expect("stored uuid"),
    }))
}
