//! HTTP out: the data platform's `POST /v1/reservations`, with a timeout,
//! and the metrics of the deliveries.

use prometheus::{IntCounterVec, IntGauge, Opts};
use serde::Deserialize;
use std::time::Duration;
use ticket_runtime::Metrics;

use crate::app::delivery::DataPlatform;
use crate::domain::DeliveryRetry;

/// The `[data_platform]` section.
#[derive(Debug, Clone, Deserialize)]
pub struct DataPlatformSettings {
    pub url: String,
    pub timeout_ms: u64,
    #[serde(flatten)]
    pub retry: DeliveryRetry,
}

#[derive(Clone)]
pub struct DataPlatformClient {
    http: reqwest::Client,
    url: String,
    /// Completed reservations not yet acknowledged by the platform.
    backlog: IntGauge,
    /// Delivery attempts by outcome: `delivered` or `failed`.
    attempts: IntCounterVec,
}

impl DataPlatformClient {
    pub fn new(settings: &DataPlatformSettings, metrics: &Metrics) -> anyhow::Result<Self> {
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
        Ok(DataPlatformClient {
            http,
            url,
            backlog,
            attempts,
        })
    }
}

impl DataPlatform for DataPlatformClient {
    async fn send(&self, record: String) -> Result<(), String> {
        let sent = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(record)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("data platform answered {}", response.status())),
            Err(error) => Err(error.to_string()),
        };
        let label = if outcome.is_ok() {
            "delivered"
        } else {
            "failed"
        };
        self.attempts.with_label_values(&[label]).inc();
        outcome
    }

    fn report_backlog(&self, undelivered: i64) {
        self.backlog.set(undelivered);
    }
}
