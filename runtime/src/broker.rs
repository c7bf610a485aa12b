//! The embedded Kafka-protocol broker, `nisshi`: where to find it, how to
//! install it, and how to start it with its data in a folder.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const NISSHI_VERSION: &str = "0.8.1";

/// `NISSHI_BIN`, then `PATH`, then cargo's bin folder.
pub fn nisshi_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("NISSHI_BIN") {
        return Some(PathBuf::from(path));
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nisshi"))
            .find(|candidate| candidate.is_file())
    });
    from_path.or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let candidate = home.join("bin").join("nisshi");
        candidate.is_file().then_some(candidate)
    })
}

/// The command that installs the broker from crates.io (about 20 minutes on two cores).
pub fn install_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "install",
        "nisshi",
        "--version",
        NISSHI_VERSION,
        "--locked",
        "--ignore-rust-version",
    ]);
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
        // nisshi resolves sqlite:// paths against its working directory and
        // reads a `.env` there: the data folder has neither surprise.
        .current_dir(data_dir);
    command
}
