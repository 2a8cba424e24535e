//! On-disk names, file headers and atomic file replacement.
//!
//! Every binary file the engine writes starts with an 8-byte header: a 4-byte magic naming the
//! file kind, a big-endian u16 format version and two reserved zero bytes. Text checkpoints start
//! with a version line. A file with a version this build does not know is refused, never guessed.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError, io_err};

/// Format version of every file this build writes.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the header at the start of every binary file.
pub const FILE_HEADER_LEN: u64 = 8;

/// The kinds of binary file, each with its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Segment data: record batches.
    Log,
    /// Sparse offset index: (relative offset u32, position u32).
    OffsetIndex,
    /// Sparse time index: (timestamp i64, relative offset u32).
    TimeIndex,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            Self::Log => b"TRBL",
            Self::OffsetIndex => b"TRBI",
            Self::TimeIndex => b"TRBT",
        }
    }

    /// File name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::OffsetIndex => "index",
            Self::TimeIndex => "timeindex",
        }
    }
}

/// The 8 header bytes of a file of `kind`.
pub fn file_header(kind: FileKind) -> [u8; FILE_HEADER_LEN as usize] {
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    header[..4].copy_from_slice(kind.magic());
    header[4..6].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    header
}

/// Checks the header of `file` (already open at `path`).
pub fn check_file_header(file: &File, path: &Path, kind: FileKind) -> Result<()> {
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0).map_err(|err| {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            StorageError::corrupt(path, 0, "file shorter than its 8-byte header")
        } else {
            StorageError::io("read the header of", path, err)
        }
    })?;
    if &header[..4] != kind.magic() {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "bad magic {:?}, expected {:?} ({} file)",
                String::from_utf8_lossy(&header[..4]),
                String::from_utf8_lossy(kind.magic()),
                kind.suffix()
            ),
        ));
    }
    let version = u16::from_be_bytes([header[4], header[5]]);
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: u32::from(version),
            supported: u32::from(FORMAT_VERSION),
        });
    }
    Ok(())
}

/// The record batches of the segment data file at `path`, read whole (its header checked and
/// stripped): for offline tools such as `tributary dump-log`, never for serving.
pub fn read_segment_file(path: &Path) -> Result<bytes::Bytes> {
    let file = File::open(path).map_err(io_err("open", path))?;
    check_file_header(&file, path, FileKind::Log)?;
    let mut data = fs::read(path).map_err(io_err("read", path))?;
    data.drain(..FILE_HEADER_LEN as usize);
    Ok(data.into())
}

/// Path of the `kind` file of the segment with `base_offset` in `dir` (Kafka's 20-digit names).
pub fn segment_path(dir: &Path, base_offset: i64, kind: FileKind) -> PathBuf {
    dir.join(format!("{base_offset:020}.{}", kind.suffix()))
}

/// Parses a segment data file name (`00000000000000001234.log`) into its base offset.
pub fn parse_segment_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Replaces `path` with `contents` atomically and durably: write a temporary file, fsync it,
/// rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(contents).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Creates `path` (truncating it) and writes the header of `kind`.
pub fn create_with_header(path: &Path, kind: FileKind) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all_at(&file_header(kind), 0)
        .map_err(io_err("write the header of", path))?;
    Ok(file)
}
