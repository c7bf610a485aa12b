//! Payment storage, SQL only: payments and their saga steps, the projection
//! of reservations, and completed payments waiting for the data platform.

mod schema;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use shared_events::{CompletedReservation, Reason};
use ticket_runtime::ids::{ConcertId, PaymentId, ReservationId, ScheduleId, UserId};
use ticket_runtime::{AnyConnection, DbResult};
use uuid::Uuid;

use crate::domain::{Payment, ReservationState, Status, Step};
use schema::{data_platform_deliveries, payment_steps, payments, reservation_projection};

// The domain's payment and step, read straight from their rows.
impl<ST, DB> Queryable<ST, DB> for Payment
where
    DB: diesel::backend::Backend,
    PaymentRow: diesel::deserialize::FromStaticSqlRow<ST, DB>,
{
    type Row = PaymentRow;

    fn build(
        (
            id,
            reservation_id,
            user_id,
            amount,
            status,
            reason,
            refunded,
            idempotency_key,
            created_at,
            updated_at,
        ): PaymentRow,
    ) -> diesel::deserialize::Result<Payment> {
        Ok(Payment {
            id,
            reservation_id,
            user_id,
            amount,
            status,
            reason,
            refunded,
            idempotency_key,
            created_at,
            updated_at,
        })
    }
}

type PaymentRow = (
    PaymentId,
    ReservationId,
    UserId,
    i64,
    Status,
    Option<String>,
    bool,
    Option<String>,
    NaiveDateTime,
    NaiveDateTime,
);

impl<ST, DB> Queryable<ST, DB> for Step
where
    DB: diesel::backend::Backend,
    StepRow: diesel::deserialize::FromStaticSqlRow<ST, DB>,
{
    type Row = StepRow;

    fn build((event_type, detail, at): StepRow) -> diesel::deserialize::Result<Step> {
        Ok(Step {
            event_type,
            detail,
            at,
        })
    }
}

type StepRow = (String, Option<String>, NaiveDateTime);

/// A reservation as projected from the reservation service's events.
#[derive(Debug, Clone, Queryable)]
pub struct HeldReservation {
    pub reservation_id: ReservationId,
    pub user_id: UserId,
    pub concert_id: ConcertId,
    pub schedule_id: ScheduleId,
    pub seat_no: i32,
    pub price: i64,
    pub status: ReservationState,
    pub hold_expires_at: NaiveDateTime,
}

/// A completed reservation waiting for the data platform.
#[derive(Debug, Clone, Queryable)]
pub struct Delivery {
    pub payment_id: PaymentId,
    pub body: String,
    pub attempts: i32,
}

/// Every payment in id order, a page after `after`: the admin audit.
pub fn page(
    conn: &mut AnyConnection,
    after: Option<PaymentId>,
    limit: i64,
) -> DbResult<Vec<Payment>> {
    let mut query = payments::table
        .order(payments::id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(payments::id.gt(after));
    }
    Ok(query.load(conn)?)
}

pub fn find(conn: &mut AnyConnection, id: PaymentId) -> DbResult<Option<Payment>> {
    Ok(payments::table.find(id).first(conn).optional()?)
}

/// The payment, locked until the transaction ends, so that the deadline
/// sweeper and a consumer handling the payment's events (on any instance)
/// decide one after the other, each seeing the other's outcome.
pub fn lock(conn: &mut AnyConnection, id: PaymentId) -> DbResult<Option<Payment>> {
    Ok(ticket_runtime::first_for_update!(
        conn,
        payments::table.find(id)
    )?)
}

pub fn find_by_key(
    conn: &mut AnyConnection,
    user_id: UserId,
    key: &str,
) -> DbResult<Option<Payment>> {
    Ok(payments::table
        .filter(payments::user_id.eq(user_id))
        .filter(payments::idempotency_key.eq(key))
        .first(conn)
        .optional()?)
}

/// The payment in flight or completed for a reservation, if any.
pub fn live_for_reservation(
    conn: &mut AnyConnection,
    reservation_id: ReservationId,
) -> DbResult<Option<Payment>> {
    Ok(payments::table
        .filter(payments::reservation_id.eq(reservation_id))
        .filter(payments::status.eq_any([Status::Pending, Status::Completed]))
        .first(conn)
        .optional()?)
}

