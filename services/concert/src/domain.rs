//! Catalog rules: what a valid concert is, how seats are priced, how
//! long a seat stays held, how stale a seat map kept in memory may be; and
//! the catalog as the service shows it.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use std::time::{Duration, Instant};
use ticket_runtime::ids::{ConcertId, PaymentId, ReservationId, ScheduleId};

pub const SEATS_PER_SCHEDULE: u32 = 50;
pub const MAX_SEAT_PRICE: i64 = 10_000_000;
const MAX_SCHEDULES: usize = 100;
const MAX_TEXT: usize = 200;

ticket_runtime::text_enum! {
    /// A seat of one schedule: free, held for a reservation, or sold.
    pub enum SeatStatus {
        Available = "AVAILABLE",
        Held = "HELD",
        Sold = "SOLD",
    }
}

/// How long the concert service keeps a seat HELD for a reservation.
#[derive(Debug, Clone, Deserialize)]
pub struct HoldPolicy {
    /// How long a held seat waits for its payment; travels in `SeatHeld`.
    pub hold_ttl_secs: i64,
    /// A hold is released on the concert's own data this long after it
    /// expired, unless the seat was sold: room for a confirmation that was
    /// decided in time and is still on its way.
    pub release_grace_secs: i64,
    /// How often lapsed holds are looked for.
    pub sweep_interval_ms: u64,
}

impl HoldPolicy {
    pub fn hold_ttl(&self) -> TimeDelta {
        TimeDelta::seconds(self.hold_ttl_secs)
    }

    pub fn release_grace(&self) -> TimeDelta {
        TimeDelta::seconds(self.release_grace_secs)
    }
}

/// How long a seat map kept in memory may answer for the database. An
/// instance forgets its copy of a schedule when one of its own seat changes
/// commits, so it answers its own writes at once; it does not hear of the
/// changes of other instances on the same database, so a copy answers only
/// while it is younger than the bound, and an older one is read again.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SeatMapFreshness {
    /// How stale a seat map may be, counted from the moment its read of
    /// the database began; 0 reads the database for every request.
    pub seat_map_max_staleness_ms: u64,
}

impl SeatMapFreshness {
    pub fn max_staleness(&self) -> Duration {
        Duration::from_millis(self.seat_map_max_staleness_ms)
    }

    /// Whether a seat map whose read of the database began at `read_at`
    /// may answer a request at `now`. It holds every change committed
    /// before `read_at` and misses at most those of the last
    /// `now - read_at`. A read still under way counts from its start too:
    /// a request that waits for it gets no older a state than the bound.
    pub fn serves(&self, read_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(read_at) < self.max_staleness()
    }
}

#[derive(Debug, Clone)]
pub struct Concert {
    pub id: ConcertId,
    pub title: String,
    pub venue: String,
    pub created_at: DateTime<Utc>,
}

/// A schedule with how many of its seats are still AVAILABLE.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: ScheduleId,
    pub concert_id: ConcertId,
    pub starts_at: DateTime<Utc>,
    pub available_seats: i64,
}

#[derive(Debug, Clone)]
pub struct Seat {
    pub seat_no: i32,
    pub grade: String,
    pub price: i64,
    pub status: SeatStatus,
}

/// A seat that is HELD or SOLD, with the reservation holding it (none
/// only if the data is broken: the audit reports that).
#[derive(Debug, Clone)]
pub struct TakenSeat {
    pub reservation_id: Option<ReservationId>,
    pub schedule_id: ScheduleId,
    pub seat_no: i32,
    pub status: SeatStatus,
    pub payment_id: Option<PaymentId>,
}

/// A concert as an organiser describes it, before validation.
#[derive(Debug, Clone)]
pub struct ConcertPlan {
    pub title: String,
    pub venue: String,
    pub schedules: Vec<DateTime<Utc>>,
    /// Price of every seat no grade covers.
    pub seat_price: i64,
    pub grades: Vec<Grade>,
}

/// A block of seats sold at one price.
#[derive(Debug, Clone)]
pub struct Grade {
    pub name: String,
    pub first_seat: u32,
    pub last_seat: u32,
    pub price: i64,
}

