//! Crash tests of compaction: the cleaner stops (as if the process died) at every step of its
//! swap, or leaves files behind by hand, and `Log::open` must roll the clean back (before the
//! commit point) or complete it (after), never losing or duplicating a record.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use common::read_all;
use tributary_record::{BatchBuilder, decode_records, verify_batch};
use tributary_storage::{
    CleanFault, Cleaner, CleanerConfig, CleanupPolicy, Log, LogConfig, LogResources, StorageError,
};

const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 200,
        cleanup_policy: CleanupPolicy::Compact,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config(), LogResources::new(8)).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A log of many small segments over 6 keys; dropped without close (a crash). Returns its end.
fn prepare(dir: &Path) -> i64 {
    let log = open(dir);
    for round in 0..60 {
        let mut builder = BatchBuilder::new(T0);
        for k in 0..3 {
            let key = format!("key-{}", (round + k) % 6);
            let value = format!("round-{round}-{k}");
            builder.push(T0, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
        }
        log.append_as_leader(&builder.build(), 1).unwrap();
        if round % 4 == 3 {
            log.roll().unwrap();
        }
    }
    log.log_end_offset()
}

fn records(log: &Log) -> BTreeMap<i64, (Bytes, Bytes)> {
    let mut out = BTreeMap::new();
    for batch in read_all(log, log.log_start_offset(), 1 << 20) {
        for record in decode_records(&batch).unwrap() {
            out.insert(record.offset, (record.key.unwrap(), record.value.unwrap()));
        }
    }
    out
}

fn latest(records: &BTreeMap<i64, (Bytes, Bytes)>) -> BTreeMap<Bytes, Bytes> {
    records.values().cloned().collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect()
}

#[test]
fn a_crash_at_every_step_of_the_swap_rolls_back_or_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let end = prepare(&original);
    let before = {
        let copy = tmp.path().join("before");
        copy_dir(&original, &copy);
        let log = open(&copy);
        (read_all(&log, 0, 1 << 20), records(&log))
    };
    // What an uninterrupted clean makes of it.
    let reference = tmp.path().join("reference");
    copy_dir(&original, &reference);
    let reference_log = open(&reference);
    let mut cleaner = Cleaner::new(CleanerConfig::default()).unwrap();
    reference_log.clean(end, T0, &mut cleaner).unwrap();
    let cleaned = read_all(&reference_log, 0, 1 << 20);
    let cleaned_records = records(&reference_log);
    let reference_bases = reference_log.segment_base_offsets();
    assert!(
        reference_bases.len() > 2,
        "several cleaned groups: {reference_bases:?}"
    );
    assert_eq!(latest(&cleaned_records), latest(&before.1));

    for fault in [
        CleanFault::CleanedWritten,
        CleanFault::IndexesSwapped,
        CleanFault::SwapCommitted,
        CleanFault::OldSegmentsDeleted,
    ] {
        let dir = tmp.path().join(format!("{fault:?}"));
        copy_dir(&original, &dir);
        let log = open(&dir);
        cleaner.inject_fault(Some(fault));
        let err = log.clean(end, T0, &mut cleaner).unwrap_err();
        assert!(err.to_string().contains("injected"), "{fault:?}: {err}");
        let committed = matches!(
            fault,
            CleanFault::SwapCommitted | CleanFault::OldSegmentsDeleted
        );
        if committed {
            // Files ahead of memory: the log closed itself.
            assert!(matches!(
                log.read(0, 100, None, true),
                Err(StorageError::Closed { .. })
            ));
        }
        assert!(
            !leftovers(&dir).is_empty(),
            "{fault:?}: the crash left its files"
        );
        drop(log);

        let log = open(&dir);
        assert!(
            leftovers(&dir).is_empty(),
            "{fault:?}: {:?}",
            leftovers(&dir)
        );
        assert_eq!(log.log_end_offset(), end);
        let got = read_all(&log, 0, 1 << 20);
        let got_records = records(&log);
        assert_eq!(latest(&got_records), latest(&before.1), "{fault:?}");
        for (offset, record) in &got_records {
            assert_eq!(
                before.1.get(offset),
                Some(record),
                "{fault:?}: offset {offset}"
            );
        }
        let first_group_end = reference_bases[1];
        let split = |batches: &[Bytes], below: bool| -> Vec<Bytes> {
            batches
                .iter()
                .filter(|b| (verify_batch(b).unwrap().base_offset < first_group_end) == below)
                .cloned()
                .collect()
        };
        if committed {
            // The first group is swapped in, the rest is as it was.
            assert_eq!(split(&got, true), split(&cleaned, true), "{fault:?}");
            assert_eq!(split(&got, false), split(&before.0, false), "{fault:?}");
        } else {
            assert_eq!(got, before.0, "{fault:?}: rolled back");
        }
        // The next clean finishes the job: the same records as an uninterrupted clean (the
        // batches may differ: segments merge differently, an emptied batch may go).
        log.clean(end, T0, &mut cleaner).unwrap();
        assert_eq!(records(&log), cleaned_records, "{fault:?}");
        log.close().unwrap();
        let log = open(&dir);
        assert!(log.open_report().clean);
        assert_eq!(records(&log), cleaned_records);
    }
}

#[test]
fn files_a_clean_left_behind_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    prepare(&dir);
    let before = read_all(&open(&dir), 0, 1 << 20);
    // A torn .cleaned data file, .cleaned indexes, and indexes renamed to .swap while the data
    // file never was (no commit).
    std::fs::write(
        dir.join("00000000000000000000.log.cleaned"),
        b"TRBL\0\x01\0\0garbage",
    )
    .unwrap();
    std::fs::write(dir.join("00000000000000000000.index.cleaned"), b"").unwrap();
    std::fs::write(
        dir.join("00000000000000000012.index.swap"),
        b"TRBI\0\x01\0\0",
    )
    .unwrap();
    std::fs::write(dir.join("00000000000000000012.timeindex.swap"), b"").unwrap();
    let log = open(&dir);
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    assert_eq!(read_all(&log, 0, 1 << 20), before);
}

#[test]
fn a_damaged_committed_swap_file_is_reported_not_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let end = prepare(&dir);
    let log = open(&dir);
    let mut cleaner = Cleaner::new(CleanerConfig::default()).unwrap();
    cleaner.inject_fault(Some(CleanFault::SwapCommitted));
    log.clean(end, T0, &mut cleaner).unwrap_err();
    drop(log);
    let swap = dir.join("00000000000000000000.log.swap");
    let mut bytes = std::fs::read(&swap).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&swap, &bytes).unwrap();
    match Log::open(&dir, config(), LogResources::new(8)) {
        Err(StorageError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, swap);
            assert!(reason.contains("swap"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
