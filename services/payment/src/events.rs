//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, EventType, Service, Topic};
use ticket_runtime::{EventHandler, HandlerError, Tx};

use crate::app::saga;

pub struct PaymentEvents {
    pub wakers: saga::Wakers,
}

impl EventHandler for PaymentEvents {
    fn name(&self) -> &str {
        Service::Payment.as_str()
    }

    fn topics(&self) -> Vec<Topic> {
        Service::Payment.consumes().to_vec()
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type.consumers().contains(&Service::Payment)
    }

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
