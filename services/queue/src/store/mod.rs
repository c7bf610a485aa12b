//! Waiting-line storage, SQL only. Every write to a line's tokens holds the
//! line's row and raises its `version` (joins, admissions, drop-outs, ended
//! passes), so they serialize per concert and other instances can read what
//! changed since the version they know; position lookups from the database
//! (the rare path: most are answered from memory) read a handful of rows.

mod schema;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};
use ticket_runtime::{AnyConnection, DbError, DbResult};

use crate::domain::{dropout_index, fans_ahead, Ended, LineChange, QueueToken, TokenStatus};
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
    version: i64,
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
            version: row.version,
        }
    }
}

/// A concert's line as joins and admission need it.
#[derive(Debug, Clone, Queryable)]
pub struct Line {
    pub active_count: i64,
    pub next_seq: i64,
    pub rate_clock: NaiveDateTime,
    /// The line's change number: see the migration `line_versions`.
    pub version: i64,
}

/// A new token's row.
#[derive(Insertable)]
#[diesel(table_name = queue_tokens)]
struct NewToken {
    token: QueueTokenId,
    user_id: UserId,
    concert_id: ConcertId,
    seq: i64,
    status: TokenStatus,
    last_seen_at: NaiveDateTime,
    created_at: NaiveDateTime,
    version: i64,
}

/// Rows per INSERT: far below either backend's limit on bound parameters.
const INSERT_CHUNK: usize = 500;

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

/// The live tokens of these fans in the concert's line.
pub fn find_live_of(
    conn: &mut AnyConnection,
    concert_id: ConcertId,
    users: &[UserId],
) -> DbResult<Vec<QueueToken>> {
    let mut found = Vec::new();
    for chunk in users.chunks(INSERT_CHUNK) {
        let rows = queue_tokens::table
            .filter(queue_tokens::concert_id.eq(concert_id))
            .filter(queue_tokens::user_id.eq_any(chunk))
            .filter(queue_tokens::status.eq_any([TokenStatus::Waiting, TokenStatus::Active]))
            .select(TokenRow::as_select())
            .load(conn)?;
        found.extend(rows.into_iter().map(QueueToken::from));
    }
    Ok(found)
}

