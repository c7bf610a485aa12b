//! Wallet storage, SQL only. Every balance change is one conditional update
//! of the wallet row plus one ledger row, in the caller's transaction, so
//! the balance never goes negative and always equals the sum of the ledger.

mod schema;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use ticket_runtime::ids::{LedgerEntryId, PaymentId, ReservationId, UserId};
use ticket_runtime::{AnyConnection, DbResult};

use crate::domain::{AuditedDebit, AuditedWallet, EntryKind, LedgerEntry};
use schema::{charge_requests, ledger_entries, payment_debits, wallets};

/// A ledger row; the service shows it as a [`LedgerEntry`].
#[derive(Queryable)]
struct LedgerRow {
    id: LedgerEntryId,
    entry_no: i64,
    kind: EntryKind,
    amount: i64,
    balance_after: i64,
    reference: Option<String>,
    created_at: NaiveDateTime,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(row: LedgerRow) -> LedgerEntry {
        LedgerEntry {
            id: row.id,
            entry_no: row.entry_no,
            kind: row.kind,
            amount: row.amount,
            balance_after: row.balance_after,
            reference: row.reference,
            created_at: row.created_at.and_utc(),
        }
    }
}

/// The first charge made with an Idempotency-Key.
#[derive(Debug, Clone, Queryable)]
pub struct ChargeRequest {
    pub amount: i64,
    pub entry_id: LedgerEntryId,
    pub balance_after: i64,
}

/// A payment's debit, and whether it was given back.
#[derive(Debug, Clone, Queryable)]
pub struct PaymentDebit {
    pub user_id: UserId,
    pub reservation_id: ReservationId,
    pub amount: i64,
}

/// Every wallet in member order, a page after `after`, each with the sum
/// of its ledger: the admin audit.
pub fn wallet_page(
    conn: &mut AnyConnection,
    after: Option<UserId>,
    limit: i64,
) -> DbResult<Vec<AuditedWallet>> {
    let mut query = wallets::table
        .order(wallets::user_id)
        .limit(limit)
        .select((wallets::user_id, wallets::balance))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(wallets::user_id.gt(after));
    }
    let page: Vec<(UserId, i64)> = query.load(conn)?;
    let users: Vec<UserId> = page.iter().map(|(user, _)| *user).collect();
    // One row per wallet from the database, however long the ledgers.
    let totals: std::collections::HashMap<UserId, i64> = ledger_entries::table
        .filter(ledger_entries::user_id.eq_any(users))
        .group_by(ledger_entries::user_id)
        .select((ledger_entries::user_id, signed_sum()))
        .load(conn)?
        .into_iter()
        .collect();
    Ok(page
        .into_iter()
        .map(|(user_id, balance)| AuditedWallet {
            user_id,
            balance,
            ledger_total: totals.get(&user_id).copied().unwrap_or(0),
        })
        .collect())
}

/// What a wallet's ledger entries add up to: charges and refunds in,
/// debits out. Cast back to BIGINT because
/// SUM of a BIGINT is NUMERIC on PostgreSQL (and BIGINT on SQLite).
fn signed_sum() -> diesel::expression::SqlLiteral<diesel::sql_types::BigInt> {
    let debit = EntryKind::PaymentDebit.as_str();
    diesel::dsl::sql(&format!(
        "CAST(SUM(CASE WHEN kind = '{debit}' THEN -amount ELSE amount END) AS BIGINT)"
    ))
}

#[derive(Queryable)]
struct DebitRow {
    payment_id: PaymentId,
    reservation_id: ReservationId,
    user_id: UserId,
    amount: i64,
    refund_entry_id: Option<LedgerEntryId>,
}

impl From<DebitRow> for AuditedDebit {
    fn from(row: DebitRow) -> AuditedDebit {
        AuditedDebit {
            payment_id: row.payment_id,
            reservation_id: row.reservation_id,
            user_id: row.user_id,
            amount: row.amount,
            refund_entry_id: row.refund_entry_id,
        }
    }
}

/// Every payment debit in payment order, a page after `after`: the admin audit.
pub fn debit_page(
    conn: &mut AnyConnection,
    after: Option<PaymentId>,
    limit: i64,
) -> DbResult<Vec<AuditedDebit>> {
    let mut query = payment_debits::table
        .order(payment_debits::payment_id)
        .limit(limit)
        .select((
            payment_debits::payment_id,
            payment_debits::reservation_id,
            payment_debits::user_id,
            payment_debits::amount,
            payment_debits::refund_entry_id,
        ))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(payment_debits::payment_id.gt(after));
    }
    let rows: Vec<DebitRow> = query.load(conn)?;
    Ok(rows.into_iter().map(AuditedDebit::from).collect())
}

pub fn balance_of(conn: &mut AnyConnection, user_id: UserId) -> DbResult<i64> {
    Ok(wallets::table
        .find(user_id)
        .select(wallets::balance)
        .first(conn)
        .optional()?
        .unwrap_or(0))
}

