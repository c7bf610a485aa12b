//! Every concert's line in memory: its live tokens and which arrival
//! numbers still wait, so that a poll is answered without the database.
//!
//! Built from the tables at start ([`LineIndex::rebuild`]). This
//! instance's own commits (joins, admissions, drop-outs, ended passes) are
//! applied as they commit ([`LineIndex::apply`]); what other instances (and
//! this one's event consumer) changed is read by [`LineIndex::refresh`],
//! which the service runs every `queue.index_refresh_ms`: the tokens of
//! each line whose version moved past the one this index knows. That is
//! the staleness bound of an answer (docs/queue.md).

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};
use ticket_runtime::{Db, DbError};

use super::Place;
use crate::domain::{LineChange, QueueToken, TokenStatus, WaitingOrder};
use crate::store;

/// How long an ended token is still answered from memory before it is
/// forgotten (its polls then read its row). Long enough that no commit
/// or refresh read before it ended can still be applied after (they are
/// applied within milliseconds of their reads), so a forgotten token is
/// never brought back as live.
const FORGET_ENDED_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct LineIndex {
    state: RwLock<State>,
    /// One refresh at a time, so that one read before another is never
    /// applied after it.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    lines: HashMap<ConcertId, IndexedLine>,
    tokens: HashMap<QueueTokenId, Entry>,
}

#[derive(Default)]
struct IndexedLine {
    /// Every change of the line up to this number is applied here.
    known_version: i64,
    waiting: WaitingOrder,
}

struct Entry {
    token: QueueToken,
    /// When this index learnt that the token ended.
    ended_at: Option<Instant>,
}

/// What the index says about a token a fan asks for.
pub enum Lookup {
    /// The fan's place; `seen` when their presence is due to be recorded.
    Found { place: Place, seen: bool },
    /// Another fan's token.
    NotYours,
    /// Not in memory: never heard of here yet, or ended long ago.
    Unknown,
}

impl LineIndex {
    /// The lines as the tables have them now.
    pub async fn rebuild(db: &Db) -> Result<LineIndex, DbError> {
        let index = LineIndex::default();
        index.refresh(db).await?;
        Ok(index)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The fan's place, from memory. A waiting fan last seen more than
    /// `seen_refresh` ago is marked seen at `now` here; `seen` tells the
    /// caller to record it.
    pub fn lookup(
        &self,
        token: QueueTokenId,
        user: UserId,
        now: DateTime<Utc>,
        seen_refresh: TimeDelta,
    ) -> Lookup {
        {
            let state = self.read();
            let Some(entry) = state.tokens.get(&token) else {
                return Lookup::Unknown;
            };
            if entry.token.user_id != user {
                return Lookup::NotYours;
            }
            let due = entry.token.status == TokenStatus::Waiting
                && entry.token.last_seen_at <= now - seen_refresh;
            if !due {
                return Lookup::Found {
                    place: state.place(&entry.token),
                    seen: false,
                };
            }
        }
        let mut state = self.write();
        let Some(entry) = state.tokens.get_mut(&token) else {
            return Lookup::Unknown;
        };
        // Another poll may have marked it in between: one write is enough.
        let seen = entry.token.last_seen_at <= now - seen_refresh;
        if seen {
            entry.token.last_seen_at = now;
        }
        let token = entry.token.clone();
        Lookup::Found {
            place: state.place(&token),
            seen,
        }
    }

    /// The place of a token this index holds (a fan's own, just committed).
    pub fn place(&self, token: QueueTokenId) -> Option<Place> {
        let state = self.read();
        state.tokens.get(&token).map(|e| state.place(&e.token))
    }

    /// Applies what one of this instance's commits changed. When the index
    /// knew the line up to the commit's start, it now knows it up to its
    /// end; otherwise another instance changed the line in between, and
    /// the next refresh reads that (and this commit's tokens again).
    pub fn apply(&self, change: LineChange) {
        let mut state = self.write();
        let line = state.lines.entry(change.concert_id).or_default();
        if line.known_version == change.from_version {
            line.known_version = change.to_version;
        }
        for token in change.tokens {
            state.put(token);
        }
    }

    /// Reads what changed since this index last looked: for a line it
    /// knows, the tokens whose version moved past the one it knows; for a
    /// line it has never seen, its live tokens.
    pub async fn refresh(&self, db: &Db) -> Result<(), DbError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let known: HashMap<ConcertId, i64> = {
            let mut state = self.write();
            state.forget_ended();
            state
                .lines
                .iter()
                .map(|(concert, line)| (*concert, line.known_version))
                .collect()
        };
        let changes = db
            .run(move |conn| {
                let mut changes = Vec::new();
                for (concert, version) in store::line_versions(conn)? {
                    let tokens = match known.get(&concert) {
                        Some(seen) if *seen >= version => continue,
                        Some(seen) => store::changed_since(conn, concert, *seen)?,
                        None => store::live_tokens(conn, concert)?,
                    };
                    changes.push((concert, version, tokens));
                }
                Ok::<_, DbError>(changes)
            })
            .await?;
        let mut state = self.write();
        for (concert, version, tokens) in changes {
            let line = state.lines.entry(concert).or_default();
            line.known_version = line.known_version.max(version);
            for token in tokens {
                state.put(token);
            }
        }
        Ok(())
    }

    /// Fans waiting ahead of arrival number `seq` in the concert's line.
    pub fn ahead_of(&self, concert: ConcertId, seq: i64) -> Option<i64> {
        let state = self.read();
        state.lines.get(&concert).map(|l| l.waiting.ahead_of(seq))
    }
}

impl State {
    fn place(&self, token: &QueueToken) -> Place {
        let position = match token.status {
            TokenStatus::Active => Some(0),
            TokenStatus::Expired => None,
            TokenStatus::Waiting => Some(
                self.lines
                    .get(&token.concert_id)
                    .map_or(0, |l| l.waiting.ahead_of(token.seq)),
            ),
        };
        Place {
            token: token.clone(),
            position,
        }
    }

    /// Takes the token's state unless the index already holds a later one
    /// (a refresh and a commit may carry the same token in either order).
    fn put(&mut self, token: QueueToken) {
        let waiting = token.status == TokenStatus::Waiting;
        match self.tokens.get_mut(&token.token) {
            Some(entry) if entry.token.version > token.version => return,
            Some(entry) => {
                let last_seen_at = entry.token.last_seen_at.max(token.last_seen_at);
                if token.status == TokenStatus::Expired && entry.ended_at.is_none() {
                    entry.ended_at = Some(Instant::now());
                }
                entry.token = QueueToken {
                    last_seen_at,
                    ..token.clone()
                };
            }
            // An ended token this index never held as live: nothing to show.
            None if token.status == TokenStatus::Expired => return,
            None => {
                self.tokens.insert(
                    token.token,
                    Entry {
                        token: token.clone(),
                        ended_at: None,
                    },
                );
            }
        }
        self.lines
            .entry(token.concert_id)
            .or_default()
            .waiting
            .set(token.seq, waiting);
    }

    fn forget_ended(&mut self) {
        self.tokens.retain(|_, entry| {
            entry
                .ended_at
                .is_none_or(|at| at.elapsed() < FORGET_ENDED_AFTER)
        });
    }
}
