//! Helpers shared by tests/policies.rs and tests/plugins.rs (issue 3):
//! dfs.toml texts with `min_free`, filling small tmpfs tiers to an exact
//! amount of free space, the example configs with their paths rewritten,
//! building code with a nested cargo, and a guard for a mount made by a
//! program other than `dfs` (the static-policy example).
//!
//! Needs `mod common;` in the test crate's root.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::common::*;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// The repository root (the `dfs` package).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// configs
// ---------------------------------------------------------------------------

/// A dfs.toml for the harness's `Builder::config`: one `[[tier]]` per
/// (name, min_free) on `{tier0}`, `{tier1}`, ... and the given `[policy]` body.
pub fn tiers_config(tiers: &[(&str, Option<&str>)], policy: &str) -> String {
    let mut s = String::new();
    for (i, (name, min_free)) in tiers.iter().enumerate() {
        s += &format!("[[tier]]\nname = \"{name}\"\npath = \"{{tier{i}}}\"\n");
        if let Some(m) = min_free {
            s += &format!("min_free = \"{m}\"\n");
        }
        s += "\n";
    }
    s += &format!("[policy]\n{policy}\n");
    s
}

// ---------------------------------------------------------------------------
// free space
// ---------------------------------------------------------------------------

/// Bytes available on the filesystem of `p`, as dfs measures them
/// (f_bavail * f_frsize).
pub fn free_bytes(p: &Path) -> u64 {
    let c = cstr(p);
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) })
        .unwrap_or_else(|e| panic!("statvfs {}: {e}", p.display()));
    s.f_bavail * s.f_frsize
}

/// Size in bytes of the filesystem of `p` (f_blocks * f_frsize).
pub fn total_bytes(p: &Path) -> u64 {
    let c = cstr(p);
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) })
        .unwrap_or_else(|e| panic!("statvfs {}: {e}", p.display()));
    s.f_blocks * s.f_frsize
}

static FILLERS: AtomicUsize = AtomicUsize::new(0);

