//! Waiting-line storage. Joining and admitting change the line's row, so
//! they serialize per concert; position lookups read a handful of rows.

mod schema;

use chrono::{DateTime, NaiveDateTime, SubsecRound, TimeDelta, Utc};
use diesel::prelude::*;
use shared_events::{Envelope, QueuePassEnded, QueueTokenAdmitted};
use ticket_runtime::pass::{PassClaims, PassSigner};
use ticket_runtime::{AnyConnection, Tx};
use uuid::Uuid;

use crate::domain::{dropout_index, ended, fans_ahead, AdmissionBudget, QueuePolicy, TokenStatus};
use schema::{known_concerts, queue_dropouts, queue_lines, queue_tokens};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = queue_tokens)]
pub struct QueueToken {
    pub token: String,
    pub user_id: String,
    pub concert_id: String,
    pub seq: i64,
    pub status: String,
    pub pass: Option<String>,
    pub pass_expires_at: Option<NaiveDateTime>,
    pub ended_reason: Option<String>,
    pub last_seen_at: NaiveDateTime,
}

impl QueueToken {
    pub fn status(&self) -> TokenStatus {
        TokenStatus::parse(&self.status).unwrap_or(TokenStatus::Expired)
    }
}

fn naive(at: DateTime<Utc>) -> NaiveDateTime {
    at.naive_utc()
}

