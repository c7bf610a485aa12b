//! `ticketctl up` as a newcomer runs it: broker and five services as
//! separate processes, all ready; a clean stop on Ctrl-C; data intact after
//! a second `up`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SERVICES: [(&str, u16); 5] = [
    ("concert", 1),
    ("queue", 2),
    ("reservation", 3),
    ("member-balance", 4),
    ("payment", 5),
];

/// Free ports: base+1..=base+5 for the services, base+10 for the data
/// platform, base+11 for the broker.
/// Twelve free ports in a row for a cluster's services, broker and data
/// platform, all below Linux's ephemeral range (32768 and up): a port there
/// can be taken by any outgoing connection of the tests running alongside
/// between this check and the service's bind (CI once saw payment, the last
/// service, fail to start that way).
pub(crate) fn free_ports() -> (u16, u16) {
    for _ in 0..50 {
        let base = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        let all_free = (0..=11)
            .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if all_free {
            return (base, base + 11);
        }
    }
    panic!("no free port range");
}

struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// Starts `ticketctl up` as a terminal does: the leader of a process group
/// of its own (the terminal's foreground group), its output and errors
/// read line by line.
fn start(data_dir: &std::path::Path, base: u16, broker: u16, extra: &[&str]) -> Up {
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ticketctl"))
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args([
            "--port-base",
            &base.to_string(),
            "--broker-port",
            &broker.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("ticketctl starts");
    let (sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let errors = sender.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if errors.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Shown only when the test fails: the services' own output,
            // which says why one of them stopped.
            println!("{line}");
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut up = Up { child, lines };
    up.wait_for("press Ctrl-C to stop", Duration::from_secs(180));
    up
}

impl Up {
    fn wait_for(&mut self, text: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("ticketctl never printed {text:?}");
                }
            }
        }
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child, as Ctrl-C would.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "ticketctl exited with {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ticketctl did not stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ctrl-C in a terminal: SIGINT to the whole foreground process group
    /// at once. Returns everything printed until `ticketctl` exited.
    fn interrupt_group(mut self) -> Vec<String> {
        // SAFETY: signalling the process group this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut printed = Vec::new();
        loop {
            while let Ok(line) = self.lines.try_recv() {
                printed.push(line);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "ticketctl exited with {status}");
                // The readers drain what is left in the pipes.
                std::thread::sleep(Duration::from_millis(200));
                printed.extend(self.lines.try_iter());
                return printed;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ticketctl did not stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A test that fails midway stops its cluster too, rather than leaving
/// seven processes behind.
impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: signalling our own child, as Ctrl-C would.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGINT);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) {
                if std::time::Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A member token from the data folder's development issuer, as a user gets one.
fn login(data_dir: &std::path::Path, user: uuid::Uuid) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ticketctl"))
        .args(["login", &user.to_string(), "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("ticketctl login runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The pid of `ticketctl serve <service>` listening on `port`.
fn service_pid(service: &str, port: u16) -> i32 {
    let wanted_args = format!("serve\0{service}\0");
    let wanted_port = format!("APP__HTTP__PORT={port}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let read =
                |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
            String::from_utf8_lossy(&read("cmdline")).contains(&wanted_args)
                && String::from_utf8_lossy(&read("environ")).contains(&wanted_port)
        })
        .unwrap_or_else(|| panic!("no {service} process on port {port}"))
}

/// A member's request: their token, and their pass when they have one.
async fn as_member(
    request: reqwest::RequestBuilder,
    token: &str,
    pass: Option<&str>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = request.bearer_auth(token);
    if let Some(pass) = pass {
        request = request.header("queue-pass", pass);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn json(http: &reqwest::Client, url: String) -> serde_json::Value {
    let response = http.get(&url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_everything_ready_stops_cleanly_and_keeps_data() {
    let data_dir =
        std::env::temp_dir().join(format!("ticketctl-up-{}", uuid::Uuid::new_v4().simple()));
    let (base, broker) = free_ports();
    let http = reqwest::Client::new();
    let url = |offset: u16, path: &str| format!("http://127.0.0.1:{}{path}", base + offset);

    let mut up = start(&data_dir, base, broker, &[]);
    for (name, offset) in SERVICES {
        let ready = json(&http, url(offset, "/health/ready")).await;
        assert_eq!(ready["status"], "ready", "{name}");
        assert_eq!(ready["service"], name);
        // The API page and everything it loads come from the service itself.
        let page = http.get(url(offset, "/docs")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        for asset in ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"] {
            assert!(page.contains(asset), "{name}: {page}");
            let response = http.get(url(offset, asset)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{name} {asset}");
            assert!(
                response.bytes().await.unwrap().len() > 100_000,
                "{name} {asset}"
            );
        }
        assert!(
            !page.contains("https://"),
            "{name}: the page fetches nothing outside"
        );
        let served = http
            .get(url(offset, "/docs/openapi.json"))
            .send()
            .await
            .unwrap();
        let served = served.text().await.unwrap();
        let checked_in = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../docs/api/{name}.json")),
        )
        .unwrap();
        assert_eq!(served, checked_in, "{name} serves docs/api/{name}.json");
    }
    let platform = json(&http, url(10, "/health/ready")).await;
    assert_eq!(platform["service"], "data-platform");
    let concerts = json(&http, url(1, "/v1/concerts")).await;
    assert_eq!(concerts.as_array().unwrap().len(), 3, "demo catalog");
    let member = uuid::Uuid::new_v4();
    let token = login(&data_dir, member);
    let charge = http
        .post(url(4, &format!("/v1/members/{member}/charges")))
        .json(&serde_json::json!({ "amount": 500_000 }));
    let (charged, _) = as_member(charge, &token, None).await;
    assert_eq!(charged, 201);

    // A saga in flight survives a `kill -9` of a service: `up` restarts it.
    let concert = concerts[0]["id"].as_str().unwrap();
    let schedules = json(&http, url(1, &format!("/v1/concerts/{concert}/schedules"))).await;
    let schedule = schedules[0]["id"].as_str().unwrap();
    let join = http
        .post(url(2, "/v1/queue/tokens"))
        .json(&serde_json::json!({ "concert_id": concert }));
    let (_, joined) = as_member(join, &token, None).await;
    let pass = joined["pass"]
        .as_str()
        .unwrap_or_else(|| panic!("admitted at once: {joined}"))
        .to_string();
    let reserve = http
        .post(url(3, "/v1/reservations"))
        .json(&serde_json::json!({ "schedule_id": schedule, "seat_no": 9 }));
    let (_, hold) = as_member(reserve, &token, Some(&pass)).await;
    assert_eq!(hold["status"], "HELD", "{hold}");
    // SAFETY: signalling a process this test started, as `kill -9` would.
    unsafe {
        libc::kill(service_pid("member-balance", base + 4), libc::SIGKILL);
    }
    let pay = http
        .post(url(5, "/v1/payments"))
        .json(&serde_json::json!({ "reservation_id": hold["id"] }));
    let (_, paid) = as_member(pay, &token, Some(&pass)).await;
    up.wait_for("member-balance | restarted", Duration::from_secs(60));
    let payment_url = url(5, &format!("/v1/payments/{}", paid["id"].as_str().unwrap()));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let poll = http.get(format!("{payment_url}?wait_ms=2000&seen_status=PENDING"));
        let (_, payment) = as_member(poll, &token, None).await;
        if payment["status"] != "PENDING" {
            assert_eq!(payment["status"], "COMPLETED", "{payment}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the payment never finished"
        );
    }
    up.stop();
    for (_, offset) in SERVICES {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", base + offset)).is_err(),
            "port {} still open after stop",
            base + offset
        );
    }

    let up = start(&data_dir, base, broker, &[]);
    let again = json(&http, url(1, "/v1/concerts")).await;
    assert_eq!(again, concerts, "same catalog, not seeded twice");
    let read = http.get(url(4, &format!("/v1/members/{member}/balance")));
    let (_, balance) = as_member(read, &login(&data_dir, member), None).await;
    let price = hold["price"].as_i64().unwrap();
    assert_eq!(
        balance["balance"],
        500_000 - price,
        "balance survived the restart"
    );
    up.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_on_external_postgres_and_kafka() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, RunQueryDsl};

    let data_dir =
        std::env::temp_dir().join(format!("ticketctl-ext-{}", uuid::Uuid::new_v4().simple()));
    let (base, unused_broker_port) = free_ports();
    let prefix = format!(
        "uptest_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let admin = ticket_runtime::dev::testkit::postgres_admin_url();
    let server = admin.rsplit_once('/').unwrap().0.to_string();
    let database = format!("{server}/{prefix}");
    let kafka = ticket_runtime::dev::testkit::broker();
    let http = reqwest::Client::new();
    let url = |offset: u16, path: &str| format!("http://127.0.0.1:{}{path}", base + offset);

    let up = start(
        &data_dir,
        base,
        unused_broker_port,
        &["--database", &database, "--kafka", kafka, "--no-demo-data"],
    );
    assert!(
        !data_dir.join("broker").exists(),
        "no broker of its own with --kafka"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", unused_broker_port)).is_err());
    assert_eq!(
        json(&http, url(1, "/v1/concerts")).await,
        serde_json::json!([]),
        "--no-demo-data"
    );
    let member = uuid::Uuid::new_v4();
    let charge = http
        .post(url(4, &format!("/v1/members/{member}/charges")))
        .json(&serde_json::json!({ "amount": 777 }));
    let (charged, _) = as_member(charge, &login(&data_dir, member), None).await;
    assert_eq!(charged, 201);
    up.stop();

    #[derive(diesel::QueryableByName)]
    struct Balance {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        balance: i64,
    }
    let mut wallet_db =
        PgConnection::establish(&format!("{server}/{prefix}_member_balance")).unwrap();
    let rows: Vec<Balance> = diesel::sql_query(format!(
        "SELECT balance FROM wallets WHERE user_id = '{member}'"
    ))
    .load(&mut wallet_db)
    .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.balance).collect::<Vec<_>>(),
        [777],
        "stored in its own PostgreSQL database"
    );
    drop(wallet_db);
    let mut admin_conn = PgConnection::establish(&admin).unwrap();
    for service in [
        "concert",
        "queue",
        "reservation",
        "member_balance",
        "payment",
    ] {
        admin_conn
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{prefix}_{service}\" WITH (FORCE)"
            ))
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Ctrl-C in the terminal reaches the whole foreground group; `ticketctl
/// up` stops its children in order all the same (services with their last
/// offset commit, then the broker), and none is killed for being slow.
/// And `ticketctl audit` waits for a service that is restarting instead of
/// failing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_in_order_and_audit_waits_for_a_restarting_service() {
    let data_dir =
        std::env::temp_dir().join(format!("ticketctl-sig-{}", uuid::Uuid::new_v4().simple()));
    let (base, broker) = free_ports();
    let up = start(&data_dir, base, broker, &["--no-demo-data"]);

    // The reservation service dies, and its supervisor is held back for a
    // few seconds, so the audit surely starts while it is down.
    let supervisor = up.child.id() as i32;
    // SAFETY: signalling processes this test started.
    unsafe {
        libc::kill(supervisor, libc::SIGSTOP);
        libc::kill(service_pid("reservation", base + 3), libc::SIGKILL);
    }
    let url = |offset: u16| format!("http://127.0.0.1:{}", base + offset);
    let audit = Command::new(env!("CARGO_BIN_EXE_ticketctl"))
        .args(["audit", "--settle-timeout", "90s", "--data-dir"])
        .arg(&data_dir)
        .args(["--brokers", &format!("127.0.0.1:{broker}")])
        .args(["--concert-url", &url(1), "--queue-url", &url(2)])
        .args([
            "--reservation-url",
            &url(3),
            "--member-balance-url",
            &url(4),
        ])
        .args(["--payment-url", &url(5)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ticketctl audit runs");
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: waking the supervisor this test stopped.
    unsafe {
        libc::kill(supervisor, libc::SIGCONT);
    }
    let audit = audit.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success(),
        "the audit waits for the restart: {printed}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(printed.contains("no violations"), "{printed}");

    let printed = up.interrupt_group();
    let all = printed.join("\n");
    assert!(all.contains("stopped"), "{all}");
    // A consumer that loses the broker while closing logs a transport
    // failure; one that takes too long is killed.
    for wrong in ["did not stop in", "Broker transport failure"] {
        assert!(
            !all.contains(wrong),
            "{wrong:?} while stopping: the broker went first\n{all}"
        );
    }
    for (service, _) in SERVICES {
        assert!(
            all.contains(&format!("partitions revoked consumer={service}")),
            "{service} gave its partitions back (its last commit)\n{all}"
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
