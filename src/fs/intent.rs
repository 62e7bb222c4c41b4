//! Namespace changes that take a step on each of several tiers, made
//! all-or-nothing for clients and across a crash.
//!
//! A rename whose target has a copy on a faster tier than its source, a
//! rename of a directory present on several tiers and a RENAME_EXCHANGE of
//! names on different tiers each take one rename or removal per tier. In
//! between, the union is neither the old state nor the new one: a name is
//! missing, or shows a stale copy, or a directory's entries are split
//! between two names. So when a change has several such steps:
//!
//! - Concurrent lookups and listings through dfs wait for the steps (the
//!   scan locks of both names and the listing lock, as the mover's switch
//!   takes them), so no client sees a state in between.
//! - Before the first step an *intent record* is written and synced into
//!   the state directory of the first tier involved (`.dfs/intent/`). It
//!   names both paths and every step with the inode numbers the step moves
//!   or removes, so whether a step ran can be read off the tiers later. The
//!   record goes once the steps are durable; the tiers stay the only truth
//!   (principle 1): a record only says what to look at.
//! - A step that fails while nothing irreversible ran has the steps before
//!   it undone, and the call fails as if nothing happened.
//! - After a crash, the next mount (before it serves anything) finishes a
//!   rename whose first step ran and undoes an exchange that did not
//!   complete. It acts on a path only where the tier still holds the very
//!   inode the record names (for a removal: unchanged since, by ctime), so
//!   a change made directly on a tier in the meantime is left alone and
//!   logged.

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

/// What a record undoes or finishes after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// rename(a, b): finished once its first step ran (its later steps
    /// remove the target's stale copies, which cannot be undone).
    Rename,
    /// RENAME_EXCHANGE of a and b: undone unless every step ran (each step
    /// is its own inverse).
    Exchange,
}

/// One of the two paths of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    A,
    B,
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

/// One step, on one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "lowercase")]
pub enum Step {
    /// Rename the copy `id` at `from` to the other path.
    Move { tier: usize, from: Side, id: Id },
    /// Swap the copies at a (`a`) and b (`b`) in one `RENAME_EXCHANGE`.
    Swap { tier: usize, a: Id, b: Id },
    /// Remove the stale copy `ino` at `at` (whole tree for a directory),
    /// last changed at `ctime` (seconds, nanoseconds).
    Remove {
        tier: usize,
        at: Side,
        ino: u64,
        ctime: [i64; 2],
    },
}

impl Step {
    /// A stale copy's removal, as recorded from its stat.
    pub fn remove(tier: usize, at: Side, st: &Stat) -> Step {
        Step::Remove {
            tier,
            at,
            ino: st.st_ino,
            ctime: [st.st_ctime, st.st_ctime_nsec as i64],
        }
    }

