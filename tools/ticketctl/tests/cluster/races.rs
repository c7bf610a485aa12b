//! Races between two instances of one service on one PostgreSQL database,
//! each reproduced deterministically: a test connection holds a row lock so
//! that the two transactions interleave exactly as in the defect, then lets
//! go. Each test failed before its fix.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use shared_events::{BalanceDebited, BalanceRefunded, Envelope, PaymentFailed};
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::dev::testkit::{self, eventually, TestDatabase};
use ticket_runtime::messaging::consumer::apply_once;
use ticket_runtime::{Db, DbError, EventHandler, Migrations};
use uuid::Uuid;

use crate::support::WAIT;

/// The database of one service under test, with its schema.
async fn service_db(label: &str, schema: Migrations) -> (TestDatabase, Db) {
    testkit::init_tracing();
    let database = TestDatabase::postgres(label);
    let settings = ticket_runtime::config::DatabaseSettings {
        url: ticket_runtime::Secret::new(database.url.clone()),
        pool_size: 4,
        connect_timeout_ms: 5_000,
    };
    let db = Db::connect(&settings, schema).await.unwrap();
    (database, db)
}

/// A connection that holds a lock in an open transaction until `release`.
struct Blocker {
    conn: PgConnection,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

impl Blocker {
    fn lock(url: &str, statement: &str) -> Blocker {
        let mut conn = PgConnection::establish(url).unwrap();
        conn.batch_execute("BEGIN").unwrap();
        conn.batch_execute(statement).unwrap();
        Blocker { conn }
    }

    /// Transactions of this database waiting for a lock right now.
    fn waiting(&mut self) -> i64 {
        diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result::<Count>(&mut self.conn)
        .unwrap()
        .n
    }

    /// Waits until `n` transactions wait for a lock, or `done` says the
    /// others finished without waiting (as they did before the fix).
    async fn until_waiting(&mut self, n: i64, done: impl Fn() -> bool) {
        eventually(WAIT, &format!("{n} transactions to wait"), || {
            let ready = self.waiting() >= n || done();
            async move { ready.then_some(()) }
        })
        .await;
        // A moment more, so a transaction that is about to take its turn has.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fn release(mut self) {
        self.conn.batch_execute("COMMIT").unwrap();
    }
}

/// Handles `event` as a consumer would, in the background.
fn spawn_apply(
    db: &Db,
    handler: &Arc<dyn EventHandler>,
    event: Arc<Envelope>,
) -> tokio::task::JoinHandle<
    Result<ticket_runtime::messaging::consumer::Outcome, ticket_runtime::HandlerError>,
> {
    let (db, handler) = (db.clone(), handler.clone());
    tokio::spawn(async move { apply_once(&db, handler, event).await })
}

async fn published(db: &Db, event_type: &str) -> i64 {
    let event_type = event_type.to_string();
    db.run(move |conn| {
        diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE event_type = $1")
            .bind::<diesel::sql_types::Text, _>(event_type)
            .get_result::<Count>(conn)
            .map(|c| c.n)
            .map_err(DbError::from)
    })
    .await
    .unwrap()
}

/// Defect 1: one instance confirms a reservation on `BalanceDebited(P)`
/// while another records `PaymentFailed(P)` and, reading the reservation
/// as HELD, cancels nothing: a CONFIRMED reservation for a failed, refunded
/// payment — a free seat. Decisions about one reservation are now taken on
/// its row: whichever comes second sees the first's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debit_and_a_payment_failure_handled_at_once_never_confirm_a_failed_payment() {
    use reservation_service::store;
    let (database, db) = service_db("skew", reservation_service::SCHEMA).await;
    let (reservation, user, payment) = (Uuid::now_v7(), Uuid::new_v4(), Uuid::now_v7());
    let schedule = Uuid::now_v7();
    db.transaction(move |tx| {
        let now = chrono::Utc::now();
        store::insert_pending(
            tx.conn(),
            &store::NewReservation {
                id: reservation.into(),
                pass_token: Uuid::new_v4().into(),
                user_id: user.into(),
                concert_id: Uuid::now_v7().into(),
                schedule_id: schedule.into(),
                seat_no: reservation_service::domain::SeatNo::try_from(3).unwrap(),
            },
            now,
        )?;
        store::hold(
            tx.conn(),
            reservation.into(),
            1000,
            now + chrono::TimeDelta::minutes(5),
            now,
        )?;
        Ok::<_, DbError>(())
    })
    .await
    .unwrap();
    let handler: Arc<dyn EventHandler> = Arc::new(reservation_service::events::ReservationEvents {
        wakers: reservation_service::app::saga::Wakers {
            waiters: Default::default(),
        },
    });
    let debited = Arc::new(Envelope::new(BalanceDebited {
        payment_id: payment,
        reservation_id: reservation,
        user_id: user,
        entry_id: Uuid::now_v7(),
        amount: 1000,
    }));
    let failed = Arc::new(Envelope::new(PaymentFailed {
        payment_id: payment,
        reservation_id: reservation,
        user_id: user,
        reason: shared_events::Reason::SagaTimedOut,
        refunded: false,
    }));

