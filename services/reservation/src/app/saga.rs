//! The reservation's steps in the sagas: hold outcomes from the concert
//! service, confirmations for debits, and compensations. Each runs in the
//! consumer's transaction (which also records the event as applied) and
//! publishes the step's outcome through the outbox.

use chrono::Utc;
use shared_events::{
    BalanceDebited, ConcertScheduled, Envelope, PaymentFailed, QueuePassEnded, Reason,
    ReservationCancelled, ReservationConfirmationRejected, ReservationConfirmed,
    ReservationExpired, ReservationHeld, ReservationRejected, SeatHeld, SeatHoldRejected,
    SeatReleased,
};
use ticket_runtime::db::database_now;
use ticket_runtime::ids::{PaymentId, ReservationId};
use ticket_runtime::{HandlerError, Tx};

use crate::domain::{decide_confirmation, Confirmation, Hold, Status};
use crate::store;

/// The schedules this service knows, to check that a pass is for the
/// schedule's concert.
pub fn concert_scheduled(
    tx: &mut Tx<'_>,
    scheduled: &ConcertScheduled,
) -> Result<(), HandlerError> {
    store::remember_schedule(
        tx.conn(),
        scheduled.schedule_id.into(),
        scheduled.concert_id.into(),
    )?;
    Ok(())
}

/// A pass that ended early (its payment completed) admits no more holds.
pub fn pass_ended(tx: &mut Tx<'_>, ended: &QueuePassEnded) -> Result<(), HandlerError> {
    ticket_runtime::db::passes::record_ended(tx.conn(), ended.token)?;
    Ok(())
}

/// The concert service holds the seat: the reservation is HELD until the
/// hold's expiry, which the concert service decided and sent along.
pub fn seat_held(tx: &mut Tx<'_>, event: &Envelope, held: &SeatHeld) -> Result<(), HandlerError> {
    let id = ReservationId::from(held.reservation_id);
    // Not PENDING any more (timed out or cancelled meanwhile): the
    // ReservationCancelled already published makes the concert service
    // release the seat it is holding now. An event without an expiry gets
    // one on the database's clock, which the sweeper reads.
    let now = database_now(tx.conn())?;
    let hold_expires_at = held.expires_at(now);
    if !store::hold(tx.conn(), id, held.price, hold_expires_at, now)? {
        return Ok(());
    }
    let Some(reservation) = store::find(tx.conn(), id)? else {
        return Ok(());
    };
    tx.reply(
        event,
        ReservationHeld {
            reservation_id: held.reservation_id,
            user_id: reservation.user_id.get(),
            concert_id: reservation.concert_id.get(),
            schedule_id: held.schedule_id,
            seat_no: held.seat_no,
            price: held.price,
            hold_expires_at,
        },
    )?;
    Ok(())
}

pub fn seat_hold_rejected(
    tx: &mut Tx<'_>,
    event: &Envelope,
    rejected: &SeatHoldRejected,
) -> Result<(), HandlerError> {
    let id = ReservationId::from(rejected.reservation_id);
    if store::reject(tx.conn(), id, &rejected.reason, Utc::now())? {
        tx.reply(
            event,
            ReservationRejected {
                reservation_id: rejected.reservation_id,
                reason: rejected.reason.clone(),
            },
        )?;
    }
    Ok(())
}

/// The concert service released a seat whose hold lapsed: a reservation
/// still HELD for it is over (its own sweeper may have been behind).
pub fn seat_released(
    tx: &mut Tx<'_>,
    event: &Envelope,
    released: &SeatReleased,
) -> Result<(), HandlerError> {
    let Some(found) = store::lock(tx.conn(), released.reservation_id.into())? else {
        return Ok(());
    };
    // Over only if its hold ran out, on the database's clock.
    let now = database_now(tx.conn())?;
    if found.status == Status::Held && store::expire(tx.conn(), found.id, now)? {
        tx.reply(
            event,
            ReservationExpired {
                reservation_id: released.reservation_id,
                schedule_id: released.schedule_id,
                seat_no: released.seat_no,
            },
        )?;
    }
    Ok(())
}

