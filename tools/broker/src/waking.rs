//! A storage layer over nisshi's engine that answers "nothing new" from memory
//! and wakes a waiting fetch as soon as a produce lands.
//!
//! Why, and what it decides when, is in the `broker-wake` crate (./wake):
//! its `State` takes every decision with the clock passed in, and has its
//! unit tests there. This layer holds that state under a lock, tells it
//! what the storage did, reads the clock, and does the reading and the
//! waiting it decides on. Of nisshi's `Storage` methods it has its own
//! version of those that read or change what the state remembers; the rest
//! go to the engine unchanged, written once in `storage_impl!`.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use broker_wake::{Fetch, Isolation, Offsets};
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

/// Partitions by topic and index, connections by the task that serves them,
/// metadata answers by the topic list asked for (`None`: all).
type State = broker_wake::State<Topition, task::Id, Option<Vec<TopicId>>, MetadataResponse>;

pub struct WakingStorage<S> {
    inner: S,
    state: Mutex<State>,
    /// Bumped after every produce: waiting reads look again.
    produced: watch::Sender<()>,
}

impl<S> std::fmt::Debug for WakingStorage<S>
where
    S: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

    /// After a change to the log that is not a produce: everything
    /// remembered is void, and waiting reads look again.
    fn log_changed(&self) {
        self.state().log_changed();
        self.produced.send_modify(|_| {});
    }
}

fn isolation(level: IsolationLevel) -> Isolation {
    match level {
        IsolationLevel::ReadCommitted => Isolation::ReadCommitted,
        IsolationLevel::ReadUncommitted => Isolation::ReadUncommitted,
    }
}

fn offsets(stage: OffsetStage) -> Offsets {
    Offsets {
        log_start: stage.log_start,
        high_watermark: stage.high_watermark,
        last_stable: stage.last_stable,
    }
}

fn stage(offsets: Offsets) -> OffsetStage {
    OffsetStage {
        log_start: offsets.log_start,
        high_watermark: offsets.high_watermark,
        last_stable: offsets.last_stable,
    }
}