    // The confirmation waits on the reservation's row; meanwhile the
    // failure is handled by "the other instance".
    let mut blocker = Blocker::lock(
        &database.url,
        &format!("SELECT * FROM reservations WHERE id = '{reservation}' FOR UPDATE"),
    );
    let confirm = spawn_apply(&db, &handler, debited);
    blocker.until_waiting(1, || false).await;
    let fail = spawn_apply(&db, &handler, failed);
    blocker.until_waiting(2, || fail.is_finished()).await;
    blocker.release();
    confirm.await.unwrap().unwrap();
    fail.await.unwrap().unwrap();

    let end = db
        .run(move |conn| store::find(conn, reservation.into()))
        .await
        .unwrap()
        .unwrap();
    let cancelled = published(&db, "ReservationCancelled").await;
    let rejected = published(&db, "ReservationConfirmationRejected").await;
    match end.status.as_str() {
        // Confirmed first, then undone by the failure: seat released, refund.
        "CANCELLED" => assert_eq!((cancelled, rejected), (1, 0)),
        // The failure first: the debit is answered with a rejection (refund).
        "HELD" => assert_eq!((cancelled, rejected), (0, 1)),
        other => panic!("a failed payment left the reservation {other}"),
    }
}

/// Defect 6: the deadline sweeper fails a payment while a consumer handles
/// its `BalanceRefunded`; the payment ended FAILED with `refunded: false`
/// although the money was given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_handled_while_the_deadline_fails_the_payment_is_recorded() {
    use payment_service::store;
    let (database, db) = service_db("refunded", payment_service::SCHEMA).await;
    let (reservation, user, payment) = (Uuid::now_v7(), Uuid::new_v4(), Uuid::now_v7());
    db.transaction(move |tx| {
        let held = store::HeldReservation {
            reservation_id: reservation.into(),
            user_id: user.into(),
            concert_id: Uuid::now_v7().into(),
            schedule_id: Uuid::now_v7().into(),
            seat_no: 1,
            price: 500,
            status: payment_service::domain::ReservationState::Held,
            hold_expires_at: chrono::Utc::now().naive_utc(),
        };
        store::insert_pending(tx.conn(), payment.into(), &held, None, chrono::Utc::now())?;
        Ok::<_, DbError>(())
    })
    .await
    .unwrap();
    let handler: Arc<dyn EventHandler> = Arc::new(payment_service::events::PaymentEvents {
        wakers: payment_service::app::saga::Wakers {
            waiters: Default::default(),
            deliveries: Default::default(),
        },
    });
    let refunded = Arc::new(Envelope::new(BalanceRefunded {
        payment_id: payment,
        reservation_id: reservation,
        user_id: user,
        entry_id: Uuid::now_v7(),
        amount: 500,
        reason: Some(shared_events::Reason::HoldExpired),
    }));
    let payments = payment_service::app::Payments {
        db: db.clone(),
        policy: payment_service::domain::PaymentPolicy {
            deadline_secs: 0,
            decision_wait_ms: 0,
            max_wait_ms: 0,
            sweep_interval_ms: 1000,
        },
        waiters: Default::default(),
    };

    // The sweeper queues on the payment's row first, the consumer behind it.
    let mut blocker = Blocker::lock(
        &database.url,
        &format!("SELECT * FROM payments WHERE id = '{payment}' FOR UPDATE"),
    );
    let sweeper = tokio::spawn(async move { payments.fail_stalled().await });
    blocker.until_waiting(1, || false).await;
    let consumer = spawn_apply(&db, &handler, refunded);
    blocker.until_waiting(2, || consumer.is_finished()).await;
    blocker.release();
    sweeper.await.unwrap().unwrap();
    consumer.await.unwrap().unwrap();

    let end = db
        .run(move |conn| store::find(conn, payment.into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.status, payment_service::domain::Status::Failed);
    assert!(end.refunded, "the refund is recorded whoever failed it");
}

