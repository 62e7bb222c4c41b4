//! The kernel floor: what FUSE requests cost the kernel itself, measured in
//! the same run on a zero-work FUSE daemon served by this process.
//!
//! The floor column prices every request at one empty round trip (the
//! round-trip line). A LOOKUP costs the kernel more than that: for a
//! missing name it makes a negative dentry, for a name it has never seen it
//! allocates an inode and a dentry. So for the lines made of such lookups
//! (`table::LOOKUP_LINES`) the floor takes the cost of that LOOKUP from
//! here instead, measured against a daemon that does nothing: the rest is
//! the kernel's.
//!
//! The probe is mounted the way dfs mounts (mount(2) as root, then fuser's
//! session on the /dev/fuse descriptor, FUSE over io_uring when the kernel
//! offers it) with the transport, thread count and permission options the
//! preset mount reported, so that its requests travel the way dfs's do.
//!
//! Lines dfs serves by kernel passthrough (rand-read-4k, seq-read-warm)
//! send it no request, yet the kernel's passthrough path (the FUSE read
//! entry point handing over to the backing file, with its credentials and
//! a second round of checks) is not free. When dfs's mount does
//! passthrough, those workloads mount the probe with one file (`PT_NAME`)
//! that it serves by passthrough from a native file the bench made
//! (`PtProbe`), and read it interleaved with their own sides: the probe's
//! rate is what a daemon that does nothing at all reaches.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::daemon;
use crate::table::{KernelCosts, Table, fmt_num};
use crate::workloads::Ctx;

/// The probe's mount point, under the scratch directory (run() checks it is
/// gone before removing the scratch directory).
pub const MOUNT_DIR: &str = "floor-probe";

/// Directories d0..d{DIRS-1} in the probe's root.
pub const DIRS: u64 = 100;

/// Names stat'ed per run of each lookup kind (DIRS directories x 100).
const NAMES: usize = 10_000;

/// The cache lifetimes dfs uses while watching its tiers.
const TTL: Duration = Duration::from_secs(30);

/// The first node id handed out for a file (directories are 2..=DIRS+1).
const FIRST_FILE: u64 = 1_000_000;

/// The first node id handed out for a listed directory (`l*` in the root):
/// a fresh directory each time, so no listing is served from the kernel's
/// cache of an earlier one.
const FIRST_LISTED: u64 = 1_000;

/// Names in each listed directory (as in the small-files workload).
const LISTED_NAMES: u64 = crate::table::LISTED_NAMES as u64;

/// The name, in the probe's root, of the file it serves by kernel
/// passthrough (when it was given one and INIT granted passthrough).
pub const PT_NAME: &str = "pt";

/// The passthrough file's node id: between the `d*` directories and the
/// first listed one, so no other name ever gets it.
const PT_INO: u64 = 500;

const _: () = assert!(DIRS + 1 < PT_INO && PT_INO < FIRST_LISTED);

/// How the probe mounts: as the preset mount reported it mounted, so that
/// both use the same transport and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Ask for FUSE over io_uring at INIT (dfs's transport was io_uring).
    pub uring: bool,
    /// Session threads reading /dev/fuse.
    pub threads: usize,
    pub allow_other: bool,
    pub default_permissions: bool,
    /// Ask for kernel passthrough at INIT, as dfs did (its `I/O mode:
    /// kernel passthrough` line); only then can the probe serve a file by
    /// passthrough.
    pub passthrough: bool,
    /// dfs's own `transport: ...` line, if it logged one.
    pub dfs_transport: Option<String>,
}

