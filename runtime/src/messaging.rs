//! Kafka: the clients ([`kafka`], [`producer`]), the outbox relay that
//! publishes what a commit wrote ([`relay`]), and idempotent consumption
//! with dead-lettering ([`consumer`]).

pub mod consumer;
pub mod kafka;
pub mod producer;
pub mod relay;
