//! The mover on real mounts: age rules, size rules, pins, watermarks,
//! promotion, metadata and st_ino kept through a move, busy files, concurrent
//! readers during a pass, hard links, `dfs move [--dry-run]`, `dfs status`,
//! `dfs where` and the `[mover]` configuration errors.
//!
//! Every mount uses `interval = "off"` (except the preset test), so only
//! `dfs move` starts a pass. File ages are set on the tier files with
//! utimensat before mounting.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Writes `data` to `rel` under the tier directory `tier`, creating parents,
/// and sets atime/mtime to `atime_days`/`mtime_days` days ago.
fn put(tier: &Path, rel: &str, data: &[u8], atime_days: i64, mtime_days: i64) {
    let p = tier.join(rel);
    mkdirs(p.parent().unwrap());
    write(&p, data);
    set_age(&p, atime_days * DAY, mtime_days * DAY);
}

/// `put` with atime = mtime.
fn put_aged(tier: &Path, rel: &str, data: &[u8], days: i64) {
    put(tier, rel, data, days, days);
}

/// Output of one dfs command run.
struct Run {
    ok: bool,
    code: Option<i32>,
    out: String,
    err: String,
}

fn dfs<S: AsRef<std::ffi::OsStr>>(args: &[S], timeout: Duration) -> Run {
    let (st, out, err) = run_dfs_timeout(args, timeout);
    let st = st.unwrap_or_else(|| {
        panic!(
            "dfs {:?} still running after {timeout:?}\nstdout:\n{out}\nstderr:\n{err}",
            args.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>()
        )
    });
    assert_no_panic(&err);
    Run {
        ok: st.success(),
        code: st.code(),
        out,
        err,
    }
}

/// The summary of a `dfs move`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    moved: u64,
    total: u64,
    skipped: u64,
    errors: u64,
}

/// Parses "moved N of M files (X), skipped S, E errors, in T s".
fn parse_summary(out: &str) -> Option<Summary> {
    let line = out.lines().find(|l| l.starts_with("moved "))?;
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let rest = line.strip_prefix("moved ")?;
    let (moved, rest) = rest.split_once(" of ")?;
    let (total, rest) = rest.split_once(" files")?;
    let (_, rest) = rest.split_once("skipped ")?;
    let (skipped, rest) = rest.split_once(',')?;
    let (errors, _) = rest.trim().split_once(" errors")?;
    Some(Summary {
        moved: num(moved)?,
        total: num(total)?,
        skipped: num(skipped)?,
        errors: num(errors)?,
    })
}

/// `dfs move MNT`; asserts success and returns the summary.
#[track_caller]
fn dfs_move(m: &Mount) -> Summary {
    let r = dfs(
        &[OsString::from("move"), m.mnt().into()],
        Duration::from_secs(120),
    );
    assert!(
        r.ok,
        "dfs move failed ({:?})\nstdout:\n{}\nstderr:\n{}\ndaemon:\n{}",
        r.code,
        r.out,
        r.err,
        m.stderr()
    );
    parse_summary(&r.out).unwrap_or_else(|| {
        panic!(
            "dfs move printed no summary line\nstdout:\n{}\nstderr:\n{}",
            r.out, r.err
        )
    })
}

/// One line of `dfs move --dry-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlanLine {
    from: String,
    to: String,
    reason: String,
    idle_days: u64,
    path: String,
}

/// `dfs move --dry-run MNT`: the plan lines and the final "N files, X would
/// move" line.
#[track_caller]
fn dry_run(m: &Mount) -> (Vec<PlanLine>, String) {
    let r = dfs(
        &[OsString::from("move"), "--dry-run".into(), m.mnt().into()],
        Duration::from_secs(60),
    );
    assert!(
        r.ok,
        "dfs move --dry-run failed\nstdout:\n{}\nstderr:\n{}",
        r.out, r.err
    );
    let mut plan = Vec::new();
    let mut end = None;
    for line in r.out.lines() {
        if line.contains(" would move") {
            end = Some(line.to_string());
            continue;
        }
        // "pss -> sss  rule 1        1.0 KiB  idle     60 d  docs/a"
        let (from, rest) = line
            .split_once(" -> ")
            .unwrap_or_else(|| panic!("unexpected dry-run line {line:?}\n{}", r.out));
        let rest = rest.trim_start();
        let (to, rest) = rest.split_once(' ').unwrap();
        let (before_idle, after_idle) = rest
            .split_once(" idle ")
            .unwrap_or_else(|| panic!("no idle field in {line:?}"));
        let (days, path) = after_idle
            .trim_start()
            .split_once(" d  ")
            .unwrap_or_else(|| panic!("no path field in {line:?}"));
        // The reason is the text before the size (the last two words of
        // before_idle are the size and its unit).
        let words: Vec<&str> = before_idle.split_whitespace().collect();
        assert!(words.len() >= 3, "cannot parse {line:?}");
        let reason = words[..words.len() - 2].join(" ");
        plan.push(PlanLine {
            from: from.trim().to_string(),
            to: to.trim().to_string(),
            reason,
            idle_days: days.trim().parse().unwrap(),
            path: path.to_string(),
        });
    }
    let end = end.unwrap_or_else(|| panic!("no summary line in dry-run output:\n{}", r.out));
    (plan, end)
}

/// The tiers holding `rel`, asserting it is exactly `want`.
#[track_caller]
fn assert_on(m: &Mount, rel: &str, want: &[usize]) {
    let got = tiers_holding(m, rel);
    assert_eq!(
        got,
        want,
        "{rel}: expected on tier(s) {want:?}, found on {got:?}\ndaemon log:\n{}",
        m.stderr()
    );
}

/// Opens `p` for reading, reads it whole, closes it.
fn read_through(p: &Path) -> Vec<u8> {
    read(p)
}

/// Opens `p` read-only and closes it without reading.
fn open_close(p: &Path) {
    let f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    drop(f);
}

/// used/total bytes of the filesystem at `p`, as statfs reports it (the
/// mover's view: blocks - bavail).
fn used_fraction(p: &Path) -> (u64, u64) {
    let s = statfs(p);
    let total = s.f_blocks * s.f_frsize as u64;
    let free = s.f_bavail * s.f_frsize as u64;
    (total - free, total)
}

/// Entries of `<tier>/.dfs/tmp`.
fn temporaries(tier: &Path) -> Vec<OsString> {
    entries_of(&tier.join(".dfs/tmp"))
}

/// Waits a little for the kernel's asynchronous RELEASE of closed files to
/// reach the daemon.
fn settle() {
    thread::sleep(Duration::from_millis(200));
}

const RULE_ALL: &str =
    "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\n";

// ---------------------------------------------------------------------------
// age rules
// ---------------------------------------------------------------------------

#[test]
fn age_rule_moves_exactly_the_files_not_accessed_for_long() {
    let cfg = mover_config(
        "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\nnot_accessed_for = \"30d\"\n",
    );
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put(&t[0], "docs/old1.txt", b"old one", 60, 60);
            put(&t[0], "docs/old2.bin", b"old two", 40, 90); // last = max = 40 d
            put(&t[0], "docs/recent_atime", b"ra", 1, 90);
            put(&t[0], "docs/recent_mtime", b"rm", 90, 2);
            put_aged(&t[0], "docs/edge_29d", b"29", 29);
            put_aged(&t[0], "deep/a/b/c/old3", b"deep", 100);
            put_aged(&t[0], "docs/read_me", b"read through the mount", 60);
            put_aged(&t[0], "docs/opened_only", b"opened, never read", 60);
            put_aged(&t[0], "docs/stat_only", b"only stat()ed", 60);
            put_aged(&t[0], "docs/written", b"opened for write", 60);
            put_aged(&t[1], "cold/already", b"on sss already", 400);
        })
        .mount();

    // Accesses through the mount: dfs's own record must keep these up.
    assert_eq!(
        read_through(&m.m("docs/read_me")),
        b"read through the mount"
    );
    open_close(&m.m("docs/opened_only"));
    fs::OpenOptions::new()
        .write(true)
        .open(m.m("docs/written"))
        .unwrap();
    // stat is not an access.
    lstat(&m.m("docs/stat_only")).unwrap();
    settle();

    let s = dfs_move(&m);
    assert_eq!(
        s,
        Summary {
            moved: 4,
            total: 4,
            skipped: 0,
            errors: 0
        },
        "daemon log:\n{}",
        m.stderr()
    );
    for rel in [
        "docs/old1.txt",
        "docs/old2.bin",
        "deep/a/b/c/old3",
        "docs/stat_only",
        "cold/already",
    ] {
        assert_on(&m, rel, &[1]);
    }
    for rel in [
        "docs/recent_atime",
        "docs/recent_mtime",
        "docs/edge_29d",
        "docs/read_me",
        "docs/opened_only",
        "docs/written",
    ] {
        assert_on(&m, rel, &[0]);
    }
    // Directories on the source stay; the union still reads everything.
    assert!(m.t(0, "deep/a/b/c").is_dir());
    assert_eq!(read(&m.m("docs/old1.txt")), b"old one");
    assert_eq!(read(&m.m("deep/a/b/c/old3")), b"deep");
    assert_eq!(
        list(&m.m("docs")),
        names(&[
            "edge_29d",
            "old1.txt",
            "old2.bin",
            "opened_only",
            "read_me",
            "recent_atime",
            "recent_mtime",
            "stat_only",
            "written"
        ])
    );

    // A second pass has nothing left to do.
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total), (0, 0), "{}", m.stderr());
    m.unmount();
}

#[test]
fn access_record_survives_a_remount() {
    let cfg = mover_config(
        "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nnot_accessed_for = \"30d\"\n",
    );
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "kept", b"opened before the remount", 90);
            put_aged(&t[0], "cold", b"never opened", 90);
        })
        .mount();
    // Open without reading: only dfs's record knows about it (atime stays).
    let before = lstat(&m.t(0, "kept")).unwrap();
    open_close(&m.m("kept"));
    settle();
    assert_eq!(
        lstat(&m.t(0, "kept")).unwrap().atime(),
        before.atime(),
        "premise: an open without read leaves atime alone"
    );
    m.remount();
    assert!(
        m.t(0, ".dfs/access.bin").exists(),
        "no access record saved at unmount"
    );
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total), (1, 1), "{}", m.stderr());
    assert_on(&m, "kept", &[0]);
    assert_on(&m, "cold", &[1]);
    m.unmount();
}

