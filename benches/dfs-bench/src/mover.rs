//! Issue 5's benchmark: the mover's throughput against `cp -a` between the
//! same two tiers, and client read latency on the fast tier with a pass
//! running versus without. One function per workload, like workloads.rs.
//!
//! These run on mounts of their own, made from a dfs.toml with a `[mover]`
//! table (no schedule; a rule moving everything from pss to sss; `hot/**`
//! pinned to pss), with both tiers in SCRATCH/mover, on the same disk as the
//! other workloads. The unthrottled mount (`bandwidth = "off"`) serves the
//! throughput comparison and the unthrottled latency line; a second mount
//! with the throttle (default 200MiB/s, as in the preset) serves the
//! throttled latency line. In this table "baseline" is `cp -a` for the
//! throughput lines and "no pass running" for the latency lines.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::table::{Kind, Side, Table, median, percentile, timed};
use crate::workloads::{
    AlignedBuf, check, drop_caches, order, pattern, read_whole, rebase, run as run_cmd, sync,
};

/// The mover workloads' sizes (the brief's values by default; --quick
/// shrinks the file set about 10x).
#[derive(Debug, Clone)]
pub struct MoverSizes {
    /// Big files in the set a pass moves, and the size of each.
    pub big_files: usize,
    pub big_bytes: u64,
    /// Small files in the set, and the size of each.
    pub small_files: usize,
    pub small_bytes: u64,
    /// The throttled pass's `bandwidth` ("off": no throttled line).
    pub bandwidth: String,
    /// How long the client reads with no pass running.
    pub idle: Duration,
    /// The client's pause between two reads.
    pub read_gap: Duration,
    /// Files the client reads in turn (4 KiB each, pinned to pss).
    pub hot_files: usize,
}

impl MoverSizes {
    pub fn set_files(&self) -> usize {
        self.big_files + self.small_files
    }

    pub fn set_bytes(&self) -> u64 {
        self.big_files as u64 * self.big_bytes + self.small_files as u64 * self.small_bytes
    }
}

/// Small files per directory in the set.
const SMALL_PER_DIR: usize = 100;

/// Bytes the client reads from each hot file.
const HOT_SIZE: usize = 4096;

/// Where and with what the mover workloads run.
pub struct Env<'a> {
    pub bin: &'a Path,
    /// SCRATCH/mover: the two tiers, the mount point, configs and logs.
    pub dir: PathBuf,
    pub sizes: MoverSizes,
    pub reps: usize,
    /// Extra `-o` options for `dfs mount`.
    pub mount_opts: Option<&'a str>,
}

impl Env<'_> {
    fn tier(&self, i: usize) -> PathBuf {
        self.dir.join(["pss", "sss"][i])
    }

    pub fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
}

/// What the report shows besides the table.
#[derive(Default)]
pub struct Notes {
    /// The mover daemons' notable log lines (I/O mode, watching, the mount
    /// line, warnings, errors), without timestamps, each once.
    pub said: Vec<String>,
    /// Per latency mode: the passes' rate under the client (MB/s, median),
    /// the median pass time, and the median number of reads idle and
    /// during.
    pub latency: Vec<LatencyNote>,
}

pub struct LatencyNote {
    pub mode: &'static str,
    pub pass_mb_s: f64,
    pub pass_secs: f64,
    pub idle_reads: f64,
    pub during_reads: f64,
}

/// One mover mount and what its workloads need.
struct Mount<'a> {
    env: &'a Env<'a>,
    daemon: &'a Daemon,
}

impl Mount<'_> {
    fn settle(&self) {
        self.daemon.settle(Duration::from_secs(10));
    }

    /// `dfs move MNT`, checked: every file of the set moved, nothing
    /// skipped, no errors. Returns the daemon's own pass time.
    fn pass(&self) -> io::Result<f64> {
        let out = run_cmd(
            Command::new(self.env.bin).arg("move").arg(self.env.mnt()),
            &[],
        )?;
        let p = parse_move(&out)
            .ok_or_else(|| io::Error::other(format!("dfs move said: {}", out.trim())))?;
        let n = self.env.sizes.set_files() as u64;
        check(
            p.moved == n && p.total == n && p.skipped == 0 && p.errors == 0,
            || {
                format!(
                    "expected all {n} files moved; dfs move said: {}",
                    out.trim()
                )
            },
        )?;
        Ok(p.secs)
    }

    /// Removes the moved set through the mount (so dfs forgets it).
    fn remove_set(&self) -> io::Result<()> {
        fs::remove_dir_all(self.env.mnt().join("bulk"))?;
        sync();
        self.settle();
        Ok(())
    }
}

