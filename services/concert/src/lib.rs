//! The concert service: the catalog (concerts, schedules, seats) and the
//! seat side of the reservation and payment sagas.

pub mod api;
pub mod domain;
pub mod events;
pub mod store;

use anyhow::bail;
use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use shared_events::{Envelope, SeatReleased, Service};
use std::time::Duration;
use ticket_runtime::{
    CancellationToken, Db, DbError, Migrations, RunningService, Secret, ServiceRuntime, Settings,
};
use uuid::Uuid;

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
    /// Required by the admin API; no default, so a deployment that forgets
    /// it does not start open.
    pub admin_key: Secret,
    pub demo_data: bool,
    #[serde(flatten)]
    pub holds: HoldPolicy,
}

/// How long the concert service keeps a seat HELD for a reservation.
#[derive(Debug, Clone, Deserialize)]
pub struct HoldPolicy {
    /// How long a held seat waits for its payment; travels in `SeatHeld`.
    pub hold_ttl_secs: i64,
    /// A hold is released on the concert's own data this long after it
    /// expired, unless the seat was sold: room for a confirmation that was
    /// decided in time and is still on its way.
    pub release_grace_secs: i64,
    /// How often lapsed holds are looked for.
    pub sweep_interval_ms: u64,
}

impl HoldPolicy {
    pub fn hold_ttl(&self) -> TimeDelta {
        TimeDelta::seconds(self.hold_ttl_secs)
    }

    pub fn release_grace(&self) -> TimeDelta {
        TimeDelta::seconds(self.release_grace_secs)
    }
}

/// The shortest admin key accepted: long enough not to be guessed.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

pub async fn start(settings: Settings<ConcertSettings>) -> anyhow::Result<RunningService> {
    if settings.service.concert.admin_key.expose().trim().len() < MIN_ADMIN_KEY_LEN {
        bail!(
            "APP__CONCERT__ADMIN_KEY must be set to at least {MIN_ADMIN_KEY_LEN} characters \
             (`ticketctl up` makes one per data folder; `openssl rand -hex 16` makes one too)"
        );
    }
    let holds = settings.service.concert.holds.clone();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    runtime.consume(std::sync::Arc::new(events::ConcertEvents {
        holds: holds.clone(),
    }));
    if runtime.settings.service.concert.demo_data {
        store::seed_demo_catalog(&runtime.db).await?;
    }
    let db = runtime.db.clone();
    runtime.spawn(move |stop| release_loop(db, holds, stop));
    let state = api::AppState {
        db: runtime.db.clone(),
        admin_key: runtime.settings.service.concert.admin_key.clone(),
    };
    runtime.serve(move |cfg| api::routes(cfg, state.clone()))
}

/// Releases seats whose hold lapsed, so that no seat stays HELD forever
/// whatever happened to the reservation's events. Safe with two instances:
/// each release is a conditional update.
async fn release_loop(db: Db, holds: HoldPolicy, stop: CancellationToken) {
    let interval = Duration::from_millis(holds.sweep_interval_ms.max(10));
    while !stop.is_cancelled() {
        match release_lapsed_holds(&db, &holds).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "lapsed seat holds released"),
            Err(error) => tracing::warn!(%error, "releasing lapsed holds failed; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Releases every seat HELD past its expiry and the grace, publishing
/// `SeatReleased` for each; returns how many.
pub async fn release_lapsed_holds(db: &Db, holds: &HoldPolicy) -> Result<usize, DbError> {
    let grace = holds.release_grace();
    db.transaction(move |tx| {
        let cutoff = Utc::now() - grace;
        let mut released = 0;
        for hold in store::lapsed_holds(tx.conn(), cutoff, 200)? {
            if !store::release_lapsed(tx.conn(), &hold, cutoff)? {
                continue;
            }
            released += 1;
            let (Some(reservation_id), Ok(schedule_id)) = (
                hold.reservation_id
                    .as_deref()
                    .and_then(|r| Uuid::parse_str(r).ok()),
                Uuid::parse_str(&hold.schedule_id),
            ) else {
                continue;
            };
            tx.publish(&Envelope::new(
                SeatReleased {
                    reservation_id,
                    schedule_id,
                    seat_no: hold.seat_no as u32,
                },
                reservation_id.to_string(),
            ))?;
        }
        Ok::<_, DbError>(released)
    })
    .await
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
