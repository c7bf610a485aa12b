//! The member-balance service over HTTP, on SQLite and PostgreSQL, with the
//! real broker behind its outbox.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared_events::{Event, Topic};
use std::collections::HashSet;
use std::time::Duration;
use ticket_runtime::dev::issuer::DevIssuer;
use ticket_runtime::dev::testkit::{self, EventTap, TestService};
use uuid::Uuid;

struct Service {
    app: TestService,
    issuer: DevIssuer,
    _jwks: std::path::PathBuf,
}

/// The member whose wallet a path names: the caller the tests act as.
fn member_of(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix("/v1/members/")?;
    Uuid::parse_str(rest.split('/').next()?).ok()
}

async fn spawn(postgres: bool) -> Service {
    let mut isolated = testkit::isolated::<member_balance_service::BalanceSettings>(
        postgres,
        "balance",
        member_balance_service::DEFAULTS,
    );
    isolated.settings.database.pool_size = 8;
    let issuer = DevIssuer::generate().unwrap();
    let jwks = testkit::temp_dir("jwks").join("jwks.json");
    std::fs::write(&jwks, issuer.jwks().to_string()).unwrap();
    isolated.settings.service.member_auth = issuer.settings(&jwks.display().to_string());
    Service {
        app: isolated.start(member_balance_service::start).await,
        issuer,
        _jwks: jwks,
    }
}

impl Service {
    /// A request as the member whose wallet the path names (as some member
    /// when it names none, so that the path itself is judged).
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let user = member_of(path).unwrap_or(Uuid::nil());
        self.app
            .http
            .request(method, self.app.url(path))
            .bearer_auth(self.issuer.token(user, chrono::TimeDelta::minutes(5)))
    }

    async fn charge(&self, user: Uuid, amount: i64, key: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/members/{user}/charges"),
            )
            .json(&json!({ "amount": amount }));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    async fn ledger(&self, user: Uuid) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/members/{user}/ledger?limit=30&cursor={c}"),
                None => format!("/v1/members/{user}/ledger?limit=30"),
            };
            let page = self.get(&path).await;
            entries.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return entries,
            }
        }
    }
}

fn signed_sum(entries: &[Value]) -> i64 {
    entries
        .iter()
        .map(|e| {
            let amount = e["amount"].as_i64().unwrap();
            if e["kind"] == "PAYMENT_DEBIT" {
                -amount
            } else {
                amount
            }
        })
        .sum()
}

