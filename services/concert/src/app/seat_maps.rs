//! The seat maps this instance answers from memory, kept as the response
//! body: read from the database once and shared by every request while
//! [`SeatMapFreshness`] lets the read answer, forgotten as soon as a seat
//! change of this instance commits. Requests for a schedule that is not
//! in memory (or whose copy is too old) wait for one read of it together.
//!
//! A map of reads, each behind a `tokio::sync::OnceCell`: what it needs —
//! one read per schedule shared by whoever asks while it is fresh, dropped
//! on this instance's commits, the age decided by the domain's rule with
//! the clock passed in — is a few lines over the standard map; a caching
//! crate would bring its own clock and expiry instead of the rule.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use ticket_runtime::ids::ScheduleId;
use ticket_runtime::Db;
use tokio::sync::OnceCell;

use super::ConcertError;
use crate::domain::{Seat, SeatMapFreshness};
use crate::store;

/// Writes a schedule's seats as the response body: the API's format,
/// handed over where the service is wired.
pub type RenderSeatMap = fn(Vec<Seat>) -> serde_json::Result<Vec<u8>>;

#[derive(Clone)]
pub struct SeatMaps {
    inner: Arc<Inner>,
}

struct Inner {
    freshness: SeatMapFreshness,
    render: RenderSeatMap,
    reads: Mutex<HashMap<ScheduleId, Arc<SeatMapRead>>>,
}

/// One read of a schedule's seats, begun at `read_at`: every request that
/// comes while the rule lets it answer shares it, also while it is still
/// under way. Only schedules that exist stay in the map, so the catalog
/// bounds its size (about 3 KB a schedule).
struct SeatMapRead {
    read_at: Instant,
    body: OnceCell<Bytes>,
}

impl SeatMaps {
    pub fn new(freshness: SeatMapFreshness, render: RenderSeatMap) -> SeatMaps {
        SeatMaps {
            inner: Arc::new(Inner {
                freshness,
                render,
                reads: Mutex::default(),
            }),
        }
    }

    /// The seat map of `schedule` as the response body; an unknown
    /// schedule is `ScheduleNotFound`, read again on every request (a
    /// schedule created by another instance shows at once, and made-up ids
    /// take no memory).
    pub async fn get(&self, db: &Db, schedule: ScheduleId) -> Result<Bytes, ConcertError> {
        let read = self.read_for(schedule, Instant::now());
        if let Some(body) = read.body.get() {
            return Ok(body.clone());
        }
        let render = self.inner.render;
        let loaded = read
            .body
            .get_or_try_init(|| {
                db.run(move |conn| {
                    let seats = store::seats_of(conn, schedule)?
                        .ok_or(ConcertError::ScheduleNotFound(schedule))?;
                    let body = render(seats).map_err(ConcertError::SeatMap)?;
                    Ok::<_, ConcertError>(Bytes::from(body))
                })
            })
            .await;
        match loaded {
            Ok(body) => Ok(body.clone()),
            Err(error) => {
                self.forget(schedule, &read);
                Err(error)
            }
        }
    }

    /// Forgets the seat map of `schedule`: call once a change of its seats
    /// has committed. The next request reads it again; a read begun before
    /// the commit still answers the requests already waiting for it (they
    /// came before the commit) and no later one.
    pub fn changed(&self, schedule: ScheduleId) {
        self.reads().remove(&schedule);
    }

    /// The read that answers a request for `schedule` arriving at `now`:
    /// the current one while the rule lets it, else a new one.
    fn read_for(&self, schedule: ScheduleId, now: Instant) -> Arc<SeatMapRead> {
        let mut reads = self.reads();
        if let Some(read) = reads.get(&schedule) {
            if self.inner.freshness.serves(read.read_at, now) {
                return read.clone();
            }
        }
        let read = Arc::new(SeatMapRead {
            read_at: now,
            body: OnceCell::new(),
        });
        reads.insert(schedule, read.clone());
        read
    }

    /// Drops a read that failed (the schedule is unknown, the database
    /// did not answer), unless a newer one has taken its place.
    fn forget(&self, schedule: ScheduleId, failed: &Arc<SeatMapRead>) {
        let mut reads = self.reads();
        if reads
            .get(&schedule)
            .is_some_and(|read| Arc::ptr_eq(read, failed))
        {
            reads.remove(&schedule);
        }
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, HashMap<ScheduleId, Arc<SeatMapRead>>> {
        // The map stays whole whatever panicked while holding it.
        self.inner
            .reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
