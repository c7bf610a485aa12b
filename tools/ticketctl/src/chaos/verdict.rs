//! What `ticketctl chaos` checks once the cluster has settled, beyond
//! `ticketctl audit`: every outbox empty, no valid event dead-lettered,
//! every fan's last answer true of the end state; and for the replay, a
//! digest of every service's state and the rewinding of consumer groups.

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use shared_events::Service;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::inspect::audit::{Lister, Snapshot, Violation};
use crate::inspect::{dlq, status, Body, ClusterOptions, Reader};
use crate::load::report::{FanRecord, Told};

/// Each service's outbox backlog, read from its readiness; an outbox that
/// is not empty (or a service that does not say) is a violation.
pub async fn outboxes(http: &reqwest::Client, cluster: &ClusterOptions) -> Vec<Violation> {
    let mut found = Vec::new();
    for service in Service::ALL {
        let pending = match status::readiness(http, cluster.urls.url(service)).await {
            Ok(body) => body["outbox"]["pending"].as_i64(),
            Err(_) => None,
        };
        match pending {
            Some(0) => {}
            Some(pending) => found.push(Violation {
                invariant: "outbox_empty",
                subject: service.to_string(),
                detail: format!("{pending} events still in its outbox after settling"),
            }),
            None => found.push(Violation {
                invariant: "outbox_empty",
                subject: service.to_string(),
                detail: "its readiness does not say what its outbox holds".to_string(),
            }),
        }
    }
    found
}

/// Dead letters: a well-formed event of the contract must never be one (a
/// chaos run sends no garbage, so a letter means a valid event failed).
/// Returns the violations and how many letters there are in all.
pub fn dead_letters(cluster: &ClusterOptions) -> anyhow::Result<(Vec<Violation>, usize)> {
    let reader = Reader::connect(&cluster.kafka)?;
    let letters = dlq::letters(
        &reader,
        &dlq::Selection {
            kafka: cluster.kafka.clone(),
            topic: None,
            consumer: None,
        },
    )?;
    let found = letters
        .iter()
        .filter(|letter| matches!(letter.record.body, Body::Event(_)))
        .map(|letter| Violation {
            invariant: "no_valid_event_dead_lettered",
            subject: letter.record.address(),
            detail: format!(
                "a valid {} event in the dead-letter topic of {}: {}",
                letter
                    .record
                    .envelope()
                    .map_or("", |e| e.event_type().as_str()),
                letter.origin_topic,
                letter
                    .record
                    .header(ticket_runtime::messaging::kafka::headers::DLQ_REASON)
                    .unwrap_or("(no reason)")
            ),
        })
        .collect();
    Ok((found, letters.len()))
}

/// What each fan was told, held against the end state: told COMPLETED,
/// they own a SOLD seat and were debited once; told FAILED or EXPIRED (or
/// walked away from a hold), they have no seat and no net debit.
pub fn fans(told: &[FanRecord], end: &Snapshot) -> Vec<Violation> {
    let reservations: HashMap<&str, _> = end
        .reservations
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    let seat_of: HashMap<&str, _> = end
        .seats
        .iter()
        .filter_map(|s| Some((s.reservation_id.as_deref()?, s)))
        .collect();
    let mut kept_debits: HashMap<&str, Vec<&str>> = HashMap::new();
    for debit in end.debits.iter().filter(|d| !d.refunded) {
        kept_debits
            .entry(debit.user_id.as_str())
            .or_default()
            .push(debit.payment_id.as_str());
    }
    let mut confirmed: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in end.reservations.iter().filter(|r| r.status == "CONFIRMED") {
        confirmed
            .entry(r.user_id.as_str())
            .or_default()
            .push(r.id.as_str());
    }
    let mut found = Vec::new();
    for fan in told {
        let user = fan.user_id.to_string();
        let debits = kept_debits.get(user.as_str()).cloned().unwrap_or_default();
        let seats = confirmed.get(user.as_str()).cloned().unwrap_or_default();
        let mut violation = |invariant, detail: String| {
            found.push(Violation {
                invariant,
                subject: format!("fan {user}"),
                detail,
            })
        };
        match &fan.told {
            Told::Completed {
                reservation_id,
                payment_id,
            } => {
                let reservation = reservations.get(reservation_id.as_str());
                let owns = reservation
                    .is_some_and(|r| r.status == "CONFIRMED" && r.user_id == user)
                    && seat_of
                        .get(reservation_id.as_str())
                        .is_some_and(|s| s.status == "SOLD");
                if !owns {
                    violation(
                        "told_completed_owns_seat",
                        format!(
                            "told COMPLETED for reservation {reservation_id}, which is {} with its seat {}",
                            reservation.map_or("unknown", |r| r.status.as_str()),
                            seat_of
                                .get(reservation_id.as_str())
                                .map_or("not taken", |s| s.status.as_str())
                        ),
                    );
                }
                if debits != [payment_id.as_str()] {
                    violation(
                        "told_completed_debited_once",
                        format!("told COMPLETED by payment {payment_id}; debits kept: {debits:?}"),
                    );
                }
            }
            Told::PaymentFailed { reservation_id } | Told::Abandoned { reservation_id, .. } => {
                let what = match &fan.told {
                    Told::PaymentFailed { .. } => "told FAILED",
                    Told::Abandoned { expired: true, .. } => "told EXPIRED",
                    _ => "walked away from the hold",
                };
                if !debits.is_empty() {
                    violation(
                        "told_failed_not_debited",
                        format!("{what} (reservation {reservation_id}); debits kept: {debits:?}"),
                    );
                }
                if !seats.is_empty() {
                    violation(
                        "told_failed_no_seat",
                        format!("{what} (reservation {reservation_id}); confirmed: {seats:?}"),
                    );
                }
            }
        }
    }
    found
}

