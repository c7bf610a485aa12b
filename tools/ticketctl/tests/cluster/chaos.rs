//! A bounded `ticketctl chaos` (a minute of faults) on SQLite and on
//! PostgreSQL: processes killed and paused during a ticket opening, then
//! nothing lost or doubled, and a replay of every topic that changes
//! nothing. Correctness only: the run's timings are printed, never asserted.

use serde_json::Value;
use std::process::Command;

use crate::up::free_ports;

/// Runs a one-minute chaos run and returns its JSON report after checking
/// what every run must show.
fn chaos(seed: &str, extra: &[&str]) -> Value {
    let data_dir = std::env::temp_dir().join(format!(
        "ticketctl-chaos-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let report = data_dir.with_extension("json");
    let (base, broker) = free_ports();
    let output = Command::new(env!("CARGO_BIN_EXE_ticketctl"))
        .args([
            "chaos",
            "--seed",
            seed,
            "--duration",
            "60s",
            "--fault-every",
            "4s",
        ])
        .args(["--rate", "4", "--settle-timeout", "240s"])
        .args([
            "--port-base",
            &base.to_string(),
            "--broker-port",
            &broker.to_string(),
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--json")
        .arg(&report)
        .args(extra)
        .output()
        .expect("ticketctl chaos runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{printed}");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {printed}")),
    )
    .unwrap();
    assert!(output.status.success(), "{printed}");
    assert_eq!(report["violations"], Value::Array(Vec::new()), "{report:#}");
    assert_eq!(report["interrupted"], false);

    // Faults of every kind this seed draws, on several processes.
    let kinds = &report["faults"]["by_kind"];
    assert!(kinds["kill"].as_u64().unwrap() >= 5, "{report:#}");
    assert!(kinds["pause"].as_u64().unwrap_or(0) >= 1, "{report:#}");
    let targets: std::collections::BTreeSet<&str> = report["faults"]["by_target"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "kill")
        .map(|f| f["target"].as_str().unwrap())
        .collect();
    assert!(
        targets.len() >= 5,
        "kills reach most processes: {targets:?}"
    );

    // Sagas ran through the faults, and fans' answers were checked.
    assert!(
        report["sagas"]["payments"]["COMPLETED"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report:#}"
    );
    assert!(report["fans_checked"].as_u64().unwrap() > 0, "{report:#}");
    assert!(
        !report["sagas"]["payments"]
            .as_object()
            .unwrap()
            .contains_key("PENDING"),
        "{report:#}"
    );

    // The replay read every topic again and left the state as it was.
    let replay = &report["replay"];
    assert!(replay["events_replayed"].as_i64().unwrap() > 0, "{replay}");
    assert_eq!(replay["unchanged"], true, "{replay}");
    assert_eq!(replay["digest_before"], replay["digest_after"]);
    assert!(
        replay["items"]["payments"].as_u64().unwrap() > 0,
        "{replay}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    report
}

#[test]
fn a_minute_of_chaos_on_sqlite_loses_and_doubles_nothing() {
    chaos("11", &[]);
}

#[test]
fn a_minute_of_chaos_on_postgres_loses_and_doubles_nothing() {
    let admin = ticket_runtime::dev::testkit::postgres_admin_url();
    let server = admin.rsplit_once('/').unwrap().0.to_string();
    let name = format!(
        "chaostest_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let report = chaos("13", &["--database", &format!("{server}/{name}")]);
    assert_eq!(report["database"], "postgresql");
    let terminated = report["faults"]["by_kind"]["terminate_connections"].as_u64();
    assert!(terminated.unwrap_or(0) >= 1, "{report:#}");
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut admin = diesel::PgConnection::establish(&admin).unwrap();
    for service in [
        "concert",
        "queue",
        "reservation",
        "member_balance",
        "payment",
    ] {
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{name}_{service}\" WITH (FORCE)"
            ))
            .unwrap();
    }
}
