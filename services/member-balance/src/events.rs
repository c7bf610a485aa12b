//! Events in: decode, then hand each to its step in [`crate::app::saga`].

use shared_events::{Envelope, Event, Service};
use ticket_runtime::{HandlerError, ServiceHandler, Tx};

use crate::app::saga;

pub struct BalanceEvents;

impl ServiceHandler for BalanceEvents {
    const SERVICE: Service = Service::MemberBalance;

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
