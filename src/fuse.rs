//! The FUSE adapter: kernel requests in, core calls, replies out.
//!
//! Deliberately thin: every decision lives in [`crate::fs`]. This is also
//! the only module that names fuser types, so the pinned fuser 0.18 can be
//! patched or replaced without touching the core.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::dir::resume_at;
use crate::fs::nodes::IdMap;

use crate::cli::Uring;
use crate::creds::{self, Caller};
use crate::fs::{Attr, Errno, Fs, SetAttr, SetTime};

/// A mounted session: the kernel connection plus what unmounts it.
pub struct Mounted {
    /// The fuser session, ready to `run`.
    pub session: fuser::Session<FuseFs>,
    /// Unmounts the mount point (from a signal handler thread).
    pub unmounter: Unmounter,
}

/// Unmounts a dfs mount point, however it was mounted.
pub enum Unmounter {
    /// Mounted by dfs itself with mount(2): unmount with umount2(2).
    Direct(std::path::PathBuf),
    /// Mounted through fusermount3 by fuser (not root).
    Fuser(fuser::SessionUnmounter),
}

impl Unmounter {
    /// Detaches the mount; the session's threads then see the connection
    /// end and `run` returns.
    pub fn unmount(&mut self) -> std::io::Result<()> {
        match self {
            Unmounter::Direct(mp) => {
                rustix::mount::unmount(mp.as_path(), rustix::mount::UnmountFlags::DETACH)?;
                Ok(())
            }
            Unmounter::Fuser(u) => u.unmount(),
        }
    }
}

/// Mounts `fs` on `mp`. As root dfs calls mount(2) itself, so the mount
/// shows as type `fuse.dfs` with the given source name (fuser 0.18 always
/// says `fuse`); otherwise it goes through fuser and fusermount3.
pub fn mount(
    fs: FuseFs,
    mp: &Path,
    cfg: &fuser::Config,
    fsname: &str,
    default_permissions: bool,
) -> std::io::Result<Mounted> {
    if rustix::process::geteuid().as_raw() != 0 {
        let mut session = fuser::Session::new(fs, mp, cfg)?;
        let u = session.unmount_callable();
        return Ok(Mounted {
            session,
            unmounter: Unmounter::Fuser(u),
        });
    }
    use std::os::fd::AsRawFd;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw()
    );
    if default_permissions {
        data += ",default_permissions";
    }
    if cfg.acl != fuser::SessionACL::Owner {
        data += ",allow_other";
    }
    let mut flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV;
    for o in &cfg.mount_options {
        use fuser::MountOption as M;
        match o {
            M::RO => flags |= rustix::mount::MountFlags::RDONLY,
            M::Dev => flags -= rustix::mount::MountFlags::NODEV,
            M::Suid => flags -= rustix::mount::MountFlags::NOSUID,
            M::NoExec => flags |= rustix::mount::MountFlags::NOEXEC,
            M::NoAtime => flags |= rustix::mount::MountFlags::NOATIME,
            M::Sync => flags |= rustix::mount::MountFlags::SYNCHRONOUS,
            M::DirSync => flags |= rustix::mount::MountFlags::DIRSYNC,
            _ => {}
        }
    }
    let data = std::ffi::CString::new(data).map_err(std::io::Error::other)?;
    rustix::mount::mount(fsname, mp, "fuse.dfs", flags, Some(data.as_c_str()))?;
    let session = match fuser::Session::from_fd(fs, dev.into(), cfg.acl, cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
            return Err(e);
        }
    };
    Ok(Mounted {
        session,
        unmounter: Unmounter::Direct(mp.to_path_buf()),
    })
}

/// Invalidations from the tier watcher, sent through the FUSE notifier.
pub struct NotifierInvalidate(pub fuser::Notifier);

impl crate::watch::Invalidate for NotifierInvalidate {
    fn entry(&self, parent: u64, name: &[u8]) {
        if let Err(e) = self.0.inval_entry(INodeNo(parent), OsStr::from_bytes(name)) {
            log::debug!("inval_entry({parent}, {:?}): {e}", OsStr::from_bytes(name));
        }
    }

