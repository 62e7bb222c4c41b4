//! dfs-bench: dfs against the native filesystem, on the same disk, in the
//! same run (issue 4's "Benchmark" and "Targets"), and the mover against
//! `cp -a` and idle client latency (issue 5's "Tests and benchmark").
//!
//! Run as root from the workspace: `cargo run --release -p dfs-bench`
//! (`-- --help` for the flags; `-- --quick` for a ~10x smaller smoke run).

mod daemon;
mod floor;
mod mover;
mod table;
mod workloads;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

use daemon::Daemon;
use table::Table;
use workloads::{Ctx, Sizes};

const MIB: u64 = 1 << 20;

const ALL: &[&str] = &[
    "rt", "floor", "seq", "rand", "small", "tree", "neg", "tier2", "mem", "mover",
];

/// Benchmark dfs against the native filesystem on the same disk. Needs root
/// (drop_caches, FUSE passthrough). Prints a table of medians: ratio 1.0 is
/// native speed, higher is better (dfs/native for rates, native/dfs for
/// times), with issue 4's target for each line; then the mover's table
/// (issue 5: `dfs move` against `cp -a`, client latency during a pass
/// against none).
#[derive(Debug, Parser)]
#[command(name = "dfs-bench")]
struct Args {
    /// The dfs binary to benchmark (also $DFS_BIN). Default: build it with
    /// `cargo build --release --bin dfs` in this workspace.
    #[arg(long, value_name = "PATH")]
    dfs: Option<PathBuf>,
    /// Directory in which the scratch directory (native dir, two tiers,
    /// mount point) is made; it must be on the disk you want to measure.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    scratch: PathBuf,
    /// Keep the scratch directory (and the dfs logs in it: dfs.log,
    /// dfs-count.log for the counting pass, and mover/dfs-*.log for the
    /// mover's mounts) afterwards.
    #[arg(long)]
    keep: bool,
    /// Repetitions of every workload on each side (the table shows medians;
    /// the issue asks for at least 3, and on a shared host the median of 5
    /// moves less from run to run).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Shrink every workload about 10x (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Run only these workloads (comma-separated): rt (the round-trip
    /// floor), floor (the kernel's own cost of a round trip, of a LOOKUP
    /// and of a listing, on a zero-work FUSE daemon; added whenever small,
    /// neg or tier2 is, unless --no-floor), seq, rand (each also reads a
    /// file the zero-work daemon serves by kernel passthrough, interleaved
    /// with its sides, for the floor of seq-read-warm and rand-read-4k,
    /// when dfs's mount does passthrough), small, tree, neg, tier2, mem
    /// (issue 4, on the preset mount), mover (issue 5, on mounts of its
    /// own).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Vec<String>,
    /// Exit with status 2 when a line is under its target.
    #[arg(long)]
    strict: bool,
    /// Extra `-o` options for `dfs mount` (e.g. threads=4, or uring=off to
    /// measure the /dev/fuse transport; they come after the bench's own
    /// `uring=on`).
    #[arg(long, value_name = "OPTS")]
    mount_opts: Option<String>,
    /// Count the FUSE requests of every timed phase on the mount (runs dfs
    /// with RUST_LOG=info,fuser::request=debug and parses its log; the
    /// logging slows dfs down, so the timings of such a run are not its
    /// real speed).
    #[arg(long)]
    count_requests: bool,
    /// Skip the counting pass after the timed issue 4 workloads: a fresh
    /// mount with the request log on, each workload once on the dfs side,
    /// whose FUSE request counts give every line its floor (the ratio a
    /// zero-cost daemon would reach). With --count-requests the floor comes
    /// from that run's own counts, and there is no separate pass. Also
    /// keeps neg and tier2 from adding the floor group, and seq and rand
    /// from measuring kernel passthrough on the zero-work daemon.
    #[arg(long)]
    no_floor: bool,
    /// Write the daemon's whole stderr here (e.g. with RUST_LOG=debug to
    /// count FUSE requests); default: SCRATCH/dfs.log.
    #[arg(long, value_name = "FILE")]
    dfs_log: Option<PathBuf>,

