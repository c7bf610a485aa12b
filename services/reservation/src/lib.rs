//! The reservation service: seat holds with expiry and the reservation
//! lifecycle, decided through events with the concert service.
//!
//! Rooms, as in every service: `api` (HTTP in and out), `app` (use cases:
//! the transaction and what it publishes), `domain` (rules), `store` (SQL),
//! `events` (decode, call `app`). `start` wires them and the background job.

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

use app::Reservations;
use domain::HoldPolicy;

pub const SERVICE: Service = Service::Reservation;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations"),
    postgres: diesel_migrations::embed_migrations!("migrations"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct ReservationSettings {
    pub auth: AuthSettings,
    pub member_auth: ticket_runtime::auth::member::MemberAuthSettings,
    pub reservation: HoldPolicy,
}

pub async fn start(settings: Settings<ReservationSettings>) -> anyhow::Result<RunningService> {
    let member_auth = settings.service.member_auth.clone();
    let policy = settings.service.reservation.clone();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.document(api::openapi());
    runtime.trust_members(&member_auth).await?;
    runtime.trust_passes(&runtime.settings.service.auth.clone())?;
    let app = Reservations {
        db: runtime.db.clone(),
        policy,
        waiters: Waiters::default(),
    };
    runtime.consume(Arc::new(events::ReservationEvents {
        waiters: app.waiters.clone(),
    }));
    let interval = Duration::from_millis(app.policy.sweep_interval_ms);
    runtime.every(
        "reservation-sweep",
        interval,
        app.clone(),
        |app| async move { app.sweep().await },
    );
    runtime.serve(move |cfg| api::routes(cfg, app.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
