//! Catalog storage. Functions take a connection or a transaction; the
//! caller decides the transaction boundary.

mod schema;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use shared_events::{ConcertScheduled, Envelope};
use ticket_runtime::{AnyConnection, Db, DbError, Tx};
use uuid::Uuid;

use crate::domain::{NewConcert, SeatPlanEntry, SeatStatus, SEATS_PER_SCHEDULE};
use schema::{catalog_seeds, concerts, schedules, seats};

#[derive(Debug, Clone, Queryable, serde::Serialize)]
pub struct Concert {
    pub id: String,
    pub title: String,
    pub venue: String,
    #[serde(with = "utc")]
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Schedule {
    pub id: String,
    pub concert_id: String,
    pub starts_at: DateTime<Utc>,
    pub available_seats: i64,
}

#[derive(Debug, Clone, Queryable, serde::Serialize)]
pub struct Seat {
    pub seat_no: i32,
    pub grade: String,
    pub price: i64,
    pub status: String,
}

/// Timestamps are stored as UTC without a zone; they leave as RFC 3339 UTC.
pub(crate) mod utc {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &at.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// Stores the concert with its schedules and seats, and publishes one
/// `ConcertScheduled` per schedule, in the same transaction.
pub fn insert_concert(
    tx: &mut Tx<'_>,
    concert: &NewConcert,
) -> QueryResult<(Concert, Vec<Schedule>)> {
    let created = Concert {
        id: Uuid::now_v7().to_string(),
        title: concert.title.clone(),
        venue: concert.venue.clone(),
        created_at: now(),
    };
    diesel::insert_into(concerts::table)
        .values((
            concerts::id.eq(&created.id),
            concerts::title.eq(&created.title),
            concerts::venue.eq(&created.venue),
            concerts::created_at.eq(created.created_at),
        ))
        .execute(tx.conn())?;
    let mut created_schedules = Vec::with_capacity(concert.schedules.len());
    for starts_at in &concert.schedules {
        let schedule_id = Uuid::now_v7();
        diesel::insert_into(schedules::table)
            .values((
                schedules::id.eq(schedule_id.to_string()),
                schedules::concert_id.eq(&created.id),
                schedules::starts_at.eq(starts_at.naive_utc()),
            ))
            .execute(tx.conn())?;
        insert_seats(tx.conn(), &schedule_id.to_string(), &concert.seat_plan)?;
        let concert_id = Uuid::parse_str(&created.id).expect("own uuid");
        tx.publish(&Envelope::new(
            ConcertScheduled {
                concert_id,
                schedule_id,
                starts_at: *starts_at,
                seat_count: SEATS_PER_SCHEDULE,
            },
            schedule_id.to_string(),
        ))?;
        created_schedules.push(Schedule {
            id: schedule_id.to_string(),
            concert_id: created.id.clone(),
            starts_at: *starts_at,
            available_seats: i64::from(SEATS_PER_SCHEDULE),
        });
    }
    Ok((created, created_schedules))
}

fn insert_seats(
    conn: &mut AnyConnection,
    schedule_id: &str,
    plan: &[SeatPlanEntry],
) -> QueryResult<()> {
    let at = now();
    // One statement per seat: diesel's multi-backend connection has no batch insert.
    for seat in plan {
        diesel::insert_into(seats::table)
            .values((
                seats::schedule_id.eq(schedule_id),
                seats::seat_no.eq(seat.seat_no as i32),
                seats::grade.eq(&seat.grade),
                seats::price.eq(seat.price),
                seats::status.eq(SeatStatus::Available.as_str()),
                seats::updated_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn list_concerts(conn: &mut AnyConnection) -> QueryResult<Vec<Concert>> {
    concerts::table
        .order((concerts::created_at, concerts::id))
        .load(conn)
}

pub fn concert_exists(conn: &mut AnyConnection, concert_id: &str) -> QueryResult<bool> {
    let found: i64 = concerts::table
        .filter(concerts::id.eq(concert_id))
        .count()
        .get_result(conn)?;
    Ok(found > 0)
}

/// A concert's schedules with how many seats are still AVAILABLE.
pub fn schedules_of(conn: &mut AnyConnection, concert_id: &str) -> QueryResult<Vec<Schedule>> {
    let rows: Vec<(String, NaiveDateTime)> = schedules::table
        .filter(schedules::concert_id.eq(concert_id))
        .order(schedules::starts_at)
        .select((schedules::id, schedules::starts_at))
        .load(conn)?;
    let ids: Vec<&String> = rows.iter().map(|(id, _)| id).collect();
    let available: Vec<(String, i64)> = seats::table
        .filter(seats::schedule_id.eq_any(&ids))
        .filter(seats::status.eq(SeatStatus::Available.as_str()))
        .group_by(seats::schedule_id)
        .select((seats::schedule_id, diesel::dsl::count_star()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, starts_at)| {
            let free = available
                .iter()
                .find(|(schedule, _)| *schedule == id)
                .map_or(0, |(_, n)| *n);
            Schedule {
                id,
                concert_id: concert_id.to_string(),
                starts_at: starts_at.and_utc(),
                available_seats: free,
            }
        })
        .collect())
}

/// The seats of a schedule, or `None` when there is no such schedule.
pub fn seats_of(conn: &mut AnyConnection, schedule_id: &str) -> QueryResult<Option<Vec<Seat>>> {
    let seats: Vec<Seat> = seats::table
        .filter(seats::schedule_id.eq(schedule_id))
        .order(seats::seat_no)
        .select((seats::seat_no, seats::grade, seats::price, seats::status))
        .load(conn)?;
    Ok((!seats.is_empty()).then_some(seats))
}

/// Claims a one-time seed: true for the one transaction that records it
/// first. Two instances starting together both try; the second waits on
/// the first's row and then finds it taken.
fn claim_seed(conn: &mut AnyConnection, name: &str) -> QueryResult<bool> {
    let row = (
        catalog_seeds::name.eq(name),
        catalog_seeds::seeded_at.eq(now()),
    );
    let inserted =
        ticket_runtime::on_backend!(conn, |c| diesel::insert_into(catalog_seeds::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c))?;
    Ok(inserted == 1)
}

/// A few concerts so a newcomer can try the flow at once; only into an
/// empty catalog, and once however many instances start together.
pub async fn seed_demo_catalog(db: &Db) -> Result<(), DbError> {
    db.transaction(|tx| {
        if !claim_seed(tx.conn(), "demo")? {
            return Ok(());
        }
        let existing: i64 = concerts::table.count().get_result(tx.conn())?;
        if existing > 0 {
            return Ok(());
        }
        let base = Utc::now()
            .date_naive()
            .and_hms_opt(19, 0, 0)
            .unwrap_or_default()
            .and_utc();
        let demo = [
            (
                "IU 2026 Winter Live",
                "Olympic Gymnastics Arena",
                165_000,
                30,
            ),
            ("BTS Yet To Come", "Busan Asiad Stadium", 154_000, 45),
            ("Seoul Jazz Night", "Sejong Center", 88_000, 60),
        ];
        for (title, venue, price, days_ahead) in demo {
            let first = base + chrono::TimeDelta::days(days_ahead);
            let concert = NewConcert {
                title: title.into(),
                venue: venue.into(),
                schedules: vec![first, first + chrono::TimeDelta::days(1)],
                seat_plan: (1..=SEATS_PER_SCHEDULE)
                    .map(|seat_no| SeatPlanEntry {
                        seat_no,
                        grade: if seat_no <= 10 { "VIP" } else { "STANDARD" }.into(),
                        price: if seat_no <= 10 { price * 3 / 2 } else { price },
                    })
                    .collect(),
            };
            insert_concert(tx, &concert)?;
        }
        tracing::info!("demo catalog created");
        Ok::<_, DbError>(())
    })
    .await
}

/// What the seat a reservation asked for turned out to be.
pub enum HoldOutcome {
    Held {
        price: i64,
        hold_expires_at: DateTime<Utc>,
    },
    Rejected(&'static str),
}

/// Holds the seat for the reservation with one conditional update, so only
/// one reservation can ever hold it. A redelivered request for the same
/// reservation finds the seat already its own.
pub fn hold_seat(
    conn: &mut AnyConnection,
    concert_id: &str,
    schedule_id: &str,
    seat_no: i32,
    reservation_id: &str,
    hold_expires_at: DateTime<Utc>,
) -> QueryResult<HoldOutcome> {
    let schedule_concert: Option<String> = schedules::table
        .find(schedule_id)
        .select(schedules::concert_id)
        .first(conn)
        .optional()?;
    match schedule_concert {
        None => return Ok(HoldOutcome::Rejected("SCHEDULE_NOT_FOUND")),
        Some(c) if c != concert_id => return Ok(HoldOutcome::Rejected("WRONG_CONCERT")),
        Some(_) => {}
    }
    let seat = seats::table.find((schedule_id, seat_no));
    let held = diesel::update(seat)
        .filter(seats::status.eq(SeatStatus::Available.as_str()))
        .set((
            seats::status.eq(SeatStatus::Held.as_str()),
            seats::reservation_id.eq(reservation_id),
            seats::hold_expires_at.eq(hold_expires_at.naive_utc()),
            seats::updated_at.eq(now()),
        ))
        .execute(conn)?;
    let current: Option<(i64, Option<String>, String, Option<NaiveDateTime>)> = seat
        .select((
            seats::price,
            seats::reservation_id,
            seats::status,
            seats::hold_expires_at,
        ))
        .first(conn)
        .optional()?;
    Ok(match current {
        None => HoldOutcome::Rejected("SEAT_NOT_FOUND"),
        // A redelivered request finds the seat still held by it: same answer.
        Some((price, holder, status, Some(expires_at)))
            if held == 1
                || (holder.as_deref() == Some(reservation_id)
                    && status == SeatStatus::Held.as_str()) =>
        {
            HoldOutcome::Held {
                price,
                hold_expires_at: expires_at.and_utc(),
            }
        }
        Some(_) => HoldOutcome::Rejected("SEAT_TAKEN"),
    })
}

/// Makes the seat AVAILABLE again if this reservation holds (or, for a
/// compensation after a failed payment, bought) it.
pub fn release_seat(
    conn: &mut AnyConnection,
    schedule_id: &str,
    seat_no: i32,
    reservation_id: &str,
) -> QueryResult<bool> {
    let released = diesel::update(seats::table.find((schedule_id, seat_no)))
        .filter(seats::reservation_id.eq(reservation_id))
        .filter(seats::status.eq_any([SeatStatus::Held.as_str(), SeatStatus::Sold.as_str()]))
        .set((
            seats::status.eq(SeatStatus::Available.as_str()),
            seats::reservation_id.eq(None::<String>),
            seats::payment_id.eq(None::<String>),
            seats::hold_expires_at.eq(None::<NaiveDateTime>),
            seats::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(released == 1)
}

/// A HELD seat whose hold ran out: where it is and who held it.
#[derive(Debug, Clone, Queryable)]
pub struct LapsedHold {
    pub schedule_id: String,
    pub seat_no: i32,
    pub reservation_id: Option<String>,
}

/// Seats still HELD although their hold ran out before `cutoff`.
pub fn lapsed_holds(
    conn: &mut AnyConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<LapsedHold>> {
    seats::table
        .filter(seats::status.eq(SeatStatus::Held.as_str()))
        .filter(seats::hold_expires_at.le(cutoff.naive_utc()))
        .order(seats::hold_expires_at)
        .limit(limit)
        .select((seats::schedule_id, seats::seat_no, seats::reservation_id))
        .load(conn)
}

/// Releases a lapsed hold, unless it changed meanwhile (sold, or released).
pub fn release_lapsed(
    conn: &mut AnyConnection,
    hold: &LapsedHold,
    cutoff: DateTime<Utc>,
) -> QueryResult<bool> {
    let released = diesel::update(seats::table.find((&hold.schedule_id, hold.seat_no)))
        .filter(seats::status.eq(SeatStatus::Held.as_str()))
        .filter(seats::reservation_id.eq(&hold.reservation_id))
        .filter(seats::hold_expires_at.le(cutoff.naive_utc()))
        .set((
            seats::status.eq(SeatStatus::Available.as_str()),
            seats::reservation_id.eq(None::<String>),
            seats::hold_expires_at.eq(None::<NaiveDateTime>),
            seats::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(released == 1)
}

/// Sells the seat held by the reservation to its payment.
pub fn sell_seat(
    conn: &mut AnyConnection,
    schedule_id: &str,
    seat_no: i32,
    reservation_id: &str,
    payment_id: &str,
) -> QueryResult<bool> {
    let seat = seats::table.find((schedule_id, seat_no));
    let sold = diesel::update(seat)
        .filter(seats::reservation_id.eq(reservation_id))
        .filter(seats::status.eq(SeatStatus::Held.as_str()))
        .set((
            seats::status.eq(SeatStatus::Sold.as_str()),
            seats::payment_id.eq(payment_id),
            seats::updated_at.eq(now()),
        ))
        .execute(conn)?;
    if sold == 1 {
        return Ok(true);
    }
    let already: i64 = seat
        .filter(seats::status.eq(SeatStatus::Sold.as_str()))
        .filter(seats::payment_id.eq(payment_id))
        .count()
        .get_result(conn)?;
    Ok(already == 1)
}
