//! `ticketctl up`: the whole system on one machine.

use anyhow::{bail, Context};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use shared_events::Service;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use ticket_runtime::broker;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    pub database: Option<String>,
    pub kafka: Option<String>,
    pub port_base: u16,
    pub broker_port: u16,
    pub demo_data: bool,
}

impl UpOptions {
    pub fn parse(args: &[String]) -> anyhow::Result<UpOptions> {
        let mut options = UpOptions {
            data_dir: PathBuf::from("data"),
            database: None,
            kafka: None,
            port_base: 8080,
            broker_port: 9092,
            demo_data: true,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--data-dir" => options.data_dir = PathBuf::from(value()?),
                "--database" => {
                    let url = value()?;
                    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                        bail!("--database takes a postgres:// URL (SQLite files are the default)");
                    }
                    options.database = Some(url);
                }
                "--kafka" => options.kafka = Some(value()?),
                "--port-base" => options.port_base = value()?.parse().context("--port-base")?,
                "--broker-port" => {
                    options.broker_port = value()?.parse().context("--broker-port")?
                }
                "--no-demo-data" => options.demo_data = false,
                other => bail!("unknown option {other:?}; see `ticketctl help`"),
            }
        }
        Ok(options)
    }

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

struct Running {
    name: String,
    child: Child,
}

pub async fn up(options: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
    let data_dir = options.data_dir.canonicalize()?;
    let keys = pass_keys(&data_dir)?;
    let mut processes: Vec<Running> = Vec::new();

    let result = start_all(&options, &data_dir, &keys, &mut processes).await;
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
    println!("press Ctrl-C to stop");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
        exited = first_exit(&mut processes) => Err(anyhow::anyhow!("{exited} stopped unexpectedly")),
    };
    println!("stopping...");
    stop_all(&mut processes).await;
    println!("stopped");
    outcome
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
    keys: &(String, String),
    processes: &mut Vec<Running>,
) -> anyhow::Result<()> {
    if options.kafka.is_none() {
        let broker_dir = data_dir.join("broker");
        std::fs::create_dir_all(&broker_dir)?;
        let binary = ensure_nisshi()?;
        let mut command: Command =
            broker::broker_command(&binary, options.broker_port, &broker_dir).into();
        let child = spawn("broker", &mut command)?;
        processes.push(Running {
            name: "broker".into(),
            child,
        });
        wait_for_port(options.broker_port, processes).await?;
    }
    let exe = std::env::current_exe()?;
    let platform_port = options.data_platform_port();
    let mut command = Command::new(&exe);
    command
        .args([
            "data-platform",
            "--port",
            &platform_port.to_string(),
            "--data-dir",
        ])
        .arg(data_dir);
    let child = spawn("data-platform", &mut command)?;
    processes.push(Running {
        name: "data-platform".into(),
        child,
    });
    for service in Service::ALL {
        let database_url = match &options.database {
            Some(server) => postgres_database(server, service)?,
            None => format!(
                "sqlite://{}",
                data_dir.join(format!("{}.db", service.as_str())).display()
            ),
        };
        let mut command = Command::new(&exe);
        command
            .args(["serve", service.as_str()])
            .env("APP__HTTP__PORT", options.http_port(service).to_string())
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", brokers(options))
            // One instance per service here: more partitions would only add
            // idle fetch work for the broker.
            .env("APP__KAFKA__PARTITIONS", "1")
            .env("APP__AUTH__PASS_PUBLIC_KEY", &keys.1)
            .env("APP__CONCERT__DEMO_DATA", options.demo_data.to_string())
            .env(
                "APP__DATA_PLATFORM__URL",
                format!("http://127.0.0.1:{platform_port}"),
            );
        if service == Service::Queue {
            command.env("APP__QUEUE__PASS_SIGNING_KEY", &keys.0);
        }
        let child = spawn(service.as_str(), &mut command)?;
        processes.push(Running {
            name: service.as_str().into(),
            child,
        });
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
                process.name
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

async fn first_exit(processes: &mut [Running]) -> String {
    loop {
        for process in processes.iter_mut() {
            if let Ok(Some(_)) = process.child.try_wait() {
                return process.name.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Services first (they finish in-flight work and commit), the broker last.
async fn stop_all(processes: &mut Vec<Running>) {
    let (mut broker, mut services): (Vec<Running>, Vec<Running>) =
        processes.drain(..).partition(|p| p.name == "broker");
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
            process.name
        );
        let _ = process.child.kill().await;
    }
}

fn ensure_nisshi() -> anyhow::Result<PathBuf> {
    if let Some(binary) = broker::nisshi_binary() {
        return Ok(binary);
    }
    println!(
        "installing the broker (nisshi {}) with cargo; this happens once and takes about 20 minutes",
        broker::NISSHI_VERSION
    );
    let status = broker::install_command()
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("installing nisshi failed ({status})");
    }
    broker::nisshi_binary().context("nisshi was installed but is not on PATH or in ~/.cargo/bin")
}

/// The service's own database on the given server, created when missing:
/// `postgres://host/NAME` gives `NAME_concert`, `NAME_queue`, …; without a
/// name, `ticketing_concert`, ….
fn postgres_database(server: &str, service: Service) -> anyhow::Result<String> {
    let (scheme, rest) = server
        .split_once("://")
        .with_context(|| format!("not a URL: {server}"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.split('?').next().unwrap_or_default();
    let prefix = if path.is_empty() { "ticketing" } else { path };
    let name = format!("{prefix}_{}", service.as_str().replace('-', "_"));
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

/// The pass key pair, made on the first `up` and kept in the data folder.
fn pass_keys(data_dir: &Path) -> anyhow::Result<(String, String)> {
    let path = data_dir.join("pass-keys.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let keys: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if let (Some(private), Some(public)) = (keys["private"].as_str(), keys["public"].as_str()) {
            return Ok((private.to_string(), public.to_string()));
        }
        bail!(
            "{} is missing its keys; delete it to make new ones",
            path.display()
        );
    }
    let (private, public) = ticket_runtime::pass::generate_key_pair();
    let body = serde_json::json!({ "private": private, "public": public }).to_string();
    std::fs::write(&path, body)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((private, public))
}
