//! The reservation service: seat holds with expiry and the reservation
//! lifecycle, decided through events with the concert service.

pub mod api;
pub mod domain;
pub mod events;
pub mod store;

use chrono::Utc;
use serde::Deserialize;
use shared_events::{Envelope, ReservationCancelled, ReservationExpired, Service};
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::pass::AuthSettings;
use ticket_runtime::waiters::Waiters;
use ticket_runtime::{
    CancellationToken, Db, DbError, Migrations, RunningService, ServiceRuntime, Settings,
};

use domain::{reason, HoldPolicy};

pub const SERVICE: Service = Service::Reservation;
pub const DEFAULTS: &str = include_str!("../defaults.toml");
pub const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations"),
    postgres: diesel_migrations::embed_migrations!("migrations"),
};

#[derive(Debug, Clone, Deserialize)]
pub struct ReservationSettings {
    pub auth: AuthSettings,
    pub member_auth: ticket_runtime::member::MemberAuthSettings,
    pub reservation: HoldPolicy,
}

pub async fn start(settings: Settings<ReservationSettings>) -> anyhow::Result<RunningService> {
    let verifier = actix_web::web::Data::new(settings.service.auth.verifier()?);
    let member_auth = settings.service.member_auth.clone();
    let policy = settings.service.reservation.clone();
    let waiters = Waiters::default();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    let members = runtime.trust_members(&member_auth).await?;
    runtime.consume(Arc::new(events::ReservationEvents {
        policy: policy.clone(),
        waiters: waiters.clone(),
    }));
    let (db, sweep_policy, sweep_waiters) = (runtime.db.clone(), policy.clone(), waiters.clone());
    runtime.spawn(move |stop| sweep_loop(db, sweep_policy, sweep_waiters, stop));
    let state = api::AppState {
        db: runtime.db.clone(),
        policy,
        waiters,
    };
    runtime.serve(move |cfg| {
        cfg.app_data(verifier.clone());
        cfg.app_data(members.clone());
        api::routes(cfg, state.clone());
    })
}

/// Expires holds whose time ran out, and gives up requests the concert
/// service never answered. Durable (driven by the database, so a restart
/// loses nothing) and safe with two instances (conditional updates).
async fn sweep_loop(db: Db, policy: HoldPolicy, waiters: Waiters, stop: CancellationToken) {
    let interval = Duration::from_millis(policy.sweep_interval_ms.max(10));
    while !stop.is_cancelled() {
        match sweep_once(&db, &policy).await {
            Ok(changed) => changed.into_iter().for_each(|id| waiters.wake(id)),
            Err(error) => tracing::warn!(%error, "reservation sweep failed; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

pub async fn sweep_once(db: &Db, policy: &HoldPolicy) -> Result<Vec<uuid::Uuid>, DbError> {
    let deadline = policy.pending_deadline();
    db.transaction(move |tx| {
        let now = Utc::now();
        let mut changed = Vec::new();
        for hold in store::due_holds(tx.conn(), now, 200)? {
            if store::expire(tx.conn(), hold.uuid(), now)? {
                tx.publish(&Envelope::new(
                    ReservationExpired {
                        reservation_id: hold.uuid(),
                        schedule_id: hold.schedule_uuid(),
                        seat_no: hold.seat(),
                    },
                    hold.id.clone(),
                ))?;
                changed.push(hold.uuid());
            }
        }
        for stalled in store::stalled_requests(tx.conn(), now - deadline, 200)? {
            if store::reject(tx.conn(), stalled.uuid(), reason::HOLD_TIMED_OUT)? {
                // The concert service may still hold the seat later; this
                // event, behind the request on the same partition, releases it.
                tx.publish(&Envelope::new(
                    ReservationCancelled {
                        reservation_id: stalled.uuid(),
                        schedule_id: stalled.schedule_uuid(),
                        seat_no: stalled.seat(),
                        reason: reason::HOLD_TIMED_OUT.into(),
                        payment_id: None,
                    },
                    stalled.id.clone(),
                ))?;
                changed.push(stalled.uuid());
            }
        }
        Ok::<_, DbError>(changed)
    })
    .await
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
