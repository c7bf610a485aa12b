//! The reservation side of the sagas: hold outcomes from the concert
//! service, confirmations for debits, and compensations.

use chrono::Utc;
use shared_events::{
    Envelope, Event, EventType, ReservationCancelled, ReservationConfirmationRejected,
    ReservationConfirmed, ReservationExpired, ReservationHeld, ReservationRejected, Topic,
};
use ticket_runtime::waiters::Waiters;
use ticket_runtime::{EventHandler, HandlerError, Tx};
use uuid::Uuid;

use crate::domain::{decide_confirmation, reason, Confirmation, Hold, HoldPolicy, Status};
use crate::store;

pub struct ReservationEvents {
    pub policy: HoldPolicy,
    pub waiters: Waiters,
}

/// The reservation an event is about, if any.
fn reservation_of(event: &Event) -> Option<Uuid> {
    match event {
        Event::SeatHeld(e) => Some(e.reservation_id),
        Event::SeatHoldRejected(e) => Some(e.reservation_id),
        Event::SeatSaleRejected(e) => Some(e.reservation_id),
        Event::BalanceDebited(e) => Some(e.reservation_id),
        Event::PaymentFailed(e) => Some(e.reservation_id),
        Event::SeatReleased(e) => Some(e.reservation_id),
        _ => None,
    }
}

impl EventHandler for ReservationEvents {
    fn name(&self) -> &str {
        "reservation"
    }

