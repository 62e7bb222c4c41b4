//! The workloads of issue 4, one function each. Every workload runs on the
//! native directory and on the mount, alternating which goes first from one
//! repetition to the next, and records its samples in the table (or on the
//! mount alone, for the pass that only counts FUSE requests).
//!
//! rand-read-4k and seq-read-warm, which dfs serves by kernel passthrough
//! and which swing with the host from one second to the next, go further:
//! each repetition is cut into slices run on every side in turn (see
//! `Ctx::interleaved`), so that a slow stretch of the host hits every side,
//! and the floor probe's passthrough file is a third side (its rate is the
//! line's floor; see `floor::PtProbe`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::floor::PtProbe;
use crate::table::{Kind, ROUNDTRIP, Requests, Side, Table, timed};

/// Workload sizes (the issue's values by default; --quick shrinks them).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub seq_bytes: u64,
    pub io_size: usize,
    pub rand_bytes: u64,
    pub rand_reads: u64,
    pub small_files: usize,
    pub small_dirs: usize,
    pub small_size: usize,
    pub tree_src: PathBuf,
    pub grep_word: String,
    pub neg_names: usize,
    pub neg_dirs: usize,
    pub tier2_files: usize,
    pub tier2_dirs: usize,
    pub tier2_size: usize,
    pub mem_files: usize,
    pub roundtrips: u64,
}

/// Fixed seed for the random offsets, so every run reads the same blocks.
const SEED: u64 = 0x5eed_0000_0004;

/// Slices each repetition of rand-read-4k is cut into (see
/// `Ctx::interleaved`): short enough (~0.1 s at full size) that the sides
/// see the same host, long enough (50,000 preads) that timing them costs
/// nothing.
pub const SLICES: usize = 10;

/// Whole-file reads per side in each repetition of seq-read-warm, each a
/// slice of `Ctx::interleaved`.
pub const WARM_PASSES: usize = 5;

pub struct Ctx<'a> {
    pub sizes: Sizes,
    pub reps: usize,
    pub scratch: PathBuf,
    pub native: PathBuf,
    pub tiers: [PathBuf; 2],
    pub mnt: PathBuf,
    pub daemon: &'a Daemon,
    /// Count the FUSE requests of every timed phase on the mount (needs the
    /// daemon's fuser debug log; slows the daemon down).
    pub count_requests: bool,
    /// Run the dfs side only: the counting pass after the timed ones, which
    /// wants the requests of every phase, not its timings.
    pub dfs_only: bool,
    /// Measure the kernel's passthrough path on the floor probe alongside
    /// the lines dfs serves that way (not with --no-floor; the counting
    /// pass never does).
    pub floor: bool,
}

/// Who runs a slice of an interleaved line: one of the table's sides, or
/// the floor probe's passthrough file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Side(Side),
    Probe,
}

/// An interleaved line: its table name and unit, and what one operation is
/// (for the floor probe's report).
pub struct Line {
    pub name: &'static str,
    pub unit: &'static str,
    pub op: &'static str,
}

/// The order in which `lanes` lanes run slice `slice` of repetition `rep`
/// (of `slices`): rotated one step per slice, counting on across
/// repetitions, so that each lane goes first, second, ... about as often
/// as the others.
pub fn slice_order(lanes: usize, slices: usize, rep: usize, slice: usize) -> Vec<usize> {
    if lanes == 0 {
        return Vec::new();
    }
    let first = (rep * slices + slice) % lanes;
    (0..lanes).map(|i| (first + i) % lanes).collect()
}

/// The operations of slice `slice` when `total` are cut into `slices`:
/// as even as integers allow, summing to `total`.
pub fn slice_len(total: u64, slices: usize, slice: usize) -> u64 {
    let s = slices.max(1) as u128;
    let at = |i: usize| (total as u128 * i as u128 / s) as u64;
    at(slice + 1) - at(slice)
}

/// What one lane did in a repetition of an interleaved line.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ops: f64,
    /// Seconds spent in the lane's own slices.
    secs: f64,
    /// dfs's CPU seconds meanwhile.
    cpu: f64,
}

