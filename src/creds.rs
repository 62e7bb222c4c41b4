//! Acting with the caller's credentials.
//!
//! Mounted by root with `allow_other`, dfs must create names as the calling
//! user (owner, group, setgid directories, permission checks on the tier),
//! not as root followed by a chown, which would be a race and a hole. Linux
//! keeps fsuid, fsgid and the supplementary groups per thread at the syscall
//! level, so they are switched on the worker thread for one operation and
//! restored after it.

use std::fs;

/// Who is asking: from the FUSE request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Caller's fsuid.
    pub uid: u32,
    /// Caller's fsgid.
    pub gid: u32,
    /// Caller's process id (to find its supplementary groups).
    pub pid: u32,
}

impl Caller {
    /// The daemon itself (used for internal work such as cloning parents).
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
}

/// Runs `f` with the caller's fsuid, fsgid and groups on this thread.
///
/// Only switches when the daemon runs as root and the caller is someone
/// else; otherwise `f` runs as is.
pub fn as_caller<T>(c: Caller, f: impl FnOnce() -> T) -> T {
    if c.uid == 0 && c.gid == 0 {
        return f();
    }
    if rustix::process::geteuid().as_raw() != 0 {
        return f();
    }
    let groups = supplementary_groups(c.pid, c.gid);
    // SAFETY: raw syscalls on plain integers and a valid slice; they change
    // only this thread's credentials (the raw setgroups syscall is per
    // thread, unlike glibc's wrapper), and they are restored below.
    unsafe {
        libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
        libc::setfsgid(c.gid);
        libc::setfsuid(c.uid);
    }
    let out = f();
    let root_groups: [libc::gid_t; 1] = [0];
    // SAFETY: as above, restoring root's identity on this thread.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
        libc::syscall(libc::SYS_setgroups, 1usize, root_groups.as_ptr());
    }
    out
}

/// The caller's supplementary groups from /proc; just its gid if unreadable.
fn supplementary_groups(pid: u32, gid: u32) -> Vec<libc::gid_t> {
    let mut out = vec![gid];
    if pid == 0 {
        return out;
    }
    if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(line) = status.lines().find(|l| l.starts_with("Groups:"))
    {
        out.extend(
            line["Groups:".len()..]
                .split_whitespace()
                .filter_map(|g| g.parse::<libc::gid_t>().ok())
                .filter(|&g| g != gid),
        );
    }
    out
}
