//! The application layer: each use case in one local transaction, and the
//! decision of which events it publishes. HTTP calls come through
//! [`Reservations`]; events through [`saga`]; the sweeper through
//! [`Reservations::sweep`].

pub mod saga;

use chrono::Utc;
use shared_events::{
    Envelope, Reason, ReservationCancelled, ReservationExpired, ReservationRequested,
};
use std::time::Duration;
use ticket_runtime::auth::pass::{Pass, PassError};
use ticket_runtime::db::database_now;
use ticket_runtime::http::waiters::{wait_for, wait_for_row, Waiters};
use ticket_runtime::ids::{QueueTokenId, ReservationId, ScheduleId, UserId};
use ticket_runtime::{Db, DbError};

use crate::domain::{HoldPolicy, InvalidSeat, PassHoldLimit, Reservation, SeatNo, Status};
use crate::store::{self, NewReservation};

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    InvalidSeat(#[from] InvalidSeat),
    #[error(transparent)]
    PassHoldLimit(#[from] PassHoldLimit),
    #[error("no schedule {0}")]
    ScheduleNotFound(ScheduleId),
    #[error("no reservation {0}")]
    NotFound(ReservationId),
    #[error("a {0} reservation cannot be cancelled")]
    NotCancellable(Status),
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for ReservationError {
    fn is_transient(&self) -> bool {
        matches!(self, ReservationError::Unexpected(e) if e.is_transient())
    }
}

#[derive(Clone)]
pub struct Reservations {
    pub db: Db,
    pub policy: HoldPolicy,
    pub waiters: Waiters,
}

impl Reservations {
    /// Every reservation, a page at a time, for the admin audit.
    pub async fn page(
        &self,
        after: Option<ReservationId>,
        limit: i64,
    ) -> Result<Vec<Reservation>, ReservationError> {
        Ok(self
            .db
            .run(move |conn| store::page(conn, after, limit))
            .await?)
    }

    /// Asks the concert service for `seat_no` on `schedule_id` for the
    /// pass's holder, then waits briefly for the answer: the reservation as
    /// it is then, still PENDING if the answer has not come.
    pub async fn request_hold(
        &self,
        pass: &Pass,
        schedule_id: ScheduleId,
        seat_no: i64,
    ) -> Result<Reservation, ReservationError> {
        pass.check_not_ended::<ReservationError>(&self.db).await?;
        let seat_no = SeatNo::try_from(seat_no)?;
        let claims = pass.0.clone();
        let wait = Duration::from_millis(self.policy.decision_wait_ms);
        // A schedule created a moment ago may not have reached this
        // service's catalog yet: wait for it briefly rather than refuse it.
        let concert = wait_for_row(
            &self.waiters,
            &self.db,
            schedule_id.get(),
            wait,
            move |conn| store::concert_of_schedule(conn, schedule_id),
        )
        .await?
        .ok_or(ReservationError::ScheduleNotFound(schedule_id))?;
        pass.check_concert(concert)?;
        let new = NewReservation {
            id: ReservationId::generate(),
            pass_token: QueueTokenId::from(claims.jti),
            user_id: claims.user_id().into(),
            concert_id: concert,
            schedule_id,
            seat_no,
        };
        let (id, user) = (new.id, new.user_id);
        let policy = self.policy.clone();
        self.db
            .transaction(move |tx| {
                // Counted and written in one turn of the pass: two holds
                // asked for at once must not both find room under the cap.
                store::lock_pass(tx.conn(), new.pass_token)?;
                policy.admit_hold(store::live_for_pass(tx.conn(), new.pass_token)?)?;
                // On the database's clock, as the sweeper that gives up
                // stalled requests reads it.
                let now = database_now(tx.conn())?;
                store::insert_pending(tx.conn(), &new, now)?;
                tx.publish(&Envelope::new(ReservationRequested {
                    reservation_id: new.id.get(),
                    user_id: new.user_id.get(),
                    concert_id: new.concert_id.get(),
                    schedule_id: schedule_id.get(),
                    seat_no: seat_no.get(),
                }))?;
                Ok::<_, ReservationError>(())
            })
            .await?;
        self.watch(id, user, wait, |r| r.status != Status::Pending)
            .await
    }

    /// The fan's own reservation; another fan's is "not found" (not
    /// "forbidden": whether an id exists is nobody else's business).
    pub async fn own(
        &self,
        id: ReservationId,
        user: UserId,
    ) -> Result<Reservation, ReservationError> {
        self.db
            .run(move |conn| {
                store::find(conn, id)?
                    .filter(|r| r.user_id == user)
                    .ok_or(ReservationError::NotFound(id))
            })
            .await
    }

    /// The reservation once `changed` says so, or as it is after `wait`.
    pub async fn watch(
        &self,
        id: ReservationId,
        user: UserId,
        wait: Duration,
        changed: impl Fn(&Reservation) -> bool,
    ) -> Result<Reservation, ReservationError> {
        wait_for(
            &self.waiters,
            id.get(),
            wait,
            || self.own(id, user),
            changed,
        )
        .await
    }

    /// The fan gives up a pending or held reservation; the concert service
    /// releases the seat when it hears of it.
    pub async fn cancel(
        &self,
        id: ReservationId,
        user: UserId,
    ) -> Result<Reservation, ReservationError> {
        self.own(id, user).await?;
        let cancelled = self
            .db
            .transaction(move |tx| {
                let now = Utc::now();
                let current = store::lock(tx.conn(), id)?.ok_or(ReservationError::NotFound(id))?;
                let status = current.status;
                if !status.cancellable()
                    || !store::cancel(tx.conn(), id, status, &Reason::CancelledByUser, now)?
                {
                    return Err(ReservationError::NotCancellable(status));
                }
                tx.publish(&Envelope::new(ReservationCancelled {
                    reservation_id: id.get(),
                    schedule_id: current.schedule_id.get(),
                    seat_no: current.seat(),
                    reason: Reason::CancelledByUser,
                    payment_id: None,
                }))?;
                store::find(tx.conn(), id)?.ok_or(ReservationError::NotFound(id))
            })
            .await?;
        self.waiters.wake(id.get());
        Ok(cancelled)
    }

    /// Expires holds whose time ran out, and gives up requests the concert
    /// service never answered. Driven by the database, so a restart loses
    /// nothing; safe with two instances (conditional updates); judged on the
    /// database's clock, so an instance whose own clock runs ahead does not
    /// expire holds that are still running.
    pub async fn sweep(&self) -> Result<(), DbError> {
        let deadline = self.policy.pending_deadline();
        let changed = self
            .db
            .transaction(move |tx| {
                let now = database_now(tx.conn())?;
                let mut changed = Vec::new();
                for hold in store::due_holds(tx.conn(), now, 200)? {
                    if store::expire(tx.conn(), hold.id, now)? {
                        tx.publish(&Envelope::new(ReservationExpired {
                            reservation_id: hold.id.get(),
                            schedule_id: hold.schedule_id.get(),
                            seat_no: hold.seat(),
                        }))?;
                        changed.push(hold.id);
                    }
                }
                for stalled in store::stalled_requests(tx.conn(), now - deadline, 200)? {
                    if store::reject(tx.conn(), stalled.id, &Reason::HoldTimedOut, now)? {
                        // The concert service may still hold the seat later;
                        // this event, behind the request on the same
                        // partition, releases it.
                        tx.publish(&Envelope::new(ReservationCancelled {
                            reservation_id: stalled.id.get(),
                            schedule_id: stalled.schedule_id.get(),
                            seat_no: stalled.seat(),
                            reason: Reason::HoldTimedOut,
                            payment_id: None,
                        }))?;
                        changed.push(stalled.id);
                    }
                }
                Ok::<_, DbError>(changed)
            })
            .await?;
        changed
            .into_iter()
            .for_each(|id| self.waiters.wake(id.get()));
        Ok(())
    }
}
