//! A storage layer over nisshi's engine that answers "nothing new" from memory
//! and wakes a waiting fetch as soon as a produce lands.
//!
//! Why: nisshi answers a Fetch that finds nothing by reading every requested
//! partition again from SQLite and sleeping half of the remaining wait, seven
//! or eight rounds per request. That costs a hop up to half the consumer's
//! `fetch.wait.max.ms` and keeps a core busy while the cluster is idle. nisshi's
//! fetch loop is not ours to change, but every read it makes goes through the
//! `Storage` trait, and so does every write. So this layer:
//!
//! * keeps each partition's offsets (`OffsetStage`) and each topic's metadata
//!   as last read, and answers from memory until a write could have changed
//!   them (a produce to that partition, or any other change to the log).
//!   Only partitions and topics that exist are kept, and a bounded number
//!   of metadata answers: a client naming made-up topics must not grow it;
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
//! A "connection" is the tokio task that serves it: nisshi serves one
//! connection's requests one after another in one task. Storage does not see
//! where a request begins, but nisshi gives each read a budget that ends at
//! the client's deadline in the request's first round: a read whose budget
//! ends somewhere new, and is long (so not a later round's half), starts a
//! request. librdkafka rotates the order of partitions from one request to
//! the next, so the watched set is every partition the connection read
//! lately, not the order it read them in.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use nisshi_sans_io::{
    ConfigResource, ErrorCode, IsolationLevel, ListOffset, ScramMechanism,
    create_topics_request::CreatableTopic, delete_groups_response::DeletableGroupResult,
    delete_records_request::DeleteRecordsTopic, delete_records_response::DeleteRecordsTopicResult,
    describe_cluster_response::DescribeClusterBroker,
    describe_configs_response::DescribeConfigsResult,
    describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic,
    fetch_response::AbortedTransaction, incremental_alter_configs_request::AlterConfigsResource,
    incremental_alter_configs_response::AlterConfigsResourceResponse, record::deflated,
    txn_offset_commit_response::TxnOffsetCommitResponseTopic,
};
use nisshi_storage::{
    BrokerRegistrationRequest, GroupDetail, ListOffsetResponse, MetadataResponse, NamedGroupDetail,
    OffsetCommitRequest, OffsetStage, ProducerIdResponse, Result, ScramCredential, Storage,
    TopicId, Topition, TxnAddPartitionsRequest, TxnAddPartitionsResponse, TxnOffsetCommitRequest,
    UpdateError, Version,
};
use tokio::{
    sync::watch,
    task,
    time::{Instant, sleep_until},
};
use url::Url;
use uuid::Uuid;

/// A wait ends this long before the read's budget, so that nisshi gets the
/// (empty) answer before it gives up on the read.
const WAIT_MARGIN: Duration = Duration::from_millis(10);

/// Reads whose budgets end closer than this belong to one round of one
/// request (nisshi computes each from the same client deadline microseconds
/// apart; the next request's deadline is at least a round trip later).
const SAME_DEADLINE: Duration = Duration::from_micros(200);

/// A partition the connection has not read for this long (or four of its
/// longest waits) is no longer its own (a rebalance moved it).
const PARTITION_FORGOTTEN_AFTER: Duration = Duration::from_secs(2);

/// Connections not seen for this long are forgotten (they closed).
const READER_FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// Metadata answers remembered at most: the topic lists the clients of a
/// cluster ask for are a few dozen, but a client may ask for any list.
const METADATA_ANSWERS_KEPT: usize = 256;

pub struct WakingStorage<S> {
    inner: S,
    state: Mutex<State>,
    /// Bumped after every produce: waiting reads look again.
    produced: watch::Sender<()>,
}

/// The epoch and topics epoch an answer was read at.
type Epochs = (u64, u64);

