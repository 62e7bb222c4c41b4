//! Watching the tiers for changes made behind dfs's back.
//!
//! The tiers stay open to other programs (an administrator, a restore, a
//! legacy tool writing to the tier path). The kernel caches names and
//! attributes for the `[cache]` lifetimes; to keep long lifetimes correct,
//! dfs watches each tier's filesystem with fanotify (filesystem marks, which
//! cover a whole tree without one watch per directory) and tells the kernel
//! to forget exactly what changed. Where watching is unavailable (not root,
//! a filesystem without file handles, a network filesystem) the lifetimes
//! alone bound the staleness, and dfs defaults them to one second.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fs::Fs;
use crate::fs::nodes::ROOT;

/// What the watcher asks of the kernel side (the FUSE notifier).
pub trait Invalidate: Send + Sync + 'static {
    /// Forget the cached name `name` in directory node `parent`.
    fn entry(&self, parent: u64, name: &[u8]);
    /// Forget node `ino`'s attributes, and its cached data if `data`.
    fn inode(&self, ino: u64, data: bool);
}

/// Whether tier changes are being watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// fanotify watches every tier's filesystem.
    Watching,
    /// Changes made directly on a tier show when the cache lifetimes expire.
    TimeoutsOnly,
}

struct Fsid {
    raw: [u8; 8],
    tiers: Vec<(Vec<u8>, usize)>,
    mount: OwnedFd,
}

/// Marks set on every tier's filesystem, not yet delivering to anyone.
pub struct Prepared {
    fd: OwnedFd,
    fsids: Vec<Fsid>,
}

/// Sets up watches on every tier; `Err` says why watching is unavailable.
pub fn prepare(core: &Fs) -> Result<Prepared, String> {
    setup(core).map(|(fd, fsids)| Prepared { fd, fsids })
}

impl Prepared {
    /// Starts the watcher thread, which runs until the process exits. If
    /// it cannot start, or stops, dfs falls back (see [`fall_back`]) to
    /// `dir_lifetime` for its directory handles and the kernel's listings.
    pub fn start(self, core: Arc<Fs>, inval: Arc<dyn Invalidate>, dir_lifetime: Duration) -> Mode {
        let Prepared { fd, fsids } = self;
        let guard = Fallback {
            core: core.clone(),
            inval: inval.clone(),
            dir_lifetime,
            why: "the watcher stopped".into(),
        };
        match std::thread::Builder::new()
            .name("dfs-watch".into())
            .spawn(move || run(fd, fsids, guard))
        {
            Ok(_) => Mode::Watching,
            Err(e) => {
                log::warn!("cannot start the tier watcher: {e}");
                // The guard went down with the closure: fall back already.
                Mode::TimeoutsOnly
            }
        }
    }
}

/// How long dfs trusts its directory handles, and the kernel the listings
/// it caches, when the tiers are not watched: the attribute lifetime, at
/// most a second.
pub fn unwatched_dir_lifetime(attr: Duration) -> Duration {
    attr.min(Duration::from_secs(1))
}

/// Falls back to an unwatched mount when dropped: the watcher thread owns
/// it, so an error, a panic, or a thread that never started all end in
/// [`fall_back`].
struct Fallback {
    core: Arc<Fs>,
    inval: Arc<dyn Invalidate>,
    dir_lifetime: Duration,
    why: String,
}

impl Drop for Fallback {
    fn drop(&mut self) {
        fall_back(&self.core, &self.inval, &self.why, self.dir_lifetime);
    }
}

/// The watcher is gone: from now on dfs trusts what an unwatched mount
/// trusts (short cache lifetimes for new replies, directory handles kept
/// `dir_lifetime`), the kernel forgets the attributes and listings it
/// cached on the watcher's word, and a sweeper invalidates every listing
/// the kernel caches from now on within `dir_lifetime` (the kernel, told
/// once that dfs has no OPENDIR, caches every listing until it is told
/// otherwise, and no longer asks dfs whether to).
fn fall_back(core: &Arc<Fs>, inval: &Arc<dyn Invalidate>, why: &str, dir_lifetime: Duration) {
    core.set_dir_cache_lifetime(Some(dir_lifetime));
    core.set_mode(
        "tier changes",
        format!(
            "not watched ({why}); changes made directly on a tier show within the cache \
             lifetimes (directory listings: {dir_lifetime:?})"
        ),
    );
    forget_everything(core, inval.as_ref());
    let (core, inval) = (core.clone(), inval.clone());
    let sweeper = std::thread::Builder::new()
        .name("dfs-sweep".into())
        .spawn(move || {
            // A listing recorded just before a sweep may reach the
            // kernel's cache just after it: each is invalidated at two
            // sweeps in a row.
            let mut last: Vec<u64> = Vec::new();
            loop {
                std::thread::sleep(dir_lifetime);
                let now = core.take_listed_unwatched();
                for &ino in last.iter().chain(&now) {
                    inval.inode(ino, true);
                }
                last = now;
            }
        });
    if let Err(e) = sweeper {
        log::error!("cannot start the listing sweeper: {e}; listings may stay stale until remount");
    }
}

