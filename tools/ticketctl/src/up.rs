//! `ticketctl up`: the whole system on one machine.

use crate::secrets::{local_secrets, LocalSecrets};
use anyhow::{bail, Context};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use shared_events::Service;
use std::ffi::OsString;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use ticket_runtime::broker;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `up` waits for startup events to reach every service.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// A process that died is started again after this, doubling up to the
/// maximum while it keeps dying; one that ran for `STABLE` starts afresh.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);

/// Start the broker (ticket-broker, installed on first use) and the five services
/// on 127.0.0.1, wait until each is ready, and stop them on Ctrl-C.
///
/// Ports: concert 8081, queue 8082, reservation 8083, member-balance 8084,
/// payment 8085, data platform 8090, broker 9092 (with the default
/// --port-base). Data lives in the data folder and survives a restart; the
/// first `up` makes its secrets there: pass keys, an admin key (printed
/// once, kept in admin-key) and a development issuer of member tokens. A
/// process that dies is started again with backoff.
#[derive(Debug, Clone, clap::Args)]
pub struct UpOptions {
    /// Where databases, broker data and secrets live.
    #[arg(long, env = "TICKETCTL_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL server instead of SQLite files: every service gets its
    /// own database on it (postgres://host/NAME makes NAME_concert, ...;
    /// default ticketing_*), created if missing.
    #[arg(long, value_parser = postgres_url)]
    pub database: Option<String>,
    /// Use this Kafka instead of starting a broker.
    #[arg(long, env = "KAFKA_BROKERS", value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    /// The services listen on BASE+1 to BASE+5, the data platform on BASE+10.
    #[arg(long, default_value_t = 8080)]
    pub port_base: u16,
    /// The port of the broker `up` starts.
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    /// Start with an empty catalog instead of the demo concerts.
    #[arg(long = "no-demo-data", action = clap::ArgAction::SetFalse)]
    pub demo_data: bool,
}

fn postgres_url(url: &str) -> Result<String, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_string())
    } else {
        Err("--database takes a postgres:// URL (SQLite files are the default)".into())
    }
}

impl UpOptions {
    fn data_platform_port(&self) -> u16 {
        self.port_base + 10
    }

    fn http_port(&self, service: Service) -> u16 {
        let offset = match service {
            Service::Concert => 1,
            Service::Queue => 2,
            Service::Reservation => 3,
            Service::MemberBalance => 4,
            Service::Payment => 5,
        };
        self.port_base + offset
    }
}

/// How to start one process again after it died.
struct Spec {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl Spec {
    fn of(name: &str, command: &std::process::Command) -> Spec {
        Spec {
            name: name.to_string(),
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.envs.iter().cloned());
        command
    }
}

struct Running {
    spec: Spec,
    child: Child,
    started: Instant,
    backoff: Duration,
    /// Set while the process is dead: when it starts again.
    restart_at: Option<Instant>,
}

impl Running {
    fn start(spec: Spec) -> anyhow::Result<Running> {
        let child = spawn(&spec.name, &mut spec.command())?;
        Ok(Running {
            spec,
            child,
            started: Instant::now(),
            backoff: FIRST_BACKOFF,
            restart_at: None,
        })
    }

    fn name(&self) -> &str {
        &self.spec.name
    }
}

pub async fn up(options: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
    let data_dir = options.data_dir.canonicalize()?;
    let secrets = local_secrets(&data_dir)?;
    let mut processes: Vec<Running> = Vec::new();

    let result = start_all(&options, &data_dir, &secrets, &mut processes).await;
    if let Err(error) = result {
        eprintln!("ticketctl: {error:#}");
        stop_all(&mut processes).await;
        return Err(error);
    }

    println!();
    println!("ticketing platform is ready:");
    for service in Service::ALL {
        println!(
            "  {:<15} http://127.0.0.1:{}",
            service.as_str(),
            options.http_port(service)
        );
    }
    println!(
        "  {:<15} http://127.0.0.1:{}",
        "data-platform",
        options.data_platform_port()
    );
    println!("  {:<15} {}", "broker", brokers(&options));
    println!("  data in {}", data_dir.display());
    if secrets.admin_key_is_new {
        println!(
            "  admin key (X-Admin-Key), shown once, kept in {}: {}",
            data_dir.join("admin-key").display(),
            secrets.admin_key
        );
    }
    println!(
        "  member tokens: ticketctl login <user-id> --data-dir {}",
        data_dir.display()
    );
    println!("press Ctrl-C to stop");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = supervise(&mut processes) => {}
    }
    println!("stopping...");
    stop_all(&mut processes).await;
    println!("stopped");
    Ok(())
}

