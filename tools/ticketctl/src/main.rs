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

mod up;

use shared_events::Service;

const USAGE: &str = "\
usage:
  ticketctl up [--data-dir DIR] [--database postgres://...] [--kafka HOST:PORT]
               [--port-base N] [--broker-port N] [--no-demo-data]
  ticketctl serve <concert|queue|reservation|member-balance|payment>
  ticketctl data-platform [--port N] [--data-dir DIR]
  ticketctl keygen
  ticketctl login <user-id> [--data-dir DIR | --issuer-key KEY] [--ttl-secs N]

up: starts a broker (nisshi, installed on first use) and the five services on
127.0.0.1: concert 8081, queue 8082, reservation 8083, member-balance 8084,
payment 8085, data platform 8090, broker 9092. Data lives in DIR (default ./data) and survives a
restart. --database gives every service its own database on that PostgreSQL
server (postgres://host/NAME makes NAME_concert, ...; default ticketing_*);
--kafka uses that broker instead of starting one. A process that dies is
started again with backoff. The first up makes the data folder's secrets: pass
keys, an admin key (printed once, kept in DIR/admin-key) and a development
issuer of member tokens, whose public key every service trusts.

login: prints a member token (Authorization: Bearer ...) for USER-ID, signed by
the development issuer of DIR (default ./data; run up once first), or the one
whose private key `keygen` printed as MEMBER_ISSUER_KEY, valid for --ttl-secs
(default 3600).";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("up") => runtime.block_on(up::up(up::UpOptions::parse(&args[1..])?)),
        Some("serve") => {
            let name = args.get(1).map(String::as_str).unwrap_or_default();
            let service = Service::parse(name)
                .ok_or_else(|| anyhow::anyhow!("unknown service {name:?}\n{USAGE}"))?;
            runtime.block_on(serve(service))
        }
        Some("data-platform") => runtime.block_on(data_platform(&args[1..])),
        Some("keygen") => {
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
        Some("login") => login(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
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

fn login(args: &[String]) -> anyhow::Result<()> {
    let mut user = None;
    let mut data_dir = std::path::PathBuf::from("data");
    let mut issuer_key = None;
    let mut ttl_secs = 3600;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--data-dir" => data_dir = value()?.into(),
            "--issuer-key" => issuer_key = Some(value()?.clone()),
            "--ttl-secs" => ttl_secs = value()?.parse()?,
            id if user.is_none() => {
                user = Some(
                    uuid::Uuid::parse_str(id)
                        .map_err(|_| anyhow::anyhow!("{id:?} is not a user id (a UUID)"))?,
                )
            }
            other => anyhow::bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    let user = user.ok_or_else(|| anyhow::anyhow!("login needs a user id\n{USAGE}"))?;
    let issuer = match issuer_key {
        Some(key) => ticket_runtime::member::DevIssuer::from_base64(&key)?,
        None if data_dir.join("member-issuer.key").exists() => up::dev_issuer(&data_dir)?,
        None => anyhow::bail!(
            "{} has no member-token issuer yet: run `ticketctl up --data-dir {}` once",
            data_dir.display(),
            data_dir.display()
        ),
    };
    println!(
        "{}",
        issuer.token(user, chrono::TimeDelta::seconds(ttl_secs))
    );
    Ok(())
}

async fn data_platform(args: &[String]) -> anyhow::Result<()> {
    let mut port = 8090;
    let mut data_dir = std::path::PathBuf::from("data");
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value.parse()?,
            "--data-dir" => data_dir = value.into(),
            other => anyhow::bail!("unknown option {other:?}"),
        }
    }
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
