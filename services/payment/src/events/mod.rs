//! The payment saga as payment sees it: keep the reservation projection,
//! record every step, and end each payment COMPLETED or FAILED.

use shared_events::{Envelope, Event, EventType, PaymentCompleted, PaymentFailed, Topic};
use ticket_runtime::waiters::Waiters;
use ticket_runtime::{EventHandler, HandlerError, Tx};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{reason, Status};
use crate::store::{self, Payment};

pub struct PaymentEvents {
    pub waiters: Waiters,
    /// Woken when a completed payment queued a data-platform delivery.
    pub deliveries: std::sync::Arc<Notify>,
}

/// The payment an event is about, if any.
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
        "payment"
    }

    fn topics(&self) -> Vec<Topic> {
        vec![
            Topic::ReservationEvents,
            Topic::BalanceEvents,
            Topic::ConcertEvents,
            Topic::QueueEvents,
        ]
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::ReservationHeld
                | EventType::ReservationConfirmed
                | EventType::ReservationConfirmationRejected
                | EventType::ReservationExpired
                | EventType::ReservationCancelled
                | EventType::BalanceDebited
                | EventType::BalanceDebitRejected
                | EventType::BalanceRefunded
                | EventType::SeatSold
                | EventType::SeatSaleRejected
                | EventType::QueuePassEnded
        )
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match &event.event {
            Event::ReservationHeld(e) => store::project_held(tx.conn(), e)?,
            Event::ReservationConfirmed(e) => {
                store::project_status(tx.conn(), e.reservation_id, "CONFIRMED")?
            }
            Event::ReservationExpired(e) => {
                store::project_status(tx.conn(), e.reservation_id, "EXPIRED")?
            }
            Event::ReservationCancelled(e) => {
                store::project_status(tx.conn(), e.reservation_id, "CANCELLED")?
            }
            Event::QueuePassEnded(e) => ticket_runtime::pass::record_ended(tx.conn(), e.token)?,
            _ => {}
        }
        let Some(payment_id) = payment_of(&event.event) else {
            return Ok(());
        };
        let Some(payment) = store::lock(tx.conn(), payment_id)? else {
            return Ok(());
        };
        let detail = detail_of(&event.event);
        store::record_step(
            tx.conn(),
            payment_id,
            event.event_id,
            event.event_type().as_str(),
            detail.as_deref(),
        )?;
        match &event.event {
            Event::BalanceDebitRejected(e) => fail(tx, Some(event), &payment, &e.reason, false)?,
            Event::ReservationConfirmationRejected(e) => {
                store::note_reason(tx.conn(), payment_id, &e.reason)?
            }
            Event::SeatSaleRejected(e) => store::note_reason(tx.conn(), payment_id, &e.reason)?,
            Event::BalanceRefunded(refunded) => {
                if payment.status() == Status::Pending {
                    // The refund says why; it may arrive before the event it
                    // answers (they travel on different topics).
                    let why = Some(refunded.reason.clone())
                        .filter(|r| !r.is_empty())
                        .or_else(|| payment.reason.clone())
                        .unwrap_or_else(|| reason::REFUNDED.into());
                    fail(tx, Some(event), &payment, &why, true)?;
                } else {
                    store::mark_refunded(tx.conn(), payment_id)?;
                }
            }
            Event::SeatSold(e) => complete(tx, event, &payment, e)?,
            _ => {}
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

/// The seat is sold: the payment is COMPLETED, the fan's pass may end, and
/// the data platform hears of it after this commit.
fn complete(
    tx: &mut Tx<'_>,
    event: &Envelope,
    payment: &Payment,
    sold: &shared_events::SeatSold,
) -> Result<(), HandlerError> {
    // Sold after the payment already failed: the reservation service cancels
    // that confirmation on PaymentFailed, which releases the seat and
    // refunds; nothing is completed here.
    if !store::finish(tx.conn(), payment.uuid(), Status::Completed, None, false)? {
        return Ok(());
    }
    let projection = store::projected(tx.conn(), payment.reservation_uuid())?;
    let concert_id = projection
        .as_ref()
        .and_then(|p| Uuid::parse_str(&p.concert_id).ok())
        .unwrap_or_default();
    tx.publish(&Envelope::caused_by(
        event,
        PaymentCompleted {
            payment_id: payment.uuid(),
            reservation_id: sold.reservation_id,
            user_id: payment.user_uuid(),
            concert_id,
            amount: payment.amount,
        },
        event.partition_key.clone(),
    ))?;
    let body = serde_json::json!({
        "payment_id": payment.uuid(),
        "reservation_id": sold.reservation_id,
        "user_id": payment.user_id,
        "concert_id": concert_id,
        "schedule_id": sold.schedule_id,
        "seat_no": sold.seat_no,
        "amount": payment.amount,
        "completed_at": chrono::Utc::now(),
    });
    store::enqueue_delivery(tx.conn(), payment.uuid(), &body)?;
    Ok(())
}

fn detail_of(event: &Event) -> Option<String> {
    match event {
        Event::BalanceDebitRejected(e) => Some(e.reason.clone()),
        Event::ReservationConfirmationRejected(e) => Some(e.reason.clone()),
        Event::SeatSaleRejected(e) => Some(e.reason.clone()),
        Event::ReservationCancelled(e) => Some(e.reason.clone()),
        Event::BalanceRefunded(e) => Some(format!("refunded {}", e.amount)),
        Event::BalanceDebited(e) => Some(format!("debited {}", e.amount)),
        _ => None,
    }
}

/// Ends a PENDING payment as FAILED and says so; the services that took a
/// step for it compensate on `PaymentFailed`.
pub fn fail(
    tx: &mut Tx<'_>,
    cause: Option<&Envelope>,
    payment: &Payment,
    why: &str,
    refunded: bool,
) -> Result<(), diesel::result::Error> {
    if store::finish(
        tx.conn(),
        payment.uuid(),
        Status::Failed,
        Some(why),
        refunded,
    )? {
        let failed = PaymentFailed {
            payment_id: payment.uuid(),
            reservation_id: payment.reservation_uuid(),
            user_id: payment.user_uuid(),
            reason: why.into(),
            refunded,
        };
        let key = payment.reservation_id.clone();
        tx.publish(&match cause {
            Some(cause) => Envelope::caused_by(cause, failed, key),
            None => Envelope::new(failed, key),
        })?;
    }
    Ok(())
}
