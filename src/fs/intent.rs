//! Namespace changes that take a step on each of several tiers, made
//! all-or-nothing for clients and across a crash.
//!
//! A rename whose target has a copy on a faster tier than its source, a
//! rename of a directory present on several tiers and a RENAME_EXCHANGE of
//! names on different tiers each take one rename (or swap) per tier, then
//! the removal of the target's stale copies. In between, the union is
//! neither the old state nor the new one: a name is missing, or shows a
//! stale copy, or a directory's entries are split between two names. So
//! when a change has several such steps:
//!
//! - Concurrent lookups and listings through dfs wait for the steps (the
//!   scan locks of both names and the listing lock, as the mover's switch
//!   takes them, and the node table is updated before they are let go), so
//!   no client sees a state in between.
//! - Before the first step an *intent record* is written and synced into
//!   the state directory of the first tier involved (`.dfs/intent/`). It
//!   names both paths, the tiers by name, and every step with the identity
//!   (inode number and birth time) of what it moves, so whether a step ran
//!   can be read off the tiers later. The record goes once the steps, or
//!   their undoing, are durable. The tiers stay the only truth
//!   (principle 1): a record only says what to look at.
//! - The renames and swaps come first and can each be undone; the removals
//!   of stale copies come last. A step that fails has the renames and
//!   swaps before it undone, and the call fails as if nothing happened.
//!   (A removal that ran before is of a copy nobody could see: a shadowed
//!   stale copy, or an empty leftover of a directory.) An empty leftover
//!   that cannot be removed (something appeared in it meanwhile) is left:
//!   it merges into the renamed directory, and nothing is lost.
//! - After a crash, the next mount (before it serves anything) looks at
//!   each record: if every rename and swap ran, it removes the stale copies
//!   that are still the recorded ones (same inode, unchanged ctime); if
//!   some did not, it undoes those that did. Where a step matches neither
//!   state (the tier changed meanwhile) it touches nothing, says so, and
//!   keeps the record as `*.unresolved` for the operator.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Stat, StatxFlags};
use serde::{Deserialize, Serialize};

use super::{Errno, Fs, Result, not_here, os};
use crate::creds::Caller;
use crate::tiers::split_parent;

/// Where intent records live, inside each tier's state directory.
pub const INTENT_DIR: &str = "intent";

/// Suffix of a record recovery could not bring to an end.
const UNRESOLVED: &str = ".unresolved";

/// What a record changes (for messages; the steps say how).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// rename(a, b).
    Rename,
    /// RENAME_EXCHANGE of a and b.
    Exchange,
}

/// One of the two paths of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    A,
    B,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Rename => "rename",
            Op::Exchange => "exchange",
        })
    }
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Which inode a step moves: its number and, where the filesystem keeps
/// it, its birth time, so that an inode number reused by a new file after
/// a crash is not taken for the one recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Id {
    pub ino: u64,
    /// Seconds and nanoseconds; `[0, 0]` when unknown.
    pub born: [i64; 2],
}

impl Id {
    fn is(&self, other: &Id) -> bool {
        let unknown = |b: &[i64; 2]| *b == [0, 0];
        self.ino == other.ino
            && (unknown(&self.born) || unknown(&other.born) || self.born == other.born)
    }
}

/// How a stale copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Removal {
    /// A copy of the target that the change makes stale: unlinked (a whole
    /// tree only for a directory shadowed under a file, which no client
    /// can see). If it cannot go, the change fails and is undone.
    Stale,
    /// The target's empty copy, swapped aside to the source's path on the
    /// same tier: `rmdir`. If it cannot go (something appeared in it), the
    /// change fails and is undone, as a plain rename onto a directory that
    /// is not empty fails.
    Aside,
    /// An empty copy of the target on a tier the source has none: `rmdir`.
    /// If it cannot go, it stays and merges into the renamed directory.
    Leftover,
}

/// One step, on one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "lowercase")]
pub enum Step {
    /// Rename the copy `id` at `from` to the other path (which it replaces
    /// only in a rename, never in an exchange).
    Move { tier: usize, from: Side, id: Id },
    /// Swap the copies at a (`a`) and b (`b`) in one `RENAME_EXCHANGE`.
    Swap { tier: usize, a: Id, b: Id },
    /// Remove the copy `ino` now at `at`, last changed at `ctime` (seconds,
    /// nanoseconds) when the step was planned.
    Remove {
        tier: usize,
        at: Side,
        ino: u64,
        ctime: [i64; 2],
        how: Removal,
    },
}

