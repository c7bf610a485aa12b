//! The decisions of the broker's waking storage layer (`ticket-broker`,
//! tools/broker/src/waking.rs), apart from the storage it sits on, so that
//! they can be tested with a clock of the test's own.
//!
//! Why the layer exists: nisshi answers a Fetch that finds nothing by reading
//! every requested partition again from SQLite and sleeping half of the
//! remaining wait, seven or eight rounds per request. That costs a hop up to
//! half the consumer's `fetch.wait.max.ms` and keeps a core busy while the
//! cluster is idle. Every read nisshi's fetch loop makes goes through its
//! `Storage` trait, and so does every write, so the layer [`State`] decides
//! for:
//!
//! * keeps each partition's offsets and each topic list's metadata as last
//!   read, and answers from memory until a write could have changed them (a
//!   produce to that partition, or any other change to the log). Only
//!   partitions and topics that exist are kept, and a bounded number of
//!   metadata answers: a client naming made-up topics must not grow it;
//! * answers a read at or past the end of a partition with no batches,
//!   without a statement;
//! * lets the first read of a fetch request wait, when every partition the
//!   connection has been reading has nothing new, until a produce lands on
//!   one of them or the client's wait is spent. The wait happens inside the
//!   request's first round of reads, before the other partitions are read,
//!   so whatever woke it goes out in that round; and a round that took the
//!   whole wait ends the request, so nisshi's sleeps between rounds are not
//!   reached.
//!
//! A "connection" (a reader here) is the task that serves it: nisshi serves
//! one connection's requests one after another in one task. Storage does not
//! see where a request begins, but nisshi gives each read a budget that ends
//! at the client's deadline in the request's first round: a read whose
//! budget ends somewhere new, and is long (so not a later round's half),
//! starts a request. librdkafka rotates the order of partitions from one
//! request to the next, so the watched set is every partition the connection
//! read lately, not the order it read them in.
//!
//! Nothing here sleeps, locks or reads a clock: the caller holds the state
//! under its lock, passes `now`, and does the waiting and the reading.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// A wait ends this long before the read's budget, so that nisshi gets the
/// (empty) answer before it gives up on the read.
pub const WAIT_MARGIN: Duration = Duration::from_millis(10);

/// Reads whose budgets end closer than this belong to one round of one
/// request (nisshi computes each from the same client deadline microseconds
/// apart; the next request's deadline is at least a round trip later).
pub const SAME_DEADLINE: Duration = Duration::from_micros(200);

/// A partition the connection has not read for this long (or four of its
/// longest waits) is no longer its own (a rebalance moved it).
pub const PARTITION_FORGOTTEN_AFTER: Duration = Duration::from_secs(2);

/// Connections not seen for this long are forgotten (they closed).
pub const READER_FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// Metadata answers remembered at most: the topic lists the clients of a
/// cluster ask for are a few dozen, but a client may ask for any list.
pub const METADATA_ANSWERS_KEPT: usize = 256;

/// A partition's offsets, as the storage reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub high_watermark: i64,
    pub last_stable: i64,
}

/// Which records a read may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Up to the last stable offset (no open transaction's records).
    ReadCommitted,
    /// Up to the high watermark.
    ReadUncommitted,
}

impl Offsets {
    /// Where a read with `isolation` finds nothing more.
    fn end(&self, isolation: Isolation) -> i64 {
        match isolation {
            Isolation::ReadCommitted => self.last_stable,
            Isolation::ReadUncommitted => self.high_watermark,
        }
    }
}

/// What to do with one read of a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch<R> {
    /// Read it from the storage: it may find records.
    Read,
    /// Answer it with no batches: it is known to find nothing.
    Nothing,
    /// Wait while [`State::is_quiet`] says `reader` is (look again after
    /// every produce) but not past `until`; then read it, unless
    /// [`State::nothing_at`] says it still finds nothing.
    Wait { reader: R, until: Instant },
}

/// What a read of a partition's offsets started from: the offsets it
/// returns are remembered only if nothing was written meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetsMark {
    epoch: u64,
    version: u64,
    failed_produces: u64,
}

/// What a read of metadata started from: the answer is remembered only if
/// topics and the log did not change meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataMark {
    epoch: u64,
    topics_epoch: u64,
}