/// The record is also saved at the end of every pass, so it survives a
/// kill -9 that skips the orderly unmount.
#[test]
fn access_record_saved_at_pass_end_survives_kill_9() {
    let cfg = mover_config(
        "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nnot_accessed_for = \"30d\"\n",
    );
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "kept", b"opened", 90);
            put_aged(&t[0], "cold", b"never opened", 90);
            put_aged(&t[0], "cold2", b"never opened either", 90);
        })
        .mount();
    open_close(&m.m("kept"));
    settle();
    // Nothing to move for the first pass but "cold"; it ends by saving.
    fs::rename(m.t(0, "cold2"), m.root().join("cold2.aside")).unwrap();
    let s = dfs_move(&m);
    assert_eq!(s.moved, 1, "{}", m.stderr());
    let (st, _) = m.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    assert!(st.is_some());
    force_unmount(&m.mnt());
    fs::rename(m.root().join("cold2.aside"), m.t(0, "cold2")).unwrap();
    m.start_again();
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total), (1, 1), "{}", m.stderr());
    assert_on(&m, "kept", &[0]);
    assert_on(&m, "cold2", &[1]);
    m.unmount();
}

#[test]
fn not_modified_for_min_and_max_size_and_first_matching_rule_decides() {
    let cfg = mover_config(concat!(
        "bandwidth = \"off\"\n",
        // rule 1: matches keep/**, never old enough: keep/ files stay even
        // though rule 3 would move them.
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"keep/**\"\nnot_accessed_for = \"1000d\"\n",
        // rule 2: sizes only.
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"sized/**\"\nmin_size = \"10KiB\"\nmax_size = \"100KiB\"\n",
        // rule 3: mtime only.
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\nnot_modified_for = \"30d\"\n",
    ));
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "keep/k1", b"keep", 400);
            for (name, len) in [
                ("s_9k", 9 * 1024),
                ("s_10k", 10 * 1024),
                ("s_50k", 50 * 1024),
                ("s_100k", 100 * 1024),
                ("s_100k_plus_1", 100 * 1024 + 1),
            ] {
                // Fresh times: rule 2 has no age condition.
                put_aged(
                    &t[0],
                    &format!("sized/{name}"),
                    &pattern(len, len as u64),
                    0,
                );
            }
            put(&t[0], "other/m_old", b"modified long ago", 0, 60);
            put(
                &t[0],
                "other/m_old_read",
                b"modified long ago, read now",
                60,
                60,
            );
            put(&t[0], "other/m_new", b"modified lately", 100, 10);
        })
        .mount();
    assert_eq!(
        read_through(&m.m("other/m_old_read")),
        b"modified long ago, read now"
    );
    settle();

    let (plan, end) = dry_run(&m);
    let got: BTreeMap<String, String> = plan
        .iter()
        .map(|p| (p.path.clone(), p.reason.clone()))
        .collect();
    let want: BTreeMap<String, String> = [
        ("sized/s_10k", "rule 2"),
        ("sized/s_50k", "rule 2"),
        ("sized/s_100k", "rule 2"),
        ("other/m_old", "rule 3"),
        ("other/m_old_read", "rule 3"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "dry-run plan");
    assert!(plan.iter().all(|p| p.from == "pss" && p.to == "sss"));
    assert!(end.starts_with("5 files, "), "{end}");

    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total, s.errors), (5, 5, 0), "{}", m.stderr());
    for rel in want.keys() {
        assert_on(&m, rel, &[1]);
    }
    for rel in [
        "keep/k1",
        "sized/s_9k",
        "sized/s_100k_plus_1",
        "other/m_new",
    ] {
        assert_on(&m, rel, &[0]);
    }
    assert_eq!(read(&m.m("sized/s_100k")), pattern(100 * 1024, 100 * 1024));
    m.unmount();
}

// ---------------------------------------------------------------------------
// pins
// ---------------------------------------------------------------------------

#[test]
fn pins_hold_against_rules_and_promotion() {
    let cfg = mover_config(concat!(
        "bandwidth = \"off\"\n",
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\nnot_accessed_for = \"30d\"\n",
        "[[mover.pin]]\nmatch = \"templates/**\"\ntier = \"pss\"\n",
        "[[mover.pin]]\nmatch = \"archive/**\"\ntier = \"sss\"\n",
        "[mover.promote]\nreads = 2\nwithin = \"7d\"\n",
    ));
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "templates/letter.odt", b"letter", 400);
            put_aged(&t[0], "templates/sub/invoice.odt", b"invoice", 400);
            put_aged(&t[0], "other/report.odt", b"report", 400);
            put_aged(&t[1], "archive/2019.tar", b"archive", 400);
            put_aged(&t[1], "cold/hot-again", b"hot again", 400);
        })
        .mount();
    for _ in 0..2 {
        assert_eq!(read_through(&m.m("archive/2019.tar")), b"archive");
        assert_eq!(read_through(&m.m("cold/hot-again")), b"hot again");
    }
    settle();
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.errors), (2, 0), "{}", m.stderr());
    assert_on(&m, "templates/letter.odt", &[0]);
    assert_on(&m, "templates/sub/invoice.odt", &[0]);
    assert_on(&m, "other/report.odt", &[1]);
    assert_on(&m, "archive/2019.tar", &[1]);
    assert_on(&m, "cold/hot-again", &[0]);
    m.unmount();
}

// ---------------------------------------------------------------------------
// watermarks
// ---------------------------------------------------------------------------

#[test]
fn watermark_brings_a_small_tier_under_low_oldest_first() {
    const K256: usize = 256 * 1024;
    let cfg = mover_config(concat!(
        "bandwidth = \"off\"\norder = \"lru\"\n",
        "[mover.watermark.pss]\nhigh = \"60%\"\nlow = \"30%\"\n",
        "[[mover.pin]]\nmatch = \"templates/**\"\ntier = \"pss\"\n",
    ));
    // 8 MiB tmpfs: 24 files of 256 KiB aged 1..24 days plus a pinned one of
    // 400 days = 6.25 MiB (78%). Down to 30% (2.4 MiB) takes the 16 oldest
    // unpinned files: 9 x 256 KiB = 2.25 MiB stay.
    let mut m = Mount::builder()
        .tmpfs(0, "8m")
        .config(&cfg)
        .setup(|t| {
            for i in 0..24 {
                put_aged(
                    &t[0],
                    &format!("w/f{i:02}"),
                    &pattern(K256, i as u64),
                    i as i64 + 1,
                );
            }
            put_aged(&t[0], "templates/pinned", &pattern(K256, 99), 400);
        })
        .mount();
    let (used, total) = used_fraction(&m.tier(0));
    assert!(
        used * 100 > total * 60,
        "premise: tier 0 above high ({used} of {total})"
    );

    let (plan, end) = dry_run(&m);
    let order: Vec<String> = plan.iter().map(|p| p.path.clone()).collect();
    let want: Vec<String> = (8..24).rev().map(|i| format!("w/f{i:02}")).collect();
    assert_eq!(order, want, "watermark plan (oldest first)\n{end}");
    assert!(
        plan.iter()
            .all(|p| p.reason == "watermark" && p.from == "pss" && p.to == "sss"),
        "{plan:?}"
    );
    assert!(
        plan.iter()
            .zip((8..24).rev())
            .all(|(p, i)| p.idle_days == i + 1),
        "idle days in the plan: {plan:?}"
    );
    assert_eq!(end, "16 files, 4.0 MiB would move");

    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total, s.errors), (16, 16, 0), "{}", m.stderr());
    for i in 0..24 {
        let rel = format!("w/f{i:02}");
        assert_on(&m, &rel, if i < 8 { &[0] } else { &[1] });
        assert_eq!(fnv1a(&read(&m.m(&rel))), fnv1a(&pattern(K256, i as u64)));
    }
    assert_on(&m, "templates/pinned", &[0]);
    let (used, total) = used_fraction(&m.tier(0));
    assert!(
        used * 100 <= total * 30,
        "tier 0 not under low after the pass: {used} of {total} bytes used"
    );
    // Under high now: nothing more to do.
    let (plan, end) = dry_run(&m);
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(end, "0 files, 0 B would move");
    m.unmount();
}

#[test]
fn watermark_with_size_lru_moves_large_idle_files_first() {
    // 8 MiB tmpfs, high 50% (4 MiB), low 40% (3.2 MiB). 3 MiB of fresh
    // files, one 1 MiB file idle 2 days, one 128 KiB file idle 10 days:
    // 4.125 MiB used. size-lru (idle x size): big (2 MiB.d) before small
    // (1.25 MiB.d); moving big alone reaches 3.125 MiB, below low.
    // With lru the small one would go first and then big as well.
    let run = |order: &str| -> (Vec<usize>, Vec<usize>) {
        let cfg = mover_config(&format!(
            "bandwidth = \"off\"\norder = \"{order}\"\n[mover.watermark.pss]\nhigh = \"50%\"\nlow = \"40%\"\n"
        ));
        let mut m = Mount::builder()
            .tmpfs(0, "8m")
            .config(&cfg)
            .setup(|t| {
                for i in 0..12 {
                    put_aged(&t[0], &format!("fresh/{i}"), &pattern(256 << 10, i), 0);
                }
                put_aged(&t[0], "big", &pattern(1 << 20, 100), 2);
                put_aged(&t[0], "small", &pattern(128 << 10, 101), 10);
            })
            .mount();
        let s = dfs_move(&m);
        assert_eq!(s.errors, 0, "{}", m.stderr());
        let r = (tiers_holding(&m, "big"), tiers_holding(&m, "small"));
        for i in 0..12 {
            assert_on(&m, &format!("fresh/{i}"), &[0]);
        }
        m.unmount();
        r
    };
    assert_eq!(run("size-lru"), (vec![1], vec![0]), "size-lru");
    assert_eq!(run("lru"), (vec![1], vec![1]), "lru");
}

