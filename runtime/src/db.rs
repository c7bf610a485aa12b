//! One database per service: SQLite (the embedded default, one file) or
//! PostgreSQL, picked by the URL. Queries are written once against
//! [`AnyConnection`]; blocking diesel work runs on tokio's blocking pool.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::Error as DieselError;
use diesel::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use shared_events::Envelope;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::config::DatabaseSettings;

pub use connection::{AnyConnection, DbError, DbResult, MultiBackend, Transient};

pub mod column;
mod connection;
pub mod outbox;
pub mod passes;
pub mod postgres;
pub mod processed;
pub mod schema;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A service's schema, once per backend (the same set twice when its SQL is
/// portable). Versions share diesel's table with the runtime's own
/// migrations, numbered `…-0000NN`: services number theirs `…-000100` and up.
pub struct Migrations {
    pub sqlite: EmbeddedMigrations,
    pub postgres: EmbeddedMigrations,
}

impl Migrations {
    /// No tables beyond the runtime's own (outbox, processed events): for a
    /// database that measures what a service's transaction costs. (The
    /// runtime's set again: migrations already run are skipped.)
    pub const NONE: Migrations = RUNTIME_MIGRATIONS;
}

const RUNTIME_MIGRATIONS: Migrations = Migrations {
    sqlite: diesel_migrations::embed_migrations!("migrations/sqlite"),
    postgres: diesel_migrations::embed_migrations!("migrations/postgres"),
};

/// A database transaction in progress. Events published through it are
/// written to the outbox in the same transaction as the state they describe:
/// kept here until the transaction's work is done, then written together in
/// one statement just before COMMIT.
pub struct Tx<'c> {
    conn: &'c mut AnyConnection,
    outbox: Vec<outbox::NewOutboxRow>,
}

impl Tx<'_> {
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.conn
    }

    /// Stores `envelope` in the outbox; it leaves only if this transaction commits.
    pub fn publish(&mut self, envelope: &Envelope) -> DbResult<()> {
        self.outbox.push(outbox::NewOutboxRow::of(envelope));
        Ok(())
    }

    /// Publishes `event` as the answer to `cause`: in its saga (correlation
    /// id) and caused by it.
    pub fn reply(
        &mut self,
        cause: &Envelope,
        event: impl Into<shared_events::Event>,
    ) -> DbResult<()> {
        self.publish(&Envelope::caused_by(cause, event))
    }

    /// Runs `f` inside a savepoint: if it fails, what it changed and
    /// published is undone and the rest of the transaction stands. The
    /// outer error is the savepoint's own: the transaction can then no
    /// longer be trusted and must be rolled back as a whole.
    pub(crate) fn savepoint<T, E, F>(&mut self, f: F) -> DbResult<Result<T, E>>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, E>,
    {
        self.conn.batch_execute("SAVEPOINT step")?;
        let published_before = self.outbox.len();
        let outcome = f(self);
        if outcome.is_ok() {
            self.conn.batch_execute("RELEASE SAVEPOINT step")?;
        } else {
            self.outbox.truncate(published_before);
            self.conn
                .batch_execute("ROLLBACK TO SAVEPOINT step; RELEASE SAVEPOINT step")?;
        }
        Ok(outcome)
    }
}

#[derive(Clone)]
pub struct Db {
    pool: Pool<ConnectionManager<AnyConnection>>,
    backend: Backend,
    outbox_signal: Arc<Notify>,
}

#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        // WAL lets readers run beside the writer; busy_timeout makes writers
        // queue instead of failing; NORMAL sync is durable across app crashes;
        // memory-mapped reads share the OS page cache between connections, so
        // lookups in large tables (a long waiting line) stay cheap.
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16384;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Splits a database URL into the backend and what diesel connects to.
pub fn parse_url(url: &str) -> (Backend, String) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (Backend::Postgres, url.to_string())
    } else {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        (Backend::Sqlite, path.to_string())
    }
}

