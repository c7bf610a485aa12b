//! The waiting line with real services: arrival order, positions, drop-outs,
//! and passes that the other services verify on their own.

use crate::support::{Cluster, Fan, Knobs, PASS_HEADER, WAIT};
use reqwest::StatusCode;
use serde_json::Value;
use shared_events::{Event, Service, Topic};
use std::collections::HashMap;
use std::time::Duration;
use ticket_runtime::pass::PassClaims;
use ticket_runtime::testkit::{eventually, EventTap};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fans_are_admitted_in_arrival_order_and_positions_only_go_down() {
    let cluster = Cluster::start(
        false,
        Knobs {
            max_active: 3,
            pass_ttl_secs: 2,
            ..Knobs::default()
        },
    )
    .await;
    let (concert, _) = cluster.schedule().await;
    let tap = EventTap::new(&cluster.prefix, Topic::QueueEvents);
    let mut tokens = Vec::new();
    let users: Vec<Uuid> = (0..9).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        let (status, token) = cluster.join(*user, &concert).await;
        assert_eq!(status, StatusCode::CREATED);
        tokens.push(token);
    }
    let statuses: Vec<&str> = tokens
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses[..3],
        ["ACTIVE"; 3],
        "the first three are admitted at once"
    );
    assert!(tokens[..3]
        .iter()
        .all(|t| t["position"] == 0 && t["pass"].is_string()));
    let positions: Vec<i64> = tokens[3..]
        .iter()
        .map(|t| t["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2, 3, 4, 5], "fans ahead, counted exactly");
    assert!(tokens[3..].iter().all(|t| t["pass"].is_null()));

    // Passes last two seconds; as they expire, the next fans are admitted.
    let ids: Vec<String> = tokens
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_string())
        .collect();
    let mut last_position: HashMap<String, i64> = HashMap::new();
    let mut admitted_order: Vec<usize> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everyone was admitted: {admitted_order:?}"
        );
        // Last to first: if a later fan is admitted when polled, everyone
        // before, polled afterwards, must be admitted too.
        let mut round = Vec::new();
        for (user, id) in users.iter().zip(&ids).rev() {
            round.push(cluster.poll(*user, id).await);
        }
        round.reverse();
        for (i, token) in round.iter().enumerate() {
            let id = &ids[i];
            match token["status"].as_str().unwrap() {
                "WAITING" => {
                    let position = token["position"].as_i64().unwrap();
                    let previous = last_position.insert(id.clone(), position);
                    assert!(
                        previous.is_none_or(|p| position <= p),
                        "{id}: position went up to {position} from {previous:?}"
                    );
                }
                "ACTIVE" | "EXPIRED" => {
                    if !admitted_order.contains(&i) {
                        admitted_order.push(i);
                    }
                }
                other => panic!("unexpected status {other}"),
            }
        }
        // Whoever is admitted, everyone who came before was admitted too.
        let mut sorted = admitted_order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..sorted.len()).collect::<Vec<_>>(),
            "admitted out of order: {admitted_order:?}"
        );
        if admitted_order.len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired = cluster.poll(users[0], &ids[0]).await;
    assert_eq!(expired["status"], "EXPIRED");
    assert_eq!(expired["ended_reason"], "PASS_EXPIRED");
    assert!(expired["pass"].is_null() && expired["position"].is_null());

    let admitted = tap
        .next_matching(
            WAIT,
            |e| matches!(&e.event, Event::QueueTokenAdmitted(a) if a.token.to_string() == ids[8]),
        )
        .await;
    let Event::QueueTokenAdmitted(admitted) = admitted.event else {
        unreachable!()
    };
    assert_eq!(admitted.concert_id.to_string(), concert);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asking_again_returns_the_same_token_and_place() {
    let cluster = Cluster::start(
        false,
        Knobs {
            max_active: 1,
            ..Knobs::default()
        },
    )
    .await;
    let (concert, _) = cluster.schedule().await;
    cluster.join(Uuid::new_v4(), &concert).await;
    let user = Uuid::new_v4();
    let (first_status, first) = cluster.join(user, &concert).await;
    let (again_status, again) = cluster.join(user, &concert).await;
    assert_eq!(
        (first_status, again_status),
        (StatusCode::CREATED, StatusCode::OK)
    );
    assert_eq!(first["token"], again["token"]);
    assert_eq!(first["position"], again["position"]);
    assert_eq!(again["status"], "WAITING");
    let (_, other_concert) = {
        let concerts = cluster
            .get_json(cluster.url(Service::Concert, "/v1/concerts"))
            .await;
        ((), concerts[1]["id"].as_str().unwrap().to_string())
    };
    let (status, elsewhere) = cluster.join(user, &other_concert).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(elsewhere["token"], first["token"], "one token per concert");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fan_who_stops_polling_drops_out_and_no_longer_holds_up_the_line() {
    let knobs = Knobs {
        max_active: 1,
        poll_timeout_secs: 1,
        pass_ttl_secs: 4,
        ..Knobs::default()
    };
    let cluster = Cluster::start(false, knobs).await;
    let (concert, _) = cluster.schedule().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let user = Uuid::new_v4();
        let (_, token) = cluster.join(user, &concert).await;
        ids.push((user, token["token"].as_str().unwrap().to_string()));
    }
    let (quitter, patient, last) = (&ids[1], &ids[2], &ids[3]);
    assert_eq!(poll_fan(&cluster, patient).await["position"], 1);

    // Everyone but the quitter keeps polling; the quitter is dropped and the
    // fans behind move up.
    let moved_up = eventually(WAIT, "the quitter to drop out", || async {
        let patient_view = poll_fan(&cluster, patient).await;
        let last_view = poll_fan(&cluster, last).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (patient_view["position"] == 0 && last_view["position"] == 1).then_some(())
    });
    moved_up.await;
    let dropped = poll_fan(&cluster, quitter).await;
    assert_eq!(dropped["status"], "EXPIRED");
    assert_eq!(dropped["ended_reason"], "DROPPED");
    assert!(dropped["position"].is_null());

    // When the active fan's pass ends, the next live fan is admitted, not the quitter.
    let admitted = eventually(WAIT, "the next live fan's admission", || async {
        let view = poll_fan(&cluster, patient).await;
        poll_fan(&cluster, last).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (view["status"] == "ACTIVE").then_some(view)
    })
    .await;
    assert!(admitted["pass"].is_string());
    assert_eq!(poll_fan(&cluster, last).await["position"], 0);
    cluster.stop().await;
}