/// What the layer remembers: partitions by `P`, readers (connections) by
/// `R`, metadata answers `V` by the topic list `K` asked for.
pub struct State<P, R, K, V> {
    /// Bumped by every change to the log other than a produce (transactions,
    /// deletions, retention): what was remembered before it is void.
    epoch: u64,
    /// Bumped when topics or brokers change (a topic created, a config
    /// altered): remembered metadata is void, partitions' offsets are not.
    topics_epoch: u64,
    /// Partitions that exist: written or read successfully.
    partitions: BTreeMap<P, Partition>,
    /// Bumped by a failed produce to a partition not in `partitions`: it
    /// may have written before failing, so an offset read beside it is
    /// not remembered.
    failed_produces: u64,
    metadata: MetadataCache<K, V>,
    readers: BTreeMap<R, Reader<P>>,
    readers_swept_at: Option<Instant>,
}

#[derive(Default)]
struct Partition {
    /// Bumped by every produce to the partition.
    version: u64,
    /// The offsets as last read, with the epoch they were read at.
    offsets: Option<(u64, Offsets)>,
}

/// Metadata answers by the topic list asked for, each valid while the
/// epochs it was read at hold. Only answers naming topics that exist are
/// kept, and at most [`METADATA_ANSWERS_KEPT`] of them, the least recently
/// used going first: a client asking for made-up topics must not grow it.
struct MetadataCache<K, V> {
    answers: BTreeMap<K, Remembered<V>>,
    /// Counts lookups, to tell which answer was used least recently.
    clock: u64,
}

struct Remembered<V> {
    mark: MetadataMark,
    answer: V,
    used: u64,
}

/// What one connection reads.
struct Reader<P> {
    /// Each partition it reads, where it reads next, and when it last did.
    partitions: BTreeMap<P, (i64, Instant)>,
    /// When the budget of its last read ends.
    last_deadline: Instant,
    /// The longest budget it was given: about the client's `max_wait`.
    longest_budget: Duration,
    /// Requests begun.
    requests: u64,
    /// The one being served.
    request: Request,
    seen_at: Instant,
}

/// A fetch request, as its reads show it.
struct Request {
    /// The client's deadline.
    deadline: Instant,
    /// Still in its first round of reads.
    first_round: bool,
    /// A read returned records: the request is answered after this round.
    found: bool,
    /// It waited once already; whatever woke it, nisshi's rounds go on.
    waited: bool,
}

impl Request {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            first_round: true,
            found: false,
            waited: false,
        }
    }
}

impl<P, R, K, V> Default for State<P, R, K, V> {
    fn default() -> Self {
        Self {
            epoch: 0,
            topics_epoch: 0,
            partitions: BTreeMap::new(),
            failed_produces: 0,
            metadata: MetadataCache {
                answers: BTreeMap::new(),
                clock: 0,
            },
            readers: BTreeMap::new(),
            readers_swept_at: None,
        }
    }
}

