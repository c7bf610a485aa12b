//! Assembles a service process: database and migrations, broker and topics,
//! outbox relay, event consumers, background jobs and the HTTP server.

use actix_web::web;
use shared_events::Service;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db::{Db, Migrations};
use crate::http::{self, Probes};
use crate::messaging::consumer::{EventConsumer, EventHandler};
use crate::messaging::kafka::Kafka;
use crate::messaging::relay::OutboxRelay;
use crate::ops::metrics::Metrics;

/// A service whose infrastructure is up but whose HTTP server is not yet.
pub struct ServiceRuntime<T> {
    pub service: Service,
    pub settings: Settings<T>,
    pub db: Db,
    pub kafka: Kafka,
    pub metrics: Metrics,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    consumers: Vec<(String, Arc<AtomicBool>)>,
    /// Credentials the HTTP handlers check, once trusted.
    members: Option<web::Data<crate::auth::member::MemberVerifier>>,
    passes: Option<web::Data<crate::auth::pass::PassVerifier>>,
    admin: web::Data<crate::http::admin::AdminKey>,
    /// The API document served at /docs.
    document: Option<crate::http::api_docs::Document>,
}

impl<T> ServiceRuntime<T> {
    pub async fn start(
        service: Service,
        settings: Settings<T>,
        schema: Migrations,
    ) -> anyhow::Result<ServiceRuntime<T>> {
        let admin = web::Data::new(crate::http::admin::AdminKey::from_settings(
            &settings.admin,
        )?);
        let db = Db::connect(&settings.database, schema).await?;
        let kafka = Kafka::connect(&settings.kafka, service.as_str())?;
        let mut delay = Duration::from_millis(100);
        while let Err(error) = kafka.ensure_topics().await {
            tracing::warn!(%error, brokers = %settings.kafka.brokers, "broker not ready; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        let metrics = Metrics::new(service.as_str());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let relay = OutboxRelay::new(
            db.clone(),
            kafka.clone(),
            settings.outbox.clone(),
            metrics.clone(),
        );
        tasks.spawn(relay.run(stop.clone()));
        tracing::info!(%service, backend = ?db.backend(), "infrastructure ready");
        Ok(ServiceRuntime {
            service,
            settings,
            db,
            kafka,
            metrics,
            stop,
            tasks,
            consumers: Vec::new(),
            members: None,
            passes: None,
            admin,
            document: None,
        })
    }

    /// Starts consuming for `handler` in the background.
    /// Serves the service's API document (with the shared parts added) and
    /// Swagger UI at /docs.
    pub fn document(&mut self, document: utoipa::openapi::OpenApi) {
        let document = crate::http::api_docs::complete(self.service, document);
        self.document = Some(crate::http::api_docs::Document(
            crate::http::api_docs::to_json(&document).into(),
        ));
    }

    pub fn consume(&mut self, handler: Arc<dyn EventHandler>) {
        let consumer = EventConsumer::new(
            self.db.clone(),
            self.kafka.clone(),
            self.settings.consumer.clone(),
            self.metrics.clone(),
            handler.clone(),
        );
        self.consumers
            .push((handler.name().to_string(), consumer.joined()));
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            if let Err(error) = consumer.run(stop).await {
                tracing::error!(%error, "consumer stopped");
            }
        });
    }

    /// The verifier of member tokens from the configured identity provider,
    /// its keys refreshed in the background when they come from a URL.
    pub async fn trust_members(
        &mut self,
        settings: &crate::auth::member::MemberAuthSettings,
    ) -> anyhow::Result<()> {
        let verifier = crate::auth::member::MemberVerifier::load(settings).await?;
        self.tasks
            .spawn(verifier.clone().refresh_loop(self.stop.clone()));
        self.members = Some(web::Data::new(verifier));
        Ok(())
    }

    /// Checks queue passes (the `Queue-Pass` header) with the queue's
    /// public key, for the handlers that take a [`Pass`](crate::auth::pass::Pass).
    pub fn trust_passes(
        &mut self,
        settings: &crate::auth::pass::AuthSettings,
    ) -> anyhow::Result<()> {
        self.passes = Some(web::Data::new(settings.verifier()?));
        Ok(())
    }

    /// Runs `round` on a clone of `state` every `interval` until the
    /// service stops (see [`jobs::every`](crate::ops::jobs::every)).
    pub fn every<S, F, Fut, E>(&mut self, job: &'static str, interval: Duration, state: S, round: F)
    where
        S: Clone + Send + 'static,
        F: Fn(S) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        let never = Arc::new(tokio::sync::Notify::new());
        self.every_or_woken(job, interval, never, state, round);
    }

    /// As [`every`](Self::every), and also whenever `wake` is notified.
    pub fn every_or_woken<S, F, Fut, E>(
        &mut self,
        job: &'static str,
        interval: Duration,
        wake: Arc<tokio::sync::Notify>,
        state: S,
        round: F,
    ) where
        S: Clone + Send + 'static,
        F: Fn(S) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        let round = move || round(state.clone());
        self.tasks.spawn(crate::ops::jobs::every_or_woken(
            job,
            interval,
            wake,
            self.stop.clone(),
            round,
        ));
    }

    /// Starts the HTTP server with the service's routes.
    pub fn serve<F>(self, configure: F) -> anyhow::Result<RunningService>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let probes = Probes {
            service: self.service.as_str(),
            db: self.db.clone(),
            kafka: self.kafka.clone(),
            metrics: self.metrics.clone(),
            consumers: self.consumers.clone(),
        };
        let (members, passes, admin) = (
            self.members.clone(),
            self.passes.clone(),
            self.admin.clone(),
        );
        let document = self.document.clone();
        let configure = move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(admin.clone());
            if let Some(members) = &members {
                cfg.app_data(members.clone());
            }
            if let Some(passes) = &passes {
                cfg.app_data(passes.clone());
            }
            if let Some(document) = &document {
                crate::http::api_docs::routes(cfg, document.clone());
            }
            configure(cfg);
        };
        let (server, addr) = http::serve(&self.settings.http, probes, configure)?;
        let handle = server.handle();
        let server = tokio::spawn(server);
        tracing::info!(service = %self.service, %addr, "listening");
        Ok(RunningService {
            addr,
            db: self.db,
            handle,
            server,
            stop: self.stop,
            tasks: self.tasks,
        })
    }
}

pub struct RunningService {
    pub addr: SocketAddr,
    /// For tests and tools that check the service's own data.
    pub db: Db,
    handle: actix_web::dev::ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl RunningService {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping");
        self.stop().await;
        Ok(())
    }

    /// Stops at once, as a crash would: no draining, no final commits of
    /// offsets (blocking work already running may still finish).
    pub async fn kill(mut self) {
        self.stop.cancel();
        self.tasks.abort_all();
        self.handle.stop(false).await;
        self.server.abort();
    }

    /// Stops taking requests, lets in-flight work finish, stops background tasks.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        let _ = self.server.await;
        self.stop.cancel();
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// A service process's `main`: settings from the environment, telemetry,
/// `start`, then run until SIGINT or SIGTERM.
pub async fn run_main<T, F, Fut>(service: Service, defaults: &str, start: F) -> anyhow::Result<()>
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(Settings<T>) -> Fut,
    Fut: Future<Output = anyhow::Result<RunningService>>,
{
    let settings = Settings::<T>::load(defaults)?;
    let _telemetry = crate::ops::telemetry::init(service.as_str(), &settings.telemetry)?;
    let running = start(settings).await?;
    running.run_until_signalled().await
}
