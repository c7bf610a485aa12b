//! `ticketctl up`: the whole system on one machine.

use crate::secrets::{local_secrets, LocalSecrets};
use anyhow::{bail, Context};
use shared_events::Service;
use std::ffi::OsString;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ticket_runtime::dev::broker;
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

pub fn postgres_url(url: &str) -> Result<String, String> {
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

/// How to start one process again after it died: all of its command,
/// its working folder too (the broker's data is found through it).
struct Spec {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
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
            current_dir: command.get_current_dir().map(Path::to_path_buf),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.envs.iter().cloned());
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
    }
}

/// Where the children's output goes: `up` shows it with each line's
/// process name in front; `chaos` keeps it in a file of its data folder.
#[derive(Clone)]
pub enum Output {
    Terminal,
    File(Arc<Mutex<std::fs::File>>),
}

impl Output {
    fn line(&self, name: &str, line: &str) {
        match self {
            Output::Terminal => println!("{name:>15} | {line}"),
            Output::File(file) => {
                if let Ok(mut file) = file.lock() {
                    let _ = writeln!(file, "{name:>15} | {line}");
                }
            }
        }
    }
}

pub struct Running {
    spec: Spec,
    child: Child,
    started: Instant,
    backoff: Duration,
    /// Set while the process is dead: when it starts again.
    restart_at: Option<Instant>,
    /// Stopped on purpose (`Cluster::stop_services`): not restarted.
    parked: bool,
}

impl Running {
    fn start(spec: Spec, output: &Output) -> anyhow::Result<Running> {
        let child = spawn(&spec.name, &mut spec.command(), output)?;
        Ok(Running {
            spec,
            child,
            started: Instant::now(),
            backoff: FIRST_BACKOFF,
            restart_at: None,
            parked: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        if self.restart_at.is_some() || self.parked {
            None
        } else {
            self.child.id()
        }
    }
}

pub async fn up(options: UpOptions) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&options, &[], Output::Terminal).await?;
    let data_dir = cluster.data_dir.clone();

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
    if cluster.secrets.admin_key_is_new {
        println!(
            "  admin key (X-Admin-Key), shown once, kept in {}: {}",
            data_dir.join("admin-key").display(),
            cluster.secrets.admin_key
        );
    }
    println!(
        "  member tokens: ticketctl login <user-id> --data-dir {}",
        data_dir.display()
    );
    println!(
        "  saga console:  ticketctl console --data-dir {} (then http://127.0.0.1:8088)",
        data_dir.display()
    );
    println!("press Ctrl-C to stop");

    let mut stopping = StopSignals::new()?;
    tokio::select! {
        _ = stopping.received() => {}
        _ = cluster.supervise() => {}
    }
    println!("stopping...");
    cluster.stop().await;
    println!("stopped");
    Ok(())
}