// ---------------------------------------------------------------------------
// promotion
// ---------------------------------------------------------------------------

#[test]
fn promotion_needs_two_reads_within_the_window() {
    let cfg = mover_config(concat!(
        "bandwidth = \"off\"\n",
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\nnot_accessed_for = \"30d\"\n",
        "[mover.promote]\nreads = 2\nwithin = \"7d\"\n",
    ));
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[1], "p/twice", &pattern(70_000, 1), 100);
            put_aged(&t[1], "p/once", &pattern(70_000, 2), 100);
            put_aged(&t[1], "p/written_twice", &pattern(70_000, 3), 100);
            put_aged(&t[1], "p/stat_only", &pattern(70_000, 4), 100);
        })
        .mount();
    let ino_twice = ino(&m.m("p/twice"));
    assert_eq!(read_through(&m.m("p/twice")), pattern(70_000, 1));
    assert_eq!(read_through(&m.m("p/once")), pattern(70_000, 2));
    for _ in 0..2 {
        fs::OpenOptions::new()
            .write(true)
            .open(m.m("p/written_twice"))
            .unwrap();
        lstat(&m.m("p/stat_only")).unwrap();
    }
    settle();

    // One read each: nothing comes back (a batch scan reads once).
    let (plan, _) = dry_run(&m);
    assert!(plan.is_empty(), "plan after single reads: {plan:?}");
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total), (0, 0), "{}", m.stderr());
    for rel in ["p/twice", "p/once", "p/written_twice", "p/stat_only"] {
        assert_on(&m, rel, &[1]);
    }

    // The second read of p/twice brings it back.
    assert_eq!(read_through(&m.m("p/twice")), pattern(70_000, 1));
    settle();
    let (plan, _) = dry_run(&m);
    assert_eq!(
        plan.iter()
            .map(|p| (
                p.from.as_str(),
                p.to.as_str(),
                p.reason.as_str(),
                p.path.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![("sss", "pss", "promote", "p/twice")]
    );
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total, s.errors), (1, 1, 0), "{}", m.stderr());
    assert_on(&m, "p/twice", &[0]);
    for rel in ["p/once", "p/written_twice", "p/stat_only"] {
        assert_on(&m, rel, &[1]);
    }
    assert_eq!(
        ino(&m.m("p/twice")),
        ino_twice,
        "st_ino changed by the promotion"
    );
    assert_eq!(read(&m.m("p/twice")), pattern(70_000, 1));
    // It was just used: the age rule does not send it back down.
    let s = dfs_move(&m);
    assert_eq!(s.moved, 0, "{}", m.stderr());
    assert_on(&m, "p/twice", &[0]);
    m.unmount();
}

#[test]
fn read_counts_for_promotion_survive_a_remount() {
    let cfg = mover_config("bandwidth = \"off\"\n[mover.promote]\nreads = 2\nwithin = \"7d\"\n");
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| put_aged(&t[1], "doc", b"read once before, once after", 100))
        .mount();
    read_through(&m.m("doc"));
    settle();
    m.remount();
    read_through(&m.m("doc"));
    settle();
    let s = dfs_move(&m);
    assert_eq!(s.moved, 1, "{}", m.stderr());
    assert_on(&m, "doc", &[0]);
    m.unmount();
}