/// One seat of every schedule: its number, grade and price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatPlanEntry {
    pub seat_no: u32,
    pub grade: String,
    pub price: i64,
}

/// A concert that passed validation.
#[derive(Debug, Clone)]
pub struct NewConcert {
    pub title: String,
    pub venue: String,
    pub schedules: Vec<DateTime<Utc>>,
    pub seat_plan: Vec<SeatPlanEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidConcert {
    #[error("{0} must be 1 to {MAX_TEXT} characters")]
    Text(&'static str),
    #[error("{0} must not contain control characters (NUL, line breaks, tabs, ...)")]
    ControlCharacter(&'static str),
    #[error("a concert needs 1 to {MAX_SCHEDULES} schedules")]
    ScheduleCount,
    #[error("schedule start times must be distinct")]
    DuplicateSchedule,
    #[error("prices must be between 1 and {MAX_SEAT_PRICE}")]
    Price,
    #[error("grade {0} must cover seats within 1..={SEATS_PER_SCHEDULE}, first <= last")]
    GradeRange(String),
    #[error("seat {0} is in two grades")]
    GradeOverlap(u32),
}

/// A name shown on one line: no control characters. NUL above all, which
/// PostgreSQL cannot store in text (the insert would fail, a 500) and
/// SQLite would store, cutting the name short for C readers.
fn text(field: &'static str, value: String) -> Result<String, InvalidConcert> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_TEXT {
        return Err(InvalidConcert::Text(field));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidConcert::ControlCharacter(field));
    }
    Ok(trimmed.to_string())
}

fn price(value: i64) -> Result<i64, InvalidConcert> {
    if (1..=MAX_SEAT_PRICE).contains(&value) {
        Ok(value)
    } else {
        Err(InvalidConcert::Price)
    }
}

impl TryFrom<ConcertPlan> for NewConcert {
    type Error = InvalidConcert;

