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

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, OFlags, RawDir};

use super::{Errno, Result, not_here};
use crate::tiers::{STATE_DIR, TierSet};

/// One name of a merged listing. Its bytes live in the listing's name
/// buffer ([`DirHandle::name`]): one allocation per listing, not per name.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry {
    /// Its readdir offset: a hash of the name (see the module doc).
    pub cookie: u64,
    /// d_ino on the winning tier.
    pub d_ino: u64,
    /// The entry's node id as stat shows it (filled in by the core).
    pub ino: u64,
    /// Where the name starts in the listing's name buffer.
    name_at: u32,
    /// The name's length in bytes.
    name_len: u32,
    /// Tier of the winning copy.
    pub tier: usize,
    /// d_type on that tier.
    pub kind: FileType,
}

/// First cookie of a name (offsets 0, 1 and 2 are the start, "." and "..").
/// Fx's byte hash: cheap (a listing hashes every name), the same in every
/// run (an NFS client may resume a listing after a restart), and spread
/// enough that two names of one directory rarely share a value; when they
/// do, the later one is bumped (see [`list`]).
fn cookie_of(name: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(name);
    // A final mix, so that every bit of the name reaches the top bits the
    // order depends on; 62 bits keep cookies far below 2^63 (offsets are
    // signed in the kernel) even after collisions bump one.
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 2).max(3)
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
    /// Every entry's name bytes, back to back.
    names: Vec<u8>,
    /// Open handles on the directory's copies, by tier (shared with the
    /// directory's cached handles when the listing was remembered).
    pub fds: std::sync::Arc<[Option<OwnedFd>]>,
}

impl DirEntry {
    /// The entry of `name`, whose bytes start at `name_at` in its
    /// listing's name buffer (for listings kept up to date by creates).
    pub fn new(
        name: &[u8],
        name_at: u32,
        d_ino: u64,
        ino: u64,
        tier: usize,
        kind: FileType,
    ) -> Self {
        DirEntry {
            cookie: cookie_of(name),
            d_ino,
            ino,
            name_at,
            name_len: name.len() as u32,
            tier,
            kind,
        }
    }
}

impl DirHandle {
    /// The name of entry `e` (an entry of this listing).
    pub fn name(&self, e: &DirEntry) -> &[u8] {
        name_in(&self.names, e)
    }

    /// A listing from remembered entries (in cookie order) and names,
    /// with handles `fds` on the directory's copies.
    pub fn from_parts(
        ino: u64,
        entries: Vec<DirEntry>,
        names: Vec<u8>,
        fds: std::sync::Arc<[Option<OwnedFd>]>,
    ) -> Self {
        DirHandle {
            ino,
            entries,
            names,
            fds,
        }
    }

    /// Its entries and their name bytes (to remember them).
    pub fn parts(&self) -> (&[DirEntry], &[u8]) {
        (&self.entries, &self.names)
    }
}

/// The bytes of entry `e`'s name in name buffer `names`.
pub(crate) fn name_in<'a>(names: &'a [u8], e: &DirEntry) -> &'a [u8] {
    let at = e.name_at as usize;
    &names[at..at + e.name_len as usize]
}

/// Lists the union directory whose tier copies `copies` holds (by tier;
/// handles may be `O_PATH`); `is_root` hides dfs's own state dir.
///
/// Every tier's names go into one vector, sorted by (cookie, name, tier):
/// copies of one name end up side by side with the winning (first) tier's
/// first, and the shadowed ones are dropped in the same pass. A listing
/// allocates a few vectors, not one box per name or a set per tier.
pub fn list(copies: &[Option<OwnedFd>], ino: u64, is_root: bool) -> Result<DirHandle> {
    let mut fds: Vec<Option<OwnedFd>> = Vec::with_capacity(copies.len());
    let mut entries: Vec<DirEntry> = Vec::new();
    let mut names: Vec<u8> = Vec::new();
    let mut found = false;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
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
        let mut dir = RawDir::new(&fd, buf.spare_capacity_mut());
        while let Some(ent) = dir.next() {
            let ent = ent.map_err(Errno::from)?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if is_root && name == STATE_DIR.as_bytes() {
                continue;
            }
            let name_at = u32::try_from(names.len()).map_err(|_| Errno(libc::ENOMEM))?;
            names.extend_from_slice(name);
            entries.push(DirEntry {
                cookie: cookie_of(name),
                d_ino: ent.ino(),
                ino: 0,
                name_at,
                name_len: name.len() as u32,
                tier: index,
                kind: ent.file_type(),
            });
        }
        // The handle is only used for *at calls from now on: no rewind.
        fds.push(Some(fd));
    }
    if !found {
        return Err(Errno(libc::ENOENT));
    }
    order(&mut entries, &names);
    Ok(DirHandle {
        ino,
        entries,
        names,
        fds: fds.into(),
    })
}

/// Puts listing entries in cookie order: sorted by (cookie, name, tier),
/// so that copies of one name end up side by side with the winning (first)
/// tier's first; the shadowed ones are dropped, and two names with one
/// hash (about 1 in 10^9 for 10^5 names) get consecutive cookies, so every
/// entry's offset is its own.
pub fn order(entries: &mut Vec<DirEntry>, names: &[u8]) {
    entries.sort_unstable_by(|a, b| {
        a.cookie
            .cmp(&b.cookie)
            .then_with(|| name_in(names, a).cmp(name_in(names, b)))
            .then(a.tier.cmp(&b.tier))
    });
    entries.dedup_by(|later, kept| {
        later.cookie == kept.cookie && name_in(names, later) == name_in(names, kept)
    });
    for i in 1..entries.len() {
        if entries[i].cookie <= entries[i - 1].cookie {
            entries[i].cookie = entries[i - 1].cookie + 1;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open_path(p: &std::path::Path) -> Option<OwnedFd> {
        Some(
            rustix::fs::open(
                p,
                OFlags::PATH | OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .expect("open tier dir"),
        )
    }

    #[test]
    fn merges_tiers_first_copy_wins_and_cookies_rise() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        for n in ["both", "only-a", "x"] {
            std::fs::write(a.path().join(n), b"a").expect("write");
        }
        for n in ["both", "only-b", "x"] {
            std::fs::write(b.path().join(n), b"b").expect("write");
        }
        let copies = vec![open_path(a.path()), None, open_path(b.path())];
        let h = list(&copies, 7, false).expect("list");
        let mut seen: Vec<(String, usize)> = h
            .entries
            .iter()
            .map(|e| (String::from_utf8_lossy(h.name(e)).into_owned(), e.tier))
            .collect();
        assert!(h.entries.windows(2).all(|w| w[0].cookie < w[1].cookie));
        assert!(h.entries.iter().all(|e| e.cookie > 2));
        seen.sort();
        let want = [("both", 0), ("only-a", 0), ("only-b", 2), ("x", 0)];
        let want: Vec<(String, usize)> = want.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        assert_eq!(seen, want);
        // Resuming after any entry's cookie gives exactly the rest.
        for (i, e) in h.entries.iter().enumerate() {
            assert_eq!(resume_at(&h.entries, e.cookie), i + 1);
        }
        assert_eq!(resume_at(&h.entries, 0), 0);
    }

    #[test]
    fn cookies_depend_on_the_name_alone() {
        assert_eq!(cookie_of(b"report.pdf"), cookie_of(b"report.pdf"));
        assert_ne!(cookie_of(b"report.pdf"), cookie_of(b"report.pdg"));
        assert!(cookie_of(b"") >= 3 && cookie_of(b"a") < (1 << 62));
    }
}
