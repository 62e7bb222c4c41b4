//! Merged directory listings.
//!
//! A listing is the union of every tier's copy of a directory, each name
//! once, from its winning tier. It is built when a listing starts (offset
//! 0) and kept, so a large directory costs linear time. Its entries are
//! ordered by a hash of their names, and each entry's readdir offset (its
//! *cookie*) is that hash: an offset names a place in the name space, not
//! in one snapshot, so it stays valid across snapshots. That lets dfs serve
//! listings without OPENDIR (the kernel then sends READDIR with no handle,
//! and two requests of one listing may be served from different snapshots):
//! a name present throughout a listing is returned exactly once, as on
//! ext4, whose hashed directories work the same way.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, OFlags, RawDir};

use super::{Errno, Result, not_here};
use crate::tiers::{STATE_DIR, TierSet};

/// One name of a merged listing.
#[derive(Debug)]
pub struct DirEntry {
    /// The name's bytes.
    pub name: Box<[u8]>,
    /// Tier of the winning copy.
    pub tier: usize,
    /// d_ino on that tier.
    pub d_ino: u64,
    /// d_type on that tier.
    pub kind: FileType,
    /// The entry's node id as stat shows it (filled in by the core).
    pub ino: u64,
    /// Its readdir offset: a hash of the name (see the module doc).
    pub cookie: u64,
}

/// First cookie of a name (offsets 0, 1 and 2 are the start, "." and "..").
/// std's SipHash with its fixed keys: stable for the life of the process,
/// which is as long as a directory stream lives.
fn cookie_of(name: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(name);
    // 62 bits: far below 2^63 (offsets are signed in the kernel) even
    // after collisions bump a cookie.
    (h.finish() >> 2).max(3)
}

/// Index of the first entry of `entries` (sorted by cookie) to serve after
/// readdir offset `offset`.
pub fn resume_at(entries: &[DirEntry], offset: u64) -> usize {
    if offset < 3 {
        return 0;
    }
    entries.partition_point(|e| e.cookie <= offset)
}

/// An open directory: the merged names, plus an open handle on every
/// tier's copy (for readdirplus stats and fsyncdir).
#[derive(Debug)]
pub struct DirHandle {
    /// Node id of the directory.
    pub ino: u64,
    /// Names in cookie order.
    pub entries: Vec<DirEntry>,
    /// Open handles on the directory's copies, by tier.
    pub fds: Vec<Option<OwnedFd>>,
}

/// Lists the union directory whose tier copies `copies` holds (by tier;
/// handles may be `O_PATH`); `is_root` hides dfs's own state dir.
pub fn list(copies: &[Option<OwnedFd>], ino: u64, is_root: bool) -> Result<DirHandle> {
    let mut fds: Vec<Option<OwnedFd>> = Vec::with_capacity(copies.len());
    // Each tier's names, in tier order; a name already listed by an earlier
    // tier is shadowed. Names are unique within one tier, so the first tier
    // holding the directory needs no checking at all.
    let mut per_tier: Vec<Vec<DirEntry>> = Vec::with_capacity(copies.len());
    let mut found = false;
    let mut buf: Vec<MaybeUninit<u8>> = vec![MaybeUninit::uninit(); 64 * 1024];
    for (index, copy) in copies.iter().enumerate() {
        let Some(copy) = copy else {
            fds.push(None);
            continue;
        };
        let fd = match rustix::fs::openat(
            copy,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if not_here(&e.into()) => {
                fds.push(None);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        found = true;
        let earlier: HashSet<&[u8]> = if per_tier.is_empty() {
            HashSet::new()
        } else {
            per_tier.iter().flatten().map(|e| &*e.name).collect()
        };
        let mut mine = Vec::new();
        {
            let mut dir = RawDir::new(&fd, &mut buf);
            while let Some(ent) = dir.next() {
                let ent = ent.map_err(Errno::from)?;
                let name = ent.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                if is_root && name == STATE_DIR.as_bytes() {
                    continue;
                }
                if earlier.contains(name) {
                    continue;
                }
                mine.push(DirEntry {
                    name: name.into(),
                    tier: index,
                    d_ino: ent.ino(),
                    kind: ent.file_type(),
                    ino: 0,
                    cookie: cookie_of(name),
                });
            }
        }
        drop(earlier);
        per_tier.push(mine);
        // Rewind is not needed: the handle is only used for *at calls now.
        fds.push(Some(fd));
    }
    if !found {
        return Err(Errno(libc::ENOENT));
    }
    let mut entries: Vec<DirEntry> = per_tier.into_iter().flatten().collect();
    entries.sort_unstable_by(|a, b| (a.cookie, &a.name).cmp(&(b.cookie, &b.name)));
    // Two names with one hash (about 1 in 10^9 for 10^5 names) get
    // consecutive cookies, so every entry's offset is its own.
    for i in 1..entries.len() {
        if entries[i].cookie <= entries[i - 1].cookie {
            entries[i].cookie = entries[i - 1].cookie + 1;
        }
    }
    Ok(DirHandle { ino, entries, fds })
}

/// Whether the union directory `rel` has no names (rmdir, rename checks).
pub fn is_empty(tiers: &TierSet, rel: &[u8]) -> Result<bool> {
    let mut buf: Vec<MaybeUninit<u8>> = vec![MaybeUninit::uninit(); 4096];
    for tier in tiers.iter() {
        let fd = match tier.open(rel, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if not_here(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut dir = RawDir::new(&fd, &mut buf);
        while let Some(ent) = dir.next() {
            let ent = ent.map_err(Errno::from)?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Removes `name` under `dir` whatever it is, a whole tree included. Used
/// only for copies that are invisible in the union (shadowed by another
/// tier's copy), never for what a client sees.
pub fn remove_tree(dir: &OwnedFd, name: &[u8]) -> Result<()> {
    let os = OsStr::from_bytes(name);
    match rustix::fs::unlinkat(dir, os, rustix::fs::AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        os,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut names: Vec<Vec<u8>> = Vec::new();
    {
        let mut buf: Vec<MaybeUninit<u8>> = vec![MaybeUninit::uninit(); 16 * 1024];
        let mut d = RawDir::new(&sub, &mut buf);
        while let Some(ent) = d.next() {
            let ent = ent.map_err(Errno::from)?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
    }
    for n in names {
        remove_tree(&sub, &n)?;
    }
    match rustix::fs::unlinkat(dir, os, rustix::fs::AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
