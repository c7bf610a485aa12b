//! The application layer: each use case in one local transaction, and the
//! decision of which events it publishes. HTTP calls come through
//! [`Payments`]; events through [`saga`]; background jobs are
//! [`Payments::fail_stalled`] and [`delivery`].

pub mod delivery;
pub mod saga;

use chrono::Utc;
use shared_events::{Envelope, PaymentRequested, Reason};
use std::time::Duration;
use ticket_runtime::auth::pass::{Pass, PassError};
use ticket_runtime::http::idempotency::{IdempotencyKey, InvalidIdempotencyKey};
use ticket_runtime::http::waiters::{wait_for, wait_for_row, Waiters};
use ticket_runtime::ids::{PaymentId, ReservationId, UserId};
use ticket_runtime::{Db, DbError};

use crate::domain::{check_payable, NotPayable, Payment, PaymentPolicy, Status, Step};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    InvalidKey(#[from] InvalidIdempotencyKey),
    #[error("this Idempotency-Key was used for reservation {0}")]
    KeyReused(ReservationId),
    #[error("no reservation {0} held by you")]
    ReservationNotFound(ReservationId),
    #[error("reservation {0} cannot be paid: {1}")]
    NotPayable(ReservationId, NotPayable),
    #[error("reservation {0} already has payment {1} ({2})")]
    AlreadyPaying(ReservationId, PaymentId, Status),
    #[error("no payment {0}")]
    NotFound(PaymentId),
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for PaymentError {
    /// Besides the database's own aborts, a unique violation: two first
    /// requests raced on one Idempotency-Key or one reservation, and the
    /// loser's transaction, run again, finds the winner's payment.
    fn is_transient(&self) -> bool {
        matches!(self, PaymentError::Unexpected(e) if e.is_transient() || e.is_unique_violation())
    }
}

/// A payment with the saga steps it went through.
#[derive(Debug, Clone)]
pub struct PaymentView {
    pub payment: Payment,
    pub steps: Vec<Step>,
}

#[derive(Clone)]
pub struct Payments {
    pub db: Db,
    pub policy: PaymentPolicy,
    pub waiters: Waiters,
}

impl Payments {
    /// Every payment, a page at a time, for the admin audit.
    pub async fn page(
        &self,
        after: Option<PaymentId>,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentError> {
        Ok(self
            .db
            .run(move |conn| store::page(conn, after, limit))
            .await?)
    }

    /// Starts paying for the pass holder's held reservation (once per
    /// Idempotency-Key and per reservation), then waits briefly for the
    /// outcome.
    pub async fn pay(
        &self,
        pass: &Pass,
        reservation_id: ReservationId,
        key: Option<IdempotencyKey>,
    ) -> Result<PaymentView, PaymentError> {
        let user = UserId::from(pass.0.user_id());
        let wait = Duration::from_millis(self.policy.decision_wait_ms);
        // A retry with a known key gets the first answer, also once the
        // payment completed and so ended the pass: it starts nothing.
        if let Some(earlier) = self.by_key(user, key.as_ref()).await? {
            return self.replay(earlier, reservation_id, user, wait).await;
        }
        let payment = match self.start(pass, reservation_id, key.clone(), wait).await {
            // A concurrent request with the same key may have won between
            // the lookup above and this refusal (its payment now ends the
            // pass, makes the hold paid, or is the live one): then its
            // payment is this request's answer too.
            Err(
                refusal @ (PaymentError::Pass(PassError::Ended)
                | PaymentError::NotPayable(..)
                | PaymentError::AlreadyPaying(..)),
            ) => match self.by_key(user, key.as_ref()).await? {
                Some(winner) => winner,
                None => return Err(refusal),
            },
            started => started?,
        };
        self.replay(payment, reservation_id, user, wait).await
    }

    /// The member's payment made with this key, if any.
    async fn by_key(
        &self,
        user: UserId,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Payment>, PaymentError> {
        let Some(key) = key.cloned() else {
            return Ok(None);
        };
        self.db
            .run(move |conn| Ok(store::find_by_key(conn, user, key.as_str())?))
            .await
    }

    /// Starts a payment for a payable hold (or finds the one a concurrent
    /// first request with the same key started).
    async fn start(
        &self,
        pass: &Pass,
        reservation_id: ReservationId,
        key: Option<IdempotencyKey>,
        wait: Duration,
    ) -> Result<Payment, PaymentError> {
        let user = UserId::from(pass.0.user_id());
        pass.check_not_ended::<PaymentError>(&self.db).await?;
        // The hold may have been reported to the fan a moment before its
        // event reached this service's projection: wait for it briefly.
        let projected = wait_for_row(
            &self.waiters,
            &self.db,
            reservation_id.get(),
            wait,
            move |conn| store::projected(conn, reservation_id),
        )
        .await?
        .filter(|r| r.user_id == user)
        .ok_or(PaymentError::ReservationNotFound(reservation_id))?;
        pass.check_concert(projected.concert_id)?;
        check_payable(
            projected.status,
            projected.hold_expires_at.and_utc(),
            Utc::now(),
        )
        .map_err(|why| PaymentError::NotPayable(reservation_id, why))?;

        // Concurrent first requests race on the unique indexes (one key, one
        // live payment per reservation): the loser's transaction runs again
        // (see `is_transient`) and finds the winner.
        self.db
            .transaction(move |tx| {
                if let Some(key) = &key {
                    if let Some(earlier) = store::find_by_key(tx.conn(), user, key.as_str())? {
                        return Ok(earlier);
                    }
                }
                if let Some(live) = store::live_for_reservation(tx.conn(), reservation_id)? {
                    return Err(PaymentError::AlreadyPaying(
                        reservation_id,
                        live.id,
                        live.status,
                    ));
                }
                let id = PaymentId::generate();
                let now = Utc::now();
                let key = key.as_ref().map(IdempotencyKey::as_str);
                store::insert_pending(tx.conn(), id, &projected, key, now)?;
                let requested = Envelope::new(PaymentRequested {
                    payment_id: id.get(),
                    reservation_id: reservation_id.get(),
                    user_id: user.get(),
                    amount: projected.price,
                });
                store::record_step(
                    tx.conn(),
                    id,
                    requested.event_id,
                    "PaymentRequested",
                    None,
                    now,
                )?;
                tx.publish(&requested)?;
                store::find(tx.conn(), id)?.ok_or(PaymentError::NotFound(id))
            })
            .await
    }

    /// The payment a request (first or retried) stands for, as it is now.
    async fn replay(
        &self,
        payment: Payment,
        reservation_id: ReservationId,
        user: UserId,
        wait: Duration,
    ) -> Result<PaymentView, PaymentError> {
        if payment.reservation_id != reservation_id {
            return Err(PaymentError::KeyReused(payment.reservation_id));
        }
        self.watch(payment.id, user, wait, |v| {
            v.payment.status != Status::Pending
        })
        .await
    }

    /// The member's own payment; another's is "not found".
    pub async fn view(&self, id: PaymentId, user: UserId) -> Result<PaymentView, PaymentError> {
        self.db
            .run(move |conn| {
                let payment = store::find(conn, id)?
                    .filter(|p| p.user_id == user)
                    .ok_or(PaymentError::NotFound(id))?;
                let steps = store::steps(conn, id)?;
                Ok(PaymentView { payment, steps })
            })
            .await
    }

    /// The payment once `changed` says so, or as it is after `wait`.
    pub async fn watch(
        &self,
        id: PaymentId,
        user: UserId,
        wait: Duration,
        changed: impl Fn(&PaymentView) -> bool,
    ) -> Result<PaymentView, PaymentError> {
        wait_for(
            &self.waiters,
            id.get(),
            wait,
            || self.view(id, user),
            changed,
        )
        .await
    }

    /// Fails every payment PENDING for longer than the deadline;
    /// `PaymentFailed` makes the services that took a step compensate.
    /// Safe with two instances (each payment decided under its row lock).
    pub async fn fail_stalled(&self) -> Result<Vec<PaymentId>, DbError> {
        let deadline = self.policy.deadline();
        let failed = self
            .db
            .transaction(move |tx| {
                let now = Utc::now();
                let mut failed = Vec::new();
                for stalled in store::stalled(tx.conn(), now - deadline, 200)? {
                    // Re-read under the row lock: a consumer may have ended
                    // it meanwhile.
                    let Some(payment) = store::lock(tx.conn(), stalled.id)? else {
                        continue;
                    };
                    if payment.status == Status::Pending {
                        saga::fail(tx, None, &payment, &Reason::SagaTimedOut, false)?;
                        failed.push(payment.id);
                    }
                }
                Ok::<_, DbError>(failed)
            })
            .await?;
        failed.iter().for_each(|id| self.waiters.wake(id.get()));
        Ok(failed)
    }
}
