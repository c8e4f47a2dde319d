use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::index::{self, ENTRY_LEN, INDEX_INTERVAL};
use super::segment::{index_path, segment_path, HEADER_LEN, RECORD_HEADER_LEN};
use super::{LogRecord, StreamLog, StreamLogConfig};
use crate::store::StoreError;

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("haremq-streamlog-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const PAYLOAD: usize = 100;
const RECORD: u64 = (RECORD_HEADER_LEN + PAYLOAD) as u64;

fn config(max_segment_bytes: u64) -> StreamLogConfig {
    StreamLogConfig { max_segment_bytes, max_length_bytes: None, max_age_ms: None }
}

/// A 100-byte payload that names its offset.
fn payload(offset: u64) -> Vec<u8> {
    let mut p = format!("record {offset} ").into_bytes();
    p.resize(PAYLOAD, b'.');
    p
}

fn open(dir: &TempDir, max_segment_bytes: u64) -> Arc<StreamLog> {
    StreamLog::open(&dir.0, config(max_segment_bytes)).expect("opens")
}

/// Appends `from..to` with timestamp 1000 + offset, syncing after every `per_sync`.
fn write(log: &StreamLog, from: u64, to: u64, per_sync: u64) {
    for o in from..to {
        log.append(o, 1000 + o as i64, &payload(o)).expect("appends");
        if (o + 1 - from).is_multiple_of(per_sync) {
            log.sync(0).expect("syncs");
        }
    }
    log.sync(0).expect("syncs");
}

fn read_all(log: &Arc<StreamLog>, from: u64) -> Vec<LogRecord> {
    let mut r = log.reader(from).expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("reads") {
        out.push(rec);
    }
    out
}

/// The records are exactly `from..to`, as `write` made them.
fn assert_records(records: &[LogRecord], from: u64, to: u64) {
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (from..to).collect::<Vec<_>>());
    for r in records {
        assert_eq!(r.payload, payload(r.offset));
        assert_eq!(r.timestamp_ms, 1000 + r.offset as i64);
    }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".segment"))
        .collect();
    names.sort();
    names
}

#[test]
fn append_sync_read_back() {
    let dir = TempDir::new("basic");
    let log = open(&dir, 1 << 30);
    assert_eq!((log.first_offset(), log.next_offset(), log.committed()), (0, 0, 0));
    assert!(read_all(&log, 0).is_empty());
    write(&log, 0, 100, 100);
    assert_eq!((log.first_offset(), log.next_offset(), log.committed()), (0, 100, 100));
    assert_eq!(log.bytes(), HEADER_LEN + 100 * RECORD);
    assert_eq!(log.segment_count(), 1);
    assert_records(&read_all(&log, 0), 0, 100);
    assert_records(&read_all(&log, 42), 42, 100);
    // Clamped to [first_offset, committed].
    assert!(read_all(&log, 1000).is_empty());
    assert_eq!(log.reader(1000).expect("reader").position(), 100);

    let mut r = log.reader(0).expect("reader");
    let mut batch = Vec::new();
    assert_eq!(r.next_batch(&mut batch, 10, usize::MAX).expect("batch"), 10);
    assert_eq!(r.next_batch(&mut batch, 100, 3 * PAYLOAD).expect("batch"), 3);
    assert_eq!(r.next_batch(&mut batch, 1000, usize::MAX).expect("batch"), 87);
    assert_eq!(r.next_batch(&mut batch, 1000, usize::MAX).expect("batch"), 0);
    assert_records(&batch, 0, 100);
    assert_eq!(r.position(), 100);
}

#[test]
fn reader_stops_at_committed() {
    let dir = TempDir::new("committed");
    let log = open(&dir, 1 << 30);
    write(&log, 0, 5, 5);
    for o in 5..10 {
        log.append(o, 1000 + o as i64, &payload(o)).expect("appends");
    }
    assert_eq!((log.next_offset(), log.committed()), (10, 5));
    let mut r = log.reader(0).expect("reader");
    let mut got = Vec::new();
    while let Some(rec) = r.next().expect("reads") {
        got.push(rec);
    }
    assert_records(&got, 0, 5);
    assert_eq!(r.position(), 5);
    assert_eq!(log.sync(0).expect("syncs"), 10);
    while let Some(rec) = r.next().expect("reads") {
        got.push(rec);
    }
    assert_records(&got, 0, 10);
}