impl Db {
    /// Opens the pool and brings the schema up to date: the runtime's own
    /// tables (outbox, processed events) first, then the service's.
    pub async fn connect(settings: &DatabaseSettings, schema: Migrations) -> Result<Db, DbError> {
        let (backend, target) = parse_url(settings.url.expose());
        let pool_size = settings.pool_size.max(1);
        let timeout = Duration::from_millis(settings.connect_timeout_ms);
        let pool = tokio::task::spawn_blocking(move || {
            if backend == Backend::Sqlite {
                if let Some(parent) = std::path::Path::new(&target).parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        DbError::Unavailable(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
            }
            let mut builder = Pool::builder()
                .max_size(pool_size)
                .min_idle(Some(1))
                .connection_timeout(timeout);
            if backend == Backend::Sqlite {
                // A file connection does not go stale between uses: no
                // `SELECT 1` before each checkout (one statement saved per
                // transaction, and per relay step).
                builder = builder
                    .connection_customizer(Box::new(SqlitePragmas))
                    .test_on_check_out(false);
            }
            builder
                .build(ConnectionManager::<AnyConnection>::new(target))
                .map_err(|e| DbError::Unavailable(e.to_string()))
        })
        .await
        .map_err(|_| DbError::Panicked)??;

        let db = Db {
            pool,
            backend,
            outbox_signal: Arc::new(Notify::new()),
        };
        db.run(move |conn| {
            migrate(conn, RUNTIME_MIGRATIONS)?;
            migrate(conn, schema)
        })
        .await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Woken after every commit that published events.
    pub(crate) fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_signal.clone()
    }

    fn checkout(&self) -> Result<PooledConnection<ConnectionManager<AnyConnection>>, DbError> {
        self.pool
            .get()
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Runs blocking diesel code on the blocking pool, inside the caller's span.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
    {
        let db = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = db.checkout()?;
            f(&mut conn)
        })
        .await
        .map_err(|_| E::from(DbError::Panicked))?
    }

    /// Runs `f` in one transaction (an immediate one on SQLite, so that
    /// writers queue instead of failing to upgrade a read lock). When the
    /// database aborts it for a transient reason — at BEGIN, COMMIT or any
    /// statement in between — the whole transaction runs again, up to
    /// [`TRANSACTION_ATTEMPTS`] times with jittered backoff: `f` must be safe
    /// to run more than once (it only touches the database and `tx`).
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Transient + Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    {
        let signal = self.outbox_signal.clone();
        self.run(move |conn| {
            let (value, published) = transaction_with_retry(conn, f)?;
            if published > 0 {
                signal.notify_one();
            }
            Ok(value)
        })
        .await
    }

    /// Whether the database answers a trivial query now.
    pub async fn ping(&self) -> bool {
        self.run(|conn| conn.batch_execute("SELECT 1").map_err(DbError::from))
            .await
            .is_ok()
    }
}

fn migrate(conn: &mut AnyConnection, migrations: Migrations) -> Result<(), DbError> {
    let result = match conn {
        AnyConnection::Sqlite(c) => c.run_pending_migrations(migrations.sqlite).map(|_| ()),
        AnyConnection::Postgresql(c) => c.run_pending_migrations(migrations.postgres).map(|_| ()),
    };
    result.map_err(|e| DbError::Migration(e.to_string()))
}

/// How many times one transaction is tried before its error is returned.
pub const TRANSACTION_ATTEMPTS: u32 = 8;

/// Backoff before attempt `attempt + 1`: 2 ms doubling, capped at 250 ms,
/// with full jitter so that transactions that collided do not collide again.
fn retry_backoff(attempt: u32) -> Duration {
    let ceiling_ms = (2u64 << attempt.min(7)).min(250);
    let mut random = [0u8; 8];
    let spread = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random) % (ceiling_ms + 1),
        Err(_) => ceiling_ms / 2,
    };
    Duration::from_millis(spread.max(1))
}