/// Writes `n` bytes to a new file `filler-N` directly in `dir` (a tier
/// root, bypassing dfs) and returns its path. Stops quietly at ENOSPC.
pub fn write_filler(dir: &Path, n: u64) -> PathBuf {
    let p = dir.join(format!(
        "filler-{}",
        FILLERS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = fs::File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    let chunk = vec![0x5au8; 256 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        match f.write_all(&chunk[..k]) {
            Ok(()) => left -= k as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("write {}: {e}", p.display()),
        }
    }
    p
}

/// Fills the filesystem of tier root `dir` until at most `target` bytes are
/// free (and not much less: tmpfs counts whole pages). Returns the file
/// written and the free bytes afterwards.
#[track_caller]
pub fn fill_to(dir: &Path, target: u64) -> (PathBuf, u64) {
    let free = free_bytes(dir);
    assert!(
        free > target,
        "{} has only {free} bytes free, cannot fill it to {target}",
        dir.display()
    );
    let p = write_filler(dir, free - target);
    let after = free_bytes(dir);
    assert!(
        after <= target && after + 64 * KIB >= target,
        "filling {} to {target} free bytes left {after}",
        dir.display()
    );
    (p, after)
}

/// Fills the filesystem of `dir` completely (until a write fails with ENOSPC).
#[track_caller]
pub fn fill_up(dir: &Path) -> PathBuf {
    let p = write_filler(dir, u64::MAX / 2);
    assert_eq!(free_bytes(dir), 0, "{} is not full", dir.display());
    p
}

// ---------------------------------------------------------------------------
// syscalls through the mount
// ---------------------------------------------------------------------------

/// Creates an empty file (O_CREAT|O_EXCL); Ok or the errno.
pub fn create_new(p: &Path) -> Result<(), i32> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map(|_| ())
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn mkdir(p: &Path) -> Result<(), i32> {
    fs::create_dir(p).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn symlink(target: &str, p: &Path) -> Result<(), i32> {
    std::os::unix::fs::symlink(target, p).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn mkfifo(p: &Path) -> Result<(), i32> {
    mknod(p, libc::S_IFIFO | 0o644, 0).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// The one tier holding `rel`; panics (naming all holders) otherwise.
#[track_caller]
pub fn tier_of(m: &Mount, rel: &str) -> usize {
    let v = tiers_holding(m, rel);
    assert_eq!(v.len(), 1, "{rel} is on tiers {v:?}, expected exactly one");
    v[0]
}

// ---------------------------------------------------------------------------
// examples/*.toml
// ---------------------------------------------------------------------------

/// The example configs shipped in examples/, by file name.
pub fn example_files() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo().join("examples"))
        .expect("read examples/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    v.sort();
    v
}

/// examples/`name` with every tier path replaced by the harness's `{tierN}`
/// placeholder, `mountpoint` by `{mnt}` and, when given, the plugin path by
/// `plugin`. Everything else (comments, min_free, rules, options) is kept.
/// Returns the text and the tier names in order.
pub fn example_config(name: &str, plugin: Option<&Path>) -> (String, Vec<String>) {
    let file = repo().join("examples").join(name);
    let mut text =
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", file.display()));
    let replace_once = |text: &mut String, key: &str, old: &str, new: &str| {
        let pat = format!("{key} = \"{old}\"");
        assert_eq!(
            text.matches(&pat).count(),
            1,
            "{name}: expected `{pat}` exactly once"
        );
        *text = text.replace(&pat, &format!("{key} = \"{new}\""));
    };
    let mut names = Vec::new();
    let tiers = table
        .get("tier")
        .and_then(|t| t.as_array())
        .unwrap_or_else(|| panic!("{name} has no [[tier]]"));
    for (i, t) in tiers.iter().enumerate() {
        let path = t["path"].as_str().expect("tier path");
        names.push(t["name"].as_str().expect("tier name").to_string());
        replace_once(&mut text, "path", path, &format!("{{tier{i}}}"));
    }
    if let Some(mp) = table.get("mountpoint").and_then(|m| m.as_str()) {
        replace_once(&mut text, "mountpoint", mp, "{mnt}");
    }
    let policy_path = table
        .get("policy")
        .and_then(|p| p.get("path"))
        .and_then(|p| p.as_str());
    match (policy_path, plugin) {
        (Some(old), Some(new)) => replace_once(&mut text, "path", old, new.to_str().unwrap()),
        (None, None) => {}
        (Some(_), None) => panic!("{name} loads a plugin: give its path"),
        (None, Some(_)) => panic!("{name} loads no plugin"),
    }
    (text, names)
}

/// `dfs check --config FILE [extra...]`: (success, exit code, stdout, stderr).
pub fn dfs_check(config: &Path) -> (bool, Option<i32>, String, String) {
    let args: Vec<OsString> = vec!["check".into(), "--config".into(), config.into()];
    let (st, out, err) = run_dfs(&args);
    (st.success(), st.code(), out, err)
}

// ---------------------------------------------------------------------------
// building with a nested cargo
// ---------------------------------------------------------------------------

/// A target directory of our own: the `cargo test` that runs us holds the
/// lock of target/debug, so a nested build there would wait forever.
pub fn nested_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-tests")
}

/// Runs env!("CARGO") with `args` in `cwd`, using `nested_target_dir()`.
pub fn cargo_build(cwd: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .arg("--target-dir")
        .arg(nested_target_dir())
        .current_dir(cwd)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", env!("CARGO")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo {}` in {} failed ({}):\n{}",
            args.join(" "),
            cwd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Writes `text` to `p` unless it already holds exactly that (so cargo's
/// fingerprints, and the build, stay valid across test runs).
pub fn write_if_changed(p: &Path, text: &str) {
    if fs::read_to_string(p).ok().as_deref() == Some(text) {
        return;
    }
    if let Some(d) = p.parent() {
        mkdirs(d);
    }
    write(p, text);
}

/// Copies `lib` into a fresh root-owned 0755 directory as `name` (mode
/// 0644), the way an administrator installs a plugin. Returns the directory
/// guard and the installed path.
pub fn install_plugin(lib: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("dfs-plugin-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).unwrap();
    let dst = dir.path().join(name);
    fs::copy(lib, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&dst, Some(0), Some(0)).unwrap();
    (dir, dst)
}

// ---------------------------------------------------------------------------
// a mount made by another program
// ---------------------------------------------------------------------------

/// A process that mounts a dfs union on `mnt` (e.g. the static-policy
/// example). Drop stops it (SIGTERM, then SIGKILL) and removes any mount
/// left on `mnt`, also when the test panics.
pub struct Daemon {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` with stdout and stderr to `log` and waits until `mnt` is
    /// a `fuse.dfs` mount. Panics with the log if it exits or times out.
    pub fn start(mut cmd: Command, mnt: &Path, log: &Path) -> Daemon {
        let f = fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut d = Daemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if mount_at(mnt).is_some_and(|m| m.fstype == "fuse.dfs") {
                return d;
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                panic!(
                    "{cmd:?} exited ({st}) before mounting {}:\n{}",
                    mnt.display(),
                    d.log()
                );
            }
            if Instant::now() > deadline {
                let log = d.log();
                drop(d);
                panic!("{cmd:?} did not mount {} within 15s:\n{log}", mnt.display());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait up to 5 s; returns the exit status and whether the
    /// mount was gone. Cleans up whatever happened.
    pub fn stop(&mut self) -> (Option<ExitStatus>, bool) {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(st)) = child.try_wait() {
                    status = Some(st);
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let gone = !is_mounted(&self.mnt);
        if !gone {
            force_unmount(&self.mnt);
        }
        (status, gone)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asserts that nothing at all is mounted on `mnt`.
#[track_caller]
pub fn assert_not_mounted(mnt: &Path) {
    if let Some(m) = mount_at(mnt) {
        force_unmount(mnt);
        panic!("{} is mounted ({m:?})", mnt.display());
    }
}

/// Reads a file's mode bits.
pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// io::Error -> errno, for assertions.
pub fn os_errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}
