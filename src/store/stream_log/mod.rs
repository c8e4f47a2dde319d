//! The on-disk log of a stream queue: an append-only sequence of opaque records with
//! offsets 0, 1, 2, … that consumers read without removing anything; retention drops
//! whole segments from the head.
//!
//! A log is a directory of segments (`{first_offset:020}.segment`, format in
//! [`segment`]) and their sparse indexes (`{first_offset:020}.index`, [`index`]).
//! Appends go to the last (active) segment; once it reaches `max_segment_bytes` a sync
//! rolls to a new one.
//!
//! Threading: one thread writes (the store writer: [`StreamLog::append`],
//! [`StreamLog::sync`], [`StreamLog::reset_to_synced`], [`StreamLog::apply_retention`]);
//! any number of [`LogReader`]s read concurrently on other threads. Appends are only
//! buffered in memory; `sync` writes them with one write and one fdatasync and then
//! publishes the new committed offset. Readers never read past the committed offset
//! nor past the synced length of a segment, so they never see a record before it is
//! durable, nor bytes a failed sync left behind (which `reset_to_synced` truncates and
//! the retry rewrites).
//!
//! Memory does not grow with the stream's length: per segment the log keeps its first
//! offset, synced size and first and last timestamps; the active segment's unsynced
//! records are the only buffer. Index files are read when a reader seeks.
//!
//! Recovery at open treats the disk as untrusted: the last segment is scanned from its
//! last trustworthy index entry and truncated at the first invalid or incomplete record
//! (a torn tail: never synced, so never confirmed); earlier segments must be whole.
//! Nothing read from disk can make it panic or allocate more than the file's size.

mod index;
mod reader;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::StoreError;
use index::{IndexEntry, ENTRY_LEN, INDEX_INTERVAL};
pub use reader::{LogReader, LogRecord};
use segment::{Header, HEADER_LEN, MAGIC, MAX_PAYLOAD};

/// Segment size and retention. Retention may change at run time (policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLogConfig {
    /// A segment is closed (a new one started) once a sync leaves it at least this big.
    pub max_segment_bytes: u64,
    /// Retention: drop the oldest segments while the log is bigger than this.
    pub max_length_bytes: Option<u64>,
    /// Retention: drop the oldest segments while their newest record is older than this.
    pub max_age_ms: Option<u64>,
}

impl Default for StreamLogConfig {
    /// RabbitMQ's default segment size (`x-stream-max-segment-size-bytes`), no retention.
    fn default() -> Self {
        Self { max_segment_bytes: 500_000_000, max_length_bytes: None, max_age_ms: None }
    }
}

/// What readers and retention know of a segment (everything as of the last sync).
#[derive(Clone, Copy, Debug)]
struct SegmentMeta {
    first_offset: u64,
    /// Synced bytes, header included: readers read no further.
    len: u64,
    /// Timestamps of its first and last record (`None`: no record yet).
    first_ts: Option<i64>,
    last_ts: Option<i64>,
}

/// The segments, shared with readers. `committed` is stored while this is locked for
/// writing, so whoever locks it sees metadata covering at least every committed record.
struct Shared {
    segments: VecDeque<SegmentMeta>,
    bytes: u64,
    destroyed: bool,
}

impl Shared {
    /// The segment holding `offset` (the last one starting at or before it).
    fn containing(&self, offset: u64) -> Option<SegmentMeta> {
        let i = self.segments.partition_point(|s| s.first_offset <= offset);
        i.checked_sub(1).map(|i| self.segments[i])
    }
}

/// The active segment's open files and synced sizes.
struct Active {
    first_offset: u64,
    file: File,
    index: File,
    len: u64,
    index_len: u64,
}

/// Writer-side state that buffered appends change and `reset_to_synced` restores.
#[derive(Clone, Copy, Debug)]
struct Tail {
    /// The newest timestamp in the log (records' timestamps never decrease).
    last_ts: Option<i64>,
    /// The active segment's first timestamp.
    first_ts: Option<i64>,
    /// Record bytes written to the active segment since its last index entry.
    since_index: u64,
}