    /// seq-write/seq-read file size, MiB [1024; quick 100].
    #[arg(long, value_name = "MIB")]
    seq_mib: Option<u64>,
    /// rand-read-4k file size, MiB [256; quick 32].
    #[arg(long, value_name = "MIB")]
    rand_mib: Option<u64>,
    /// rand-read-4k: number of 4 KiB preads per side and repetition
    /// [500000; quick 50000], in 10 slices run on the sides in turn (about
    /// half a second per side and repetition: shorter runs swing by 10%
    /// from run to run).
    #[arg(long, value_name = "N")]
    rand_reads: Option<u64>,
    /// Small files: number of files [10000; quick 1000].
    #[arg(long, value_name = "N")]
    small_files: Option<usize>,
    /// Small files: number of directories [100; quick 10].
    #[arg(long, value_name = "N")]
    small_dirs: Option<usize>,
    /// Small files: size of each, bytes [4096].
    #[arg(long, value_name = "BYTES")]
    small_size: Option<usize>,
    /// The real tree to tar up once and untar [/usr/include; quick
    /// /usr/include/linux].
    #[arg(long, value_name = "DIR")]
    tree: Option<PathBuf>,
    /// The word `grep -r -w` counts in the tree.
    #[arg(long, value_name = "WORD", default_value = "uint32_t")]
    grep_word: String,
    /// neg-lookup: names stat'ed [10000; quick 1000].
    #[arg(long, value_name = "N")]
    neg_names: Option<usize>,
    /// neg-lookup: directories (present on both tiers) [100; quick 10].
    #[arg(long, value_name = "N")]
    neg_dirs: Option<usize>,
    /// tier2-stat/tier2-read: files on the second tier only [10000; quick 1000].
    #[arg(long, value_name = "N")]
    tier2_files: Option<usize>,
    /// memory: distinct files looked up [200000; quick 20000].
    #[arg(long, value_name = "N")]
    mem_files: Option<usize>,
    /// mover: big files in the set a pass moves [200; quick 20].
    #[arg(long, value_name = "N")]
    mover_big: Option<usize>,
    /// mover: size of each big file, KiB [4096].
    #[arg(long, value_name = "KIB")]
    mover_big_kib: Option<u64>,
    /// mover: small files in the set [2000; quick 200].
    #[arg(long, value_name = "N")]
    mover_small: Option<usize>,
    /// mover: size of each small file, KiB [64].
    #[arg(long, value_name = "KIB")]
    mover_small_kib: Option<u64>,
    /// mover: the throttled pass's `bandwidth` (as in dfs.toml; "off" skips
    /// the throttled latency lines).
    #[arg(long, value_name = "RATE", default_value = "200MiB/s")]
    mover_bandwidth: String,
    /// mover: how long the client reads with no pass running, seconds
    /// [3; quick 1].
    #[arg(long, value_name = "SECS")]
    mover_idle_secs: Option<f64>,
    /// mover: the client's pause between reads, microseconds.
    #[arg(long, value_name = "US", default_value_t = 1000)]
    mover_read_gap_us: u64,
}

impl Args {
    fn sizes(&self) -> Sizes {
        let q = self.quick;
        let pick =
            |v: Option<usize>, full: usize, quick: usize| v.unwrap_or(if q { quick } else { full });
        let tree = self.tree.clone().unwrap_or_else(|| {
            let linux = PathBuf::from("/usr/include/linux");
            if q && linux.is_dir() {
                linux
            } else {
                PathBuf::from("/usr/include")
            }
        });
        Sizes {
            seq_bytes: self.seq_mib.unwrap_or(if q { 100 } else { 1024 }) * MIB,
            io_size: MIB as usize,
            rand_bytes: self.rand_mib.unwrap_or(if q { 32 } else { 256 }).max(1) * MIB,
            rand_reads: self.rand_reads.unwrap_or(if q { 50_000 } else { 500_000 }),
            small_files: pick(self.small_files, 10_000, 1_000),
            small_dirs: pick(self.small_dirs, 100, 10).max(1),
            small_size: pick(self.small_size, 4096, 4096),
            tree_src: tree,
            grep_word: self.grep_word.clone(),
            neg_names: pick(self.neg_names, 10_000, 1_000),
            neg_dirs: pick(self.neg_dirs, 100, 10).max(1),
            tier2_files: pick(self.tier2_files, 10_000, 1_000),
            tier2_dirs: if q { 10 } else { 100 },
            tier2_size: 4096,
            mem_files: pick(self.mem_files, 200_000, 20_000).max(1),
            roundtrips: if q { 5_000 } else { 50_000 },
        }
    }
}

impl Args {
    fn mover_sizes(&self) -> mover::MoverSizes {
        let q = self.quick;
        mover::MoverSizes {
            big_files: self.mover_big.unwrap_or(if q { 20 } else { 200 }),
            big_bytes: self.mover_big_kib.unwrap_or(4096) * 1024,
            small_files: self.mover_small.unwrap_or(if q { 200 } else { 2000 }),
            small_bytes: self.mover_small_kib.unwrap_or(64) * 1024,
            bandwidth: self.mover_bandwidth.clone(),
            idle: Duration::from_secs_f64(
                self.mover_idle_secs
                    .unwrap_or(if q { 1.0 } else { 3.0 })
                    .max(0.1),
            ),
            read_gap: Duration::from_micros(self.mover_read_gap_us),
            hot_files: 64,
        }
    }
}

