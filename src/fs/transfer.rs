//! Moving one file between tiers without any client noticing.
//!
//! The protocol (DESIGN.md, "Moving files between tiers"): copy data and
//! metadata to a hidden temporary on the destination tier and fsync it;
//! then, under the node's switch lock (new opens wait), check that no handle
//! is open and the source is unchanged, rename the temporary into place,
//! remove the source and fsync both directories. At every instant the name
//! resolves to a complete copy with the latest content; a crash leaves at
//! most a temporary (removed at the next start) or two identical copies,
//! of which the faster one wins.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, Stat, Timespec, Timestamps};

use super::{Errno, Fs, INO_XATTR, Result, is_internal_xattr, kind_of, not_here, os};
use crate::tiers::{STATE_DIR, split_parent};

/// Where the mover keeps its temporaries, inside each tier's state dir.
pub const TMP_DIR: &str = "tmp";

/// Where placeholders pin the inode numbers of moved files' ids.
pub const IDS_DIR: &str = "ids";

/// What happened to one move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file now lives on the destination tier.
    Moved {
        /// Bytes copied.
        bytes: u64,
    },
    /// Not moved; retried at a later pass.
    Skipped(Skip),
}

/// Why a move did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The name is no longer on the source tier (or is shadowed there).
    Gone,
    /// Not a regular file.
    NotAFile,
    /// More than one hard link: all names move together or not at all, and
    /// finding every name costs a scan the mover does not make.
    HardLinked,
    /// A handle on the file is open.
    Busy,
    /// The source changed while it was being copied.
    Changed,
    /// Not enough room on the destination.
    NoRoom,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::Gone => "no longer on the source tier",
            Skip::NotAFile => "not a regular file",
            Skip::HardLinked => "has several hard links",
            Skip::Busy => "open by a client",
            Skip::Changed => "changed during the copy",
            Skip::NoRoom => "not enough room on the destination",
        })
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn ts(sec: i64, nsec: u64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

fn same_version(a: &Stat, b: &Stat) -> bool {
    a.st_ino == b.st_ino
        && a.st_dev == b.st_dev
        && a.st_size == b.st_size
        && a.st_mtime == b.st_mtime
        && a.st_mtime_nsec == b.st_mtime_nsec
        && a.st_ctime == b.st_ctime
        && a.st_ctime_nsec == b.st_ctime_nsec
}

impl Fs {
    /// `<tier i>/.dfs/<sub>`, created on demand and kept open: a handle
    /// on a directory someone removed (no links left) is replaced.
    pub(super) fn state_dir(&self, i: usize, sub: &'static str) -> Result<Arc<OwnedFd>> {
        let mut cache = self.state_dirs.lock();
        if let Some(pos) = cache.iter().position(|(k, _)| *k == (i, sub)) {
            let fd = cache[pos].1.clone();
            if rustix::fs::fstat(&*fd).is_ok_and(|st| st.st_nlink > 0) {
                return Ok(fd);
            }
            cache.swap_remove(pos);
        }
        let t = self.tier(i)?;
        let rel = format!("{STATE_DIR}/{sub}");
        for r in [STATE_DIR, rel.as_str()] {
            let (dir, name) = t.parent(r.as_bytes())?;
            match rustix::fs::mkdirat(&dir, os(name), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let fd = Arc::new(t.open(rel.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)?);
        cache.push(((i, sub), fd.clone()));
        Ok(fd)
    }

    /// Where copies wait for their switch on tier `i`.
    fn tmp_dir(&self, i: usize) -> Result<Arc<OwnedFd>> {
        self.state_dir(i, TMP_DIR)
    }

    /// `<tier>/.dfs/ids`: placeholders pinning the inode numbers moved files'
    /// node ids came from.
    fn ids_dir(&self, i: usize) -> Result<Arc<OwnedFd>> {
        self.state_dir(i, IDS_DIR)
    }

    /// Drops the placeholders pinning `ino` (its file was deleted).
    pub(crate) fn unpin(&self, ino: u64) {
        let name = format!("{STATE_DIR}/{IDS_DIR}/{ino:016x}");
        for t in self.tiers.iter() {
            if let Ok((dir, n)) = t.parent(name.as_bytes()) {
                let _ = rustix::fs::unlinkat(&dir, os(n), AtFlags::empty());
            }
        }
    }

    /// Removes what unfinished moves left in every tier's temporary
    /// directory, and repairs placeholders a crash left half-made (run at
    /// mount, before clients arrive). Returns the count of temporaries.
    pub fn clean_temporaries(&self) -> usize {
        self.repair_pins();
        let mut n = 0;
        for t in self.tiers.iter() {
            let Some((dir, names)) = list_state_dir(t, TMP_DIR) else {
                continue;
            };
            for name in names {
                if super::dir::remove_tree(&dir, &name).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// A crash between pinning a source and removing it leaves the pin as a
    /// second link of the still-present source: drop the pin (the file was
    /// not moved). A crash before emptying a pin leaves its data: empty it.
    fn repair_pins(&self) {
        for t in self.tiers.iter() {
            let Some((dir, names)) = list_state_dir(t, IDS_DIR) else {
                continue;
            };
            for name in names {
                let Ok(st) = rustix::fs::statat(&dir, os(&name), AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                if st.st_nlink > 1 {
                    let _ = rustix::fs::unlinkat(&dir, os(&name), AtFlags::empty());
                } else if st.st_size > 0
                    && let Ok(f) = rustix::fs::openat(
                        &dir,
                        os(&name),
                        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                {
                    let _ = rustix::fs::ftruncate(&f, 0);
                }
            }
        }
    }

    /// Moves the winning copy of `rel` from tier `from` to tier `to`: a
    /// batch of one (see [`Fs::prepare_move`] and [`Fs::commit_moves`]).
    pub fn move_file(
        &self,
        rel: &[u8],
        from: usize,
        to: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Outcome> {
        match self.prepare_move(rel, from, to, progress)? {
            Err(why) => Ok(Outcome::Skipped(why)),
            Ok(p) => self
                .commit_moves(vec![p])
                .pop()
                .map(|(_, r)| r)
                .unwrap_or(Err(Errno(libc::EIO))),
        }
    }

    /// Step 1 of a move: copies the winning copy of `rel` (data, owner,
    /// mode, xattrs, times, node id) to a temporary on tier `to` and starts
    /// its writeback. `progress` sees each chunk copied. Nothing a client
    /// can see changes; `Err(Skip)` says why the file cannot move now.
    pub fn prepare_move(
        &self,
        rel: &[u8],
        from: usize,
        to: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<std::result::Result<PreparedMove, Skip>> {
        let (tier, st) = match self.find(rel)? {
            Some(x) => x,
            None => return Ok(Err(Skip::Gone)),
        };
        if tier != from {
            return Ok(Err(Skip::Gone));
        }
        if kind_of(&st) != libc::S_IFREG {
            return Ok(Err(Skip::NotAFile));
        }
        if st.st_nlink > 1 {
            return Ok(Err(Skip::HardLinked));
        }
        let ino = self.union_ino(from, rel, &st);
        if self.is_open(ino) {
            return Ok(Err(Skip::Busy));
        }
        let dst = self.tier(to)?;
        let room = super::tier_space(dst);
        let margin = dst
            .min_free
            .map(|m| m.bytes_of(room.total_bytes))
            .unwrap_or(0);
        if room.free_bytes
            < (st.st_size as u64)
                .saturating_add(margin)
                .saturating_add(1 << 20)
        {
            return Ok(Err(Skip::NoRoom));
        }
        let src_tier = self.tier(from)?;
        let src = File::from(
            src_tier
                .open(rel, OFlags::RDONLY | OFlags::NOATIME)
                .or_else(|_| src_tier.open(rel, OFlags::RDONLY))?,
        );
        let tmpdir = self.tmp_dir(to)?;
        let tmpname = format!(
            "{:016x}.{}.{}",
            ino,
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = File::from(rustix::fs::openat(
            &tmpdir,
            tmpname.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        let cleanup = |e: Errno| {
            let _ = rustix::fs::unlinkat(&tmpdir, tmpname.as_str(), AtFlags::empty());
            e
        };
        let _ = rustix::fs::fadvise(&src, 0, None, rustix::fs::Advice::Sequential);
        let bytes = copy_data(&src, &tmp, st.st_size as u64, progress).map_err(cleanup)?;
        dst.note_carries_ids();
        copy_metadata(&src, &tmp, &st, ino).map_err(cleanup)?;
        // The switch makes the copy durable (syncfs, on the committing
        // thread while later files are copied). The source's pages are cold
        // data this pass read only to copy: drop them rather than let them
        // push the clients' hot pages out of the cache.
        let _ = rustix::fs::fadvise(&src, 0, None, rustix::fs::Advice::DontNeed);
        Ok(Ok(PreparedMove {
            rel: rel.to_vec(),
            from,
            to,
            ino,
            st,
            tmpdir,
            tmpname,
            tmp,
            bytes,
        }))
    }

    /// Step 2: switches a batch of prepared files, with opens of them
    /// waiting. Each file whose handle is open or whose source changed since
    /// its copy is abandoned (temporary removed). For the rest: the copies
    /// are made durable and renamed into place, their directories synced,
    /// and only then are the sources removed, so a crash at any point leaves
    /// each file complete on at least one tier. One fsync per directory and
    /// batch, not per file.
    pub fn commit_moves(&self, batch: Vec<PreparedMove>) -> Outcomes {
        let (out, cleanup) = self.switch_moves(batch);
        cleanup.finish();
        out
    }

    /// [`Fs::commit_moves`] up to the point where clients may use the moved
    /// files; the rest is the returned [`Cleanup`].
    pub fn switch_moves(&self, batch: Vec<PreparedMove>) -> (Outcomes, Cleanup) {
        let mut out: Vec<(Vec<u8>, Result<Outcome>)> = Vec::new();
        let abandon = |p: &PreparedMove| {
            let _ = rustix::fs::unlinkat(&p.tmpdir, p.tmpname.as_str(), AtFlags::empty());
        };
        // Durable copies first (writeback is under way since prepare): one
        // syncfs per destination filesystem rather than an fsync (and a
        // journal commit) per file.
        let mut ready: Vec<PreparedMove> = Vec::new();
        let mut failed_fs: Vec<(u64, Errno)> = Vec::new();
        let mut synced: Vec<u64> = Vec::new();
        for p in &batch {
            if let Ok(st) = rustix::fs::fstat(&p.tmp)
                && !synced.contains(&st.st_dev)
            {
                synced.push(st.st_dev);
                if let Err(e) = rustix::fs::syncfs(&p.tmp) {
                    failed_fs.push((st.st_dev, e.into()));
                }
            }
        }
        for p in batch {
            let dev = rustix::fs::fstat(&p.tmp).map(|st| st.st_dev).unwrap_or(0);
            match failed_fs.iter().find(|(d, _)| *d == dev) {
                None => {
                    // Written back and cold: keep it out of the page cache.
                    let _ = rustix::fs::fadvise(&p.tmp, 0, None, rustix::fs::Advice::DontNeed);
                    ready.push(p)
                }
                Some((_, e)) => {
                    abandon(&p);
                    out.push((p.rel.clone(), Err(*e)));
                }
            }
        }
        // New opens of these files wait from here on.
        let mut stripes: Vec<usize> = ready.iter().map(|p| self.switch_index(p.ino)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _switch: Vec<_> = stripes.iter().map(|&i| self.switch[i].write()).collect();
        // Renames that looked at these files before the locks look again
        // (`Fs::no_switch`); dropped with the locks.
        let _switching = Switching::begin(self);
        struct Go {
            p: PreparedMove,
            ddir: OwnedFd,
            dname: Vec<u8>,
            sdir: OwnedFd,
            sname: Vec<u8>,
            ids: Arc<OwnedFd>,
            pinned: bool,
            /// The source as the check saw it: it must still be exactly
            /// this when its name is removed.
            checked_st: Stat,
            /// Directories made on the destination for the copy.
            made: Vec<(Vec<u8>, u64)>,
        }
        let mut go: Vec<Go> = Vec::new();
        for p in ready {
            type Parts = (
                OwnedFd,
                Vec<u8>,
                OwnedFd,
                Vec<u8>,
                Arc<OwnedFd>,
                Stat,
                Vec<(Vec<u8>, u64)>,
            );
            let check = (|| -> Result<std::result::Result<Parts, Skip>> {
                if self.is_open(p.ino) {
                    return Ok(Err(Skip::Busy));
                }
                let src_tier = self.tier(p.from)?;
                let now = match src_tier.lstat(&p.rel) {
                    Ok(s) => s,
                    Err(e) if not_here(&e) => return Ok(Err(Skip::Gone)),
                    Err(e) => return Err(e.into()),
                };
                if !same_version(&p.st, &now) {
                    return Ok(Err(Skip::Changed));
                }
                let made = self.clone_parents(p.to, split_parent(&p.rel).0)?;
                let (ddir, dname) = self.tier(p.to)?.parent(&p.rel)?;
                let (sdir, sname) = src_tier.parent(&p.rel)?;
                let ids = self.ids_dir(p.from)?;
                let checked_st =
                    match rustix::fs::statat(&sdir, os(sname), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if st.st_ino == p.st.st_ino && st.st_dev == p.st.st_dev => st,
                        _ => return Ok(Err(Skip::Changed)),
                    };
                let (dname, sname) = (dname.to_vec(), sname.to_vec());
                Ok(Ok((ddir, dname, sdir, sname, ids, checked_st, made)))
            })();
            match check {
                Ok(Ok((ddir, dname, sdir, sname, ids, checked_st, made))) => go.push(Go {
                    p,
                    ddir,
                    dname,
                    sdir,
                    sname,
                    ids,
                    pinned: false,
                    checked_st,
                    made,
                }),
                Ok(Err(why)) => {
                    abandon(&p);
                    out.push((p.rel.clone(), Ok(Outcome::Skipped(why))));
                }
                Err(e) => {
                    abandon(&p);
                    out.push((p.rel.clone(), Err(e)));
                }
            }
        }
        // Each copy appears on its destination next to its source: a scan
        // finds one or the other, and both are the same file (same data,
        // same node id).
        let mut placed: Vec<Go> = Vec::new();
        for g in go {
            match rustix::fs::renameat(&g.p.tmpdir, g.p.tmpname.as_str(), &g.ddir, os(&g.dname)) {
                Ok(()) => placed.push(g),
                Err(e) => {
                    abandon(&g.p); // not pinned yet: nothing else to undo
                    out.push((g.p.rel.clone(), Err(e.into())));
                }
            }
        }
        // Only once the copies are durably in place may the sources go.
        let mut go = if sync_dirs(placed.iter().map(|g| &g.ddir)).is_ok() {
            placed
        } else {
            // Both copies stay, identical; the faster one wins and the next
            // pass tries again.
            for g in placed {
                out.push((g.p.rel.clone(), Err(Errno(libc::EIO))));
            }
            Vec::new()
        };
        // No scan of these names may run across the sources' removal (moving
        // up, a scan that looked at the destination before the copy appeared
        // must not then miss the source).
        let mut scans: Vec<usize> = go
            .iter()
            .map(|g| self.scan_index(split_parent(&g.p.rel).1))
            .collect();
        scans.sort_unstable();
        scans.dedup();
        {
            let _no_lists = self.list_guard.write();
            let _no_scans: Vec<_> = scans.iter().map(|&i| self.scan_guard[i].write()).collect();
            let mut removed: Vec<Go> = Vec::new();
            let mut undone: Vec<Go> = Vec::new();
            for mut g in std::mem::take(&mut go) {
                // The source name must still be the very file that was
                // copied: a client may have renamed another file onto it,
                // linked, truncated or changed it since the check. And its
                // directory, and the copy's, must still be at the file's
                // path: a rename of a parent directory meanwhile (which
                // waits for this lock) would otherwise leave the copy under
                // the old name.
                let in_place = self.at_path(g.p.from, &g.p.rel, &g.sdir)
                    && self.at_path(g.p.to, &g.p.rel, &g.ddir);
                let same = in_place
                    && rustix::fs::statat(&g.sdir, os(&g.sname), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|now| {
                            now.st_ino == g.checked_st.st_ino
                                && now.st_dev == g.checked_st.st_dev
                                && now.st_nlink == g.checked_st.st_nlink
                                && same_version(&g.checked_st, &now)
                        });
                let outcome = if !same {
                    Err(Ok(Outcome::Skipped(Skip::Changed)))
                } else {
                    // The file keeps its node id, derived from the source's
                    // inode: pin that inode number with a placeholder in
                    // the source tier's state dir (emptied below), or the
                    // filesystem would hand it to a new file, which would
                    // get the same id. Pinned only now, under the scan
                    // locks, so no lookup sees the source with two links.
                    let pin = format!("{:016x}", g.p.ino);
                    match rustix::fs::linkat(
                        &g.sdir,
                        os(&g.sname),
                        &*g.ids,
                        pin.as_str(),
                        AtFlags::empty(),
                    ) {
                        Ok(()) => {
                            g.pinned = true;
                            Ok(())
                        }
                        Err(rustix::io::Errno::EXIST) => Ok(()), // pinned by an earlier move
                        Err(e) => Err(Err(Errno::from(e))),
                    }
                    .and_then(|()| {
                        rustix::fs::unlinkat(&g.sdir, os(&g.sname), AtFlags::empty())
                            .map_err(|e| Err(Errno::from(e)))
                    })
                };
                match outcome {
                    Ok(()) => {
                        if let Ok(node) = self.nodes.get(g.p.ino) {
                            node.set_tier(g.p.to);
                        }
                        removed.push(g);
                    }
                    Err(r) => {
                        if let Err(e) = &r {
                            log::warn!(
                                "mover: cannot remove the source of {:?}: {e}",
                                os(&g.p.rel)
                            );
                        }
                        // The source stays the file; take back the copy
                        // (if it is still ours) and the pin.
                        if let Ok(tmp) = rustix::fs::fstat(&g.p.tmp)
                            && rustix::fs::statat(&g.ddir, os(&g.dname), AtFlags::SYMLINK_NOFOLLOW)
                                .is_ok_and(|d| d.st_ino == tmp.st_ino && d.st_dev == tmp.st_dev)
                        {
                            let _ = rustix::fs::unlinkat(&g.ddir, os(&g.dname), AtFlags::empty());
                        }
                        if !in_place {
                            self.unmake(g.p.to, &g.made);
                        }
                        if g.pinned {
                            let _ = rustix::fs::unlinkat(
                                &*g.ids,
                                format!("{:016x}", g.p.ino).as_str(),
                                AtFlags::empty(),
                            );
                        }
                        out.push((g.p.rel.clone(), r));
                        undone.push(g);
                    }
                }
            }
            let _ = sync_dirs(undone.iter().map(|g| &g.ddir));
            go = removed;
            // Before listings are let back in: the switched names now list
            // from another tier.
            self.remembered.forget_all();
        }
        // Opens of the moved files go on, to their new tier.
        drop(_switching);
        drop(_switch);
        let mut cleanup = Cleanup::default();
        for g in go {
            if g.pinned {
                cleanup
                    .pins
                    .push((g.ids.clone(), format!("{:016x}", g.p.ino)));
            }
            log::debug!(
                "moved {:?} from tier {} to tier {} ({} bytes)",
                OsStr::from_bytes(&g.p.rel),
                g.p.from,
                g.p.to,
                g.p.bytes
            );
            out.push((g.p.rel.clone(), Ok(Outcome::Moved { bytes: g.p.bytes })));
            cleanup.sdirs.push(g.sdir);
        }
        (out, cleanup)
    }
}

/// What a switched batch leaves to do once clients may use the moved files:
/// make the sources' removal durable, then empty the placeholders (until
/// then they hold the old copies' data: a crash before the removal is
/// durable must find the source whole). Off the switch's critical path: a
/// pass hands it to a thread of its own.
#[must_use]
#[derive(Default)]
pub struct Cleanup {
    sdirs: Vec<OwnedFd>,
    pins: Vec<(Arc<OwnedFd>, String)>,
}

impl Cleanup {
    /// Syncs the source directories, then empties the placeholders.
    pub fn finish(self) {
        if sync_dirs(self.sdirs.iter()).is_err() {
            // Not provably durable: keep the data; the next start's repair
            // empties the placeholders of sources that are gone.
            return;
        }
        for (ids, name) in self.pins {
            if let Ok(f) = rustix::fs::openat(
                &*ids,
                name.as_str(),
                OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                let _ = rustix::fs::ftruncate(&f, 0);
            }
        }
    }
}

impl Fs {
    /// Whether the parent directory of `rel` on tier `tier` is still the
    /// directory held as `dir`.
    fn at_path(&self, tier: usize, rel: &[u8], dir: &OwnedFd) -> bool {
        let now = self
            .tier(tier)
            .ok()
            .and_then(|t| {
                t.open(split_parent(rel).0, OFlags::PATH | OFlags::DIRECTORY)
                    .ok()
            })
            .and_then(|fd| rustix::fs::fstat(&fd).ok());
        match (now, rustix::fs::fstat(dir)) {
            (Some(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
            _ => false,
        }
    }

    /// Removes, innermost first, the directories `made` (path, inode) on
    /// tier `tier` that are still those and still empty.
    fn unmake(&self, tier: usize, made: &[(Vec<u8>, u64)]) {
        let Ok(t) = self.tier(tier) else { return };
        for (rel, ino) in made.iter().rev() {
            let Ok((dir, name)) = t.parent(rel) else {
                continue;
            };
            if rustix::fs::statat(&dir, os(name), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_ino == *ino)
            {
                let _ = rustix::fs::unlinkat(&dir, os(name), AtFlags::REMOVEDIR);
                self.dirs_changed();
            }
        }
    }
}

/// Opens `<tier>/.dfs/<sub>` and lists its names (`None` if it is absent).
pub(super) fn list_state_dir(t: &crate::tiers::Tier, sub: &str) -> Option<(OwnedFd, Vec<Vec<u8>>)> {
    let rel = format!("{STATE_DIR}/{sub}");
    let dir = t
        .open(rel.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)
        .ok()?;
    let mut names = Vec::new();
    let mut buf = vec![std::mem::MaybeUninit::uninit(); 16 * 1024];
    let mut it = rustix::fs::RawDir::new(&dir, &mut buf);
    while let Some(Ok(e)) = it.next() {
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Some((dir, names))
}

/// A mover switch in progress, counted for `Fs::no_switch`: begun when
/// made (with the switch locks held), ended when dropped.
struct Switching<'a>(&'a Fs);

impl<'a> Switching<'a> {
    fn begin(fs: &'a Fs) -> Self {
        fs.switch_started.fetch_add(1, Ordering::SeqCst);
        Switching(fs)
    }
}

impl Drop for Switching<'_> {
    fn drop(&mut self) {
        self.0.switch_ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// Each file of a batch (by path) and what became of it.
pub type Outcomes = Vec<(Vec<u8>, Result<Outcome>)>;

/// A file copied to its destination's temporary, waiting to be switched.
pub struct PreparedMove {
    rel: Vec<u8>,
    from: usize,
    to: usize,
    ino: u64,
    st: Stat,
    tmpdir: Arc<OwnedFd>,
    tmpname: String,
    tmp: File,
    bytes: u64,
}

impl PreparedMove {
    /// Bytes copied.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Makes the directory changes of a batch durable: one fsync per distinct
/// directory (the first commits the journal; the rest of the batch usually
/// rides along). Not syncfs: that would also wait for every dirty page on
/// the filesystem, including copies still being made.
pub(super) fn sync_dirs<'a>(dirs: impl Iterator<Item = &'a OwnedFd>) -> Result<()> {
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut result = Ok(());
    for d in dirs {
        let Ok(st) = rustix::fs::fstat(d) else {
            continue;
        };
        if seen.contains(&(st.st_dev, st.st_ino)) {
            continue;
        }
        seen.push((st.st_dev, st.st_ino));
        // O_PATH handles cannot be synced: reopen the directory.
        let synced = rustix::fs::openat(
            d,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|f| rustix::fs::fsync(&f));
        if let Err(e) = synced {
            log::warn!("mover: fsync of a directory failed: {e}");
            result = Err(e.into());
        }
    }
    result
}

/// Copies `len` bytes in chunks, reporting each to `progress`.
fn copy_data(src: &File, dst: &File, len: u64, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    const CHUNK: usize = 4 << 20;
    let mut off: u64 = 0;
    while off < len {
        let want = ((len - off) as usize).min(CHUNK);
        let n = super::copy_chunk(src, off, dst, off, want)?;
        if n == 0 {
            break; // source shrank; the version check will notice
        }
        off += n as u64;
        progress(n as u64);
    }
    Ok(off)
}

/// Owner, mode, xattrs (ACLs included), the union id, then the times, last
/// so nothing after them touches atime or mtime.
fn copy_metadata(src: &File, dst: &File, st: &Stat, ino: u64) -> Result<()> {
    rustix::fs::fchown(
        dst,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )?;
    rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::flistxattr(src, &mut names[..]).unwrap_or(0);
    let mut val = vec![0u8; 64 * 1024];
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        if is_internal_xattr(name) {
            continue;
        }
        let len = rustix::fs::fgetxattr(src, os(name), &mut val[..])?;
        rustix::fs::fsetxattr(dst, os(name), &val[..len], rustix::fs::XattrFlags::empty())?;
    }
    rustix::fs::fsetxattr(
        dst,
        INO_XATTR,
        &ino.to_le_bytes(),
        rustix::fs::XattrFlags::empty(),
    )?;
    let times = Timestamps {
        last_access: ts(st.st_atime, st.st_atime_nsec),
        last_modification: ts(st.st_mtime, st.st_mtime_nsec),
    };
    rustix::fs::futimens(dst, &times)?;
    Ok(())
}