/// Every service's state as its admin listings show it (seats, reservations,
/// payments, wallets with their ledgers' sums, debits) and the data
/// platform's records: what a replay must leave exactly as it was.
pub async fn state(
    http: &reqwest::Client,
    cluster: &ClusterOptions,
    data_platform: &str,
) -> anyhow::Result<BTreeMap<&'static str, Vec<Value>>> {
    let admin_key = cluster.admin_key()?;
    let list = Lister {
        http,
        admin_key: &admin_key,
    };
    let urls = &cluster.urls;
    let mut state = BTreeMap::new();
    for (name, service, path) in [
        ("seats", Service::Concert, "/v1/admin/seats"),
        (
            "reservations",
            Service::Reservation,
            "/v1/admin/reservations",
        ),
        ("payments", Service::Payment, "/v1/admin/payments"),
        ("wallets", Service::MemberBalance, "/v1/admin/wallets"),
        ("debits", Service::MemberBalance, "/v1/admin/debits"),
    ] {
        state.insert(name, list.all::<Value>(urls.url(service), path).await?);
    }
    let url = format!("{data_platform}/v1/reservations");
    let records: Value = http
        .get(&url)
        .send()
        .await
        .with_context(|| url.clone())?
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    let mut records = match records {
        Value::Array(records) => records,
        other => vec![other],
    };
    records.sort_by_key(Value::to_string);
    state.insert("data_platform", records);
    Ok(state)
}

/// A short digest of a state, to print: CRC-32 of its canonical JSON.
pub fn digest(state: &BTreeMap<&'static str, Vec<Value>>) -> String {
    let text = serde_json::to_string(state).unwrap_or_default();
    format!("{:08x}", crc32fast::hash(text.as_bytes()))
}

/// What differs between two states: per listing, the items of one not in
/// the other (at most a few of each, to read).
pub fn differences(
    before: &BTreeMap<&'static str, Vec<Value>>,
    after: &BTreeMap<&'static str, Vec<Value>>,
) -> Vec<Violation> {
    let mut found = Vec::new();
    for (name, items) in before {
        let empty = Vec::new();
        let later = after.get(name).unwrap_or(&empty);
        let gone: Vec<&Value> = items.iter().filter(|i| !later.contains(i)).collect();
        let new: Vec<&Value> = later.iter().filter(|i| !items.contains(i)).collect();
        for (what, list) in [
            ("before the replay only", gone),
            ("after the replay only", new),
        ] {
            for item in list.iter().take(5) {
                found.push(Violation {
                    invariant: "replay_changes_nothing",
                    subject: (*name).to_string(),
                    detail: format!("{what}: {item}"),
                });
            }
        }
    }
    found
}

