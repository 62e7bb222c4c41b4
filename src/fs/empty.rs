//! Tier copies of directories known to be empty, so that a lookup that
//! would miss there costs one `fstat` of the held directory handle instead
//! of a name lookup on the tier.
//!
//! Why: the mover takes a directory's files down to the slow tier and
//! leaves the directory's copy on the fast tier, empty; every later lookup
//! of those files first misses on the fast tier. A miss costs the tier's
//! filesystem a directory search and a new negative dentry (about 3 us on
//! the test VMs, against a fraction of that for an `fstat` of a handle dfs
//! holds anyway). Names that exist nowhere miss on every tier.
//!
//! Why it is exact, not a memory that can go stale: every lookup still
//! makes one call per tier against the held handle, and the answer comes
//! from the directory as it is at that moment. A copy is recorded as empty
//! with its stamp (inode, ctime, mtime, link count, size) only when
//! `getdents` found no name between two `fstat`s that saw the same stamp,
//! and only when the coarse clock read before the first one was at least
//! [`STABLE`] past the copy's last change. Adding, removing or renaming an
//! entry sets the directory's ctime to the current time, which is then at
//! least that clock reading and so later than the recorded ctime (also on
//! a filesystem that keeps whole seconds): a stamp that still matches
//! means no entry changed since the copy was seen empty. Only tiers on
//! local filesystems whose times come from this machine's clock take part
//! (`Tier::local_times`); elsewhere every lookup asks the tier by name.
//!
//! Where the tier's filesystem gives a change made after its times were
//! read a time of its own (Linux 6.13's multigrain timestamps on ext4,
//! xfs, btrfs and tmpfs: a change after a `stat` gets a fine-grained
//! ctime), the `fstat` that reads the stamp is itself what makes the next
//! change move it, and no wait is needed: a copy is recorded as soon as it
//! is seen empty. [`fine_times`] finds out at mount, on the tier itself.

use std::os::fd::OwnedFd;

use parking_lot::RwLock;
use rustix::fs::{AtFlags, Mode, OFlags, RawDir, Stat};

/// How long a directory must have gone unchanged before it may be recorded
/// as empty: more than the coarsest timestamp granularity taken part.
pub const STABLE: i64 = 1_000_000_000;

/// How often (at most) a copy found holding names is looked at again
/// after a miss, to learn that it has been emptied since (by the mover).
const RECHECK: i64 = 10 * 1_000_000_000;

/// What identifies one state of a directory copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    nlink: u64,
    size: i64,
}

impl Stamp {
    // st_nlink is u64 here, u32 on some other architectures.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &Stat) -> Stamp {
        Stamp {
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            nlink: st.st_nlink as u64,
            size: st.st_size,
        }
    }

    /// The last change, in nanoseconds since the epoch.
    fn changed_ns(&self) -> i64 {
        let ns = |(s, n): (i64, i64)| s.saturating_mul(1_000_000_000).saturating_add(n);
        ns(self.ctime).max(ns(self.mtime))
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Not known; look at it after a miss once the clock reaches `retry`.
    Unknown { retry: i64 },
    /// Seen empty in this state.
    Empty(Stamp),
    /// Seen holding names in this state; look again after a miss once the
    /// clock reaches `recheck`.
    Full { stamp: Stamp, recheck: i64 },
}

/// Whether one tier copy of one held directory is known empty.
#[derive(Debug)]
pub struct EmptyCopy {
    /// `None`: the tier does not take part.
    state: Option<RwLock<State>>,
    /// The tier's device: a copy on another filesystem mounted inside the
    /// tier (whose times may not move with its entries) is never recorded.
    dev: u64,
    /// How long a copy must have gone unchanged before it is recorded:
    /// [`STABLE`], or nothing where times are fine-grained.
    settle: i64,
}

