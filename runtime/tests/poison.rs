//! Poison on every topic of the contract: each kind of message that breaks
//! the contract, sent between two valid events, goes to the topic's
//! dead-letter topic with its reason and is counted, while the valid events
//! around it are applied in order and the consumer keeps going.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use chrono::Utc;
use diesel::prelude::*;
use prometheus::core::Collector;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use shared_events::{
    BalanceDebited, Envelope, EventType, PaymentRequested, QueueTokenAdmitted, Reason,
    ReservationRejected, SeatReleased, Service, Topic, MAX_MESSAGE_BYTES,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::dev::testkit::{self, eventually, TestDatabase};
use ticket_runtime::{
    DbError, EventHandler, HandlerError, Migrations, NoServiceSettings, ServiceRuntime, Tx,
};
use uuid::Uuid;

diesel::table! {
    effects (event_id) {
        event_id -> Text,
        amount -> BigInt,
        position -> BigInt,
        trace_id -> Nullable<Text>,
    }
}

const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("tests/migrations"),
    postgres: diesel_migrations::embed_migrations!("tests/migrations"),
};

/// Generous: correctness only, never a timing.
const WAIT: Duration = Duration::from_secs(120);
const CONSUMER: &str = "omnivore";

/// Applies every event of every topic, recording the order it saw them in.
struct Omnivore;

impl EventHandler for Omnivore {
    fn name(&self) -> &str {
        CONSUMER
    }

    fn topics(&self) -> Vec<Topic> {
        Topic::ALL.to_vec()
    }

    fn handles(&self, _: EventType) -> bool {
        true
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let position: i64 = effects::table
            .count()
            .get_result(tx.conn())
            .map_err(DbError::from)?;
        diesel::insert_into(effects::table)
            .values((
                effects::event_id.eq(event.event_id.to_string()),
                effects::amount.eq(0),
                effects::position.eq(position + 1),
            ))
            .execute(tx.conn())
            .map_err(DbError::from)?;
        Ok(())
    }
}

/// A valid event of `topic`'s producer, keyed by `key`.
fn valid(topic: Topic, key: Uuid) -> Envelope {
    let envelope = match topic {
        Topic::ConcertEvents => Envelope::new(SeatReleased {
            reservation_id: key,
            schedule_id: Uuid::now_v7(),
            seat_no: 7,
        }),
        Topic::QueueEvents => Envelope::new(QueueTokenAdmitted {
            token: Uuid::now_v7(),
            user_id: key,
            concert_id: Uuid::now_v7(),
            pass_expires_at: Utc::now(),
        }),
        Topic::ReservationEvents => Envelope::new(ReservationRejected {
            reservation_id: key,
            reason: Reason::SeatTaken,
        }),
        Topic::BalanceEvents => Envelope::new(BalanceDebited {
            payment_id: Uuid::now_v7(),
            reservation_id: key,
            user_id: Uuid::now_v7(),
            entry_id: Uuid::now_v7(),
            amount: 150_000,
        }),
        Topic::PaymentEvents => Envelope::new(PaymentRequested {
            payment_id: Uuid::now_v7(),
            reservation_id: key,
            user_id: Uuid::now_v7(),
            amount: 150_000,
        }),
    };
    assert_eq!(envelope.topic(), topic);
    envelope
}

/// A valid event's wire form, changed by `edit`.
fn edited(topic: Topic, key: Uuid, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut wire: Value = serde_json::from_str(&valid(topic, key).to_json()).unwrap();
    edit(&mut wire);
    serde_json::to_vec(&wire).unwrap()
}

/// Bytes that are no JSON at all (0xFF never starts a JSON value).
fn random_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    bytes[0] = 0xFF;
    bytes
}

/// A message as a producer sends it.
struct Outgoing {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// The `event_type` header: what the message claims to be.
    claimed_type: Option<String>,
}

impl Outgoing {
    /// A valid event, as the outbox relay sends it.
    fn event(envelope: &Envelope) -> Outgoing {
        Outgoing {
            key: Some(envelope.partition_key.clone().into_bytes()),
            payload: Some(envelope.to_json().into_bytes()),
            claimed_type: Some(envelope.event_type().as_str().into()),
        }
    }