/// Restarts processes that die, with backoff, as compose's `restart:` would.
/// Runs until cancelled.
async fn supervise(processes: &mut [Running]) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for process in processes.iter_mut() {
            match process.restart_at {
                None => {
                    let Ok(Some(status)) = process.child.try_wait() else {
                        if process.started.elapsed() >= STABLE {
                            process.backoff = FIRST_BACKOFF;
                        }
                        continue;
                    };
                    if process.started.elapsed() >= STABLE {
                        process.backoff = FIRST_BACKOFF;
                    }
                    println!(
                        "{:>15} | exited unexpectedly ({status}); restarting in {:?}",
                        process.name(),
                        process.backoff
                    );
                    process.restart_at = Some(Instant::now() + process.backoff);
                }
                Some(at) if Instant::now() >= at => {
                    match spawn(process.name(), &mut process.spec.command()) {
                        Ok(child) => {
                            println!("{:>15} | restarted", process.name());
                            process.child = child;
                            process.started = Instant::now();
                            process.restart_at = None;
                        }
                        Err(error) => {
                            println!("{:>15} | cannot restart: {error:#}", process.name());
                            process.restart_at = Some(Instant::now() + process.backoff);
                        }
                    }
                    process.backoff = (process.backoff * 2).min(MAX_BACKOFF);
                }
                Some(_) => {}
            }
        }
    }
}

fn brokers(options: &UpOptions) -> String {
    options
        .kafka
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", options.broker_port))
}

async fn start_all(
    options: &UpOptions,
    data_dir: &Path,
    secrets: &LocalSecrets,
    processes: &mut Vec<Running>,
) -> anyhow::Result<()> {
    if options.kafka.is_none() {
        let broker_dir = data_dir.join("broker");
        std::fs::create_dir_all(&broker_dir)?;
        let binary = ensure_broker()?;
        let command = broker::broker_command(&binary, options.broker_port, &broker_dir);
        processes.push(Running::start(Spec::of("broker", &command))?);
        wait_for_port(options.broker_port, processes).await?;
    }
    let exe = std::env::current_exe()?;
    let platform_port = options.data_platform_port();
    let mut command = std::process::Command::new(&exe);
    command
        .args([
            "data-platform",
            "--port",
            &platform_port.to_string(),
            "--data-dir",
        ])
        .arg(data_dir);
    processes.push(Running::start(Spec::of("data-platform", &command))?);
    for service in Service::ALL {
        let database_url = match &options.database {
            Some(server) => postgres_database(server, service.as_str())?,
            None => format!(
                "sqlite://{}",
                data_dir.join(format!("{}.db", service.as_str())).display()
            ),
        };
        let mut command = std::process::Command::new(&exe);
        command
            .args(["serve", service.as_str()])
            .env("APP__HTTP__PORT", options.http_port(service).to_string())
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", brokers(options))
            // One instance per service here: more partitions would only add
            // idle fetch work for the broker.
            .env("APP__KAFKA__PARTITIONS", "1")
            .env("APP__AUTH__PASS_PUBLIC_KEY", &secrets.pass_keys.1)
            .env("APP__MEMBER_AUTH__JWKS", &secrets.jwks_path)
            .env("APP__MEMBER_AUTH__ISSUER", &secrets.issuer.issuer)
            .env("APP__MEMBER_AUTH__AUDIENCE", &secrets.issuer.audience)
            .env("APP__ADMIN__KEY", &secrets.admin_key)
            .env("APP__CONCERT__DEMO_DATA", options.demo_data.to_string())
            .env(
                "APP__DATA_PLATFORM__URL",
                format!("http://127.0.0.1:{platform_port}"),
            );
        if service == Service::Queue {
            command.env("APP__QUEUE__PASS_SIGNING_KEY", &secrets.pass_keys.0);
        }
        processes.push(Running::start(Spec::of(service.as_str(), &command))?);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for service in Service::ALL {
        let url = format!(
            "http://127.0.0.1:{}/health/ready",
            options.http_port(service)
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(response) = http.get(&url).send().await {
                if response.status().is_success() {
                    println!("{:>15} | ready", service.as_str());
                    break;
                }
            }
            check_alive(processes)?;
            if Instant::now() > deadline {
                bail!("{service} was not ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Ready means settled too: what the services published while starting
    // (the demo catalog) has reached every service that keeps a view of it,
    // so a fan's first request finds the concert everywhere.
    let cluster = crate::inspect::ClusterOptions {
        kafka: crate::inspect::KafkaOptions {
            brokers: brokers(options),
            topic_prefix: String::new(),
        },
        urls: crate::inspect::ServiceUrls {
            concert_url: format!("http://127.0.0.1:{}", options.http_port(Service::Concert)),
            queue_url: format!("http://127.0.0.1:{}", options.http_port(Service::Queue)),
            reservation_url: format!(
                "http://127.0.0.1:{}",
                options.http_port(Service::Reservation)
            ),
            member_balance_url: format!(
                "http://127.0.0.1:{}",
                options.http_port(Service::MemberBalance)
            ),
            payment_url: format!("http://127.0.0.1:{}", options.http_port(Service::Payment)),
        },
        data_dir: data_dir.to_path_buf(),
    };
    let moving = tokio::task::spawn_blocking(move || {
        crate::inspect::audit::wait_until_settled(&cluster, SETTLE_TIMEOUT)
    })
    .await??;
    for (service, what) in moving {
        println!("{service:>15} | still busy after {SETTLE_TIMEOUT:?}: {what}");
    }
    Ok(())
}

/// Starts a child whose output is shown with its name in front, and which
/// dies with this process even if this process is killed.
fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no Rust state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{name:>15} | {line}");
            }
        });
    }
    Ok(child)
}

