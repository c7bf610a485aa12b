//! The queue service: a fair waiting line per concert, admission in arrival
//! order under a cap and a rate, and signed access passes.
//!
//! Rooms, as in every service: `api` (HTTP in and out), `app` (use cases:
//! the transaction and what it publishes), `domain` (rules), `store` (SQL),
//! `events` (decode, call `app`). `start` wires them and the background jobs.

pub mod api;
pub mod app;
pub mod domain;
pub mod events;
pub mod store;

use anyhow::Context;
use serde::Deserialize;
use shared_events::Service;
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::auth::pass::PassSigner;
use ticket_runtime::{Clock, Migrations, RunningService, Secret, ServiceRuntime, Settings};

use app::{Queue, Tuning};
use domain::QueuePolicy;

pub const SERVICE: Service = Service::Queue;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations"),
    postgres: diesel_migrations::embed_migrations!("migrations"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct QueueSettings {
    pub queue: QueueSection,
    pub member_auth: ticket_runtime::auth::member::MemberAuthSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueSection {
    #[serde(flatten)]
    pub policy: QueuePolicy,
    #[serde(flatten)]
    pub tuning: Tuning,
    pub pass_signing_key: Secret,
}

pub async fn start(settings: Settings<QueueSettings>) -> anyhow::Result<RunningService> {
    let signer = Arc::new(
        PassSigner::from_base64(settings.service.queue.pass_signing_key.expose()).context(
            "APP__QUEUE__PASS_SIGNING_KEY must be set (`ticketctl up` or `ticketctl secrets DIR` makes one)",
        )?,
    );
    let policy = settings.service.queue.policy.clone();
    let tuning = settings.service.queue.tuning.clone();
    let member_auth = settings.service.member_auth.clone();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.document(api::openapi());
    runtime.trust_members(&member_auth).await?;
    runtime.consume(Arc::new(events::QueueEvents));
    let app = Queue::start(runtime.db.clone(), policy, &tuning, signer, Clock::system()).await?;
    let interval = Duration::from_millis(app.policy().admission_interval_ms);
    runtime.every("queue-admission", interval, app.clone(), |app| async move {
        app.admit_all().await
    });
    let interval = Duration::from_millis(app.policy().sweep_interval_ms);
    runtime.every("queue-sweep", interval, app.clone(), |app| async move {
        app.sweep().await
    });
    let interval = Duration::from_millis(tuning.index_refresh_ms);
    runtime.every("queue-index", interval, app.clone(), |app| async move {
        app.refresh_index().await
    });
    let interval = Duration::from_millis(tuning.seen_flush_ms);
    runtime.every("queue-seen", interval, app.clone(), |app| async move {
        app.record_seen().await
    });
    runtime.serve(move |cfg| api::routes(cfg, app.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
