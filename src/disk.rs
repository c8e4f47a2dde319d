//! The disk alarm: publishers are blocked while the data directory's filesystem has
//! less free space than `disk_free_limit` (RabbitMQ's alarm of the same name, default
//! 50 MB), so the store never runs out of space in the middle of a commit.
//!
//! Free space is read with `statvfs` at most once per [`CHECK_EVERY`], whoever asks
//! (connections ask before each read while they publish); between reads the last
//! answer stands.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How stale the free-space figure may be.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct DiskAlarm {
    dir: PathBuf,
    /// Bytes that must stay free; 0 disables the alarm.
    limit: u64,
    raised: AtomicBool,
    /// When free space was last read, as ms since `epoch`.
    checked_ms: AtomicU64,
    epoch: Instant,
}

impl DiskAlarm {
    pub fn new(dir: &Path, limit: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            limit,
            raised: AtomicBool::new(false),
            checked_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        }
    }

    /// Whether the alarm is raised (free space re-read if the last reading is older
    /// than [`CHECK_EVERY`]).
    pub fn is_raised(&self) -> bool {
        if self.limit == 0 {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.checked_ms.load(Ordering::Relaxed);
        let stale = last == u64::MAX || now.saturating_sub(last) >= CHECK_EVERY.as_millis() as u64;
        if stale && self.checked_ms.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            match free_space(&self.dir) {
                Some(free) => {
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
