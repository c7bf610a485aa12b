//! The event contract between the ticketing services.
//!
//! Every event travels as one JSON [`Envelope`] whose `event_type` names a
//! variant of [`Event`] and whose `payload` is that variant's struct. Topic
//! names and event types live here only; services never spell them as strings.
//!
//! Evolution rules (see `docs/events.md`): adding an optional payload field or
//! a new event type is compatible (consumers ignore unknown fields and skip
//! unknown types); renaming or removing a field needs a new `schema_version`.

mod data_platform;
mod envelope;
mod events;
mod reason;
mod topics;

pub use data_platform::CompletedReservation;
pub use envelope::{DecodeError, Decoded, Envelope, MAX_MESSAGE_BYTES, SCHEMA_VERSION};
pub use events::*;
pub use reason::Reason;
pub use topics::{dead_letter_topic, Service, Topic};