// ---------------------------------------------------------------------------
// what a move keeps
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn meta(p: &Path) -> Meta {
    let st = lstat(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let xattrs = listxattr(p)
        .unwrap()
        .into_iter()
        .map(|n| {
            let v = getxattr(p, &n).unwrap();
            (n, v)
        })
        .collect();
    Meta {
        ino: st.ino(),
        mode: st.mode(),
        uid: st.uid(),
        gid: st.gid(),
        size: st.size(),
        nlink: st.nlink(),
        atime: (st.atime(), st.atime_nsec()),
        mtime: (st.mtime(), st.mtime_nsec()),
        xattrs,
    }
}

/// A file capability (VFS_CAP_REVISION_2, effective, cap_net_bind_service).
const CAP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn a_move_keeps_st_ino_mode_owner_times_xattrs_acls_and_content() {
    const BIG: usize = 9 * 1024 * 1024 + 123; // several copy chunks
    let now = now_epoch();
    let files: Vec<(&str, usize, u32, u32, u32)> = vec![
        // (name, size, mode, uid, gid)
        ("meta/plain", 300 * 1024, 0o640, 1234, 5678),
        ("meta/special", 4096, 0o6750, 1234, 5678),
        ("meta/empty", 0, 0o400, 0, 0),
        ("meta/big", BIG, 0o644, 65534, 65534),
    ];
    let setup_files = files.clone();
    let cfg = mover_config(
        "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"meta/**\"\n",
    );
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(move |t| {
            let d = t[0].join("meta");
            mkdirs(&d);
            chmod(&d, 0o2750);
            lchown(&d, 1234, 5678);
            setxattr(&d, "user.dirtag", b"dir", 0).unwrap();
            for (i, (rel, len, mode, uid, gid)) in setup_files.iter().enumerate() {
                let p = t[0].join(rel);
                write(&p, pattern(*len, i as u64));
                lchown(&p, *uid, *gid);
                chmod(&p, *mode);
                setxattr(&p, "user.alpha", b"one", 0).unwrap();
                setxattr(&p, "user.bin", &[0, 1, 2, 255], 0).unwrap();
                setxattr(&p, "trusted.note", b"root only", 0).unwrap();
            }
            let plain = t[0].join("meta/plain");
            let st = Command::new("setfacl")
                .args(["-m", "u:4321:rw-,g:8765:r--"])
                .arg(&plain)
                .status()
                .unwrap();
            assert!(st.success(), "setfacl");
            setxattr(&t[0].join("meta/special"), "security.capability", &CAP, 0).unwrap();
            for (i, (rel, ..)) in setup_files.iter().enumerate() {
                utimens(
                    &t[0].join(rel),
                    ts(now - 50 * DAY - i as i64, 123_456_789 + i as i64),
                    ts(now - 60 * DAY - i as i64, 987_654_321 - i as i64),
                )
                .unwrap();
            }
        })
        .mount();

    // Before: through the mount, no read (reads could touch atime).
    let before: Vec<Meta> = files.iter().map(|f| meta(&m.m(f.0))).collect();
    let backing_before: Vec<Meta> = files.iter().map(|f| meta(&m.t(0, f.0))).collect();
    assert!(
        before[0].xattrs.contains_key("system.posix_acl_access"),
        "premise: ACL visible through the mount: {:?}",
        before[0].xattrs.keys()
    );
    assert_eq!(
        before[1].mode & 0o7777,
        0o6750,
        "premise: setuid/setgid kept"
    );
    assert_eq!(
        before[1].xattrs.get("security.capability"),
        Some(&CAP.to_vec())
    );

    let s = dfs_move(&m);
    assert_eq!(
        (s.moved, s.total, s.errors),
        (files.len() as u64, files.len() as u64, 0),
        "{}",
        m.stderr()
    );

    for (i, f) in files.iter().enumerate() {
        assert_on(&m, f.0, &[1]);
        let after = meta(&m.m(f.0));
        assert_eq!(
            after, before[i],
            "{}: attributes through the mount changed",
            f.0
        );
        // The backing copy on sss has the same attributes as the old one on
        // pss (st_ino aside), and carries the union id.
        let mut b = meta(&m.t(1, f.0));
        assert!(
            b.xattrs.remove("trusted.dfs.ino").is_some(),
            "{}: destination copy lacks trusted.dfs.ino",
            f.0
        );
        let mut old = backing_before[i].clone();
        old.ino = b.ino;
        assert_eq!(b, old, "{}: backing copy differs", f.0);
        assert!(
            !after.xattrs.contains_key("trusted.dfs.ino"),
            "internal xattr visible through the mount"
        );
    }
    // The parent chain on sss copies the directory's metadata.
    let (src, dst) = (
        lstat(&m.t(0, "meta")).unwrap(),
        lstat(&m.t(1, "meta")).unwrap(),
    );
    assert_eq!(
        (dst.mode() & 0o7777, dst.uid(), dst.gid()),
        (src.mode() & 0o7777, src.uid(), src.gid()),
        "directory copy on sss"
    );
    assert_eq!(getxattr(&m.t(1, "meta"), "user.dirtag").unwrap(), b"dir");
    // The ACL, as getfacl sees it.
    let acl = |p: &Path| {
        let o = Command::new("getfacl")
            .args(["-c", "-n"])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(acl(&m.m("meta/plain")), acl(&m.t(1, "meta/plain")));
    assert!(acl(&m.m("meta/plain")).contains("user:4321:rw-"));

    // d_ino in listings matches st_ino.
    for e in fs::read_dir(m.m("meta")).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            e.ino(),
            ino(&e.path()),
            "d_ino of {:?} differs from st_ino",
            e.file_name()
        );
    }
    // Content, last (reading may update atime).
    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            fnv1a(&read(&m.m(f.0))),
            fnv1a(&pattern(f.1, i as u64)),
            "{}: content",
            f.0
        );
    }
    // st_ino survives a remount (it lives in the destination's xattr).
    m.remount();
    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            ino(&m.m(f.0)),
            before[i].ino,
            "{}: st_ino after remount",
            f.0
        );
    }
    let mut listed: Vec<(OsString, u64)> = fs::read_dir(m.m("meta"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), e.ino())
        })
        .collect();
    listed.sort();
    for (name, d_ino) in listed {
        let p = m.m("meta").join(&name);
        assert_eq!(d_ino, ino(&p), "d_ino of {name:?} after remount");
    }
    m.unmount();
}

/// Many files moved out of one directory: every listing entry's d_ino must
/// match the st_ino of the name (readdir and readdirplus alike).
#[test]
fn listing_inode_numbers_match_after_moves_in_a_large_directory() {
    let mut m = Mount::builder()
        .config(&mover_config(RULE_ALL))
        .setup(|t| {
            for i in 0..300 {
                put_aged(
                    &t[0],
                    &format!("big_dir/a_rather_long_file_name_to_fill_pages_{i:04}"),
                    b"x",
                    10,
                );
            }
        })
        .mount();
    let before: BTreeMap<OsString, u64> = fs::read_dir(m.m("big_dir"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), ino(&e.path()))
        })
        .collect();
    assert_eq!(dfs_move(&m).moved, 300, "{}", m.stderr());
    m.remount();
    // List first (no lookups in between), then stat.
    let listed: Vec<(OsString, u64)> = fs::read_dir(m.m("big_dir"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), e.ino())
        })
        .collect();
    assert_eq!(listed.len(), 300);
    let mut bad = Vec::new();
    for (name, d_ino) in &listed {
        let st_ino = ino(&m.m("big_dir").join(name));
        if *d_ino != st_ino || before[name] != st_ino {
            bad.push((name.clone(), *d_ino, st_ino, before[name]));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of 300 entries with d_ino != st_ino or st_ino changed, e.g. (name, d_ino, st_ino, st_ino before the move) {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    m.unmount();
}

/// A moved file's old backing inode may be reused by the source tier's
/// filesystem for a new file. The new file must not get the moved file's
/// st_ino (the union id the moved copy carries), or the two names become
/// one node: reads of one return the other's content.
#[test]
fn a_new_file_reusing_a_moved_files_backing_inode_gets_its_own_st_ino() {
    let img_dir = tempfile::Builder::new()
        .prefix("dfs-it-loop-")
        .tempdir()
        .unwrap();
    let img = img_dir.path().join("t0.img");
    let mp = img_dir.path().join("t0");
    mkdirs(&mp);
    fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    // Few inodes: ext4 hands out the lowest free inode, so freed numbers come
    // back at once.
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-N", "32"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4");
    let st = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success(), "mount -o loop");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            force_unmount(&self.0);
        }
    }
    let _loop_guard = Unmount(mp.clone());

    let mut m = Mount::builder()
        .external_tier(0, &mp)
        .config(&mover_config(RULE_ALL))
        .setup(|t| {
            for n in ["a", "c", "e"] {
                put_aged(
                    &t[0],
                    &format!("old/{n}"),
                    format!("content of {n}").as_bytes(),
                    10,
                );
            }
        })
        .mount();
    let moved: Vec<(String, u64, u64)> = ["a", "c", "e"]
        .iter()
        .map(|n| {
            let rel = format!("old/{n}");
            (rel.clone(), ino(&m.t(0, &rel)), ino(&m.m(&rel)))
        })
        .collect();
    assert_eq!(dfs_move(&m).moved, 3, "{}", m.stderr());
    let mut reused = false;
    let mut seen: BTreeMap<u64, String> = moved.iter().map(|(r, _, u)| (*u, r.clone())).collect();
    for i in 0..12 {
        let rel = format!("old/new{i}");
        if fs::write(m.m(&rel), format!("content of new{i}")).is_err() {
            break; // out of inodes
        }
        if let Ok(st) = lstat(&m.t(0, &rel))
            && moved.iter().any(|(_, backing, _)| *backing == st.ino())
        {
            reused = true;
        }
        let u = ino(&m.m(&rel));
        if let Some(other) = seen.insert(u, rel.clone()) {
            panic!(
                "{rel} got st_ino {u}, already the st_ino of {other} (moved to sss); \
                 reading {other} now gives {:?}",
                String::from_utf8_lossy(&read(&m.m(&other)))
            );
        }
    }
    // dfs pins a moved file's old inode number (an empty placeholder in
    // pss/.dfs/ids), so the filesystem cannot hand it to a new file at all;
    // had it done so, the loop above would have caught the shared st_ino.
    assert!(
        !reused,
        "a moved file's old inode was reused on pss: it should stay pinned"
    );
    assert!(
        seen.len() > moved.len() + 3,
        "too few new files were created to exercise inode reuse"
    );
    for (rel, ..) in &moved {
        let n = rel.strip_prefix("old/").unwrap();
        assert_eq!(
            read(&m.m(rel)),
            format!("content of {n}").as_bytes(),
            "{rel}"
        );
    }
    m.unmount();
    drop(m);
}

/// A moved file's placeholder pins its old inode number only while some
/// name or open handle still carries its id: deleted while open, it goes
/// at the last close; replaced by a rename over it (an atomic save), at
/// once. Pins that outlive their file would pile up in pss/.dfs/ids.
#[test]
fn a_moved_files_pin_goes_with_its_last_name_and_handle() {
    let cfg = mover_config(
        "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"cold/**\"\n",
    );
    let m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "cold/open", b"held open", 100);
            put_aged(&t[0], "cold/replaced", b"saved over", 100);
            put_aged(&t[0], "cold/deleted", b"plain delete", 100);
        })
        .mount();
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.errors), (3, 0), "{}", m.stderr());
    let pins = || {
        fs::read_dir(m.t(0, ".dfs/ids"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(pins(), 3);
    fs::remove_file(m.m("cold/deleted")).unwrap();
    assert_eq!(pins(), 2, "a plain delete left its pin");
    // Deleted while open: the pin stays while the file is.
    let mut f = fs::File::open(m.m("cold/open")).unwrap();
    fs::remove_file(m.m("cold/open")).unwrap();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(pins(), 2, "the pin of a file still open went");
    let mut held = String::new();
    f.read_to_string(&mut held).unwrap();
    assert_eq!(held, "held open");
    drop(f);
    assert!(
        wait_until(Duration::from_secs(5), || pins() == 1),
        "the pin of a file deleted while open outlived its last close: {} pins",
        pins()
    );
    // Replaced by a rename over it.
    fs::write(m.m("cold/.new"), b"new content").unwrap();
    fs::rename(m.m("cold/.new"), m.m("cold/replaced")).unwrap();
    assert_eq!(pins(), 0, "the pin of a file renamed over stayed");
    assert_eq!(fs::read(m.m("cold/replaced")).unwrap(), b"new content");
}

// ---------------------------------------------------------------------------
// busy files, concurrent readers, hard links
// ---------------------------------------------------------------------------

#[test]
fn a_file_held_open_is_not_moved_until_closed() {
    let cfg = mover_config(
        "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"busy/**\"\n",
    );
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "busy/w", b"0123456789", 100);
            put_aged(&t[0], "busy/r", b"held for reading", 100);
            put_aged(&t[0], "busy/free", b"nobody holds me", 100);
        })
        .mount();
    let mut w = fs::OpenOptions::new()
        .write(true)
        .open(m.m("busy/w"))
        .unwrap();
    w.write_all(b"ab").unwrap();
    let r = fs::File::open(m.m("busy/r")).unwrap();

    let s = dfs_move(&m);
    assert_eq!(
        (s.moved, s.total, s.skipped, s.errors),
        (1, 3, 2, 0),
        "{}",
        m.stderr()
    );
    assert_on(&m, "busy/w", &[0]);
    assert_on(&m, "busy/r", &[0]);
    assert_on(&m, "busy/free", &[1]);
    assert!(
        m.stderr().contains("skipped \"busy/w\": open by a client"),
        "no log line for the busy file:\n{}",
        m.stderr()
    );
    assert!(temporaries(&m.tier(1)).is_empty(), "temporary left behind");

    // Still writing through the held handle.
    w.write_all(b"cd").unwrap();
    w.flush().unwrap();
    drop(w);
    drop(r);
    settle();
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total, s.errors), (2, 2, 0), "{}", m.stderr());
    assert_on(&m, "busy/w", &[1]);
    assert_on(&m, "busy/r", &[1]);
    assert_eq!(read(&m.m("busy/w")), b"abcd456789");
    assert_eq!(read(&m.m("busy/r")), b"held for reading");
    m.unmount();
}

/// The raw entries of directory `p` (getdents64): (name, d_ino), without
/// "." and "..". Unlike readdir(3), keeps entries whose d_ino is 0.
fn getdents(p: &Path) -> std::io::Result<Vec<(OsString, u64)>> {
    let c = cstr(p);
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    let r = getdents_fd(fd);
    unsafe { libc::close(fd) };
    r
}

/// getdents64 on an open directory descriptor, from its current offset.
fn getdents_fd(fd: i32) -> std::io::Result<Vec<(OsString, u64)>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        let mut off = 0usize;
        while off < n as usize {
            let d_ino = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap());
            let reclen = u16::from_ne_bytes(buf[off + 16..off + 18].try_into().unwrap()) as usize;
            let name_bytes = &buf[off + 19..off + reclen];
            let end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = std::ffi::OsStr::from_bytes(&name_bytes[..end]).to_os_string();
            if name != "." && name != ".." {
                out.push((name, d_ino));
            }
            off += reclen;
        }
    }
}

/// A directory opened before a pass (its listing is built at opendir) and
/// read after it: the moved files are still listed, with their st_ino as
/// d_ino (an entry with d_ino 0 is dropped by readdir(3), so `ls` would not
/// show it).
#[test]
fn a_directory_opened_before_a_pass_lists_the_moved_files() {
    let mut m = Mount::builder()
        .config(&mover_config(RULE_ALL))
        .setup(|t| {
            for i in 0..3 {
                put_aged(&t[0], &format!("od/f{i}"), b"x", 10);
            }
        })
        .mount();
    let inos: BTreeMap<OsString, u64> = (0..3)
        .map(|i| {
            (
                OsString::from(format!("f{i}")),
                ino(&m.m(&format!("od/f{i}"))),
            )
        })
        .collect();
    let c = cstr(m.m("od"));
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) }).unwrap();
    let s = dfs_move(&m);
    let listed = getdents_fd(fd);
    unsafe { libc::close(fd) };
    assert_eq!(s.moved, 3, "{}", m.stderr());
    let listed: BTreeMap<OsString, u64> = listed.unwrap().into_iter().collect();
    assert_eq!(
        listed, inos,
        "(name, d_ino) read after the pass from a directory opened before it"
    );
    m.unmount();
}

/// Readers check content and st_ino of files (and listings) in a loop while
/// a throttled pass moves them; returns the errors they saw.
fn readers_during_a_pass(
    m: &Mount,
    files: &[(String, u64, u64)],
    dirs: &[(String, usize)],
) -> (Vec<String>, u64, Summary) {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let files = Arc::new(
        files
            .iter()
            .map(|(r, h, i)| (m.m(r), *h, *i))
            .collect::<Vec<_>>(),
    );
    let dirs = Arc::new(dirs.iter().map(|(d, n)| (m.m(d), *n)).collect::<Vec<_>>());
    let inos: Arc<std::collections::HashMap<PathBuf, u64>> =
        Arc::new(files.iter().map(|(p, _, i)| (p.clone(), *i)).collect());
    let mut handles = Vec::new();
    for t in 0..4u64 {
        let (stop, errors, reads, files, dirs, inos) = (
            stop.clone(),
            errors.clone(),
            reads.clone(),
            files.clone(),
            dirs.clone(),
            inos.clone(),
        );
        handles.push(thread::spawn(move || {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                k += 1;
                let err = |e: String| {
                    let mut v = errors.lock().unwrap();
                    if v.len() < 50 {
                        v.push(e);
                    }
                };
                if k.is_multiple_of(16) {
                    let (d, n) = &dirs[(x % dirs.len() as u64) as usize];
                    if k.is_multiple_of(32) {
                        // What applications see (glibc's readdir).
                        match fs::read_dir(d) {
                            Ok(it) => {
                                let names: Result<BTreeSet<OsString>, _> =
                                    it.map(|e| e.map(|e| e.file_name())).collect();
                                match names {
                                    Ok(s) if s.len() == *n => {}
                                    Ok(s) => err(format!(
                                        "readdir of {} gives {} names, expected {n}",
                                        d.display(),
                                        s.len()
                                    )),
                                    Err(e) => err(format!("listing {}: {e}", d.display())),
                                }
                            }
                            Err(e) => err(format!("opendir {}: {e}", d.display())),
                        }
                    } else {
                        // The raw entries: every name, with a d_ino that is
                        // the name's st_ino (never 0: readdir drops those).
                        match getdents(d) {
                            Ok(v) => {
                                if v.len() != *n {
                                    err(format!(
                                        "getdents64 of {} gives {} names, expected {n}",
                                        d.display(),
                                        v.len()
                                    ));
                                }
                                for (name, d_ino) in v {
                                    let want = inos.get(&d.join(&name)).copied();
                                    if Some(d_ino) != want {
                                        err(format!(
                                            "getdents64 of {}: {name:?} has d_ino {d_ino}, st_ino is {want:?}",
                                            d.display()
                                        ));
                                    }
                                }
                            }
                            Err(e) => err(format!("getdents64 {}: {e}", d.display())),
                        }
                    }
                    continue;
                }
                let (p, h, i) = &files[(x % files.len() as u64) as usize];
                match lstat(p) {
                    Ok(st) if st.ino() == *i => {}
                    Ok(st) => err(format!("{}: st_ino {} != {i}", p.display(), st.ino())),
                    Err(e) => err(format!("stat {}: {e}", p.display())),
                }
                let mut data = Vec::new();
                match fs::File::open(p).and_then(|mut f| f.read_to_end(&mut data)) {
                    Ok(_) if fnv1a(&data) == *h => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => err(format!(
                        "{}: wrong content ({} bytes)",
                        p.display(),
                        data.len()
                    )),
                    Err(e) => err(format!("read {}: {e}", p.display())),
                }
            }
        }));
    }
    thread::sleep(Duration::from_millis(300));
    let s = dfs_move(m);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let errs = errors.lock().unwrap().clone();
    (errs, reads.load(Ordering::Relaxed), s)
}

fn concurrent_case(from: usize, extra_cfg: &str) {
    const N: usize = 300;
    const DIRS: usize = 3;
    let (fname, tname) = (["pss", "sss"][from], ["pss", "sss"][1 - from]);
    let cfg = mover_config(&format!(
        "bandwidth = \"4MiB/s\"\n[[mover.rule]]\nfrom = \"{fname}\"\nto = \"{tname}\"\nmatch = \"**\"\nnot_modified_for = \"30d\"\n{extra_cfg}"
    ));
    let rel = |i: usize| format!("c/d{}/file{i:04}", i % DIRS);
    let len = |i: usize| 1024 + (i * 7919) % (60 * 1024);
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(move |t| {
            for i in 0..N {
                put_aged(&t[from], &rel(i), &pattern(len(i), i as u64), 60);
            }
        })
        .mount();
    let files: Vec<(String, u64, u64)> = (0..N)
        .map(|i| {
            (
                rel(i),
                fnv1a(&pattern(len(i), i as u64)),
                ino(&m.m(&rel(i))),
            )
        })
        .collect();
    let dirs: Vec<(String, usize)> = (0..DIRS).map(|d| (format!("c/d{d}"), N / DIRS)).collect();
    let started = Instant::now();
    let (errs, reads, s) = readers_during_a_pass(&m, &files, &dirs);
    let (listing, other): (Vec<String>, Vec<String>) = errs
        .into_iter()
        .partition(|e| e.starts_with("getdents64 ") || e.starts_with("readdir "));
    assert!(
        other.is_empty(),
        "readers saw wrong content, ENOENT or a changed st_ino during the pass: {other:#?}"
    );
    assert!(
        listing.is_empty(),
        "directory listings during the pass were wrong (first ones): {listing:#?}"
    );
    assert_eq!(s.errors, 0, "{}", m.stderr());
    assert!(
        s.moved >= N as u64 / 2,
        "premise: most files moved while readers ran ({s:?})"
    );
    assert!(
        reads > 200,
        "premise: readers ran during the pass ({reads} reads in {:?})",
        started.elapsed()
    );
    // What the readers held open at a switch moves now.
    settle();
    let s2 = dfs_move(&m);
    assert_eq!(s.moved + s2.moved, N as u64, "{s:?} {s2:?}\n{}", m.stderr());
    for (i, (r, h, inode)) in files.iter().enumerate() {
        assert_on(&m, r, &[1 - from]);
        assert_eq!(fnv1a(&read(&m.m(r))), *h, "{r} ({i})");
        assert_eq!(ino(&m.m(r)), *inode, "{r}: st_ino");
    }
    m.unmount();
}

#[test]
fn concurrent_readers_during_a_pass_down_see_correct_content() {
    concurrent_case(0, "");
}

/// Moving up with the kernel caches off: every stat and open is a lookup
/// in the daemon, racing with the switches.
#[test]
fn concurrent_readers_during_a_pass_up_without_kernel_caches() {
    concurrent_case(
        1,
        "\n[cache]\nentry = \"0s\"\nattr = \"0s\"\nnegative = \"0s\"\n",
    );
}

/// A file changed (data, then mode) through the mount while the mover
/// copies it is not switched: the copy is stale. The pass after moves the
/// latest version.
#[test]
fn a_file_changed_during_the_copy_is_not_switched() {
    const LEN: usize = (4 << 20) + 1; // one 4 MiB chunk, a 2 s pause, 1 byte
    let mut m = Mount::builder()
        .config(&mover_config(
            "bandwidth = \"2MiB/s\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\n",
        ))
        .setup(|t| put_aged(&t[0], "ch/f", &pattern(LEN, 5), 100))
        .mount();
    let during_copy = |m: &Mount, change: &dyn Fn(&Mount)| -> Summary {
        let mnt = m.mnt();
        let client = thread::spawn(move || {
            run_dfs_timeout(
                &[OsString::from("move"), mnt.into()],
                Duration::from_secs(60),
            )
        });
        assert!(
            wait_until(Duration::from_secs(5), || !temporaries(&m.tier(1))
                .is_empty()),
            "premise: the copy started"
        );
        change(m);
        let (st, out, err) = client.join().unwrap();
        assert!(st.map(|s| s.success()).unwrap_or(false), "{out}{err}");
        parse_summary(&out).unwrap()
    };
    let mut want = pattern(LEN, 5);
    want[..7].copy_from_slice(b"CHANGED");
    let s = during_copy(&m, &|m: &Mount| {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.m("ch/f"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"CHANGED", 0).unwrap();
        drop(f);
        settle();
    });
    assert_eq!((s.moved, s.skipped, s.errors), (0, 1, 0), "{}", m.stderr());
    assert!(
        m.stderr()
            .contains("skipped \"ch/f\": changed during the copy"),
        "{}",
        m.stderr()
    );
    assert_on(&m, "ch/f", &[0]);
    assert!(temporaries(&m.tier(1)).is_empty());
    assert_eq!(fnv1a(&read(&m.m("ch/f"))), fnv1a(&want));

    // A metadata change (ctime) counts too.
    let s = during_copy(&m, &|m: &Mount| chmod(&m.m("ch/f"), 0o600));
    assert_eq!((s.moved, s.skipped, s.errors), (0, 1, 0), "{}", m.stderr());
    assert_on(&m, "ch/f", &[0]);

    let s = dfs_move(&m);
    assert_eq!((s.moved, s.errors), (1, 0), "{}", m.stderr());
    assert_on(&m, "ch/f", &[1]);
    assert_eq!(mode(&m.m("ch/f")), 0o600);
    assert_eq!(fnv1a(&read(&m.m("ch/f"))), fnv1a(&want));
    m.unmount();
}

#[test]
fn hard_linked_files_keep_their_links() {
    let mut m = Mount::builder()
        .config(&mover_config(RULE_ALL))
        .setup(|t| {
            put_aged(&t[0], "h/a", b"linked", 100);
            fs::hard_link(t[0].join("h/a"), t[0].join("h/b")).unwrap();
            mkdirs(&t[0].join("other"));
            fs::hard_link(t[0].join("h/a"), t[0].join("other/c")).unwrap();
            put_aged(&t[0], "h/single", b"single", 100);
        })
        .mount();
    let i = ino(&m.m("h/a"));
    assert_eq!(ino(&m.m("h/b")), i);
    let s = dfs_move(&m);
    assert_eq!(
        (s.moved, s.total, s.skipped, s.errors),
        (1, 4, 3, 0),
        "{}",
        m.stderr()
    );
    for rel in ["h/a", "h/b", "other/c"] {
        assert_on(&m, rel, &[0]);
        assert_eq!(ino(&m.m(rel)), i, "{rel}: st_ino");
        assert_eq!(lstat(&m.m(rel)).unwrap().nlink(), 3, "{rel}: nlink");
    }
    assert_eq!(ino(&m.t(0, "h/a")), ino(&m.t(0, "h/b")));
    assert_on(&m, "h/single", &[1]);
    assert!(
        m.stderr().contains("has several hard links"),
        "{}",
        m.stderr()
    );
    // Still one file: a write through one name shows through the others.
    fs::write(m.m("h/b"), b"changed").unwrap();
    assert_eq!(read(&m.m("h/a")), b"changed");
    assert_eq!(read(&m.m("other/c")), b"changed");
    assert!(temporaries(&m.tier(1)).is_empty());
    m.unmount();
}

// ---------------------------------------------------------------------------
// dry run, status, where
// ---------------------------------------------------------------------------

#[test]
fn dry_run_lists_the_plan_with_reasons_and_moves_nothing() {
    let cfg = mover_config(concat!(
        "bandwidth = \"off\"\n",
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**/*.pdf\"\nnot_accessed_for = \"30d\"\n",
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\nnot_accessed_for = \"90d\"\n",
    ));
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "a/old.pdf", &[1; 1024], 60);
            put_aged(&t[0], "a/older.txt", &[2; 1024], 120);
            put_aged(&t[0], "a/old.txt", &[3; 1024], 60); // rule 2 needs 90 d
            put_aged(&t[0], "b/new.pdf", &[4; 1024], 5);
            put_aged(&t[0], "b/ancient.pdf", &[5; 1024], 400);
        })
        .mount();
    let times = |m: &Mount| -> Vec<(i64, i64)> {
        [
            "a/old.pdf",
            "a/older.txt",
            "a/old.txt",
            "b/new.pdf",
            "b/ancient.pdf",
        ]
        .iter()
        .map(|r| {
            let s = lstat(&m.t(0, r)).unwrap();
            (s.atime(), s.mtime())
        })
        .collect()
    };
    let t_before = times(&m);
    let (mut plan, end) = dry_run(&m);
    plan.sort_by(|a, b| a.path.cmp(&b.path));
    let got: Vec<(String, String, String, u64, String)> = plan
        .into_iter()
        .map(|p| (p.from, p.to, p.reason, p.idle_days, p.path))
        .collect();
    let want: Vec<(String, String, String, u64, String)> = [
        ("rule 1", 60, "a/old.pdf"),
        ("rule 2", 120, "a/older.txt"),
        ("rule 1", 400, "b/ancient.pdf"),
    ]
    .iter()
    .map(|(r, d, p)| ("pss".into(), "sss".into(), r.to_string(), *d, p.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(end, "3 files, 3.0 KiB would move");
    // Nothing moved, nothing touched.
    for rel in [
        "a/old.pdf",
        "a/older.txt",
        "a/old.txt",
        "b/new.pdf",
        "b/ancient.pdf",
    ] {
        assert_on(&m, rel, &[0]);
    }
    assert!(!m.t(1, "a").exists() && !m.t(1, "b").exists());
    assert_eq!(times(&m), t_before);
    // The same plan is what a real pass then does.
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total), (3, 3), "{}", m.stderr());
    m.unmount();
}

