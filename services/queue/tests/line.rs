//! The waiting line's rush paths against real databases: positions answered
//! from memory, joins committed in groups, a second instance on the same
//! database, and a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use diesel::connection::SimpleConnection;
use queue_service::app::{Place, Queue, QueueError, Tuning};
use queue_service::domain::{QueuePolicy, TokenStatus};
use queue_service::store;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticket_runtime::auth::pass::PassSigner;
use ticket_runtime::dev::testkit::TestDatabase;
use ticket_runtime::ids::{ConcertId, UserId};
use ticket_runtime::{Clock, Db, DbError};
use uuid::Uuid;

fn policy(max_active: i64) -> QueuePolicy {
    QueuePolicy {
        max_active,
        admission_rate_per_sec: 10_000,
        admission_interval_ms: 100,
        pass_ttl_secs: 600,
        poll_timeout_secs: 30,
        sweep_interval_ms: 1000,
    }
}

/// A short staleness bound, so that convergence is quick to wait for.
const REFRESH: Duration = Duration::from_millis(50);

fn tuning() -> Tuning {
    Tuning {
        index_refresh_ms: REFRESH.as_millis() as u64,
        join_batch_window_ms: 5,
        join_batch_max: 64,
        seen_flush_ms: 100,
    }
}

fn signer() -> Arc<PassSigner> {
    let (private, _) = ticket_runtime::dev::keys::generate_key_pair();
    Arc::new(PassSigner::from_base64(&private).unwrap())
}

/// A database with the queue's schema and one concert announced.
async fn line(postgres: bool, label: &str) -> (TestDatabase, Db, ConcertId) {
    let database = TestDatabase::on(postgres, label);
    let db = database.connect(queue_service::SCHEMA).await;
    let concert = ConcertId::generate();
    db.transaction(move |tx| store::remember_concert(tx.conn(), concert))
        .await
        .unwrap();
    (database, db, concert)
}

async fn instance(db: &Db, max_active: i64) -> Queue {
    Queue::start(
        db.clone(),
        policy(max_active),
        &tuning(),
        signer(),
        Clock::system(),
    )
    .await
    .unwrap()
}

async fn sql(db: &Db, statement: String) {
    db.run(move |conn| conn.batch_execute(&statement).map_err(DbError::from))
        .await
        .unwrap();
}

/// The place as the database alone says it (the Fenwick tree of drop-outs
/// over the line's head): what memory must agree with.
async fn from_database(db: &Db, place: &Place) -> (TokenStatus, Option<i64>) {
    let token = place.token.token;
    db.run(move |conn| {
        let found = store::find(conn, token)?.unwrap();
        let position = store::position(conn, &found)?;
        Ok::<_, DbError>((found.status, position))
    })
    .await
    .unwrap()
}

struct Fan {
    user: UserId,
    place: Place,
}

async fn join_in_turn(queue: &Queue, concert: ConcertId, fans: usize) -> Vec<Fan> {
    let mut joined = Vec::new();
    for _ in 0..fans {
        let user = UserId::from(Uuid::new_v4());
        let (created, place) = queue.join(user, concert).await.unwrap();
        assert!(created);
        joined.push(Fan { user, place });
    }
    joined
}

async fn poll(queue: &Queue, fan: &Fan) -> Place {
    queue.poll(fan.user, fan.place.token.token).await.unwrap()
}

/// Every fan's status and position, as `queue` answers them and as the
/// database says they are: the two agree.
async fn statuses(queue: &Queue, db: &Db, fans: &[Fan]) -> Vec<(TokenStatus, Option<i64>)> {
    let mut seen = Vec::new();
    for fan in fans {
        let place = poll(queue, fan).await;
        assert_eq!(
            (place.token.status, place.position),
            from_database(db, &place).await,
            "memory and database agree on seq {}",
            place.token.seq
        );
        seen.push((place.token.status, place.position));
    }
    seen
}

