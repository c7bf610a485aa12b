//! Joins committed in groups: the arrivals of a few milliseconds (up to
//! `queue.join_batch_max`) are put in line in one transaction, and each fan
//! is answered, with their own token and place, only once it committed. A
//! process that dies before the commit answered nobody of the group: no fan
//! holds a token that is not in the database.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};
use ticket_runtime::{DbError, Tx};
use tokio::sync::{mpsc, oneshot};

use super::{admit, Place, QueueError, Shared};
use crate::domain::{LineChange, QueueToken};
use crate::store;

/// One fan's request to join, and where their answer goes.
pub(super) struct Arrival {
    pub user: UserId,
    pub concert: ConcertId,
    pub answer: oneshot::Sender<Result<(bool, Place), QueueError>>,
}

/// What the group's transaction decided for one fan.
enum Outcome {
    /// A new place (`true`) or the place the fan already had.
    Placed(bool, QueueToken),
    /// Already in line, as read from the database with its position there
    /// (another instance's token, maybe not in this one's index yet).
    AlreadyThere(QueueToken, Option<i64>),
    Refused(QueueError),
}

/// Takes arrivals off `arrivals` and commits them in groups, one group at a
/// time, until every sender is gone.
pub(super) async fn commit_in_groups(
    shared: Arc<Shared>,
    mut arrivals: mpsc::Receiver<Arrival>,
    window: Duration,
    max: usize,
) {
    while let Some(first) = arrivals.recv().await {
        let mut group = vec![first];
        let until = tokio::time::Instant::now() + window;
        while group.len() < max {
            match tokio::time::timeout_at(until, arrivals.recv()).await {
                Ok(Some(arrival)) => group.push(arrival),
                Ok(None) | Err(_) => break,
            }
        }
        commit_group(&shared, group).await;
    }
}

async fn commit_group(shared: &Shared, group: Vec<Arrival>) {
    let fans: Vec<(UserId, ConcertId)> = group.iter().map(|a| (a.user, a.concert)).collect();
    let (policy, signer, clock) = (shared.policy.clone(), shared.signer.clone(), shared.clock);
    let committed = shared
        .db
        .transaction(move |tx| join_group(tx, &fans, &policy, &signer, clock.now()))
        .await;
    let (outcomes, changes) = match committed {
        Ok(done) => done,
        Err(error) => {
            // Nobody of the group is in line: each gets the failure.
            let message = error.to_string();
            for arrival in group {
                let failed = QueueError::Unexpected(DbError::Unavailable(message.clone()));
                let _ = arrival.answer.send(Err(failed));
            }
            return;
        }
    };
    for change in changes {
        shared.index.apply(change);
    }
    for (arrival, outcome) in group.into_iter().zip(outcomes) {
        let answer = match outcome {
            Outcome::Placed(created, token) => Ok((
                created,
                shared.index.place(token.token).unwrap_or_else(|| Place {
                    position: shared.index.ahead_of(token.concert_id, token.seq),
                    token,
                }),
            )),
            Outcome::AlreadyThere(token, position) => Ok((false, Place { token, position })),
            Outcome::Refused(error) => Err(error),
        };
        // A fan who hung up meanwhile is in line all the same, as when
        // they join alone; asking again answers their place.
        let _ = arrival.answer.send(answer);
    }
}

/// Puts the group's fans in line, line by line in one order (the order
/// every transaction that takes several lines' locks uses), and admits
/// whom the lines' cap and rate allow, as a join alone would.
fn join_group(
    tx: &mut Tx<'_>,
    fans: &[(UserId, ConcertId)],
    policy: &crate::domain::QueuePolicy,
    signer: &ticket_runtime::auth::pass::PassSigner,
    now: DateTime<Utc>,
) -> Result<(Vec<Outcome>, Vec<LineChange>), QueueError> {
    let mut by_line: BTreeMap<ConcertId, Vec<usize>> = BTreeMap::new();
    for (at, (_, concert)) in fans.iter().enumerate() {
        by_line.entry(*concert).or_default().push(at);
    }
    let mut outcomes: Vec<Option<Outcome>> = fans.iter().map(|_| None).collect();
    let mut changes = Vec::new();
    for (concert, arrivals) in by_line {
        if !store::is_known_concert(tx.conn(), concert)? {
            for at in arrivals {
                outcomes[at] = Some(Outcome::Refused(QueueError::ConcertNotFound(concert)));
            }
            continue;
        }
        let users: Vec<UserId> = arrivals.iter().map(|at| fans[*at].0).collect();
        let mut live: HashMap<UserId, QueueToken> = HashMap::new();
        for token in store::find_live_of(tx.conn(), concert, &users)? {
            live.insert(token.user_id, token);
        }
        // Fans new to the line, once each, in arrival order; and for each
        // arrival that joins, which of them it is.
        let mut newcomers: Vec<UserId> = Vec::new();
        let mut newcomer_of: HashMap<UserId, usize> = HashMap::new();
        let mut joining: Vec<(usize, usize, bool)> = Vec::new();
        for at in arrivals {
            let user = fans[at].0;
            if let Some(existing) = live.get(&user) {
                super::still_there(tx.conn(), existing, policy, now)?;
                let position = store::position(tx.conn(), existing)?;
                outcomes[at] = Some(Outcome::AlreadyThere(existing.clone(), position));
                continue;
            }
            // The same fan twice in one group: the second finds the first's place.
            match newcomer_of.get(&user) {
                Some(first) => joining.push((at, *first, false)),
                None => {
                    newcomer_of.insert(user, newcomers.len());
                    joining.push((at, newcomers.len(), true));
                    newcomers.push(user);
                }
            }
        }
        if newcomers.is_empty() {
            continue;
        }
        let line = store::open_line(tx.conn(), concert, now)?;
        let newcomers: Vec<QueueToken> = newcomers
            .into_iter()
            .zip(line.next_seq..)
            .map(|(user, seq)| {
                let token = QueueTokenId::generate();
                QueueToken::arriving(token, user, concert, seq, line.version + 1, now)
            })
            .collect();
        for (at, newcomer, created) in joining {
            outcomes[at] = Some(Outcome::Placed(created, newcomers[newcomer].clone()));
        }
        store::enqueue(tx.conn(), concert, &newcomers, now)?;
        changes.push(LineChange {
            concert_id: concert,
            from_version: line.version,
            to_version: line.version + 1,
            tokens: newcomers,
        });
        // An empty line admits at once: no wait for the next round.
        if let Some(admitted) = admit(tx, concert, policy, signer, now)? {
            changes.push(admitted);
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Outcome::Refused(QueueError::Unexpected(unplaced()))))
        .collect();
    Ok((outcomes, changes))
}

/// Every fan of a group is placed or refused; this would be a bug.
fn unplaced() -> DbError {
    DbError::Unavailable("a fan of the join group was neither placed nor refused".into())
}