impl<P, R, K, V> State<P, R, K, V>
where
    P: Ord + Clone,
    R: Ord + Copy,
    K: Ord + Clone,
    V: Clone,
{
    /// A change to topics or brokers (a topic created, a config altered, a
    /// broker registered): remembered metadata is void. Not the partitions'
    /// offsets: every service asks at start-up for the topics it needs, and
    /// waiting fetches elsewhere must not lose their quiet partitions to it.
    pub fn topics_changed(&mut self) {
        self.topics_epoch += 1;
    }

    /// A change to the log that is not a produce (a transaction ended,
    /// records deleted, retention applied): everything remembered is void.
    /// The caller wakes waiting reads, since offsets may have moved.
    pub fn log_changed(&mut self) {
        self.epoch += 1;
    }

    /// A topic was deleted: as [`State::log_changed`], and every partition
    /// entry goes, or the deleted topic's would stay forever. Once the epoch
    /// moved no entry holds anything still valid (a read that began before
    /// sees the epoch change), so none is lost.
    pub fn topic_deleted(&mut self) {
        self.log_changed();
        self.partitions.clear();
    }

    /// A produce to `partition` returned, `landed` or not. The caller wakes
    /// waiting reads either way.
    pub fn produced(&mut self, partition: &P, landed: bool) {
        if landed {
            let entry = self.partitions.entry(partition.clone()).or_default();
            entry.version += 1;
            entry.offsets = None;
        } else if let Some(entry) = self.partitions.get_mut(partition) {
            // It may have written before failing.
            entry.version += 1;
            entry.offsets = None;
        } else {
            // Most likely a partition that does not exist: no entry for it,
            // or any client could add one per made-up name.
            self.failed_produces += 1;
        }
    }

    /// The offsets of `partition` as last read, while still valid.
    pub fn offsets(&self, partition: &P) -> Option<Offsets> {
        let entry = self.partitions.get(partition)?;
        let (epoch, offsets) = entry.offsets.as_ref()?;
        (*epoch == self.epoch).then_some(*offsets)
    }

    /// To take before reading the offsets of `partition` from the storage,
    /// and give back to [`State::remember_offsets`].
    pub fn offsets_mark(&self, partition: &P) -> OffsetsMark {
        OffsetsMark {
            epoch: self.epoch,
            version: self.partitions.get(partition).map_or(0, |p| p.version),
            failed_produces: self.failed_produces,
        }
    }

    /// Remembers the offsets of `partition` read from the storage since
    /// `mark`, if nothing was written meanwhile. Only for a read that
    /// succeeded: the partition exists.
    pub fn remember_offsets(&mut self, partition: &P, mark: OffsetsMark, offsets: Offsets) {
        if self.offsets_mark(partition) == mark {
            self.partitions
                .entry(partition.clone())
                .or_default()
                .offsets = Some((mark.epoch, offsets));
        }
    }

    /// Whether a read of `partition` from `offset` is known to find nothing.
    pub fn nothing_at(&self, partition: &P, offset: i64, isolation: Isolation) -> bool {
        self.offsets(partition)
            .is_some_and(|offsets| offset >= offsets.end(isolation))
    }

    /// The metadata answer remembered for `topics`, while still valid.
    pub fn metadata(&mut self, topics: &K) -> Option<V> {
        let mark = self.metadata_mark();
        self.metadata.get(topics, mark)
    }

    /// To take before reading metadata from the storage, and give back to
    /// [`State::remember_metadata`].
    pub fn metadata_mark(&self) -> MetadataMark {
        MetadataMark {
            epoch: self.epoch,
            topics_epoch: self.topics_epoch,
        }
    }

    /// Remembers the metadata for `topics` read since `mark`, if topics and
    /// the log did not change meanwhile and `every_topic_exists` (an answer
    /// naming a topic that does not exist is not kept: any client could add
    /// one per made-up name).
    pub fn remember_metadata(
        &mut self,
        topics: K,
        mark: MetadataMark,
        answer: V,
        every_topic_exists: bool,
    ) {
        if every_topic_exists && self.metadata_mark() == mark {
            self.metadata.insert(topics, mark, answer);
        }
    }

    /// Partitions with an entry: the ones that exist and were written or
    /// read. The bound a client naming made-up partitions must not move.
    pub fn known_partitions(&self) -> usize {
        self.partitions.len()
    }

    /// Metadata answers remembered (valid or not yet dropped).
    pub fn metadata_answers(&self) -> usize {
        self.metadata.answers.len()
    }

    /// Whether an answer for `topics` is remembered (valid or not yet dropped).
    pub fn remembers_metadata(&self, topics: &K) -> bool {
        self.metadata.answers.contains_key(topics)
    }

    /// Decides a read of `partition` from `offset` whose budget is `budget`
    /// from `now`, by `reader` (the connection; `None` outside one, which
    /// never waits), and records it: where the reader reads, and where its
    /// request is. A read waits only when it finds nothing, every partition
    /// the reader reads has nothing new, the reader has read all its
    /// partitions once (a round of an earlier request, or this request's
    /// first round), and its request found nothing yet and has not waited;
    /// and only until the client's deadline, less [`WAIT_MARGIN`].
    pub fn plan_fetch(
        &mut self,
        reader: Option<R>,
        partition: &P,
        offset: i64,
        budget: Duration,
        isolation: Isolation,
        now: Instant,
    ) -> Fetch<R> {
        let until = reader.and_then(|reader| {
            self.note_read(reader, partition, offset, budget, now)
                .map(|until| (reader, until))
        });
        if !self.nothing_at(partition, offset, isolation) {
            return Fetch::Read;
        }
        match until.filter(|(reader, _)| self.is_quiet(*reader, isolation)) {
            Some((reader, until)) => {
                if let Some(entry) = self.readers.get_mut(&reader) {
                    // It waits once: whatever woke it, nisshi's rounds go on.
                    entry.request.waited = true;
                }
                Fetch::Wait {
                    reader,
                    until: until.checked_sub(WAIT_MARGIN).unwrap_or(now),
                }
            }
            None => Fetch::Nothing,
        }
    }

    /// A read by `reader` of `partition` returned records up to `next`
    /// (exclusive): its request is answered after this round, and it reads
    /// the partition from `next` on.
    pub fn found(&mut self, reader: R, partition: &P, next: i64) {
        if let Some(entry) = self.readers.get_mut(&reader) {
            entry.request.found = true;
            if let Some((offset, _)) = entry.partitions.get_mut(partition) {
                *offset = next;
            }
        }
    }

    /// Whether every partition `reader` reads has nothing new from where it
    /// reads next: a waiting read of it may go on waiting.
    pub fn is_quiet(&self, reader: R, isolation: Isolation) -> bool {
        self.readers.get(&reader).is_some_and(|entry| {
            entry
                .partitions
                .iter()
                .all(|(partition, (next, _))| self.nothing_at(partition, *next, isolation))
        })
    }

    /// Records a read and says until when it may wait, if it may (see
    /// [`State::plan_fetch`]), quiet partitions aside.
    fn note_read(
        &mut self,
        reader: R,
        partition: &P,
        offset: i64,
        budget: Duration,
        now: Instant,
    ) -> Option<Instant> {
        self.sweep_readers(now);
        let entry = self.readers.entry(reader).or_insert_with(|| Reader {
            partitions: BTreeMap::new(),
            last_deadline: now,
            longest_budget: Duration::ZERO,
            requests: 0,
            request: Request::new(now),
            seen_at: now,
        });
        entry.seen_at = now;
        let deadline = now + budget;
        let new_deadline = abs_diff(deadline, entry.last_deadline) > SAME_DEADLINE;
        entry.last_deadline = deadline;
        entry.longest_budget = entry.longest_budget.max(budget);
        // nisshi gives the first round's reads the client's deadline; later
        // rounds get half the client's wait from their start.
        let first_round = budget.as_secs_f64() > entry.longest_budget.as_secs_f64() * 0.6;
        if new_deadline && first_round {
            entry.requests += 1;
            entry.request = Request::new(deadline);
        } else if new_deadline {
            entry.request.first_round = false;
        }
        let forget_before = PARTITION_FORGOTTEN_AFTER.max(entry.longest_budget * 4);
        entry
            .partitions
            .retain(|_, (_, read_at)| now.duration_since(*read_at) <= forget_before);
        _ = entry.partitions.insert(partition.clone(), (offset, now));
        let knows_partitions = entry.requests > 1 || !entry.request.first_round;
        let may_wait = knows_partitions && !entry.request.found && !entry.request.waited;
        may_wait.then(|| deadline.min(entry.request.deadline))
    }

    fn sweep_readers(&mut self, now: Instant) {
        let due = self
            .readers_swept_at
            .is_none_or(|at| now.duration_since(at) > READER_FORGOTTEN_AFTER);
        if due {
            self.readers
                .retain(|_, reader| now.duration_since(reader.seen_at) <= READER_FORGOTTEN_AFTER);
            self.readers_swept_at = Some(now);
        }
    }
}

