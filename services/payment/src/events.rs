//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, Service};
use ticket_runtime::{HandlerError, ServiceHandler, Tx};

use crate::app::saga;

pub struct PaymentEvents {
    pub wakers: saga::Wakers,
}

impl ServiceHandler for PaymentEvents {
    const SERVICE: Service = Service::Payment;

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ReservationHeld(e) => saga::reservation_held(tx, e)?,
            Event::ReservationConfirmed(e) => saga::reservation_confirmed(tx, e)?,
            Event::ReservationExpired(e) => saga::reservation_expired(tx, e)?,
            Event::ReservationCancelled(e) => saga::reservation_cancelled(tx, e)?,
            Event::QueuePassEnded(e) => saga::pass_ended(tx, e)?,
            _ => {}
        }
        saga::payment_step(tx, event)
    }

    fn committed(&self, event: &Envelope) {
        self.wakers.committed(event);
    }
}