pub fn insert_pending(
    conn: &mut AnyConnection,
    id: PaymentId,
    reservation: &HeldReservation,
    key: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let at = now.naive_utc();
    diesel::insert_into(payments::table)
        .values((
            payments::id.eq(id),
            payments::reservation_id.eq(reservation.reservation_id),
            payments::user_id.eq(reservation.user_id),
            payments::amount.eq(reservation.price),
            payments::status.eq(Status::Pending),
            payments::refunded.eq(false),
            payments::idempotency_key.eq(key),
            payments::created_at.eq(at),
            payments::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Moves a PENDING payment to a final status; false if it was not PENDING.
pub fn finish(
    conn: &mut AnyConnection,
    id: PaymentId,
    to: Status,
    reason: Option<&Reason>,
    refunded: bool,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let changed = diesel::update(payments::table.find(id))
        .filter(payments::status.eq(Status::Pending))
        .set((
            payments::status.eq(to),
            payments::reason.eq(reason.map(Reason::as_str)),
            payments::refunded.eq(refunded),
            payments::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Notes why a PENDING payment is going to fail (the refund comes next).
pub fn note_reason(
    conn: &mut AnyConnection,
    id: PaymentId,
    reason: &Reason,
    now: DateTime<Utc>,
) -> DbResult<()> {
    diesel::update(payments::table.find(id))
        .filter(payments::status.eq(Status::Pending))
        .set((
            payments::reason.eq(reason.as_str()),
            payments::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn mark_refunded(conn: &mut AnyConnection, id: PaymentId, now: DateTime<Utc>) -> DbResult<()> {
    diesel::update(payments::table.find(id))
        .set((
            payments::refunded.eq(true),
            payments::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn stalled(
    conn: &mut AnyConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<Payment>> {
    Ok(payments::table
        .filter(payments::status.eq(Status::Pending))
        .filter(payments::created_at.le(before.naive_utc()))
        .order(payments::created_at)
        .limit(limit)
        .load(conn)?)
}

pub fn record_step(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
    event_id: Uuid,
    event_type: &str,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let row = (
        payment_steps::payment_id.eq(payment_id),
        payment_steps::event_id.eq(event_id.to_string()),
        payment_steps::event_type.eq(event_type),
        payment_steps::detail.eq(detail),
        payment_steps::at.eq(now.naive_utc()),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(payment_steps::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn steps(conn: &mut AnyConnection, payment_id: PaymentId) -> DbResult<Vec<Step>> {
    Ok(payment_steps::table
        .filter(payment_steps::payment_id.eq(payment_id))
        .order((payment_steps::at, payment_steps::event_id))
        .select((
            payment_steps::event_type,
            payment_steps::detail,
            payment_steps::at,
        ))
        .load(conn)?)
}

pub fn project_held(conn: &mut AnyConnection, held: &HeldReservation) -> DbResult<()> {
    let row = (
        reservation_projection::reservation_id.eq(held.reservation_id),
        reservation_projection::user_id.eq(held.user_id),
        reservation_projection::concert_id.eq(held.concert_id),
        reservation_projection::schedule_id.eq(held.schedule_id),
        reservation_projection::seat_no.eq(held.seat_no),
        reservation_projection::price.eq(held.price),
        reservation_projection::status.eq(held.status),
        reservation_projection::hold_expires_at.eq(held.hold_expires_at),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(reservation_projection::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn project_status(
    conn: &mut AnyConnection,
    reservation_id: ReservationId,
    status: ReservationState,
) -> DbResult<()> {
    diesel::update(reservation_projection::table.find(reservation_id))
        .set(reservation_projection::status.eq(status))
        .execute(conn)?;
    Ok(())
}

pub fn projected(
    conn: &mut AnyConnection,
    reservation_id: ReservationId,
) -> DbResult<Option<HeldReservation>> {
    Ok(reservation_projection::table
        .find(reservation_id)
        .first(conn)
        .optional()?)
}

/// Queues the completed reservation for the data platform, in the same
/// transaction that completes the payment.
pub fn enqueue_delivery(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
    record: &CompletedReservation,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let body = serde_json::to_string(record)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let row = (
        data_platform_deliveries::payment_id.eq(payment_id),
        data_platform_deliveries::body.eq(body),
        data_platform_deliveries::attempts.eq(0),
        data_platform_deliveries::next_attempt_at.eq(now.naive_utc()),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(
        data_platform_deliveries::table
    )
    .values(row)
    .on_conflict_do_nothing()
    .execute(c))?;
    Ok(())
}

pub fn due_deliveries(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<Delivery>> {
    Ok(data_platform_deliveries::table
        .filter(data_platform_deliveries::delivered_at.is_null())
        .filter(data_platform_deliveries::next_attempt_at.le(now.naive_utc()))
        .order(data_platform_deliveries::next_attempt_at)
        .limit(limit)
        .select((
            data_platform_deliveries::payment_id,
            data_platform_deliveries::body,
            data_platform_deliveries::attempts,
        ))
        .load(conn)?)
}

/// Completed reservations the data platform has not acknowledged yet.
pub fn undelivered_count(conn: &mut AnyConnection) -> DbResult<i64> {
    Ok(data_platform_deliveries::table
        .filter(data_platform_deliveries::delivered_at.is_null())
        .count()
        .get_result(conn)?)
}

pub fn delivered(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
    now: DateTime<Utc>,
) -> DbResult<()> {
    diesel::update(data_platform_deliveries::table.find(payment_id))
        .set(data_platform_deliveries::delivered_at.eq(now.naive_utc()))
        .execute(conn)?;
    Ok(())
}

pub fn delivery_failed(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
    retry_at: DateTime<Utc>,
    error: &str,
) -> DbResult<()> {
    diesel::update(data_platform_deliveries::table.find(payment_id))
        .set((
            data_platform_deliveries::attempts.eq(data_platform_deliveries::attempts + 1),
            data_platform_deliveries::next_attempt_at.eq(retry_at.naive_utc()),
            data_platform_deliveries::last_error.eq(error),
        ))
        .execute(conn)?;
    Ok(())
}
