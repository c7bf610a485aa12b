//! Reactions to other services' events: learn which concerts exist, and end
//! a fan's pass once their payment completed.

use shared_events::{Envelope, Event, EventType, Topic};
use ticket_runtime::{EventHandler, HandlerError, Tx};

use crate::store;

pub struct QueueEvents;

impl EventHandler for QueueEvents {
    fn name(&self) -> &str {
        "queue"
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::ConcertEvents, Topic::PaymentEvents]
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::ConcertScheduled | EventType::PaymentCompleted
        )
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ConcertScheduled(scheduled) => {
                store::remember_concert(tx.conn(), scheduled.concert_id)?
            }
            Event::PaymentCompleted(paid) => {
                store::end_pass_after_payment(tx, event, paid.user_id, paid.concert_id)?;
            }
            _ => {}
        }
        Ok(())
    }
}
