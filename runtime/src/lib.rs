//! What every ticketing service shares. A service brings its schema, its
//! event handlers and its routes; this crate brings configuration, the
//! database (SQLite or PostgreSQL), the transactional outbox, idempotent
//! consumption with dead-lettering, tracing across Kafka and HTTP, health
//! and metrics endpoints.

pub mod admin;
pub mod api_docs;
pub mod broker;
pub mod clock;
pub mod column;
pub mod config;
pub mod consumer;
pub mod db;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod jobs;
pub mod kafka;
pub mod member;
pub mod metrics;
pub mod outbox;
pub mod pass;
pub mod producer;
pub mod schema;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod waiters;

pub use clock::Clock;
pub use config::{NoServiceSettings, Secret, Settings};
pub use consumer::{EventHandler, HandlerError, ServiceHandler};
pub use db::{AnyConnection, Backend, Db, DbError, Migrations, Transient, Tx};
pub use http::{ApiError, ErrorBody};
pub use kafka::Kafka;
pub use metrics::Metrics;
pub use service::{RunningService, ServiceRuntime};
pub use tokio_util::sync::CancellationToken;

#[doc(hidden)]
pub use serde as __serde;
#[doc(hidden)]
pub use utoipa as __utoipa;
#[doc(hidden)]
pub use uuid as __uuid;
