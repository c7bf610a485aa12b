//! What every ticketing service shares. A service brings its schema, its
//! event handlers and its routes; this crate brings configuration, the
//! database (SQLite or PostgreSQL), the transactional outbox, idempotent
//! consumption with dead-lettering, tracing across Kafka and HTTP, health
//! and metrics endpoints.

// The rooms, from the ground up; each imports only rooms below it:
// `config` and `clock`; `ops` (telemetry, metrics, jobs); `db` (with the
// runtime's own tables, and `ids`, typed columns); `messaging` (Kafka, the
// outbox relay, consumers); `http`; `auth` (member tokens, passes);
// `service`, which assembles a process. `dev` serves the tools and tests
// only. docs/architecture.md draws it; `cargo test -p layers` checks it.
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod dev;
pub mod http;
pub mod ids;
pub mod messaging;
pub mod ops;
pub mod service;

pub use clock::Clock;
pub use config::{NoServiceSettings, Secret, Settings};
pub use db::{AnyConnection, Backend, Db, DbError, Migrations, Transient, Tx};
pub use http::{ApiError, ErrorBody};
pub use messaging::consumer::{EventHandler, HandlerError};
pub use messaging::kafka::Kafka;
pub use ops::metrics::Metrics;
pub use service::{RunningService, ServiceRuntime};
pub use tokio_util::sync::CancellationToken;
