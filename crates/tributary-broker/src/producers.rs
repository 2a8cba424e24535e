//! Idempotent producers: per partition, the last five batches' sequence ranges of every
//! producer id, so a retried batch gets its original offsets back, a gap in sequence numbers is
//! refused (OUT_OF_ORDER_SEQUENCE_NUMBER) and an older producer epoch is fenced.
//!
//! The state is kept on the leader and on every follower as it appends, snapshotted into the
//! partition directory (`<offset>.snapshot`, the state of every batch below `offset`) when a
//! segment rolls and at a clean close, and rebuilt on open from the newest snapshot plus the
//! batches after it: never by scanning the whole log while a snapshot exists.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use tributary_proto::common::v1::ErrorCode;
use tributary_record::{BatchHeader, Batches, NO_PRODUCER_ID};
use tributary_storage::Log;

use crate::api::PartitionError;

/// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound).
pub const BATCHES_KEPT: usize = 5;
const SNAPSHOT_SUFFIX: &str = ".snapshot";
const SNAPSHOT_HEADER: &str = "tributary-producer-snapshot 2";
/// Snapshots kept per partition.
const SNAPSHOTS_KEPT: usize = 2;

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRange {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
}

/// One producer id's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerEntry {
    /// Its current epoch.
    pub epoch: i16,
    /// The newest batch timestamp seen (for `producer.id.expiration.ms`).
    pub last_timestamp: i64,
    /// Its last batches, oldest first.
    pub batches: VecDeque<BatchRange>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// A retry of a batch already in the log, at these offsets.
    Duplicate(BatchRange),
}