async fn reserve_with(
    cluster: &Cluster,
    member: &str,
    pass: Option<String>,
    schedule: &str,
) -> (StatusCode, Value) {
    let mut request = cluster
        .http
        .post(cluster.url(Service::Reservation, "/v1/reservations"))
        .bearer_auth(member)
        .json(&serde_json::json!({ "schedule_id": schedule, "seat_no": 1 }));
    if let Some(value) = pass {
        request = request.header(PASS_HEADER, value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_verify_in_other_services_and_bad_ones_are_refused_with_distinct_codes() {
    let cluster = Cluster::start(false, Knobs::default()).await;
    let (concert, schedule) = cluster.schedule().await;
    let fan = cluster.fan(&concert).await;

    let (status, body) =
        reserve_with(&cluster, &fan.member, Some(fan.pass.clone()), &schedule).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "verified by the reservation service alone: {body}"
    );

    let claims = |concert_id: &str, exp_in: i64| PassClaims {
        sub: fan.user,
        concert_id: concert_id.parse().unwrap(),
        jti: Uuid::new_v4(),
        iat: chrono::Utc::now().timestamp(),
        exp: chrono::Utc::now().timestamp() + exp_in,
    };
    let (stranger_key, _) = ticket_runtime::pass::generate_key_pair();
    let forged = ticket_runtime::pass::PassSigner::from_base64(&stranger_key)
        .unwrap()
        .sign(&claims(&concert, 600));
    let expired = cluster.sign_pass(&claims(&concert, -5));
    let concerts = cluster
        .get_json(cluster.url(Service::Concert, "/v1/concerts"))
        .await;
    let other_concert = concerts[1]["id"].as_str().unwrap();
    let other_pass = cluster.sign_pass(&claims(other_concert, 600));

    let cases = [
        ("missing", None, "pass_missing"),
        ("empty", Some(" ".to_string()), "pass_missing"),
        ("malformed", Some("not.a.jwt".to_string()), "pass_malformed"),
        ("forged", Some(forged), "pass_forged"),
        ("expired", Some(expired), "pass_expired"),
        ("wrong concert", Some(other_pass), "pass_wrong_concert"),
    ];
    for (name, pass, code) in cases {
        let (status, body) = reserve_with(&cluster, &fan.member, pass.clone(), &schedule).await;
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (StatusCode::UNAUTHORIZED, code),
            "reservation, {name}"
        );
        let mut request = cluster
            .http
            .post(cluster.url(Service::Payment, "/v1/payments"))
            .bearer_auth(&fan.member)
            .json(&serde_json::json!({ "reservation_id": Uuid::new_v4() }));
        if let Some(value) = pass {
            request = request.header(PASS_HEADER, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if code == "pass_wrong_concert" {
            // Payment checks the concert against the reservation, which this one lacks.
            assert_eq!(body["code"], "reservation_not_found", "payment, {name}");
        } else {
            assert_eq!(
                (status, body["code"].as_str().unwrap()),
                (StatusCode::UNAUTHORIZED, code),
                "payment, {name}"
            );
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_bad_input_gets_a_4xx_and_a_code() {
    let cluster = Cluster::start(false, Knobs::default()).await;
    let (concert, _) = cluster.schedule().await;
    let fan = cluster.fan(&concert).await;
    let tokens = cluster.url(Service::Queue, "/v1/queue/tokens");
    let unknown = Uuid::new_v4();
    let posts = [
        ("malformed json", "{\"concert_id\":", 400, "malformed_json"),
        (
            "concert id not a uuid",
            r#"{"concert_id":"me"}"#,
            422,
            "invalid_body",
        ),
        ("concert id missing", "{}", 422, "invalid_body"),
        (
            "concert id a number",
            r#"{"concert_id":7}"#,
            422,
            "invalid_body",
        ),
        (
            "unknown concert",
            &format!(r#"{{"concert_id":"{unknown}"}}"#) as &str,
            404,
            "concert_not_found",
        ),
    ];
    for (name, body, status, code) in posts {
        let response = cluster
            .http
            .post(&tokens)
            .bearer_auth(&fan.member)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let json: Value = response.json().await.unwrap();
        assert_eq!(
            (got, json["code"].as_str().unwrap()),
            (status, code),
            "{name}"
        );
    }
    for (path, status, code) in [
        (
            format!("/v1/queue/tokens/{unknown}"),
            404,
            "token_not_found",
        ),
        ("/v1/queue/tokens/abc".to_string(), 400, "invalid_path"),
    ] {
        let response = cluster
            .http
            .get(cluster.url(Service::Queue, &path))
            .bearer_auth(&fan.member)
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let json: Value = response.json().await.unwrap();
        assert_eq!(
            (got, json["code"].as_str().unwrap()),
            (status, code),
            "{path}"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservation_and_payment_bad_input_gets_a_4xx_and_a_code() {
    let cluster = Cluster::start(false, Knobs::default()).await;
    let (concert, schedule) = cluster.schedule().await;
    let fan = cluster.fan(&concert).await;
    let other = cluster.fan(&concert).await;
    let hold = cluster.hold(&fan, &schedule, 2).await;
    let hold_id = hold["id"].as_str().unwrap();
    let unknown = Uuid::new_v4();

    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        Option<String>,
        &'a Fan,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "seat zero",
            "POST",
            "/v1/reservations".into(),
            Some(format!(r#"{{"schedule_id":"{schedule}","seat_no":0}}"#)),
            &fan,
            422,
            "invalid_seat",
        ),
        (
            "seat 51",
            "POST",
            "/v1/reservations".into(),
            Some(format!(r#"{{"schedule_id":"{schedule}","seat_no":51}}"#)),
            &fan,
            422,
            "invalid_seat",
        ),
        (
            "seat as text",
            "POST",
            "/v1/reservations".into(),
            Some(format!(r#"{{"schedule_id":"{schedule}","seat_no":"one"}}"#)),
            &fan,
            422,
            "invalid_body",
        ),
        (
            "schedule not a uuid",
            "POST",
            "/v1/reservations".into(),
            Some(r#"{"schedule_id":"x","seat_no":1}"#.into()),
            &fan,
            422,
            "invalid_body",
        ),
        (
            "unknown schedule",
            "POST",
            "/v1/reservations".into(),
            Some(format!(r#"{{"schedule_id":"{unknown}","seat_no":1}}"#)),
            &fan,
            404,
            "schedule_not_found",
        ),
        (
            "malformed json",
            "POST",
            "/v1/reservations".into(),
            Some("{".into()),
            &fan,
            400,
            "malformed_json",
        ),
        (
            "unknown reservation",
            "GET",
            format!("/v1/reservations/{unknown}"),
            None,
            &fan,
            404,
            "reservation_not_found",
        ),
        (
            "someone else's reservation",
            "GET",
            format!("/v1/reservations/{hold_id}"),
            None,
            &other,
            404,
            "reservation_not_found",
        ),
        (
            "reservation id not a uuid",
            "GET",
            "/v1/reservations/42".into(),
            None,
            &fan,
            400,
            "invalid_path",
        ),
        (
            "wait too long",
            "GET",
            format!("/v1/reservations/{hold_id}?wait_ms=999999"),
            None,
            &fan,
            400,
            "invalid_wait",
        ),
        (
            "wait negative",
            "GET",
            format!("/v1/reservations/{hold_id}?wait_ms=-1"),
            None,
            &fan,
            400,
            "invalid_query",
        ),
        (
            "unknown seen status",
            "GET",
            format!("/v1/reservations/{hold_id}?wait_ms=10&seen_status=NAPPING"),
            None,
            &fan,
            400,
            "invalid_seen_status",
        ),
        (
            "cancel someone else's",
            "DELETE",
            format!("/v1/reservations/{hold_id}"),
            None,
            &other,
            404,
            "reservation_not_found",
        ),
        (
            "pay unknown reservation",
            "POST",
            "/v1/payments".into(),
            Some(format!(r#"{{"reservation_id":"{unknown}"}}"#)),
            &fan,
            404,
            "reservation_not_found",
        ),
        (
            "pay someone else's hold",
            "POST",
            "/v1/payments".into(),
            Some(format!(r#"{{"reservation_id":"{hold_id}"}}"#)),
            &other,
            404,
            "reservation_not_found",
        ),
        (
            "pay with garbage id",
            "POST",
            "/v1/payments".into(),
            Some(r#"{"reservation_id":12}"#.into()),
            &fan,
            422,
            "invalid_body",
        ),
        (
            "unknown payment",
            "GET",
            format!("/v1/payments/{unknown}"),
            None,
            &fan,
            404,
            "payment_not_found",
        ),
        (
            "payment id not a uuid",
            "GET",
            "/v1/payments/nope".into(),
            None,
            &fan,
            400,
            "invalid_path",
        ),
        (
            "payment wait too long",
            "GET",
            format!("/v1/payments/{unknown}?wait_ms=999999"),
            None,
            &fan,
            400,
            "invalid_wait",
        ),
    ];
    for (name, method, path, body, caller, status, code) in cases {
        let url = match path.starts_with("/v1/payments") {
            true => cluster.url(Service::Payment, &path),
            false => cluster.url(Service::Reservation, &path),
        };
        let mut request = match method {
            "POST" => cluster.http.post(url),
            "DELETE" => cluster.http.delete(url),
            _ => cluster.http.get(url),
        }
        .bearer_auth(&caller.member)
        .header(PASS_HEADER, &caller.pass);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let json: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        assert_eq!(
            (got, json["code"].as_str().unwrap_or_default()),
            (status, code),
            "{name}: {json}"
        );
    }
    let bad_key = cluster
        .http
        .post(cluster.url(Service::Payment, "/v1/payments"))
        .bearer_auth(&fan.member)
        .header(PASS_HEADER, &fan.pass)
        .header("Idempotency-Key", "has space")
        .json(&serde_json::json!({ "reservation_id": hold_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), 400);
    assert_eq!(
        cluster.reservation(&fan, hold_id).await["status"],
        "HELD",
        "nothing changed the hold"
    );
    cluster.stop().await;
}

/// Every endpoint that acts for a fan takes the fan from a verified member
/// token: bad tokens are refused with distinct codes, and a fan never
/// reaches another fan's token, pass, reservation or payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fan_endpoint_checks_the_member_token_and_keeps_fans_apart() {
    use ticket_runtime::member::DevIssuer;
    let cluster = Cluster::start(false, Knobs::default()).await;
    let (concert, schedule) = cluster.schedule().await;
    let fan = cluster.fan(&concert).await;
    let other = cluster.fan(&concert).await;
    cluster.charge(&fan, 500_000).await;
    let hold = cluster.hold(&fan, &schedule, 30).await;
    let hold_id = hold["id"].as_str().unwrap().to_string();
    let (_, payment) = cluster.pay(&fan, &hold_id, Some("identity-1")).await;
    let payment_id = payment["id"].as_str().unwrap().to_string();

    let minutes = chrono::TimeDelta::minutes(5);
    let key = cluster.issuer.private_key_base64();
    let stranger = DevIssuer::generate().unwrap();
    let mut wrong_issuer = DevIssuer::from_base64(&key).unwrap();
    wrong_issuer.issuer = "https://elsewhere.example".into();
    let mut wrong_audience = DevIssuer::from_base64(&key).unwrap();
    wrong_audience.audience = "another-app".into();
    let unsigned = {
        use base64::Engine;
        let claims = fan.member.split('.').nth(1).unwrap().to_string();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"none","typ":"JWT"}"#);
        format!("{header}.{claims}.")
    };
    let bad_tokens: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "member_token_missing"),
        (
            "forged",
            Some(stranger.token(fan.user, minutes)),
            "member_token_forged",
        ),
        (
            "expired",
            Some(
                cluster
                    .issuer
                    .token(fan.user, chrono::TimeDelta::seconds(-60)),
            ),
            "member_token_expired",
        ),
        (
            "wrong issuer",
            Some(wrong_issuer.token(fan.user, minutes)),
            "member_token_wrong_issuer",
        ),
        (
            "wrong audience",
            Some(wrong_audience.token(fan.user, minutes)),
            "member_token_wrong_audience",
        ),
        ("alg none", Some(unsigned), "member_token_malformed"),
    ];
    let endpoints: Vec<(Service, &str, String, Option<Value>)> = vec![
        (
            Service::Queue,
            "POST",
            "/v1/queue/tokens".into(),
            Some(serde_json::json!({ "concert_id": concert })),
        ),
        (
            Service::Queue,
            "GET",
            format!("/v1/queue/tokens/{}", fan.token),
            None,
        ),
        (
            Service::Reservation,
            "POST",
            "/v1/reservations".into(),
            Some(serde_json::json!({ "schedule_id": schedule, "seat_no": 31 })),
        ),
        (
            Service::Reservation,
            "GET",
            format!("/v1/reservations/{hold_id}"),
            None,
        ),
        (
            Service::Reservation,
            "DELETE",
            format!("/v1/reservations/{hold_id}"),
            None,
        ),
        (
            Service::Payment,
            "POST",
            "/v1/payments".into(),
            Some(serde_json::json!({ "reservation_id": hold_id })),
        ),
        (
            Service::Payment,
            "GET",
            format!("/v1/payments/{payment_id}"),
            None,
        ),
    ];
    let send = |service: Service,
                method: &str,
                path: &str,
                body: &Option<Value>,
                member: Option<&str>,
                pass: &str| {
        let url = cluster.url(service, path);
        let mut request = match method {
            "POST" => cluster.http.post(url),
            "DELETE" => cluster.http.delete(url),
            _ => cluster.http.get(url),
        }
        .header(PASS_HEADER, pass);
        if let Some(member) = member {
            request = request.bearer_auth(member);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send()
    };
    for (service, method, path, body) in &endpoints {
        for (name, token, code) in &bad_tokens {
            let response = send(*service, method, path, body, token.as_deref(), &fan.pass)
                .await
                .unwrap();
            let status = response.status();
            let json: Value = response.json().await.unwrap();
            assert_eq!(
                (status, json["code"].as_str().unwrap()),
                (StatusCode::UNAUTHORIZED, *code),
                "{name}: {method} {path}"
            );
        }
    }
    // The other fan, well authenticated, on the first fan's things.
    let trespass: Vec<(usize, StatusCode, &str)> = vec![
        (1, StatusCode::NOT_FOUND, "token_not_found"),
        (2, StatusCode::FORBIDDEN, "pass_not_yours"),
        (3, StatusCode::NOT_FOUND, "reservation_not_found"),
        (4, StatusCode::NOT_FOUND, "reservation_not_found"),
        (5, StatusCode::FORBIDDEN, "pass_not_yours"),
        (6, StatusCode::NOT_FOUND, "payment_not_found"),
    ];
    for (index, expected, code) in trespass {
        let (service, method, path, body) = &endpoints[index];
        let response = send(*service, method, path, body, Some(&other.member), &fan.pass)
            .await
            .unwrap();
        let status = response.status();
        let json: Value = response.json().await.unwrap();
        assert_eq!(
            (status, json["code"].as_str().unwrap()),
            (expected, code),
            "the other fan: {method} {path}"
        );
    }
    // Joining with the other fan's token queues the other fan, whatever the body says.
    let response = send(
        Service::Queue,
        "POST",
        "/v1/queue/tokens",
        &Some(serde_json::json!({ "concert_id": concert, "user_id": fan.user })),
        Some(&other.member),
        "",
    )
    .await
    .unwrap();
    let joined: Value = response.json().await.unwrap();
    assert_eq!(joined["user_id"], other.user.to_string());
    let still = cluster.reservation(&fan, &hold_id).await;
    assert_ne!(still["status"], "CANCELLED", "nobody else cancelled it");
    cluster.stop().await;
}

/// No secret, pass or member token appears in any log line of a saga run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_pass_or_member_token_appears_in_the_logs() {
    let cluster = Cluster::start(false, Knobs::default()).await;
    let (concert, schedule) = cluster.schedule().await;
    let fan = cluster.fan(&concert).await;
    cluster.charge(&fan, 500_000).await;
    let hold = cluster.hold(&fan, &schedule, 33).await;
    let hold_id = hold["id"].as_str().unwrap();
    let (_, payment) = cluster.pay(&fan, hold_id, None).await;
    let outcome = cluster
        .payment_outcome(&fan, payment["id"].as_str().unwrap())
        .await;
    assert_eq!(outcome["status"], "COMPLETED");
    // A refused request logs too.
    let refused = cluster
        .http
        .get(cluster.url(
            Service::Payment,
            &format!("/v1/payments/{}", outcome["id"].as_str().unwrap()),
        ))
        .bearer_auth(format!("{}x", fan.member))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let (issuer_key, pass_key) = (
        cluster.issuer.private_key_base64(),
        cluster.pass_private_key(),
    );
    cluster.stop().await;

    let logs = ticket_runtime::testkit::captured_logs();
    assert!(
        logs.contains("listening") && logs.contains("infrastructure ready"),
        "the capture saw the run: {} bytes: {}",
        logs.len(),
        logs.chars().take(300).collect::<String>()
    );
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap().to_string();
    for (what, secret) in [
        ("pass", fan.pass.clone()),
        ("pass signature", signature(&fan.pass)),
        ("member token", fan.member.clone()),
        ("member token signature", signature(&fan.member)),
        ("admin key", crate::support::ADMIN_KEY.to_string()),
        ("issuer key", issuer_key),
        ("pass signing key", pass_key),
    ] {
        assert!(!logs.contains(&secret), "the {what} appears in the logs");
    }
}

async fn poll_fan(cluster: &Cluster, (user, token): &(Uuid, String)) -> Value {
    cluster.poll(*user, token).await
}
