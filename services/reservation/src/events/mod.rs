//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, EventType, Service, Topic};
use ticket_runtime::http::waiters::Waiters;
use ticket_runtime::{EventHandler, HandlerError, Tx};
use uuid::Uuid;

use crate::app::saga;

pub struct ReservationEvents {
    pub waiters: Waiters,
}

/// The reservation (or schedule) an event changes, whose long-polls to wake.
fn changed_by(event: &Event) -> Option<Uuid> {
    match event {
        Event::SeatHeld(e) => Some(e.reservation_id),
        Event::SeatHoldRejected(e) => Some(e.reservation_id),
        Event::SeatSaleRejected(e) => Some(e.reservation_id),
        Event::BalanceDebited(e) => Some(e.reservation_id),
        Event::PaymentFailed(e) => Some(e.reservation_id),
        Event::SeatReleased(e) => Some(e.reservation_id),
        Event::ConcertScheduled(e) => Some(e.schedule_id),
        _ => None,
    }
}

impl EventHandler for ReservationEvents {
    fn name(&self) -> &str {
        Service::Reservation.as_str()
    }

    fn topics(&self) -> Vec<Topic> {
        Service::Reservation.consumes().to_vec()
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type.consumers().contains(&Service::Reservation)
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ConcertScheduled(e) => saga::concert_scheduled(tx, e)?,
            Event::QueuePassEnded(e) => saga::pass_ended(tx, e)?,
            Event::SeatHeld(e) => saga::seat_held(tx, event, e)?,
            Event::SeatHoldRejected(e) => saga::seat_hold_rejected(tx, event, e)?,
            Event::SeatReleased(e) => saga::seat_released(tx, event, e)?,
            Event::BalanceDebited(e) => saga::balance_debited(tx, event, e)?,
            Event::PaymentFailed(e) => saga::payment_failed(tx, event, e)?,
            Event::SeatSaleRejected(e) => {
                saga::seat_sale_rejected(tx, event, e.reservation_id.into(), e.payment_id.into())?
            }
            _ => {}
        }
        Ok(())
    }

    fn committed(&self, event: &Envelope) {
        if let Some(id) = changed_by(&event.event) {
            self.waiters.wake(id);
        }
    }
}
