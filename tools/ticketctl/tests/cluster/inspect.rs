//! `ticketctl events`, `saga`, `dlq` and `status` run as a user runs them
//! (the built binary, against the cluster's real broker and services), and
//! the metrics behind them.

use crate::support::{Cluster, Knobs, WAIT};
use diesel::connection::SimpleConnection;
use serde_json::Value;
use shared_events::Service;
use ticket_runtime::dev::testkit::{self, eventually};
use ticket_runtime::DbError;

async fn ticketctl(cluster: &Cluster, args: &[&str]) -> (i32, String) {
    cluster.ticketctl(args).await
}

/// `ticketctl ARGS --json`, one value a line.
async fn json_lines(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.push("--json");
    let (_, out) = ticketctl(cluster, &args).await;
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The saga's JSON once `ready` accepts it.
async fn saga_when(
    cluster: &Cluster,
    id: &str,
    what: &str,
    extra: &[&str],
    ready: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || async {
        let mut args = vec!["saga", id];
        args.extend_from_slice(extra);
        let saga = json_lines(cluster, &args).await.pop()?;
        ready(&saga).then_some(saga)
    })
    .await
}

fn event_types(steps: &Value) -> Vec<String> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["event_type"].as_str().unwrap().to_string())
        .collect()
}

fn branch(saga: &Value, index: usize) -> (String, String) {
    let branch = &saga["branches"][index];
    (
        branch["outcome"].as_str().unwrap_or_default().to_string(),
        branch["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// The sum of a metric's samples whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(cluster: &Cluster, service: Service) -> String {
    let url = cluster.url(service, "/metrics");
    cluster
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A member-balance status line, from `ticketctl status --json`.
/// The metrics the compose Grafana dashboard charts.
fn charted_metrics() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana/dashboards/ticketing.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .flat_map(|target| {
            // PromQL words with an underscore: metrics, and this one function.
            target["expr"]
                .as_str()
                .unwrap()
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.contains('_') && *word != "histogram_quantile")
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn status(cluster: &Cluster, service: Service) -> (i32, Value) {
    let (code, out) = ticketctl(cluster, &["status", "--json"]).await;
    let line = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["service"] == service.as_str())
        .unwrap();
    (code, line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sagas_are_followed_and_judged_from_the_command_line() {
    let mut cluster = Cluster::sqlite(Knobs {
        hold_ttl_secs: 10,
        payment_deadline_secs: 5,
        ..Knobs::default()
    })
    .await;
    let payment_metrics_before = metrics(&cluster, Service::Payment).await;
    let (code, _) = ticketctl(&cluster, &["status"]).await;
    assert_eq!(code, 0, "all is well at first");

    // Completed.
    let (fan, _, hold) = cluster.funded_hold(500_000, 1).await;
    let reservation = hold["id"].as_str().unwrap().to_string();
    let (_, payment) = cluster.pay(&fan, &reservation, None).await;
    let payment_id = payment["id"].as_str().unwrap().to_string();
    assert_eq!(
        cluster.payment_outcome(&fan, &payment_id).await["status"],
        "COMPLETED"
    );
    let saga = saga_when(&cluster, &reservation, "a completed saga", &[], |s| {
        s["verdict"] == "completed"
    })
    .await;
    assert_eq!(
        event_types(&saga["steps"]),
        [
            "ReservationRequested",
            "SeatHeld",
            "ReservationHeld",
            "PaymentRequested",
            "BalanceDebited",
            "ReservationConfirmed",
            "SeatSold",
            "PaymentCompleted"
        ],
        "{saga}"
    );
    assert_eq!(saga["branches"], Value::Array(vec![]));
    // By the payment's id, the same saga.
    let by_payment = json_lines(&cluster, &["saga", &payment_id]).await;
    assert_eq!(by_payment[0]["reservation_id"], reservation.as_str());
    assert_eq!(by_payment[0]["verdict"], "completed");

    // The payment's correlation: exactly its events, each caused by the one before.
    let correlation = saga["steps"][3]["correlation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let events = eventually(WAIT, "the pass to end", || async {
        let events = json_lines(&cluster, &["events", "--correlation", &correlation]).await;
        (events.len() >= 6).then_some(events)
    })
    .await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "PaymentRequested",
            "BalanceDebited",
            "ReservationConfirmed",
            "SeatSold",
            "PaymentCompleted",
            "QueuePassEnded"
        ]
    );
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["event"]["causation_id"],
            pair[0]["event"]["event_id"]
        );
        assert_eq!(pair[1]["event"]["correlation_id"], correlation.as_str());
    }
    // --key reads the key's partition, where every saga event is.
    let keyed = json_lines(&cluster, &["events", "--key", &reservation]).await;
    assert_eq!(keyed.len(), 8, "the saga's eight events");
    let human = ticketctl(
        &cluster,
        &["events", "--key", &reservation, "--type", "SeatSold"],
    )
    .await;
    assert_eq!(human.1.lines().count(), 1, "{}", human.1);
    assert!(
        human.1.contains("SeatSold") && human.1.contains(&reservation),
        "{}",
        human.1
    );

    // Insufficient balance: the payment fails, the hold stays.
    let (poor, _, hold) = cluster.funded_hold(1, 2).await;
    let poor_reservation = hold["id"].as_str().unwrap().to_string();
    let (_, payment) = cluster.pay(&poor, &poor_reservation, None).await;
    let failed = cluster
        .payment_outcome(&poor, payment["id"].as_str().unwrap())
        .await;
    assert_eq!(failed["reason"], "INSUFFICIENT_BALANCE");
    let saga = saga_when(
        &cluster,
        &poor_reservation,
        "an insufficient balance",
        &[],
        |s| s["verdict"] == "compensated",
    )
    .await;
    assert_eq!(
        branch(&saga, 0),
        ("payment_failed".into(), "INSUFFICIENT_BALANCE".into()),
        "{saga}"
    );

    // Expired: the hold runs out, the seat is released.
    let (late, schedule, hold) = cluster.funded_hold(500_000, 3).await;
    let late_reservation = hold["id"].as_str().unwrap().to_string();
    cluster
        .reservation_reaches(&late, &late_reservation, "EXPIRED")
        .await;
    cluster.seat_becomes(&schedule, 3, "AVAILABLE").await;
    let saga = saga_when(&cluster, &late_reservation, "an expired hold", &[], |s| {
        s["verdict"] == "compensated" && event_types(&s["steps"]).contains(&"SeatReleased".into())
    })
    .await;
    assert_eq!(
        branch(&saga, 0),
        ("hold_expired".into(), String::new()),
        "{saga}"
    );

    // Timed out: member-balance is down, so the payment's deadline fails it.
    let (waiting, _, hold) = cluster.funded_hold(500_000, 4).await;
    let waiting_reservation = hold["id"].as_str().unwrap().to_string();
    cluster.kill(Service::MemberBalance).await;
    let (_, payment) = cluster.pay(&waiting, &waiting_reservation, None).await;
    let saga = saga_when(
        &cluster,
        &waiting_reservation,
        "a saga waiting for member-balance",
        &[],
        |s| s["waiting_for"] == "member-balance",
    )
    .await;
    assert_eq!(saga["verdict"], "in_flight", "{saga}");
    let stuck = saga_when(
        &cluster,
        &waiting_reservation,
        "a stuck saga",
        &["--stuck-after", "1s"],
        |s| s["verdict"] == "stuck",
    )
    .await;
    assert_eq!(stuck["waiting_for"], "member-balance", "{stuck}");

    // status: member-balance down, its lag growing.
    let (code, down) = status(&cluster, Service::MemberBalance).await;
    assert_eq!(code, 1, "a stopped service is a failure");
    assert_eq!(down["ready"], "down", "{down}");
    let lag_before = down["lag"].as_i64().unwrap();
    assert!(lag_before >= 1, "the payment request waits: {down}");
    let (other, schedule) = cluster.schedule().await;
    let extra = cluster.fan(&other).await;
    cluster.hold(&extra, &schedule, 5).await;
    let grown = eventually(WAIT, "the lag to grow", || async {
        let (_, line) = status(&cluster, Service::MemberBalance).await;
        (line["lag"].as_i64().unwrap() > lag_before).then_some(line)
    })
    .await;
    assert_eq!(grown["ready"], "down");
    let (_, reservation_line) = status(&cluster, Service::Reservation).await;
    assert_eq!(reservation_line["ready"], "ready", "{reservation_line}");
    assert_eq!(reservation_line["version"], env!("CARGO_PKG_VERSION"));

    let failed = cluster
        .payment_outcome(&waiting, payment["id"].as_str().unwrap())
        .await;
    assert_eq!(failed["reason"], "SAGA_TIMED_OUT");
    cluster.launch(Service::MemberBalance).await;
    let saga = saga_when(
        &cluster,
        &waiting_reservation,
        "a timed-out saga, compensated",
        &[],
        |s| s["verdict"] == "compensated",
    )
    .await;
    assert!(
        (0..3).any(|i| branch(&saga, i) == ("payment_failed".into(), "SAGA_TIMED_OUT".into())),
        "{saga}"
    );
    let (code, _) = ticketctl(&cluster, &["status"]).await;
    assert_eq!(code, 0, "all is well again once member-balance caught up");

    // The metrics moved with the sagas.
    let payment_metrics = metrics(&cluster, Service::Payment).await;
    let completed = &["outcome=\"completed\""];
    assert_eq!(
        metric(&payment_metrics, "saga_outcomes_total", completed)
            - metric(&payment_metrics_before, "saga_outcomes_total", completed),
        1.0
    );
    assert!(
        metric(
            &payment_metrics,
            "saga_outcomes_total",
            &["reason=\"SAGA_TIMED_OUT\""]
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &payment_metrics,
            "data_platform_deliveries_total",
            &["outcome=\"delivered\""]
        ),
        1.0
    );
    assert!(payment_metrics.contains("data_platform_backlog"));
    let reservation_metrics = metrics(&cluster, Service::Reservation).await;
    assert!(
        metric(
            &reservation_metrics,
            "saga_outcomes_total",
            &["outcome=\"hold_expired\""]
        ) >= 1.0
    );
    let mut exported = String::new();
    for service in Service::ALL {
        let text = metrics(&cluster, service).await;
        for name in [
            "outbox_pending",
            "outbox_oldest_pending_age_seconds",
            "kafka_consumer_lag",
            "http_request_duration_seconds_bucket",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{service} exports {name}"
            );
        }
        exported.push_str(&text);
    }
    // The compose Grafana dashboard charts only what the services export
    // (dead letters: in the dead-letter test).
    let charted = charted_metrics();
    assert!(charted.len() >= 8, "{charted:?}");
    for name in charted.iter().filter(|name| *name != "dead_letters_total") {
        assert!(
            exported.lines().any(|l| l.starts_with(name.as_str())),
            "the dashboard charts {name}, which no service exports"
        );
    }

    // Bytes that are not an event are shown raw and marked, and reading goes on.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", testkit::broker())
        .create()
        .unwrap();
    let topic = format!("{}concert.events", cluster.prefix);
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&topic)
                .key("garbage")
                .payload("\u{1}not json"),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let read = json_lines(&cluster, &["events", "--topic", "concert.events"]).await;
    let garbage: Vec<&Value> = read.iter().filter(|e| e["key"] == "garbage").collect();
    assert_eq!(garbage.len(), 1);
    assert!(garbage[0]["not_an_event"].is_string(), "{}", garbage[0]);
    assert!(read
        .iter()
        .any(|e| e["event"]["event_type"] == "SeatReleased"));
    let (_, lines) = ticketctl(&cluster, &["events", "--topic", "concert.events"]).await;
    assert!(lines.contains("[not an event"), "{lines}");
    cluster.stop().await;
}

