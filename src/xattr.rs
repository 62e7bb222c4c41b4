//! Extended attributes of tier files, reached by a directory handle and a
//! name with the `*xattrat` calls of Linux 6.13, instead of a path walk
//! through `/proc/self/fd/N/NAME` for each one. (A handle's own object,
//! held `O_PATH`, still goes through `/proc/self/fd/N`: the kernel takes
//! no `O_PATH` handle there.)
//!
//! That walk costs more than the call itself: on a tier where copies may
//! carry dfs's id xattr, every lookup of a file reads it, and the `/proc`
//! walk took 5.1-5.6 us against 2.4-2.7 us for `getxattrat` (and 2.0 us
//! for the lookup's own `fstatat`) on these machines. Older kernels answer
//! ENOSYS once; from then on the `/proc` path is used.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::path::Arg;

/// Whether the kernel lacks the `*xattrat` calls (learnt from ENOSYS).
static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

/// `struct xattr_args` of the `*xattrat` calls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Syscall numbers: new calls share one number on every architecture with
/// the unified syscall table (not on alpha or mips: there -1, and the
/// `/proc` paths serve).
mod nr {
    const UNIFIED: bool = cfg!(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    ));
    pub const SETXATTRAT: libc::c_long = if UNIFIED { 463 } else { -1 };
    pub const GETXATTRAT: libc::c_long = if UNIFIED { 464 } else { -1 };
}

/// What an xattr call acts on: `name` in directory `dir` (never following
/// a symlink), or `dir`'s own object when `name` is `None`.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: Option<&'a [u8]>,
}

impl Target<'_> {
    /// The same object as a `/proc/self/fd` path, for kernels without
    /// `*xattrat` (a magic link: no symlink of the tier is followed).
    fn proc_path(&self) -> Vec<u8> {
        let mut p = format!("/proc/self/fd/{}", self.dir.as_raw_fd()).into_bytes();
        if let Some(n) = self.name {
            p.push(b'/');
            p.extend_from_slice(n);
        }
        p
    }

    /// Calls `f` with the `*xattrat` path argument and flags.
    fn with_at<T>(&self, f: impl FnOnce(&CStr, libc::c_int) -> Result<T>) -> Result<T> {
        match self.name {
            Some(n) => n.into_with_c_str(|c| f(c, libc::AT_SYMLINK_NOFOLLOW)),
            None => f(c"", libc::AT_EMPTY_PATH),
        }
    }
}

/// Whether to use the `*xattrat` call `nr` for `t`. Not for a handle's
/// own object: the kernel takes no `O_PATH` handle there (EBADF), and
/// dfs holds tier files by `O_PATH` handles.
fn use_at(nr: libc::c_long, t: &Target) -> bool {
    nr >= 0 && t.name.is_some() && !NO_XATTRAT.load(Ordering::Relaxed)
}

type Result<T> = rustix::io::Result<T>;

/// Turns a syscall's return into a result; ENOSYS marks the calls missing.
fn checked(r: libc::c_long) -> Result<usize> {
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = rustix::io::Errno::from_raw_os_error(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    );
    if e == rustix::io::Errno::NOSYS {
        NO_XATTRAT.store(true, Ordering::Relaxed);
    }
    Err(e)
}

/// Reads xattr `attr` of `t` into `buf`; an empty `buf` asks for the size.
pub fn get(t: Target, attr: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    if use_at(nr::GETXATTRAT, &t) {
        let r = attr.into_with_c_str(|a| {
            t.with_at(|path, flags| {
                let mut args = XattrArgs {
                    value: if buf.is_empty() {
                        0
                    } else {
                        buf.as_mut_ptr() as u64
                    },
                    size: buf.len().min(u32::MAX as usize) as u32,
                    flags: 0,
                };
                // SAFETY: NUL-terminated strings and an args struct that
                // outlive the call; `value` points to `size` writable bytes.
                checked(unsafe {
                    libc::syscall(
                        nr::GETXATTRAT,
                        t.dir.as_raw_fd(),
                        path.as_ptr(),
                        flags,
                        a.as_ptr(),
                        &mut args as *mut XattrArgs,
                        std::mem::size_of::<XattrArgs>(),
                    )
                })
            })
        });
        match r {
            Err(e) if e == rustix::io::Errno::NOSYS => {}
            Err(e) if e == rustix::io::Errno::PERM => return blocked(e, get_proc(t, attr, buf)),
            r => return r.map_err(io::Error::from),
        }
    }
    get_proc(t, attr, buf)
}

/// An EPERM from a `*xattrat` call is either the answer (the same as the
/// `/proc` path gives) or a sandbox refusing a call it does not know
/// (seccomp): `fallback` is the `/proc` path's answer; if it is not EPERM,
/// the calls are left alone from now on.
fn blocked<T>(e: rustix::io::Errno, fallback: io::Result<T>) -> io::Result<T> {
    match &fallback {
        Err(f) if f.raw_os_error() == Some(e.raw_os_error()) => {}
        _ => {
            if !NO_XATTRAT.swap(true, Ordering::Relaxed) {
                log::warn!("*xattrat system calls refused (EPERM); using /proc/self/fd paths");
            }
        }
    }
    fallback
}

