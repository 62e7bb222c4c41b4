//! `plugin`: a policy loaded from a shared library built with the
//! `dfs-policy-sdk` crate.
//!
//! The library is checked before it is loaded (it runs inside a daemon that
//! is usually root), its ABI version is checked before it is called, and a
//! failing or panicking plugin fails one create with EIO, never the mount.

use std::ffi::{CStr, c_void};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use dfs_policy_sdk::{
    ABI_VERSION, ENTRY_SYMBOL, EntryFn, RawBytes, RawPolicyApi, RawRequest, RawTier, kind,
};

use super::{CreateRequest, NodeKind, Policy, TierView};
use crate::error::{Error, Result};

/// A loaded plugin and the state its `create` returned.
pub struct PluginPolicy {
    api: *const RawPolicyApi,
    state: *mut c_void,
    name: String,
    path: PathBuf,
    // Declared last: dropped after `state` is destroyed through `api`.
    _lib: libloading::Library,
}

// SAFETY: the SDK requires plugin types to be Send + Sync; `api` points to
// immutable static data inside the library, which lives as long as `self`.
unsafe impl Send for PluginPolicy {}
// SAFETY: as above.
unsafe impl Sync for PluginPolicy {}

fn load_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("policy plugin {}: {msg}", path.display()))
}

/// Refuses a library that someone other than its owner or root could have
/// replaced: the file, and the directory holding it.
fn check_permissions(path: &Path) -> Result<()> {
    let md = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => load_err(path, "no such file"),
        _ => load_err(path, e),
    })?;
    if !md.is_file() {
        return Err(load_err(path, "is not a regular file"));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    for (what, p) in [("the file", path), ("its directory", dir)] {
        let m = std::fs::metadata(p).map_err(|e| load_err(path, e))?;
        let mode = m.mode();
        let group_writable = mode & 0o020 != 0 && m.gid() != 0;
        let other_writable = mode & 0o002 != 0;
        let sticky_dir = m.is_dir() && mode & 0o1000 != 0;
        if other_writable && !sticky_dir || group_writable {
            return Err(load_err(
                path,
                format!(
                    "{what} ({}) is writable by users other than its owner and root \
                     (mode {:o}); refusing to load code anyone could replace",
                    p.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

impl PluginPolicy {
    /// Checks, loads and initialises the plugin at `path` with `options`
    /// (the `[policy.options]` table, as TOML text).
    pub fn load(path: &Path, options: &str) -> Result<Self> {
        // Check and load the file itself, not a symlink that could be
        // pointed elsewhere: every directory on the way is resolved first.
        let real = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => load_err(path, "no such file"),
            _ => load_err(path, e),
        })?;
        check_permissions(&real).map_err(|e| match e {
            Error::Invalid(msg) if real != path => Error::Invalid(msg.replacen(
                &format!("policy plugin {}", real.display()),
                &format!(
                    "policy plugin {} (which is {})",
                    path.display(),
                    real.display()
                ),
                1,
            )),
            e => e,
        })?;
        let path = real.as_path();
        // SAFETY: loading a library runs its initialisers; the file has been
        // checked to be controlled by its owner or root, as for any code the
        // administrator configures.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            load_err(path, format!("is not a loadable shared library: {detail}"))
        })?;
        // SAFETY: the symbol's type is the SDK's documented entry signature.
        let entry: EntryFn = unsafe {
            *lib.get::<EntryFn>(ENTRY_SYMBOL).map_err(|_| {
                load_err(
                    path,
                    "has no `dfs_policy_entry_v1` symbol: not a dfs policy plugin \
                     (build it with dfs-policy-sdk's export_policy!)",
                )
            })?
        };
        // SAFETY: calling the plugin's entry point, which takes no arguments.
        let api = unsafe { entry() };
        if api.is_null() {
            return Err(load_err(path, "its entry point returned no function table"));
        }
        // SAFETY: non-null, and points to the plugin's static table.
        let table = unsafe { &*api };
        if table.abi_version != ABI_VERSION {
            return Err(load_err(
                path,
                format!(
                    "was built for plugin ABI version {}, but this dfs speaks version {}; \
                     rebuild it against the matching dfs-policy-sdk",
                    table.abi_version, ABI_VERSION
                ),
            ));
        }
        let name = if table.name.is_null() {
            "plugin".to_string()
        } else {
            // SAFETY: the SDK stores a static NUL-terminated string.
            unsafe { CStr::from_ptr(table.name) }
                .to_string_lossy()
                .into_owned()
        };
        let mut err = vec![0u8; 1024];
        // SAFETY: options outlive the call; err is a writable buffer.
        let state = unsafe {
            (table.create)(
                RawBytes::from_slice(options.as_bytes()),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if state.is_null() {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            let msg = String::from_utf8_lossy(&err[..end]);
            return Err(load_err(
                path,
                format!("plugin `{name}` rejected its options: {msg}"),
            ));
        }
        log::info!("loaded policy plugin `{name}` from {}", path.display());
        Ok(PluginPolicy {
            api,
            state,
            name,
            path: path.to_path_buf(),
            _lib: lib,
        })
    }
}

impl Drop for PluginPolicy {
    fn drop(&mut self) {
        // SAFETY: state came from this table's create and is destroyed once.
        unsafe { ((*self.api).destroy)(self.state) };
    }
}

impl Policy for PluginPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn choose(
        &self,
        req: &CreateRequest<'_>,
        tiers: &[TierView<'_>],
    ) -> std::result::Result<usize, i32> {
        let raw_tiers: Vec<RawTier> = tiers
            .iter()
            .map(|t| {
                let s = t.space();
                RawTier {
                    index: t.index as u32,
                    name: RawBytes::from_slice(t.name.as_bytes()),
                    root: RawBytes::from_slice(t.root.as_os_str().as_bytes()),
                    parent_exists: u8::from(t.parent_exists),
                    free_bytes: s.free_bytes,
                    total_bytes: s.total_bytes,
                    free_inodes: s.free_inodes,
                    total_inodes: s.total_inodes,
                }
            })
            .collect();
        let raw = RawRequest {
            path: RawBytes::from_slice(req.path.as_os_str().as_bytes()),
            kind: match req.kind {
                NodeKind::File => kind::FILE,
                NodeKind::Directory => kind::DIRECTORY,
                NodeKind::Symlink => kind::SYMLINK,
                NodeKind::Special => kind::SPECIAL,
            },
            uid: req.uid,
            gid: req.gid,
            mode: req.mode,
        };
        let mut out: u32 = u32::MAX;
        // SAFETY: all pointers are valid for the call; state is live.
        let rc = unsafe {
            ((*self.api).choose)(
                self.state,
                &raw,
                raw_tiers.as_ptr(),
                raw_tiers.len(),
                &mut out,
            )
        };
        if rc != 0 {
            if rc == libc::EIO {
                log::error!(
                    "policy plugin `{}` ({}) failed for {:?}",
                    self.name,
                    self.path.display(),
                    req.path
                );
            }
            return Err(rc);
        }
        Ok(out as usize)
    }
}
