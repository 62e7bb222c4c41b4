//! Test harness for integration tests on real dfs mounts.
//!
//! Every test gets its own temporary directory holding the tier directories,
//! the mount point, the generated dfs.toml and the daemon's stderr log, so tests
//! can run in parallel threads. `Mount` unmounts in `Drop`, also on panic:
//! SIGTERM, up to 5 s grace, then SIGKILL, then `fusermount3 -u -z` and
//! `umount -l` if the mount is still there.
//!
//! Helpers that change credentials (`as_user`) run in a forked child that only
//! makes raw syscalls, so the multithreaded test process is never affected.

#![allow(dead_code)]

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const DFS: &str = env!("CARGO_BIN_EXE_dfs");

/// Seconds after which a still-mounted test's daemon is SIGKILLed, so that a
/// hung FUSE request turns into ENOTCONN (a failure) instead of a hung suite.
const WATCHDOG_SECS: u64 = 120;
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the tests give a change made directly on a tier to show through.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_millis(2500);

pub const NOBODY: u32 = 65534;
pub const NOGROUP: u32 = 65534;

// ---------------------------------------------------------------------------
// mountinfo
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct MountInfo {
    pub dev: String,
    pub mount_point: PathBuf,
    pub mount_options: String,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0');
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The kernel's switch for FUSE over io_uring.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Turns the kernel's FUSE io_uring support on (once per test binary) so
/// that mounts with the default `uring=auto` use io_uring, as a system set up
/// for dfs would; tests of the /dev/fuse transport mount with `uring=off`.
/// Returns whether the kernel has it on: without it (a kernel before 6.14,
/// or one built without it) every mount uses /dev/fuse.
pub fn kernel_uring() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        if fs::read_to_string(ENABLE_URING).is_ok_and(|v| v.trim() != "Y") {
            let _ = fs::write(ENABLE_URING, "Y");
        }
        // io_uring itself must be allowed (root here: `1` allows it too).
        let allowed = fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map_or(true, |v| v.trim() != "2");
        allowed && fs::read_to_string(ENABLE_URING).is_ok_and(|v| v.trim() == "Y")
    })
}

/// What dfs says at startup about its transport, given the mount's `-o`
/// arguments.
pub fn expected_transport(args: &[&str]) -> &'static str {
    if kernel_uring() && !args.iter().any(|a| a.contains("uring=off")) {
        "transport: io_uring"
    } else {
        "transport: /dev/fuse"
    }
}

pub fn mountinfo() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut v = Vec::new();
    for line in text.lines() {
        let (left, right) = match line.split_once(" - ") {
            Some(x) => x,
            None => continue,
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        v.push(MountInfo {
            dev: l[2].to_string(),
            mount_point: unescape_mountinfo(l[4]),
            mount_options: l[5].to_string(),
            fstype: r[0].to_string(),
            source: r[1].to_string(),
            super_options: r[2].to_string(),
        });
    }
    v
}

/// The topmost mount on `path`, if any.
pub fn mount_at(path: &Path) -> Option<MountInfo> {
    mountinfo().into_iter().rfind(|m| m.mount_point == path)
}

pub fn fuse_mount_at(path: &Path) -> Option<MountInfo> {
    mount_at(path).filter(|m| m.fstype == "fuse" || m.fstype.starts_with("fuse."))
}

pub fn is_mounted(path: &Path) -> bool {
    mount_at(path).is_some()
}