/// The bar of a `dfs status` tier line: number of '#' of 30.
fn bar_fill(line: &str) -> usize {
    let a = line
        .find('[')
        .unwrap_or_else(|| panic!("no bar in {line:?}"));
    let b = line[a..].find(']').unwrap() + a;
    let inner = &line[a + 1..b];
    assert_eq!(inner.chars().count(), 30, "bar width in {line:?}");
    assert!(inner.chars().all(|c| c == '#' || c == '.'), "{line:?}");
    inner.chars().filter(|&c| c == '#').count()
}

fn pct(line: &str) -> f64 {
    let end = line
        .find("% used")
        .unwrap_or_else(|| panic!("no % in {line:?}"));
    line[..end]
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

fn status(m: &Mount) -> String {
    let r = dfs(
        &[OsString::from("status"), m.mnt().into()],
        Duration::from_secs(20),
    );
    assert!(r.ok, "dfs status failed\n{}\n{}", r.out, r.err);
    r.out
}

fn tier_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("  {name} ")))
        .unwrap_or_else(|| panic!("no line for tier {name}:\n{out}"))
}

#[test]
fn status_shows_tiers_bars_and_the_mover_state() {
    let cfg = mover_config(concat!(
        "bandwidth = \"50MiB/s\"\n",
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\nnot_accessed_for = \"30d\"\n",
    ));
    let mut m = Mount::builder()
        .tmpfs(0, "8m")
        .config(&cfg)
        .setup(|t| {
            // 4 MiB on an 8 MiB tier: half full; 8 old files, 8 new.
            for i in 0..16 {
                put_aged(
                    &t[0],
                    &format!("s/f{i:02}"),
                    &pattern(256 << 10, i),
                    if i < 8 { 100 } else { 1 },
                );
            }
            put_aged(&t[1], "already/cold", b"x", 100);
        })
        .mount();
    let out = status(&m);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("dfs on {}", m.mnt().display()), "{out}");
    // How the mount talks to the kernel, as startup decided it.
    assert!(
        lines[1].starts_with("I/O mode: kernel passthrough"),
        "{out}"
    );
    let transport = expected_transport(&[]);
    assert!(
        lines[2].starts_with(transport),
        "want {transport:?}:\n{out}"
    );
    assert!(
        lines[3].starts_with("tier changes: watched with fanotify"),
        "{out}"
    );
    assert_eq!(lines[4], "tiers (fastest first):", "{out}");
    let pss = tier_line(&out, "pss");
    let sss = tier_line(&out, "sss");
    assert!(pss.ends_with(&m.tier(0).display().to_string()), "{pss}");
    assert!(sss.ends_with(&m.tier(1).display().to_string()), "{sss}");
    let p = pct(pss);
    assert!((49.0..53.0).contains(&p), "pss use {p}%: {pss}");
    assert_eq!(bar_fill(pss), (p / 100.0 * 30.0).round() as usize, "{pss}");
    assert!(
        pss.contains("4.0 MiB free") || pss.contains("3.9 MiB free"),
        "{pss}"
    );
    assert!(pss.contains("files: counted at the first pass"), "{pss}");
    assert!(
        out.contains("mover: scheduled passes off (dfs move starts one), bandwidth 50.0 MiB/s"),
        "{out}"
    );
    assert!(out.contains("\n  idle\n"), "{out}");
    assert!(out.contains("  last pass: none yet"), "{out}");
    assert!(!out.contains("next pass"), "{out}");
    assert!(
        out.contains("  since mount: 0 files moved (0 B), 0 errors"),
        "{out}"
    );

    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total), (8, 8), "{}", m.stderr());
    let out = status(&m);
    let pss = tier_line(&out, "pss");
    let p = pct(pss);
    assert!(
        (24.0..28.0).contains(&p),
        "pss use after the pass {p}%: {pss}"
    );
    assert_eq!(bar_fill(pss), (p / 100.0 * 30.0).round() as usize, "{pss}");
    let last = out
        .lines()
        .find(|l| l.starts_with("  last pass: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        last.contains(" s ago (8 moved, 0 skipped, 0 errors, 2.0 MiB)"),
        "{last}"
    );
    assert!(
        out.contains("  since mount: 8 files moved (2.0 MiB), 0 errors"),
        "{out}"
    );
    m.unmount();
}

