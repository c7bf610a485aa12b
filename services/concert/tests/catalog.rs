//! The concert catalog over HTTP, with the real broker behind its outbox.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use serde_json::{json, Value};
use shared_events::{Event, Topic};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use ticket_runtime::dev::testkit::{self, EventTap, TestDatabase, TestService};

use concert_service::app::SeatMaps;
use concert_service::domain::SeatMapFreshness;
use ticket_runtime::dev::testkit::ADMIN_KEY;
use ticket_runtime::ids::ScheduleId;

struct Service {
    app: TestService,
}

async fn spawn(postgres: bool, demo_data: bool) -> Service {
    let mut isolated = testkit::isolated::<concert_service::ConcertSettings>(
        postgres,
        "concert",
        concert_service::DEFAULTS,
    );
    let concert = &mut isolated.settings.service.concert;
    concert.demo_data = demo_data;
    Service {
        app: isolated.start(concert_service::start).await,
    }
}

impl Service {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.app.http.get(self.app.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn create(&self, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self
            .app
            .http
            .post(self.app.url("/v1/admin/concerts"))
            .json(body);
        if let Some(key) = key {
            request = request.header("X-Admin-Key", key);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

fn concert_body() -> Value {
    json!({
        "title": "Test Live",
        "venue": "Hall A",
        "schedules": [{ "starts_at": "2027-01-10T19:00:00Z" }, { "starts_at": "2027-01-11T19:00:00Z" }],
        "seat_price": 100000,
        "grades": [{ "name": "VIP", "first_seat": 1, "last_seat": 10, "price": 180000 }],
    })
}

async fn create_and_browse(postgres: bool) {
    let service = spawn(postgres, false).await;
    let tap = EventTap::new(&service.app.prefix, Topic::ConcertEvents);
    assert_eq!(service.get("/v1/concerts").await, (200, json!([])));

    let (status, created) = service.create(Some(ADMIN_KEY), &concert_body()).await;
    assert_eq!(status, 201, "{created}");
    let concert_id = created["id"].as_str().unwrap().to_string();
    let (_, concerts) = service.get("/v1/concerts").await;
    assert_eq!(concerts.as_array().unwrap().len(), 1);
    assert_eq!(concerts[0]["title"], "Test Live");
    assert_eq!(concerts[0]["venue"], "Hall A");

    let (status, schedules) = service
        .get(&format!("/v1/concerts/{concert_id}/schedules"))
        .await;
    assert_eq!(status, 200);
    let schedules = schedules.as_array().unwrap().clone();
    assert_eq!(schedules.len(), 2);
    assert_eq!(schedules[0]["starts_at"], "2027-01-10T19:00:00Z");
    for schedule in &schedules {
        assert_eq!(schedule["concert_id"], concert_id.as_str());
        assert_eq!(schedule["available_seats"], 50);
    }
    let (status, seats) = service
        .get(&format!(
            "/v1/schedules/{}/seats",
            schedules[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    let seats = seats.as_array().unwrap();
    assert_eq!(seats.len(), 50);
    assert_eq!(
        seats[0],
        json!({ "seat_no": 1, "grade": "VIP", "price": 180000, "status": "AVAILABLE" })
    );
    assert_eq!(seats[49]["price"], 100000);
    assert!(seats.iter().all(|s| s["status"] == "AVAILABLE"));

    let mut announced = HashSet::new();
    while announced.len() < 2 {
        let event = tap
            .next_matching(Duration::from_secs(30), |e| {
                matches!(e.event, Event::ConcertScheduled(_))
            })
            .await;
        let Event::ConcertScheduled(scheduled) = event.event else {
            unreachable!()
        };
        assert_eq!(scheduled.concert_id.to_string(), concert_id);
        assert_eq!(scheduled.seat_count, 50);
        announced.insert(scheduled.schedule_id.to_string());
    }
    let expected: HashSet<String> = schedules
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(announced, expected, "one ConcertScheduled per schedule");
    service.app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_concerts_that_fans_can_browse_sqlite() {
    create_and_browse(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_concerts_that_fans_can_browse_postgres() {
    create_and_browse(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_catalog_exists_on_first_start() {
    let service = spawn(false, true).await;
    let (_, concerts) = service.get("/v1/concerts").await;
    let concerts = concerts.as_array().unwrap();
    assert_eq!(concerts.len(), 3);
    for concert in concerts {
        let (_, schedules) = service
            .get(&format!(
                "/v1/concerts/{}/schedules",
                concert["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(schedules.as_array().unwrap().len(), 2);
    }
    service.app.running.stop().await;
}

/// Another method on an endpoint is 405 with `Allow`, also behind the
/// admin key; without the key it is still 401 first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_method_is_405_naming_the_allowed_one() {
    let service = spawn(false, false).await;
    let schedule = uuid::Uuid::new_v4();
    for (method, path, key, status, allow) in [
        ("PUT", "/v1/concerts".to_string(), None, 405, Some("GET")),
        (
            "POST",
            format!("/v1/schedules/{schedule}/seats"),
            None,
            405,
            Some("GET"),
        ),
        (
            "GET",
            "/v1/admin/concerts".to_string(),
            Some(ADMIN_KEY),
            405,
            Some("POST"),
        ),
        (
            "DELETE",
            "/v1/admin/seats".to_string(),
            Some(ADMIN_KEY),
            405,
            Some("GET"),
        ),
        ("GET", "/v1/admin/concerts".to_string(), None, 401, None),
    ] {
        let mut request = service.app.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            service.app.url(&path),
        );
        if let Some(key) = key {
            request = request.header("X-Admin-Key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let allowed = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(allowed.as_deref(), allow, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        let code = if status == 405 {
            "method_not_allowed"
        } else {
            "admin_key_invalid"
        };
        assert_eq!(body["code"], code, "{method} {path}");
    }
    service.app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_and_a_code() {
    let service = spawn(false, false).await;
    let unknown = uuid::Uuid::new_v4();
    for (path, status, code) in [
        (
            format!("/v1/concerts/{unknown}/schedules"),
            404,
            "concert_not_found",
        ),
        (
            "/v1/concerts/not-a-uuid/schedules".to_string(),
            400,
            "invalid_path",
        ),
        (
            format!("/v1/schedules/{unknown}/seats"),
            404,
            "schedule_not_found",
        ),
        ("/v1/schedules/42/seats".to_string(), 400, "invalid_path"),
        ("/v1/concert".to_string(), 404, "route_not_found"),
    ] {
        let (got, body) = service.get(&path).await;
        assert_eq!(
            (got, body["code"].as_str().unwrap()),
            (status, code),
            "{path}"
        );
    }

    let (status, body) = service.create(None, &concert_body()).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (401, "admin_key_invalid")
    );
    let (status, body) = service.create(Some("wrong"), &concert_body()).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (401, "admin_key_invalid")
    );
    // Without the key, a bad body is not even read: 401, never 400 or 422.
    for (name, body) in [
        ("malformed json", "{"),
        ("wrong shape", r#"{"title": 5}"#),
        ("empty", ""),
    ] {
        let response = service
            .app
            .http
            .post(service.app.url("/v1/admin/concerts"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (401, "admin_key_invalid"),
            "{name}"
        );
    }

    let mut cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "missing title",
            json!({"venue": "v", "schedules": [], "seat_price": 1}),
            422,
            "invalid_body",
        ),
        (
            "price as text",
            json!({"title": "t", "venue": "v", "schedules": [], "seat_price": "1"}),
            422,
            "invalid_body",
        ),
        (
            "bad start time",
            json!({"title": "t", "venue": "v", "schedules": [{"starts_at": "tomorrow"}], "seat_price": 1}),
            422,
            "invalid_body",
        ),
    ];
    let mut with = |name, field: &str, value: Value| {
        let mut body = concert_body();
        body[field] = value;
        cases.push((name, body, 422, "invalid_concert"));
    };
    with("no schedules", "schedules", json!([]));
    with("zero price", "seat_price", json!(0));
    with("negative price", "seat_price", json!(-100));
    with("huge price", "seat_price", json!(10_000_000_000i64));
    with("blank title", "title", json!("   "));
    with(
        "grade beyond seat 50",
        "grades",
        json!([{ "name": "A", "first_seat": 40, "last_seat": 51, "price": 1 }]),
    );
    with(
        "overlapping grades",
        "grades",
        json!([
            { "name": "A", "first_seat": 1, "last_seat": 5, "price": 1 },
            { "name": "B", "first_seat": 5, "last_seat": 9, "price": 1 },
        ]),
    );
    with(
        "same start twice",
        "schedules",
        json!([{ "starts_at": "2027-01-10T19:00:00Z" }, { "starts_at": "2027-01-10T19:00:00Z" }]),
    );
    for (name, body, status, code) in cases {
        let (got, response) = service.create(Some(ADMIN_KEY), &body).await;
        assert_eq!(
            (got, response["code"].as_str().unwrap_or_default()),
            (status, code),
            "{name}: {response}"
        );
    }
    let malformed = service
        .app
        .http
        .post(service.app.url("/v1/admin/concerts"))
        .header("X-Admin-Key", ADMIN_KEY)
        .header("content-type", "application/json")
        .body("{\"title\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        service.get("/v1/concerts").await,
        (200, json!([])),
        "nothing was created"
    );
    service.app.running.stop().await;
}

/// No default credentials: a service without an admin key (or with a short
/// one) refuses to start, rather than run with an open admin API (the check
/// is the runtime's, shared by every service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_to_start_without_an_admin_key() {
    testkit::init_tracing();
    let db = TestDatabase::sqlite("nokey");
    for key in [None, Some(""), Some("short")] {
        let mut settings = testkit::settings::<concert_service::ConcertSettings>(
            concert_service::DEFAULTS,
            &db.url,
            &testkit::unique_prefix(),
        );
        settings.admin.key = key.map(ticket_runtime::Secret::new);
        let refused = concert_service::start(settings).await;
        let error = refused.err().expect("refused to start").to_string();
        assert!(error.contains("APP__ADMIN__KEY"), "{error}");
    }
}

/// A seat held before holds carried their expiry has none stored; the
/// concert service still releases it once it is older than a hold was
/// then, and leaves a recent one alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_from_before_expiries_were_stored_is_released_too() {
    use diesel::sql_types::{Integer, Text, Timestamp};
    use diesel::RunQueryDsl;
    let service = spawn(false, true).await;
    let (_, concerts) = service.get("/v1/concerts").await;
    let concert = concerts[0]["id"].as_str().unwrap().to_string();
    let (_, schedules) = service
        .get(&format!("/v1/concerts/{concert}/schedules"))
        .await;
    let schedule = schedules[0]["id"].as_str().unwrap().to_string();
    let db = service.app.running.db.clone();
    let now = chrono::Utc::now();
    for (seat_no, held_at) in [(1, now - chrono::TimeDelta::minutes(30)), (2, now)] {
        let schedule = schedule.clone();
        db.run(move |conn| {
            diesel::sql_query(
                "UPDATE seats SET status = 'HELD', reservation_id = $1, \
                 hold_expires_at = NULL, updated_at = $2 \
                 WHERE schedule_id = $3 AND seat_no = $4",
            )
            .bind::<Text, _>(uuid::Uuid::now_v7().to_string())
            .bind::<Timestamp, _>(held_at.naive_utc())
            .bind::<Text, _>(schedule)
            .bind::<Integer, _>(seat_no)
            .execute(conn)
            .map_err(ticket_runtime::DbError::from)
        })
        .await
        .unwrap();
    }
    let catalog = concert_service::app::Catalog {
        db,
        holds: hold_policy(),
        clock: ticket_runtime::Clock::system(),
        seat_maps: seat_maps(Duration::ZERO),
    };
    catalog.release_lapsed_holds().await.unwrap();
    let (_, seats) = service
        .get(&format!("/v1/schedules/{schedule}/seats"))
        .await;
    assert_eq!(seats[0]["status"], "AVAILABLE", "the old hold is released");
    assert_eq!(seats[1]["status"], "HELD", "a recent one is not");
    service.app.running.stop().await;
}

/// Defect: a NUL byte in a title, venue or grade name was accepted, and
/// PostgreSQL refused to store it: a 500. It is refused before any SQL,
/// with the same answer on both databases.
async fn control_characters_are_refused(postgres: bool) {
    let service = spawn(postgres, false).await;
    let mut cases = Vec::new();
    for (field, value) in [
        ("title", json!("Test\u{0}Live")),
        ("venue", json!("Hall\u{0}")),
        ("title", json!("Test\nLive")),
    ] {
        let mut body = concert_body();
        body[field] = value;
        cases.push((field, body));
    }
    let mut body = concert_body();
    body["grades"][0]["name"] = json!("V\u{0}IP");
    cases.push(("grade name", body));
    for (field, body) in cases {
        let (status, response) = service.create(Some(ADMIN_KEY), &body).await;
        assert_eq!(
            (status, response["code"].as_str().unwrap_or_default()),
            (422, "invalid_concert"),
            "{field}: {response}"
        );
        let message = response["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{field}: {message}");
    }
    assert_eq!(
        service.get("/v1/concerts").await,
        (200, json!([])),
        "nothing was created"
    );
    service.app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_a_concert_are_refused_sqlite() {
    control_characters_are_refused(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_a_concert_are_refused_postgres() {
    control_characters_are_refused(true).await;
}

/// The catalog of a concert service without its HTTP and Kafka (the
/// background jobs' view), on its own database, its clock `ahead` of the
/// system's.
async fn catalog_on(
    postgres: bool,
    ahead: chrono::TimeDelta,
) -> (TestDatabase, concert_service::app::Catalog) {
    testkit::init_tracing();
    let database = TestDatabase::on(postgres, "backstop");
    let db = database.connect(concert_service::SCHEMA).await;
    let catalog = concert_service::app::Catalog {
        db,
        holds: hold_policy(),
        clock: ticket_runtime::Clock::off_by(ahead),
        seat_maps: seat_maps(Duration::ZERO),
    };
    (database, catalog)
}

fn hold_policy() -> concert_service::domain::HoldPolicy {
    concert_service::domain::HoldPolicy {
        hold_ttl_secs: 300,
        release_grace_secs: 60,
        sweep_interval_ms: 1000,
    }
}

/// Seat maps in memory as the service keeps them, answering for `bound`.
fn seat_maps(bound: Duration) -> SeatMaps {
    SeatMaps::new(freshness(bound), concert_service::api::seat_map_json)
}

fn freshness(bound: Duration) -> SeatMapFreshness {
    SeatMapFreshness {
        seat_map_max_staleness_ms: bound.as_millis().try_into().unwrap(),
    }
}

/// The seats of `schedule` as stored (not as any instance remembers them).
async fn stored_seats(
    catalog: &concert_service::app::Catalog,
    schedule: ScheduleId,
) -> Vec<concert_service::domain::Seat> {
    catalog
        .db
        .run(move |conn| concert_service::store::seats_of(conn, schedule))
        .await
        .unwrap()
        .unwrap()
}

/// A concert with `schedules` schedules of 50 seats; their ids.
async fn concert_with(catalog: &concert_service::app::Catalog, schedules: i64) -> Vec<ScheduleId> {
    let first: chrono::DateTime<chrono::Utc> = "2027-01-10T19:00:00Z".parse().unwrap();
    let plan = concert_service::domain::ConcertPlan {
        title: "Backstop Live".into(),
        venue: "Hall B".into(),
        schedules: (0..schedules)
            .map(|day| first + chrono::TimeDelta::days(day))
            .collect(),
        seat_price: 100_000,
        grades: vec![],
    };
    let concert = concert_service::domain::NewConcert::try_from(plan).unwrap();
    let (_, schedules) = catalog.create(concert).await.unwrap();
    schedules.into_iter().map(|s| s.id).collect()
}

/// Marks seats HELD for `reservation` (none: a seat without one) until
/// `expires_at`.
async fn hold(
    catalog: &concert_service::app::Catalog,
    schedule: ScheduleId,
    seats: std::ops::RangeInclusive<i32>,
    reservation: Option<uuid::Uuid>,
    expires_at: chrono::DateTime<chrono::Utc>,
) {
    use diesel::sql_types::{Integer, Nullable, Text, Timestamp};
    use diesel::RunQueryDsl;
    catalog
        .db
        .run(move |conn| {
            diesel::sql_query(
                "UPDATE seats SET status = 'HELD', reservation_id = $1, hold_expires_at = $2 \
                 WHERE schedule_id = $3 AND seat_no BETWEEN $4 AND $5",
            )
            .bind::<Nullable<Text>, _>(reservation.map(|r| r.to_string()))
            .bind::<Timestamp, _>(expires_at.naive_utc())
            .bind::<Text, _>(schedule.to_string())
            .bind::<Integer, _>(*seats.start())
            .bind::<Integer, _>(*seats.end())
            .execute(conn)
            .map_err(ticket_runtime::DbError::from)
        })
        .await
        .unwrap();
}

/// How many seats of `schedule` are in `status`.
async fn seats_in(
    catalog: &concert_service::app::Catalog,
    schedule: ScheduleId,
    status: concert_service::domain::SeatStatus,
) -> usize {
    let seats = stored_seats(catalog, schedule).await;
    seats.iter().filter(|s| s.status == status).count()
}

/// Events of `event_type` waiting in the concert service's outbox.
async fn in_outbox(catalog: &concert_service::app::Catalog, event_type: &'static str) -> i64 {
    use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
    use ticket_runtime::db::schema::outbox;
    catalog
        .db
        .run(move |conn| {
            outbox::table
                .filter(outbox::event_type.eq(event_type))
                .count()
                .get_result(conn)
                .map_err(ticket_runtime::DbError::from)
        })
        .await
        .unwrap()
}

/// Defect: the backstop matched a lapsed hold's reservation with
/// `reservation_id = NULL`, never true, so a HELD seat without a
/// reservation was never released, and 200 of them, first in line, stopped
/// it for good: the holds behind them stayed HELD.
async fn seats_held_for_no_reservation_do_not_stop_the_backstop(postgres: bool) {
    use concert_service::domain::SeatStatus;
    let (_database, catalog) = catalog_on(postgres, chrono::TimeDelta::zero()).await;
    let schedules = concert_with(&catalog, 5).await;
    let now = chrono::Utc::now();
    for schedule in &schedules[..4] {
        hold(
            &catalog,
            *schedule,
            1..=50,
            None,
            now - chrono::TimeDelta::hours(2),
        )
        .await;
    }
    let reservation = uuid::Uuid::now_v7();
    let behind = schedules[4];
    hold(
        &catalog,
        behind,
        1..=1,
        Some(reservation),
        now - chrono::TimeDelta::hours(1),
    )
    .await;
    for _ in 0..3 {
        catalog.release_lapsed_holds().await.unwrap();
    }
    for schedule in &schedules {
        assert_eq!(
            seats_in(&catalog, *schedule, SeatStatus::Held).await,
            0,
            "every lapsed hold is released"
        );
    }
    assert_eq!(
        in_outbox(&catalog, "SeatReleased").await,
        1,
        "the reservation behind them is told; nobody else is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_held_for_no_reservation_do_not_stop_the_backstop_sqlite() {
    seats_held_for_no_reservation_do_not_stop_the_backstop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_held_for_no_reservation_do_not_stop_the_backstop_postgres() {
    seats_held_for_no_reservation_do_not_stop_the_backstop(true).await;
}

/// Defect: the backstop compared holds with its instance's own clock, so
/// an instance whose clock ran ahead released seats that the reservation
/// service still held for their fans. Now the database's clock decides:
/// a hold still running is left alone however far ahead the instance's
/// clock is, and one that ran out is released however far behind it is.
async fn an_instance_clock_off_does_not_move_the_backstop(postgres: bool) {
    use concert_service::domain::SeatStatus;
    for ahead in [
        chrono::TimeDelta::minutes(20),
        chrono::TimeDelta::minutes(-20),
    ] {
        let (_database, catalog) = catalog_on(postgres, ahead).await;
        let schedule = concert_with(&catalog, 1).await[0];
        let now = chrono::Utc::now();
        // Held a minute ago for the policy's five minutes: still running.
        hold(
            &catalog,
            schedule,
            1..=1,
            Some(uuid::Uuid::now_v7()),
            now + chrono::TimeDelta::minutes(4),
        )
        .await;
        // Ran out five minutes ago, past the minute's grace.
        hold(
            &catalog,
            schedule,
            2..=2,
            Some(uuid::Uuid::now_v7()),
            now - chrono::TimeDelta::minutes(5),
        )
        .await;
        catalog.release_lapsed_holds().await.unwrap();
        let seats = stored_seats(&catalog, schedule).await;
        assert_eq!(
            (seats[0].status, seats[1].status),
            (SeatStatus::Held, SeatStatus::Available),
            "instance clock {ahead} off"
        );
        assert_eq!(seats_in(&catalog, schedule, SeatStatus::Held).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_clock_off_does_not_move_the_backstop_sqlite() {
    an_instance_clock_off_does_not_move_the_backstop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_clock_off_does_not_move_the_backstop_postgres() {
    an_instance_clock_off_does_not_move_the_backstop(true).await;
}

/// One instance of the concert service without its HTTP and Kafka: its
/// catalog, and its consumer's handler, which a test feeds events to as
/// the consumer does.
struct Instance {
    catalog: concert_service::app::Catalog,
    events: std::sync::Arc<concert_service::events::ConcertEvents>,
}

/// An instance on `database` (a pool of its own) whose seat maps answer
/// for `bound`.
async fn instance(database: &TestDatabase, bound: Duration) -> Instance {
    let seat_maps = seat_maps(bound);
    let catalog = concert_service::app::Catalog {
        db: database.connect(concert_service::SCHEMA).await,
        holds: hold_policy(),
        clock: ticket_runtime::Clock::system(),
        seat_maps: seat_maps.clone(),
    };
    let events = concert_service::events::ConcertEvents {
        saga: concert_service::app::saga::SeatSaga {
            holds: hold_policy(),
            seat_maps,
        },
    };
    Instance {
        catalog,
        events: std::sync::Arc::new(events),
    }
}

impl Instance {
    /// Applies `event` as the consumer does: in one transaction, then
    /// tells the handler it committed.
    async fn apply(&self, event: impl Into<Event>) {
        use ticket_runtime::messaging::consumer::{apply_once, Outcome};
        use ticket_runtime::EventHandler;
        let envelope = std::sync::Arc::new(shared_events::Envelope::new(event));
        let outcome = apply_once(&self.catalog.db, self.events.clone(), envelope.clone())
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Applied);
        self.events.committed(&envelope);
    }

    /// The status of seat `seat_no` in the seat map this instance answers.
    async fn seat_status(&self, schedule: ScheduleId, seat_no: usize) -> String {
        let body = self.catalog.seat_map(schedule).await.unwrap();
        let seats: Value = serde_json::from_slice(&body).unwrap();
        seats[seat_no - 1]["status"].as_str().unwrap().to_string()
    }
}

/// A new concert of one schedule: its concert and schedule ids.
async fn one_schedule(
    catalog: &concert_service::app::Catalog,
) -> (ticket_runtime::ids::ConcertId, ScheduleId) {
    let plan = concert_service::domain::ConcertPlan {
        title: "Seat Map Live".into(),
        venue: "Hall C".into(),
        schedules: vec!["2027-02-01T19:00:00Z".parse().unwrap()],
        seat_price: 50_000,
        grades: vec![],
    };
    let concert = concert_service::domain::NewConcert::try_from(plan).unwrap();
    let (created, schedules) = catalog.create(concert).await.unwrap();
    (created.id, schedules[0].id)
}

/// Two instances on one database. A's seat maps answer for an hour, so
/// that only forgetting its copy when its own change commits can show the
/// change; B's for a second, so that B shows A's changes once its copy is
/// that old, and (when the machine keeps up) not before.
async fn each_instance_answers_its_own_writes_at_once_and_the_others_within_the_bound(
    postgres: bool,
) {
    use shared_events::{ReservationConfirmed, ReservationRequested};
    testkit::init_tracing();
    let database = TestDatabase::on(postgres, "seat_maps");
    let a = instance(&database, Duration::from_secs(3600)).await;
    let bound = Duration::from_secs(1);
    let b = instance(&database, bound).await;
    let (concert, schedule) = one_schedule(&a.catalog).await;
    assert_eq!(
        b.seat_status(schedule, 7).await,
        "AVAILABLE",
        "a schedule another instance created shows at once: unknown ones are never kept"
    );

    // A hold through A.
    assert_eq!(a.seat_status(schedule, 7).await, "AVAILABLE");
    let b_read = Instant::now();
    assert_eq!(b.seat_status(schedule, 7).await, "AVAILABLE");
    let b_copy_by = Instant::now();
    let reservation = uuid::Uuid::now_v7();
    a.apply(ReservationRequested {
        reservation_id: reservation,
        user_id: uuid::Uuid::now_v7(),
        concert_id: concert.get(),
        schedule_id: schedule.get(),
        seat_no: 7,
    })
    .await;
    assert_eq!(a.seat_status(schedule, 7).await, "HELD", "A: at once");
    let asked = Instant::now();
    let seen = b.seat_status(schedule, 7).await;
    // B's copy began its read after `b_read`: while younger than the bound
    // it answers, and it was read before the hold.
    if asked.duration_since(b_read) < bound {
        assert_eq!(seen, "AVAILABLE", "B answers from its copy");
    }
    tokio::time::sleep_until((b_copy_by + bound).into()).await;
    assert_eq!(
        b.seat_status(schedule, 7).await,
        "HELD",
        "B: once its copy is as old as the bound"
    );

    // The sale through A.
    let b_copy_by = Instant::now();
    a.apply(ReservationConfirmed {
        reservation_id: reservation,
        payment_id: uuid::Uuid::now_v7(),
        schedule_id: schedule.get(),
        seat_no: 7,
    })
    .await;
    assert_eq!(a.seat_status(schedule, 7).await, "SOLD", "A: at once");
    tokio::time::sleep_until((b_copy_by + bound).into()).await;
    assert_eq!(
        b.seat_status(schedule, 7).await,
        "SOLD",
        "B: within the bound"
    );

    // A lapsed hold released by A's backstop (held here behind both
    // instances' backs, as a hold from before expiries were stored).
    hold(
        &a.catalog,
        schedule,
        9..=9,
        Some(uuid::Uuid::now_v7()),
        chrono::Utc::now() - chrono::TimeDelta::hours(1),
    )
    .await;
    a.catalog.seat_maps.changed(schedule);
    assert_eq!(a.seat_status(schedule, 9).await, "HELD");
    a.catalog.release_lapsed_holds().await.unwrap();
    assert_eq!(a.seat_status(schedule, 9).await, "AVAILABLE", "A: at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_answers_its_own_writes_at_once_and_the_others_within_the_bound_sqlite() {
    each_instance_answers_its_own_writes_at_once_and_the_others_within_the_bound(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_answers_its_own_writes_at_once_and_the_others_within_the_bound_postgres() {
    each_instance_answers_its_own_writes_at_once_and_the_others_within_the_bound(true).await;
}

/// How many seat maps [`counted_seat_map_json`] wrote: one per read of the
/// database.
static SEAT_MAPS_WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counted_seat_map_json(seats: Vec<concert_service::domain::Seat>) -> serde_json::Result<Vec<u8>> {
    SEAT_MAPS_WRITTEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    concert_service::api::seat_map_json(seats)
}

/// Requests for a seat map that is not in memory wait for one read of it
/// together, instead of each reading the database; so do those after a
/// change and after the copy grew too old. An unknown schedule is 404
/// for every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_a_seat_map_read_it_once() {
    use std::sync::atomic::Ordering;
    testkit::init_tracing();
    let database = TestDatabase::sqlite("seat_map_once");
    let bound = Duration::from_millis(500);
    let catalog = concert_service::app::Catalog {
        db: database.connect(concert_service::SCHEMA).await,
        holds: hold_policy(),
        clock: ticket_runtime::Clock::system(),
        seat_maps: SeatMaps::new(freshness(bound), counted_seat_map_json),
    };
    let (_, schedule) = one_schedule(&catalog).await;
    let together = || {
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let catalog = catalog.clone();
            requests.spawn(async move { catalog.seat_map(schedule).await.unwrap() });
        }
        requests.join_all()
    };

    let bodies = together().await;
    assert_eq!(SEAT_MAPS_WRITTEN.load(Ordering::SeqCst), 1, "one read");
    let first = bodies[0].clone();
    assert!(bodies.iter().all(|b| *b == first));
    let seats: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(seats.as_array().unwrap().len(), 50);

    catalog.seat_maps.changed(schedule);
    together().await;
    assert_eq!(
        SEAT_MAPS_WRITTEN.load(Ordering::SeqCst),
        2,
        "after a change"
    );

    tokio::time::sleep(bound).await;
    together().await;
    assert_eq!(SEAT_MAPS_WRITTEN.load(Ordering::SeqCst), 3, "once too old");

    let unknown = ScheduleId::generate();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let catalog = catalog.clone();
        requests.spawn(async move { catalog.seat_map(unknown).await });
    }
    for answer in requests.join_all().await {
        assert!(matches!(
            answer,
            Err(concert_service::app::ConcertError::ScheduleNotFound(id)) if id == unknown
        ));
    }
}

/// The service's own saga steps, taken off the broker: each shows on its
/// very next seat-map read over HTTP, although its seat maps answer for an
/// hour — only forgetting the copy when the step commits can show it.
async fn the_services_own_seat_changes_show_on_its_next_read(postgres: bool) {
    use shared_events::{
        EventType, Reason, ReservationCancelled, ReservationConfirmed, ReservationRequested,
    };
    use ticket_runtime::{DbError, Migrations, NoServiceSettings, ServiceRuntime};
    let mut isolated = testkit::isolated::<concert_service::ConcertSettings>(
        postgres,
        "concert",
        concert_service::DEFAULTS,
    );
    let concert = &mut isolated.settings.service.concert;
    concert.demo_data = false;
    concert.seat_maps.seat_map_max_staleness_ms = 3_600_000;
    let prefix = isolated.prefix.clone();
    let service = Service {
        app: isolated.start(concert_service::start).await,
    };
    let (status, created) = service.create(Some(ADMIN_KEY), &concert_body()).await;
    assert_eq!(status, 201, "{created}");
    let concert: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let schedule: uuid::Uuid = created["schedules"][0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let seats = format!("/v1/schedules/{schedule}/seats");
    let seat_7 = || async { service.get(&seats).await.1[6]["status"].clone() };
    assert_eq!(seat_7().await, "AVAILABLE");

    // The reservation service, as far as this one can tell: its events,
    // published through an outbox of its own.
    let reservations_db = TestDatabase::on(postgres, "reservation");
    let reservations = ServiceRuntime::start(
        shared_events::Service::Reservation,
        testkit::settings::<NoServiceSettings>("", &reservations_db.url, &prefix),
        Migrations::NONE,
    )
    .await
    .unwrap();
    let tap = EventTap::new(&prefix, Topic::ConcertEvents);
    let reservation = uuid::Uuid::now_v7();
    let step = |event: Event, answer: EventType| {
        let db = reservations.db.clone();
        let tap = &tap;
        async move {
            let envelope = shared_events::Envelope::new(event);
            db.transaction(move |tx| tx.publish(&envelope))
                .await
                .map_err(|e: DbError| e)
                .unwrap();
            tap.next_matching(Duration::from_secs(30), |e| {
                e.event_type() == answer && e.event.reservation_id() == Some(reservation)
            })
            .await;
        }
    };

    step(
        ReservationRequested {
            reservation_id: reservation,
            user_id: uuid::Uuid::now_v7(),
            concert_id: concert,
            schedule_id: schedule,
            seat_no: 7,
        }
        .into(),
        EventType::SeatHeld,
    )
    .await;
    assert_eq!(seat_7().await, "HELD", "the hold, at once");

    let payment = uuid::Uuid::now_v7();
    step(
        ReservationConfirmed {
            reservation_id: reservation,
            payment_id: payment,
            schedule_id: schedule,
            seat_no: 7,
        }
        .into(),
        EventType::SeatSold,
    )
    .await;
    assert_eq!(seat_7().await, "SOLD", "the sale, at once");

    step(
        ReservationCancelled {
            reservation_id: reservation,
            schedule_id: schedule,
            seat_no: 7,
            reason: Reason::PaymentFailed,
            payment_id: Some(payment),
        }
        .into(),
        EventType::SeatReleased,
    )
    .await;
    assert_eq!(seat_7().await, "AVAILABLE", "the release, at once");
    service.app.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_seat_changes_show_on_its_next_read_sqlite() {
    the_services_own_seat_changes_show_on_its_next_read(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_seat_changes_show_on_its_next_read_postgres() {
    the_services_own_seat_changes_show_on_its_next_read(true).await;
}
