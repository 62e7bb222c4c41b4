//! The tier set: the ordered tier roots, held open, and safe path resolution
//! beneath each of them.
//!
//! Every path dfs touches is resolved relative to a tier's root directory
//! handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so neither a
//! symlink planted inside a tier nor a `..` can lead a dfs operation outside
//! it. Paths longer than the kernel's PATH_MAX are resolved in segments.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Stat};
use serde::{Deserialize, Serialize};

use crate::config::{Config, TierConfig};
use crate::error::{Error, Result};

/// Name of dfs's own directory at the root of every tier. It holds the tier
/// marker (and later the mover's temporaries); it never shows through the
/// mount and cannot be created through it.
pub const STATE_DIR: &str = ".dfs";
const MARKER: &str = "marker.toml";

/// Longest path handed to one `openat2` call; longer ones go in segments.
const SEGMENT_MAX: usize = 3072;

/// One tier: a name, its root path and an open handle on the root.
#[derive(Debug)]
pub struct Tier {
    /// Position in the stack, 0 = fastest.
    pub index: usize,
    /// Name from the config (`pss`, `sss` for the preset).
    pub name: String,
    /// Canonical root path (for messages and `dfs where`).
    pub path: PathBuf,
    /// `O_PATH` handle on the root: all resolution starts here.
    root: OwnedFd,
    /// st_dev of the root, recorded in the marker.
    pub dev: u64,
    /// Below this much free space the tier takes no new names.
    pub min_free: Option<crate::units::Size>,
    /// Whether copies on this tier may carry a recorded node id.
    carries_ids: std::sync::atomic::AtomicBool,
    /// Whether the tier's times come from this machine's clock and move
    /// with every entry change (a local filesystem): then lookups may skip
    /// a copy of a directory known empty (`fs::empty`).
    pub local_times: bool,
}

/// The ordered tiers of one mount.
#[derive(Debug)]
pub struct TierSet {
    tiers: Vec<Tier>,
}

/// What dfs writes at `<tier>/.dfs/marker.toml`, so a later mount can tell a
/// tier from an empty directory where the tier's filesystem should be.
#[derive(Debug, Serialize, Deserialize, Clone)]
struct Marker {
    id: String,
    name: String,
    dev: u64,
    /// Ids and names of every tier of the set when this marker was written.
    #[serde(default)]
    set: Vec<Sibling>,
    /// Whether dfs ever recorded a union node id (`trusted.dfs.ino`) on
    /// this tier; lookups read that xattr only where it may exist.
    #[serde(default)]
    ids: bool,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
struct Sibling {
    id: String,
    name: String,
}

/// Resolution flags: stay beneath the root, follow no symlink at all.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

impl Tier {
    /// The root directory handle.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens `rel` (a relative path of the union, no leading '/') on this
    /// tier without following any symlink, the last component included.
    pub fn open(&self, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
        open_beneath(self.root.as_fd(), rel, flags)
    }