/// What `dfs move` printed at the end: "moved N of M files (X), skipped S,
/// E errors, in T s".
#[derive(Debug, PartialEq)]
struct PassSummary {
    moved: u64,
    total: u64,
    skipped: u64,
    errors: u64,
    secs: f64,
}

fn parse_move(out: &str) -> Option<PassSummary> {
    let line = out.lines().find(|l| l.starts_with("moved "))?;
    let w: Vec<&str> = line
        .split_whitespace()
        .map(|x| x.trim_end_matches(','))
        .collect();
    let after = |key: &str| w.iter().position(|x| *x == key).and_then(|i| w.get(i + 1));
    let before = |key: &str| {
        w.iter()
            .position(|x| *x == key)
            .and_then(|i| w.get(i.checked_sub(1)?))
    };
    Some(PassSummary {
        moved: w.get(1)?.parse().ok()?,
        total: after("of")?.parse().ok()?,
        skipped: after("skipped")?.parse().ok()?,
        errors: before("errors")?.parse().ok()?,
        secs: after("in")?.parse().ok()?,
    })
}

/// A dfs.toml for the mover mounts: no schedule, `bandwidth` as given, every
/// file on pss moves to sss except `hot/**`, which is pinned to pss.
fn config(env: &Env, bandwidth: &str) -> io::Result<String> {
    let lit = |p: PathBuf| -> io::Result<String> {
        let s = p
            .to_str()
            .filter(|s| !s.contains(['\'', '\n']))
            .ok_or_else(|| io::Error::other(format!("{}: unusable in a dfs.toml", p.display())))?;
        Ok(format!("'{s}'"))
    };
    Ok(format!(
        r#"# dfs-bench: the mover workloads' mount
[[tier]]
name = "pss"
path = {}

[[tier]]
name = "sss"
path = {}

[mover]
interval = "off"
bandwidth = "{bandwidth}"

[[mover.rule]]
from = "pss"
to = "sss"
match = "**"

[[mover.pin]]
match = "hot/**"
tier = "pss"
"#,
        lit(env.tier(0))?,
        lit(env.tier(1))?
    ))
}

/// Writes `total` bytes of `chunk` to a new file (no fsync: the caller
/// syncs once for the whole set).
fn fill(path: &Path, chunk: &[u8], total: u64) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The file set a pass moves and `cp -a` copies, made under `root`: the big
/// files in big/, the small ones 100 per directory in s000/, s001/, ...
fn make_set(root: &Path, s: &MoverSizes, chunk: &[u8]) -> io::Result<()> {
    let big = root.join("big");
    fs::create_dir_all(&big)?;
    for i in 0..s.big_files {
        fill(&big.join(format!("b{i:05}")), chunk, s.big_bytes)?;
    }
    for i in 0..s.small_files {
        let dir = root.join(format!("s{:03}", i / SMALL_PER_DIR));
        if i % SMALL_PER_DIR == 0 {
            fs::create_dir_all(&dir)?;
        }
        fill(&dir.join(format!("f{i:05}")), chunk, s.small_bytes)?;
    }
    Ok(())
}

/// Regular files under `dir` (recursively).
fn count_files(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ty = e.file_type()?;
        if ty.is_dir() {
            n += count_files(&e.path())?;
        } else if ty.is_file() {
            n += 1;
        }
    }
    Ok(n)
}

/// The client: open, read 4 KiB, close each of `files` in turn, `gap`
/// apart, until `stop`; returns each read's latency in microseconds.
fn client(files: &[PathBuf], gap: Duration, stop: &AtomicBool) -> io::Result<Vec<f64>> {
    // Page-aligned, as the other timed reads (see `AlignedBuf`).
    let mut buf = AlignedBuf::new(HOT_SIZE);
    let mut lat = Vec::with_capacity(16 * 1024);
    for f in files.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let start = Instant::now();
        let n = File::open(f)?.read(buf.as_mut())?;
        lat.push(start.elapsed().as_secs_f64() * 1e6);
        check(n == HOT_SIZE, || format!("{}: read {n} bytes", f.display()))?;
        thread::sleep(gap);
    }
    Ok(lat)
}