#[test]
fn rolls_by_size_and_readers_follow() {
    let dir = TempDir::new("roll");
    let log = open(&dir, 1000);
    let mut r = log.reader(0).expect("reader");
    let mut got = Vec::new();
    for o in 0..100 {
        log.append(o, 1000 + o as i64, &payload(o)).expect("appends");
        if o % 3 == 2 {
            log.sync(0).expect("syncs");
            while let Some(rec) = r.next().expect("reads") {
                got.push(rec);
            }
        }
    }
    log.sync(0).expect("syncs");
    while let Some(rec) = r.next().expect("reads") {
        got.push(rec);
    }
    assert_records(&got, 0, 100);
    // A segment is closed at the first sync that leaves it >= 1000 bytes: 9 records
    // (3 syncs of 3).
    assert_eq!(
        segment_files(&dir.0)[..3],
        ["00000000000000000000.segment", "00000000000000000009.segment", "00000000000000000018.segment"]
    );
    assert_eq!(log.segment_count(), segment_files(&dir.0).len());
    assert!(log.segment_count() > 10);
    assert_eq!(log.bytes(), 100 * RECORD + log.segment_count() as u64 * HEADER_LEN);
    assert_records(&read_all(&log, 0), 0, 100);
    assert_records(&read_all(&log, 17), 17, 100);
    assert_records(&read_all(&log, 18), 18, 100);
}

#[test]
fn concurrent_reader_sees_only_committed_records() {
    let dir = TempDir::new("concurrent");
    let log = open(&dir, 64 << 10);
    let total = 5000u64;
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut r = log.reader(0).expect("reader");
            let mut got = Vec::new();
            while (got.len() as u64) < total {
                match r.next().expect("reads") {
                    Some(rec) => {
                        assert!(rec.offset < log.committed());
                        got.push(rec);
                    }
                    None => std::thread::yield_now(),
                }
            }
            got
        })
    };
    write(&log, 0, total, 37);
    assert_records(&reader.join().expect("reader thread"), 0, total);
}

#[test]
fn seeks_through_the_sparse_index() {
    let dir = TempDir::new("index");
    let log = open(&dir, 1 << 30);
    write(&log, 0, 3000, 100);
    // An entry for the first record, then one per 64 KiB of records.
    let per_entry = INDEX_INTERVAL.div_ceil(RECORD);
    let entries = index::read(&index_path(&dir.0, 0), 0, log.bytes()).expect("index");
    assert_eq!(entries.len() as u64, 3000u64.div_ceil(per_entry));
    assert_eq!(fs::metadata(index_path(&dir.0, 0)).expect("index").len(), entries.len() as u64 * ENTRY_LEN as u64);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.offset, i as u64 * per_entry);
        assert_eq!(e.position, HEADER_LEN + e.offset * RECORD);
    }
    for from in [0, 1, per_entry - 1, per_entry, per_entry + 1, 2999] {
        assert_records(&read_all(&log, from), from, 3000);
    }
    // A damaged index only costs the scan from the segment's start.
    fs::write(index_path(&dir.0, 0), [0xAB; 48]).expect("writes");
    assert_records(&read_all(&log, 2000), 2000, 3000);
}