fn ensure_wallet(conn: &mut AnyConnection, user_id: UserId, now: DateTime<Utc>) -> DbResult<()> {
    let wallet = (
        wallets::user_id.eq(user_id),
        wallets::balance.eq(0),
        wallets::entry_count.eq(0),
        wallets::updated_at.eq(now.naive_utc()),
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
    user_id: UserId,
    kind: EntryKind,
    delta: i64,
    reference: Option<&str>,
    max_balance: i64,
    now: DateTime<Utc>,
) -> DbResult<Option<LedgerEntry>> {
    ensure_wallet(conn, user_id, now)?;
    let updated = diesel::update(wallets::table.find(user_id))
        .filter((wallets::balance + delta).ge(0))
        .filter((wallets::balance + delta).le(max_balance))
        .set((
            wallets::balance.eq(wallets::balance + delta),
            wallets::entry_count.eq(wallets::entry_count + 1),
            wallets::updated_at.eq(now.naive_utc()),
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
        id: LedgerEntryId::generate(),
        entry_no,
        kind,
        amount: delta.abs(),
        balance_after: balance,
        reference: reference.map(str::to_string),
        created_at: now,
    };
    diesel::insert_into(ledger_entries::table)
        .values((
            ledger_entries::id.eq(entry.id),
            ledger_entries::user_id.eq(user_id),
            ledger_entries::entry_no.eq(entry.entry_no),
            ledger_entries::kind.eq(entry.kind),
            ledger_entries::amount.eq(entry.amount),
            ledger_entries::balance_after.eq(entry.balance_after),
            ledger_entries::reference.eq(&entry.reference),
            ledger_entries::created_at.eq(entry.created_at.naive_utc()),
        ))
        .execute(conn)?;
    Ok(Some(entry))
}

pub fn charge_request(
    conn: &mut AnyConnection,
    user_id: UserId,
    key: &str,
) -> DbResult<Option<ChargeRequest>> {
    Ok(charge_requests::table
        .find((user_id, key))
        .select((
            charge_requests::amount,
            charge_requests::entry_id,
            charge_requests::balance_after,
        ))
        .first(conn)
        .optional()?)
}

/// Remembers the charge a key made; a second first request with the same
/// key fails here on the primary key.
pub fn record_charge_request(
    conn: &mut AnyConnection,
    user_id: UserId,
    key: &str,
    entry: &LedgerEntry,
) -> DbResult<()> {
    diesel::insert_into(charge_requests::table)
        .values((
            charge_requests::user_id.eq(user_id),
            charge_requests::idempotency_key.eq(key),
            charge_requests::amount.eq(entry.amount),
            charge_requests::entry_id.eq(entry.id),
            charge_requests::balance_after.eq(entry.balance_after),
            charge_requests::created_at.eq(entry.created_at.naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

/// A page of the ledger, newest first, strictly before entry number `before`.
pub fn ledger_page(
    conn: &mut AnyConnection,
    user_id: UserId,
    before: Option<i64>,
    limit: i64,
) -> DbResult<Vec<LedgerEntry>> {
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
    let rows: Vec<LedgerRow> = query.load(conn)?;
    Ok(rows.into_iter().map(LedgerEntry::from).collect())
}

pub fn was_debited(conn: &mut AnyConnection, payment_id: PaymentId) -> DbResult<bool> {
    let seen: i64 = payment_debits::table
        .find(payment_id)
        .count()
        .get_result(conn)?;
    Ok(seen > 0)
}

pub fn record_debit(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
    debit: &PaymentDebit,
    entry: LedgerEntryId,
) -> DbResult<()> {
    diesel::insert_into(payment_debits::table)
        .values((
            payment_debits::payment_id.eq(payment_id),
            payment_debits::reservation_id.eq(debit.reservation_id),
            payment_debits::user_id.eq(debit.user_id),
            payment_debits::amount.eq(debit.amount),
            payment_debits::debit_entry_id.eq(entry),
        ))
        .execute(conn)?;
    Ok(())
}

/// The payment's debit, if it was taken and not yet given back, locked
/// until the transaction ends: two refund triggers for one payment (its
/// failure and the reservation's rejection travel on different topics)
/// handled at once decide one after the other, the second seeing the
/// first's refund.
pub fn lock_unrefunded_debit(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
) -> DbResult<Option<PaymentDebit>> {
    let Some((debit, refund)): Option<(PaymentDebit, Option<LedgerEntryId>)> = ticket_runtime::first_for_update!(
        conn,
        payment_debits::table.find(payment_id).select((
            (
                payment_debits::user_id,
                payment_debits::reservation_id,
                payment_debits::amount,
            ),
            payment_debits::refund_entry_id,
        ))
    )?
    else {
        return Ok(None);
    };
    Ok(refund.is_none().then_some(debit))
}

pub fn record_refund(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
    entry: LedgerEntryId,
) -> DbResult<()> {
    diesel::update(payment_debits::table.find(payment_id))
        .set(payment_debits::refund_entry_id.eq(entry))
        .execute(conn)?;
    Ok(())
}
