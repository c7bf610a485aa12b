//! The application layer: each use case in one local transaction, and the
//! decision of which events it publishes. HTTP calls come through
//! [`Queue`]; events through [`saga`]; the background jobs are
//! [`Queue::admit_all`], [`Queue::sweep`], [`Queue::refresh_index`] and
//! [`Queue::record_seen`].
//!
//! Polls are answered from memory ([`index`]); joins are committed in
//! groups ([`joins`]). docs/queue.md says what each guarantees.

pub mod index;
mod joins;
pub mod saga;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use shared_events::{Envelope, QueueTokenAdmitted};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ticket_runtime::auth::pass::{PassClaims, PassSigner};
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};
use ticket_runtime::{AnyConnection, Clock, Db, DbError, DbResult, Tx};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{AdmissionBudget, Ended, LineChange, QueuePolicy, QueueToken, TokenStatus};
use crate::store;
use index::{LineIndex, Lookup};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no concert {0} is open for queueing")]
    ConcertNotFound(ConcertId),
    #[error("no queue token {0}")]
    TokenNotFound(QueueTokenId),
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for QueueError {
    /// Besides the database's own aborts, a unique violation: the fan
    /// joined twice at the same moment (through two instances), and the
    /// loser's transaction, run again, finds the winner's token.
    fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unexpected(e) if e.is_transient() || e.is_unique_violation())
    }
}

/// How the rush paths trade freshness and latency for throughput (the
/// `[queue]` settings beside the policy; docs/configuration.md).
#[derive(Debug, Clone, Deserialize)]
pub struct Tuning {
    /// How often an instance reads what other instances changed in the
    /// lines: the staleness bound of its answers.
    pub index_refresh_ms: u64,
    /// How long a join waits for others to commit with.
    pub join_batch_window_ms: u64,
    /// The most joins committed in one transaction.
    pub join_batch_max: usize,
    /// How often polls' "still there" are written, in one statement.
    pub seen_flush_ms: u64,
}

/// A token with the number of fans ahead of it (0 once admitted, none once
/// over).
#[derive(Debug, Clone)]
pub struct Place {
    pub token: QueueToken,
    pub position: Option<i64>,
}

/// What the request path and the jobs share.
struct Shared {
    db: Db,
    policy: QueuePolicy,
    signer: Arc<PassSigner>,
    clock: Clock,
    index: LineIndex,
    /// Waiting fans who polled and whose presence is not written yet.
    seen: Mutex<Vec<QueueTokenId>>,
}

#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
    arrivals: mpsc::Sender<Arrival>,
}

use joins::Arrival;

impl Queue {
    /// The lines rebuilt from the tables, and the committer of join groups
    /// started (it stops when the last clone of this `Queue` is dropped).
    pub async fn start(
        db: Db,
        policy: QueuePolicy,
        tuning: &Tuning,
        signer: Arc<PassSigner>,
        clock: Clock,
    ) -> Result<Queue, DbError> {
        let index = LineIndex::rebuild(&db).await?;
        let shared = Arc::new(Shared {
            db,
            policy,
            signer,
            clock,
            index,
            seen: Mutex::new(Vec::new()),
        });
        let max = tuning.join_batch_max.max(1);
        let (arrivals, queued) = mpsc::channel(max * 4);
        tokio::spawn(joins::commit_in_groups(
            shared.clone(),
            queued,
            Duration::from_millis(tuning.join_batch_window_ms),
            max,
        ));
        Ok(Queue { shared, arrivals })
    }

    pub fn policy(&self) -> &QueuePolicy {
        &self.shared.policy
    }