/// The `Storage` methods the layer has its own version of: the trait's
/// methods of the same names call these (see `storage_impl!`).
impl<S> WakingStorage<S>
where
    S: Storage,
{
    async fn register_broker(&self, broker_registration: BrokerRegistrationRequest) -> Result<()> {
        let result = self.inner.register_broker(broker_registration).await;
        self.state().topics_changed();
        result
    }

    async fn create_topic(&self, topic: CreatableTopic, validate_only: bool) -> Result<Uuid> {
        let result = self.inner.create_topic(topic, validate_only).await;
        // A topic that already existed, or only validated, changed nothing.
        if result.is_ok() && !validate_only {
            self.state().topics_changed();
        }
        result
    }

    async fn incremental_alter_resource(
        &self,
        resource: AlterConfigsResource,
    ) -> Result<AlterConfigsResourceResponse> {
        // Configs (retention) move offsets only when `maintain` applies them.
        let result = self.inner.incremental_alter_resource(resource).await;
        self.state().topics_changed();
        result
    }

    async fn delete_records(
        &self,
        topics: &[DeleteRecordsTopic],
    ) -> Result<Vec<DeleteRecordsTopicResult>> {
        let result = self.inner.delete_records(topics).await;
        self.log_changed();
        result
    }

    async fn delete_topic(&self, topic: &TopicId) -> Result<ErrorCode> {
        let result = self.inner.delete_topic(topic).await;
        self.state().topic_deleted();
        self.produced.send_modify(|_| {});
        result
    }

    async fn produce(
        &self,
        transaction_id: Option<&str>,
        topition: &Topition,
        batch: deflated::Batch,
    ) -> Result<i64> {
        let result = self.inner.produce(transaction_id, topition, batch).await;
        self.state().produced(topition, result.is_ok());
        self.produced.send_modify(|_| {});
        result
    }

    async fn fetch(
        &self,
        topition: &Topition,
        offset: i64,
        min_bytes: u32,
        max_bytes: u32,
        isolation_level: IsolationLevel,
        max_wait: Duration,
    ) -> Result<Vec<deflated::Batch>> {
        let now = Instant::now();
        let reader = task::try_id();
        let isolation = isolation(isolation_level);
        let plan = self.state().plan_fetch(
            reader,
            topition,
            offset,
            max_wait,
            isolation,
            now.into_std(),
        );
        match plan {
            Fetch::Read => {}
            Fetch::Nothing => return Ok(vec![]),
            Fetch::Wait { reader, until } => {
                self.wait_for_produce(reader, isolation, Instant::from_std(until))
                    .await;
                tracing::debug!(?topition, offset, waited = ?now.elapsed(), "fetch waited");
                if self.state().nothing_at(topition, offset, isolation) {
                    return Ok(vec![]);
                }
            }
        }
        let batches = self
            .inner
            .fetch(
                topition,
                offset,
                min_bytes,
                max_bytes,
                isolation_level,
                max_wait,
            )
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
            self.state().found(reader, topition, next);
        }
        Ok(batches)
    }

    /// Waits until a produce lands on a partition the connection reads, or
    /// `deadline`.
    async fn wait_for_produce(&self, reader: task::Id, isolation: Isolation, deadline: Instant) {
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

    async fn offset_stage(&self, topition: &Topition) -> Result<OffsetStage> {
        let mark = {
            let state = self.state();
            if let Some(offsets) = state.offsets(topition) {
                return Ok(stage(offsets));
            }
            state.offsets_mark(topition)
        };
        let read = self.inner.offset_stage(topition).await?;
        self.state().remember_offsets(topition, mark, offsets(read));
        Ok(read)
    }

    async fn metadata(&self, topics: Option<&[TopicId]>) -> Result<MetadataResponse> {
        let key = topics.map(<[TopicId]>::to_vec);
        let mark = {
            let mut state = self.state();
            if let Some(metadata) = state.metadata(&key) {
                return Ok(metadata);
            }
            state.metadata_mark()
        };
        let metadata = self.inner.metadata(topics).await?;
        let none = i16::from(ErrorCode::None);
        let every_topic_exists = metadata.topics.iter().all(|topic| topic.error_code == none);
        self.state()
            .remember_metadata(key, mark, metadata.clone(), every_topic_exists);
        Ok(metadata)
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
        self.log_changed();
        result
    }

    async fn maintain(&self, now: SystemTime) -> Result<()> {
        // Retention moves log starts; expired transactions move last stable offsets.
        let result = self.inner.maintain(now).await;
        self.log_changed();
        result
    }

    async fn maintain_transactions(&self, now: SystemTime) -> Result<()> {
        let result = self.inner.maintain_transactions(now).await;
        self.log_changed();
        result
    }
}