async fn concurrent_charges(postgres: bool) {
    let service = spawn(postgres).await;
    let user = Uuid::new_v4();
    let responses = join_all((0..100).map(|_| service.charge(user, 1_000, None))).await;
    for (status, body) in &responses {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    let balance = service.get(&format!("/v1/members/{user}/balance")).await;
    assert_eq!(balance["balance"], 100_000);
    let entries = service.ledger(user).await;
    assert_eq!(entries.len(), 100);
    assert_eq!(
        signed_sum(&entries),
        100_000,
        "balance equals the sum of the ledger"
    );
    let afters: HashSet<i64> = entries
        .iter()
        .map(|e| e["balance_after"].as_i64().unwrap())
        .collect();
    assert_eq!(
        afters,
        (1..=100).map(|n| n * 1_000).collect(),
        "each charge saw the one before"
    );
    let newest_first: Vec<i64> = entries
        .iter()
        .map(|e| e["balance_after"].as_i64().unwrap())
        .collect();
    assert!(newest_first.windows(2).all(|w| w[0] > w[1]), "newest first");
    service.app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_charges_sqlite() {
    concurrent_charges(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_charges_postgres() {
    concurrent_charges(true).await;
}

async fn one_key_one_charge(postgres: bool) {
    let service = spawn(postgres).await;
    let user = Uuid::new_v4();
    let responses = join_all((0..100).map(|_| service.charge(user, 1_000, Some("top-up-1")))).await;
    let entry_ids: HashSet<String> = responses
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            assert_eq!(body["balance"], 1_000, "every retry sees the first result");
            body["entry_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(entry_ids.len(), 1);
    assert_eq!(
        service.get(&format!("/v1/members/{user}/balance")).await["balance"],
        1_000
    );
    assert_eq!(service.ledger(user).await.len(), 1);

    let (status, body) = service.charge(user, 2_000, Some("top-up-1")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "idempotency_key_reused");
    let (status, _) = service.charge(user, 1_000, Some("top-up-2")).await;
    assert_eq!(status, StatusCode::CREATED, "another key is another charge");
    assert_eq!(
        service.get(&format!("/v1/members/{user}/balance")).await["balance"],
        2_000
    );
    service.app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_requests_with_one_idempotency_key_charge_once_sqlite() {
    one_key_one_charge(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_requests_with_one_idempotency_key_charge_once_postgres() {
    one_key_one_charge(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_has_zero_and_charges_are_published() {
    let service = spawn(false).await;
    let user = Uuid::new_v4();
    let balance = service.get(&format!("/v1/members/{user}/balance")).await;
    assert_eq!(balance, json!({ "user_id": user, "balance": 0 }));
    assert_eq!(
        service.get(&format!("/v1/members/{user}/ledger")).await["entries"],
        json!([])
    );

    let tap = EventTap::new(&service.app.prefix, Topic::BalanceEvents);
    let (_, receipt) = service.charge(user, 7_500, None).await;
    let event = tap
        .next_matching(
            Duration::from_secs(30),
            |e| matches!(&e.event, Event::BalanceCharged(c) if c.user_id == user),
        )
        .await;
    let Event::BalanceCharged(charged) = event.event else {
        unreachable!()
    };
    assert_eq!(charged.amount, 7_500);
    assert_eq!(charged.balance_after, 7_500);
    assert_eq!(
        charged.entry_id.to_string(),
        receipt["entry_id"].as_str().unwrap()
    );
    assert_eq!(event.partition_key, user.to_string());
    service.app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_and_a_code() {
    let service = spawn(false).await;
    let user = Uuid::new_v4();
    let charges = format!("/v1/members/{user}/charges");
    struct Case {
        name: &'static str,
        method: &'static str,
        path: String,
        body: Option<&'static str>,
        header: Option<(&'static str, String)>,
        status: u16,
        code: &'static str,
    }
    let case = |name, method, path: &str, body, header, status, code| Case {
        name,
        method,
        path: path.to_string(),
        body,
        header,
        status,
        code,
    };
    let cases = vec![
        case(
            "malformed json",
            "POST",
            &charges,
            Some("{\"amount\": "),
            None,
            400,
            "malformed_json",
        ),
        case(
            "not an object",
            "POST",
            &charges,
            Some("\"ten\""),
            None,
            422,
            "invalid_body",
        ),
        case(
            "amount is a string",
            "POST",
            &charges,
            Some(r#"{"amount":"ten"}"#),
            None,
            422,
            "invalid_body",
        ),
        case(
            "amount is a fraction",
            "POST",
            &charges,
            Some(r#"{"amount":1.5}"#),
            None,
            422,
            "invalid_body",
        ),
        case(
            "amount missing",
            "POST",
            &charges,
            Some("{}"),
            None,
            422,
            "invalid_body",
        ),
        case(
            "amount zero",
            "POST",
            &charges,
            Some(r#"{"amount":0}"#),
            None,
            422,
            "invalid_amount",
        ),
        case(
            "amount negative",
            "POST",
            &charges,
            Some(r#"{"amount":-5}"#),
            None,
            422,
            "invalid_amount",
        ),
        case(
            "amount over the limit",
            "POST",
            &charges,
            Some(r#"{"amount":10000001}"#),
            None,
            422,
            "invalid_amount",
        ),
        case(
            "amount beyond i64",
            "POST",
            &charges,
            Some(r#"{"amount":100000000000000000000}"#),
            None,
            422,
            "invalid_body",
        ),
        case(
            "no content type",
            "POST",
            &charges,
            None,
            None,
            415,
            "unsupported_media_type",
        ),
        case(
            "invalid user id",
            "POST",
            "/v1/members/not-a-uuid/charges",
            Some(r#"{"amount":1}"#),
            None,
            400,
            "invalid_path",
        ),
        case(
            "empty idempotency key",
            "POST",
            &charges,
            Some(r#"{"amount":1}"#),
            Some(("Idempotency-Key", String::new())),
            400,
            "invalid_idempotency_key",
        ),
        case(
            "long idempotency key",
            "POST",
            &charges,
            Some(r#"{"amount":1}"#),
            Some(("Idempotency-Key", "k".repeat(129))),
            400,
            "invalid_idempotency_key",
        ),
        case(
            "balance of invalid id",
            "GET",
            "/v1/members/123/balance",
            None,
            None,
            400,
            "invalid_path",
        ),
        case(
            "ledger limit zero",
            "GET",
            &format!("/v1/members/{user}/ledger?limit=0"),
            None,
            None,
            400,
            "invalid_limit",
        ),
        case(
            "ledger limit huge",
            "GET",
            &format!("/v1/members/{user}/ledger?limit=100000"),
            None,
            None,
            400,
            "invalid_limit",
        ),
        case(
            "ledger limit not a number",
            "GET",
            &format!("/v1/members/{user}/ledger?limit=x"),
            None,
            None,
            400,
            "invalid_query",
        ),
        case(
            "ledger cursor garbage",
            "GET",
            &format!("/v1/members/{user}/ledger?cursor=abc"),
            None,
            None,
            400,
            "invalid_cursor",
        ),
        case(
            "unknown route",
            "GET",
            "/v1/members",
            None,
            None,
            404,
            "route_not_found",
        ),
    ];
    for case in cases {
        let mut request = match case.method {
            "POST" => service.request(reqwest::Method::POST, &case.path),
            _ => service.request(reqwest::Method::GET, &case.path),
        };
        if let Some(body) = case.body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some((name, value)) = case.header {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", case.name));
        assert_eq!(
            (status, body["code"].as_str().unwrap_or_default()),
            (case.status, case.code),
            "{}: {body}",
            case.name
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: no message",
            case.name
        );
    }
    assert_eq!(
        service.get(&format!("/v1/members/{user}/balance")).await["balance"],
        0,
        "nothing was charged"
    );
    let oversized = format!(r#"{{"amount":1,"pad":"{}"}}"#, "x".repeat(70_000));
    let response = service
        .request(reqwest::Method::POST, &charges)
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    service.app.running.stop().await;
}

/// A member acts on their own wallet only; credentials are checked before
/// anything else, and each bad one is told apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_member_in_the_token_reaches_the_wallet() {
    let service = spawn(false).await;
    let (fan, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        service.charge(fan, 1_000, None).await.0,
        StatusCode::CREATED
    );
    let stranger = DevIssuer::generate().unwrap();
    let mut wrong_issuer = DevIssuer::from_base64(&service.issuer.private_key_base64()).unwrap();
    wrong_issuer.issuer = "someone-else".into();
    let mut wrong_audience = DevIssuer::from_base64(&service.issuer.private_key_base64()).unwrap();
    wrong_audience.audience = "another-app".into();
    let minutes = chrono::TimeDelta::minutes(5);
    let genuine = service.issuer.token(fan, minutes);
    let unsigned = {
        use base64::Engine;
        let claims = genuine.split('.').nth(1).unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        format!("{header}.{claims}.")
    };
    let credentials: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "member_token_missing"),
        (
            "forged",
            Some(stranger.token(fan, minutes)),
            401,
            "member_token_forged",
        ),
        (
            "expired",
            Some(service.issuer.token(fan, chrono::TimeDelta::seconds(-60))),
            401,
            "member_token_expired",
        ),
        (
            "wrong issuer",
            Some(wrong_issuer.token(fan, minutes)),
            401,
            "member_token_wrong_issuer",
        ),
        (
            "wrong audience",
            Some(wrong_audience.token(fan, minutes)),
            401,
            "member_token_wrong_audience",
        ),
        ("alg none", Some(unsigned), 401, "member_token_malformed"),
        (
            "another member's token",
            Some(service.issuer.token(other, minutes)),
            403,
            "forbidden",
        ),
    ];
    let paths = [
        ("GET", format!("/v1/members/{fan}/balance")),
        ("GET", format!("/v1/members/{fan}/ledger")),
        ("POST", format!("/v1/members/{fan}/charges")),
    ];
    for (name, token, status, code) in &credentials {
        for (method, path) in &paths {
            let mut request = match *method {
                "POST" => service
                    .app
                    .http
                    .post(service.app.url(path))
                    .json(&json!({ "amount": 5 })),
                _ => service.app.http.get(service.app.url(path)),
            };
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let got = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                (got, body["code"].as_str().unwrap()),
                (*status, *code),
                "{name}: {method} {path}"
            );
        }
    }
    let balance = service.get(&format!("/v1/members/{fan}/balance")).await;
    assert_eq!(balance["balance"], 1_000, "nobody else charged or read it");
    service.app.running.stop().await;
}

/// Defect: the admin wallet listing (`ticketctl audit`) loaded every ledger
/// row of its page of wallets (up to 1,000, however long their ledgers)
/// into the service to add them up. Now the database adds them up: the
/// ledger is read only through `GROUP BY`, and the sums are the ledgers'
/// (charges and refunds in, debits out; nothing for a wallet with none).
async fn wallet_listing_sums_in_the_database(postgres: bool) {
    use member_balance_service::domain::EntryKind;
    use member_balance_service::store;
    use std::sync::{Arc, Mutex};
    use ticket_runtime::ids::UserId;
    testkit::init_tracing();
    let database = testkit::TestDatabase::on(postgres, "wallets");
    let db = database.connect(member_balance_service::SCHEMA).await;
    let (long, short, empty) = (
        UserId::from(Uuid::from_u128(1)),
        UserId::from(Uuid::from_u128(2)),
        UserId::from(Uuid::from_u128(3)),
    );
    let statements = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = statements.clone();
    let page = db
        .run(move |conn| {
            let now = chrono::Utc::now();
            let max = i64::MAX;
            for n in 0..150 {
                store::apply(conn, long, EntryKind::Charge, 1_000, None, max, now)?;
                let payment = format!("p{n}");
                store::apply(
                    conn,
                    long,
                    EntryKind::PaymentDebit,
                    -400,
                    Some(&payment),
                    max,
                    now,
                )?;
                if n % 3 == 0 {
                    store::apply(conn, long, EntryKind::Refund, 400, Some(&payment), max, now)?;
                }
            }
            store::apply(conn, short, EntryKind::Charge, 700, None, max, now)?;
            store::apply(
                conn,
                short,
                EntryKind::PaymentDebit,
                -200,
                Some("q"),
                max,
                now,
            )?;
            // A wallet is made with its first entry; one without any (from
            // a failed apply) still lists, with nothing to add up.
            store::apply(
                conn,
                empty,
                EntryKind::PaymentDebit,
                -1,
                Some("r"),
                max,
                now,
            )?;
            use diesel::Connection;
            conn.set_instrumentation(move |event: diesel::connection::InstrumentationEvent<'_>| {
                if let diesel::connection::InstrumentationEvent::StartQuery { query, .. } = event {
                    seen.lock().unwrap().push(query.to_string());
                }
            });
            let page = store::wallet_page(conn, None, 1_000);
            conn.set_instrumentation(None::<Box<dyn diesel::connection::Instrumentation>>);
            page.map_err(ticket_runtime::DbError::from)
        })
        .await
        .unwrap();
    let listed: Vec<(UserId, i64, i64)> = page
        .iter()
        .map(|w| (w.user_id, w.balance, w.ledger_total))
        .collect();
    assert_eq!(
        listed,
        vec![
            (long, 150 * 600 + 50 * 400, 150 * 600 + 50 * 400),
            (short, 500, 500),
            (empty, 0, 0),
        ]
    );
    let statements = statements.lock().unwrap();
    let ledger_reads: Vec<&String> = statements
        .iter()
        .filter(|s| s.contains("ledger_entries"))
        .collect();
    assert!(!ledger_reads.is_empty(), "{statements:?}");
    for read in ledger_reads {
        assert!(
            read.to_ascii_uppercase().contains("GROUP BY"),
            "the ledger is summed by the database: {read}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_listing_sums_ledgers_in_the_database_sqlite() {
    wallet_listing_sums_in_the_database(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_listing_sums_ledgers_in_the_database_postgres() {
    wallet_listing_sums_in_the_database(true).await;
}
