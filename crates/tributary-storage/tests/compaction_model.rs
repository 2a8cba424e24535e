//! Property test of compaction against a model: any sequence of keyed appends (tombstones,
//! every codec, idempotent producers), rolls, high-watermark moves, cleans (with a key map large
//! or small enough to need several passes), clock moves, truncations above the high watermark
//! and close- or crash-reopens keeps these true after every step:
//!
//! - every batch read verifies (CRC) and batch offsets strictly increase;
//! - every record read is the record written at that offset (nothing invented or moved);
//! - the latest record of every key is there if it is a value, and once a tombstone that is the
//!   latest record of its key has been cleaned, no older record of that key is there;
//! - below the first dirty offset, every key appears once;
//! - a clean leaves the uncleanable part (active segment, at or above the high watermark) as it
//!   was;
//! - the last batch of every idempotent producer is still there (perhaps empty);
//! - a tombstone that was below the first dirty offset after a clean at time `t` is gone after any
//!   clean at `t + delete.retention.ms` or later.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use tributary_record::{BatchBuilder, Batches, Compression, decode_records};
use tributary_storage::{
    Cleaner, CleanerConfig, CleanupPolicy, FileCache, Log, LogConfig, LogResources, ManualClock,
};

const T0: i64 = 1_700_000_000_000;
const DELETE_RETENTION_MS: i64 = 1_000;
const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[derive(Debug, Clone)]
enum Op {
    Append {
        /// (key, value tag or tombstone).
        records: Vec<(u8, Option<u8>)>,
        codec: usize,
        producer: Option<i64>,
    },
    Roll,
    AdvanceHighWatermark {
        at: u16,
    },
    Clean {
        small_map: bool,
    },
    Advance {
        ms: i64,
    },
    Truncate {
        at: u16,
    },
    CloseAndReopen,
    CrashAndReopen,
}

fn op(keys: u8) -> impl Strategy<Value = Op> {
    let record = (0..keys, prop::option::weighted(0.85, any::<u8>()));
    prop_oneof![
        8 => (
            prop::collection::vec(record, 1..6),
            0usize..CODECS.len(),
            prop::option::weighted(0.3, 1i64..3),
        )
            .prop_map(|(records, codec, producer)| Op::Append { records, codec, producer }),
        2 => Just(Op::Roll),
        2 => any::<u16>().prop_map(|at| Op::AdvanceHighWatermark { at }),
        3 => any::<bool>().prop_map(|small_map| Op::Clean { small_map }),
        2 => (0i64..1_500).prop_map(|ms| Op::Advance { ms }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::CloseAndReopen),
        1 => Just(Op::CrashAndReopen),
    ]
}

type Record = (u8, Option<Bytes>);
/// A batch read back: base offset, next offset, producer id and records by offset.
type ReadBatch = (i64, i64, i64, Vec<(i64, Record)>);

#[derive(Debug, Default)]
struct Model {
    /// Every record written and not truncated: offset -> (key, value).
    records: BTreeMap<i64, Record>,
    /// Every batch: (base offset, next offset, producer id).
    batches: Vec<(i64, i64, Option<i64>)>,
    log_end: i64,
    high_watermark: i64,
    now: i64,
    sequences: HashMap<i64, i32>,
    /// Tombstone offset -> time of the first clean after which it was below the first dirty
    /// offset.
    tombstones_cleaned_at: BTreeMap<i64, i64>,
}

impl Model {
    fn latest(&self) -> BTreeMap<u8, (i64, Option<Bytes>)> {
        let mut out = BTreeMap::new();
        for (&offset, (key, value)) in &self.records {
            out.insert(*key, (offset, value.clone()));
        }
        out
    }
}

struct Subject {
    dir: PathBuf,
    config: LogConfig,
    resources: LogResources,
    log: Option<Log>,
}

impl Subject {
    fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        self.log = None;
        self.log = Some(Log::open(&self.dir, self.config.clone(), self.resources.clone()).unwrap());
    }
}