impl Ctx<'_> {
    /// Where a workload runs: the native directory or the mount.
    pub fn root(&self, side: Side) -> &Path {
        match side {
            Side::Native => &self.native,
            Side::Dfs => &self.mnt,
        }
    }

    /// The directories a fixture made "behind dfs's back" goes into: for
    /// the native side the native directory; for dfs, tier 0 and tier 1.
    fn tier_dirs(&self, side: Side) -> Vec<&Path> {
        match side {
            Side::Native => vec![&self.native],
            Side::Dfs => self.tiers.iter().map(|p| p.as_path()).collect(),
        }
    }

    /// The sides this context runs: both, or dfs alone for a counting pass.
    fn sides(&self) -> &'static [Side] {
        if self.dfs_only {
            &[Side::Dfs]
        } else {
            &[Side::Native, Side::Dfs]
        }
    }

    /// Repetitions × sides, alternating which side goes first.
    fn order(&self) -> Vec<(usize, Side)> {
        let mut v = order(self.reps);
        v.retain(|(_, side)| self.sides().contains(side));
        v
    }

    /// Lets the daemon finish work queued by the previous step (forgets,
    /// tier-watch events) before the next timed step.
    pub fn settle(&self) {
        self.daemon.settle(Duration::from_secs(10));
    }

    /// Times `f` as phase `name` and records `ops / seconds` (a rate).
    fn rate<T>(
        &self,
        t: &mut Table,
        name: &str,
        unit: &'static str,
        side: Side,
        ops: f64,
        f: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        self.phase(t, name, Kind::Rate, unit, side, ops, f)
    }

    /// Times `f` as phase `name` and records its seconds.
    fn time<T>(
        &self,
        t: &mut Table,
        name: &str,
        side: Side,
        f: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        self.phase(t, name, Kind::Time, "s", side, 1.0, f)
    }

    /// The daemon's request counts now, if the requests of `side` are
    /// counted (see `count_requests`).
    fn count_start(&self, side: Side) -> Option<BTreeMap<String, u64>> {
        (self.count_requests && side == Side::Dfs).then(|| self.daemon.requests())
    }

    /// Records the requests the daemon received since `before` as phase
    /// `name`'s, `ops` operations.
    fn count_end(&self, t: &mut Table, name: &str, ops: f64, before: BTreeMap<String, u64>) {
        let mut counts = self.daemon.requests();
        for (op, n) in counts.iter_mut() {
            *n -= before.get(op).copied().unwrap_or(0);
        }
        counts.retain(|_, n| *n > 0);
        t.requests.push(Requests {
            phase: name.to_string(),
            ops,
            counts,
        });
    }

    /// One repetition of an interleaved line: `slices` slices, each run on
    /// every lane in turn (`slice_order`), each lane's slice timed on its
    /// own; `run(i, slice)` does slice `slice` on `lanes[i]` and returns
    /// its operations. A lane's sample is its operations over the seconds
    /// of its own slices, so the host's slow stretches (which last longer
    /// than a slice) hit every lane alike. Records the table's sides'
    /// samples (and dfs's requests, over the whole repetition: no other
    /// lane sends it any) and returns the probe's tally, if it is a lane.
    fn interleaved(
        &self,
        t: &mut Table,
        line: &Line,
        rep: usize,
        lanes: &[Lane],
        slices: usize,
        mut run: impl FnMut(usize, usize) -> io::Result<f64>,
    ) -> io::Result<Option<Tally>> {
        let counted = if lanes.contains(&Lane::Side(Side::Dfs)) {
            self.count_start(Side::Dfs)
        } else {
            None
        };
        self.daemon.settle(Duration::from_secs(2));
        let mut tally = vec![Tally::default(); lanes.len()];
        for slice in 0..slices {
            for i in slice_order(lanes.len(), slices, rep, slice) {
                let cpu = self.daemon.cpu_secs();
                let start = Instant::now();
                let ops = run(i, slice)?;
                let secs = start.elapsed().as_secs_f64();
                tally[i].ops += ops;
                tally[i].secs += secs;
                tally[i].cpu += self.daemon.cpu_secs() - cpu;
            }
        }
        let mut probe = None;
        for (lane, x) in lanes.iter().zip(&tally) {
            match *lane {
                Lane::Side(side) => {
                    t.daemon_cpu.push((line.name.to_string(), side, x.cpu));
                    t.rate(line.name, line.unit, side, x.ops, x.secs);
                }
                Lane::Probe => probe = Some(*x),
            }
        }
        if let Some(before) = counted {
            let ops = lanes
                .iter()
                .zip(&tally)
                .find(|(l, _)| **l == Lane::Side(Side::Dfs))
                .map_or(0.0, |(_, x)| x.ops);
            self.count_end(t, line.name, ops, before);
        }
        Ok(probe)
    }

    /// The file `name` of `lane`: in the side's directory, or the probe's
    /// passthrough file.
    fn lane_file(&self, lane: Lane, probe: Option<&PtProbe>, name: &str) -> io::Result<PathBuf> {
        match (lane, probe) {
            (Lane::Side(side), _) => Ok(self.root(side).join(name)),
            (Lane::Probe, Some(p)) => Ok(p.file.clone()),
            (Lane::Probe, None) => Err(io::Error::other("no floor probe to read")),
        }
    }

    /// The lanes of an interleaved line: the sides this context runs, and
    /// the floor probe when it serves the line's file.
    fn lanes(&self, probe: Option<&PtProbe>) -> Vec<Lane> {
        let mut v: Vec<Lane> = self.sides().iter().map(|&s| Lane::Side(s)).collect();
        if probe.is_some() {
            v.push(Lane::Probe);
        }
        v
    }

    #[allow(clippy::too_many_arguments)]
    fn phase<T>(
        &self,
        t: &mut Table,
        name: &str,
        kind: Kind,
        unit: &'static str,
        side: Side,
        ops: f64,
        f: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        let before = self.count_start(side);
        let cpu = self.daemon.cpu_secs();
        let (v, secs) = timed(f)?;
        // Work the phase queued (tier-watch events, forgets) counts too.
        self.daemon.settle(Duration::from_secs(2));
        t.daemon_cpu
            .push((name.to_string(), side, self.daemon.cpu_secs() - cpu));
        match kind {
            Kind::Rate => t.rate(name, unit, side, ops, secs),
            Kind::Time => t.time(name, side, secs),
        }
        if let Some(before) = before {
            self.count_end(t, name, ops, before);
        }
        Ok(v)
    }

    /// sync, then `echo 3 > /proc/sys/vm/drop_caches`, then settle.
    fn drop_caches(&self) -> io::Result<()> {
        drop_caches(self.daemon)
    }
}

