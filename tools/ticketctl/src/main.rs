//! `ticketctl`: the one command a newcomer needs.
//!
//! - `ticketctl up` starts the broker and the five services as separate
//!   processes, waits until each is ready, and stops them on Ctrl-C.
//! - `ticketctl serve SERVICE` runs one service in this process (what `up`
//!   starts, and what a container runs).
//! - `ticketctl data-platform` runs the stand-in data platform.
//! - `ticketctl keygen` prints a new pass-signing key pair.
//! - `ticketctl login USER-ID` prints a member token of the development
//!   issuer that `up` keeps in its data folder.
//! - `ticketctl events`, `saga`, `dlq` and `status` look at a running
//!   cluster through Kafka and the services' health endpoints (see
//!   docs/operations.md).
//!
//! `ticketctl help [COMMAND]` describes each; flags that name a broker or a
//! data folder also come from the environment (`KAFKA_BROKERS`,
//! `TICKETCTL_DATA_DIR`, `APP__KAFKA__TOPIC_PREFIX`, `<SERVICE>_URL`).

mod inspect;
mod up;

use clap::{Args, Parser, Subcommand};
use shared_events::Service;
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
    /// Run the stand-in data platform that records completed reservations.
    DataPlatform(DataPlatformOptions),
    /// Print a new pass-signing key pair and a development member-token
    /// issuer, as environment variables (for docker compose's .env).
    Keygen,
    /// Print a member token (`Authorization: Bearer ...`) for a user, signed
    /// by the development issuer that `up` keeps in its data folder.
    Login(LoginOptions),
    Events(inspect::events::EventsOptions),
    Saga(inspect::saga::SagaOptions),
    /// Dead letters: list them, replay them after a fix.
    #[command(subcommand)]
    Dlq(inspect::dlq::DlqCommand),
    Status(inspect::status::StatusOptions),
}

#[derive(Args)]
struct DataPlatformOptions {
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Where the received records are appended (data-platform.jsonl).
    #[arg(long, env = "TICKETCTL_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct LoginOptions {
    /// The fan's user id (a UUID): the token's subject.
    user: Uuid,
    /// The data folder of `ticketctl up`, whose issuer signs the token.
    #[arg(long, env = "TICKETCTL_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// The issuer's private key as `keygen` printed it (MEMBER_ISSUER_KEY),
    /// instead of a data folder's. A flag only: a key left in the
    /// environment must not silently outrank --data-dir.
    #[arg(long, conflicts_with = "data_dir")]
    issuer_key: Option<String>,
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
        Command::Keygen => {
            let (private, public) = ticket_runtime::pass::generate_key_pair();
            let issuer = ticket_runtime::member::DevIssuer::generate()?;
            println!("APP__QUEUE__PASS_SIGNING_KEY={private}");
            println!("APP__AUTH__PASS_PUBLIC_KEY={public}");
            // A development identity provider: its JWKS for the services, its
            // key for `ticketctl login --issuer-key`.
            println!("MEMBER_JWKS='{}'", issuer.jwks());
            println!("MEMBER_ISSUER_KEY={}", issuer.private_key_base64());
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
    let issuer = match &options.issuer_key {
        Some(key) => ticket_runtime::member::DevIssuer::from_base64(key)?,
        None if data_dir.join("member-issuer.key").exists() => up::dev_issuer(data_dir)?,
        None => anyhow::bail!(
            "{} has no member-token issuer yet: run `ticketctl up --data-dir {}` once",
            data_dir.display(),
            data_dir.display()
        ),
    };
    println!(
        "{}",
        issuer.token(options.user, chrono::TimeDelta::seconds(options.ttl_secs))
    );
    Ok(())
}

async fn data_platform(options: DataPlatformOptions) -> anyhow::Result<()> {
    let DataPlatformOptions { port, data_dir } = options;
    std::fs::create_dir_all(&data_dir)?;
    let platform =
        data_platform_mock::DataPlatform::new(Some(data_dir.join("data-platform.jsonl")));
    let (server, addr) = platform.serve(port)?;
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