/// Implements `Storage` for [`WakingStorage`] from a list of the trait's
/// methods (nisshi's trait has no default methods): the `layer` ones call the
/// layer's own method of that name, the `inner` ones the engine's, with the
/// same arguments. A method missing from the list, or with a signature that
/// is not the trait's, does not compile.
macro_rules! storage_impl {
    (
        layer { $(fn $own:ident($($own_arg:ident: $own_ty:ty),*) -> $own_ret:ty;)* }
        inner { $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }
    ) => {
        #[async_trait]
        impl<S> Storage for WakingStorage<S>
        where
            S: Storage,
        {
            $(
                async fn $own(&self, $($own_arg: $own_ty),*) -> $own_ret {
                    // The inherent method, not this one: inherent ones come first.
                    WakingStorage::$own(self, $($own_arg),*).await
                }
            )*
            $(
                async fn $name(&self, $($arg: $ty),*) -> $ret {
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

storage_impl! {
    layer {
        fn register_broker(broker_registration: BrokerRegistrationRequest) -> Result<()>;
        fn create_topic(topic: CreatableTopic, validate_only: bool) -> Result<Uuid>;
        fn incremental_alter_resource(resource: AlterConfigsResource)
            -> Result<AlterConfigsResourceResponse>;
        fn delete_records(topics: &[DeleteRecordsTopic]) -> Result<Vec<DeleteRecordsTopicResult>>;
        fn delete_topic(topic: &TopicId) -> Result<ErrorCode>;
        fn produce(transaction_id: Option<&str>, topition: &Topition, batch: deflated::Batch)
            -> Result<i64>;
        fn fetch(
            topition: &Topition,
            offset: i64,
            min_bytes: u32,
            max_bytes: u32,
            isolation_level: IsolationLevel,
            max_wait: Duration
        ) -> Result<Vec<deflated::Batch>>;
        fn offset_stage(topition: &Topition) -> Result<OffsetStage>;
        fn metadata(topics: Option<&[TopicId]>) -> Result<MetadataResponse>;
        fn txn_end(transaction_id: &str, producer_id: i64, producer_epoch: i16, committed: bool)
            -> Result<ErrorCode>;
        fn maintain(now: SystemTime) -> Result<()>;
        fn maintain_transactions(now: SystemTime) -> Result<()>;
    }
    inner {
        fn brokers() -> Result<Vec<DescribeClusterBroker>>;
        fn list_offsets(isolation_level: IsolationLevel, offsets: &[(Topition, ListOffset)])
            -> Result<Vec<(Topition, ListOffsetResponse)>>;
        fn offset_commit(
            group_id: &str,
            retention_time_ms: Option<Duration>,
            offsets: &[(Topition, OffsetCommitRequest)]
        ) -> Result<Vec<(Topition, ErrorCode)>>;
        fn offset_fetch(group_id: Option<&str>, topics: &[Topition], require_stable: Option<bool>)
            -> Result<BTreeMap<Topition, i64>>;
        fn committed_offset_topitions(group_id: &str)
            -> Result<BTreeMap<Topition, i64>>;
        fn upsert_user_scram_credential(
            user: &str,
            mechanism: ScramMechanism,
            credential: ScramCredential
        ) -> Result<()>;
        fn delete_user_scram_credential(user: &str, mechanism: ScramMechanism) -> Result<()>;
        fn user_scram_credential(user: &str, mechanism: ScramMechanism)
            -> Result<Option<ScramCredential>>;
        fn describe_config(name: &str, resource: ConfigResource, keys: Option<&[String]>)
            -> Result<DescribeConfigsResult>;
        fn list_groups() -> Result<Vec<NamedGroupDetail>>;
        fn delete_groups(group_ids: Option<&[String]>) -> Result<Vec<DeletableGroupResult>>;
        fn describe_groups(group_ids: Option<&[String]>, include_authorized_operations: bool)
            -> Result<Vec<NamedGroupDetail>>;
        fn describe_topic_partitions(
            topics: Option<&[TopicId]>,
            partition_limit: i32,
            cursor: Option<Topition>
        ) -> Result<Vec<DescribeTopicPartitionsResponseTopic>>;
        fn group_with_version(group_id: &str) -> Result<Option<(GroupDetail, Version)>>;
        fn update_group(group_id: &str, detail: GroupDetail, version: Option<Version>)
            -> Result<Version, UpdateError<GroupDetail>>;
        fn init_producer(
            transaction_id: Option<&str>,
            transaction_timeout_ms: i32,
            producer_id: Option<i64>,
            producer_epoch: Option<i16>
        ) -> Result<ProducerIdResponse>;
        fn txn_add_offsets(
            transaction_id: &str,
            producer_id: i64,
            producer_epoch: i16,
            group_id: &str
        ) -> Result<ErrorCode>;
        fn txn_add_partitions(partitions: TxnAddPartitionsRequest)
            -> Result<TxnAddPartitionsResponse>;
        fn txn_offset_commit(offsets: TxnOffsetCommitRequest)
            -> Result<Vec<TxnOffsetCommitResponseTopic>>;
        fn aborted_transactions(topition: &Topition, offset: i64, last_stable_offset: i64)
            -> Result<Vec<AbortedTransaction>>;
        fn cluster_id() -> Result<String>;
        fn node() -> Result<i32>;
        fn advertised_listener() -> Result<Url>;
        fn ping() -> Result<()>;
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
        assert_eq!(storage.state().metadata_answers(), 0);

        // A topic that exists is remembered, and answered from memory.
        let asked = names(&["seats"]);
        let first = storage.metadata(Some(&asked)).await.unwrap();
        assert_eq!(storage.state().metadata_answers(), 1);
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
        for n in 2..broker_wake::METADATA_ANSWERS_KEPT + 100 {
            _ = storage
                .metadata(Some(&names(&vec!["seats"; n])))
                .await
                .unwrap();
            // The services' own list stays in use.
            _ = storage.metadata(Some(&kept)).await.unwrap();
        }
        let state = storage.state();
        assert_eq!(state.metadata_answers(), broker_wake::METADATA_ANSWERS_KEPT);
        assert!(state.remembers_metadata(&Some(kept)));
        assert!(
            !state.remembers_metadata(&Some(names(&["seats", "seats"]))),
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
        assert_eq!(storage.state().known_partitions(), 0);

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
        assert_eq!(storage.state().known_partitions(), 1);
        assert!(
            storage.state().offsets(&seats).is_some(),
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
        assert_eq!(storage.state().known_partitions(), 1);
        _ = storage
            .delete_topic(&TopicId::Name("seats".into()))
            .await
            .unwrap();
        assert_eq!(storage.state().known_partitions(), 0);
    }

    /// Two fetch requests of one connection (a task, as nisshi serves one)
    /// for `seats` from its end, each reading the offsets first as nisshi
    /// does, the second with a produce landing `produce_after` it began
    /// (none: no produce): how long the second took, and the records it
    /// returned. Through the `Storage` trait, as nisshi calls it.
    async fn second_request(produce_after: Option<Duration>) -> (Duration, u32) {
        let subject = Arc::new(subject().await);
        create_topic(&subject.storage, "seats").await;
        let seats = Topition::new("seats", 0);
        let storage: &dyn Storage = &subject.storage;
        _ = storage.produce(None, &seats, one_record()).await.unwrap();
        let reader = {
            let subject = subject.clone();
            let seats = seats.clone();
            tokio::spawn(async move {
                let storage: &dyn Storage = &subject.storage;
                let request = async || {
                    let end = storage.offset_stage(&seats).await.unwrap().high_watermark();
                    let batches = storage
                        .fetch(
                            &seats,
                            end,
                            1,
                            1 << 20,
                            IsolationLevel::ReadUncommitted,
                            Duration::from_millis(500),
                        )
                        .await
                        .unwrap();
                    batches.iter().map(|batch| batch.record_count).sum::<u32>()
                };
                // The first request learns which partitions the connection
                // reads: it answers at once.
                assert_eq!(request().await, 0);
                tokio::time::sleep(Duration::from_millis(5)).await;
                let began = Instant::now();
                let records = request().await;
                (began.elapsed(), records)
            })
        };
        if let Some(after) = produce_after {
            tokio::time::sleep(Duration::from_millis(5) + after).await;
            _ = storage.produce(None, &seats, one_record()).await.unwrap();
        }
        reader.await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_fetch_returns_the_record_a_produce_lands() {
        let (took, records) = second_request(Some(Duration::from_millis(150))).await;
        assert_eq!(records, 1);
        assert!(
            took < Duration::from_millis(400),
            "woken by the produce, not at the client's deadline: {took:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_with_nothing_new_waits_out_the_clients_wait() {
        let (took, records) = second_request(None).await;
        assert_eq!(records, 0);
        assert!(
            took >= Duration::from_millis(450),
            "answered at the deadline less the margin: {took:?}"
        );
    }
}
