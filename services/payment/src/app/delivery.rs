//! Completed reservations to the data platform, after the payment
//! committed: queued in the payment's transaction, sent by this job with
//! backoff. The payment never waits for it, nor fails because of it. How a
//! record travels (HTTP) is the `api` room's `data_platform`; this use case
//! decides what is due and records each attempt.

use chrono::Utc;
use std::future::Future;
use ticket_runtime::{Db, DbError};

use crate::domain::DeliveryRetry;
use crate::store;

/// The data platform as this use case needs it.
pub trait DataPlatform: Send + Sync + 'static {
    /// Sends one record; `Err` says why the platform did not take it.
    fn send(&self, record: String) -> impl Future<Output = Result<(), String>> + Send;
    /// How many completed reservations it has not acknowledged yet.
    fn report_backlog(&self, undelivered: i64);
}

#[derive(Clone)]
pub struct Deliveries<P> {
    pub db: Db,
    pub platform: P,
    pub retry: DeliveryRetry,
}

impl<P: DataPlatform> Deliveries<P> {
    /// Sends every delivery that is due; each attempt's outcome is recorded.
    pub async fn deliver_due(&self) -> Result<(), DbError> {
        let due = self
            .db
            .run(|conn| store::due_deliveries(conn, Utc::now(), 50))
            .await?;
        for delivery in due {
            let outcome = self.platform.send(delivery.body).await;
            let payment = delivery.payment_id;
            if let Err(error) = &outcome {
                tracing::warn!(%payment, attempts = delivery.attempts + 1, %error,
                    "data-platform delivery failed; will retry");
            }
            let retry_at = Utc::now() + self.retry.backoff(delivery.attempts);
            let recorded = self
                .db
                .run(move |conn| match &outcome {
                    Ok(()) => store::delivered(conn, payment, Utc::now()),
                    Err(error) => store::delivery_failed(conn, payment, retry_at, error),
                })
                .await;
            // Unrecorded, the delivery is simply due again (the platform
            // takes a record twice as once); the rest of the batch goes on.
            if let Err(error) = recorded {
                tracing::warn!(%payment, %error, "could not record a delivery attempt");
            }
        }
        let backlog = self.db.run(store::undelivered_count).await?;
        self.platform.report_backlog(backlog);
        Ok(())
    }
}
