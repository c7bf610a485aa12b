//! The queue service: a fair waiting line per concert, admission in arrival
//! order under a cap and a rate, and signed access passes.

pub mod api;
pub mod domain;
pub mod events;
pub mod store;

use anyhow::Context;
use chrono::Utc;
use serde::Deserialize;
use shared_events::Service;
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::pass::PassSigner;
use ticket_runtime::{
    CancellationToken, Db, DbError, Migrations, RunningService, Secret, ServiceRuntime, Settings,
};

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
    pub member_auth: ticket_runtime::member::MemberAuthSettings,
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
            "APP__QUEUE__PASS_SIGNING_KEY must be set (generate one with `ticketctl keygen`)",
        )?,
    );
    let policy = settings.service.queue.policy.clone();
    let member_auth = settings.service.member_auth.clone();
    let mut runtime = ServiceRuntime::start(SERVICE, settings, SCHEMA).await?;
    let members = runtime.trust_members(&member_auth).await?;
    runtime.consume(Arc::new(events::QueueEvents));
    let (db, admit_policy, admit_signer) = (runtime.db.clone(), policy.clone(), signer.clone());
    runtime.spawn(move |stop| admission_loop(db, admit_policy, admit_signer, stop));
    let (db, sweep_policy) = (runtime.db.clone(), policy.clone());
    runtime.spawn(move |stop| sweep_loop(db, sweep_policy, stop));
    let state = api::AppState {
        db: runtime.db.clone(),
        policy,
        signer,
    };
    runtime.serve(move |cfg| {
        cfg.app_data(members.clone());
        api::routes(cfg, state.clone());
    })
}

/// Admits waiting fans as places free up and the rate allows. Safe with two
/// instances: each admission is one transaction on the line's row.
async fn admission_loop(
    db: Db,
    policy: QueuePolicy,
    signer: Arc<PassSigner>,
    stop: CancellationToken,
) {
    let interval = Duration::from_millis(policy.admission_interval_ms.max(10));
    while !stop.is_cancelled() {
        let lines = db
            .run(|conn| store::lines_with_waiting(conn).map_err(DbError::from))
            .await;
        for concert_id in lines.unwrap_or_default() {
            let (policy, signer) = (policy.clone(), signer.clone());
            let admitted = db
                .transaction(move |tx| {
                    store::admit(tx, &concert_id, &policy, &signer, Utc::now())
                        .map_err(DbError::from)
                })
                .await;
            if let Err(error) = admitted {
                tracing::warn!(%error, "admission failed; will retry");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Drops waiters who stopped polling and frees the places of expired passes.
async fn sweep_loop(db: Db, policy: QueuePolicy, stop: CancellationToken) {
    let interval = Duration::from_millis(policy.sweep_interval_ms.max(10));
    while !stop.is_cancelled() {
        let policy_for_drop = policy.clone();
        let swept = db
            .transaction(move |tx| {
                let now = Utc::now();
                let dropped = store::drop_idle_waiters(tx.conn(), now, &policy_for_drop, 500)?;
                let expired = store::expire_passes(tx.conn(), now, 500)?;
                Ok::<_, DbError>((dropped, expired))
            })
            .await;
        match swept {
            Ok((0, 0)) => {}
            Ok((dropped, expired)) => tracing::info!(dropped, expired, "queue swept"),
            Err(error) => tracing::warn!(%error, "queue sweep failed; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

pub async fn main() -> anyhow::Result<()> {
    ticket_runtime::service::run_main(SERVICE, DEFAULTS, start).await
}