    /// Puts the fan in the concert's line, or returns their live place in
    /// it (`true` when the place is new). Answered once the fan's group
    /// committed.
    pub async fn join(
        &self,
        user: UserId,
        concert: ConcertId,
    ) -> Result<(bool, Place), QueueError> {
        let (answer, answered) = oneshot::channel();
        let stopped =
            || QueueError::Unexpected(DbError::Unavailable("the queue is stopping".into()));
        self.arrivals
            .send(Arrival {
                user,
                concert,
                answer,
            })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// The fan's own place; another's token is "not found": its id says
    /// nothing, and its pass is a credential. From memory when this
    /// instance holds the token; otherwise (another instance's token it has
    /// not read yet, or one that ended long ago) from the database.
    pub async fn poll(&self, user: UserId, token: QueueTokenId) -> Result<Place, QueueError> {
        let shared = &self.shared;
        let now = shared.clock.now();
        match shared
            .index
            .lookup(token, user, now, shared.policy.seen_refresh())
        {
            Lookup::Found { place, seen } => {
                if seen {
                    shared
                        .seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(token);
                }
                Ok(place)
            }
            Lookup::NotYours => Err(QueueError::TokenNotFound(token)),
            Lookup::Unknown => {
                let policy = shared.policy.clone();
                // No transaction: a read and, now and then, one conditional
                // write; on SQLite a transaction would take the write lock.
                shared
                    .db
                    .run(move |conn| {
                        let found = store::find(conn, token)?
                            .filter(|t| t.user_id == user)
                            .ok_or(QueueError::TokenNotFound(token))?;
                        still_there(conn, &found, &policy, now)?;
                        let position = store::position(conn, &found)?;
                        Ok(Place {
                            token: found,
                            position,
                        })
                    })
                    .await
            }
        }
    }

    /// One admission round over every line with fans waiting. Safe with two
    /// instances: each line is admitted in one transaction on its row.
    pub async fn admit_all(&self) -> Result<(), DbError> {
        let lines = self.shared.db.run(store::lines_with_waiting).await?;
        for concert in lines {
            let (policy, signer, clock) = (
                self.shared.policy.clone(),
                self.shared.signer.clone(),
                self.shared.clock,
            );
            let admitted = self
                .shared
                .db
                .transaction(move |tx| admit(tx, concert, &policy, &signer, clock.now()))
                .await;
            match admitted {
                Ok(Some(change)) => self.shared.index.apply(change),
                Ok(None) => {}
                // One line that fails does not hold up the others.
                Err(error) => tracing::warn!(%concert, %error, "admission failed; will retry"),
            }
        }
        Ok(())
    }

    /// Drops waiters who stopped polling and frees the places of expired
    /// passes.
    pub async fn sweep(&self) -> Result<(), DbError> {
        let (policy, clock) = (self.shared.policy.clone(), self.shared.clock);
        let changes = self
            .shared
            .db
            .transaction(move |tx| {
                let now = clock.now();
                let idle_since = now - policy.poll_timeout();
                let mut changes =
                    store::drop_idle_waiters(tx.conn(), idle_since, Ended::Dropped, 500)?;
                let mut lapsed = store::lapsed_passes(tx.conn(), now, 500)?;
                // Lines locked in one order, as every transaction takes them.
                lapsed.sort_by_key(|(_, concert)| *concert);
                for (token, concert) in lapsed {
                    changes.extend(store::end_active(
                        tx.conn(),
                        token,
                        concert,
                        Ended::PassExpired,
                    )?);
                }
                Ok::<_, DbError>(changes)
            })
            .await?;
        let ended: usize = changes.iter().map(|c| c.tokens.len()).sum();
        for change in changes {
            self.shared.index.apply(change);
        }
        if ended > 0 {
            tracing::info!(ended, "queue swept");
        }
        Ok(())
    }

    /// Reads what other instances (and this one's event consumer) changed
    /// in the lines since the last refresh.
    pub async fn refresh_index(&self) -> Result<(), DbError> {
        self.shared.index.refresh(&self.shared.db).await
    }

    /// Writes, in one statement, that the waiting fans who polled since
    /// the last round are still there.
    pub async fn record_seen(&self) -> Result<(), DbError> {
        let tokens =
            std::mem::take(&mut *self.shared.seen.lock().unwrap_or_else(|p| p.into_inner()));
        if tokens.is_empty() {
            return Ok(());
        }
        let now = self.shared.clock.now();
        self.shared
            .db
            .run(move |conn| store::seen_all(conn, &tokens, now))
            .await
    }
}

/// A waiting fan who polls or asks again stays in line; polls closer
/// together than the policy's refresh do not rewrite the row.
fn still_there(
    conn: &mut AnyConnection,
    token: &QueueToken,
    policy: &QueuePolicy,
    now: DateTime<Utc>,
) -> DbResult<()> {
    if token.status == TokenStatus::Waiting && token.last_seen_at <= now - policy.seen_refresh() {
        store::seen(conn, token.token, now)?;
    }
    Ok(())
}

/// Admits waiting fans of one concert in arrival order, as the cap and the
/// rate allow, signing a pass for each and publishing `QueueTokenAdmitted`;
/// what changed in the line, if anything did.
pub fn admit(
    tx: &mut Tx<'_>,
    concert: ConcertId,
    policy: &QueuePolicy,
    signer: &PassSigner,
    now: DateTime<Utc>,
) -> DbResult<Option<LineChange>> {
    let Some(line) = store::lock_line(tx.conn(), concert)? else {
        return Ok(None);
    };
    let budget = AdmissionBudget::new(policy, line.active_count, line.rate_clock.and_utc(), now);
    if budget.admit == 0 {
        return Ok(None);
    }
    let version = line.version + 1;
    let waiting = store::next_waiting(tx.conn(), concert, budget.admit)?;
    // Whole seconds, like the pass's `exp`.
    let expires_at = (now + policy.pass_ttl()).trunc_subsecs(0);
    let mut admitted = Vec::new();
    for fan in &waiting {
        let pass = signer.sign(&PassClaims {
            sub: fan.user_id.get(),
            concert_id: concert.get(),
            jti: fan.token.get(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        });
        if !store::activate(tx.conn(), fan.token, &pass, expires_at, now, version)? {
            continue;
        }
        admitted.push(QueueToken {
            token: fan.token,
            user_id: fan.user_id,
            concert_id: concert,
            seq: fan.seq,
            status: TokenStatus::Active,
            pass: Some(pass),
            pass_expires_at: Some(expires_at),
            ended_reason: None,
            last_seen_at: now,
            version,
        });
        tx.publish(&Envelope::new(QueueTokenAdmitted {
            token: fan.token.get(),
            user_id: fan.user_id.get(),
            concert_id: concert.get(),
            pass_expires_at: expires_at,
        }))?;
    }
    // Everyone before the last admitted fan has left the waiting line; when
    // nobody waits any more, neither does anyone before the next arrival.
    let head = if (waiting.len() as i64) < budget.admit {
        line.next_seq
    } else {
        waiting.last().map_or(line.next_seq, |fan| fan.seq + 1)
    };
    let count = admitted.len() as i64;
    store::advance_line(
        tx.conn(),
        concert,
        count,
        head,
        budget.clock_after(count),
        version,
    )?;
    Ok(Some(LineChange {
        concert_id: concert,
        from_version: line.version,
        to_version: version,
        tokens: admitted,
    }))
}
