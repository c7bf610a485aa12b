//! The money side of the payment saga: one debit per payment, and a refund
//! when a later step fails. Each runs in the consumer's transaction and
//! answers through the outbox.

use chrono::Utc;
use shared_events::{
    BalanceDebitRejected, BalanceDebited, BalanceRefunded, Envelope, Event, PaymentRequested,
    Reason,
};
use ticket_runtime::ids::{PaymentId, UserId};
use ticket_runtime::{HandlerError, Tx};

use crate::domain::EntryKind;
use crate::store::{self, PaymentDebit};

/// Takes the payment's amount from the wallet, once per payment, or says
/// the balance is short.
pub fn payment_requested(
    tx: &mut Tx<'_>,
    event: &Envelope,
    requested: &PaymentRequested,
) -> Result<(), HandlerError> {
    if requested.amount <= 0 {
        return Err(HandlerError::Rejected(format!(
            "payment {} has amount {}",
            requested.payment_id, requested.amount
        )));
    }
    let payment = PaymentId::from(requested.payment_id);
    // A redelivered request changes nothing: the first answer is on its way.
    if store::was_debited(tx.conn(), payment)? {
        return Ok(());
    }
    let debit = PaymentDebit {
        user_id: requested.user_id.into(),
        reservation_id: requested.reservation_id.into(),
        amount: requested.amount,
    };
    let taken = store::apply(
        tx.conn(),
        debit.user_id,
        EntryKind::PaymentDebit,
        -debit.amount,
        Some(&payment.to_string()),
        i64::MAX,
        Utc::now(),
    )?;
    let reply: Event = match taken {
        Some(entry) => {
            store::record_debit(tx.conn(), payment, &debit, entry.id)?;
            BalanceDebited {
                payment_id: requested.payment_id,
                reservation_id: requested.reservation_id,
                user_id: requested.user_id,
                entry_id: entry.id.get(),
                amount: requested.amount,
            }
            .into()
        }
        None => BalanceDebitRejected {
            payment_id: requested.payment_id,
            reservation_id: requested.reservation_id,
            user_id: requested.user_id,
            amount: requested.amount,
            reason: Reason::InsufficientBalance,
        }
        .into(),
    };
    tx.reply(event, reply)?;
    Ok(())
}

/// Gives a payment's debit back, once, if it was taken; `reason` is the
/// reason of the event that made the refund necessary.
pub fn refund(
    tx: &mut Tx<'_>,
    cause: &Envelope,
    payment: PaymentId,
    reason: &Reason,
) -> Result<(), HandlerError> {
    let Some(debit) = store::lock_unrefunded_debit(tx.conn(), payment)? else {
        return Ok(());
    };
    // A refund restores money that was there: no balance ceiling applies,
    // and a balance plus what was taken from it cannot be negative.
    let entry = store::apply(
        tx.conn(),
        debit.user_id,
        EntryKind::Refund,
        debit.amount,
        Some(&payment.to_string()),
        i64::MAX,
        Utc::now(),
    )?
    .ok_or_else(|| refund_refused(debit.user_id, payment))?;
    store::record_refund(tx.conn(), payment, entry.id)?;
    tx.reply(
        cause,
        BalanceRefunded {
            payment_id: payment.get(),
            reservation_id: debit.reservation_id.get(),
            user_id: debit.user_id.get(),
            entry_id: entry.id.get(),
            amount: entry.amount,
            reason: Some(reason.clone()),
        },
    )?;
    Ok(())
}

fn refund_refused(user: UserId, payment: PaymentId) -> HandlerError {
    HandlerError::Other(anyhow::anyhow!(
        "the wallet of {user} refused the refund of payment {payment}"
    ))
}
