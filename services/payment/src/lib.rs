//! The payment service: payments from prepaid balances, decided through
//! events, and delivery of completed reservations to the data platform.
//!
//! Rooms, as in every service: `api` (HTTP in and out), `app` (use cases:
//! the transaction and what it publishes), `domain` (rules), `store` (SQL),
//! `events` (decode, call `app`). `start` wires them and the background jobs.

pub mod api;
pub mod app;
pub mod domain;
pub mod events;
pub mod store;

use serde::Deserialize;
use shared_events::Service;
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::auth::pass::AuthSettings;
use ticket_runtime::http::waiters::Waiters;
use ticket_runtime::{Migrations, RunningService, ServiceRuntime, Settings};
use tokio::sync::Notify;

use app::delivery::DataPlatform;
use app::Payments;
use domain::{DataPlatformSettings, PaymentPolicy};

pub const SERVICE: Service = Service::Payment;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations"),
    postgres: diesel_migrations::embed_migrations!("migrations"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentSettings {
    pub auth: AuthSettings,
    pub member_auth: ticket_runtime::auth::member::MemberAuthSettings,
    pub payment: PaymentPolicy,
    pub data_platform: DataPlatformSettings,
}

pub async fn start(settings: Settings<PaymentSettings>) -> anyhow::Result<RunningService> {
    let member_auth = settings.service.member_auth.clone();
    let policy = settings.service.payment.clone();
    let platform = settings.service.data_platform.clone();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.document(api::openapi());
    runtime.trust_members(&member_auth).await?;
    runtime.trust_passes(&runtime.settings.service.auth.clone())?;
    let app = Payments {
        db: runtime.db.clone(),
        policy,
        waiters: Waiters::default(),
    };
    let deliveries = Arc::new(Notify::new());
    runtime.consume(Arc::new(events::PaymentEvents {
        waiters: app.waiters.clone(),
        deliveries: deliveries.clone(),
    }));

    let interval = Duration::from_millis(app.policy.sweep_interval_ms);
    runtime.every(
        "payment-deadline",
        interval,
        app.clone(),
        |app| async move { app.fail_stalled().await.map(drop) },
    );
    let platform = DataPlatform::new(runtime.db.clone(), platform, &runtime.metrics)?;
    let every = Duration::from_millis(500);
    runtime.every_or_woken(
        "data-platform-delivery",
        every,
        deliveries,
        platform,
        |platform| async move { platform.deliver_due().await },
    );
    runtime.serve(move |cfg| api::routes(cfg, app.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
