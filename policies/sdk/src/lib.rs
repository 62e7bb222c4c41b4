//! The SDK for dfs placement-policy plugins.
//!
//! A plugin is a `cdylib` that implements [`PolicyPlugin`] and exports it
//! with [`export_policy!`]. dfs loads it with `kind = "plugin"` in dfs.toml
//! and asks it, for every new name, which tier should hold it.
//!
//! The boundary between dfs and a plugin is a small versioned C ABI (the
//! `Raw*` types): one entry symbol, [`ENTRY_SYMBOL`], returns a
//! [`RawPolicyApi`] table whose `abi_version` dfs checks before anything else.
//! Only `repr(C)` data crosses it, so a plugin built with another Rust
//! compiler works, and a panic inside the plugin is caught on the plugin's
//! side and becomes an error for that one create.
//!
//! ```ignore
//! use dfs_policy_sdk::{export_policy, PolicyPlugin, Request, Tier};
//!
//! struct Newest;
//! impl PolicyPlugin for Newest {
//!     fn new(_options: &str) -> Result<Self, String> { Ok(Newest) }
//!     fn choose(&self, _req: &Request<'_>, tiers: &[Tier<'_>]) -> Result<usize, i32> {
//!         tiers.first().map(|t| t.index).ok_or(libc_enospc())
//!     }
//! }
//! export_policy!(Newest, "newest");
//! # fn libc_enospc() -> i32 { 28 }
//! ```

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Version of the C ABI described by the `Raw*` types. dfs refuses a plugin
/// whose table carries another number.
pub const ABI_VERSION: u32 = 1;

/// The symbol every plugin exports (NUL-terminated, for dlsym).
pub const ENTRY_SYMBOL: &[u8] = b"dfs_policy_entry_v1\0";

/// errno values a policy commonly returns.
pub mod errno {
    /// No tier can take the name.
    pub const ENOSPC: i32 = 28;
    /// The policy failed in an unexpected way.
    pub const EIO: i32 = 5;
    /// The policy refuses the name.
    pub const EPERM: i32 = 1;
}

/// A byte slice across the ABI.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawBytes {
    /// Start of the bytes (may dangle when `len` is 0).
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl RawBytes {
    /// Borrows a slice for the duration of a call.
    pub fn from_slice(s: &[u8]) -> Self {
        RawBytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            &[]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// Kind codes of [`RawRequest::kind`].
pub mod kind {
    /// A regular file.
    pub const FILE: u32 = 0;
    /// A directory.
    pub const DIRECTORY: u32 = 1;
    /// A symbolic link.
    pub const SYMLINK: u32 = 2;
    /// A fifo, socket or device.
    pub const SPECIAL: u32 = 3;
}

/// The name being created, across the ABI.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawRequest {
    /// Path inside the mount, relative, no leading '/'; bytes, not UTF-8.
    pub path: RawBytes,
    /// One of the [`kind`] codes.
    pub kind: u32,
    /// The caller's uid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
    /// The requested mode.
    pub mode: u32,
}

/// One tier that may receive the name, across the ABI.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawTier {
    /// Index to return to choose this tier.
    pub index: u32,
    /// Tier name (UTF-8).
    pub name: RawBytes,
    /// Tier root path (bytes).
    pub root: RawBytes,
    /// 1 when the new name's parent directory exists on this tier.
    pub parent_exists: u8,
    /// Bytes available.
    pub free_bytes: u64,
    /// Filesystem size in bytes.
    pub total_bytes: u64,
    /// Inodes available.
    pub free_inodes: u64,
    /// Total inodes.
    pub total_inodes: u64,
}

/// The function table a plugin's entry symbol returns.
#[repr(C)]
pub struct RawPolicyApi {
    /// Must equal the host's [`ABI_VERSION`].
    pub abi_version: u32,
    /// The policy's name, NUL-terminated, static.
    pub name: *const c_char,
    /// Builds the policy from its options (the `[policy.options]` table as
    /// TOML text). Returns null on failure after writing a message
    /// (truncated, NUL-terminated) into `err`.
    pub create:
        unsafe extern "C" fn(options: RawBytes, err: *mut u8, err_len: usize) -> *mut c_void,
    /// Picks a tier: writes its index to `out` and returns 0, or returns an
    /// errno for the create to fail with.
    pub choose: unsafe extern "C" fn(
        state: *mut c_void,
        req: *const RawRequest,
        tiers: *const RawTier,
        ntiers: usize,
        out: *mut u32,
    ) -> i32,
    /// Frees what `create` returned.
    pub destroy: unsafe extern "C" fn(state: *mut c_void),
}

