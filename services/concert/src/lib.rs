//! The concert service: the catalog (concerts, schedules, seats) and the
//! seat side of the reservation and payment sagas.
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
use std::time::Duration;
use ticket_runtime::{Migrations, RunningService, ServiceRuntime, Settings};

use app::saga::SeatSaga;
use app::{Catalog, SeatMaps};
use domain::{HoldPolicy, SeatMapFreshness};

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
    pub demo_data: bool,
    #[serde(flatten)]
    pub holds: HoldPolicy,
    #[serde(flatten)]
    pub seat_maps: SeatMapFreshness,
}

pub async fn start(settings: Settings<ConcertSettings>) -> anyhow::Result<RunningService> {
    let holds = settings.service.concert.holds.clone();
    let demo_data = settings.service.concert.demo_data;
    let seat_maps = SeatMaps::new(settings.service.concert.seat_maps, api::seat_map_json);
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.document(api::openapi());
    runtime.consume(std::sync::Arc::new(events::ConcertEvents {
        saga: SeatSaga {
            holds: holds.clone(),
            seat_maps: seat_maps.clone(),
        },
    }));
    let app = Catalog {
        db: runtime.db.clone(),
        holds,
        clock: ticket_runtime::Clock::system(),
        seat_maps,
    };
    if demo_data {
        app.seed_demo().await?;
    }
    let interval = Duration::from_millis(app.holds.sweep_interval_ms);
    runtime.every(
        "concert-hold-release",
        interval,
        app.clone(),
        |app| async move { app.release_lapsed_holds().await },
    );
    runtime.serve(move |cfg| api::routes(cfg, app.clone()))
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