#[test]
fn retention_by_bytes_drops_whole_segments() {
    let dir = TempDir::new("bytes");
    let log = open(&dir, 1000);
    write(&log, 0, 100, 3);
    let mut behind = log.reader(0).expect("reader");
    assert_eq!(behind.next().expect("reads").map(|r| r.offset), Some(0));
    let before = log.segment_count();
    log.set_config(StreamLogConfig { max_length_bytes: Some(3000), ..config(1000) });
    let dropped = log.apply_retention(0).expect("retention");
    assert_eq!(log.segment_count(), before - dropped);
    assert!(log.bytes() <= 3000);
    let first = log.first_offset();
    assert!(first > 0 && first.is_multiple_of(9), "a segment boundary: {first}");
    assert_eq!(segment_files(&dir.0)[0], format!("{first:020}.segment"));
    assert!(!segment_path(&dir.0, 0).exists() && !index_path(&dir.0, 0).exists());
    assert_records(&read_all(&log, 0), first, 100);
    // The reader that was in a dropped segment continues at the head.
    assert_eq!(behind.next().expect("reads").map(|r| r.offset), Some(first));

    // Retention also runs on every roll.
    write(&log, 100, 400, 3);
    assert!(log.bytes() <= 3000 + 2 * 1000);
    assert_records(&read_all(&log, 0), log.first_offset(), 400);
    // Never the active segment.
    log.set_config(StreamLogConfig { max_length_bytes: Some(0), ..config(1000) });
    log.apply_retention(0).expect("retention");
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn retention_by_age_drops_whole_segments() {
    let dir = TempDir::new("age");
    let log = open(&dir, 1000);
    write(&log, 0, 100, 3);
    // Timestamps are 1000 + offset; keep what is younger than 1050.
    log.set_config(StreamLogConfig { max_age_ms: Some(950), ..config(1000) });
    assert!(log.apply_retention(2000).expect("retention") > 0);
    let first = log.first_offset();
    // Whole segments: the head segment holds the record stamped 1050 or a later one,
    // and it was not kept for nothing: the segment before it ends before 1050.
    assert!(first.is_multiple_of(9) && first <= 50 && first + 9 > 50, "{first}");
    assert_records(&read_all(&log, 0), first, 100);
    assert_eq!(log.apply_retention(2000).expect("retention"), 0);
    // Everything too old: all but the active segment go.
    log.apply_retention(1_000_000).expect("retention");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.first_offset(), segment_files(&dir.0)[0][..20].parse::<u64>().expect("name"));
}

#[test]
fn offset_at_timestamp() {
    let dir = TempDir::new("timestamp");
    let log = open(&dir, 200 << 10);
    // Ten records per millisecond, over several segments and index entries.
    for o in 0..5000u64 {
        log.append(o, 10_000 + (o / 10) as i64, &payload(o)).expect("appends");
        if o % 500 == 499 {
            log.sync(0).expect("syncs");
        }
    }
    assert!(log.segment_count() > 1);
    assert_eq!(log.offset_at_timestamp(0).expect("seeks"), 0);
    assert_eq!(log.offset_at_timestamp(10_000).expect("seeks"), 0);
    for ms in [1, 7, 99, 100, 250, 251, 333, 498, 499] {
        assert_eq!(log.offset_at_timestamp(10_000 + ms).expect("seeks"), ms as u64 * 10);
    }
    assert_eq!(log.offset_at_timestamp(10_500).expect("seeks"), 5000);
    // Clock steps back: stored as the newest time so far.
    log.append(5000, 5, b"late").expect("appends");
    log.sync(0).expect("syncs");
    assert_eq!(read_all(&log, 5000)[0].timestamp_ms, 10_499);
    assert_eq!(log.offset_at_timestamp(10_499).expect("seeks"), 4990);
}

#[test]
fn reopen_keeps_everything() {
    let dir = TempDir::new("reopen");
    let log = open(&dir, 1000);
    write(&log, 0, 50, 3);
    let (segments, bytes) = (log.segment_count(), log.bytes());
    drop(log);
    let log = open(&dir, 1000);
    assert_eq!((log.first_offset(), log.next_offset(), log.committed()), (0, 50, 50));
    assert_eq!((log.segment_count(), log.bytes()), (segments, bytes));
    assert_records(&read_all(&log, 0), 0, 50);
    write(&log, 50, 80, 3);
    drop(log);
    let log = open(&dir, 1000);
    assert_records(&read_all(&log, 0), 0, 80);
    assert_eq!(log.offset_at_timestamp(1060).expect("seeks"), 60);
}

#[test]
fn reopen_applies_retention() {
    let dir = TempDir::new("reopen-retention");
    write(&open(&dir, 1000), 0, 50, 3);
    let cfg = StreamLogConfig { max_length_bytes: Some(2000), ..config(1000) };
    let log = StreamLog::open(&dir.0, cfg).expect("opens");
    assert!(log.first_offset() > 0 && log.bytes() <= 2000);
    assert_records(&read_all(&log, 0), log.first_offset(), 50);
}

/// Appends bytes to a file.
fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new().append(true).open(path).expect("opens").write_all(bytes).expect("writes");
}

