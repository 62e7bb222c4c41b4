//! The dfs daemon under test: build, mount, watch, unmount.
//!
//! Every mount is torn down on every way out: normal return and panic (the
//! `Daemon` guard's Drop), Ctrl-C/SIGTERM/SIGHUP (a signal thread, which
//! unmounts every daemon still up), and the benchmark being killed outright
//! (PR_SET_PDEATHSIG sends dfs SIGTERM, on which it unmounts itself).
//! The floor probe's in-process mount (floor.rs) is registered here too, so
//! that the signal thread detaches it before the process exits.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Builds dfs with `cargo build --release --bin dfs` in the workspace this
/// crate belongs to and returns the binary's path.
pub fn build() -> io::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building dfs: cargo build --release --bin dfs (in {})",
        root.display()
    );
    let st = Command::new(cargo)
        .args(["build", "--release", "--bin", "dfs"])
        .current_dir(&root)
        .status()?;
    if !st.success() {
        return Err(io::Error::other(format!("cargo build failed: {st}")));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_relative() { root.join(t) } else { t })
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/dfs"))
}

/// Whether `mnt` is listed in /proc/self/mountinfo, and with which type.
pub fn mount_type(mnt: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mnt.to_str()?;
    let mut found = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 || unescape(f[4]) != want {
            continue;
        }
        // The type follows the " - " separator; later lines shadow earlier ones.
        if let Some(sep) = f.iter().position(|x| *x == "-") {
            found = f.get(sep + 1).map(|s| s.to_string());
        }
    }
    found
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// What the benchmark reports about the daemon from its stderr.
#[derive(Default, Clone)]
pub struct Log {
    /// Lines worth showing: the I/O mode, tier watching, the mount line,
    /// warnings and errors.
    pub notable: Vec<String>,
    /// Every line, kept only until the mount is up (for error messages).
    pub early: Vec<String>,
    /// FUSE requests seen so far, by opcode (only with fuser's debug log on,
    /// which prints "FUSE(unique) ino 0x... OPCODE ...").
    pub requests: BTreeMap<String, u64>,
}

/// The opcode of a fuser debug line, if it is one.
fn opcode(line: &str) -> Option<&str> {
    let rest = &line[line.find("] FUSE(")?..];
    let rest = &rest[rest.find(" ino ")? + 5..];
    let mut w = rest.split_whitespace();
    w.next()?; // the node id
    // fuser prints no name for opcodes it does not know (e.g. FUSE_STATX).
    w.next().map(|op| {
        if op.starts_with("thread=") {
            "UNKNOWN"
        } else {
            op
        }
    })
}

/// The state the signal thread needs to unmount.
struct Teardown {
    pid: i32,
    mnt: PathBuf,
}

/// Every daemon still mounted (the signal thread unmounts them all).
static TEARDOWN: Mutex<Vec<Teardown>> = Mutex::new(Vec::new());

/// In-process FUSE mounts still up (the floor probe's): the signal thread
/// detaches them, since their daemon threads die with the process and would
/// leave a dead mount behind.
static LOCAL_MOUNTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers an in-process FUSE mount for the signal thread to detach.
pub fn register_local_mount(mnt: &Path) {
    lock(&LOCAL_MOUNTS).push(mnt.to_path_buf());
}

/// Forgets an in-process mount registered with `register_local_mount`
/// (its owner is about to unmount it).
pub fn unregister_local_mount(mnt: &Path) {
    lock(&LOCAL_MOUNTS).retain(|m| m != mnt);
}