/// After a pass, the per-tier file counts describe where files are now.
#[test]
fn status_file_counts_are_those_after_the_pass() {
    let cfg = mover_config(concat!(
        "bandwidth = \"off\"\n",
        "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\nnot_accessed_for = \"30d\"\n",
    ));
    let mut m = Mount::builder()
        .config(&cfg)
        .setup(|t| {
            put_aged(&t[0], "old1", b"1", 100);
            put_aged(&t[0], "old2", b"2", 100);
            put_aged(&t[0], "new", b"3", 1);
            put_aged(&t[1], "cold", b"4", 100);
        })
        .mount();
    assert_eq!(dfs_move(&m).moved, 2, "{}", m.stderr());
    let out = status(&m);
    assert!(
        tier_line(&out, "pss").contains("  1 files  "),
        "pss holds 1 file after the pass:\n{out}"
    );
    assert!(
        tier_line(&out, "sss").contains("  3 files  "),
        "sss holds 3 files after the pass:\n{out}"
    );
    m.unmount();
}

#[test]
fn where_prints_the_tier_and_backing_path() {
    let mut m = Mount::builder()
        .config(&mover_config(
            "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"go/**\"\n",
        ))
        .setup(|t| {
            put_aged(&t[0], "go/down", b"d", 1);
            put_aged(&t[0], "stay", b"s", 1);
            put_aged(&t[1], "low/file", b"l", 1);
        })
        .mount();
    let where_ = |paths: &[PathBuf]| {
        let mut args: Vec<OsString> = vec!["where".into()];
        args.extend(paths.iter().map(|p| p.clone().into_os_string()));
        dfs(&args, Duration::from_secs(20))
    };
    let r = where_(&[m.m("go/down"), m.m("stay"), m.m("low/file"), m.m("go")]);
    assert!(r.ok, "{}\n{}", r.out, r.err);
    let want = format!(
        "{}\tpss\t{}\n{}\tpss\t{}\n{}\tsss\t{}\n{}\tpss\t{}\n",
        m.m("go/down").display(),
        m.t(0, "go/down").display(),
        m.m("stay").display(),
        m.t(0, "stay").display(),
        m.m("low/file").display(),
        m.t(1, "low/file").display(),
        m.m("go").display(),
        m.t(0, "go").display(),
    );
    assert_eq!(r.out, want);

    assert_eq!(dfs_move(&m).moved, 1, "{}", m.stderr());
    let r = where_(&[m.m("go/down")]);
    assert!(r.ok, "{}", r.err);
    assert_eq!(
        r.out,
        format!(
            "{}\tsss\t{}\n",
            m.m("go/down").display(),
            m.t(1, "go/down").display()
        )
    );

    // A relative path, from inside the mount.
    let o = Command::new(DFS)
        .args(["where", "down"])
        .current_dir(m.m("go"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("down\tsss\t{}\n", m.t(1, "go/down").display())
    );

    // Missing names and paths outside any dfs mount: an error per path, the
    // others still answered, exit status non-zero.
    let r = where_(&[m.m("nope"), m.m("stay"), m.root()]);
    assert!(!r.ok);
    assert_eq!(
        r.out,
        format!(
            "{}\tpss\t{}\n",
            m.m("stay").display(),
            m.t(0, "stay").display()
        )
    );
    assert!(
        r.err.contains(&format!(
            "dfs: {}: no such file or directory",
            m.m("nope").display()
        )),
        "{}",
        r.err
    );
    assert!(
        r.err.contains(&format!("{}: ", m.root().display()))
            && r.err.contains("is not inside a dfs mount"),
        "{}",
        r.err
    );
    m.unmount();
}

/// The mount point itself is a path inside the mount (its root).
#[test]
fn where_on_the_mount_point_names_the_root() {
    let mut m = Mount::builder().config(&mover_config(RULE_ALL)).mount();
    let r = dfs(
        &[OsString::from("where"), m.mnt().into()],
        Duration::from_secs(20),
    );
    assert_eq!(
        (r.ok, r.out.as_str()),
        (
            true,
            format!("{}\tpss\t{}\n", m.mnt().display(), m.tier(0).display()).as_str()
        ),
        "stderr: {}",
        r.err
    );
    m.unmount();
}

#[test]
fn the_preset_has_the_documented_mover() {
    let mut m = Mount::builder()
        .tmpfs(0, "64m")
        .setup(|t| {
            put_aged(&t[0], "docs/old", b"200 days", 200);
            put_aged(&t[0], "docs/young", b"100 days", 100);
            put_aged(&t[0], "templates/old", b"pinned", 200);
            put_aged(&t[1], "cold/reread", b"read twice", 300);
            put_aged(&t[1], "cold/once", b"read once", 300);
        })
        .mount();
    for _ in 0..2 {
        read_through(&m.m("cold/reread"));
    }
    read_through(&m.m("cold/once"));
    settle();
    let (mut plan, end) = dry_run(&m);
    plan.sort_by(|a, b| a.path.cmp(&b.path));
    let got: Vec<(&str, &str, &str, &str)> = plan
        .iter()
        .map(|p| {
            (
                p.from.as_str(),
                p.to.as_str(),
                p.reason.as_str(),
                p.path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("sss", "pss", "promote", "cold/reread"),
            ("pss", "sss", "rule 1", "docs/old"),
        ]
    );
    assert!(end.starts_with("2 files, "), "{end}");
    let out = status(&m);
    assert!(
        out.contains("mover: a pass every 3600 s, bandwidth 200.0 MiB/s"),
        "{out}"
    );
    let next = out
        .lines()
        .find(|l| l.starts_with("  next pass: in "))
        .unwrap_or_else(|| panic!("no next pass line:\n{out}"));
    let secs: u64 = next["  next pass: in ".len()..]
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&secs), "{next}");
    let s = dfs_move(&m);
    assert_eq!((s.moved, s.total), (2, 2), "{}", m.stderr());
    assert_on(&m, "docs/old", &[1]);
    assert_on(&m, "cold/reread", &[0]);
    assert_on(&m, "templates/old", &[0]);
    assert_on(&m, "docs/young", &[0]);
    m.unmount();
}

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

#[test]
fn mover_config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = dir.path().join("t0");
    let t1 = dir.path().join("t1");
    let mnt = dir.path().join("mnt");
    for d in [&t0, &t1, &mnt] {
        mkdirs(d);
    }
    let cfg_path = dir.path().join("dfs.toml");
    let base = mover_config("")
        .replace("{tier0}", t0.to_str().unwrap())
        .replace("{tier1}", t1.to_str().unwrap());
    // (text after the base, the line holding the error, expected key)
    let cases: Vec<(&str, &str, &str)> = vec![
        ("bandwidth = \"200MiB\"\n", "bandwidth", "mover.bandwidth"),
        ("bandwidth = \"fast/s\"\n", "bandwidth", "mover.bandwidth"),
        ("bandwidth = \"10%/s\"\n", "bandwidth", "mover.bandwidth"),
        ("order = \"random\"\n", "order", "mover.order"),
        ("intervall = \"1h\"\n", "intervall", "intervall"),
        (
            "[mover.watermark.pss]\nhigh = \"80%\"\nlow = \"90%\"\n",
            "low",
            "mover.watermark.low",
        ),
        (
            "[mover.watermark.pss]\nhigh = \"90 percent\"\nlow = \"80%\"\n",
            "high",
            "mover.watermark.high",
        ),
        (
            "[mover.watermark.pss]\nhigh = \"120%\"\nlow = \"80%\"\n",
            "high",
            "mover.watermark.high",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"tape\"\n",
            "to = ",
            "mover.rule.to",
        ),
        (
            "[[mover.rule]]\nfrom = \"nvme\"\nto = \"sss\"\n",
            "from = ",
            "mover.rule.from",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"pss\"\n",
            "to = ",
            "mover.rule.to",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nnot_accessed_for = \"6 months\"\n",
            "not_accessed_for",
            "mover.rule.not_accessed_for",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nnot_modified_for = \"1y\"\n",
            "not_modified_for",
            "mover.rule.not_modified_for",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nnot_modified_for = \"365\"\n",
            "not_modified_for",
            "mover.rule.not_modified_for",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmin_size = \"10%\"\n",
            "min_size",
            "mover.rule.min_size",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmax_size = \"lots\"\n",
            "max_size",
            "mover.rule.max_size",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"docs/[\"\n",
            "match",
            "mover.rule.match",
        ),
        (
            "[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nolder_than = \"1d\"\n",
            "older_than",
            "older_than",
        ),
        (
            "[[mover.pin]]\nmatch = \"a{\"\ntier = \"pss\"\n",
            "match",
            "mover.pin.match",
        ),
        (
            "[[mover.pin]]\nmatch = \"templates/**\"\ntier = \"tape\"\n",
            "tier = ",
            "mover.pin.tier",
        ),
        (
            "[mover.promote]\nreads = 1\nwithin = \"7d\"\n",
            "reads",
            "mover.promote.reads",
        ),
        (
            "[mover.promote]\nreads = 2\nwithin = \"a week\"\n",
            "within",
            "mover.promote.within",
        ),
        (
            "[mover.promote]\nreads = \"2\"\nwithin = \"7d\"\n",
            "reads",
            "reads",
        ),
    ];
    let mut failures = Vec::new();
    for (extra, line_key, key) in &cases {
        let text = format!("{base}{extra}");
        fs::write(&cfg_path, &text).unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with(line_key))
            .unwrap_or_else(|| panic!("{line_key} not in {text}"))
            + 1;
        let (st, out, err) = run_dfs_timeout(
            &[
                OsString::from("mount"),
                "--config".into(),
                cfg_path.clone().into(),
                mnt.clone().into(),
            ],
            Duration::from_secs(5),
        );
        assert_no_panic(&err);
        assert!(fuse_mount_at(&mnt).is_none(), "{extra:?} left a mount");
        let want = format!("{}:{line}: key `{key}`", cfg_path.display());
        match st {
            None => failures.push(format!(
                "{extra:?}: accepted (dfs mounted); expected a failure naming {want:?}"
            )),
            Some(st) if st.success() || !err.contains(&want) => failures.push(format!(
                "{extra:?}: expected a failure naming {want:?}; got {st}:\n{out}{err}"
            )),
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// `low` above `high` is rejected when both are percentages; it must be
/// when both are byte sizes too (the watermark could never be satisfied).
#[test]
fn watermark_low_above_high_in_bytes_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (t0, t1, mnt) = (
        dir.path().join("t0"),
        dir.path().join("t1"),
        dir.path().join("mnt"),
    );
    for d in [&t0, &t1, &mnt] {
        mkdirs(d);
    }
    let cfg_path = dir.path().join("dfs.toml");
    let text = mover_config("[mover.watermark.pss]\nhigh = \"1GiB\"\nlow = \"2GiB\"\n")
        .replace("{tier0}", t0.to_str().unwrap())
        .replace("{tier1}", t1.to_str().unwrap());
    let line = text.lines().position(|l| l.starts_with("low")).unwrap() + 1;
    fs::write(&cfg_path, &text).unwrap();
    let (st, out, err) = run_dfs_timeout(
        &[
            OsString::from("mount"),
            "--config".into(),
            cfg_path.clone().into(),
            mnt.clone().into(),
        ],
        Duration::from_secs(5),
    );
    assert!(fuse_mount_at(&mnt).is_none());
    let want = format!("{}:{line}: key `mover.watermark.low`", cfg_path.display());
    let st =
        st.unwrap_or_else(|| panic!("accepted (dfs mounted); expected an error naming {want:?}"));
    assert!(!st.success() && err.contains(&want), "{st}: {out}{err}");
}

#[test]
fn mover_config_accepts_the_documented_units() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = dir.path().join("t0");
    let t1 = dir.path().join("t1");
    let mnt = dir.path().join("mnt");
    for d in [&t0, &t1, &mnt] {
        mkdirs(d);
    }
    let cfg_path = dir.path().join("dfs.toml");
    for (interval, bandwidth, age, size, high, low) in [
        ("90s", "512KiB/s", "12h", "1KiB", "90%", "80%"),
        ("15m", "1GiB/s", "180d", "5MiB", "2GiB", "1GiB"),
        ("2h", "off", "30m", "2GiB", "95%", "1GiB"),
        ("1d", "200MiB/s", "45s", "100", "50%", "10%"),
    ] {
        let text = format!(
            "[[tier]]\nname = \"pss\"\npath = \"{}\"\n[[tier]]\nname = \"sss\"\npath = \"{}\"\n\
             [mover]\ninterval = \"{interval}\"\nbandwidth = \"{bandwidth}\"\norder = \"size-lru\"\n\
             [mover.watermark.pss]\nhigh = \"{high}\"\nlow = \"{low}\"\n\
             [[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**/*.iso\"\nnot_accessed_for = \"{age}\"\n\
             not_modified_for = \"{age}\"\nmin_size = \"{size}\"\nmax_size = \"{size}\"\n\
             [[mover.pin]]\nmatch = \"templates/**\"\ntier = \"pss\"\n\
             [mover.promote]\nreads = 3\nwithin = \"{age}\"\n",
            t0.display(),
            t1.display()
        );
        fs::write(&cfg_path, &text).unwrap();
        mounts_ok(
            &[
                OsString::from("mount"),
                "--config".into(),
                cfg_path.clone().into(),
                mnt.clone().into(),
            ],
            &mnt,
        )
        .unwrap_or_else(|e| panic!("rejected:\n{text}\n{e}"));
    }
}

