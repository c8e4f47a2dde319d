//! Reading a log from an offset onwards, concurrently with the writer.
//!
//! A reader has its own file handle and a large buffer (256 KiB) filled with positioned
//! reads, so reading sequentially costs one syscall per buffer, not per record. It reads
//! only what is committed: records below [`StreamLog::committed`] and bytes below the
//! synced length of their segment, which the writer publishes under the lock that
//! `committed` is stored under. Bytes past that may be a write in progress or what a
//! failed sync left behind; they never enter the buffer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::index;
use super::segment::{self, RecordHeader, HEADER_LEN, MAX_PAYLOAD, RECORD_HEADER_LEN};
use super::StreamLog;

/// What a buffer fill reads at least.
const READ_BUF: usize = 256 << 10;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

/// Reads a log in offset order. `Send`: it can move to whichever thread serves its
/// consumer.
pub struct LogReader {
    log: Arc<StreamLog>,
    /// The offset `next` returns next.
    position: u64,
    cursor: Option<Cursor>,
}

/// An open segment and the buffered bytes from where the reader is in it.
struct Cursor {
    segment: u64,
    file: File,
    /// Bytes `[buf_pos, buf_pos + buf.len())` of the file; `buf[start..]` not yet read.
    buf: Vec<u8>,
    start: usize,
    buf_pos: u64,
    /// The offset of the record at `buf[start..]`.
    offset: u64,
}

enum Parsed {
    Record(LogRecord),
    /// A record before the reader's position (after a seek to an index entry).
    Skipped,
    /// The buffer needs this many unread bytes for the next record.
    NeedMore(usize),
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Cursor {
    fn new(segment: u64, file: File, pos: u64, offset: u64) -> Self {
        Self { segment, file, buf: Vec::new(), start: 0, buf_pos: pos, offset }
    }

    fn parse(&mut self, position: u64) -> io::Result<Parsed> {
        let data = &self.buf[self.start..];
        let Some(head) = data.first_chunk::<RECORD_HEADER_LEN>() else {
            return Ok(Parsed::NeedMore(RECORD_HEADER_LEN));
        };
        let h = RecordHeader::parse(head);
        if h.payload_len > MAX_PAYLOAD || h.offset != self.offset {
            return Err(invalid_data(format!(
                "stream segment {}: expected offset {} at byte {}, found a record claiming offset {} and {} bytes",
                self.segment,
                self.offset,
                self.buf_pos + self.start as u64,
                h.offset,
                h.payload_len
            )));
        }
        let total = RECORD_HEADER_LEN + h.payload_len;
        let Some(record) = data.get(..total) else {
            return Ok(Parsed::NeedMore(total));
        };
        let payload = &record[RECORD_HEADER_LEN..];
        if h.offset < position {
            self.start += total;
            self.offset += 1;
            return Ok(Parsed::Skipped);
        }
        if segment::record_crc(h.offset, h.timestamp_ms, payload) != h.crc {
            return Err(invalid_data(format!("stream segment {}: record {} fails its crc", self.segment, h.offset)));
        }
        let rec = LogRecord { offset: h.offset, timestamp_ms: h.timestamp_ms, payload: payload.to_vec() };
        self.start += total;
        self.offset += 1;
        Ok(Parsed::Record(rec))
    }

    /// Reads more of the file, up to `limit` (the segment's synced length), so that at
    /// least `need` unread bytes are buffered if the segment has them.
    fn fill(&mut self, need: usize, limit: u64) -> io::Result<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.buf_pos += self.start as u64;
            self.start = 0;
            if self.buf.capacity() > 4 * READ_BUF && self.buf.len() < READ_BUF {
                self.buf.shrink_to(READ_BUF);
            }
        }
        let end = self.buf_pos + self.buf.len() as u64;
        let want = need.max(READ_BUF).saturating_sub(self.buf.len()) as u64;
        let n = want.min(limit.saturating_sub(end)) as usize;
        let old = self.buf.len();
        self.buf.resize(old + n, 0);
        if let Err(e) = self.file.read_exact_at(&mut self.buf[old..], end) {
            self.buf.truncate(old);
            return Err(e);
        }
        Ok(())
    }

    fn buffered_end(&self) -> u64 {
        self.buf_pos + self.buf.len() as u64
    }
}

impl LogReader {
    pub(super) fn new(log: Arc<StreamLog>, position: u64) -> Self {
        Self { log, position, cursor: None }
    }

