//! Remembered listings: the merged names of directories whose every change
//! dfs has seen, so that listing them costs no getdents on the tiers.
//!
//! Reading a tier's copy of a directory is most of a listing's cost (on
//! ext4, the hashed readdir sorts every name of the copy into a tree first),
//! and a directory that clients both fill and list (an upload folder, a
//! Samba share) is read again after every create. dfs makes those creates
//! itself, so it can keep the listing up to date instead:
//!
//! - a listing read from the tiers is remembered, and so is the empty
//!   listing of a directory made through dfs;
//! - a name created through dfs is added to its directory's memory;
//! - any other change through dfs drops the memory of the directories it
//!   touches (unlink, a file's rename), or of every directory (anything
//!   that moves directories or files between tiers, links, and the mover);
//! - a change made on a tier by another program drops every memory when
//!   the watcher reports it.
//!
//! Memories are used only while the tiers are watched and the kernel
//! itself keeps listings (see `Fs::lists_without_open`): they are exactly
//! as fresh as the listings the kernel caches on the same watcher's word.
//!
//! Races: a listing read from the tiers is kept only if no change through
//! dfs was recorded while it was read (`seq`), and it is stamped with the
//! `epoch` seen before the read, so a change reported meanwhile makes it
//! stale at once. Additions and drops bump `seq` under the lock of the
//! directory's entry, the same lock a listing is kept under.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::mapref::entry::Entry;
use rustix::fs::{FileType, Stat};

use super::dir::{self, DirEntry, DirHandle};
use super::nodes::IdMap;

/// At most this many names are remembered over all directories (60 to 120
/// bytes each, with the vectors' spare room); past it every memory is
/// dropped and they start again. Enough for the directories in active use
/// on a file server, and at most about 2 MiB.
const MAX_NAMES: usize = 16 * 1024;

/// At most this many names of one directory (a larger one is read from
/// the tiers each time it is listed).
const MAX_DIR_NAMES: usize = MAX_NAMES / 2;

/// At most this many directories are remembered.
const MAX_DIRS: usize = 1024;

/// One directory's remembered listing.
struct Memory {
    /// The epoch it was read or made in: stale once the epoch moves on.
    epoch: u64,
    entries: Vec<DirEntry>,
    names: Vec<u8>,
    /// Whether `entries` are in cookie order (additions go to the end).
    sorted: bool,
}

/// The remembered listings of one mount.
#[derive(Default)]
pub struct Remembered {
    /// Bumped by every change that may leave any memory stale.
    epoch: AtomicU64,
    /// Bumped by every change recorded through dfs (additions too).
    seq: AtomicU64,
    dirs: IdMap<Memory>,
    names: AtomicUsize,
}

impl std::fmt::Debug for Remembered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remembered")
            .field("dirs", &self.dirs.len())
            .field("names", &self.names.load(Ordering::Relaxed))
            .finish()
    }
}

/// Taken before a directory is read from the tiers, and given back to
/// [`Remembered::keep`] with what was read.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
    seq: u64,
}

impl Remembered {
    /// What a read of the tiers starting now must be checked against.
    pub fn ticket(&self) -> Ticket {
        // The epoch first: a change reported between the two loads makes
        // the kept listing stale rather than current.
        let epoch = self.epoch.load(Ordering::Acquire);
        let seq = self.seq.load(Ordering::Acquire);
        Ticket { epoch, seq }
    }

    /// Remembers listing `h` of directory `dir`, read from the tiers after
    /// `t` was taken, unless a change through dfs was recorded since.
    pub fn keep(&self, dir: u64, t: Ticket, h: &DirHandle) {
        let (entries, names) = h.parts();
        if entries.len() > MAX_DIR_NAMES {
            return;
        }
        self.store(dir, t, entries.to_vec(), names.to_vec());
    }

