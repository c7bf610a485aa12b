//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, ReservationCancelled, ReservationExpired, Service};
use ticket_runtime::{HandlerError, ServiceHandler, Tx};

use crate::app::saga::SeatSaga;

pub struct ConcertEvents {
    pub saga: SeatSaga,
}

impl ServiceHandler for ConcertEvents {
    const SERVICE: Service = Service::Concert;

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ReservationRequested(e) => self.saga.reservation_requested(tx, event, e)?,
            // Expired or cancelled, the seat goes back the same way.
            Event::ReservationExpired(ReservationExpired {
                reservation_id,
                schedule_id,
                seat_no,
            })
            | Event::ReservationCancelled(ReservationCancelled {
                reservation_id,
                schedule_id,
                seat_no,
                ..
            }) => self.saga.reservation_ended(
                tx,
                event,
                (*reservation_id).into(),
                (*schedule_id).into(),
                *seat_no,
            )?,
            Event::ReservationConfirmed(e) => self.saga.reservation_confirmed(tx, event, e)?,
            _ => {}
        }
        Ok(())
    }

    fn committed(&self, event: &Envelope) {
        self.saga.committed(event);
    }
}
