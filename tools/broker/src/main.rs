//! `ticket-broker`: the Kafka-protocol broker `ticketctl up` and the tests
//! start. It is nisshi 0.8.1 (protocol, group coordinator, SQLite engine, all
//! used as libraries) with one layer of ours between the broker and its
//! storage, [`waking::WakingStorage`], that answers "nothing new" from memory
//! and wakes a waiting fetch when a produce lands. The command line takes the
//! options of `nisshi broker` that the cluster uses, so either binary can be
//! started the same way.

mod waking;

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use nisshi_broker::{
    NODE_ID,
    broker::Broker,
    coordinator::group::administrator::{Controller, GroupCoordinatorConfig},
};
use nisshi_storage::StorageContainer;
use tokio::time::Instant;
use tracing::error;
use tracing_subscriber::EnvFilter;
use url::Url;
use uuid::Uuid;

use crate::waking::WakingStorage;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Options {
    /// Where the broker listens, e.g. tcp://127.0.0.1:9092.
    #[arg(long = "kafka-listener-url")]
    listener: Url,

    /// The address clients are told to connect to.
    #[arg(long = "kafka-advertised-listener-url")]
    advertised_listener: Url,

    /// The SQLite file the log, groups and offsets are kept in; a relative
    /// path is resolved against the working directory.
    #[arg(long = "storage-engine", default_value = "sqlite://broker.db")]
    storage: Url,

    /// nisshi's default, so a data folder written by `nisshi broker` opens as it was.
    #[arg(long, env = "CLUSTER_ID", default_value = "nisshi_cluster")]
    cluster_id: String,
}

fn main() -> ExitCode {
    let options = Options::parse();
    // Its own variable rather than RUST_LOG: `RUST_LOG=debug ticketctl up`
    // is for the services; the broker at debug writes gigabytes a minute.
    // The SQLite engine logs an error for every topic that already exists,
    // which every service start asks for: the client gets the answer, the
    // log does not need it.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TICKET_BROKER_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,nisshi_storage_sql::lite=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(%err, "could not start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(%err, "the broker stopped");
            eprintln!("ticket-broker: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options) -> Result<(), nisshi_broker::Error> {
    let started = Instant::now();
    let engine = {
        let mut builder = StorageContainer::builder();
        builder.with_factory(Arc::new(nisshi_storage_sql::LiteEngineFactory));
        builder
            .cluster_id(options.cluster_id.clone())
            .node_id(NODE_ID)
            .advertised_listener(options.advertised_listener.clone())
            .storage(options.storage)
            .silent(true)
            .build()
            .await?
    };
    let storage = Arc::new(WakingStorage::new(engine));
    let groups = Controller::new(storage.clone(), GroupCoordinatorConfig::default());
    Broker::new(
        NODE_ID,
        &options.cluster_id,
        options.listener,
        options.advertised_listener,
        storage,
        groups,
        Uuid::now_v7(),
    )
    .main(started)
    .await
    .map(|_| ())
}