impl Settings {
    /// Reads dfs's startup lines (`I/O mode: ...`, `transport: io_uring,
    /// ...` and `mounted ... (policy P, N threads, allow_other,
    /// default_permissions)`); what is missing takes the preset's
    /// defaults, but passthrough only when dfs said it has it.
    pub fn from_dfs_log(lines: &[String]) -> Settings {
        let mut s = Settings {
            uring: true,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 16),
            allow_other: true,
            default_permissions: true,
            passthrough: false,
            dfs_transport: None,
        };
        for l in lines {
            if let Some(i) = l.find("I/O mode: ") {
                s.passthrough = l[i + "I/O mode: ".len()..]
                    .trim_start()
                    .starts_with("kernel passthrough");
            }
            if let Some(i) = l.find("transport: ") {
                let t = l[i + "transport: ".len()..].trim();
                s.uring = t.starts_with("io_uring");
                s.dfs_transport = Some(t.to_string());
            }
            if l.contains("mounted ")
                && let Some(i) = l.rfind("(policy ")
            {
                let words = l[i + 1..].trim_end_matches(')');
                s.allow_other = false;
                s.default_permissions = false;
                for w in words.split(", ") {
                    if let Some(n) = w.strip_suffix(" threads").and_then(|n| n.parse().ok()) {
                        s.threads = n;
                    }
                    s.allow_other |= w == "allow_other";
                    s.default_permissions |= w == "default_permissions";
                }
            }
        }
        s
    }
}

/// What the probe's daemon saw, shared with the bench's thread.
#[derive(Default)]
struct State {
    next_file: AtomicU64,
    next_listed: AtomicU64,
    /// Whether INIT agreed on FUSE over io_uring.
    uring: AtomicBool,
    /// Whether INIT agreed on kernel passthrough.
    passthrough: AtomicBool,
    /// Why not, when it did not.
    no_uring: Mutex<String>,
    /// Requests served on the ring threads and on the /dev/fuse threads.
    on_ring: AtomicU64,
    on_dev: AtomicU64,
    lookups: AtomicU64,
    getxattrs: AtomicU64,
    /// Everything else counted (GETATTR, READDIR(PLUS), OPEN, READ,
    /// RELEASE).
    other: AtomicU64,
}

thread_local! {
    /// Whether this thread is one of fuser's io_uring threads.
    static RING_THREAD: bool = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("fuser-ring"));
}

impl State {
    fn served(&self, what: &AtomicU64) {
        what.fetch_add(1, Relaxed);
        if RING_THREAD.with(|r| *r) {
            self.on_ring.fetch_add(1, Relaxed);
        } else {
            self.on_dev.fetch_add(1, Relaxed);
        }
    }

    /// Every request counted so far.
    fn total(&self) -> u64 {
        self.on_ring.load(Relaxed) + self.on_dev.load(Relaxed)
    }

    /// (LOOKUP, GETXATTR, other, on ring threads, on /dev/fuse threads).
    fn counts(&self) -> [u64; 5] {
        [
            self.lookups.load(Relaxed),
            self.getxattrs.load(Relaxed),
            self.other.load(Relaxed),
            self.on_ring.load(Relaxed),
            self.on_dev.load(Relaxed),
        ]
    }
}

/// The zero-work filesystem: root (1) holds directories d0..d99 (2..=101);
/// in them every `f*` name is a fresh regular file with a new node id and
/// every other name (the bench uses `n*`) is a negative entry; GETATTR
/// answers fixed attributes, GETXATTR ENODATA, FORGET nothing. With a
/// passthrough file, the root also holds `PT_NAME`, whose opens the kernel
/// serves from the backing file.
struct Zero {
    want_uring: bool,
    want_passthrough: bool,
    pt: Option<PtFile>,
    state: Arc<State>,
}

/// The one file the probe serves by kernel passthrough, and its backing
/// file (a native file the bench made).
struct PtFile {
    path: PathBuf,
    /// The backing file, kept open for fstat: LOOKUP and GETATTR report
    /// its real size, so that the kernel reads all of it.
    file: File,
    next_fh: AtomicU64,
    /// The kernel's registration of the backing file and the handles open
    /// on it: the kernel wants one per inode while any handle is open, as
    /// dfs keeps it (fuse.rs `backing_for`, `release_backing`).
    backing: Mutex<Option<(BackingId, u64)>>,
}

impl PtFile {
    fn attr(&self) -> io::Result<FileAttr> {
        Ok(file_attr(PT_INO, &self.file.metadata()?))
    }
}

