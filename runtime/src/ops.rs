//! What operating a service needs besides its requests: logs and traces
//! ([`telemetry`]), Prometheus metrics ([`metrics`]) and background jobs
//! ([`jobs`]).

pub mod jobs;
pub mod metrics;
pub mod telemetry;
