//! The consumers' record of applied events, `(consumer, event_id)`: what
//! makes a redelivered event change nothing.

use diesel::prelude::*;

use super::outbox::now;
use super::schema::processed_events;
use super::AnyConnection;

pub(crate) fn already_applied(
    conn: &mut AnyConnection,
    consumer: &str,
    event_id: &str,
) -> QueryResult<bool> {
    let seen: i64 = processed_events::table
        .filter(processed_events::consumer.eq(consumer))
        .filter(processed_events::event_id.eq(event_id))
        .count()
        .get_result(conn)?;
    Ok(seen > 0)
}

pub(crate) fn record_applied(
    conn: &mut AnyConnection,
    consumer: &str,
    event_id: &str,
) -> QueryResult<()> {
    diesel::insert_into(processed_events::table)
        .values((
            processed_events::consumer.eq(consumer),
            processed_events::event_id.eq(event_id),
            processed_events::processed_at.eq(now()),
        ))
        .execute(conn)
        .map(|_| ())
}
