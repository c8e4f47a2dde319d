//! A segment's sparse index: where to start scanning for an offset or a timestamp.
//!
//! Fixed 24-byte entries `(offset u64, timestamp_ms i64, file_position u64)` LE: one
//! for a segment's first record, then one whenever at least [`INDEX_INTERVAL`] bytes of
//! records were written since the last entry, so a seek scans at most that much plus
//! one record. The index is only a hint: it is written after its segment's bytes are
//! on disk (an entry never points past durable records), every use checks an entry
//! against the segment before trusting it, and recovery can rebuild it from the
//! segment. Memory does not grow with the stream: the log keeps no index in memory and
//! reads a segment's index when it seeks into that segment.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::segment::HEADER_LEN;

/// Bytes of records between two index entries.
pub const INDEX_INTERVAL: u64 = 64 << 10;
/// Bytes per entry.
pub const ENTRY_LEN: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub position: u64,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }

    fn parse(b: &[u8]) -> Self {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Self { offset: word(0), timestamp_ms: word(8) as i64, position: word(16) }
    }
}

/// The most entries a segment of `segment_len` bytes can have: entries are at least
/// `INDEX_INTERVAL` apart. Bounds what reading a damaged index file allocates.
pub fn max_entries(segment_len: u64) -> u64 {
    segment_len / INDEX_INTERVAL + 2
}

/// The index of the segment starting at `first_offset` with `segment_len` bytes: the
/// longest prefix of entries that are plausible (the first at the first record, then
/// offsets and positions increasing, positions inside the segment). A missing file is
/// an empty index; whatever follows an implausible entry is ignored.
pub fn read(path: &Path, first_offset: u64, segment_len: u64) -> io::Result<Vec<IndexEntry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let cap = max_entries(segment_len) * ENTRY_LEN as u64;
    let mut bytes = Vec::new();
    file.take(cap).read_to_end(&mut bytes)?;
    let mut out: Vec<IndexEntry> = Vec::new();
    for chunk in bytes.chunks_exact(ENTRY_LEN) {
        let e = IndexEntry::parse(chunk);
        let plausible = match out.last() {
            None => e.offset == first_offset && e.position == HEADER_LEN,
            Some(prev) => e.offset > prev.offset && e.position > prev.position,
        };
        if !plausible || e.position >= segment_len {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

/// The last entry with `offset <= target`.
pub fn floor_by_offset(entries: &[IndexEntry], target: u64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| e.offset <= target);
    i.checked_sub(1).map(|i| entries[i])
}

/// The last entry with `timestamp_ms < target` (record timestamps never decrease).
pub fn floor_before_timestamp(entries: &[IndexEntry], target: i64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| e.timestamp_ms < target);
    i.checked_sub(1).map(|i| entries[i])
}
