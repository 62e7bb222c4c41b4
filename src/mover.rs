//! The mover: cold files go down to the cheap tier, re-read ones come back.
//!
//! It runs inside the mount daemon, where it sees every open handle and
//! every access. A pass plans first (which files, why, where to), then moves
//! each one with the core's safe switch ([`crate::fs::transfer`]), throttled
//! to the configured bandwidth. Passes run on a schedule and on demand
//! (`dfs move`).

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use globset::{Glob, GlobMatcher};
use parking_lot::{Condvar, Mutex};
use rustix::fs::{AtFlags, FileType, OFlags, RawDir};

use crate::access::now_secs;
use crate::config::{MoveOrder, MoverConfig};
use crate::fs::Fs;
use crate::fs::transfer::{Outcome, PreparedMove, Skip};
use crate::tiers::STATE_DIR;
use crate::watch::Invalidate;

/// Why a file was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// An age rule (its index in `[[mover.rule]]`, from 1).
    Rule(usize),
    /// The source tier was above its high watermark.
    Watermark,
    /// Read often enough to come back up.
    Promote,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Rule(i) => write!(f, "rule {i}"),
            Reason::Watermark => write!(f, "watermark"),
            Reason::Promote => write!(f, "promote"),
        }
    }
}

/// One planned move.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Path inside the mount.
    pub rel: Vec<u8>,
    /// Source tier.
    pub from: usize,
    /// Destination tier.
    pub to: usize,
    /// Size in bytes.
    pub size: u64,
    /// Seconds since last access.
    pub idle: u64,
    /// Why.
    pub reason: Reason,
}

/// Progress of a running pass.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Files planned.
    pub files_total: u64,
    /// Files handled so far (moved or skipped).
    pub files_done: u64,
    /// Files moved.
    pub files_moved: u64,
    /// Bytes planned.
    pub bytes_total: u64,
    /// Bytes copied so far.
    pub bytes_done: u64,
    /// Files skipped (busy, changed, no room, ...).
    pub skipped: u64,
    /// Errors.
    pub errors: u64,
    /// Seconds since the pass began.
    pub elapsed: f64,
}

/// What `dfs status` shows about the mover.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// When the last pass ended.
    pub last_pass: Option<SystemTime>,
    /// Outcome of the last pass.
    pub last: Option<Progress>,
    /// When the next scheduled pass starts.
    pub next_pass: Option<SystemTime>,
    /// The pass under way, if any.
    pub running: Option<Progress>,
    /// Files moved since the mount.
    pub moved_files: u64,
    /// Bytes moved since the mount.
    pub moved_bytes: u64,
    /// Errors since the mount.
    pub errors: u64,
    /// Regular files seen on each tier by the last pass.
    pub files_per_tier: Vec<u64>,
}

/// The mover of one mount.
pub struct Mover {
    core: Arc<Fs>,
    cfg: MoverConfig,
    rules: Vec<GlobMatcher>,
    pins: Vec<GlobMatcher>,
    inval: Mutex<Option<Arc<dyn Invalidate>>>,
    state: Mutex<State>,
    busy: Mutex<()>,
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
}

fn matcher(g: &str) -> GlobMatcher {
    // Globs were validated when the config was read.
    Glob::new(g)
        .unwrap_or_else(|_| Glob::new("**").expect("the glob ** is valid"))
        .compile_matcher()
}