/// Whether changes to directory `dir` (writable; a scratch directory is
/// made and removed in it) made right after its times were read always
/// move its ctime, as multigrain timestamps guarantee: three rounds of
/// read, change, read, change, read within well under a clock tick, each
/// change seen. A filesystem with coarse times (one per clock tick, or per
/// second) shows the same ctime across at least one of those changes.
pub fn fine_times(dir: &OwnedFd) -> bool {
    let name = format!("times-probe-{}", std::process::id());
    if rustix::fs::mkdirat(dir, name.as_str(), Mode::from_raw_mode(0o700)).is_err() {
        return false;
    }
    let probe = rustix::fs::openat(
        dir,
        name.as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let fine = probe.is_ok_and(|p| {
        let ctime = || rustix::fs::fstat(&p).map(|st| (st.st_ctime, st.st_ctime_nsec as i64));
        let started = now_ns();
        let mut moved = true;
        for _ in 0..3 {
            let Ok(a) = ctime() else { return false };
            if rustix::fs::mkdirat(&p, "x", Mode::from_raw_mode(0o700)).is_err() {
                return false;
            }
            let b = ctime();
            let _ = rustix::fs::unlinkat(&p, "x", AtFlags::REMOVEDIR);
            let c = ctime();
            moved &= matches!((b, c), (Ok(b), Ok(c)) if a != b && b != c);
        }
        // Over a millisecond (a busy machine): the changes may each have
        // fallen in a new tick, which proves nothing.
        moved && now_ns().saturating_sub(started) < 1_000_000
    });
    let _ = rustix::fs::unlinkat(dir, format!("{name}/x").as_str(), AtFlags::REMOVEDIR);
    let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::REMOVEDIR);
    fine
}

/// The coarse real-time clock in nanoseconds: the clock the kernel stamps
/// inode times from.
fn now_ns() -> i64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    t.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as i64)
}

impl EmptyCopy {
    /// Tracking for a copy on a tier that takes part (see the module doc)
    /// whose root is on device `dev`; `fine`: the tier's times are fine
    /// grained (see [`fine_times`]).
    pub fn new(enabled: bool, dev: u64, fine: bool) -> EmptyCopy {
        EmptyCopy {
            state: enabled.then(|| RwLock::new(State::Unknown { retry: 0 })),
            dev,
            settle: if fine { 0 } else { STABLE },
        }
    }

    /// Whether the copy behind the held handle `fd` has no names now: one
    /// `fstat`, and only for a copy recorded empty.
    pub fn known_empty(&self, fd: &OwnedFd) -> bool {
        let Some(state) = &self.state else {
            return false;
        };
        let State::Empty(stamp) = *state.read() else {
            return false;
        };
        if rustix::fs::fstat(fd).is_ok_and(|st| Stamp::of(&st) == stamp) {
            return true;
        }
        *state.write() = State::Unknown { retry: 0 };
        false
    }

    /// A lookup found no such name in the copy: when due, find out whether
    /// the copy has any name at all.
    pub fn missed(&self, fd: &OwnedFd) {
        let Some(state) = &self.state else {
            return;
        };
        let now = now_ns();
        let seen = match *state.read() {
            State::Empty(_) => return,
            State::Unknown { retry } if now < retry => return,
            State::Full { recheck, .. } if now < recheck => return,
            State::Unknown { .. } => None,
            State::Full { stamp, .. } => Some(stamp),
        };
        let next = look(fd, now, seen, self.dev, self.settle);
        *state.write() = next;
    }
}

/// Looks at the copy behind `fd` at clock time `now` (read before anything
/// else); `seen`: the stamp it held names in, if any; `dev`: the tier's
/// device; `settle`: see [`EmptyCopy`].
fn look(fd: &OwnedFd, now: i64, seen: Option<Stamp>, dev: u64, settle: i64) -> State {
    let before = match rustix::fs::fstat(fd) {
        Ok(st) if st.st_dev != dev => return State::Unknown { retry: i64::MAX },
        Ok(st) => Stamp::of(&st),
        Err(_) => {
            return State::Unknown {
                retry: now.saturating_add(RECHECK),
            };
        }
    };
    if seen == Some(before) {
        return State::Full {
            stamp: before,
            recheck: now.saturating_add(RECHECK),
        };
    }
    let stable_at = before.changed_ns().saturating_add(settle);
    if now < stable_at {
        return State::Unknown { retry: stable_at };
    }
    match has_names(fd) {
        Some(true) => State::Full {
            stamp: before,
            recheck: now.saturating_add(RECHECK),
        },
        Some(false) if rustix::fs::fstat(fd).is_ok_and(|st| Stamp::of(&st) == before) => {
            State::Empty(before)
        }
        // Changed while it was read, or unreadable: later.
        _ => State::Unknown {
            retry: now.saturating_add(STABLE),
        },
    }
}

