//! Payment storage: payments and their saga steps, the projection of
//! reservations, and completed payments waiting for the data platform.

mod schema;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use ticket_runtime::AnyConnection;
use uuid::Uuid;

use crate::domain::Status;
use schema::{data_platform_deliveries, payment_steps, payments, reservation_projection};

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

fn utc<S: serde::Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        &at.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

#[derive(Debug, Clone, Queryable, Serialize)]
pub struct Payment {
    pub id: String,
    pub reservation_id: String,
    pub user_id: String,
    pub amount: i64,
    pub status: String,
    pub reason: Option<String>,
    pub refunded: bool,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    #[serde(serialize_with = "utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "utc")]
    pub updated_at: NaiveDateTime,
}

impl Payment {
    pub fn status(&self) -> Status {
        Status::parse(&self.status).expect("stored status is valid")
    }

    pub fn uuid(&self) -> Uuid {
        Uuid::parse_str(&self.id).expect("stored uuid")
    }

    pub fn reservation_uuid(&self) -> Uuid {
        Uuid::parse_str(&self.reservation_id).expect("stored uuid")
    }

    pub fn user_uuid(&self) -> Uuid {
        Uuid::parse_str(&self.user_id).expect("stored uuid")
    }
}

#[derive(Debug, Clone, Queryable, Serialize)]
pub struct Step {
    pub event_type: String,
    pub detail: Option<String>,
    #[serde(serialize_with = "utc")]
    pub at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable)]
pub struct HeldReservation {
    pub reservation_id: String,
    pub user_id: String,
    pub concert_id: String,
    pub schedule_id: String,
    pub seat_no: i32,
    pub price: i64,
    pub status: String,
    pub hold_expires_at: NaiveDateTime,
}

pub fn find(conn: &mut AnyConnection, id: Uuid) -> QueryResult<Option<Payment>> {
    payments::table.find(id.to_string()).first(conn).optional()
}

/// The payment, locked until the transaction ends, so that the deadline
/// sweeper and a consumer handling the payment's events (on any instance)
/// decide one after the other, each seeing the other's outcome.
pub fn lock(conn: &mut AnyConnection, id: Uuid) -> QueryResult<Option<Payment>> {
    ticket_runtime::first_for_update!(conn, payments::table.find(id.to_string()))
}

pub fn find_by_key(
    conn: &mut AnyConnection,
    user_id: Uuid,
    key: &str,
) -> QueryResult<Option<Payment>> {
    payments::table
        .filter(payments::user_id.eq(user_id.to_string()))
        .filter(payments::idempotency_key.eq(key))
        .first(conn)
        .optional()
}

/// The payment in flight or completed for a reservation, if any.
pub fn live_for_reservation(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
) -> QueryResult<Option<Payment>> {
    payments::table
        .filter(payments::reservation_id.eq(reservation_id.to_string()))
        .filter(payments::status.eq_any([Status::Pending.as_str(), Status::Completed.as_str()]))
        .first(conn)
        .optional()
}

