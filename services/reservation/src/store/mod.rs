//! Reservation storage: SQL only. Every status change is a conditional
//! update from the expected status, so concurrent actors (fan, consumer,
//! sweeper, a second instance) cannot both win.

mod schema;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use ticket_runtime::ids::{ConcertId, PaymentId, QueueTokenId, ReservationId, ScheduleId, UserId};
use ticket_runtime::{AnyConnection, DbResult};

use shared_events::Reason;

use crate::domain::{Reservation, SeatNo, Status};
use schema::{failed_payments, reservations, schedule_catalog};

// The domain's reservation, read straight from its row.
impl<ST, DB> Queryable<ST, DB> for Reservation
where
    DB: diesel::backend::Backend,
    ReservationRow: diesel::deserialize::FromStaticSqlRow<ST, DB>,
{
    type Row = ReservationRow;

    fn build(
        (
            id,
            user_id,
            concert_id,
            schedule_id,
            seat_no,
            status,
            price,
            hold_expires_at,
            payment_id,
            reason,
            created_at,
            updated_at,
            pass_token,
        ): ReservationRow,
    ) -> diesel::deserialize::Result<Reservation> {
        Ok(Reservation {
            id,
            user_id,
            concert_id,
            schedule_id,
            seat_no,
            status,
            price,
            hold_expires_at,
            payment_id,
            reason,
            created_at,
            updated_at,
            pass_token,
        })
    }
}

type ReservationRow = (
    ReservationId,
    UserId,
    ConcertId,
    ScheduleId,
    i32,
    Status,
    Option<i64>,
    Option<NaiveDateTime>,
    Option<PaymentId>,
    Option<String>,
    NaiveDateTime,
    NaiveDateTime,
    Option<QueueTokenId>,
);

pub struct NewReservation {
    pub id: ReservationId,
    pub pass_token: QueueTokenId,
    pub user_id: UserId,
    pub concert_id: ConcertId,
    pub schedule_id: ScheduleId,
    pub seat_no: SeatNo,
}

