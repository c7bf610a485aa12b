//! A whole cluster in one test process: the five services (each with its own
//! database), the data platform stand-in, and the real broker. A fan's moves
//! over HTTP are in `client`; the system's invariants, checked from each
//! service's own data, in `invariants`.

mod client;
mod invariants;

pub use client::{assert_refused, Call, Fan, PASS_HEADER};

use diesel::connection::SimpleConnection;
use reqwest::Client;

use shared_events::Service;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use ticket_runtime::dev::issuer::DevIssuer;
use ticket_runtime::dev::testkit::{self, eventually, TestDatabase};
use ticket_runtime::{Db, DbError, RunningService, Settings};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(45);
/// How stale a concert instance's seat map may be, in every cluster: how
/// long another instance's seat change may take to show at one that did
/// not make it.
pub const SEAT_MAP_MAX_STALENESS: Duration = Duration::from_millis(250);
const DECISION_WINDOW_MS: u64 = 8_000;

/// What a scenario may change from the defaults.
#[derive(Clone)]
pub struct Knobs {
    pub hold_ttl_secs: i64,
    pub release_grace_secs: i64,
    pub payment_deadline_secs: i64,
    pub max_active: i64,
    pub pass_ttl_secs: i64,
    pub poll_timeout_secs: i64,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            hold_ttl_secs: 300,
            release_grace_secs: 60,
            payment_deadline_secs: 60,
            max_active: 1000,
            pass_ttl_secs: 600,
            poll_timeout_secs: 30,
        }
    }
}

/// The admin key of every test cluster's services.
pub use ticket_runtime::dev::testkit::ADMIN_KEY;

pub struct Cluster {
    pub prefix: String,
    pub knobs: Knobs,
    keys: (String, String),
    /// The identity provider of the cluster's fans, and its JWKS file.
    pub issuer: DevIssuer,
    jwks: std::path::PathBuf,
    databases: HashMap<Service, TestDatabase>,
    /// Every running instance of each service; requests go round-robin.
    services: HashMap<Service, Vec<RunningService>>,
    instances: usize,
    partitions: i32,
    next_instance: AtomicUsize,
    pub platform: data_platform_mock::DataPlatform,
    platform_url: String,
    pub http: Client,
}

pub fn defaults(service: Service) -> &'static str {
    match service {
        Service::Concert => concert_service::DEFAULTS,
        Service::Queue => queue_service::DEFAULTS,
        Service::Reservation => reservation_service::DEFAULTS,
        Service::MemberBalance => member_balance_service::DEFAULTS,
        Service::Payment => payment_service::DEFAULTS,
    }
}

impl Cluster {
    pub async fn start(postgres: bool, knobs: Knobs) -> Cluster {
        Cluster::start_with(postgres, knobs, 1, 2).await
    }

    /// One instance of every service, each on its own SQLite file.
    pub async fn sqlite(knobs: Knobs) -> Cluster {
        Cluster::start(false, knobs).await
    }

    /// One instance of every service, each on its own PostgreSQL database.
    pub async fn postgres(knobs: Knobs) -> Cluster {
        Cluster::start(true, knobs).await
    }

    /// Two instances of every service on one PostgreSQL database each, and
    /// topics of four partitions: what `docker compose up --scale` runs.
    pub async fn start_scaled(knobs: Knobs) -> Cluster {
        Cluster::start_with(true, knobs, 2, 4).await
    }

    async fn start_with(
        postgres: bool,
        knobs: Knobs,
        instances: usize,
        partitions: i32,
    ) -> Cluster {
        testkit::init_tracing();
        let prefix = testkit::unique_prefix();
        let databases = Service::ALL
            .into_iter()
            .map(|s| {
                let label = s.as_str().replace('-', "_");
                let db = TestDatabase::on(postgres, &label);
                (s, db)
            })
            .collect();
        let platform = data_platform_mock::DataPlatform::new(None);
        let (server, addr) = platform.serve("127.0.0.1", 0).unwrap();
        tokio::spawn(server);
        let issuer = DevIssuer::generate().unwrap();
        let jwks = testkit::temp_dir("jwks").join("jwks.json");
        std::fs::write(&jwks, issuer.jwks().to_string()).unwrap();
        let mut cluster = Cluster {
            prefix,
            knobs,
            keys: ticket_runtime::dev::keys::generate_key_pair(),
            issuer,
            jwks,
            databases,
            services: HashMap::new(),
            instances,
            partitions,
            next_instance: AtomicUsize::new(0),
            platform,
            platform_url: format!("http://{addr}"),
            http: Client::new(),
        };
        for service in Service::ALL {
            cluster.launch(service).await;
        }
        cluster
    }

    fn settings<T: serde::de::DeserializeOwned>(&self, service: Service) -> Settings<T> {
        let mut settings: Settings<T> = testkit::settings(
            defaults(service),
            &self.databases[&service].url,
            &self.prefix,
        );
        settings.kafka.partitions = self.partitions;
        settings
    }