/// Defect 4: two admission loops read the line without a lock and update
/// tokens without a WAITING guard: the same fans admitted twice, duplicate
/// `QueueTokenAdmitted`, and `active_count` counted twice, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_admission_loops_at_once_admit_each_fan_once() {
    use queue_service::domain::QueueToken;
    use queue_service::store;
    use ticket_runtime::ids::QueueTokenId;
    let (database, db) = service_db("admission", queue_service::SCHEMA).await;
    let concert = Uuid::now_v7();
    let fans = 5;
    db.transaction(move |tx| {
        let now = chrono::Utc::now();
        let line = store::open_line(tx.conn(), concert.into(), now)?;
        let waiting: Vec<QueueToken> = (0..fans)
            .map(|i| {
                let user = Uuid::new_v4().into();
                let seq = line.next_seq + i as i64;
                let token = QueueTokenId::generate();
                QueueToken::arriving(token, user, concert.into(), seq, line.version + 1, now)
            })
            .collect();
        store::enqueue(tx.conn(), concert.into(), &waiting, now)
    })
    .await
    .unwrap();
    let (private, _) = ticket_runtime::dev::keys::generate_key_pair();
    let signer = Arc::new(ticket_runtime::auth::pass::PassSigner::from_base64(&private).unwrap());
    let policy = queue_service::domain::QueuePolicy {
        max_active: 100,
        admission_rate_per_sec: 10_000,
        admission_interval_ms: 100,
        pass_ttl_secs: 600,
        poll_timeout_secs: 30,
        sweep_interval_ms: 1000,
    };
    let admit = || {
        let (db, policy, signer) = (db.clone(), policy.clone(), signer.clone());
        tokio::spawn(async move {
            db.transaction(move |tx| {
                queue_service::app::admit(tx, concert.into(), &policy, &signer, chrono::Utc::now())
            })
            .await
            .map(|change| change.map_or(0, |c| c.tokens.len()))
        })
    };
    let mut blocker = Blocker::lock(
        &database.url,
        &format!("SELECT * FROM queue_lines WHERE concert_id = '{concert}' FOR UPDATE"),
    );
    let first = admit();
    blocker.until_waiting(1, || first.is_finished()).await;
    let second = admit();
    blocker.until_waiting(2, || second.is_finished()).await;
    blocker.release();
    let admitted = first.await.unwrap().unwrap() + second.await.unwrap().unwrap();

    assert_eq!(admitted, fans, "each fan admitted once");
    assert_eq!(published(&db, "QueueTokenAdmitted").await, fans as i64);
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        active_count: i64,
    }
    let line = db
        .run(move |conn| {
            diesel::sql_query(format!(
                "SELECT active_count FROM queue_lines WHERE concert_id = '{concert}'"
            ))
            .get_result::<Line>(conn)
            .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(line.active_count, fans as i64, "active count not doubled");
}

/// Defect 8: two concert instances starting together each seeded the demo
/// catalog. Both read an empty catalog; now the first to claim the seed
/// seeds, the second finds it claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concert_instances_starting_together_seed_the_demo_catalog_once() {
    let (database, db) = service_db("seed", concert_service::SCHEMA).await;
    // Reads of the catalog pass; every insert into it waits, so both seeds
    // have looked at an empty catalog before either writes.
    let catalog = concert_service::app::Catalog {
        db: db.clone(),
        holds: concert_service::domain::HoldPolicy {
            hold_ttl_secs: 300,
            release_grace_secs: 60,
            sweep_interval_ms: 1000,
        },
        clock: ticket_runtime::Clock::system(),
        seat_maps: concert_service::app::SeatMaps::new(
            concert_service::domain::SeatMapFreshness {
                seat_map_max_staleness_ms: 0,
            },
            concert_service::api::seat_map_json,
        ),
    };
    let mut blocker = Blocker::lock(&database.url, "LOCK TABLE concerts IN SHARE MODE");
    let first = {
        let catalog = catalog.clone();
        tokio::spawn(async move { catalog.seed_demo().await })
    };
    blocker.until_waiting(1, || first.is_finished()).await;
    let second = tokio::spawn(async move { catalog.seed_demo().await });
    blocker.until_waiting(2, || second.is_finished()).await;
    blocker.release();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let concerts = db.run(concert_service::store::list_concerts).await.unwrap();
    assert_eq!(concerts.len(), 3, "seeded once");
}

