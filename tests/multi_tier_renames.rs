//! Renames and exchanges that take a step on each of several tiers are all
//! or nothing: a step that fails has the ones before it undone, and a
//! daemon stopped half-way (the `abandon` hook in-process, SIGKILL on a
//! real mount) leaves an intent record from which the next mount finishes
//! the change if every rename and swap ran, and undoes it otherwise
//! (src/fs/intent.rs).
//!
//! The in-process tests drive the core directly over two tier directories;
//! the last ones kill a real mount half-way and mount again.

mod common;

use std::fs;
use std::path::PathBuf;

use dfs::creds::Caller;
use dfs::fs::Fs;
use dfs::fs::intent::Fault;
use dfs::fs::nodes::ROOT;

const C: Caller = Caller::ROOT;

/// Two tiers seeded with files (`(tier, path, content)`; a `None`
/// content makes a directory), and a core over them.
struct Tiers {
    _tmp: tempfile::TempDir,
    roots: [PathBuf; 2],
}

impl Tiers {
    fn new(seeds: &[(usize, &str, Option<&str>)]) -> Tiers {
        let tmp = tempfile::tempdir().expect("tempdir");
        let roots = [tmp.path().join("t0"), tmp.path().join("t1")];
        for r in &roots {
            fs::create_dir(r).expect("tier dir");
        }
        for (t, p, data) in seeds {
            let path = roots[*t].join(p);
            match data {
                None => fs::create_dir_all(&path).expect("seed dir"),
                Some(d) => {
                    fs::create_dir_all(path.parent().expect("parent")).expect("seed parent");
                    fs::write(&path, d).expect("seed file");
                }
            }
        }
        Tiers { _tmp: tmp, roots }
    }

    /// A fresh core over the tiers, as a mount starts one.
    fn core(&self) -> Fs {
        common::core(&[&self.roots[0], &self.roots[1]])
    }

    fn t(&self, i: usize, p: &str) -> PathBuf {
        self.roots[i].join(p)
    }

    /// Content of a tier file, or None when absent.
    fn on(&self, i: usize, p: &str) -> Option<String> {
        fs::read_to_string(self.t(i, p)).ok()
    }

