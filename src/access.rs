//! dfs's own record of when each file was last used.
//!
//! atime is useless for choosing cold files (noatime and relatime mounts,
//! backup tools that read everything), so dfs records every open it serves:
//! the last access, and the reads in the current promotion window. The
//! record is kept in memory and saved beside the tiers
//! (`<first tier>/.dfs/access.bin`) so it survives a restart; losing it only
//! means falling back to the files' own times.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 8] = b"DFSACC01";

/// One file's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// Last open, in seconds since the epoch.
    pub last: u32,
    /// Start of the current read window.
    pub window_start: u32,
    /// Opens for read since `window_start`.
    pub reads: u32,
}

/// Last-access records by node id.
#[derive(Debug)]
pub struct AccessLog {
    map: crate::fs::nodes::IdMap<Access>,
    window: AtomicU32,
}

/// Seconds since the epoch, saturating into u32 (good until 2106).
pub fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            map: Default::default(),
            window: AtomicU32::new(7 * 86_400),
        }
    }
}

impl AccessLog {
    /// Sets the promotion window (`[mover.promote] within`).
    pub fn set_window(&self, secs: u32) {
        self.window.store(secs.max(1), Ordering::Relaxed);
    }

    /// Records an open of `ino` now; `read` when it was opened for reading.
    pub fn record(&self, ino: u64, read: bool) {
        self.record_at(ino, read, now_secs());
    }

    /// Records an open at time `now` (tests drive the clock).
    pub fn record_at(&self, ino: u64, read: bool, now: u32) {
        let window = self.window.load(Ordering::Relaxed);
        let mut e = self.map.entry(ino).or_default();
        e.last = e.last.max(now);
        if read {
            if now.saturating_sub(e.window_start) > window || e.reads == 0 {
                e.window_start = now;
                e.reads = 1;
            } else {
                e.reads += 1;
            }
        }
    }

    /// The record of `ino`, if dfs saw it used.
    pub fn get(&self, ino: u64) -> Option<Access> {
        self.map.get(&ino).map(|e| *e)
    }

    /// Forgets `ino` (after it was deleted, or promoted).
    pub fn reset_reads(&self, ino: u64) {
        if let Some(mut e) = self.map.get_mut(&ino) {
            e.reads = 0;
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Saves the records to `path` atomically (write, fsync, rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut buf = Vec::with_capacity(8 + self.map.len() * 20);
        buf.extend_from_slice(MAGIC);
        for e in self.map.iter() {
            buf.extend_from_slice(&e.key().to_le_bytes());
            buf.extend_from_slice(&e.last.to_le_bytes());
            buf.extend_from_slice(&e.window_start.to_le_bytes());
            buf.extend_from_slice(&e.reads.to_le_bytes());
        }
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    }

    /// Loads records saved by [`AccessLog::save`]; a missing or damaged file
    /// leaves the log as it was (the files' own times stand in).
    pub fn load(&self, path: &Path) -> io::Result<usize> {
        let mut data = Vec::new();
        match fs::File::open(path) {
            Ok(mut f) => f.read_to_end(&mut data)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if data.len() < 8 || &data[..8] != MAGIC || (data.len() - 8) % 20 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a dfs access record",
            ));
        }
        let mut n = 0;
        for rec in data[8..].chunks_exact(20) {
            let word = |a: usize| u32::from_le_bytes([rec[a], rec[a + 1], rec[a + 2], rec[a + 3]]);
            let mut ino = [0u8; 8];
            ino.copy_from_slice(&rec[..8]);
            self.map.insert(
                u64::from_le_bytes(ino),
                Access {
                    last: word(8),
                    window_start: word(12),
                    reads: word(16),
                },
            );
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_count_within_the_window_only() {
        let log = AccessLog::default();
        log.set_window(100);
        log.record_at(7, true, 1000);
        log.record_at(7, true, 1050);
        assert_eq!(log.get(7).map(|a| a.reads), Some(2));
        log.record_at(7, true, 1200);
        assert_eq!(
            log.get(7).map(|a| (a.reads, a.window_start, a.last)),
            Some((1, 1200, 1200))
        );
        log.record_at(7, false, 1300);
        assert_eq!(log.get(7).map(|a| (a.reads, a.last)), Some((1, 1300)));
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("access.bin");
        let log = AccessLog::default();
        log.record_at(1, true, 10);
        log.record_at(2, false, 20);
        log.save(&p).expect("save");
        let back = AccessLog::default();
        assert_eq!(back.load(&p).expect("load"), 2);
        assert_eq!(back.get(2).map(|a| a.last), Some(20));
        fs::write(&p, b"garbage").expect("write");
        assert!(AccessLog::default().load(&p).is_err());
    }
}