    /// Remembers that directory `dir`, just made through dfs, is empty;
    /// `t` was taken before it was made. Not if any change through dfs ran
    /// since: a client may have found the new directory and created a name
    /// in it before this call.
    pub fn made_empty(&self, dir: u64, t: Ticket) {
        self.store(dir, t, Vec::new(), Vec::new());
    }

    /// Stores `entries` (in cookie order) and `names` as `dir`'s memory,
    /// read or made after `t` was taken, unless a change through dfs was
    /// recorded since.
    fn store(&self, dir: u64, t: Ticket, entries: Vec<DirEntry>, names: Vec<u8>) {
        self.make_room(entries.len());
        let entry = self.dirs.entry(dir);
        // Under the entry's lock: an addition or drop for `dir` bumps `seq`
        // under the same lock, before or after this check.
        if self.seq.load(Ordering::Acquire) != t.seq {
            return;
        }
        self.names.fetch_add(entries.len(), Ordering::Relaxed);
        let m = Memory {
            epoch: t.epoch,
            entries,
            names,
            sorted: true,
        };
        match entry {
            Entry::Occupied(mut o) => {
                let old = o.insert(m);
                self.names.fetch_sub(old.entries.len(), Ordering::Relaxed);
            }
            Entry::Vacant(v) => {
                v.insert(m);
            }
        }
    }

