//! The outbox tables' SQL: events written in a state change's own
//! transaction ([`enqueue`]), and what the relay (`messaging::relay`) reads
//! and marks, under a lease that one relay at a time holds.

use chrono::{NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use shared_events::Envelope;

use super::connection::{AnyConnection, DbError, DbResult};
use super::schema::{outbox, outbox_relay_lease};
use crate::ops::telemetry;

/// An event published in a transaction that has not committed yet: kept
/// in the transaction's memory and written with the others it published
/// in one statement just before COMMIT ([`enqueue_all`]).
pub(crate) struct NewOutboxRow {
    event_id: String,
    topic: &'static str,
    partition_key: String,
    event_type: &'static str,
    payload: String,
    /// The trace of the code that published it, read when it did.
    traceparent: Option<String>,
    created_at: NaiveDateTime,
}

impl NewOutboxRow {
    pub(crate) fn of(envelope: &Envelope) -> NewOutboxRow {
        NewOutboxRow {
            event_id: envelope.event_id.to_string(),
            topic: envelope.topic().name(),
            partition_key: envelope.partition_key.clone(),
            event_type: envelope.event_type().as_str(),
            payload: envelope.to_json(),
            traceparent: telemetry::current_traceparent(),
            created_at: now(),
        }
    }
}

/// A row waiting to be published.
#[derive(Debug, Clone, Queryable)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub topic: String,
    pub partition_key: String,
    pub event_type: String,
    pub payload: String,
    pub traceparent: Option<String>,
}

/// This instance's clock, for the bookkeeping times of the runtime's rows.
pub(crate) fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// Rows per INSERT: well under both engines' limits on bound parameters
/// (SQLite 32,766, PostgreSQL 65,535; seven a row).
const ROWS_PER_INSERT: usize = 1000;

/// Writes the rows in the caller's transaction, in their order (which is
/// the order of their `seq`): one statement for up to [`ROWS_PER_INSERT`].
pub(crate) fn enqueue_all(conn: &mut AnyConnection, rows: &[NewOutboxRow]) -> QueryResult<()> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        // Values spelled out, not derived: a derived `Option` field means
        // DEFAULT when `None`, and diesel then inserts SQLite's rows one by
        // one in a transaction of its own (refused inside ours).
        let values: Vec<_> = chunk
            .iter()
            .map(|row| {
                (
                    outbox::event_id.eq(&row.event_id),
                    outbox::topic.eq(row.topic),
                    outbox::partition_key.eq(&row.partition_key),
                    outbox::event_type.eq(row.event_type),
                    outbox::payload.eq(&row.payload),
                    outbox::traceparent.eq(row.traceparent.as_deref()),
                    outbox::created_at.eq(row.created_at),
                )
            })
            .collect();
        let insert = diesel::insert_into(outbox::table).values(&values);
        match &mut *conn {
            AnyConnection::Sqlite(c) => insert.execute(c)?,
            AnyConnection::Postgresql(c) => insert.execute(c)?,
        };
    }
    Ok(())
}

/// Rows not yet acknowledged by the broker: how many, and when the oldest
/// was written.
pub fn backlog(conn: &mut AnyConnection) -> DbResult<(i64, Option<NaiveDateTime>)> {
    outbox::table
        .filter(outbox::sent_at.is_null())
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(outbox::created_at),
        ))
        .get_result(conn)
        .map_err(DbError::from)
}

/// Rows not yet acknowledged by the broker.
pub fn pending_count(conn: &mut AnyConnection) -> DbResult<i64> {
    backlog(conn).map(|(count, _)| count)
}

/// Takes the relay lease for `holder` if it is free, its own, or ran out at
/// `now`, and sets it to run out at `now + ttl`. Says whether it took it.
pub(crate) fn take_lease(
    conn: &mut AnyConnection,
    holder: &str,
    now: NaiveDateTime,
    ttl: TimeDelta,
) -> QueryResult<bool> {
    let taken = diesel::update(outbox_relay_lease::table)
        .filter(outbox_relay_lease::name.eq("relay"))
        .filter(
            outbox_relay_lease::holder
                .is_null()
                .or(outbox_relay_lease::holder.eq(holder))
                .or(outbox_relay_lease::expires_at.lt(now)),
        )
        .set((
            outbox_relay_lease::holder.eq(holder),
            outbox_relay_lease::expires_at.eq(now + ttl),
        ))
        .execute(conn)?;
    Ok(taken == 1)
}

/// Frees the relay lease if `holder` has it.
pub(crate) fn release_lease(conn: &mut AnyConnection, holder: &str) -> QueryResult<()> {
    diesel::update(outbox_relay_lease::table)
        .filter(outbox_relay_lease::name.eq("relay"))
        .filter(outbox_relay_lease::holder.eq(holder))
        .set(outbox_relay_lease::holder.eq(None::<String>))
        .execute(conn)
        .map(|_| ())
}

/// The oldest `limit` pending rows, in commit-sequence order.
pub(crate) fn oldest_pending(
    conn: &mut AnyConnection,
    limit: i64,
) -> QueryResult<Vec<PendingEvent>> {
    outbox::table
        .filter(outbox::sent_at.is_null())
        .order(outbox::seq)
        .limit(limit)
        .select((
            outbox::seq,
            outbox::event_id,
            outbox::topic,
            outbox::partition_key,
            outbox::event_type,
            outbox::payload,
            outbox::traceparent,
        ))
        .load::<PendingEvent>(conn)
}

pub(crate) fn mark_sent(conn: &mut AnyConnection, seqs: &[i64]) -> QueryResult<()> {
    diesel::update(outbox::table.filter(outbox::seq.eq_any(seqs)))
        .set(outbox::sent_at.eq(now()))
        .execute(conn)
        .map(|_| ())
}

/// Deletes the rows sent before `cutoff`.
pub(crate) fn prune_sent_before(
    conn: &mut AnyConnection,
    cutoff: NaiveDateTime,
) -> QueryResult<()> {
    diesel::delete(outbox::table.filter(outbox::sent_at.lt(cutoff)))
        .execute(conn)
        .map(|_| ())
}