pub fn remember_concert(conn: &mut AnyConnection, concert_id: Uuid) -> QueryResult<()> {
    let row = known_concerts::concert_id.eq(concert_id.to_string());
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(known_concerts::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn is_known_concert(conn: &mut AnyConnection, concert_id: Uuid) -> QueryResult<bool> {
    let found: i64 = known_concerts::table
        .find(concert_id.to_string())
        .count()
        .get_result(conn)?;
    Ok(found > 0)
}

pub fn find(conn: &mut AnyConnection, token: Uuid) -> QueryResult<Option<QueueToken>> {
    queue_tokens::table
        .find(token.to_string())
        .select(QueueToken::as_select())
        .first(conn)
        .optional()
}

pub fn find_live(
    conn: &mut AnyConnection,
    user_id: Uuid,
    concert_id: Uuid,
) -> QueryResult<Option<QueueToken>> {
    queue_tokens::table
        .filter(queue_tokens::user_id.eq(user_id.to_string()))
        .filter(queue_tokens::concert_id.eq(concert_id.to_string()))
        .filter(
            queue_tokens::status
                .eq_any([TokenStatus::Waiting.as_str(), TokenStatus::Active.as_str()]),
        )
        .select(QueueToken::as_select())
        .first(conn)
        .optional()
}

/// Puts the fan at the end of the concert's line.
pub fn join(
    conn: &mut AnyConnection,
    user_id: Uuid,
    concert_id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<Uuid> {
    let concert = concert_id.to_string();
    let line = (
        queue_lines::concert_id.eq(&concert),
        queue_lines::next_seq.eq(1),
        queue_lines::head_seq.eq(1),
        queue_lines::active_count.eq(0),
        queue_lines::rate_clock.eq(naive(now - TimeDelta::seconds(1))),
    );
    ticket_runtime::on_backend!(conn, |c| diesel::insert_into(queue_lines::table)
        .values(line)
        .on_conflict_do_nothing()
        .execute(c))?;
    diesel::update(queue_lines::table.find(&concert))
        .set(queue_lines::next_seq.eq(queue_lines::next_seq + 1))
        .execute(conn)?;
    let seq: i64 = queue_lines::table
        .find(&concert)
        .select(queue_lines::next_seq - 1)
        .first(conn)?;
    let token = Uuid::now_v7();
    diesel::insert_into(queue_tokens::table)
        .values((
            queue_tokens::token.eq(token.to_string()),
            queue_tokens::user_id.eq(user_id.to_string()),
            queue_tokens::concert_id.eq(&concert),
            queue_tokens::seq.eq(seq),
            queue_tokens::status.eq(TokenStatus::Waiting.as_str()),
            queue_tokens::last_seen_at.eq(naive(now)),
            queue_tokens::created_at.eq(naive(now)),
        ))
        .execute(conn)?;
    Ok(token)
}

/// Records that a waiting fan is still there; skipped when it was recorded recently.
pub fn touch(
    conn: &mut AnyConnection,
    token: &QueueToken,
    now: DateTime<Utc>,
    policy: &QueuePolicy,
) -> QueryResult<()> {
    if token.status() != TokenStatus::Waiting
        || token.last_seen_at > naive(now - policy.seen_refresh())
    {
        return Ok(());
    }
    diesel::update(queue_tokens::table.find(&token.token))
        .filter(queue_tokens::status.eq(TokenStatus::Waiting.as_str()))
        .set(queue_tokens::last_seen_at.eq(naive(now)))
        .execute(conn)?;
    Ok(())
}

fn dropped_up_to(conn: &mut AnyConnection, concert_id: &str, seq: i64) -> QueryResult<i64> {
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
pub fn position(conn: &mut AnyConnection, token: &QueueToken) -> QueryResult<Option<i64>> {
    match token.status() {
        TokenStatus::Active => return Ok(Some(0)),
        TokenStatus::Expired => return Ok(None),
        TokenStatus::Waiting => {}
    }
    let head: i64 = queue_lines::table
        .find(&token.concert_id)
        .select(queue_lines::head_seq)
        .first(conn)?;
    let before_me = dropped_up_to(conn, &token.concert_id, token.seq - 1)?;
    let before_head = dropped_up_to(conn, &token.concert_id, head - 1)?;
    Ok(Some(fans_ahead(token.seq, head, before_me, before_head)))
}

/// Admits waiting fans of one concert in arrival order, as the cap and the
/// rate allow, signing a pass for each and publishing `QueueTokenAdmitted`.
pub fn admit(
    tx: &mut Tx<'_>,
    concert_id: &str,
    policy: &QueuePolicy,
    signer: &PassSigner,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    // The line's row is locked first: two instances admitting at once take
    // turns, and the second sees the first's admissions and active count.
    let line: Option<(i64, i64, NaiveDateTime)> = ticket_runtime::first_for_update!(
        tx.conn(),
        queue_lines::table.find(concert_id).select((
            queue_lines::active_count,
            queue_lines::next_seq,
            queue_lines::rate_clock,
        ))
    )?;
    let Some((active, next_seq, rate_clock)) = line else {
        return Ok(0);
    };
    let budget = AdmissionBudget::new(policy, active, rate_clock.and_utc(), now);
    if budget.admit == 0 {
        return Ok(0);
    }
    let waiting: Vec<(String, String, i64)> = queue_tokens::table
        .filter(queue_tokens::concert_id.eq(concert_id))
        .filter(queue_tokens::status.eq(TokenStatus::Waiting.as_str()))
        .order(queue_tokens::seq)
        .limit(budget.admit)
        .select((
            queue_tokens::token,
            queue_tokens::user_id,
            queue_tokens::seq,
        ))
        .load(tx.conn())?;
    // Whole seconds, like the pass's `exp`.
    let expires_at = (now + policy.pass_ttl()).trunc_subsecs(0);
    let Ok(concert) = Uuid::parse_str(concert_id) else {
        return Ok(0);
    };
    let mut admitted = 0;
    for (token, user_id, _) in &waiting {
        let (Ok(token_id), Ok(user)) = (Uuid::parse_str(token), Uuid::parse_str(user_id)) else {
            continue;
        };
        let pass = signer.sign(&PassClaims {
            sub: user,
            concert_id: concert,
            jti: token_id,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        });
        // Only a fan still WAITING is admitted: one dropped out by the
        // sweeper since the read above stays out.
        let changed = diesel::update(queue_tokens::table.find(token))
            .filter(queue_tokens::status.eq(TokenStatus::Waiting.as_str()))
            .set((
                queue_tokens::status.eq(TokenStatus::Active.as_str()),
                queue_tokens::pass.eq(pass),
                queue_tokens::pass_expires_at.eq(naive(expires_at)),
                queue_tokens::admitted_at.eq(naive(now)),
            ))
            .execute(tx.conn())?;
        if changed == 0 {
            continue;
        }
        admitted += 1;
        tx.publish(&Envelope::new(
            QueueTokenAdmitted {
                token: token_id,
                user_id: user,
                concert_id: concert,
                pass_expires_at: expires_at,
            },
            user_id.clone(),
        ))?;
    }
    // Everyone before the last admitted fan has left the waiting line; when
    // nobody waits any more, neither does anyone before the next arrival.
    let head = if (waiting.len() as i64) < budget.admit {
        next_seq
    } else {
        waiting.last().map_or(next_seq, |(_, _, seq)| seq + 1)
    };
    diesel::update(queue_lines::table.find(concert_id))
        .set((
            queue_lines::active_count.eq(queue_lines::active_count + admitted),
            queue_lines::head_seq.eq(head),
            queue_lines::rate_clock.eq(naive(budget.clock_after(admitted))),
        ))
        .execute(tx.conn())?;
    Ok(admitted as usize)
}

/// Concerts whose line may have fans waiting.
pub fn lines_with_waiting(conn: &mut AnyConnection) -> QueryResult<Vec<String>> {
    queue_lines::table
        .filter(queue_lines::head_seq.lt(queue_lines::next_seq))
        .select(queue_lines::concert_id)
        .load(conn)
}

/// Takes waiting fans who stopped polling out of the line.
pub fn drop_idle_waiters(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    policy: &QueuePolicy,
    limit: i64,
) -> QueryResult<usize> {
    let idle: Vec<(String, String, i64)> = queue_tokens::table
        .filter(queue_tokens::status.eq(TokenStatus::Waiting.as_str()))
        .filter(queue_tokens::last_seen_at.lt(naive(now - policy.poll_timeout())))
        .limit(limit)
        .select((
            queue_tokens::token,
            queue_tokens::concert_id,
            queue_tokens::seq,
        ))
        .load(conn)?;
    let mut dropped = 0;
    for (token, concert_id, seq) in idle {
        let changed = diesel::update(queue_tokens::table.find(&token))
            .filter(queue_tokens::status.eq(TokenStatus::Waiting.as_str()))
            .set((
                queue_tokens::status.eq(TokenStatus::Expired.as_str()),
                queue_tokens::ended_reason.eq(ended::DROPPED),
            ))
            .execute(conn)?;
        if changed == 0 {
            continue;
        }
        dropped += 1;
        for node in dropout_index::nodes_to_update(seq) {
            let row = (
                queue_dropouts::concert_id.eq(&concert_id),
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

fn end_active(
    conn: &mut AnyConnection,
    token: &str,
    concert_id: &str,
    reason: &str,
) -> QueryResult<bool> {
    let changed = diesel::update(queue_tokens::table.find(token))
        .filter(queue_tokens::status.eq(TokenStatus::Active.as_str()))
        .set((
            queue_tokens::status.eq(TokenStatus::Expired.as_str()),
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

/// Frees the places of passes that ran out.
pub fn expire_passes(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    let expired: Vec<(String, String)> = queue_tokens::table
        .filter(queue_tokens::status.eq(TokenStatus::Active.as_str()))
        .filter(queue_tokens::pass_expires_at.le(naive(now)))
        .limit(limit)
        .select((queue_tokens::token, queue_tokens::concert_id))
        .load(conn)?;
    let mut ended_count = 0;
    for (token, concert_id) in expired {
        if end_active(conn, &token, &concert_id, ended::PASS_EXPIRED)? {
            ended_count += 1;
        }
    }
    Ok(ended_count)
}

/// Ends the fan's pass once their payment completed, and says so.
pub fn end_pass_after_payment(
    tx: &mut Tx<'_>,
    cause: &Envelope,
    user_id: Uuid,
    concert_id: Uuid,
) -> QueryResult<bool> {
    let Some(live) = find_live(tx.conn(), user_id, concert_id)? else {
        return Ok(false);
    };
    if live.status() != TokenStatus::Active
        || !end_active(
            tx.conn(),
            &live.token,
            &live.concert_id,
            ended::PAYMENT_COMPLETED,
        )?
    {
        return Ok(false);
    }
    tx.publish(&Envelope::caused_by(
        cause,
        QueuePassEnded {
            token: Uuid::parse_str(&live.token).unwrap_or_default(),
            user_id,
            concert_id,
            reason: ended::PAYMENT_COMPLETED.into(),
        },
        user_id.to_string(),
    ))?;
    Ok(true)
}