/// The writer's state: only the writer thread locks it.
struct Writer {
    active: Active,
    /// Encoded records not yet written, to go at `active.len`.
    buf: Vec<u8>,
    /// Encoded index entries not yet written, to go at `active.index_len`.
    index_buf: Vec<u8>,
    next_offset: u64,
    tail: Tail,
    synced_tail: Tail,
    destroyed: bool,
}

/// A stream queue's log. `Send + Sync`, shared as `Arc<StreamLog>`.
pub struct StreamLog {
    dir: PathBuf,
    config: Mutex<StreamLogConfig>,
    writer: Mutex<Writer>,
    shared: RwLock<Shared>,
    /// Every offset below it is durable and readable.
    committed: AtomicU64,
    /// The oldest retained offset.
    first_offset: AtomicU64,
    /// The next offset to append (buffered appends included).
    next_offset: AtomicU64,
}

/// A write buffer bigger than this after a sync is given back.
const KEEP_BUFFER: usize = 4 << 20;

fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { path: path.display().to_string(), detail: detail.into() }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates an empty segment (header only) and its empty index, durably: the files and
/// the directory entries are synced before the segment is used.
fn create_segment(dir: &Path, first_offset: u64) -> io::Result<Active> {
    let open = |p: PathBuf| OpenOptions::new().read(true).write(true).create(true).truncate(true).open(p);
    let file = open(segment::segment_path(dir, first_offset))?;
    file.write_all_at(MAGIC, 0)?;
    file.sync_data()?;
    let index = open(segment::index_path(dir, first_offset))?;
    index.sync_data()?;
    sync_dir(dir)?;
    Ok(Active { first_offset, file, index, len: HEADER_LEN, index_len: 0 })
}

/// The result of scanning a segment's tail.
struct TailScan {
    /// How many entries of the index are kept (those up to where the scan started).
    kept: usize,
    /// Entries for the scanned records, made by the writer's rule.
    fresh: Vec<IndexEntry>,
    /// Record bytes since the last entry (kept or fresh) at the end of the scan.
    since_index: u64,
    scan: segment::ScanEnd,
}

/// Scans a segment from its last index entry whose record is valid (an entry is written
/// only after its records are durable, so everything before it is whole), or from its
/// first record if none is.
fn scan_tail(file: &File, len: u64, first_offset: u64, entries: &[IndexEntry]) -> io::Result<TailScan> {
    for kept in (0..=entries.len()).rev() {
        let (pos, offset) = match kept.checked_sub(1) {
            Some(k) => (entries[k].position, entries[k].offset),
            None => (HEADER_LEN, first_offset),
        };
        let mut fresh = Vec::new();
        let mut since = 0u64;
        let scan = segment::scan(file, len, pos, offset, |r| {
            if (r.pos == pos && kept == 0) || (r.pos != pos && since >= INDEX_INTERVAL) {
                fresh.push(IndexEntry {
                    offset: r.header.offset,
                    timestamp_ms: r.header.timestamp_ms,
                    position: r.pos,
                });
                since = 0;
            }
            since += r.header.record_len();
            true
        })?;
        if scan.records > 0 || kept == 0 {
            return Ok(TailScan { kept, fresh, since_index: since, scan });
        }
    }
    unreachable!("the loop returns at kept == 0")
}

/// The timestamp of a segment's first record, if it has one.
fn first_timestamp(file: &File, first_offset: u64) -> io::Result<Option<i64>> {
    Ok(segment::read_header_at(file, HEADER_LEN)?.filter(|h| h.offset == first_offset).map(|h| h.timestamp_ms))
}

/// An earlier (sealed) segment: it was synced whole before the next one was created,
/// so anything invalid in it is damage. Returns it and the offset after its last record.
fn recover_sealed(dir: &Path, first_offset: u64) -> Result<(SegmentMeta, u64), StoreError> {
    let path = segment::segment_path(dir, first_offset);
    let file = File::open(&path).map_err(|e| io_error("opening", &path, e))?;
    let len = file.metadata().map_err(|e| io_error("reading", &path, e))?.len();
    if segment::check_header(&file, len).map_err(|e| io_error("reading", &path, e))? != Header::Valid {
        return Err(corrupt(&path, "not a stream segment (bad header)"));
    }
    let read = |e| io_error("reading", &path, e);
    let entries = index::read(&segment::index_path(dir, first_offset), first_offset, len).map_err(read)?;
    let tail = scan_tail(&file, len, first_offset, &entries).map_err(read)?;
    if tail.scan.end != len {
        return Err(corrupt(&path, format!("damaged record at byte {}", tail.scan.end)));
    }
    let meta = SegmentMeta {
        first_offset,
        len,
        first_ts: first_timestamp(&file, first_offset).map_err(read)?,
        last_ts: tail.scan.last_ts,
    };
    Ok((meta, tail.scan.next_offset))
}

