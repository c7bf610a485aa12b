//! The runtime against a real broker and real databases: outbox to consumer
//! exactly once, the relay's crash window, dead letters, trace propagation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use diesel::prelude::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use shared_events::{BalanceCharged, Envelope, Event, EventType, Service, Topic};
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::db::outbox::pending_count;
use ticket_runtime::dev::testkit::{self, eventually, TestDatabase};
use ticket_runtime::messaging::consumer::{apply_batch, apply_once, BatchOutcome, EventOutcome};
use ticket_runtime::messaging::relay::OutboxRelay;
use ticket_runtime::{
    Db, DbError, EventHandler, HandlerError, Migrations, NoServiceSettings, ServiceRuntime,
    Settings, Tx,
};
use uuid::Uuid;

diesel::table! {
    charges (id) {
        id -> Text,
        amount -> BigInt,
    }
}

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

/// An amount the consumer can never apply: it fails every attempt.
const POISON: i64 = 13;
/// An amount the consumer refuses outright (dead-lettered at once).
const REJECTED: i64 = 17;
const WAIT: Duration = Duration::from_secs(30);

struct Recorder {
    name: String,
}

impl EventHandler for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::BalanceEvents]
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type == EventType::BalanceCharged
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let Event::BalanceCharged(charge) = &event.event else {
            return Err(HandlerError::Rejected("not a charge".into()));
        };
        if charge.amount == POISON {
            return Err(anyhow::anyhow!("amount {POISON} is poison").into());
        }
        if charge.amount == REJECTED {
            return Err(HandlerError::Rejected(format!("amount {REJECTED}")));
        }
        let position: i64 = effects::table
            .count()
            .get_result(tx.conn())
            .map_err(DbError::from)?;
        diesel::insert_into(effects::table)
            .values((
                effects::event_id.eq(event.event_id.to_string()),
                effects::amount.eq(charge.amount),
                effects::position.eq(position + 1),
                effects::trace_id.eq(ticket_runtime::ops::telemetry::current_trace_id()),
            ))
            .execute(tx.conn())
            .map_err(DbError::from)?;
        Ok(())
    }
}

struct Cluster {
    a: ServiceRuntime<NoServiceSettings>,
    b: ServiceRuntime<NoServiceSettings>,
    consumer: String,
    _databases: (TestDatabase, TestDatabase),
}

fn settings(db: &TestDatabase, prefix: &str) -> Settings<NoServiceSettings> {
    testkit::settings("", &db.url, prefix)
}

async fn cluster(postgres: bool) -> Cluster {
    testkit::init_tracing();
    let make = |label: &str| TestDatabase::on(postgres, label);
    let (db_a, db_b) = (make("a"), make("b"));
    let prefix = testkit::unique_prefix();
    let a = ServiceRuntime::start(Service::MemberBalance, settings(&db_a, &prefix), SCHEMA)
        .await
        .expect("service A starts");
    let mut b = ServiceRuntime::start(Service::Payment, settings(&db_b, &prefix), SCHEMA)
        .await
        .expect("service B starts");
    let consumer = "recorder".to_string();
    b.consume(Arc::new(Recorder {
        name: consumer.clone(),
    }));
    Cluster {
        a,
        b,
        consumer,
        _databases: (db_a, db_b),
    }
}

/// A charge of the member a test names. `BalanceCharged` is keyed by its
/// member, so one name is one Kafka key (and one order to keep).
fn charge(amount: i64, member: &str) -> Envelope {
    let mut id = [0u8; 16];
    for (i, byte) in member.bytes().enumerate() {
        id[i % 16] ^= byte;
    }
    Envelope::new(BalanceCharged {
        user_id: Uuid::from_bytes(id),
        entry_id: Uuid::now_v7(),
        amount,
        balance_after: amount,
    })
}

/// Service A's local transaction: a row change and its event, together.
async fn charge_in_a(db: &Db, envelope: Envelope) {
    db.transaction(move |tx| {
        diesel::insert_into(charges::table)
            .values((
                charges::id.eq(envelope.event_id.to_string()),
                charges::amount.eq(match &envelope.event {
                    Event::BalanceCharged(c) => c.amount,
                    _ => 0,
                }),
            ))
            .execute(tx.conn())?;
        tx.publish(&envelope)?;
        Ok::<_, DbError>(())
    })
    .await
    .expect("local transaction commits");
}

async fn effects_in(db: &Db) -> Vec<(String, i64, i64, Option<String>)> {
    db.run(|conn| {
        effects::table
            .order(effects::position)
            .load::<(String, i64, i64, Option<String>)>(conn)
            .map_err(DbError::from)
    })
    .await
    .unwrap()
}

fn consumed(cluster: &Cluster, outcome: &str) -> u64 {
    cluster
        .b
        .metrics
        .events_consumed
        .with_label_values(&[&cluster.consumer, "BalanceCharged", outcome])
        .get()
}

