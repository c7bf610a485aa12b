//! Completed reservations to the data platform, after the payment
//! committed: queued in the payment's transaction, sent by this job with
//! backoff. The payment never waits for it, nor fails because of it.

use chrono::Utc;
use std::time::Duration;
use ticket_runtime::{Db, DbError};

use crate::domain::DataPlatformSettings;
use crate::store;

#[derive(Clone)]
pub struct DataPlatform {
    db: Db,
    http: reqwest::Client,
    url: String,
    settings: DataPlatformSettings,
}

impl DataPlatform {
    pub fn new(db: Db, settings: DataPlatformSettings) -> Result<DataPlatform, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()?;
        let url = format!("{}/v1/reservations", settings.url.trim_end_matches('/'));
        Ok(DataPlatform {
            db,
            http,
            url,
            settings,
        })
    }

    /// Sends every delivery that is due; each attempt's outcome is recorded.
    pub async fn deliver_due(&self) -> Result<(), DbError> {
        let due = self
            .db
            .run(|conn| store::due_deliveries(conn, Utc::now(), 50).map_err(DbError::from))
            .await?;
        for delivery in due {
            let sent = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .body(delivery.body)
                .send()
                .await;
            let outcome = match sent {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("data platform answered {}", response.status())),
                Err(error) => Err(error.to_string()),
            };
            let payment = delivery.payment_id;
            if let Err(error) = &outcome {
                tracing::warn!(%payment, attempts = delivery.attempts + 1, %error,
                    "data-platform delivery failed; will retry");
            }
            let retry_at = Utc::now() + self.settings.backoff(delivery.attempts);
            let recorded = self
                .db
                .run(move |conn| {
                    match &outcome {
                        Ok(()) => store::delivered(conn, payment, Utc::now()),
                        Err(error) => store::delivery_failed(conn, payment, retry_at, error),
                    }
                    .map_err(DbError::from)
                })
                .await;
            // Unrecorded, the delivery is simply due again (the platform
            // takes a record twice as once); the rest of the batch goes on.
            if let Err(error) = recorded {
                tracing::warn!(%payment, %error, "could not record a delivery attempt");
            }
        }
        Ok(())
    }
}