/// Rewinds every service's consumer group to the start of every topic it
/// reads (its members must be stopped); returns how many events the groups
/// will read again.
pub fn rewind_consumer_groups(cluster: &ClusterOptions) -> anyhow::Result<i64> {
    let reader = Reader::connect(&cluster.kafka)?;
    let mut replayed = 0;
    for service in Service::ALL {
        let group = format!("{}{}", cluster.kafka.topic_prefix, service.as_str());
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &cluster.kafka.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()?;
        let mut start = TopicPartitionList::new();
        for topic in service.consumes() {
            let name = reader.on_cluster(topic.name());
            for partition in 0..reader.partitions(topic.name())? {
                let (low, high) = reader.watermarks(topic.name(), partition)?;
                replayed += high - low;
                start.add_partition_offset(&name, partition, Offset::Offset(low))?;
            }
        }
        commit_with_retries(&consumer, &start)
            .with_context(|| format!("rewinding consumer group {group}"))?;
    }
    Ok(replayed)
}

/// The group coordinator may still be settling the stopped members'
/// departure: a commit is tried a few times.
fn commit_with_retries(
    consumer: &BaseConsumer,
    offsets: &TopicPartitionList,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match consumer.commit(offsets, CommitMode::Sync) {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 20 => {
                eprintln!("chaos: rewind commit refused ({error}); retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::audit::{Debit, Reservation, TakenSeat};

    fn reservation(id: &str, user: &str, status: &str, payment: Option<&str>) -> Reservation {
        Reservation {
            id: id.into(),
            user_id: user.into(),
            schedule_id: "s".into(),
            seat_no: 1,
            status: status.into(),
            payment_id: payment.map(Into::into),
        }
    }

    fn debit(user: &str, payment: &str, reservation: &str, refunded: bool) -> Debit {
        Debit {
            user_id: user.into(),
            payment_id: payment.into(),
            reservation_id: reservation.into(),
            refunded,
        }
    }

    fn sold(reservation: &str, payment: &str) -> TakenSeat {
        TakenSeat {
            reservation_id: Some(reservation.into()),
            schedule_id: "s".into(),
            seat_no: 1,
            status: "SOLD".into(),
            payment_id: Some(payment.into()),
        }
    }

    #[test]
    fn a_fans_answer_is_held_against_the_end_state() {
        let completed = uuid::Uuid::new_v4();
        let failed = uuid::Uuid::new_v4();
        let (c, f) = (completed.to_string(), failed.to_string());
        let told = [
            FanRecord {
                user_id: completed,
                told: Told::Completed {
                    reservation_id: "r1".into(),
                    payment_id: "p1".into(),
                },
            },
            FanRecord {
                user_id: failed,
                told: Told::PaymentFailed {
                    reservation_id: "r2".into(),
                },
            },
        ];
        let agreeing = Snapshot {
            reservations: vec![
                reservation("r1", &c, "CONFIRMED", Some("p1")),
                reservation("r2", &f, "CANCELLED", None),
            ],
            payments: Vec::new(),
            wallets: Vec::new(),
            debits: vec![debit(&c, "p1", "r1", false), debit(&f, "p2", "r2", true)],
            seats: vec![sold("r1", "p1")],
        };
        assert_eq!(fans(&told, &agreeing), Vec::new());

        // Debited twice, and the failed fan's debit kept: both are found.
        let doubled = Snapshot {
            debits: vec![
                debit(&c, "p1", "r1", false),
                debit(&c, "p3", "r1", false),
                debit(&f, "p2", "r2", false),
            ],
            ..agreeing
        };
        let found: Vec<&str> = fans(&told, &doubled).iter().map(|v| v.invariant).collect();
        assert_eq!(
            found,
            ["told_completed_debited_once", "told_failed_not_debited"]
        );

        // Told COMPLETED, but the seat was never sold.
        let unsold = Snapshot {
            reservations: vec![reservation("r1", &c, "CONFIRMED", Some("p1"))],
            payments: Vec::new(),
            wallets: Vec::new(),
            debits: vec![debit(&c, "p1", "r1", false)],
            seats: Vec::new(),
        };
        let found: Vec<&str> = fans(&told[..1], &unsold)
            .iter()
            .map(|v| v.invariant)
            .collect();
        assert_eq!(found, ["told_completed_owns_seat"]);
    }
}
