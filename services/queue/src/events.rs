//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, Service};
use ticket_runtime::{HandlerError, ServiceHandler, Tx};

use crate::app::saga;

pub struct QueueEvents;

impl ServiceHandler for QueueEvents {
    const SERVICE: Service = Service::Queue;

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ConcertScheduled(scheduled) => saga::concert_scheduled(tx, scheduled)?,
            Event::PaymentCompleted(paid) => saga::payment_completed(tx, event, paid)?,
            _ => {}
        }
        Ok(())
    }
}
