//! The connection and the errors every storage function speaks: the ground
//! floor of the database room, below the runtime's own tables' SQL
//! (`outbox`, `processed`, `passes`) and the pool that runs it all (`db.rs`).

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// A connection to whichever backend the URL named.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// What the runtime's and the services' storage functions return.
pub type DbResult<T> = Result<T, DbError>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(#[from] DieselError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database task panicked")]
    Panicked,
}

/// Whether the database aborted the work for a reason that running the whole
/// transaction again can cure: a serialization failure, a deadlock, a busy
/// SQLite file, a dropped connection.
fn is_transient(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::SerializationFailure | DatabaseErrorKind::ClosedConnection => true,
            _ => {
                let message = info.message();
                message.contains("database is locked")
                    || message.contains("deadlock detected")
                    || message.contains("busy")
            }
        },
        _ => false,
    }
}

/// An error that may stand for a transient database failure, so that
/// [`Db::transaction`] can tell a retryable abort inside the body from a
/// business refusal. Every error type a transaction body returns implements it.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for DieselError {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

impl DbError {
    /// A unique index refused the write: someone else inserted first.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

impl Transient for DbError {
    fn is_transient(&self) -> bool {
        matches!(self, DbError::Query(e) if is_transient(e))
    }
}