// SAFETY: the table is immutable static data; `name` points to a static str.
unsafe impl Sync for RawPolicyApi {}

/// Signature of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const RawPolicyApi;

/// What is being created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (empty when the policy is asked).
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A fifo, socket or device node.
    Special,
}

/// The name being created, as a plugin sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Path inside the mount, relative, no leading '/'.
    pub path: &'a Path,
    /// What is being created.
    pub kind: Kind,
    /// The caller's uid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
    /// The requested mode bits.
    pub mode: u32,
}

/// A tier that may receive the name. Tiers below their `min_free` are not
/// offered at all.
#[derive(Debug, Clone, Copy)]
pub struct Tier<'a> {
    /// Return this to choose the tier.
    pub index: usize,
    /// Tier name from dfs.toml.
    pub name: &'a str,
    /// Tier root.
    pub root: &'a Path,
    /// Whether the new name's parent directory exists on this tier.
    pub parent_exists: bool,
    /// Bytes available.
    pub free_bytes: u64,
    /// Filesystem size in bytes.
    pub total_bytes: u64,
    /// Inodes available.
    pub free_inodes: u64,
    /// Total inodes.
    pub total_inodes: u64,
}

/// A placement policy implemented in a plugin.
///
/// Called from several threads at once: keep shared state behind atomics or
/// locks.
pub trait PolicyPlugin: Send + Sync + Sized + 'static {
    /// Builds the policy from the `[policy.options]` table (TOML text; empty
    /// when the table is absent). An `Err` stops the mount with the message.
    fn new(options: &str) -> Result<Self, String>;
    /// Picks the tier for a new name: an index from `tiers`, or an errno.
    fn choose(&self, req: &Request<'_>, tiers: &[Tier<'_>]) -> Result<usize, i32>;
}

fn write_err(err: *mut u8, err_len: usize, msg: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let n = msg.len().min(err_len - 1);
    // SAFETY: the host hands a buffer of err_len writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
        *err.add(n) = 0;
    }
}

fn path_of(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Implementation detail of [`export_policy!`].
///
/// # Safety
/// Called by dfs through the ABI with a valid options slice and buffer.
#[doc(hidden)]
pub unsafe extern "C" fn __create<P: PolicyPlugin>(
    options: RawBytes,
    err: *mut u8,
    err_len: usize,
) -> *mut c_void {
    // SAFETY: the host keeps the options alive during the call.
    let opts = unsafe { options.as_slice() };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let text = std::str::from_utf8(opts).map_err(|e| format!("options are not UTF-8: {e}"))?;
        P::new(text)
    }));
    match r {
        Ok(Ok(p)) => Box::into_raw(Box::new(p)) as *mut c_void,
        Ok(Err(msg)) => {
            write_err(err, err_len, &msg);
            std::ptr::null_mut()
        }
        Err(_) => {
            write_err(
                err,
                err_len,
                "the plugin panicked while reading its options",
            );
            std::ptr::null_mut()
        }
    }
}

/// Implementation detail of [`export_policy!`].
///
/// # Safety
/// `state` must come from `__create::<P>`; the other pointers must be valid
/// for the call.
#[doc(hidden)]
pub unsafe extern "C" fn __choose<P: PolicyPlugin>(
    state: *mut c_void,
    req: *const RawRequest,
    tiers: *const RawTier,
    ntiers: usize,
    out: *mut u32,
) -> i32 {
    if state.is_null() || req.is_null() || out.is_null() || (tiers.is_null() && ntiers > 0) {
        return errno::EIO;
    }
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: pointers checked above; the host keeps them alive.
        let p = unsafe { &*(state as *const P) };
        let raw = unsafe { &*req };
        let raw_tiers: &[RawTier] = if ntiers == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(tiers, ntiers) }
        };
        let tiers: Vec<Tier<'_>> = raw_tiers
            .iter()
            .map(|t| Tier {
                index: t.index as usize,
                name: std::str::from_utf8(unsafe { t.name.as_slice() }).unwrap_or(""),
                root: path_of(unsafe { t.root.as_slice() }),
                parent_exists: t.parent_exists != 0,
                free_bytes: t.free_bytes,
                total_bytes: t.total_bytes,
                free_inodes: t.free_inodes,
                total_inodes: t.total_inodes,
            })
            .collect();
        let request = Request {
            path: path_of(unsafe { raw.path.as_slice() }),
            kind: match raw.kind {
                kind::DIRECTORY => Kind::Directory,
                kind::SYMLINK => Kind::Symlink,
                kind::SPECIAL => Kind::Special,
                _ => Kind::File,
            },
            uid: raw.uid,
            gid: raw.gid,
            mode: raw.mode,
        };
        p.choose(&request, &tiers)
    }));
    match r {
        Ok(Ok(i)) => match u32::try_from(i) {
            Ok(i) => {
                // SAFETY: checked non-null above.
                unsafe { *out = i };
                0
            }
            Err(_) => errno::EIO,
        },
        Ok(Err(e)) if e > 0 => e,
        Ok(Err(_)) | Err(_) => errno::EIO,
    }
}