    fn topics(&self) -> Vec<Topic> {
        vec![
            Topic::ConcertEvents,
            Topic::QueueEvents,
            Topic::BalanceEvents,
            Topic::PaymentEvents,
        ]
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::ConcertScheduled
                | EventType::QueuePassEnded
                | EventType::SeatHeld
                | EventType::SeatHoldRejected
                | EventType::SeatReleased
                | EventType::SeatSaleRejected
                | EventType::BalanceDebited
                | EventType::PaymentFailed
        )
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let key = event.partition_key.clone();
        match &event.event {
            Event::ConcertScheduled(e) => {
                store::remember_schedule(tx.conn(), e.schedule_id, e.concert_id)?
            }
            Event::QueuePassEnded(e) => ticket_runtime::pass::record_ended(tx.conn(), e.token)?,
            Event::SeatHeld(e) => {
                // Not PENDING any more (timed out or cancelled meanwhile): the
                // ReservationCancelled already published makes the concert
                // service release the seat it is holding now.
                let expires_at = e.hold_expires_at;
                if store::hold(tx.conn(), e.reservation_id, e.price, expires_at)? {
                    let Some(held) = store::find(tx.conn(), e.reservation_id)? else {
                        return Ok(());
                    };
                    let (Ok(user_id), Ok(concert_id)) = (
                        Uuid::parse_str(&held.user_id),
                        Uuid::parse_str(&held.concert_id),
                    ) else {
                        return Err(HandlerError::Rejected(format!(
                            "reservation {} has malformed ids",
                            held.id
                        )));
                    };
                    tx.publish(&Envelope::caused_by(
                        event,
                        ReservationHeld {
                            reservation_id: e.reservation_id,
                            user_id,
                            concert_id,
                            schedule_id: e.schedule_id,
                            seat_no: e.seat_no,
                            price: e.price,
                            hold_expires_at: expires_at,
                        },
                        key,
                    ))?;
                }
            }
            Event::SeatReleased(e) => expire_released(tx, event, e)?,
            Event::SeatHoldRejected(e) => reject_hold(tx, event, e)?,
            Event::BalanceDebited(e) => self.confirm_or_reject(tx, event, e)?,
            Event::PaymentFailed(e) => {
                // On the reservation's row first: a confirmation for this
                // payment being decided by another instance is either
                // committed (and cancelled below) or sees the failure.
                store::lock(tx.conn(), e.reservation_id)?;
                store::remember_failed_payment(tx.conn(), e.payment_id)?;
                cancel_confirmed(
                    tx,
                    event,
                    e.reservation_id,
                    e.payment_id,
                    reason::PAYMENT_FAILED,
                )?;
            }
            Event::SeatSaleRejected(e) => {
                cancel_confirmed(
                    tx,
                    event,
                    e.reservation_id,
                    e.payment_id,
                    reason::SEAT_NOT_SOLD,
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    fn committed(&self, event: &Envelope) {
        if let Some(id) = reservation_of(&event.event) {
            self.waiters.wake(id);
        }
        if let Event::ConcertScheduled(e) = &event.event {
            self.waiters.wake(e.schedule_id);
        }
    }
}

impl ReservationEvents {
    fn confirm_or_reject(
        &self,
        tx: &mut Tx<'_>,
        event: &Envelope,
        debit: &shared_events::BalanceDebited,
    ) -> Result<(), HandlerError> {
        let now = Utc::now();
        let payment = debit.payment_id.to_string();
        // Lock first, then read whether the payment failed: a PaymentFailed
        // handled by another instance at the same time waits for this
        // decision, or was committed before it and is seen here.
        let found = store::lock(tx.conn(), debit.reservation_id)?;
        let failed = store::payment_failed(tx.conn(), debit.payment_id)?;
        let decision = match &found {
            None => Confirmation::Reject(reason::NOT_HELD),
            Some(r) => decide_confirmation(
                &Hold {
                    status: r.status(),
                    user_id: &r.user_id,
                    price: r.price,
                    hold_expires_at: r.hold_expires_at.map(|at| at.and_utc()),
                    payment_id: r.payment_id.as_deref(),
                },
                &payment,
                &debit.user_id.to_string(),
                debit.amount,
                failed,
                now,
            ),
        };
        let key = event.partition_key.clone();
        match (decision, &found) {
            (Confirmation::AlreadyConfirmed, _) => {}
            (Confirmation::Confirm, Some(r))
                if store::confirm(tx.conn(), r.uuid(), debit.payment_id, now)? =>
            {
                tx.publish(&Envelope::caused_by(
                    event,
                    ReservationConfirmed {
                        reservation_id: r.uuid(),
                        payment_id: debit.payment_id,
                        schedule_id: r.schedule_uuid(),
                        seat_no: r.seat(),
                    },
                    key,
                ))?;
            }
            (decision, _) => {
                let why = match decision {
                    Confirmation::Reject(why) => why,
                    _ => reason::HOLD_EXPIRED,
                };
                tx.publish(&Envelope::caused_by(
                    event,
                    ReservationConfirmationRejected {
                        reservation_id: debit.reservation_id,
                        payment_id: debit.payment_id,
                        reason: why.into(),
                    },
                    key,
                ))?;
            }
        }
        Ok(())
    }
}

/// The concert service released a seat whose hold lapsed: a reservation
/// still HELD for it is over (its own sweeper may have been behind).
fn expire_released(
    tx: &mut Tx<'_>,
    event: &Envelope,
    released: &shared_events::SeatReleased,
) -> Result<(), HandlerError> {
    let Some(found) = store::lock(tx.conn(), released.reservation_id)? else {
        return Ok(());
    };
    if found.status() == Status::Held && store::expire(tx.conn(), found.uuid(), Utc::now())? {
        tx.publish(&Envelope::caused_by(
            event,
            ReservationExpired {
                reservation_id: released.reservation_id,
                schedule_id: released.schedule_id,
                seat_no: released.seat_no,
            },
            event.partition_key.clone(),
        ))?;
    }
    Ok(())
}

fn reject_hold(
    tx: &mut Tx<'_>,
    event: &Envelope,
    rejected: &shared_events::SeatHoldRejected,
) -> Result<(), HandlerError> {
    if store::reject(tx.conn(), rejected.reservation_id, &rejected.reason)? {
        tx.publish(&Envelope::caused_by(
            event,
            ReservationRejected {
                reservation_id: rejected.reservation_id,
                reason: rejected.reason.clone(),
            },
            event.partition_key.clone(),
        ))?;
    }
    Ok(())
}

/// Undoes a confirmation whose payment cannot complete: the seat is released
/// and the payment's debit refunded by the services that hear the event.
fn cancel_confirmed(
    tx: &mut Tx<'_>,
    event: &Envelope,
    reservation_id: Uuid,
    payment_id: Uuid,
    why: &str,
) -> Result<(), HandlerError> {
    let Some(found) = store::lock(tx.conn(), reservation_id)? else {
        return Ok(());
    };
    let confirmed_by_it = found.status() == Status::Confirmed
        && found.payment_id.as_deref() == Some(&payment_id.to_string());
    if confirmed_by_it && store::cancel(tx.conn(), reservation_id, Status::Confirmed, why)? {
        tx.publish(&Envelope::caused_by(
            event,
            ReservationCancelled {
                reservation_id,
                schedule_id: found.schedule_uuid(),
                seat_no: found.seat(),
                reason: why.into(),
                payment_id: Some(payment_id),
            },
            event.partition_key.clone(),
        ))?;
    }
    Ok(())
}