    fn inode(&self, ino: u64, data: bool) {
        let offset = if data { 0 } else { -1 };
        if let Err(e) = self.0.inval_inode(INodeNo(ino), offset, 0) {
            log::debug!("inval_inode({ino}): {e}");
        }
    }
}

/// Kernel cache lifetimes: while the tiers are watched, and after the
/// watcher stops (a mount that never watched uses `unwatched` throughout).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// While every change on a tier is reported.
    pub watched: CacheTimes,
    /// Otherwise: these bound how long a change made directly on a tier
    /// can go unseen.
    pub unwatched: CacheTimes,
}

/// Kernel cache lifetimes for entries and attributes.
#[derive(Debug, Clone, Copy)]
pub struct CacheTimes {
    /// How long the kernel may trust a name -> node mapping.
    pub entry: Duration,
    /// How long the kernel may trust a node's attributes.
    pub attr: Duration,
    /// How long the kernel may trust that a name does not exist.
    pub negative: Duration,
}

/// A kernel passthrough registration shared by every open handle of a node:
/// the kernel requires one backing file per inode while any handle is open.
struct Backing {
    id: fuser::BackingId,
    opens: usize,
}

/// The fuser `Filesystem` over the dfs core.
pub struct FuseFs {
    core: Arc<Fs>,
    lifetimes: Lifetimes,
    /// Passthrough wanted by the configuration...
    want_passthrough: bool,
    /// `-o uring=...`.
    want_uring: Uring,
    /// ...and granted by the kernel at init.
    passthrough: bool,
    backings: IdMap<Backing>,
    /// Open handles served by passthrough: fh -> node id.
    pt_handles: IdMap<u64>,
}

impl FuseFs {
    /// Wraps the core; `passthrough` asks for kernel passthrough I/O, used
    /// when the kernel and privileges allow it.
    pub fn new(core: Arc<Fs>, lifetimes: Lifetimes, passthrough: bool, uring: Uring) -> Self {
        FuseFs {
            core,
            lifetimes,
            want_passthrough: passthrough,
            want_uring: uring,
            passthrough: false,
            backings: IdMap::default(),
            pt_handles: IdMap::default(),
        }
    }

    /// Registers (or reuses) the node's backing file for the open handle
    /// `fh`. `None` means serve this handle through the daemon.
    fn backing_for<'a>(
        &'a self,
        ino: u64,
        fh: u64,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<fuser::BackingId>,
    ) -> Option<dashmap::mapref::one::RefMut<'a, u64, Backing>> {
        if !self.passthrough {
            return None;
        }
        let entry = match self.backings.entry(ino) {
            dashmap::Entry::Occupied(mut o) => {
                o.get_mut().opens += 1;
                o.into_ref()
            }
            dashmap::Entry::Vacant(v) => {
                // The handle's own file, whatever its flags, serves every
                // handle of the node: the kernel uses a registered file only
                // for where it is, and opens a backing file of its own for
                // each client open, with that open's flags and dfs's
                // credentials (Linux 6.9 and later, where passthrough is).
                let file = match self.core.handle(fh) {
                    Ok(f) => f,
                    Err(e) => {
                        log::debug!("no backing file for node {ino}: {e}");
                        return None;
                    }
                };
                // Registered without CAP_FSETID: the tier clears set-ID
                // bits on the passthrough writes dfs never sees.
                let registered = creds::without_fsetid(|| register(&file.file))
                    .unwrap_or_else(|| Err(std::io::Error::other("cannot drop CAP_FSETID")));
                match registered {
                    Ok(id) => v.insert(Backing { id, opens: 1 }),
                    Err(e) => {
                        log::warn!(
                            "passthrough refused for node {ino} ({e}); serving it through the daemon"
                        );
                        return None;
                    }
                }
            }
        };
        self.pt_handles.insert(fh, ino);
        Some(entry)
    }

    fn release_backing(&self, fh: u64) {
        if let Some((_, ino)) = self.pt_handles.remove(&fh) {
            if let Some(mut b) = self.backings.get_mut(&ino) {
                b.opens = b.opens.saturating_sub(1);
            }
            self.backings.remove_if(&ino, |_, b| b.opens == 0);
        }
    }
}

