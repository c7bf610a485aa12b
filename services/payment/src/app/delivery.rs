//! Completed reservations to the data platform, after the payment
//! committed: queued in the payment's transaction, sent by this job with
//! backoff. The payment never waits for it, nor fails because of it.

use chrono::Utc;
use prometheus::{IntCounterVec, IntGauge, Opts};
use std::time::Duration;
use ticket_runtime::ops::metrics::Metrics;
use ticket_runtime::{Db, DbError};

use crate::domain::DataPlatformSettings;
use crate::store;

#[derive(Clone)]
pub struct DataPlatform {
    db: Db,
    http: reqwest::Client,
    url: String,
    settings: DataPlatformSettings,
    /// Completed reservations not yet acknowledged by the platform.
    backlog: IntGauge,
    /// Delivery attempts by outcome: `delivered` or `failed`.
    attempts: IntCounterVec,
}

impl DataPlatform {
    pub fn new(
        db: Db,
        settings: DataPlatformSettings,
        metrics: &Metrics,
    ) -> anyhow::Result<DataPlatform> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()?;
        let url = format!("{}/v1/reservations", settings.url.trim_end_matches('/'));
        let backlog = IntGauge::new(
            "data_platform_backlog",
            "Completed reservations the data platform has not acknowledged yet",
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "data_platform_deliveries_total",
                "Delivery attempts to the data platform by outcome",
            ),
            &["outcome"],
        )?;
        metrics.register(backlog.clone())?;
        metrics.register(attempts.clone())?;
        Ok(DataPlatform {
            db,
            http,
            url,
            settings,
            backlog,
            attempts,
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
            let label = if outcome.is_ok() {
                "delivered"
            } else {
                "failed"
            };
            self.attempts.with_label_values(&[label]).inc();
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
        let backlog = self
            .db
            .run(|conn| store::undelivered_count(conn).map_err(DbError::from))
            .await?;
        self.backlog.set(backlog);
        Ok(())
    }
}
