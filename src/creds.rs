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
    // Back to fsuid 0, the kernel raised the filesystem capabilities again
    // (CAP_FSETID among them).
    FSETID_DROPPED.set(false);
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

/// Whether `gid` is the caller's group or one of its supplementary groups.
pub fn in_group(c: Caller, gid: u32) -> bool {
    c.gid == gid || supplementary_groups(c.pid, c.gid).contains(&gid)
}

/// CAP_FSETID: keeps set-user-ID and set-group-ID bits across writes and
/// truncates.
const CAP_FSETID: u32 = 4;

/// Whether the caller keeps set-ID bits when it writes or truncates (holds
/// CAP_FSETID). The kernel leaves clearing them to dfs
/// (FUSE_HANDLE_KILLPRIV_V2) where it cannot say itself; asked only for
/// files that have such bits. Read from the caller's /proc status; a
/// caller gone or unreadable counts as privileged only if it is root.
pub fn keeps_setid(c: Caller) -> bool {
    if c.pid != 0
        && let Ok(status) = fs::read_to_string(format!("/proc/{}/status", c.pid))
        && let Some(hex) = status.lines().find_map(|l| l.strip_prefix("CapEff:"))
        && let Ok(bits) = u64::from_str_radix(hex.trim(), 16)
    {
        return bits & (1 << CAP_FSETID) != 0;
    }
    c.uid == 0
}

thread_local! {
    /// Whether this thread has dropped CAP_FSETID from its effective set
    /// (see [`without_fsetid`]); it stays dropped until an operation needs
    /// it ([`with_fsetid`]) or acting as a caller brings it back.
    static FSETID_DROPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn set_fsetid(on: bool) -> bool {
    use caps::{CapSet, Capability};
    let r = if on {
        caps::raise(None, CapSet::Effective, Capability::CAP_FSETID)
    } else {
        caps::drop(None, CapSet::Effective, Capability::CAP_FSETID)
    };
    match r {
        Ok(()) => true,
        Err(e) => {
            log::error!("cannot change CAP_FSETID on this thread: {e}");
            false
        }
    }
}

/// Runs `f` with CAP_FSETID out of this thread's effective set; `None`
/// (and `f` not run) if it cannot be dropped.
///
/// Kernel passthrough does a client's writes with the credentials dfs had
/// when it registered the backing file. Without CAP_FSETID there, the
/// tier's filesystem clears set-ID bits on those writes as it would for an
/// unprivileged writer: the kernel no longer asks dfs before every write
/// (FUSE_HANDLE_KILLPRIV_V2), and dfs never sees passthrough writes.
///
/// The capability stays dropped afterwards (a capset costs a few
/// microseconds, and opens register backing files all the time); the few
/// operations whose outcome depends on it take it back ([`with_fsetid`]).
pub fn without_fsetid<T>(f: impl FnOnce() -> T) -> Option<T> {
    if !FSETID_DROPPED.get() {
        if !set_fsetid(false) {
            return None;
        }
        FSETID_DROPPED.set(true);
    }
    Some(f())
}

/// Runs `f` with CAP_FSETID in this thread's effective set, as root has it:
/// for the operations whose outcome depends on it (a set-group-ID bit kept
/// by chmod, chown, a create or an ACL change of a file whose group root
/// is not in). Free unless [`without_fsetid`] dropped it on this thread.
pub fn with_fsetid<T>(f: impl FnOnce() -> T) -> T {
    if FSETID_DROPPED.get() && set_fsetid(true) {
        FSETID_DROPPED.set(false);
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_caller_keeps_setid_only_as_root() {
        let gone = |uid| Caller {
            uid,
            gid: uid,
            pid: u32::MAX - 1,
        };
        assert!(keeps_setid(gone(0)));
        assert!(!keeps_setid(gone(1000)));
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let me = Caller {
            uid: 4242,
            gid: 4242,
            pid: std::process::id(),
        };
        let root = rustix::process::geteuid().as_raw() == 0;
        // As root (CI) the process holds CAP_FSETID whatever the header uid.
        assert_eq!(keeps_setid(me), root);
    }

    #[test]
    fn fsetid_stays_dropped_until_an_operation_needs_it() {
        use caps::{CapSet, Capability};
        let held = || caps::has_cap(None, CapSet::Effective, Capability::CAP_FSETID).unwrap();
        if !held() {
            return; // not root: nothing to drop
        }
        std::thread::spawn(move || {
            assert_eq!(without_fsetid(held), Some(false));
            assert!(!held(), "dropped for the next registration too");
            assert!(with_fsetid(held));
            assert!(held());
            assert_eq!(without_fsetid(held), Some(false));
        })
        .join()
        .unwrap();
        assert!(held(), "other threads keep it");
    }
}
