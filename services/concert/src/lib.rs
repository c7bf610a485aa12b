//! The concert service: the catalog (concerts, schedules, seats) and the
//! seat side of the reservation and payment sagas.

pub mod api;
pub mod domain;
pub mod events;
pub mod store;

use serde::Deserialize;
use shared_events::Service;
use ticket_runtime::{Migrations, RunningService, Secret, ServiceRuntime, Settings};

pub const SERVICE: Service = Service::Concert;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations"),
    postgres: diesel_migrations::embed_migrations!("migrations"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct ConcertSettings {
    pub concert: ConcertSection,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConcertSection {
    pub admin_key: Secret,
    pub demo_data: bool,
}

pub async fn start(settings: Settings<ConcertSettings>) -> anyhow::Result<RunningService> {
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.consume(std::sync::Arc::new(events::ConcertEvents));
    if runtime.settings.service.concert.demo_data {
        store::seed_demo_catalog(&runtime.db).await?;
    }
    let state = api::AppState {
        db: runtime.db.clone(),
        admin_key: runtime.settings.service.concert.admin_key.clone(),
    };
    runtime.serve(move |cfg| api::routes(cfg, state.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