/// `get` by a `/proc/self/fd` path.
fn get_proc(t: Target, attr: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    let p = t.proc_path();
    let r = attr.into_with_c_str(|a| {
        p.as_slice().into_with_c_str(|path| {
            let (value, size) = if buf.is_empty() {
                (std::ptr::null_mut(), 0)
            } else {
                (buf.as_mut_ptr().cast(), buf.len())
            };
            let getter = if t.name.is_some() {
                libc::lgetxattr
            } else {
                libc::getxattr
            };
            // SAFETY: NUL-terminated strings; `value` is null with size 0
            // (a size query) or points to `size` writable bytes.
            let r = unsafe { getter(path.as_ptr(), a.as_ptr(), value, size) };
            checked(r as libc::c_long)
        })
    });
    r.map_err(io::Error::from)
}

/// Sets xattr `attr` of `t` to `value` (`flags`: XATTR_CREATE/REPLACE).
pub fn set(t: Target, attr: &[u8], value: &[u8], flags: libc::c_int) -> io::Result<()> {
    if use_at(nr::SETXATTRAT, &t) {
        let r = attr.into_with_c_str(|a| {
            t.with_at(|path, at_flags| {
                let args = XattrArgs {
                    value: value.as_ptr() as u64,
                    size: value.len().min(u32::MAX as usize) as u32,
                    flags: flags as u32,
                };
                // SAFETY: as in `get`; `value` is only read.
                checked(unsafe {
                    libc::syscall(
                        nr::SETXATTRAT,
                        t.dir.as_raw_fd(),
                        path.as_ptr(),
                        at_flags,
                        a.as_ptr(),
                        &args as *const XattrArgs,
                        std::mem::size_of::<XattrArgs>(),
                    )
                })
            })
        });
        match r {
            Err(e) if e == rustix::io::Errno::NOSYS => {}
            Err(e) if e == rustix::io::Errno::PERM => {
                return blocked(e, set_proc(t, attr, value, flags));
            }
            r => return r.map(|_| ()).map_err(io::Error::from),
        }
    }
    set_proc(t, attr, value, flags)
}

/// `set` by a `/proc/self/fd` path.
fn set_proc(t: Target, attr: &[u8], value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let p = t.proc_path();
    let r = attr.into_with_c_str(|a| {
        p.as_slice().into_with_c_str(|path| {
            let setter = if t.name.is_some() {
                libc::lsetxattr
            } else {
                libc::setxattr
            };
            // SAFETY: NUL-terminated strings; `value` holds `len` bytes.
            let r = unsafe {
                setter(
                    path.as_ptr(),
                    a.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            };
            checked(r as libc::c_long)
        })
    });
    r.map(|_| ()).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn dir() -> (tempfile::TempDir, std::fs::File) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("f"), b"x").expect("write");
        let fd = std::fs::File::open(d.path()).expect("open dir");
        (d, fd)
    }

    #[test]
    fn set_then_get_by_name_and_by_handle() {
        let (d, fd) = dir();
        let t = Target {
            dir: fd.as_fd(),
            name: Some(b"f"),
        };
        set(t, b"user.dfs-test", b"value", 0).expect("set");
        assert_eq!(get(t, b"user.dfs-test", &mut []).expect("size"), 5);
        let mut buf = [0u8; 16];
        let n = get(t, b"user.dfs-test", &mut buf).expect("get");
        assert_eq!(&buf[..n], b"value");
        let e = get(t, b"user.absent", &mut buf).expect_err("absent");
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA));

        let file = std::fs::File::open(d.path().join("f")).expect("open");
        let own = Target {
            dir: file.as_fd(),
            name: None,
        };
        let n = get(own, b"user.dfs-test", &mut buf).expect("get by handle");
        assert_eq!(&buf[..n], b"value");

        // dfs holds tier files by O_PATH handles.
        let path_fd = rustix::fs::open(
            d.path().join("f"),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
        )
        .expect("O_PATH open");
        let by_path = Target {
            dir: path_fd.as_fd(),
            name: None,
        };
        set(by_path, b"user.dfs-path", b"p", 0).expect("set by O_PATH handle");
        let n = get(by_path, b"user.dfs-path", &mut buf).expect("get by O_PATH handle");
        assert_eq!(&buf[..n], b"p");
    }

    #[test]
    fn the_proc_fallback_gives_the_same_answers() {
        let (_d, fd) = dir();
        let t = Target {
            dir: fd.as_fd(),
            name: Some(b"f"),
        };
        set(t, b"user.dfs-fallback", b"abc", 0).expect("set");
        let saved = NO_XATTRAT.swap(true, Ordering::Relaxed);
        let mut buf = [0u8; 8];
        let got = get(t, b"user.dfs-fallback", &mut buf).map(|n| buf[..n].to_vec());
        let missing = get(t, b"user.absent", &mut buf).map_err(|e| e.raw_os_error());
        NO_XATTRAT.store(saved, Ordering::Relaxed);
        assert_eq!(got.expect("get"), b"abc");
        assert_eq!(missing, Err(Some(libc::ENODATA)));
    }
}