/// A regular file's attributes as the backing file's metadata has them.
fn file_attr(ino: u64, m: &fs::Metadata) -> FileAttr {
    let at = |secs: i64, nsecs: i64| {
        let (s, ns) = (u64::try_from(secs), u32::try_from(nsecs));
        match (s, ns) {
            (Ok(s), Ok(ns)) => SystemTime::UNIX_EPOCH + Duration::new(s, ns),
            _ => SystemTime::UNIX_EPOCH,
        }
    };
    let mtime = at(m.mtime(), m.mtime_nsec());
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: at(m.atime(), m.atime_nsec()),
        mtime,
        ctime: at(m.ctime(), m.ctime_nsec()),
        crtime: mtime,
        kind: FileType::RegularFile,
        perm: (m.mode() & 0o7777) as u16,
        nlink: 1,
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        blksize: u32::try_from(m.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

/// The names of a listed directory after readdir offset `offset` (1 and 2
/// are "." and ".."): node id, cookie and name of each.
fn listed_after(offset: u64) -> impl Iterator<Item = (INodeNo, u64, String)> {
    (offset.max(2) - 2..LISTED_NAMES).map(|i| (INodeNo(FIRST_FILE + i), i + 3, format!("e{i:06}")))
}

fn attr(ino: u64) -> FileAttr {
    let dir = ino < FIRST_FILE && (ino <= DIRS + 1 || ino >= FIRST_LISTED);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    FileAttr {
        ino: INodeNo(ino),
        size: if dir { 0 } else { 4096 },
        blocks: if dir { 0 } else { 8 },
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// As dfs's `io_uring_allowed`: whether kernel.io_uring_disabled lets this
/// process (root) use io_uring.
fn io_uring_allowed() -> bool {
    match fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) => matches!(v.trim(), "0" | "1"),
        Err(_) => true,
    }
}

impl Filesystem for Zero {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // The capabilities dfs asks for (fuse.rs `init`); passthrough as
        // dfs got it, the same way.
        let caps = config.capabilities();
        let _ = config.add_capabilities(
            (InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_READDIRPLUS_AUTO
                | InitFlags::FUSE_PARALLEL_DIROPS
                | InitFlags::FUSE_CACHE_SYMLINKS
                | InitFlags::FUSE_EXPORT_SUPPORT)
                & caps,
        );
        let passthrough = self.want_passthrough
            && caps.contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.state.passthrough.store(passthrough, Relaxed);
        let why = if !self.want_uring {
            Some("as dfs's mount")
        } else if !io_uring_allowed() {
            Some("io_uring disabled by sysctl kernel.io_uring_disabled")
        } else if !caps.contains(InitFlags::FUSE_OVER_IO_URING) {
            Some("io_uring not offered by the kernel (fuse.enable_uring)")
        } else if config
            .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
            .is_err()
        {
            Some("io_uring refused at INIT")
        } else {
            None
        };
        self.state.uring.store(why.is_none(), Relaxed);
        if let Some(why) = why {
            *self
                .state
                .no_uring
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = why.into();
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.state.served(&self.state.lookups);
        let n = name.as_bytes();
        if parent.0 == 1
            && n == PT_NAME.as_bytes()
            && let Some(pt) = self.pt()
        {
            return match pt.attr() {
                Ok(a) => reply.entry(&TTL, &a, Generation(0)),
                Err(e) => reply.error(e.into()),
            };
        }
        if parent.0 == 1 {
            let dir = n
                .strip_prefix(b"d")
                .and_then(|k| std::str::from_utf8(k).ok()?.parse::<u64>().ok())
                .filter(|&k| k < DIRS);
            if let Some(k) = dir {
                return reply.entry(&TTL, &attr(2 + k), Generation(0));
            }
            if n.first() == Some(&b'l') {
                let ino = self.state.next_listed.fetch_add(1, Relaxed);
                return reply.entry(&TTL, &attr(ino), Generation(0));
            }
        } else if n.first() == Some(&b'f') {
            let ino = self.state.next_file.fetch_add(1, Relaxed);
            return reply.entry(&TTL, &attr(ino), Generation(0));
        }
        // A negative entry: node id 0 with an entry lifetime, as dfs answers.
        let mut none = attr(FIRST_FILE);
        none.ino = INodeNo(0);
        reply.entry_with_ttls(&Duration::ZERO, &TTL, &none, Generation(0));
    }

    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {}

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // As dfs while it watches its tiers: no OPENDIR, READDIR comes
        // without a handle.
        reply.error(Errno::ENOSYS);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.state.served(&self.state.other);
        // As dfs answers for names the kernel holds: "." and "..", then
        // every name without attributes.
        let dot = attr(ino.0);
        if offset == 0 && reply.add(INodeNo(0), 1, ".", &Duration::ZERO, &dot, Generation(0)) {
            return reply.ok();
        }
        if offset <= 1 && reply.add(INodeNo(0), 2, "..", &Duration::ZERO, &dot, Generation(0)) {
            return reply.ok();
        }
        for (ino, cookie, name) in listed_after(offset) {
            if reply.add_name(ino, cookie, FileType::RegularFile, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.state.served(&self.state.other);
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 && reply.add(INodeNo(1), 2, FileType::Directory, "..") {
            return reply.ok();
        }
        for (ino, cookie, name) in listed_after(offset) {
            if reply.add(ino, cookie, FileType::RegularFile, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.state.served(&self.state.other);
        if ino.0 == PT_INO
            && let Some(pt) = &self.pt
        {
            return match pt.attr() {
                Ok(a) => reply.attr(&TTL, &a),
                Err(e) => reply.error(e.into()),
            };
        }
        reply.attr(&TTL, &attr(ino.0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.state.served(&self.state.other);
        if ino.0 != PT_INO {
            // The other files are only ever stat'ed.
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        let Some(pt) = self.pt() else {
            return reply.error(Errno::EIO);
        };
        // Reads are all the bench does; the probe never writes its backing
        // file.
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let mut backing = pt.backing.lock().unwrap_or_else(|e| e.into_inner());
        let (id, opens) = match backing.take() {
            Some(b) => b,
            // As dfs: the first open registers a file of its own, which
            // serves every handle of the node while one is open (the
            // kernel opens a backing file per client open from it).
            None => match File::open(&pt.path).and_then(|f| reply.open_backing(&f)) {
                Ok(id) => (id, 0),
                Err(e) => {
                    eprintln!(
                        "dfs-bench: floor probe: passthrough of {}: {e}",
                        pt.path.display()
                    );
                    return reply.error(e.into());
                }
            },
        };
        let fh = pt.next_fh.fetch_add(1, Relaxed);
        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
        *backing = Some((id, opens + 1));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Passthrough reads never get here; the probe serves no data, so a
        // read that does fails loudly instead of timing the daemon.
        self.state.served(&self.state.other);
        reply.error(Errno::EIO);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state.served(&self.state.other);
        if ino.0 == PT_INO
            && let Some(pt) = &self.pt
        {
            let mut backing = pt.backing.lock().unwrap_or_else(|e| e.into_inner());
            // The last handle gone: dropping the id closes the
            // registration.
            if let Some((id, opens)) = backing.take()
                && opens > 1
            {
                *backing = Some((id, opens - 1));
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        self.state.served(&self.state.getxattrs);
        reply.error(Errno::ENODATA);
    }
}

impl Zero {
    /// The passthrough file, if the probe has one and INIT granted
    /// passthrough (otherwise its name is a negative entry).
    fn pt(&self) -> Option<&PtFile> {
        self.pt
            .as_ref()
            .filter(|_| self.state.passthrough.load(Relaxed))
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{}: NUL in path", p.display())))
}

/// The mounted probe. Dropping it unmounts (also on error and panic
/// paths); the signal thread detaches it on Ctrl-C (see
/// `daemon::register_local_mount`).
pub struct Probe {
    mnt: PathBuf,
    mounted: bool,
    session: Option<fuser::BackgroundSession>,
    state: Arc<State>,
}

impl Probe {
    /// Mounts the zero-work filesystem on `mnt` (an empty directory) as
    /// `s` says and starts serving it on background threads; with
    /// `backing` (a native regular file) and `s.passthrough`, it serves
    /// that file as `PT_NAME` by kernel passthrough.
    pub fn mount(mnt: &Path, s: &Settings, backing: Option<&Path>) -> io::Result<Probe> {
        let pt = match backing {
            Some(p) => Some(PtFile {
                path: p.to_path_buf(),
                file: File::open(p)
                    .map_err(|e| io::Error::other(format!("{}: {e}", p.display())))?,
                next_fh: AtomicU64::new(1),
                backing: Mutex::new(None),
            }),
            None => None,
        };
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| io::Error::other(format!("/dev/fuse: {e}")))?;
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut data = format!(
            "fd={},rootmode=40000,user_id={uid},group_id={gid}",
            dev.as_raw_fd()
        );
        if s.default_permissions {
            data += ",default_permissions";
        }
        if s.allow_other {
            data += ",allow_other";
        }
        let data = CString::new(data).map_err(io::Error::other)?;
        let target = cstring(mnt)?;
        // SAFETY: NUL-terminated strings that outlive the call; the data
        // is the fuse options string mount(2) expects.
        let r = unsafe {
            libc::mount(
                c"dfs-bench-floor".as_ptr(),
                target.as_ptr(),
                c"fuse.dfs-bench-floor".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::other(format!("mount {}: {e}", mnt.display())));
        }
        daemon::register_local_mount(mnt);
        let state = Arc::new(State {
            next_file: AtomicU64::new(FIRST_FILE),
            next_listed: AtomicU64::new(FIRST_LISTED),
            ..State::default()
        });
        // From here on, Drop unmounts.
        let mut probe = Probe {
            mnt: mnt.to_path_buf(),
            mounted: true,
            session: None,
            state: state.clone(),
        };
        let mut cfg = fuser::Config::default();
        cfg.acl = if s.allow_other {
            fuser::SessionACL::All
        } else {
            fuser::SessionACL::Owner
        };
        cfg.n_threads = Some(s.threads.max(1));
        cfg.clone_fd = true;
        let fs = Zero {
            want_uring: s.uring,
            want_passthrough: s.passthrough,
            pt,
            state,
        };
        let session = fuser::Session::from_fd(fs, dev.into(), cfg.acl, cfg)?;
        probe.session = Some(session.spawn()?);
        Ok(probe)
    }

    /// The transport the timed requests (`ring` on the io_uring threads,
    /// `dev` on the /dev/fuse ones) came over.
    fn transport(&self, ring: u64, dev: u64) -> String {
        if !self.state.uring.load(Relaxed) {
            let why = self
                .state
                .no_uring
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            format!("/dev/fuse ({why})")
        } else if dev == 0 {
            "io_uring".into()
        } else {
            format!(
                "io_uring agreed, but {dev} of {} timed requests came over /dev/fuse",
                ring + dev
            )
        }
    }

    /// The passthrough file on the mount, when the probe was given one and
    /// INIT granted passthrough. Stats it, which waits for INIT.
    pub fn passthrough_file(&self) -> io::Result<Option<PathBuf>> {
        let f = self.mnt.join(PT_NAME);
        match fs::metadata(&f) {
            Ok(_) if self.state.passthrough.load(Relaxed) => Ok(Some(f)),
            Ok(_) => Err(io::Error::other(format!(
                "{}: served without passthrough",
                f.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::other(format!("{}: {e}", f.display()))),
        }
    }

    /// Every request the probe has served so far.
    pub fn requests(&self) -> u64 {
        self.state.total()
    }

    /// Unmounts (plainly, lazily if busy), waits up to 10 s for the
    /// session's threads to end and checks /proc/mounts. Idempotent.
    pub fn unmount(&mut self) -> io::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        self.mounted = false;
        daemon::unregister_local_mount(&self.mnt);
        let target = cstring(&self.mnt)?;
        // SAFETY: a NUL-terminated path; no flags.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: no longer a mount point (someone unmounted it).
            if e.raw_os_error() != Some(libc::EINVAL) {
                daemon::detach(&self.mnt).map_err(|e| {
                    io::Error::other(format!("umount -l {}: {e}", self.mnt.display()))
                })?;
            }
        }
        // The unmount ends the connection, and with it the session.
        if let Some(s) = self.session.take() {
            let (tx, rx) = mpsc::channel();
            let joined = std::thread::Builder::new()
                .name("floor-join".into())
                .spawn(move || {
                    let _ = tx.send(s.join());
                });
            match joined.map(|_| rx.recv_timeout(Duration::from_secs(10))) {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("dfs-bench: floor probe session: {e}"),
                Ok(Err(_)) => eprintln!("dfs-bench: floor probe session did not end in 10 s"),
                Err(e) => eprintln!("dfs-bench: floor probe: cannot wait for the session: {e}"),
            }
        }
        daemon::gone(&self.mnt)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("dfs-bench: floor probe unmount: {e}");
        }
    }
}

/// The floor group: mounts the probe under the scratch directory, times on
/// it, `ctx.reps` times each with fresh names, an empty round trip
/// (fgetxattr of an absent name), a negative LOOKUP (stat of a missing
/// name) and a positive one (stat of a file never seen), unmounts, and
/// leaves the medians in `t.kernel` for the floor column.
pub fn run(ctx: &Ctx, t: &mut Table) -> io::Result<()> {
    let s = settings(ctx);
    let mnt = ctx.scratch.join(MOUNT_DIR);
    fs::create_dir_all(&mnt)?;
    eprintln!(
        "  zero-work FUSE probe on {} ({} threads, {}{})",
        mnt.display(),
        s.threads,
        if s.uring {
            "io_uring if offered"
        } else {
            "/dev/fuse"
        },
        match &s.dfs_transport {
            Some(_) => ", as dfs's mount",
            None => "; dfs reported no transport",
        }
    );
    let mut probe = Probe::mount(&mnt, &s, None)?;
    let measured = measure(ctx, &probe, &mnt);
    let unmounted = probe.unmount();
    if let Err(e) = fs::remove_dir(&mnt) {
        eprintln!("dfs-bench: cannot remove {}: {e}", mnt.display());
    }
    let (mut costs, [ring, dev]) = measured?;
    unmounted?;
    costs.transport = probe.transport(ring, dev);
    if let Some(d) = &s.dfs_transport
        && d.starts_with("io_uring") != costs.transport.starts_with("io_uring")
    {
        costs.transport += &format!("; NOT dfs's: {d}");
    }
    t.kernel = Some(costs);
    Ok(())
}

/// How the probe mounts for this context: as dfs's mount reported.
fn settings(ctx: &Ctx) -> Settings {
    let log = ctx.daemon.log.lock().unwrap_or_else(|e| e.into_inner());
    Settings::from_dfs_log(&log.notable)
}

/// The probe mounted for a workload dfs serves by kernel passthrough, with
/// its passthrough file backed by a native file the workload made.
/// Dropping it (also on error paths) unmounts the probe and removes its
/// mount point and the backing file; the workload's handles on the file
/// must be closed first, or the unmount has to be lazy.
pub struct PtProbe {
    probe: Probe,
    mnt: PathBuf,
    backing: PathBuf,
    /// `PT_NAME` on the mount: what the workload reads.
    pub file: PathBuf,
    closed: bool,
}

impl PtProbe {
    /// When the floor is wanted (`ctx.floor`; never in the counting pass)
    /// and dfs's mount does kernel passthrough: makes `backing` with `make`
    /// (a native file with the content of the workload's own, on the same
    /// disk), mounts the probe under the scratch directory serving it, and
    /// reads it through the probe once, so that its pages are as warm as
    /// the workload's own files are. None, and a note why, otherwise.
    pub fn start(
        ctx: &Ctx,
        backing: &Path,
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<Option<PtProbe>> {
        if !ctx.floor || ctx.dfs_only {
            return Ok(None);
        }
        let s = settings(ctx);
        if !s.passthrough {
            eprintln!(
                "  (no passthrough floor: dfs's I/O mode is not kernel passthrough, so the floor probe is not mounted)"
            );
            return Ok(None);
        }
        if let Err(e) = make(backing) {
            let _ = fs::remove_file(backing);
            return Err(e);
        }
        let mnt = ctx.scratch.join(MOUNT_DIR);
        let mounted = fs::create_dir_all(&mnt).and_then(|()| Probe::mount(&mnt, &s, Some(backing)));
        let probe = match mounted {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_dir(&mnt);
                let _ = fs::remove_file(backing);
                return Err(e);
            }
        };
        let mut pt = PtProbe {
            probe,
            file: mnt.join(PT_NAME),
            mnt,
            backing: backing.to_path_buf(),
            closed: false,
        };
        if pt.probe.passthrough_file()?.is_none() {
            eprintln!(
                "  (no passthrough floor: the kernel refused the floor probe passthrough at INIT)"
            );
            pt.close()?;
            return Ok(None);
        }
        let want = fs::metadata(backing)?.len();
        let mut buf = vec![0u8; 1 << 20];
        let n = crate::workloads::read_whole(&pt.file, &mut buf)?;
        if n != want {
            return Err(io::Error::other(format!(
                "{}: read {n} bytes through the floor probe, the backing file has {want}",
                pt.file.display()
            )));
        }
        eprintln!(
            "  zero-work FUSE probe on {} serving {} by kernel passthrough ({} threads, {})",
            pt.mnt.display(),
            backing.display(),
            s.threads,
            if s.uring {
                "io_uring if offered"
            } else {
                "/dev/fuse"
            },
        );
        Ok(Some(pt))
    }

    /// Every request the probe has served so far.
    pub fn requests(&self) -> u64 {
        self.probe.requests()
    }

    /// Unmounts the probe, then removes its mount point and the backing
    /// file. Idempotent.
    pub fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let unmounted = self.probe.unmount();
        if unmounted.is_ok()
            && let Err(e) = fs::remove_dir(&self.mnt)
        {
            eprintln!("dfs-bench: cannot remove {}: {e}", self.mnt.display());
        }
        unmounted?;
        fs::remove_file(&self.backing)
    }
}

impl Drop for PtProbe {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            eprintln!("dfs-bench: floor probe: {e}");
        }
    }
}

/// The timed loops; returns the samples and the requests they sent over
/// the ring threads and over /dev/fuse.
fn measure(ctx: &Ctx, probe: &Probe, mnt: &Path) -> io::Result<(KernelCosts, [u64; 2])> {
    let st = &probe.state;
    for d in 0..DIRS {
        fs::metadata(mnt.join(format!("d{d}")))?;
    }
    let names = |prefix: &str| -> Vec<PathBuf> {
        (0..NAMES)
            .map(|i| mnt.join(format!("d{}/{prefix}{i}", i as u64 % DIRS)))
            .collect()
    };
    let root = File::open(mnt)?;
    let fd = root.as_raw_fd();
    let xattr = c"trusted.dfs.bench-absent";
    let getxattrs = |n: u64| -> io::Result<()> {
        let mut b = [0u8; 64];
        for _ in 0..n {
            // SAFETY: valid fd, NUL-terminated name, buffer and its length.
            let r = unsafe { libc::fgetxattr(fd, xattr.as_ptr(), b.as_mut_ptr().cast(), b.len()) };
            if r >= 0 {
                return Err(io::Error::other("probe getxattr: the absent name exists"));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENODATA) {
                return Err(io::Error::other(format!("probe getxattr: {e}")));
            }
        }
        Ok(())
    };
    let stats = |paths: &[PathBuf], exist: bool| -> io::Result<()> {
        for p in paths {
            match fs::metadata(p) {
                Ok(m) if exist && m.len() == 4096 => {}
                Err(e) if !exist && e.kind() == io::ErrorKind::NotFound => {}
                r => {
                    return Err(io::Error::other(format!(
                        "probe stat {}: unexpected {r:?}",
                        p.display()
                    )));
                }
            }
        }
        Ok(())
    };
    // Warm up: the first requests also settle what the kernel learns once
    // (e.g. that the daemon has no STATX).
    getxattrs(2000)?;
    stats(&names("fwarm")[..200], true)?;
    stats(&names("nwarm")[..200], false)?;

    let rts = ctx.sizes.roundtrips.max(1);
    let mut k = KernelCosts {
        ops: [rts, NAMES as u64, NAMES as u64],
        ..KernelCosts::default()
    };
    let mut via = [0u64; 2];
    // Times `f` (`ops` operations); prints it with the requests it sent.
    let mut time = |what: &str, ops: u64, f: &dyn Fn() -> io::Result<()>| {
        let before = st.counts();
        let start = Instant::now();
        f()?;
        let secs = start.elapsed().as_secs_f64() / ops as f64;
        let d: Vec<u64> = st.counts().iter().zip(before).map(|(a, b)| a - b).collect();
        via[0] += d[3];
        via[1] += d[4];
        eprintln!(
            "  floor/{what:<20} probe    {} us/op ({} requests/op)",
            fmt_num(secs * 1e6),
            fmt_num((d[0] + d[1] + d[2]) as f64 / ops as f64)
        );
        io::Result::Ok(secs)
    };
    for rep in 0..ctx.reps.max(1) {
        let (neg, pos) = (names(&format!("n{rep}-")), names(&format!("f{rep}-")));
        let n = NAMES as u64;
        k.roundtrip
            .push(time("round trip", rts, &|| getxattrs(rts))?);
        k.negative
            .push(time("negative LOOKUP", n, &|| stats(&neg, false))?);
        k.positive
            .push(time("positive LOOKUP", n, &|| stats(&pos, true))?);
        let dirs: Vec<PathBuf> = (0..DIRS).map(|d| mnt.join(format!("l{rep}-{d}"))).collect();
        for d in &dirs {
            fs::metadata(d)?;
        }
        k.listing.push(time("listing (100 names)", DIRS, &|| {
            for d in &dirs {
                let mut n = 0;
                for e in fs::read_dir(d)? {
                    e?;
                    n += 1;
                }
                if n != LISTED_NAMES {
                    return Err(io::Error::other(format!("probe listed {n} names")));
                }
            }
            Ok(())
        })?);
    }
    Ok((k, via))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn settings_follow_dfs() {
        let s = Settings::from_dfs_log(&lines(&[
            "[2026-01-01T00:00:00Z INFO  dfs::fs] transport: io_uring, one request queue per CPU",
            "[2026-01-01T00:00:00Z INFO  dfs::mount] mounted pss=/t0 sss=/t1 on /m (policy parent-dir, 3 threads, allow_other, default_permissions)",
        ]));
        assert!(s.uring && s.allow_other && s.default_permissions);
        assert_eq!(s.threads, 3);
        assert_eq!(
            s.dfs_transport.as_deref(),
            Some("io_uring, one request queue per CPU")
        );

        let s = Settings::from_dfs_log(&lines(&[
            "[x INFO  dfs::fs] transport: /dev/fuse (io_uring disabled by -o uring=off)",
            "[x INFO  dfs::mount] mounted a=/a on /m (policy p, 4 threads, owner only)",
        ]));
        assert!(!s.uring && !s.allow_other && !s.default_permissions);
        assert_eq!(s.threads, 4);
    }

    #[test]
    fn passthrough_as_dfs_reported_it() {
        let s = Settings::from_dfs_log(&lines(&[
            "[x INFO  dfs::fuse] I/O mode: kernel passthrough (reads, writes and mmap bypass the daemon)",
        ]));
        assert!(s.passthrough);
        let s = Settings::from_dfs_log(&lines(&[
            "[x INFO  dfs::fuse] I/O mode: through the daemon (passthrough disabled by -o nopassthrough)",
        ]));
        assert!(!s.passthrough);
        assert!(!Settings::from_dfs_log(&[]).passthrough);
    }

    #[test]
    fn the_passthrough_file_has_its_backing_file_attributes() {
        let p = std::env::temp_dir().join(format!("dfs-bench-pt-test.{}", std::process::id()));
        let made = fs::write(&p, vec![7u8; 12_345]);
        let m = fs::metadata(&p);
        let _ = fs::remove_file(&p);
        made.unwrap();
        let m = m.unwrap();
        let a = file_attr(PT_INO, &m);
        assert_eq!(a.ino, INodeNo(PT_INO));
        assert_eq!(
            (a.kind, a.size, a.blocks),
            (FileType::RegularFile, 12_345, m.blocks())
        );
        assert_eq!(u32::from(a.perm), m.mode() & 0o7777);
        assert_eq!((a.uid, a.gid, a.nlink), (m.uid(), m.gid(), 1));
        assert!(a.mtime > SystemTime::UNIX_EPOCH);
        // Not a node id the zero-work names hand out.
        assert_eq!(attr(PT_INO).kind, FileType::RegularFile);
    }

    #[test]
    fn settings_default_to_the_preset() {
        let s = Settings::from_dfs_log(&[]);
        assert!(s.uring && s.allow_other && s.default_permissions);
        assert!((2..=16).contains(&s.threads));
        assert_eq!(s.dfs_transport, None);
    }

    #[test]
    fn zero_work_attributes() {
        assert_eq!(attr(1).kind, FileType::Directory);
        assert_eq!(attr(DIRS + 1).kind, FileType::Directory);
        let f = attr(FIRST_FILE);
        assert_eq!(
            (f.kind, f.size, f.perm),
            (FileType::RegularFile, 4096, 0o644)
        );
    }
}