fn check_alive(processes: &mut [Running]) -> anyhow::Result<()> {
    for process in processes.iter_mut() {
        if let Some(status) = process.child.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); its output is above",
                process.name()
            );
        }
    }
    Ok(())
}

async fn wait_for_port(port: u16, processes: &mut [Running]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        check_alive(processes)?;
        if Instant::now() > deadline {
            bail!("the broker did not listen on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Services first (they finish in-flight work and commit), the broker last.
async fn stop_all(processes: &mut Vec<Running>) {
    let (mut broker, mut services): (Vec<Running>, Vec<Running>) =
        processes.drain(..).partition(|p| p.name() == "broker");
    for group in [&mut services, &mut broker] {
        for process in group.iter() {
            if let Some(pid) = process.child.id() {
                // SAFETY: sending a signal to our own child.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        for process in group.iter_mut() {
            stop_one(process).await;
        }
    }
}

async fn stop_one(process: &mut Running) {
    if tokio::time::timeout(STOP_TIMEOUT, process.child.wait())
        .await
        .is_err()
    {
        eprintln!(
            "{} did not stop in {STOP_TIMEOUT:?}; killing it",
            process.name()
        );
        let _ = process.child.kill().await;
    }
}

fn ensure_broker() -> anyhow::Result<PathBuf> {
    if let Some(binary) = broker::broker_binary() {
        return Ok(binary);
    }
    println!(
        "installing the broker (ticket-broker, from {}) with cargo; this happens once and takes about 20 minutes",
        broker::source_dir().display()
    );
    let status = broker::install_command()
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("installing ticket-broker failed ({status}); scripts/setup.sh installs it too");
    }
    broker::broker_binary()
        .context("ticket-broker was installed but is not on PATH or in ~/.cargo/bin")
}

/// A database of its own on the given server (a service's, or the load
/// floor's), created when missing: `postgres://host/NAME` gives
/// `NAME_concert`, `NAME_queue`, …; without a name, `ticketing_concert`, ….
pub fn postgres_database(server: &str, owner: &str) -> anyhow::Result<String> {
    let (scheme, rest) = server
        .split_once("://")
        .with_context(|| format!("not a URL: {server}"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.split('?').next().unwrap_or_default();
    let prefix = if path.is_empty() { "ticketing" } else { path };
    let name = format!("{prefix}_{}", owner.replace('-', "_"));
    let admin_url = format!("{scheme}://{authority}/postgres");
    let mut admin = PgConnection::establish(&admin_url)
        .with_context(|| format!("cannot connect to {admin_url}"))?;
    if let Err(error) = admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")) {
        if !error.to_string().contains("already exists") {
            return Err(error).with_context(|| format!("cannot create database {name}"));
        }
    }
    Ok(format!("{scheme}://{authority}/{name}"))
}