#[test]
fn move_without_a_mover_is_a_clear_error() {
    let mut m = Mount::builder()
        .names(&["pss", "sss"])
        .policy("kind = \"parent-dir\"")
        .setup(|t| put_aged(&t[0], "sub/f", b"x", 400))
        .mount();
    for args in [
        vec![OsString::from("move"), m.mnt().into()],
        vec![OsString::from("move"), "--dry-run".into(), m.mnt().into()],
    ] {
        let r = dfs(&args, Duration::from_secs(20));
        assert!(!r.ok, "{args:?} succeeded:\n{}", r.out);
        assert!(
            r.err.contains("the mover is not configured for this mount")
                && r.err.contains("[mover]"),
            "{args:?}: {}",
            r.err
        );
    }
    let out = status(&m);
    assert!(out.contains("mover: not configured"), "{out}");
    assert_on(&m, "sub/f", &[0]);

    // Not a mount point, and not a dfs mount at all.
    let r = dfs(
        &[OsString::from("move"), m.m("sub").into()],
        Duration::from_secs(20),
    );
    assert!(!r.ok);
    assert!(
        r.err.contains(&format!(
            "{} is inside the dfs mount {}, not its mount point",
            m.m("sub").display(),
            m.mnt().display()
        )),
        "{}",
        r.err
    );
    let r = dfs(
        &[OsString::from("move"), m.root().into()],
        Duration::from_secs(20),
    );
    assert!(!r.ok);
    assert!(r.err.contains("is not inside a dfs mount"), "{}", r.err);
    m.unmount();
}