    /// The remembered listing of `dir`, if it is current: (entries in
    /// cookie order, their name bytes).
    pub fn recall(&self, dir: u64) -> Option<(Vec<DirEntry>, Vec<u8>)> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut m = self.dirs.get_mut(&dir)?;
        if m.epoch != epoch {
            let n = m.entries.len();
            drop(m);
            if self.dirs.remove_if(&dir, |_, m| m.epoch != epoch).is_some() {
                self.names.fetch_sub(n, Ordering::Relaxed);
            }
            return None;
        }
        if !m.sorted {
            let m = &mut *m;
            dir::order(&mut m.entries, &m.names);
            m.sorted = true;
        }
        Some((m.entries.clone(), m.names.clone()))
    }

    /// Name `name` was created through dfs in directory `dir`, on tier
    /// `tier`, as node `ino` whose copy is `st`.
    /// Every create calls this: one map lookup and a few atomics.
    pub fn added(&self, dir: u64, name: &[u8], tier: usize, ino: u64, st: &Stat) {
        if self.names.load(Ordering::Relaxed) >= MAX_NAMES {
            self.clear();
        }
        match self.dirs.entry(dir) {
            Entry::Occupied(mut o) => {
                self.seq.fetch_add(1, Ordering::AcqRel);
                let m = o.get_mut();
                let name_at = u32::try_from(m.names.len()).ok();
                let Some(name_at) = name_at.filter(|_| m.entries.len() < MAX_DIR_NAMES) else {
                    let n = m.entries.len();
                    o.remove();
                    self.names.fetch_sub(n, Ordering::Relaxed);
                    return;
                };
                m.names.extend_from_slice(name);
                m.entries.push(DirEntry::new(
                    name,
                    name_at,
                    st.st_ino,
                    ino,
                    tier,
                    FileType::from_raw_mode(st.st_mode),
                ));
                m.sorted = false;
                self.names.fetch_add(1, Ordering::Relaxed);
            }
            Entry::Vacant(_) => {
                // Held until here: a listing of `dir` being kept now sees
                // the bump and is not kept (it may have missed the name).
                self.seq.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// A name in directory `dir` went or changed through dfs (not by a
    /// create): its memory goes.
    pub fn forget(&self, dir: u64) {
        match self.dirs.entry(dir) {
            Entry::Occupied(o) => {
                self.seq.fetch_add(1, Ordering::AcqRel);
                let (_, m) = o.remove_entry();
                self.names.fetch_sub(m.entries.len(), Ordering::Relaxed);
            }
            Entry::Vacant(_) => {
                self.seq.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Something changed that may touch any directory: every memory is
    /// stale (and dropped when next asked for).
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// The kernel forgot directory `dir`: nobody will list it by that id.
    pub fn dropped(&self, dir: u64) {
        if let Some((_, m)) = self.dirs.remove(&dir) {
            self.names.fetch_sub(m.entries.len(), Ordering::Relaxed);
        }
    }

    /// Drops every memory if `more` names, or one more directory, would
    /// pass the bounds (before a memory is stored, not on every create).
    fn make_room(&self, more: usize) {
        if self.names.load(Ordering::Relaxed) + more > MAX_NAMES || self.dirs.len() >= MAX_DIRS {
            self.clear();
        }
    }

    /// Drops every memory.
    fn clear(&self) {
        self.dirs.clear();
        self.names.store(0, Ordering::Relaxed);
    }

    /// How many directories have a memory (for tests and `status`).
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether no directory has a memory.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_of(ino: u64) -> Stat {
        // SAFETY: Stat is plain data; zero is a valid value for every field.
        let mut st: Stat = unsafe { std::mem::zeroed() };
        st.st_ino = ino;
        st.st_mode = libc::S_IFREG | 0o644;
        st
    }

    fn names(r: &Remembered, dir: u64) -> Option<Vec<Vec<u8>>> {
        let (entries, names) = r.recall(dir)?;
        let mut v: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| dir::name_in(&names, e).to_vec())
            .collect();
        v.sort();
        Some(v)
    }

    #[test]
    fn a_made_directory_collects_its_creates() {
        let r = Remembered::default();
        r.made_empty(7, r.ticket());
        assert_eq!(names(&r, 7), Some(vec![]));
        r.added(7, b"b", 0, 100, &stat_of(100));
        r.added(7, b"a", 1, 101, &stat_of(101));
        assert_eq!(names(&r, 7), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        let (entries, _) = r.recall(7).unwrap();
        assert!(entries.windows(2).all(|w| w[0].cookie < w[1].cookie));
    }

    #[test]
    fn a_made_directory_with_a_create_before_it_was_remembered_is_not() {
        let r = Remembered::default();
        let t = r.ticket();
        r.added(7, b"early", 0, 100, &stat_of(100));
        r.made_empty(7, t);
        assert_eq!(names(&r, 7), None);
    }

    #[test]
    fn forgetting_one_directory_keeps_the_others() {
        let r = Remembered::default();
        r.made_empty(1, r.ticket());
        r.made_empty(2, r.ticket());
        r.forget(1);
        assert_eq!(names(&r, 1), None);
        assert_eq!(names(&r, 2), Some(vec![]));
        r.forget_all();
        assert_eq!(names(&r, 2), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_listing_read_across_a_change_is_not_kept() {
        let r = Remembered::default();
        let h = DirHandle::from_parts(3, Vec::new(), Vec::new(), Vec::new().into());
        // A create in another directory while this one was read: not kept
        // (the bump is global; it costs a read, never a stale listing).
        let t = r.ticket();
        r.added(9, b"x", 0, 5, &stat_of(5));
        r.keep(3, t, &h);
        assert_eq!(names(&r, 3), None);
        // Nothing meanwhile: kept.
        let t = r.ticket();
        r.keep(3, t, &h);
        assert_eq!(names(&r, 3), Some(vec![]));
        // A change on the tiers reported while it was read: kept, but stale.
        let t = r.ticket();
        r.epoch.fetch_add(1, Ordering::AcqRel);
        r.keep(4, t, &h);
        assert_eq!(names(&r, 4), None);
    }

    #[test]
    fn memory_is_bounded() {
        let r = Remembered::default();
        for d in 0..(MAX_DIRS as u64 + 10) {
            r.made_empty(d, r.ticket());
        }
        assert!(r.len() <= MAX_DIRS);
        r.made_empty(1, r.ticket());
        for i in 0..(MAX_NAMES as u64) {
            r.added(1, format!("n{i}").as_bytes(), 0, i, &stat_of(i));
        }
        assert!(r.names.load(Ordering::Relaxed) <= MAX_DIR_NAMES);
    }
}
