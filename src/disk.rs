//! The disk alarm: publishers are blocked while the data directory's filesystem has
//! less free space than `disk_free_limit` (RabbitMQ's alarm of the same name, default
//! 50 MB), so the store never runs out of space in the middle of a commit — and while
//! the store is failed (a commit failed and no retry has succeeded yet, e.g. the disk
//! filled up anyway), whatever the limit.
//!
//! Free space is read with `statvfs` at most once per [`CHECK_EVERY`], whoever asks
//! (connections ask before each read while they publish), and sooner once the
//! messages sent to the store since the last reading could have used half the space
//! that was left above the limit, so a fast publisher cannot fill a small disk between
//! two readings; between readings the last answer stands. Records sent to the store
//! and not committed yet count as used space (twice their size, see [`WRITE_COST`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::StoreHandle;

/// How stale the free-space figure may be.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Disk bytes a record's byte costs at most, for estimates: redb allocates a large
/// value in a power-of-two run of pages (a 256 KiB body takes 512 KiB).
const WRITE_COST: u64 = 2;

#[derive(Debug)]
pub struct DiskAlarm {
    dir: PathBuf,
    /// Bytes that must stay free; 0 disables the free-space check.
    limit: u64,
    raised: AtomicBool,
    /// When free space was last read, as ms since `epoch`.
    checked_ms: AtomicU64,
    epoch: Instant,
    /// The store: its failed state raises the alarm, and the bytes sent to it since
    /// the last reading make the next one come sooner.
    store: Option<StoreHandle>,
    /// [`StoreHandle::bytes_sent`] at the last reading.
    sent_at_check: AtomicU64,
    /// Bytes that may be sent before free space is read again.
    budget: AtomicU64,
}

impl DiskAlarm {
    pub fn new(dir: &Path, limit: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            limit,
            raised: AtomicBool::new(false),
            checked_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            store: None,
            sent_at_check: AtomicU64::new(0),
            budget: AtomicU64::new(0),
        }
    }

    /// The free-space limit in bytes (0: not checked).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Free bytes on the data directory's filesystem now (None if unreadable).
    pub fn free_bytes(&self) -> Option<u64> {
        free_space(&self.dir)
    }

    /// Couples the alarm to the store (see the module doc).
    pub fn with_store(mut self, store: Option<StoreHandle>) -> Self {
        self.store = store;
        self
    }

    /// Whether the alarm is raised (free space re-read if the last reading is older
    /// than [`CHECK_EVERY`] or enough was sent to the store since).
    pub fn is_raised(&self) -> bool {
        if self.store.as_ref().is_some_and(StoreHandle::is_failed) {
            return true;
        }
        if self.limit == 0 {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.checked_ms.load(Ordering::Relaxed);
        let sent = self.store.as_ref().map_or(0, StoreHandle::bytes_sent);
        let stale = last == u64::MAX
            || now.saturating_sub(last) >= CHECK_EVERY.as_millis() as u64
            || sent.saturating_sub(self.sent_at_check.load(Ordering::Relaxed)) >= self.budget.load(Ordering::Relaxed);
        if stale && self.checked_ms.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            match free_space(&self.dir) {
                Some(on_disk) => {
                    // What the store was sent and has not written yet is as good as
                    // used, twice over: redb rounds a large value up to a power of two
                    // and copies the tree pages it changes.
                    let pending = self.store.as_ref().map_or(0, StoreHandle::bytes_pending);
                    let free = on_disk.saturating_sub(pending.saturating_mul(WRITE_COST));
                    self.sent_at_check.store(sent, Ordering::Relaxed);
                    // Look again once what was sent since could have used half the
                    // space left above the limit.
                    self.budget.store(free.saturating_sub(self.limit) / (2 * WRITE_COST), Ordering::Relaxed);
                    let low = free < self.limit;
                    if self.raised.swap(low, Ordering::AcqRel) != low {
                        if low {
                            log::warn!(
                                "disk alarm set: {free} bytes free in {}, limit {}; publishers are blocked",
                                self.dir.display(),
                                self.limit
                            );
                        } else {
                            log::warn!("disk alarm cleared: {free} bytes free in {}", self.dir.display());
                        }
                    }
                }
                None => log::debug!("cannot read free space of {}", self.dir.display()),
            }
        }
        self.raised.load(Ordering::Acquire)
    }
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string and `st` points to writable
    // memory of the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some, u64 on Linux).
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    blocks.checked_mul(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_compared() {
        let dir = std::env::temp_dir();
        let free = free_space(&dir).expect("statvfs works on the temp dir");
        assert!(free > 0);
        assert!(!DiskAlarm::new(&dir, 0).is_raised(), "0 disables the alarm");
        assert!(!DiskAlarm::new(&dir, 1).is_raised(), "more than one byte is free");
        assert!(DiskAlarm::new(&dir, u64::MAX).is_raised(), "nobody has 2^64 bytes free");
    }
}