    fn try_from(request: ConcertPlan) -> Result<NewConcert, InvalidConcert> {
        let title = text("title", request.title)?;
        let venue = text("venue", request.venue)?;
        if request.schedules.is_empty() || request.schedules.len() > MAX_SCHEDULES {
            return Err(InvalidConcert::ScheduleCount);
        }
        let mut schedules = request.schedules;
        schedules.sort();
        if schedules.windows(2).any(|w| w[0] == w[1]) {
            return Err(InvalidConcert::DuplicateSchedule);
        }
        let standard = price(request.seat_price)?;
        let mut seat_plan: Vec<SeatPlanEntry> = (1..=SEATS_PER_SCHEDULE)
            .map(|seat_no| SeatPlanEntry {
                seat_no,
                grade: "STANDARD".into(),
                price: standard,
            })
            .collect();
        let mut graded = [false; SEATS_PER_SCHEDULE as usize];
        for grade in request.grades {
            let name = text("grade name", grade.name)?;
            if grade.first_seat < 1
                || grade.last_seat > SEATS_PER_SCHEDULE
                || grade.first_seat > grade.last_seat
            {
                return Err(InvalidConcert::GradeRange(name));
            }
            let grade_price = price(grade.price)?;
            for seat_no in grade.first_seat..=grade.last_seat {
                let index = (seat_no - 1) as usize;
                if graded[index] {
                    return Err(InvalidConcert::GradeOverlap(seat_no));
                }
                graded[index] = true;
                seat_plan[index] = SeatPlanEntry {
                    seat_no,
                    grade: name.clone(),
                    price: grade_price,
                };
            }
        }
        Ok(NewConcert {
            title,
            venue,
            schedules,
            seat_plan,
        })
    }
}

/// A few concerts so a newcomer can try the flow at once: each on two
/// evenings from `first_evening` on, ten VIP seats at half as much again.
pub fn demo_catalog(first_evening: DateTime<Utc>) -> Vec<NewConcert> {
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
    demo.into_iter()
        .map(|(title, venue, price, days_ahead)| {
            let first = first_evening + chrono::TimeDelta::days(days_ahead);
            NewConcert {
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
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(grades: Vec<Grade>) -> ConcertPlan {
        ConcertPlan {
            title: " Winter Live ".into(),
            venue: "Olympic Hall".into(),
            schedules: vec!["2026-12-24T19:00:00Z".parse().unwrap()],
            seat_price: 100_000,
            grades,
        }
    }

    fn grade(name: &str, first_seat: u32, last_seat: u32, price: i64) -> Grade {
        Grade {
            name: name.into(),
            first_seat,
            last_seat,
            price,
        }
    }

    #[test]
    fn grades_price_their_seats_and_the_rest_is_standard() {
        let concert = NewConcert::try_from(request(vec![grade("VIP", 1, 10, 200_000)])).unwrap();
        assert_eq!(concert.title, "Winter Live");
        assert_eq!(concert.seat_plan.len(), 50);
        assert_eq!(concert.seat_plan[0].price, 200_000);
        assert_eq!(concert.seat_plan[9].grade, "VIP");
        assert_eq!(concert.seat_plan[10].price, 100_000);
        assert_eq!(concert.seat_plan[49].grade, "STANDARD");
    }

    fn freshness(ms: u64) -> SeatMapFreshness {
        SeatMapFreshness {
            seat_map_max_staleness_ms: ms,
        }
    }

    #[test]
    fn a_seat_map_answers_until_its_read_is_as_old_as_the_bound() {
        let read_at = Instant::now();
        let rule = freshness(250);
        assert!(rule.serves(read_at, read_at));
        assert!(rule.serves(read_at, read_at + Duration::from_millis(249)));
        assert!(!rule.serves(read_at, read_at + Duration::from_millis(250)));
        assert!(!rule.serves(read_at, read_at + Duration::from_secs(60)));
    }

    /// A request that began before the read it joins (its clock reading
    /// taken first) is answered by it: the read is newer than the request.
    #[test]
    fn a_read_begun_after_now_answers() {
        let now = Instant::now();
        assert!(freshness(250).serves(now + Duration::from_millis(5), now));
    }

    #[test]
    fn no_bound_reads_the_database_every_time() {
        let now = Instant::now();
        assert!(!freshness(0).serves(now, now));
    }

    #[test]
    fn invalid_concerts_are_refused() {
        let cases = vec![
            (
                request(vec![grade("VIP", 0, 10, 1)]),
                InvalidConcert::GradeRange("VIP".into()),
            ),
            (
                request(vec![grade("VIP", 5, 51, 1)]),
                InvalidConcert::GradeRange("VIP".into()),
            ),
            (
                request(vec![grade("A", 1, 5, 1), grade("B", 5, 9, 1)]),
                InvalidConcert::GradeOverlap(5),
            ),
            (request(vec![grade("A", 1, 5, 0)]), InvalidConcert::Price),
            (
                ConcertPlan {
                    seat_price: -1,
                    ..request(vec![])
                },
                InvalidConcert::Price,
            ),
            (
                ConcertPlan {
                    title: "  ".into(),
                    ..request(vec![])
                },
                InvalidConcert::Text("title"),
            ),
            (
                ConcertPlan {
                    schedules: vec![],
                    ..request(vec![])
                },
                InvalidConcert::ScheduleCount,
            ),
            (
                ConcertPlan {
                    title: "Winter\0Live".into(),
                    ..request(vec![])
                },
                InvalidConcert::ControlCharacter("title"),
            ),
            (
                ConcertPlan {
                    venue: "Olympic\u{0}Hall".into(),
                    ..request(vec![])
                },
                InvalidConcert::ControlCharacter("venue"),
            ),
            (
                request(vec![grade("V\0IP", 1, 5, 1)]),
                InvalidConcert::ControlCharacter("grade name"),
            ),
            (
                ConcertPlan {
                    title: "Winter\nLive".into(),
                    ..request(vec![])
                },
                InvalidConcert::ControlCharacter("title"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(NewConcert::try_from(input).unwrap_err(), expected);
        }
    }
}
