//! `tributary dump-log`: the record batches of segment files, as `kafka-dump-log.sh` prints
//! them (same flags, same line layout), read offline from a broker's data directory.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use tributary_record::{BatchHeader, Batches, TimestampType, decode_records};

/// `kafka-dump-log`'s flags.
#[derive(Debug, Args)]
pub struct DumpLogArgs {
    /// Segment data files to dump (`<partition dir>/<base offset>.log`), comma-separated.
    #[arg(
        long,
        value_name = "FILE[,FILE...]",
        value_delimiter = ',',
        required = true
    )]
    files: Vec<PathBuf>,
    /// Also print every record: offset, timestamp, key and value sizes, sequence, payload.
    #[arg(long)]
    print_data_log: bool,
}

/// Dumps every file; a file that cannot be read or holds a corrupt batch is reported on
/// stderr after what could be read of it, and the exit is non-zero.
pub fn run(args: &DumpLogArgs) -> Result<(), String> {
    let mut failures = Vec::new();
    for path in &args.files {
        println!("Dumping {}", path.display());
        let data = match tributary_storage::read_segment_file(path) {
            Ok(data) => data,
            Err(err) => {
                failures.push(err.to_string());
                continue;
            }
        };
        let mut out = String::new();
        let mut batches = Batches::new(&data);
        let mut first = true;
        for item in &mut batches {
            let (header, position, bytes) = match item {
                Ok(item) => item,
                Err(err) => {
                    failures.push(format!(
                        "{}: corrupt batch at position {}: {err}",
                        path.display(),
                        file_position(batches.position())
                    ));
                    break;
                }
            };
            if first {
                println!("Log starting offset: {}", header.base_offset);
                first = false;
            }
            out.clear();
            batch_line(&mut out, &header, file_position(position), bytes.len());
            if args.print_data_log {
                records_lines(&mut out, &header, &data.slice_ref(bytes));
            }
            print!("{out}");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// A position in the batches as a position in the file (as the offset index records it).
fn file_position(in_batches: usize) -> u64 {
    in_batches as u64 + tributary_storage::FILE_HEADER_LEN
}

fn timestamp_name(header: &BatchHeader) -> &'static str {
    match header.timestamp_type() {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

fn batch_line(out: &mut String, h: &BatchHeader, position: u64, size: usize) {
    let _ = writeln!(
        out,
        "baseOffset: {} lastOffset: {} count: {} baseSequence: {} lastSequence: {} \
         producerId: {} producerEpoch: {} partitionLeaderEpoch: {} isTransactional: {} \
         isControl: {} position: {position} {}: {} size: {size} magic: 2 compresscodec: {} \
         crc: {} isvalid: true",
        h.base_offset,
        h.last_offset(),
        h.record_count,
        h.base_sequence,
        h.last_sequence(),
        h.producer_id,
        h.producer_epoch,
        h.partition_leader_epoch,
        h.is_transactional(),
        h.is_control(),
        timestamp_name(h),
        h.max_timestamp,
        h.compression(),
        h.crc,
    );
}

fn records_lines(out: &mut String, h: &BatchHeader, batch: &bytes::Bytes) {
    let records = match decode_records(batch) {
        Ok(records) => records,
        Err(err) => {
            let _ = writeln!(out, "| cannot decode the records: {err}");
            return;
        }
    };
    for r in &records {
        let sequence = h.sequence_at(i32::try_from(r.offset - h.base_offset).unwrap_or(-1));
        let keys: Vec<&str> = r.headers.iter().map(|x| x.key.as_str()).collect();
        let _ = write!(
            out,
            "| offset: {} {}: {} keySize: {} valueSize: {} sequence: {sequence} headerKeys: [{}]",
            r.offset,
            timestamp_name(h),
            r.timestamp,
            r.key.as_ref().map_or(-1, |k| k.len() as i64),
            r.value.as_ref().map_or(-1, |v| v.len() as i64),
            keys.join(","),
        );
        if let Some(key) = &r.key {
            let _ = write!(out, " key: {}", String::from_utf8_lossy(key));
        }
        match &r.value {
            Some(value) => {
                let _ = writeln!(out, " payload: {}", String::from_utf8_lossy(value));
            }
            None => out.push('\n'),
        }
    }
}
