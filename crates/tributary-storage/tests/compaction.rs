//! Log compaction through the public API: what survives a clean, what never changes, tombstones,
//! idempotent producers, multi-pass cleaning with a small key map, merging, policies, the dirty
//! ratio and its checkpoint, and readers racing with the cleaner.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use common::{Env, Now, read_all};
use tributary_record::{BatchBuilder, BatchHeader, Compression, decode_records, verify_batch};
use tributary_storage::{
    CLEANER_CHECKPOINT_FILE, Cleaner, CleanerConfig, CleanupPolicy, Log, LogConfig, StorageError,
};

const T0: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn compacted() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        cleanup_policy: CleanupPolicy::Compact,
        ..LogConfig::default()
    }
}

fn cleaner() -> Cleaner {
    Cleaner::new(CleanerConfig::default()).unwrap()
}

/// One batch of `(key, value)` records; `None` is a tombstone.
fn keyed(entries: &[(&str, Option<&str>)], timestamp: i64) -> Bytes {
    keyed_with(entries, timestamp, Compression::None)
}

fn keyed_with(entries: &[(&str, Option<&str>)], timestamp: i64, codec: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(timestamp).compression(codec);
    for (i, (key, value)) in entries.iter().enumerate() {
        builder.push(
            timestamp + i as i64,
            Some(key.as_bytes()),
            value.map(str::as_bytes),
            &[],
        );
    }
    builder.build()
}

/// Every record in the log: offset -> (key, value).
fn records(log: &Log) -> BTreeMap<i64, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut last = -1;
    for batch in read_all(log, log.log_start_offset(), 1 << 20) {
        let header = verify_batch(&batch).expect("every batch verifies");
        assert!(header.base_offset > last, "batch offsets go backwards");
        last = header.last_offset();
        for record in decode_records(&batch).unwrap() {
            let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
            let value = record.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
            assert!(out.insert(record.offset, (key, value)).is_none());
        }
    }
    out
}

/// The latest value of every key.
fn latest(records: &BTreeMap<i64, (String, Option<String>)>) -> BTreeMap<String, Option<String>> {
    records.values().cloned().collect()
}

/// Fills a log with `rounds` rounds over `keys` keys, each round one batch, rolling every
/// `roll_every` batches; returns what was written, offset -> (key, value).
fn fill(
    log: &Log,
    keys: usize,
    rounds: usize,
    roll_every: usize,
) -> BTreeMap<i64, (String, Option<String>)> {
    let mut written = BTreeMap::new();
    for round in 0..rounds {
        let entries: Vec<(String, Option<String>)> = (0..keys)
            .map(|k| (format!("key-{k}"), Some(format!("value-{k}-round-{round}"))))
            .collect();
        let refs: Vec<(&str, Option<&str>)> = entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let info = log.append_as_leader(&keyed(&refs, T0), 1).unwrap();
        for (i, entry) in entries.into_iter().enumerate() {
            written.insert(info.first_offset + i as i64, entry);
        }
        if (round + 1) % roll_every == 0 {
            log.roll().unwrap();
        }
    }
    written
}

#[test]
fn compaction_keeps_the_latest_value_of_every_key() {
    let env = Env::new();
    let log = env.open(compacted());
    let written = fill(&log, 5, 40, 4);
    let before = log.segment_count();
    let end = log.log_end_offset();
    let outcome = log.clean(end, T0, &mut cleaner()).unwrap();
    assert_eq!(outcome.passes, 1);
    assert!(!outcome.aborted);
    assert!(outcome.records_removed > 0);
    let after = records(&log);
    // The latest value of every key is where it was written.
    assert_eq!(latest(&after), latest(&written));
    for (offset, record) in &after {
        assert_eq!(written.get(offset), Some(record), "offset {offset} changed");
    }
    // Below the active segment, one record per key remains.
    let active_base = *log.segment_base_offsets().last().unwrap();
    let cleaned: Vec<_> = after.range(..active_base).map(|(_, (k, _))| k).collect();
    let mut unique = cleaned.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        cleaned.len(),
        unique.len(),
        "duplicate keys below the active segment"
    );
    assert!(log.segment_count() < before, "small segments were merged");
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.first_dirty_offset(), active_base);
    // A second clean finds nothing to do.
    let again = log.clean(end, T0, &mut cleaner()).unwrap();
    assert_eq!(again.passes, 0);
    assert_eq!(records(&log), after);
    // And everything survives a reopen.
    log.close().unwrap();
    let log = env.open(compacted());
    assert_eq!(records(&log), after);
    assert_eq!(log.first_dirty_offset(), active_base);
}

