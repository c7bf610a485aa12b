//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, EventType, Service, Topic};
use ticket_runtime::{EventHandler, HandlerError, Tx};

use crate::app::saga;

pub struct BalanceEvents;

impl EventHandler for BalanceEvents {
    fn name(&self) -> &str {
        Service::MemberBalance.as_str()
    }

    fn topics(&self) -> Vec<Topic> {
        Service::MemberBalance.consumes().to_vec()
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type.consumers().contains(&Service::MemberBalance)
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::PaymentRequested(e) => saga::payment_requested(tx, event, e)?,
            Event::ReservationConfirmationRejected(e) => {
                saga::refund(tx, event, e.payment_id.into(), &e.reason)?
            }
            Event::ReservationCancelled(e) => {
                if let Some(payment) = e.payment_id {
                    saga::refund(tx, event, payment.into(), &e.reason)?;
                }
            }
            Event::PaymentFailed(e) => saga::refund(tx, event, e.payment_id.into(), &e.reason)?,
            _ => {}
        }
        Ok(())
    }
}