/// Locks `m` even if a panicking thread poisoned it: the lists behind these
/// locks stay consistent (every change is a single push or retain), and
/// teardown must run after a panic too.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lazily unmounts `mnt` (umount2 with MNT_DETACH): it goes from the
/// namespace at once, whatever still uses it.
pub fn detach(mnt: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path and a valid flag.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The scratch directory the signal thread removes after unmounting (unset
/// with --keep).
pub static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A running, mounted dfs.
pub struct Daemon {
    child: Option<Child>,
    pub pid: i32,
    pub mnt: PathBuf,
    pub log: Arc<Mutex<Log>>,
    /// Lines read from the daemon's stderr so far.
    lines: Arc<AtomicU64>,
    /// The read end of the daemon's stderr pipe (to see it drained).
    pipe_fd: i32,
}

impl Daemon {
    /// Runs `dfs mount TIER0 TIER1 MNT [-o OPTS]` (the two-tier preset) and
    /// waits until /proc/self/mountinfo shows MNT as fuse.dfs.
    pub fn mount(
        bin: &Path,
        tier0: &Path,
        tier1: &Path,
        mnt: &Path,
        opts: Option<&str>,
        log_file: Option<&Path>,
        rust_log: Option<&str>,
    ) -> io::Result<Daemon> {
        let args = [tier0.as_os_str(), tier1.as_os_str(), mnt.as_os_str()];
        Self::spawn(bin, &args, mnt, opts, log_file, rust_log)
    }

    /// Runs `dfs mount --config CONFIG MNT [-o OPTS]` and waits until
    /// /proc/self/mountinfo shows MNT as fuse.dfs.
    pub fn mount_config(
        bin: &Path,
        config: &Path,
        mnt: &Path,
        opts: Option<&str>,
        log_file: Option<&Path>,
        rust_log: Option<&str>,
    ) -> io::Result<Daemon> {
        let args = [OsStr::new("--config"), config.as_os_str(), mnt.as_os_str()];
        Self::spawn(bin, &args, mnt, opts, log_file, rust_log)
    }

    /// `dfs mount ARGS... [-o OPTS]`, watched until mounted.
    fn spawn(
        bin: &Path,
        args: &[&OsStr],
        mnt: &Path,
        opts: Option<&str>,
        log_file: Option<&Path>,
        rust_log: Option<&str>,
    ) -> io::Result<Daemon> {
        let mut cmd = Command::new(bin);
        cmd.arg("mount").args(args);
        // The fast transport where the kernel has it (the README's advice);
        // `--mount-opts uring=off` measures /dev/fuse.
        cmd.arg("-o").arg("uring=on");
        if let Some(o) = opts {
            cmd.arg("-o").arg(o);
        }
        match rust_log {
            Some(l) => {
                cmd.env("RUST_LOG", l);
            }
            None if std::env::var_os("RUST_LOG").is_none() => {
                cmd.env("RUST_LOG", "info");
            }
            None => {}
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl and setpgid are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Our own process group: a terminal Ctrl-C reaches only the
                // benchmark, which then unmounts in order.
                libc::setpgid(0, 0);
                // If the benchmark dies without cleaning up, dfs gets SIGTERM
                // and unmounts itself.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        TEARDOWN.lock().unwrap().push(Teardown {
            pid,
            mnt: mnt.to_path_buf(),
        });

        let log = Arc::new(Mutex::new(Log::default()));
        let stderr = child.stderr.take().expect("piped stderr");
        let pipe_fd = stderr.as_raw_fd();
        let lines = Arc::new(AtomicU64::new(0));
        let lines2 = Arc::clone(&lines);
        let mut file = match log_file {
            Some(p) => Some(std::fs::File::create(p)?),
            None => None,
        };
        let log2 = Arc::clone(&log);
        thread::Builder::new()
            .name("dfs-stderr".into())
            .spawn(move || {
                let mut up = false;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(f) = file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let mut l = log2.lock().unwrap();
                    lines2.fetch_add(1, Ordering::Relaxed);
                    if let Some(op) = opcode(&line) {
                        match l.requests.get_mut(op) {
                            Some(n) => *n += 1,
                            None => {
                                l.requests.insert(op.to_string(), 1);
                            }
                        }
                        continue;
                    }
                    if !up {
                        l.early.push(line.clone());
                    }
                    if line.contains("mounted ") {
                        up = true;
                        l.early.clear();
                    }
                    if line.contains("I/O mode")
                        || line.contains("transport: ")
                        || line.contains("FUSE over io_uring")
                        || line.contains("watch")
                        || line.contains("tier changes")
                        || line.contains("mounted ")
                        || line.contains(" WARN ")
                        || line.contains(" ERROR ")
                    {
                        l.notable.push(line);
                    }
                }
            })?;

        let mut d = Daemon {
            child: Some(child),
            pid,
            mnt: mnt.to_path_buf(),
            log,
            lines,
            pipe_fd,
        };
        let start = Instant::now();
        loop {
            if mount_type(mnt).as_deref() == Some("fuse.dfs") {
                break;
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait()? {
                thread::sleep(Duration::from_millis(100));
                let early = d.log.lock().unwrap().early.join("\n");
                d.child = None;
                TEARDOWN.lock().unwrap().retain(|t| t.pid != pid);
                return Err(io::Error::other(format!(
                    "dfs exited before mounting ({st}):\n{early}"
                )));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(io::Error::other("dfs did not mount within 30 s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Give the log thread a moment to see the startup lines.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2)
            && !d
                .log
                .lock()
                .unwrap()
                .notable
                .iter()
                .any(|l| l.contains("mounted "))
        {
            thread::sleep(Duration::from_millis(10));
        }
        Ok(d)
    }

    /// A field of /proc/PID/status in kB (VmRSS, VmHWM, ...) or a count
    /// (Threads).
    pub fn status_field(&self, key: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// CPU time (user + system, clock ticks) the daemon has used so far.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// CPU time the daemon has used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.cpu_ticks().unwrap_or(0) as f64 / hz
    }

    /// Waits (at most `max`) until the daemon has used no CPU for 150 ms,
    /// so that work queued by the last phase (forgets after a cache drop,
    /// tier-watch events) does not land in the next timed phase.
    pub fn settle(&self, max: Duration) {
        let start = Instant::now();
        let mut last = self.cpu_ticks();
        let mut quiet = 0;
        while start.elapsed() < max && quiet < 3 {
            thread::sleep(Duration::from_millis(50));
            let now = self.cpu_ticks();
            if now == last {
                quiet += 1;
            } else {
                quiet = 0;
                last = now;
            }
        }
    }

    /// Settles, then waits until every line the daemon wrote has been read,
    /// and returns the FUSE request counts so far.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.settle(Duration::from_secs(10));
        let start = Instant::now();
        let mut last = self.lines.load(Ordering::Relaxed);
        let mut quiet = 0;
        while quiet < 3 && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(20));
            let mut pending: libc::c_int = 0;
            // SAFETY: FIONREAD on a pipe fd we own, into a c_int.
            unsafe { libc::ioctl(self.pipe_fd, libc::FIONREAD, &mut pending) };
            let now = self.lines.load(Ordering::Relaxed);
            if now == last && pending == 0 {
                quiet += 1;
            } else {
                quiet = 0;
                last = now;
            }
        }
        self.log.lock().unwrap().requests.clone()
    }

    /// Unmounts (SIGTERM to dfs, which unmounts and exits), falling back to
    /// a lazy unmount, and checks /proc/mounts. Idempotent.
    pub fn unmount(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        TEARDOWN.lock().unwrap().retain(|t| t.pid != self.pid);
        teardown(self.pid, &self.mnt);
        let start = Instant::now();
        while child.try_wait()?.is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        gone(&self.mnt)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("dfs-bench: unmount: {e}");
        }
    }
}

/// Ok once `mnt` is no longer a mount point (/proc/mounts), the check
/// every unmount here ends with.
pub fn gone(mnt: &Path) -> io::Result<()> {
    if still_mounted(mnt) {
        return Err(io::Error::other(format!(
            "{} is still listed in /proc/mounts",
            mnt.display()
        )));
    }
    Ok(())
}

/// Whether `mnt` is a mount point in /proc/mounts.
pub fn still_mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy();
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1).map(unescape).as_deref() == Some(&want))
        })
        .unwrap_or(false)
}