/// A debit for the reservation: confirm it if the hold still stands for
/// the payer at its price, else say why not (payment then refunds).
pub fn balance_debited(
    tx: &mut Tx<'_>,
    event: &Envelope,
    debit: &BalanceDebited,
) -> Result<(), HandlerError> {
    let payment = PaymentId::from(debit.payment_id);
    // Lock first, then read whether the payment failed: a PaymentFailed
    // handled by another instance at the same time waits for this
    // decision, or was committed before it and is seen here.
    let found = store::lock(tx.conn(), debit.reservation_id.into())?;
    let failed = store::payment_failed(tx.conn(), payment)?;
    // Whether the hold still runs, on the database's clock once the row is
    // ours: a wait for the lock must not leave `now` behind.
    let now = database_now(tx.conn())?;
    let decision = match &found {
        None => Confirmation::Reject(Reason::NotHeld),
        Some(r) => decide_confirmation(
            &Hold {
                status: r.status,
                user_id: r.user_id,
                price: r.price,
                hold_expires_at: r.hold_expires_at(),
                payment_id: r.payment_id,
            },
            payment,
            debit.user_id.into(),
            debit.amount,
            failed,
            now,
        ),
    };
    match (decision, &found) {
        (Confirmation::AlreadyConfirmed, _) => {}
        (Confirmation::Confirm, Some(r)) if store::confirm(tx.conn(), r.id, payment, now)? => {
            tx.reply(
                event,
                ReservationConfirmed {
                    reservation_id: r.id.get(),
                    payment_id: debit.payment_id,
                    schedule_id: r.schedule_id.get(),
                    seat_no: r.seat(),
                },
            )?;
        }
        (decision, _) => {
            let why = match decision {
                Confirmation::Reject(why) => why,
                // Confirm lost to the hold's expiry between read and write.
                _ => Reason::HoldExpired,
            };
            tx.reply(
                event,
                ReservationConfirmationRejected {
                    reservation_id: debit.reservation_id,
                    payment_id: debit.payment_id,
                    reason: why,
                },
            )?;
        }
    }
    Ok(())
}

pub fn payment_failed(
    tx: &mut Tx<'_>,
    event: &Envelope,
    failed: &PaymentFailed,
) -> Result<(), HandlerError> {
    let id = ReservationId::from(failed.reservation_id);
    // On the reservation's row first: a confirmation for this payment being
    // decided by another instance is either committed (and cancelled
    // below) or sees the failure.
    store::lock(tx.conn(), id)?;
    store::remember_failed_payment(tx.conn(), failed.payment_id.into())?;
    cancel_confirmed(
        tx,
        event,
        id,
        failed.payment_id.into(),
        Reason::PaymentFailed,
    )
}

/// The concert service could not sell the seat the reservation confirmed.
pub fn seat_sale_rejected(
    tx: &mut Tx<'_>,
    event: &Envelope,
    reservation: ReservationId,
    payment: PaymentId,
) -> Result<(), HandlerError> {
    cancel_confirmed(tx, event, reservation, payment, Reason::SeatNotSold)
}

/// Undoes a confirmation whose payment cannot complete: the seat is
/// released and the payment's debit refunded by the services that hear
/// the event.
fn cancel_confirmed(
    tx: &mut Tx<'_>,
    event: &Envelope,
    id: ReservationId,
    payment: PaymentId,
    why: Reason,
) -> Result<(), HandlerError> {
    let Some(found) = store::lock(tx.conn(), id)? else {
        return Ok(());
    };
    let confirmed_by_it = found.status == Status::Confirmed && found.payment_id == Some(payment);
    if confirmed_by_it && store::cancel(tx.conn(), id, Status::Confirmed, &why, Utc::now())? {
        tx.reply(
            event,
            ReservationCancelled {
                reservation_id: id.get(),
                schedule_id: found.schedule_id.get(),
                seat_no: found.seat(),
                reason: why,
                payment_id: Some(payment.get()),
            },
        )?;
    }
    Ok(())
}