    /// Opens the parent directory of `rel` (`O_PATH`) and returns the last
    /// component, for the `*at` calls that act on a name.
    pub fn parent<'a>(&self, rel: &'a [u8]) -> io::Result<(OwnedFd, &'a [u8])> {
        let (dir, name) = split_parent(rel);
        let fd = self.open(dir, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok((fd, name))
    }

    /// Whether copies here may carry a recorded node id (see [`Marker`]).
    pub fn carries_ids(&self) -> bool {
        self.carries_ids.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// dfs is about to record a node id on this tier: from now on lookups
    /// must read it. Persisted in the marker the first time.
    pub fn note_carries_ids(&self) {
        if self
            .carries_ids
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        if let Some(mut m) = read_marker(self) {
            m.ids = true;
            if let Err(e) = write_marker(self, &m) {
                log::warn!("{e}");
            }
        }
    }

    /// lstat of `rel` on this tier.
    pub fn lstat(&self, rel: &[u8]) -> io::Result<Stat> {
        if rel.is_empty() {
            return Ok(rustix::fs::fstat(&self.root)?);
        }
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::statat(
            &dir,
            OsStr::from_bytes(name),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }
}

/// `openat2` beneath `root`, in segments when the path is too long for one
/// call. `rel` is relative; empty means the root itself.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if rel.is_empty() {
        return Ok(rustix::fs::openat2(
            root,
            ".",
            flags,
            Mode::empty(),
            beneath(),
        )?);
    }
    if rel.len() <= SEGMENT_MAX {
        return Ok(rustix::fs::openat2(
            root,
            OsStr::from_bytes(rel),
            flags,
            Mode::empty(),
            beneath(),
        )?);
    }
    // Walk the directories in chunks, each below the previous handle.
    let mut cur: Option<OwnedFd> = None;
    let mut rest = rel;
    while rest.len() > SEGMENT_MAX {
        let cut = rest[..SEGMENT_MAX]
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
        let seg = &rest[..cut];
        let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(root);
        let next = rustix::fs::openat2(
            base,
            OsStr::from_bytes(seg),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        )?;
        cur = Some(next);
        rest = &rest[cut + 1..];
    }
    let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(root);
    Ok(rustix::fs::openat2(
        base,
        OsStr::from_bytes(rest),
        flags,
        Mode::empty(),
        beneath(),
    )?)
}

/// Splits "a/b/c" into ("a/b", "c"); "c" into ("", "c").
pub fn split_parent(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

impl TierSet {
    /// Opens and checks every tier of `cfg`: each must exist, be a directory,
    /// appear once, not nest in another tier or the mount point, and carry
    /// the marker the other tiers expect. `adopt` accepts tiers whose marker
    /// is missing or stale (a tier replaced on purpose); `write` records the
    /// markers (false for `dfs check`, which changes nothing).
    pub fn open(
        cfg: &Config,
        mountpoint: Option<&Path>,
        adopt: bool,
        write: bool,
    ) -> Result<TierSet> {
        let mut tiers = Vec::with_capacity(cfg.tiers.len());
        for (index, tc) in cfg.tiers.iter().enumerate() {
            tiers.push(open_tier(cfg, index, tc)?);
        }
        for (i, a) in tiers.iter().enumerate() {
            for b in &tiers[..i] {
                if a.path == b.path {
                    return Err(tier_err(
                        a,
                        format!("is the same directory as tier `{}`", b.name),
                    ));
                }
                if a.path.starts_with(&b.path) {
                    return Err(tier_err(
                        a,
                        format!("is inside tier `{}` ({})", b.name, b.path.display()),
                    ));
                }
                if b.path.starts_with(&a.path) {
                    return Err(tier_err(
                        b,
                        format!("is inside tier `{}` ({})", a.name, a.path.display()),
                    ));
                }
            }
            if let Some(mp) = mountpoint {
                if a.path.starts_with(mp) {
                    return Err(tier_err(
                        a,
                        format!("is inside the mount point {}", mp.display()),
                    ));
                }
                if mp.starts_with(&a.path) {
                    return Err(tier_err(
                        a,
                        format!(
                            "contains the mount point {}: the mount would see itself",
                            mp.display()
                        ),
                    ));
                }
            }
        }
        let set = TierSet { tiers };
        set.check_markers(adopt, write)?;
        Ok(set)
    }

    /// The tiers in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Tier> {
        self.tiers.iter()
    }

    /// Number of tiers.
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// Never true for a mounted set; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// Tier by index.
    pub fn get(&self, i: usize) -> Option<&Tier> {
        self.tiers.get(i)
    }

    /// Verifies each tier's identity and (re)writes the markers.
    ///
    /// A tier without a marker while another tier's marker lists it as a
    /// sibling is an empty directory where a filesystem should be mounted:
    /// refuse, naming it, rather than serve a union that lacks it.
    fn check_markers(&self, adopt: bool, write: bool) -> Result<()> {
        let markers: Vec<Option<Marker>> = self.tiers.iter().map(read_marker).collect();
        let present: Vec<&str> = markers.iter().flatten().map(|m| m.id.as_str()).collect();
        if !adopt {
            for (t, m) in self.tiers.iter().zip(&markers) {
                if let Some(m) = m
                    && m.dev != t.dev
                {
                    return Err(tier_err(
                        t,
                        format!(
                            "its marker says it lives on device {:#x} but it is on {:#x}: \
                                 the directory was copied or its filesystem is not the one dfs \
                                 knew; if this is intended, mount once with --adopt",
                            m.dev, t.dev
                        ),
                    ));
                }
            }
            for (t, m) in self.tiers.iter().zip(&markers) {
                if m.is_some() {
                    continue;
                }
                // Which sibling ids do the other markers expect but nobody has?
                let missing: Vec<&Sibling> = markers
                    .iter()
                    .flatten()
                    .flat_map(|m| m.set.iter())
                    .filter(|s| !present.contains(&s.id.as_str()))
                    .collect();
                if let Some(s) = missing
                    .iter()
                    .find(|s| s.name == t.name)
                    .or(missing.first())
                {
                    return Err(tier_err(
                        t,
                        format!(
                            "has no dfs marker ({}/{}/{}), but the other tiers remember tier `{}` \
                             in this set: its filesystem is probably not mounted. Mount it and \
                             retry; if the tier is new on purpose, mount once with --adopt",
                            t.path.display(),
                            STATE_DIR,
                            MARKER,
                            s.name
                        ),
                    ));
                }
            }
        }
        if !write {
            return Ok(());
        }
        let mut ids: Vec<String> = Vec::new();
        for (t, m) in self.tiers.iter().zip(&markers) {
            ids.push(match m {
                Some(m) if m.dev == t.dev || !adopt => m.id.clone(),
                _ => new_id(t),
            });
        }
        let set: Vec<Sibling> = self
            .tiers
            .iter()
            .zip(&ids)
            .map(|(t, id)| Sibling {
                id: id.clone(),
                name: t.name.clone(),
            })
            .collect();
        for ((t, id), old) in self.tiers.iter().zip(ids).zip(&markers) {
            let carries = old.as_ref().is_some_and(|m| m.ids);
            t.carries_ids
                .store(carries, std::sync::atomic::Ordering::Relaxed);
            let m = Marker {
                id,
                name: t.name.clone(),
                dev: t.dev,
                set: set.clone(),
                ids: carries,
            };
            write_marker(t, &m)?;
        }
        Ok(())
    }
}

fn tier_err(t: &Tier, msg: String) -> Error {
    Error::Tier {
        name: t.name.clone(),
        path: t.path.clone(),
        msg,
    }
}

fn open_tier(cfg: &Config, index: usize, tc: &TierConfig) -> Result<Tier> {
    let at = cfg.origin.locate(&tc.span);
    let err = |msg: String| Error::Tier {
        name: tc.name.clone(),
        path: tc.path.clone(),
        msg: format!("{at}{msg}"),
    };
    let md = fs::metadata(&tc.path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => err("does not exist".into()),
        _ => err(format!("cannot be read: {e}")),
    })?;
    if !md.is_dir() {
        return Err(err("is not a directory".into()));
    }
    let path = fs::canonicalize(&tc.path).map_err(|e| err(format!("cannot be resolved: {e}")))?;
    let root = rustix::fs::open(
        &path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("cannot be opened: {e}")))?;
    let local_times = local_times(&root);
    Ok(Tier {
        index,
        name: tc.name.clone(),
        path,
        root,
        dev: md.dev(),
        min_free: tc.min_free,
        carries_ids: std::sync::atomic::AtomicBool::new(true),
        local_times,
    })
}

