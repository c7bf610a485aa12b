//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, EventType, Topic};
use ticket_runtime::{EventHandler, HandlerError, Tx};

use crate::app::saga;
use crate::HoldPolicy;

pub struct ConcertEvents {
    pub holds: HoldPolicy,
}

impl EventHandler for ConcertEvents {
    fn name(&self) -> &str {
        "concert"
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::ReservationEvents]
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::ReservationRequested
                | EventType::ReservationExpired
                | EventType::ReservationCancelled
                | EventType::ReservationConfirmed
        )
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ReservationRequested(e) => {
                saga::reservation_requested(tx, event, e, &self.holds)?
            }
            Event::ReservationExpired(e) => saga::reservation_ended(
                tx,
                event,
                e.reservation_id.into(),
                e.schedule_id.into(),
                e.seat_no,
            )?,
            Event::ReservationCancelled(e) => saga::reservation_ended(
                tx,
                event,
                e.reservation_id.into(),
                e.schedule_id.into(),
                e.seat_no,
            )?,
            Event::ReservationConfirmed(e) => saga::reservation_confirmed(tx, event, e)?,
            _ => {}
        }
        Ok(())
    }
}
