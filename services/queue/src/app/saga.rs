//! The queue's part in the sagas: learn which concerts exist, and end a
//! fan's pass once their payment completed (their place goes to the next
//! fan in line). The consumer commits these, so the line index learns of an
//! ended pass on its next refresh, like another instance's change.

use shared_events::{ConcertScheduled, Envelope, PaymentCompleted, QueuePassEnded, Reason};
use ticket_runtime::ids::{ConcertId, UserId};
use ticket_runtime::{HandlerError, Tx};

use crate::domain::{Ended, TokenStatus};
use crate::store;

pub fn concert_scheduled(
    tx: &mut Tx<'_>,
    scheduled: &ConcertScheduled,
) -> Result<(), HandlerError> {
    store::remember_concert(tx.conn(), scheduled.concert_id.into())?;
    Ok(())
}

pub fn payment_completed(
    tx: &mut Tx<'_>,
    event: &Envelope,
    paid: &PaymentCompleted,
) -> Result<(), HandlerError> {
    let (user, concert) = (UserId::from(paid.user_id), ConcertId::from(paid.concert_id));
    let Some(live) = store::find_live(tx.conn(), user, concert)? else {
        return Ok(());
    };
    if live.status != TokenStatus::Active
        || store::end_active(tx.conn(), live.token, concert, Ended::PaymentCompleted)?.is_none()
    {
        return Ok(());
    }
    tx.publish(&Envelope::caused_by(
        event,
        QueuePassEnded {
            token: live.token.get(),
            user_id: paid.user_id,
            concert_id: paid.concert_id,
            reason: Reason::PaymentCompleted,
        },
    ))?;
    Ok(())
}
