//! kill -9 of the daemon at random moments during mover passes over a few
//! thousand small files: after cleaning the dead mount and remounting, every
//! file is in the union exactly once with its content and st_ino, no
//! temporary shows through the mount, and the leftovers of unfinished moves
//! are gone from `<tier>/.dfs/tmp`.
//!
//! Passes alternate direction (pss -> sss, then sss -> pss, ...) so every
//! kill lands in a pass with work to do. Set DFS_CRASH_SEED to replay a run.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const FILES: usize = 2500;
const ITERATIONS: usize = 20;
const MAX_DELAY_MS: u64 = 300;

fn rel(i: usize) -> String {
    format!("d{}/e{}/f{i:05}", i % 10, (i / 10) % 5)
}

fn content(i: usize) -> Vec<u8> {
    pattern(1024 + (i * 131) % 4096, i as u64)
}

fn config(from: &str, to: &str, t0: &Path, t1: &Path) -> String {
    mover_config(&format!(
        "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"{from}\"\nto = \"{to}\"\nmatch = \"**\"\n"
    ))
    .replace("{tier0}", t0.to_str().unwrap())
    .replace("{tier1}", t1.to_str().unwrap())
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn temporaries(tier: &Path) -> usize {
    fs::read_dir(tier.join(".dfs/tmp"))
        .map(|it| it.count())
        .unwrap_or(0)
}

/// Walks the union: every listing free of duplicates, exactly the expected
/// files, each with its content and st_ino. Returns problems found.
fn check_union(m: &Mount, want: &BTreeMap<String, (u64, u64)>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut found = BTreeSet::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let p = if dir.is_empty() { m.mnt() } else { m.m(&dir) };
        let entries: Vec<fs::DirEntry> = match fs::read_dir(&p) {
            Ok(it) => match it.collect() {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("listing {}: {e}", p.display()));
                    continue;
                }
            },
            Err(e) => {
                problems.push(format!("opendir {}: {e}", p.display()));
                continue;
            }
        };
        let names: Vec<OsString> = entries.iter().map(|e| e.file_name()).collect();
        let distinct: BTreeSet<&OsString> = names.iter().collect();
        if distinct.len() != names.len() {
            problems.push(format!("duplicate names in the listing of {dir:?}"));
        }
        for e in entries {
            let name = e.file_name().into_string().unwrap();
            let r = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(r);
            } else {
                found.insert(r);
            }
        }
    }
    let want_names: BTreeSet<String> = want.keys().cloned().collect();
    for extra in found.difference(&want_names).take(10) {
        problems.push(format!("unexpected name {extra:?} in the union"));
    }
    for missing in want_names.difference(&found).take(10) {
        problems.push(format!("{missing:?} missing from the listing"));
    }
    for (r, (hash, inode)) in want {
        match fs::read(m.m(r)) {
            Ok(d) if fnv1a(&d) == *hash => {}
            Ok(d) => problems.push(format!("{r}: wrong content ({} bytes)", d.len())),
            Err(e) => problems.push(format!("{r}: {e}")),
        }
        match lstat(&m.m(r)) {
            Ok(st) if st.ino() == *inode => {}
            Ok(st) => problems.push(format!("{r}: st_ino {} != {inode}", st.ino())),
            Err(e) => problems.push(format!("stat {r}: {e}")),
        }
        // A crash between the rename and the unlink may leave two copies;
        // they must then be identical.
        let copies: Vec<Vec<u8>> = (0..2).filter_map(|t| fs::read(m.t(t, r)).ok()).collect();
        if copies.is_empty() {
            problems.push(format!("{r}: on no tier"));
        }
        if copies.iter().any(|c| fnv1a(c) != *hash) {
            problems.push(format!("{r}: a tier copy has other content"));
        }
    }
    if problems.len() > 20 {
        problems.truncate(20);
    }
    problems
}

