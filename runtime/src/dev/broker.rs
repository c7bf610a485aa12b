//! The embedded Kafka-protocol broker, `ticket-broker` (tools/broker: nisshi
//! 0.8.1's broker and SQLite engine with a storage layer of ours that wakes a
//! waiting fetch when a produce lands): where to find it, how to install it,
//! and how to start it with its data in a folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Names another Kafka-protocol broker binary to start instead, one that takes
/// the same options (`nisshi` itself, to compare).
pub const BROKER_BIN_ENV: &str = "TICKET_BROKER_BIN";

const BINARY: &str = "ticket-broker";

/// `TICKET_BROKER_BIN`, then `PATH`, then cargo's bin folder.
pub fn broker_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var(BROKER_BIN_ENV) {
        return Some(PathBuf::from(path));
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(BINARY))
            .find(|candidate| candidate.is_file())
    });
    from_path.or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let candidate = home.join("bin").join(BINARY);
        candidate.is_file().then_some(candidate)
    })
}

/// Where the broker's sources are in this checkout.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/broker")
}

/// The command that builds and installs the broker from this checkout
/// (about 20 minutes on two cores; `scripts/setup.sh` does it too, and again
/// when its sources change).
pub fn install_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("install")
        .arg("--path")
        .arg(source_dir())
        .args(["--locked", "--ignore-rust-version"]);
    command
}

/// A broker on 127.0.0.1:`port` that keeps topics, offsets and messages in
/// `data_dir/broker.db`, so they survive a restart.
pub fn broker_command(binary: &Path, port: u16, data_dir: &Path) -> Command {
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(binary);
    command
        .args(["--kafka-listener-url", &listener])
        .args(["--kafka-advertised-listener-url", &listener])
        .args(["--storage-engine", "sqlite://broker.db"])
        // sqlite:// paths are resolved against the working directory, and
        // nisshi reads a `.env` there: the data folder has neither surprise.
        .current_dir(data_dir);
    command
}