#[test]
fn no_room_on_the_destination_skips_with_a_log_line() {
    let mut m = Mount::builder()
        .tmpfs(1, "4m")
        .config(&mover_config(RULE_ALL))
        .setup(|t| {
            put_aged(&t[0], "nr/big", &pattern(6 << 20, 1), 100);
            put_aged(&t[0], "nr/small", &pattern(64 << 10, 2), 100);
        })
        .mount();
    let before = lstat(&m.t(0, "nr/big")).unwrap();
    let s = dfs_move(&m);
    assert_eq!(
        (s.moved, s.total, s.skipped, s.errors),
        (1, 2, 1, 0),
        "{}",
        m.stderr()
    );
    assert!(
        m.stderr()
            .contains("skipped \"nr/big\": not enough room on the destination"),
        "no log line:\n{}",
        m.stderr()
    );
    assert_on(&m, "nr/big", &[0]);
    assert_on(&m, "nr/small", &[1]);
    let after = lstat(&m.t(0, "nr/big")).unwrap();
    assert_eq!(
        (after.ino(), after.size(), after.mtime(), after.mtime_nsec()),
        (
            before.ino(),
            before.size(),
            before.mtime(),
            before.mtime_nsec()
        )
    );
    assert!(
        temporaries(&m.tier(1)).is_empty(),
        "{:?}",
        temporaries(&m.tier(1))
    );
    assert_eq!(fnv1a(&read(&m.m("nr/big"))), fnv1a(&pattern(6 << 20, 1)));
    m.unmount();
}

/// The destination fills up while a file is being copied (its free space
/// was enough when the move began): the move fails cleanly, the source is
/// intact and no temporary stays behind.
#[test]
fn destination_filling_up_during_the_copy_leaves_the_file_intact() {
    let mut m = Mount::builder()
        .tmpfs(1, "16m")
        .config(&mover_config(
            "bandwidth = \"2MiB/s\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\n",
        ))
        .setup(|t| put_aged(&t[0], "f/big", &pattern(8 << 20, 7), 100))
        .mount();
    let mnt = m.mnt();
    let mover = thread::spawn(move || {
        run_dfs_timeout(
            &[OsString::from("move"), mnt.into()],
            Duration::from_secs(60),
        )
    });
    // Let the copy start, then fill the destination behind its back.
    assert!(
        wait_until(Duration::from_secs(5), || !temporaries(&m.tier(1))
            .is_empty()),
        "premise: the copy started"
    );
    let mut filler = fs::File::create(m.t(1, "filler")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while filler.write_all(&chunk).is_ok() {}
    drop(filler);
    let (st, out, err) = mover.join().unwrap();
    let st = st.expect("dfs move finished");
    assert!(st.success(), "{out}{err}");
    let s = parse_summary(&out).unwrap();
    assert_eq!((s.moved, s.total), (0, 1), "{out}\n{}", m.stderr());
    assert_eq!(s.skipped + s.errors, 1, "{s:?}");
    assert_on(&m, "f/big", &[0]);
    assert!(
        temporaries(&m.tier(1)).is_empty(),
        "{:?}",
        temporaries(&m.tier(1))
    );
    assert_eq!(fnv1a(&read(&m.m("f/big"))), fnv1a(&pattern(8 << 20, 7)));
    m.unmount();
}

/// `dfs move` must not report success when the daemon dies mid-pass.
#[test]
fn move_reports_a_failure_when_the_daemon_dies_mid_pass() {
    let mut m = Mount::builder()
        .config(&mover_config(
            "bandwidth = \"1MiB/s\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\n",
        ))
        .setup(|t| {
            for i in 0..4 {
                put_aged(&t[0], &format!("k/{i}"), &pattern(1 << 20, i), 100);
            }
        })
        .mount();
    let mnt = m.mnt();
    let client = thread::spawn(move || {
        run_dfs_timeout(
            &[OsString::from("move"), mnt.into()],
            Duration::from_secs(30),
        )
    });
    thread::sleep(Duration::from_millis(700));
    let (st, _) = m.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    assert!(st.is_some(), "dfs did not die on SIGKILL");
    force_unmount(&m.mnt());
    let (st, out, err) = client.join().unwrap();
    let st = st.expect("dfs move returned");
    assert!(
        !st.success(),
        "dfs move exited 0 although the pass never finished\nstdout: {out:?}\nstderr: {err:?}"
    );
    assert!(!err.trim().is_empty(), "no message on stderr");
    // The files are all there after a restart.
    m.start_again();
    for i in 0..4 {
        assert_eq!(
            fnv1a(&read(&m.m(&format!("k/{i}")))),
            fnv1a(&pattern(1 << 20, i))
        );
    }
    m.unmount();
}

// ---------------------------------------------------------------------------
// throttle and batches
// ---------------------------------------------------------------------------

#[test]
fn the_bandwidth_throttle_holds_a_pass_to_its_rate() {
    // 6 MiB at 8 MiB/s cannot take less than 0.75 s: the throttle sleeps
    // each copy back under the rate (a lower bound only, which sleeping
    // guarantees whatever the machine's load).
    let cfg = mover_config(
        "bandwidth = \"8MiB/s\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\n",
    );
    let chunk = vec![7u8; 1 << 20];
    let data = chunk.clone();
    let m = Mount::builder()
        .config(&cfg)
        .setup(move |t| {
            for i in 0..6 {
                put_aged(&t[0], &format!("big/f{i}"), &data, 10);
            }
        })
        .mount();
    let t = std::time::Instant::now();
    let s = dfs_move(&m);
    let took = t.elapsed();
    assert_eq!(s.moved, 6, "daemon log:\n{}", m.stderr());
    assert!(
        took >= Duration::from_millis(700),
        "6 MiB at 8 MiB/s moved in {took:?}"
    );
    for i in 0..6 {
        assert_on(&m, &format!("big/f{i}"), &[1]);
        assert_eq!(read_through(&m.m(&format!("big/f{i}"))), chunk);
    }
}

#[test]
fn a_pass_over_several_batches_moves_every_file_once() {
    // More files than one switch batch holds (256), in several directories:
    // the copying and switching threads hand every file over exactly once.
    let m = Mount::builder()
        .config(&mover_config(RULE_ALL))
        .setup(|t| {
            for i in 0..700 {
                put_aged(
                    &t[0],
                    &format!("d{}/f{i}", i % 7),
                    format!("file {i}").as_bytes(),
                    10,
                );
            }
        })
        .mount();
    let s = dfs_move(&m);
    assert_eq!(
        s,
        Summary {
            moved: 700,
            total: 700,
            skipped: 0,
            errors: 0
        },
        "daemon log:\n{}",
        m.stderr()
    );
    for i in 0..700 {
        let rel = format!("d{}/f{i}", i % 7);
        assert_eq!(read_through(&m.m(&rel)), format!("file {i}").as_bytes());
    }
    for d in 0..7 {
        assert!(entries_of(&m.tier(0).join(format!("d{d}"))).is_empty());
        assert_eq!(entries_of(&m.tier(1).join(format!("d{d}"))).len(), 100);
    }
    assert!(temporaries(&m.tier(1)).is_empty());
}

/// Names in directory `d` (none if it is absent).
fn entries_of(d: &Path) -> Vec<OsString> {
    match fs::read_dir(d) {
        Ok(it) => it.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    }
}
