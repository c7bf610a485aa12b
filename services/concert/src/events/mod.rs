//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, ReservationCancelled, ReservationExpired, Service};
use ticket_runtime::{HandlerError, ServiceHandler, Tx};

use crate::app::saga;
use crate::HoldPolicy;

pub struct ConcertEvents {
    pub holds: HoldPolicy,
}

impl ServiceHandler for ConcertEvents {
    const SERVICE: Service = Service::Concert;

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ReservationRequested(e) => {
                saga::reservation_requested(tx, event, e, &self.holds)?
            }
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
            }) => saga::reservation_ended(
                tx,
                event,
                (*reservation_id).into(),
                (*schedule_id).into(),
                *seat_no,
            )?,
            Event::ReservationConfirmed(e) => saga::reservation_confirmed(tx, event, e)?,
            _ => {}
        }
        Ok(())
    }
}