impl Step {
    /// The removal of the copy whose stat is `st`.
    pub fn remove(tier: usize, at: Side, st: &Stat, how: Removal) -> Step {
        Step::Remove {
            tier,
            at,
            ino: st.st_ino,
            ctime: [st.st_ctime, st.st_ctime_nsec as i64],
            how,
        }
    }

    fn tier(&self) -> usize {
        match *self {
            Step::Move { tier, .. } | Step::Swap { tier, .. } | Step::Remove { tier, .. } => tier,
        }
    }

    /// Whether this is a rename or swap (which can be undone).
    fn moves(&self) -> bool {
        !matches!(self, Step::Remove { .. })
    }

    fn with_tier(mut self, t: usize) -> Step {
        match &mut self {
            Step::Move { tier, .. } | Step::Swap { tier, .. } | Step::Remove { tier, .. } => {
                *tier = t
            }
        }
        self
    }
}

/// A change of several steps: what the record holds. Paths are relative
/// to the tier roots, hex-encoded in the record (names are bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub op: Op,
    pub a: Vec<u8>,
    pub b: Vec<u8>,
    pub steps: Vec<Step>,
}

/// The record's on-disk form (TOML).
#[derive(Debug, Serialize, Deserialize)]
struct RecordFile {
    op: Op,
    a: String,
    b: String,
    /// The names of the tiers, in the order the steps' indices refer to:
    /// a later mount may order (or name) its tiers differently.
    tiers: Vec<String>,
    step: Vec<Step>,
}

/// The record's last line: a record cut short by a crash while it was
/// written (before any step ran) lacks it and is not read.
const TRAILER: &str = "# complete\n";

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Intent {
    fn path(&self, s: Side) -> &[u8] {
        match s {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The record's text, with the tiers named as `tiers` (in order).
    pub fn encode(&self, tiers: &[String]) -> String {
        let r = RecordFile {
            op: self.op,
            a: hex(&self.a),
            b: hex(&self.b),
            tiers: tiers.to_vec(),
            step: self.steps.clone(),
        };
        let mut text = toml::to_string(&r).unwrap_or_default();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text + TRAILER
    }

    /// Parses a record's text, mapping its tiers onto `tiers` (by name);
    /// `Err(None)` for a record cut short (or no record at all),
    /// `Err(Some(name))` for one naming a tier the mount does not have.
    pub fn decode(text: &str, tiers: &[String]) -> std::result::Result<Intent, Option<String>> {
        let body = text.strip_suffix(TRAILER).ok_or(None)?;
        let r: RecordFile = toml::from_str(body).map_err(|_| None)?;
        let mut steps = Vec::with_capacity(r.step.len());
        for s in r.step {
            let name = r.tiers.get(s.tier()).ok_or(None)?;
            let now = tiers
                .iter()
                .position(|t| t == name)
                .ok_or_else(|| Some(name.clone()))?;
            steps.push(s.with_tier(now));
        }
        Ok(Intent {
            op: r.op,
            a: unhex(&r.a).ok_or(None)?,
            b: unhex(&r.b).ok_or(None)?,
            steps,
        })
    }
}

/// Test hook (`DFS_FAULT_INTENT`): what a recorded change does when it
/// reaches step `at` (0-based), so tests can check the undo and the
/// recovery without a faulty disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Step `at` fails with EIO, as a tier's error would.
    Fail(usize),
    /// Stop before step `at` as a killed daemon would: nothing is undone
    /// and the record stays (for tests that drive the core in-process).
    Abandon(usize),
    /// SIGKILL the daemon before step `at`.
    Kill(usize),
}

impl Fault {
    /// `fail:N`, `abandon:N` or `kill:N`.
    pub fn parse(s: &str) -> Option<Fault> {
        let (kind, at) = s.trim().split_once(':')?;
        let at: usize = at.parse().ok()?;
        match kind {
            "fail" => Some(Fault::Fail(at)),
            "abandon" => Some(Fault::Abandon(at)),
            "kill" => Some(Fault::Kill(at)),
            _ => None,
        }
    }
}

/// Where a step stands on its tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    NotDone,
    /// Neither: the tier changed since.
    Unknown,
    /// The tier could not be read (try again later).
    Error,
}

