//! Holds asked for through a pass, against the reservation service's own
//! database (SQLite and PostgreSQL); the concert service's answers are not
//! needed to see what one pass may ask for.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use reservation_service::app::{ReservationError, Reservations};
use reservation_service::domain::{HoldPolicy, Reservation, Status};
use reservation_service::store;
use ticket_runtime::auth::pass::{Pass, PassClaims};
use ticket_runtime::dev::testkit::{self, TestDatabase};
use ticket_runtime::http::waiters::Waiters;
use ticket_runtime::ids::{ConcertId, ReservationId, ScheduleId};
use ticket_runtime::DbError;
use uuid::Uuid;

const MAX_LIVE_PER_PASS: u32 = 4;

struct Fixture {
    app: Reservations,
    schedule: ScheduleId,
    concert: ConcertId,
    _database: TestDatabase,
}

async fn fixture(postgres: bool) -> Fixture {
    testkit::init_tracing();
    let database = TestDatabase::on(postgres, "holds");
    let db = database.connect(reservation_service::SCHEMA).await;
    let app = Reservations {
        db,
        policy: HoldPolicy {
            pending_deadline_secs: 30,
            // Answer at once: no concert service decides these holds.
            decision_wait_ms: 0,
            max_wait_ms: 0,
            sweep_interval_ms: 500,
            max_live_per_pass: MAX_LIVE_PER_PASS,
        },
        waiters: Waiters::default(),
    };
    let (schedule, concert) = (ScheduleId::generate(), ConcertId::generate());
    app.db
        .run(move |conn| store::remember_schedule(conn, schedule, concert))
        .await
        .unwrap();
    Fixture {
        app,
        schedule,
        concert,
        _database: database,
    }
}

impl Fixture {
    /// A pass from the waiting line for this concert, for a new fan.
    fn pass(&self) -> Pass {
        let now = chrono::Utc::now().timestamp();
        Pass(PassClaims {
            sub: Uuid::new_v4(),
            concert_id: self.concert.get(),
            jti: Uuid::new_v4(),
            iat: now,
            exp: now + 600,
        })
    }

    async fn hold(&self, pass: &Pass, seat_no: i64) -> Result<Reservation, ReservationError> {
        self.app.request_hold(pass, self.schedule, seat_no).await
    }

    /// Moves a reservation on, as the saga would.
    async fn set_status(&self, id: ReservationId, status: Status) {
        use diesel::sql_types::Text;
        use diesel::RunQueryDsl;
        self.app
            .db
            .run(move |conn| {
                diesel::sql_query("UPDATE reservations SET status = $1 WHERE id = $2")
                    .bind::<Text, _>(status.as_str())
                    .bind::<Text, _>(id.to_string())
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
    }
}

fn is_hold_limit(result: &Result<Reservation, ReservationError>) -> bool {
    matches!(result, Err(ReservationError::PassHoldLimit(limit)) if limit.max == MAX_LIVE_PER_PASS)
}

/// Defect: one pass could hold every seat of a schedule, and again once
/// those holds expired. Now a pass has at most `max_live_per_pass`
/// reservations asked for or held at once; the next is refused until one
/// of them ends (expired, cancelled, rejected or paid for).
async fn a_pass_holds_a_few_seats_at_a_time(postgres: bool) {
    let fixture = fixture(postgres).await;
    let pass = fixture.pass();
    let mut live = Vec::new();
    for seat_no in 1..=i64::from(MAX_LIVE_PER_PASS) {
        live.push(fixture.hold(&pass, seat_no).await.unwrap());
    }
    assert!(live.iter().all(|r| r.status == Status::Pending));
    let refused = fixture.hold(&pass, 10).await;
    assert!(is_hold_limit(&refused), "{:?}", refused.map(|r| r.status));

    // Held, awaiting payment: still live.
    fixture.set_status(live[0].id, Status::Held).await;
    assert!(is_hold_limit(&fixture.hold(&pass, 10).await));

    // Another pass (another fan) is not limited by this one's holds.
    fixture.hold(&fixture.pass(), 10).await.unwrap();

    // Each reservation that ends makes room for one more.
    for (n, ended) in [
        Status::Expired,
        Status::Cancelled,
        Status::Rejected,
        Status::Confirmed,
    ]
    .into_iter()
    .enumerate()
    {
        fixture.set_status(live[n].id, ended).await;
        let seat_no = 20 + n as i64;
        fixture.hold(&pass, seat_no).await.unwrap();
        assert!(
            is_hold_limit(&fixture.hold(&pass, seat_no + 10).await),
            "full again after one {ended} was replaced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_holds_a_few_seats_at_a_time_sqlite() {
    a_pass_holds_a_few_seats_at_a_time(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_holds_a_few_seats_at_a_time_postgres() {
    a_pass_holds_a_few_seats_at_a_time(true).await;
}

/// Holds asked for at once with one pass do not all see room under the
/// cap: the count and the insert are one decision per pass.
async fn concurrent_holds_with_one_pass_stay_under_the_cap(postgres: bool) {
    let fixture = std::sync::Arc::new(fixture(postgres).await);
    let pass = fixture.pass();
    let attempts = (1..=16).map(|seat_no| {
        let (fixture, pass) = (fixture.clone(), pass.clone());
        tokio::spawn(async move { fixture.hold(&pass, seat_no).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let held = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(held, MAX_LIVE_PER_PASS as usize, "held under the cap");
    assert!(results.iter().all(|r| r.is_ok() || is_hold_limit(r)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_holds_with_one_pass_stay_under_the_cap_sqlite() {
    concurrent_holds_with_one_pass_stay_under_the_cap(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_holds_with_one_pass_stay_under_the_cap_postgres() {
    concurrent_holds_with_one_pass_stay_under_the_cap(true).await;
}
