//! The waiting line with real services: arrival order, positions, drop-outs,
//! and passes that the other services verify on their own.

use crate::support::{assert_refused, Call, Cluster, Fan, Knobs, PASS_HEADER, WAIT};
use reqwest::StatusCode;
use serde_json::Value;
use shared_events::{Event, Service, Topic};
use std::collections::HashMap;
use std::time::Duration;
use ticket_runtime::auth::pass::PassClaims;
use ticket_runtime::dev::testkit::{eventually, EventTap};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_verify_in_other_services_and_bad_ones_are_refused_with_distinct_codes() {
    let cluster = Cluster::start(false, Knobs::default()).await;
    let (concert, schedule) = cluster.schedule().await;
    let fan = cluster.fan(&concert).await;

    let (status, body) = cluster.reserve(&fan, &schedule, 1).await;
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
    let (stranger_key, _) = ticket_runtime::dev::keys::generate_key_pair();
    let forged = ticket_runtime::auth::pass::PassSigner::from_base64(&stranger_key)
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
    let reserve = Call::post(
        Service::Reservation,
        "/v1/reservations",
        format!(r#"{{"schedule_id":"{schedule}","seat_no":1}}"#),
    );
    let pay = Call::post(
        Service::Payment,
        "/v1/payments",
        format!(r#"{{"reservation_id":"{}"}}"#, Uuid::new_v4()),
    );
    for (name, pass, code) in cases {
        let member = Some(fan.member.as_str());
        let response = cluster.send(&reserve, member, pass.as_deref()).await;
        assert_refused(response, 401, code, &format!("reservation, {name}")).await;
        // Payment checks the concert against the reservation, which this one
        // lacks: a pass for another concert gets as far as that.
        let (status, code) = match code {
            "pass_wrong_concert" => (404, "reservation_not_found"),
            _ => (401, code),
        };
        let response = cluster.send(&pay, member, pass.as_deref()).await;
        assert_refused(response, status, code, &format!("payment, {name}")).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_bad_input_gets_a_4xx_and_a_code() {
    let cluster = Cluster::start(false, Knobs::default()).await;
    let (concert, _) = cluster.schedule().await;
    let fan = cluster.fan(&concert).await;
    let unknown = Uuid::new_v4();
    let join = |body: &str| Call::post(Service::Queue, "/v1/queue/tokens", body);
    let cases = [
        (
            "malformed json",
            join("{\"concert_id\":"),
            400,
            "malformed_json",
        ),
        (
            "concert id not a uuid",
            join(r#"{"concert_id":"me"}"#),
            422,
            "invalid_body",
        ),
        ("concert id missing", join("{}"), 422, "invalid_body"),
        (
            "concert id a number",
            join(r#"{"concert_id":7}"#),
            422,
            "invalid_body",
        ),
        (
            "unknown concert",
            join(&format!(r#"{{"concert_id":"{unknown}"}}"#)),
            404,
            "concert_not_found",
        ),
        (
            "unknown token",
            Call::get(Service::Queue, format!("/v1/queue/tokens/{unknown}")),
            404,
            "token_not_found",
        ),
        (
            "token id not a uuid",
            Call::get(Service::Queue, "/v1/queue/tokens/abc"),
            400,
            "invalid_path",
        ),
    ];
    for (name, call, status, code) in cases {
        let response = cluster.send(&call, Some(&fan.member), None).await;
        assert_refused(response, status, code, name).await;
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

    let reserve = |body: String| Call::post(Service::Reservation, "/v1/reservations", body);
    let seat = |seat_no: &str| {
        reserve(format!(
            r#"{{"schedule_id":"{schedule}","seat_no":{seat_no}}}"#
        ))
    };
    let reservation = |rest: &str| format!("/v1/reservations/{rest}");
    let get_reservation = |rest: &str| Call::get(Service::Reservation, reservation(rest));
    let pay = |id: &str| {
        let body = format!(r#"{{"reservation_id":{id}}}"#);
        Call::post(Service::Payment, "/v1/payments", body)
    };
    let get_payment = |rest: &str| Call::get(Service::Payment, format!("/v1/payments/{rest}"));
    let (unknown, hold_id) = (unknown.to_string(), hold_id.to_string());
    let quoted = |id: &str| format!("\"{id}\"");
    let cases: Vec<(&str, Call, &Fan, u16, &str)> = vec![
        ("seat zero", seat("0"), &fan, 422, "invalid_seat"),
        ("seat 51", seat("51"), &fan, 422, "invalid_seat"),
        ("seat as text", seat("\"one\""), &fan, 422, "invalid_body"),
        (
            "schedule not a uuid",
            reserve(r#"{"schedule_id":"x","seat_no":1}"#.into()),
            &fan,
            422,
            "invalid_body",
        ),
        (
            "unknown schedule",
            reserve(format!(r#"{{"schedule_id":"{unknown}","seat_no":1}}"#)),
            &fan,
            404,
            "schedule_not_found",
        ),
        (
            "malformed json",
            reserve("{".into()),
            &fan,
            400,
            "malformed_json",
        ),
        (
            "unknown reservation",
            get_reservation(&unknown),
            &fan,
            404,
            "reservation_not_found",
        ),
        (
            "someone else's",
            get_reservation(&hold_id),
            &other,
            404,
            "reservation_not_found",
        ),
        (
            "reservation id not a uuid",
            get_reservation("42"),
            &fan,
            400,
            "invalid_path",
        ),
        (
            "wait too long",
            get_reservation(&format!("{hold_id}?wait_ms=999999")),
            &fan,
            400,
            "invalid_wait",
        ),
        (
            "wait negative",
            get_reservation(&format!("{hold_id}?wait_ms=-1")),
            &fan,
            400,
            "invalid_query",
        ),
        (
            "unknown seen status",
            get_reservation(&format!("{hold_id}?wait_ms=10&seen_status=NAPPING")),
            &fan,
            400,
            "invalid_seen_status",
        ),
        (
            "cancel someone else's",
            Call::delete(Service::Reservation, reservation(&hold_id)),
            &other,
            404,
            "reservation_not_found",
        ),
        (
            "pay unknown reservation",
            pay(&quoted(&unknown)),
            &fan,
            404,
            "reservation_not_found",
        ),
        (
            "pay someone else's hold",
            pay(&quoted(&hold_id)),
            &other,
            404,
            "reservation_not_found",
        ),
        ("pay with garbage id", pay("12"), &fan, 422, "invalid_body"),
        (
            "unknown payment",
            get_payment(&unknown),
            &fan,
            404,
            "payment_not_found",
        ),
        (
            "payment id not a uuid",
            get_payment("nope"),
            &fan,
            400,
            "invalid_path",
        ),
        (
            "payment wait too long",
            get_payment(&format!("{unknown}?wait_ms=999999")),
            &fan,
            400,
            "invalid_wait",
        ),
    ];
    for (name, call, caller, status, code) in cases {
        let response = cluster
            .send(&call, Some(&caller.member), Some(&caller.pass))
            .await;
        assert_refused(response, status, code, name).await;
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
        cluster.reservation(&fan, &hold_id).await["status"],
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
    use ticket_runtime::dev::issuer::DevIssuer;
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
    let json = |value: Value| value.to_string();
    let endpoints = [
        Call::post(
            Service::Queue,
            "/v1/queue/tokens",
            json(serde_json::json!({ "concert_id": concert })),
        ),
        Call::get(Service::Queue, format!("/v1/queue/tokens/{}", fan.token)),
        Call::post(
            Service::Reservation,
            "/v1/reservations",
            json(serde_json::json!({ "schedule_id": schedule, "seat_no": 31 })),
        ),
        Call::get(Service::Reservation, format!("/v1/reservations/{hold_id}")),
        Call::delete(Service::Reservation, format!("/v1/reservations/{hold_id}")),
        Call::post(
            Service::Payment,
            "/v1/payments",
            json(serde_json::json!({ "reservation_id": hold_id })),
        ),
        Call::get(Service::Payment, format!("/v1/payments/{payment_id}")),
    ];
    for call in &endpoints {
        for (name, token, code) in &bad_tokens {
            let response = cluster.send(call, token.as_deref(), Some(&fan.pass)).await;
            assert_refused(response, 401, code, &format!("{name}: {call:?}")).await;
        }
    }
    // The other fan, well authenticated, on the first fan's things.
    let trespass = [
        (1, 404, "token_not_found"),
        (2, 403, "pass_not_yours"),
        (3, 404, "reservation_not_found"),
        (4, 404, "reservation_not_found"),
        (5, 403, "pass_not_yours"),
        (6, 404, "payment_not_found"),
    ];
    for (index, status, code) in trespass {
        let call = &endpoints[index];
        let response = cluster
            .send(call, Some(&other.member), Some(&fan.pass))
            .await;
        assert_refused(response, status, code, &format!("the other fan: {call:?}")).await;
    }
    // Joining with the other fan's token queues the other fan, whatever the body says.
    let join = Call::post(
        Service::Queue,
        "/v1/queue/tokens",
        json(serde_json::json!({ "concert_id": concert, "user_id": fan.user })),
    );
    let response = cluster.send(&join, Some(&other.member), None).await;
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

    let logs = ticket_runtime::dev::testkit::captured_logs();
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