/// Runs the client alongside `during` (in this thread) until it returns.
fn with_client<T>(
    files: &[PathBuf],
    gap: Duration,
    during: impl FnOnce() -> io::Result<T>,
) -> io::Result<(T, Vec<f64>)> {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let c = s.spawn(|| client(files, gap, &stop));
        let v = during();
        stop.store(true, Ordering::Relaxed);
        let lat = c.join().expect("the client thread panicked")?;
        Ok((v?, lat))
    })
}

// ---------------------------------------------------------------------------

/// All mover workloads: mounts the unthrottled configuration for
/// throughput and the unthrottled latency line, then the throttled one for
/// its latency line. Every mount is unmounted before this returns (the
/// `Daemon` guard on the error paths).
pub fn run(env: &Env, t: &mut Table) -> io::Result<Notes> {
    let s = &env.sizes;
    for d in [env.tier(0), env.tier(1), env.mnt()] {
        fs::create_dir_all(d)?;
    }
    let devs: Vec<u64> = [env.dir.clone(), env.tier(0), env.tier(1)]
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.dev()))
        .collect::<io::Result<_>>()?;
    check(devs.iter().all(|&d| d == devs[0]), || {
        "the mover tiers are not on one filesystem".into()
    })?;
    // The client's files, made directly on pss and pinned there.
    let hot = env.tier(0).join("hot");
    fs::create_dir_all(&hot)?;
    let content = pattern(HOT_SIZE, 5);
    for i in 0..s.hot_files.max(1) {
        File::create(hot.join(format!("h{i:04}")))?.write_all(&content)?;
    }
    sync();

    let mut notes = Notes::default();
    let mut modes = vec![("unthrottled", "off")];
    if s.bandwidth != "off" {
        modes.push(("throttled", s.bandwidth.as_str()));
    }
    for (mode, bw) in modes {
        let cfg = env.dir.join(format!("dfs-{mode}.toml"));
        fs::write(&cfg, config(env, bw)?)?;
        eprintln!(
            "mounting: {} mount --config {} {} (bandwidth = \"{bw}\")",
            env.bin.display(),
            cfg.display(),
            env.mnt().display()
        );
        let mut daemon = Daemon::mount_config(
            env.bin,
            &cfg,
            &env.mnt(),
            env.mount_opts,
            Some(&env.dir.join(format!("dfs-{mode}.log"))),
            None,
        )?;
        let m = Mount {
            env,
            daemon: &daemon,
        };
        m.settle();
        if mode == "unthrottled" {
            eprintln!("== mover/throughput");
            throughput(&m, t)?;
        }
        eprintln!("== mover/read latency, {mode} pass (bandwidth = \"{bw}\")");
        notes.latency.push(read_latency(&m, t, mode)?);
        for l in &daemon.log.lock().unwrap().notable {
            // The same lines from both mounts, but for the timestamp.
            let text = crate::strip_log_prefix(l);
            if !text.contains("unmount") && !notes.said.iter().any(|x| x == text) {
                notes.said.push(text.to_string());
            }
        }
        daemon.unmount()?;
        eprintln!("unmounted {} (checked /proc/mounts)", env.mnt().display());
    }
    Ok(notes)
}

/// mover/throughput: the set put directly on pss, caches dropped, then
/// `dfs move MNT` (unthrottled) moves it all to sss; against `cp -a` of an
/// identical set from pss to sss (caches dropped first; its copy and
/// source removed after). Each side is timed with a `sync` after it (the
/// mover fsyncs every file it moves; cp does not), and also without
/// (mover/throughput-nosync). MB = 10^6 bytes.
fn throughput(m: &Mount, t: &mut Table) -> io::Result<()> {
    let env = m.env;
    let s = &env.sizes;
    let chunk = pattern((s.big_bytes.max(s.small_bytes) as usize).min(4 << 20), 6);
    let mb = s.set_bytes() as f64 / 1e6;
    for (_, side) in order(env.reps) {
        let (src, dst) = match side {
            Side::Native => (env.tier(0).join("cpset"), env.tier(1).join("cpset")),
            Side::Dfs => (env.tier(0).join("bulk"), env.tier(1).join("bulk")),
        };
        make_set(&src, s, &chunk)?;
        drop_caches(m.daemon)?;
        let cpu = m.daemon.cpu_secs();
        let ((), secs) = timed(|| match side {
            Side::Native => {
                run_cmd(Command::new("cp").arg("-a").arg(&src).arg(&dst), &[]).map(drop)
            }
            Side::Dfs => m.pass().map(drop),
        })?;
        let ((), sync_secs) = timed(|| -> io::Result<()> {
            sync();
            Ok(())
        })?;
        m.daemon.settle(Duration::from_secs(2));
        t.daemon_cpu
            .push(("mover/throughput".into(), side, m.daemon.cpu_secs() - cpu));
        let n = count_files(&dst)?;
        check(n == s.set_files(), || {
            format!("{}: {n} files, expected {}", dst.display(), s.set_files())
        })?;
        t.rate("mover/throughput", "MB/s", side, mb, secs + sync_secs);
        t.rate("mover/throughput-nosync", "MB/s", side, mb, secs);
        match side {
            Side::Native => {
                fs::remove_dir_all(&dst)?;
                fs::remove_dir_all(&src)?;
                sync();
                m.settle();
            }
            Side::Dfs => m.remove_set()?,
        }
    }
    Ok(())
}