#[derive(Default)]
struct State {
    /// Bumped by every change to the log other than a produce (transactions,
    /// deletions, retention): what was remembered before it is void.
    epoch: u64,
    /// Bumped when topics or brokers change (a topic created, a config
    /// altered): remembered metadata is void, partitions' offsets are not.
    topics_epoch: u64,
    /// Partitions that exist: written or read successfully.
    partitions: BTreeMap<Topition, Partition>,
    /// Bumped by a failed produce to a partition not in `partitions`: it
    /// may have written before failing, so an offset read beside it is
    /// not remembered.
    failed_produces: u64,
    metadata: MetadataCache,
    readers: BTreeMap<task::Id, Reader>,
    readers_swept_at: Option<Instant>,
}

#[derive(Default)]
struct Partition {
    /// Bumped by every produce to the partition.
    version: u64,
    /// The offsets as last read, while neither the version nor the epoch moved.
    stage: Option<(u64, OffsetStage)>,
}

/// Metadata answers by the topic list asked for, each valid while the
/// epochs it was read at hold. Only answers naming topics that exist are
/// kept, and at most [`METADATA_ANSWERS_KEPT`] of them, the least recently
/// used going first: a client asking for made-up topics must not grow it.
#[derive(Default)]
struct MetadataCache {
    answers: BTreeMap<Option<Vec<TopicId>>, Remembered>,
    /// Counts lookups, to tell which answer was used least recently.
    clock: u64,
}

struct Remembered {
    epochs: Epochs,
    metadata: MetadataResponse,
    used: u64,
}

impl MetadataCache {
    fn get(&mut self, topics: &Option<Vec<TopicId>>, epochs: Epochs) -> Option<MetadataResponse> {
        self.clock += 1;
        let answer = self.answers.get_mut(topics)?;
        if answer.epochs != epochs {
            return None;
        }
        answer.used = self.clock;
        Some(answer.metadata.clone())
    }

    fn insert(&mut self, topics: Option<Vec<TopicId>>, epochs: Epochs, metadata: MetadataResponse) {
        let none = i16::from(ErrorCode::None);
        if metadata.topics.iter().any(|topic| topic.error_code != none) {
            return;
        }
        // Answers read at earlier epochs are never used again.
        self.answers.retain(|_, answer| answer.epochs == epochs);
        if self.answers.len() >= METADATA_ANSWERS_KEPT && !self.answers.contains_key(&topics) {
            let least_used = self
                .answers
                .iter()
                .min_by_key(|(_, answer)| answer.used)
                .map(|(topics, _)| topics.clone());
            if let Some(least_used) = least_used {
                _ = self.answers.remove(&least_used);
            }
        }
        _ = self.answers.insert(
            topics,
            Remembered {
                epochs,
                metadata,
                used: self.clock,
            },
        );
    }
}

/// What one connection reads.
struct Reader {
    /// Each partition it reads, where it reads next, and when it last did.
    partitions: BTreeMap<Topition, (i64, Instant)>,
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

impl<S> fmt::Debug for WakingStorage<S>
where
    S: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakingStorage")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> WakingStorage<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: Mutex::default(),
            produced: watch::Sender::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves caches that are at worst
        // stale in the direction "read it again": the state stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets remembered metadata, after a change to topics or brokers.
    /// Not the partitions' offsets: every service asks at start-up for the
    /// topics it needs, and waiting fetches elsewhere must not lose their
    /// quiet partitions to it.
    fn invalidate_topics(&self) {
        self.state().topics_epoch += 1;
    }

    /// Forgets every remembered answer, after a change that is not a produce.
    fn invalidate_all(&self) {
        let mut state = self.state();
        state.epoch += 1;
        drop(state);
        self.produced.send_modify(|_| {});
    }
}

impl State {
    fn version(&self, topition: &Topition) -> u64 {
        self.partitions.get(topition).map_or(0, |p| p.version)
    }

    fn stage(&self, topition: &Topition) -> Option<OffsetStage> {
        let partition = self.partitions.get(topition)?;
        let (epoch, stage) = partition.stage.as_ref()?;
        (*epoch == self.epoch).then_some(*stage)
    }

