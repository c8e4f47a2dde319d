//! A segment file: the record format, and scanning a segment to validate it.
//!
//! ```text
//! header  b"HMQSEG01"
//! record  payload_len u32 LE | crc32 u32 LE | offset u64 LE | timestamp_ms i64 LE | payload
//! ```
//!
//! The crc covers offset, timestamp and payload, so a record whose length field was
//! torn or overwritten is caught by the crc of what the length made of it, and a record
//! copied to the wrong place is caught by its offset. Every length read from disk is
//! checked against `MAX_PAYLOAD` and against what is left of the file before anything
//! is allocated for it: a damaged or hostile file costs at most its own size.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first bytes of every segment file (format version 1).
pub const MAGIC: &[u8; 8] = b"HMQSEG01";
/// Bytes before the first record.
pub const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Bytes of a record before its payload.
pub const RECORD_HEADER_LEN: usize = 24;
/// The largest payload accepted (a bigger length field is damage, not a record).
pub const MAX_PAYLOAD: usize = 512 << 20;

/// `{first_offset:020}.segment`: zero-padded so names sort in offset order.
pub fn segment_path(dir: &Path, first_offset: u64) -> PathBuf {
    dir.join(format!("{first_offset:020}.segment"))
}

/// The sparse index beside a segment.
pub fn index_path(dir: &Path, first_offset: u64) -> PathBuf {
    dir.join(format!("{first_offset:020}.index"))
}

/// What a log file's name says: `(first_offset, is_segment)` for ours, `None` for
/// anything else (which the log leaves alone).
pub fn parse_file_name(name: &str) -> Option<(u64, bool)> {
    let (stem, is_segment) = match name.split_once('.')? {
        (stem, "segment") => (stem, true),
        (stem, "index") => (stem, false),
        _ => return None,
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, is_segment))
}

/// The crc of a record: over its offset, timestamp and payload.
pub fn record_crc(offset: u64, timestamp_ms: i64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&offset.to_le_bytes());
    h.update(&timestamp_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, offset: u64, timestamp_ms: i64, payload: &[u8]) {
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&record_crc(offset, timestamp_ms, payload).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A record's fixed-size front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: usize,
    pub crc: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
}

impl RecordHeader {
    pub fn parse(b: &[u8; RECORD_HEADER_LEN]) -> Self {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Self {
            payload_len: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) as usize,
            crc: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            offset: word(8),
            timestamp_ms: word(16) as i64,
        }
    }

    /// The whole record's size on disk.
    pub fn record_len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.payload_len) as u64
    }
}

/// Reads the record header at `pos`, or `None` if the file ends before it.
pub fn read_header_at(file: &File, pos: u64) -> io::Result<Option<RecordHeader>> {
    let mut b = [0u8; RECORD_HEADER_LEN];
    match file.read_exact_at(&mut b, pos) {
        Ok(()) => Ok(Some(RecordHeader::parse(&b))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a segment's header is.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    Valid,
    /// Shorter than a header or all zeros: the file was created and the crash came
    /// before its header reached the disk.
    Torn,
    Foreign,
}

pub fn check_header(file: &File, file_len: u64) -> io::Result<Header> {
    if file_len < HEADER_LEN {
        return Ok(Header::Torn);
    }
    let mut b = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut b, 0)?;
    Ok(if &b == MAGIC {
        Header::Valid
    } else if b == [0; HEADER_LEN as usize] {
        Header::Torn
    } else {
        Header::Foreign
    })
}

/// A record met while scanning: where it starts, its header.
pub struct Scanned {
    pub pos: u64,
    pub header: RecordHeader,
}

/// Where a scan stopped.
#[derive(Debug, Default)]
pub struct ScanEnd {
    /// The byte after the last valid record.
    pub end: u64,
    /// The offset after the last valid record.
    pub next_offset: u64,
    /// How many valid records were seen.
    pub records: u64,
    /// Timestamp of the last valid record.
    pub last_ts: Option<i64>,
}

/// Scans `file` (of `file_len` bytes) from byte `pos`, where the record with offset
/// `offset` is expected, validating each record (length within bounds and within the
/// file, crc, consecutive offset) and calling `each` on the valid ones. Stops at the
/// first record that is invalid or incomplete, at the end of the file (`end` is then
/// where the valid data ends), or after a record for which `each` returns false. Only
/// I/O errors are errors.
pub fn scan(
    file: &File,
    file_len: u64,
    mut pos: u64,
    mut offset: u64,
    mut each: impl FnMut(&Scanned) -> bool,
) -> io::Result<ScanEnd> {
    let mut f = file;
    f.seek(SeekFrom::Start(pos))?;
    let mut r = BufReader::with_capacity(256 << 10, f);
    let mut payload = Vec::new();
    let mut out = ScanEnd { end: pos, next_offset: offset, ..ScanEnd::default() };
    loop {
        let left = file_len.saturating_sub(pos);
        if left < RECORD_HEADER_LEN as u64 {
            break;
        }
        let mut b = [0u8; RECORD_HEADER_LEN];
        r.read_exact(&mut b)?;
        let header = RecordHeader::parse(&b);
        if header.payload_len > MAX_PAYLOAD || header.record_len() > left || header.offset != offset {
            break;
        }
        payload.clear();
        payload.resize(header.payload_len, 0);
        r.read_exact(&mut payload)?;
        if record_crc(header.offset, header.timestamp_ms, &payload) != header.crc {
            break;
        }
        let go_on = each(&Scanned { pos, header });
        out.last_ts = Some(header.timestamp_ms);
        out.records += 1;
        pos += header.record_len();
        offset += 1;
        out.end = pos;
        out.next_offset = offset;
        if !go_on {
            break;
        }
    }
    Ok(out)
}