/// sync, then `echo 3 > /proc/sys/vm/drop_caches`, then let `daemon` settle.
pub fn drop_caches(daemon: &Daemon) -> io::Result<()> {
    sync();
    fs::write("/proc/sys/vm/drop_caches", "3")?;
    daemon.settle(Duration::from_secs(10));
    Ok(())
}

/// `reps` repetitions × sides, alternating which side goes first.
pub fn order(reps: usize) -> Vec<(usize, Side)> {
    let mut v = Vec::new();
    for rep in 0..reps {
        if rep % 2 == 0 {
            v.extend([(rep, Side::Native), (rep, Side::Dfs)]);
        } else {
            v.extend([(rep, Side::Dfs), (rep, Side::Native)]);
        }
    }
    v
}

pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// splitmix64: small, fixed-seed, good enough for offsets.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Non-zero, non-repeating-looking bytes (so nothing can shortcut zeros).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A zeroed buffer that starts on a page boundary, as the buffers of cat,
/// cp and dd do. Where malloc or the stack puts a plain one changes with
/// unrelated code, and on some CPUs that decides the cost of the copy to
/// user space: on this bench's AMD EPYC host, reads into a destination 16
/// bytes past a 64-byte boundary (where glibc puts a 1 MiB Vec) run at
/// ~2.5 GB/s from the page cache against ~11 GB/s aligned, and add ~1.4 us
/// to a 4 KiB pread. Every timed read uses one (seq, rand, small/read,
/// tier2-read, the mover's client), and the timed writes (seq-write,
/// write-4k, small/create) write from one, so that the line measures the
/// filesystem, not where the buffer happened to land.
pub struct AlignedBuf {
    v: Vec<u8>,
    at: usize,
    len: usize,
}

impl AlignedBuf {
    const PAGE: usize = 4096;

    pub fn new(len: usize) -> AlignedBuf {
        let v = vec![0u8; len + Self::PAGE];
        // Never more than PAGE - 1 for a u8 pointer; the Vec never grows.
        let at = v.as_ptr().align_offset(Self::PAGE).min(Self::PAGE);
        AlignedBuf { v, at, len }
    }

    /// A page-aligned copy of `data`: the source of timed writes.
    pub fn from(data: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::new(data.len());
        b.as_mut().copy_from_slice(data);
        b
    }

    pub fn as_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.at..self.at + self.len]
    }

    pub fn as_ref(&self) -> &[u8] {
        &self.v[self.at..self.at + self.len]
    }
}