/// Tells the kernel to forget the attributes and cached data (listings
/// included) of every node it holds: after events were lost, nothing it
/// caches can be vouched for. The names it caches expire with their
/// lifetimes.
fn forget_everything(core: &Fs, inval: &dyn Invalidate) {
    core.dirs_changed();
    for (ino, _) in core.held_nodes() {
        inval.inode(ino, true);
    }
}

fn setup(core: &Fs) -> Result<(OwnedFd, Vec<Fsid>), String> {
    if rustix::process::geteuid().as_raw() != 0 {
        return Err("fanotify filesystem marks need root".into());
    }
    // SAFETY: plain syscall with constant flags.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF
                | libc::FAN_CLOEXEC
                | libc::FAN_UNLIMITED_QUEUE
                | libc::FAN_REPORT_DFID_NAME,
            (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!(
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fanotify_init returned a new fd we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mask = libc::FAN_CREATE
        | libc::FAN_DELETE
        | libc::FAN_MOVED_FROM
        | libc::FAN_MOVED_TO
        | libc::FAN_ATTRIB
        | libc::FAN_MODIFY
        | libc::FAN_CLOSE_WRITE
        | libc::FAN_ONDIR;
    let mut fsids: Vec<Fsid> = Vec::new();
    for t in core.tiers().iter() {
        let st = rustix::fs::fstatfs(t.root())
            .map_err(|e| format!("statfs {}: {e}", t.path.display()))?;
        // SAFETY: f_fsid is two plain integers.
        let raw: [u8; 8] = unsafe { std::mem::transmute(st.f_fsid) };
        let path = std::ffi::CString::new(t.path.as_os_str().as_bytes())
            .map_err(|_| "tier path has a NUL byte".to_string())?;
        // SAFETY: valid fd and C string.
        let r = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                mask,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if r < 0 {
            return Err(format!(
                "cannot watch tier `{}` ({}): {}",
                t.name,
                t.path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let mut prefix = t.path.as_os_str().as_bytes().to_vec();
        prefix.push(b'/');
        match fsids.iter_mut().find(|f| f.raw == raw) {
            Some(f) => f.tiers.push((prefix, t.index)),
            None => {
                let mount = rustix::fs::open(
                    &t.path,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| format!("open {}: {e}", t.path.display()))?;
                fsids.push(Fsid {
                    raw,
                    tiers: vec![(prefix, t.index)],
                    mount,
                });
            }
        }
    }
    Ok((fd, fsids))
}

/// One change: the union path of the directory, and the name in it.
#[derive(Hash, PartialEq, Eq)]
struct Change {
    dir: Vec<u8>,
    name: Vec<u8>,
}

fn run(fd: OwnedFd, fsids: Vec<Fsid>, mut fallback: Fallback) {
    let (core, inval) = (fallback.core.clone(), fallback.inval.clone());
    let stop_after = fault_stop_after();
    let started = Instant::now();
    let me = std::process::id() as i32;
    let mut buf = vec![0u8; 256 * 1024];
    // Directory handles known to lie outside every tier (the marks cover
    // whole filesystems, which hold much else): skipped without resolving.
    let mut outside: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    // Directory handle -> union path, and union path -> node id of
    // directories the kernel holds: resolved once, not per event.
    let mut handles: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    let mut parents: HashMap<Vec<u8>, u64> = HashMap::new();
    // Directories whose names changed get a second invalidation a moment
    // later: the kernel may have been filling its cached listing from a
    // snapshot dfs took just before the change, which the first one (sent
    // before the listing reached the kernel's cache) could not remove.
    let mut recheck: Vec<(Instant, u64)> = Vec::new();
    loop {
        let now = Instant::now();
        recheck.retain(|&(due, ino)| {
            if due <= now {
                inval.inode(ino, true);
            }
            due > now
        });
        if let Some(wait) = recheck
            .iter()
            .map(|(due, _)| due.saturating_duration_since(now))
            .min()
        {
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, ms) } == 0 {
                continue; // the recheck is due
            }
        }
        let n = if let Some(d) = stop_after {
            // Test hook: wait for events no longer than the failure is due.
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let left = d.saturating_sub(started.elapsed()).as_millis().min(1000) as libc::c_int;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left) } > 0;
            if started.elapsed() >= d {
                // SAFETY: sets this thread's errno, as a failed read would.
                unsafe { *libc::__errno_location() = libc::EIO };
                -1
            } else if !ready {
                continue;
            } else {
                // SAFETY: reading into our buffer.
                unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
            }
        } else {
            // SAFETY: reading into our buffer.
            unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Dropping the guard falls back to what an unwatched mount
            // trusts (see `fall_back`).
            log::error!(
                "tier watcher stopped: {e}; changes made directly on the tiers now show within \
                 the unwatched cache lifetimes"
            );
            fallback.why = format!("the watcher stopped: {e}");
            return;
        }
        // Per changed name: (content changed, name or attributes changed).
        let mut changes: HashMap<Change, (bool, bool)> = HashMap::new();
        let mut off = 0usize;
        let mut moved_dir = false;
        let mut dirs_changed = false;
        let mut overflow = false;
        let n = n as usize;
        while off + 24 <= n {
            let ev = &buf[off..n];
            let event_len = u32::from_ne_bytes([ev[0], ev[1], ev[2], ev[3]]) as usize;
            let meta_len = u16::from_ne_bytes([ev[6], ev[7]]) as usize;
            let mask = u64::from_ne_bytes(ev[8..16].try_into().unwrap_or([0; 8]));
            let pid = i32::from_ne_bytes(ev[20..24].try_into().unwrap_or([0; 4]));
            if event_len < meta_len || event_len == 0 || off + event_len > n {
                break;
            }
            off += event_len;
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                overflow = true; // events were lost: which, nobody knows
                continue;
            }
            if pid == me {
                continue; // dfs's own work: the kernel already knows
            }
            let data = mask & (libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE) != 0;
            if mask & libc::FAN_ONDIR != 0
                && mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0
            {
                moved_dir = true;
            }
            let names = mask & !(libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE | libc::FAN_ONDIR) != 0;
            if mask & libc::FAN_ONDIR != 0 && names {
                dirs_changed = true; // a directory appeared, went or changed
            }
            let mut info = &ev[meta_len..event_len];
            while info.len() >= 4 {
                let typ = info[0];
                let len = u16::from_ne_bytes([info[2], info[3]]) as usize;
                if len < 4 || len > info.len() {
                    break;
                }
                let rec = &info[..len];
                info = &info[len..];
                if typ != libc::FAN_EVENT_INFO_TYPE_DFID_NAME || rec.len() < 4 + 8 + 8 {
                    continue;
                }
                let fsid = &rec[4..12];
                let hbytes = u32::from_ne_bytes(rec[12..16].try_into().unwrap_or([0; 4])) as usize;
                let handle_end = 20 + hbytes;
                if rec.len() < handle_end {
                    continue;
                }
                let handle = &rec[12..handle_end];
                let name_raw = &rec[handle_end..];
                let name = &name_raw[..name_raw
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_raw.len())];
                let Some(f) = fsids.iter().find(|f| f.raw == fsid) else {
                    continue;
                };
                if outside.contains(handle) {
                    continue;
                }
                let dir = handles
                    .entry(handle.to_vec())
                    .or_insert_with(|| union_dir(f, handle))
                    .clone();
                if dir.is_none() && mask & libc::FAN_MOVED_TO == 0 {
                    if outside.len() > 65_536 {
                        outside.clear();
                    }
                    outside.insert(handle.to_vec());
                }
                log::trace!(
                    "fanotify mask {mask:#x} pid {pid} dir {:?} name {:?}",
                    dir.as_deref().map(OsStr::from_bytes),
                    OsStr::from_bytes(name)
                );
                if let Some(dir) = dir {
                    let e = changes
                        .entry(Change {
                            dir,
                            name: name.to_vec(),
                        })
                        .or_insert((false, false));
                    e.0 |= data;
                    e.1 |= names;
                }
            }
        }
        if overflow {
            log::warn!(
                "tier watcher: the kernel dropped change events; every cached attribute and \
                 listing is invalidated"
            );
            forget_everything(&core, inval.as_ref());
            moved_dir = true;
            dirs_changed = true;
        }
        if moved_dir {
            // A directory moved: one that was outside a tier may be inside,
            // and known paths may be stale.
            outside.clear();
            handles.clear();
        }
        if dirs_changed || parents.len() > 65_536 {
            parents.clear();
        }
        if handles.len() > 65_536 {
            handles.clear();
        }
        for (c, (data, names)) in changes {
            if let Some(dir) = apply(&core, inval.as_ref(), &mut parents, &c, data, names)
                && !recheck.iter().any(|&(_, d)| d == dir)
                && recheck.len() < 4096
            {
                recheck.push((Instant::now() + RECHECK, dir));
            }
        }
        // Let the next events gather: a lone change is still handled at
        // once (the read above wakes on it), but a stream of them (every
        // create and passthrough write on a busy mount makes a few) costs
        // one wakeup per pause instead of one per event.
        std::thread::sleep(GATHER);
    }
}