/// Remove every mount stacked on `path` (lazy), ignoring errors.
pub fn force_unmount(path: &Path) {
    for _ in 0..8 {
        let Some(m) = mount_at(path) else { return };
        if m.fstype.starts_with("fuse") {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !is_mounted(path) {
                return;
            }
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// Mount
// ---------------------------------------------------------------------------

/// Fills the tier directories before dfs starts.
type SetupFn = Box<dyn FnOnce(&[PathBuf])>;

/// How the tiers of a mount are laid out and how dfs is started.
pub struct Builder {
    ntiers: usize,
    /// per tier: Some(size) to put a fresh tmpfs of that size on the tier dir.
    tmpfs: Vec<Option<String>>,
    /// Some(body of the [policy] table): mount through a generated dfs.toml.
    /// None: the preset command line (`dfs mount T0 T1 MNT`).
    policy: Option<String>,
    config_text: Option<String>,
    mount_options: Option<Vec<String>>,
    extra_args: Vec<String>,
    names: Option<Vec<String>>,
    setup: Option<SetupFn>,
    env: Vec<(String, String)>,
    no_mnt_arg: bool,
    external: Vec<Option<PathBuf>>,
}

impl Builder {
    pub fn tiers(mut self, n: usize) -> Self {
        self.ntiers = n;
        self.tmpfs.resize(n, None);
        self
    }
    /// Put tier `i` on its own tmpfs of the given size (e.g. "64m"), so the
    /// tiers are on different filesystems.
    pub fn tmpfs(mut self, i: usize, size: &str) -> Self {
        if self.tmpfs.len() <= i {
            self.tmpfs.resize(i + 1, None);
        }
        self.tmpfs[i] = Some(size.to_string());
        self
    }
    /// Mount through a generated dfs.toml whose `[policy]` table has this body,
    /// e.g. `kind = "parent-dir"`.
    pub fn policy(mut self, body: &str) -> Self {
        self.policy = Some(body.to_string());
        self
    }
    /// Tier names for a generated dfs.toml (default t0, t1, ...).
    pub fn names(mut self, names: &[&str]) -> Self {
        self.names = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Mount through this dfs.toml text; `{tier0}`, `{tier1}`, ..., `{mnt}` and
    /// `{root}` are replaced by the paths of the test's directories.
    pub fn config(mut self, text: &str) -> Self {
        self.config_text = Some(text.to_string());
        self
    }
    /// `[mount] options = [...]` for a generated dfs.toml.
    pub fn mount_options(mut self, opts: &[&str]) -> Self {
        self.mount_options = Some(opts.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Extra command-line arguments after the positional ones (e.g. `-o`, `noallow_other`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|s| s.to_string()));
        self
    }
    /// Runs before dfs starts, with the tier directories (populate them here).
    pub fn setup(mut self, f: impl FnOnce(&[PathBuf]) + 'static) -> Self {
        self.setup = Some(Box::new(f));
        self
    }

    /// Use this existing directory as tier `i` (not created, not removed).
    pub fn external_tier(mut self, i: usize, path: &Path) -> Self {
        if self.external.len() <= i {
            self.external.resize(i + 1, None);
        }
        self.external[i] = Some(path.to_path_buf());
        self
    }
    /// An environment variable for dfs (e.g. RUST_LOG).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    /// With a config: do not pass MOUNTPOINT on the command line (the config
    /// must name it, e.g. `mountpoint = "{mnt}"`).
    pub fn no_mnt_arg(mut self) -> Self {
        self.no_mnt_arg = true;
        self
    }

    pub fn mount(self) -> Mount {
        let mut m = self.prepare();
        m.start();
        m
    }

    /// Creates the directories (and tmpfs mounts) without starting dfs.
    pub fn prepare(mut self) -> Mount {
        kernel_uring();
        let dir = tempfile::Builder::new()
            .prefix("dfs-it-")
            .tempdir()
            .expect("tempdir");
        let root = fs::canonicalize(dir.path()).unwrap();
        // Other users (permission tests) must be able to reach the mount point.
        chmod(&root, 0o755);
        // Count the tiers a config text refers to.
        if let Some(text) = &self.config_text {
            let mut n = 0;
            while text.contains(&format!("{{tier{n}}}")) {
                n += 1;
            }
            if n > self.ntiers {
                self.ntiers = n;
            }
        }
        self.tmpfs.resize(self.ntiers.max(self.tmpfs.len()), None);
        let mut tiers = Vec::new();
        let mut extra_mounts = Vec::new();
        for i in 0..self.ntiers {
            if let Some(Some(ext)) = self.external.get(i) {
                tiers.push(ext.clone());
                continue;
            }
            let t = root.join(format!("t{i}"));
            fs::create_dir(&t).unwrap();
            if let Some(size) = &self.tmpfs[i] {
                let st = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
                    .arg(format!("dfs-test-t{i}"))
                    .arg(&t)
                    .status()
                    .expect("run mount");
                assert!(st.success(), "mounting a tmpfs on {} failed", t.display());
                extra_mounts.push(t.clone());
            }
            tiers.push(t);
        }
        let mnt = root.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let log = root.join("dfs.stderr");
        let watchdog = Arc::new(Mutex::new(WatchState {
            pid: None,
            done: false,
        }));

        let mut args: Vec<OsString> = vec!["mount".into()];
        let mut config = None;
        if let Some(text) = &self.config_text {
            let mut t = text.clone();
            for (i, p) in tiers.iter().enumerate() {
                t = t.replace(&format!("{{tier{i}}}"), p.to_str().unwrap());
            }
            t = t.replace("{mnt}", mnt.to_str().unwrap());
            t = t.replace("{root}", root.to_str().unwrap());
            config = Some(t);
        } else if let Some(policy) = &self.policy {
            config = Some(generate_config(
                &tiers,
                self.names.as_deref(),
                policy,
                self.mount_options.as_deref(),
            ));
        }
        let config_path = root.join("dfs.toml");
        if let Some(text) = &config {
            fs::write(&config_path, text).unwrap();
            args.push("--config".into());
            args.push(config_path.clone().into());
            if !self.no_mnt_arg {
                args.push(mnt.clone().into());
            }
        } else {
            assert_eq!(self.ntiers, 2, "the preset has two tiers");
            args.push(tiers[0].clone().into());
            args.push(tiers[1].clone().into());
            args.push(mnt.clone().into());
        }
        for a in &self.extra_args {
            args.push(a.into());
        }
        if let Some(f) = self.setup.take() {
            f(&tiers);
        }
        Mount {
            env: std::mem::take(&mut self.env),
            tiers,
            mnt,
            root,
            log,
            args,
            config: config.map(|_| config_path),
            child: None,
            watchdog,
            extra_mounts,
            _dir: dir,
        }
    }
}

fn generate_config(
    tiers: &[PathBuf],
    names: Option<&[String]>,
    policy: &str,
    opts: Option<&[String]>,
) -> String {
    let mut s = String::new();
    for (i, t) in tiers.iter().enumerate() {
        let name = names
            .and_then(|n| n.get(i).cloned())
            .unwrap_or_else(|| format!("t{i}"));
        s.push_str(&format!(
            "[[tier]]\nname = \"{name}\"\npath = \"{}\"\n\n",
            t.display()
        ));
    }
    s.push_str(&format!("[policy]\n{policy}\n"));
    if let Some(o) = opts {
        let list: Vec<String> = o.iter().map(|x| format!("\"{x}\"")).collect();
        s.push_str(&format!("\n[mount]\noptions = [{}]\n", list.join(", ")));
    }
    s
}

struct WatchState {
    pid: Option<i32>,
    done: bool,
}

pub struct Mount {
    env: Vec<(String, String)>,
    tiers: Vec<PathBuf>,
    mnt: PathBuf,
    root: PathBuf,
    log: PathBuf,
    args: Vec<OsString>,
    config: Option<PathBuf>,
    child: Option<Child>,
    watchdog: Arc<Mutex<WatchState>>,
    extra_mounts: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Mount {
    pub fn builder() -> Builder {
        Builder {
            ntiers: 2,
            tmpfs: vec![None, None],
            policy: None,
            config_text: None,
            mount_options: None,
            extra_args: Vec::new(),
            names: None,
            setup: None,
            env: Vec::new(),
            no_mnt_arg: false,
            external: Vec::new(),
        }
    }

    /// `dfs mount T0 T1 MNT` (the stock two-tier preset).
    pub fn preset() -> Mount {
        Mount::builder().mount()
    }

    /// `dfs mount --config dfs.toml MNT` with this text (see `Builder::config`).
    pub fn with_config(toml_text: &str) -> Mount {
        Mount::builder().config(toml_text).mount()
    }

    /// n tiers t0..t{n-1} through a generated dfs.toml with this policy body
    /// (e.g. `kind = "parent-dir"`).
    pub fn with_tiers(n: usize, policy: &str) -> Mount {
        Mount::builder().tiers(n).policy(policy).mount()
    }

    pub fn tier(&self, i: usize) -> PathBuf {
        self.tiers[i].clone()
    }
    pub fn tiers(&self) -> &[PathBuf] {
        &self.tiers
    }
    pub fn mnt(&self) -> PathBuf {
        self.mnt.clone()
    }
    /// The test's private directory (holds the tiers, mnt, dfs.toml).
    pub fn root(&self) -> PathBuf {
        self.root.clone()
    }
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config.clone()
    }
    pub fn t(&self, i: usize, rel: &str) -> PathBuf {
        self.tiers[i].join(rel)
    }
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
    /// Everything dfs wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let start_len = log.metadata().unwrap().len() as usize;
        let child = Command::new(DFS)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dfs");
        let pid = child.id() as i32;
        self.child = Some(child);
        {
            let mut w = self.watchdog.lock().unwrap();
            w.pid = Some(pid);
            w.done = false;
        }
        let wd = self.watchdog.clone();
        let mnt = self.mnt.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(WATCHDOG_SECS);
            loop {
                thread::sleep(Duration::from_millis(200));
                let w = wd.lock().unwrap();
                if w.done || w.pid != Some(pid) {
                    return;
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "watchdog: dfs on {} still mounted after {WATCHDOG_SECS}s, killing it",
                        mnt.display()
                    );
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
            }
        });
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if fuse_mount_at(&self.mnt).is_some() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.disarm();
                self.child = None;
                let all = self.stderr();
                panic!(
                    "dfs exited ({st}) before mounting {}\nargs: {:?}\nstderr:\n{}",
                    self.mnt.display(),
                    self.args,
                    &all[start_len.min(all.len())..]
                );
            }
            if Instant::now() > deadline {
                let all = self.stderr();
                self.kill_and_clean();
                panic!(
                    "dfs did not mount {} within {:?}\nargs: {:?}\nstderr:\n{}",
                    self.mnt.display(),
                    MOUNT_TIMEOUT,
                    self.args,
                    &all[start_len.min(all.len())..]
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn disarm(&self) {
        let mut w = self.watchdog.lock().unwrap();
        w.done = true;
    }

    /// Sends `sig` and waits up to `timeout` for dfs to exit. Does not clean up.
    /// Returns the exit status (None if dfs is still running) and whether the
    /// mount was gone when dfs exited.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> (Option<ExitStatus>, bool) {
        let child = self.child.as_mut().expect("dfs not running");
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let gone = !is_mounted(&self.mnt);
                self.disarm();
                self.child = None;
                return (Some(st), gone);
            }
            if Instant::now() > deadline {
                return (None, false);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait; returns (exit status, mount gone). Cleans up afterwards
    /// whatever happened, so the Mount can be started again with `remount`.
    pub fn unmount(&mut self) -> (Option<ExitStatus>, bool) {
        let r = self.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
        self.kill_and_clean();
        r
    }

    /// Stops dfs (SIGTERM) and starts it again with the same arguments. Panics
    /// if the first instance did not unmount cleanly.
    pub fn remount(&mut self) {
        let (st, gone) = self.unmount();
        assert!(
            st.map(|s| s.success()).unwrap_or(false) && gone,
            "dfs did not unmount cleanly on SIGTERM: status {st:?}, mount gone: {gone}\nstderr:\n{}",
            self.stderr()
        );
        self.start();
    }

    /// Start dfs again after `unmount()` (no checks).
    pub fn start_again(&mut self) {
        self.start();
    }

    /// Start dfs again and expect it to refuse; returns (status, stderr of this run).
    pub fn start_expect_failure(&mut self) -> (ExitStatus, String) {
        let (st, _out, err) = run_dfs_timeout(&self.args, Duration::from_secs(10));
        match st {
            Some(st) => (st, err),
            None => {
                force_unmount(&self.mnt);
                panic!(
                    "dfs kept running (it mounted?) instead of refusing; args {:?}\nstderr:\n{err}",
                    self.args
                );
            }
        }
    }

    fn kill_and_clean(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.disarm();
            let pid = child.id() as i32;
            let mut exited = matches!(child.try_wait(), Ok(Some(_)));
            if !exited {
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        exited = true;
                        break;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
            if !exited {
                eprintln!(
                    "dfs on {} ignored SIGTERM for 5s; killing",
                    self.mnt.display()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mounted(&self.mnt) {
            force_unmount(&self.mnt);
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.kill_and_clean();
        for m in self.extra_mounts.iter().rev() {
            force_unmount(m);
        }
        if is_mounted(&self.mnt) {
            eprintln!(
                "WARNING: {} still mounted after cleanup",
                self.mnt.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// running the binary for error cases
// ---------------------------------------------------------------------------

/// Runs dfs with these arguments, waits up to 10 s. Panics (after cleaning up)
/// if dfs is still running then. Returns (status, stdout, stderr).
pub fn run_dfs<S: AsRef<OsStr>>(args: &[S]) -> (ExitStatus, String, String) {
    let (st, out, err) = run_dfs_timeout(args, Duration::from_secs(10));
    match st {
        Some(st) => (st, out, err),
        None => panic!(
            "dfs {:?} still running after 10s (did it mount?)\nstderr:\n{err}",
            args.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>()
        ),
    }
}

/// Like `run_dfs` but returns None for the status (after killing dfs and
/// unmounting any mount point among the args) if dfs is still running.
pub fn run_dfs_timeout<S: AsRef<OsStr>>(
    args: &[S],
    timeout: Duration,
) -> (Option<ExitStatus>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_p = dir.path().join("out");
    let err_p = dir.path().join("err");
    let mut child = Command::new(DFS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_p).unwrap())
        .stderr(fs::File::create(&err_p).unwrap())
        .spawn()
        .expect("spawn dfs");
    let deadline = Instant::now() + timeout;
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            thread::sleep(Duration::from_millis(500));
            let _ = child.kill();
            let _ = child.wait();
            for a in args {
                let p = Path::new(a.as_ref());
                if p.is_absolute() && fuse_mount_at(p).is_some() {
                    force_unmount(p);
                }
            }
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let out = fs::read_to_string(&out_p).unwrap_or_default();
    let err = fs::read_to_string(&err_p).unwrap_or_default();
    (st, out, err)
}

// ---------------------------------------------------------------------------
// small syscall helpers
// ---------------------------------------------------------------------------

pub fn cstr<P: AsRef<Path>>(p: P) -> CString {
    CString::new(p.as_ref().as_os_str().as_bytes()).unwrap()
}

pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap()
}

/// The errno of a failed result; panics with a message if it succeeded.
#[track_caller]
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("error without errno: {e}")),
    }
}

pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cvt_l(r: isize) -> io::Result<isize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

pub fn lstat(p: &Path) -> io::Result<fs::Metadata> {
    fs::symlink_metadata(p)
}

pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

pub fn mode(p: &Path) -> u32 {
    lstat(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

pub fn ino(p: &Path) -> u64 {
    lstat(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .ino()
}

pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn write(p: &Path, data: impl AsRef<[u8]>) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()))
}

pub fn mkdirs(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", p.display()))
}

/// Sorted names in a directory (raw bytes, via std's readdir).
pub fn list(p: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

pub fn names(v: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = v.iter().map(OsString::from).collect();
    v.sort();
    v
}

/// Polls `f` until it returns true or `timeout` elapses; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

pub fn statfs(p: &Path) -> libc::statfs {
    let c = cstr(p);
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut s) })
        .unwrap_or_else(|e| panic!("statfs {}: {e}", p.display()));
    s
}

pub fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let c = cstr(p);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let r = cvt_l(r)?;
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let c = cstr(p);
    let n = CString::new(name).unwrap();
    cvt(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

pub fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let c = cstr(p);
    let n = CString::new(name).unwrap();
    cvt(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }).map(|_| ())
}

pub fn listxattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cstr(p);
    let mut buf = vec![0u8; 65536];
    let r = cvt_l(unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(r as usize);
    let mut v: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    Ok(v)
}

pub fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let a = cstr(from);
    let b = cstr(to);
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
    .map(|_| ())
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let c = cstr(p);
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, dev) }).map(|_| ())
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    let c = cstr(p);
    cvt(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

/// utimensat(AT_FDCWD, p, times, AT_SYMLINK_NOFOLLOW)
pub fn utimens(p: &Path, atime: libc::timespec, mtime: libc::timespec) -> io::Result<()> {
    let c = cstr(p);
    let t = [atime, mtime];
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Runs `f` in a forked child with the given uid/gid (supplementary groups
/// cleared). `f` must only make raw syscalls (no allocation, no locks) and
/// returns 0 for success or an errno; that value (0..=255) is returned.
/// Returns 1000 + signal if the child was killed, 2000 + n if setup failed.
pub fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    as_user_groups(uid, gid, &[], f)
}

/// Like `as_user`, with these supplementary groups.
pub fn as_user_groups(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> i32) -> i32 {
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                libc::_exit(201);
            }
            if libc::setgid(gid) != 0 {
                libc::_exit(202);
            }
            if libc::setuid(uid) != 0 {
                libc::_exit(203);
            }
            let r = f();
            libc::_exit(r & 0xff);
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, 0);
            if r == pid {
                break;
            }
            assert!(r < 0 && last_errno() == libc::EINTR, "waitpid failed");
        }
        if libc::WIFEXITED(status) {
            let c = libc::WEXITSTATUS(status);
            if (201..=203).contains(&c) {
                2000 + c
            } else {
                c
            }
        } else {
            1000 + libc::WTERMSIG(status)
        }
    }
}