/// Whether this process may create io_uring instances:
/// `kernel.io_uring_disabled` is 0 (anyone), 1 (privileged only) or 2
/// (no one). Kernels without the sysctl allow it.
fn io_uring_allowed(root: bool) -> bool {
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) => match v.trim() {
            "0" => true,
            "1" => root,
            _ => false,
        },
        Err(_) => true,
    }
}

/// Runs a create of a node with mode `mode` as root would, keeping a
/// set-group-ID bit in a set-group-ID directory (see `creds::with_fsetid`).
fn sgid<T>(mode: u32, f: impl FnOnce() -> T) -> T {
    if mode & libc::S_ISGID != 0 {
        creds::with_fsetid(f)
    } else {
        f()
    }
}

/// Runs an xattr change as root would: an ACL change that sets the mode
/// keeps its set-group-ID bit (see `creds::with_fsetid`).
fn acl<T>(name: &OsStr, f: impl FnOnce() -> T) -> T {
    if name.as_bytes().starts_with(b"system.posix_acl") {
        creds::with_fsetid(f)
    } else {
        f()
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn err(e: Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

fn bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn dirent_type(t: rustix::fs::FileType) -> FileType {
    use rustix::fs::FileType as T;
    match t {
        T::Directory => FileType::Directory,
        T::Symlink => FileType::Symlink,
        T::Fifo => FileType::NamedPipe,
        T::Socket => FileType::Socket,
        T::CharacterDevice => FileType::CharDevice,
        T::BlockDevice => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The kernel's view of a core attribute.
pub fn to_file_attr(a: &Attr) -> FileAttr {
    let st = &a.st;
    FileAttr {
        ino: INodeNo(a.ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// Attributes of nothing: node id 0, for entries that take no reference.
fn blank_attr(kind: FileType) -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(s),
    })
}

impl FuseFs {
    fn entry(&self, reply: ReplyEntry, r: Result<Attr, Errno>) {
        match r {
            Ok(a) => {
                let fa = to_file_attr(&a);
                reply.entry_with_ttls(
                    &self.ttl_for(&fa, self.ttl().attr),
                    &self.ttl().entry,
                    &fa,
                    Generation(0),
                )
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn attr(&self, reply: ReplyAttr, r: Result<Attr, Errno>) {
        match r {
            Ok(a) => {
                let fa = to_file_attr(&a);
                reply.attr(&self.ttl_for(&fa, self.ttl().attr), &fa)
            }
            Err(e) => reply.error(err(e)),
        }
    }

    /// `ttl`, or none at all for the attributes of a file with set-ID
    /// bits: a passthrough write clears them on the tier without dfs
    /// knowing (see `creds::without_fsetid`), and the kernel must not
    /// honour a stale set-user-ID bit at exec. Such files are few.
    /// The cache lifetimes to give the kernel now: the watcher may stop.
    fn ttl(&self) -> &CacheTimes {
        if self.core.watched() {
            &self.lifetimes.watched
        } else {
            &self.lifetimes.unwatched
        }
    }

    fn ttl_for(&self, a: &FileAttr, ttl: Duration) -> Duration {
        if a.kind == FileType::RegularFile && a.perm & 0o6000 != 0 {
            Duration::ZERO
        } else {
            ttl
        }
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Errno>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(FErrno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(err(e)),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Not FUSE_ATOMIC_O_TRUNC: with it the kernel sends O_TRUNC inside
        // OPEN and checks for a running executable (ETXTBSY) only after
        // dfs has already truncated the file, killing the program. Without
        // it the kernel checks first and truncates by SETATTR.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_EXPORT_SUPPORT
            // dfs clears set-ID bits itself on write, truncate and chown:
            // then the kernel stops asking for security.capability
            // (GETXATTR, a round trip) before every write(2) of a file.
            // See `creds::without_fsetid` and `Fs::clear_setid_after_write`.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let caps = config.capabilities();
        if let Err(missing) = config.add_capabilities(wanted & caps) {
            log::warn!("kernel refused FUSE capabilities {missing:?}");
        }
        let root = rustix::process::geteuid().as_raw() == 0;
        if self.want_passthrough
            && root
            && caps.contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough = true;
            self.core.set_mode(
                "I/O mode",
                "kernel passthrough (reads, writes and mmap bypass the daemon)".into(),
            );
        } else {
            let why = if !self.want_passthrough {
                "disabled by -o nopassthrough"
            } else if !root {
                "needs root (CAP_SYS_ADMIN)"
            } else {
                "not offered by this kernel (needs Linux 6.9 or later)"
            };
            self.core.set_mode(
                "I/O mode",
                format!("through the daemon (passthrough {why})"),
            );
        }
        let uring_allowed = io_uring_allowed(root);
        if self.want_uring != Uring::Off
            && uring_allowed
            && caps.contains(InitFlags::FUSE_OVER_IO_URING)
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
        {
            self.core
                .set_mode("transport", "io_uring, one request queue per CPU".into());
        } else {
            let why = if self.want_uring == Uring::Off {
                "io_uring disabled by -o uring=off"
            } else if !uring_allowed {
                "io_uring is disabled for this process (sysctl kernel.io_uring_disabled)"
            } else {
                "io_uring not offered: needs Linux 6.14+ with fuse.enable_uring=Y (-o uring=on sets it)"
            };
            self.core
                .set_mode("transport", format!("/dev/fuse ({why})"));
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.core.lookup(parent.0, bytes(name)) {
            Err(Errno(libc::ENOENT)) if !self.ttl().negative.is_zero() => {
                // Node id 0: the kernel caches "no such name" for a while.
                let mut none = blank_attr(FileType::RegularFile);
                none.ino = INodeNo(0);
                reply.entry_with_ttls(&Duration::ZERO, &self.ttl().negative, &none, Generation(0));
            }
            r => self.entry(reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.attr(reply, self.core.getattr(ino.0, fh.map(|f| f.0)));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let sa = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        let fh = fh.map(|f| f.0);
        // chmod and chown keep a set-group-ID bit as root would.
        let r = if mode.is_some() || uid.is_some() || gid.is_some() {
            creds::with_fsetid(|| self.core.setattr(caller(req), ino.0, sa, fh))
        } else {
            self.core.setattr(caller(req), ino.0, sa, fh)
        };
        self.attr(reply, r);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = sgid(mode, || {
            self.core
                .mknod(caller(req), parent.0, bytes(name), mode, u64::from(rdev))
        });
        self.entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.core.mkdir(caller(req), parent.0, bytes(name), mode),
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.core.unlink(caller(req), parent.0, bytes(name)));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.core.rmdir(caller(req), parent.0, bytes(name)));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.core.symlink(
            caller(req),
            parent.0,
            bytes(link_name),
            target.as_os_str().as_bytes(),
        );
        self.entry(reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.core.rename(
                caller(req),
                parent.0,
                bytes(name),
                newparent.0,
                bytes(newname),
                flags.bits(),
            ),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(reply, self.core.link(ino.0, newparent.0, bytes(newname)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.core.open(caller(req), ino.0, flags.0) {
            Ok(fh) => match self.backing_for(ino.0, fh, |f| reply.open_backing(f)) {
                Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b.id),
                None => reply.opened(FileHandle(fh), FopenFlags::empty()),
            },
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.core.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.core.write(fh.0, offset, data).and_then(|n| {
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                self.core.clear_setid_after_write(caller(req), fh.0)?;
            }
            Ok(n)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // dfs keeps no per-close state and POSIX locks are the kernel's:
        // ENOSYS tells the kernel to stop sending FLUSH, saving a
        // synchronous round trip on every close().
        reply.error(FErrno::from_i32(libc::ENOSYS));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_backing(fh.0);
        self.core.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.fsync(fh.0, datasync));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.core.lists_without_open() {
            // ENOSYS tells the kernel to stop sending OPENDIR and
            // RELEASEDIR for good: READDIR then comes with no handle.
            return reply.error(FErrno::from_i32(libc::ENOSYS));
        }
        match self.core.opendir(caller(req), ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = match self.core.listing(caller(req), ino.0, fh.0, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(err(e)),
        };
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 && reply.add(INodeNo(1), 2, FileType::Directory, "..") {
            return reply.ok();
        }
        let rest = &h.entries[resume_at(&h.entries, offset)..];
        if rest.is_empty() && fh.0 == 0 && offset != 0 {
            // The end of a listing without a handle: drop its snapshot.
            self.core.end_listing(ino.0);
        }
        for e in rest {
            let ino = INodeNo(self.core.entry_ino(e));
            if reply.add(
                ino,
                e.cookie,
                dirent_type(e.kind),
                OsStr::from_bytes(h.name(e)),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let h = match self.core.listing(caller(req), ino.0, fh.0, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(err(e)),
        };
        // "." and ".." take no kernel reference and the kernel skips their
        // attributes: they carry the directory's own id (their d_ino) and
        // nothing else, which costs no stat.
        if offset < 2 {
            let dot = FileAttr {
                ino,
                ..blank_attr(FileType::Directory)
            };
            if offset == 0 && reply.add(INodeNo(0), 1, ".", &Duration::ZERO, &dot, Generation(0)) {
                return reply.ok();
            }
            if reply.add(INodeNo(0), 2, "..", &Duration::ZERO, &dot, Generation(0)) {
                return reply.ok();
            }
        }
        let rest = &h.entries[resume_at(&h.entries, offset)..];
        if rest.is_empty() && fh.0 == 0 && offset != 0 {
            // The end of a listing without a handle: drop its snapshot.
            self.core.end_listing(ino.0);
        }
        for e in rest {
            let name = OsStr::from_bytes(h.name(e));
            if self.core.may_hold(e.ino) {
                // The kernel knows this node (and whatever it caches of it
                // is kept right by dfs's invalidations): list the name only,
                // which costs no stat. A name it lacks is looked up on use
                // (also when `may_hold` errs on the side of yes).
                if reply.add_name(INodeNo(e.ino), e.cookie, dirent_type(e.kind), name) {
                    break;
                }
                continue;
            }
            let full = match self.core.entry_lookup(&h, e) {
                Ok(a) => {
                    let fa = to_file_attr(&a);
                    let ttl = self.ttl_for(&fa, self.ttl().entry);
                    if reply.add(fa.ino, e.cookie, name, &ttl, &fa, Generation(0)) {
                        // The kernel did not take this entry: give the
                        // reference back.
                        self.core.forget(a.ino, 1);
                        true
                    } else {
                        false
                    }
                }
                Err(_) => {
                    // Vanished since the listing was built: list the name
                    // without an entry (node id 0 takes no reference).
                    let blank = blank_attr(dirent_type(e.kind));
                    reply.add(
                        INodeNo(0),
                        e.cookie,
                        name,
                        &Duration::ZERO,
                        &blank,
                        Generation(0),
                    )
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.fsyncdir(ino.0, fh.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.core.statfs() {
            Ok(v) => reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                v.f_bsize as u32,
                v.f_namemax as u32,
                v.f_frsize as u32,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let set = || {
            self.core
                .setxattr(caller(req), ino.0, bytes(name), value, flags)
        };
        empty(reply, acl(name, set));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.core.getxattr(ino.0, bytes(name), size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.core.listxattr(ino.0, size));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let remove = || self.core.removexattr(caller(req), ino.0, bytes(name));
        empty(reply, acl(name, remove));
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.core.access(caller(req), ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match sgid(mode, || {
            self.core
                .create(caller(req), parent.0, bytes(name), mode, flags)
        }) {
            Ok((a, fh)) => {
                let fa = to_file_attr(&a);
                let ttl = self.ttl_for(&fa, self.ttl().entry);
                match self.backing_for(a.ino, fh, |f| reply.open_backing(f)) {
                    Some(b) => reply.created_passthrough(
                        &ttl,
                        &fa,
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                        &b.id,
                    ),
                    None => reply.created(
                        &ttl,
                        &fa,
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    ),
                }
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Like a regular file on a local filesystem: no terminal or device
        // ioctls (isatty() asks this on every stdio open).
        reply.error(FErrno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.core.fallocate(caller(req), fh.0, offset, length, mode),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.core.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self
            .core
            .copy_file_range(caller(req), fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }
}
