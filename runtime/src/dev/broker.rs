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
    if let Some(given) = given_binary() {
        return Some(given);
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(BINARY))
            .find(|candidate| candidate.is_file())
    });
    from_path.or_else(|| installed_binary().filter(|candidate| candidate.is_file()))
}

/// The broker `TICKET_BROKER_BIN` names, if it does.
pub fn given_binary() -> Option<PathBuf> {
    std::env::var_os(BROKER_BIN_ENV).map(PathBuf::from)
}

/// Where [`install_command`] installs the broker: cargo's bin folder.
pub fn installed_binary() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin").join(BINARY))
}

/// The script that installs the broker from this checkout.
pub fn install_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-broker.sh")
}

/// The command that installs the broker from this checkout when it is
/// missing or its sources changed, and does nothing otherwise: the rule
/// `scripts/setup.sh` follows too, so the broker is built once whichever
/// runs first (about 20 minutes on two cores the first time).
pub fn install_command() -> Command {
    let mut command = Command::new("bash");
    command.arg(install_script());
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A cargo that records its arguments and installs an empty broker in
    /// `--root`, so that the install rule runs without building nisshi.
    const FAKE_CARGO: &str = r#"#!/usr/bin/env bash
set -eu
echo "$*" >>"$CARGO_HOME/cargo-calls"
while [ "$1" != --root ]; do shift; done
mkdir -p "$2/bin"
printf '#!/bin/sh\n' >"$2/bin/ticket-broker"
chmod +x "$2/bin/ticket-broker"
"#;

    fn install(cargo_home: &Path) -> Vec<String> {
        let status = install_command()
            .env("CARGO", cargo_home.join("fake-cargo"))
            .env("CARGO_HOME", cargo_home)
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(cargo_home.join("cargo-calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_install_rule_builds_once_and_again_when_the_sources_change() {
        use std::os::unix::fs::PermissionsExt as _;
        let cargo_home =
            std::env::temp_dir().join(format!("install-broker-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&cargo_home).unwrap();
        let fake_cargo = cargo_home.join("fake-cargo");
        std::fs::write(&fake_cargo, FAKE_CARGO).unwrap();
        std::fs::set_permissions(&fake_cargo, std::fs::Permissions::from_mode(0o755)).unwrap();

        let calls = install(&cargo_home);
        assert_eq!(calls.len(), 1, "built: {calls:?}");
        let checkout = install_script()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap();
        assert_eq!(
            calls[0],
            format!(
                "install --path tools/broker --locked --ignore-rust-version --force --root {} --target-dir {}",
                cargo_home.display(),
                checkout.join("target").display()
            ),
            "into cargo's bin folder, built in the services' target folder"
        );
        assert!(cargo_home.join("bin/ticket-broker").is_file());
        assert_eq!(install(&cargo_home).len(), 1, "a second run builds nothing");

        // Installed from other sources: built again.
        std::fs::write(cargo_home.join("ticket-broker.sources"), "other sources\n").unwrap();
        assert_eq!(install(&cargo_home).len(), 2);
        assert_eq!(install(&cargo_home).len(), 2);
        // Removed: built again.
        std::fs::remove_file(cargo_home.join("bin/ticket-broker")).unwrap();
        assert_eq!(install(&cargo_home).len(), 3);

        std::fs::remove_dir_all(&cargo_home).unwrap();
    }
}
