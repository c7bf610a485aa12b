//! The application layer: each use case in one local transaction, and the
//! decision of which events it publishes. HTTP calls come through
//! [`Catalog`]; events through [`saga`]; the lapsed-hold job is
//! [`Catalog::release_lapsed_holds`]. Seat maps are answered from memory
//! ([`seat_maps`]); every use case or saga step that changes seats tells
//! [`SeatMaps::changed`] once it committed.

pub mod saga;
pub mod seat_maps;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use shared_events::{ConcertScheduled, Envelope, SeatReleased};
use ticket_runtime::db::database_now;
use ticket_runtime::ids::{ConcertId, ScheduleId};
use ticket_runtime::{Clock, Db, DbError, DbResult, Tx};

use crate::domain::{
    demo_catalog, Concert, HoldPolicy, InvalidConcert, NewConcert, Schedule, TakenSeat,
    SEATS_PER_SCHEDULE,
};
use crate::store;
pub use seat_maps::{RenderSeatMap, SeatMaps};

#[derive(Debug, thiserror::Error)]
pub enum ConcertError {
    #[error("no concert {0}")]
    ConcertNotFound(ConcertId),
    #[error("no schedule {0}")]
    ScheduleNotFound(ScheduleId),
    #[error(transparent)]
    Invalid(#[from] InvalidConcert),
    #[error("the seat map could not be written")]
    SeatMap(#[source] serde_json::Error),
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for ConcertError {
    fn is_transient(&self) -> bool {
        matches!(self, ConcertError::Unexpected(e) if e.is_transient())
    }
}

#[derive(Clone)]
pub struct Catalog {
    pub db: Db,
    pub holds: HoldPolicy,
    /// This instance's clock: when it added a concert.
    pub clock: Clock,
    /// The seat maps answered from memory, shared with [`saga::SeatSaga`].
    pub seat_maps: SeatMaps,
}

impl Catalog {
    /// Every HELD or SOLD seat, a page at a time, for the admin audit.
    pub async fn taken_seats(
        &self,
        after: Option<(ScheduleId, i32)>,
        limit: i64,
    ) -> Result<Vec<TakenSeat>, ConcertError> {
        self.db
            .run(move |conn| Ok(store::taken_seat_page(conn, after, limit)?))
            .await
    }

    pub async fn concerts(&self) -> Result<Vec<Concert>, ConcertError> {
        self.db.run(|conn| Ok(store::list_concerts(conn)?)).await
    }

    pub async fn schedules(&self, concert: ConcertId) -> Result<Vec<Schedule>, ConcertError> {
        self.db
            .run(move |conn| {
                if !store::concert_exists(conn, concert)? {
                    return Err(ConcertError::ConcertNotFound(concert));
                }
                Ok(store::schedules_of(conn, concert)?)
            })
            .await
    }

    /// A schedule's seats as the response body, from memory: at most
    /// `seat_map_max_staleness_ms` old, and never older than this
    /// instance's last committed change of them.
    pub async fn seat_map(&self, schedule: ScheduleId) -> Result<Bytes, ConcertError> {
        self.seat_maps.get(&self.db, schedule).await
    }

    /// Adds a concert to the catalog; the other services learn of each
    /// schedule through `ConcertScheduled`, published in the same
    /// transaction. Its schedules are new to the seat maps too: an
    /// unknown schedule is never kept, so they show at once.
    pub async fn create(
        &self,
        concert: NewConcert,
    ) -> Result<(Concert, Vec<Schedule>), ConcertError> {
        let clock = self.clock;
        self.db
            .transaction(move |tx| Ok(create(tx, &concert, clock.now())?))
            .await
    }

    /// The demo catalog, only into an empty catalog, and once however many
    /// instances start together.
    pub async fn seed_demo(&self) -> Result<(), DbError> {
        let clock = self.clock;
        self.db
            .transaction(move |tx| {
                let now = clock.now();
                if !store::claim_seed(tx.conn(), "demo", now)?
                    || store::concert_count(tx.conn())? > 0
                {
                    return Ok(());
                }
                let first_evening = now
                    .date_naive()
                    .and_hms_opt(19, 0, 0)
                    .unwrap_or_default()
                    .and_utc();
                for concert in demo_catalog(first_evening) {
                    create(tx, &concert, now)?;
                }
                tracing::info!("demo catalog created");
                Ok::<_, DbError>(())
            })
            .await
    }

    /// Releases every seat HELD past its expiry and the grace, publishing
    /// `SeatReleased` for each, so that no seat stays HELD forever whatever
    /// happened to the reservation's events. Safe with two instances: each
    /// release is a conditional update. Judged on the database's clock,
    /// which set the expiry: an instance whose own clock runs ahead must not
    /// release seats still held.
    pub async fn release_lapsed_holds(&self) -> Result<(), DbError> {
        let grace = self.holds.release_grace();
        let released = self
            .db
            .transaction(move |tx| {
                let now = database_now(tx.conn())?;
                let cutoff = now - grace;
                let mut released = Vec::new();
                for hold in store::lapsed_holds(tx.conn(), cutoff, 200)? {
                    if !store::release_lapsed(tx.conn(), &hold, cutoff, now)? {
                        continue;
                    }
                    released.push(hold.schedule_id);
                    // A HELD seat always names its reservation; one that
                    // does not is released all the same, with nobody to tell.
                    let Some(reservation) = hold.reservation_id else {
                        continue;
                    };
                    tx.publish(&Envelope::new(SeatReleased {
                        reservation_id: reservation.get(),
                        schedule_id: hold.schedule_id.get(),
                        seat_no: hold.seat_no.unsigned_abs(),
                    }))?;
                }
                Ok::<_, DbError>(released)
            })
            .await?;
        if !released.is_empty() {
            tracing::info!(released = released.len(), "lapsed seat holds released");
        }
        for schedule in released {
            self.seat_maps.changed(schedule);
        }
        Ok(())
    }
}

fn create(
    tx: &mut Tx<'_>,
    concert: &NewConcert,
    now: DateTime<Utc>,
) -> DbResult<(Concert, Vec<Schedule>)> {
    let id = ConcertId::generate();
    let schedule_ids: Vec<ScheduleId> = concert
        .schedules
        .iter()
        .map(|_| ScheduleId::generate())
        .collect();
    let created = store::insert_concert(tx.conn(), id, concert, &schedule_ids, now)?;
    let mut schedules = Vec::with_capacity(schedule_ids.len());
    for (schedule_id, starts_at) in schedule_ids.into_iter().zip(&concert.schedules) {
        tx.publish(&Envelope::new(ConcertScheduled {
            concert_id: id.get(),
            schedule_id: schedule_id.get(),
            starts_at: *starts_at,
            seat_count: SEATS_PER_SCHEDULE,
        }))?;
        schedules.push(Schedule {
            id: schedule_id,
            concert_id: id,
            starts_at: *starts_at,
            available_seats: i64::from(SEATS_PER_SCHEDULE),
        });
    }
    Ok((created, schedules))
}
