//! An in-memory `__consumer_offsets`: the partitions' records and leaders shared by the
//! brokers of one test cluster, each broker seeing them through its own [`MemoryLog`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tributary_kafka::ErrorCode;

use crate::api::GroupError;
use crate::log::{OffsetsLog, StoredRecord, Write};

/// Wall-clock time when a test starts (any fixed value: only differences matter).
const WALL_START_MS: i64 = 1_700_000_000_000;

#[derive(Default)]
struct State {
    partitions: Option<i32>,
    /// Partition → (leader, leader epoch).
    leaders: HashMap<i32, (i32, i32)>,
    logs: HashMap<i32, Vec<StoredRecord>>,
    running_brokers: usize,
    create_requests: Vec<(i32, i32)>,
    /// The error the next appends fail with.
    failing: Option<ErrorCode>,
    fenced: Vec<i32>,
}

/// The shared part: records, leaders, the topic's existence.
pub(crate) struct Cluster {
    state: Mutex<State>,
    started: Instant,
}

impl Cluster {
    /// A cluster whose offsets topic has `partitions` partitions (0: it does not exist yet).
    pub(crate) fn new(partitions: i32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                partitions: (partitions > 0).then_some(partitions),
                running_brokers: 3,
                ..State::default()
            }),
            started: Instant::now(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub(crate) fn set_leader(&self, partition: i32, leader: i32, epoch: i32) {
        self.state().leaders.insert(partition, (leader, epoch));
    }

    pub(crate) fn set_running_brokers(&self, n: usize) {
        self.state().running_brokers = n;
    }

    pub(crate) fn create_requests(&self) -> Vec<(i32, i32)> {
        self.state().create_requests.clone()
    }

    pub(crate) fn fail_appends(&self, code: Option<ErrorCode>) {
        self.state().failing = code;
    }

    pub(crate) fn fence(&self, broker: i32) {
        self.state().fenced.push(broker);
    }

    /// The records of `partition` so far.
    pub(crate) fn records(&self, partition: i32) -> Vec<StoredRecord> {
        self.state()
            .logs
            .get(&partition)
            .cloned()
            .unwrap_or_default()
    }
}

/// One broker's view of the cluster.
pub(crate) struct MemoryLog {
    cluster: Arc<Cluster>,
    broker_id: i32,
}

impl MemoryLog {
    pub(crate) fn new(cluster: &Arc<Cluster>, broker_id: i32) -> Arc<Self> {
        Arc::new(Self {
            cluster: cluster.clone(),
            broker_id,
        })
    }
}

impl OffsetsLog for MemoryLog {
    fn broker_id(&self) -> i32 {
        self.broker_id
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn self_fenced(&self) -> bool {
        self.cluster.state().fenced.contains(&self.broker_id)
    }

    fn partition_count(&self) -> Option<i32> {
        self.cluster.state().partitions
    }

    fn leader(&self, partition: i32) -> Option<i32> {
        self.cluster.state().leaders.get(&partition).map(|l| l.0)
    }

    fn led_epoch(&self, partition: i32) -> Option<i32> {
        self.cluster
            .state()
            .leaders
            .get(&partition)
            .filter(|(leader, _)| *leader == self.broker_id)
            .map(|(_, epoch)| *epoch)
    }

    fn led_partitions(&self) -> HashMap<i32, i32> {
        self.cluster
            .state()
            .leaders
            .iter()
            .filter(|(_, (leader, _))| *leader == self.broker_id)
            .map(|(p, (_, epoch))| (*p, *epoch))
            .collect()
    }

    fn running_brokers(&self) -> usize {
        self.cluster.state().running_brokers
    }

    fn create_offsets_topic(&self, partitions: i32, replication_factor: i32) {
        self.cluster
            .state()
            .create_requests
            .push((partitions, replication_factor));
    }

    async fn append(
        &self,
        partition: i32,
        records: Vec<Write>,
        _timestamp_ms: i64,
        _timeout: Duration,
    ) -> Result<i64, GroupError> {
        // A replication round trip: other requests run meanwhile, as on a real broker.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut state = self.cluster.state();
        if let Some(code) = state.failing {
            return Err(GroupError::new(code, "injected"));
        }
        if state.leaders.get(&partition).map(|l| l.0) != Some(self.broker_id) {
            return Err(GroupError::new(
                ErrorCode::NotLeaderOrFollower,
                "not the leader",
            ));
        }
        let log = state.logs.entry(partition).or_default();
        let base = log.len() as i64;
        for (i, (key, value)) in records.into_iter().enumerate() {
            log.push(StoredRecord {
                offset: base + i as i64,
                key: Some(Bytes::from(key)),
                value: value.map(Bytes::from),
            });
        }
        Ok(base)
    }

    fn read(&self, partition: i32, visit: &mut dyn FnMut(StoredRecord)) -> Result<(), String> {
        let records = self.cluster.records(partition);
        for record in records {
            visit(record);
        }
        Ok(())
    }

    fn wall_clock_ms(&self) -> i64 {
        WALL_START_MS + self.cluster.started.elapsed().as_millis() as i64
    }
}