    /// Names on a tier below `dir` (sorted), `.dfs` left out.
    fn names(&self, i: usize, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(self.t(i, dir)) {
            Ok(rd) => rd
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".dfs")
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Intent records left in the tiers' state directories (unresolved
    /// ones included).
    fn records(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for r in &self.roots {
            if let Ok(rd) = fs::read_dir(r.join(".dfs/intent")) {
                v.extend(rd.map(|e| e.expect("entry").path()));
            }
        }
        v
    }
}

/// What the union shows at `p` (a file's content), through the core.
fn read(fs: &Fs, p: &str) -> Option<String> {
    let mut ino = ROOT;
    for part in p.split('/') {
        ino = fs.lookup(ino, part.as_bytes()).ok()?.ino;
    }
    let fh = fs.open(C, ino, libc::O_RDONLY).ok()?;
    let data = fs.read(fh, 0, 1 << 16).ok();
    fs.release(fh);
    data.map(|d| String::from_utf8_lossy(&d).into_owned())
}

fn rename(fs: &Fs, a: &str, b: &str, flags: u32) -> Result<(), i32> {
    fs.rename(C, ROOT, a.as_bytes(), ROOT, b.as_bytes(), flags)
        .map_err(|e| e.0)
}

/// a on the fast tier, b on the slow one: the exchange is a rename on each.
fn exchange_seeds() -> Vec<(usize, &'static str, Option<&'static str>)> {
    vec![(0, "a", Some("A")), (1, "b", Some("B"))]
}

#[test]
fn exchange_across_tiers_whose_second_step_fails_changes_nothing() {
    let t = Tiers::new(&exchange_seeds());
    let fs = t.core();
    fs.set_intent_fault(Some(Fault::Fail(1)));
    assert_eq!(rename(&fs, "a", "b", libc::RENAME_EXCHANGE), Err(libc::EIO));
    assert_eq!(
        (t.on(0, "a"), t.on(1, "b")),
        (Some("A".into()), Some("B".into()))
    );
    assert_eq!(
        (t.on(0, "b"), t.on(1, "a")),
        (None, None),
        "a step left behind"
    );
    assert!(t.records().is_empty(), "record left: {:?}", t.records());
    assert_eq!(
        (read(&fs, "a"), read(&fs, "b")),
        (Some("A".into()), Some("B".into()))
    );

    // Without the fault the same exchange goes through, and leaves no record.
    fs.set_intent_fault(None);
    rename(&fs, "a", "b", libc::RENAME_EXCHANGE).expect("exchange");
    assert_eq!(
        (read(&fs, "a"), read(&fs, "b")),
        (Some("B".into()), Some("A".into()))
    );
    assert_eq!(
        (t.on(0, "b"), t.on(1, "a")),
        (Some("A".into()), Some("B".into()))
    );
    assert!(t.records().is_empty(), "record left: {:?}", t.records());
}

#[test]
fn exchange_stopped_half_way_is_undone_at_the_next_start() {
    for at in 0..2 {
        let t = Tiers::new(&exchange_seeds());
        {
            let fs = t.core();
            fs.set_intent_fault(Some(Fault::Abandon(at)));
            assert!(rename(&fs, "a", "b", libc::RENAME_EXCHANGE).is_err());
            assert_eq!(t.records().len(), 1, "stopped before step {at}: no record");
        }
        let fs = t.core();
        assert_eq!(fs.recover_intents(), 1);
        assert_eq!(
            (read(&fs, "a"), read(&fs, "b")),
            (Some("A".into()), Some("B".into())),
            "stopped before step {at}"
        );
        assert_eq!(
            (t.names(0, ""), t.names(1, "")),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
        assert!(t.records().is_empty(), "record left: {:?}", t.records());
    }
}

/// rename(a, b) with a on the slow tier and b on the fast one: a moves on
/// the slow tier, then b's fast copy (which hides it) goes.
#[test]
fn rename_onto_a_faster_copy_is_finished_at_the_next_start() {
    let seeds = [(1, "a", Some("new")), (0, "b", Some("old"))];

    // Stopped before the first step: nothing happened.
    let t = Tiers::new(&seeds);
    {
        let fs = t.core();
        fs.set_intent_fault(Some(Fault::Abandon(0)));
        assert!(rename(&fs, "a", "b", 0).is_err());
    }
    let fs = t.core();
    assert_eq!(fs.recover_intents(), 1);
    assert_eq!(
        (read(&fs, "a"), read(&fs, "b")),
        (Some("new".into()), Some("old".into()))
    );
    assert!(t.records().is_empty());

    // Stopped between the rename and the removal of the stale copy, which
    // would otherwise hide the renamed file under b for good.
    let t = Tiers::new(&seeds);
    {
        let fs = t.core();
        fs.set_intent_fault(Some(Fault::Abandon(1)));
        assert!(rename(&fs, "a", "b", 0).is_err());
        assert_eq!(
            t.on(0, "b").as_deref(),
            Some("old"),
            "the stale copy went early"
        );
    }
    let fs = t.core();
    assert_eq!(fs.recover_intents(), 1);
    assert_eq!((read(&fs, "a"), read(&fs, "b")), (None, Some("new".into())));
    assert_eq!(
        (t.names(0, ""), t.names(1, "")),
        (Vec::<String>::new(), vec!["b".to_string()])
    );
    assert!(t.records().is_empty());

    // A failure of the removal itself: the rename is taken back.
    let t = Tiers::new(&seeds);
    let fs = t.core();
    fs.set_intent_fault(Some(Fault::Fail(1)));
    assert_eq!(rename(&fs, "a", "b", 0), Err(libc::EIO));
    assert_eq!(
        (read(&fs, "a"), read(&fs, "b")),
        (Some("new".into()), Some("old".into()))
    );
    assert!(t.records().is_empty());
}

/// As above, where the stale copy is a file the mover took to the fast
/// tier: finishing the rename removes its last name, and with it the
/// placeholder that pinned its id on the slow tier.
#[test]
fn a_moved_file_removed_by_recovery_loses_its_pin() {
    let t = Tiers::new(&[(1, "b", Some("old"))]);
    {
        let fs = t.core();
        let moved = fs.move_file(b"b", 1, 0, &mut |_| {}).expect("move up");
        assert!(
            matches!(moved, dfs::fs::transfer::Outcome::Moved { .. }),
            "{moved:?}"
        );
    }
    let pins = || t.names(1, ".dfs/ids");
    assert_eq!(pins().len(), 1, "the move pins b's id on the slow tier");
    fs::write(t.t(1, "a"), "new").expect("seed a");
    {
        let fs = t.core();
        fs.set_intent_fault(Some(Fault::Abandon(1)));
        assert!(rename(&fs, "a", "b", 0).is_err());
        assert_eq!(t.on(0, "b").as_deref(), Some("old"));
    }
    let fs = t.core();
    assert_eq!(fs.recover_intents(), 1);
    assert_eq!((read(&fs, "a"), read(&fs, "b")), (None, Some("new".into())));
    assert_eq!(pins(), Vec::<String>::new(), "the pin outlived the file");
}

#[test]
fn directory_rename_stopped_half_way_is_undone_at_the_next_start() {
    let seeds = [(0, "d/x", Some("x")), (1, "d/y", Some("y"))];
    let t = Tiers::new(&seeds);
    {
        let fs = t.core();
        fs.set_intent_fault(Some(Fault::Abandon(1)));
        assert!(rename(&fs, "d", "e", 0).is_err());
        // The slow tier's copy went first: the entries are split now.
        assert_eq!(
            (t.names(0, ""), t.names(1, "")),
            (vec!["d".to_string()], vec!["e".to_string()])
        );
    }
    let fs = t.core();
    assert_eq!(fs.recover_intents(), 1);
    assert_eq!(
        (t.names(0, ""), t.names(1, "")),
        (vec!["d".to_string()], vec!["d".to_string()])
    );
    assert_eq!(
        (read(&fs, "d/x"), read(&fs, "d/y")),
        (Some("x".into()), Some("y".into()))
    );
    assert!(t.records().is_empty());

    // Without the hook it goes through, both copies renamed.
    rename(&fs, "d", "e", 0).expect("rename");
    assert_eq!(
        (t.names(0, ""), t.names(1, "")),
        (vec!["e".to_string()], vec!["e".to_string()])
    );
    assert!(t.records().is_empty());
}

/// A directory on both tiers renamed onto an empty directory on the slow
/// one: a swap there (so that a failure can be undone without losing the
/// target), a rename on the fast tier, then the swapped-out empty copy
/// goes.
#[test]
fn directory_renamed_onto_an_empty_one_is_undone_whole_when_a_step_fails() {
    let seeds = [(0, "a/x", Some("x")), (1, "a/y", Some("y")), (1, "b", None)];
    let t = Tiers::new(&seeds);
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    };
    std::fs::set_permissions(
        t.t(1, "b"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .expect("chmod");
    let fs = t.core();
    // The fast tier's rename (step 1) fails: the swap is undone, and b
    // (an empty directory with its own mode) is still there.
    fs.set_intent_fault(Some(Fault::Fail(1)));
    assert_eq!(rename(&fs, "a", "b", 0), Err(libc::EIO));
    assert_eq!(
        (t.names(0, ""), t.names(1, "")),
        (
            vec!["a".to_string()],
            vec!["a".to_string(), "b".to_string()]
        )
    );
    assert_eq!(t.names(1, "b"), Vec::<String>::new());
    assert_eq!(mode(&t.t(1, "b")), 0o750);
    assert_eq!(
        (read(&fs, "a/x"), read(&fs, "a/y")),
        (Some("x".into()), Some("y".into()))
    );
    assert!(t.records().is_empty());

    fs.set_intent_fault(None);
    rename(&fs, "a", "b", 0).expect("rename");
    assert_eq!(
        (t.names(0, ""), t.names(1, "")),
        (vec!["b".to_string()], vec!["b".to_string()])
    );
    assert_eq!(
        (read(&fs, "b/x"), read(&fs, "b/y")),
        (Some("x".into()), Some("y".into()))
    );
    assert!(t.records().is_empty());
}

/// An empty copy of the target on a tier the source lacks goes last, by
/// rmdir; if it cannot go (something appeared in it), the rename stands
/// and the copy stays, merged into the target: nothing is lost.
#[test]
fn a_leftover_that_cannot_go_stays_merged() {
    let seeds = [(0, "a/x", Some("x")), (1, "b", None)];
    let t = Tiers::new(&seeds);
    let fs = t.core();
    fs.set_intent_fault(Some(Fault::Fail(1)));
    rename(&fs, "a", "b", 0).expect("rename stands");
    assert_eq!(
        (t.names(0, ""), t.names(1, "")),
        (vec!["b".to_string()], vec!["b".to_string()])
    );
    assert_eq!(read(&fs, "b/x"), Some("x".into()));
    assert_eq!(read(&fs, "a/x"), None);
    assert!(t.records().is_empty());
}

#[test]
fn recovery_leaves_alone_what_changed_on_a_tier_meanwhile() {
    let t = Tiers::new(&exchange_seeds());
    {
        let fs = t.core();
        fs.set_intent_fault(Some(Fault::Abandon(1)));
        assert!(rename(&fs, "a", "b", libc::RENAME_EXCHANGE).is_err());
    }
    // Someone replaces the moved copy on the fast tier before the next start.
    fs::write(t.t(0, "b.new"), "someone else's").expect("write");
    fs::rename(t.t(0, "b.new"), t.t(0, "b")).expect("replace");
    let fs = t.core();
    assert_eq!(fs.recover_intents(), 1);
    assert_eq!(t.on(0, "b").as_deref(), Some("someone else's"));
    assert_eq!(t.on(1, "b").as_deref(), Some("B"));
    // Nothing touched; the record is kept for the operator, and not
    // looked at again.
    let left = t.records();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].to_string_lossy().ends_with(".unresolved"),
        "{left:?}"
    );
    assert_eq!(t.core().recover_intents(), 0);
}

#[test]
fn a_record_cut_short_is_dropped_and_touches_nothing() {
    let t = Tiers::new(&exchange_seeds());
    let dir = t.t(0, ".dfs/intent");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("1-0"), "op = \"exchange\"\na = \"61\"\n").expect("write");
    let fs = t.core();
    assert_eq!(fs.recover_intents(), 1);
    assert!(t.records().is_empty());
    assert_eq!(
        (read(&fs, "a"), read(&fs, "b")),
        (Some("A".into()), Some("B".into()))
    );
}