impl<K, V> MetadataCache<K, V>
where
    K: Ord + Clone,
    V: Clone,
{
    fn get(&mut self, topics: &K, mark: MetadataMark) -> Option<V> {
        self.clock += 1;
        let remembered = self.answers.get_mut(topics)?;
        if remembered.mark != mark {
            return None;
        }
        remembered.used = self.clock;
        Some(remembered.answer.clone())
    }

    fn insert(&mut self, topics: K, mark: MetadataMark, answer: V) {
        // Answers read at earlier epochs are never used again.
        self.answers.retain(|_, remembered| remembered.mark == mark);
        if self.answers.len() >= METADATA_ANSWERS_KEPT && !self.answers.contains_key(&topics) {
            let least_used = self
                .answers
                .iter()
                .min_by_key(|(_, remembered)| remembered.used)
                .map(|(topics, _)| topics.clone());
            if let Some(least_used) = least_used {
                _ = self.answers.remove(&least_used);
            }
        }
        _ = self.answers.insert(
            topics,
            Remembered {
                mark,
                answer,
                used: self.clock,
            },
        );
    }
}

fn abs_diff(a: Instant, b: Instant) -> Duration {
    a.saturating_duration_since(b)
        .max(b.saturating_duration_since(a))
}

#[cfg(test)]
mod tests;