/// The concert's line, created empty if it is new, and locked until the
/// transaction ends (see [`lock_line`]).
pub fn open_line(
    conn: &mut AnyConnection,
    concert_id: ConcertId,
    now: DateTime<Utc>,
) -> DbResult<Line> {
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
    lock_line(conn, concert_id)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

/// Puts `tokens` (new, WAITING, numbered from the line's `next_seq` on,
/// stamped with the line's next version) at the end of their line.
pub fn enqueue(
    conn: &mut AnyConnection,
    concert_id: ConcertId,
    tokens: &[QueueToken],
    now: DateTime<Utc>,
) -> DbResult<()> {
    let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
        return Ok(());
    };
    let rows: Vec<NewToken> = tokens
        .iter()
        .map(|t| NewToken {
            token: t.token,
            user_id: t.user_id,
            concert_id,
            seq: t.seq,
            status: TokenStatus::Waiting,
            last_seen_at: t.last_seen_at.naive_utc(),
            created_at: now.naive_utc(),
            version: t.version,
        })
        .collect();
    match conn {
        // diesel runs SQLite's multi-row insert in a transaction of its
        // own, which cannot nest in ours; one prepared statement per row
        // costs SQLite (in-process) little.
        AnyConnection::Sqlite(c) => {
            for row in &rows {
                diesel::insert_into(queue_tokens::table)
                    .values(row)
                    .execute(c)?;
            }
        }
        AnyConnection::Postgresql(c) => {
            for chunk in rows.chunks(INSERT_CHUNK) {
                diesel::insert_into(queue_tokens::table)
                    .values(chunk)
                    .execute(c)?;
            }
        }
    }
    diesel::update(queue_lines::table.find(concert_id))
        .set((
            queue_lines::next_seq.eq(last.seq + 1),
            queue_lines::version.eq(first.version),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records that a waiting fan is still there.
pub fn seen(conn: &mut AnyConnection, token: QueueTokenId, now: DateTime<Utc>) -> DbResult<()> {
    seen_all(conn, &[token], now)
}

/// Records that these fans, if still waiting, were there at `now`.
pub fn seen_all(
    conn: &mut AnyConnection,
    tokens: &[QueueTokenId],
    now: DateTime<Utc>,
) -> DbResult<()> {
    for chunk in tokens.chunks(INSERT_CHUNK) {
        diesel::update(queue_tokens::table)
            .filter(queue_tokens::token.eq_any(chunk))
            .filter(queue_tokens::status.eq(TokenStatus::Waiting))
            .filter(queue_tokens::last_seen_at.lt(now.naive_utc()))
            .set(queue_tokens::last_seen_at.eq(now.naive_utc()))
            .execute(conn)?;
    }
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
            queue_lines::version,
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
    version: i64,
) -> DbResult<bool> {
    let changed = diesel::update(queue_tokens::table.find(token))
        .filter(queue_tokens::status.eq(TokenStatus::Waiting))
        .set((
            queue_tokens::status.eq(TokenStatus::Active),
            queue_tokens::pass.eq(pass),
            queue_tokens::pass_expires_at.eq(pass_expires_at.naive_utc()),
            queue_tokens::admitted_at.eq(now.naive_utc()),
            queue_tokens::version.eq(version),
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
    version: i64,
) -> DbResult<()> {
    diesel::update(queue_lines::table.find(concert_id))
        .set((
            queue_lines::active_count.eq(queue_lines::active_count + admitted),
            queue_lines::head_seq.eq(head_seq),
            queue_lines::rate_clock.eq(rate_clock.naive_utc()),
            queue_lines::version.eq(version),
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

/// Takes waiting fans who stopped polling since `idle_since` out of the
/// line, each line under its lock with its version raised; what changed,
/// per line.
pub fn drop_idle_waiters(
    conn: &mut AnyConnection,
    idle_since: DateTime<Utc>,
    reason: Ended,
    limit: i64,
) -> DbResult<Vec<LineChange>> {
    let idle: Vec<QueueToken> = queue_tokens::table
        .filter(queue_tokens::status.eq(TokenStatus::Waiting))
        .filter(queue_tokens::last_seen_at.lt(idle_since.naive_utc()))
        .limit(limit)
        .select(TokenRow::as_select())
        .load(conn)?
        .into_iter()
        .map(QueueToken::from)
        .collect();
    let mut by_line: std::collections::BTreeMap<ConcertId, Vec<QueueToken>> = Default::default();
    for token in idle {
        by_line.entry(token.concert_id).or_default().push(token);
    }
    let mut changes = Vec::new();
    // Lines in one order, each locked before its tokens: the order joins
    // and admissions take them in too.
    for (concert_id, tokens) in by_line {
        let Some(line) = lock_line(conn, concert_id)? else {
            continue;
        };
        let version = line.version + 1;
        let mut dropped = Vec::new();
        for mut token in tokens {
            let changed = diesel::update(queue_tokens::table.find(token.token))
                .filter(queue_tokens::status.eq(TokenStatus::Waiting))
                .set((
                    queue_tokens::status.eq(TokenStatus::Expired),
                    queue_tokens::ended_reason.eq(reason),
                    queue_tokens::version.eq(version),
                ))
                .execute(conn)?;
            if changed == 0 {
                continue;
            }
            count_dropout(conn, concert_id, token.seq)?;
            token.status = TokenStatus::Expired;
            token.ended_reason = Some(reason);
            token.version = version;
            dropped.push(token);
        }
        if dropped.is_empty() {
            continue;
        }
        set_line_version(conn, concert_id, version)?;
        changes.push(LineChange {
            concert_id,
            from_version: line.version,
            to_version: version,
            tokens: dropped,
        });
    }
    Ok(changes)
}

fn count_dropout(conn: &mut AnyConnection, concert_id: ConcertId, seq: i64) -> DbResult<()> {
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
    Ok(())
}

fn set_line_version(conn: &mut AnyConnection, concert_id: ConcertId, version: i64) -> DbResult<()> {
    diesel::update(queue_lines::table.find(concert_id))
        .set(queue_lines::version.eq(version))
        .execute(conn)?;
    Ok(())
}

/// Ends an ACTIVE token and frees its place, under the line's lock with
/// its version raised; the token as it was left, or none if it was not
/// active.
pub fn end_active(
    conn: &mut AnyConnection,
    token: QueueTokenId,
    concert_id: ConcertId,
    reason: Ended,
) -> DbResult<Option<LineChange>> {
    let Some(line) = lock_line(conn, concert_id)? else {
        return Ok(None);
    };
    let version = line.version + 1;
    let changed = diesel::update(queue_tokens::table.find(token))
        .filter(queue_tokens::status.eq(TokenStatus::Active))
        .set((
            queue_tokens::status.eq(TokenStatus::Expired),
            queue_tokens::ended_reason.eq(reason),
            queue_tokens::version.eq(version),
        ))
        .execute(conn)?;
    if changed == 0 {
        return Ok(None);
    }
    diesel::update(queue_lines::table.find(concert_id))
        .set((
            queue_lines::active_count.eq(queue_lines::active_count - 1),
            queue_lines::version.eq(version),
        ))
        .execute(conn)?;
    let ended = find(conn, token)?;
    Ok(Some(LineChange {
        concert_id,
        from_version: line.version,
        to_version: version,
        tokens: ended.into_iter().collect(),
    }))
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

/// Every line's change number.
pub fn line_versions(conn: &mut AnyConnection) -> DbResult<Vec<(ConcertId, i64)>> {
    Ok(queue_lines::table
        .select((queue_lines::concert_id, queue_lines::version))
        .load(conn)?)
}

/// The concert's tokens changed after change number `version`.
pub fn changed_since(
    conn: &mut AnyConnection,
    concert_id: ConcertId,
    version: i64,
) -> DbResult<Vec<QueueToken>> {
    Ok(queue_tokens::table
        .filter(queue_tokens::concert_id.eq(concert_id))
        .filter(queue_tokens::version.gt(version))
        .select(TokenRow::as_select())
        .load(conn)?
        .into_iter()
        .map(QueueToken::from)
        .collect())
}

/// The concert's tokens still in line (waiting or active).
pub fn live_tokens(conn: &mut AnyConnection, concert_id: ConcertId) -> DbResult<Vec<QueueToken>> {
    Ok(queue_tokens::table
        .filter(queue_tokens::concert_id.eq(concert_id))
        .filter(queue_tokens::status.eq_any([TokenStatus::Waiting, TokenStatus::Active]))
        .select(TokenRow::as_select())
        .load(conn)?
        .into_iter()
        .map(QueueToken::from)
        .collect())
}
