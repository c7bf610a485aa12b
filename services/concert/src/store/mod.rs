//! Catalog storage, SQL only. Functions take a connection; the application
//! layer decides the transaction boundary.

mod schema;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use shared_events::{Reason, SeatHeld};
use ticket_runtime::ids::{ConcertId, PaymentId, ReservationId, ScheduleId};
use ticket_runtime::{AnyConnection, DbResult};

use crate::domain::{Concert, NewConcert, Schedule, Seat, SeatPlanEntry, SeatStatus, TakenSeat};
use schema::{catalog_seeds, concerts, schedules, seats};

/// A concert's row; the catalog shows it as a [`Concert`].
#[derive(Queryable)]
struct ConcertRow {
    id: ConcertId,
    title: String,
    venue: String,
    created_at: NaiveDateTime,
}

impl From<ConcertRow> for Concert {
    fn from(row: ConcertRow) -> Concert {
        Concert {
            id: row.id,
            title: row.title,
            venue: row.venue,
            created_at: row.created_at.and_utc(),
        }
    }
}

#[derive(Queryable)]
struct SeatRow {
    seat_no: i32,
    grade: String,
    price: i64,
    status: SeatStatus,
}

impl From<SeatRow> for Seat {
    fn from(row: SeatRow) -> Seat {
        Seat {
            seat_no: row.seat_no,
            grade: row.grade,
            price: row.price,
            status: row.status,
        }
    }
}

#[derive(Queryable)]
struct TakenSeatRow {
    reservation_id: Option<ReservationId>,
    schedule_id: ScheduleId,
    seat_no: i32,
    status: SeatStatus,
    payment_id: Option<PaymentId>,
}

impl From<TakenSeatRow> for TakenSeat {
    fn from(row: TakenSeatRow) -> TakenSeat {
        TakenSeat {
            reservation_id: row.reservation_id,
            schedule_id: row.schedule_id,
            seat_no: row.seat_no,
            status: row.status,
            payment_id: row.payment_id,
        }
    }
}

/// Every taken seat in (schedule, seat) order, a page after `after`: the
/// admin audit.
pub fn taken_seat_page(
    conn: &mut AnyConnection,
    after: Option<(ScheduleId, i32)>,
    limit: i64,
) -> DbResult<Vec<TakenSeat>> {
    let mut query = seats::table
        .filter(seats::status.ne(SeatStatus::Available))
        .order((seats::schedule_id, seats::seat_no))
        .limit(limit)
        .select((
            seats::reservation_id,
            seats::schedule_id,
            seats::seat_no,
            seats::status,
            seats::payment_id,
        ))
        .into_boxed();
    if let Some((schedule, seat_no)) = after {
        query = query.filter(
            seats::schedule_id.gt(schedule).or(seats::schedule_id
                .eq(schedule)
                .and(seats::seat_no.gt(seat_no))),
        );
    }
    let rows: Vec<TakenSeatRow> = query.load(conn)?;
    Ok(rows.into_iter().map(TakenSeat::from).collect())
}

/// Stores the concert with its schedules (ids given, in the order of
/// `concert.schedules`) and their seats.
pub fn insert_concert(
    conn: &mut AnyConnection,
    id: ConcertId,
    concert: &NewConcert,
    schedule_ids: &[ScheduleId],
    now: DateTime<Utc>,
) -> DbResult<Concert> {
    let created = Concert {
        id,
        title: concert.title.clone(),
        venue: concert.venue.clone(),
        created_at: now,
    };
    diesel::insert_into(concerts::table)
        .values((
            concerts::id.eq(created.id),
            concerts::title.eq(&created.title),
            concerts::venue.eq(&created.venue),
            concerts::created_at.eq(created.created_at.naive_utc()),
        ))
        .execute(conn)?;
    for (schedule_id, starts_at) in schedule_ids.iter().zip(&concert.schedules) {
        diesel::insert_into(schedules::table)
            .values((
                schedules::id.eq(schedule_id),
                schedules::concert_id.eq(id),
                schedules::starts_at.eq(starts_at.naive_utc()),
            ))
            .execute(conn)?;
        insert_seats(conn, *schedule_id, &concert.seat_plan, now)?;
    }
    Ok(created)
}