    fn member_auth(&self) -> ticket_runtime::auth::member::MemberAuthSettings {
        self.issuer.settings(&self.jwks.display().to_string())
    }

    /// Starts (or restarts, on the same database) every instance of one service.
    pub async fn launch(&mut self, service: Service) {
        let mut started = Vec::new();
        for _ in 0..self.instances {
            started.push(self.launch_one(service).await);
        }
        self.services.insert(service, started);
    }

    async fn launch_one(&self, service: Service) -> RunningService {
        let running = match service {
            Service::Concert => {
                let mut s = self.settings::<concert_service::ConcertSettings>(service);
                s.service.concert.demo_data = true;
                s.service.concert.holds.hold_ttl_secs = self.knobs.hold_ttl_secs;
                s.service.concert.holds.release_grace_secs = self.knobs.release_grace_secs;
                s.service.concert.holds.sweep_interval_ms = 100;
                s.service.concert.seat_maps.seat_map_max_staleness_ms =
                    SEAT_MAP_MAX_STALENESS.as_millis().try_into().unwrap();
                concert_service::start(s).await
            }
            Service::Queue => {
                let mut s = self.settings::<queue_service::QueueSettings>(service);
                s.service.queue.pass_signing_key = ticket_runtime::Secret::new(self.keys.0.clone());
                s.service.queue.policy.max_active = self.knobs.max_active;
                s.service.queue.policy.admission_rate_per_sec = 10_000;
                s.service.queue.policy.pass_ttl_secs = self.knobs.pass_ttl_secs;
                s.service.queue.policy.poll_timeout_secs = self.knobs.poll_timeout_secs;
                s.service.queue.policy.sweep_interval_ms = 100;
                s.service.queue.policy.admission_interval_ms = 50;
                s.service.member_auth = self.member_auth();
                queue_service::start(s).await
            }
            Service::Reservation => {
                let mut s = self.settings::<reservation_service::ReservationSettings>(service);
                s.service.auth.pass_public_key = self.keys.1.clone();
                s.service.member_auth = self.member_auth();
                s.service.reservation.sweep_interval_ms = 100;
                // Wide windows: scenarios assert "decided within the window"
                // (201) and must not flake on a loaded machine.
                s.service.reservation.decision_wait_ms = DECISION_WINDOW_MS;
                reservation_service::start(s).await
            }
            Service::MemberBalance => {
                let mut s = self.settings::<member_balance_service::BalanceSettings>(service);
                s.service.member_auth = self.member_auth();
                member_balance_service::start(s).await
            }
            Service::Payment => {
                let mut s = self.settings::<payment_service::PaymentSettings>(service);
                s.service.auth.pass_public_key = self.keys.1.clone();
                s.service.member_auth = self.member_auth();
                s.service.payment.deadline_secs = self.knobs.payment_deadline_secs;
                s.service.payment.sweep_interval_ms = 100;
                s.service.payment.decision_wait_ms = DECISION_WINDOW_MS;
                s.service.data_platform.url = self.platform_url.clone();
                s.service.data_platform.retry.max_backoff_secs = 1;
                payment_service::start(s).await
            }
        }
        .unwrap_or_else(|e| panic!("{service} starts: {e:#}"));
        let ready = format!("{}/health/ready", running.url());
        // Ready includes "its consumers joined their groups": no event the
        // scenario causes next waits for a rebalance.
        eventually(WAIT, &format!("{service} to be ready"), || async {
            let response = self.http.get(&ready).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        running
    }

    /// Events the service committed and the broker has not acknowledged.
    pub async fn outbox_pending(&self, service: Service) -> i64 {
        self.db(service)
            .run(ticket_runtime::db::outbox::pending_count)
            .await
            .unwrap()
    }

    /// Waits until everything the service committed is on the broker, so
    /// that stopping it cannot hold its last events back.
    pub async fn outbox_drained(&self, service: Service) {
        eventually(WAIT, &format!("{service}'s outbox to drain"), || async {
            (self.outbox_pending(service).await == 0).then_some(())
        })
        .await;
    }

    /// Stops every instance of a service as a crash would.
    pub async fn kill(&mut self, service: Service) {
        for running in self.services.remove(&service).unwrap_or_default() {
            running.kill().await;
        }
    }

    pub async fn stop(mut self) {
        for (_, instances) in self.services.drain() {
            for running in instances {
                running.stop().await;
            }
        }
    }

    /// A URL on one of the service's instances, taken in turn.
    pub fn url(&self, service: Service, path: &str) -> String {
        let instances = &self.services[&service];
        let n = self.next_instance.fetch_add(1, Ordering::Relaxed) % instances.len();
        format!("{}{path}", instances[n].url())
    }

    /// The first instance's URL, or a closed port's while the service is down.
    /// Runs `ticketctl ARGS` against the cluster as a user would (the built
    /// binary, the cluster's broker and services, a data folder with its
    /// admin key and identity provider); its exit code and stdout.
    pub async fn ticketctl(&self, args: &[&str]) -> (i32, String) {
        let mut command = self.ticketctl_command(args);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "ticketctl {args:?} failed ({code}): {stderr}"
        );
        if code != 0 {
            // Exit 1 is an answer (a violation) or an error: either way the
            // test's output should say which.
            println!("ticketctl {args:?} exited {code}; its standard error:\n{stderr}");
        }
        (code, String::from_utf8(output.stdout).unwrap())
    }

    /// Makes member-balance fail every debit (a trigger on its SQLite
    /// table, as a maintenance window would), so that a valid payment
    /// request is dead-lettered once its attempts are spent.
    pub async fn close_debits(&self) {
        self.member_balance_sql(
            "CREATE TRIGGER maintenance BEFORE INSERT ON payment_debits \
             BEGIN SELECT RAISE(ABORT, 'debits closed for maintenance'); END;",
        )
        .await;
    }

    /// Ends [`close_debits`](Cluster::close_debits).
    pub async fn reopen_debits(&self) {
        self.member_balance_sql("DROP TRIGGER maintenance;").await;
    }

    async fn member_balance_sql(&self, sql: &'static str) {
        use diesel::connection::SimpleConnection;
        self.db(Service::MemberBalance)
            .run(move |conn| {
                conn.batch_execute(sql)
                    .map_err(ticket_runtime::DbError::from)
            })
            .await
            .unwrap();
    }

    /// `ticketctl ARGS` set up to act on this cluster, not yet started.
    pub fn ticketctl_command(&self, args: &[&str]) -> std::process::Command {
        let tools = testkit::temp_dir("ticketctl");
        std::fs::write(tools.join("admin-key"), ADMIN_KEY).unwrap();
        std::fs::write(
            tools.join("member-issuer.key"),
            self.issuer.private_key_base64(),
        )
        .unwrap();
        let mut command = std::process::Command::new(ticketctl_binary());
        command
            .args(args)
            .env("KAFKA_BROKERS", testkit::broker())
            .env("APP__KAFKA__TOPIC_PREFIX", &self.prefix)
            .env("TICKETCTL_DATA_DIR", &tools);
        for service in Service::ALL {
            let variable = format!("{}_URL", service.as_str().replace('-', "_").to_uppercase());
            command.env(variable, self.base_url(service));
        }
        command
    }

    pub fn base_url(&self, service: Service) -> String {
        self.services
            .get(&service)
            .and_then(|instances| instances.first())
            .map_or_else(|| "http://127.0.0.1:1".to_string(), |running| running.url())
    }

    /// Every instance's URL of a service.
    pub fn urls(&self, service: Service, path: &str) -> Vec<String> {
        self.services[&service]
            .iter()
            .map(|running| format!("{}{path}", running.url()))
            .collect()
    }

    /// The service's database (shared by its instances).
    pub fn db(&self, service: Service) -> &Db {
        &self.services[&service][0].db
    }

    /// A member token for `user` from the cluster's identity provider.
    pub fn member_token(&self, user: Uuid) -> String {
        self.issuer.token(user, chrono::TimeDelta::minutes(30))
    }

    /// Marks every event of every outbox unsent, so each is delivered again.
    pub async fn redeliver_everything(&self) {
        for service in Service::ALL {
            self.db(service)
                .run(|conn| {
                    conn.batch_execute("UPDATE outbox SET sent_at = NULL")
                        .map_err(DbError::from)
                })
                .await
                .unwrap();
        }
    }

    /// How many times events were applied, skipped as duplicates, etc.
    pub async fn consumed(&self, outcome: &str) -> u64 {
        let label = format!("outcome=\"{outcome}\"");
        self.consumption()
            .await
            .iter()
            .filter(|l| l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The `events_consumed_total` lines of every instance's metrics.
    pub async fn consumption(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for url in Service::ALL
            .into_iter()
            .flat_map(|service| self.urls(service, "/metrics"))
        {
            let response = self.http.get(url).send().await.unwrap();
            let text = response.text().await.unwrap();
            lines.extend(
                text.lines()
                    .filter(|l| l.starts_with("events_consumed_total"))
                    .map(str::to_string),
            );
        }
        lines
    }
}

/// The built `ticketctl`: cargo names it to tests; the benchmarks (built
/// as examples, in `target/*/examples/`) find it beside their folder.
fn ticketctl_binary() -> std::path::PathBuf {
    match option_env!("CARGO_BIN_EXE_ticketctl") {
        Some(path) => path.into(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("ticketctl")))
            .unwrap_or_else(|| "ticketctl".into()),
    }
}