/// Every batch of the log with its records, checking CRCs and offset order.
fn read_log(log: &Log) -> Result<Vec<ReadBatch>, TestCaseError> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut last = -1;
    while offset < end {
        let result = log.read(offset, 1 << 16, None, true).unwrap();
        prop_assert!(
            !result.records.is_empty(),
            "nothing read at {} below {}",
            offset,
            end
        );
        for item in Batches::new(&result.records) {
            let (header, at, bytes) = item.expect("every batch read verifies");
            prop_assert!(
                header.base_offset > last,
                "batch offsets go backwards at {}",
                header.base_offset
            );
            last = header.last_offset();
            let batch = result.records.slice(at..at + bytes.len());
            let records = decode_records(&batch)
                .unwrap()
                .into_iter()
                .map(|r| {
                    let key = r.key.expect("keyed")[0];
                    (r.offset, (key, r.value))
                })
                .collect();
            out.push((
                header.base_offset,
                header.next_offset(),
                header.producer_id,
                records,
            ));
        }
        prop_assert!(result.next_offset > offset);
        offset = result.next_offset;
    }
    Ok(out)
}

/// `cleaned`: the time of the clean just done and the first offset it could not touch.
fn check(
    subject: &Subject,
    model: &mut Model,
    cleaned: Option<(i64, i64)>,
) -> Result<(), TestCaseError> {
    let log = subject.log();
    prop_assert_eq!(log.log_end_offset(), model.log_end);
    let batches = read_log(log)?;
    let mut present: BTreeMap<i64, Record> = BTreeMap::new();
    for (_, _, _, records) in &batches {
        for (offset, record) in records {
            prop_assert_eq!(
                model.records.get(offset),
                Some(record),
                "record at {} is not what was written",
                offset
            );
            present.insert(*offset, record.clone());
        }
    }
    let latest = model.latest();
    let first_dirty = log.first_dirty_offset();
    for (key, (offset, value)) in &latest {
        if value.is_some() {
            prop_assert!(
                present.contains_key(offset),
                "latest value of key {} at {} is gone",
                key,
                offset
            );
        } else if *offset < first_dirty {
            let older = present.iter().any(|(o, (k, _))| k == key && o < offset);
            prop_assert!(
                !older,
                "an older record of key {} survived its cleaned tombstone at {}",
                key,
                offset
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (_, (key, _)) in present.range(..first_dirty) {
        prop_assert!(
            seen.insert(*key),
            "key {} twice below the first dirty offset {}",
            key,
            first_dirty
        );
    }
    let mut last_of_producer: HashMap<i64, (i64, i64)> = HashMap::new();
    for &(base, next, producer) in &model.batches {
        if let Some(pid) = producer {
            last_of_producer.insert(pid, (base, next));
        }
    }
    for (pid, (base, next)) in last_of_producer {
        prop_assert!(
            batches
                .iter()
                .any(|b| b.0 == base && b.1 == next && b.2 == pid),
            "producer {}'s last batch [{}, {}) is gone",
            pid,
            base,
            next
        );
    }
    if let Some((now, uncleanable)) = cleaned {
        for (key, (offset, value)) in &latest {
            if value.is_some() {
                continue;
            }
            if let Some(&at) = model.tombstones_cleaned_at.get(offset) {
                // A segment that became the active one again (truncation) is not cleaned.
                if at + DELETE_RETENTION_MS <= now && *offset < uncleanable {
                    let any = present.values().any(|(k, _)| k == key);
                    prop_assert!(
                        !any,
                        "tombstone of key {} at {} outlived delete.retention.ms",
                        key,
                        offset
                    );
                }
            } else if *offset < first_dirty {
                model.tombstones_cleaned_at.insert(*offset, now);
            }
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>, segment_bytes: u32, index_interval_bytes: u32) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        segment_bytes,
        index_interval_bytes,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: DELETE_RETENTION_MS,
        ..LogConfig::default()
    };
    let mut subject = Subject {
        dir: tmp.path().join("t-0"),
        config,
        resources: LogResources {
            files: FileCache::new(4),
            clock: clock.clone() as Arc<_>,
            // Small steps, so the model crosses many preallocation boundaries.
            preallocate_bytes: 4096,
        },
        log: None,
    };
    subject.reopen();
    let mut big = Cleaner::new(CleanerConfig::default()).unwrap();
    let mut small = Cleaner::new(CleanerConfig {
        // 10 slots: 7 keys a pass.
        dedupe_buffer_bytes: 256,
        ..CleanerConfig::default()
    })
    .unwrap();
    let mut model = Model {
        now: T0,
        ..Model::default()
    };
    for (step, op) in ops.into_iter().enumerate() {
        let mut cleaned = None;
        match op {
            Op::Append {
                records,
                codec,
                producer,
            } => {
                let mut builder = BatchBuilder::new(model.now).compression(CODECS[codec]);
                if let Some(pid) = producer {
                    let sequence = model.sequences.entry(pid).or_default();
                    builder = builder.producer(pid, 0, *sequence);
                    *sequence += records.len() as i32;
                }
                let values: Vec<Option<Bytes>> = records
                    .iter()
                    .map(|(key, tag)| tag.map(|t| Bytes::from(format!("{key}:{t}:step-{step}"))))
                    .collect();
                for ((key, _), value) in records.iter().zip(&values) {
                    builder.push(model.now, Some(&[*key]), value.as_deref(), &[]);
                }
                let info = subject.log().append_as_leader(&builder.build(), 1).unwrap();
                prop_assert_eq!(info.first_offset, model.log_end);
                for (i, ((key, _), value)) in records.iter().zip(values).enumerate() {
                    model
                        .records
                        .insert(model.log_end + i as i64, (*key, value));
                }
                let next = model.log_end + records.len() as i64;
                model.batches.push((model.log_end, next, producer));
                model.log_end = next;
            }
            Op::Roll => subject.log().roll().unwrap(),
            Op::AdvanceHighWatermark { at } => {
                let span = model.log_end - model.high_watermark + 1;
                model.high_watermark += i64::from(at) % span;
            }
            Op::Clean { small_map } => {
                let cleaner = if small_map { &mut small } else { &mut big };
                let log = subject.log();
                let uncleanable = log
                    .cleanable_stats(model.high_watermark, model.now)
                    .first_uncleanable_offset;
                let untouched = |batches: Vec<ReadBatch>| {
                    batches
                        .into_iter()
                        .filter(|b| b.1 > uncleanable)
                        .collect::<Vec<_>>()
                };
                let before = untouched(read_log(log)?);
                let outcome = log.clean(model.high_watermark, model.now, cleaner).unwrap();
                prop_assert!(!outcome.aborted);
                prop_assert!(uncleanable <= model.high_watermark || log.segment_count() == 1);
                prop_assert_eq!(
                    untouched(read_log(log)?),
                    before,
                    "the uncleanable part changed"
                );
                cleaned = Some((model.now, outcome.first_uncleanable_offset));
            }
            Op::Advance { ms } => {
                model.now += ms;
                clock.advance(ms);
            }
            Op::Truncate { at } => {
                // Followers truncate only above the high watermark.
                let span = model.log_end - model.high_watermark + 1;
                let offset = model.high_watermark + i64::from(at) % span;
                let end = subject.log().truncate_to(offset).unwrap();
                if offset < model.log_end {
                    let cut = model
                        .batches
                        .iter()
                        .find(|(base, next, _)| *base <= offset && offset < *next)
                        .map_or(offset, |b| b.0);
                    model.batches.retain(|b| b.0 < cut);
                    model.records.retain(|o, _| *o < cut);
                    model.log_end = cut;
                }
                prop_assert_eq!(end, model.log_end);
                model.high_watermark = model.high_watermark.min(model.log_end);
            }
            Op::CloseAndReopen => {
                subject.log().close().unwrap();
                subject.reopen();
            }
            Op::CrashAndReopen => subject.reopen(),
        }
        check(&subject, &mut model, cleaned)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn compaction_behaves_like_the_model(
        ops in prop::collection::vec(op(8), 1..70),
        segment_bytes in 1024u32..4096,
        index_interval_bytes in 32u32..600,
    ) {
        run(ops, segment_bytes, index_interval_bytes)?;
    }

    #[test]
    fn compaction_with_many_keys_behaves_like_the_model(
        ops in prop::collection::vec(op(200), 1..90),
        segment_bytes in 1024u32..4096,
        index_interval_bytes in 32u32..600,
    ) {
        run(ops, segment_bytes, index_interval_bytes)?;
    }
}
