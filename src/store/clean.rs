//! The clean-shutdown record: a small file beside the store, written after the store
//! was closed cleanly, with how much it held. The next start compares the store with
//! it (a store that needs repair, or holds fewer records, after a clean shutdown was
//! damaged or replaced in between) and deletes it before anything is written, so a
//! crash during that run is never mistaken for a clean shutdown.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The record's file name inside the data directory.
pub const FILE_NAME: &str = "clean-shutdown.json";

/// What the store held when it was closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Message records (bodies).
    pub messages: u64,
    /// Queue entries (a message in a queue).
    pub entries: u64,
    /// Messages held by delayed-message exchanges.
    pub delayed: u64,
}

impl Counts {
    /// Whether `self` lacks records that `recorded` had: some kind has fewer rows.
    pub fn fewer_than(&self, recorded: &Counts) -> bool {
        self.messages < recorded.messages || self.entries < recorded.entries || self.delayed < recorded.delayed
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} messages, {} queue entries, {} delayed messages", self.messages, self.entries, self.delayed)
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn io(what: &str, p: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", p.display()))
}

/// The record left by the last clean shutdown, if there is one.
pub fn read(dir: &Path) -> Result<Option<Counts>, StoreError> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Damaged {
            path: p.display().to_string(),
            detail: format!("the clean-shutdown record is unreadable ({e})"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", &p, e)),
    }
}

/// Records a clean shutdown (the store is closed): written to a temporary file,
/// synced, renamed into place and the directory synced, so it is whole or absent.
pub fn write(dir: &Path, counts: &Counts) -> Result<(), StoreError> {
    let p = path(dir);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let json = serde_json::to_vec(counts).unwrap_or_default();
    let mut f = File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| io("renaming", &tmp, e))?;
    sync_dir(dir)
}

/// Deletes the record (the store is in use from now on) and makes that durable.
pub fn remove(dir: &Path) -> Result<(), StoreError> {
    let p = path(dir);
    match std::fs::remove_file(&p) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", &p, e)),
    }
}

/// Makes renames, creations and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_written_read_back_and_removed() {
        let dir = std::env::temp_dir().join(format!("haremq-clean-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(read(&dir).expect("read"), None);
        let c = Counts { messages: 3, entries: 4, delayed: 1 };
        write(&dir, &c).expect("write");
        assert_eq!(read(&dir).expect("read"), Some(c));
        assert!(Counts { messages: 3, entries: 3, delayed: 1 }.fewer_than(&c));
        assert!(!Counts { messages: 3, entries: 5, delayed: 1 }.fewer_than(&c));
        remove(&dir).expect("remove");
        assert_eq!(read(&dir).expect("read"), None);
        std::fs::write(dir.join(FILE_NAME), b"{").expect("garbage");
        assert!(matches!(read(&dir), Err(StoreError::Damaged { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
