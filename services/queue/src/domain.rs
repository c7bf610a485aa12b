//! Waiting-line rules: strict arrival order, a cap of active fans, an
//! admission rate, and position arithmetic that never scans the line.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};

#[derive(Debug, Clone, Deserialize)]
pub struct QueuePolicy {
    pub max_active: i64,
    pub admission_rate_per_sec: i64,
    pub admission_interval_ms: u64,
    pub pass_ttl_secs: i64,
    pub poll_timeout_secs: i64,
    pub sweep_interval_ms: u64,
}

impl QueuePolicy {
    pub fn pass_ttl(&self) -> TimeDelta {
        TimeDelta::seconds(self.pass_ttl_secs)
    }

    pub fn poll_timeout(&self) -> TimeDelta {
        TimeDelta::seconds(self.poll_timeout_secs)
    }

    /// Polls closer together than this do not rewrite `last_seen_at`:
    /// a quarter of the timeout keeps waiters safely in line with few writes.
    pub fn seen_refresh(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.poll_timeout_secs * 250)
    }
}

ticket_runtime::text_enum! {
    /// A place in the line: waiting, admitted with a pass, or over.
    pub enum TokenStatus {
        Waiting = "WAITING",
        Active = "ACTIVE",
        Expired = "EXPIRED",
    }
}

ticket_runtime::text_enum! {
    /// Why a token stopped being live.
    pub enum Ended {
        /// The fan stopped polling while waiting.
        Dropped = "DROPPED",
        /// The pass ran out.
        PassExpired = "PASS_EXPIRED",
        /// The fan paid: the place goes to the next fan.
        PaymentCompleted = "PAYMENT_COMPLETED",
    }
}

/// A fan's place in a concert's line.
#[derive(Debug, Clone)]
pub struct QueueToken {
    pub token: QueueTokenId,
    pub user_id: UserId,
    pub concert_id: ConcertId,
    /// Arrival order in the concert's line.
    pub seq: i64,
    pub status: TokenStatus,
    pub pass: Option<String>,
    pub pass_expires_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<Ended>,
    pub last_seen_at: DateTime<Utc>,
    /// The line's change number of the commit that last changed this
    /// token: an instance that knows the line up to change `n` knows
    /// every token whose `version` is at most `n`.
    pub version: i64,
}

impl QueueToken {
    /// A fan new at the end of the line: waiting, seen `now`, arrival
    /// number `seq`, put in line by the commit that makes the line's
    /// change number `version`.
    pub fn arriving(
        token: QueueTokenId,
        user_id: UserId,
        concert_id: ConcertId,
        seq: i64,
        version: i64,
        now: DateTime<Utc>,
    ) -> QueueToken {
        QueueToken {
            token,
            user_id,
            concert_id,
            seq,
            status: TokenStatus::Waiting,
            pass: None,
            pass_expires_at: None,
            ended_reason: None,
            last_seen_at: now,
            version,
        }
    }
}

/// What one commit did to one line: the line's change number went from
/// `from_version` to `to_version`, and `tokens` are the tokens it changed,
/// as it left them (each with `version` = `to_version`).
#[derive(Debug, Clone)]
pub struct LineChange {
    pub concert_id: ConcertId,
    pub from_version: i64,
    pub to_version: i64,
    pub tokens: Vec<QueueToken>,
}

/// Which arrival numbers of one line still wait, counted so that "how many
/// wait ahead of arrival number n" is a prefix sum (a Fenwick tree): a
/// lookup and an update are O(log n) however long the line.
#[derive(Debug, Clone, Default)]
pub struct WaitingOrder {
    /// `waiting[seq]`; index 0 unused, as arrival numbers start at 1.
    waiting: Vec<bool>,
    /// The Fenwick tree over `waiting`, same length.
    tree: Vec<i64>,
}

impl WaitingOrder {
    /// Records whether arrival number `seq` (from 1) is waiting.
    pub fn set(&mut self, seq: i64, waiting: bool) {
        let Ok(at) = usize::try_from(seq) else {
            return;
        };
        if at == 0 {
            return;
        }
        if at >= self.waiting.len() {
            if !waiting {
                return;
            }
            self.grow(at);
        }
        if self.waiting[at] == waiting {
            return;
        }
        self.waiting[at] = waiting;
        let delta = if waiting { 1 } else { -1 };
        let mut i = at;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Fans still waiting with an arrival number below `seq`.
    pub fn ahead_of(&self, seq: i64) -> i64 {
        let Ok(before) = usize::try_from(seq - 1) else {
            return 0;
        };
        let mut i = before.min(self.tree.len().saturating_sub(1));
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// Room for arrival numbers up to at least `seq`: the capacity doubles,
    /// and the tree is built again in one linear pass (amortised O(1) a join).
    fn grow(&mut self, seq: usize) {
        let size = (seq + 1).next_power_of_two().max(1024);
        self.waiting.resize(size, false);
        self.tree = vec![0; size];
        for i in 1..size {
            self.tree[i] += i64::from(self.waiting[i]);
            let parent = i + (i & i.wrapping_neg());
            if parent < size {
                self.tree[parent] += self.tree[i];
            }
        }
    }
}

/// How many fans may be admitted now.
///
/// The rate clock is a GCRA: admitting `n` fans moves it `n / rate` on; it
/// never lags `now` by more than one second, which bounds a burst to one
/// second's worth of admissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionBudget {
    pub admit: i64,
    clock_start: DateTime<Utc>,
    rate: i64,
}

impl AdmissionBudget {
    pub fn new(
        policy: &QueuePolicy,
        active: i64,
        rate_clock: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> AdmissionBudget {
        let free = (policy.max_active - active).max(0);
        let rate = policy.admission_rate_per_sec.max(1);
        let clock_start = rate_clock.max(now - TimeDelta::seconds(1));
        let earned_micros = (now - clock_start).num_microseconds().unwrap_or(0).max(0);
        AdmissionBudget {
            admit: free.min(earned_micros * rate / 1_000_000),
            clock_start,
            rate,
        }
    }

    /// The rate clock once `admitted` fans (at most `admit`) were let in.
    pub fn clock_after(&self, admitted: i64) -> DateTime<Utc> {
        self.clock_start + TimeDelta::microseconds(admitted * 1_000_000 / self.rate)
    }
}

/// Fans still waiting ahead of arrival number `seq`: the arrivals between
/// the head of the line and `seq`, less those of them who dropped out.
pub fn fans_ahead(
    seq: i64,
    head_seq: i64,
    dropped_before_seq: i64,
    dropped_before_head: i64,
) -> i64 {
    ((seq - head_seq) - (dropped_before_seq - dropped_before_head)).max(0)
}

/// Fenwick-tree nodes that count dropouts, over arrival numbers 1..=2^40.
pub mod dropout_index {
    const SIZE: i64 = 1 << 40;

