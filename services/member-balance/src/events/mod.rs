//! The money side of the payment saga: one debit per payment, and refunds
//! when a later step fails.

use shared_events::{
    BalanceDebitRejected, BalanceDebited, BalanceRefunded, Envelope, Event, EventType, Topic,
};
use ticket_runtime::{EventHandler, HandlerError, Tx};
use uuid::Uuid;

use crate::store::{self, Debit};

pub const INSUFFICIENT_BALANCE: &str = "INSUFFICIENT_BALANCE";

pub struct BalanceEvents;

impl EventHandler for BalanceEvents {
    fn name(&self) -> &str {
        "member-balance"
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::PaymentEvents, Topic::ReservationEvents]
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::PaymentRequested
                | EventType::PaymentFailed
                | EventType::ReservationConfirmationRejected
                | EventType::ReservationCancelled
        )
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::PaymentRequested(e) => {
                if e.amount <= 0 {
                    return Err(HandlerError::Rejected(format!(
                        "payment {} has amount {}",
                        e.payment_id, e.amount
                    )));
                }
                let reply: Option<Event> = match store::debit_for_payment(
                    tx.conn(),
                    e.payment_id,
                    e.reservation_id,
                    e.user_id,
                    e.amount,
                )? {
                    Debit::Taken(entry) => Some(
                        BalanceDebited {
                            payment_id: e.payment_id,
                            reservation_id: e.reservation_id,
                            user_id: e.user_id,
                            entry_id: Uuid::parse_str(&entry.id).expect("own uuid"),
                            amount: e.amount,
                        }
                        .into(),
                    ),
                    Debit::AlreadyTaken => None,
                    Debit::Insufficient => Some(
                        BalanceDebitRejected {
                            payment_id: e.payment_id,
                            reservation_id: e.reservation_id,
                            user_id: e.user_id,
                            amount: e.amount,
                            reason: INSUFFICIENT_BALANCE.into(),
                        }
                        .into(),
                    ),
                };
                if let Some(reply) = reply {
                    tx.publish(&Envelope::caused_by(
                        event,
                        reply,
                        event.partition_key.clone(),
                    ))?;
                }
            }
            Event::ReservationConfirmationRejected(e) => {
                refund(tx, event, e.payment_id, &e.reason)?
            }
            Event::ReservationCancelled(e) => {
                if let Some(payment_id) = e.payment_id {
                    refund(tx, event, payment_id, &e.reason)?;
                }
            }
            Event::PaymentFailed(e) => refund(tx, event, e.payment_id, &e.reason)?,
            _ => {}
        }
        Ok(())
    }
}

fn refund(
    tx: &mut Tx<'_>,
    cause: &Envelope,
    payment_id: Uuid,
    reason: &str,
) -> Result<(), HandlerError> {
    if let Some(refund) = store::refund_payment(tx.conn(), payment_id)? {
        tx.publish(&Envelope::caused_by(
            cause,
            BalanceRefunded {
                payment_id,
                reservation_id: refund.reservation_id,
                user_id: refund.user_id,
                entry_id: Uuid::parse_str(&refund.entry.id).expect("own uuid"),
                amount: refund.entry.amount,
                reason: reason.into(),
            },
            cause.partition_key.clone(),
        ))?;
    }
    Ok(())
}