pub fn insert_pending(
    conn: &mut AnyConnection,
    id: Uuid,
    reservation: &HeldReservation,
    key: Option<&str>,
) -> QueryResult<()> {
    let at = now();
    diesel::insert_into(payments::table)
        .values((
            payments::id.eq(id.to_string()),
            payments::reservation_id.eq(&reservation.reservation_id),
            payments::user_id.eq(&reservation.user_id),
            payments::amount.eq(reservation.price),
            payments::status.eq(Status::Pending.as_str()),
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
    id: Uuid,
    to: Status,
    reason: Option<&str>,
    refunded: bool,
) -> QueryResult<bool> {
    let changed = diesel::update(payments::table.find(id.to_string()))
        .filter(payments::status.eq(Status::Pending.as_str()))
        .set((
            payments::status.eq(to.as_str()),
            payments::reason.eq(reason),
            payments::refunded.eq(refunded),
            payments::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Notes why a PENDING payment is going to fail (the refund comes next).
pub fn note_reason(conn: &mut AnyConnection, id: Uuid, reason: &str) -> QueryResult<()> {
    diesel::update(payments::table.find(id.to_string()))
        .filter(payments::status.eq(Status::Pending.as_str()))
        .set((payments::reason.eq(reason), payments::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

pub fn mark_refunded(conn: &mut AnyConnection, id: Uuid) -> QueryResult<()> {
    diesel::update(payments::table.find(id.to_string()))
        .set((payments::refunded.eq(true), payments::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

pub fn stalled(
    conn: &mut AnyConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<Payment>> {
    payments::table
        .filter(payments::status.eq(Status::Pending.as_str()))
        .filter(payments::created_at.le(before.naive_utc()))
        .order(payments::created_at)
        .limit(limit)
        .load(conn)
}

pub fn record_step(
    conn: &mut AnyConnection,
    payment_id: Uuid,
    event_id: Uuid,
    event_type: &str,
    detail: Option<&str>,
) -> QueryResult<()> {
    let row = (
        payment_steps::payment_id.eq(payment_id.to_string()),
        payment_steps::event_id.eq(event_id.to_string()),
        payment_steps::event_type.eq(event_type),
        payment_steps::detail.eq(detail),
        payment_steps::at.eq(now()),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(payment_steps::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn steps(conn: &mut AnyConnection, payment_id: Uuid) -> QueryResult<Vec<Step>> {
    payment_steps::table
        .filter(payment_steps::payment_id.eq(payment_id.to_string()))
        .order((payment_steps::at, payment_steps::event_id))
        .select((
            payment_steps::event_type,
            payment_steps::detail,
            payment_steps::at,
        ))
        .load(conn)
}

pub fn project_held(
    conn: &mut AnyConnection,
    held: &shared_events::ReservationHeld,
) -> QueryResult<()> {
    let row = (
        reservation_projection::reservation_id.eq(held.reservation_id.to_string()),
        reservation_projection::user_id.eq(held.user_id.to_string()),
        reservation_projection::concert_id.eq(held.concert_id.to_string()),
        reservation_projection::schedule_id.eq(held.schedule_id.to_string()),
        reservation_projection::seat_no.eq(held.seat_no as i32),
        reservation_projection::price.eq(held.price),
        reservation_projection::status.eq("HELD"),
        reservation_projection::hold_expires_at.eq(held.hold_expires_at.naive_utc()),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(reservation_projection::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn project_status(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
    status: &str,
) -> QueryResult<()> {
    diesel::update(reservation_projection::table.find(reservation_id.to_string()))
        .set(reservation_projection::status.eq(status))
        .execute(conn)?;
    Ok(())
}

pub fn projected(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
) -> QueryResult<Option<HeldReservation>> {
    reservation_projection::table
        .find(reservation_id.to_string())
        .first(conn)
        .optional()
}

/// Queues the completed reservation for the data platform, in the same
/// transaction that completes the payment.
pub fn enqueue_delivery(
    conn: &mut AnyConnection,
    payment_id: Uuid,
    body: &serde_json::Value,
) -> QueryResult<()> {
    let row = (
        data_platform_deliveries::payment_id.eq(payment_id.to_string()),
        data_platform_deliveries::body.eq(body.to_string()),
        data_platform_deliveries::attempts.eq(0),
        data_platform_deliveries::next_attempt_at.eq(now()),
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
    limit: i64,
) -> QueryResult<Vec<(String, String, i32)>> {
    data_platform_deliveries::table
        .filter(data_platform_deliveries::delivered_at.is_null())
        .filter(data_platform_deliveries::next_attempt_at.le(now()))
        .order(data_platform_deliveries::next_attempt_at)
        .limit(limit)
        .select((
            data_platform_deliveries::payment_id,
            data_platform_deliveries::body,
            data_platform_deliveries::attempts,
        ))
        .load(conn)
}

pub fn delivered(conn: &mut AnyConnection, payment_id: &str) -> QueryResult<()> {
    diesel::update(data_platform_deliveries::table.find(payment_id))
        .set(data_platform_deliveries::delivered_at.eq(now()))
        .execute(conn)?;
    Ok(())
}

pub fn delivery_failed(
    conn: &mut AnyConnection,
    payment_id: &str,
    retry_at: DateTime<Utc>,
    error: &str,
) -> QueryResult<()> {
    diesel::update(data_platform_deliveries::table.find(payment_id))
        .set((
            data_platform_deliveries::attempts.eq(data_platform_deliveries::attempts + 1),
            data_platform_deliveries::next_attempt_at.eq(retry_at.naive_utc()),
            data_platform_deliveries::last_error.eq(error),
        ))
        .execute(conn)?;
    Ok(())
}
