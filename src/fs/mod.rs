//! The filesystem core: union operations over the tier set, in plain Rust.
//!
//! Nothing here knows about FUSE; the adapter in `crate::fuse` turns kernel
//! requests into these calls and their results into replies, and tests can
//! drive the core directly. Node ids come from [`nodes`], listings from
//! [`dir`]; every path is resolved beneath a tier root (see `crate::tiers`).
//!
//! The union rules implemented here are those of DESIGN.md: the first tier
//! holding a name wins; removals go from the last tier towards the first so a
//! crash never resurrects an older copy; renames commit by removing the
//! stale copy on a faster tier; nothing ever returns EXDEV for a rename or
//! link inside the mount.

pub mod deferred;
pub mod dir;
pub mod empty;
pub mod intent;
pub mod nodes;
pub mod remembered;
pub mod transfer;

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, MutexGuard};
use rustix::fs::{AtFlags, Mode, OFlags, Stat, Timespec, Timestamps};

use crate::creds::{Caller, as_caller, in_group, keeps_setid};
use crate::policy::{CreateRequest, NodeKind, Policy, Space, TierView};
use crate::tiers::{STATE_DIR, Tier, TierSet, split_parent};
use crate::xattr;
use dir::DirHandle;
use intent::{Intent, Op, Side, Step};
use nodes::{IdMap, Nodes, ROOT};

/// An errno: what a failed operation returns to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno(e.raw_os_error())
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

/// Result of a core operation.
pub type Result<T> = std::result::Result<T, Errno>;

/// Attributes as the kernel should see them: the backing stat with the
/// union's node id in place of the tier's inode number.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Node id, also st_ino.
    pub ino: u64,
    /// The winning copy's stat.
    pub st: Stat,
}

/// A time for setattr.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    /// Set to the current time.
    Now,
    /// Set to this time.
    At(SystemTime),
}

/// The changes of one setattr.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

/// An open file.
#[derive(Debug)]
pub struct FileHandle {
    /// Node id of the file.
    pub ino: u64,
    /// The backing file on its tier.
    pub file: File,
    /// Opened for writing (writes through it may reach the tier without
    /// dfs seeing them: kernel passthrough).
    pub writable: bool,
}

/// Per-mount switches the core needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The kernel checks permissions (`default_permissions`); otherwise every
    /// operation runs with the caller's credentials.
    pub kernel_permissions: bool,
}

/// Striped locks serialising namespace changes of one name (check, place,
/// create), so two racing creates cannot put one name on two tiers.
struct NameLocks {
    stripes: Vec<Mutex<()>>,
}

impl NameLocks {
    fn new() -> Self {
        NameLocks {
            stripes: (0..256).map(|_| Mutex::new(())).collect(),
        }
    }

    fn index(parent: u64, name: &[u8]) -> usize {
        let mut h: u64 = parent.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for &b in name {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        (h % 256) as usize
    }

    fn lock(&self, parent: u64, name: &[u8]) -> MutexGuard<'_, ()> {
        self.stripes[Self::index(parent, name)].lock()
    }

    fn lock_two(
        &self,
        a: (u64, &[u8]),
        b: (u64, &[u8]),
    ) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let (i, j) = (Self::index(a.0, a.1), Self::index(b.0, b.1));
        if i == j {
            (self.stripes[i].lock(), None)
        } else if i < j {
            let g1 = self.stripes[i].lock();
            (g1, Some(self.stripes[j].lock()))
        } else {
            let g2 = self.stripes[j].lock();
            (self.stripes[i].lock(), Some(g2))
        }
    }
}

/// The union filesystem.
pub struct Fs {
    tiers: TierSet,
    policy: Arc<dyn Policy>,
    nodes: Nodes,
    files: IdMap<Arc<FileHandle>>,
    dirs: IdMap<Arc<DirHandle>>,
    next_fh: AtomicU64,
    locks: NameLocks,
    opts: Options,
    /// Whether directory copies carry their union id in [`INO_XATTR`]
    /// (needs root for the trusted namespace).
    ino_xattr: bool,
    /// Held for reading by every open, for writing by the mover's switch of
    /// a file between tiers (striped by node id): opens wait for a switch.
    switch: Vec<parking_lot::RwLock<()>>,
    /// When each file was last opened through dfs.
    pub access: crate::access::AccessLog,
    /// Open handles on the tier copies of directories the kernel holds, so
    /// a lookup costs one fstatat per tier and no path walk.
    dircache: IdMap<Arc<DirFds>>,
    /// Bumped by every change to which directories exist where; cached
    /// handles from an older epoch are rebuilt.
    dir_epoch: AtomicU64,
    /// How long cached directory handles are trusted (milliseconds): for
    /// ever while the tiers are watched, else the attribute lifetime.
    dir_ttl_ms: AtomicU64,
    /// Held for reading by every scan across the tiers (lookups, listings),
    /// for writing by the mover's two-step switch, so no scan sees a moving
    /// file on neither tier.
    /// Striped by name, so lookups of different names never share a lock.
    scan_guard: Vec<parking_lot::RwLock<()>>,
    /// Held for reading by every listing (which covers every name), and
    /// for writing by the mover's switch together with its names' stripes
    /// of `scan_guard`: a listing takes one lock, not all the stripes.
    list_guard: parking_lot::RwLock<()>,
    /// Drops handles whose close a client need not wait for.
    deferred: deferred::Deferred,
    /// The mover's state directories (`.dfs/tmp`, `.dfs/ids` of each
    /// tier), opened once instead of per moved file.
    state_dirs: parking_lot::Mutex<Vec<StateDir>>,
    /// The version (size, mtime, ctime) of each file as its last handle
    /// through dfs closed: the tier watcher's events for writes made
    /// through dfs (passthrough writes carry the client's pid) are told
    /// from writes by other programs by comparing against it.
    released: IdMap<FileVersion>,
    /// The latest listing of each directory listed without OPENDIR, by
    /// when it was begun (see `listing`).
    listings: IdMap<(u64, Arc<DirHandle>)>,
    /// Numbers the listings begun without OPENDIR, in order.
    listings_begun: AtomicU64,
    /// When each directory was last listed from its start without OPENDIR.
    listed_at: IdMap<std::time::Instant>,
    /// Directories changed through dfs at most [`RACE_WINDOW`] after such
    /// a listing began, and when (see `end_listing`).
    changed_after_listing: IdMap<std::time::Instant>,
    /// Tells the kernel to drop what it cached (set once mounted).
    kernel: std::sync::OnceLock<Arc<dyn crate::watch::Invalidate>>,
    /// Listings kept up to date by dfs's own creates (see [`remembered`]).
    remembered: remembered::Remembered,
    /// Directories listed without OPENDIR while the tiers are not watched:
    /// the kernel caches such listings until told otherwise, so they are
    /// invalidated shortly after (see `watch::fall_back`).
    listed_unwatched: Mutex<std::collections::HashSet<u64>>,
    /// How the mount talks to the kernel (I/O mode, transport, tier
    /// watching), as decided at startup, for `dfs status`.
    modes: parking_lot::Mutex<Vec<(&'static str, String)>>,
    /// Open handles per node (`files` is by handle number).
    open_counts: IdMap<u32>,
    /// Moved files whose last name went while open: their placeholders go
    /// when the last handle closes.
    unpin_on_close: IdMap<()>,
    /// Of those, the ones open for writing.
    writer_counts: IdMap<u32>,
    /// Per tier: whether its times are fine grained (see [`empty`]).
    fine_times: Vec<bool>,
    /// Test hook for changes of several steps (see [`intent::Fault`]).
    intent_fault: parking_lot::Mutex<Option<intent::Fault>>,
    /// Mover switches begun and ended (see `no_switch`).
    pub(crate) switch_started: AtomicU64,
    pub(crate) switch_ended: AtomicU64,
}

/// What changes when a file's data does: size, mtime and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion([i64; 5]);

impl FileVersion {
    fn of(st: &Stat) -> Self {
        FileVersion([
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec as i64,
            st.st_ctime,
            st.st_ctime_nsec as i64,
        ])
    }
}

/// How long after a listing began a change to its directory may still
/// leave the kernel a stale cached listing (see [`Fs::end_listing`]): the
/// longest a reader may take over one listing and be covered.
const RACE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether tier `t`'s times are fine grained ([`empty::fine_times`]),
/// found in its `.dfs/tmp` (whatever a crash leaves there goes at the next
/// mount). No for a tier that does not take part in empty-copy tracking,
/// or where the scratch directory cannot be made (a read-only tier).
fn probe_fine_times(t: &Tier) -> bool {
    if !t.local_times {
        return false;
    }
    let tmp = format!("{STATE_DIR}/{}", transfer::TMP_DIR);
    for r in [STATE_DIR, tmp.as_str()] {
        let Ok((dir, name)) = t.parent(r.as_bytes()) else {
            return false;
        };
        match rustix::fs::mkdirat(&dir, os(name), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(_) => return false,
        }
    }
    let fine = t
        .open(tmp.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)
        .is_ok_and(|d| empty::fine_times(&d));
    log::debug!(
        "tier `{}`: {} times",
        t.name,
        if fine { "fine-grained" } else { "coarse" }
    );
    fine
}

/// An open state directory: (tier, sub-directory of `.dfs`) and its handle.
type StateDir = ((usize, &'static str), Arc<OwnedFd>);

/// Marks directory handles stale when dropped: at the end of an operation
/// that may have removed or moved directories, whichever way it ends.
struct DirsChanged<'a>(&'a Fs);

impl Drop for DirsChanged<'_> {
    fn drop(&mut self) {
        self.0.dirs_changed();
    }
}

/// Drops a directory's remembered listing when dropped: at the end of an
/// operation that removed or moved names in it, whichever way it ends.
struct ForgetListing<'a>(&'a Fs, u64);

impl Drop for ForgetListing<'_> {
    fn drop(&mut self) {
        self.0.remembered.forget(self.1);
        self.0.names_changed(self.1);
    }
}

/// Handles on every tier's copy of one union directory (`None`: the tier
/// has no such directory).
struct DirFds {
    epoch: u64,
    made: std::time::Instant,
    fds: Arc<[Option<OwnedFd>]>,
    /// Whether each copy is known empty (see [`empty`]).
    empty: Vec<empty::EmptyCopy>,
}

/// xattr in which a directory copy made by dfs records its union node id.
/// Hidden from clients: it can be neither read, listed nor set through the
/// mount.
pub const INO_XATTR: &str = "trusted.dfs.ino";

/// Whether a copy may carry its union id in [`INO_XATTR`]: directories
/// (cloned parents) and single-link files (moved by the mover).
fn carries_ino(st: &Stat) -> bool {
    is_dir(st) || (kind_of(st) == libc::S_IFREG && st.st_nlink == 1)
}

fn is_internal_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.dfs.")
}

/// The xattr target `name` in directory `dir`.
fn at<'a>(dir: &'a OwnedFd, name: &'a [u8]) -> xattr::Target<'a> {
    xattr::Target {
        dir: dir.as_fd(),
        name: Some(name),
    }
}

/// The object behind handle `fd` itself as an xattr target.
fn itself(fd: &OwnedFd) -> xattr::Target<'_> {
    xattr::Target {
        dir: fd.as_fd(),
        name: None,
    }
}

fn read_ino_xattr(dir: &OwnedFd, name: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 8];
    match xattr::get(at(dir, name), INO_XATTR.as_bytes(), &mut buf) {
        Ok(8) => Some(u64::from_le_bytes(buf)),
        _ => None,
    }
}