    /// Sends to `partition` (else by key); returns the partition it went to.
    async fn send(&self, producer: &FutureProducer, topic: &str, partition: Option<i32>) -> i32 {
        let mut headers = OwnedHeaders::new();
        if let Some(claimed) = &self.claimed_type {
            headers = headers.insert(Header {
                key: "event_type",
                value: Some(claimed.as_str()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &self.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &self.payload {
            record = record.payload(payload.as_slice());
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)
            .expect("the broker takes the message")
            .partition
    }
}

/// Each kind of poison for `topic`, keyed by `key` unless the kind is
/// about the key, with the reason code its dead letter must carry.
fn poisons(topic: Topic, key: Uuid) -> Vec<(&'static str, Outgoing)> {
    let keyed = |code, payload: Vec<u8>| {
        let message = Outgoing {
            key: Some(key.to_string().into_bytes()),
            payload: Some(payload),
            claimed_type: None,
        };
        (code, message)
    };
    let position = Topic::ALL.iter().position(|t| *t == topic).unwrap();
    let next_topic = Topic::ALL[(position + 1) % Topic::ALL.len()];
    let owner = valid(topic, key).producer;
    let impostor = Service::ALL.into_iter().find(|s| *s != owner).unwrap();
    let whole = valid(topic, key).to_json().into_bytes();
    vec![
        claiming(
            format!("\u{1}{}", Uuid::new_v4()),
            keyed("malformed", random_bytes(position as u64 + 7)),
        ),
        keyed("truncated", whole[..whole.len() / 2].to_vec()),
        keyed(
            "not_an_envelope",
            serde_json::to_vec(&json!({"order": 42, "items": ["a", "b"]})).unwrap(),
        ),
        keyed(
            "invalid_payload",
            edited(topic, key, |w| w["payload"] = json!({"seat": "three"})),
        ),
        keyed(
            "unsupported_schema",
            edited(topic, key, |w| w["schema_version"] = json!(2)),
        ),
        claiming(
            "SeatTeleported".into(),
            keyed(
                "unknown_event_type",
                edited(topic, key, |w| w["event_type"] = json!("SeatTeleported")),
            ),
        ),
        keyed(
            "wrong_producer",
            edited(topic, key, |w| w["producer"] = json!(impostor.as_str())),
        ),
        // Consistent in itself, but its producer publishes on another topic.
        keyed("wrong_topic", valid(next_topic, key).to_json().into_bytes()),
        // Valid but for its size: far over the limit, a little under the
        // largest message the broker takes (Kafka's default 1 MiB).
        keyed(
            "oversized",
            edited(topic, key, |w| w["padding"] = json!("x".repeat(900_000))),
        ),
        (
            "empty",
            Outgoing {
                payload: None,
                ..Outgoing::event(&valid(topic, key))
            },
        ),
        (
            "missing_key",
            Outgoing {
                key: None,
                ..Outgoing::event(&valid(topic, key))
            },
        ),
        (
            "key_mismatch",
            Outgoing {
                key: Some(b"someone-else".to_vec()),
                ..Outgoing::event(&valid(topic, key))
            },
        ),
    ]
}

/// `poison`, with an `event_type` header claiming `claimed`.
fn claiming(claimed: String, (code, poison): (&'static str, Outgoing)) -> (&'static str, Outgoing) {
    let message = Outgoing {
        claimed_type: Some(claimed),
        ..poison
    };
    (code, message)
}

fn header(message: &impl Message, name: &str) -> Option<String> {
    message
        .headers()
        .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// What was sent to one topic: valid event ids in order, and the poison.
struct Sent {
    valid: Vec<String>,
    poison: BTreeMap<&'static str, Outgoing>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_poison_on_every_topic_is_dead_lettered_with_its_reason() {
    testkit::init_tracing();
    let db = TestDatabase::sqlite("poison");
    let prefix = testkit::unique_prefix();
    let mut runtime: ServiceRuntime<NoServiceSettings> = ServiceRuntime::start(
        Service::Payment,
        testkit::settings("", &db.url, &prefix),
        SCHEMA,
    )
    .await
    .expect("the service starts");
    runtime.consume(Arc::new(Omnivore));

    // A producer of its own: poison comes from anywhere.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", testkit::broker())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    // On each topic: a valid event, then each poison followed by another
    // valid event, all on the valid events' partition so that "between"
    // holds where order exists.
    let mut sent: HashMap<Topic, Sent> = HashMap::new();
    for topic in Topic::ALL {
        let name = runtime.kafka.topic_name(topic);
        let key = Uuid::now_v7();
        let first = valid(topic, key);
        let mut valid_ids = vec![first.event_id.to_string()];
        let partition = Outgoing::event(&first).send(&producer, &name, None).await;
        let mut poison = BTreeMap::new();
        for (code, bad) in poisons(topic, key) {
            bad.send(&producer, &name, Some(partition)).await;
            let next = valid(topic, key);
            valid_ids.push(next.event_id.to_string());
            Outgoing::event(&next)
                .send(&producer, &name, Some(partition))
                .await;
            poison.insert(code, bad);
        }
        sent.insert(
            topic,
            Sent {
                valid: valid_ids,
                poison,
            },
        );
    }
    let kinds = sent[&Topic::ConcertEvents].poison.len();
    let valid_total: usize = sent.values().map(|s| s.valid.len()).sum();

    // Every valid event is applied, each topic's in the order sent, and
    // nothing else is.
    let applied: Vec<String> = eventually(WAIT, "every valid event applied", || async {
        let rows: Vec<String> = runtime
            .db
            .run(|conn| {
                effects::table
                    .order(effects::position)
                    .select(effects::event_id)
                    .load::<String>(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        let all_valid = sent
            .values()
            .flat_map(|s| &s.valid)
            .all(|id| rows.contains(id));
        all_valid.then_some(rows)
    })
    .await;
    assert_eq!(applied.len(), valid_total, "only the valid events applied");
    for (topic, sent) in &sent {
        let in_order: Vec<&String> = applied
            .iter()
            .filter(|id| sent.valid.contains(id))
            .collect();
        let expected: Vec<&String> = sent.valid.iter().collect();
        assert_eq!(in_order, expected, "{topic}: valid events applied in order");
    }

    // Every poison is dead-lettered. A batch's letters go out after its
    // commit (the valid events after a poison may be applied first), so
    // they are waited for; their count is exact.
    for topic in Topic::ALL {
        let name = runtime.kafka.topic_name(topic);
        let letters = || {
            runtime
                .metrics
                .dead_letters
                .with_label_values(&[CONSUMER, &name])
                .get()
        };
        eventually(WAIT, "every poison dead-lettered", || async {
            (letters() >= kinds as u64).then_some(())
        })
        .await;
        assert_eq!(letters(), kinds as u64, "dead_letters_total for {name}");
    }
    // The event_type label comes from a fixed set, whatever poison claims.
    let mut dead_lettered = 0;
    for family in runtime.metrics.events_consumed.collect() {
        for series in family.get_metric() {
            let label = |name: &str| {
                series
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap()
            };
            let event_type = label("event_type");
            assert!(
                event_type == "unknown" || EventType::parse(&event_type).is_some(),
                "event_type label {event_type:?}"
            );
            if label("outcome") == "dead_lettered" {
                dead_lettered += series.get_counter().get_value() as usize;
            }
        }
    }
    assert_eq!(dead_lettered, kinds * Topic::ALL.len());

    // Each poison is in its topic's dead-letter topic, with its reason code,
    // its origin, and its key and payload as sent (the payload cut to the
    // limit when it was over it).
    let reader: StreamConsumer = runtime
        .kafka
        .consumer_config(&format!("dlq-reader-{}", Uuid::new_v4()))
        .create()
        .unwrap();
    let dead_letter_topics: Vec<String> = Topic::ALL
        .iter()
        .map(|t| runtime.kafka.topic_name(*t) + ".dlq")
        .collect();
    let refs: Vec<&str> = dead_letter_topics.iter().map(String::as_str).collect();
    reader.subscribe(&refs).unwrap();
    let mut codes: HashMap<Topic, Vec<String>> = HashMap::new();
    for _ in 0..kinds * Topic::ALL.len() {
        let letter = tokio::time::timeout(WAIT, reader.recv())
            .await
            .expect("every dead letter arrives")
            .unwrap();
        let origin = letter.topic().strip_suffix(".dlq").unwrap().to_string();
        let topic = Topic::parse(origin.strip_prefix(&prefix).unwrap()).unwrap();
        assert_eq!(
            header(&letter, "dlq.origin.topic").as_deref(),
            Some(origin.as_str())
        );
        assert_eq!(header(&letter, "dlq.consumer").as_deref(), Some(CONSUMER));
        let reason = header(&letter, "dlq.reason").expect("a reason");
        let (code, detail) = reason.split_once(": ").expect("<code>: <detail>");
        assert!(!detail.is_empty(), "{reason}");
        let poison = sent[&topic]
            .poison
            .get(code)
            .unwrap_or_else(|| panic!("{origin}: unexpected letter {reason:?}"));
        assert_eq!(
            letter.key(),
            poison.key.as_deref(),
            "{origin} {code}: key kept"
        );
        let payload = poison.payload.as_deref().unwrap_or_default();
        let kept = &payload[..payload.len().min(MAX_MESSAGE_BYTES)];
        assert_eq!(
            letter.payload().unwrap_or_default(),
            kept,
            "{origin} {code}: payload kept"
        );
        assert!(
            !sent[&topic]
                .valid
                .iter()
                .any(|id| payload.windows(id.len()).any(|w| w == id.as_bytes())),
            "{origin} {code}: a valid event was dead-lettered"
        );
        codes.entry(topic).or_default().push(code.to_string());
    }
    for topic in Topic::ALL {
        let mut seen = codes.remove(&topic).unwrap_or_default();
        seen.sort();
        let expected: Vec<String> = sent[&topic].poison.keys().map(|c| c.to_string()).collect();
        assert_eq!(
            seen, expected,
            "{topic}: one letter for each kind of poison"
        );
    }
}
