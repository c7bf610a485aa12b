use serde::{Deserialize, Serialize};
use std::fmt;

/// The five services; each one is the only producer on its own topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Concert,
    Queue,
    Reservation,
    MemberBalance,
    Payment,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Concert,
        Service::Queue,
        Service::Reservation,
        Service::MemberBalance,
        Service::Payment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Concert => "concert",
            Service::Queue => "queue",
            Service::Reservation => "reservation",
            Service::MemberBalance => "member-balance",
            Service::Payment => "payment",
        }
    }

    /// The topic this service publishes its outcomes on.
    pub fn topic(self) -> Topic {
        match self {
            Service::Concert => Topic::ConcertEvents,
            Service::Queue => Topic::QueueEvents,
            Service::Reservation => Topic::ReservationEvents,
            Service::MemberBalance => Topic::BalanceEvents,
            Service::Payment => Topic::PaymentEvents,
        }
    }

    /// The topics this service's consumer reads (its consumer group is
    /// named after the service). Tools read lag and dead letters from this.
    pub fn consumes(self) -> &'static [Topic] {
        match self {
            Service::Concert => &[Topic::ReservationEvents],
            Service::Queue => &[Topic::ConcertEvents, Topic::PaymentEvents],
            Service::Reservation => &[
                Topic::ConcertEvents,
                Topic::QueueEvents,
                Topic::BalanceEvents,
                Topic::PaymentEvents,
            ],
            Service::MemberBalance => &[Topic::PaymentEvents, Topic::ReservationEvents],
            Service::Payment => &[
                Topic::ReservationEvents,
                Topic::BalanceEvents,
                Topic::ConcertEvents,
                Topic::QueueEvents,
            ],
        }
    }

    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kafka topics. Each has a dead-letter twin named `<topic>.dlq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    ConcertEvents,
    QueueEvents,
    ReservationEvents,
    BalanceEvents,
    PaymentEvents,
}

impl Topic {
    pub const ALL: [Topic; 5] = [
        Topic::ConcertEvents,
        Topic::QueueEvents,
        Topic::ReservationEvents,
        Topic::BalanceEvents,
        Topic::PaymentEvents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topic::ConcertEvents => "concert.events",
            Topic::QueueEvents => "queue.events",
            Topic::ReservationEvents => "reservation.events",
            Topic::BalanceEvents => "balance.events",
            Topic::PaymentEvents => "payment.events",
        }
    }

    /// Where messages that cannot be handled go, with the reason in headers.
    pub fn dead_letter_name(self) -> String {
        dead_letter_topic(self.name())
    }

    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The dead-letter topic for any topic name (also for topics outside [`Topic`]).
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