fn write_ino_xattr(dir: &OwnedFd, name: &[u8], ino: u64) {
    if let Err(e) = xattr::set(at(dir, name), INO_XATTR.as_bytes(), &ino.to_le_bytes(), 0) {
        log::debug!("cannot record the node id of {:?}: {e}", os(name));
    }
}

/// Errors meaning "this name is not on this tier": missing, a non-directory
/// in the way, or a symlink/escape the resolver refused to follow.
pub(crate) fn not_here(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV)
    )
}

fn kind_of(st: &Stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// Clears the set-ID bits a change by `c` clears on a local filesystem:
/// set-user-ID, set-group-ID with group execute, and set-group-ID without
/// it unless `c` is in the file's group, each only if `c` lacks
/// CAP_FSETID (`unprivileged`: the kernel said so; otherwise asked, and
/// only of files that have such bits). dfs writes and truncates as root,
/// which keeps the bits, and the kernel leaves clearing them to dfs
/// (FUSE_HANDLE_KILLPRIV_V2), so that it need not ask before every write.
fn clear_setid(fd: &impl AsFd, c: Caller, unprivileged: bool) -> Result<()> {
    let st = rustix::fs::fstat(fd)?;
    let mode = st.st_mode & 0o7777;
    if mode & (libc::S_ISUID | libc::S_ISGID) == 0 || (!unprivileged && keeps_setid(c)) {
        return Ok(());
    }
    let mut kept = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group(c, st.st_gid)) {
        kept &= !libc::S_ISGID;
    }
    if kept != mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(kept))?;
    }
    Ok(())
}

fn is_dir(st: &Stat) -> bool {
    kind_of(st) == libc::S_IFDIR
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        v.extend_from_slice(dir);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > 255 {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return Err(Errno(libc::EINVAL));
    }
    Ok(())
}

fn timespec(t: SetTime) -> Timespec {
    match t {
        SetTime::Now => Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        SetTime::At(t) => match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = -i64::from(d.subsec_nanos());
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        },
    }
}

const OMIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: libc::UTIME_OMIT,
};