/// The producer state of one partition.
#[derive(Debug)]
pub struct ProducerState {
    dir: PathBuf,
    producers: HashMap<i64, ProducerEntry>,
    /// The last segment base offset a snapshot was taken at (to notice rolls).
    last_roll: i64,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerState {
    /// The state of `log` (in `dir`): the newest snapshot at or below the log end, then every
    /// batch after it. Snapshots above the log end (a truncated tail) are removed.
    pub fn load(dir: &Path, log: &Log) -> Self {
        let leo = log.log_end_offset();
        let mut state = Self {
            dir: dir.to_path_buf(),
            producers: HashMap::new(),
            last_roll: log.segment_base_offsets().last().copied().unwrap_or(0),
        };
        let mut from = log.log_start_offset();
        let mut snapshots = state.snapshots();
        snapshots.sort_unstable();
        for &offset in snapshots.iter().rev() {
            if offset > leo || offset < log.log_start_offset() {
                let _ = std::fs::remove_file(state.snapshot_path(offset));
                continue;
            }
            match state.read_snapshot(offset) {
                Ok(producers) => {
                    state.producers = producers;
                    from = offset.max(log.log_start_offset());
                    break;
                }
                Err(why) => {
                    tracing::warn!(dir = %dir.display(), offset, why, "ignoring a damaged producer snapshot");
                }
            }
        }
        state.replay(log, from, leo);
        state
    }

    fn replay(&mut self, log: &Log, mut from: i64, to: i64) {
        while from < to {
            let read = match log.read(from, 1 << 20, Some(to), true) {
                Ok(read) => read,
                Err(err) => {
                    tracing::error!(dir = %self.dir.display(), from, error = %err, "cannot replay producer state");
                    return;
                }
            };
            if read.records.is_empty() {
                break;
            }
            self.observe(&read.records);
            from = read.next_offset;
        }
    }

    /// Forgets producers whose newest batch is older than `expiration_ms` before `now_ms`
    /// (Kafka's `producer.id.expiration.ms`); returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    /// Removes every snapshot (the log restarted elsewhere: they describe another history).
    pub fn remove_snapshots(&mut self) {
        for offset in self.snapshots() {
            let _ = std::fs::remove_file(self.snapshot_path(offset));
        }
    }

    /// Rebuilds the state after the log was truncated.
    pub fn reload(&mut self, log: &Log) {
        *self = Self::load(&self.dir, log);
        tracing::info!(
            dir = %self.dir.display(),
            log_end_offset = log.log_end_offset(),
            producers = self.producers.len(),
            last_batch_offset = self.last_batch_offset(),
            "reloaded the producer state"
        );
    }

    /// How many producer ids have state here.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The last offset of the newest batch any producer id is known by (-1 with none): right
    /// after the log's last idempotent batch, a check that nothing was missed.
    pub fn last_batch_offset(&self) -> i64 {
        self.producers
            .values()
            .filter_map(|e| e.batches.back())
            .map(|b| b.last_offset)
            .max()
            .unwrap_or(-1)
    }

    /// Whether the state holds the batch `header` describes (appended: offsets assigned).
    /// Batches without a producer id and control batches are not tracked: always true.
    pub fn holds(&self, header: &BatchHeader) -> bool {
        if header.producer_id == NO_PRODUCER_ID || header.is_control() {
            return true;
        }
        self.producers.get(&header.producer_id).is_some_and(|e| {
            e.epoch == header.producer_epoch
                && e.batches.iter().any(|b| {
                    b.first_offset == header.base_offset && b.first_seq == header.base_sequence
                })
        })
    }

    /// The entry of `producer_id`, if known.
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks each idempotent batch of `records` (not yet appended, offsets unassigned) in
    /// order, as if the previous ones were appended. A duplicate is only accepted as the sole
    /// batch of the append (Kafka's producers send one batch per partition per request).
    pub fn check(&self, records: &[u8]) -> Result<Verdict, PartitionError> {
        let mut scratch: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut count = 0;
        for item in Batches::new(records) {
            let Ok((header, _, _)) = item else {
                return Ok(Verdict::Append); // the log's own validation reports it
            };
            count += 1;
            if header.producer_id == NO_PRODUCER_ID {
                continue;
            }
            let entry = scratch.entry(header.producer_id).or_insert_with(|| {
                self.producers
                    .get(&header.producer_id)
                    .cloned()
                    .unwrap_or_default()
            });
            let known =
                self.producers.contains_key(&header.producer_id) || !entry.batches.is_empty();
            if !known && header.base_sequence != 0 {
                // Legitimate after producer.id.expiration.ms, or for a producer whose earlier
                // batches were deleted; anything else means lost state, and a retry accepted
                // here would be appended twice: worth a line in the log.
                tracing::info!(
                    dir = %self.dir.display(),
                    producer_id = header.producer_id,
                    producer_epoch = header.producer_epoch,
                    base_sequence = header.base_sequence,
                    "no state for this producer id; accepting its batch at any sequence (KIP-360)"
                );
            }
            match check_one(entry, known, &header)? {
                Verdict::Duplicate(range) => {
                    if count == 1 && Batches::new(records).count() == 1 {
                        return Ok(Verdict::Duplicate(range));
                    }
                    return Err(PartitionError::new(
                        ErrorCode::DuplicateSequenceNumber,
                        format!(
                            "producer {} sent batch {}..{} again inside a larger append",
                            header.producer_id, range.first_seq, range.last_seq
                        ),
                    ));
                }
                Verdict::Append => {
                    remember(entry, &header, -1);
                }
            }
        }
        Ok(Verdict::Append)
    }

    /// Observes the batches the log holds from `from` to its end: after an append that failed
    /// part-way (a later group or a flush failed after earlier batches were written), the
    /// state must still know every batch the log holds, or a retry of one would be appended
    /// again.
    pub fn catch_up(&mut self, log: &Log, from: i64) {
        let to = log.log_end_offset();
        if to > from {
            tracing::warn!(
                dir = %self.dir.display(),
                from,
                to,
                "a failed append left batches in the log; the producer state observes them"
            );
            self.replay(log, from, to);
        }
    }

    /// Records the batches of `records` (appended, offsets assigned).
    pub fn observe(&mut self, records: &[u8]) {
        for (header, _, _) in Batches::new(records).flatten() {
            self.observe_header(&header);
        }
    }

    /// Records appended batches by their headers (offsets assigned).
    pub fn observe_headers<'a>(&mut self, headers: impl IntoIterator<Item = &'a BatchHeader>) {
        for header in headers {
            self.observe_header(header);
        }
    }

