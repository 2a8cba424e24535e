//! The coordinator's one door to the log: the `__consumer_offsets` partitions and the cluster
//! facts it needs about them. The broker implements [`OffsetsLog`] over its replica manager;
//! the tests implement it in memory.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::api::GroupError;

/// A record to write to `__consumer_offsets`: key and value (`None`: tombstone).
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// A record read back from `__consumer_offsets` (control records left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key (`None`: a record without one, skipped).
    pub key: Option<Bytes>,
    /// Its value (`None`: tombstone).
    pub value: Option<Bytes>,
}

/// `__consumer_offsets` as the coordinator sees it.
pub trait OffsetsLog: Send + Sync + 'static {
    /// This broker's id.
    fn broker_id(&self) -> i32;

    /// Whether the broker has recovered its logs and caught up with the metadata (the
    /// coordinator does nothing before).
    fn is_ready(&self) -> bool;

    /// Whether the broker has lost touch with the coordinators (it must not answer for
    /// groups then).
    fn self_fenced(&self) -> bool;

    /// The partition count of `__consumer_offsets`, if the topic exists.
    fn partition_count(&self) -> Option<i32>;

    /// The leader of `__consumer_offsets`-`partition`, if it has one.
    fn leader(&self, partition: i32) -> Option<i32>;

    /// The leader epoch of `__consumer_offsets`-`partition` if this broker leads it.
    fn led_epoch(&self, partition: i32) -> Option<i32>;

    /// Every `__consumer_offsets` partition this broker leads, with its leader epoch.
    fn led_partitions(&self) -> HashMap<i32, i32>;

    /// How many brokers could host a replica now.
    fn running_brokers(&self) -> usize;

    /// Asks the controller to create `__consumer_offsets` with `partitions` partitions and
    /// `replication_factor` replicas, in the background.
    fn create_offsets_topic(&self, partitions: i32, replication_factor: i32);

    /// Appends `records` (with `timestamp_ms`) to `__consumer_offsets`-`partition` with
    /// acks=all and waits up to `timeout` for every in-sync replica: the offset of the first
    /// record, or Kafka's produce error.
    fn append(
        &self,
        partition: i32,
        records: Vec<Write>,
        timestamp_ms: i64,
        timeout: Duration,
    ) -> impl Future<Output = Result<i64, GroupError>> + Send;

    /// Hands every record of `__consumer_offsets`-`partition` from its log start to its end
    /// to `visit`, in order (blocking: the coordinator calls it off the async threads).
    fn read(&self, partition: i32, visit: &mut dyn FnMut(StoredRecord)) -> Result<(), String>;

    /// Wall-clock time in ms (commit timestamps, state timestamps, offset expiry).
    fn wall_clock_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}
