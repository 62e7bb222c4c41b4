//! Lookups pass over a tier's copy of a directory known to be empty (one
//! `fstat` of the held handle instead of a name lookup: src/fs/empty.rs).
//! Whatever appears in such a copy, made through dfs or directly on the
//! tier, must be found by the very next lookup.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use dfs::fs::Fs;
use dfs::fs::nodes::ROOT;

/// Longer than `fs::empty::STABLE`: a copy unchanged that long may be
/// recorded as empty.
const SETTLE: Duration = Duration::from_millis(1300);

fn core(roots: &[PathBuf; 2]) -> Fs {
    common::core(&[&roots[0], &roots[1]])
}

/// In-process: no kernel cache in between, so every lookup is dfs's own
/// answer from the tiers.
#[test]
fn a_name_made_directly_in_a_copy_known_empty_is_found_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let roots = [tmp.path().join("t0"), tmp.path().join("t1")];
    for r in &roots {
        fs::create_dir_all(r.join("d")).expect("mkdir");
    }
    for i in 0..20 {
        fs::write(roots[1].join(format!("d/f{i}")), "slow").expect("seed");
    }
    std::thread::sleep(SETTLE);
    let fs = core(&roots);
    let d = fs.lookup(ROOT, b"d").expect("lookup d").ino;
    // Misses on the fast tier's (empty, settled) copy: recorded as empty.
    for i in 0..20 {
        fs.lookup(d, format!("f{i}").as_bytes())
            .expect("on the slow tier");
    }
    assert!(fs.lookup(d, b"absent").is_err());

    // A new name on the fast tier, made behind dfs's back: found at once.
    fs::write(roots[0].join("d/g"), "fast").expect("write");
    let g = fs
        .lookup(d, b"g")
        .expect("a name made on the fast tier's empty copy");
    assert_eq!(g.st.st_size, 4);
    // A copy shadowing a slow-tier file: the fast one wins at once.
    std::thread::sleep(SETTLE);
    fs::remove_file(roots[0].join("d/g")).expect("rm");
    std::thread::sleep(SETTLE);
    for i in 0..3 {
        fs.lookup(d, format!("f{i}").as_bytes())
            .expect("relearn empty");
    }
    fs::write(roots[0].join("d/f7"), "shadowing").expect("write");
    let f7 = fs.lookup(d, b"f7").expect("f7");
    assert_eq!(
        f7.st.st_size, 9,
        "the slow tier's f7 answered past a new fast copy"
    );

    // A name in an empty copy on the slow tier too (a miss everywhere),
    // then made through dfs.
    fs::create_dir_all(roots[1].join("e")).expect("mkdir");
    fs::create_dir_all(roots[0].join("e")).expect("mkdir");
    std::thread::sleep(SETTLE);
    let e = fs.lookup(ROOT, b"e").expect("lookup e").ino;
    for i in 0..5 {
        assert!(fs.lookup(e, format!("n{i}").as_bytes()).is_err());
    }
    fs.create(
        dfs::creds::Caller::ROOT,
        e,
        b"made",
        0o644,
        libc::O_CREAT | libc::O_WRONLY,
    )
    .map(|(a, fh)| {
        fs.release(fh);
        a
    })
    .expect("create through dfs");
    fs.lookup(e, b"made")
        .expect("made through dfs, found by the next lookup");
}

/// Through a real mount: a fresh name (never looked up, so the kernel
/// asks dfs) made directly on the fast tier in a copy dfs knows empty.
#[test]
fn mount_sees_a_name_made_directly_in_a_copy_known_empty() {
    let m = Mount::builder()
        .setup(|t| {
            fs::create_dir_all(t[0].join("docs/2019")).expect("mkdir");
            fs::create_dir_all(t[1].join("docs/2019")).expect("mkdir");
            for i in 0..10 {
                fs::write(t[1].join(format!("docs/2019/r{i}.pdf")), "cold").expect("seed");
            }
        })
        .mount();
    std::thread::sleep(SETTLE);
    for i in 0..10 {
        assert_eq!(read(&m.m(&format!("docs/2019/r{i}.pdf"))), b"cold");
    }
    assert!(!exists(&m.m("docs/2019/new.pdf")));
    fs::write(m.t(0, "docs/2019/late.pdf"), "hot").expect("write on the tier");
    assert_eq!(read(&m.m("docs/2019/late.pdf")), b"hot");
}
