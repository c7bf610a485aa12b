//! Waiting-line storage, SQL only. Joining and admitting change the line's
//! row, so they serialize per concert; position lookups read a handful of
//! rows.

mod schema;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};
use ticket_runtime::{AnyConnection, DbResult};

use crate::domain::{dropout_index, fans_ahead, Ended, QueueToken, TokenStatus};
use schema::{known_concerts, queue_dropouts, queue_lines, queue_tokens};

/// A token's row; the line shows it as a [`QueueToken`].
#[derive(Queryable, Selectable)]
#[diesel(table_name = queue_tokens)]
struct TokenRow {
    token: QueueTokenId,
    user_id: UserId,
    concert_id: ConcertId,
    seq: i64,
    status: TokenStatus,
    pass: Option<String>,
    pass_expires_at: Option<NaiveDateTime>,
    ended_reason: Option<Ended>,
    last_seen_at: NaiveDateTime,
}

impl From<TokenRow> for QueueToken {
    fn from(row: TokenRow) -> QueueToken {
        QueueToken {
            token: row.token,
            user_id: row.user_id,
            concert_id: row.concert_id,
            seq: row.seq,
            status: row.status,
            pass: row.pass,
            pass_expires_at: row.pass_expires_at.map(|at| at.and_utc()),
            ended_reason: row.ended_reason,
            last_seen_at: row.last_seen_at.and_utc(),
        }
    }
}

/// A concert's line as admission needs it.
#[derive(Debug, Clone, Queryable)]
pub struct Line {
    pub active_count: i64,
    pub next_seq: i64,
    pub rate_clock: NaiveDateTime,
}

/// A fan next in line.
#[derive(Debug, Clone, Queryable)]
pub struct Waiting {
    pub token: QueueTokenId,
    pub user_id: UserId,
    pub seq: i64,
}