    /// The offset [`LogReader::next`] returns next.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next record below the log's committed offset, or `None` when caught up (or
    /// the log was destroyed). Follows into the next segment; if retention removed the
    /// records it was at, continues at [`StreamLog::first_offset`].
    #[allow(clippy::should_implement_trait)] // fallible, and `None` is "for now", not the end
    pub fn next(&mut self) -> io::Result<Option<LogRecord>> {
        loop {
            let committed = self.log.committed();
            let first = self.log.first_offset();
            if self.position < first {
                self.position = first;
                self.cursor = None;
            }
            if self.position >= committed {
                return Ok(None);
            }
            let parsed = match self.cursor.as_mut() {
                Some(cursor) => cursor.parse(self.position)?,
                None => {
                    if !self.seek()? {
                        return Ok(None);
                    }
                    continue;
                }
            };
            match parsed {
                Parsed::Record(rec) => {
                    self.position += 1;
                    return Ok(Some(rec));
                }
                Parsed::Skipped => {}
                Parsed::NeedMore(need) => {
                    if !self.fill(need)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Like [`LogReader::next`], but up to `max` records into `out`, stopping once
    /// `max_bytes` of payload are in (the last record may pass it, so a record bigger
    /// than `max_bytes` still comes out). Returns how many were added.
    pub fn next_batch(&mut self, out: &mut Vec<LogRecord>, max: usize, max_bytes: usize) -> io::Result<usize> {
        let (mut n, mut bytes) = (0, 0);
        while n < max && bytes < max_bytes {
            let Some(rec) = self.next()? else { break };
            bytes += rec.payload.len();
            out.push(rec);
            n += 1;
        }
        Ok(n)
    }

    /// Opens the segment holding `position`, at its last index entry at or before it.
    /// False if the log was destroyed.
    fn seek(&mut self) -> io::Result<bool> {
        let seg = {
            let sh = self.log.shared();
            if sh.destroyed {
                return Ok(false);
            }
            match sh.containing(self.position) {
                Some(seg) => seg,
                // Retention moved the head past us since `next` looked.
                None => return Ok(true),
            }
        };
        let Some(file) = self.open_segment(seg.first_offset)? else {
            return Ok(true);
        };
        let entries = index::read(&segment::index_path(&self.log.dir, seg.first_offset), seg.first_offset, seg.len)?;
        let mut start = (HEADER_LEN, seg.first_offset);
        if let Some(e) = index::floor_by_offset(&entries, self.position) {
            // Trusted only if a record with that offset starts there.
            if segment::read_header_at(&file, e.position)?.is_some_and(|h| h.offset == e.offset) {
                start = (e.position, e.offset);
            }
        }
        self.cursor = Some(Cursor::new(seg.first_offset, file, start.0, start.1));
        Ok(true)
    }

    /// Opens a segment file; `None` if retention removed it meanwhile (the caller's
    /// next look at `first_offset` moves on).
    fn open_segment(&mut self, first_offset: u64) -> io::Result<Option<File>> {
        match File::open(segment::segment_path(&self.log.dir, first_offset)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let sh = self.log.shared();
                if sh.destroyed || sh.segments.front().is_some_and(|s| s.first_offset > first_offset) {
                    self.cursor = None;
                    return Ok(None);
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Buffers at least `need` unread bytes of the current segment, or moves to the next
    /// segment when this one is read to its end. False if the log was destroyed.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        let Some(cursor) = self.cursor.as_mut() else {
            return Ok(true);
        };
        let (seg, next) = {
            let sh = self.log.shared();
            if sh.destroyed {
                return Ok(false);
            }
            let i = sh.segments.partition_point(|s| s.first_offset < cursor.segment);
            let seg = sh.segments.get(i).filter(|s| s.first_offset == cursor.segment).copied();
            (seg, sh.segments.get(i + 1).map(|s| s.first_offset))
        };
        let Some(seg) = seg else {
            // Dropped by retention: `next` moves to the new head.
            self.cursor = None;
            return Ok(true);
        };
        if cursor.buffered_end() < seg.len {
            cursor.fill(need, seg.len)?;
            return Ok(true);
        }
        if cursor.start < cursor.buf.len() {
            return Err(invalid_data(format!(
                "stream segment {}: incomplete record {} at the end of its synced bytes",
                cursor.segment, cursor.offset
            )));
        }
        let offset = cursor.offset;
        match next {
            Some(next) if next == offset => {
                if let Some(file) = self.open_segment(next)? {
                    self.cursor = Some(Cursor::new(next, file, HEADER_LEN, next));
                }
                Ok(true)
            }
            _ => Err(invalid_data(format!("stream segment {}: ends before offset {offset}", seg.first_offset))),
        }
    }
}
