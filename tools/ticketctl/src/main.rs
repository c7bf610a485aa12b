//! `ticketctl`: the one command a newcomer needs.
//!
//! - `ticketctl up` starts the broker and the five services as separate
//!   processes, waits until each is ready, and stops them on Ctrl-C.
//! - `ticketctl serve SERVICE` runs one service in this process (what `up`
//!   starts, and what a container runs).
//! - `ticketctl data-platform` runs the stand-in data platform.
//! - `ticketctl secrets DIR` makes a deployment's secrets once and hands
//!   each service its share (the compose init step).
//! - `ticketctl topics` creates the event and dead-letter topics.
//! - `ticketctl openapi SERVICE` prints a service's OpenAPI document.
//! - `ticketctl login USER-ID` prints a member token of the development
//!   issuer that `up` (or `secrets`) keeps in its data folder.
//! - `ticketctl events`, `saga`, `dlq` and `status` look at a running
//!   cluster through Kafka and the services' health endpoints, and
//!   `ticketctl audit` checks the saga's invariants across it through the
//!   admin listings (see docs/operations.md).
//! - `ticketctl load` makes a ticket opening against a running cluster
//!   and audits it afterwards (see docs/benchmarks.md).
//! - `ticketctl console` serves the saga console: the same views in a
//!   browser, behind the admin key (see docs/operations.md).
//! - `ticketctl chaos` makes one against a cluster of its own while
//!   killing and pausing its processes, then checks that nothing was lost
//!   or doubled, and replays every topic (see docs/reliability.md).
//!
//! `ticketctl help [COMMAND]` describes each; flags that name a broker or a
//! data folder also come from the environment (`KAFKA_BROKERS`,
//! `TICKETCTL_DATA_DIR`, `APP__KAFKA__TOPIC_PREFIX`, `<SERVICE>_URL`).

mod chaos;
mod console;
mod inspect;
mod load;
mod secrets;
mod up;

use clap::{Args, Parser, Subcommand};
use shared_events::Service;
use std::io::Write as _;
use std::path::PathBuf;
use uuid::Uuid;

/// Runs the ticketing platform: the whole cluster on one machine, one
/// service in a container, keys and member tokens for trying it.
#[derive(Parser)]
#[command(name = "ticketctl", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Up(up::UpOptions),
    /// Run one service in this process (what `up` starts, and what a
    /// container runs); configured by APP__SECTION__KEY variables.
    Serve {
        /// concert, queue, reservation, member-balance or payment
        #[arg(value_parser = parse_service)]
        service: Service,
    },
    /// Print a service's OpenAPI document: what it serves at
    /// /docs/openapi.json, checked in as docs/api/SERVICE.json.
    Openapi {
        /// concert, queue, reservation, member-balance or payment
        #[arg(value_parser = parse_service)]
        service: Service,
    },
    /// Run the stand-in data platform that records completed reservations.
    DataPlatform(DataPlatformOptions),
    Secrets(secrets::SecretsOptions),
    /// Create the event topics and their dead-letter twins, with
    /// APP__KAFKA__PARTITIONS partitions (as many as the most instances of
    /// one service), on KAFKA_BROKERS; existing topics are kept as they are.
    Topics,
    /// Print a member token (`Authorization: Bearer ...`) for a user, signed
    /// by the development issuer that `up` keeps in its data folder.
    Login(LoginOptions),
    Events(inspect::events::EventsOptions),
    Saga(inspect::saga::SagaOptions),
    /// Dead letters: list them, replay them after a fix.
    #[command(subcommand)]
    Dlq(inspect::dlq::DlqCommand),
    Status(inspect::status::StatusOptions),
    Audit(inspect::audit::AuditOptions),
    Load(load::LoadOptions),
    Chaos(chaos::ChaosOptions),
    Console(console::ConsoleOptions),
}

#[derive(Args)]
struct DataPlatformOptions {
    /// The address to listen on (0.0.0.0 in a container).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Where the received records are appended (data-platform.jsonl).
    #[arg(long, env = "TICKETCTL_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct LoginOptions {
    /// The fan's user id (a UUID): the token's subject.
    #[arg(required_unless_present = "fans")]
    user: Option<Uuid>,
    /// Instead: this many new fans, one `USER-ID TOKEN` line each (for
    /// load tools such as wrk that cannot sign tokens).
    #[arg(long, conflicts_with = "user")]
    fans: Option<u32>,
    /// The data folder of `ticketctl up` (or `secrets`), whose issuer
    /// signs the token.
    #[arg(long, env = "TICKETCTL_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// How long the token is valid, up to a year.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    ttl_secs: i64,
}