fn main() {
    let args = Args::parse();
    let strict = args.strict;
    match run(args) {
        Ok(under) => std::process::exit(if under && strict { 2 } else { 0 }),
        Err(e) => {
            eprintln!("dfs-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Runs everything; returns whether some line is under target.
fn run(args: Args) -> io::Result<bool> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::other(
            "must run as root (drop_caches, FUSE passthrough)",
        ));
    }
    let mut only: Vec<&str> = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        for w in &args.only {
            if !ALL.contains(&w.as_str()) {
                return Err(io::Error::other(format!(
                    "unknown workload `{w}` (one of {})",
                    ALL.join(", ")
                )));
            }
        }
        args.only.iter().map(|s| s.as_str()).collect()
    };
    // The lookup lines' and the list line's floors need the kernel's own
    // costs.
    if !args.no_floor && !only.contains(&"floor") && only.iter().any(|w| LOOKUP_GROUPS.contains(w))
    {
        only.push("floor");
    }
    let want = |w: &str| only.contains(&w);
    let reps = args.reps.max(1);
    let sizes = args.sizes();
    daemon::install_signal_handler()?;

    let bin = match args
        .dfs
        .clone()
        .or_else(|| std::env::var_os("DFS_BIN").map(PathBuf::from))
    {
        Some(b) => b,
        None => daemon::build()?,
    };
    let bin = bin
        .canonicalize()
        .map_err(|e| io::Error::other(format!("{}: {e}", bin.display())))?;

    // Scratch: native dir, two tiers and the mount point, all on one disk.
    let scratch = args
        .scratch
        .canonicalize()?
        .join(format!("dfs-bench.{}", std::process::id()));
    let native = scratch.join("native");
    let tiers = [scratch.join("tier0"), scratch.join("tier1")];
    let mnt = scratch.join("mnt");
    for d in [&native, &tiers[0], &tiers[1], &mnt] {
        std::fs::create_dir_all(d)?;
    }
    if !args.keep {
        *daemon::SCRATCH.lock().unwrap() = Some(scratch.clone());
    }
    let devs: Vec<u64> = [&native, &tiers[0], &tiers[1]]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.dev()))
        .collect::<io::Result<_>>()?;
    if devs.iter().any(|&d| d != devs[0]) {
        return Err(io::Error::other(
            "native dir and tiers are not on one filesystem",
        ));
    }
    let result = bench(
        &args,
        &bin,
        sizes,
        reps,
        &want,
        &scratch,
        native,
        tiers,
        mnt.clone(),
    );
    let mover_mnt = scratch.join("mover/mnt");
    let probe_mnt = scratch.join(floor::MOUNT_DIR);
    if let Some(m) = [&mnt, &mover_mnt, &probe_mnt]
        .into_iter()
        .find(|m| daemon::mount_type(m).is_some())
    {
        eprintln!(
            "dfs-bench: {} is still mounted; not removing {}",
            m.display(),
            scratch.display()
        );
    } else if args.keep {
        eprintln!("scratch kept: {}", scratch.display());
    } else if let Err(e) = std::fs::remove_dir_all(&scratch) {
        eprintln!("dfs-bench: cannot remove {}: {e}", scratch.display());
    }
    result
}

/// What the preset mount's run leaves for the report.
struct PresetRun {
    t: Table,
    tree_info: Option<(u64, u64)>,
    notable: Vec<String>,
    /// Warnings and errors from the counting pass's mount.
    count_notable: Vec<String>,
    threads: Option<u64>,
    peak_before_mem: Option<u64>,
    peak: Option<u64>,
    mem: Option<workloads::Memory>,
}

