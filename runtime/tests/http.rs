//! The HTTP layer every service shares, against a real server: what the
//! request metrics record, admin answers, and bounded input (bodies over the
//! limit, slow clients, ten thousand idle connections).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use actix_web::{web, HttpResponse};
use shared_events::Service;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ticket_runtime::dev::testkit::{self, TestDatabase, ADMIN_KEY};
use ticket_runtime::{ErrorBody, Migrations, NoServiceSettings, RunningService, ServiceRuntime};

const SCHEMA: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("tests/migrations"),
    postgres: diesel_migrations::embed_migrations!("tests/migrations"),
};

/// How long a normal request may take while the server is under a load of
/// bad clients: generous, so only a server that stopped answering fails.
const ANSWER: Duration = Duration::from_secs(10);

/// A server with the shared endpoints, a JSON echo at `POST /echo` and an
/// admin route at `GET /admin/ping`.
struct Server {
    running: RunningService,
    _db: TestDatabase,
}

impl Server {
    /// `overrides` is TOML laid over the defaults (the service-defaults layer).
    async fn start(overrides: &str) -> Server {
        testkit::init_tracing();
        let db = TestDatabase::sqlite("http");
        let settings =
            testkit::settings::<NoServiceSettings>(overrides, &db.url, &testkit::unique_prefix());
        let runtime = ServiceRuntime::start(Service::Concert, settings, SCHEMA)
            .await
            .expect("service starts");
        let running = runtime
            .serve(|cfg: &mut web::ServiceConfig| {
                cfg.service(web::resource("/echo").post(
                    |body: web::Json<serde_json::Value>| async move {
                        HttpResponse::Ok().json(body.into_inner())
                    },
                ))
                .service(
                    ticket_runtime::http::admin::scope("/admin").service(
                        web::resource("/ping").get(|| async { HttpResponse::Ok().finish() }),
                    ),
                );
            })
            .expect("server starts");
        Server { running, _db: db }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET /health/live` on a new connection answers 200 within [`ANSWER`].
    async fn answers_a_normal_client(&self) {
        let client = reqwest::Client::builder()
            .timeout(ANSWER)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let response = client
            .get(self.url("/health/live"))
            .send()
            .await
            .expect("a normal client gets an answer");
        assert_eq!(response.status(), 200);
    }
}

/// The `http_requests_total` lines of a metrics page.
fn request_counts(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_share_one_metric_label() {
    let server = Server::start("").await;
    let http = reqwest::Client::new();
    for n in 0..20 {
        let method = reqwest::Method::from_bytes(format!("M{n}").as_bytes()).unwrap();
        for path in ["/health/live", "/echo", "/no-such-path"] {
            let response = http
                .request(method.clone(), server.url(path))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error(), "{method} {path}");
        }
    }
    http.get(server.url("/health/live")).send().await.unwrap();

    let metrics = server.metrics().await;
    let allowed = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
    ];
    for family in [
        "http_requests_total{",
        "http_request_duration_seconds_count{",
    ] {
        for line in metrics.lines().filter(|line| line.starts_with(family)) {
            let method = line
                .split("method=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("a method label");
            assert!(allowed.contains(&method), "unbounded method label: {line}");
        }
    }
    assert!(
        request_counts(&metrics)
            .iter()
            .any(|line| line.contains("method=\"other\"") && line.ends_with(" 20")),
        "the invented methods are counted together, per route and status:\n{metrics}"
    );
    assert!(
        request_counts(&metrics)
            .iter()
            .any(|line| line.contains("method=\"GET\"") && line.contains("/health/live")),
        "{metrics}"
    );
    server.running.stop().await;
}

/// A path that exists but not for this method is 405 with `Allow` (RFC
/// 9110), as a JSON error like every other; behind the admin key only for
/// a caller with the key. An unknown path stays 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_method_on_a_known_path_is_405_naming_the_allowed_one() {
    let server = Server::start("").await;
    let http = reqwest::Client::new();
    let trace = reqwest::Method::from_bytes(b"TRACE").unwrap();
    for (method, path, key, allowed) in [
        (reqwest::Method::POST, "/health/live", None, "GET"),
        (reqwest::Method::DELETE, "/metrics", None, "GET"),
        (trace, "/echo", None, "POST"),
        (reqwest::Method::PUT, "/admin/ping", Some(ADMIN_KEY), "GET"),
    ] {
        let mut request = http.request(method.clone(), server.url(path));
        if let Some(key) = key {
            request = request.header("x-admin-key", key);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 405, "{method} {path}");
        assert_eq!(answer.headers()["allow"], allowed, "{method} {path}");
        let error: ErrorBody = answer.json().await.unwrap();
        assert_eq!(error.code, "method_not_allowed", "{method} {path}");
    }
    let refused = http.put(server.url("/admin/ping")).send().await.unwrap();
    assert_eq!(refused.status(), 401, "the key is checked first");
    let missing = http.post(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let error: ErrorBody = missing.json().await.unwrap();
    assert_eq!(error.code, "route_not_found");
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_calls_are_counted_and_tagged() {
    let server = Server::start("").await;
    let http = reqwest::Client::new();
    let refused = http
        .get(server.url("/admin/ping"))
        .header("x-request-id", "req-refused")
        .header("x-admin-key", "not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["x-request-id"], "req-refused");
    let body: ErrorBody = refused.json().await.unwrap();
    assert_eq!(body.code, "admin_key_invalid");

    let anonymous = http.get(server.url("/admin/ping")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers().contains_key("x-request-id"),
        "a request id is made for a refused call too"
    );

    let admitted = http
        .get(server.url("/admin/ping"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(admitted.status(), 200);

    let metrics = server.metrics().await;
    let counted = |status: &str, count: &str| {
        request_counts(&metrics).iter().any(|line| {
            line.contains("method=\"GET\"")
                && line.contains("route=\"/admin/ping\"")
                && line.contains(&format!("status=\"{status}\""))
                && line.ends_with(&format!(" {count}"))
        })
    };
    assert!(counted("401", "2"), "both refusals counted:\n{metrics}");
    assert!(counted("200", "1"), "{metrics}");
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_answer_413_with_the_error_shape() {
    let server = Server::start("[http]\nbody_limit_bytes = 1024\n").await;
    let http = reqwest::Client::new();
    let fits = serde_json::json!({ "text": "x".repeat(900) });
    let response = http
        .post(server.url("/echo"))
        .json(&fits)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let oversized = serde_json::json!({ "text": "x".repeat(2000) });
    let response = http
        .post(server.url("/echo"))
        .json(&oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.code, "payload_too_large");

    // Without a length up front, the limit holds as the chunks arrive.
    let chunk = format!("{{\"text\": \"{}\"}}", "x".repeat(2000));
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let addr = server.addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"code\":\"payload_too_large\""),
        "{answer}"
    );
    server.running.stop().await;
}

/// What a client that sent `at_once`, then `trickle` a byte a second, saw:
/// whether the server cut it off before it sent every byte, and its answer.
struct SlowClient {
    cut_off: bool,
    answer: String,
}

fn send_a_byte_a_second(addr: SocketAddr, at_once: &[u8], trickle: &[u8]) -> SlowClient {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(at_once).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let answered = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    let mut cut_off = false;
    for byte in trickle {
        std::thread::sleep(Duration::from_secs(1));
        if answered.is_finished() || stream.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
    }
    if !cut_off {
        // Whatever the server answers now, it waited for every byte.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    SlowClient {
        cut_off,
        answer: answered.join().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_a_byte_a_second_are_cut_off_while_others_are_served() {
    let server =
        Server::start("[http]\nclient_request_timeout_ms = 2000\nclient_body_timeout_ms = 2000\n")
            .await;
    let addr = server.addr();
    let body = format!("{{\"text\": \"{}\"}}", "x".repeat(50));
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let whole = format!("{head}{body}");
    // Every byte of the request trickles, the head first.
    let slow_head =
        tokio::task::spawn_blocking(move || send_a_byte_a_second(addr, b"", whole.as_bytes()));
    // The head arrives at once; only the body trickles.
    let slow_body = tokio::task::spawn_blocking(move || {
        send_a_byte_a_second(addr, head.as_bytes(), body.as_bytes())
    });
    // Connects and never sends a byte.
    let silent = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map(|_| answer)
    });

    let started = Instant::now();
    while !(slow_head.is_finished() && slow_body.is_finished() && silent.is_finished()) {
        server.answers_a_normal_client().await;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a slow client is still connected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let slow_head = slow_head.await.unwrap();
    assert!(slow_head.cut_off, "the server waited for the whole head");
    assert!(
        slow_head.answer.is_empty() || slow_head.answer.starts_with("HTTP/1.1 408"),
        "{}",
        slow_head.answer
    );
    let slow_body = slow_body.await.unwrap();
    assert!(slow_body.cut_off, "the server waited for the whole body");
    assert!(
        slow_body.answer.starts_with("HTTP/1.1 408"),
        "{}",
        slow_body.answer
    );
    assert!(
        slow_body.answer.contains("\"code\":\"request_timeout\""),
        "{}",
        slow_body.answer
    );
    let silent = silent.await.unwrap();
    assert!(
        silent.is_ok(),
        "a connection that sends nothing is closed: {silent:?}"
    );
    server.running.stop().await;
}

/// How many idle connections the holder keeps open.
const IDLE_CONNECTIONS: usize = 10_000;
/// Where [`idle_connection_holder`] connects, when this process is it.
const HOLD_ADDR: &str = "TICKET_TEST_HOLD_ADDR";

/// Lifts this process's open-file limit to its hard limit: each connection
/// is a descriptor, on both ends.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_keep_a_normal_client_out() {
    // The server holds one descriptor per connection and the holder one
    // more; in two processes, each needs only its own share of the limit.
    let limit = raise_open_file_limit();
    assert!(
        limit > IDLE_CONNECTIONS as u64 + 1000,
        "this test needs an open-file hard limit above {} (ulimit -Hn is {limit})",
        IDLE_CONNECTIONS + 1000
    );
    let server = Server::start("").await;
    let mut holder = Command::new(std::env::current_exe().unwrap());
    holder
        .args([
            "--exact",
            "idle_connection_holder",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLD_ADDR, server.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The holder dies with this test even when the test panics.
    // SAFETY: prctl is async-signal-safe and touches no Rust state.
    unsafe {
        use std::os::unix::process::CommandExt;
        holder.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut holder = holder.spawn().unwrap();
    let report = holder.stdout.take().unwrap();
    let (holding, held) = tokio::sync::oneshot::channel();
    // Reads the holder's output to its end: a holder writing to a closed
    // pipe would fail.
    std::thread::spawn(move || {
        let mut holding = Some(holding);
        for line in BufReader::new(report).lines().map_while(Result::ok) {
            let count = line.strip_prefix("holding ").and_then(|n| n.parse().ok());
            if let Some(count) = count {
                if let Some(holding) = holding.take() {
                    let _ = holding.send(count);
                }
            }
        }
    });
    let held: Option<usize> = held.await.ok();
    assert_eq!(held, Some(IDLE_CONNECTIONS), "the holder opened them all");

    // The server still holds every one of them (a descriptor each here),
    // and a client on a connection of its own gets its answers.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(open >= IDLE_CONNECTIONS, "only {open} descriptors open");
    for _ in 0..20 {
        server.answers_a_normal_client().await;
    }
    let response = reqwest::Client::new()
        .post(server.url("/echo"))
        .json(&serde_json::json!({ "n": 1 }))
        .timeout(ANSWER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    drop(holder.stdin.take());
    let status = tokio::task::spawn_blocking(move || holder.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the holder failed: {status}");
    server.running.stop().await;
}

/// Not a test of its own: the process that
/// `ten_thousand_idle_connections_do_not_keep_a_normal_client_out` starts to
/// hold the idle connections. Each makes one request and then idles as a
/// pooled keep-alive connection does; the holder reports `holding N` and
/// keeps them open until its stdin closes.
#[test]
#[ignore = "started by ten_thousand_idle_connections_do_not_keep_a_normal_client_out"]
fn idle_connection_holder() {
    let Ok(addr) = std::env::var(HOLD_ADDR) else {
        return;
    };
    raise_open_file_limit();
    let request = b"GET /health/live HTTP/1.1\r\nHost: idle\r\n\r\n";
    let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
    for n in 0..IDLE_CONNECTIONS {
        let mut stream =
            TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {n} to {addr}: {e}"));
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        stream.write_all(request).unwrap();
        // The answer is small: its head and body arrive together.
        let mut answer = [0u8; 1024];
        let read = stream
            .read(&mut answer)
            .unwrap_or_else(|e| panic!("answer on connection {n}: {e}"));
        assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    println!("holding {}", held.len());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