async fn positions_follow_joins_admissions_drops_and_expiry(postgres: bool) {
    let (_database, db, concert) = line(postgres, "positions").await;
    let queue = instance(&db, 2).await;
    let fans = join_in_turn(&queue, concert, 6).await;
    use TokenStatus::{Active, Expired, Waiting};
    let answered: Vec<_> = fans
        .iter()
        .map(|f| (f.place.token.status, f.place.position))
        .collect();
    assert_eq!(
        answered,
        [
            (Active, Some(0)),
            (Active, Some(0)),
            (Waiting, Some(0)),
            (Waiting, Some(1)),
            (Waiting, Some(2)),
            (Waiting, Some(3)),
        ],
        "the join answers"
    );
    assert!(fans[0].place.token.pass.is_some() && fans[2].place.token.pass.is_none());
    assert_eq!(
        statuses(&queue, &db, &fans).await,
        answered,
        "polls answer the same"
    );

    // The fourth fan stops polling and is dropped: those behind move up.
    sql(
        &db,
        format!(
            "UPDATE queue_tokens SET last_seen_at = '2000-01-01 00:00:00' WHERE token = '{}'",
            fans[3].place.token.token
        ),
    )
    .await;
    queue.sweep().await.unwrap();
    let after_drop = statuses(&queue, &db, &fans).await;
    assert_eq!(
        after_drop[2..],
        [
            (Waiting, Some(0)),
            (Expired, None),
            (Waiting, Some(1)),
            (Waiting, Some(2))
        ]
    );
    assert_eq!(
        poll(&queue, &fans[3]).await.token.ended_reason,
        Some(queue_service::domain::Ended::Dropped)
    );

    // The first pass runs out: its place goes to the next fan still waiting.
    sql(
        &db,
        format!(
            "UPDATE queue_tokens SET pass_expires_at = '2000-01-01 00:00:00' WHERE token = '{}'",
            fans[0].place.token.token
        ),
    )
    .await;
    queue.sweep().await.unwrap();
    queue.admit_all().await.unwrap();
    let after_expiry = statuses(&queue, &db, &fans).await;
    assert_eq!(
        after_expiry,
        [
            (Expired, None),
            (Active, Some(0)),
            (Active, Some(0)),
            (Expired, None),
            (Waiting, Some(0)),
            (Waiting, Some(1)),
        ]
    );
    let admitted = poll(&queue, &fans[2]).await;
    assert!(admitted.token.pass.is_some(), "admitted with a pass");

    // Asking again answers the same place, created or not.
    let (created, again) = queue.join(fans[5].user, concert).await.unwrap();
    assert!(!created);
    assert_eq!(again.token.token, fans[5].place.token.token);
    assert_eq!(again.position, Some(1));

    // Another fan's token is not found, from memory as from the database.
    let stranger = UserId::from(Uuid::new_v4());
    assert!(matches!(
        queue.poll(stranger, fans[4].place.token.token).await,
        Err(QueueError::TokenNotFound(_))
    ));
    assert!(matches!(
        queue.poll(stranger, fans[0].place.token.token).await,
        Err(QueueError::TokenNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_follow_joins_admissions_drops_and_expiry_sqlite() {
    positions_follow_joins_admissions_drops_and_expiry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_follow_joins_admissions_drops_and_expiry_postgres() {
    positions_follow_joins_admissions_drops_and_expiry(true).await;
}

async fn a_group_of_concurrent_joins(postgres: bool) {
    let (_database, db, concert) = line(postgres, "group").await;
    // Nobody admitted: every fan waits, so positions are 0..n.
    let queue = instance(&db, 0).await;
    let fans = 150;
    let unknown = ConcertId::generate();
    let twice = UserId::from(Uuid::new_v4());
    let mut joins = Vec::new();
    for i in 0..fans + 10 {
        let queue = queue.clone();
        let (user, to) = match i {
            // A fan asking for a concert nobody announced, amid the others.
            i if i >= fans && i < fans + 5 => (UserId::from(Uuid::new_v4()), unknown),
            // One fan twice at the same moment.
            i if i >= fans + 5 => (twice, concert),
            _ => (UserId::from(Uuid::new_v4()), concert),
        };
        joins.push(tokio::spawn(async move {
            (user, to, queue.join(user, to).await)
        }));
    }
    let mut tokens = HashSet::new();
    let mut positions = Vec::new();
    let mut refused = 0;
    let mut twice_tokens = HashSet::new();
    for join in joins {
        let (user, to, outcome) = join.await.unwrap();
        if to == unknown {
            assert!(
                matches!(outcome, Err(QueueError::ConcertNotFound(c)) if c == unknown),
                "the unknown concert is refused alone"
            );
            refused += 1;
            continue;
        }
        let (_, place) = outcome.unwrap();
        assert_eq!(place.token.user_id, user);
        assert_eq!(place.token.status, TokenStatus::Waiting);
        if user == twice {
            twice_tokens.insert(place.token.token);
            if tokens.contains(&place.token.token) {
                continue;
            }
        }
        assert!(tokens.insert(place.token.token), "a token of its own");
        positions.push(place.position.unwrap());
    }
    assert_eq!(refused, 5);
    assert_eq!(twice_tokens.len(), 1, "the same fan twice has one place");
    positions.sort();
    assert_eq!(
        positions,
        (0..=fans as i64).collect::<Vec<_>>(),
        "positions gapless, one each"
    );
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        next_seq: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        version: i64,
    }
    let stored = db
        .run(move |conn| {
            use diesel::RunQueryDsl;
            diesel::sql_query(format!(
                "SELECT next_seq, version FROM queue_lines WHERE concert_id = '{concert}'"
            ))
            .get_result::<Line>(conn)
            .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(stored.next_seq, fans as i64 + 2, "arrival numbers 1..=n");
    assert!(
        stored.version < fans as i64 + 1,
        "fewer commits ({}) than fans: joins were grouped",
        stored.version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_commit_in_groups_with_distinct_tokens_and_gapless_positions_sqlite() {
    a_group_of_concurrent_joins(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_commit_in_groups_with_distinct_tokens_and_gapless_positions_postgres() {
    a_group_of_concurrent_joins(true).await;
}

/// Polls `queue` until `done` holds for the place; how long that took.
async fn converges(
    queue: &Queue,
    fan: &Fan,
    what: &str,
    done: impl Fn(&Place) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let place = poll(queue, fan).await;
        if done(&place) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still {:?} at {:?}",
            place.token.status,
            place.position
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn a_second_instance_converges_within_the_bound(postgres: bool) {
    let (_database, db, concert) = line(postgres, "instances").await;
    let first = instance(&db, 1).await;
    let fans = join_in_turn(&first, concert, 3).await;
    let second = instance(&db, 1).await;
    // Both refresh as the service's job does, every REFRESH.
    for queue in [first.clone(), second.clone()] {
        tokio::spawn(async move {
            loop {
                queue.refresh_index().await.unwrap();
                tokio::time::sleep(REFRESH).await;
            }
        });
    }
    // Rebuilt at start: the second knows the first's fans.
    for fan in &fans {
        let place = poll(&second, fan).await;
        assert_eq!(
            (place.token.status, place.position),
            (fan.place.token.status, fan.place.position)
        );
    }
    // A fan who joins at the second is known to the first: at once (from
    // the database), and then from memory.
    let newcomer = join_in_turn(&second, concert, 1).await.remove(0);
    assert_eq!(newcomer.place.position, Some(2));
    assert_eq!(poll(&first, &newcomer).await.position, Some(2));

    // The first instance ends the active pass and admits the next fan: the
    // second shows it ACTIVE with the same pass within the bound.
    sql(
        &db,
        format!(
            "UPDATE queue_tokens SET pass_expires_at = '2000-01-01 00:00:00' WHERE token = '{}'",
            fans[0].place.token.token
        ),
    )
    .await;
    first.sweep().await.unwrap();
    first.admit_all().await.unwrap();
    let pass = poll(&first, &fans[1]).await.token.pass;
    assert!(pass.is_some());
    let took = converges(&second, &fans[1], "admitted elsewhere", |p| {
        p.token.status == TokenStatus::Active && p.token.pass == pass
    })
    .await;
    let bound = REFRESH * 2 + Duration::from_millis(500);
    assert!(took < bound, "seen after {took:?}, bound {bound:?}");
    converges(&second, &fans[0], "ended elsewhere", |p| {
        p.token.status == TokenStatus::Expired && p.position.is_none()
    })
    .await;
    converges(&second, &newcomer, "moved up elsewhere", |p| {
        p.position == Some(1)
    })
    .await;
    // And once converged, both answer what the database says.
    for fan in fans.iter().chain([&newcomer]) {
        let (a, b) = (poll(&first, fan).await, poll(&second, fan).await);
        assert_eq!((a.token.status, a.position), (b.token.status, b.position));
        assert_eq!((b.token.status, b.position), from_database(&db, &b).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_on_the_same_database_converges_within_the_bound_sqlite() {
    a_second_instance_converges_within_the_bound(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_on_the_same_database_converges_within_the_bound_postgres() {
    a_second_instance_converges_within_the_bound(true).await;
}

async fn a_restart_rebuilds_the_index(postgres: bool) {
    let (_database, db, concert) = line(postgres, "restart").await;
    let before = {
        let queue = instance(&db, 1).await;
        let fans = join_in_turn(&queue, concert, 5).await;
        sql(
            &db,
            format!(
                "UPDATE queue_tokens SET last_seen_at = '2000-01-01 00:00:00' WHERE token = '{}'",
                fans[2].place.token.token
            ),
        )
        .await;
        queue.sweep().await.unwrap();
        let seen = statuses(&queue, &db, &fans).await;
        (fans, seen)
    };
    let (fans, seen) = before;
    use TokenStatus::{Active, Expired, Waiting};
    assert_eq!(
        seen,
        [
            (Active, Some(0)),
            (Waiting, Some(0)),
            (Expired, None),
            (Waiting, Some(1)),
            (Waiting, Some(2)),
        ]
    );
    let restarted = instance(&db, 1).await;
    assert_eq!(
        statuses(&restarted, &db, &fans).await,
        seen,
        "the same answers after a restart"
    );
    // And the line goes on where it was.
    let next = join_in_turn(&restarted, concert, 1).await.remove(0);
    assert_eq!(next.place.position, Some(3));
    assert_eq!(next.place.token.seq, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_rebuilds_the_index_from_the_tables_sqlite() {
    a_restart_rebuilds_the_index(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_rebuilds_the_index_from_the_tables_postgres() {
    a_restart_rebuilds_the_index(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_fan_who_polls_is_recorded_as_still_there() {
    let (_database, db, concert) = line(false, "seen").await;
    let queue = instance(&db, 0).await;
    let fan = join_in_turn(&queue, concert, 1).await.remove(0);
    // Last seen long ago, in memory too (as after a restart).
    sql(
        &db,
        format!(
            "UPDATE queue_tokens SET last_seen_at = '2000-01-01 00:00:00' WHERE token = '{}'",
            fan.place.token.token
        ),
    )
    .await;
    let queue = instance(&db, 0).await;
    poll(&queue, &fan).await;
    queue.record_seen().await.unwrap();
    // The sweeper finds the fan there: not dropped.
    queue.sweep().await.unwrap();
    assert_eq!(poll(&queue, &fan).await.token.status, TokenStatus::Waiting);
    let token = fan.place.token.token;
    let stored = db
        .run(move |conn| store::find(conn, token))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.last_seen_at > chrono::Utc::now() - chrono::TimeDelta::seconds(30));
}
