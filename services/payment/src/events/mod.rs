//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, EventType, Service, Topic};
use std::sync::Arc;
use ticket_runtime::http::waiters::Waiters;
use ticket_runtime::{EventHandler, HandlerError, Tx};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::app::saga;
use crate::domain::ReservationState;

pub struct PaymentEvents {
    pub waiters: Waiters,
    /// Woken when a completed payment queued a data-platform delivery.
    pub deliveries: Arc<Notify>,
}

/// The payment an event is a step of, if any.
fn payment_of(event: &Event) -> Option<Uuid> {
    match event {
        Event::BalanceDebited(e) => Some(e.payment_id),
        Event::BalanceDebitRejected(e) => Some(e.payment_id),
        Event::BalanceRefunded(e) => Some(e.payment_id),
        Event::ReservationConfirmed(e) => Some(e.payment_id),
        Event::ReservationConfirmationRejected(e) => Some(e.payment_id),
        Event::ReservationCancelled(e) => e.payment_id,
        Event::SeatSold(e) => Some(e.payment_id),
        Event::SeatSaleRejected(e) => Some(e.payment_id),
        _ => None,
    }
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
        if let Some(payment) = payment_of(&event.event) {
            saga::step(tx, event, payment.into())?;
        }
        Ok(())
    }

    fn committed(&self, event: &Envelope) {
        if let Event::ReservationHeld(e) = &event.event {
            self.waiters.wake(e.reservation_id);
        }
        if let Some(payment_id) = payment_of(&event.event) {
            self.waiters.wake(payment_id);
        }
        if matches!(event.event, Event::SeatSold(_)) {
            self.deliveries.notify_one();
        }
    }
}