/// Implementation detail of [`export_policy!`].
///
/// # Safety
/// `state` must come from `__create::<P>` and not be used afterwards.
#[doc(hidden)]
pub unsafe extern "C" fn __destroy<P: PolicyPlugin>(state: *mut c_void) {
    if !state.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: created by Box::into_raw in __create::<P>.
            drop(unsafe { Box::from_raw(state as *mut P) });
        }));
    }
}

/// Exports a [`PolicyPlugin`] implementation as a dfs plugin:
/// `export_policy!(MyPolicy, "my-policy");` in a `cdylib` crate.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty, $name:literal) => {
        /// The dfs plugin entry point.
        #[unsafe(no_mangle)]
        pub extern "C" fn dfs_policy_entry_v1() -> *const $crate::RawPolicyApi {
            static API: $crate::RawPolicyApi = $crate::RawPolicyApi {
                abi_version: $crate::ABI_VERSION,
                name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
                create: $crate::__create::<$ty>,
                choose: $crate::__choose::<$ty>,
                destroy: $crate::__destroy::<$ty>,
            };
            &API
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Second;
    impl PolicyPlugin for Second {
        fn new(options: &str) -> Result<Self, String> {
            if options.contains("bad") {
                Err("bad options".into())
            } else {
                Ok(Second)
            }
        }
        fn choose(&self, req: &Request<'_>, tiers: &[Tier<'_>]) -> Result<usize, i32> {
            if req.path == Path::new("panic") {
                panic!("boom");
            }
            tiers.get(1).map(|t| t.index).ok_or(errno::ENOSPC)
        }
    }
    export_policy!(Second, "second");

    fn tier(i: u32) -> RawTier {
        RawTier {
            index: i,
            name: RawBytes::from_slice(b"t"),
            root: RawBytes::from_slice(b"/"),
            parent_exists: 1,
            free_bytes: 1,
            total_bytes: 1,
            free_inodes: 1,
            total_inodes: 1,
        }
    }

    #[test]
    fn round_trip_through_the_abi() {
        let api = unsafe { &*dfs_policy_entry_v1() };
        assert_eq!(api.abi_version, ABI_VERSION);
        let mut err = [0u8; 64];
        let bad =
            unsafe { (api.create)(RawBytes::from_slice(b"bad"), err.as_mut_ptr(), err.len()) };
        assert!(bad.is_null());
        assert!(err.starts_with(b"bad options\0"));
        let st = unsafe { (api.create)(RawBytes::from_slice(b""), err.as_mut_ptr(), err.len()) };
        assert!(!st.is_null());
        let tiers = [tier(0), tier(1)];
        let mut out = 99;
        let req = RawRequest {
            path: RawBytes::from_slice(b"a/b"),
            kind: kind::FILE,
            uid: 0,
            gid: 0,
            mode: 0o644,
        };
        assert_eq!(
            unsafe { (api.choose)(st, &req, tiers.as_ptr(), 2, &mut out) },
            0
        );
        assert_eq!(out, 1);
        assert_eq!(
            unsafe { (api.choose)(st, &req, tiers.as_ptr(), 1, &mut out) },
            errno::ENOSPC
        );
        let panicking = RawRequest {
            path: RawBytes::from_slice(b"panic"),
            ..req
        };
        assert_eq!(
            unsafe { (api.choose)(st, &panicking, tiers.as_ptr(), 2, &mut out) },
            errno::EIO
        );
        unsafe { (api.destroy)(st) };
    }
}