#[test]
fn torn_tail_is_truncated() {
    for cut in [1, 5, RECORD_HEADER_LEN as u64, RECORD - 1] {
        let dir = TempDir::new("torn");
        write(&open(&dir, 1 << 30), 0, 10, 10);
        let path = segment_path(&dir.0, 0);
        let len = fs::metadata(&path).expect("segment").len();
        OpenOptions::new().write(true).open(&path).expect("opens").set_len(len - cut).expect("truncates");
        let log = open(&dir, 1 << 30);
        assert_eq!((log.next_offset(), log.committed()), (9, 9));
        assert_eq!(fs::metadata(&path).expect("segment").len(), HEADER_LEN + 9 * RECORD);
        assert_records(&read_all(&log, 0), 0, 9);
        write(&log, 9, 12, 1);
        drop(log);
        assert_records(&read_all(&open(&dir, 1 << 30), 0), 0, 12);
    }
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    let mut huge = Vec::new();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 4]);
    huge.extend_from_slice(&10u64.to_le_bytes());
    huge.extend_from_slice(&[0; 8]);
    for garbage in [vec![0xAB; 100], vec![0; 4096], huge] {
        let dir = TempDir::new("garbage");
        write(&open(&dir, 1 << 30), 0, 10, 10);
        append_bytes(&segment_path(&dir.0, 0), &garbage);
        let log = open(&dir, 1 << 30);
        assert_eq!(log.committed(), 10);
        assert_eq!(fs::metadata(segment_path(&dir.0, 0)).expect("segment").len(), HEADER_LEN + 10 * RECORD);
        assert_records(&read_all(&log, 0), 0, 10);
    }
}

#[test]
fn corrupt_crc_in_the_last_segment_truncates_there() {
    let dir = TempDir::new("crc");
    write(&open(&dir, 1 << 30), 0, 20, 20);
    let path = segment_path(&dir.0, 0);
    let mut bytes = fs::read(&path).expect("segment");
    bytes[(HEADER_LEN + 10 * RECORD) as usize + RECORD_HEADER_LEN + 3] ^= 1;
    fs::write(&path, &bytes).expect("writes");
    let log = open(&dir, 1 << 30);
    assert_eq!(log.committed(), 10);
    assert_records(&read_all(&log, 0), 0, 10);
    write(&log, 10, 20, 5);
    assert_records(&read_all(&log, 0), 0, 20);
}

#[test]
fn index_entries_past_the_truncation_are_dropped_and_missing_ones_rebuilt() {
    let dir = TempDir::new("index-recovery");
    write(&open(&dir, 1 << 30), 0, 3000, 3000);
    let seg = segment_path(&dir.0, 0);
    let idx = index_path(&dir.0, 0);
    let full_index = fs::read(&idx).expect("index");
    let per_entry = INDEX_INTERVAL.div_ceil(RECORD);

    // Cut in the middle of the record after the third entry's.
    let cut = HEADER_LEN + (2 * per_entry + 1) * RECORD + 7;
    OpenOptions::new().write(true).open(&seg).expect("opens").set_len(cut).expect("truncates");
    let log = open(&dir, 1 << 30);
    assert_eq!(log.committed(), 2 * per_entry + 1);
    assert_eq!(fs::read(&idx).expect("index"), full_index[..3 * ENTRY_LEN]);
    write(&log, log.committed(), 3000, 500);
    drop(log);
    // The writer picked up the index where recovery left it.
    assert_eq!(fs::read(&idx).expect("index"), full_index);

    // Without its index, the last segment's index is rebuilt by the writer's rule.
    fs::remove_file(&idx).expect("removes");
    let log = open(&dir, 1 << 30);
    assert_eq!(fs::read(&idx).expect("index"), full_index);
    assert_records(&read_all(&log, 1234), 1234, 3000);
}

/// The active segment's index is not fsynced with each commit (only when the segment
/// is sealed): after a crash its last entries may be lost or wrong. A last entry that
/// points at the wrong place must not cost a single record.
#[test]
fn a_wrong_last_index_entry_loses_nothing() {
    let dir = TempDir::new("index-wrong");
    write(&open(&dir, 1 << 30), 0, 3000, 3000);
    let idx = index_path(&dir.0, 0);
    let mut index = fs::read(&idx).expect("index");
    let n = index.len() / ENTRY_LEN;
    assert!(n >= 3, "several entries");
    // The last entry: a plausible offset and position, but not where that record starts.
    let last = &mut index[(n - 1) * ENTRY_LEN..];
    let position = u64::from_le_bytes(last[16..24].try_into().unwrap());
    last[16..24].copy_from_slice(&(position + 13).to_le_bytes());
    fs::write(&idx, &index).expect("rewrites the index");
    let log = open(&dir, 1 << 30);
    assert_eq!(log.committed(), 3000, "every record is kept");
    assert_records(&read_all(&log, 0), 0, 3000);
    assert_records(&read_all(&log, 2990), 2990, 3000);
}