/// Test hook: with `DFS_FAULT_WATCHER_STOP_MS` set, the watcher fails as
/// if its read had failed that many milliseconds after it started, so
/// tests can check the fall-back. Read once per watcher.
fn fault_stop_after() -> Option<Duration> {
    let ms = std::env::var("DFS_FAULT_WATCHER_STOP_MS").ok()?;
    ms.trim().parse().ok().map(Duration::from_millis)
}

/// The watcher's pause between reads of its event queue (see `run`).
const GATHER: Duration = Duration::from_millis(10);

/// The union path of the directory a file handle names, if it lies in a
/// tier (the filesystem may hold much else).
fn union_dir(f: &Fsid, handle: &[u8]) -> Option<Vec<u8>> {
    // struct file_handle needs 4-byte alignment.
    let mut words = vec![0u32; handle.len().div_ceil(4) + 1];
    // SAFETY: the buffer is large enough for the copied bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            handle.as_ptr(),
            words.as_mut_ptr().cast::<u8>(),
            handle.len(),
        );
    }
    // SAFETY: valid mount fd and a well-formed handle buffer.
    let fd = unsafe {
        libc::open_by_handle_at(
            f.mount.as_raw_fd(),
            words.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        log::trace!("open_by_handle_at: {}", std::io::Error::last_os_error());
        return None;
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()?
        .into_os_string()
        .into_vec();
    path.push(b'/');
    for (prefix, _) in &f.tiers {
        if let Some(rest) = path.strip_prefix(prefix.as_slice()) {
            let rest = rest.strip_suffix(b"/").unwrap_or(rest);
            return Some(rest.to_vec());
        }
    }
    None
}

/// How long after a change to a directory's names its listing is
/// invalidated a second time (see `recheck` in `run`).
const RECHECK: Duration = Duration::from_millis(200);

/// Tells the kernel to forget what change `c` made stale. Returns the
/// directory whose listing it invalidated, if any.
fn apply(
    core: &Fs,
    inval: &dyn Invalidate,
    parents: &mut HashMap<Vec<u8>, u64>,
    c: &Change,
    data: bool,
    names: bool,
) -> Option<u64> {
    if c.dir.starts_with(crate::tiers::STATE_DIR.as_bytes())
        && (c.dir.len() == crate::tiers::STATE_DIR.len()
            || c.dir[crate::tiers::STATE_DIR.len()] == b'/')
    {
        return None; // dfs's own state
    }
    let parent = if c.dir.is_empty() {
        Some(ROOT)
    } else if let Some(&p) = parents.get(&c.dir) {
        Some(p)
    } else {
        let p = core.held_ino(&c.dir);
        if let Some(p) = p {
            parents.insert(c.dir.clone(), p);
        }
        p
    };
    if names {
        // Whether or not the kernel holds the directory: remembered
        // listings are dropped for any change of names on a tier.
        core.names_changed_behind();
    }
    // The kernel holds nothing below a directory it does not hold.
    let p = parent?;
    if names {
        core.dirs_changed();
    }
    if c.name == b"." || c.name.is_empty() {
        inval.inode(p, false);
        return None;
    }
    let child = core.held_child(p, &c.name);
    if !names {
        // Only writes: when they come through dfs's own open handles (a
        // client writing with passthrough: the event carries the client's
        // pid, and often arrives after its close) the kernel saw them
        // already, and invalidating would only cost.
        if let Some(ino) = child.filter(|&i| !core.written_through_dfs(i)) {
            inval.inode(ino, data);
        }
        return None;
    }
    inval.entry(p, &c.name);
    // The directory's data too: the kernel keeps listings in its cache.
    inval.inode(p, true);
    if let Some(ino) = child {
        // Its data too: a name replaced on a tier may now be another file
        // (or symlink, whose target the kernel caches) that reused the
        // inode number, and so the node id.
        inval.inode(ino, true);
    }
    log::trace!(
        "tier change: {:?} in {:?}",
        OsStr::from_bytes(&c.name),
        OsStr::from_bytes(&c.dir)
    );
    Some(p)
}