#[test]
fn batch_headers_offsets_and_the_uncleanable_part_are_untouched() {
    let env = Env::new();
    let log = env.open(compacted());
    let mut producer_seq = 0;
    for round in 0..30 {
        let mut builder = BatchBuilder::new(T0 + round).producer(77, 3, producer_seq);
        for k in 0..4 {
            builder.push(
                T0 + round,
                Some(format!("k{k}").as_bytes()),
                Some(b"v"),
                &[],
            );
        }
        producer_seq += 4;
        log.append_as_leader(&builder.build(), 5 + (round as i32 / 10))
            .unwrap();
        if round % 3 == 2 {
            log.roll().unwrap();
        }
    }
    let before = read_all(&log, 0, 1 << 20);
    // Clean only below offset 60: everything from the segment holding it on stays as it is.
    let upper = 60;
    let stats = log.cleanable_stats(upper, T0);
    assert!(stats.first_uncleanable_offset <= upper);
    let untouched: Vec<Bytes> = before
        .iter()
        .filter(|b| BatchHeader::parse(b).unwrap().base_offset >= stats.first_uncleanable_offset)
        .cloned()
        .collect();
    let active = std::fs::read(log.dir().join(format!(
        "{:020}.log",
        log.segment_base_offsets().last().unwrap()
    )))
    .unwrap();
    let outcome = log.clean(upper, T0 + 100, &mut cleaner()).unwrap();
    assert!(outcome.records_removed > 0);
    assert_eq!(
        outcome.first_uncleanable_offset,
        stats.first_uncleanable_offset
    );
    let after = read_all(&log, 0, 1 << 20);
    let after_untouched: Vec<Bytes> = after
        .iter()
        .filter(|b| BatchHeader::parse(b).unwrap().base_offset >= stats.first_uncleanable_offset)
        .cloned()
        .collect();
    assert_eq!(after_untouched, untouched);
    let active_after = std::fs::read(log.dir().join(format!(
        "{:020}.log",
        log.segment_base_offsets().last().unwrap()
    )))
    .unwrap();
    assert_eq!(active_after, active, "the active segment is never touched");
    // Every rewritten batch keeps its place and its producer fields.
    let originals: BTreeMap<i64, BatchHeader> = before
        .iter()
        .map(|b| {
            let h = verify_batch(b).unwrap();
            (h.base_offset, h)
        })
        .collect();
    for batch in &after {
        let header = verify_batch(batch).unwrap();
        let original = originals[&header.base_offset];
        assert_eq!(header.last_offset_delta, original.last_offset_delta);
        assert_eq!(
            header.partition_leader_epoch,
            original.partition_leader_epoch
        );
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (
                original.producer_id,
                original.producer_epoch,
                original.base_sequence
            )
        );
    }
    // The producer's last batch below the upper bound is still there, and the segment ends.
    assert!(after.len() < before.len());
}

#[test]
fn policy_compact_alone_never_deletes_by_retention() {
    let env = Env::new();
    let config = LogConfig {
        retention_ms: 1,
        retention_bytes: 0,
        ..compacted()
    };
    let log = env.open(config.clone());
    fill(&log, 3, 12, 2);
    env.clock.advance(10 * DAY_MS);
    let end = log.log_end_offset();
    let segments = log.segment_count();
    assert_eq!(log.apply_retention(end).unwrap().segments, 0);
    assert_eq!(log.segment_count(), segments);
    // compact,delete: retention applies too.
    log.set_config(LogConfig {
        cleanup_policy: CleanupPolicy::CompactDelete,
        ..config
    })
    .unwrap();
    assert!(log.apply_retention(end).unwrap().segments > 0);
}

