//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, EventType, Service, Topic};
use ticket_runtime::{EventHandler, HandlerError, Tx};

use crate::app::saga;

pub struct QueueEvents;

impl EventHandler for QueueEvents {
    fn name(&self) -> &str {
        Service::Queue.as_str()
    }

    fn topics(&self) -> Vec<Topic> {
        Service::Queue.consumes().to_vec()
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type.consumers().contains(&Service::Queue)
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ConcertScheduled(scheduled) => saga::concert_scheduled(tx, scheduled)?,
            Event::PaymentCompleted(paid) => saga::payment_completed(tx, event, paid)?,
            _ => {}
        }
        Ok(())
    }
}
