//! The payment service: payments from prepaid balances, decided through
//! events, and delivery of completed reservations to the data platform.

pub mod api;
pub mod domain;
pub mod events;
pub mod store;

use chrono::Utc;
use serde::Deserialize;
use shared_events::Service;
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::pass::AuthSettings;
use ticket_runtime::waiters::Waiters;
use ticket_runtime::{
    CancellationToken, Db, DbError, Migrations, RunningService, ServiceRuntime, Settings,
};
use tokio::sync::Notify;

use domain::{reason, DataPlatformSettings, PaymentPolicy};

pub const SERVICE: Service = Service::Payment;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations"),
    postgres: diesel_migrations::embed_migrations!("migrations"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentSettings {
    pub auth: AuthSettings,
    pub member_auth: ticket_runtime::member::MemberAuthSettings,
    pub payment: PaymentPolicy,
    pub data_platform: DataPlatformSettings,
}

pub async fn start(settings: Settings<PaymentSettings>) -> anyhow::Result<RunningService> {
    let verifier = actix_web::web::Data::new(settings.service.auth.verifier()?);
    let member_auth = settings.service.member_auth.clone();
    let policy = settings.service.payment.clone();
    let platform = settings.service.data_platform.clone();
    let waiters = Waiters::default();
    let deliveries = Arc::new(Notify::new());
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    let members = runtime.trust_members(&member_auth).await?;
    runtime.consume(Arc::new(events::PaymentEvents {
        waiters: waiters.clone(),
        deliveries: deliveries.clone(),
    }));
    let (db, sweep_policy, sweep_waiters) = (runtime.db.clone(), policy.clone(), waiters.clone());
    runtime.spawn(move |stop| deadline_loop(db, sweep_policy, sweep_waiters, stop));
    let db = runtime.db.clone();
    runtime.spawn(move |stop| delivery_loop(db, platform, deliveries, stop));
    let state = api::AppState {
        db: runtime.db.clone(),
        policy,
        waiters,
    };
    runtime.serve(move |cfg| {
        cfg.app_data(verifier.clone());
        cfg.app_data(members.clone());
        api::routes(cfg, state.clone());
    })
}

/// Fails payments whose saga stalled past the deadline; `PaymentFailed`
/// makes the services that took a step compensate. Safe with two instances.
async fn deadline_loop(db: Db, policy: PaymentPolicy, waiters: Waiters, stop: CancellationToken) {
    let interval = Duration::from_millis(policy.sweep_interval_ms.max(10));
    while !stop.is_cancelled() {
        match fail_stalled(&db, &policy).await {
            Ok(ids) => ids.into_iter().for_each(|id| waiters.wake(id)),
            Err(error) => tracing::warn!(%error, "payment deadline sweep failed; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Fails every payment PENDING for longer than the deadline; returns their ids.
pub async fn fail_stalled(db: &Db, policy: &PaymentPolicy) -> Result<Vec<uuid::Uuid>, DbError> {
    let deadline = policy.deadline();
    db.transaction(move |tx| {
        let mut failed = Vec::new();
        for stalled in store::stalled(tx.conn(), Utc::now() - deadline, 200)? {
            // Re-read under the row lock: a consumer may have ended it meanwhile.
            let Some(payment) = store::lock(tx.conn(), stalled.uuid())? else {
                continue;
            };
            if payment.status() == domain::Status::Pending {
                events::fail(tx, None, &payment, reason::SAGA_TIMED_OUT, false)?;
                failed.push(payment.uuid());
            }
        }
        Ok::<_, DbError>(failed)
    })
    .await
}

/// Sends completed reservations to the data platform after the payment
/// committed, retrying with backoff; the payment never waits for it.
async fn delivery_loop(
    db: Db,
    platform: DataPlatformSettings,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(platform.timeout_ms))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the data-platform client; deliveries stay queued");
            return;
        }
    };
    let url = format!("{}/v1/reservations", platform.url.trim_end_matches('/'));
    while !stop.is_cancelled() {
        let due = db
            .run(|conn| store::due_deliveries(conn, 50).map_err(DbError::from))
            .await
            .unwrap_or_default();
        for (payment_id, body, attempts) in due {
            let sent = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let outcome = match sent {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("data platform answered {}", response.status())),
                Err(error) => Err(error.to_string()),
            };
            let retry_at = Utc::now() + platform.backoff(attempts);
            let recorded = db
                .run(move |conn| {
                    match &outcome {
                        Ok(()) => store::delivered(conn, &payment_id),
                        Err(error) => store::delivery_failed(conn, &payment_id, retry_at, error),
                    }
                    .map_err(DbError::from)
                })
                .await;
            if let Err(error) = recorded {
                tracing::warn!(%error, "could not record a delivery attempt; it will be retried");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