/// `fchmodat2(AT_SYMLINK_NOFOLLOW)`: chmod that never follows a symlink a
/// tier may hold in place of the expected file.
fn chmod_nofollow(dir: &OwnedFd, name: &[u8], mode: u32) -> Result<()> {
    let c = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: valid fd and NUL-terminated string; plain integer arguments.
    let r = unsafe {
        libc::syscall(
            452, // fchmodat2
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        // Older kernel: open the object itself and fchmod it.
        let fd = rustix::fs::openat(
            dir,
            os(name),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if kind_of(&st) == libc::S_IFLNK {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::fs::chmod(p.as_str(), Mode::from_raw_mode(mode))?;
        return Ok(());
    }
    Err(e.into())
}

/// A getxattr reply: the value read into `buf`, or for `size` 0 (a size
/// query) a buffer of the value's length `n`.
fn finish_getxattr(mut buf: Vec<u8>, size: u32, n: usize) -> Result<Vec<u8>> {
    if size == 0 {
        return Ok(vec![0; n]);
    }
    buf.truncate(n);
    Ok(buf)
}

/// The size of an xattr value (`name`) or of the name list (`None`): the
/// size-0 query that getfattr, cp and rsync make first.
fn xattr_len(path: &str, name: Option<&[u8]>) -> Result<usize> {
    let p = CString::new(path).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: valid C strings; a null buffer with size 0 asks for the size.
    let r = unsafe {
        match name {
            Some(n) => {
                let n = CString::new(n).map_err(|_| Errno(libc::EINVAL))?;
                libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0)
            }
            None => libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0),
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(r as usize)
}

fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

impl Fs {
    /// A filesystem over `tiers`, placing new names with `policy`.
    pub fn new(tiers: TierSet, policy: Arc<dyn Policy>, opts: Options) -> Self {
        let devs: Vec<u64> = tiers.iter().map(|t| t.dev).collect();
        let fine_times = tiers.iter().map(probe_fine_times).collect();
        Fs {
            fine_times,
            nodes: Nodes::new(&devs),
            tiers,
            policy,
            files: IdMap::default(),
            dirs: IdMap::default(),
            next_fh: AtomicU64::new(1),
            locks: NameLocks::new(),
            opts,
            ino_xattr: rustix::process::geteuid().as_raw() == 0,
            switch: (0..1024).map(|_| parking_lot::RwLock::new(())).collect(),
            access: crate::access::AccessLog::default(),
            dircache: IdMap::default(),
            dir_epoch: AtomicU64::new(0),
            dir_ttl_ms: AtomicU64::new(1000),
            scan_guard: (0..64).map(|_| parking_lot::RwLock::new(())).collect(),
            list_guard: parking_lot::RwLock::new(()),
            deferred: deferred::Deferred::new(),
            state_dirs: parking_lot::Mutex::new(Vec::new()),
            released: IdMap::default(),
            listings: IdMap::default(),
            listings_begun: AtomicU64::new(0),
            listed_at: IdMap::default(),
            changed_after_listing: IdMap::default(),
            kernel: std::sync::OnceLock::new(),
            remembered: remembered::Remembered::default(),
            listed_unwatched: Mutex::new(std::collections::HashSet::new()),
            modes: parking_lot::Mutex::new(Vec::new()),
            open_counts: IdMap::default(),
            unpin_on_close: IdMap::default(),
            writer_counts: IdMap::default(),
            intent_fault: parking_lot::Mutex::new(None),
            switch_started: AtomicU64::new(0),
            switch_ended: AtomicU64::new(0),
        }
    }

    /// Lets the core tell the kernel to drop a cached listing (see
    /// `end_listing`); set once the session is up.
    pub fn set_kernel_notifier(&self, k: Arc<dyn crate::watch::Invalidate>) {
        let _ = self.kernel.set(k);
    }

    /// A name in directory `dir` was created, removed or renamed through
    /// dfs: noted if a listing of `dir` began shortly before (see
    /// `end_listing`).
    fn names_changed(&self, dir: u64) {
        let recent = self
            .listed_at
            .get(&dir)
            .is_some_and(|t| t.elapsed() < RACE_WINDOW);
        if recent
            && self
                .changed_after_listing
                .insert(dir, std::time::Instant::now())
                .is_none()
            && self.changed_after_listing.len() > 4096
        {
            self.changed_after_listing
                .retain(|_, t| t.elapsed() < RACE_WINDOW);
        }
    }

    /// Test hook: makes the next changes of several steps fail, stop or
    /// kill the daemon at a given step (`DFS_FAULT_INTENT`).
    pub fn set_intent_fault(&self, f: Option<intent::Fault>) {
        *self.intent_fault.lock() = f;
    }

    /// How long directory handles may be reused without checking: pass
    /// `None` while a watcher reports every change made on the tiers.
    pub fn set_dir_cache_lifetime(&self, d: Option<std::time::Duration>) {
        let ms = d.map(|d| d.as_millis().min(u128::from(u64::MAX - 1)) as u64);
        self.dir_ttl_ms
            .store(ms.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Something changed which directories exist on which tier, or may
    /// have (and so any name anywhere): cached handles and remembered
    /// listings are stale.
    pub fn dirs_changed(&self) {
        self.dir_epoch.fetch_add(1, Ordering::AcqRel);
        self.remembered.forget_all();
    }

    /// A directory was made through dfs: cached handles are stale (its
    /// parent's remembered listing is updated by the create itself).
    fn dir_made(&self) {
        self.dir_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// A name changed on a tier behind dfs's back (the watcher says so):
    /// no remembered listing may be used until read again.
    pub fn names_changed_behind(&self) {
        self.remembered.forget_all();
    }

    /// Handles on every tier's copy of directory `ino`, cached while the
    /// kernel holds the node.
    fn dir_fds(&self, ino: u64) -> Result<Arc<DirFds>> {
        let epoch = self.dir_epoch.load(Ordering::Acquire);
        if let Some(d) = self.dircache.get(&ino) {
            let ttl = self.dir_ttl_ms.load(Ordering::Relaxed);
            if d.epoch == epoch
                && (ttl == u64::MAX || d.made.elapsed().as_millis() < u128::from(ttl))
            {
                return Ok(d.clone());
            }
        }
        // Not while a change of several steps moves directories between
        // paths (it holds this for writing, and updates the node table
        // before it lets go): the path and the tiers must agree.
        let fds = {
            let _steps = self.list_guard.read();
            let rel = self.nodes.path_of(ino)?;
            let mut fds = Vec::with_capacity(self.tiers.len());
            for t in self.tiers.iter() {
                match t.open(&rel, OFlags::PATH | OFlags::DIRECTORY) {
                    Ok(fd) => fds.push(Some(fd)),
                    Err(e) if not_here(&e) => fds.push(None),
                    Err(e) => return Err(e.into()),
                }
            }
            fds
        };
        if fds.iter().all(Option::is_none) {
            self.dircache.remove(&ino);
            return Err(Errno(libc::ENOENT));
        }
        let empty = self
            .tiers
            .iter()
            .zip(&fds)
            .map(|(t, fd)| {
                let fine = self.fine_times.get(t.index).copied().unwrap_or(false);
                empty::EmptyCopy::new(fd.is_some() && t.local_times, t.dev, fine)
            })
            .collect();
        let d = Arc::new(DirFds {
            epoch,
            made: std::time::Instant::now(),
            fds: fds.into(),
            empty,
        });
        if self.nodes.contains(ino) {
            self.dircache.insert(ino, d.clone());
        }
        Ok(d)
    }

    /// Where file node `ino` sits, through cached handles: its parent
    /// directory's handles, the tier of its copy, and its name. `None` for
    /// directories and when nothing is cached (callers then `locate`).
    fn placed(&self, ino: u64) -> Option<(Arc<DirFds>, usize, Box<[u8]>)> {
        let node = self.nodes.get(ino).ok()?;
        if node.is_dir() {
            return None;
        }
        let link = self.nodes.held_link(ino)?;
        let d = self.dir_fds(link.parent).ok()?;
        let tier = node.tier();
        d.fds.get(tier)?.as_ref()?;
        Some((d, tier, link.name))
    }

    /// stat of node `ino` by one call on a cached handle, when possible: a
    /// directory's winning copy, or a file's copy beside its parent's handle.
    fn stat_cached(&self, ino: u64) -> Option<Stat> {
        let node = self.nodes.get(ino).ok()?;
        if node.is_dir() {
            let d = self.dir_fds(ino).ok()?;
            let fd = d.fds.iter().flatten().next()?;
            return rustix::fs::fstat(fd).ok();
        }
        let (d, tier, name) = self.placed(ino)?;
        let fd = d.fds.get(tier)?.as_ref()?;
        rustix::fs::statat(fd, os(&name), AtFlags::SYMLINK_NOFOLLOW).ok()
    }

    /// Every copy of `name` in the directory whose tier handles are `d`, in
    /// tier order (as [`Fs::find_all`], without path walks).
    fn find_all_at(&self, d: &DirFds, name: &[u8]) -> Result<Vec<(usize, Stat)>> {
        let _scan = self.scan_lock(name).read();
        let mut v = Vec::new();
        for (i, fd) in d.fds.iter().enumerate() {
            let Some(fd) = fd else { continue };
            match rustix::fs::statat(fd, os(name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => v.push((i, st)),
                Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(v)
    }

    /// [`Fs::union_ino`] of the copy of `name` on `tier` in the directory
    /// whose tier handles are `d`.
    fn ino_at(&self, d: &DirFds, tier: usize, name: &[u8], st: &Stat) -> u64 {
        if carries_ino(st)
            && self.ino_xattr
            && self.tiers.get(tier).is_some_and(|t| t.carries_ids())
            && let Some(fd) = d.fds.get(tier).and_then(|f| f.as_ref())
            && let Some(ino) = read_ino_xattr(fd, name)
        {
            return ino;
        }
        self.nodes.ino_for(st.st_dev, st.st_ino)
    }

    /// The winning copy of `name` in directory `d`: (tier, stat, node id).
    /// A copy known empty right now is passed over (one `fstat`, see
    /// [`empty`]).
    fn find_in(&self, d: &DirFds, name: &[u8]) -> Result<Option<(usize, Stat, u64)>> {
        self.find_in_except(d, name, None)
    }

    /// [`Fs::find_in`] without looking on tier `skip`.
    fn find_in_except(
        &self,
        d: &DirFds,
        name: &[u8],
        skip: Option<usize>,
    ) -> Result<Option<(usize, Stat, u64)>> {
        let _scan = self.scan_lock(name).read();
        for (i, fd) in d.fds.iter().enumerate() {
            let Some(fd) = fd else { continue };
            if skip == Some(i) {
                continue;
            }
            let empty = &d.empty[i];
            if empty.known_empty(fd) {
                continue;
            }
            match rustix::fs::statat(fd, os(name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => return Ok(Some((i, st, self.ino_at(d, i, name, &st)))),
                Err(rustix::io::Errno::NOENT) => empty.missed(fd),
                Err(rustix::io::Errno::NOTDIR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Records and logs how the mount does `what` (e.g. "I/O mode"), so
    /// that `dfs status` can say it too.
    pub fn set_mode(&self, what: &'static str, how: String) {
        log::info!("{what}: {how}");
        let mut m = self.modes.lock();
        m.retain(|(w, _)| *w != what);
        m.push((what, how));
    }

    /// The modes recorded by [`Fs::set_mode`], in the order first set.
    pub fn modes(&self) -> Vec<(&'static str, String)> {
        self.modes.lock().clone()
    }

    /// The tiers, in order.
    pub fn tiers(&self) -> &TierSet {
        &self.tiers
    }

    /// The placement policy in use.
    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    fn tier(&self, i: usize) -> Result<&Tier> {
        self.tiers.get(i).ok_or(Errno(libc::EIO))
    }

    /// Runs `f` as the caller when the kernel does not check permissions.
    fn checked<T>(&self, c: Caller, f: impl FnOnce() -> T) -> T {
        if self.opts.kernel_permissions {
            f()
        } else {
            as_caller(c, f)
        }
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    // ---- resolution -----------------------------------------------------

    /// The winning copy of `rel`: first tier where it exists.
    pub fn find(&self, rel: &[u8]) -> Result<Option<(usize, Stat)>> {
        let _scan = self.scan_lock(split_parent(rel).1).read();
        for t in self.tiers.iter() {
            match t.lstat(rel) {
                Ok(st) => return Ok(Some((t.index, st))),
                Err(e) if not_here(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Every copy of `rel`, in tier order.
    fn find_all(&self, rel: &[u8]) -> Result<Vec<(usize, Stat)>> {
        let _scan = self.scan_lock(split_parent(rel).1).read();
        let mut v = Vec::new();
        for t in self.tiers.iter() {
            match t.lstat(rel) {
                Ok(st) => v.push((t.index, st)),
                Err(e) if not_here(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(v)
    }

    /// The node id of `rel`'s copy on `tier` whose stat is `st`. A directory
    /// copy that dfs created to extend a parent chain carries the id of the
    /// copy it was cloned from, so the directory keeps its st_ino when the
    /// new copy becomes the winning one; a file the mover copied to another
    /// tier carries the id it had before the move.
    pub(crate) fn union_ino(&self, tier: usize, rel: &[u8], st: &Stat) -> u64 {
        if carries_ino(st)
            && self.ino_xattr
            && self.tier(tier).is_ok_and(|t| t.carries_ids())
            && !rel.is_empty()
            && let Some(ino) = self
                .tier(tier)
                .ok()
                .and_then(|t| t.parent(rel).ok())
                .and_then(|(dir, name)| read_ino_xattr(&dir, name))
        {
            return ino;
        }
        self.nodes.ino_for(st.st_dev, st.st_ino)
    }

    fn attr_of(&self, st: Stat) -> Attr {
        Attr {
            ino: self.nodes.ino_for(st.st_dev, st.st_ino),
            st,
        }
    }

    fn child(&self, parent: u64, name: &[u8]) -> Result<Vec<u8>> {
        check_name(name)?;
        let dir = self.nodes.path_of(parent)?;
        Ok(join(&dir, name))
    }

    fn reserved(parent: u64, name: &[u8]) -> bool {
        parent == ROOT && name == STATE_DIR.as_bytes()
    }

    /// Where node `ino` lives now: (tier, stat, path).
    fn locate(&self, ino: u64) -> Result<(usize, Stat, Vec<u8>)> {
        if ino == ROOT {
            let (i, st) = self.find(b"")?.ok_or(Errno(libc::ENOENT))?;
            return Ok((i, st, Vec::new()));
        }
        let node = self.nodes.get(ino)?;
        let rel = self.nodes.path_of(ino)?;
        if !node.is_dir() {
            let t = self.tier(node.tier())?;
            match t.lstat(&rel) {
                Ok(st) => return Ok((t.index, st, rel)),
                Err(e) if not_here(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (i, st) = self.find(&rel)?.ok_or(Errno(libc::ENOENT))?;
        node.set_tier(i);
        Ok((i, st, rel))
    }

    // ---- lookups and attributes ------------------------------------------

    /// Resolves `name` in `parent` and takes a kernel reference on it.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        if Self::reserved(parent, name) {
            return Err(Errno(libc::ENOENT));
        }
        check_name(name)?;
        let d = self.dir_fds(parent)?;
        let (tier, st, ino) = self.find_in(&d, name)?.ok_or(Errno(libc::ENOENT))?;
        self.nodes.remember(ino, kind_of(&st), tier, parent, name);
        Ok(Attr { ino, st })
    }

    /// Gives back `n` kernel references on `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.nodes.forget(ino, n);
        if !self.nodes.contains(ino) {
            self.dircache.remove(&ino);
            self.remembered.dropped(ino);
        }
    }

    /// Attributes of `ino`; through the open file when `fh` is given, so an
    /// unlinked but open file still answers.
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        if let Some(h) = fh.and_then(|fh| self.files.get(&fh).map(|h| h.clone())) {
            let st = rustix::fs::fstat(&h.file)?;
            return Ok(Attr { ino, st });
        }
        if let Some(st) = self.stat_cached(ino) {
            return Ok(Attr { ino, st });
        }
        match self.locate(ino) {
            Ok((_, st, _)) => Ok(Attr { ino, st }),
            Err(e) => {
                // fstat of an unlinked file arrives without its handle:
                // answer from any handle still open on the node.
                let h = self
                    .files
                    .iter()
                    .find(|h| h.ino == ino)
                    .map(|h| h.value().clone())
                    .ok_or(e)?;
                let st = rustix::fs::fstat(&h.file)?;
                Ok(Attr { ino, st })
            }
        }
    }

    /// chmod, chown, truncate and utimens. Directories change on every tier
    /// (rule 7); files on their winning copy only (rule 1).
    pub fn setattr(&self, c: Caller, ino: u64, sa: SetAttr, fh: Option<u64>) -> Result<Attr> {
        let (tier, st, rel) = match self.locate(ino) {
            Ok(x) => x,
            // No name left (unlinked while open): act through the handle.
            Err(e) => {
                let h = fh
                    .and_then(|fh| self.files.get(&fh).map(|h| h.clone()))
                    .or_else(|| {
                        self.files
                            .iter()
                            .find(|h| h.ino == ino)
                            .map(|h| h.value().clone())
                    })
                    .ok_or(e)?;
                self.setattr_fd(c, &h.file, &sa)?;
                return self.getattr(ino, fh);
            }
        };
        let targets: Vec<usize> = if is_dir(&st) {
            self.find_all(&rel)?
                .into_iter()
                .filter(|(_, s)| is_dir(s))
                .map(|(i, _)| i)
                .collect()
        } else {
            vec![tier]
        };
        if let Some(size) = sa.size {
            if is_dir(&st) {
                return Err(Errno(libc::EISDIR));
            }
            let handle = fh.and_then(|fh| self.files.get(&fh).map(|h| h.clone()));
            let done = match handle {
                Some(h) => match h.file.set_len(size) {
                    Ok(()) => {
                        clear_setid(&h.file, c, false)?;
                        true
                    }
                    Err(_) => false,
                },
                None => false,
            };
            if !done {
                let t = self.tier(tier)?;
                let f = self.checked(c, || t.open(&rel, OFlags::WRONLY))?;
                rustix::fs::ftruncate(&f, size)?;
                clear_setid(&f, c, false)?;
            }
        }
        // Apply to the last tier first, the winning copy last, so a failure
        // leaves the visible copy unchanged.
        for &i in targets.iter().rev() {
            let t = self.tier(i)?;
            if rel.is_empty() {
                self.setattr_root(c, t, &sa)?;
                continue;
            }
            let (dir, name) = t.parent(&rel)?;
            self.checked(c, || -> Result<()> {
                if sa.uid.is_some() || sa.gid.is_some() {
                    rustix::fs::chownat(
                        &dir,
                        os(name),
                        sa.uid.map(rustix::fs::Uid::from_raw),
                        sa.gid.map(rustix::fs::Gid::from_raw),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
                if let Some(mode) = sa.mode {
                    chmod_nofollow(&dir, name, mode & 0o7777)?;
                }
                if sa.atime.is_some() || sa.mtime.is_some() {
                    let ts = Timestamps {
                        last_access: sa.atime.map(timespec).unwrap_or(OMIT),
                        last_modification: sa.mtime.map(timespec).unwrap_or(OMIT),
                    };
                    rustix::fs::utimensat(&dir, os(name), &ts, AtFlags::SYMLINK_NOFOLLOW)?;
                }
                Ok(())
            })?;
        }
        self.getattr(ino, fh)
    }

    fn setattr_root(&self, c: Caller, t: &Tier, sa: &SetAttr) -> Result<()> {
        let fd = t.open(b"", OFlags::RDONLY | OFlags::DIRECTORY)?;
        self.setattr_fd(c, &fd, &SetAttr { size: None, ..*sa })
    }

    /// setattr through an open file descriptor.
    fn setattr_fd(&self, c: Caller, fd: &impl AsFd, sa: &SetAttr) -> Result<()> {
        if let Some(size) = sa.size {
            rustix::fs::ftruncate(fd, size)?;
            clear_setid(fd, c, false)?;
        }
        self.checked(c, || -> Result<()> {
            if sa.uid.is_some() || sa.gid.is_some() {
                rustix::fs::fchown(
                    fd,
                    sa.uid.map(rustix::fs::Uid::from_raw),
                    sa.gid.map(rustix::fs::Gid::from_raw),
                )?;
            }
            if let Some(mode) = sa.mode {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
            }
            if sa.atime.is_some() || sa.mtime.is_some() {
                let ts = Timestamps {
                    last_access: sa.atime.map(timespec).unwrap_or(OMIT),
                    last_modification: sa.mtime.map(timespec).unwrap_or(OMIT),
                };
                rustix::fs::futimens(fd, &ts)?;
            }
            Ok(())
        })
    }

    /// The target of symlink `ino`, unchanged.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (tier, _, rel) = self.locate(ino)?;
        let t = self.tier(tier)?;
        let (dir, name) = t.parent(&rel)?;
        let target = rustix::fs::readlinkat(&dir, os(name), Vec::new())?;
        Ok(target.into_bytes())
    }

    // ---- placement -------------------------------------------------------

    /// Chooses the tier for new name `rel` (the caller makes its parent
    /// chain there once it knows the name is free).
    fn place(
        &self,
        c: Caller,
        rel: &[u8],
        kind: NodeKind,
        mode: u32,
        full: &[usize],
        exists: &[bool],
    ) -> Result<usize> {
        let space_fns: Vec<Box<dyn Fn() -> Space + '_>> = self
            .tiers
            .iter()
            .map(|t| Box::new(move || tier_space(t)) as Box<dyn Fn() -> Space + '_>)
            .collect();
        // A tier below its min_free takes no new names, whatever the policy.
        let views: Vec<TierView<'_>> = self
            .tiers
            .iter()
            .map(|t| {
                TierView::new(
                    t.index,
                    &t.name,
                    &t.path,
                    exists[t.index],
                    space_fns[t.index].as_ref(),
                )
            })
            .filter(|v| !full.contains(&v.index))
            .filter(|v| match self.tier(v.index).ok().and_then(|t| t.min_free) {
                None => true,
                Some(min) => {
                    let s = v.space();
                    s.free_bytes > min.bytes_of(s.total_bytes)
                }
            })
            .collect();
        if views.is_empty() {
            return Err(Errno(libc::ENOSPC));
        }
        let req = CreateRequest {
            path: Path::new(os(rel)),
            kind,
            uid: c.uid,
            gid: c.gid,
            mode,
        };
        let chosen = self.policy.choose(&req, &views).map_err(Errno)?;
        if !views.iter().any(|v| v.index == chosen) {
            log::error!(
                "policy `{}` chose tier {} for {:?}, which is not one of the tiers offered ({})",
                self.policy.name(),
                chosen,
                os(rel),
                views.iter().map(|v| v.name).collect::<Vec<_>>().join(", ")
            );
            return Err(Errno(libc::EIO));
        }
        Ok(chosen)
    }

    /// Creates the missing directories of `dir_rel` on tier `to`, each a
    /// copy (mode, owner, times, xattrs) of the directory's winning copy.
    /// Returns the directories it made (path and inode), outermost first.
    fn clone_parents(&self, to: usize, dir_rel: &[u8]) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut made = Vec::new();
        let t = self.tier(to)?;
        let mut end = 0;
        while end < dir_rel.len() {
            end = dir_rel[end..]
                .iter()
                .position(|&b| b == b'/')
                .map(|p| end + p)
                .unwrap_or(dir_rel.len());
            let prefix = &dir_rel[..end];
            end += 1;
            if t.open(prefix, OFlags::PATH | OFlags::DIRECTORY).is_ok() {
                continue;
            }
            let (src_tier, st) = self
                .find_all(prefix)?
                .into_iter()
                .find(|(_, s)| is_dir(s))
                .ok_or(Errno(libc::ENOENT))?;
            let union_ino = self.union_ino(src_tier, prefix, &st);
            let (pdir, name) = t.parent(prefix)?;
            // A non-directory in the way on this tier is shadowed by the
            // directory (which wins on a faster tier): invisible junk.
            if let Ok(junk) = rustix::fs::statat(&pdir, os(name), AtFlags::SYMLINK_NOFOLLOW)
                && !is_dir(&junk)
                && src_tier < to
            {
                self.remove_copy(to, prefix, &junk)?;
            }
            match rustix::fs::mkdirat(&pdir, os(name), Mode::from_raw_mode(st.st_mode & 0o7777)) {
                Ok(()) => self.dirs_changed(),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
            let _ = rustix::fs::chownat(
                &pdir,
                os(name),
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            );
            // chown may clear setgid; restore the exact mode.
            let _ = chmod_nofollow(&pdir, name, st.st_mode & 0o7777);
            if let Ok(src) = self.tier(src_tier)?.open(prefix, OFlags::PATH)
                && let Ok(dst) = t.open(prefix, OFlags::PATH)
            {
                copy_xattrs(&src, &dst);
            }
            let ts = Timestamps {
                last_access: Timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: Timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            if self.ino_xattr {
                t.note_carries_ids();
                write_ino_xattr(&pdir, name, union_ino);
                // A listing read between the mkdir and now may have listed
                // the new copy by its plain id.
                self.remembered.forget_all();
            }
            let _ = rustix::fs::utimensat(&pdir, os(name), &ts, AtFlags::SYMLINK_NOFOLLOW);
            if let Ok(st) = rustix::fs::statat(&pdir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
                made.push((prefix.to_vec(), st.st_ino));
            }
        }
        Ok(made)
    }

    /// Every name-creating call: checks the name exists nowhere, places it
    /// with the policy and runs `make` on the chosen tier, all under the
    /// name's lock. A tier that turns out to be full (ENOSPC, EDQUOT) is
    /// left out and the policy asked again, so a create fails for lack of
    /// space only when no tier has room.
    fn create_name<T>(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        kind: NodeKind,
        mode: u32,
        make: impl Fn(&OwnedFd, &[u8]) -> Result<(T, Option<Stat>)>,
    ) -> Result<(Attr, T)> {
        if Self::reserved(parent, name) {
            return Err(Errno(libc::EPERM));
        }
        let rel = self.child(parent, name)?;
        let _guard = self.locks.lock(parent, name);
        // Before the name is made: a change on the tiers reported from now
        // on makes the new directory's remembered (empty) listing stale.
        let ticket = self.remembered.ticket();
        let d = self.dir_fds(parent)?;
        let exists: Vec<bool> = d.fds.iter().map(Option::is_some).collect();
        let mut full: Vec<usize> = Vec::new();
        let mut checked = false;
        loop {
            let tier = self.place(c, &rel, kind, mode, &full, &exists)?;
            if !checked {
                // The name must be free on every tier. On the chosen one
                // (when the parent is there) the exclusive make below finds
                // a copy itself: one lookup fewer per new name.
                let skip = exists[tier].then_some(tier);
                if self.find_in_except(&d, name, skip)?.is_some() {
                    return Err(Errno(libc::EEXIST));
                }
                checked = true;
            }
            if !exists[tier] {
                self.clone_parents(tier, split_parent(&rel).0)?;
            }
            // The parent's handle on that tier: cached, or just created by
            // the placement (which cloned the parent chain).
            let opened;
            let dir = match d.fds.get(tier).and_then(|f| f.as_ref()) {
                Some(fd) => fd,
                None => {
                    opened = self.tier(tier)?.parent(&rel)?.0;
                    &opened
                }
            };
            match make(dir, name) {
                Err(Errno(e)) if (e == libc::ENOSPC || e == libc::EDQUOT) => {
                    log::info!(
                        "tier `{}` is full; placing {:?} again without it",
                        self.tier(tier).map(|t| t.name.as_str()).unwrap_or("?"),
                        os(&rel)
                    );
                    full.push(tier);
                }
                Err(e) => return Err(e),
                Ok((v, made)) => {
                    let st = match made.map_or_else(
                        || rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW),
                        Ok,
                    ) {
                        Ok(st) => st,
                        Err(e) => {
                            // The name is there but unrecorded.
                            self.remembered.forget(parent);
                            return Err(e.into());
                        }
                    };
                    let a = self.attr_of(st);
                    self.nodes.remember(a.ino, kind_of(&st), tier, parent, name);
                    // The new directory's listing first: kept only if no
                    // change through dfs (a create in it by a client that
                    // found it already) ran since `ticket`.
                    if is_dir(&st) && self.lists_without_open() {
                        self.remembered.made_empty(a.ino, ticket);
                    }
                    self.remembered.added(parent, name, tier, a.ino, &st);
                    self.names_changed(parent);
                    return Ok((a, v));
                }
            }
        }
    }

    /// mkdir: EEXIST if the name is on any tier; placed by the policy.
    pub fn mkdir(&self, c: Caller, parent: u64, name: &[u8], mode: u32) -> Result<Attr> {
        let (a, ()) = self.create_name(c, parent, name, NodeKind::Directory, mode, |dir, n| {
            as_caller(c, || {
                rustix::fs::mkdirat(dir, os(n), Mode::from_raw_mode(mode & 0o7777))
            })?;
            self.dir_made();
            Ok(((), None))
        })?;
        Ok(a)
    }

    /// mknod: fifos, sockets, devices and plain files.
    pub fn mknod(&self, c: Caller, parent: u64, name: &[u8], mode: u32, rdev: u64) -> Result<Attr> {
        let kind = if mode & libc::S_IFMT == libc::S_IFREG {
            NodeKind::File
        } else {
            NodeKind::Special
        };
        let (a, ()) = self.create_name(c, parent, name, kind, mode, |dir, n| {
            let cname = CString::new(n).map_err(|_| Errno(libc::EINVAL))?;
            as_caller(c, || {
                // SAFETY: valid dir fd and C string; mode and dev are integers.
                let r = unsafe { libc::mknodat(dir.as_raw_fd(), cname.as_ptr(), mode, rdev) };
                if r == 0 {
                    Ok(((), None))
                } else {
                    Err(Errno::from(io::Error::last_os_error()))
                }
            })
        })?;
        Ok(a)
    }

    /// symlink: the target is stored unchanged.
    pub fn symlink(&self, c: Caller, parent: u64, name: &[u8], target: &[u8]) -> Result<Attr> {
        let (a, ()) = self.create_name(c, parent, name, NodeKind::Symlink, 0o777, |dir, n| {
            as_caller(c, || rustix::fs::symlinkat(os(target), dir, os(n)))?;
            Ok(((), None))
        })?;
        Ok(a)
    }

    /// create + open. An existing name (a race with another creator) is
    /// opened instead unless O_EXCL is set.
    pub fn create(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> Result<(Attr, u64)> {
        let made = self.create_name(c, parent, name, NodeKind::File, mode, |dir, n| {
            let oflags = open_flags(flags) | OFlags::CREATE | OFlags::EXCL;
            let fd = as_caller(c, || {
                rustix::fs::openat(dir, os(n), oflags, Mode::from_raw_mode(mode & 0o7777))
            })?;
            // The new file itself: no second lookup of its name.
            let st = rustix::fs::fstat(&fd).ok();
            Ok((fd, st))
        });
        match made {
            Ok((a, fd)) => {
                let fh = self.register(FileHandle {
                    ino: a.ino,
                    file: File::from(fd),
                    writable: flags & libc::O_ACCMODE != libc::O_RDONLY,
                });
                Ok((a, fh))
            }
            Err(Errno(libc::EEXIST)) if flags & libc::O_EXCL == 0 => {
                let a = self.lookup(parent, name)?;
                match self.open(c, a.ino, flags & !libc::O_CREAT) {
                    Ok(fh) => Ok((a, fh)),
                    Err(e) => {
                        self.forget(a.ino, 1); // the kernel gets no entry
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// link: made on the source's tier (so never EXDEV); EEXIST when the new
    /// name exists on any tier.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        if Self::reserved(newparent, newname) {
            return Err(Errno(libc::EPERM));
        }
        let rel = self.child(newparent, newname)?;
        let _g = self.locks.lock(newparent, newname);
        if self.find(&rel)?.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let (tier, st, src) = self.locate(ino)?;
        if is_dir(&st) {
            return Err(Errno(libc::EPERM));
        }
        let (dst_dir, _) = split_parent(&rel);
        self.clone_parents(tier, dst_dir)?;
        let t = self.tier(tier)?;
        let (sdir, sname) = t.parent(&src)?;
        let (ddir, dname) = t.parent(&rel)?;
        rustix::fs::linkat(&sdir, os(sname), &ddir, os(dname), AtFlags::empty())?;
        // A second name changes how the first is listed (see `carries_ino`).
        self.remembered.forget_all();
        self.names_changed(newparent);
        let st = t.lstat(&rel)?;
        let a = self.attr_of(st);
        self.nodes
            .remember(a.ino, kind_of(&st), tier, newparent, newname);
        Ok(a)
    }

    // ---- removal ---------------------------------------------------------

    /// Removes copy `rel` on tier `i`, whatever it is (for invisible copies).
    fn remove_copy(&self, i: usize, rel: &[u8], st: &Stat) -> Result<()> {
        let (dir, name) = self.tier(i)?.parent(rel)?;
        if is_dir(st) {
            let _bump = DirsChanged(self);
            dir::remove_tree(&dir, name)
        } else {
            match rustix::fs::unlinkat(&dir, os(name), AtFlags::empty()) {
                Ok(()) => {
                    self.other_links_relisted(st);
                    Ok(())
                }
                Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }

    /// A copy that had other links lost one: the other names may list
    /// under another id now (see `carries_ino`), so no remembered listing
    /// holds.
    fn other_links_relisted(&self, st: &Stat) {
        if st.st_nlink > 1 {
            self.remembered.forget_all();
        }
    }

    /// Removes `name`'s copy on tier `i` in the directory whose tier
    /// handles are `d`, if it is still the copy `st` (same inode): through
    /// the held handle, so a directory moved meanwhile cannot send the
    /// removal elsewhere. For invisible copies only, as [`Fs::remove_copy`].
    fn remove_copy_at(&self, d: &DirFds, i: usize, name: &[u8], st: &Stat) -> Result<()> {
        let Some(dir) = d.fds.get(i).and_then(Option::as_ref) else {
            return Ok(());
        };
        match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_ino == st.st_ino => {}
            Ok(_) | Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if is_dir(st) {
            let _bump = DirsChanged(self);
            dir::remove_tree(dir, name)
        } else {
            match rustix::fs::unlinkat(dir, os(name), AtFlags::empty()) {
                Ok(()) => {
                    self.other_links_relisted(st);
                    Ok(())
                }
                Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }

    /// Whether tiers `a` and `b` are on different filesystems: a change on
    /// one must be durable before a change on the other that depends on it
    /// (one filesystem keeps the order of its own changes).
    fn crosses(&self, a: usize, b: usize) -> bool {
        self.tiers.get(a).map(|t| t.dev) != self.tiers.get(b).map(|t| t.dev)
    }

    /// unlink: every copy goes, last tier first (rule 2).
    pub fn unlink(&self, c: Caller, parent: u64, name: &[u8]) -> Result<()> {
        if Self::reserved(parent, name) {
            return Err(Errno(libc::ENOENT));
        }
        check_name(name)?;
        let _g = self.locks.lock(parent, name);
        // The parent's held tier handles, as lookup uses: no path walk from
        // the tier roots for the common case of one copy.
        let d = self.dir_fds(parent)?;
        let copies = self.find_all_at(&d, name)?;
        let (wt, winner) = copies.first().copied().ok_or(Errno(libc::ENOENT))?;
        if is_dir(&winner) {
            return Err(Errno(libc::EISDIR));
        }
        let ino = self.ino_at(&d, wt, name, &winner);
        // The name goes from the parent's remembered listing, whatever
        // the outcome.
        let _forget = ForgetListing(self, parent);
        for (k, (i, st)) in copies.iter().enumerate().rev() {
            if *i == wt {
                let dir = d
                    .fds
                    .get(wt)
                    .and_then(Option::as_ref)
                    .ok_or(Errno(libc::EIO))?;
                self.checked(c, || rustix::fs::unlinkat(dir, os(name), AtFlags::empty()))?;
            } else {
                self.remove_copy_at(&d, *i, name, st)?;
                // Durable before the faster copy's removal on another
                // filesystem: a power cut must not bring this older copy
                // back once the faster one is gone.
                if let Some((next, _)) = k.checked_sub(1).and_then(|n| copies.get(n))
                    && self.crosses(*i, *next)
                    && let Some(dir) = d.fds.get(*i).and_then(Option::as_ref)
                {
                    transfer::sync_dirs(std::iter::once(dir))?;
                }
            }
        }
        // Its other names are listed differently once it has one.
        self.other_links_relisted(&winner);
        self.last_name_gone(ino, &winner);
        self.nodes.drop_link(ino, parent, name);
        Ok(())
    }

    /// File `ino` (whose copy was `st`) lost a name. If that was a moved
    /// file's last name, the placeholder pinning its id can go, once no
    /// handle holds the file open: an open file keeps its id, which a new
    /// file on the pinned inode number would otherwise share.
    fn last_name_gone(&self, ino: u64, st: &Stat) {
        if st.st_nlink > 1 || ino == self.nodes.ino_for(st.st_dev, st.st_ino) {
            return;
        }
        // Noted before the open check, which `release` makes after its
        // count drops: one of the two sees the other and unpins.
        self.unpin_on_close.insert(ino, ());
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.is_open(ino) && self.unpin_on_close.remove(&ino).is_some() {
            self.unpin(ino);
        }
    }

    /// rmdir: ENOTEMPTY unless the union listing is empty; then every copy
    /// goes, last tier first (rule 3).
    pub fn rmdir(&self, c: Caller, parent: u64, name: &[u8]) -> Result<()> {
        let _bump = DirsChanged(self);
        if Self::reserved(parent, name) {
            return Err(Errno(libc::ENOENT));
        }
        let rel = self.child(parent, name)?;
        let _g = self.locks.lock(parent, name);
        let _forget = ForgetListing(self, parent);
        let copies = self.find_all(&rel)?;
        let (_, winner) = copies.first().copied().ok_or(Errno(libc::ENOENT))?;
        if !is_dir(&winner) {
            return Err(Errno(libc::ENOTDIR));
        }
        if !dir::is_empty(&self.tiers, &rel)? {
            return Err(Errno(libc::ENOTEMPTY));
        }
        let ino = self.union_ino(copies[0].0, &rel, &winner);
        for (k, (i, st)) in copies.iter().enumerate().rev() {
            let (dir, n) = self.tier(*i)?.parent(&rel)?;
            if is_dir(st) {
                self.checked(c, || rustix::fs::unlinkat(&dir, os(n), AtFlags::REMOVEDIR))?;
            } else {
                self.remove_copy(*i, &rel, st)?;
            }
            // As in unlink: durable before a faster copy on another
            // filesystem goes.
            if let Some((next, _)) = k.checked_sub(1).and_then(|n| copies.get(n))
                && self.crosses(*i, *next)
            {
                transfer::sync_dirs(std::iter::once(&dir))?;
            }
        }
        self.nodes.drop_link(ino, parent, name);
        Ok(())
    }

    // ---- rename ----------------------------------------------------------

    /// rename(a, b) with RENAME_NOREPLACE / RENAME_EXCHANGE (rule 4, 10).
    pub fn rename(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        if Self::reserved(parent, name) {
            return Err(Errno(libc::ENOENT));
        }
        if Self::reserved(newparent, newname) {
            return Err(Errno(libc::EPERM));
        }
        let _g = self.locks.lock_two((parent, name), (newparent, newname));
        // Both directories' remembered listings go once the names moved
        // (dropped after the tiers changed, whatever the outcome).
        let _forget = (ForgetListing(self, parent), ForgetListing(self, newparent));
        // A change of several steps is planned before the locks its steps
        // run under; if an ancestor directory moved meanwhile, plan again.
        for _ in 0..8 {
            match self.rename_once(c, parent, name, newparent, newname, flags) {
                Err(intent::REPLAN) => continue,
                r => return r,
            }
        }
        Err(Errno(libc::EBUSY))
    }

    /// One attempt of [`Fs::rename`], under the names' locks.
    fn rename_once(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        let src = self.child(parent, name)?;
        let dst = self.child(newparent, newname)?;
        // Both directories through their cached tier handles: no path walks.
        let pd = self.dir_fds(parent)?;
        let nd = self.dir_fds(newparent)?;
        // The copies of both names, with no mover switch of either file
        // running meanwhile or after (see `no_switch`): rename drops copies
        // it sees as shadowed, and a switch makes a shadowed copy the only
        // one.
        let ((src_copies, dst_copies), _no_switch) = self.no_switch(|| {
            let s = self.find_all_at(&pd, name)?;
            let d = self.find_all_at(&nd, newname)?;
            let ino = |d: &DirFds, n: &[u8], c: &[(usize, Stat)]| {
                c.first().map(|(t, st)| self.ino_at(d, *t, n, st))
            };
            let inos = [ino(&pd, name, &s), ino(&nd, newname, &d)];
            Ok(((s, d), inos))
        })?;
        let (ta, sst) = src_copies.first().copied().ok_or(Errno(libc::ENOENT))?;
        // Renaming a directory (or swapping names) changes where directories
        // are; a file rename does not (removed junk copies bump on their own).
        let _bump = (is_dir(&sst) || flags & libc::RENAME_EXCHANGE != 0).then(|| DirsChanged(self));
        if src == dst {
            return Ok(());
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if noreplace && !dst_copies.is_empty() {
            return Err(Errno(libc::EEXIST));
        }
        let src_ino = self.ino_at(&pd, ta, name, &sst);
        if exchange {
            let (tb, dst_st) = dst_copies.first().copied().ok_or(Errno(libc::ENOENT))?;
            let dst_ino = self.ino_at(&nd, tb, newname, &dst_st);
            return self.exchange(c, &src, &src_copies, &dst, &dst_copies, || {
                self.nodes.rename(src_ino, parent, name, newparent, newname);
                self.nodes.rename(dst_ino, newparent, newname, parent, name);
            });
        }
        let mut dst_ino = None;
        if let Some((tb, dw)) = dst_copies.first() {
            if dw.st_dev == sst.st_dev && dw.st_ino == sst.st_ino {
                return Ok(()); // two names of one file: POSIX says do nothing
            }
            match (is_dir(&sst), is_dir(dw)) {
                (true, false) => return Err(Errno(libc::ENOTDIR)),
                (false, true) => return Err(Errno(libc::EISDIR)),
                (true, true) if !dir::is_empty(&self.tiers, &dst)? => {
                    return Err(Errno(libc::ENOTEMPTY));
                }
                _ => {}
            }
            dst_ino = Some(self.ino_at(&nd, *tb, newname, dw));
        }
        // What the kernel is told once the name has moved (in the quiesced
        // section when the change takes several steps).
        let renamed = || {
            if let Some(d) = dst_ino {
                if let Some((_, dw)) = dst_copies.first()
                    && !is_dir(dw)
                {
                    self.last_name_gone(d, dw);
                    self.other_links_relisted(dw);
                }
                self.nodes.drop_link(d, newparent, newname);
            }
            self.nodes.rename(src_ino, parent, name, newparent, newname);
        };
        let (dst_parent, _) = split_parent(&dst);
        let rename = |steps: Vec<Step>| Intent {
            op: Op::Rename,
            a: src.clone(),
            b: dst.clone(),
            steps,
        };
        if !is_dir(&sst) {
            // 1. Shadowed copies of a are invisible: drop them first.
            for (i, st) in &src_copies[1..] {
                self.remove_copy_at(&pd, *i, name, st)?;
            }
            // 2. The rename itself, on a's tier.
            let t = self.tier(ta)?;
            if let Some((_, st)) = dst_copies.iter().find(|(i, _)| *i == ta)
                && is_dir(st)
            {
                self.remove_copy_at(&nd, ta, newname, st)?; // invisible junk under a file
            }
            let sd = pd
                .fds
                .get(ta)
                .and_then(|f| f.as_ref())
                .ok_or(Errno(libc::ENOENT))?;
            let opened;
            let dd = match nd.fds.get(ta).and_then(|f| f.as_ref()) {
                Some(fd) => fd,
                None => {
                    self.clone_parents(ta, dst_parent)?;
                    opened = t.parent(&dst)?.0;
                    &opened
                }
            };
            // 3. Copies of b on slower tiers are now shadowed: drop them.
            // 4. Commit: drop b on faster tiers, the fastest last.
            let stale = dst_copies
                .iter()
                .filter(|(i, _)| *i > ta)
                .rev()
                .chain(dst_copies.iter().filter(|(i, _)| *i < ta).rev());
            if dst_copies.iter().any(|(i, _)| *i < ta) {
                // b shows its old copy until step 4: several visible steps,
                // made all-or-nothing (see `intent`).
                let mut steps = vec![Step::Move {
                    tier: ta,
                    from: Side::A,
                    id: self.id_of(ta, &src, &sst),
                }];
                steps.extend(
                    stale.map(|(i, st)| Step::remove(*i, Side::B, st, intent::Removal::Stale)),
                );
                self.run_steps(c, &rename(steps), true, renamed)?;
            } else {
                // One visible step: the rename, through the cached handles.
                self.checked(c, || rustix::fs::renameat(sd, os(name), dd, os(newname)))?;
                let stale: Vec<&(usize, Stat)> = stale.collect();
                // Durable before a removal on another filesystem is, so
                // that a power cut cannot keep the removal of b's old copy
                // and lose the rename.
                if stale.iter().any(|(i, _)| self.crosses(*i, ta)) {
                    transfer::sync_dirs(std::iter::once(dd))?;
                }
                for (i, st) in stale {
                    self.remove_copy_at(&nd, *i, newname, st)?;
                }
                renamed();
            }
        } else {
            // Junk no client sees: non-directory copies of a shadowed by the
            // directory, and of b (whose winner is an empty directory).
            for (d, n, copies) in [(&pd, name, &src_copies), (&nd, newname, &dst_copies)] {
                for (i, st) in copies.iter().filter(|(_, s)| !is_dir(s)) {
                    self.remove_copy_at(d, *i, n, st)?;
                }
            }
            // a moves on every tier that has it, slowest first, then b's
            // empty copies where a has none go (rmdir: whatever appeared in
            // one meanwhile stays, merged into b). When that takes several
            // steps, a moves onto b's empty copy by a swap (so that it can
            // be undone), and the swapped-out copy goes at the end; alone,
            // a plain rename replaces it atomically.
            let b_dir = |i: usize| dst_copies.iter().find(|(t, s)| *t == i && is_dir(s));
            let a_dirs: Vec<&(usize, Stat)> =
                src_copies.iter().rev().filter(|(_, s)| is_dir(s)).collect();
            let leftovers: Vec<Step> = dst_copies
                .iter()
                .rev()
                .filter(|(i, s)| is_dir(s) && !a_dirs.iter().any(|(t, _)| t == i))
                .map(|(i, st)| Step::remove(*i, Side::B, st, intent::Removal::Leftover))
                .collect();
            let several = a_dirs.len() + leftovers.len() > 1;
            let mut steps: Vec<Step> = Vec::new();
            let mut asides: Vec<Step> = Vec::new();
            for (i, st) in a_dirs {
                let id = self.id_of(*i, &src, st);
                match b_dir(*i) {
                    Some((_, bst)) if several => {
                        steps.push(Step::Swap {
                            tier: *i,
                            a: id,
                            b: self.id_of(*i, &dst, bst),
                        });
                        asides.push(Step::remove(*i, Side::A, bst, intent::Removal::Aside));
                    }
                    Some(_) => steps.push(Step::Move {
                        tier: *i,
                        from: Side::A,
                        id,
                    }),
                    None => {
                        self.clone_parents(*i, dst_parent)?;
                        steps.push(Step::Move {
                            tier: *i,
                            from: Side::A,
                            id,
                        });
                    }
                }
            }
            steps.extend(asides);
            steps.extend(leftovers);
            if several {
                self.run_steps(c, &rename(steps), true, renamed)?;
            } else {
                // One rename, held apart from the mover's switch (which
                // puts files into a directory's copies by path): if a copy
                // of a appeared on another tier since the plan (the mover
                // makes parent chains), plan again.
                let _switches = self.list_guard.read();
                let now: Vec<usize> = self
                    .find_all_at(&pd, name)?
                    .iter()
                    .filter(|(_, s)| is_dir(s))
                    .map(|(i, _)| *i)
                    .collect();
                let planned: Vec<usize> = src_copies
                    .iter()
                    .filter(|(_, s)| is_dir(s))
                    .map(|(i, _)| *i)
                    .collect();
                if now != planned {
                    return Err(intent::REPLAN);
                }
                self.run_steps(c, &rename(steps), false, renamed)?;
            }
        }
        Ok(())
    }

    /// The result of `find` (which also gives the node ids of the files it
    /// found), with the mover's switch locks of those ids held for reading
    /// (a switch of them waits for the caller), as of a moment no switch
    /// of them ran: if one ran or was running meanwhile, `find` runs again
    /// under the locks. In the steady state (no mover pass switching)
    /// that costs two atomic loads.
    fn no_switch<T>(
        &self,
        find: impl Fn() -> Result<(T, [Option<u64>; 2])>,
    ) -> Result<(T, Vec<parking_lot::RwLockReadGuard<'_, ()>>)> {
        loop {
            let ended = self.switch_ended.load(Ordering::SeqCst);
            let started = self.switch_started.load(Ordering::SeqCst);
            let (v, inos) = find()?;
            let stripes = self.switch_stripes(inos);
            let held: Vec<_> = stripes.iter().map(|&i| self.switch[i].read()).collect();
            if started == ended && self.switch_started.load(Ordering::SeqCst) == started {
                return Ok((v, held));
            }
            // A switch ran or is running: look again. No switch of these
            // files can start while their stripes are held.
            let (v, inos) = find()?;
            if self.switch_stripes(inos) == stripes {
                return Ok((v, held));
            }
            // The names now stand for other files: start over.
        }
    }

    /// The switch-lock stripes of `inos`, sorted, each once.
    fn switch_stripes(&self, inos: [Option<u64>; 2]) -> Vec<usize> {
        let mut v: Vec<usize> = inos
            .iter()
            .flatten()
            .map(|&i| self.switch_index(i))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// RENAME_EXCHANGE. Invisible copies (shadowed non-directories, and
    /// anything shadowed under a file) are dropped first; then the two names
    /// are swapped on every tier that holds either: atomically where a tier
    /// holds both, by a rename where it holds one. A directory merged from
    /// several tiers swaps as a whole. Never EXDEV; across tiers, all or
    /// nothing (see `intent`). `done` updates the node table.
    fn exchange(
        &self,
        c: Caller,
        a: &[u8],
        a_copies: &[(usize, Stat)],
        b: &[u8],
        b_copies: &[(usize, Stat)],
        done: impl FnOnce(),
    ) -> Result<()> {
        let mut kept: [Vec<(usize, Stat)>; 2] = [Vec::new(), Vec::new()];
        for (p, copies, keep) in [(a, a_copies, 0), (b, b_copies, 1)] {
            let winner_dir = is_dir(&copies[0].1);
            kept[keep].push(copies[0]);
            for (i, st) in &copies[1..] {
                if winner_dir && is_dir(st) {
                    kept[keep].push((*i, *st));
                } else {
                    self.remove_copy(*i, p, st)?;
                }
            }
        }
        let on = |side: usize, t: usize| {
            let p = if side == 0 { a } else { b };
            kept[side]
                .iter()
                .find(|(i, _)| *i == t)
                .map(|(i, st)| self.id_of(*i, p, st))
        };
        let mut steps = Vec::new();
        for t in self.tiers.iter() {
            let tier = t.index;
            let step = match (on(0, tier), on(1, tier)) {
                (None, None) => continue,
                (Some(a), Some(b)) => Step::Swap { tier, a, b },
                (Some(id), None) => {
                    self.clone_parents(tier, split_parent(b).0)?;
                    Step::Move {
                        tier,
                        from: Side::A,
                        id,
                    }
                }
                (None, Some(id)) => {
                    self.clone_parents(tier, split_parent(a).0)?;
                    Step::Move {
                        tier,
                        from: Side::B,
                        id,
                    }
                }
            };
            steps.push(step);
        }
        let recorded = steps.len() > 1;
        let it = Intent {
            op: Op::Exchange,
            a: a.to_vec(),
            b: b.to_vec(),
            steps,
        };
        self.run_steps(c, &it, recorded, done)
    }

    // ---- files -------------------------------------------------------------

    /// Opens the winning copy of `ino`.
    pub fn open(&self, c: Caller, ino: u64, flags: i32) -> Result<u64> {
        let _switch = self.switch_lock(ino).read();
        let fast = self.placed(ino).and_then(|(d, tier, name)| {
            let dir = d.fds.get(tier)?.as_ref()?;
            self.checked(c, || {
                rustix::fs::openat(dir, os(&name), open_flags(flags), Mode::empty())
            })
            .ok()
        });
        let fd = match fast {
            Some(fd) => fd,
            None => {
                let (tier, st, rel) = self.locate(ino)?;
                if is_dir(&st) {
                    return Err(Errno(libc::EISDIR));
                }
                let t = self.tier(tier)?;
                self.checked(c, || t.open(&rel, open_flags(flags)))?
            }
        };
        let fh = self.register(FileHandle {
            ino,
            file: File::from(fd),
            writable: flags & libc::O_ACCMODE != libc::O_RDONLY,
        });
        self.access
            .record(ino, flags & libc::O_ACCMODE != libc::O_WRONLY);
        Ok(fh)
    }

    /// The scan stripe of a name (its last path component).
    pub(crate) fn scan_index(&self, name: &[u8]) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        (h % self.scan_guard.len() as u64) as usize
    }

    pub(crate) fn scan_lock(&self, name: &[u8]) -> &parking_lot::RwLock<()> {
        &self.scan_guard[self.scan_index(name)]
    }

    pub(crate) fn switch_index(&self, ino: u64) -> usize {
        (ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % self.switch.len()
    }

    fn switch_lock(&self, ino: u64) -> &parking_lot::RwLock<()> {
        &self.switch[self.switch_index(ino)]
    }

    /// Whether any handle on node `ino` is open (asked by the mover and
    /// by the tier watcher for every write event: a lookup, not a scan).
    pub fn is_open(&self, ino: u64) -> bool {
        self.open_counts.get(&ino).is_some_and(|n| *n > 0)
    }

    /// Makes `h` an open handle; returns its number.
    fn register(&self, h: FileHandle) -> u64 {
        *self.open_counts.entry(h.ino).or_insert(0) += 1;
        if h.writable {
            *self.writer_counts.entry(h.ino).or_insert(0) += 1;
        }
        let fh = self.fh();
        self.files.insert(fh, Arc::new(h));
        fh
    }

    /// The open file behind `fh`.
    pub fn handle(&self, fh: u64) -> Result<Arc<FileHandle>> {
        self.files
            .get(&fh)
            .map(|h| h.clone())
            .ok_or(Errno(libc::EBADF))
    }

    /// Reads up to `size` bytes at `offset` (short only at end of file).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let h = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match h.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Writes `data` at `offset`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.handle(fh)?;
        h.file.write_all_at(data, offset)?;
        Ok(data.len() as u32)
    }

    /// fsync / fdatasync of an open file.
    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handle(fh)?;
        if datasync {
            h.file.sync_data()?;
        } else {
            h.file.sync_all()?;
        }
        Ok(())
    }

    /// Closes an open file.
    pub fn release(&self, fh: u64) {
        let Some((_, h)) = self.files.remove(&fh) else {
            return;
        };
        // The version first, then the count: the watcher never sees the
        // file neither open for writing nor recorded. (A reader leaves the
        // data as it found it: nothing to record, no syscall on its close.)
        if h.writable
            && let Ok(st) = rustix::fs::fstat(&h.file)
        {
            if self.released.len() > 65_536 {
                self.released.clear();
            }
            self.released.insert(h.ino, FileVersion::of(&st));
        }
        let counts: &[&IdMap<u32>] = if h.writable {
            &[&self.open_counts, &self.writer_counts]
        } else {
            &[&self.open_counts]
        };
        for counts in counts {
            if let Some(mut n) = counts.get_mut(&h.ino) {
                *n = n.saturating_sub(1);
            }
            counts.remove_if(&h.ino, |_, n| *n == 0);
        }
        // The last handle of a moved file whose last name went (see
        // `last_name_gone`): the count's drop is seen before the note is
        // looked for, as the note is made before the count is looked at.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.unpin_on_close.contains_key(&h.ino)
            && !self.is_open(h.ino)
            && self.unpin_on_close.remove(&h.ino).is_some()
        {
            self.unpin(h.ino);
        }
        // A reader's close is nobody's business (see [`deferred`]).
        if !h.writable {
            self.deferred.drop_later(h);
        }
    }

    /// Whether the data of file `ino` is as dfs's own handles left it: open
    /// for writing through dfs now, or unchanged since its last handle
    /// closed. The tier
    /// watcher leaves such files' kernel caches alone (the kernel saw those
    /// writes), and invalidates only for changes made around dfs.
    pub fn written_through_dfs(&self, ino: u64) -> bool {
        if self.writer_counts.get(&ino).is_some_and(|n| *n > 0) {
            return true;
        }
        let Some(v) = self.released.get(&ino).map(|v| *v) else {
            return false;
        };
        self.stat_cached(ino)
            .is_some_and(|st| FileVersion::of(&st) == v)
    }

    /// fallocate on the backing file, for `c`.
    pub fn fallocate(&self, c: Caller, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let h = self.handle(fh)?;
        rustix::fs::fallocate(
            &h.file,
            rustix::fs::FallocateFlags::from_bits_retain(mode as _),
            offset,
            len,
        )?;
        clear_setid(&h.file, c, false)
    }

    /// After a write through handle `fh` by a caller without CAP_FSETID
    /// (the kernel says so: FUSE_WRITE_KILL_SUIDGID), clears the file's
    /// set-ID bits as the kernel would have; dfs wrote as root, which
    /// keeps them.
    pub fn clear_setid_after_write(&self, c: Caller, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        clear_setid(&h.file, c, true)
    }

    /// lseek for SEEK_DATA / SEEK_HOLE, answered by the backing file.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let h = self.handle(fh)?;
        // SAFETY: plain lseek on an fd we own; positional I/O elsewhere
        // ignores the fd offset, so moving it is harmless.
        let r = unsafe { libc::lseek(h.file.as_raw_fd(), offset, whence) };
        if r < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(r)
    }

    /// copy_file_range between two open files, tiers notwithstanding.
    /// (For `c`: its copy clears the destination's set-ID bits as a write
    /// would.)
    pub fn copy_file_range(
        &self,
        c: Caller,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u32> {
        let a = self.handle(fh_in)?;
        let b = self.handle(fh_out)?;
        let n = copy_chunk(&a.file, off_in, &b.file, off_out, len.min(1 << 30) as usize)?;
        if n > 0 {
            clear_setid(&b.file, c, false)?;
        }
        Ok(n as u32)
    }

    // ---- directories -------------------------------------------------------

    /// Opens a directory: builds its merged listing for the handle.
    pub fn opendir(&self, c: Caller, ino: u64) -> Result<u64> {
        let h = self.build_listing(c, ino)?;
        let fh = self.fh();
        self.dirs.insert(fh, Arc::new(h));
        Ok(fh)
    }

    /// Whether directories are listed without OPENDIR. Then a listing
    /// costs one round trip less, and the kernel keeps listings in its
    /// cache until the directory changes: through dfs (the kernel sees it)
    /// or on a tier (the watcher invalidates the directory). So only while
    /// the tiers are watched (no other way to learn of a name added on a
    /// tier whose copy of the directory is not the one stat shows), and
    /// when the kernel checks permissions (`default_permissions`: nothing
    /// is left for an open to check).
    pub fn lists_without_open(&self) -> bool {
        self.opts.kernel_permissions && self.watched()
    }

    /// Whether a watcher reports every change made on the tiers (set by
    /// [`Fs::set_dir_cache_lifetime`] with `None`): the kernel may then keep
    /// what dfs tells it for the long, watched cache lifetimes.
    pub fn watched(&self) -> bool {
        self.dir_ttl_ms.load(Ordering::Relaxed) == u64::MAX
    }

    /// The directories listed without OPENDIR since the last call while
    /// the tiers were not watched: the kernel may cache their listings.
    pub fn take_listed_unwatched(&self) -> Vec<u64> {
        self.listed_unwatched.lock().drain().collect()
    }

    /// Every node the kernel holds, and whether it is a directory.
    pub fn held_nodes(&self) -> Vec<(u64, bool)> {
        self.nodes.held()
    }

    /// The listing to serve a READDIR of directory `ino` at `offset` from:
    /// the handle's own, or without a handle (`fh` 0: no OPENDIR) a fresh
    /// one at offset 0 and the directory's latest one after that (offsets
    /// are name cookies, valid across snapshots; see [`dir`]).
    pub fn listing(&self, c: Caller, ino: u64, fh: u64, offset: u64) -> Result<Arc<DirHandle>> {
        if fh != 0 {
            return self.dir_handle(fh);
        }
        if offset != 0
            && let Some(h) = self.listings.get(&ino)
        {
            return Ok(h.1.clone());
        }
        if !self.watched() {
            // The kernel keeps this listing (no OPENDIR: it caches every
            // listing) and no watcher will say when it goes stale.
            self.listed_unwatched.lock().insert(ino);
        }
        let begun = self.listings_begun.fetch_add(1, Ordering::SeqCst);
        // Pruned only when a directory is new to it (`len` visits every
        // shard).
        if self
            .listed_at
            .insert(ino, std::time::Instant::now())
            .is_none()
            && self.listed_at.len() > 4096
        {
            self.listed_at.retain(|_, t| t.elapsed() < RACE_WINDOW);
        }
        let h = Arc::new(self.build_listing(c, ino)?);
        // A bound on memory and open handles; a listing dropped here is
        // rebuilt by its next request.
        if self.listings.len() >= 1024 {
            self.listings.clear();
        }
        // The later requests of every listing of `ino` are served from the
        // latest one begun, never from one begun earlier that took longer
        // to build: that one may hold a name removed (through dfs, or by
        // a change the kernel already saw) before a listing it would then
        // serve had begun.
        match self.listings.entry(ino) {
            dashmap::mapref::entry::Entry::Occupied(o) if o.get().0 > begun => {}
            dashmap::mapref::entry::Entry::Occupied(mut o) => {
                let (_, old) = o.insert((begun, h.clone()));
                self.deferred.drop_later(old);
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert((begun, h.clone()));
            }
        }
        Ok(h)
    }

    /// The merged listing of directory `ino`, as of now.
    fn build_listing(&self, c: Caller, ino: u64) -> Result<DirHandle> {
        if !self.opts.kernel_permissions {
            self.access(c, ino, libc::R_OK)?;
        }
        // Before the handles are taken: a copy of the directory made since
        // (which the handles may lack) keeps this listing from being kept.
        let ticket = self.remembered.ticket();
        // The tiers' copies through the cached handles lookups use: no path
        // walk per listing.
        let copies = match self.dir_fds(ino) {
            Ok(copies) => copies,
            Err(e) => {
                // No directory there: say whether something else is.
                let (_, st, _) = self.locate(ino)?;
                return Err(if is_dir(&st) { e } else { Errno(libc::ENOTDIR) });
            }
        };
        // Remembered listings only while the kernel keeps listings on the
        // watcher's word too (see `remembered`).
        let remember = self.lists_without_open();
        let mut h = {
            // A listing covers every name: no switch may run across it.
            let _scan = self.list_guard.read();
            if remember && let Some((entries, names)) = self.remembered.recall(ino) {
                // The cached handles themselves: no dup per listing.
                let fds = copies.fds.clone();
                return Ok(DirHandle::from_parts(ino, entries, names, fds));
            }
            dir::list(&copies.fds, ino, ino == ROOT)?
        };
        for i in 0..h.entries.len() {
            h.entries[i].ino = self.listed_ino(&h, &h.entries[i]);
        }
        if remember {
            self.remembered.keep(ino, ticket, &h);
        }
        Ok(h)
    }

    /// The open directory behind `fh`.
    pub fn dir_handle(&self, fh: u64) -> Result<Arc<DirHandle>> {
        self.dirs
            .get(&fh)
            .map(|h| h.clone())
            .ok_or(Errno(libc::EBADF))
    }

    /// d_ino for an entry of a listing: the st_ino a lookup would give.
    pub fn entry_ino(&self, e: &dir::DirEntry) -> u64 {
        e.ino
    }

    fn listed_ino(&self, h: &DirHandle, e: &dir::DirEntry) -> u64 {
        let dev = self.tiers.get(e.tier).map(|t| t.dev).unwrap_or(0);
        let plain = self.nodes.ino_for(dev, e.d_ino);
        let may_carry = matches!(
            e.kind,
            rustix::fs::FileType::Directory | rustix::fs::FileType::RegularFile
        );
        let carries = self.tiers.get(e.tier).is_some_and(|t| t.carries_ids());
        if !(self.ino_xattr && may_carry && carries) {
            return plain;
        }
        let Some(fd) = h.fds.get(e.tier).and_then(|f| f.as_ref()) else {
            return plain;
        };
        match read_ino_xattr(fd, h.name(e)) {
            None => plain,
            Some(ino) if e.kind == rustix::fs::FileType::Directory => ino,
            // A file's recorded id counts only while it has one link, as in
            // lookups (see carries_ino).
            Some(ino) => match rustix::fs::statat(fd, os(h.name(e)), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if carries_ino(&st) => ino,
                Ok(st) => self.nodes.ino_for(st.st_dev, st.st_ino),
                Err(_) => plain,
            },
        }
    }

    /// For readdirplus: stats entry `e` of directory handle `h` and takes a
    /// kernel reference on it, as a lookup would.
    pub fn entry_lookup(&self, h: &DirHandle, e: &dir::DirEntry) -> Result<Attr> {
        let fd = h
            .fds
            .get(e.tier)
            .and_then(|f| f.as_ref())
            .ok_or(Errno(libc::ENOENT))?;
        let st = match rustix::fs::statat(fd, os(h.name(e)), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Moved to another tier since the listing was made (the mover,
            // or a change on the tiers): look it up afresh.
            Err(_) => return self.lookup(h.ino, h.name(e)),
        };
        let mut a = self.attr_of(st);
        if carries_ino(&st)
            && self.ino_xattr
            && self.tiers.get(e.tier).is_some_and(|t| t.carries_ids())
            && let Some(ino) = read_ino_xattr(fd, h.name(e))
        {
            a.ino = ino;
        }
        self.nodes
            .remember(a.ino, kind_of(&st), e.tier, h.ino, h.name(e));
        Ok(a)
    }

    /// Whether the kernel may hold node `ino` (has looked it up and not
    /// forgotten it): never false when it does, rarely true when it does
    /// not; cheap, for every name of a listing.
    pub fn may_hold(&self, ino: u64) -> bool {
        self.nodes.may_hold(ino)
    }

    /// A listing without a handle reached its end: its snapshot is no
    /// longer needed (a later request rebuilds one). Called before the
    /// empty reply that ends it, with which the kernel marks the listing
    /// it cached from this listing's replies complete.
    ///
    /// The kernel stamps a listing it caches with the directory's change
    /// count when a listing from offset 0 starts with its cache empty. Two
    /// such listings may both stamp: one that began before a change
    /// through dfs (whose first reply holds the old names) and one that
    /// began after it. The first one's replies then fill the cache under
    /// the second one's stamp, and the completed cache would show the old
    /// names until the directory next changed: a removed name back, a
    /// new one missing. So when the directory changed through dfs shortly
    /// after a listing of it began, dfs tells the kernel to drop the
    /// listing it cached before ending one (a cache missing its pages is
    /// read again from dfs).
    pub fn end_listing(&self, ino: u64) {
        if self
            .changed_after_listing
            .get(&ino)
            .is_some_and(|t| t.elapsed() < RACE_WINDOW)
            && let Some(k) = self.kernel.get()
        {
            k.inode(ino, true);
        }
        if let Some((_, (_, h))) = self.listings.remove(&ino) {
            self.deferred.drop_later(h);
        }
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        if let Some((_, h)) = self.dirs.remove(&fh) {
            self.deferred.drop_later(h);
        }
    }

    /// fsync of every tier's copy of directory `ino` (through its handle
    /// `fh`, or without one when listings need no OPENDIR).
    pub fn fsyncdir(&self, ino: u64, fh: u64) -> Result<()> {
        if fh != 0 {
            let h = self.dir_handle(fh)?;
            for fd in h.fds.iter().flatten() {
                rustix::fs::fsync(fd)?;
            }
            return Ok(());
        }
        let d = self.dir_fds(ino)?;
        for fd in d.fds.iter().flatten() {
            // The cached handles are O_PATH: open the directory to sync it.
            let f = rustix::fs::openat(
                fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fsync(&f)?;
        }
        Ok(())
    }

    // ---- misc --------------------------------------------------------------

    /// statfs over the distinct filesystems of the tiers (rule 8).
    pub fn statfs(&self) -> Result<rustix::fs::StatVfs> {
        let mut seen: Vec<(u64, u64)> = Vec::new();
        let mut total: Option<rustix::fs::StatVfs> = None;
        for t in self.tiers.iter() {
            let v = rustix::fs::fstatvfs(t.root())?;
            let key = (v.f_fsid, t.dev);
            if seen.iter().any(|k| k.0 == key.0 && k.1 == key.1) {
                continue;
            }
            seen.push(key);
            match &mut total {
                None => total = Some(v),
                Some(acc) => {
                    let scale = |n: u64| n.saturating_mul(v.f_frsize) / acc.f_frsize.max(1);
                    acc.f_blocks += scale(v.f_blocks);
                    acc.f_bfree += scale(v.f_bfree);
                    acc.f_bavail += scale(v.f_bavail);
                    acc.f_files += v.f_files;
                    acc.f_ffree += v.f_ffree;
                    acc.f_favail += v.f_favail;
                    acc.f_namemax = acc.f_namemax.min(v.f_namemax);
                }
            }
        }
        total.ok_or(Errno(libc::EIO))
    }

    /// access(2) when the kernel does not check permissions itself.
    pub fn access(&self, c: Caller, ino: u64, mask: i32) -> Result<()> {
        let (tier, _, rel) = self.locate(ino)?;
        let t = self.tier(tier)?;
        let access = rustix::fs::Access::from_bits_retain(mask as _);
        as_caller(c, || -> Result<()> {
            if rel.is_empty() {
                rustix::fs::accessat(t.root(), ".", access, AtFlags::EACCESS)?;
            } else {
                let (dir, n) = t.parent(&rel)?;
                rustix::fs::accessat(
                    &dir,
                    os(n),
                    access,
                    AtFlags::EACCESS | AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            Ok(())
        })
    }

    fn xattr_target(&self, ino: u64) -> Result<Vec<(usize, OwnedFd)>> {
        // A file beside its parent's cached handle: one openat, no path walk
        // (the kernel asks for security.capability before the first write
        // to every file, so this is on the path of every new file).
        if let Some((d, tier, name)) = self.placed(ino)
            && let Some(dir) = d.fds.get(tier).and_then(|f| f.as_ref())
            && let Ok(fd) = rustix::fs::openat(
                dir,
                os(&name),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        {
            return Ok(vec![(tier, fd)]);
        }
        let (tier, st, rel) = self.locate(ino)?;
        let mut out = Vec::new();
        if is_dir(&st) {
            for t in self.tiers.iter() {
                match t.open(&rel, OFlags::PATH | OFlags::DIRECTORY) {
                    Ok(fd) => out.push((t.index, fd)),
                    Err(e) if not_here(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        } else {
            out.push((tier, self.tier(tier)?.open(&rel, OFlags::PATH)?));
        }
        Ok(out)
    }

    /// getxattr on the winning copy; `size` 0 asks for the length.
    pub fn getxattr(&self, ino: u64, name: &[u8], size: u32) -> Result<Vec<u8>> {
        if is_internal_xattr(name) {
            return Err(Errno(libc::ENODATA));
        }
        let mut buf = vec![0u8; size as usize];
        // A file beside its parent's cached handle: one getxattrat by name
        // (the kernel asks for security.capability before the first write
        // to every file, so this is on the path of every new file).
        if let Some((d, tier, file)) = self.placed(ino)
            && let Some(dir) = d.fds.get(tier).and_then(|f| f.as_ref())
        {
            match xattr::get(at(dir, &file), name, &mut buf) {
                Err(e) if not_here(&e) => {} // moved or renamed: the slow way
                r => return finish_getxattr(buf, size, r?),
            }
        }
        let fds = self.xattr_target(ino)?;
        let (_, fd) = fds.first().ok_or(Errno(libc::ENOENT))?;
        let n = xattr::get(itself(fd), name, &mut buf)?;
        finish_getxattr(buf, size, n)
    }

    /// listxattr on the winning copy.
    pub fn listxattr(&self, ino: u64, size: u32) -> Result<Vec<u8>> {
        let fds = self.xattr_target(ino)?;
        let (_, fd) = fds.first().ok_or(Errno(libc::ENOENT))?;
        let p = proc_path(fd);
        let n = xattr_len(&p, None)?;
        let mut buf = vec![0u8; n + 1024];
        let n = rustix::fs::listxattr(p.as_str(), &mut buf[..])?;
        buf.truncate(n);
        let mut out = Vec::with_capacity(n);
        for name in buf.split(|&b| b == 0).filter(|s| !s.is_empty()) {
            if !is_internal_xattr(name) {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        if size == 0 {
            return Ok(vec![0; out.len()]);
        }
        Ok(out)
    }

    /// setxattr: every copy of a directory, the winning copy of a file.
    pub fn setxattr(
        &self,
        c: Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        if is_internal_xattr(name) {
            return Err(Errno(libc::EPERM));
        }
        let fds = self.xattr_target(ino)?;
        for (_, fd) in fds.iter().rev() {
            self.checked(c, || xattr::set(itself(fd), name, value, flags))?;
        }
        Ok(())
    }

    /// removexattr: like setxattr.
    pub fn removexattr(&self, c: Caller, ino: u64, name: &[u8]) -> Result<()> {
        if is_internal_xattr(name) {
            return Err(Errno(libc::EPERM));
        }
        let fds = self.xattr_target(ino)?;
        for (i, (_, fd)) in fds.iter().enumerate().rev() {
            let p = proc_path(fd);
            match self.checked(c, || rustix::fs::removexattr(p.as_str(), os(name))) {
                Ok(()) => {}
                // A shadowed directory copy may lack it; only the winner counts.
                Err(rustix::io::Errno::NODATA) if i > 0 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The node id of union path `rel` if the kernel holds that node (for
    /// invalidations: nothing to tell the kernel about nodes it lacks).
    pub fn held_ino(&self, rel: &[u8]) -> Option<u64> {
        if rel.is_empty() {
            return Some(ROOT);
        }
        let (tier, st) = self.find(rel).ok()??;
        let ino = self.union_ino(tier, rel, &st);
        self.nodes.contains(ino).then_some(ino)
    }

    /// The node id of `name` in directory node `parent`, if the kernel holds
    /// both (resolved through the cached directory handles).
    pub fn held_child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        if !self.nodes.contains(parent) {
            return None;
        }
        let d = self.dir_fds(parent).ok()?;
        let (_, _, ino) = self.find_in(&d, name).ok()??;
        self.nodes.contains(ino).then_some(ino)
    }

    /// Free and total space of tier `i` (zeros for a tier that is gone).
    pub fn tier_space(&self, i: usize) -> Space {
        self.tiers.get(i).map(tier_space).unwrap_or_default()
    }

    /// Number of nodes the kernel holds.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

/// Copies up to `len` bytes from `src` at `off_in` to `dst` at `off_out`:
/// in the kernel with copy_file_range where it can, through a buffer where
/// the two files are on different filesystems. Returns the bytes copied
/// (0 at the end of `src`).
pub(crate) fn copy_chunk(
    src: &File,
    off_in: u64,
    dst: &File,
    off_out: u64,
    len: usize,
) -> Result<usize> {
    loop {
        let mut oi = off_in as i64;
        let mut oo = off_out as i64;
        // SAFETY: valid fds and pointers to local offsets.
        let r = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut oi, dst.as_raw_fd(), &mut oo, len, 0)
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::EINVAL)
            | Some(libc::ENOSYS) => {
                let mut buf = vec![0u8; len.min(4 << 20)];
                let n = src.read_at(&mut buf, off_in)?;
                dst.write_all_at(&buf[..n], off_out)?;
                return Ok(n);
            }
            _ => return Err(e.into()),
        }
    }
}

/// Open flags passed through to the backing file: the access mode and the
/// flags that change I/O behaviour, never ones that change resolution.
fn open_flags(flags: i32) -> OFlags {
    let keep = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_DIRECT
        | libc::O_DSYNC
        | libc::O_SYNC
        | libc::O_NOATIME
        | libc::O_NONBLOCK
        | libc::O_TRUNC
        | libc::O_LARGEFILE;
    OFlags::from_bits_retain((flags & keep) as _) | OFlags::CLOEXEC | OFlags::NOFOLLOW
}

fn tier_space(t: &Tier) -> Space {
    match rustix::fs::fstatvfs(t.root()) {
        Ok(v) => Space {
            free_bytes: v.f_bavail.saturating_mul(v.f_frsize),
            total_bytes: v.f_blocks.saturating_mul(v.f_frsize),
            free_inodes: v.f_favail,
            total_inodes: v.f_files,
        },
        Err(e) => {
            log::warn!("statvfs of tier `{}` failed: {e}", t.name);
            Space::default()
        }
    }
}

/// Copies every xattr from `src` to `dst` (both O_PATH handles), best effort.
fn copy_xattrs(src: &OwnedFd, dst: &OwnedFd) {
    let (sp, dp) = (proc_path(src), proc_path(dst));
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::listxattr(sp.as_str(), &mut names[..]) {
        Ok(n) => n,
        Err(_) => return,
    };
    let mut val = vec![0u8; 64 * 1024];
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        if let Ok(len) = rustix::fs::getxattr(sp.as_str(), os(name), &mut val[..]) {
            let _ = rustix::fs::setxattr(
                dp.as_str(),
                os(name),
                &val[..len],
                rustix::fs::XattrFlags::empty(),
            );
        }
    }
}