#[test]
fn tombstones_stay_for_delete_retention_after_the_first_clean_then_go() {
    let env = Env::new();
    let config = LogConfig {
        delete_retention_ms: 1_000,
        min_cleanable_dirty_ratio: 0.0,
        ..compacted()
    };
    let log = env.open(config);
    log.append_as_leader(&keyed(&[("a", Some("1")), ("b", Some("1"))], T0), 1)
        .unwrap();
    log.roll().unwrap();
    log.append_as_leader(&keyed(&[("a", None), ("c", Some("1"))], T0), 1)
        .unwrap();
    log.roll().unwrap();
    log.append_as_leader(&keyed(&[("c", Some("2"))], T0), 1)
        .unwrap();
    log.roll().unwrap();
    let end = log.log_end_offset();
    let now = T0 + 10_000;
    log.clean(end, now, &mut cleaner()).unwrap();
    let after = records(&log);
    // a's value is gone, its tombstone stays; b stays; c's first value is gone.
    assert_eq!(
        after.values().cloned().collect::<Vec<_>>(),
        vec![
            ("b".to_owned(), Some("1".to_owned())),
            ("a".to_owned(), None),
            ("c".to_owned(), Some("2".to_owned())),
        ]
    );
    // Record timestamps survive the delete horizon stamped on the tombstone's batch.
    let batches = read_all(&log, 0, 1 << 20);
    let tombstone_batch = batches
        .iter()
        .find(|b| verify_batch(b).unwrap().base_offset == 2)
        .unwrap();
    let header = verify_batch(tombstone_batch).unwrap();
    assert!(header.has_delete_horizon(), "delete horizon bit");
    assert_eq!(header.base_timestamp, now + 1_000);
    let decoded = decode_records(tombstone_batch).unwrap();
    assert_eq!(decoded[0].timestamp, T0);
    let stats = log.cleanable_stats(end, now + 999);
    assert!(!stats.needs_cleaning && !stats.tombstones_expired);
    // Not yet past the horizon: a clean keeps it.
    log.clean(end, now + 999, &mut cleaner()).unwrap();
    assert_eq!(records(&log).len(), 3);
    // Past it: the log needs cleaning although nothing is dirty, and the tombstone goes.
    let stats = log.cleanable_stats(end, now + 1_000);
    assert!(stats.tombstones_expired && stats.needs_cleaning);
    assert_eq!(stats.dirty_bytes, 0);
    let outcome = log.clean(end, now + 1_000, &mut cleaner()).unwrap();
    assert_eq!(outcome.tombstones_removed, 1);
    let after = records(&log);
    assert_eq!(
        after.values().cloned().collect::<Vec<_>>(),
        vec![
            ("b".to_owned(), Some("1".to_owned())),
            ("c".to_owned(), Some("2".to_owned())),
        ]
    );
    assert!(!log.cleanable_stats(end, now + 5_000).needs_cleaning);
    // A tombstone for a key whose value comes later is just an older record: it goes at once.
    log.append_as_leader(&keyed(&[("b", None)], T0), 1).unwrap();
    log.append_as_leader(&keyed(&[("b", Some("2"))], T0), 1)
        .unwrap();
    log.roll().unwrap();
    let end = log.log_end_offset();
    log.clean(end, now + 5_000, &mut cleaner()).unwrap();
    assert_eq!(latest(&records(&log)).get("b"), Some(&Some("2".to_owned())));
    assert!(records(&log).values().all(|(_, v)| v.is_some()));
}

