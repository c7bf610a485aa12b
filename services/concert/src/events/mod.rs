//! The seat side of the sagas: hold, release and sell seats for reservations.

use shared_events::{
    Envelope, Event, EventType, SeatHeld, SeatHoldRejected, SeatReleased, SeatSaleRejected,
    SeatSold, Topic,
};
use ticket_runtime::{EventHandler, HandlerError, Tx};

use crate::store::{self, HoldOutcome};

pub struct ConcertEvents {
    pub holds: crate::HoldPolicy,
}

impl EventHandler for ConcertEvents {
    fn name(&self) -> &str {
        "concert"
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::ReservationEvents]
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::ReservationRequested
                | EventType::ReservationExpired
                | EventType::ReservationCancelled
                | EventType::ReservationConfirmed
        )
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let key = event.partition_key.clone();
        match &event.event {
            Event::ReservationRequested(e) => {
                let outcome = store::hold_seat(
                    tx.conn(),
                    &e.concert_id.to_string(),
                    &e.schedule_id.to_string(),
                    e.seat_no as i32,
                    &e.reservation_id.to_string(),
                    chrono::Utc::now() + self.holds.hold_ttl(),
                )?;
                let reply: Event = match outcome {
                    HoldOutcome::Held {
                        price,
                        hold_expires_at,
                    } => SeatHeld {
                        reservation_id: e.reservation_id,
                        schedule_id: e.schedule_id,
                        seat_no: e.seat_no,
                        price,
                        hold_expires_at,
                    }
                    .into(),
                    HoldOutcome::Rejected(reason) => SeatHoldRejected {
                        reservation_id: e.reservation_id,
                        schedule_id: e.schedule_id,
                        seat_no: e.seat_no,
                        reason: reason.into(),
                    }
                    .into(),
                };
                tx.publish(&Envelope::caused_by(event, reply, key))?;
            }
            Event::ReservationExpired(e) => {
                release(tx, event, e.reservation_id, e.schedule_id, e.seat_no)?
            }
            Event::ReservationCancelled(e) => {
                release(tx, event, e.reservation_id, e.schedule_id, e.seat_no)?
            }
            Event::ReservationConfirmed(e) => {
                let sold = store::sell_seat(
                    tx.conn(),
                    &e.schedule_id.to_string(),
                    e.seat_no as i32,
                    &e.reservation_id.to_string(),
                    &e.payment_id.to_string(),
                )?;
                let reply: Event = if sold {
                    SeatSold {
                        reservation_id: e.reservation_id,
                        payment_id: e.payment_id,
                        schedule_id: e.schedule_id,
                        seat_no: e.seat_no,
                    }
                    .into()
                } else {
                    SeatSaleRejected {
                        reservation_id: e.reservation_id,
                        payment_id: e.payment_id,
                        reason: "NOT_HELD".into(),
                    }
                    .into()
                };
                tx.publish(&Envelope::caused_by(event, reply, key))?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn release(
    tx: &mut Tx<'_>,
    event: &Envelope,
    reservation_id: uuid::Uuid,
    schedule_id: uuid::Uuid,
    seat_no: u32,
) -> Result<(), HandlerError> {
    if store::release_seat(
        tx.conn(),
        &schedule_id.to_string(),
        seat_no as i32,
        &reservation_id.to_string(),
    )? {
        tx.publish(&Envelope::caused_by(
            event,
            SeatReleased {
                reservation_id,
                schedule_id,
                seat_no,
            },
            event.partition_key.clone(),
        ))?;
    }
    Ok(())
}