/// SIGTERM to dfs, wait for the mount to go, else `umount -l`.
fn teardown(pid: i32, mnt: &Path) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while still_mounted(mnt) && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    if still_mounted(mnt) {
        eprintln!(
            "dfs-bench: dfs did not unmount; umount -l {}",
            mnt.display()
        );
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // dfs still writes its state (the mover's access record) after the
    // unmount: let it finish before anyone removes the tiers.
    let start = Instant::now();
    while running(pid) && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` exists and has not exited (zombies have).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s[s.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Ctrl-C, SIGTERM, SIGHUP: unmount, then exit with 128+signal.
pub fn install_signal_handler() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                eprintln!("\ndfs-bench: signal {sig}: unmounting");
                let all = std::mem::take(&mut *TEARDOWN.lock().unwrap());
                let mut left = false;
                for t in all {
                    teardown(t.pid, &t.mnt);
                    if still_mounted(&t.mnt) {
                        eprintln!("dfs-bench: {} is still mounted!", t.mnt.display());
                        left = true;
                    }
                }
                for mnt in std::mem::take(&mut *lock(&LOCAL_MOUNTS)) {
                    if let Err(e) = detach(&mnt) {
                        eprintln!("dfs-bench: umount -l {}: {e}", mnt.display());
                    }
                    if still_mounted(&mnt) {
                        eprintln!("dfs-bench: {} is still mounted!", mnt.display());
                        left = true;
                    }
                }
                if left {
                    std::process::exit(128 + sig);
                }
                if let Some(dir) = SCRATCH.lock().unwrap().take() {
                    // The main thread may still be adding files: retry.
                    for _ in 0..5 {
                        if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                            break;
                        }
                        thread::sleep(Duration::from_millis(100));
                    }
                }
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}
