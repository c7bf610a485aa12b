//! The member-balance service: prepaid wallets and their append-only ledger.

pub mod api;
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
}

pub async fn start(settings: Settings<BalanceSettings>) -> anyhow::Result<RunningService> {
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.consume(std::sync::Arc::new(events::BalanceEvents));
    let state = api::AppState {
        db: runtime.db.clone(),
        limits: runtime.settings.service.balance.clone(),
    };
    runtime.serve(move |cfg| api::routes(cfg, state.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