/// A valid event whose handler keeps failing is dead-lettered; once the
/// cause is gone, `dlq replay` applies it exactly once, and a second replay
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_is_listed_and_replayed_once() {
    let cluster = Cluster::sqlite(Knobs::default()).await;
    let (fan, _, hold) = cluster.funded_hold(500_000, 9).await;
    let price = hold["price"].as_i64().unwrap();
    cluster.close_debits().await;
    let (_, payment) = cluster.pay(&fan, hold["id"].as_str().unwrap(), None).await;
    let payment_id = payment["id"].as_str().unwrap().to_string();

    let letter = eventually(WAIT, "the dead letter", || async {
        json_lines(&cluster, &["dlq", "list"]).await.pop()
    })
    .await;
    assert_eq!(letter["consumer"], "member-balance", "{letter}");
    assert_eq!(letter["origin_topic"], "payment.events");
    assert_eq!(letter["event_type"], "PaymentRequested");
    assert_eq!(letter["attempts"], "3");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("debits closed for maintenance"),
        "{letter}"
    );
    assert_eq!(letter["replayed_at"], Value::Null);
    let (_, listed) = ticketctl(&cluster, &["dlq", "list"]).await;
    assert!(listed.contains("1 dead letter(s)"), "{listed}");
    let dead = metrics(&cluster, Service::MemberBalance).await;
    assert_eq!(
        metric(
            &dead,
            "dead_letters_total",
            &["consumer=\"member-balance\""]
        ),
        1.0
    );
    assert!(
        charted_metrics().contains(&"dead_letters_total".to_string()),
        "the compose dashboard charts dead letters"
    );
    let (_, status) = status(&cluster, Service::MemberBalance).await;
    assert_eq!(status["dead_letters"], 1);
    assert_eq!(
        cluster.payment(&fan, &payment_id).await["status"],
        "PENDING",
        "nothing happened yet"
    );

    // The cause is gone; the letter goes back and is applied once.
    cluster.reopen_debits().await;
    let id = letter["id"].as_str().unwrap();
    let (_, replayed) = ticketctl(&cluster, &["dlq", "replay", "--letter", id]).await;
    assert!(replayed.contains("replayed"), "{replayed}");
    assert!(!replayed.contains("replayed before"), "{replayed}");
    let paid = cluster.payment_outcome(&fan, &payment_id).await;
    assert_eq!(paid["status"], "COMPLETED", "{paid}");
    assert_eq!(cluster.balance(&fan).await, 500_000 - price);
    assert_eq!(
        cluster.ledger_kinds(&fan).await,
        ["PAYMENT_DEBIT", "CHARGE"]
    );

    // Again: refused, and nothing is sent (a dry run sends nothing either).
    let marked = eventually(WAIT, "the replay to be seen", || async {
        let letter = json_lines(&cluster, &["dlq", "list"]).await.pop()?;
        letter["replayed_at"].is_string().then_some(letter)
    })
    .await;
    assert_eq!(marked["id"], id);
    let (_, dry) = ticketctl(&cluster, &["dlq", "replay", "--all", "--dry-run"]).await;
    assert!(dry.starts_with("refused: "), "{dry}");
    let (_, again) = ticketctl(&cluster, &["dlq", "replay", "--all"]).await;
    assert!(again.starts_with("refused: "), "{again}");
    assert!(again.contains("a letter goes back once"), "{again}");
    let replays = json_lines(&cluster, &["events", "--topic", "payment.events"])
        .await
        .into_iter()
        .filter(|record| record["headers"]["replay.of"] == id)
        .count();
    assert_eq!(replays, 1, "the letter went back once");
    assert_eq!(cluster.balance(&fan).await, 500_000 - price);
    assert_eq!(
        cluster.ledger_kinds(&fan).await,
        ["PAYMENT_DEBIT", "CHARGE"]
    );
    cluster.assert_invariants().await;
    cluster.stop().await;
}

