//! Property test: any sequence of append / read / roll / truncate / retention / close-and-reopen
//! / crash-and-reopen gives the answers of a simple in-memory model of a partition log.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use tributary_record::{BatchBuilder, Batches, verify_batch};
use tributary_storage::{FileCache, Log, LogConfig, LogResources, ManualClock};

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_bytes: usize,
        new_epoch: bool,
    },
    Read {
        at: u16,
        max_bytes: usize,
    },
    Roll,
    Truncate {
        at: u16,
    },
    AdvanceStart {
        at: u16,
    },
    RetainBytes {
        bytes: i64,
    },
    CloseAndReopen,
    CrashAndReopen,
    FlushAndCrash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..400, prop::bool::weighted(0.1))
            .prop_map(|(records, value_bytes, new_epoch)| Op::Append { records, value_bytes, new_epoch }),
        4 => (any::<u16>(), 1usize..6000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::AdvanceStart { at }),
        1 => (0i64..8000).prop_map(|bytes| Op::RetainBytes { bytes }),
        1 => Just(Op::CloseAndReopen),
        1 => Just(Op::CrashAndReopen),
        1 => Just(Op::FlushAndCrash),
    ]
}

enum OpKind {
    Reopen,
    Other,
}

/// The model: the batches the log holds, as the leader wrote them.
#[derive(Debug, Default)]
struct Model {
    /// (base offset, next offset, bytes).
    batches: Vec<(i64, i64, Bytes)>,
    log_start: i64,
    log_end: i64,
    epoch: i32,
    epochs: Vec<(i32, i64)>,
}

impl Model {
    /// Maps an arbitrary number onto an offset in `[log_start, log_end]`.
    fn pick(&self, at: u16) -> i64 {
        self.log_start + i64::from(at) % (self.log_end - self.log_start + 1)
    }

    /// Batches from the one holding `offset` on.
    fn from(&self, offset: i64) -> Vec<Bytes> {
        self.batches
            .iter()
            .filter(|(_, next, _)| *next > offset)
            .map(|(_, _, bytes)| bytes.clone())
            .collect()
    }

    fn truncate_epochs_from_start(&mut self, start: i64) {
        let below = self.epochs.iter().filter(|&&(_, s)| s <= start).count();
        if below > 0 {
            let (epoch, s) = self.epochs[below - 1];
            self.epochs.drain(..below - 1);
            self.epochs[0] = (epoch, s.max(start));
        }
    }
}

struct Subject {
    dir: std::path::PathBuf,
    config: LogConfig,
    resources: LogResources,
    log: Option<Log>,
}

impl Subject {
    fn log(&self) -> &Log {
        self.log.as_ref().expect("open")
    }

    fn reopen(&mut self) {
        self.log = None;
        self.log = Some(
            Log::open(&self.dir, self.config.clone(), self.resources.clone()).expect("reopen"),
        );
    }
}

fn make_batch(tag: u64, records: usize, value_bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::new(1_000 + tag as i64);
    for i in 0..records {
        let mut value = format!("{tag}:{i}:").into_bytes();
        value.resize(value_bytes.max(value.len()), b'v');
        builder.push(1_000 + tag as i64, Some(b"k"), Some(&value), &[]);
    }
    builder.build()
}

fn split(records: &Bytes) -> Vec<Bytes> {
    Batches::new(records)
        .map(|item| {
            let (_, at, bytes) = item.expect("every batch the log returns verifies");
            records.slice(at..at + bytes.len())
        })
        .collect()
}