    fn tier(&self) -> usize {
        match *self {
            Step::Move { tier, .. } | Step::Swap { tier, .. } | Step::Remove { tier, .. } => tier,
        }
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

    /// The record's text.
    pub fn encode(&self) -> String {
        let r = RecordFile {
            op: self.op,
            a: hex(&self.a),
            b: hex(&self.b),
            step: self.steps.clone(),
        };
        let mut text = toml::to_string(&r).unwrap_or_default();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text + TRAILER
    }

    /// Parses a record's text; `None` for one that is cut short or not a
    /// record at all.
    pub fn decode(text: &str) -> Option<Intent> {
        let body = text.strip_suffix(TRAILER)?;
        let r: RecordFile = toml::from_str(body).ok()?;
        Some(Intent {
            op: r.op,
            a: unhex(&r.a)?,
            b: unhex(&r.b)?,
            steps: r.step,
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

/// The identity of `rel` on tier `t`: `Ok(None)` when absent.
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

/// Where a step's paths stand on its tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    NotDone,
    /// Neither: the tier changed since (or a lookup failed).
    Unknown,
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
    /// Everything that ran was undone: the record can go.
    undone: bool,
}

impl Fs {
    /// Runs `it`'s steps in order (`caller` for what a client asked;
    /// removals of stale copies run as dfs). With `recorded`, the change
    /// is all-or-nothing as the module doc says; the caller has made every
    /// parent chain a `Move` needs beforehand (making one takes the scan
    /// locks this holds).
    pub(super) fn run_steps(&self, c: Caller, it: &Intent, recorded: bool) -> Result<()> {
        if !recorded {
            for s in &it.steps {
                self.apply(Some(c), it, s)?;
            }
            return Ok(());
        }
        let record = self.write_record(it)?;
        let result = {
            let _quiet = self.quiesce(&it.a, &it.b);
            self.run_recorded(c, it)
        };
        match result {
            Ok(()) => {
                if self.sync_paths(it).is_ok() {
                    record.remove();
                } else {
                    log::warn!(
                        "{:?} of {:?} and {:?}: the tiers' directories could not be synced; the intent record stays for the next mount",
                        it.op,
                        os(&it.a),
                        os(&it.b)
                    );
                }
                Ok(())
            }
            Err(f) => {
                if f.undone {
                    record.remove();
                } else {
                    log::error!(
                        "{:?} of {:?} and {:?} failed half-way ({}); the next mount finishes or undoes it (intent record {})",
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
        let fault = *self.intent_fault.lock();
        for (k, s) in it.steps.iter().enumerate() {
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
            let Err(errno) = r else { continue };
            let done = &it.steps[..k];
            if done.iter().any(|s| matches!(s, Step::Remove { .. })) {
                // A stale copy is gone: only forward is left.
                return Err(Failed {
                    errno,
                    undone: false,
                });
            }
            let mut undone = true;
            for s in done.iter().rev() {
                if let Err(e) = self.undo(it, s) {
                    log::error!(
                        "cannot undo step {s:?} of {:?} of {:?} and {:?}: {e}",
                        it.op,
                        os(&it.a),
                        os(&it.b)
                    );
                    undone = false;
                }
            }
            return Err(Failed { errno, undone });
        }
        Ok(())
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

    /// Writes `it`'s record into the state directory of the first tier
    /// the change touches that takes it (a full tier is passed over),
    /// synced before any step runs.
    fn write_record(&self, it: &Intent) -> Result<Record> {
        let text = it.encode();
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
            "{:?} of {:?} and {:?} refused: no tier takes its intent record ({last})",
            it.op,
            os(&it.a),
            os(&it.b)
        );
        Err(last)
    }

    fn write_record_on(&self, tier: usize, text: &str) -> Result<Record> {
        let dir = self.state_dir(tier, INTENT_DIR)?;
        let name = format!(
            "{}-{}",
            std::process::id(),
            RECORD_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let fd = rustix::fs::openat(
            &*dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let record = Record { dir, name };
        let mut f = std::fs::File::from(fd);
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
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut tiers: Vec<usize> = it.steps.iter().map(Step::tier).collect();
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
                // replaces the target's copy on the same tier.
                let flags = match it.op {
                    Op::Exchange => RenameFlags::NOREPLACE,
                    Op::Rename => RenameFlags::empty(),
                };
                run(&|| rustix::fs::renameat_with(&fd, os(fname), &td, os(tname), flags))
            }
            Step::Swap { tier, .. } => {
                let t = self.tier(tier)?;
                let (ad, aname) = t.parent(&it.a)?;
                let (bd, bname) = t.parent(&it.b)?;
                run(&|| {
                    rustix::fs::renameat_with(&ad, os(aname), &bd, os(bname), RenameFlags::EXCHANGE)
                })
            }
            Step::Remove { tier, at, .. } => {
                let p = it.path(at);
                match self.tier(tier)?.lstat(p) {
                    Ok(st) => self.remove_copy(tier, p, &st),
                    Err(e) if not_here(&e) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Takes back a step that ran (as dfs). Removals cannot be undone.
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
            Step::Swap { .. } => self.apply(None, it, s),
            Step::Remove { .. } => Err(Errno(libc::EIO)),
        }
    }

    /// Whether step `s` of `it` ran, read off its tier.
    fn state(&self, it: &Intent, s: &Step) -> State {
        let Ok(t) = self.tier(s.tier()) else {
            return State::Unknown;
        };
        let (Ok(a), Ok(b)) = (id_at(t, &it.a), id_at(t, &it.b)) else {
            return State::Unknown;
        };
        let is = |now: &Option<Id>, want: &Id| now.as_ref().is_some_and(|n| n.is(want));
        match s {
            Step::Move { from, id, .. } => {
                let (src, dst) = match from {
                    Side::A => (&a, &b),
                    Side::B => (&b, &a),
                };
                if is(dst, id) {
                    State::Done
                } else if is(src, id) {
                    State::NotDone
                } else {
                    State::Unknown
                }
            }
            Step::Swap { a: x, b: y, .. } => {
                if is(&a, y) && is(&b, x) {
                    State::Done
                } else if is(&a, x) && is(&b, y) {
                    State::NotDone
                } else {
                    State::Unknown
                }
            }
            Step::Remove { at: side, ino, .. } => {
                let now = match side {
                    Side::A => &a,
                    Side::B => &b,
                };
                // A new file on the recorded inode number is caught by the
                // ctime check before anything is removed.
                if now.as_ref().is_some_and(|n| n.ino == *ino) {
                    State::NotDone
                } else {
                    State::Done
                }
            }
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
        let mut handled = 0;
        for t in self.tiers.iter() {
            let Some((dir, names)) = super::transfer::list_state_dir(t, INTENT_DIR) else {
                continue;
            };
            for name in names {
                let text = rustix::fs::openat(
                    &dir,
                    os(&name),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()
                .and_then(|fd| {
                    let mut s = String::new();
                    std::fs::File::from(fd).read_to_string(&mut s).ok()?;
                    Some(s)
                });
                let keep = match text.as_deref().and_then(Intent::decode) {
                    // Cut short while it was written: no step had run.
                    None => {
                        log::warn!(
                            "intent record {:?} on tier {} is incomplete: removed (no step of it ran)",
                            os(&name),
                            t.name
                        );
                        false
                    }
                    Some(it) => self.recover(&it),
                };
                if !keep {
                    let _ = rustix::fs::unlinkat(&dir, os(&name), AtFlags::empty());
                }
                handled += 1;
            }
        }
        handled
    }

    /// Brings one recorded change to an end; returns whether its record
    /// must stay (something failed that a later mount may retry).
    fn recover(&self, it: &Intent) -> bool {
        let (a, b) = (os(&it.a), os(&it.b));
        let states: Vec<State> = it.steps.iter().map(|s| self.state(it, s)).collect();
        let done = states.iter().filter(|s| **s == State::Done).count();
        for (s, st) in it.steps.iter().zip(&states) {
            if *st == State::Unknown {
                log::warn!(
                    "interrupted {:?} of {a:?} and {b:?}: step {s:?} does not match the tier any more (changed meanwhile); left as it is",
                    it.op
                );
            }
        }
        let mut failed = false;
        if done == it.steps.len() {
            log::info!("interrupted {:?} of {a:?} and {b:?} had completed", it.op);
        } else if it.op == Op::Exchange {
            for (s, st) in it.steps.iter().zip(&states).rev() {
                if *st == State::Done
                    && let Err(e) = self.undo(it, s)
                {
                    log::error!("cannot undo step {s:?} of the exchange of {a:?} and {b:?}: {e}");
                    failed = true;
                }
            }
            log::info!("undid an interrupted exchange of {a:?} and {b:?}");
        } else if done == 0 {
            log::info!("interrupted rename of {a:?} to {b:?} had not started");
        } else {
            for (s, st) in it.steps.iter().zip(&states) {
                if *st != State::NotDone {
                    continue;
                }
                if let Err(e) = self.finish_step(it, s) {
                    log::error!("cannot finish step {s:?} of the rename of {a:?} to {b:?}: {e}");
                    failed = true;
                }
            }
            log::info!("finished an interrupted rename of {a:?} to {b:?}");
        }
        if !failed && self.sync_paths(it).is_err() {
            failed = true;
        }
        failed
    }

    /// Runs a step a crash left undone, on the copy the record names only.
    fn finish_step(&self, it: &Intent, s: &Step) -> Result<()> {
        match *s {
            Step::Remove {
                tier, at, ctime, ..
            } => {
                let st = self.tier(tier)?.lstat(it.path(at))?;
                if [st.st_ctime, st.st_ctime_nsec as i64] != ctime {
                    log::warn!(
                        "stale copy {:?} on tier {tier} changed since the rename: kept",
                        os(it.path(at))
                    );
                    return Ok(());
                }
                self.apply(None, it, s)
            }
            Step::Move { tier, from, .. } => {
                self.clone_parents(tier, split_parent(it.path(from.other())).0)?;
                self.apply(None, it, s)
            }
            Step::Swap { .. } => self.apply(None, it, s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_any_bytes() {
        let it = Intent {
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
                },
            ],
        };
        assert_eq!(Intent::decode(&it.encode()), Some(it));
    }

    #[test]
    fn a_record_cut_short_does_not_parse() {
        let it = Intent {
            op: Op::Rename,
            a: b"a".to_vec(),
            b: b"b".to_vec(),
            steps: vec![Step::Move {
                tier: 1,
                from: Side::A,
                id: Id {
                    ino: 7,
                    born: [0, 0],
                },
            }],
        };
        let text = it.encode();
        for cut in 0..text.len() {
            assert_eq!(Intent::decode(&text[..cut]), None, "prefix of {cut} bytes");
        }
        assert_eq!(Intent::decode(TRAILER), None);
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