fn transaction_with_retry<T, E, F>(conn: &mut AnyConnection, mut f: F) -> Result<(T, usize), E>
where
    E: From<DbError> + Transient,
    F: FnMut(&mut Tx<'_>) -> Result<T, E>,
{
    let mut attempt = 1;
    loop {
        let error = match run_in_transaction(conn, &mut f) {
            Ok(done) => return Ok(done),
            Err(TxFailure::Database(e)) => E::from(DbError::from(e)),
            Err(TxFailure::Body(e)) => e,
        };
        if !error.is_transient() || attempt >= TRANSACTION_ATTEMPTS {
            return Err(error);
        }
        tracing::debug!(
            attempt,
            "transaction aborted by the database, running it again"
        );
        std::thread::sleep(retry_backoff(attempt));
        attempt += 1;
    }
}

enum TxFailure<E> {
    /// BEGIN or COMMIT failed.
    Database(DieselError),
    Body(E),
}

fn run_in_transaction<T, E, F>(
    conn: &mut AnyConnection,
    f: &mut F,
) -> Result<(T, usize), TxFailure<E>>
where
    F: FnMut(&mut Tx<'_>) -> Result<T, E>,
{
    let begin = match conn {
        AnyConnection::Sqlite(_) => "BEGIN IMMEDIATE",
        AnyConnection::Postgresql(_) => "BEGIN",
    };
    conn.batch_execute(begin).map_err(TxFailure::Database)?;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut tx = Tx {
            conn: &mut *conn,
            outbox: Vec::new(),
        };
        f(&mut tx).map(|value| (value, tx.outbox))
    }));
    match outcome {
        Ok(Ok((value, published))) => {
            let written =
                outbox::enqueue_all(conn, &published).and_then(|()| conn.batch_execute("COMMIT"));
            match written {
                Ok(()) => Ok((value, published.len())),
                Err(e) => {
                    let _ = conn.batch_execute("ROLLBACK");
                    Err(TxFailure::Database(e))
                }
            }
        }
        Ok(Err(e)) => {
            let _ = conn.batch_execute("ROLLBACK");
            Err(TxFailure::Body(e))
        }
        Err(panic) => {
            let _ = conn.batch_execute("ROLLBACK");
            std::panic::resume_unwind(panic)
        }
    }
}

/// The database's clock, now: what decides whether a lease or a hold ran
/// out. Every instance of a service shares it, while their own clocks may
/// drift apart: an instance whose clock ran ahead would take over a lease
/// that another still holds, or release a hold that is still running.
/// Read in the transaction that decides, and passed on to the rules as
/// their `now`. SQLite's clock is its host's, to the millisecond, in UTC
/// (the `YYYY-MM-DD HH:MM:SS.SSS` text diesel stores timestamps as);
/// PostgreSQL's is the server's, at the moment of the call.
pub fn database_now(conn: &mut AnyConnection) -> DbResult<DateTime<Utc>> {
    use diesel::dsl::sql;
    use diesel::sql_types::Timestamp;
    let now: NaiveDateTime = match conn {
        AnyConnection::Sqlite(c) => {
            diesel::select(sql::<Timestamp>("strftime('%Y-%m-%d %H:%M:%f', 'now')"))
                .get_result(c)?
        }
        AnyConnection::Postgresql(c) => {
            diesel::select(sql::<Timestamp>("clock_timestamp() AT TIME ZONE 'UTC'"))
                .get_result(c)?
        }
    };
    Ok(now.and_utc())
}

/// Runs `body` against the concrete connection, for the few clauses diesel's
/// multi-backend connection cannot express (`ON CONFLICT`, batch inserts).
/// The body is compiled once per backend.
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::AnyConnection::Sqlite($c) => $body,
            $crate::db::AnyConnection::Postgresql($c) => $body,
        }
    };
}

/// Reads the one row `query` selects and locks it until the transaction
/// ends (`SELECT … FOR UPDATE` on PostgreSQL), so that decisions about one
/// aggregate taken by two instances at once are made one after the other,
/// each on the other's outcome. SQLite needs no row lock: its transactions
/// here begin IMMEDIATE, so writers already run one at a time.
#[macro_export]
macro_rules! first_for_update {
    ($conn:expr, $query:expr) => {
        match $conn {
            $crate::db::AnyConnection::Postgresql(c) => $query.for_update().first(c).optional(),
            $crate::db::AnyConnection::Sqlite(c) => $query.first(c).optional(),
        }
    };
}