#[test]
fn kill_9_during_passes_loses_nothing() {
    let started = Instant::now();
    let seed = std::env::var("DFS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("DFS_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let mut m = Mount::builder()
        .config(&mover_config(
            "bandwidth = \"off\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**\"\n",
        ))
        .setup(|t| {
            for i in 0..FILES {
                let p = t[0].join(rel(i));
                mkdirs(p.parent().unwrap());
                write(&p, content(i));
            }
        })
        .mount();
    let (t0, t1) = (m.tier(0), m.tier(1));
    let cfg_path = m.config_path().unwrap();
    let want: BTreeMap<String, (u64, u64)> = (0..FILES)
        .map(|i| (rel(i), (fnv1a(&content(i)), ino(&m.m(&rel(i))))))
        .collect();

    let mut with_leftovers = 0;
    let mut tier_changes = 0;
    let mut on_t1_before = (0..FILES).filter(|&i| m.t(1, &rel(i)).exists()).count();
    for it in 0..ITERATIONS {
        let (from, to) = if it % 2 == 0 {
            ("pss", "sss")
        } else {
            ("sss", "pss")
        };
        if it > 0 {
            fs::write(&cfg_path, config(from, to, &t0, &t1)).unwrap();
            m.start_again();
            assert_no_panic(&m.stderr());
            assert_eq!(
                (temporaries(&t0), temporaries(&t1)),
                (0, 0),
                "iteration {it}: leftovers in .dfs/tmp after the remount (seed {seed})"
            );
            let problems = check_union(&m, &want);
            assert!(
                problems.is_empty(),
                "iteration {it} (seed {seed}): {problems:#?}\ndaemon log tail:\n{}",
                tail(&m.stderr())
            );
        }
        let client = Command::new(DFS)
            .arg("move")
            .arg(m.mnt())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Mostly early in a pass (copies, the first switches); every fourth
        // kill later, so that switches have run even on a loaded machine
        // (a first batch can take over MAX_DELAY_MS to copy there).
        let delay = if it % 4 == 3 {
            MAX_DELAY_MS + rng.next() % (3 * MAX_DELAY_MS)
        } else {
            rng.next() % (MAX_DELAY_MS + 1)
        };
        thread::sleep(Duration::from_millis(delay));
        let (st, _) = m.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        assert!(st.is_some(), "dfs survived SIGKILL");
        force_unmount(&m.mnt());
        assert!(!is_mounted(&m.mnt()), "dead mount not cleaned");
        let mut client = client;
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = client.kill();
                let _ = client.wait();
                panic!("dfs move hung after the daemon died");
            }
            thread::sleep(Duration::from_millis(10));
        }
        let left = temporaries(&t0) + temporaries(&t1);
        if left > 0 {
            with_leftovers += 1;
        }
        let on_t1 = (0..FILES).filter(|&i| m.t(1, &rel(i)).exists()).count();
        let on_both = (0..FILES)
            .filter(|&i| m.t(0, &rel(i)).exists() && m.t(1, &rel(i)).exists())
            .count();
        tier_changes += on_t1.abs_diff(on_t1_before);
        on_t1_before = on_t1;
        eprintln!(
            "iteration {it}: {from} -> {to}, killed after {delay} ms, {left} leftovers, \
             {on_t1} files on sss, {on_both} on both tiers"
        );
    }

    // Last: a complete pass down; afterwards every file is on sss only.
    fs::write(&cfg_path, config("pss", "sss", &t0, &t1)).unwrap();
    m.start_again();
    assert_eq!((temporaries(&t0), temporaries(&t1)), (0, 0));
    let problems = check_union(&m, &want);
    assert!(
        problems.is_empty(),
        "after the last kill (seed {seed}): {problems:#?}"
    );
    let r = run_dfs_timeout(
        &[OsString::from("move"), m.mnt().into()],
        Duration::from_secs(60),
    );
    assert!(
        r.0.map(|s| s.success()).unwrap_or(false),
        "final dfs move failed: {}{}",
        r.1,
        r.2
    );
    for i in 0..FILES {
        let r = rel(i);
        assert_eq!(
            tiers_holding(&m, &r),
            vec![1],
            "{r} after a complete pass (seed {seed})"
        );
    }
    let problems = check_union(&m, &want);
    assert!(
        problems.is_empty(),
        "after the final pass (seed {seed}): {problems:#?}"
    );
    m.unmount();
    eprintln!(
        "{ITERATIONS} kills, {with_leftovers} left temporaries, {tier_changes} files changed tier, {:?}",
        started.elapsed()
    );
    assert!(
        tier_changes > 0,
        "premise: the killed passes moved files (seed {seed})"
    );
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
