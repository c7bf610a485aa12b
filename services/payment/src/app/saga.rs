//! The payment's steps in the saga: keep the reservation projection, record
//! every step of each payment, and end it COMPLETED or FAILED. Each runs in
//! the consumer's transaction and publishes through the outbox.

use chrono::Utc;
use shared_events::{
    BalanceRefunded, CompletedReservation, Envelope, Event, PaymentCompleted, PaymentFailed,
    QueuePassEnded, Reason, ReservationCancelled, ReservationConfirmed, ReservationExpired,
    ReservationHeld, SeatSold,
};
use std::sync::Arc;
use ticket_runtime::http::waiters::Waiters;
use ticket_runtime::ids::{PaymentId, ReservationId};
use ticket_runtime::{DbResult, HandlerError, Tx};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{Payment, ReservationState, Status};
use crate::store::{self, HeldReservation};

/// Who waits for what a consumed event changed: long-polls of a payment
/// or a reservation, and the data-platform delivery job.
#[derive(Clone)]
pub struct Wakers {
    pub waiters: Waiters,
    /// Woken when a completed payment queued a data-platform delivery.
    pub deliveries: Arc<Notify>,
}

impl Wakers {
    /// After the transaction that applied `event` committed.
    pub fn committed(&self, event: &Envelope) {
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

pub fn reservation_held(tx: &mut Tx<'_>, held: &ReservationHeld) -> Result<(), HandlerError> {
    store::project_held(
        tx.conn(),
        &HeldReservation {
            reservation_id: held.reservation_id.into(),
            user_id: held.user_id.into(),
            concert_id: held.concert_id.into(),
            schedule_id: held.schedule_id.into(),
            // A seat number is 1 to 50.
            seat_no: i32::try_from(held.seat_no).unwrap_or(i32::MAX),
            price: held.price,
            status: ReservationState::Held,
            hold_expires_at: held.hold_expires_at.naive_utc(),
        },
    )?;
    Ok(())
}

pub fn reservation_confirmed(
    tx: &mut Tx<'_>,
    confirmed: &ReservationConfirmed,
) -> Result<(), HandlerError> {
    reservation_became(tx, confirmed.reservation_id, ReservationState::Confirmed)
}

pub fn reservation_expired(
    tx: &mut Tx<'_>,
    expired: &ReservationExpired,
) -> Result<(), HandlerError> {
    reservation_became(tx, expired.reservation_id, ReservationState::Expired)
}

pub fn reservation_cancelled(
    tx: &mut Tx<'_>,
    cancelled: &ReservationCancelled,
) -> Result<(), HandlerError> {
    reservation_became(tx, cancelled.reservation_id, ReservationState::Cancelled)
}

fn reservation_became(
    tx: &mut Tx<'_>,
    reservation: Uuid,
    state: ReservationState,
) -> Result<(), HandlerError> {
    store::project_status(tx.conn(), ReservationId::from(reservation), state)?;
    Ok(())
}

/// The queue ended a pass early: payments on it are refused from now on.
pub fn pass_ended(tx: &mut Tx<'_>, ended: &QueuePassEnded) -> Result<(), HandlerError> {
    ticket_runtime::db::passes::record_ended(tx.conn(), ended.token)?;
    Ok(())
}

/// If `event` is a step of a payment's saga: recorded on the payment, and
/// the payment ended where the step decides it.
pub fn payment_step(tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
    let Some(payment) = event.event.payment_id() else {
        return Ok(());
    };
    let Some(payment) = store::lock(tx.conn(), PaymentId::from(payment))? else {
        return Ok(());
    };
    let now = Utc::now();
    store::record_step(
        tx.conn(),
        payment.id,
        event.event_id,
        event.event_type().as_str(),
        detail_of(&event.event).as_deref(),
        now,
    )?;
    match &event.event {
        Event::BalanceDebitRejected(e) => fail(tx, Some(event), &payment, &e.reason, false)?,
        Event::ReservationConfirmationRejected(e) => {
            store::note_reason(tx.conn(), payment.id, &e.reason, now)?
        }
        Event::SeatSaleRejected(e) => store::note_reason(tx.conn(), payment.id, &e.reason, now)?,
        Event::BalanceRefunded(refunded) => refunded_for(tx, event, &payment, refunded)?,
        Event::SeatSold(sold) => complete(tx, event, &payment, sold)?,
        _ => {}
    }
    Ok(())
}

fn refunded_for(
    tx: &mut Tx<'_>,
    event: &Envelope,
    payment: &Payment,
    refunded: &BalanceRefunded,
) -> Result<(), HandlerError> {
    if payment.status != Status::Pending {
        store::mark_refunded(tx.conn(), payment.id, Utc::now())?;
        return Ok(());
    }
    // The refund says why; it may arrive before the event it answers (they
    // travel on different topics).
    let why = refunded
        .reason
        .clone()
        .or_else(|| payment.reason.as_deref().map(Reason::from))
        .unwrap_or(Reason::Refunded);
    fail(tx, Some(event), payment, &why, true)?;
    Ok(())
}

/// The seat is sold: the payment is COMPLETED, the fan's pass may end, and
/// the data platform hears of it after this commit.
fn complete(
    tx: &mut Tx<'_>,
    event: &Envelope,
    payment: &Payment,
    sold: &SeatSold,
) -> Result<(), HandlerError> {
    let now = Utc::now();
    // Sold after the payment already failed: the reservation service
    // cancels that confirmation on PaymentFailed, which releases the seat
    // and refunds; nothing is completed here.
    if !store::finish(tx.conn(), payment.id, Status::Completed, None, false, now)? {
        return Ok(());
    }
    let concert_id = store::projected(tx.conn(), payment.reservation_id)?
        .map(|p| p.concert_id.get())
        .unwrap_or_default();
    tx.reply(
        event,
        PaymentCompleted {
            payment_id: payment.id.get(),
            reservation_id: sold.reservation_id,
            user_id: payment.user_id.get(),
            concert_id,
            amount: payment.amount,
        },
    )?;
    let record = CompletedReservation {
        payment_id: payment.id.get(),
        reservation_id: sold.reservation_id,
        user_id: payment.user_id.get(),
        concert_id,
        schedule_id: sold.schedule_id,
        seat_no: sold.seat_no,
        amount: payment.amount,
        completed_at: now,
    };
    store::enqueue_delivery(tx.conn(), payment.id, &record, now)?;
    Ok(())
}

fn detail_of(event: &Event) -> Option<String> {
    match event {
        Event::BalanceDebitRejected(e) => Some(e.reason.to_string()),
        Event::ReservationConfirmationRejected(e) => Some(e.reason.to_string()),
        Event::SeatSaleRejected(e) => Some(e.reason.to_string()),
        Event::ReservationCancelled(e) => Some(e.reason.to_string()),
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
    why: &Reason,
    refunded: bool,
) -> DbResult<()> {
    let now = Utc::now();
    if store::finish(
        tx.conn(),
        payment.id,
        Status::Failed,
        Some(why),
        refunded,
        now,
    )? {
        let failed = PaymentFailed {
            payment_id: payment.id.get(),
            reservation_id: payment.reservation_id.get(),
            user_id: payment.user_id.get(),
            reason: why.clone(),
            refunded,
        };
        tx.publish(&match cause {
            Some(cause) => Envelope::caused_by(cause, failed),
            None => Envelope::new(failed),
        })?;
    }
    Ok(())
}