async fn outbox_empty(db: &Db) -> bool {
    db.run(pending_count).await.unwrap() == 0
}

async fn exactly_once_in_order(postgres: bool) {
    let cluster = cluster(postgres).await;
    let first = charge(1000, "member-1");
    let first_id = first.event_id.to_string();
    charge_in_a(&cluster.a.db, first).await;

    let applied = eventually(WAIT, "the effect in B", || async {
        let rows = effects_in(&cluster.b.db).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].0, first_id);
    assert_eq!(applied[0].1, 1000);
    eventually(WAIT, "A's outbox to drain", || async {
        outbox_empty(&cluster.a.db).await.then_some(())
    })
    .await;

    // The broker delivers the same event again (as after a lost offset
    // commit): the consumer sees it and changes nothing.
    let again = cluster
        .a
        .db
        .run(|conn| {
            diesel::sql_query("UPDATE outbox SET sent_at = NULL")
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(again, 1);
    eventually(WAIT, "the redelivery to be seen", || async {
        (consumed(&cluster, "duplicate") == 1).then_some(())
    })
    .await;
    assert_eq!(effects_in(&cluster.b.db).await.len(), 1, "applied once");
    assert_eq!(consumed(&cluster, "applied"), 1);

    // Many events for one key, each in its own transaction, arrive in order.
    let amounts: Vec<i64> = (1..=30).map(|n| 100 + n).collect();
    for amount in &amounts {
        charge_in_a(&cluster.a.db, charge(*amount, "member-2")).await;
    }
    let rows = eventually(WAIT, "30 more effects", || async {
        let rows = effects_in(&cluster.b.db).await;
        (rows.len() == 31).then_some(rows)
    })
    .await;
    let seen: Vec<i64> = rows[1..].iter().map(|r| r.1).collect();
    assert_eq!(seen, amounts, "per-key order kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_event_is_applied_exactly_once_in_order_sqlite() {
    exactly_once_in_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_event_is_applied_exactly_once_in_order_postgres() {
    exactly_once_in_order(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_database_publish_each_event_once_in_order() {
    let cluster = cluster(true).await;
    // A second instance of service A on the same database: two relays wake
    // on their own commits and race for the one outbox.
    let twin = ServiceRuntime::start(Service::MemberBalance, cluster.a.settings.clone(), SCHEMA)
        .await
        .expect("second instance starts");
    let amounts: Vec<i64> = (1..=40).map(|n| 1_000 + n).collect();
    for (i, amount) in amounts.iter().enumerate() {
        let instance = if i % 2 == 0 { &cluster.a.db } else { &twin.db };
        charge_in_a(instance, charge(*amount, "member-twin")).await;
    }
    let rows = eventually(WAIT, "40 effects", || async {
        let rows = effects_in(&cluster.b.db).await;
        (rows.len() == amounts.len()).then_some(rows)
    })
    .await;
    let seen: Vec<i64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(seen, amounts, "commit order kept across instances");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        consumed(&cluster, "duplicate"),
        0,
        "no event was published twice"
    );
    assert!(outbox_empty(&cluster.a.db).await);
}

async fn relay_crash_after_ack(postgres: bool) {
    let cluster = cluster(postgres).await;
    let a_settings = &cluster.a.settings;
    // A second service A process whose relay dies between the broker's
    // acknowledgement and marking the row sent: its database is its own, so
    // the running relay of `cluster.a` does not interfere.
    let db = TestDatabase::on(postgres, "crash");
    let mut crash_settings = settings(&db, &a_settings.kafka.topic_prefix);
    crash_settings.outbox.sweep_interval_ms = 60_000;
    let store = Db::connect(&crash_settings.database, SCHEMA).await.unwrap();
    let kafka = ticket_runtime::Kafka::connect(&crash_settings.kafka, "crash-test").unwrap();
    let metrics = ticket_runtime::Metrics::new("crash-test");
    let dying = OutboxRelay::new(
        store.clone(),
        kafka.clone(),
        crash_settings.outbox.clone(),
        metrics.clone(),
    );

    let event = charge(2500, "member-3");
    let event_id = event.event_id.to_string();
    charge_in_a(&store, event).await;
    let batch = dying.claim_batch().await.unwrap();
    assert_eq!(batch.len(), 1);
    let acked = dying.publish(&batch).await;
    assert_eq!(acked, vec![batch[0].seq], "broker acknowledged");
    drop(dying); // dies here: never marks the row sent
    assert!(!outbox_empty(&store).await, "still pending after the crash");

    eventually(WAIT, "the first delivery", || async {
        (effects_in(&cluster.b.db).await.len() == 1).then_some(())
    })
    .await;

    let restarted = OutboxRelay::new(store.clone(), kafka, crash_settings.outbox.clone(), metrics);
    assert_eq!(
        restarted
            .drain(&ticket_runtime::CancellationToken::new())
            .await
            .unwrap(),
        1,
        "published again after restart"
    );
    assert!(outbox_empty(&store).await);
    eventually(WAIT, "the second delivery to be seen", || async {
        (consumed(&cluster, "duplicate") == 1).then_some(())
    })
    .await;
    let rows = effects_in(&cluster.b.db).await;
    assert_eq!(rows.len(), 1, "the effect happened once");
    assert_eq!(rows[0].0, event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_after_ack_delivers_again_but_applies_once_sqlite() {
    relay_crash_after_ack(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_after_ack_delivers_again_but_applies_once_postgres() {
    relay_crash_after_ack(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_poison_go_to_the_dead_letter_topic_and_consumption_goes_on() {
    let cluster = cluster(false).await;
    let topic = cluster.a.kafka.topic_name(Topic::BalanceEvents);
    cluster
        .a
        .kafka
        .producer()
        .send(
            FutureRecord::<str, str>::to(&topic)
                .key("member-9")
                .payload("{this is not json"),
            Duration::from_secs(5),
        )
        .await
        .expect("garbage produced");
    charge_in_a(&cluster.a.db, charge(POISON, "member-9")).await;
    let good = charge(4200, "member-9");
    let good_id = good.event_id.to_string();
    charge_in_a(&cluster.a.db, good).await;

    let rows = eventually(WAIT, "the good event after the bad ones", || async {
        let rows = effects_in(&cluster.b.db).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, good_id);

    let dlq: StreamConsumer = cluster
        .a
        .kafka
        .consumer_config(&format!("dlq-reader-{}", Uuid::new_v4()))
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{topic}.dlq")]).unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let message = tokio::time::timeout(WAIT, dlq.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("dlq.origin.topic"), topic);
        assert_eq!(header("dlq.consumer"), cluster.consumer);
        assert!(!header("dlq.origin.offset").is_empty());
        reasons.push((header("dlq.reason"), message.payload().map(<[u8]>::to_vec)));
    }
    // Sorted by reason, whose code comes first: malformed, retries_exhausted.
    reasons.sort();
    assert!(
        reasons[1].0.starts_with("retries_exhausted: "),
        "{:?}",
        reasons[1].0
    );
    assert!(
        reasons[1].0.contains("failed 3 times"),
        "{:?}",
        reasons[1].0
    );
    assert!(reasons[1].0.contains("poison"), "{:?}", reasons[1].0);
    assert!(
        reasons[0].0.starts_with("malformed: "),
        "{:?}",
        reasons[0].0
    );
    assert!(
        reasons[0].0.contains("not a valid event envelope"),
        "{:?}",
        reasons[0].0
    );
    assert_eq!(
        reasons[0].1.as_deref(),
        Some(&b"{this is not json"[..]),
        "payload kept as is"
    );
    assert_eq!(consumed(&cluster, "dead_lettered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_changes_nothing_even_when_applied_directly() {
    let cluster = cluster(false).await;
    let handler: Arc<dyn EventHandler> = Arc::new(Recorder {
        name: "direct".into(),
    });
    let event = Arc::new(charge(700, "member-5"));
    use ticket_runtime::messaging::consumer::Outcome;
    let first = apply_once(&cluster.b.db, handler.clone(), event.clone())
        .await
        .unwrap();
    let second = apply_once(&cluster.b.db, handler, event).await.unwrap();
    assert_eq!((first, second), (Outcome::Applied, Outcome::Duplicate));
    assert_eq!(effects_in(&cluster.b.db).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_from_http_reaches_the_consumer_span() {
    use actix_web::{web, HttpResponse};
    let cluster = cluster(false).await;
    let db = cluster.a.db.clone();
    let running = cluster
        .a
        .serve(move |cfg: &mut web::ServiceConfig| {
            let db = db.clone();
            cfg.route(
                "/charges",
                web::post().to(move || {
                    let db = db.clone();
                    async move {
                        charge_in_a(&db, charge(900, "member-7")).await;
                        HttpResponse::Created().finish()
                    }
                }),
            );
        })
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/charges", running.url()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["x-request-id"],
        "req-42",
        "request id echoed"
    );

    let rows = eventually(WAIT, "the traced effect", || async {
        let rows = effects_in(&cluster.b.db).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(
        rows[0].3.as_deref(),
        Some(trace_id),
        "one trace from HTTP to consumer"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_json_errors() {
    let cluster = cluster(false).await;
    let running = cluster
        .a
        .serve(|_cfg: &mut actix_web::web::ServiceConfig| {})
        .unwrap();
    let http = reqwest::Client::new();

    let live = http
        .get(format!("{}/health/live", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = http
        .get(format!("{}/health/ready", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "up");
    assert_eq!(body["checks"]["broker"], "up");
    assert!(ready_has_request_id(&http, &running.url()).await);

    let missing = http
        .get(format!("{}/nope", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let error: ticket_runtime::ErrorBody = missing.json().await.unwrap();
    assert_eq!(error.code, "route_not_found");

    let metrics = http
        .get(format!("{}/metrics", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("outbox_pending"), "{text}");
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains("route=\"/health/ready\""), "{text}");
    running.stop().await;
}

async fn ready_has_request_id(http: &reqwest::Client, url: &str) -> bool {
    let response = http
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .is_some()
}

/// A standalone relay on its own database, so a test drives every drain.
async fn standalone_relay(
    db: &TestDatabase,
    prefix: &str,
    adjust: impl FnOnce(&mut Settings<NoServiceSettings>),
) -> (Db, OutboxRelay) {
    let mut relay_settings = settings(db, prefix);
    relay_settings.outbox.sweep_interval_ms = 60_000;
    adjust(&mut relay_settings);
    let store = Db::connect(&relay_settings.database, SCHEMA).await.unwrap();
    let kafka = ticket_runtime::Kafka::connect(&relay_settings.kafka, "relay-test").unwrap();
    if relay_settings.kafka.brokers == testkit::broker() {
        kafka.ensure_topics().await.unwrap();
    }
    let relay = OutboxRelay::new(
        store.clone(),
        kafka,
        relay_settings.outbox.clone(),
        ticket_runtime::Metrics::new("relay-test"),
    );
    (store, relay)
}

async fn sent_at_of(db: &Db, event_id: &str) -> Option<chrono::NaiveDateTime> {
    let event_id = event_id.to_string();
    db.run(move |conn| {
        diesel::sql_query("SELECT sent_at FROM outbox WHERE event_id = $1")
            .bind::<diesel::sql_types::Text, _>(event_id)
            .get_result::<SentAt>(conn)
            .map(|row| row.sent_at)
            .map_err(DbError::from)
    })
    .await
    .unwrap()
}

#[derive(QueryableByName)]
struct SentAt {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    sent_at: Option<chrono::NaiveDateTime>,
}

/// Events of one topic as the tap sees them within `window`, in order.
async fn events_seen(tap: &testkit::EventTap, window: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    // The tap's own limit lies past the window: the window ends the wait.
    while let Ok(envelope) =
        tokio::time::timeout_at(deadline, tap.next_matching(window * 2, |_| true)).await
    {
        seen.push(envelope.event_id.to_string());
    }
    seen
}

/// Every event the tap reads until `last`, in order, then whatever else
/// arrives within a second.
async fn events_through(tap: &testkit::EventTap, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let envelope = tap.next_matching(WAIT, |_| true).await;
        seen.push(envelope.event_id.to_string());
        if seen.last().is_some_and(|id| id == last) {
            break;
        }
    }
    seen.extend(events_seen(tap, Duration::from_secs(1)).await);
    seen
}

/// Defect: the relay marked every acknowledged row sent even when an
/// earlier row of the same key failed, so the failed one went out after
/// its successors. The broker refuses an oversized event here; the later
/// event of its key must wait for it, other keys go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_holds_back_the_later_events_of_its_key() {
    testkit::init_tracing();
    let db = TestDatabase::sqlite("prefix");
    let prefix = testkit::unique_prefix();
    let (store, relay) = standalone_relay(&db, &prefix, |_| {}).await;
    let tap = testkit::EventTap::new(&prefix, Topic::BalanceEvents);
    let (first, second, other) = (
        charge(1, "member-k"),
        charge(2, "member-k"),
        charge(3, "member-j"),
    );
    let ids = [first.event_id, second.event_id, other.event_id].map(|id| id.to_string());
    for event in [first, second, other] {
        charge_in_a(&store, event).await;
    }
    // More than the producer's message.max.bytes: refused before sending.
    let original = store
        .run({
            let id = ids[0].clone();
            move |conn| {
                let original: String =
                    diesel::sql_query("SELECT payload FROM outbox WHERE event_id = $1")
                        .bind::<diesel::sql_types::Text, _>(&id)
                        .get_result::<Payload>(conn)?
                        .payload;
                diesel::sql_query("UPDATE outbox SET payload = $1 WHERE event_id = $2")
                    .bind::<diesel::sql_types::Text, _>(format!(
                        "{original}{}",
                        " ".repeat(2_000_000)
                    ))
                    .bind::<diesel::sql_types::Text, _>(&id)
                    .execute(conn)?;
                Ok::<_, DbError>(original)
            }
        })
        .await
        .unwrap();

    let stop = ticket_runtime::CancellationToken::new();
    assert!(
        relay.drain(&stop).await.is_err(),
        "the oversized event fails"
    );
    assert!(sent_at_of(&store, &ids[0]).await.is_none());
    assert!(
        sent_at_of(&store, &ids[1]).await.is_none(),
        "the later event of the failed key is not sent"
    );
    assert!(
        sent_at_of(&store, &ids[2]).await.is_some(),
        "other keys go on"
    );
    assert_eq!(
        events_through(&tap, &ids[2]).await,
        vec![ids[2].clone()],
        "nothing of the failed key reached the broker"
    );

    // Fixed: both go out, in commit order.
    store
        .run({
            let id = ids[0].clone();
            move |conn| {
                diesel::sql_query("UPDATE outbox SET payload = $1 WHERE event_id = $2")
                    .bind::<diesel::sql_types::Text, _>(original)
                    .bind::<diesel::sql_types::Text, _>(id)
                    .execute(conn)
                    .map_err(DbError::from)
            }
        })
        .await
        .unwrap();
    assert_eq!(relay.drain(&stop).await.unwrap(), 2);
    assert_eq!(
        events_through(&tap, &ids[1]).await,
        vec![ids[0].clone(), ids[1].clone()]
    );
}

/// Pads an event's payload with `padding` spaces (still the same JSON),
/// and returns the payload it had.
async fn pad_payload(db: &Db, event_id: &str, padding: usize) -> String {
    let id = event_id.to_string();
    db.run(move |conn| {
        let original: String = diesel::sql_query("SELECT payload FROM outbox WHERE event_id = $1")
            .bind::<diesel::sql_types::Text, _>(&id)
            .get_result::<Payload>(conn)?
            .payload;
        diesel::sql_query("UPDATE outbox SET payload = $1 WHERE event_id = $2")
            .bind::<diesel::sql_types::Text, _>(format!("{original}{}", " ".repeat(padding)))
            .bind::<diesel::sql_types::Text, _>(&id)
            .execute(conn)?;
        Ok::<_, DbError>(original)
    })
    .await
    .unwrap()
}

/// Defect: the relay handed a whole batch to the producer at once, so a
/// later event of a key could land while an earlier one failed, idempotent
/// producer or not. The topic here refuses messages over 500 kB: the first
/// event (900 kB) passes the producer's own limit but not the broker's, and
/// the second (150 kB, same key) does not fit the same request, so
/// librdkafka sent it in one of its own, which the broker stored. The second
/// must not be sent before the first is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_event_of_a_key_is_not_sent_before_the_earlier_one_is_acknowledged() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    testkit::init_tracing();
    let db = TestDatabase::sqlite("in-flight");
    let prefix = testkit::unique_prefix();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", testkit::broker())
        .create()
        .unwrap();
    let topic = format!("{prefix}{}", Topic::BalanceEvents.name());
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))
                .set("max.message.bytes", "500000")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let (store, relay) = standalone_relay(&db, &prefix, |_| {}).await;
    let tap = testkit::EventTap::new(&prefix, Topic::BalanceEvents);
    let (first, second, other) = (
        charge(1, "member-k"),
        charge(2, "member-k"),
        charge(3, "member-j"),
    );
    let ids = [first.event_id, second.event_id, other.event_id].map(|id| id.to_string());
    for event in [first, second, other] {
        charge_in_a(&store, event).await;
    }
    let original = pad_payload(&store, &ids[0], 900_000).await;
    pad_payload(&store, &ids[1], 150_000).await;

    let stop = ticket_runtime::CancellationToken::new();
    assert!(
        relay.drain(&stop).await.is_err(),
        "the broker refuses the first event"
    );
    assert!(sent_at_of(&store, &ids[0]).await.is_none());
    assert!(sent_at_of(&store, &ids[1]).await.is_none());
    assert!(
        sent_at_of(&store, &ids[2]).await.is_some(),
        "other keys go on"
    );
    assert_eq!(
        events_through(&tap, &ids[2]).await,
        vec![ids[2].clone()],
        "the second event of the key did not overtake the first"
    );

    // Fixed: both go out, in commit order, each once.
    store
        .run({
            let id = ids[0].clone();
            move |conn| {
                diesel::sql_query("UPDATE outbox SET payload = $1 WHERE event_id = $2")
                    .bind::<diesel::sql_types::Text, _>(original)
                    .bind::<diesel::sql_types::Text, _>(id)
                    .execute(conn)
                    .map_err(DbError::from)
            }
        })
        .await
        .unwrap();
    assert_eq!(relay.drain(&stop).await.unwrap(), 2);
    assert_eq!(
        events_through(&tap, &ids[1]).await,
        vec![ids[0].clone(), ids[1].clone()]
    );
}

#[derive(QueryableByName)]
struct Payload {
    #[diesel(sql_type = diesel::sql_types::Text)]
    payload: String,
}

/// Defect: the lease was renewed only after a whole batch, while one publish
/// may outlast it; and a relay without the lease polled without watching
/// the stop signal. Relay A publishes to a broker that never answers, for
/// longer than the lease lasts; relay B, beside it on the same database,
/// must not take the lease meanwhile, and must stop when told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_keeps_its_lease_through_a_slow_publish_and_a_waiting_relay_stops_when_told() {
    testkit::init_tracing();
    let db = TestDatabase::postgres("lease");
    let prefix = testkit::unique_prefix();
    let (store, slow) = standalone_relay(&db, &prefix, |s| {
        s.kafka.brokers = "127.0.0.1:9".into();
        s.kafka.message_timeout_ms = 3_000;
        s.outbox.lease_ttl_ms = 300;
    })
    .await;
    let (_, waiting) = standalone_relay(&db, &prefix, |s| s.outbox.lease_ttl_ms = 300).await;
    let event = charge(5, "member-lease");
    let event_id = event.event_id.to_string();
    charge_in_a(&store, event).await;

    let never = ticket_runtime::CancellationToken::new();
    let slow_drain = tokio::spawn(async move { slow.drain(&never).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stop = ticket_runtime::CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        stopper.cancel();
    });
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting.drain(&stop))
        .await
        .expect("the waiting relay stops when told");
    assert_eq!(outcome.unwrap(), 0, "it never got the lease");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(sent_at_of(&store, &event_id).await.is_none());

    assert!(
        slow_drain.await.unwrap().is_err(),
        "the unreachable broker never acknowledged"
    );
    // The slow relay released the lease: the other one publishes now.
    let fresh = ticket_runtime::CancellationToken::new();
    assert_eq!(waiting.drain(&fresh).await.unwrap(), 1);
    assert!(sent_at_of(&store, &event_id).await.is_some());
}

/// Defect: a producer that failed fatally left readiness green while
/// nothing was published. Readiness must say so, and the relay must replace
/// the producer and publish again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_makes_the_service_unready_until_the_relay_replaces_it() {
    testkit::init_tracing();
    let db = TestDatabase::sqlite("fatal");
    let prefix = testkit::unique_prefix();
    let mut fatal_settings = settings(&db, &prefix);
    // Only commits wake the relay: the test decides when it runs.
    fatal_settings.outbox.sweep_interval_ms = 60_000;
    let runtime = ServiceRuntime::start(Service::MemberBalance, fatal_settings, SCHEMA)
        .await
        .unwrap();
    let kafka = runtime.kafka.clone();
    let store = runtime.db.clone();
    let metrics = runtime.metrics.clone();
    let running = runtime
        .serve(|_cfg: &mut actix_web::web::ServiceConfig| {})
        .unwrap();
    let http = reqwest::Client::new();
    let ready = format!("{}/health/ready", running.url());
    assert_eq!(http.get(&ready).send().await.unwrap().status(), 200);

    let producer = kafka.producer();
    let reason = std::ffi::CString::new("fabricated by the test").unwrap();
    // SAFETY: the pointer is the live producer's handle; librdkafka copies the reason.
    unsafe {
        rdkafka_sys::rd_kafka_test_fatal_error(
            producer.client().native_ptr(),
            rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        );
    }
    eventually(WAIT, "the producer to report its fatal error", || async {
        kafka.producer_fatal_error()
    })
    .await;
    let unready = http.get(&ready).send().await.unwrap();
    assert_eq!(unready.status(), 503);
    let body: serde_json::Value = unready.json().await.unwrap();
    assert!(
        body["checks"]["producer"]
            .as_str()
            .is_some_and(|p| p.starts_with("failed")),
        "{body}"
    );

    let tap = testkit::EventTap::new(&prefix, Topic::BalanceEvents);
    let event = charge(7, "member-fatal");
    let event_id = event.event_id;
    charge_in_a(&store, event).await;
    let published = tap.next_matching(WAIT, |e| e.event_id == event_id).await;
    assert_eq!(published.event_id, event_id, "published by a new producer");
    assert_eq!(metrics.producer_restarts.get(), 1);
    assert_eq!(http.get(&ready).send().await.unwrap().status(), 200);
    running.stop().await;
}

/// Defect: only BEGIN and COMMIT were retried, so a deadlock inside a
/// transaction became an error (a 500, or a consumer attempt burnt). Two
/// transactions lock two rows in opposite order; PostgreSQL aborts one;
/// it runs again and both commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_aborted_by_a_deadlock_runs_again_whole() {
    use std::sync::atomic::{AtomicU32, Ordering};
    testkit::init_tracing();
    let db = TestDatabase::postgres("deadlock");
    let database = ticket_runtime::config::DatabaseSettings {
        url: ticket_runtime::Secret::new(db.url.clone()),
        pool_size: 4,
        connect_timeout_ms: 5_000,
    };
    let store = Db::connect(&database, SCHEMA).await.unwrap();
    store
        .run(|conn| {
            for id in ["x", "y"] {
                diesel::insert_into(charges::table)
                    .values((charges::id.eq(id), charges::amount.eq(0)))
                    .execute(conn)?;
            }
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
    let both_hold_one = Arc::new(std::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let transfer = |first: &'static str, second: &'static str| {
        let (store, barrier, attempts) = (store.clone(), both_hold_one.clone(), attempts.clone());
        async move {
            let mut runs = 0;
            store
                .transaction(move |tx| {
                    runs += 1;
                    attempts.fetch_add(1, Ordering::SeqCst);
                    for (n, id) in [first, second].into_iter().enumerate() {
                        diesel::update(charges::table.find(id))
                            .set(charges::amount.eq(charges::amount + 1))
                            .execute(tx.conn())?;
                        if n == 0 && runs == 1 {
                            barrier.wait();
                        }
                    }
                    Ok::<_, DbError>(())
                })
                .await
        }
    };
    let (a, b) = tokio::join!(transfer("x", "y"), transfer("y", "x"));
    a.expect("first transfer commits");
    b.expect("second transfer commits");
    // One of them ran again; both, when PostgreSQL's deadlock checks of the
    // two sessions ran at the same moment and each aborted its own (their
    // waits began together at the barrier, so their timers fire together).
    let attempts = attempts.load(Ordering::SeqCst);
    assert!(
        (3..=4).contains(&attempts),
        "{attempts} attempts: the aborted transaction ran again, whole"
    );
    let amounts: Vec<i64> = store
        .run(|conn| {
            charges::table
                .order(charges::id)
                .select(charges::amount)
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(amounts, vec![2, 2], "each transfer applied once");
}

/// Records each charge as an effect and publishes an echo of it (ten times
/// the amount) before deciding: a rejected or failing charge has changed
/// and published something that must be undone.
struct Echo;

impl EventHandler for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::BalanceEvents]
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type == EventType::BalanceCharged
    }

    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let Event::BalanceCharged(charge) = &event.event else {
            return Err(HandlerError::Rejected("not a charge".into()));
        };
        let position: i64 = effects::table
            .count()
            .get_result(tx.conn())
            .map_err(DbError::from)?;
        diesel::insert_into(effects::table)
            .values((
                effects::event_id.eq(event.event_id.to_string()),
                effects::amount.eq(charge.amount),
                effects::position.eq(position + 1),
            ))
            .execute(tx.conn())
            .map_err(DbError::from)?;
        tx.publish(&Envelope::new(BalanceCharged {
            amount: charge.amount * 10,
            ..charge.clone()
        }))?;
        match charge.amount {
            REJECTED => Err(HandlerError::Rejected(format!("amount {REJECTED}"))),
            POISON => Err(anyhow::anyhow!("amount {POISON} is poison").into()),
            _ => Ok(()),
        }
    }
}

#[derive(QueryableByName)]
struct OutboxPayload {
    #[diesel(sql_type = diesel::sql_types::Text)]
    payload: String,
}

/// The amounts of the events in `db`'s outbox, in commit-sequence order.
async fn outbox_amounts(db: &Db) -> Vec<i64> {
    let payloads = db
        .run(|conn| {
            diesel::sql_query("SELECT payload FROM outbox ORDER BY seq")
                .load::<OutboxPayload>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    payloads
        .iter()
        .map(
            |row| match shared_events::Envelope::decode(row.payload.as_bytes()) {
                Ok(shared_events::Decoded::Known(envelope)) => match envelope.event {
                    Event::BalanceCharged(charge) => charge.amount,
                    other => panic!("not a charge: {other:?}"),
                },
                other => panic!("undecodable outbox row: {other:?}"),
            },
        )
        .collect()
}

async fn deliver(db: &Db, events: &[Arc<Envelope>]) -> BatchOutcome {
    let batch = events
        .iter()
        .map(|event| (event.clone(), tracing::Span::none()))
        .collect();
    apply_batch(db, Arc::new(Echo), batch)
        .await
        .expect("the batch transaction commits")
}

fn amounts_of(rows: &[(String, i64, i64, Option<String>)]) -> Vec<i64> {
    rows.iter().map(|row| row.1).collect()
}

async fn batch_keeps_each_event_to_itself(postgres: bool) {
    testkit::init_tracing();
    let database = TestDatabase::on(postgres, "batch");
    // A database without a relay: what the batches wrote stays in its outbox.
    let db = Db::connect(&settings(&database, "").database, SCHEMA)
        .await
        .unwrap();
    let rejected = || EventOutcome::Rejected(format!("amount {REJECTED}"));
    let events: Vec<Arc<Envelope>> = [(1, "k"), (REJECTED, "j"), (2, "k"), (3, "i")]
        .into_iter()
        .map(|(amount, member)| Arc::new(charge(amount, member)))
        .collect();

    let first = deliver(&db, &events).await;
    assert!(first.failed.is_none());
    use EventOutcome::{Applied, Duplicate};
    assert_eq!(first.outcomes, vec![Applied, rejected(), Applied, Applied]);
    let rows = effects_in(&db).await;
    assert_eq!(amounts_of(&rows), vec![1, 2, 3], "the rest, in batch order");
    assert_eq!(
        outbox_amounts(&db).await,
        vec![10, 20, 30],
        "the rejected event's echo was undone with it"
    );

    // The same batch again (a redelivery): nothing changes; the rejected
    // event is rejected again, as nothing of it was kept.
    let again = deliver(&db, &events).await;
    assert_eq!(
        again.outcomes,
        vec![Duplicate, rejected(), Duplicate, Duplicate]
    );
    assert_eq!(effects_in(&db).await, rows);
    assert_eq!(outbox_amounts(&db).await, vec![10, 20, 30]);

    // An event twice in one batch is applied once.
    let twice = Arc::new(charge(4, "h"));
    let outcome = deliver(&db, &[twice.clone(), twice]).await;
    assert_eq!(outcome.outcomes, vec![Applied, Duplicate]);

    // An event that fails ends the batch: what came before it commits,
    // neither it nor what comes after is applied.
    let outcome = deliver(
        &db,
        &[
            Arc::new(charge(5, "k")),
            Arc::new(charge(POISON, "k")),
            Arc::new(charge(6, "k")),
        ],
    )
    .await;
    assert_eq!(outcome.outcomes, vec![Applied]);
    let failure = outcome.failed.expect("the poison event failed");
    assert!(format!("{failure:#}").contains("poison"), "{failure:#}");
    assert_eq!(amounts_of(&effects_in(&db).await), vec![1, 2, 3, 4, 5]);
    assert_eq!(outbox_amounts(&db).await, vec![10, 20, 30, 40, 50]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_undoes_a_rejected_event_alone_and_a_redelivered_batch_changes_nothing_sqlite() {
    batch_keeps_each_event_to_itself(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_undoes_a_rejected_event_alone_and_a_redelivered_batch_changes_nothing_postgres() {
    batch_keeps_each_event_to_itself(true).await;
}

/// Events that are all there when the consumer starts arrive together:
/// they are applied in fewer transactions than events, each key's in its
/// order, and the one the handler rejects is dead-lettered alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_applied_in_batches_in_order_per_key_with_its_rejected_event_dead_lettered() {
    testkit::init_tracing();
    let (db_a, db_b) = (TestDatabase::sqlite("a"), TestDatabase::sqlite("b"));
    let prefix = testkit::unique_prefix();
    let a = ServiceRuntime::start(Service::MemberBalance, settings(&db_a, &prefix), SCHEMA)
        .await
        .expect("service A starts");
    let mut b = ServiceRuntime::start(Service::Payment, settings(&db_b, &prefix), SCHEMA)
        .await
        .expect("service B starts");
    let members = ["m0", "m1", "m2", "m3"];
    let mut sent: Vec<(&str, i64)> = Vec::new();
    for round in 0..6 {
        for member in members {
            let amount = if (round, member) == (3, "m2") {
                REJECTED
            } else {
                1000 + 10 * round + sent.len() as i64
            };
            charge_in_a(&a.db, charge(amount, member)).await;
            sent.push((member, amount));
        }
    }
    eventually(WAIT, "A's outbox to drain", || async {
        outbox_empty(&a.db).await.then_some(())
    })
    .await;

    b.consume(Arc::new(Recorder {
        name: "recorder".into(),
    }));
    let applied = sent.len() - 1;
    let rows = eventually(WAIT, "the backlog applied", || async {
        let rows = effects_in(&b.db).await;
        (rows.len() == applied).then_some(rows)
    })
    .await;
    let count = |outcome: &str| {
        b.metrics
            .events_consumed
            .with_label_values(&["recorder", "BalanceCharged", outcome])
            .get()
    };
    eventually(WAIT, "the rejected event's letter", || async {
        (count("dead_lettered") == 1).then_some(())
    })
    .await;
    assert_eq!(count("applied"), applied as u64);
    let amounts = amounts_of(&rows);
    for member in members {
        let expected: Vec<i64> = sent
            .iter()
            .filter(|(m, amount)| *m == member && *amount != REJECTED)
            .map(|(_, amount)| *amount)
            .collect();
        let seen: Vec<i64> = amounts
            .iter()
            .copied()
            .filter(|amount| expected.contains(amount))
            .collect();
        assert_eq!(seen, expected, "{member}'s events in their order");
    }
    let transactions = b
        .metrics
        .handler_duration
        .with_label_values(&["recorder"])
        .get_sample_count();
    assert!(
        transactions < applied as u64,
        "{applied} events in {transactions} transactions"
    );
}