fn insert_seats(
    conn: &mut AnyConnection,
    schedule_id: ScheduleId,
    plan: &[SeatPlanEntry],
    now: DateTime<Utc>,
) -> DbResult<()> {
    // One statement per seat: diesel's multi-backend connection has no batch insert.
    for seat in plan {
        diesel::insert_into(seats::table)
            .values((
                seats::schedule_id.eq(schedule_id),
                seats::seat_no.eq(seat.seat_no as i32),
                seats::grade.eq(&seat.grade),
                seats::price.eq(seat.price),
                seats::status.eq(SeatStatus::Available),
                seats::updated_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn list_concerts(conn: &mut AnyConnection) -> DbResult<Vec<Concert>> {
    let rows: Vec<ConcertRow> = concerts::table
        .order((concerts::created_at, concerts::id))
        .load(conn)?;
    Ok(rows.into_iter().map(Concert::from).collect())
}

pub fn concert_count(conn: &mut AnyConnection) -> DbResult<i64> {
    Ok(concerts::table.count().get_result(conn)?)
}

pub fn concert_exists(conn: &mut AnyConnection, concert_id: ConcertId) -> DbResult<bool> {
    let found: i64 = concerts::table
        .filter(concerts::id.eq(concert_id))
        .count()
        .get_result(conn)?;
    Ok(found > 0)
}

/// A concert's schedules with how many seats are still AVAILABLE.
pub fn schedules_of(conn: &mut AnyConnection, concert_id: ConcertId) -> DbResult<Vec<Schedule>> {
    let rows: Vec<(ScheduleId, NaiveDateTime)> = schedules::table
        .filter(schedules::concert_id.eq(concert_id))
        .order(schedules::starts_at)
        .select((schedules::id, schedules::starts_at))
        .load(conn)?;
    let ids: Vec<ScheduleId> = rows.iter().map(|(id, _)| *id).collect();
    let available: Vec<(ScheduleId, i64)> = seats::table
        .filter(seats::schedule_id.eq_any(&ids))
        .filter(seats::status.eq(SeatStatus::Available))
        .group_by(seats::schedule_id)
        .select((seats::schedule_id, diesel::dsl::count_star()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, starts_at)| Schedule {
            id,
            concert_id,
            starts_at: starts_at.and_utc(),
            available_seats: available
                .iter()
                .find(|(schedule, _)| *schedule == id)
                .map_or(0, |(_, n)| *n),
        })
        .collect())
}

/// The seats of a schedule, or `None` when there is no such schedule.
pub fn seats_of(conn: &mut AnyConnection, schedule_id: ScheduleId) -> DbResult<Option<Vec<Seat>>> {
    let rows: Vec<SeatRow> = seats::table
        .filter(seats::schedule_id.eq(schedule_id))
        .order(seats::seat_no)
        .select((seats::seat_no, seats::grade, seats::price, seats::status))
        .load(conn)?;
    Ok((!rows.is_empty()).then(|| rows.into_iter().map(Seat::from).collect()))
}

/// Claims a one-time seed: true for the one transaction that records it
/// first. Two instances starting together both try; the second waits on
/// the first's row and then finds it taken.
pub fn claim_seed(conn: &mut AnyConnection, name: &str, now: DateTime<Utc>) -> DbResult<bool> {
    let row = (
        catalog_seeds::name.eq(name),
        catalog_seeds::seeded_at.eq(now.naive_utc()),
    );
    let inserted =
        ticket_runtime::on_backend!(conn, |c| diesel::insert_into(catalog_seeds::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c))?;
    Ok(inserted == 1)
}

/// What the seat a reservation asked for turned out to be.
pub enum HoldOutcome {
    Held {
        price: i64,
        hold_expires_at: DateTime<Utc>,
    },
    Rejected(Reason),
}

/// Holds the seat for the reservation with one conditional update, so only
/// one reservation can ever hold it. A redelivered request for the same
/// reservation finds the seat already its own.
pub fn hold_seat(
    conn: &mut AnyConnection,
    concert_id: ConcertId,
    schedule_id: ScheduleId,
    seat_no: i32,
    reservation_id: ReservationId,
    hold_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<HoldOutcome> {
    let schedule_concert: Option<ConcertId> = schedules::table
        .find(schedule_id)
        .select(schedules::concert_id)
        .first(conn)
        .optional()?;
    match schedule_concert {
        None => return Ok(HoldOutcome::Rejected(Reason::ScheduleNotFound)),
        Some(c) if c != concert_id => return Ok(HoldOutcome::Rejected(Reason::WrongConcert)),
        Some(_) => {}
    }
    let seat = seats::table.find((schedule_id, seat_no));
    let held = diesel::update(seat)
        .filter(seats::status.eq(SeatStatus::Available))
        .set((
            seats::status.eq(SeatStatus::Held),
            seats::reservation_id.eq(reservation_id),
            seats::hold_expires_at.eq(hold_expires_at.naive_utc()),
            seats::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    let current: Option<(
        i64,
        Option<ReservationId>,
        SeatStatus,
        Option<NaiveDateTime>,
    )> = seat
        .select((
            seats::price,
            seats::reservation_id,
            seats::status,
            seats::hold_expires_at,
        ))
        .first(conn)
        .optional()?;
    Ok(match current {
        None => HoldOutcome::Rejected(Reason::SeatNotFound),
        // A redelivered request finds the seat still held by it: same answer.
        Some((price, holder, status, Some(expires_at)))
            if held == 1 || (holder == Some(reservation_id) && status == SeatStatus::Held) =>
        {
            HoldOutcome::Held {
                price,
                hold_expires_at: expires_at.and_utc(),
            }
        }
        Some(_) => HoldOutcome::Rejected(Reason::SeatTaken),
    })
}

/// Makes the seat AVAILABLE again if this reservation holds (or, for a
/// compensation after a failed payment, bought) it.
pub fn release_seat(
    conn: &mut AnyConnection,
    schedule_id: ScheduleId,
    seat_no: i32,
    reservation_id: ReservationId,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let released = diesel::update(seats::table.find((schedule_id, seat_no)))
        .filter(seats::reservation_id.eq(reservation_id))
        .filter(seats::status.eq_any([SeatStatus::Held, SeatStatus::Sold]))
        .set((
            seats::status.eq(SeatStatus::Available),
            seats::reservation_id.eq(None::<ReservationId>),
            seats::payment_id.eq(None::<PaymentId>),
            seats::hold_expires_at.eq(None::<NaiveDateTime>),
            seats::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(released == 1)
}

/// A HELD seat whose hold ran out: where it is and who held it.
#[derive(Debug, Clone, Queryable)]
pub struct LapsedHold {
    pub schedule_id: ScheduleId,
    pub seat_no: i32,
    pub reservation_id: Option<ReservationId>,
}

/// A hold that ran out before `cutoff`. A seat held before the hold's
/// expiry was stored has none: it counts from its last change, for the
/// length holds had then.
#[diesel::dsl::auto_type]
fn ran_out(cutoff: NaiveDateTime, legacy_cutoff: NaiveDateTime) -> _ {
    seats::hold_expires_at.le(cutoff).or(seats::hold_expires_at
        .is_null()
        .and(seats::updated_at.le(legacy_cutoff)))
}

fn ran_out_before(cutoff: DateTime<Utc>) -> ran_out {
    ran_out(
        cutoff.naive_utc(),
        (cutoff - SeatHeld::LEGACY_HOLD).naive_utc(),
    )
}

/// Seats still HELD although their hold ran out before `cutoff`.
pub fn lapsed_holds(
    conn: &mut AnyConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<LapsedHold>> {
    Ok(seats::table
        .filter(seats::status.eq(SeatStatus::Held))
        .filter(ran_out_before(cutoff))
        .order(seats::hold_expires_at)
        .limit(limit)
        .select((seats::schedule_id, seats::seat_no, seats::reservation_id))
        .load(conn)?)
}

/// Releases a lapsed hold, unless it changed meanwhile (sold, released, or
/// held again).
pub fn release_lapsed(
    conn: &mut AnyConnection,
    hold: &LapsedHold,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let lapsed = || {
        diesel::update(seats::table.find((hold.schedule_id, hold.seat_no)))
            .filter(seats::status.eq(SeatStatus::Held))
            .filter(ran_out_before(cutoff))
    };
    let available = (
        seats::status.eq(SeatStatus::Available),
        seats::reservation_id.eq(None::<ReservationId>),
        seats::hold_expires_at.eq(None::<NaiveDateTime>),
        seats::updated_at.eq(now.naive_utc()),
    );
    // Still held for the same reservation, or still for none: `= NULL` is
    // never true, so a seat held for no reservation is matched with
    // IS NULL (else it is never released, and enough of them first in
    // line would stop every later release).
    let released = match hold.reservation_id {
        Some(reservation) => lapsed()
            .filter(seats::reservation_id.eq(reservation))
            .set(available)
            .execute(conn)?,
        None => lapsed()
            .filter(seats::reservation_id.is_null())
            .set(available)
            .execute(conn)?,
    };
    Ok(released == 1)
}

/// Sells the seat held by the reservation to its payment; true also when
/// this very payment bought it already (a redelivered confirmation).
pub fn sell_seat(
    conn: &mut AnyConnection,
    schedule_id: ScheduleId,
    seat_no: i32,
    reservation_id: ReservationId,
    payment_id: PaymentId,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let seat = seats::table.find((schedule_id, seat_no));
    let sold = diesel::update(seat)
        .filter(seats::reservation_id.eq(reservation_id))
        .filter(seats::status.eq(SeatStatus::Held))
        .set((
            seats::status.eq(SeatStatus::Sold),
            seats::payment_id.eq(payment_id),
            seats::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    if sold == 1 {
        return Ok(true);
    }
    let already: i64 = seat
        .filter(seats::status.eq(SeatStatus::Sold))
        .filter(seats::payment_id.eq(payment_id))
        .count()
        .get_result(conn)?;
    Ok(already == 1)
}