/// The last segment: truncated after its last valid record (and its index after the
/// last entry that still points into it), then opened for appending.
fn recover_active(dir: &Path, first_offset: u64) -> Result<(SegmentMeta, Active, Tail, u64), StoreError> {
    let path = segment::segment_path(dir, first_offset);
    let index_path = segment::index_path(dir, first_offset);
    let rw = |p: &Path| OpenOptions::new().read(true).write(true).create(true).truncate(false).open(p);
    let file = rw(&path).map_err(|e| io_error("opening", &path, e))?;
    let index = rw(&index_path).map_err(|e| io_error("opening", &index_path, e))?;
    let seg_err = |e| io_error("recovering", &path, e);
    let idx_err = |e| io_error("recovering", &index_path, e);
    let mut len = file.metadata().map_err(seg_err)?.len();
    match segment::check_header(&file, len).map_err(seg_err)? {
        Header::Valid => {}
        Header::Foreign => return Err(corrupt(&path, "not a stream segment (bad header)")),
        Header::Torn => {
            file.set_len(0)
                .and_then(|()| file.write_all_at(MAGIC, 0))
                .and_then(|()| file.sync_data())
                .map_err(seg_err)?;
            len = HEADER_LEN;
        }
    }
    let entries = index::read(&index_path, first_offset, len).map_err(idx_err)?;
    let tail = scan_tail(&file, len, first_offset, &entries).map_err(seg_err)?;
    let end = tail.scan.end;
    if end < len {
        log::warn!(
            "stream log {}: dropping {} bytes after the last complete record (a write the crash interrupted)",
            path.display(),
            len - end
        );
        file.set_len(end).and_then(|()| file.sync_data()).map_err(seg_err)?;
    }
    let index_len = ((tail.kept + tail.fresh.len()) * ENTRY_LEN) as u64;
    let on_disk = index.metadata().map_err(idx_err)?.len();
    if on_disk != index_len || !tail.fresh.is_empty() {
        let mut bytes = Vec::with_capacity(tail.fresh.len() * ENTRY_LEN);
        tail.fresh.iter().for_each(|e| e.encode(&mut bytes));
        let kept_len = (tail.kept * ENTRY_LEN) as u64;
        index
            .set_len(kept_len)
            .and_then(|()| index.write_all_at(&bytes, kept_len))
            .and_then(|()| index.sync_data())
            .map_err(idx_err)?;
    }
    let first_ts = first_timestamp(&file, first_offset).map_err(seg_err)?;
    let meta = SegmentMeta { first_offset, len: end, first_ts, last_ts: tail.scan.last_ts };
    let t = Tail { last_ts: tail.scan.last_ts, first_ts, since_index: tail.since_index };
    Ok((meta, Active { first_offset, file, index, len: end, index_len }, t, tail.scan.next_offset))
}