#[allow(clippy::too_many_arguments)]
fn bench(
    args: &Args,
    bin: &Path,
    sizes: Sizes,
    reps: usize,
    want: &dyn Fn(&str) -> bool,
    scratch: &Path,
    native: PathBuf,
    tiers: [PathBuf; 2],
    mnt: PathBuf,
) -> io::Result<bool> {
    let started = Instant::now();
    let load_start = read_trim("/proc/loadavg");
    let mut failures = Vec::new();

    // The issue 4 workloads, on the preset mount (skipped when only the
    // mover's are wanted).
    let preset = if ALL.iter().any(|w| *w != "mover" && want(w)) {
        Some(preset(
            args,
            bin,
            &sizes,
            reps,
            want,
            scratch,
            native,
            tiers,
            &mnt,
            &mut failures,
        )?)
    } else {
        None
    };

    // The issue 5 workloads, on mounts of their own, after the preset mount
    // is gone (its watcher would see the mover's traffic on the same disk).
    let mut mt = Table::with_sides("baseline", "dfs");
    let mut notes = None;
    let msizes = args.mover_sizes();
    if want("mover") {
        eprintln!("== mover");
        let env = mover::Env {
            bin,
            dir: scratch.join("mover"),
            sizes: msizes.clone(),
            reps,
            mount_opts: args.mount_opts.as_deref(),
        };
        match mover::run(&env, &mut mt) {
            Ok(n) => notes = Some(n),
            Err(e) => {
                eprintln!("!! mover failed: {e}");
                failures.push(format!("mover: {e}"));
            }
        }
    }

    // ---- report ----
    println!();
    println!(
        "dfs-bench (issues 4 and 5): ratio = dfs/baseline for rates, baseline/dfs for times; 1.0 = baseline, higher is better"
    );
    println!(
        "kernel {}; {} CPUs; load average at start {load_start}, at end {}",
        read_trim("/proc/sys/kernel/osrelease"),
        cpus(),
        read_trim("/proc/loadavg")
    );
    println!("dfs: {}", bin.display());
    println!(
        "scratch {} ({}); {} repetitions per side, medians; wall time {:.0} s",
        scratch.display(),
        fs_type(scratch),
        reps,
        started.elapsed().as_secs_f64()
    );
    let mut under = 0;
    if let Some(p) = &preset {
        under += report_preset(args, &sizes, p);
    }
    if want("mover") {
        under += report_mover(&msizes, &mt, notes.as_ref());
    }
    println!("lines under target: {under}");
    for f in &failures {
        println!("FAILED {f}");
    }
    if !failures.is_empty() {
        return Err(io::Error::other(format!(
            "{} workload(s) failed",
            failures.len()
        )));
    }
    Ok(under > 0)
}

type Workload = fn(&Ctx, &mut Table) -> io::Result<()>;

