//! The member-balance service: prepaid wallets and their append-only ledger.
//!
//! Rooms, as in every service: `api` (HTTP in and out), `app` (use cases:
//! the transaction and what it publishes), `domain` (rules), `store` (SQL),
//! `events` (decode, call `app`). `start` wires them.

pub mod api;
pub mod app;
pub mod domain;
pub mod events;
pub mod store;

use serde::Deserialize;
use shared_events::Service;
use ticket_runtime::{Migrations, RunningService, ServiceRuntime, Settings};

pub const SERVICE: Service = Service::MemberBalance;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations"),
    postgres: diesel_migrations::embed_migrations!("migrations"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct BalanceSettings {
    pub balance: domain::Limits,
    pub member_auth: ticket_runtime::auth::member::MemberAuthSettings,
}

pub async fn start(settings: Settings<BalanceSettings>) -> anyhow::Result<RunningService> {
    let member_auth = settings.service.member_auth.clone();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.document(api::openapi());
    runtime.trust_members(&member_auth).await?;
    runtime.consume(std::sync::Arc::new(events::BalanceEvents));
    let app = app::Wallets {
        db: runtime.db.clone(),
        limits: runtime.settings.service.balance.clone(),
    };
    runtime.serve(move |cfg| api::routes(cfg, app.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