// ---- real mounts ------------------------------------------------------------

/// The daemon is killed (SIGKILL, by the hook) between the two steps of
/// an exchange across tiers; the next mount shows both names as before.
#[test]
fn mount_killed_in_an_exchange_across_tiers_shows_both_names_again() {
    let mut m = common::Mount::builder()
        .setup(|t| {
            fs::write(t[0].join("a"), "A").expect("seed a");
            fs::write(t[1].join("b"), "B").expect("seed b");
        })
        .env("DFS_FAULT_INTENT", "kill:1")
        .mount();
    let r = common::renameat2(&m.m("a"), &m.m("b"), libc::RENAME_EXCHANGE);
    assert!(r.is_err(), "the daemon should have died in the exchange");
    let (st, _) = m.signal_and_wait(0, std::time::Duration::from_secs(5));
    assert!(st.is_some(), "dfs still running after the kill hook");
    common::force_unmount(&m.mnt());
    m.start_again();
    assert_eq!(common::read(&m.m("a")), b"A");
    assert_eq!(common::read(&m.m("b")), b"B");
    assert!(
        m.stderr().contains("undid an interrupted exchange"),
        "{}",
        m.stderr()
    );
    m.unmount();
}

/// Killed between renaming a (slow tier) to b and removing b's fast copy:
/// the next mount finishes the rename instead of leaving the old b on top.
#[test]
fn mount_killed_in_a_rename_onto_a_faster_copy_finishes_it() {
    let mut m = common::Mount::builder()
        .setup(|t| {
            fs::write(t[1].join("a"), "new").expect("seed a");
            fs::write(t[0].join("b"), "old").expect("seed b");
        })
        .env("DFS_FAULT_INTENT", "kill:1")
        .mount();
    assert!(fs::rename(m.m("a"), m.m("b")).is_err());
    let (st, _) = m.signal_and_wait(0, std::time::Duration::from_secs(5));
    assert!(st.is_some(), "dfs still running after the kill hook");
    common::force_unmount(&m.mnt());
    m.start_again();
    assert!(!common::exists(&m.m("a")));
    assert_eq!(common::read(&m.m("b")), b"new");
    assert!(
        !common::exists(&m.t(0, "b")),
        "the stale copy is still on the fast tier"
    );
    assert!(
        m.stderr().contains("finished an interrupted rename"),
        "{}",
        m.stderr()
    );
    m.unmount();
}