/// The timed issue 4 workload groups, in the order they run (the memory
/// test, which times nothing, runs after them on its own). rt and floor
/// measure what the floor column is built from, on the dfs mount and on a
/// zero-work one; the counting pass skips both.
fn groups() -> [(&'static str, Workload); 8] {
    [
        ("rt", workloads::roundtrip),
        ("floor", floor::run),
        ("seq", workloads::seq),
        ("rand", workloads::rand_read),
        ("small", workloads::small_files),
        ("tree", |c, t| {
            workloads::tree(c, t, &c.scratch.join("tree.tar"))
        }),
        ("neg", workloads::neg_lookup),
        ("tier2", workloads::tier2),
    ]
}

/// Mounts the preset (`dfs mount TIER0 TIER1 MNT`), runs the issue 4
/// workloads wanted on it and unmounts; then, for the floor column, the
/// counting pass (see `count_pass`).
#[allow(clippy::too_many_arguments)]
fn preset(
    args: &Args,
    bin: &Path,
    sizes: &Sizes,
    reps: usize,
    want: &dyn Fn(&str) -> bool,
    scratch: &Path,
    native: PathBuf,
    tiers: [PathBuf; 2],
    mnt: &Path,
    failures: &mut Vec<String>,
) -> io::Result<PresetRun> {
    let tarball = scratch.join("tree.tar");
    let mut tree_info = None;
    if want("tree") {
        eprintln!(
            "making the tree tarball: tar -cf {} -C ... {}",
            tarball.display(),
            sizes.tree_src.display()
        );
        tree_info = Some(workloads::make_tarball(&sizes.tree_src, &tarball)?);
    }

    let log_file = args
        .dfs_log
        .clone()
        .unwrap_or_else(|| scratch.join("dfs.log"));
    eprintln!(
        "mounting: {} mount {} {} {}",
        bin.display(),
        tiers[0].display(),
        tiers[1].display(),
        mnt.display()
    );
    let mut daemon = Daemon::mount(
        bin,
        &tiers[0],
        &tiers[1],
        mnt,
        args.mount_opts.as_deref(),
        Some(&log_file),
        args.count_requests.then_some("info,fuser::request=debug"),
    )?;
    if std::env::var_os("RUST_LOG").is_some() && !args.count_requests {
        eprintln!("note: RUST_LOG is set and passed to dfs; verbose logging slows it down");
    }

    let mut t = Table::default();
    let mut mem = None;
    let (peak_before_mem, threads);
    {
        let ctx = Ctx {
            sizes: sizes.clone(),
            reps,
            scratch: scratch.to_path_buf(),
            native: native.clone(),
            tiers: tiers.clone(),
            mnt: mnt.to_path_buf(),
            daemon: &daemon,
            count_requests: args.count_requests,
            dfs_only: false,
            floor: !args.no_floor,
        };
        for (name, f) in groups() {
            if !want(name) {
                continue;
            }
            eprintln!("== {name}");
            if let Err(e) = f(&ctx, &mut t) {
                eprintln!("!! {name} failed: {e}");
                failures.push(format!("{name}: {e}"));
            }
            workloads::sync();
            ctx.settle();
        }
        peak_before_mem = daemon.status_field("VmHWM");
        threads = daemon.status_field("Threads");
        if want("mem") {
            eprintln!("== mem ({} files)", sizes.mem_files);
            match workloads::memory(&ctx) {
                Ok(m) => mem = Some(m),
                Err(e) => {
                    eprintln!("!! mem failed: {e}");
                    failures.push(format!("mem: {e}"));
                }
            }
        }
    }
    let peak = daemon.status_field("VmHWM");
    let notable = daemon.log.lock().unwrap().notable.clone();
    daemon.unmount()?;
    eprintln!("unmounted {} (checked /proc/mounts)", mnt.display());

    // The floor needs the round trip measured and something else to put
    // over it; --count-requests has counted every timed phase already.
    let mut count_notable = Vec::new();
    let to_floor = groups()
        .iter()
        .any(|(g, _)| !NOT_COUNTED.contains(g) && want(g));
    if !args.no_floor && !args.count_requests && to_floor && t.roundtrip_secs().is_some() {
        let ctx = CountCtx {
            bin,
            sizes,
            scratch,
            native,
            tiers,
            mnt,
        };
        match count_pass(args, &ctx, want, &mut t, failures) {
            Ok(n) => count_notable = n,
            Err(e) => {
                eprintln!("!! counting pass failed: {e}");
                failures.push(format!("counting pass: {e}"));
            }
        }
    }
    Ok(PresetRun {
        t,
        tree_info,
        notable,
        count_notable,
        threads,
        peak_before_mem,
        peak,
        mem,
    })
}

/// The groups whose lines (`table::LOOKUP_LINES`, and `table::LIST_LINE`)
/// take their floor from the floor group's measured kernel costs.
const LOOKUP_GROUPS: &[&str] = &["neg", "tier2", "small"];

/// The groups the counting pass leaves out: they measure the floor's
/// costs, not lines that get one.
const NOT_COUNTED: &[&str] = &["rt", "floor"];

/// Where the counting pass mounts and what it runs on.
struct CountCtx<'a> {
    bin: &'a Path,
    sizes: &'a Sizes,
    scratch: &'a Path,
    native: PathBuf,
    tiers: [PathBuf; 2],
    mnt: &'a Path,
}

/// The counting pass behind the floor column, after every timed workload:
/// a fresh preset mount with fuser's request log on (which slows dfs down,
/// so it must not share a mount with the timings), each wanted group but
/// the round trip once on the dfs side, through the same `Ctx` phases as
/// --count-requests. Its timings go into a table of its own that is
/// dropped; its request counts go into `t`. Returns the mount's warnings
/// and errors.
fn count_pass(
    args: &Args,
    c: &CountCtx,
    want: &dyn Fn(&str) -> bool,
    t: &mut Table,
    failures: &mut Vec<String>,
) -> io::Result<Vec<String>> {
    eprintln!(
        "== counting pass: FUSE requests per operation, dfs side only, once (timings not kept)"
    );
    let mut daemon = Daemon::mount(
        c.bin,
        &c.tiers[0],
        &c.tiers[1],
        c.mnt,
        args.mount_opts.as_deref(),
        Some(&c.scratch.join("dfs-count.log")),
        Some("info,fuser::request=debug"),
    )?;
    let mut counted = Table::default();
    {
        let ctx = Ctx {
            sizes: c.sizes.clone(),
            reps: 1,
            scratch: c.scratch.to_path_buf(),
            native: c.native.clone(),
            tiers: c.tiers.clone(),
            mnt: c.mnt.to_path_buf(),
            daemon: &daemon,
            count_requests: true,
            dfs_only: true,
            floor: false,
        };
        for (name, f) in groups() {
            if NOT_COUNTED.contains(&name) || !want(name) {
                continue;
            }
            eprintln!("== count: {name}");
            if let Err(e) = f(&ctx, &mut counted) {
                eprintln!("!! count: {name} failed: {e}");
                failures.push(format!("count: {name}: {e}"));
            }
            workloads::sync();
            ctx.settle();
        }
    }
    let said = daemon
        .log
        .lock()
        .unwrap()
        .notable
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .cloned()
        .collect();
    daemon.unmount()?;
    eprintln!("unmounted {} (checked /proc/mounts)", c.mnt.display());
    t.requests.append(&mut counted.requests);
    Ok(said)
}

