//! Reservation storage. Every status change is a conditional update from
//! the expected status, so concurrent actors (fan, consumer, sweeper, a
//! second instance) cannot both win.

mod schema;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use ticket_runtime::AnyConnection;
use uuid::Uuid;

use crate::domain::{SeatNo, Status};
use schema::{failed_payments, reservations, schedule_catalog};

#[derive(Debug, Clone, Queryable, Serialize)]
pub struct Reservation {
    pub id: String,
    pub user_id: String,
    pub concert_id: String,
    pub schedule_id: String,
    pub seat_no: i32,
    pub status: String,
    pub price: Option<i64>,
    #[serde(serialize_with = "utc_opt")]
    pub hold_expires_at: Option<NaiveDateTime>,
    pub payment_id: Option<String>,
    pub reason: Option<String>,
    #[serde(serialize_with = "utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "utc")]
    pub updated_at: NaiveDateTime,
}

fn utc<S: serde::Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        &at.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

fn utc_opt<S: serde::Serializer>(at: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => utc(at, s),
        None => s.serialize_none(),
    }
}

impl Reservation {
    pub fn status(&self) -> Status {
        Status::parse(&self.status).expect("stored status is valid")
    }

    pub fn uuid(&self) -> Uuid {
        Uuid::parse_str(&self.id).expect("stored uuid")
    }

    pub fn schedule_uuid(&self) -> Uuid {
        Uuid::parse_str(&self.schedule_id).expect("stored uuid")
    }

    pub fn seat(&self) -> u32 {
        self.seat_no as u32
    }
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

pub struct NewReservation {
    pub id: Uuid,
    pub user_id: Uuid,
    pub concert_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: SeatNo,
}

pub fn insert_pending(conn: &mut AnyConnection, new: &NewReservation) -> QueryResult<()> {
    let at = now();
    diesel::insert_into(reservations::table)
        .values((
            reservations::id.eq(new.id.to_string()),
            reservations::user_id.eq(new.user_id.to_string()),
            reservations::concert_id.eq(new.concert_id.to_string()),
            reservations::schedule_id.eq(new.schedule_id.to_string()),
            reservations::seat_no.eq(new.seat_no.get() as i32),
            reservations::status.eq(Status::Pending.as_str()),
            reservations::created_at.eq(at),
            reservations::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut AnyConnection, id: Uuid) -> QueryResult<Option<Reservation>> {
    reservations::table
        .find(id.to_string())
        .first(conn)
        .optional()
}

/// The reservation, locked until the transaction ends: every decision
/// about one reservation (confirm, cancel, record a failed payment) is
/// taken on its row, one instance after the other.
pub fn lock(conn: &mut AnyConnection, id: Uuid) -> QueryResult<Option<Reservation>> {
    ticket_runtime::first_for_update!(conn, reservations::table.find(id.to_string()))
}

/// Moves `id` from `from` to `to` (with the given fields); false if it was
/// no longer in `from`.
fn transition(
    conn: &mut AnyConnection,
    id: Uuid,
    from: Status,
    to: Status,
    reason: Option<&str>,
) -> QueryResult<bool> {
    let changed = diesel::update(reservations::table.find(id.to_string()))
        .filter(reservations::status.eq(from.as_str()))
        .set((
            reservations::status.eq(to.as_str()),
            reservations::reason.eq(reason),
            reservations::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

pub fn hold(
    conn: &mut AnyConnection,
    id: Uuid,
    price: i64,
    expires_at: DateTime<Utc>,
) -> QueryResult<bool> {
    let changed = diesel::update(reservations::table.find(id.to_string()))
        .filter(reservations::status.eq(Status::Pending.as_str()))
        .set((
            reservations::status.eq(Status::Held.as_str()),
            reservations::price.eq(price),
            reservations::hold_expires_at.eq(expires_at.naive_utc()),
            reservations::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

pub fn reject(conn: &mut AnyConnection, id: Uuid, reason: &str) -> QueryResult<bool> {
    transition(conn, id, Status::Pending, Status::Rejected, Some(reason))
}

pub fn cancel(conn: &mut AnyConnection, id: Uuid, from: Status, reason: &str) -> QueryResult<bool> {
    transition(conn, id, from, Status::Cancelled, Some(reason))
}

pub fn confirm(
    conn: &mut AnyConnection,
    id: Uuid,
    payment_id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    let changed = diesel::update(reservations::table.find(id.to_string()))
        .filter(reservations::status.eq(Status::Held.as_str()))
        .filter(reservations::hold_expires_at.gt(now.naive_utc()))
        .set((
            reservations::status.eq(Status::Confirmed.as_str()),
            reservations::payment_id.eq(payment_id.to_string()),
            reservations::updated_at.eq(self::now()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

pub fn expire(conn: &mut AnyConnection, id: Uuid, now: DateTime<Utc>) -> QueryResult<bool> {
    let changed = diesel::update(reservations::table.find(id.to_string()))
        .filter(reservations::status.eq(Status::Held.as_str()))
        .filter(reservations::hold_expires_at.le(now.naive_utc()))
        .set((
            reservations::status.eq(Status::Expired.as_str()),
            reservations::reason.eq(crate::domain::reason::HOLD_EXPIRED),
            reservations::updated_at.eq(self::now()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Holds whose time ran out.
pub fn due_holds(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<Reservation>> {
    reservations::table
        .filter(reservations::status.eq(Status::Held.as_str()))
        .filter(reservations::hold_expires_at.le(now.naive_utc()))
        .order(reservations::hold_expires_at)
        .limit(limit)
        .load(conn)
}

/// Requests the concert service has not answered since `before`.
pub fn stalled_requests(
    conn: &mut AnyConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<Reservation>> {
    reservations::table
        .filter(reservations::status.eq(Status::Pending.as_str()))
        .filter(reservations::created_at.le(before.naive_utc()))
        .order(reservations::created_at)
        .limit(limit)
        .load(conn)
}

pub fn remember_schedule(
    conn: &mut AnyConnection,
    schedule_id: Uuid,
    concert_id: Uuid,
) -> QueryResult<()> {
    let row = (
        schedule_catalog::schedule_id.eq(schedule_id.to_string()),
        schedule_catalog::concert_id.eq(concert_id.to_string()),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(schedule_catalog::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn concert_of_schedule(
    conn: &mut AnyConnection,
    schedule_id: Uuid,
) -> QueryResult<Option<String>> {
    schedule_catalog::table
        .find(schedule_id.to_string())
        .select(schedule_catalog::concert_id)
        .first(conn)
        .optional()
}

pub fn remember_failed_payment(conn: &mut AnyConnection, payment_id: Uuid) -> QueryResult<()> {
    let row = failed_payments::payment_id.eq(payment_id.to_string());
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(failed_payments::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn payment_failed(conn: &mut AnyConnection, payment_id: Uuid) -> QueryResult<bool> {
    let found: i64 = failed_payments::table
        .find(payment_id.to_string())
        .count()
        .get_result(conn)?;
    Ok(found > 0)
}

/// Every reservation, for invariant checks.
pub fn all(conn: &mut AnyConnection) -> QueryResult<Vec<Reservation>> {
    reservations::table
        .order(reservations::created_at)
        .load(conn)
}