fn run(ops: Vec<Op>, segment_bytes: u32, index_interval_bytes: u32) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        segment_bytes,
        index_interval_bytes,
        ..LogConfig::default()
    };
    let resources = LogResources {
        files: FileCache::new(4),
        clock: clock as Arc<_>,
        // Small steps, so the model crosses many preallocation boundaries.
        preallocate_bytes: 4096,
    };
    let mut subject = Subject {
        dir: tmp.path().join("t-0"),
        config,
        resources,
        log: None,
    };
    subject.reopen();
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let op_kind = match op {
            Op::CloseAndReopen | Op::CrashAndReopen | Op::FlushAndCrash => OpKind::Reopen,
            _ => OpKind::Other,
        };
        match op {
            Op::Append {
                records,
                value_bytes,
                new_epoch,
            } => {
                if new_epoch {
                    model.epoch += 1;
                }
                let input = make_batch(step as u64, records, value_bytes);
                let info = subject.log().append_as_leader(&input, model.epoch).unwrap();
                prop_assert_eq!(info.first_offset, model.log_end);
                let mut expected = input.to_vec();
                tributary_record::set_base_offset(&mut expected, model.log_end);
                tributary_record::set_partition_leader_epoch(&mut expected, model.epoch);
                prop_assert_eq!(&info.batches()[..], &expected[..]);
                if model.epochs.last().is_none_or(|&(e, _)| model.epoch > e) {
                    // A new epoch replaces older ones that start at the same offset (they hold
                    // no record), as Kafka's cache does.
                    let start = model.log_end;
                    model.epochs.retain(|&(_, s)| s < start);
                    model.epochs.push((model.epoch, start));
                }
                let next = model.log_end + records as i64;
                model
                    .batches
                    .push((model.log_end, next, Bytes::from(expected)));
                model.log_end = next;
            }
            Op::Read { at, max_bytes } => {
                let offset = model.pick(at);
                let result = subject.log().read(offset, max_bytes, None, true).unwrap();
                let got = split(&result.records);
                let expected = model.from(offset);
                prop_assert!(got.len() <= expected.len());
                prop_assert_eq!(
                    &got[..],
                    &expected[..got.len()],
                    "read at {} is not a prefix of the log",
                    offset
                );
                if offset < model.log_end {
                    prop_assert!(
                        !got.is_empty(),
                        "read at {} below the end returned nothing",
                        offset
                    );
                    let total: usize = got.iter().map(Bytes::len).sum();
                    prop_assert!(total <= max_bytes.max(got[0].len()));
                }
            }
            Op::Roll => subject.log().roll().unwrap(),
            Op::Truncate { at } => {
                let offset = model.pick(at);
                subject.log().truncate_to(offset).unwrap();
                if offset >= model.log_end {
                    // No record to remove; epochs starting at the log end go.
                    if offset == model.log_end {
                        model.epochs.retain(|&(_, s)| s < offset);
                    }
                } else if offset <= model.log_start {
                    model.batches.clear();
                    model.log_start = offset;
                    model.log_end = offset;
                    model.epochs.clear();
                } else {
                    // Whole batches go: the one holding `offset` and all after it.
                    model.batches.retain(|(_, next, _)| *next <= offset);
                    let end = model.batches.last().map_or(model.log_start, |b| b.1);
                    if end <= model.log_start {
                        // Nothing visible remains: the log restarts empty at its start.
                        model.batches.clear();
                        model.log_end = model.log_start;
                        model.epochs.clear();
                    } else {
                        model.log_end = end;
                        model.epochs.retain(|&(_, s)| s < end);
                    }
                }
            }
            Op::AdvanceStart { at } => {
                let offset = model.pick(at);
                subject.log().advance_log_start_offset(offset).unwrap();
                if offset > model.log_start {
                    model.log_start = offset;
                    model.truncate_epochs_from_start(offset);
                }
            }
            Op::RetainBytes { bytes } => {
                let mut config = subject.config.clone();
                config.retention_bytes = bytes;
                config.retention_ms = -1;
                subject.log().set_config(config).unwrap();
                subject.log().apply_retention(model.log_end).unwrap();
                let start = subject.log().log_start_offset();
                let start_before = model.log_start;
                prop_assert!(start >= model.log_start && start <= model.log_end);
                if start > model.log_start {
                    prop_assert!(
                        model.batches.iter().any(|b| b.0 == start) || start == model.log_end,
                        "retention moved the start to {}, not a batch boundary",
                        start
                    );
                    model.log_start = start;
                    model.truncate_epochs_from_start(start);
                }
                prop_assert!(
                    subject.log().size_bytes() as i64 >= bytes || start == start_before,
                    "retention deleted below retention.bytes = {}",
                    bytes
                );
                subject.log().set_config(subject.config.clone()).unwrap();
            }
            Op::CloseAndReopen => {
                subject.log().close().unwrap();
                subject.reopen();
                prop_assert!(subject.log().open_report().clean);
            }
            Op::CrashAndReopen => subject.reopen(),
            Op::FlushAndCrash => {
                subject.log().flush().unwrap();
                subject.reopen();
                prop_assert_eq!(subject.log().open_report().bytes_truncated, 0);
            }
        }
        if matches!(op_kind, OpKind::Reopen) {
            // As Kafka does on load, epochs that hold no record are forgotten.
            let end = model.log_end;
            model.epochs.retain(|&(_, s)| s < end);
        }
        let log = subject.log();
        prop_assert_eq!(
            log.log_end_offset(),
            model.log_end,
            "log end after step {}",
            step
        );
        prop_assert_eq!(
            log.log_start_offset(),
            model.log_start,
            "log start after step {}",
            step
        );
        prop_assert_eq!(
            log.epoch_entries(),
            model.epochs.clone(),
            "epochs after step {}",
            step
        );
    }
    // Finally the whole log, batch by batch.
    let log = subject.log();
    let mut offset = model.log_start;
    let mut got = Vec::new();
    while offset < model.log_end {
        let result = log.read(offset, 1 << 20, None, true).unwrap();
        got.extend(split(&result.records));
        offset = result.next_offset;
    }
    for batch in &got {
        verify_batch(batch).unwrap();
    }
    prop_assert_eq!(got, model.from(model.log_start));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_the_model(
        ops in prop::collection::vec(op(), 1..80),
        segment_bytes in 1024u32..6000,
        index_interval_bytes in 1u32..1024,
    ) {
        run(ops, segment_bytes, index_interval_bytes)?;
    }
}