/// The identity of `rel` on tier `t`, with its stat: `Ok(None)` when
/// absent.
fn id_at(t: &crate::tiers::Tier, rel: &[u8]) -> std::io::Result<Option<Id>> {
    let (dir, name) = match t.parent(rel) {
        Ok(p) => p,
        Err(e) if not_here(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    match rustix::fs::statx(
        &dir,
        os(name),
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::INO | StatxFlags::BTIME,
    ) {
        Ok(x) => {
            let born = if x.stx_mask & StatxFlags::BTIME.bits() != 0 {
                [x.stx_btime.tv_sec, i64::from(x.stx_btime.tv_nsec)]
            } else {
                [0, 0]
            };
            Ok(Some(Id {
                ino: x.stx_ino,
                born,
            }))
        }
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A written record, removed once its change is durable or undone.
pub(super) struct Record {
    dir: Arc<OwnedFd>,
    name: String,
}

impl Record {
    fn remove(self) {
        if let Err(e) = rustix::fs::unlinkat(&*self.dir, self.name.as_str(), AtFlags::empty()) {
            log::warn!("cannot remove intent record {}: {e}", self.name);
        }
    }
}

/// The locks [`Fs::quiesce`] holds: the listing lock and scan stripes.
type Quiet<'a> = (
    parking_lot::RwLockWriteGuard<'a, ()>,
    Vec<parking_lot::RwLockWriteGuard<'a, ()>>,
);

static RECORD_SEQ: AtomicU64 = AtomicU64::new(0);

/// How one failed change was left.
struct Failed {
    errno: Errno,
    /// Every rename and swap that ran was undone: the record can go.
    undone: bool,
}

impl Fs {
    /// Runs `it`'s steps in order (`caller` for the renames and swaps a
    /// client asked for; removals of stale copies run as dfs), then
    /// `done`. With `recorded`, the change is all-or-nothing as the module
    /// doc says and `done` runs before lookups and listings are let back
    /// in; the caller has made every parent chain a `Move` needs
    /// beforehand (making one takes the scan locks this holds).
    pub(super) fn run_steps(
        &self,
        c: Caller,
        it: &Intent,
        recorded: bool,
        done: impl FnOnce(),
    ) -> Result<()> {
        if !recorded {
            for s in &it.steps {
                match self.apply(Some(c), it, s) {
                    Err(e) if is_leftover(s) => leftover_stays(it, s, e),
                    r => r?,
                }
            }
            done();
            return Ok(());
        }
        let record = self.write_record(it)?;
        let result = {
            let _quiet = self.quiesce(&it.a, &it.b);
            let r = self.run_recorded(c, it);
            if r.is_ok() {
                done();
            }
            r
        };
        if let Err(REPLAN) = result.as_ref().map_err(|f| f.errno) {
            record.remove(); // nothing ran
            return Err(REPLAN);
        }
        let synced = self.sync_paths(it).is_ok();
        match result {
            Ok(()) => {
                if synced {
                    record.remove();
                } else {
                    log::warn!(
                        "{} of {:?} and {:?}: the tiers' directories could not be synced; the intent record stays for the next mount",
                        it.op,
                        os(&it.a),
                        os(&it.b)
                    );
                }
                Ok(())
            }
            Err(f) => {
                if f.undone && synced {
                    record.remove();
                } else {
                    log::error!(
                        "{} of {:?} and {:?} failed ({}) and could not be taken back in full; the next mount brings it to an end (intent record {})",
                        it.op,
                        os(&it.a),
                        os(&it.b),
                        f.errno,
                        record.name
                    );
                }
                Err(f.errno)
            }
        }
    }

    fn run_recorded(&self, c: Caller, it: &Intent) -> std::result::Result<(), Failed> {
        // The plan was made before the locks: every step must still find
        // what it was planned on (a rename of an ancestor directory in the
        // meantime moves the paths), or the change is planned again.
        if let Some(s) = it.steps.iter().find(|s| !self.still_planned(it, s)) {
            log::debug!(
                "{} of {:?} and {:?}: step {s:?} no longer as planned",
                it.op,
                os(&it.a),
                os(&it.b)
            );
            return Err(Failed {
                errno: REPLAN,
                undone: true,
            });
        }
        let fault = *self.intent_fault.lock();
        let mut synced = false;
        for (k, s) in it.steps.iter().enumerate() {
            // The renames must be durable before a removal on another
            // filesystem is: otherwise a power cut could keep the removal
            // and lose the rename (each filesystem journals on its own).
            if !synced && !s.moves() {
                synced = true;
                if self.removals_cross_filesystems(it)
                    && let Err(errno) = self.sync_tiers(it, |s| s.moves())
                {
                    let undone = self.undo_all(it, &it.steps[..k]);
                    return Err(Failed { errno, undone });
                }
            }
            let r = match fault {
                Some(Fault::Fail(at)) if at == k => Err(Errno(libc::EIO)),
                Some(Fault::Abandon(at)) if at == k => {
                    return Err(Failed {
                        errno: Errno(libc::EIO),
                        undone: false,
                    });
                }
                Some(Fault::Kill(at)) if at == k => {
                    // SAFETY: kill(2) of our own pid; no memory involved.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                    Ok(())
                }
                _ => self.apply(Some(c), it, s),
            };
            match r {
                Ok(()) => {}
                Err(e) if is_leftover(s) => leftover_stays(it, s, e),
                Err(errno) => {
                    let undone = self.undo_all(it, &it.steps[..k]);
                    return Err(Failed { errno, undone });
                }
            }
        }
        Ok(())
    }

    /// Whether step `s` finds on its tier what it was planned on: the
    /// copies it moves, or the copy it removes (or none: gone already). A
    /// copy swapped aside is the target's copy its swap checks.
    fn still_planned(&self, it: &Intent, s: &Step) -> bool {
        match *s {
            Step::Move { .. } | Step::Swap { .. } => self.state(it, s) == State::NotDone,
            Step::Remove {
                how: Removal::Aside,
                ..
            } => true,
            Step::Remove {
                tier,
                at,
                ino,
                ctime,
                ..
            } => match self.tier(tier).map(|t| t.lstat(it.path(at))) {
                Ok(Ok(st)) => {
                    st.st_ino == ino
                        && (super::is_dir(&st) || [st.st_ctime, st.st_ctime_nsec as i64] == ctime)
                }
                Ok(Err(e)) => not_here(&e),
                Err(_) => false,
            },
        }
    }

    /// Whether some removal of `it` is on another filesystem than some
    /// rename or swap of it.
    fn removals_cross_filesystems(&self, it: &Intent) -> bool {
        let dev = |s: &Step| self.tier(s.tier()).map(|t| t.dev).ok();
        let moved: Vec<Option<u64>> = it.steps.iter().filter(|s| s.moves()).map(dev).collect();
        it.steps
            .iter()
            .filter(|s| !s.moves())
            .any(|r| moved.iter().any(|m| *m != dev(r)))
    }

    /// Undoes the renames and swaps of `done`, last first; whether all of
    /// them were undone. (Removals among them were of copies no client
    /// could see.)
    fn undo_all(&self, it: &Intent, done: &[Step]) -> bool {
        let mut undone = true;
        for s in done.iter().rev().filter(|s| s.moves()) {
            if let Err(e) = self.undo(it, s) {
                log::error!(
                    "cannot undo step {s:?} of the {} of {:?} and {:?}: {e}",
                    it.op,
                    os(&it.a),
                    os(&it.b)
                );
                undone = false;
            }
        }
        undone
    }

    /// Holds off every lookup of the two names and every listing, as the
    /// mover's switch does (same order: listing lock, then stripes).
    fn quiesce(&self, a: &[u8], b: &[u8]) -> Quiet<'_> {
        let mut stripes = vec![
            self.scan_index(split_parent(a).1),
            self.scan_index(split_parent(b).1),
        ];
        stripes.sort_unstable();
        stripes.dedup();
        let lists = self.list_guard.write();
        let scans: Vec<_> = stripes
            .iter()
            .map(|&i| self.scan_guard[i].write())
            .collect();
        (lists, scans)
    }

    /// The names of the tiers, in order (for records).
    fn tier_names(&self) -> Vec<String> {
        self.tiers.iter().map(|t| t.name.clone()).collect()
    }

    /// Writes `it`'s record into the state directory of the first tier
    /// the change touches that takes it (a full tier is passed over),
    /// synced before any step runs.
    fn write_record(&self, it: &Intent) -> Result<Record> {
        let text = it.encode(&self.tier_names());
        let mut tiers: Vec<usize> = it.steps.iter().map(Step::tier).collect();
        tiers.sort_unstable();
        tiers.dedup();
        let mut last = Errno(libc::EIO);
        for t in tiers {
            match self.write_record_on(t, &text) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    log::debug!("cannot write an intent record on tier {t}: {e}");
                    last = e;
                }
            }
        }
        log::warn!(
            "{} of {:?} and {:?} refused: no tier takes its intent record ({last})",
            it.op,
            os(&it.a),
            os(&it.b)
        );
        Err(last)
    }

    fn write_record_on(&self, tier: usize, text: &str) -> Result<Record> {
        let dir = self.state_dir(tier, INTENT_DIR)?;
        // A name no earlier run used: pid, a counter, and the time.
        let fd = loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!(
                "{}-{}-{now:x}",
                std::process::id(),
                RECORD_SEQ.fetch_add(1, Ordering::Relaxed)
            );
            match rustix::fs::openat(
                &*dir,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => break (fd, name),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let record = Record { dir, name: fd.1 };
        let mut f = std::fs::File::from(fd.0);
        let written = f
            .write_all(text.as_bytes())
            .map_err(Errno::from)
            .and_then(|()| Ok(rustix::fs::fsync(&f)?))
            .and_then(|()| Ok(rustix::fs::fsync(&*record.dir)?));
        if let Err(e) = written {
            record.remove();
            return Err(e);
        }
        Ok(record)
    }

    /// Makes the renames and removals of `it` durable: one fsync of each
    /// parent directory of the two paths on each tier involved.
    fn sync_paths(&self, it: &Intent) -> Result<()> {
        self.sync_tiers(it, |_| true)
    }

    /// As [`Fs::sync_paths`], on the tiers of the steps `which` picks.
    fn sync_tiers(&self, it: &Intent, which: impl Fn(&Step) -> bool) -> Result<()> {
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut tiers: Vec<usize> = it
            .steps
            .iter()
            .filter(|s| which(s))
            .map(Step::tier)
            .collect();
        tiers.sort_unstable();
        tiers.dedup();
        for t in tiers {
            let t = self.tier(t)?;
            for p in [&it.a, &it.b] {
                match t.parent(p) {
                    Ok((d, _)) => dirs.push(d),
                    Err(e) if not_here(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        super::transfer::sync_dirs(dirs.iter())
    }

    /// Runs one step forward (`c`: as the caller, else as dfs).
    fn apply(&self, c: Option<Caller>, it: &Intent, s: &Step) -> Result<()> {
        let run = |f: &dyn Fn() -> rustix::io::Result<()>| -> Result<()> {
            match c {
                Some(c) => Ok(self.checked(c, f)?),
                None => Ok(f()?),
            }
        };
        match *s {
            Step::Move { tier, from, .. } => {
                let t = self.tier(tier)?;
                let (fd, fname) = t.parent(it.path(from))?;
                let (td, tname) = t.parent(it.path(from.other()))?;
                // An exchange's move never replaces anything; a rename's
                // replaces the target's copy on the same tier (a file, or
                // an empty directory, which rename(2) checks).
                match it.op {
                    Op::Exchange => run(&|| rename_noreplace(&fd, fname, &td, tname)),
                    Op::Rename => run(&|| rustix::fs::renameat(&fd, os(fname), &td, os(tname))),
                }
            }
            Step::Swap { tier, .. } => {
                let t = self.tier(tier)?;
                let (ad, aname) = t.parent(&it.a)?;
                let (bd, bname) = t.parent(&it.b)?;
                let swapped = run(&|| {
                    rustix::fs::renameat_with(&ad, os(aname), &bd, os(bname), RenameFlags::EXCHANGE)
                });
                match swapped {
                    // A tier without RENAME_EXCHANGE (NFS, CIFS): a rename
                    // onto the target's empty directory replaces it (which
                    // an undo cannot bring back).
                    Err(e) if it.op == Op::Rename && unsupported(e) => {
                        run(&|| rustix::fs::renameat(&ad, os(aname), &bd, os(bname)))
                    }
                    r => r,
                }
            }
            Step::Remove { tier, at, how, .. } => {
                let p = it.path(at);
                let st = match self.tier(tier)?.lstat(p) {
                    Ok(st) => st,
                    Err(e) if not_here(&e) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                match how {
                    Removal::Stale => self.remove_copy(tier, p, &st),
                    Removal::Aside | Removal::Leftover => {
                        let (dir, name) = self.tier(tier)?.parent(p)?;
                        let flags = if super::is_dir(&st) {
                            AtFlags::REMOVEDIR
                        } else {
                            AtFlags::empty()
                        };
                        match rustix::fs::unlinkat(&dir, os(name), flags) {
                            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                            Err(e) => Err(e.into()),
                        }
                    }
                }
            }
        }
    }

    /// Takes back a rename or swap that ran (as dfs).
    fn undo(&self, it: &Intent, s: &Step) -> Result<()> {
        match *s {
            Step::Move { tier, from, id } => {
                let back = Step::Move {
                    tier,
                    from: from.other(),
                    id,
                };
                let it = Intent {
                    op: Op::Exchange, // never replaces: NOREPLACE
                    ..it.clone()
                };
                self.apply(None, &it, &back)
            }
            Step::Swap { tier, a, .. } => {
                let t = self.tier(tier)?;
                // Done by the fallback (a rename that replaced the target's
                // empty directory): a rename back is all there is.
                if id_at(t, &it.a)?.is_none() && id_at(t, &it.b)?.is_some_and(|b| b.is(&a)) {
                    log::warn!(
                        "undoing the rename of {:?} to {:?} on tier {}: the tier has no RENAME_EXCHANGE, so the empty directory {:?} it replaced is gone",
                        os(&it.a),
                        os(&it.b),
                        t.name,
                        os(&it.b)
                    );
                    let (ad, aname) = t.parent(&it.a)?;
                    let (bd, bname) = t.parent(&it.b)?;
                    return Ok(rename_noreplace(&bd, bname, &ad, aname)?);
                }
                self.apply(None, it, s)
            }
            Step::Remove { .. } => Err(Errno(libc::EIO)),
        }
    }

    /// Whether step `s` of `it` ran, read off its tier.
    fn state(&self, it: &Intent, s: &Step) -> State {
        let Ok(t) = self.tier(s.tier()) else {
            return State::Unknown;
        };
        let (Ok(a), Ok(b)) = (id_at(t, &it.a), id_at(t, &it.b)) else {
            return State::Error;
        };
        let is = |now: &Option<Id>, want: &Id| now.as_ref().is_some_and(|n| n.is(want));
        match s {
            Step::Move { from, id, .. } => {
                let (src, dst) = match from {
                    Side::A => (&a, &b),
                    Side::B => (&b, &a),
                };
                if is(dst, id) && !is(src, id) {
                    State::Done
                } else if is(src, id) && !is(dst, id) {
                    State::NotDone
                } else {
                    State::Unknown
                }
            }
            Step::Swap { a: x, b: y, .. } => {
                // (A rename on a tier without RENAME_EXCHANGE falls back to
                // replacing the target's empty directory: a is then gone.)
                let fell_back = it.op == Op::Rename && a.is_none() && is(&b, x);
                if (is(&a, y) && is(&b, x)) || fell_back {
                    State::Done
                } else if is(&a, x) && is(&b, y) {
                    State::NotDone
                } else {
                    State::Unknown
                }
            }
            Step::Remove { at: side, ino, .. } => match (side, &a, &b) {
                (Side::A, None, _) | (Side::B, _, None) => State::Done,
                (Side::A, Some(n), _) | (Side::B, _, Some(n)) if n.ino == *ino => State::NotDone,
                _ => State::Unknown,
            },
        }
    }

    /// The identity of `rel`'s copy on tier `tier`, for a step's record.
    pub(super) fn id_of(&self, tier: usize, rel: &[u8], st: &Stat) -> Id {
        self.tier(tier)
            .ok()
            .and_then(|t| id_at(t, rel).ok().flatten())
            .filter(|id| id.ino == st.st_ino)
            .unwrap_or(Id {
                ino: st.st_ino,
                born: [0, 0],
            })
    }

    /// Finishes or undoes every change a crash left half-made (run at
    /// mount, before clients arrive). Returns how many records it handled.
    pub fn recover_intents(&self) -> usize {
        let names = self.tier_names();
        let mut handled = 0;
        for t in self.tiers.iter() {
            let Some((dir, records)) = super::transfer::list_state_dir(t, INTENT_DIR) else {
                continue;
            };
            for rec in records {
                if rec.ends_with(UNRESOLVED.as_bytes()) {
                    continue;
                }
                let text = rustix::fs::openat(
                    &dir,
                    os(&rec),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()
                .and_then(|fd| {
                    let mut s = String::new();
                    std::fs::File::from(fd).read_to_string(&mut s).ok()?;
                    Some(s)
                });
                let outcome = match text.as_deref().map(|s| Intent::decode(s, &names)) {
                    Some(Ok(it)) => self.recover(&it),
                    // Cut short while it was written: no step had run.
                    None | Some(Err(None)) => {
                        log::warn!(
                            "intent record {:?} on tier {} is incomplete: removed (no step of it ran)",
                            os(&rec),
                            t.name
                        );
                        Recovered::Ended
                    }
                    Some(Err(Some(tier))) => {
                        log::error!(
                            "intent record {:?} on tier {} names tier {tier:?}, which this mount does not have: left as it is",
                            os(&rec),
                            t.name
                        );
                        Recovered::Unresolved
                    }
                };
                match outcome {
                    Recovered::Ended => {
                        let _ = rustix::fs::unlinkat(&dir, os(&rec), AtFlags::empty());
                    }
                    Recovered::Retry => {}
                    Recovered::Unresolved => {
                        let mut to = rec.clone();
                        to.extend_from_slice(UNRESOLVED.as_bytes());
                        let _ = rustix::fs::renameat(&dir, os(&rec), &dir, os(&to));
                    }
                }
                handled += 1;
            }
        }
        handled
    }

    /// Brings one recorded change to an end.
    fn recover(&self, it: &Intent) -> Recovered {
        let (a, b) = (os(&it.a), os(&it.b));
        let states: Vec<State> = it.steps.iter().map(|s| self.state(it, s)).collect();
        if states.contains(&State::Error) {
            log::error!(
                "interrupted {} of {a:?} and {b:?}: a tier could not be read; the record stays for the next mount",
                it.op
            );
            return Recovered::Retry;
        }
        let moves = || it.steps.iter().zip(&states).filter(|(s, _)| s.moves());
        if let Some((s, _)) = moves().find(|(_, st)| **st == State::Unknown) {
            log::error!(
                "interrupted {} of {a:?} and {b:?}: step {s:?} matches neither its before nor its after (the tier changed meanwhile); nothing touched, record kept as *{UNRESOLVED}",
                it.op
            );
            return Recovered::Unresolved;
        }
        let mut failed = false;
        if moves().all(|(_, st)| *st == State::Done) {
            // The renames durable before removals on another filesystem.
            if self.removals_cross_filesystems(it)
                && let Err(e) = self.sync_tiers(it, |s| s.moves())
            {
                log::error!("interrupted {} of {a:?} and {b:?}: cannot sync: {e}", it.op);
                return Recovered::Retry;
            }
            for (s, st) in it.steps.iter().zip(&states) {
                match st {
                    State::NotDone => {
                        if let Err(e) = self.finish_removal(it, s) {
                            log::error!("cannot remove stale copy {s:?} of {b:?}: {e}");
                            failed = true;
                        }
                    }
                    State::Unknown => {
                        log::warn!("stale copy {s:?} of {b:?} was replaced meanwhile: kept")
                    }
                    State::Done | State::Error => {}
                }
            }
            log::info!("finished an interrupted {} of {a:?} and {b:?}", it.op);
        } else {
            let done: Vec<Step> = it
                .steps
                .iter()
                .zip(&states)
                .filter(|(_, st)| **st == State::Done)
                .map(|(s, _)| *s)
                .collect();
            failed = !self.undo_all(it, &done);
            log::info!("undid an interrupted {} of {a:?} and {b:?}", it.op);
        }
        if failed || self.sync_paths(it).is_err() {
            Recovered::Retry
        } else {
            Recovered::Ended
        }
    }

    /// Removes a stale copy a crash left, if it is still the one recorded:
    /// same inode and, unless it is an empty leftover (which `rmdir`
    /// checks), unchanged since.
    fn finish_removal(&self, it: &Intent, s: &Step) -> Result<()> {
        let Step::Remove {
            tier,
            at,
            ctime,
            how,
            ..
        } = *s
        else {
            return Ok(());
        };
        let st = self.tier(tier)?.lstat(it.path(at))?;
        if how == Removal::Stale && [st.st_ctime, st.st_ctime_nsec as i64] != ctime {
            log::warn!(
                "stale copy {:?} on tier {tier} changed since the rename: kept",
                os(it.path(at))
            );
            return Ok(());
        }
        // A moved file's last name: the placeholder pinning its id goes
        // with it, as when a client removes it (nothing is open yet).
        let pinned = if how == Removal::Stale && super::carries_ino(&st) && self.ino_xattr {
            let (dir, name) = self.tier(tier)?.parent(it.path(at))?;
            super::read_ino_xattr(&dir, name)
                .filter(|&id| id != self.nodes.ino_for(st.st_dev, st.st_ino))
        } else {
            None
        };
        match self.apply(None, it, s) {
            // Something appeared in an empty directory left over: it stays.
            Err(e) if how != Removal::Stale => {
                leftover_stays(it, s, e);
                Ok(())
            }
            Ok(()) => {
                if let Some(id) = pinned {
                    self.unpin(id);
                }
                Ok(())
            }
            r => r,
        }
    }
}

/// What `run_steps` answers when a step no longer finds what it was
/// planned on: the caller plans again (never reaches a client).
pub(super) const REPLAN: Errno = Errno(i32::MIN);

/// Whether a tier refused a rename flag it does not support (NFS takes
/// none, CIFS only RENAME_NOREPLACE).
fn unsupported(e: Errno) -> bool {
    matches!(e.0, libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
}

/// rename(2) that never replaces the target: RENAME_NOREPLACE, or where
/// the tier lacks it, a check that the target is absent first (the names
/// are locked and lookups held off while dfs does this).
fn rename_noreplace(
    fd: &OwnedFd,
    name: &[u8],
    td: &OwnedFd,
    tname: &[u8],
) -> rustix::io::Result<()> {
    match rustix::fs::renameat_with(fd, os(name), td, os(tname), RenameFlags::NOREPLACE) {
        Err(e) if unsupported(Errno(e.raw_os_error())) => {
            match rustix::fs::statat(td, os(tname), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Err(rustix::io::Errno::EXIST),
                Err(rustix::io::Errno::NOENT) => rustix::fs::renameat(fd, os(name), td, os(tname)),
                Err(e) => Err(e),
            }
        }
        r => r,
    }
}

/// How recovery left a record.
enum Recovered {
    /// Done with: the record goes.
    Ended,
    /// Something failed that the next mount may retry: the record stays.
    Retry,
    /// Nothing done; kept as `*.unresolved` for the operator.
    Unresolved,
}

fn is_leftover(s: &Step) -> bool {
    matches!(
        s,
        Step::Remove {
            how: Removal::Leftover,
            ..
        }
    )
}

/// An empty leftover that could not be removed (something appeared in it
/// meanwhile) stays: it merges into the renamed directory.
fn leftover_stays(it: &Intent, s: &Step, e: Errno) {
    log::warn!(
        "{} of {:?} to {:?}: leftover {s:?} not removed ({e}); it stays, merged into {:?}",
        it.op,
        os(&it.a),
        os(&it.b),
        os(&it.b)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<String> {
        vec!["pss".into(), "sss".into(), "cold".into()]
    }

    fn sample() -> Intent {
        Intent {
            op: Op::Exchange,
            a: b"dir/caf\xe9".to_vec(),
            b: b"other/\x01name".to_vec(),
            steps: vec![
                Step::Swap {
                    tier: 0,
                    a: Id {
                        ino: 11,
                        born: [1_700_000_000, 1],
                    },
                    b: Id {
                        ino: 12,
                        born: [0, 0],
                    },
                },
                Step::Move {
                    tier: 1,
                    from: Side::B,
                    id: Id {
                        ino: 13,
                        born: [3, 4],
                    },
                },
                Step::Remove {
                    tier: 2,
                    at: Side::A,
                    ino: 14,
                    ctime: [1_700_000_000, 5],
                    how: Removal::Leftover,
                },
            ],
        }
    }

    #[test]
    fn records_round_trip_with_any_bytes() {
        let it = sample();
        assert_eq!(Intent::decode(&it.encode(&tiers()), &tiers()), Ok(it));
    }

    #[test]
    fn records_follow_the_tiers_by_name() {
        let it = sample();
        let text = it.encode(&tiers());
        // The next mount lists the tiers in another order.
        let now = vec!["cold".to_string(), "pss".into(), "sss".into()];
        let got = Intent::decode(&text, &now).expect("decode");
        let idx: Vec<usize> = got.steps.iter().map(Step::tier).collect();
        assert_eq!(idx, vec![1, 2, 0]);
        // A tier that is gone: named, not guessed.
        let fewer = vec!["pss".to_string(), "sss".into()];
        assert_eq!(Intent::decode(&text, &fewer), Err(Some("cold".into())));
    }

    #[test]
    fn a_record_cut_short_does_not_parse() {
        let text = sample().encode(&tiers());
        for cut in 0..text.len() {
            assert_eq!(
                Intent::decode(&text[..cut], &tiers()),
                Err(None),
                "prefix of {cut} bytes"
            );
        }
        assert_eq!(Intent::decode(TRAILER, &tiers()), Err(None));
    }

    #[test]
    fn faults_parse() {
        assert_eq!(Fault::parse("fail:1"), Some(Fault::Fail(1)));
        assert_eq!(Fault::parse(" kill:0 "), Some(Fault::Kill(0)));
        assert_eq!(Fault::parse("abandon:2"), Some(Fault::Abandon(2)));
        assert_eq!(Fault::parse("boom:1"), None);
        assert_eq!(Fault::parse("fail"), None);
    }
}
