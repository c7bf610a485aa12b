//! The payment service: payments from prepaid balances and delivery of completed reservations to the data platform.

use serde::Deserialize;
use shared_events::Service;
use ticket_runtime::pass::AuthSettings;
use ticket_runtime::{Migrations, RunningService, ServiceRuntime, Settings};

pub const SERVICE: Service = Service::Payment;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations/sqlite"),
    postgres: diesel_migrations::embed_migrations!("migrations/postgres"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentSettings {
    pub auth: AuthSettings,
}

pub async fn start(settings: Settings<PaymentSettings>) -> anyhow::Result<RunningService> {
    let verifier = actix_web::web::Data::new(settings.service.auth.verifier()?);
    let runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.serve(move |cfg| {
        cfg.app_data(verifier.clone());
    })
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