/// Errno (0 on success) of a syscall result, for use inside `as_user`/`in_child`.
pub fn sys_errno(r: isize) -> i32 {
    if r < 0 {
        unsafe { *libc::__errno_location() }
    } else {
        0
    }
}

/// Runs `f` in a forked child (same credentials); `f` only makes raw syscalls.
pub fn in_child(f: impl FnOnce() -> i32) -> i32 {
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let r = f();
            libc::_exit(r & 0xff);
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, 0);
            if r == pid {
                break;
            }
            assert!(r < 0 && last_errno() == libc::EINTR, "waitpid failed");
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            1000 + libc::WTERMSIG(status)
        }
    }
}

/// Reads the whole file at `p`, or returns the io error.
pub fn try_read(p: &Path) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(p)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Does the name exist as a tier copy, listing which tiers hold `rel`.
pub fn tiers_holding(m: &Mount, rel: &str) -> Vec<usize> {
    (0..m.tiers().len())
        .filter(|&i| exists(&m.t(i, rel)))
        .collect()
}

pub fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "dfs panicked:\n{stderr}");
}

pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Starts dfs with `args` and waits until `mnt` is a fuse mount; then stops it
/// (SIGTERM, cleanup). Ok(()) if it mounted, Err(stderr) if it exited first or
/// did not mount within 10 s.
pub fn mounts_ok<S: AsRef<OsStr>>(args: &[S], mnt: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let err_p = dir.path().join("err");
    let mut child = Command::new(DFS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_p).unwrap())
        .spawn()
        .expect("spawn dfs");
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    let result = loop {
        if fuse_mount_at(mnt).is_some() {
            break Ok(());
        }
        if let Some(st) = child.try_wait().unwrap() {
            break Err(format!(
                "exited {st}: {}",
                fs::read_to_string(&err_p).unwrap_or_default()
            ));
        }
        if Instant::now() > deadline {
            break Err(format!(
                "no mount within 10 s: {}",
                fs::read_to_string(&err_p).unwrap_or_default()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    if is_mounted(mnt) {
        force_unmount(mnt);
    }
    result
}

// ---------------------------------------------------------------------------
// mover helpers (added for tests/mover.rs and tests/mover_crash.rs)
// ---------------------------------------------------------------------------

/// FNV-1a 64-bit checksum of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub const DAY: i64 = 86_400;

/// Sets atime to `atime_ago` and mtime to `mtime_ago` seconds before now.
pub fn set_age(p: &Path, atime_ago: i64, mtime_ago: i64) {
    let now = now_epoch();
    utimens(p, ts(now - atime_ago, 0), ts(now - mtime_ago, 0))
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// A dfs.toml with tiers `pss` ({tier0}) and `sss` ({tier1}) and a `[mover]`
/// table with `interval = "off"` followed by `mover_body` (more `[mover]`
/// keys first, then sub-tables).
pub fn mover_config(mover_body: &str) -> String {
    format!(
        "[[tier]]\nname = \"pss\"\npath = \"{{tier0}}\"\n\n[[tier]]\nname = \"sss\"\npath = \"{{tier1}}\"\n\n[mover]\ninterval = \"off\"\n{mover_body}\n"
    )
}

// ---------------------------------------------------------------------------
// the core without a mount
// ---------------------------------------------------------------------------

/// The filesystem core over the tier directories `roots` (fastest first,
/// named t0, t1, ...; parent-dir policy), as a mount starts it but with no
/// mount: for tests that drive it directly, with no kernel cache between.
pub fn core(roots: &[&Path]) -> dfs::fs::Fs {
    let mut text = String::new();
    for (i, r) in roots.iter().enumerate() {
        text.push_str(&format!(
            "[[tier]]\nname = \"t{i}\"\npath = {:?}\n",
            r.display().to_string()
        ));
    }
    let cfg = dfs::config::Config::parse(&text, None).expect("config");
    let tiers = dfs::tiers::TierSet::open(&cfg, None, false, true).expect("open tiers");
    let policy = dfs::policy::from_config(&cfg).expect("policy");
    dfs::fs::Fs::new(
        tiers,
        policy,
        dfs::fs::Options {
            kernel_permissions: true,
        },
    )
}