pub fn insert_pending(
    conn: &mut AnyConnection,
    new: &NewReservation,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let at = now.naive_utc();
    diesel::insert_into(reservations::table)
        .values((
            reservations::id.eq(new.id),
            reservations::user_id.eq(new.user_id),
            reservations::concert_id.eq(new.concert_id),
            reservations::schedule_id.eq(new.schedule_id),
            reservations::seat_no.eq(new.seat_no.get() as i32),
            reservations::status.eq(Status::Pending),
            reservations::pass_token.eq(new.pass_token),
            reservations::created_at.eq(at),
            reservations::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Reservations asked for with `pass` that are still PENDING or HELD.
pub fn live_for_pass(conn: &mut AnyConnection, pass: QueueTokenId) -> DbResult<i64> {
    Ok(reservations::table
        .filter(reservations::pass_token.eq(pass))
        .filter(reservations::status.eq_any([Status::Pending, Status::Held]))
        .count()
        .get_result(conn)?)
}

/// Takes the pass's turn until the transaction ends, so that holds asked
/// for at once with one pass are counted and written one after the other.
/// PostgreSQL: a transaction-scoped advisory lock on the token (a hash
/// collision only makes two passes wait for each other). SQLite: nothing
/// to do, its transactions here begin IMMEDIATE and write one at a time.
pub fn lock_pass(conn: &mut AnyConnection, pass: QueueTokenId) -> DbResult<()> {
    if let AnyConnection::Postgresql(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(pass.to_string())
            .execute(c)?;
    }
    Ok(())
}

pub fn find(conn: &mut AnyConnection, id: ReservationId) -> DbResult<Option<Reservation>> {
    Ok(reservations::table.find(id).first(conn).optional()?)
}

/// Every reservation in id order, a page after `after`: the admin audit.
pub fn page(
    conn: &mut AnyConnection,
    after: Option<ReservationId>,
    limit: i64,
) -> DbResult<Vec<Reservation>> {
    let mut query = reservations::table
        .order(reservations::id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(reservations::id.gt(after));
    }
    Ok(query.load(conn)?)
}

/// The reservation, locked until the transaction ends: every decision
/// about one reservation (confirm, cancel, record a failed payment) is
/// taken on its row, one instance after the other.
pub fn lock(conn: &mut AnyConnection, id: ReservationId) -> DbResult<Option<Reservation>> {
    Ok(ticket_runtime::first_for_update!(
        conn,
        reservations::table.find(id)
    )?)
}

/// Moves `id` from `from` to `to` with a reason; false if it was no longer
/// in `from`.
fn transition(
    conn: &mut AnyConnection,
    id: ReservationId,
    from: Status,
    to: Status,
    reason: &Reason,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let changed = diesel::update(reservations::table.find(id))
        .filter(reservations::status.eq(from))
        .set((
            reservations::status.eq(to),
            reservations::reason.eq(reason.as_str()),
            reservations::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

pub fn hold(
    conn: &mut AnyConnection,
    id: ReservationId,
    price: i64,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let changed = diesel::update(reservations::table.find(id))
        .filter(reservations::status.eq(Status::Pending))
        .set((
            reservations::status.eq(Status::Held),
            reservations::price.eq(price),
            reservations::hold_expires_at.eq(expires_at.naive_utc()),
            reservations::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

pub fn reject(
    conn: &mut AnyConnection,
    id: ReservationId,
    reason: &Reason,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    transition(conn, id, Status::Pending, Status::Rejected, reason, now)
}

pub fn cancel(
    conn: &mut AnyConnection,
    id: ReservationId,
    from: Status,
    reason: &Reason,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    transition(conn, id, from, Status::Cancelled, reason, now)
}

pub fn confirm(
    conn: &mut AnyConnection,
    id: ReservationId,
    payment_id: PaymentId,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let changed = diesel::update(reservations::table.find(id))
        .filter(reservations::status.eq(Status::Held))
        .filter(reservations::hold_expires_at.gt(now.naive_utc()))
        .set((
            reservations::status.eq(Status::Confirmed),
            reservations::payment_id.eq(payment_id),
            reservations::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

pub fn expire(conn: &mut AnyConnection, id: ReservationId, now: DateTime<Utc>) -> DbResult<bool> {
    let changed = diesel::update(reservations::table.find(id))
        .filter(reservations::status.eq(Status::Held))
        .filter(reservations::hold_expires_at.le(now.naive_utc()))
        .set((
            reservations::status.eq(Status::Expired),
            reservations::reason.eq(Reason::HoldExpired.as_str()),
            reservations::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Holds whose time ran out.
pub fn due_holds(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<Reservation>> {
    Ok(reservations::table
        .filter(reservations::status.eq(Status::Held))
        .filter(reservations::hold_expires_at.le(now.naive_utc()))
        .order(reservations::hold_expires_at)
        .limit(limit)
        .load(conn)?)
}

/// Requests the concert service has not answered since `before`.
pub fn stalled_requests(
    conn: &mut AnyConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<Reservation>> {
    Ok(reservations::table
        .filter(reservations::status.eq(Status::Pending))
        .filter(reservations::created_at.le(before.naive_utc()))
        .order(reservations::created_at)
        .limit(limit)
        .load(conn)?)
}

pub fn remember_schedule(
    conn: &mut AnyConnection,
    schedule_id: ScheduleId,
    concert_id: ConcertId,
) -> DbResult<()> {
    let row = (
        schedule_catalog::schedule_id.eq(schedule_id),
        schedule_catalog::concert_id.eq(concert_id),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(schedule_catalog::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn concert_of_schedule(
    conn: &mut AnyConnection,
    schedule_id: ScheduleId,
) -> DbResult<Option<ConcertId>> {
    Ok(schedule_catalog::table
        .find(schedule_id)
        .select(schedule_catalog::concert_id)
        .first(conn)
        .optional()?)
}

pub fn remember_failed_payment(conn: &mut AnyConnection, payment_id: PaymentId) -> DbResult<()> {
    let row = failed_payments::payment_id.eq(payment_id);
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(failed_payments::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn payment_failed(conn: &mut AnyConnection, payment_id: PaymentId) -> DbResult<bool> {
    let found: i64 = failed_payments::table
        .find(payment_id)
        .count()
        .get_result(conn)?;
    Ok(found > 0)
}