#[test]
fn keyless_records_are_refused_on_compacted_logs_and_kept_by_the_cleaner() {
    let env = Env::new();
    let mut builder = BatchBuilder::new(T0).compression(Compression::Snappy);
    builder.push(T0, Some(b"k"), Some(b"v"), &[]);
    builder.push(T0, None, Some(b"no key"), &[]);
    let keyless = builder.build();
    // Written while the topic deletes...
    let log = env.open(LogConfig {
        cleanup_policy: CleanupPolicy::Delete,
        ..compacted()
    });
    log.append_as_leader(&keyless, 1).unwrap();
    log.append_as_leader(&keyed(&[("k", Some("v2"))], T0), 1)
        .unwrap();
    log.roll().unwrap();
    // ...then compacted.
    log.set_config(compacted()).unwrap();
    match log.append_as_leader(&keyless, 1) {
        Err(
            e @ StorageError::KeylessRecord {
                position: 0,
                record: 1,
                offset_delta: 1,
            },
        ) => {
            assert!(e.to_string().contains("has no key"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let end = log.log_end_offset();
    log.clean(end, T0, &mut cleaner()).unwrap();
    let batches = read_all(&log, 0, 1 << 20);
    let mut values = Vec::new();
    for batch in &batches {
        for record in decode_records(batch).unwrap() {
            values.push((record.offset, record.value.unwrap()));
        }
    }
    assert_eq!(
        values,
        vec![(1, Bytes::from("no key")), (2, Bytes::from("v2"))],
        "the keyless record stays, the superseded one goes"
    );
    assert_eq!(
        verify_batch(&batches[0]).unwrap().compression(),
        Compression::Snappy
    );
}

#[test]
fn an_idempotent_producers_last_batch_stays_as_an_empty_batch_until_it_expires() {
    let env = Env::new();
    let log = env.open(compacted());
    let mut sequence = 0;
    let mut produce = |log: &Log, pid: i64, value: &str| {
        let mut builder = BatchBuilder::new(T0).producer(pid, 0, sequence);
        builder.push(T0, Some(b"shared"), Some(value.as_bytes()), &[]);
        builder.push(T0, Some(b"shared"), Some(value.as_bytes()), &[]);
        sequence += 2;
        log.append_as_leader(&builder.build(), 1)
            .unwrap()
            .first_offset
    };
    let first = produce(&log, 1, "p1-a");
    let last_of_1 = produce(&log, 1, "p1-b");
    log.roll().unwrap();
    let last_of_2 = produce(&log, 2, "p2");
    log.roll().unwrap();
    produce(&log, 3, "p3");
    log.roll().unwrap();
    let end = log.log_end_offset();
    log.clean(end, T0 + 1_000, &mut cleaner()).unwrap();
    let headers: Vec<BatchHeader> = read_all(&log, 0, 1 << 20)
        .iter()
        .map(|b| verify_batch(b).unwrap())
        .collect();
    let bases: Vec<(i64, i64, i32)> = headers
        .iter()
        .map(|h| (h.base_offset, h.producer_id, h.record_count))
        .collect();
    // Producer 1's first batch goes; its last stays, emptied, with its last offset delta (so its
    // last sequence) intact; likewise producer 2's; producer 3's holds the latest record.
    assert!(!bases.iter().any(|b| b.0 == first));
    assert!(bases.contains(&(last_of_1, 1, 0)));
    assert!(bases.contains(&(last_of_2, 2, 0)));
    let emptied = headers.iter().find(|h| h.base_offset == last_of_1).unwrap();
    assert_eq!(emptied.last_offset_delta, 1);
    assert_eq!(emptied.base_sequence, 2);
    assert_eq!(records(&log).len(), 1);
    // After producer.id.expiration.ms, empty batches go (except a segment's last).
    let mut cleaner = Cleaner::new(CleanerConfig {
        producer_id_expiration_ms: 60_000,
        ..CleanerConfig::default()
    })
    .unwrap();
    log.append_as_leader(&keyed(&[("other", Some("x"))], T0), 1)
        .unwrap();
    log.roll().unwrap();
    let end = log.log_end_offset();
    log.clean(end, T0 + 120_000, &mut cleaner).unwrap();
    let remaining: Vec<i64> = read_all(&log, 0, 1 << 20)
        .iter()
        .map(|b| verify_batch(b).unwrap().producer_id)
        .collect();
    assert!(
        !remaining.contains(&1) && !remaining.contains(&2),
        "{remaining:?}"
    );
}

#[test]
fn a_small_key_map_cleans_in_several_passes() {
    let env = Env::new();
    let log = env.open(LogConfig {
        segment_bytes: 64 * 1024,
        ..compacted()
    });
    let written = fill(&log, 100, 12, 3);
    let end = log.log_end_offset();
    let mut small = Cleaner::new(CleanerConfig {
        dedupe_buffer_bytes: 1024,
        ..CleanerConfig::default()
    })
    .unwrap();
    assert!(small.map_capacity() < 100);
    let outcome = log.clean(end, T0, &mut small).unwrap();
    assert!(outcome.passes > 2, "{outcome:?}");
    let after = records(&log);
    assert_eq!(latest(&after), latest(&written));
    assert_eq!(after.len(), 100, "one record per key");
    assert_eq!(outcome.first_dirty_offset, log.first_dirty_offset());
    // A big map finds the same log.
    let reference = Env::new();
    let other = reference.open(LogConfig {
        segment_bytes: 64 * 1024,
        ..compacted()
    });
    fill(&other, 100, 12, 3);
    other.clean(end, T0, &mut cleaner()).unwrap();
    assert_eq!(records(&other), after);
}

#[test]
fn compressed_batches_keep_their_codec_and_control_batches_their_bytes() {
    let env = Env::new();
    let log = env.open(compacted());
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs {
        log.append_as_leader(
            &keyed_with(
                &[("a", Some("x")), (&format!("only-{codec}"), Some("y"))],
                T0,
                codec,
            ),
            1,
        )
        .unwrap();
    }
    // A control batch (transaction marker shape: attributes bit 5).
    let mut control = keyed(&[("marker", Some("commit"))], T0).to_vec();
    control[22] |= 0x20;
    let crc = tributary_record::crc32c(&control[21..]);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    let control_offset = log
        .append_as_leader(&control.into(), 1)
        .unwrap()
        .first_offset;
    log.append_as_leader(&keyed(&[("a", Some("last"))], T0), 1)
        .unwrap();
    log.roll().unwrap();
    let before: BTreeMap<i64, Bytes> = read_all(&log, 0, 1 << 20)
        .into_iter()
        .map(|b| (verify_batch(&b).unwrap().base_offset, b))
        .collect();
    log.clean(log.log_end_offset(), T0, &mut cleaner()).unwrap();
    let after: BTreeMap<i64, Bytes> = read_all(&log, 0, 1 << 20)
        .into_iter()
        .map(|b| (verify_batch(&b).unwrap().base_offset, b))
        .collect();
    for (i, codec) in codecs.into_iter().enumerate() {
        let batch = &after[&(2 * i as i64)];
        let header = verify_batch(batch).unwrap();
        assert_eq!(header.compression(), codec);
        let records = decode_records(batch).unwrap();
        assert_eq!(records.len(), 1, "{codec}: only the unique key stays");
        assert_eq!(records[0].offset, 2 * i as i64 + 1);
    }
    assert_eq!(after[&control_offset], before[&control_offset]);
}

#[test]
fn dirty_ratio_decides_and_the_checkpoint_follows_truncation() {
    let env = Env::new();
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.5,
        ..compacted()
    };
    let log = env.open(config.clone());
    fill(&log, 20, 9, 3);
    let end = log.log_end_offset();
    // Nothing below the upper bound's segment: nothing cleanable.
    let none = log.cleanable_stats(0, T0);
    assert_eq!((none.clean_bytes, none.dirty_bytes), (0, 0));
    assert!(!none.needs_cleaning);
    let stats = log.cleanable_stats(end, T0);
    assert_eq!(stats.dirty_ratio, 1.0);
    assert!(stats.needs_cleaning);
    assert_eq!(log.dirty_ratio(end, T0), 1.0);
    log.clean(end, T0, &mut cleaner()).unwrap();
    assert!(!log.needs_cleaning(end, T0));
    assert_eq!(log.dirty_ratio(end, T0), 0.0);
    let first_dirty = log.first_dirty_offset();
    let text = std::fs::read_to_string(log.dir().join(CLEANER_CHECKPOINT_FILE)).unwrap();
    assert!(
        text.contains(&format!("first-dirty-offset {first_dirty}")),
        "{text}"
    );
    // A little new dirty data is below the ratio, a lot is above.
    fill(&log, 4, 1, 1);
    let end = log.log_end_offset();
    let stats = log.cleanable_stats(end, T0);
    assert!(
        stats.dirty_ratio > 0.0 && stats.dirty_ratio < 0.5,
        "{stats:?}"
    );
    assert!(!stats.needs_cleaning);
    fill(&log, 4, 6, 1);
    let end = log.log_end_offset();
    assert!(log.needs_cleaning(end, T0));
    // max.compaction.lag.ms forces a clean of old dirty data whatever the ratio.
    log.clean(end, T0, &mut cleaner()).unwrap();
    fill(&log, 4, 1, 1);
    let end = log.log_end_offset();
    assert!(!log.needs_cleaning(end, env.clock.now()));
    log.set_config(LogConfig {
        max_compaction_lag_ms: 1_000,
        ..config.clone()
    })
    .unwrap();
    env.clock.advance(2_000);
    let stats = log.cleanable_stats(end, env.clock.now());
    assert!(
        stats.compaction_lag_exceeded && stats.needs_cleaning,
        "{stats:?}"
    );
    // A truncation below the first dirty offset moves it back (the data after it is new).
    log.clean(end, env.clock.now(), &mut cleaner()).unwrap();
    let first_dirty = log.first_dirty_offset();
    log.truncate_to(first_dirty - 3).unwrap();
    assert!(log.first_dirty_offset() <= first_dirty - 3);
    log.close().unwrap();
    let log = env.open(config);
    assert!(log.first_dirty_offset() <= first_dirty - 3);
    // A policy without compact never needs cleaning, and `clean` does nothing.
    log.set_config(LogConfig {
        cleanup_policy: CleanupPolicy::Delete,
        ..compacted()
    })
    .unwrap();
    fill(&log, 4, 6, 1);
    let end = log.log_end_offset();
    assert!(!log.needs_cleaning(end, T0));
    assert_eq!(log.clean(end, T0, &mut cleaner()).unwrap().passes, 0);
}

#[test]
fn min_compaction_lag_holds_young_segments_back_and_max_lag_rolls() {
    let env = Env::new();
    let log = env.open(LogConfig {
        min_compaction_lag_ms: 60_000,
        max_compaction_lag_ms: 120_000,
        ..compacted()
    });
    let now = env.clock.now();
    for round in 0..6 {
        // Segments whose newest record is 100 s, 100 s, 100 s, 10 s, 10 s, 10 s old.
        let age = if round < 3 { 100_000 } else { 10_000 };
        log.append_as_leader(&keyed(&[("k", Some(&round.to_string()))], now - age), 1)
            .unwrap();
        log.roll().unwrap();
    }
    let end = log.log_end_offset();
    let stats = log.cleanable_stats(end, now);
    assert_eq!(stats.first_uncleanable_offset, 3);
    log.clean(end, now, &mut cleaner()).unwrap();
    let after = records(&log);
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    // The active segment of a compacted log rolls at max.compaction.lag.ms.
    log.append_as_leader(&keyed(&[("k", Some("x"))], now), 1)
        .unwrap();
    let segments = log.segment_count();
    env.clock.advance(120_001);
    log.append_as_leader(&keyed(&[("k", Some("y"))], now), 1)
        .unwrap();
    assert_eq!(log.segment_count(), segments + 1);
}

#[test]
fn readers_racing_with_the_cleaner_see_whole_batches_and_the_written_records() {
    let env = Env::new();
    let log = Arc::new(env.open(LogConfig {
        segment_bytes: 2048,
        ..compacted()
    }));
    // A record's value names its offset: whatever a read returns must match it.
    let value_for = |offset: i64| format!("value-at-{offset}");
    let append = |log: &Log, keys: std::ops::Range<usize>| {
        let first = log.log_end_offset();
        let entries: Vec<(String, String)> = keys
            .enumerate()
            .map(|(i, k)| (format!("key-{k}"), value_for(first + i as i64)))
            .collect();
        let refs: Vec<(&str, Option<&str>)> = entries
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        let info = log.append_as_leader(&keyed(&refs, T0), 1).unwrap();
        assert_eq!(info.first_offset, first);
    };
    for round in 0..40 {
        append(&log, (round % 7)..(round % 7 + 5));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut offset = log.log_start_offset();
                    let end = log.log_end_offset();
                    while offset < end {
                        let result = log.read(offset, 3000, None, true).unwrap();
                        let mut last = offset - 1;
                        for item in tributary_record::Batches::new(&result.records) {
                            let (header, at, bytes) = item.expect("a whole, valid batch");
                            assert!(header.base_offset > last || header.last_offset() >= offset);
                            last = header.last_offset();
                            let batch = result.records.slice(at..at + bytes.len());
                            for record in decode_records(&batch).unwrap() {
                                assert_eq!(
                                    record.value.unwrap(),
                                    Bytes::from(format!("value-at-{}", record.offset))
                                );
                            }
                        }
                        assert!(result.next_offset > offset);
                        offset = result.next_offset;
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let mut cleaner = cleaner();
    for round in 40..200 {
        append(&log, (round % 7)..(round % 7 + 5));
        if round % 20 == 0 {
            let end = log.log_end_offset();
            let outcome = log.clean(end, T0, &mut cleaner).unwrap();
            assert!(!outcome.aborted);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    let after = records(&log);
    for (offset, (_, value)) in &after {
        assert_eq!(value.as_deref(), Some(value_for(*offset).as_str()));
    }
}

#[test]
fn close_and_delete_stop_a_clean_and_cleaning_a_closed_log_fails() {
    let env = Env::new();
    let log = Arc::new(env.open(LogConfig {
        segment_bytes: 1 << 20,
        ..compacted()
    }));
    for _ in 0..4 {
        fill(&log, 500, 10, 10);
    }
    let end = log.log_end_offset();
    let cleaning = {
        let log = log.clone();
        std::thread::spawn(move || log.clean(end, T0, &mut cleaner()))
    };
    log.close().unwrap();
    match cleaning.join().unwrap() {
        Ok(outcome) => assert!(outcome.aborted || outcome.passes > 0),
        Err(StorageError::Closed { .. }) => {}
        Err(other) => panic!("{other}"),
    }
    assert!(matches!(
        log.clean(end, T0, &mut cleaner()),
        Err(StorageError::Closed { .. })
    ));
    // No cleaner file is left behind, and the log reopens whole.
    let leftovers: Vec<_> = std::fs::read_dir(log.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let log = env.open(compacted());
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(latest(&records(&log)).len(), 500);
}

#[test]
fn cleaned_segments_have_the_indexes_a_rebuild_would_give() {
    let env = Env::new();
    let config = LogConfig {
        index_interval_bytes: 64,
        ..compacted()
    };
    let log = env.open(config.clone());
    // Each key is written by two rounds: the latest records spread over many batches.
    for round in 0..60 {
        let keys: Vec<String> = (round * 3..round * 3 + 5)
            .map(|k| format!("k{k}"))
            .collect();
        let refs: Vec<(&str, Option<&str>)> =
            keys.iter().map(|k| (k.as_str(), Some("v"))).collect();
        log.append_as_leader(&keyed(&refs, T0 + round as i64), 1)
            .unwrap();
        if round % 5 == 4 {
            log.roll().unwrap();
        }
    }
    log.clean(log.log_end_offset(), T0, &mut cleaner()).unwrap();
    let dir = log.dir().to_path_buf();
    let bases = log.segment_base_offsets();
    log.close().unwrap();
    let read_indexes = || -> Vec<(Vec<u8>, Vec<u8>)> {
        bases[..bases.len() - 1]
            .iter()
            .map(|base| {
                (
                    std::fs::read(dir.join(format!("{base:020}.index"))).unwrap(),
                    std::fs::read(dir.join(format!("{base:020}.timeindex"))).unwrap(),
                )
            })
            .collect()
    };
    let written = read_indexes();
    assert!(
        written.iter().any(|(index, _)| index.len() > 8),
        "some index entries"
    );
    // Without index files, the open rebuilds them from the data.
    for base in &bases[..bases.len() - 1] {
        std::fs::remove_file(dir.join(format!("{base:020}.index"))).unwrap();
        std::fs::remove_file(dir.join(format!("{base:020}.timeindex"))).unwrap();
    }
    let log = env.open(config);
    let offsets: Vec<i64> = records(&log).keys().copied().collect();
    log.close().unwrap();
    assert_eq!(read_indexes(), written);
    // Every remaining offset is found by a read at it.
    let log = env.open(compacted());
    for offset in offsets {
        let result = log.read(offset, 1, None, true).unwrap();
        let first = decode_records(&result.records).unwrap();
        assert!(first.iter().any(|r| r.offset == offset), "offset {offset}");
    }
}