    /// Nodes to increment when arrival number `seq` drops out.
    pub fn nodes_to_update(seq: i64) -> Vec<i64> {
        let mut nodes = Vec::new();
        let mut i = seq;
        while i > 0 && i <= SIZE {
            nodes.push(i);
            i += i & -i;
        }
        nodes
    }

    /// Nodes whose sum is the number of dropouts with arrival number <= `seq`.
    pub fn nodes_to_sum(seq: i64) -> Vec<i64> {
        let mut nodes = Vec::new();
        let mut i = seq.min(SIZE);
        while i > 0 {
            nodes.push(i);
            i -= i & -i;
        }
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn policy(max_active: i64, rate: i64) -> QueuePolicy {
        QueuePolicy {
            max_active,
            admission_rate_per_sec: rate,
            admission_interval_ms: 100,
            pass_ttl_secs: 600,
            poll_timeout_secs: 30,
            sweep_interval_ms: 1000,
        }
    }

    #[test]
    fn admission_respects_the_cap_and_the_rate() {
        let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        let idle_for_long = now - TimeDelta::hours(1);
        // A burst is one second's worth.
        assert_eq!(
            AdmissionBudget::new(&policy(100, 50), 0, idle_for_long, now).admit,
            50
        );
        // The cap wins over the rate.
        assert_eq!(
            AdmissionBudget::new(&policy(100, 50), 90, idle_for_long, now).admit,
            10
        );
        assert_eq!(
            AdmissionBudget::new(&policy(100, 50), 100, idle_for_long, now).admit,
            0
        );
        // After admitting 50, the clock is at `now`: nothing more until time passes.
        let clock = AdmissionBudget::new(&policy(1000, 50), 0, idle_for_long, now).clock_after(50);
        assert_eq!(clock, now);
        assert_eq!(
            AdmissionBudget::new(&policy(1000, 50), 50, clock, now).admit,
            0
        );
        let later = now + TimeDelta::milliseconds(100);
        let budget = AdmissionBudget::new(&policy(1000, 50), 50, clock, later);
        assert_eq!(budget.admit, 5);
        assert_eq!(budget.clock_after(5), later);
        // Admitting fewer than allowed keeps the unused credit.
        assert_eq!(budget.clock_after(2), later - TimeDelta::milliseconds(60));
    }

    #[test]
    fn the_fenwick_index_counts_dropouts_before_any_arrival() {
        let mut tree: HashMap<i64, i64> = HashMap::new();
        let dropped = [3, 4, 9, 1000, 123_457];
        for seq in dropped {
            for node in dropout_index::nodes_to_update(seq) {
                *tree.entry(node).or_default() += 1;
            }
        }
        for probe in [0, 1, 3, 4, 8, 9, 10, 999, 1000, 123_456, 123_457, 1 << 30] {
            let expected = dropped.iter().filter(|d| **d <= probe).count() as i64;
            let sum: i64 = dropout_index::nodes_to_sum(probe)
                .iter()
                .map(|n| tree.get(n).copied().unwrap_or(0))
                .sum();
            assert_eq!(sum, expected, "dropouts <= {probe}");
        }
        assert!(dropout_index::nodes_to_sum(1 << 39).len() <= 41);
        assert!(dropout_index::nodes_to_update(1).len() <= 41);
    }

    #[test]
    fn the_waiting_order_counts_fans_ahead_as_they_come_and_go() {
        let mut order = WaitingOrder::default();
        let mut waiting = std::collections::BTreeSet::new();
        // Enough arrivals to grow the tree several times.
        for seq in 1..=5000 {
            order.set(seq, true);
            waiting.insert(seq);
            if seq % 7 == 0 {
                order.set(seq / 2, false);
                waiting.remove(&(seq / 2));
            }
        }
        order.set(5000, true);
        order.set(9_999_999, false);
        for probe in [
            0,
            1,
            2,
            3,
            100,
            1023,
            1024,
            1025,
            2500,
            4999,
            5000,
            5001,
            1 << 20,
        ] {
            let expected = waiting.range(..probe).count() as i64;
            assert_eq!(order.ahead_of(probe), expected, "ahead of {probe}");
        }
    }

    #[test]
    fn fans_ahead_discounts_dropouts_between_head_and_me() {
        // Head at 10, I am 20: 10 arrivals ahead, 3 of them dropped out.
        assert_eq!(fans_ahead(20, 10, 7, 4), 7);
        assert_eq!(fans_ahead(10, 10, 4, 4), 0);
    }
}