/// `ticketctl audit` passes a sound cluster and names each invariant that a
/// tampered database breaks; the admin listings it reads need the admin
/// key and page as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_passes_a_sound_cluster_and_names_each_broken_invariant() {
    let cluster = Cluster::sqlite(Knobs::default()).await;
    let (buyer, _, hold) = cluster.funded_hold(500_000, 11).await;
    let reservation = hold["id"].as_str().unwrap().to_string();
    let (_, payment) = cluster.pay(&buyer, &reservation, None).await;
    let payment = payment["id"].as_str().unwrap().to_string();
    assert_eq!(
        cluster.payment_outcome(&buyer, &payment).await["status"],
        "COMPLETED"
    );
    let (poor, unpaid_schedule, unpaid) = cluster.funded_hold(1, 12).await;
    let (_, failed) = cluster
        .pay(&poor, unpaid["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(
        cluster
            .payment_outcome(&poor, failed["id"].as_str().unwrap())
            .await["status"],
        "FAILED"
    );
    let (code, out) = cluster.ticketctl(&["audit"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no violations"), "{out}");

    // The listings: the key is required, pages follow `next`.
    let listings = [
        (Service::Concert, "/v1/admin/seats"),
        (Service::Reservation, "/v1/admin/reservations"),
        (Service::Payment, "/v1/admin/payments"),
        (Service::MemberBalance, "/v1/admin/wallets"),
        (Service::MemberBalance, "/v1/admin/debits"),
    ];
    for (service, path) in listings {
        let url = cluster.url(service, path);
        for key in [None, Some("not-the-admin-key-at-all")] {
            let mut request = cluster.http.get(&url);
            if let Some(key) = key {
                request = request.header("x-admin-key", key);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{path} with {key:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "admin_key_invalid");
        }
        for (query, code) in [
            ("limit=0", Some("invalid_limit")),
            ("after=not-a-key", None),
        ] {
            let response = cluster
                .http
                .get(format!("{url}?{query}"))
                .header("x-admin-key", crate::support::ADMIN_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{path}?{query}");
            if let Some(code) = code {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], code, "{path}?{query}");
            }
        }
    }
    // Taken seats page by SCHEDULE_ID/SEAT_NO.
    let seats_url = cluster.url(Service::Concert, "/v1/admin/seats?limit=1");
    let first: Value = cluster
        .http
        .get(&seats_url)
        .header("x-admin-key", crate::support::ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = first["next"].as_str().unwrap().to_string();
    let second: Value = cluster
        .http
        .get(format!("{seats_url}&after={next}"))
        .header("x-admin-key", crate::support::ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["items"].as_array().unwrap().len(),
        1,
        "two taken seats"
    );
    assert_ne!(first["items"][0]["seat_no"], second["items"][0]["seat_no"]);
    let page = |after: Option<String>| {
        let mut url = cluster.url(Service::Reservation, "/v1/admin/reservations?limit=1");
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let request = cluster
            .http
            .get(url)
            .header("x-admin-key", crate::support::ADMIN_KEY);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let first = page(None).await;
    let second = page(first["next"].as_str().map(str::to_string)).await;
    let third = page(second["next"].as_str().map(str::to_string)).await;
    let mut ids: Vec<&str> = [&first, &second]
        .iter()
        .map(|p| p["items"][0]["id"].as_str().unwrap())
        .collect();
    assert_eq!(third["items"], Value::Array(Vec::new()), "two reservations");
    assert_eq!(third["next"], Value::Null);
    ids.sort_unstable();
    let mut expected = vec![reservation.as_str(), unpaid["id"].as_str().unwrap()];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // Tamper with three services' own data, as a bug would.
    let tamper = |service: Service, sql: String| {
        cluster
            .db(service)
            .run(move |conn| conn.batch_execute(&sql).map_err(DbError::from))
    };
    tamper(
        Service::MemberBalance,
        format!(
            "UPDATE wallets SET balance = balance + 1 WHERE user_id = '{}'",
            buyer.user
        ),
    )
    .await
    .unwrap();
    tamper(
        Service::Concert,
        format!(
            "UPDATE seats SET status = 'AVAILABLE', reservation_id = NULL, payment_id = NULL \
             WHERE reservation_id = '{reservation}'"
        ),
    )
    .await
    .unwrap();
    tamper(
        Service::MemberBalance,
        format!("UPDATE payment_debits SET refund_entry_id = debit_entry_id WHERE payment_id = '{payment}'"),
    )
    .await
    .unwrap();
    // A taken seat whose holder is gone: the listing still shows it.
    tamper(
        Service::Concert,
        format!(
            "UPDATE seats SET reservation_id = NULL WHERE reservation_id = '{}'",
            unpaid["id"].as_str().unwrap()
        ),
    )
    .await
    .unwrap();
    let report = cluster.audit().await;
    let mut found: Vec<(String, String)> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["invariant"].as_str().unwrap().to_string(),
                v["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![
        (
            "balance_is_ledger_sum".to_string(),
            format!("member {}", buyer.user),
        ),
        (
            "completed_payment_debited".to_string(),
            format!("payment {payment}"),
        ),
        (
            "completed_payment_sold_seat".to_string(),
            format!("payment {payment}"),
        ),
        (
            "reservation_owns_seat".to_string(),
            format!("reservation {reservation}"),
        ),
        (
            "reservation_owns_seat".to_string(),
            format!("reservation {}", unpaid["id"].as_str().unwrap()),
        ),
        (
            "seat_has_holder".to_string(),
            format!("seat {unpaid_schedule}/12"),
        ),
    ];
    expected.sort();
    assert_eq!(found, expected, "{report:#}");
    let (code, out) = cluster.ticketctl(&["audit"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("VIOLATION reservation_owns_seat"), "{out}");
    cluster.stop().await;
}
