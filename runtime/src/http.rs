//! The HTTP side every service shares: the server with its health and
//! metrics endpoints ([`server`]), the one JSON error shape ([`error`]),
//! the admin credential, API documents, long-polling and idempotency keys.

pub mod admin;
pub mod api_docs;
pub mod error;
pub mod idempotency;
pub mod server;
pub mod utc_millis;
pub mod waiters;

pub use error::{ApiError, ErrorBody};
pub use server::{serve, Probes, REQUEST_ID};
