//! The stand-in over HTTP, as the payment service and `ticketctl` use it:
//! a record is taken once per payment, a body that is not a record is
//! refused, and what was taken survives a restart through its file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use data_platform_mock::DataPlatform;
use serde_json::{json, Value};
use shared_events::CompletedReservation;

/// A record as the payment service sent it before it was typed (built with
/// `json!`, so its keys in alphabetical order).
const UNTYPED_BODY: &str = concat!(
    r#"{"amount":150000,"completed_at":"2026-11-20T12:00:01.123456789Z","#,
    r#""concert_id":"01900000-0000-7000-8000-000000000004","#,
    r#""payment_id":"01900000-0000-7000-8000-000000000002","#,
    r#""reservation_id":"01900000-0000-7000-8000-000000000001","#,
    r#""schedule_id":"01900000-0000-7000-8000-000000000005","seat_no":7,"#,
    r#""user_id":"01900000-0000-7000-8000-000000000003"}"#
);

async fn post(http: &reqwest::Client, url: &str, body: String) -> (u16, Value) {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_record_is_taken_once_listed_and_kept_across_a_restart() {
    let file = std::env::temp_dir().join(format!(
        "data-platform-{}-{}.jsonl",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    let platform = DataPlatform::new(Some(file.clone()));
    let (server, addr) = platform.serve("127.0.0.1", 0).unwrap();
    tokio::spawn(server);
    let url = format!("http://{addr}/v1/reservations");
    let http = reqwest::Client::new();

    let (status, answer) = post(&http, &url, UNTYPED_BODY.to_string()).await;
    assert_eq!((status, answer), (201, json!({ "recorded": true })));
    let (status, answer) = post(&http, &url, UNTYPED_BODY.to_string()).await;
    assert_eq!(
        (status, answer),
        (200, json!({ "recorded": false, "duplicate": true }))
    );
    let (status, answer) = post(&http, &url, json!({ "seat_no": 7 }).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(answer["code"], "invalid_record", "{answer}");
    assert_eq!(
        platform.deliveries(),
        2,
        "a body that is no record is not a delivery"
    );

    let listed: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let sent: Value = serde_json::from_str(UNTYPED_BODY).unwrap();
    assert_eq!(listed, json!([sent]), "listed as sent");

    let restarted = DataPlatform::new(Some(file.clone()));
    let expected: CompletedReservation = serde_json::from_str(UNTYPED_BODY).unwrap();
    assert_eq!(restarted.records(), [expected]);
    std::fs::remove_file(file).unwrap();
}
