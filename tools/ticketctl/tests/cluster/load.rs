//! A short `ticketctl load` (seconds) against a test cluster: every fan's
//! way ends in a defined outcome and the audit after it is clean. Timings
//! are printed, never asserted: they belong to docs/benchmarks.md.

use serde_json::Value;
use shared_events::Service;

use crate::support::{Cluster, Knobs};
use ticket_runtime::dev::testkit;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_ticket_opening_ends_with_a_clean_audit() {
    // Holds lapse within the run, so the abandoned ones expire and are
    // compensated before the audit looks.
    let cluster = Cluster::sqlite(Knobs {
        hold_ttl_secs: 5,
        release_grace_secs: 2,
        ..Knobs::default()
    })
    .await;
    let fans = 40;
    let json = testkit::temp_dir("load").join("summary.json");
    let (code, out) = cluster
        .ticketctl(&[
            "load",
            "--fans",
            &fans.to_string(),
            "--concurrency",
            "20",
            "--abandon",
            "0.2",
            "--short",
            "0.25",
            "--hot-share",
            "0.5",
            "--json",
            json.to_str().unwrap(),
        ])
        .await;
    println!("{out}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["audit"]["violations"], Value::Array(Vec::new()));
    assert_eq!(summary["audit"]["settled"], true, "{summary:#}");

    let outcomes = &summary["outcomes"];
    let count = |name: &str| outcomes[name].as_u64().unwrap_or(0);
    let ended: u64 = outcomes
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(ended, fans, "every fan's way ends once: {outcomes}");
    assert_eq!(count("error") + count("stopped"), 0, "{summary:#}");
    assert!(
        count("completed") > 0 && count("abandoned") > 0,
        "{outcomes}"
    );
    let steps = &summary["steps"];
    assert_eq!(steps["saga"]["count"].as_u64(), Some(count("completed")));
    assert!(
        steps["pay"]["refused"]["INSUFFICIENT_BALANCE"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "short fans were refused, then topped up: {steps:#}"
    );
    // The audit saw every fan's reservation and every payment.
    assert!(summary["audit"]["reservations"].as_u64().unwrap() >= fans - count("no_seat"));
    cluster.stop().await;
}

/// `--holds-only --rate`: every fan is admitted before the run, then the
/// holds arrive at the rate (open loop), each fan holding a seat of their
/// own and giving it back; the admissions are not part of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_alone_arrive_at_the_rate_asked_and_are_all_given_back() {
    let cluster = Cluster::sqlite(Knobs::default()).await;
    let (fans, rate) = (60u64, 30.0);
    let json = testkit::temp_dir("load-holds").join("summary.json");
    let (code, out) = cluster
        .ticketctl(&[
            "load",
            "--holds-only",
            "--fans",
            &fans.to_string(),
            "--rate",
            &rate.to_string(),
            "--floor-samples",
            "0",
            "--json",
            json.to_str().unwrap(),
        ])
        .await;
    println!("{out}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["audit"]["violations"], Value::Array(Vec::new()));
    assert_eq!(summary["audit"]["settled"], true, "{summary:#}");
    assert_eq!(summary["options"]["holds_only"], true);

    // Every fan held their own seat (no one was refused) and gave it back.
    assert_eq!(
        summary["outcomes"]["held"].as_u64(),
        Some(fans),
        "{summary:#}"
    );
    let steps = &summary["steps"];
    assert_eq!(steps["hold"]["count"].as_u64(), Some(fans), "{steps:#}");
    assert_eq!(steps["hold"]["errors"], serde_json::json!({}), "{steps:#}");
    assert_eq!(steps["hold"]["refused"], serde_json::json!({}), "{steps:#}");
    // The run is the holds alone: the admissions came before it.
    for untimed in ["join", "admit", "seat_map", "charge", "pay", "saga"] {
        assert_eq!(
            steps[untimed]["count"].as_u64(),
            Some(0),
            "{untimed}: {steps:#}"
        );
    }
    // Open loop: the last fan was due (fans - 1) / rate after the first,
    // however fast the cluster answered.
    let least = (fans - 1) as f64 / rate;
    let elapsed = summary["elapsed_secs"].as_f64().unwrap();
    assert!(
        elapsed >= least,
        "{elapsed} s < {least} s: the arrivals were not paced"
    );
    // Every seat is free again (the audit waited for the releases).
    let taken: Value = cluster
        .http
        .get(cluster.url(Service::Concert, "/v1/admin/seats"))
        .header("x-admin-key", crate::support::ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(taken["items"], Value::Array(Vec::new()), "{taken:#}");
    cluster.stop().await;
}
