//! Helpers shared by the storage crate's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tributary_record::BatchBuilder;
use tributary_storage::{Log, LogConfig, LogResources, ManualClock};

/// A batch of `records` records whose values say which batch and record they are, so a read
/// can be checked byte for byte against what was written.
pub fn batch(tag: u64, records: usize, value_bytes: usize, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new(timestamp);
    for i in 0..records {
        let mut value = format!("batch-{tag}-record-{i}-").into_bytes();
        value.resize(value_bytes.max(value.len()), b'x');
        builder.push(
            timestamp + i as i64,
            Some(format!("key-{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    builder.build()
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub resources: LogResources,
}

pub trait Now {
    fn now(&self) -> i64;
}

impl Now for ManualClock {
    fn now(&self) -> i64 {
        use tributary_storage::Clock;
        self.now_ms()
    }
}

impl Env {
    pub fn new() -> Self {
        let clock = ManualClock::new(1_700_000_000_000);
        let resources = LogResources {
            files: tributary_storage::FileCache::new(16),
            clock: clock.clone(),
            preallocate_bytes: tributary_storage::DEFAULT_PREALLOCATE_BYTES,
        };
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            clock,
            resources,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn open(&self, config: LogConfig) -> Log {
        Log::open(
            self.dir.path().join("topic-0"),
            config,
            self.resources.clone(),
        )
        .expect("open log")
    }
}

/// Reads the whole log from `from` through `Log::read`, returning each batch's bytes.
pub fn read_all(log: &Log, from: i64, max_bytes: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = from;
    let end = log.log_end_offset();
    while offset < end {
        let result = log.read(offset, max_bytes, None, true).expect("read");
        assert!(
            !result.records.is_empty(),
            "read at {offset} below the end {end} returned nothing"
        );
        for item in tributary_record::Batches::new(&result.records) {
            let (_, at, bytes) = item.expect("stored batch verifies");
            out.push(result.records.slice(at..at + bytes.len()));
        }
        assert!(
            result.next_offset > offset,
            "read at {offset} made no progress"
        );
        offset = result.next_offset;
    }
    out
}