/// Whether the directory behind the `O_PATH` handle `fd` lists any name
/// besides "." and ".."; `None` when it cannot be read.
fn has_names(fd: &OwnedFd) -> Option<bool> {
    let dir = rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
    let mut it = RawDir::new(&dir, &mut buf);
    while let Some(e) = it.next() {
        let e = e.ok()?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).expect("fstat").st_dev
    }

    fn open_path(p: &std::path::Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).expect("open")
    }

    /// Waits until a directory made now counts as stable (ctime cannot be
    /// set back, so the tests wait `STABLE` out).
    fn wait_stable() {
        std::thread::sleep(std::time::Duration::from_nanos(STABLE as u64 + 50_000_000));
    }

    #[test]
    fn an_empty_copy_is_known_once_stable_and_forgotten_when_it_changes() {
        let d = tempfile::tempdir().expect("tempdir");
        let fd = open_path(d.path());
        let e = EmptyCopy::new(true, dev(&fd), false);
        // Just made: not stable yet, so not recorded.
        e.missed(&fd);
        assert!(!e.known_empty(&fd));
        wait_stable();
        e.missed(&fd);
        assert!(e.known_empty(&fd), "stable and empty: known");
        // A name appears: the stamp no longer matches, at once.
        std::fs::write(d.path().join("new"), b"x").expect("write");
        assert!(!e.known_empty(&fd), "a new name must end the record");
        assert!(!e.known_empty(&fd));
    }

    #[test]
    fn a_copy_with_names_is_not_empty() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("f"), b"x").expect("write");
        let fd = open_path(d.path());
        wait_stable();
        let e = EmptyCopy::new(true, dev(&fd), false);
        e.missed(&fd);
        assert!(!e.known_empty(&fd));
        // Emptied: learnt again only after the recheck delay (a state
        // with names is not re-read on every miss).
        std::fs::remove_file(d.path().join("f")).expect("rm");
        e.missed(&fd);
        assert!(!e.known_empty(&fd));
    }

    #[test]
    fn disabled_tracking_never_claims_empty() {
        let d = tempfile::tempdir().expect("tempdir");
        let fd = open_path(d.path());
        wait_stable();
        let e = EmptyCopy::new(false, dev(&fd), false);
        e.missed(&fd);
        assert!(!e.known_empty(&fd));
    }

    #[test]
    fn a_copy_on_another_device_is_never_recorded() {
        let d = tempfile::tempdir().expect("tempdir");
        let fd = open_path(d.path());
        wait_stable();
        let e = EmptyCopy::new(true, dev(&fd).wrapping_add(1), false);
        e.missed(&fd);
        assert!(!e.known_empty(&fd));
    }

    #[test]
    fn with_fine_times_an_empty_copy_is_known_at_once_and_still_exactly() {
        let d = tempfile::tempdir().expect("tempdir");
        let rw = rustix::fs::open(d.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .expect("open");
        let fine = fine_times(&rw);
        assert_eq!(
            std::fs::read_dir(d.path()).expect("list").count(),
            0,
            "the probe leaves nothing behind"
        );
        if !fine {
            return; // coarse times here: `STABLE` applies (tests above)
        }
        let sub = d.path().join("copy");
        std::fs::create_dir(&sub).expect("mkdir");
        let fd = open_path(&sub);
        let e = EmptyCopy::new(true, dev(&fd), true);
        // Recorded without waiting out `STABLE` (a clock tick at most: the
        // coarse clock may lag the fine ctime the copy was made with).
        let record = || {
            let start = std::time::Instant::now();
            while !e.known_empty(&fd) {
                assert!(start.elapsed().as_millis() < 100, "not recorded at once");
                e.missed(&fd);
            }
        };
        record();
        // Changed right after: seen at once, every time.
        for i in 0..20 {
            let n = sub.join(format!("n{i}"));
            std::fs::write(&n, b"").expect("write");
            assert!(!e.known_empty(&fd), "a name made just after was missed");
            std::fs::remove_file(&n).expect("rm");
            record();
        }
    }

    #[test]
    fn stamps_see_entry_changes_in_the_same_second() {
        // The property the module relies on: an entry change moves ctime.
        let d = tempfile::tempdir().expect("tempdir");
        let fd = open_path(d.path());
        let a = Stamp::of(&rustix::fs::fstat(&fd).expect("fstat"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.path().join("x"), b"").expect("write");
        let b = Stamp::of(&rustix::fs::fstat(&fd).expect("fstat"));
        assert_ne!(a, b);
    }
}