/// The issue 4 part of the report; returns how many lines are under target.
fn report_preset(args: &Args, sizes: &Sizes, p: &PresetRun) -> usize {
    for l in &p.notable {
        if !l.contains("unmount") {
            println!("dfs said: {}", strip_log_prefix(l));
        }
    }
    for l in &p.count_notable {
        println!("dfs (counting mount) said: {}", strip_log_prefix(l));
    }
    println!(
        "daemon threads (/proc/PID/status Threads): {}",
        p.threads.map_or("?".into(), |x| x.to_string())
    );
    println!(
        "sizes: seq {} MiB in {} KiB writes; rand {} MiB, {} preads; small {} x {} B in {} dirs; neg {} names in {} dirs; tier2 {} x {} B in {} dirs",
        sizes.seq_bytes / MIB,
        sizes.io_size / 1024,
        sizes.rand_bytes / MIB,
        sizes.rand_reads,
        sizes.small_files,
        sizes.small_size,
        sizes.small_dirs,
        sizes.neg_names,
        sizes.neg_dirs,
        sizes.tier2_files,
        sizes.tier2_size,
        sizes.tier2_dirs
    );
    if let Some((files, bytes)) = p.tree_info {
        println!(
            "tree: {} ({} entries, {:.1} MiB tar); commands: tar -xf, grep -r -w -F -h -c {}, du -s, rm -rf",
            sizes.tree_src.display(),
            files,
            bytes as f64 / MIB as f64,
            sizes.grep_word
        );
    }
    println!();
    println!("issue 4: dfs (preset mount) against the native directory");
    let under = p.t.print();
    let floors = p.t.rows.iter().any(|r| p.t.floor(r).is_some());
    if floors || !p.t.requests.is_empty() {
        let lookups: Vec<&str> =
            p.t.rows
                .iter()
                .map(|r| r.name.as_str())
                .filter(|n| p.t.lookup_cost(n).is_some())
                .collect();
        let passthrough: Vec<&str> =
            p.t.rows
                .iter()
                .filter(|r| p.t.passthrough_floor(r).is_some())
                .map(|r| r.name.as_str())
                .collect();
        println!(
            "floor: best ratio with a zero-cost daemon: native time per op / (native time + N x C), N = FUSE requests the client waits for per op ({}), C = one empty round trip{}{}",
            if args.count_requests {
                "counted in this run (debug logging on, so the round trip is slowed too)"
            } else if !p.t.requests.is_empty() {
                "counted in a separate run"
            } else {
                "not counted: 1 for the lookup lines, no floor for the others"
            },
            if lookups.is_empty() {
                String::new()
            } else {
                format!(
                    "; for {}: native time per op / (native time + N x L), L = one stat through a zero-work FUSE daemon that answers that line's kind of LOOKUP (kernel floor below, which also gives the floor without the native time: a daemon answering from memory)",
                    lookups.join(" and ")
                )
            },
            if passthrough.is_empty() {
                String::new()
            } else {
                format!(
                    "; for {} (served by kernel passthrough, no request): the zero-work FUSE daemon's rate on a file it serves by passthrough / native rate, interleaved in the same repetitions (kernel floor below)",
                    passthrough.join(" and ")
                )
            }
        );
        if let Some(rt) = p.t.roundtrip_secs() {
            println!(
                "  one empty round trip: {} us (the {} line's dfs median); AT FUSE FLOOR: under a target above the floor",
                table::fmt_num(rt * 1e6),
                table::ROUNDTRIP
            );
        }
        // A ratio above its floor means that line's requests cost dfs less
        // than the floor prices them at: that cost is then overstated (or
        // the run was noisy), and the floors are too low to trust. Not for
        // a passthrough floor: there dfs and the probe do the same kernel
        // work, so dfs beats it half the time by noise alone (the kernel
        // floor section compares them).
        let beaten: Vec<&str> =
            p.t.rows
                .iter()
                .filter(|r| p.t.passthrough_floor(r).is_none())
                .filter(|r| matches!((r.ratio(), p.t.floor(r)), (Some(x), Some(f)) if x > f))
                .map(|r| r.name.as_str())
                .collect();
        if !beaten.is_empty() {
            println!(
                "  check: {} line(s) beat their floor ({}): their requests cost dfs less than the floor prices them at (the round trip above, or the kernel's LOOKUP below), so that price is too high here (or the run was noisy) and the floors are low",
                beaten.len(),
                beaten.join(", ")
            );
        }
    }
    if let Some(k) = &p.t.kernel {
        print_kernel_floor(
            k,
            p.t.roundtrip_secs(),
            p.t.list_floor(),
            &p.t.lookup_floors(),
        );
    }
    print_passthrough_floor(&p.t);
    println!();
    println!(
        "daemon CPU time per phase (median; ~10 ms resolution; on the native side this is dfs watching the shared filesystem):"
    );
    p.t.print_daemon_cpu();
    println!();
    if args.count_requests {
        println!(
            "FUSE requests the daemon received per operation (dfs side, all repetitions; debug logging on, so the timings above are slowed):"
        );
        p.t.print_requests();
        println!();
    } else if !p.t.requests.is_empty() {
        println!(
            "FUSE requests the daemon received per operation (dfs side, the separate counting pass, once; its timings are not in the table):"
        );
        p.t.print_requests();
        println!();
    }
    let kib = |k: Option<u64>| k.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "daemon peak RSS (VmHWM): {} before the memory test, {} at the end",
        kib(p.peak_before_mem),
        kib(p.peak)
    );
    let mut mem_under = false;
    if let Some(m) = &p.mem {
        let per = m.bytes_per_file();
        mem_under = per >= 300.0;
        println!(
            "memory: VmRSS {} -> {} KiB over {} distinct lookups = {:.0} bytes per file (target < 300){}; lookup rate {:.0}/s",
            m.rss_before_kib,
            m.rss_after_kib,
            m.files,
            per,
            if mem_under { "  << OVER TARGET" } else { "" },
            m.lookups_per_sec
        );
    }
    println!();
    under + mem_under as usize
}