pub fn remember_concert(conn: &mut AnyConnection, concert_id: ConcertId) -> DbResult<()> {
    let row = known_concerts::concert_id.eq(concert_id);
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(known_concerts::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn is_known_concert(conn: &mut AnyConnection, concert_id: ConcertId) -> DbResult<bool> {
    let found: i64 = known_concerts::table
        .find(concert_id)
        .count()
        .get_result(conn)?;
    Ok(found > 0)
}

pub fn find(conn: &mut AnyConnection, token: QueueTokenId) -> DbResult<Option<QueueToken>> {
    let row = queue_tokens::table
        .find(token)
        .select(TokenRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(QueueToken::from))
}

pub fn find_live(
    conn: &mut AnyConnection,
    user_id: UserId,
    concert_id: ConcertId,
) -> DbResult<Option<QueueToken>> {
    let row = queue_tokens::table
        .filter(queue_tokens::user_id.eq(user_id))
        .filter(queue_tokens::concert_id.eq(concert_id))
        .filter(queue_tokens::status.eq_any([TokenStatus::Waiting, TokenStatus::Active]))
        .select(TokenRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(QueueToken::from))
}

/// Puts the fan at the end of the concert's line.
pub fn join(
    conn: &mut AnyConnection,
    token: QueueTokenId,
    user_id: UserId,
    concert_id: ConcertId,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let line = (
        queue_lines::concert_id.eq(concert_id),
        queue_lines::next_seq.eq(1),
        queue_lines::head_seq.eq(1),
        queue_lines::active_count.eq(0),
        queue_lines::rate_clock.eq((now - TimeDelta::seconds(1)).naive_utc()),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(queue_lines::table)
        .values(line)
        .on_conflict_do_nothing()
        .execute(c))?;
    diesel::update(queue_lines::table.find(concert_id))
        .set(queue_lines::next_seq.eq(queue_lines::next_seq + 1))
        .execute(conn)?;
    let seq: i64 = queue_lines::table
        .find(concert_id)
        .select(queue_lines::next_seq - 1)
        .first(conn)?;
    diesel::insert_into(queue_tokens::table)
        .values((
            queue_tokens::token.eq(token),
            queue_tokens::user_id.eq(user_id),
            queue_tokens::concert_id.eq(concert_id),
            queue_tokens::seq.eq(seq),
            queue_tokens::status.eq(TokenStatus::Waiting),
            queue_tokens::last_seen_at.eq(now.naive_utc()),
            queue_tokens::created_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records that a waiting fan is still there.
pub fn seen(conn: &mut AnyConnection, token: QueueTokenId, now: DateTime<Utc>) -> DbResult<()> {
    diesel::update(queue_tokens::table.find(token))
        .filter(queue_tokens::status.eq(TokenStatus::Waiting))
        .set(queue_tokens::last_seen_at.eq(now.naive_utc()))
        .execute(conn)?;
    Ok(())
}

fn dropped_up_to(conn: &mut AnyConnection, concert_id: ConcertId, seq: i64) -> DbResult<i64> {
    let nodes = dropout_index::nodes_to_sum(seq);
    if nodes.is_empty() {
        return Ok(0);
    }
    let counts: Vec<i64> = queue_dropouts::table
        .filter(queue_dropouts::concert_id.eq(concert_id))
        .filter(queue_dropouts::node.eq_any(&nodes))
        .select(queue_dropouts::dropped)
        .load(conn)?;
    Ok(counts.iter().sum())
}

/// How many fans wait ahead of this one: a constant number of row reads.
pub fn position(conn: &mut AnyConnection, token: &QueueToken) -> DbResult<Option<i64>> {
    match token.status {
        TokenStatus::Active => return Ok(Some(0)),
        TokenStatus::Expired => return Ok(None),
        TokenStatus::Waiting => {}
    }
    let head: i64 = queue_lines::table
        .find(token.concert_id)
        .select(queue_lines::head_seq)
        .first(conn)?;
    let before_me = dropped_up_to(conn, token.concert_id, token.seq - 1)?;
    let before_head = dropped_up_to(conn, token.concert_id, head - 1)?;
    Ok(Some(fans_ahead(token.seq, head, before_me, before_head)))
}

/// The line's row, locked until the transaction ends: two instances
/// admitting at once take turns, and the second sees the first's
/// admissions and active count.
pub fn lock_line(conn: &mut AnyConnection, concert_id: ConcertId) -> DbResult<Option<Line>> {
    Ok(ticket_runtime::first_for_update!(
        conn,
        queue_lines::table.find(concert_id).select((
            queue_lines::active_count,
            queue_lines::next_seq,
            queue_lines::rate_clock,
        ))
    )?)
}

/// The first `limit` fans waiting, in arrival order.
pub fn next_waiting(
    conn: &mut AnyConnection,
    concert_id: ConcertId,
    limit: i64,
) -> DbResult<Vec<Waiting>> {
    Ok(queue_tokens::table
        .filter(queue_tokens::concert_id.eq(concert_id))
        .filter(queue_tokens::status.eq(TokenStatus::Waiting))
        .order(queue_tokens::seq)
        .limit(limit)
        .select((
            queue_tokens::token,
            queue_tokens::user_id,
            queue_tokens::seq,
        ))
        .load(conn)?)
}

/// Admits a fan still WAITING with their pass; false if they are not (one
/// dropped out by the sweeper since they were read stays out).
pub fn activate(
    conn: &mut AnyConnection,
    token: QueueTokenId,
    pass: &str,
    pass_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let changed = diesel::update(queue_tokens::table.find(token))
        .filter(queue_tokens::status.eq(TokenStatus::Waiting))
        .set((
            queue_tokens::status.eq(TokenStatus::Active),
            queue_tokens::pass.eq(pass),
            queue_tokens::pass_expires_at.eq(pass_expires_at.naive_utc()),
            queue_tokens::admitted_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Moves the line on after an admission round.
pub fn advance_line(
    conn: &mut AnyConnection,
    concert_id: ConcertId,
    admitted: i64,
    head_seq: i64,
    rate_clock: DateTime<Utc>,
) -> DbResult<()> {
    diesel::update(queue_lines::table.find(concert_id))
        .set((
            queue_lines::active_count.eq(queue_lines::active_count + admitted),
            queue_lines::head_seq.eq(head_seq),
            queue_lines::rate_clock.eq(rate_clock.naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Concerts whose line may have fans waiting.
pub fn lines_with_waiting(conn: &mut AnyConnection) -> DbResult<Vec<ConcertId>> {
    Ok(queue_lines::table
        .filter(queue_lines::head_seq.lt(queue_lines::next_seq))
        .select(queue_lines::concert_id)
        .load(conn)?)
}

/// Takes waiting fans who stopped polling since `idle_since` out of the line.
pub fn drop_idle_waiters(
    conn: &mut AnyConnection,
    idle_since: DateTime<Utc>,
    reason: Ended,
    limit: i64,
) -> DbResult<usize> {
    let idle: Vec<(QueueTokenId, ConcertId, i64)> = queue_tokens::table
        .filter(queue_tokens::status.eq(TokenStatus::Waiting))
        .filter(queue_tokens::last_seen_at.lt(idle_since.naive_utc()))
        .limit(limit)
        .select((
            queue_tokens::token,
            queue_tokens::concert_id,
            queue_tokens::seq,
        ))
        .load(conn)?;
    let mut dropped = 0;
    for (token, concert_id, seq) in idle {
        let changed = diesel::update(queue_tokens::table.find(token))
            .filter(queue_tokens::status.eq(TokenStatus::Waiting))
            .set((
                queue_tokens::status.eq(TokenStatus::Expired),
                queue_tokens::ended_reason.eq(reason),
            ))
            .execute(conn)?;
        if changed == 0 {
            continue;
        }
        dropped += 1;
        for node in dropout_index::nodes_to_update(seq) {
            let row = (
                queue_dropouts::concert_id.eq(concert_id),
                queue_dropouts::node.eq(node),
                queue_dropouts::dropped.eq(1),
            );
            ticket_runtime::on_backend!(conn, |c| diesel::insert_into(queue_dropouts::table)
                .values(row)
                .on_conflict((queue_dropouts::concert_id, queue_dropouts::node))
                .do_update()
                .set(queue_dropouts::dropped.eq(queue_dropouts::dropped + 1))
                .execute(c))?;
        }
    }
    Ok(dropped)
}

/// Ends an ACTIVE token and frees its place; false if it was not active.
pub fn end_active(
    conn: &mut AnyConnection,
    token: QueueTokenId,
    concert_id: ConcertId,
    reason: Ended,
) -> DbResult<bool> {
    let changed = diesel::update(queue_tokens::table.find(token))
        .filter(queue_tokens::status.eq(TokenStatus::Active))
        .set((
            queue_tokens::status.eq(TokenStatus::Expired),
            queue_tokens::ended_reason.eq(reason),
        ))
        .execute(conn)?;
    if changed == 1 {
        diesel::update(queue_lines::table.find(concert_id))
            .set(queue_lines::active_count.eq(queue_lines::active_count - 1))
            .execute(conn)?;
    }
    Ok(changed == 1)
}

/// Active tokens whose pass ran out.
pub fn lapsed_passes(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<(QueueTokenId, ConcertId)>> {
    Ok(queue_tokens::table
        .filter(queue_tokens::status.eq(TokenStatus::Active))
        .filter(queue_tokens::pass_expires_at.le(now.naive_utc()))
        .limit(limit)
        .select((queue_tokens::token, queue_tokens::concert_id))
        .load(conn)?)
}
