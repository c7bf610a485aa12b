//! Real infrastructure for tests: a Kafka-protocol broker (the one in
//! `KAFKA_BROKERS`, or a private `ticket-broker` started once per test process),
//! fresh SQLite files and fresh PostgreSQL databases. Each test gets its own
//! topic prefix, so tests sharing a broker never see each other's events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure here is a failed test, with its message"
)]

use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde::de::DeserializeOwned;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Layers, Settings, TelemetrySettings};
use crate::ops::telemetry;

/// Where `PostgreSQL` test databases are created (`TEST_POSTGRES_URL` overrides).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A scratch directory under the system temp dir.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("ticketing-tests")
        .join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The bootstrap address of a broker for this test process.
pub fn broker() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(brokers) = std::env::var("KAFKA_BROKERS") {
            return brokers;
        }
        start_private_broker()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_private_broker() -> String {
    let binary = crate::dev::broker::broker_binary().expect(
        "no Kafka broker: set KAFKA_BROKERS, or install ticket-broker with scripts/setup.sh",
    );
    let port = free_port();
    let dir = temp_dir("broker");
    let log = std::fs::File::create(dir.join("broker.log")).expect("broker log");
    let (sender, receiver) = std::sync::mpsc::channel();
    // The broker dies with this thread (PR_SET_PDEATHSIG), so the thread
    // parks forever: the broker lives exactly as long as the test process.
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut command = crate::dev::broker::broker_command(&binary, port, &dir);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no Rust state.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let spawned = command.spawn().map(|_child| ());
        let failed = spawned.is_err();
        sender.send(spawned).expect("test thread waits");
        if !failed {
            loop {
                std::thread::park();
            }
        }
    });
    receiver
        .recv()
        .expect("broker thread answers")
        .expect("the broker starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    format!("127.0.0.1:{port}")
}

/// A PostgreSQL database that exists for one test and is dropped after it.
pub struct TestDatabase {
    pub url: String,
    name: Option<String>,
}

impl TestDatabase {
    /// A PostgreSQL database when `postgres`, else an SQLite file.
    pub fn on(postgres: bool, label: &str) -> TestDatabase {
        if postgres {
            TestDatabase::postgres(label)
        } else {
            TestDatabase::sqlite(label)
        }
    }

    pub fn sqlite(label: &str) -> TestDatabase {
        let path = temp_dir(label).join(format!("{label}.db"));
        TestDatabase {
            url: format!("sqlite://{}", path.display()),
            name: None,
        }
    }

    pub fn postgres(label: &str) -> TestDatabase {
        let name = format!("test_{label}_{}", uuid::Uuid::new_v4().simple())
            .replace('-', "_")
            .to_ascii_lowercase();
        let admin = postgres_admin_url();
        let mut conn = diesel::PgConnection::establish(&admin)
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        TestDatabase {
            url: format!("{base}/{name}"),
            name: Some(name),
        }
    }
}

