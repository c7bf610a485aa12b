//! The application layer: each use case in one local transaction, and the
//! decision of which events it publishes. HTTP calls come through
//! [`Queue`]; events through [`saga`]; the admission and sweep jobs are
//! [`Queue::admit_all`] and [`Queue::sweep`].

pub mod saga;

use chrono::{DateTime, SubsecRound, Utc};
use shared_events::{Envelope, QueueTokenAdmitted};
use std::sync::Arc;
use ticket_runtime::auth::pass::{PassClaims, PassSigner};
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};
use ticket_runtime::{AnyConnection, Db, DbError, Tx};

use crate::domain::{AdmissionBudget, Ended, QueuePolicy, TokenStatus};
use crate::store::{self, QueueToken};

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
    /// joined twice at the same moment, and the loser's transaction, run
    /// again, finds the winner's token.
    fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unexpected(e) if e.is_transient() || e.is_unique_violation())
    }
}

impl From<diesel::result::Error> for QueueError {
    fn from(error: diesel::result::Error) -> QueueError {
        QueueError::Unexpected(DbError::Query(error))
    }
}

/// A token with the number of fans ahead of it (0 once admitted, none once
/// over).
pub struct Place {
    pub token: QueueToken,
    pub position: Option<i64>,
}

#[derive(Clone)]
pub struct Queue {
    pub db: Db,
    pub policy: QueuePolicy,
    pub signer: Arc<PassSigner>,
}

impl Queue {
    /// Puts the fan in the concert's line, or returns their live place in
    /// it (`true` when the place is new).
    pub async fn join(
        &self,
        user: UserId,
        concert: ConcertId,
    ) -> Result<(bool, Place), QueueError> {
        let queue = self.clone();
        self.db
            .transaction(move |tx| {
                let now = Utc::now();
                if let Some(existing) = store::find_live(tx.conn(), user, concert)? {
                    queue.still_there(tx.conn(), &existing, now)?;
                    let position = store::position(tx.conn(), &existing)?;
                    return Ok((
                        false,
                        Place {
                            token: existing,
                            position,
                        },
                    ));
                }
                if !store::is_known_concert(tx.conn(), concert)? {
                    return Err(QueueError::ConcertNotFound(concert));
                }
                let token = QueueTokenId::generate();
                store::join(tx.conn(), token, user, concert, now)?;
                // An empty line admits at once: no wait for the next round.
                admit(tx, concert, &queue.policy, &queue.signer, now)?;
                let joined =
                    store::find(tx.conn(), token)?.ok_or(QueueError::TokenNotFound(token))?;
                let position = store::position(tx.conn(), &joined)?;
                Ok((
                    true,
                    Place {
                        token: joined,
                        position,
                    },
                ))
            })
            .await
    }

    /// The fan's own place; another's token is "not found": its id says
    /// nothing, and its pass is a credential.
    pub async fn poll(&self, user: UserId, token: QueueTokenId) -> Result<Place, QueueError> {
        let queue = self.clone();
        // No transaction: a poll is a read and, now and then, one
        // conditional write; on SQLite a transaction would take the
        // database's write lock for every poll of the rush.
        self.db
            .run(move |conn| {
                let found = store::find(conn, token)?
                    .filter(|t| t.user_id == user)
                    .ok_or(QueueError::TokenNotFound(token))?;
                queue.still_there(conn, &found, Utc::now())?;
                let position = store::position(conn, &found)?;
                Ok(Place {
                    token: found,
                    position,
                })
            })
            .await
    }

    /// A waiting fan who polls stays in line; polls closer together than
    /// the policy's refresh do not rewrite the row.
    fn still_there(
        &self,
        conn: &mut AnyConnection,
        token: &QueueToken,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if token.status == TokenStatus::Waiting
            && token.last_seen_at.and_utc() <= now - self.policy.seen_refresh()
        {
            store::seen(conn, token.token, now)?;
        }
        Ok(())
    }

    /// One admission round over every line with fans waiting. Safe with two
    /// instances: each line is admitted in one transaction on its row.
    pub async fn admit_all(&self) -> Result<(), DbError> {
        let lines = self
            .db
            .run(|conn| store::lines_with_waiting(conn).map_err(DbError::from))
            .await?;
        for concert in lines {
            let (policy, signer) = (self.policy.clone(), self.signer.clone());
            let admitted = self
                .db
                .transaction(move |tx| {
                    admit(tx, concert, &policy, &signer, Utc::now()).map_err(DbError::from)
                })
                .await;
            // One line that fails does not hold up the others.
            if let Err(error) = admitted {
                tracing::warn!(%concert, %error, "admission failed; will retry");
            }
        }
        Ok(())
    }

    /// Drops waiters who stopped polling and frees the places of expired
    /// passes.
    pub async fn sweep(&self) -> Result<(), DbError> {
        let policy = self.policy.clone();
        let (dropped, expired) = self
            .db
            .transaction(move |tx| {
                let now = Utc::now();
                let idle_since = now - policy.poll_timeout();
                let dropped = store::drop_idle_waiters(tx.conn(), idle_since, Ended::Dropped, 500)?;
                let mut expired = 0;
                for (token, concert) in store::lapsed_passes(tx.conn(), now, 500)? {
                    if store::end_active(tx.conn(), token, concert, Ended::PassExpired)? {
                        expired += 1;
                    }
                }
                Ok::<_, DbError>((dropped, expired))
            })
            .await?;
        if dropped + expired > 0 {
            tracing::info!(dropped, expired, "queue swept");
        }
        Ok(())
    }
}

/// Admits waiting fans of one concert in arrival order, as the cap and the
/// rate allow, signing a pass for each and publishing `QueueTokenAdmitted`.
pub fn admit(
    tx: &mut Tx<'_>,
    concert: ConcertId,
    policy: &QueuePolicy,
    signer: &PassSigner,
    now: DateTime<Utc>,
) -> Result<usize, diesel::result::Error> {
    let Some(line) = store::lock_line(tx.conn(), concert)? else {
        return Ok(0);
    };
    let budget = AdmissionBudget::new(policy, line.active_count, line.rate_clock.and_utc(), now);
    if budget.admit == 0 {
        return Ok(0);
    }
    let waiting = store::next_waiting(tx.conn(), concert, budget.admit)?;
    // Whole seconds, like the pass's `exp`.
    let expires_at = (now + policy.pass_ttl()).trunc_subsecs(0);
    let mut admitted = 0;
    for fan in &waiting {
        let pass = signer.sign(&PassClaims {
            sub: fan.user_id.get(),
            concert_id: concert.get(),
            jti: fan.token.get(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        });
        if !store::activate(tx.conn(), fan.token, &pass, expires_at, now)? {
            continue;
        }
        admitted += 1;
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
    store::advance_line(
        tx.conn(),
        concert,
        admitted,
        head,
        budget.clock_after(admitted),
    )?;
    Ok(admitted as usize)
}