/// The kernel floor section: the floor probe's medians (see floor.rs), and
/// which lines' floors they price; `dfs_rt` is the round-trip line's cost
/// on dfs, for comparison with the probe's.
fn print_kernel_floor(
    k: &table::KernelCosts,
    dfs_rt: Option<f64>,
    list: Option<table::ListFloor>,
    lookups: &[(&str, f64, f64, f64)],
) {
    let us = |x: Option<f64>| x.map_or("-".into(), |x| table::fmt_num(x * 1e6));
    let used_by = |l: table::Lookup| {
        let lines: Vec<&str> = table::LOOKUP_LINES
            .iter()
            .filter(|(_, kind)| *kind == l)
            .map(|(n, _)| *n)
            .collect();
        format!("; {}'s floor", lines.join(", "))
    };
    println!(
        "kernel floor: a zero-work FUSE daemon in the bench process, transport {}; median us per op of {} runs with fresh names:",
        k.transport,
        k.roundtrip.len()
    );
    println!(
        "  empty round trip  {:>7} us  (fgetxattr of an absent name, {} per run{})",
        us(k.roundtrip()),
        k.ops[0],
        dfs_rt.map_or(String::new(), |r| format!(
            "; dfs's {}: {} us",
            table::ROUNDTRIP,
            table::fmt_num(r * 1e6)
        ))
    );
    println!(
        "  negative LOOKUP   {:>7} us  (stat of a missing name, {} per run{})",
        us(k.lookup(table::Lookup::Negative)),
        k.ops[1],
        used_by(table::Lookup::Negative)
    );
    println!(
        "  positive LOOKUP   {:>7} us  (stat of a file never seen: new inode and dentry, {} per run{})",
        us(k.lookup(table::Lookup::Positive)),
        k.ops[2],
        used_by(table::Lookup::Positive)
    );
    println!(
        "  listing           {:>7} us  (open, readdir to the end and close of a fresh directory of {} names, listed without attributes as dfs does; {} per run; {}'s floor, per name)",
        us(k.listing()),
        table::LISTED_NAMES,
        floor::DIRS,
        table::LIST_LINE
    );
    if let Some(f) = list {
        println!(
            "  {}: native {} us per directory; floor {:.3} with a zero-work daemon, {:.3} with one that reads its tier's copy once (the native listing's own work: native / (listing + native))",
            table::LIST_LINE,
            table::fmt_num(f.native * 1e6),
            f.zero_work(),
            f.reading_the_tier()
        );
    }
    for (name, native, zero, reading) in lookups {
        println!(
            "  {name}: native {} us per op; floor {zero:.3} with a zero-work daemon, {reading:.3} with one that stats its tier's copy once (the native stat's own work: native / (LOOKUP + native))",
            table::fmt_num(native * 1e6),
        );
    }
}