    /// Whether a read of `topition` from `offset` is known to find nothing.
    fn nothing_at(&self, topition: &Topition, offset: i64, isolation: IsolationLevel) -> bool {
        self.stage(topition).is_some_and(|stage| {
            let end = match isolation {
                IsolationLevel::ReadCommitted => stage.last_stable(),
                IsolationLevel::ReadUncommitted => stage.high_watermark(),
            };
            offset >= end
        })
    }

    /// Records a read of `topition` from `offset` by the connection `reader`
    /// with `budget` to spend, and says until when it may wait: only a
    /// connection that has read all its partitions once (a round of an
    /// earlier request, or this request's first round), only in a request
    /// that found nothing yet and has not waited, and only until the
    /// client's deadline.
    fn note_read(
        &mut self,
        reader: task::Id,
        topition: &Topition,
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
            request: Request {
                deadline: now,
                first_round: true,
                found: false,
                waited: false,
            },
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
            entry.request = Request {
                deadline,
                first_round: true,
                found: false,
                waited: false,
            };
        } else if new_deadline {
            entry.request.first_round = false;
        }
        let forget_before = PARTITION_FORGOTTEN_AFTER.max(entry.longest_budget * 4);
        entry
            .partitions
            .retain(|_, (_, read_at)| now.duration_since(*read_at) <= forget_before);
        _ = entry.partitions.insert(topition.clone(), (offset, now));
        let knows_partitions = entry.requests > 1 || !entry.request.first_round;
        let may_wait = knows_partitions && !entry.request.found && !entry.request.waited;
        may_wait.then(|| deadline.min(entry.request.deadline))
    }

    /// The connection's request is about to wait; it waits once.
    fn note_wait(&mut self, reader: task::Id) {
        if let Some(entry) = self.readers.get_mut(&reader) {
            entry.request.waited = true;
        }
    }

    /// After a read returned batches, where the connection reads next.
    fn note_batches(&mut self, reader: task::Id, topition: &Topition, next: i64) {
        if let Some(entry) = self.readers.get_mut(&reader) {
            entry.request.found = true;
            if let Some((offset, _)) = entry.partitions.get_mut(topition) {
                *offset = next;
            }
        }
    }

    /// Whether every partition the connection reads has nothing new from
    /// where it reads next.
    fn is_quiet(&self, reader: task::Id, isolation: IsolationLevel) -> bool {
        self.readers.get(&reader).is_some_and(|entry| {
            entry
                .partitions
                .iter()
                .all(|(topition, (next, _))| self.nothing_at(topition, *next, isolation))
        })
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

fn abs_diff(a: Instant, b: Instant) -> Duration {
    a.saturating_duration_since(b)
        .max(b.saturating_duration_since(a))
}

impl<S> WakingStorage<S>
where
    S: Storage,
{
    /// Waits until a produce lands on a partition the connection reads, or
    /// `deadline`.
    async fn wait_for_produce(
        &self,
        reader: task::Id,
        isolation: IsolationLevel,
        deadline: Instant,
    ) {
        let mut produced = self.produced.subscribe();
        loop {
            // Subscribed before looking, so a produce between the look and
            // the wait still wakes the wait.
            if !self.state().is_quiet(reader, isolation) {
                return;
            }
            tokio::select! {
                changed = produced.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_until(deadline) => return,
            }
        }
    }
}

#[async_trait]
impl<S> Storage for WakingStorage<S>
where
    S: Storage,
{
    async fn register_broker(&self, broker_registration: BrokerRegistrationRequest) -> Result<()> {
        let result = self.inner.register_broker(broker_registration).await;
        self.invalidate_topics();
        result
    }

    async fn create_topic(&self, topic: CreatableTopic, validate_only: bool) -> Result<Uuid> {
        let result = self.inner.create_topic(topic, validate_only).await;
        // A topic that already existed, or only validated, changed nothing.
        if result.is_ok() && !validate_only {
            self.invalidate_topics();
        }
        result
    }

    async fn incremental_alter_resource(
        &self,
        resource: AlterConfigsResource,
    ) -> Result<AlterConfigsResourceResponse> {
        // Configs (retention) move offsets only when `maintain` applies them.
        let result = self.inner.incremental_alter_resource(resource).await;
        self.invalidate_topics();
        result
    }

    async fn delete_records(
        &self,
        topics: &[DeleteRecordsTopic],
    ) -> Result<Vec<DeleteRecordsTopicResult>> {
        let result = self.inner.delete_records(topics).await;
        self.invalidate_all();
        result
    }

    async fn delete_topic(&self, topic: &TopicId) -> Result<ErrorCode> {
        let result = self.inner.delete_topic(topic).await;
        self.invalidate_all();
        // The deleted topic's partitions would keep their entries forever.
        // Once `invalidate_all` moved the epoch no entry holds anything still
        // valid (a read that began before sees the epoch change): all go.
        self.state().partitions.clear();
        result
    }

    async fn brokers(&self) -> Result<Vec<DescribeClusterBroker>> {
        self.inner.brokers().await
    }

    async fn produce(
        &self,
        transaction_id: Option<&str>,
        topition: &Topition,
        batch: deflated::Batch,
    ) -> Result<i64> {
        let result = self.inner.produce(transaction_id, topition, batch).await;
        {
            let mut state = self.state();
            if result.is_ok() {
                let partition = state.partitions.entry(topition.clone()).or_default();
                partition.version += 1;
                partition.stage = None;
            } else if let Some(partition) = state.partitions.get_mut(topition) {
                // It may have written before failing.
                partition.version += 1;
                partition.stage = None;
            } else {
                // Most likely a partition that does not exist: no entry for
                // it, or any client could add one per made-up name.
                state.failed_produces += 1;
            }
        }
        self.produced.send_modify(|_| {});
        result
    }

    async fn fetch(
        &self,
        topition: &'_ Topition,
        offset: i64,
        min_bytes: u32,
        max_bytes: u32,
        isolation: IsolationLevel,
        max_wait: Duration,
    ) -> Result<Vec<deflated::Batch>> {
        let now = Instant::now();
        let reader = task::try_id();
        let wait = {
            let mut state = self.state();
            let until = reader.and_then(|id| {
                state
                    .note_read(id, topition, offset, max_wait, now)
                    .map(|until| (id, until))
            });
            if !state.nothing_at(topition, offset, isolation) {
                None
            } else if let Some((id, until)) = until.filter(|(id, _)| state.is_quiet(*id, isolation))
            {
                state.note_wait(id);
                Some((id, until))
            } else {
                return Ok(vec![]);
            }
        };
        if let Some((reader, until)) = wait {
            let deadline = until.checked_sub(WAIT_MARGIN).unwrap_or(now);
            self.wait_for_produce(reader, isolation, deadline).await;
            tracing::debug!(?topition, offset, waited = ?now.elapsed(), "fetch waited");
            if self.state().nothing_at(topition, offset, isolation) {
                return Ok(vec![]);
            }
        }
        let batches = self
            .inner
            .fetch(topition, offset, min_bytes, max_bytes, isolation, max_wait)
            .await?;
        if let (Some(reader), Some(next)) = (
            reader,
            // The engine answers "nothing" with one empty batch at offset 0.
            batches
                .iter()
                .filter(|batch| batch.record_count > 0)
                .map(|batch| batch.max_offset() + 1)
                .max(),
        ) {
            self.state().note_batches(reader, topition, next);
        }
        Ok(batches)
    }

    async fn offset_stage(&self, topition: &Topition) -> Result<OffsetStage> {
        let (epoch, version, failed_produces) = {
            let state = self.state();
            if let Some(stage) = state.stage(topition) {
                return Ok(stage);
            }
            (state.epoch, state.version(topition), state.failed_produces)
        };
        let stage = self.inner.offset_stage(topition).await?;
        let mut state = self.state();
        // Remembered only if nothing was written while it was read.
        if state.epoch == epoch
            && state.version(topition) == version
            && state.failed_produces == failed_produces
        {
            state.partitions.entry(topition.clone()).or_default().stage = Some((epoch, stage));
        }
        Ok(stage)
    }

    async fn list_offsets(
        &self,
        isolation_level: IsolationLevel,
        offsets: &[(Topition, ListOffset)],
    ) -> Result<Vec<(Topition, ListOffsetResponse)>> {
        self.inner.list_offsets(isolation_level, offsets).await
    }

    async fn offset_commit(
        &self,
        group_id: &str,
        retention_time_ms: Option<Duration>,
        offsets: &[(Topition, OffsetCommitRequest)],
    ) -> Result<Vec<(Topition, ErrorCode)>> {
        self.inner
            .offset_commit(group_id, retention_time_ms, offsets)
            .await
    }

    async fn offset_fetch(
        &self,
        group_id: Option<&str>,
        topics: &[Topition],
        require_stable: Option<bool>,
    ) -> Result<BTreeMap<Topition, i64>> {
        self.inner
            .offset_fetch(group_id, topics, require_stable)
            .await
    }

    async fn committed_offset_topitions(&self, group_id: &str) -> Result<BTreeMap<Topition, i64>> {
        self.inner.committed_offset_topitions(group_id).await
    }

    async fn metadata(&self, topics: Option<&[TopicId]>) -> Result<MetadataResponse> {
        let key = topics.map(<[TopicId]>::to_vec);
        let epochs = {
            let mut state = self.state();
            let now = (state.epoch, state.topics_epoch);
            if let Some(metadata) = state.metadata.get(&key, now) {
                return Ok(metadata);
            }
            now
        };
        let metadata = self.inner.metadata(topics).await?;
        let mut state = self.state();
        if (state.epoch, state.topics_epoch) == epochs {
            state.metadata.insert(key, epochs, metadata.clone());
        }
        Ok(metadata)
    }

    async fn upsert_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    ) -> Result<()> {
        self.inner
            .upsert_user_scram_credential(user, mechanism, credential)
            .await
    }

    async fn delete_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<()> {
        self.inner
            .delete_user_scram_credential(user, mechanism)
            .await
    }

    async fn user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>> {
        self.inner.user_scram_credential(user, mechanism).await
    }

    async fn describe_config(
        &self,
        name: &str,
        resource: ConfigResource,
        keys: Option<&[String]>,
    ) -> Result<DescribeConfigsResult> {
        self.inner.describe_config(name, resource, keys).await
    }

    async fn list_groups(&self) -> Result<Vec<NamedGroupDetail>> {
        self.inner.list_groups().await
    }

    async fn delete_groups(
        &self,
        group_ids: Option<&[String]>,
    ) -> Result<Vec<DeletableGroupResult>> {
        self.inner.delete_groups(group_ids).await
    }

    async fn describe_groups(
        &self,
        group_ids: Option<&[String]>,
        include_authorized_operations: bool,
    ) -> Result<Vec<NamedGroupDetail>> {
        self.inner
            .describe_groups(group_ids, include_authorized_operations)
            .await
    }

    async fn describe_topic_partitions(
        &self,
        topics: Option<&[TopicId]>,
        partition_limit: i32,
        cursor: Option<Topition>,
    ) -> Result<Vec<DescribeTopicPartitionsResponseTopic>> {
        self.inner
            .describe_topic_partitions(topics, partition_limit, cursor)
            .await
    }

    async fn group_with_version(&self, group_id: &str) -> Result<Option<(GroupDetail, Version)>> {
        self.inner.group_with_version(group_id).await
    }

    async fn update_group(
        &self,
        group_id: &str,
        detail: GroupDetail,
        version: Option<Version>,
    ) -> Result<Version, UpdateError<GroupDetail>> {
        self.inner.update_group(group_id, detail, version).await
    }

    async fn init_producer(
        &self,
        transaction_id: Option<&str>,
        transaction_timeout_ms: i32,
        producer_id: Option<i64>,
        producer_epoch: Option<i16>,
    ) -> Result<ProducerIdResponse> {
        self.inner
            .init_producer(
                transaction_id,
                transaction_timeout_ms,
                producer_id,
                producer_epoch,
            )
            .await
    }

    async fn txn_add_offsets(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Result<ErrorCode> {
        self.inner
            .txn_add_offsets(transaction_id, producer_id, producer_epoch, group_id)
            .await
    }

    async fn txn_add_partitions(
        &self,
        partitions: TxnAddPartitionsRequest,
    ) -> Result<TxnAddPartitionsResponse> {
        self.inner.txn_add_partitions(partitions).await
    }

    async fn txn_offset_commit(
        &self,
        offsets: TxnOffsetCommitRequest,
    ) -> Result<Vec<TxnOffsetCommitResponseTopic>> {
        self.inner.txn_offset_commit(offsets).await
    }

    async fn txn_end(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
    ) -> Result<ErrorCode> {
        // Ending a transaction moves the last stable offset of its partitions.
        let result = self
            .inner
            .txn_end(transaction_id, producer_id, producer_epoch, committed)
            .await;
        self.invalidate_all();
        result
    }

    async fn maintain(&self, now: SystemTime) -> Result<()> {
        // Retention moves log starts; expired transactions move last stable offsets.
        let result = self.inner.maintain(now).await;
        self.invalidate_all();
        result
    }

    async fn maintain_transactions(&self, now: SystemTime) -> Result<()> {
        let result = self.inner.maintain_transactions(now).await;
        self.invalidate_all();
        result
    }

    async fn aborted_transactions(
        &self,
        topition: &Topition,
        offset: i64,
        last_stable_offset: i64,
    ) -> Result<Vec<AbortedTransaction>> {
        self.inner
            .aborted_transactions(topition, offset, last_stable_offset)
            .await
    }

    async fn cluster_id(&self) -> Result<String> {
        self.inner.cluster_id().await
    }

    async fn node(&self) -> Result<i32> {
        self.inner.node().await
    }

    async fn advertised_listener(&self) -> Result<Url> {
        self.inner.advertised_listener().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests: a panic is a failed test, with its message"
    )]

    use std::{path::PathBuf, sync::Arc};

    use nisshi_broker::NODE_ID;
    use nisshi_sans_io::record::{Record, inflated};
    use nisshi_storage::{ArcDynStorage, StorageContainer};

    use super::*;

    /// The broker's storage as `main` builds it, on a SQLite file of its own.
    struct Subject {
        storage: WakingStorage<ArcDynStorage>,
        dir: PathBuf,
    }

    impl Drop for Subject {
        fn drop(&mut self) {
            _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn subject() -> Subject {
        let dir = std::env::temp_dir().join(format!("ticket-broker-waking-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut builder = StorageContainer::builder();
        builder.with_factory(Arc::new(nisshi_storage_sql::LiteEngineFactory));
        let engine = builder
            .cluster_id("waking-test")
            .node_id(NODE_ID)
            .advertised_listener(Url::parse("tcp://127.0.0.1:9092").unwrap())
            .storage(Url::parse(&format!("sqlite:///{}", dir.join("broker.db").display())).unwrap())
            .silent(true)
            .build()
            .await
            .unwrap();
        let storage = WakingStorage::new(engine);
        storage
            .register_broker(BrokerRegistrationRequest {
                broker_id: NODE_ID,
                cluster_id: "waking-test".into(),
                incarnation_id: Uuid::now_v7(),
                rack: None,
            })
            .await
            .unwrap();
        Subject { storage, dir }
    }

    async fn create_topic(storage: &WakingStorage<ArcDynStorage>, name: &str) {
        let topic = CreatableTopic::default()
            .name(name.to_owned())
            .num_partitions(1)
            .replication_factor(1)
            .assignments(Some([].into()))
            .configs(Some([].into()));
        _ = storage.create_topic(topic, false).await.unwrap();
    }

    fn one_record() -> deflated::Batch {
        inflated::Batch::builder()
            .record(Record::builder().value(Some(b"seat".to_vec().into())))
            .build()
            .and_then(TryInto::try_into)
            .unwrap()
    }

    fn names(topics: &[&str]) -> Vec<TopicId> {
        topics
            .iter()
            .map(|name| TopicId::Name((*name).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn metadata_for_topics_that_do_not_exist_is_not_remembered() {
        let subject = subject().await;
        let storage = &subject.storage;
        create_topic(storage, "seats").await;
        for n in 0..500 {
            let asked = names(&["seats", &format!("made-up-{n}")]);
            let answer = storage.metadata(Some(&asked)).await.unwrap();
            assert_eq!(answer.topics.len(), 2);
        }
        assert_eq!(storage.state().metadata.answers.len(), 0);

        // A topic that exists is remembered, and answered from memory.
        let asked = names(&["seats"]);
        let first = storage.metadata(Some(&asked)).await.unwrap();
        assert_eq!(storage.state().metadata.answers.len(), 1);
        let second = storage.metadata(Some(&asked)).await.unwrap();
        assert_eq!(first.topics, second.topics);
    }

    #[tokio::test]
    async fn metadata_answers_are_capped_and_the_least_recently_used_goes() {
        let subject = subject().await;
        let storage = &subject.storage;
        create_topic(storage, "seats").await;
        let kept = names(&["seats"]);
        _ = storage.metadata(Some(&kept)).await.unwrap();
        // Every list naming `seats` n times is a list of its own.
        for n in 2..METADATA_ANSWERS_KEPT + 100 {
            _ = storage
                .metadata(Some(&names(&vec!["seats"; n])))
                .await
                .unwrap();
            // The services' own list stays in use.
            _ = storage.metadata(Some(&kept)).await.unwrap();
        }
        let state = storage.state();
        assert_eq!(state.metadata.answers.len(), METADATA_ANSWERS_KEPT);
        assert!(state.metadata.answers.contains_key(&Some(kept)));
        assert!(
            !state
                .metadata
                .answers
                .contains_key(&Some(names(&["seats", "seats"]))),
            "the least recently used went first"
        );
    }

    #[tokio::test]
    async fn failed_produces_leave_no_partition_entries() {
        let subject = subject().await;
        let storage = &subject.storage;
        create_topic(storage, "seats").await;
        for n in 0..500 {
            let made_up = Topition::new(format!("made-up-{n}"), 0);
            assert!(storage.produce(None, &made_up, one_record()).await.is_err());
        }
        let made_up = Topition::new("made-up-0", 0);
        assert!(storage.offset_stage(&made_up).await.is_err());
        assert_eq!(storage.state().partitions.len(), 0);

        // A produce that lands is remembered, as before.
        let seats = Topition::new("seats", 0);
        assert_eq!(
            storage.produce(None, &seats, one_record()).await.unwrap(),
            0
        );
        assert_eq!(
            storage.offset_stage(&seats).await.unwrap().high_watermark(),
            1
        );
        assert_eq!(storage.state().partitions.len(), 1);
        assert!(
            storage.state().stage(&seats).is_some(),
            "its offsets remembered"
        );
    }

    #[tokio::test]
    async fn a_deleted_topic_leaves_no_partition_entries() {
        let subject = subject().await;
        let storage = &subject.storage;
        create_topic(storage, "seats").await;
        let seats = Topition::new("seats", 0);
        _ = storage.produce(None, &seats, one_record()).await.unwrap();
        assert_eq!(storage.state().partitions.len(), 1);
        _ = storage
            .delete_topic(&TopicId::Name("seats".into()))
            .await
            .unwrap();
        assert_eq!(storage.state().partitions.len(), 0);
    }
}
