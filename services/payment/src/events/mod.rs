//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, Service};
use std::sync::Arc;
use ticket_runtime::http::waiters::Waiters;
use ticket_runtime::{HandlerError, ServiceHandler, Tx};
use tokio::sync::Notify;

use crate::app::saga;
use crate::domain::ReservationState;

pub struct PaymentEvents {
    pub waiters: Waiters,
    /// Woken when a completed payment queued a data-platform delivery.
    pub deliveries: Arc<Notify>,
}

impl ServiceHandler for PaymentEvents {
    const SERVICE: Service = Service::Payment;

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ReservationHeld(e) => saga::reservation_held(tx, e)?,
            Event::ReservationConfirmed(e) => {
                saga::reservation_became(tx, e.reservation_id.into(), ReservationState::Confirmed)?
            }
            Event::ReservationExpired(e) => {
                saga::reservation_became(tx, e.reservation_id.into(), ReservationState::Expired)?
            }
            Event::ReservationCancelled(e) => {
                saga::reservation_became(tx, e.reservation_id.into(), ReservationState::Cancelled)?
            }
            Event::QueuePassEnded(e) => {
                ticket_runtime::db::passes::record_ended(tx.conn(), e.token)?
            }
            _ => {}
        }
        if let Some(payment) = event.event.payment_id() {
            saga::step(tx, event, payment.into())?;
        }
        Ok(())
    }

    fn committed(&self, event: &Envelope) {
        if let Event::ReservationHeld(e) = &event.event {
            self.waiters.wake(e.reservation_id);
        }
        if let Some(payment_id) = event.event.payment_id() {
            self.waiters.wake(payment_id);
        }
        if matches!(event.event, Event::SeatSold(_)) {
            self.deliveries.notify_one();
        }
    }
}