/// The signals that stop the cluster: Ctrl-C (SIGINT), SIGTERM, and SIGHUP
/// when the terminal closes. The children are in process groups of their
/// own, so a terminal's signal reaches only this process, which then stops
/// them in order (services, then the broker).
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    pub async fn received(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// The processes of a cluster on this machine, started and supervised as
/// compose's `restart:` would.
pub struct Cluster {
    processes: Vec<Running>,
    pub data_dir: PathBuf,
    pub secrets: LocalSecrets,
    pub inspect: crate::inspect::ClusterOptions,
    output: Output,
}

impl Cluster {
    /// Starts the broker (unless `--kafka`), the data platform and the five
    /// services, each with `env` added to its environment, and waits until
    /// every service is ready and what they published while starting has
    /// been consumed.
    pub async fn start(
        options: &UpOptions,
        env: &[(String, String)],
        output: Output,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
        let data_dir = options.data_dir.canonicalize()?;
        let secrets = local_secrets(&data_dir)?;
        let inspect = inspect_options(options, &data_dir);
        let mut cluster = Cluster {
            processes: Vec::new(),
            data_dir,
            secrets,
            inspect,
            output,
        };
        if let Err(error) = cluster.start_all(options, env).await {
            eprintln!("ticketctl: {error:#}");
            cluster.stop().await;
            return Err(error);
        }
        Ok(cluster)
    }

    /// The processes, by name: `broker`, `data-platform` and the services.
    pub fn processes(&self) -> &[Running] {
        &self.processes
    }

    /// Restarts processes that die, with backoff. Runs until cancelled.
    pub async fn supervise(&mut self) {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.supervise_once();
        }
    }

    /// One round of supervision: notes the processes that died since the
    /// last, and starts again those whose backoff has passed.
    pub fn supervise_once(&mut self) {
        for process in self.processes.iter_mut().filter(|p| !p.parked) {
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
                    self.output.line(
                        process.name(),
                        &format!(
                            "exited unexpectedly ({status}); restarting in {:?}",
                            process.backoff
                        ),
                    );
                    process.restart_at = Some(Instant::now() + process.backoff);
                }
                Some(at) if Instant::now() >= at => {
                    match spawn(process.name(), &mut process.spec.command(), &self.output) {
                        Ok(child) => {
                            self.output.line(process.name(), "restarted");
                            process.child = child;
                            process.started = Instant::now();
                            process.restart_at = None;
                        }
                        Err(error) => {
                            self.output
                                .line(process.name(), &format!("cannot restart: {error:#}"));
                            process.restart_at = Some(Instant::now() + process.backoff);
                        }
                    }
                    process.backoff = (process.backoff * 2).min(MAX_BACKOFF);
                }
                Some(_) => {}
            }
        }
    }

    /// Stops the five services (in order, waiting for each to finish what
    /// it does) and keeps them stopped until [`Cluster::start_services`].
    pub async fn stop_services(&mut self) {
        let services: Vec<&mut Running> = self
            .processes
            .iter_mut()
            .filter(|p| Service::parse(p.name()).is_some())
            .collect();
        stop_group(services).await;
        for process in self
            .processes
            .iter_mut()
            .filter(|p| Service::parse(p.name()).is_some())
        {
            process.parked = true;
            process.restart_at = None;
        }
    }

    /// Starts the services stopped by [`Cluster::stop_services`] and waits
    /// until they are ready.
    pub async fn start_services(&mut self) -> anyhow::Result<()> {
        for process in self.processes.iter_mut().filter(|p| p.parked) {
            process.child = spawn(process.name(), &mut process.spec.command(), &self.output)?;
            process.started = Instant::now();
            process.backoff = FIRST_BACKOFF;
            process.parked = false;
        }
        self.wait_until_ready().await
    }

    /// Services first (they finish in-flight work and commit their
    /// offsets), then the data platform, the broker last.
    pub async fn stop(&mut self) {
        let rank = |p: &Running| match p.name() {
            "broker" => 2,
            "data-platform" => 1,
            _ => 0,
        };
        for stage in 0..=2 {
            let group: Vec<&mut Running> = self
                .processes
                .iter_mut()
                .filter(|p| rank(p) == stage && !p.parked)
                .collect();
            stop_group(group).await;
        }
        self.processes.clear();
    }

    async fn start_all(
        &mut self,
        options: &UpOptions,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        let data_dir = self.data_dir.clone();
        if options.kafka.is_none() {
            let broker_dir = data_dir.join("broker");
            std::fs::create_dir_all(&broker_dir)?;
            let binary = ensure_broker()?;
            let command = broker::broker_command(&binary, options.broker_port, &broker_dir);
            self.processes
                .push(Running::start(Spec::of("broker", &command), &self.output)?);
            wait_for_port(options.broker_port, &mut self.processes).await?;
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
            .arg(&data_dir);
        self.processes.push(Running::start(
            Spec::of("data-platform", &command),
            &self.output,
        )?);
        let secrets = &self.secrets;
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
            command.envs(env.iter().map(|(k, v)| (k, v)));
            self.processes.push(Running::start(
                Spec::of(service.as_str(), &command),
                &self.output,
            )?);
        }
        self.wait_until_ready().await?;
        // Ready means settled too: what the services published while starting
        // (the demo catalog) has reached every service that keeps a view of it,
        // so a fan's first request finds the concert everywhere.
        let cluster = self.inspect.clone();
        let moving = tokio::task::spawn_blocking(move || {
            crate::inspect::audit::wait_until_settled(&cluster, SETTLE_TIMEOUT)
        })
        .await??;
        for (service, what) in moving {
            println!("{service:>15} | still busy after {SETTLE_TIMEOUT:?}: {what}");
        }
        Ok(())
    }

    /// Waits until every service answers ready, while keeping the others
    /// supervised.
    pub async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        for service in Service::ALL {
            let url = format!("{}/health/ready", self.inspect.urls.url(service));
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Ok(response) = http.get(&url).send().await {
                    if response.status().is_success() {
                        self.output.line(service.as_str(), "ready");
                        break;
                    }
                }
                check_alive(&mut self.processes)?;
                if Instant::now() > deadline {
                    bail!("{service} was not ready within {READY_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

fn brokers(options: &UpOptions) -> String {
    options
        .kafka
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", options.broker_port))
}

/// How `ticketctl`'s inspecting commands reach the cluster `up` starts.
fn inspect_options(options: &UpOptions, data_dir: &Path) -> crate::inspect::ClusterOptions {
    let url = |service| format!("http://127.0.0.1:{}", options.http_port(service));
    crate::inspect::ClusterOptions {
        kafka: crate::inspect::KafkaOptions {
            brokers: brokers(options),
            topic_prefix: String::new(),
        },
        urls: crate::inspect::ServiceUrls {
            concert_url: url(Service::Concert),
            queue_url: url(Service::Queue),
            reservation_url: url(Service::Reservation),
            member_balance_url: url(Service::MemberBalance),
            payment_url: url(Service::Payment),
        },
        data_dir: data_dir.to_path_buf(),
    }
}

/// Starts a child whose output goes to `output` with its name in front,
/// which dies with this process even if this process is killed, and which
/// leads a process group of its own: a signal from the terminal (Ctrl-C
/// reaches the whole foreground group) comes only to `ticketctl`, which
/// stops the children in order; sent to them at once, the broker would
/// stop before the services' last offset commits.
fn spawn(name: &str, command: &mut Command, output: &Output) -> anyhow::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
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
        let output = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                output.line(&name, &line);
            }
        });
    }
    Ok(child)
}