/// Reads a file to its end with `buf`-sized reads; returns the byte count.
pub fn read_whole(path: &Path, buf: &mut [u8]) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut total = 0u64;
    loop {
        match f.read(buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// Writes `total` bytes to a new file with `chunk`-sized writes, then fsync.
pub fn write_file(path: &Path, chunk: &[u8], total: u64) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

pub fn check(cond: bool, what: impl FnOnce() -> String) -> io::Result<()> {
    if cond {
        Ok(())
    } else {
        Err(io::Error::other(what()))
    }
}

/// `dirs` directory paths under `base` and `files` file paths spread over
/// them round-robin, named `{prefix}{i}`.
fn layout(base: &Path, dirs: usize, files: usize, prefix: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let ds: Vec<PathBuf> = (0..dirs).map(|d| base.join(format!("d{d:03}"))).collect();
    let fs = (0..files)
        .map(|i| ds[i % dirs].join(format!("{prefix}{i:06}")))
        .collect();
    (ds, fs)
}

/// Re-roots a path made by `layout` under another base.
pub fn rebase(p: &Path, from: &Path, to: &Path) -> PathBuf {
    to.join(p.strip_prefix(from).expect("path under base"))
}

fn stat_all(files: &[PathBuf]) -> io::Result<()> {
    for f in files {
        fs::metadata(f)?;
    }
    Ok(())
}

fn read_all(files: &[PathBuf], buf: &mut [u8], size: usize) -> io::Result<()> {
    for f in files {
        let n = read_whole(f, buf)?;
        check(n == size as u64, || {
            format!("{}: read {n} bytes, expected {size}", f.display())
        })?;
    }
    Ok(())
}

/// Runs a command, fails on a non-zero status (other than those allowed),
/// returns its stdout.
pub fn run(cmd: &mut Command, ok_codes: &[i32]) -> io::Result<String> {
    let out = cmd.output()?;
    let code = out.status.code().unwrap_or(-1);
    if code != 0 && !ok_codes.contains(&code) {
        return Err(io::Error::other(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------

/// seq-write (1 MiB writes + fsync), seq-read-cold (after drop_caches),
/// seq-read-warm, all on the same file; then write-4k (beyond the issue's
/// list): a sixteenth of the size in 4 KiB writes into the page cache, no
/// fsync, which is what one write(2) costs. MB = 10^6 bytes.
///
/// The sides take turns for everything up to the cold read; then, with
/// every side's file written and read once more (a later side's
/// drop_caches emptied an earlier side's cache), seq-read-warm reads each
/// whole file `WARM_PASSES` times, interleaved (see `Ctx::interleaved`),
/// with the floor probe's passthrough copy as a third side when dfs serves
/// reads by passthrough.
pub fn seq(ctx: &Ctx, t: &mut Table) -> io::Result<()> {
    let s = &ctx.sizes;
    let chunk = AlignedBuf::from(&pattern(s.io_size, 1));
    let chunk = chunk.as_ref();
    let mut aligned = AlignedBuf::new(s.io_size);
    let buf = aligned.as_mut();
    let mb = s.seq_bytes as f64 / 1e6;
    let small = s.seq_bytes / 16;
    let probe = PtProbe::start(ctx, &ctx.scratch.join("probe-seq.dat"), |p| {
        write_file(p, chunk, s.seq_bytes)
    })?;
    let lanes = ctx.lanes(probe.as_ref());
    let warm = Line {
        name: "seq-read-warm",
        unit: "MB/s",
        op: "MB (1 MiB reads)",
    };
    let order = ctx.order();
    for rep in 0..ctx.reps {
        for &(_, side) in order.iter().filter(|(r, _)| *r == rep) {
            let path = ctx.root(side).join("seq.dat");
            sync();
            ctx.settle();
            ctx.rate(t, "seq-write", "MB/s", side, mb, || {
                write_file(&path, chunk, s.seq_bytes)
            })?;

            let path4k = ctx.root(side).join("write4k.dat");
            ctx.rate(t, "write-4k", "MB/s", side, small as f64 / 1e6, || {
                let mut f = File::create(&path4k)?;
                for at in (0..small).step_by(4096) {
                    let n = (small - at).min(4096) as usize;
                    f.write_all(&chunk[..n])?;
                }
                Ok(())
            })?;
            fs::remove_file(&path4k)?;

            ctx.drop_caches()?;
            let n = ctx.rate(t, "seq-read-cold", "MB/s", side, mb, || {
                read_whole(&path, buf)
            })?;
            check(n == s.seq_bytes, || format!("seq-read-cold read {n} bytes"))?;
        }

        let paths: Vec<PathBuf> = lanes
            .iter()
            .map(|&lane| ctx.lane_file(lane, probe.as_ref(), "seq.dat"))
            .collect::<io::Result<_>>()?;
        for p in &paths {
            read_whole(p, buf)?;
        }
        let before = probe.as_ref().map(|p| p.requests());
        let pt = ctx.interleaved(t, &warm, rep, &lanes, WARM_PASSES, |i, _| {
            let n = read_whole(&paths[i], buf)?;
            check(n == s.seq_bytes, || {
                format!("seq-read-warm: {} read {n} bytes", paths[i].display())
            })?;
            Ok(mb)
        })?;
        if let (Some(p), Some(x), Some(before)) = (&probe, pt, before) {
            let requests = p.requests() - before;
            t.probe_rate(warm.name, warm.unit, warm.op, x.ops, x.secs, requests);
        }

        for &side in ctx.sides() {
            fs::remove_file(ctx.root(side).join("seq.dat"))?;
        }
    }
    if let Some(mut p) = probe {
        p.close()?;
    }
    Ok(())
}

/// rand-read-4k: pread of 4 KiB at random 4 KiB-aligned offsets (fixed
/// count, fixed seed) of a file that has been read once already. Each
/// repetition is cut into `SLICES` slices run on every side in turn (see
/// `Ctx::interleaved`), every side reading the same offsets, with the
/// floor probe's passthrough copy of the file as a third side when dfs
/// serves reads by passthrough: its rate is the line's floor.
pub fn rand_read(ctx: &Ctx, t: &mut Table) -> io::Result<()> {
    let s = &ctx.sizes;
    let chunk = pattern(s.io_size, 2);
    let mut buf = AlignedBuf::new(s.io_size);
    for &side in ctx.sides() {
        let path = ctx.root(side).join("rand.dat");
        write_file(&path, &chunk, s.rand_bytes)?;
        read_whole(&path, buf.as_mut())?;
    }
    // The probe's copy: the same content, in the scratch directory (the
    // native directory's disk); the probe reads it once through itself.
    let probe = PtProbe::start(ctx, &ctx.scratch.join("probe-rand.dat"), |p| {
        write_file(p, &chunk, s.rand_bytes)
    })?;
    ctx.settle();
    let lanes = ctx.lanes(probe.as_ref());
    let line = Line {
        name: "rand-read-4k",
        unit: "IOPS",
        op: "4 KiB pread",
    };
    let blocks = (s.rand_bytes / 4096).max(1);
    let mut block = AlignedBuf::new(4096);
    for rep in 0..ctx.reps {
        // Opened per repetition, as before, and closed before the probe
        // unmounts (also on an error).
        let files: Vec<File> = lanes
            .iter()
            .map(|&lane| File::open(ctx.lane_file(lane, probe.as_ref(), "rand.dat")?))
            .collect::<io::Result<_>>()?;
        let mut rngs = vec![Rng(SEED); lanes.len()];
        let before = probe.as_ref().map(|p| p.requests());
        let pt = ctx.interleaved(t, &line, rep, &lanes, SLICES, |i, slice| {
            let n = slice_len(s.rand_reads, SLICES, slice);
            let (f, rng) = (&files[i], &mut rngs[i]);
            for _ in 0..n {
                f.read_exact_at(block.as_mut(), (rng.next() % blocks) * 4096)?;
            }
            Ok(n as f64)
        })?;
        // Before the close, whose RELEASE is no part of the timed reads.
        let requests = probe.as_ref().zip(before).map(|(p, b)| p.requests() - b);
        drop(files);
        if let (Some(x), Some(requests)) = (pt, requests) {
            t.probe_rate(line.name, line.unit, line.op, x.ops, x.secs, requests);
        }
    }
    if let Some(mut p) = probe {
        p.close()?;
    }
    for &side in ctx.sides() {
        fs::remove_file(ctx.root(side).join("rand.dat"))?;
    }
    Ok(())
}

/// Small files, phase by phase: create (mkdir the directories, create and
/// write each file), stat, list (readdir of every directory; ops = entries),
/// read (open, read, close), stat-cold (after drop_caches), rename (within
/// its directory), delete (unlink every file, rmdir the directories).
pub fn small_files(ctx: &Ctx, t: &mut Table) -> io::Result<()> {
    let s = &ctx.sizes;
    let content = AlignedBuf::from(&pattern(s.small_size, 3));
    let content = content.as_ref();
    let mut buf = AlignedBuf::new(s.small_size + 4096);
    let n = s.small_files as f64;
    for (_, side) in ctx.order() {
        let base = ctx.root(side).join("small");
        let (dirs, files) = layout(&base, s.small_dirs, s.small_files, "f");
        let renamed: Vec<PathBuf> = files.iter().map(|f| f.with_extension("r")).collect();
        sync();
        ctx.settle();

        ctx.rate(t, "small/create", "ops/s", side, n, || {
            fs::create_dir(&base)?;
            for d in &dirs {
                fs::create_dir(d)?;
            }
            for f in &files {
                File::create(f)?.write_all(content)?;
            }
            Ok(())
        })?;

        ctx.rate(t, "small/stat", "ops/s", side, n, || stat_all(&files))?;

        let entries = ctx.rate(t, "small/list", "ops/s", side, n, || {
            let mut entries = 0usize;
            for d in &dirs {
                for e in fs::read_dir(d)? {
                    e?;
                    entries += 1;
                }
            }
            Ok(entries)
        })?;
        check(entries == s.small_files, || {
            format!("listed {entries} entries")
        })?;

        ctx.rate(t, "small/read", "ops/s", side, n, || {
            read_all(&files, buf.as_mut(), s.small_size)
        })?;

        ctx.drop_caches()?;
        ctx.rate(t, "small/stat-cold", "ops/s", side, n, || stat_all(&files))?;

        ctx.rate(t, "small/rename", "ops/s", side, n, || {
            for (a, b) in files.iter().zip(&renamed) {
                fs::rename(a, b)?;
            }
            Ok(())
        })?;

        ctx.rate(t, "small/delete", "ops/s", side, n, || {
            for f in &renamed {
                fs::remove_file(f)?;
            }
            for d in &dirs {
                fs::remove_dir(d)?;
            }
            fs::remove_dir(&base)
        })?;
    }
    Ok(())
}

/// Makes the tarball for the real-tree workload (uncompressed, so that
/// untar measures the filesystem, not gzip): `tar -cf TARBALL -C PARENT NAME`.
/// Returns the number of entries and the tarball's size.
pub fn make_tarball(src: &Path, tarball: &Path) -> io::Result<(u64, u64)> {
    let parent = src.parent().unwrap_or(Path::new("/"));
    let name = src
        .file_name()
        .ok_or_else(|| io::Error::other("tree source has no name"))?;
    run(
        Command::new("tar")
            .arg("-cf")
            .arg(tarball)
            .arg("-C")
            .arg(parent)
            .arg(name),
        &[],
    )?;
    let listing = run(Command::new("tar").arg("-tf").arg(tarball), &[])?;
    Ok((listing.lines().count() as u64, fs::metadata(tarball)?.len()))
}

/// A real tree: `tar -xf`, `grep -r -w -F -h -c WORD`, `du -s`, `rm -rf`
/// (seconds each; caches warm, as after an untar).
pub fn tree(ctx: &Ctx, t: &mut Table, tarball: &Path) -> io::Result<()> {
    let word = &ctx.sizes.grep_word;
    for (_, side) in ctx.order() {
        let dir = ctx.root(side).join("tree");
        fs::create_dir(&dir)?;
        sync();
        ctx.settle();
        ctx.time(t, "tree/untar", side, || {
            run(
                Command::new("tar")
                    .arg("-xf")
                    .arg(tarball)
                    .arg("-C")
                    .arg(&dir),
                &[],
            )
        })?;
        sync();
        ctx.settle();

        let out = ctx.time(t, "tree/grep", side, || {
            run(
                Command::new("grep")
                    .args(["-r", "-w", "-F", "-h", "-c", "--", word])
                    .arg(&dir),
                &[1],
            )
        })?;
        let matches: u64 = out
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum();

        let out = ctx.time(t, "tree/du", side, || {
            run(Command::new("du").arg("-s").arg(&dir), &[])
        })?;
        let kib = out.split_whitespace().next().unwrap_or("?").to_string();

        ctx.time(t, "tree/rm", side, || {
            run(Command::new("rm").arg("-rf").arg(&dir), &[])
        })?;
        eprintln!(
            "    ({}: grep counted {matches} lines with `{word}`; du -s said {kib} KiB)",
            side.name()
        );
    }
    Ok(())
}

/// neg-lookup: stat of names that exist nowhere, in directories present on
/// both tiers (made directly on the tiers; on the native side, in the native
/// directory). Fresh names every repetition, so no negative entry is reused.
pub fn neg_lookup(ctx: &Ctx, t: &mut Table) -> io::Result<()> {
    let s = &ctx.sizes;
    for &side in ctx.sides() {
        for tier in ctx.tier_dirs(side) {
            for d in 0..s.neg_dirs {
                fs::create_dir_all(tier.join(format!("neg/d{d:03}")))?;
            }
        }
    }
    ctx.settle();
    for &side in ctx.sides() {
        for d in 0..s.neg_dirs {
            fs::metadata(ctx.root(side).join(format!("neg/d{d:03}")))?;
        }
    }
    for (rep, side) in ctx.order() {
        let base = ctx.root(side).join("neg");
        let (_, names) = layout(&base, s.neg_dirs, s.neg_names, &format!("nx{rep}-"));
        ctx.rate(t, "neg-lookup", "ops/s", side, s.neg_names as f64, || {
            for n in &names {
                match fs::metadata(n) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Ok(_) => return Err(io::Error::other(format!("{} exists", n.display()))),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
    }
    for &side in ctx.sides() {
        fs::remove_dir_all(ctx.root(side).join("neg"))?;
    }
    Ok(())
}

/// tier2-stat and tier2-read: files that exist only on the second tier
/// (made directly on tier 1, in directories present on both tiers), then
/// stat and read (open, read, close) through the mount; the native side
/// does the same on files made in the native directory. Fresh files every
/// repetition, so the mount has never looked them up before.
pub fn tier2(ctx: &Ctx, t: &mut Table) -> io::Result<()> {
    let s = &ctx.sizes;
    let content = pattern(s.tier2_size, 4);
    let mut buf = AlignedBuf::new(s.tier2_size + 4096);
    let n = s.tier2_files as f64;
    for (rep, side) in ctx.order() {
        let base = ctx.root(side).join(format!("tier2-r{rep}"));
        let (dirs, files) = layout(&base, s.tier2_dirs, s.tier2_files, "f");
        let tiers = ctx.tier_dirs(side);
        for tier in &tiers {
            for d in &dirs {
                fs::create_dir_all(rebase(d, ctx.root(side), tier))?;
            }
        }
        let last = tiers.last().expect("a tier");
        for f in &files {
            File::create(rebase(f, ctx.root(side), last))?.write_all(&content)?;
        }
        sync();
        ctx.settle();
        for d in &dirs {
            fs::metadata(d)?;
        }

        ctx.rate(t, "tier2-stat", "ops/s", side, n, || stat_all(&files))?;
        ctx.rate(t, "tier2-read", "ops/s", side, n, || {
            read_all(&files, buf.as_mut(), s.tier2_size)
        })?;
    }
    for &side in ctx.sides() {
        for rep in 0..ctx.reps {
            fs::remove_dir_all(ctx.root(side).join(format!("tier2-r{rep}")))?;
        }
    }
    Ok(())
}

/// roundtrip (not one of the issue's lines; the floor under every other
/// one): fgetxattr of an absent attribute in dfs's own `trusted.dfs.`
/// namespace on an open file. The kernel caches no xattrs for FUSE, so on
/// the mount each call is one GETXATTR round trip to the daemon, which
/// answers ENODATA for that namespace before touching any tier: as close to
/// an empty round trip as a request gets. (Needs root, as the bench does.)
pub fn roundtrip(ctx: &Ctx, t: &mut Table) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let n = ctx.sizes.roundtrips;
    for &side in ctx.sides() {
        File::create(ctx.root(side).join("roundtrip"))?.write_all(b"x")?;
    }
    ctx.settle();
    let name = c"trusted.dfs.bench-absent";
    for (_, side) in ctx.order() {
        let f = File::open(ctx.root(side).join("roundtrip"))?;
        let fd = f.as_raw_fd();
        ctx.rate(t, ROUNDTRIP, "ops/s", side, n as f64, || {
            let mut b = [0u8; 64];
            for _ in 0..n {
                // SAFETY: valid fd, NUL-terminated name, buffer and its length.
                let r =
                    unsafe { libc::fgetxattr(fd, name.as_ptr(), b.as_mut_ptr().cast(), b.len()) };
                if r >= 0 {
                    return Err(io::Error::other("trusted.dfs.bench-absent exists"));
                }
            }
            Ok(())
        })?;
    }
    for &side in ctx.sides() {
        fs::remove_file(ctx.root(side).join("roundtrip"))?;
    }
    Ok(())
}

pub struct Memory {
    pub files: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub lookups_per_sec: f64,
}

impl Memory {
    pub fn bytes_per_file(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0 / self.files as f64
    }
}

/// memory: the daemon's VmRSS after stat through the mount of `mem_files`
/// distinct files (empty, made directly on tier 0, 1,000 per directory),
/// minus VmRSS before, per file. Leaves the files (the scratch directory
/// goes after the unmount): run it last.
pub fn memory(ctx: &Ctx) -> io::Result<Memory> {
    let s = &ctx.sizes;
    let dirs = s.mem_files.div_ceil(1000).max(1);
    let (ds, files) = layout(&ctx.mnt.join("mem"), dirs, s.mem_files, "m");
    for d in &ds {
        fs::create_dir_all(rebase(d, &ctx.mnt, &ctx.tiers[0]))?;
    }
    for f in &files {
        File::create(rebase(f, &ctx.mnt, &ctx.tiers[0]))?;
    }
    sync();
    // dfs sees these creations through its tier watcher: let it catch up.
    ctx.daemon.settle(Duration::from_secs(60));
    for d in &ds {
        fs::metadata(d)?;
    }
    ctx.settle();
    let rss = || ctx.daemon.status_field("VmRSS").unwrap_or(0);
    let before = rss();
    let ((), secs) = timed(|| stat_all(&files))?;
    ctx.settle();
    let after = rss();
    Ok(Memory {
        files: s.mem_files,
        rss_before_kib: before,
        rss_after_kib: after,
        lookups_per_sec: s.mem_files as f64 / secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_rotate_which_lane_goes_first() {
        // Three lanes: every slice is a rotation, and the first lane moves
        // on one step per slice, counting on across repetitions.
        assert_eq!(slice_order(3, 10, 0, 0), vec![0, 1, 2]);
        assert_eq!(slice_order(3, 10, 0, 1), vec![1, 2, 0]);
        assert_eq!(slice_order(3, 10, 0, 2), vec![2, 0, 1]);
        assert_eq!(slice_order(3, 10, 1, 0), vec![1, 2, 0]);
        // Two lanes alternate; one lane is alone.
        assert_eq!(slice_order(2, 10, 0, 3), vec![1, 0]);
        assert_eq!(slice_order(1, 10, 2, 7), vec![0]);
        assert!(slice_order(0, 10, 0, 0).is_empty());
        // Over 3 repetitions of 10 slices each lane holds every position
        // equally often.
        for lanes in 1..=3 {
            let mut at = vec![vec![0; lanes]; lanes];
            for rep in 0..3 {
                for slice in 0..10 {
                    let o = slice_order(lanes, 10, rep, slice);
                    let mut sorted = o.clone();
                    sorted.sort();
                    assert_eq!(sorted, (0..lanes).collect::<Vec<_>>());
                    for (pos, lane) in o.into_iter().enumerate() {
                        at[lane][pos] += 1;
                    }
                }
            }
            for row in &at {
                assert!(row.iter().all(|&n| n == 30 / lanes), "{lanes}: {at:?}");
            }
        }
    }

    #[test]
    fn slices_share_the_operations_out() {
        for (total, slices) in [(500_000, 10), (50_000, 10), (7, 10), (13, 4), (0, 3)] {
            let v: Vec<u64> = (0..slices).map(|i| slice_len(total, slices, i)).collect();
            assert_eq!(v.iter().sum::<u64>(), total, "{v:?}");
            let (lo, hi) = (v.iter().min().unwrap(), v.iter().max().unwrap());
            assert!(hi - lo <= 1, "{v:?}");
        }
        assert_eq!(slice_len(500_000, SLICES, 3), 50_000);
        assert_eq!(slice_len(u64::MAX, 2, 1), u64::MAX - u64::MAX / 2);
    }

    #[test]
    fn aligned_buffers_start_on_a_page() {
        for len in [1, 4096, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            let s = b.as_mut();
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % 4096, 0);
            assert!(s.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn every_lane_reads_the_same_offsets() {
        let mut a = Rng(SEED);
        let mut lanes = vec![Rng(SEED); 3];
        for _ in 0..1000 {
            let want = a.next();
            for r in lanes.iter_mut() {
                assert_eq!(r.next(), want);
            }
        }
    }
}