/// The passthrough lines of the kernel floor section: for each line the
/// probe measured (see `table::PassthroughFloor`), its time per operation
/// against native's and dfs's, medians of the same interleaved
/// repetitions.
fn print_passthrough_floor(t: &Table) {
    let lines: Vec<(&table::PassthroughFloor, &table::Row, f64)> = t
        .passthrough
        .iter()
        .filter_map(|p| {
            let row = t.rows.iter().find(|r| r.name == p.line)?;
            Some((p, row, t.passthrough_floor(row)?))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    if t.kernel.is_none() {
        println!("kernel floor: a zero-work FUSE daemon in the bench process:");
    }
    // Microseconds per operation of a rate median.
    let us = |v: &[f64]| {
        table::median(v)
            .filter(|&x| x > 0.0)
            .map_or("-".into(), |x| table::fmt_num(1e6 / x))
    };
    for (p, row, floor) in lines {
        println!(
            "  passthrough read  {:>7} us  per {} (probe) vs native {} us, dfs {} us: {}'s floor {floor:.3} (a file the probe serves by kernel passthrough, read in the same {} repetitions, interleaved slice by slice with native and dfs; {} requests reached the probe while timed)",
            us(&p.probe),
            p.op,
            us(&row.native),
            us(&row.dfs),
            p.line,
            p.probe.len(),
            p.requests
        );
    }
}

/// The issue 5 part of the report; returns how many lines are under target.
fn report_mover(s: &mover::MoverSizes, t: &Table, notes: Option<&mover::Notes>) -> usize {
    if let Some(n) = notes {
        for l in &n.said {
            println!("dfs (mover mount) said: {l}");
        }
    }
    println!(
        "mover set: {} x {} KiB + {} x {} KiB = {} files, {:.1} MiB, put directly on pss; rule pss -> sss match \"**\", hot/** pinned to pss",
        s.big_files,
        s.big_bytes / 1024,
        s.small_files,
        s.small_bytes / 1024,
        s.set_files(),
        s.set_bytes() as f64 / MIB as f64
    );
    println!();
    println!(
        "issue 5: the mover (mounts of their own with a [mover] table, tiers on the same disk)"
    );
    let under = t.print();
    println!(
        "  throughput: baseline = `cp -a` of the same set pss -> sss, dfs = `dfs move` (bandwidth = \"off\"); each timed from cold caches up to a `sync` after it"
    );
    println!(
        "  throughput-nosync: the same runs timed without the `sync` (the mover fsyncs every file it moves, cp does not)"
    );
    println!(
        "  read-p50/p99: a client's open + 4 KiB read + close of {} pinned files on pss (page cache warm, {} us apart), in us; baseline = no pass running ({:.1} s), dfs = during a pass moving the set; ratio idle/during",
        s.hot_files,
        s.read_gap.as_micros(),
        s.idle.as_secs_f64()
    );
    if let Some(n) = notes {
        for l in &n.latency {
            println!(
                "  {} pass{}: {:.2} s, {:.0} MB/s with the client running; reads per run (median): {:.0} idle, {:.0} during",
                l.mode,
                if l.mode == "throttled" {
                    format!(" (bandwidth = \"{}\")", s.bandwidth)
                } else {
                    String::new()
                },
                l.pass_secs,
                l.pass_mb_s,
                l.idle_reads,
                l.during_reads
            );
        }
    }
    println!();
    println!(
        "daemon CPU time (median; baseline side: dfs watching the shared filesystem during cp -a):"
    );
    t.print_daemon_cpu();
    println!();
    under
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// "[2026-01-01T00:00:00.000Z INFO  dfs::fuse] I/O mode: ..." -> "I/O mode: ..."
fn strip_log_prefix(l: &str) -> &str {
    match l.find("] ") {
        Some(i) if l.starts_with('[') => &l[i + 2..],
        _ => l,
    }
}

fn fs_type(p: &Path) -> String {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(p)
        .output();
    let mut s = out
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") {
        // The device of the scratch directory's filesystem, for the report.
        let best = m
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let mp = f.get(4)?;
                let sep = f.iter().position(|x| *x == "-")?;
                let (fstype, dev) = (f.get(sep + 1)?, f.get(sep + 2)?);
                p.starts_with(mp)
                    .then(|| (mp.len(), format!("{fstype} on {dev}")))
            })
            .max_by_key(|(n, _)| *n);
        if let Some((_, d)) = best {
            s = d;
        }
    }
    s
}