fn check_alive(processes: &mut [Running]) -> anyhow::Result<()> {
    for process in processes.iter_mut().filter(|p| !p.parked) {
        if process.restart_at.is_some() {
            continue;
        }
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

/// Asks every process of the group to stop (a paused one is woken first so
/// it can), then waits for each, killing those that take too long.
async fn stop_group(mut group: Vec<&mut Running>) {
    for process in group.iter() {
        if let Some(pid) = process.child.id() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
                libc::kill(pid as i32, libc::SIGCONT);
            }
        }
    }
    for process in group.iter_mut() {
        stop_one(process).await;
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

/// The broker `up` starts: the one `TICKET_BROKER_BIN` names, else the one
/// scripts/install-broker.sh installs (building it first when it is
/// missing or its sources changed, as scripts/setup.sh does).
fn ensure_broker() -> anyhow::Result<PathBuf> {
    if let Some(given) = broker::given_binary() {
        return Ok(given);
    }
    let script = broker::install_script();
    let installed = broker::installed_binary()
        .context("no cargo home: set CARGO_HOME or HOME, or TICKET_BROKER_BIN")?;
    if !script.is_file() {
        // A ticketctl away from its checkout: what was installed, as it is.
        if installed.is_file() {
            return Ok(installed);
        }
        bail!(
            "ticket-broker is not installed and {} is missing",
            script.display()
        );
    }
    let status = broker::install_command()
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("installing ticket-broker failed ({status})");
    }
    Ok(installed)
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
    ticket_runtime::db::postgres::create_database(&admin_url, &name)
        .with_context(|| format!("cannot create database {name}"))?;
    Ok(format!("{scheme}://{authority}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_process_keeps_its_working_folder() {
        // The broker finds its data through its working folder: started
        // again anywhere else, it would come back on other data.
        let dir = std::env::temp_dir();
        let mut command = std::process::Command::new("true");
        command.arg("--flag").env("KEY", "value").current_dir(&dir);
        let again = Spec::of("broker", &command).command();
        let again = again.as_std();
        assert_eq!(again.get_current_dir(), Some(dir.as_path()));
        assert_eq!(again.get_args().collect::<Vec<_>>(), ["--flag"]);
        assert!(again
            .get_envs()
            .any(|(k, v)| k == "KEY" && v == Some("value".as_ref())));
    }
}