/// Whether times on the filesystem of `root` come from this machine's
/// clock and change with every entry change: the local filesystems that
/// `fs::empty::EmptyCopy` may track (not network filesystems, whose times are the
/// server's, nor FAT, whose times are two-second steps).
fn local_times(root: &OwnedFd) -> bool {
    const EXT4: u64 = 0xEF53;
    const XFS: u64 = 0x5846_5342;
    const BTRFS: u64 = 0x9123_683E;
    const TMPFS: u64 = 0x0102_1994;
    const F2FS: u64 = 0xF2F5_2010;
    rustix::fs::fstatfs(root)
        .is_ok_and(|s| matches!(s.f_type as u64, EXT4 | XFS | BTRFS | TMPFS | F2FS))
}

fn read_marker(t: &Tier) -> Option<Marker> {
    let p = t.path.join(STATE_DIR).join(MARKER);
    let text = fs::read_to_string(&p).ok()?;
    match toml::from_str(&text) {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!("ignoring unreadable marker {}: {e}", p.display());
            None
        }
    }
}

fn write_marker(t: &Tier, m: &Marker) -> Result<()> {
    let dir = t.path.join(STATE_DIR);
    let werr = |e: io::Error| {
        tier_err(
            t,
            format!("cannot write its marker in {}: {e}", dir.display()),
        )
    };
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(werr(e)),
    }
    let text = toml::to_string(m).map_err(|e| werr(io::Error::other(e)))?;
    let path = dir.join(MARKER);
    if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let tmp = dir.join(format!("{MARKER}.tmp"));
    fs::write(&tmp, text.as_bytes()).map_err(werr)?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(werr)?;
    fs::rename(&tmp, &path).map_err(werr)?;
    fs::File::open(&dir)
        .and_then(|f| f.sync_all())
        .map_err(werr)?;
    Ok(())
}

fn new_id(t: &Tier) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(t.path.as_os_str().as_bytes());
    h.write_u64(t.dev);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:016x}{:08x}", h.finish(), (now & 0xffff_ffff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parent_cases() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn symlink_inside_tier_cannot_escape() {
        let root = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/etc", root.path().join("esc")).expect("symlink");
        let fd = rustix::fs::open(root.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open root");
        let e =
            open_beneath(fd.as_fd(), b"esc/passwd", OFlags::RDONLY).expect_err("must not follow");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e = open_beneath(fd.as_fd(), b"../etc", OFlags::PATH).expect_err("must not climb");
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    }

    #[test]
    fn long_paths_resolve_in_segments() {
        let root = tempfile::tempdir().expect("tempdir");
        let fd = rustix::fs::open(root.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open root");
        let comp = vec![b'd'; 200];
        let mut rel: Vec<u8> = Vec::new();
        let mut cur = rustix::fs::openat(&fd, ".", OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("dup");
        for _ in 0..30 {
            rustix::fs::mkdirat(&cur, OsStr::from_bytes(&comp), Mode::from_raw_mode(0o755))
                .expect("mkdir");
            cur = rustix::fs::openat(&cur, OsStr::from_bytes(&comp), OFlags::PATH, Mode::empty())
                .expect("descend");
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&comp);
        }
        assert!(rel.len() > 4096);
        let st =
            rustix::fs::fstat(open_beneath(fd.as_fd(), &rel, OFlags::PATH).expect("deep open"))
                .expect("fstat");
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    }
}