fn parse_service(name: &str) -> Result<Service, String> {
    Service::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Service::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown service {name:?}; one of {}", known.join(", "))
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Up(options) => runtime.block_on(up::up(options)),
        Command::Serve { service } => runtime.block_on(serve(service)),
        Command::DataPlatform(options) => runtime.block_on(data_platform(options)),
        Command::Secrets(options) => secrets::run(options),
        Command::Topics => runtime.block_on(topics()),
        Command::Openapi { service } => {
            let document = match service {
                Service::Concert => concert_service::api::openapi(),
                Service::Queue => queue_service::api::openapi(),
                Service::Reservation => reservation_service::api::openapi(),
                Service::MemberBalance => member_balance_service::api::openapi(),
                Service::Payment => payment_service::api::openapi(),
            };
            let document = ticket_runtime::http::api_docs::complete(service, document);
            print!("{}", ticket_runtime::http::api_docs::to_json(&document));
            Ok(())
        }
        Command::Login(options) => login(options),
        Command::Events(options) => inspect::events::run(options),
        Command::Saga(options) => inspect::saga::run(options),
        Command::Dlq(command) => inspect::dlq::run(command),
        Command::Status(options) => {
            if inspect::status::run(options)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Load(options) => {
            if runtime.block_on(load::run(options))? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Console(options) => runtime.block_on(console::run(options)),
        Command::Chaos(options) => {
            if runtime.block_on(chaos::run(options))? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Audit(options) => {
            if inspect::audit::run(options)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

async fn serve(service: Service) -> anyhow::Result<()> {
    match service {
        Service::Concert => concert_service::main().await,
        Service::Queue => queue_service::main().await,
        Service::Reservation => reservation_service::main().await,
        Service::MemberBalance => member_balance_service::main().await,
        Service::Payment => payment_service::main().await,
    }
}

fn login(options: LoginOptions) -> anyhow::Result<()> {
    let data_dir = &options.data_dir;
    if !data_dir.join("member-issuer.key").exists() {
        anyhow::bail!(
            "{} has no member-token issuer yet: run `ticketctl up --data-dir {}` once",
            data_dir.display(),
            data_dir.display()
        );
    }
    let issuer = secrets::dev_issuer(data_dir)?;
    let ttl = chrono::TimeDelta::seconds(options.ttl_secs);
    match (options.user, options.fans) {
        (Some(user), _) => println!("{}", issuer.token(user, ttl)),
        (None, fans) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..fans.unwrap_or(1) {
                let user = Uuid::new_v4();
                writeln!(out, "{user} {}", issuer.token(user, ttl))?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

async fn topics() -> anyhow::Result<()> {
    let settings = ticket_runtime::config::Layers::new("")?
        .env(std::env::vars())?
        .build::<ticket_runtime::NoServiceSettings>()?;
    let kafka = ticket_runtime::Kafka::connect(&settings.kafka, "ticketctl-topics")?;
    kafka.ensure_topics().await?;
    let reader = inspect::Reader::connect(&inspect::KafkaOptions {
        brokers: settings.kafka.brokers.clone(),
        // The names below are already as on the cluster.
        topic_prefix: String::new(),
    })?;
    for topic in shared_events::Topic::ALL {
        let name = kafka.topic_name(topic);
        for name in [kafka.dead_letter_name(&name), name] {
            let partitions = reader.partitions(&name)?;
            let note = if partitions < settings.kafka.partitions {
                // Adding partitions would move keys, and with them the
                // order of sagas in flight: left to an operator.
                " (kept: fewer than asked; more instances than this stay idle)"
            } else {
                ""
            };
            println!("{name}: {partitions} partitions{note}");
        }
    }
    Ok(())
}

async fn data_platform(options: DataPlatformOptions) -> anyhow::Result<()> {
    let DataPlatformOptions {
        host,
        port,
        data_dir,
    } = options;
    std::fs::create_dir_all(&data_dir)?;
    let platform =
        data_platform_mock::DataPlatform::new(Some(data_dir.join("data-platform.jsonl")));
    let (server, addr) = platform.serve(&host, port)?;
    println!("data platform listening on http://{addr}");
    let handle = server.handle();
    let server = tokio::spawn(server);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    handle.stop(true).await;
    server.await??;
    Ok(())
}
