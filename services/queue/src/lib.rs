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
use ticket_runtime::{Migrations, RunningService, Secret, ServiceRuntime, Settings};

use app::Queue;
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
    pub pass_signing_key: Secret,
}

pub async fn start(settings: Settings<QueueSettings>) -> anyhow::Result<RunningService> {
    let signer = Arc::new(
        PassSigner::from_base64(settings.service.queue.pass_signing_key.expose()).context(
            "APP__QUEUE__PASS_SIGNING_KEY must be set (`ticketctl up` or `ticketctl secrets DIR` makes one)",
        )?,
    );
    let policy = settings.service.queue.policy.clone();
    let member_auth = settings.service.member_auth.clone();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.document(api::openapi());
    runtime.trust_members(&member_auth).await?;
    runtime.consume(Arc::new(events::QueueEvents));
    let app = Queue {
        db: runtime.db.clone(),
        policy,
        signer,
    };
    let interval = Duration::from_millis(app.policy.admission_interval_ms);
    runtime.every("queue-admission", interval, app.clone(), |app| async move {
        app.admit_all().await
    });
    let interval = Duration::from_millis(app.policy.sweep_interval_ms);
    runtime.every("queue-sweep", interval, app.clone(), |app| async move {
        app.sweep().await
    });
    runtime.serve(move |cfg| api::routes(cfg, app.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