#[test]
fn reset_to_synced_then_retry_has_no_duplicates_or_gaps() {
    let dir = TempDir::new("reset");
    let log = open(&dir, 1 << 30);
    write(&log, 0, 5, 5);
    for o in 5..10 {
        log.append(o, 1000 + o as i64, &payload(o)).expect("appends");
    }
    // As if a sync wrote part of the batch and then failed.
    append_bytes(&segment_path(&dir.0, 0), &[0x55; 200]);
    log.reset_to_synced().expect("resets");
    assert_eq!((log.next_offset(), log.committed()), (5, 5));
    assert_eq!(fs::metadata(segment_path(&dir.0, 0)).expect("segment").len(), HEADER_LEN + 5 * RECORD);
    // The caller retries the whole batch, including what was committed before.
    write(&log, 3, 10, 100);
    assert_records(&read_all(&log, 0), 0, 10);
    drop(log);
    assert_records(&read_all(&open(&dir, 1 << 30), 0), 0, 10);
}

#[test]
fn appending_a_written_offset_is_skipped_and_a_gap_refused() {
    let dir = TempDir::new("skip");
    let log = open(&dir, 1 << 30);
    write(&log, 0, 5, 5);
    log.append(3, 0, b"again").expect("skipped");
    log.append(4, 0, b"again").expect("skipped");
    assert_eq!(log.next_offset(), 5);
    assert!(log.append(7, 0, b"gap").is_err());
    assert_eq!(log.next_offset(), 5);
    write(&log, 5, 8, 3);
    assert_records(&read_all(&log, 0), 0, 8);
}

#[test]
fn open_ignores_foreign_files_removes_orphan_indexes_and_refuses_bad_headers() {
    let dir = TempDir::new("files");
    write(&open(&dir, 1000), 0, 30, 3);
    fs::write(dir.0.join("notes.txt"), b"hello").expect("writes");
    fs::write(dir.0.join("123.segment"), b"not ours").expect("writes");
    fs::write(index_path(&dir.0, 7777), [0; 24]).expect("writes");
    let log = open(&dir, 1000);
    assert_records(&read_all(&log, 0), 0, 30);
    drop(log);
    assert!(!index_path(&dir.0, 7777).exists());
    assert!(dir.0.join("notes.txt").exists() && dir.0.join("123.segment").exists());

    let mut bytes = fs::read(segment_path(&dir.0, 9)).expect("segment");
    bytes[0] = b'X';
    fs::write(segment_path(&dir.0, 9), &bytes).expect("writes");
    match StreamLog::open(&dir.0, config(1000)) {
        Err(StoreError::Corrupt { path, .. }) => assert!(path.ends_with("00000000000000000009.segment"), "{path}"),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a log"),
    }
}

#[test]
fn empty_or_header_only_last_segment_is_fine() {
    for content in [&b""[..], &b"HMQ"[..], &[0u8; 8][..], &b"HMQSEG01"[..]] {
        let dir = TempDir::new("empty");
        write(&open(&dir, 1000), 0, 9, 9);
        // The crash came right after a roll created the next segment.
        fs::write(segment_path(&dir.0, 9), content).expect("writes");
        let log = open(&dir, 1000);
        assert_eq!((log.segment_count(), log.committed()), (2, 9));
        write(&log, 9, 20, 3);
        drop(log);
        assert_records(&read_all(&open(&dir, 1000), 0), 0, 20);
    }
}

#[test]
fn destroy_removes_everything() {
    let dir = TempDir::new("destroy");
    let log = open(&dir, 1000);
    write(&log, 0, 30, 3);
    let mut r = log.reader(0).expect("reader");
    log.destroy().expect("destroys");
    assert!(!dir.0.exists());
    assert!(r.next().expect("reads").is_none());
    assert!(log.append(30, 0, b"x").is_err());
}
