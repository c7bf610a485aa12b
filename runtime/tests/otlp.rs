//! With an OTLP endpoint configured, spans are exported over OTLP/HTTP.
//! (Its own test binary: it installs the process-wide subscriber.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;
use ticket_runtime::config::TelemetrySettings;

/// Accepts one HTTP request and answers 200; sends (request line, body length) back.
fn fake_collector() -> (String, mpsc::Receiver<(String, usize)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let n = stream.read(&mut buffer).unwrap_or(0);
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    let line = text.lines().next().unwrap_or_default().to_string();
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                    sender.send((line, length)).unwrap();
                    break;
                }
            }
        }
    });
    (url, receiver)
}

#[test]
fn spans_are_exported_when_an_endpoint_is_configured() {
    let (endpoint, received) = fake_collector();
    let settings = TelemetrySettings {
        log_filter: "warn".into(),
        log_format: "text".into(),
        otlp_endpoint: Some(endpoint),
    };
    let guard = ticket_runtime::ops::telemetry::init("otlp-test", &settings).unwrap();
    tracing::info_span!("a traced step").in_scope(|| {
        assert!(ticket_runtime::ops::telemetry::current_trace_id().is_some());
    });
    drop(guard); // flushes the batch
    let (request_line, body) = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the collector got a request");
    assert!(
        request_line.starts_with("POST /v1/traces"),
        "{request_line}"
    );
    assert!(body > 0, "spans in the body");
}