impl TestDatabase {
    /// A pool on this database with `schema` migrated: for tests of a
    /// service's application or storage layer without its HTTP and Kafka.
    pub async fn connect(&self, schema: crate::db::Migrations) -> crate::db::Db {
        let settings = crate::config::DatabaseSettings {
            url: crate::config::Secret::new(self.url.clone()),
            pool_size: 4,
            connect_timeout_ms: 5_000,
        };
        crate::db::Db::connect(&settings, schema)
            .await
            .expect("the test database connects and migrates")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.name {
            Some(name) => {
                if let Ok(mut conn) = diesel::PgConnection::establish(&postgres_admin_url()) {
                    let _ = conn
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
                }
            }
            // The file sits alone in its own scratch folder.
            None => {
                let file = std::path::Path::new(self.url.trim_start_matches("sqlite://"));
                if let Some(dir) = file.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}

/// The admin key of every service under test.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// Settings for a service under test: the test broker, a private topic
/// prefix, port 0, short timings.
pub fn settings<T: DeserializeOwned>(
    service_defaults: &str,
    database_url: &str,
    topic_prefix: &str,
) -> Settings<T> {
    Layers::new(service_defaults)
        .expect("valid service defaults")
        .set("http.port", 0)
        .set("database.url", database_url)
        .set("database.pool_size", 4)
        .set("kafka.brokers", broker())
        .set("kafka.topic_prefix", topic_prefix)
        .set("kafka.partitions", 2)
        .set("outbox.sweep_interval_ms", 200)
        .set("consumer.max_attempts", 3)
        .set("consumer.backoff_initial_ms", 10)
        .set("consumer.backoff_max_ms", 100)
        .set("consumer.stats_interval_ms", 500)
        .set("admin.key", ADMIN_KEY)
        .build()
        .expect("valid test settings")
}

/// What one service under test needs: its own database, a private topic
/// prefix and test settings on both.
pub struct Isolated<T> {
    pub db: TestDatabase,
    pub prefix: String,
    pub settings: Settings<T>,
}

/// A fresh database (PostgreSQL when `postgres`, else SQLite), a unique
/// topic prefix and test settings for one service, with logs captured.
pub fn isolated<T: DeserializeOwned>(
    postgres: bool,
    label: &str,
    service_defaults: &str,
) -> Isolated<T> {
    init_tracing();
    let db = TestDatabase::on(postgres, label);
    let prefix = unique_prefix();
    let settings = settings(service_defaults, &db.url, &prefix);
    Isolated {
        db,
        prefix,
        settings,
    }
}

impl<T> Isolated<T> {
    /// Starts the service on these settings.
    pub async fn start<Fut>(self, start: impl FnOnce(Settings<T>) -> Fut) -> TestService
    where
        Fut: std::future::Future<Output = anyhow::Result<crate::service::RunningService>>,
    {
        let running = start(self.settings).await.expect("service starts");
        TestService {
            running,
            prefix: self.prefix,
            http: reqwest::Client::new(),
            _db: self.db,
        }
    }
}

/// A service running for one test, on its own database and topic prefix.
pub struct TestService {
    pub running: crate::service::RunningService,
    pub prefix: String,
    pub http: reqwest::Client,
    _db: TestDatabase,
}

impl TestService {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }
}

/// A topic prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Every log line of this test process at debug level for the project's
/// crates (info for the others), so a test can search what was logged.
static CAPTURED: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match CAPTURED.lock() {
            Ok(mut captured) => captured.extend_from_slice(buf),
            Err(poisoned) => poisoned.into_inner().extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What this process has logged so far (see [`init_tracing`]).
pub fn captured_logs() -> String {
    match CAPTURED.lock() {
        Ok(captured) => String::from_utf8_lossy(&captured).into_owned(),
        Err(poisoned) => String::from_utf8_lossy(&poisoned.into_inner()).into_owned(),
    }
}

/// Logs to the test harness (shown for failing tests), with OpenTelemetry
/// span contexts so trace propagation can be asserted, and into a buffer
/// that [`captured_logs`] returns. Idempotent.
pub fn init_tracing() {
    // Kept for the life of the process: dropping it would stop span ids.
    static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let settings = TelemetrySettings {
            log_filter: "warn".into(),
            log_format: "text".into(),
            otlp_endpoint: None,
        };
        let provider = telemetry::tracer_provider("tests", &settings).expect("tracer provider");
        use opentelemetry::trace::TracerProvider as _;
        let tracer = provider.tracer("tests");
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(|| Capture)
                    .with_filter(tracing_subscriber::EnvFilter::new(
                        "info,ticket_runtime=debug,concert_service=debug,queue_service=debug,\
                         reservation_service=debug,member_balance_service=debug,payment_service=debug",
                    )),
            )
            .try_init();
        provider
    });
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads what services published on a topic, from the beginning, as a
/// consumer of its own.
pub struct EventTap {
    consumer: rdkafka::consumer::StreamConsumer,
}

impl EventTap {
    pub fn new(topic_prefix: &str, topic: shared_events::Topic) -> EventTap {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker())
            .set(
                "group.id",
                format!("{topic_prefix}tap-{}", uuid::Uuid::new_v4()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("tap consumer");
        consumer
            .subscribe(&[&format!("{topic_prefix}{}", topic.name())])
            .expect("subscribe");
        EventTap { consumer }
    }

    /// The next event matching `wanted`, skipping others.
    pub async fn next_matching(
        &self,
        timeout: Duration,
        mut wanted: impl FnMut(&shared_events::Envelope) -> bool,
    ) -> shared_events::Envelope {
        use rdkafka::Message;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.consumer.recv())
                .await
                .expect("the expected event arrives in time")
                .expect("broker delivers");
            let payload = message.payload().unwrap_or_default();
            if let Ok(shared_events::Decoded::Known(envelope)) =
                shared_events::Envelope::decode(payload)
            {
                if wanted(&envelope) {
                    return *envelope;
                }
            }
        }
    }
}
