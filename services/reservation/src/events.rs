//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, Service};
use ticket_runtime::{HandlerError, ServiceHandler, Tx};

use crate::app::saga;

pub struct ReservationEvents {
    pub wakers: saga::Wakers,
}

impl ServiceHandler for ReservationEvents {
    const SERVICE: Service = Service::Reservation;

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
        self.wakers.committed(event);
    }
}