    fn observe_header(&mut self, header: &BatchHeader) {
        if header.producer_id == NO_PRODUCER_ID || header.is_control() {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        remember(entry, header, header.base_offset);
    }

    /// Snapshots the state at `offset` (everything below it observed) if the active segment
    /// changed since the last snapshot, or unconditionally with `force` (clean close).
    pub fn maybe_snapshot(&mut self, log: &Log, force: bool) {
        let active = log.segment_base_offsets().last().copied().unwrap_or(0);
        if !force && active == self.last_roll {
            return;
        }
        self.last_roll = active;
        let offset = log.log_end_offset();
        if let Err(err) = self.write_snapshot(offset) {
            tracing::error!(dir = %self.dir.display(), offset, error = %err, "writing a producer snapshot failed");
        }
    }

    fn snapshot_path(&self, offset: i64) -> PathBuf {
        self.dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
    }

    fn snapshots(&self) -> Vec<i64> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(SNAPSHOT_SUFFIX)?.parse().ok()
            })
            .collect()
    }

    fn write_snapshot(&self, offset: i64) -> std::io::Result<()> {
        let mut text = format!("{SNAPSHOT_HEADER}\n{offset}\n");
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let e = &self.producers[id];
            text.push_str(&format!(
                "{id} {} {} {}",
                e.epoch,
                e.last_timestamp,
                e.batches.len()
            ));
            for b in &e.batches {
                text.push_str(&format!(
                    " {} {} {} {}",
                    b.first_seq, b.last_seq, b.first_offset, b.last_offset
                ));
            }
            text.push('\n');
        }
        text.push_str(&format!(
            "crc32c {:08x}\n",
            tributary_record::crc32c(text.as_bytes())
        ));
        let path = self.snapshot_path(offset);
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        let mut all = self.snapshots();
        all.sort_unstable();
        for old in all.iter().rev().skip(SNAPSHOTS_KEPT) {
            let _ = std::fs::remove_file(self.snapshot_path(*old));
        }
        Ok(())
    }

    fn read_snapshot(&self, offset: i64) -> Result<HashMap<i64, ProducerEntry>, String> {
        let text =
            std::fs::read_to_string(self.snapshot_path(offset)).map_err(|e| e.to_string())?;
        let body_end = text
            .rfind("crc32c ")
            .ok_or_else(|| "no checksum line".to_owned())?;
        let (body, sum) = text.split_at(body_end);
        let expected = u32::from_str_radix(sum.trim_start_matches("crc32c ").trim(), 16)
            .map_err(|e| e.to_string())?;
        if tributary_record::crc32c(body.as_bytes()) != expected {
            return Err("checksum mismatch".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(SNAPSHOT_HEADER) {
            return Err("unknown format".into());
        }
        if lines.next().and_then(|l| l.parse::<i64>().ok()) != Some(offset) {
            return Err("offset does not match the file name".into());
        }
        let mut producers = HashMap::new();
        for line in lines {
            let nums: Vec<i64> = line
                .split_whitespace()
                .map(|n| n.parse::<i64>().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            let [id, epoch, last_timestamp, n, rest @ ..] = nums.as_slice() else {
                return Err(format!("bad line `{line}`"));
            };
            if *n < 0 || rest.len() as i64 != n.saturating_mul(4) {
                return Err(format!("bad line `{line}`"));
            }
            let batches = rest
                .chunks(4)
                .map(|c| BatchRange {
                    first_seq: c[0] as i32,
                    last_seq: c[1] as i32,
                    first_offset: c[2],
                    last_offset: c[3],
                })
                .collect();
            producers.insert(
                *id,
                ProducerEntry {
                    epoch: *epoch as i16,
                    last_timestamp: *last_timestamp,
                    batches,
                },
            );
        }
        Ok(producers)
    }
}

/// Kafka's sequence rules for one batch against its producer's entry.
fn check_one(
    entry: &ProducerEntry,
    known: bool,
    header: &BatchHeader,
) -> Result<Verdict, PartitionError> {
    let pid = header.producer_id;
    let first = header.base_sequence;
    let last = header.last_sequence();
    if known && header.producer_epoch < entry.epoch {
        return Err(PartitionError::new(
            ErrorCode::InvalidProducerEpoch,
            format!(
                "producer {pid} epoch {} is older than its current epoch {}",
                header.producer_epoch, entry.epoch
            ),
        ));
    }
    if !known {
        // No state for it (new, or expired by producer.id.expiration.ms): Kafka (KIP-360)
        // accepts any sequence and tracks the producer from here.
        return Ok(Verdict::Append);
    }
    if header.producer_epoch > entry.epoch {
        // A new epoch of a known producer: its sequences start at 0.
        if first != 0 {
            return Err(PartitionError::new(
                ErrorCode::OutOfOrderSequenceNumber,
                format!(
                    "producer {pid} epoch {} must start at sequence 0, got {first}",
                    header.producer_epoch
                ),
            ));
        }
        return Ok(Verdict::Append);
    }
    if let Some(range) = entry
        .batches
        .iter()
        .find(|b| b.first_seq == first && b.last_seq == last)
    {
        return Ok(Verdict::Duplicate(*range));
    }
    let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
    if first != expected {
        return Err(PartitionError::new(
            ErrorCode::OutOfOrderSequenceNumber,
            format!(
                "producer {pid} epoch {}: expected sequence {expected}, got {first}",
                header.producer_epoch
            ),
        ));
    }
    Ok(Verdict::Append)
}

fn remember(entry: &mut ProducerEntry, header: &BatchHeader, base_offset: i64) {
    entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
    if header.producer_epoch != entry.epoch {
        entry.epoch = header.producer_epoch;
        entry.batches.clear();
    }
    entry.batches.push_back(BatchRange {
        first_seq: header.base_sequence,
        last_seq: header.last_sequence(),
        first_offset: base_offset,
        last_offset: base_offset + i64::from(header.last_offset_delta),
    });
    while entry.batches.len() > BATCHES_KEPT {
        entry.batches.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_storage::{LogConfig, LogResources};

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> bytes::Bytes {
        let mut b = tributary_record::BatchBuilder::new(0).producer(pid, epoch, seq);
        for i in 0..n {
            b.push(0, None, Some(format!("{seq}-{i}").as_bytes()), &[]);
        }
        b.build()
    }

    fn append(
        log: &Log,
        state: &mut ProducerState,
        records: &bytes::Bytes,
    ) -> Result<i64, PartitionError> {
        match state.check(records)? {
            Verdict::Duplicate(range) => Ok(range.first_offset),
            Verdict::Append => {
                let info = log.append_as_leader(records, 0).unwrap();
                state.observe_headers(info.headers());
                Ok(info.first_offset)
            }
        }
    }

    #[test]
    fn sequences_dedupe_order_and_fence() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path(), LogConfig::default(), LogResources::new(8)).unwrap();
        let mut state = ProducerState::load(tmp.path(), &log);
        assert_eq!(append(&log, &mut state, &batch(7, 0, 0, 3)), Ok(0));
        assert_eq!(append(&log, &mut state, &batch(7, 0, 3, 2)), Ok(3));
        // A retry gets its original offsets; nothing is appended.
        assert_eq!(append(&log, &mut state, &batch(7, 0, 0, 3)), Ok(0));
        assert_eq!(log.log_end_offset(), 5);
        // A gap is refused.
        let err = append(&log, &mut state, &batch(7, 0, 9, 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::OutOfOrderSequenceNumber);
        // An unknown producer (new, or expired) is accepted at any sequence (KIP-360).
        assert_eq!(append(&log, &mut state, &batch(8, 0, 4, 1)), Ok(5));
        let err = append(&log, &mut state, &batch(8, 1, 3, 1)).unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::OutOfOrderSequenceNumber,
            "a new epoch starts at 0"
        );
        // A new epoch restarts at 0 and fences the old one.
        assert_eq!(append(&log, &mut state, &batch(7, 1, 0, 1)), Ok(6));
        let err = append(&log, &mut state, &batch(7, 0, 5, 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidProducerEpoch);
        // Only the last five batches are remembered.
        for seq in 1..=6 {
            append(&log, &mut state, &batch(7, 1, seq, 1)).unwrap();
        }
        assert_eq!(state.entry(7).unwrap().batches.len(), BATCHES_KEPT);
        assert_eq!(
            state.entry(7).unwrap().batches.front().unwrap().first_seq,
            2
        );
    }

    #[test]
    fn idle_producers_expire() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path(), LogConfig::default(), LogResources::new(8)).unwrap();
        let mut state = ProducerState::load(tmp.path(), &log);
        append(&log, &mut state, &batch(1, 0, 0, 1)).unwrap();
        assert_eq!(state.entry(1).unwrap().last_timestamp, 0);
        assert_eq!(state.expire(1_000, 86_400_000), 0);
        assert_eq!(state.expire(86_400_000, 86_400_000), 1);
        assert!(state.entry(1).is_none());
    }

    #[test]
    fn snapshots_plus_tail_rebuild_the_state_and_truncation_reloads_it() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path(), LogConfig::default(), LogResources::new(8)).unwrap();
        let mut state = ProducerState::load(tmp.path(), &log);
        append(&log, &mut state, &batch(1, 0, 0, 2)).unwrap();
        state.maybe_snapshot(&log, true);
        append(&log, &mut state, &batch(1, 0, 2, 2)).unwrap();
        append(&log, &mut state, &batch(2, 0, 0, 1)).unwrap();
        let before = state.producers.clone();
        let loaded = ProducerState::load(tmp.path(), &log);
        assert_eq!(loaded.producers, before, "snapshot at 2 plus the tail");
        // Truncation to 2 forgets what came after.
        log.truncate_to(2).unwrap();
        state.reload(&log);
        assert_eq!(state.entry(1).unwrap().batches.len(), 1);
        assert!(state.entry(2).is_none());
        // A damaged snapshot is ignored (full replay).
        let snap = tmp.path().join(format!("{:020}{SNAPSHOT_SUFFIX}", 2));
        std::fs::write(
            &snap,
            "tributary-producer-snapshot 2\n2\n1 0 0 1 0 1 0 1\ncrc32c 00000000\n",
        )
        .unwrap();
        let loaded = ProducerState::load(tmp.path(), &log);
        assert_eq!(loaded.entry(1).unwrap().batches.len(), 1);
    }
}
