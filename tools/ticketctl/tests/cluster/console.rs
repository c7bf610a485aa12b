//! The saga console in a real browser: a cluster with a completed saga, a
//! compensated one, a poison message and a valid event that was
//! dead-lettered while its cause lasted; `ticketctl console` serving it;
//! headless Chromium driven by playwright-core (tools/console-test) doing
//! what an operator does. Then the cluster is checked from outside: the
//! redriven payment was applied once.

use crate::support::{Cluster, Knobs, ADMIN_KEY, WAIT};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use ticket_runtime::dev::testkit::{self, eventually};

/// The dead letters, as `ticketctl dlq list --json` gives them.
async fn letters(cluster: &Cluster) -> Vec<Value> {
    let (_, out) = cluster.ticketctl(&["dlq", "list", "--json"]).await;
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A free port for the console.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

struct Console(std::process::Child);

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_follows_sagas_and_redrives_a_dead_letter_in_a_browser() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let spec = root.join("tools/console-test/console.spec.mjs");
    assert!(
        root.join("tools/console-test/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run scripts/install-browser.sh (scripts/test.sh does)"
    );
    let cluster = Cluster::sqlite(Knobs::default()).await;

    // A saga that completes.
    let (buyer, _, hold) = cluster.funded_hold(500_000, 1).await;
    let completed = hold["id"].as_str().unwrap().to_string();
    let (_, payment) = cluster.pay(&buyer, &completed, None).await;
    let paid = cluster
        .payment_outcome(&buyer, payment["id"].as_str().unwrap())
        .await;
    assert_eq!(paid["status"], "COMPLETED", "{paid}");

    // One whose payment fails: the wallet holds too little.
    let (short, _, hold) = cluster.funded_hold(1, 2).await;
    let compensated = hold["id"].as_str().unwrap().to_string();
    let (_, payment) = cluster.pay(&short, &compensated, None).await;
    let failed = cluster
        .payment_outcome(&short, payment["id"].as_str().unwrap())
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");

    // A valid payment request dead-lettered while debits were closed.
    cluster.close_debits().await;
    let (fan, _, hold) = cluster.funded_hold(500_000, 3).await;
    let price = hold["price"].as_i64().unwrap();
    let valid_reservation = hold["id"].as_str().unwrap().to_string();
    let (_, payment) = cluster.pay(&fan, &valid_reservation, None).await;
    let valid_payment = payment["id"].as_str().unwrap().to_string();
    let valid_letter = eventually(WAIT, "the payment's dead letter", || async {
        letters(&cluster)
            .await
            .into_iter()
            .find(|l| l["event_type"] == "PaymentRequested")
    })
    .await;
    cluster.reopen_debits().await;

    // Bytes that are no event at all.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", testkit::broker())
        .create()
        .unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&format!("{}payment.events", cluster.prefix))
                .key("poison")
                .payload("\u{1}not json"),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let poison_letter = eventually(WAIT, "the poison's dead letter", || async {
        letters(&cluster)
            .await
            .into_iter()
            .find(|l| l["key"] == "poison")
    })
    .await;

    let port = free_port();
    let mut command = cluster.ticketctl_command(&["console", "--port", &port.to_string()]);
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let console = Console(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.starts_with("console: http://"), "{first}");

    // CONSOLE_SCREENSHOTS=$PWD/docs/console renews the documentation's pictures.
    let screenshots = std::env::var_os("CONSOLE_SCREENSHOTS")
        .map_or_else(|| testkit::temp_dir("console-screenshots"), Into::into);
    let browser = tokio::process::Command::new("node")
        .arg(&spec)
        .env("CONSOLE_URL", format!("http://127.0.0.1:{port}"))
        .env("CONSOLE_ADMIN_KEY", ADMIN_KEY)
        .env("COMPLETED_RESERVATION", &completed)
        .env("COMPENSATED_RESERVATION", &compensated)
        .env("POISON_LETTER", poison_letter["id"].as_str().unwrap())
        .env("VALID_LETTER", valid_letter["id"].as_str().unwrap())
        .env("VALID_RESERVATION", &valid_reservation)
        .env("SCREENSHOT_DIR", &screenshots)
        .output()
        .await
        .expect("node runs (scripts/install-browser.sh installs what the browser test needs)");
    println!("{}", String::from_utf8_lossy(&browser.stdout));
    assert!(
        browser.status.success(),
        "the browser test failed: {}",
        String::from_utf8_lossy(&browser.stderr)
    );
    for page in [
        "live",
        "saga",
        "saga-compensated",
        "stuck",
        "dead-letters",
        "health",
    ] {
        let shot = screenshots.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
            "{} was taken",
            shot.display()
        );
    }
    drop(console);

    // The redrive, seen from the services: applied once.
    let paid = cluster.payment_outcome(&fan, &valid_payment).await;
    assert_eq!(paid["status"], "COMPLETED", "{paid}");
    assert_eq!(cluster.balance(&fan).await, 500_000 - price);
    assert_eq!(
        cluster.ledger_kinds(&fan).await,
        ["PAYMENT_DEBIT", "CHARGE"]
    );
    cluster.assert_invariants().await;
    cluster.stop().await;
}
