use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::events::{Event, EventType};
use crate::topics::{Service, Topic};

/// The envelope version this build writes and understands.
pub const SCHEMA_VERSION: u16 = 1;

/// The largest event message a consumer accepts: key, headers and envelope
/// together. Events are a few hundred bytes (no payload carries a list), so
/// this leaves room for growth while a runaway or hostile message is refused
/// before it is parsed, and its dead letter stays small enough to publish.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One event with everything needed to route, deduplicate and trace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// UUIDv7: unique, and sortable by creation time.
    pub event_id: Uuid,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub producer: Service,
    /// Kafka message key: the reservation id for saga events.
    pub partition_key: String,
    /// Shared by every event of one saga (the id of the event that began it).
    pub correlation_id: Uuid,
    /// The event this one reacts to, if any.
    pub causation_id: Option<Uuid>,
    pub event: Event,
}

/// What a consumer can make of a message.
#[derive(Debug)]
pub enum Decoded {
    Known(Box<Envelope>),
    /// A well-formed envelope of a type this build does not know: newer
    /// producers may publish it first, so consumers skip and count it.
    UnknownType {
        event_id: Uuid,
        event_type: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid event envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("schema_version {found} is newer than the supported {SCHEMA_VERSION}")]
    UnsupportedSchema { found: u16 },
    #[error("payload of {event_type} is invalid: {source}")]
    Payload {
        event_type: EventType,
        #[source]
        source: serde_json::Error,
    },
    #[error("{event_type} must be produced by {expected}, not {found}")]
    WrongProducer {
        event_type: EventType,
        expected: Service,
        found: Service,
    },
}

#[derive(Serialize)]
struct WireOut<'a> {
    event_id: Uuid,
    event_type: &'static str,
    schema_version: u16,
    occurred_at: DateTime<Utc>,
    producer: Service,
    partition_key: &'a str,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    payload: serde_json::Value,
}

#[derive(Deserialize)]
struct WireIn<'a> {
    event_id: Uuid,
    event_type: String,
    schema_version: u16,
    occurred_at: DateTime<Utc>,
    producer: Service,
    partition_key: String,
    correlation_id: Uuid,
    #[serde(default)]
    causation_id: Option<Uuid>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

impl Envelope {
    /// An event that starts a new correlation (a saga's first step or a plain
    /// fact), on its event's key ([`Event::partition_key`]).
    pub fn new(event: impl Into<Event>) -> Envelope {
        let event_id = Uuid::now_v7();
        Envelope::build(event.into(), event_id, None)
    }

    /// An event published in reaction to `cause`: same correlation, caused by it.
    pub fn caused_by(cause: &Envelope, event: impl Into<Event>) -> Envelope {
        Envelope::build(event.into(), cause.correlation_id, Some(cause.event_id))
    }

    fn build(event: Event, correlation_id: Uuid, causation_id: Option<Uuid>) -> Envelope {
        let event_id = if causation_id.is_none() {
            correlation_id
        } else {
            Uuid::now_v7()
        };
        Envelope {
            event_id,
            schema_version: SCHEMA_VERSION,
            // Microseconds: what both SQLite text and PostgreSQL keep.
            occurred_at: Utc::now().trunc_subsecs(6),
            producer: event.event_type().producer(),
            partition_key: event.partition_key().to_string(),
            correlation_id,
            causation_id,
            event,
        }
    }

    pub fn event_type(&self) -> EventType {
        self.event.event_type()
    }

    /// Events go to their producer's topic.
    pub fn topic(&self) -> Topic {
        self.producer.topic()
    }

    #[expect(
        clippy::expect_used,
        reason = "plain structs of strings, numbers and UUIDs always serialize"
    )]
    pub fn to_json(&self) -> String {
        let wire = WireOut {
            event_id: self.event_id,
            event_type: self.event_type().as_str(),
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            producer: self.producer,
            partition_key: &self.partition_key,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            payload: self
                .event
                .payload_json()
                .expect("payload structs serialize infallibly"),
        };
        serde_json::to_string(&wire).expect("envelope serializes infallibly")
    }

    pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let wire: WireIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Envelope)?;
        if wire.schema_version > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedSchema {
                found: wire.schema_version,
            });
        }
        let Some(event_type) = EventType::parse(&wire.event_type) else {
            return Ok(Decoded::UnknownType {
                event_id: wire.event_id,
                event_type: wire.event_type,
            });
        };
        if event_type.producer() != wire.producer {
            return Err(DecodeError::WrongProducer {
                event_type,
                expected: event_type.producer(),
                found: wire.producer,
            });
        }
        let event = Event::from_payload(event_type, wire.payload)
            .map_err(|source| DecodeError::Payload { event_type, source })?;
        Ok(Decoded::Known(Box::new(Envelope {
            event_id: wire.event_id,
            schema_version: wire.schema_version,
            occurred_at: wire.occurred_at,
            producer: wire.producer,
            partition_key: wire.partition_key,
            correlation_id: wire.correlation_id,
            causation_id: wire.causation_id,
            event,
        })))
    }
}