impl Mover {
    /// A mover for `core` with `cfg`.
    pub fn new(core: Arc<Fs>, cfg: MoverConfig) -> Arc<Self> {
        if let Some(p) = &cfg.promote {
            core.access
                .set_window(p.within.as_secs().min(u64::from(u32::MAX)) as u32);
        }
        Arc::new(Mover {
            rules: cfg.rules.iter().map(|r| matcher(&r.glob)).collect(),
            pins: cfg.pins.iter().map(|p| matcher(&p.glob)).collect(),
            core,
            cfg,
            inval: Mutex::new(None),
            state: Mutex::new(State::default()),
            busy: Mutex::new(()),
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Lets the mover tell the kernel when a file changed tier.
    pub fn set_invalidator(&self, inval: Arc<dyn Invalidate>) {
        *self.inval.lock() = Some(inval);
    }

    /// A snapshot of the mover's state.
    pub fn state(&self) -> State {
        self.state.lock().clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &MoverConfig {
        &self.cfg
    }

    fn access_path(&self) -> Option<std::path::PathBuf> {
        self.core
            .tiers()
            .get(0)
            .map(|t| t.path.join(STATE_DIR).join("access.bin"))
    }

    /// Loads the saved access record (at mount).
    pub fn load_access(&self) {
        if let Some(p) = self.access_path() {
            match self.core.access.load(&p) {
                Ok(n) => log::info!("mover: {n} access records loaded from {}", p.display()),
                Err(e) => log::warn!(
                    "mover: access record {} unusable ({e}); files' own times stand in",
                    p.display()
                ),
            }
        }
    }

    /// Saves the access record beside the tiers.
    pub fn save_access(&self) {
        if let Some(p) = self.access_path()
            && let Err(e) = self.core.access.save(&p)
        {
            log::warn!(
                "mover: cannot save the access record to {}: {e}",
                p.display()
            );
        }
    }

    /// Runs passes on the schedule until [`Mover::shutdown`].
    pub fn spawn_schedule(self: &Arc<Self>) {
        let me = self.clone();
        let r = std::thread::Builder::new()
            .name("dfs-mover".into())
            .spawn(move || me.schedule());
        if let Err(e) = r {
            log::error!("mover: cannot start the schedule thread: {e}");
        }
    }

    fn schedule(self: Arc<Self>) {
        let Some(interval) = self.cfg.interval else {
            return;
        };
        loop {
            self.state.lock().next_pass = Some(SystemTime::now() + interval);
            {
                let (lock, cv) = &self.wake;
                let mut woken = lock.lock();
                if !*woken {
                    cv.wait_for(&mut woken, interval);
                }
                *woken = false;
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let report = self.run_pass(&mut |_| {});
            log::info!(
                "mover: scheduled pass moved {} files ({} bytes), skipped {}, {} errors",
                report.files_moved,
                report.bytes_done,
                report.skipped,
                report.errors
            );
        }
    }

    /// Stops the schedule and saves the access record.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let (lock, cv) = &self.wake;
        *lock.lock() = true;
        cv.notify_all();
        self.save_access();
    }

    /// Last access of a file: dfs's record, else max(atime, mtime).
    fn last_access(&self, ino: u64, st: &rustix::fs::Stat) -> u32 {
        match self.core.access.get(ino) {
            Some(a) => a.last,
            None => st.st_atime.max(st.st_mtime).clamp(0, i64::from(u32::MAX)) as u32,
        }
    }

    fn pinned(&self, rel: &[u8], tier: usize) -> bool {
        let p = Path::new(OsStr::from_bytes(rel));
        self.cfg
            .pins
            .iter()
            .zip(&self.pins)
            .any(|(pin, m)| pin.tier == tier && m.is_match(p))
    }

    /// Decides what a pass would move, without moving anything.
    pub fn plan(&self) -> Vec<Candidate> {
        let now = now_secs();
        let ntiers = self.core.tiers().len();
        let mut out: Vec<Candidate> = Vec::new();
        let mut counts = vec![0u64; ntiers];
        #[allow(clippy::needless_range_loop)] // t is a tier index, not just a counter
        for t in 0..ntiers {
            let mut files: Vec<(Vec<u8>, rustix::fs::Stat, u64)> = Vec::new();
            self.walk(t, &mut |rel, st| {
                let ino = self.core.union_ino(t, rel, st);
                files.push((rel.to_vec(), *st, ino));
            });
            counts[t] = files.len() as u64;
            let mut chosen: Vec<bool> = vec![false; files.len()];
            // Age rules: the first rule matching the file decides.
            for (i, (rel, st, ino)) in files.iter().enumerate() {
                if self.pinned(rel, t) {
                    continue;
                }
                let idle = u64::from(now.saturating_sub(self.last_access(*ino, st)));
                let p = Path::new(OsStr::from_bytes(rel));
                let rule = self
                    .cfg
                    .rules
                    .iter()
                    .zip(&self.rules)
                    .enumerate()
                    .find(|(_, (r, m))| r.from == t && m.is_match(p));
                if let Some((ri, (r, _))) = rule {
                    let size = st.st_size as u64;
                    let mtime_age = (i64::from(now) - st.st_mtime).max(0) as u64;
                    let ok = r.not_accessed_for.is_none_or(|d| idle >= d.as_secs())
                        && r.not_modified_for.is_none_or(|d| mtime_age >= d.as_secs())
                        && r.min_size.is_none_or(|m| size >= m)
                        && r.max_size.is_none_or(|m| size <= m);
                    if ok && r.to < ntiers {
                        chosen[i] = true;
                        out.push(Candidate {
                            rel: rel.clone(),
                            from: t,
                            to: r.to,
                            size,
                            idle,
                            reason: Reason::Rule(ri + 1),
                        });
                    }
                }
            }
            // Watermark: above `high`, demote in order until below `low`.
            if let Some(w) = self.cfg.watermarks.iter().find(|w| w.tier == t)
                && t + 1 < ntiers
            {
                let space = self.core.tier_space(t);
                let used = space.total_bytes.saturating_sub(space.free_bytes);
                let high = w.high.bytes_of(space.total_bytes);
                let low = w.low.bytes_of(space.total_bytes);
                let already: u64 = out.iter().filter(|c| c.from == t).map(|c| c.size).sum();
                let mut projected = used.saturating_sub(already);
                if used > high && projected > low {
                    let mut pool: Vec<(usize, u64, u64)> = files
                        .iter()
                        .enumerate()
                        .filter(|(i, (rel, _, _))| !chosen[*i] && !self.pinned(rel, t))
                        .map(|(i, (_, st, ino))| {
                            let idle = u64::from(now.saturating_sub(self.last_access(*ino, st)));
                            (i, idle, st.st_size as u64)
                        })
                        .collect();
                    match self.cfg.order {
                        MoveOrder::Lru => pool.sort_by_key(|e| std::cmp::Reverse(e.1)),
                        MoveOrder::SizeLru => pool.sort_by(|a, b| {
                            (b.1 as u128 * b.2 as u128).cmp(&(a.1 as u128 * a.2 as u128))
                        }),
                    }
                    for (i, idle, size) in pool {
                        if projected <= low {
                            break;
                        }
                        chosen[i] = true;
                        projected = projected.saturating_sub(size);
                        out.push(Candidate {
                            rel: files[i].0.clone(),
                            from: t,
                            to: t + 1,
                            size,
                            idle,
                            reason: Reason::Watermark,
                        });
                    }
                }
            }
            // Promotion: read `reads` times within the window, back to tier 0.
            if let Some(p) = &self.cfg.promote
                && t > 0
            {
                for (i, (rel, st, ino)) in files.iter().enumerate() {
                    if chosen[i] || self.pinned(rel, t) {
                        continue;
                    }
                    let Some(a) = self.core.access.get(*ino) else {
                        continue;
                    };
                    let in_window =
                        u64::from(now.saturating_sub(a.window_start)) <= p.within.as_secs();
                    if a.reads >= p.reads && in_window {
                        out.push(Candidate {
                            rel: rel.clone(),
                            from: t,
                            to: 0,
                            size: st.st_size as u64,
                            idle: u64::from(now.saturating_sub(a.last)),
                            reason: Reason::Promote,
                        });
                    }
                }
            }
        }
        self.state.lock().files_per_tier = counts;
        // Promotions must not push the fast tier over its high watermark.
        if let Some(w) = self.cfg.watermarks.iter().find(|w| w.tier == 0) {
            let space = self.core.tier_space(0);
            let high = w.high.bytes_of(space.total_bytes);
            let mut used = space.total_bytes.saturating_sub(space.free_bytes);
            out.retain(|c| {
                if c.reason != Reason::Promote {
                    return true;
                }
                if used + c.size > high {
                    return false;
                }
                used += c.size;
                true
            });
        }
        out
    }

    /// Walks the regular files whose winning copy is on tier `t`.
    fn walk(&self, t: usize, f: &mut dyn FnMut(&[u8], &rustix::fs::Stat)) {
        let Some(tier) = self.core.tiers().get(t) else {
            return;
        };
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        let mut buf: Vec<MaybeUninit<u8>> = vec![MaybeUninit::uninit(); 64 * 1024];
        while let Some(dir) = stack.pop() {
            let Ok(fd) = tier.open(&dir, OFlags::RDONLY | OFlags::DIRECTORY) else {
                continue;
            };
            let mut names: Vec<(Vec<u8>, FileType)> = Vec::new();
            {
                let mut it = RawDir::new(&fd, &mut buf);
                while let Some(Ok(e)) = it.next() {
                    let n = e.file_name().to_bytes();
                    if n == b"." || n == b".." || (dir.is_empty() && n == STATE_DIR.as_bytes()) {
                        continue;
                    }
                    names.push((n.to_vec(), e.file_type()));
                }
            }
            for (n, ty) in names {
                let mut rel = dir.clone();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(&n);
                if ty == FileType::Directory {
                    stack.push(rel);
                    continue;
                }
                let Ok(st) =
                    rustix::fs::statat(&fd, OsStr::from_bytes(&n), AtFlags::SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    continue;
                }
                // Only winning copies: a shadowed copy is not the file.
                if matches!(self.core.find(&rel), Ok(Some((w, _))) if w == t) {
                    f(&rel, &st);
                }
            }
        }
    }

    /// Runs one pass now (waits for a running one to finish first).
    /// `report` sees the progress after every file.
    ///
    /// Shape of a pass: [`COPIERS`] threads (one when throttled) copy the planned files to
    /// temporaries (several reads in flight keep the source disk busy); this
    /// thread gathers the copies into batches and books outcomes; one more
    /// thread switches each batch while the next is being copied, so the
    /// copies' writeback and syncs overlap the next reads, and each batch
    /// commits its directories once instead of once per file.
    pub fn run_pass(&self, report: &mut dyn FnMut(&Progress)) -> Progress {
        let _one = self.busy.lock();
        let planned = Instant::now();
        let plan = self.plan();
        let plan_secs = planned.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut p = Progress {
            files_total: plan.len() as u64,
            bytes_total: plan.iter().map(|c| c.size).sum(),
            ..Progress::default()
        };
        self.state.lock().running = Some(p.clone());
        let throttle = Throttle::new(self.cfg.bandwidth);
        const BATCH_FILES: usize = 256;
        const BATCH_BYTES: u64 = 128 << 20;
        type Prepared = crate::fs::Result<Result<PreparedMove, Skip>>;
        type Batch = Vec<(usize, PreparedMove)>;
        type Done = Vec<(usize, crate::fs::Result<Outcome>)>;
        let mut commit_secs = 0.0;
        let next = AtomicUsize::new(0);
        let copied_bytes = AtomicU64::new(0);
        std::thread::scope(|scope| {
            // Bounded, so the copies (each an open temporary, and its space
            // on the destination) stay at most a few batches ahead of
            // their switch however long the plan.
            let (copied_tx, copied) =
                std::sync::mpsc::sync_channel::<(usize, Prepared)>(BATCH_FILES);
            // One batch waits while another commits: copies stay at most
            // two batches ahead of their switch.
            let (to_commit, batches) = std::sync::mpsc::sync_channel::<Batch>(1);
            let (done_tx, done) = std::sync::mpsc::channel::<Done>();
            let (core, plan, next, copied_bytes, throttle) =
                (&self.core, &plan, &next, &copied_bytes, &throttle);
            // A throttled pass is there to leave the disk and CPUs to the
            // clients: one copier is enough to reach its rate.
            let copiers = if self.cfg.bandwidth.is_some() {
                1
            } else {
                COPIERS
            };
            for _ in 0..copiers.min(plan.len()) {
                let tx = copied_tx.clone();
                scope.spawn(move || {
                    loop {
                        let idx = next.fetch_add(1, Ordering::Relaxed);
                        let Some(c) = plan.get(idx) else { break };
                        let mut on_chunk = |n: u64| {
                            copied_bytes.fetch_add(n, Ordering::Relaxed);
                            throttle.spend(n);
                        };
                        let r = core.prepare_move(&c.rel, c.from, c.to, &mut on_chunk);
                        if tx.send((idx, r)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(copied_tx);
            // Each switched batch's durability and placeholder cleanup runs
            // on a thread of its own, in order, while the next batch is
            // switched; the pass ends when it is done.
            let (to_clean, cleanups) = std::sync::mpsc::channel::<crate::fs::transfer::Cleanup>();
            scope.spawn(move || {
                for c in cleanups {
                    c.finish();
                }
            });
            let committer = scope.spawn(move || {
                let mut secs = 0.0;
                for batch in batches {
                    let t = Instant::now();
                    let (idxs, moves): (Vec<usize>, Vec<_>) = batch.into_iter().unzip();
                    let (results, cleanup) = core.switch_moves(moves);
                    if let Err(std::sync::mpsc::SendError(cleanup)) = to_clean.send(cleanup) {
                        cleanup.finish();
                    }
                    secs += t.elapsed().as_secs_f64();
                    // Results come back by path; find the candidate.
                    let out = results
                        .into_iter()
                        .filter_map(|(rel, r)| {
                            idxs.iter().find(|&&k| plan[k].rel == rel).map(|&k| (k, r))
                        })
                        .collect();
                    if done_tx.send(out).is_err() {
                        break;
                    }
                }
                secs
            });
            let mut batch: Batch = Vec::new();
            let mut batch_bytes: u64 = 0;
            // Ends when every copier has finished.
            for (idx, r) in copied.iter() {
                p.bytes_done = copied_bytes.load(Ordering::Relaxed);
                match r {
                    Ok(Ok(prepared)) => {
                        batch_bytes += prepared.bytes();
                        batch.push((idx, prepared));
                    }
                    Ok(Err(why)) => self.account(
                        &mut p,
                        &plan[idx],
                        Ok(Outcome::Skipped(why)),
                        report,
                        started,
                    ),
                    Err(e) => self.account(&mut p, &plan[idx], Err(e), report, started),
                }
                if batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
                    batch_bytes = 0;
                    // The committer only stops early by panicking; the
                    // batch's temporaries are then left for the next start.
                    let _ = to_commit.send(std::mem::take(&mut batch));
                }
                for results in done.try_iter() {
                    for (k, r) in results {
                        self.account(&mut p, &plan[k], r, report, started);
                    }
                }
            }
            if !batch.is_empty() {
                let _ = to_commit.send(std::mem::take(&mut batch));
            }
            drop(to_commit);
            // The committer ends once the last batch is switched.
            for results in done.iter() {
                for (k, r) in results {
                    self.account(&mut p, &plan[k], r, report, started);
                }
            }
            commit_secs = committer.join().unwrap_or(0.0);
        });
        p.bytes_done = copied_bytes.load(Ordering::Relaxed);
        p.elapsed = started.elapsed().as_secs_f64();
        log::info!(
            "mover: pass moved {} of {} files ({} bytes) in {:.2} s (plan {:.2} s, switching {:.2} s alongside the copies), {} skipped, {} errors",
            p.files_moved,
            p.files_total,
            p.bytes_done,
            p.elapsed,
            plan_secs,
            commit_secs,
            p.skipped,
            p.errors
        );
        {
            let mut s = self.state.lock();
            s.running = None;
            s.last = Some(p.clone());
            s.last_pass = Some(SystemTime::now());
            s.moved_files += p.files_moved;
            s.moved_bytes += p.bytes_done;
            s.errors += p.errors;
        }
        self.save_access();
        p
    }

    /// Books one file's outcome into the pass's progress and the state.
    fn account(
        &self,
        p: &mut Progress,
        c: &Candidate,
        r: crate::fs::Result<Outcome>,
        report: &mut dyn FnMut(&Progress),
        started: Instant,
    ) {
        match r {
            Ok(Outcome::Moved { .. }) => {
                p.files_moved += 1;
                {
                    let mut st = self.state.lock();
                    if let Some(n) = st.files_per_tier.get_mut(c.from) {
                        *n = n.saturating_sub(1);
                    }
                    if let Some(n) = st.files_per_tier.get_mut(c.to) {
                        *n += 1;
                    }
                }
                if c.reason == Reason::Promote
                    && let Some(ino) = self.core.held_ino(&c.rel)
                {
                    self.core.access.reset_reads(ino);
                }
                self.invalidate(&c.rel);
                log::info!(
                    "mover: {:?} {} -> {} ({}, {} bytes, idle {} s)",
                    OsStr::from_bytes(&c.rel),
                    self.tier_name(c.from),
                    self.tier_name(c.to),
                    c.reason,
                    c.size,
                    c.idle
                );
            }
            Ok(Outcome::Skipped(why)) => {
                p.skipped += 1;
                log::info!("mover: skipped {:?}: {why}", OsStr::from_bytes(&c.rel));
            }
            Err(e) => {
                p.errors += 1;
                log::error!("mover: moving {:?} failed: {e}", OsStr::from_bytes(&c.rel));
            }
        }
        p.files_done += 1;
        p.elapsed = started.elapsed().as_secs_f64();
        self.state.lock().running = Some(p.clone());
        report(p);
    }

    fn invalidate(&self, rel: &[u8]) {
        let inval = self.inval.lock().clone();
        if let (Some(inval), Some(ino)) = (inval, self.core.held_ino(rel)) {
            inval.inode(ino, false);
        }
    }

    /// The name of tier `i`.
    pub fn tier_name(&self, i: usize) -> String {
        self.core
            .tiers()
            .get(i)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("#{i}"))
    }
}

/// Threads copying files in a pass: two reads in flight keep a disk busier
/// than one, and the copies themselves are cheap on the CPU
/// (`copy_file_range`).
const COPIERS: usize = 2;

/// The copy throttle (`[mover] bandwidth`), shared by the copying threads:
/// each chunk copied sleeps until the pass is back under the rate. The
/// budget restarts every 10 s, so a pause does not buy a burst.
struct Throttle {
    rate: Option<u64>,
    window: Mutex<(Instant, u64)>,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Books `n` bytes copied; sleeps as long as the rate asks.
    fn spend(&self, n: u64) {
        let Some(rate) = self.rate.filter(|&r| r > 0) else {
            return;
        };
        let wait = {
            let mut w = self.window.lock();
            w.1 += n;
            let due = Duration::from_secs_f64(w.1 as f64 / rate as f64);
            let spent = w.0.elapsed();
            if spent > Duration::from_secs(10) {
                *w = (Instant::now(), 0);
            }
            due.saturating_sub(spent)
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}