/// mover/read-p50-MODE and mover/read-p99-MODE: a client thread opens,
/// reads 4 KiB from and closes the pinned hot files on pss in turn (warm in
/// the page cache, a pause between reads), recording each read's latency:
/// for a fixed time with no pass running, and for the whole of a pass
/// moving the set (put on pss, caches dropped, then the hot files warmed).
/// Baseline = no pass; ratio idle/during (1.0: the pass costs the client
/// nothing).
fn read_latency(m: &Mount, t: &mut Table, mode: &'static str) -> io::Result<LatencyNote> {
    let env = m.env;
    let s = &env.sizes;
    let chunk = pattern((s.big_bytes.max(s.small_bytes) as usize).min(4 << 20), 7);
    let hot: Vec<PathBuf> = (0..s.hot_files.max(1))
        .map(|i| env.mnt().join(format!("hot/h{i:04}")))
        .collect();
    let (p50, p99) = (
        format!("mover/read-p50-{mode}"),
        format!("mover/read-p99-{mode}"),
    );
    let mut buf = AlignedBuf::new(HOT_SIZE);
    let (mut rates, mut secs, mut idle_n, mut during_n) = (vec![], vec![], vec![], vec![]);
    for (_, side) in order(env.reps) {
        let lat = match side {
            Side::Native => {
                for f in &hot {
                    read_whole(f, buf.as_mut())?;
                }
                m.settle();
                let ((), lat) = with_client(&hot, s.read_gap, || {
                    thread::sleep(s.idle);
                    Ok(())
                })?;
                idle_n.push(lat.len() as f64);
                lat
            }
            Side::Dfs => {
                make_set(&env.tier(0).join("bulk"), s, &chunk)?;
                drop_caches(m.daemon)?;
                for f in &hot {
                    read_whole(f, buf.as_mut())?;
                }
                m.settle();
                let ((_, pass_secs), lat) = with_client(&hot, s.read_gap, || timed(|| m.pass()))?;
                for f in &hot {
                    let back = rebase(f, &env.mnt(), &env.tier(0));
                    check(back.exists(), || {
                        format!("{}: the pinned file left pss", back.display())
                    })?;
                }
                m.remove_set()?;
                rates.push(s.set_bytes() as f64 / 1e6 / pass_secs);
                secs.push(pass_secs);
                during_n.push(lat.len() as f64);
                lat
            }
        };
        let q = |p| percentile(&lat, p).unwrap_or(f64::NAN);
        t.record(&p50, Kind::Time, "us", side, q(50.0));
        t.record(&p99, Kind::Time, "us", side, q(99.0));
    }
    Ok(LatencyNote {
        mode,
        pass_mb_s: median(&rates).unwrap_or(f64::NAN),
        pass_secs: median(&secs).unwrap_or(f64::NAN),
        idle_reads: median(&idle_n).unwrap_or(0.0),
        during_reads: median(&during_n).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pass_summary() {
        let out = "moved 2200 of 2200 files (925.0 MiB), skipped 0, 0 errors, in 3.214 s\n";
        assert_eq!(
            parse_move(out),
            Some(PassSummary {
                moved: 2200,
                total: 2200,
                skipped: 0,
                errors: 0,
                secs: 3.214
            })
        );
        let out = "moved 3 of 5 files (12 B), skipped 2, 1 errors, in 0.010 s";
        let p = parse_move(out).unwrap();
        assert_eq!((p.moved, p.total, p.skipped, p.errors), (3, 5, 2, 1));
        assert_eq!(parse_move("no such line"), None);
    }
}
