//! Changes made directly on a tier, behind dfs's back, show through the
//! mount: at once when dfs watches the tiers (even with hour-long kernel
//! cache lifetimes), within the short default lifetimes with `-o nowatch`.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

const LONG_CACHE: &str = r#"
[[tier]]
name = "pss"
path = "{tier0}"

[[tier]]
name = "sss"
path = "{tier1}"

[cache]
entry = "1h"
attr = "1h"
negative = "1h"
"#;

fn eventually(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "{what}: not visible after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Caches everything the kernel can cache about `names` under `dir`.
fn warm(m: &Mount, dir: &str, names: &[&str]) {
    let _ = fs::read_dir(m.m(dir)).map(|d| d.count());
    for n in names {
        let p = m.m(&format!("{dir}/{n}"));
        let _ = fs::metadata(&p);
        let _ = fs::read(&p);
    }
}

/// The names listed in `dir` through the mount, sorted.
fn listed(m: &Mount, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(m.m(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn direct_changes_show(m: &Mount, limit: Duration) {
    // A directory made and filled through dfs, and listed: while watched,
    // dfs keeps its listing up to date with its own creates instead of
    // reading the tier. Its own changes show at once; changes made on the
    // tier behind its back show too.
    fs::create_dir(m.m("made")).unwrap();
    for n in ["one", "two"] {
        fs::write(m.m(&format!("made/{n}")), n).unwrap();
    }
    assert_eq!(listed(m, "made"), ["one", "two"]);
    fs::write(m.m("made/three"), b"3").unwrap();
    fs::create_dir(m.m("made/sub")).unwrap();
    assert_eq!(listed(m, "made"), ["one", "sub", "three", "two"]);
    fs::remove_file(m.m("made/one")).unwrap();
    fs::rename(m.m("made/three"), m.m("made/3")).unwrap();
    assert_eq!(listed(m, "made"), ["3", "sub", "two"]);
    assert_eq!(listed(m, "made/sub"), Vec::<String>::new());
    let t = if m.t(0, "made").is_dir() { 0 } else { 1 };
    fs::write(m.t(t, "made/behind"), b"b").unwrap();
    eventually(
        limit,
        "name created on the tier in a remembered listing",
        || listed(m, "made") == ["3", "behind", "sub", "two"],
    );
    fs::remove_file(m.t(t, "made/two")).unwrap();
    fs::write(m.t(t, "made/sub/deep"), b"d").unwrap();
    eventually(
        limit,
        "name deleted on the tier from a remembered listing",
        || listed(m, "made") == ["3", "behind", "sub"] && listed(m, "made/sub") == ["deep"],
    );

    for (tier, dir) in [(0, "a"), (1, "b")] {
        fs::create_dir_all(m.t(tier, dir)).unwrap();
        fs::write(m.t(tier, &format!("{dir}/replace")), b"old").unwrap();
        fs::write(m.t(tier, &format!("{dir}/delete")), b"doomed").unwrap();
        warm(m, dir, &["replace", "delete", "create"]);
        assert!(!exists(&m.m(&format!("{dir}/create"))));
        assert_eq!(fs::read(m.m(&format!("{dir}/replace"))).unwrap(), b"old");

        // Create (a name the kernel has cached as missing).
        fs::write(m.t(tier, &format!("{dir}/create")), b"new file").unwrap();
        eventually(limit, &format!("tier {tier}: created file"), || {
            fs::read(m.m(&format!("{dir}/create"))).ok().as_deref() == Some(b"new file")
                && fs::read_dir(m.m(dir))
                    .unwrap()
                    .any(|e| e.unwrap().file_name() == "create")
        });
        // Replace (rename over, new size and content).
        fs::write(m.t(tier, &format!("{dir}/.tmp")), b"replaced, longer").unwrap();
        fs::rename(
            m.t(tier, &format!("{dir}/.tmp")),
            m.t(tier, &format!("{dir}/replace")),
        )
        .unwrap();
        eventually(limit, &format!("tier {tier}: replaced file"), || {
            fs::metadata(m.m(&format!("{dir}/replace")))
                .map(|md| md.len())
                .ok()
                == Some(16)
                && fs::read(m.m(&format!("{dir}/replace"))).ok().as_deref()
                    == Some(b"replaced, longer")
        });
        // Delete.
        fs::remove_file(m.t(tier, &format!("{dir}/delete"))).unwrap();
        eventually(limit, &format!("tier {tier}: deleted file"), || {
            !exists(&m.m(&format!("{dir}/delete")))
                && !fs::read_dir(m.m(dir))
                    .unwrap()
                    .any(|e| e.unwrap().file_name() == "delete")
        });
    }
    // A file written through the mount, then written in place directly on
    // its tier: dfs knows the version its own handle left, and the change
    // around it still shows (size, content).
    std::fs::write(m.m("a/inplace"), b"through dfs").unwrap();
    warm(m, "a", &["inplace"]);
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.t(0, "a/inplace"))
            .unwrap();
        f.write_all(b", then beside it").unwrap();
    }
    eventually(limit, "in-place write on the tier", || {
        fs::metadata(m.m("a/inplace")).map(|md| md.len()).ok() == Some(27)
            && fs::read(m.m("a/inplace")).ok().as_deref() == Some(b"through dfs, then beside it")
    });
    // A directory on both tiers, listed (the kernel keeps the listing):
    // a name added on the tier whose copy is not the one stat shows leaves
    // the directory's own attributes as they were, and still shows.
    fs::create_dir_all(m.t(0, "both")).unwrap();
    fs::create_dir_all(m.t(1, "both")).unwrap();
    fs::write(m.t(0, "both/fast"), b"f").unwrap();
    warm(m, "both", &["fast"]);
    fs::write(m.t(1, "both/slow"), b"s").unwrap();
    eventually(limit, "name added on the slower tier's copy", || {
        let names: Vec<_> = fs::read_dir(m.m("both"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.len() == 2 && names.iter().any(|n| n == "slow")
    });
    // The same while a client holds the file open for reading through dfs.
    let reader = fs::File::open(m.m("a/inplace")).unwrap();
    assert_eq!(fs::metadata(m.m("a/inplace")).unwrap().len(), 27);
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.t(0, "a/inplace"))
            .unwrap();
        f.write_all(b"!").unwrap();
    }
    eventually(
        limit,
        "in-place write on the tier while open through dfs",
        || fs::metadata(m.m("a/inplace")).map(|md| md.len()).ok() == Some(28),
    );
    drop(reader);
    // A file created on pss that shadows one on sss takes over its name.
    fs::write(m.t(1, "b/shadow"), b"slow copy").unwrap();
    warm(m, "b", &["shadow"]);
    eventually(limit, "sss file", || {
        fs::read(m.m("b/shadow")).ok().as_deref() == Some(b"slow copy")
    });
    fs::create_dir_all(m.t(0, "b")).unwrap();
    fs::write(m.t(0, "b/shadow"), b"fast copy").unwrap();
    eventually(limit, "shadowing copy", || {
        fs::read(m.m("b/shadow")).ok().as_deref() == Some(b"fast copy")
    });
}

#[test]
fn watched_tiers_show_direct_changes_despite_hour_long_caches() {
    let m = Mount::with_config(LONG_CACHE);
    // Logged when the kernel's INIT arrives, which may be after the mount
    // shows in mountinfo.
    eventually(Duration::from_secs(5), "the watching mode logged", || {
        m.stderr().contains("tier changes: watched with fanotify")
    });
    direct_changes_show(&m, Duration::from_secs(1));
}

#[test]
fn unwatched_tiers_show_direct_changes_within_the_short_default_lifetimes() {
    let m = Mount::builder().args(&["-o", "nowatch"]).mount();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !m.stderr().contains("tier changes: not watched") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        m.stderr()
            .contains("(entries), 1s (attributes), 1s (missing names)"),
        "{}",
        m.stderr()
    );
    direct_changes_show(&m, Duration::from_secs(3));
}

#[test]
fn watched_tiers_show_direct_changes_without_passthrough_too() {
    // Served through the daemon, the kernel's page cache and attributes are
    // what must be dropped (with passthrough, open files read the tier).
    let m = Mount::builder()
        .config(LONG_CACHE)
        .args(&["-o", "nopassthrough"])
        .mount();
    direct_changes_show(&m, Duration::from_secs(1));
}

#[test]
fn a_watcher_that_stops_falls_back_to_the_short_lifetimes() {
    // The watcher fails 1.5 s after it starts (a test hook standing in for
    // a failed read of its event queue).
    let m = Mount::builder()
        .env("DFS_FAULT_WATCHER_STOP_MS", "1500")
        .mount();
    // Logged when the kernel's INIT arrives, which may be after the mount
    // shows in mountinfo.
    eventually(Duration::from_secs(5), "the watching mode logged", || {
        m.stderr().contains("tier changes: watched with fanotify")
    });
    // Cached while watched (30 s lifetimes, listings kept by the kernel):
    // a directory on both tiers, listed, and a file's attributes.
    fs::create_dir_all(m.t(0, "early")).unwrap();
    fs::create_dir_all(m.t(1, "early")).unwrap();
    fs::write(m.t(0, "early/fast"), b"f").unwrap();
    fs::write(m.t(0, "early/grows"), b"1").unwrap();
    // After the watcher's own invalidations for these changes (a second
    // one follows 200 ms later), so that what is cached stays cached.
    std::thread::sleep(Duration::from_millis(400));
    warm(&m, "early", &["fast", "grows"]);
    eventually(Duration::from_secs(5), "the watcher's failure", || {
        m.stderr()
            .contains("tier changes: not watched (the watcher stopped")
    });
    // What the kernel cached on the watcher's word is dropped...
    fs::write(m.t(1, "early/slow"), b"s").unwrap();
    fs::write(m.t(0, "early/grows"), b"12345").unwrap();
    eventually(
        Duration::from_secs(3),
        "changes to what was cached while watched",
        || {
            let names: Vec<_> = fs::read_dir(m.m("early"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.len() == 3
                && names.iter().any(|n| n == "slow")
                && fs::metadata(m.m("early/grows")).map(|md| md.len()).ok() == Some(5)
        },
    );
    // ... and from now on the short lifetimes bound what it caches, the
    // listings it keeps included.
    direct_changes_show(&m, Duration::from_secs(3));
}