/// Found in review: two refund triggers for one payment — its
/// `PaymentFailed` and the reservation's `ReservationConfirmationRejected`,
/// on two topics — handled at once by two member-balance instances both
/// read the debit as not yet refunded. The ledger's unique index stopped
/// the second credit, but only by failing that handling (an attempt burnt,
/// retried later). Now the second waits on the debit's row and finds it
/// refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_refund_triggers_handled_at_once_refund_once() {
    use member_balance_service::domain::EntryKind;
    use shared_events::{PaymentRequested, Reason, ReservationConfirmationRejected};
    let (database, db) = service_db("refund", member_balance_service::SCHEMA).await;
    let (user, reservation, payment) = (Uuid::new_v4(), Uuid::now_v7(), Uuid::now_v7());
    db.transaction(move |tx| {
        member_balance_service::store::apply(
            tx.conn(),
            user.into(),
            EntryKind::Charge,
            1000,
            None,
            i64::MAX,
            chrono::Utc::now(),
        )?;
        Ok::<_, DbError>(())
    })
    .await
    .unwrap();
    let handler: Arc<dyn EventHandler> = Arc::new(member_balance_service::events::BalanceEvents);
    let requested = Envelope::new(PaymentRequested {
        payment_id: payment,
        reservation_id: reservation,
        user_id: user,
        amount: 500,
    });
    apply_once(&db, handler.clone(), Arc::new(requested))
        .await
        .unwrap();
    let failed = Arc::new(Envelope::new(PaymentFailed {
        payment_id: payment,
        reservation_id: reservation,
        user_id: user,
        reason: Reason::SagaTimedOut,
        refunded: false,
    }));
    let rejected = Arc::new(Envelope::new(ReservationConfirmationRejected {
        reservation_id: reservation,
        payment_id: payment,
        reason: Reason::HoldExpired,
    }));

    // Both refunds queue on the wallet; before the fix both had read the
    // debit as unrefunded by then.
    let mut blocker = Blocker::lock(
        &database.url,
        &format!("SELECT * FROM wallets WHERE user_id = '{user}' FOR UPDATE"),
    );
    let first = spawn_apply(&db, &handler, failed);
    blocker.until_waiting(1, || first.is_finished()).await;
    let second = spawn_apply(&db, &handler, rejected);
    blocker.until_waiting(2, || second.is_finished()).await;
    blocker.release();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();

    assert_eq!(published(&db, "BalanceRefunded").await, 1, "refunded once");
    #[derive(diesel::QueryableByName)]
    struct Wallet {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        balance: i64,
    }
    let wallet = db
        .run(move |conn| {
            diesel::sql_query(format!(
                "SELECT balance FROM wallets WHERE user_id = '{user}'"
            ))
            .get_result::<Wallet>(conn)
            .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(wallet.balance, 1000, "the 500 taken came back once");
}