impl StreamLog {
    /// Opens or creates the log in `dir` and recovers it (see the module docs), then
    /// applies retention.
    pub fn open(dir: &Path, config: StreamLogConfig) -> Result<Arc<StreamLog>, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
        let mut segments = BTreeSet::new();
        let mut indexes = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))? {
            let entry = entry.map_err(|e| io_error("listing", dir, e))?;
            let Some((first, is_segment)) = entry.file_name().to_str().and_then(segment::parse_file_name) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if is_segment {
                segments.insert(first);
            } else {
                indexes.push(first);
            }
        }
        for first in indexes.into_iter().filter(|f| !segments.contains(f)) {
            let p = segment::index_path(dir, first);
            remove_if_present(&p).map_err(|e| io_error("removing", &p, e))?;
        }

        let mut metas = VecDeque::with_capacity(segments.len().max(1));
        let (active, tail, next_offset) = match segments.last().copied() {
            None => {
                let a = create_segment(dir, 0).map_err(|e| io_error("creating a segment in", dir, e))?;
                metas.push_back(SegmentMeta { first_offset: 0, len: a.len, first_ts: None, last_ts: None });
                (a, Tail { last_ts: None, first_ts: None, since_index: 0 }, 0)
            }
            Some(last) => {
                let mut expected: Option<u64> = None;
                let mut newest_ts = None;
                for &first in segments.range(..last) {
                    if expected.is_some_and(|x| x != first) {
                        let p = segment::segment_path(dir, first);
                        return Err(corrupt(
                            &p,
                            format!("starts at offset {first}, the segment before ends at {expected:?}"),
                        ));
                    }
                    let (meta, next) = recover_sealed(dir, first)?;
                    newest_ts = meta.last_ts.or(newest_ts);
                    metas.push_back(meta);
                    expected = Some(next);
                }
                if expected.is_some_and(|x| x != last) {
                    let p = segment::segment_path(dir, last);
                    return Err(corrupt(
                        &p,
                        format!("starts at offset {last}, the segment before ends at {expected:?}"),
                    ));
                }
                let (meta, active, mut tail, next) = recover_active(dir, last)?;
                tail.last_ts = tail.last_ts.or(newest_ts);
                metas.push_back(meta);
                (active, tail, next)
            }
        };
        let bytes = metas.iter().map(|m| m.len).sum();
        let first_offset = metas.front().map_or(next_offset, |m| m.first_offset);
        let log = Arc::new(StreamLog {
            dir: dir.to_path_buf(),
            config: Mutex::new(config),
            writer: Mutex::new(Writer {
                active,
                buf: Vec::new(),
                index_buf: Vec::new(),
                next_offset,
                tail,
                synced_tail: tail,
                destroyed: false,
            }),
            shared: RwLock::new(Shared { segments: metas, bytes, destroyed: false }),
            committed: AtomicU64::new(next_offset),
            first_offset: AtomicU64::new(first_offset),
            next_offset: AtomicU64::new(next_offset),
        });
        log.apply_retention(crate::util::now_ms() as i64).map_err(|e| io_error("applying retention in", dir, e))?;
        Ok(log)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shared(&self) -> RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    fn shared_mut(&self) -> RwLockWriteGuard<'_, Shared> {
        self.shared.write().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> StreamLogConfig {
        *self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces segment size and retention; retention applies from the next roll or
    /// [`StreamLog::apply_retention`].
    pub fn set_config(&self, config: StreamLogConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Buffers one record (not durable until [`StreamLog::sync`]). `offset ==
    /// next_offset()` appends; `offset < next_offset()` is a retry of something already
    /// written: skipped, `Ok`. `offset > next_offset()` would leave a gap: an error.
    ///
    /// Timestamps never decrease in the log: a timestamp older than the newest one
    /// written (the clock stepped back) is stored as that newest one, so seeking by
    /// timestamp and age retention stay exact.
    pub fn append(&self, offset: u64, timestamp_ms: i64, payload: &[u8]) -> io::Result<()> {
        let mut guard = self.writer();
        let w = &mut *guard;
        if w.destroyed {
            return Err(invalid_input(format!("stream log {} was deleted", self.dir.display())));
        }
        if offset < w.next_offset {
            return Ok(());
        }
        if offset > w.next_offset {
            return Err(invalid_input(format!("stream log: append at offset {offset}, expected {}", w.next_offset)));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(invalid_input(format!("stream log: a {}-byte record is too big", payload.len())));
        }
        let ts = w.tail.last_ts.map_or(timestamp_ms, |last| timestamp_ms.max(last));
        let position = w.active.len + w.buf.len() as u64;
        if position == HEADER_LEN || w.tail.since_index >= INDEX_INTERVAL {
            IndexEntry { offset, timestamp_ms: ts, position }.encode(&mut w.index_buf);
            w.tail.since_index = 0;
        }
        segment::encode_record(&mut w.buf, offset, ts, payload);
        w.tail.since_index += (segment::RECORD_HEADER_LEN + payload.len()) as u64;
        w.tail.first_ts.get_or_insert(ts);
        w.tail.last_ts = Some(ts);
        w.next_offset += 1;
        self.next_offset.store(w.next_offset, Ordering::Release);
        Ok(())
    }

    /// Writes what is buffered, fdatasyncs the segment and then its index, and
    /// publishes the new committed offset; then, if the active segment reached
    /// `max_segment_bytes`, rolls to a new segment and applies retention. Returns
    /// [`StreamLog::committed`]: every offset below it is durable.
    ///
    /// On an error nothing buffered may be assumed durable: call
    /// [`StreamLog::reset_to_synced`] and append the same records again. A failed roll
    /// is only logged (everything is committed; the next sync tries again).
    pub fn sync(&self, now_ms: i64) -> io::Result<u64> {
        let mut guard = self.writer();
        let w = &mut *guard;
        if w.destroyed {
            return Err(invalid_input(format!("stream log {} was deleted", self.dir.display())));
        }
        if !w.buf.is_empty() {
            let a = &mut w.active;
            a.file.write_all_at(&w.buf, a.len)?;
            a.file.sync_data()?;
            // Written after the records are durable, so an index entry on disk points at
            // a whole record; not synced here (one fsync per commit, not two): the index
            // is synced when its segment is sealed, and recovery validates the active
            // segment's last entry by scanning from it (falling back to earlier ones) and
            // rebuilds what a crash lost.
            if !w.index_buf.is_empty() {
                a.index.write_all_at(&w.index_buf, a.index_len)?;
            }
            let added = w.buf.len() as u64;
            {
                let mut sh = self.shared_mut();
                if let Some(seg) = sh.segments.back_mut().filter(|s| s.first_offset == a.first_offset) {
                    seg.len += added;
                    seg.first_ts = w.tail.first_ts;
                    seg.last_ts = w.tail.last_ts;
                }
                sh.bytes += added;
                self.committed.store(w.next_offset, Ordering::Release);
            }
            a.len += added;
            a.index_len += w.index_buf.len() as u64;
            w.buf.clear();
            w.index_buf.clear();
            if w.buf.capacity() > KEEP_BUFFER {
                w.buf.shrink_to(KEEP_BUFFER);
            }
            w.synced_tail = w.tail;
        }
        let committed = w.next_offset;
        if w.active.len >= self.config().max_segment_bytes && w.active.len > HEADER_LEN {
            if let Err(e) = self.roll(w).and_then(|()| self.retain(now_ms).map(|_| ())) {
                log::warn!("stream log {}: could not start a new segment: {e}", self.dir.display());
            }
        }
        Ok(committed)
    }

    /// Starts a new active segment at the next offset (everything is synced).
    fn roll(&self, w: &mut Writer) -> io::Result<()> {
        // The sealed segment's index is complete now: make it durable before the next
        // segment exists (recovery trusts a sealed segment's index more).
        w.active.index.sync_data()?;
        let first_offset = w.next_offset;
        let active = create_segment(&self.dir, first_offset)?;
        {
            let mut sh = self.shared_mut();
            sh.segments.push_back(SegmentMeta { first_offset, len: active.len, first_ts: None, last_ts: None });
            sh.bytes += active.len;
        }
        w.active = active;
        w.tail.first_ts = None;
        w.tail.since_index = 0;
        w.synced_tail = w.tail;
        Ok(())
    }

    /// Applies retention now (also done at open and after each roll). Returns how many
    /// segments were dropped.
    pub fn apply_retention(&self, now_ms: i64) -> io::Result<usize> {
        let _writer = self.writer();
        self.retain(now_ms)
    }

    /// Drops whole segments from the head, never the active one, while the log is too
    /// big or the oldest segment's newest record is too old. Called with the writer
    /// locked.
    fn retain(&self, now_ms: i64) -> io::Result<usize> {
        let config = self.config();
        let oldest_kept = config.max_age_ms.map(|age| now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)));
        let mut dropped = Vec::new();
        {
            let mut sh = self.shared_mut();
            while sh.segments.len() > 1 {
                let s = sh.segments[0];
                let too_big = config.max_length_bytes.is_some_and(|max| sh.bytes > max);
                let too_old = oldest_kept.is_some_and(|t| s.last_ts.is_none_or(|ts| ts < t));
                if !too_big && !too_old {
                    break;
                }
                sh.segments.pop_front();
                sh.bytes -= s.len;
                dropped.push(s.first_offset);
            }
            if let Some(first) = sh.segments.front().filter(|_| !dropped.is_empty()) {
                self.first_offset.store(first.first_offset, Ordering::Release);
            }
        }
        // Readers still reading a dropped segment keep their open file; the next record
        // they want is below first_offset, so they move on.
        for first in &dropped {
            remove_if_present(&segment::segment_path(&self.dir, *first))?;
            remove_if_present(&segment::index_path(&self.dir, *first))?;
        }
        Ok(dropped.len())
    }

    /// After a failed append or sync: truncates the active segment and its index back to
    /// what was synced and forgets the buffered records, so the caller can append them
    /// again with the same offsets.
    pub fn reset_to_synced(&self) -> io::Result<()> {
        let mut guard = self.writer();
        let w = &mut *guard;
        w.buf.clear();
        w.index_buf.clear();
        w.next_offset = self.committed.load(Ordering::Acquire);
        w.tail = w.synced_tail;
        self.next_offset.store(w.next_offset, Ordering::Release);
        if w.destroyed {
            return Ok(());
        }
        w.active.file.set_len(w.active.len)?;
        w.active.index.set_len(w.active.index_len)
    }

    /// The oldest retained offset (`committed()` when the log holds nothing).
    pub fn first_offset(&self) -> u64 {
        self.first_offset.load(Ordering::Acquire)
    }

    /// The next offset to append (buffered appends included).
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// The next offset as of the last successful sync: every offset below it is durable.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Synced bytes on disk (segment headers included, indexes not).
    pub fn bytes(&self) -> u64 {
        self.shared().bytes
    }

    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.shared().segments.len()
    }

    /// The first committed offset whose record's timestamp is `>= ts_ms`
    /// (`committed()` if there is none).
    pub fn offset_at_timestamp(&self, ts_ms: i64) -> io::Result<u64> {
        let (committed, seg) = {
            let sh = self.shared();
            let seg = sh.segments.iter().find(|s| s.last_ts.is_some_and(|t| t >= ts_ms)).copied();
            (self.committed(), seg)
        };
        let Some(seg) = seg else {
            return Ok(committed);
        };
        if seg.first_ts.is_some_and(|t| t >= ts_ms) {
            return Ok(seg.first_offset);
        }
        let file = File::open(segment::segment_path(&self.dir, seg.first_offset))?;
        let entries = index::read(&segment::index_path(&self.dir, seg.first_offset), seg.first_offset, seg.len)?;
        let mut starts = vec![(HEADER_LEN, seg.first_offset)];
        if let Some(e) = index::floor_before_timestamp(&entries, ts_ms) {
            starts.push((e.position, e.offset));
        }
        // From the index entry, or from the start if the entry does not hold up.
        for &(pos, offset) in starts.iter().rev() {
            let mut found = None;
            let end = segment::scan(&file, seg.len, pos, offset, |r| {
                if r.header.timestamp_ms >= ts_ms {
                    found = Some(r.header.offset);
                }
                found.is_none()
            })?;
            if let Some(offset) = found {
                return Ok(offset);
            }
            if end.records > 0 {
                return Ok(end.next_offset);
            }
        }
        Ok(seg.first_offset)
    }

    /// A reader positioned at `from`, clamped to `[first_offset(), committed()]`.
    pub fn reader(self: &Arc<Self>, from: u64) -> io::Result<LogReader> {
        let from = from.clamp(self.first_offset(), self.committed().max(self.first_offset()));
        Ok(LogReader::new(Arc::clone(self), from))
    }

    /// Deletes the log's files and directory (its queue was deleted). Appends and syncs
    /// fail from now on; readers return `None`.
    pub fn destroy(&self) -> io::Result<()> {
        let mut w = self.writer();
        w.destroyed = true;
        w.buf = Vec::new();
        w.index_buf = Vec::new();
        {
            let mut sh = self.shared_mut();
            sh.destroyed = true;
            sh.segments.clear();
            sh.bytes = 0;
        }
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
