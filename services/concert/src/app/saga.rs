//! The seat side of the sagas: hold, release and sell seats for
//! reservations. Each runs in the consumer's transaction and answers
//! through the outbox; once it committed, the schedule's seat map in
//! memory is forgotten ([`SeatSaga::committed`]).

use chrono::Utc;
use shared_events::{
    Envelope, Event, Reason, ReservationConfirmed, ReservationRequested, SeatHeld,
    SeatHoldRejected, SeatReleased, SeatSaleRejected, SeatSold,
};
use ticket_runtime::db::database_now;
use ticket_runtime::ids::{ReservationId, ScheduleId};
use ticket_runtime::{HandlerError, Tx};

use super::SeatMaps;
use crate::domain::HoldPolicy;
use crate::store::{self, HoldOutcome};

/// The seat side of the sagas as the consumer runs it, with the policy
/// seats are held by: `events` hands each event to its step and knows no
/// rule.
#[derive(Clone)]
pub struct SeatSaga {
    pub holds: HoldPolicy,
    /// The seat maps this instance answers, shared with the catalog.
    pub seat_maps: SeatMaps,
}

impl SeatSaga {
    /// After the transaction that applied `event` committed: the seats of
    /// its schedule may have changed, so this instance reads them again on
    /// the next request (a refused hold costs one needless read).
    pub fn committed(&self, event: &Envelope) {
        if let Some(schedule) = seats_changed_by(&event.event) {
            self.seat_maps.changed(schedule);
        }
    }

    /// Holds the seat for the reservation until the policy's expiry, which
    /// travels with the hold, or says why not. The expiry is on the
    /// database's clock, the one the backstop judges it by.
    pub fn reservation_requested(
        &self,
        tx: &mut Tx<'_>,
        event: &Envelope,
        requested: &ReservationRequested,
    ) -> Result<(), HandlerError> {
        let now = database_now(tx.conn())?;
        let outcome = store::hold_seat(
            tx.conn(),
            requested.concert_id.into(),
            requested.schedule_id.into(),
            seat(requested.seat_no),
            requested.reservation_id.into(),
            now + self.holds.hold_ttl(),
            now,
        )?;
        let reply: Event = match outcome {
            HoldOutcome::Held {
                price,
                hold_expires_at,
            } => SeatHeld {
                reservation_id: requested.reservation_id,
                schedule_id: requested.schedule_id,
                seat_no: requested.seat_no,
                price,
                hold_expires_at: Some(hold_expires_at),
            }
            .into(),
            HoldOutcome::Rejected(reason) => SeatHoldRejected {
                reservation_id: requested.reservation_id,
                schedule_id: requested.schedule_id,
                seat_no: requested.seat_no,
                reason,
            }
            .into(),
        };
        tx.reply(event, reply)?;
        Ok(())
    }

    /// The reservation expired or was cancelled: its seat is free again.
    pub fn reservation_ended(
        &self,
        tx: &mut Tx<'_>,
        event: &Envelope,
        reservation: ReservationId,
        schedule: ScheduleId,
        seat_no: u32,
    ) -> Result<(), HandlerError> {
        if store::release_seat(tx.conn(), schedule, seat(seat_no), reservation, Utc::now())? {
            tx.reply(
                event,
                SeatReleased {
                    reservation_id: reservation.get(),
                    schedule_id: schedule.get(),
                    seat_no,
                },
            )?;
        }
        Ok(())
    }

    /// The reservation is paid for: the seat it holds is sold to the payment.
    pub fn reservation_confirmed(
        &self,
        tx: &mut Tx<'_>,
        event: &Envelope,
        confirmed: &ReservationConfirmed,
    ) -> Result<(), HandlerError> {
        let sold = store::sell_seat(
            tx.conn(),
            confirmed.schedule_id.into(),
            seat(confirmed.seat_no),
            confirmed.reservation_id.into(),
            confirmed.payment_id.into(),
            Utc::now(),
        )?;
        let reply: Event = if sold {
            SeatSold {
                reservation_id: confirmed.reservation_id,
                payment_id: confirmed.payment_id,
                schedule_id: confirmed.schedule_id,
                seat_no: confirmed.seat_no,
            }
            .into()
        } else {
            SeatSaleRejected {
                reservation_id: confirmed.reservation_id,
                payment_id: confirmed.payment_id,
                reason: Reason::NotHeld,
            }
            .into()
        };
        tx.reply(event, reply)?;
        Ok(())
    }
}

/// The schedule whose seats a step may change for `event`.
fn seats_changed_by(event: &Event) -> Option<ScheduleId> {
    let schedule = match event {
        Event::ReservationRequested(e) => e.schedule_id,
        Event::ReservationExpired(e) => e.schedule_id,
        Event::ReservationCancelled(e) => e.schedule_id,
        Event::ReservationConfirmed(e) => e.schedule_id,
        _ => return None,
    };
    Some(schedule.into())
}

/// Seat numbers in events are 1 to 50; one out of `i32` matches no seat.
fn seat(seat_no: u32) -> i32 {
    i32::try_from(seat_no).unwrap_or(i32::MAX)
}
