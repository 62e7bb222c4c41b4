//! The mover's switch against a client changing the file between its copy
//! and its switch, driven through the core (no mount): the client's change
//! wins, nothing is lost, and no copy is left behind.

mod common;

use std::fs;
use std::path::Path;

use dfs::creds::Caller;
use dfs::fs::Fs;
use dfs::fs::nodes::ROOT;
use dfs::fs::transfer::{Outcome, Skip};

fn tmp_entries(tier: &Path) -> usize {
    fs::read_dir(tier.join(".dfs/tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Two tiers, each with a directory `d`, `d/f` holding `contents` on tier
/// `on`, and a core over them that has looked up `d` and `d/f`. Returns
/// the temporary directory (keep it alive), the tier roots, the core and
/// the node id of `d`.
fn setup(on: usize, contents: &[u8]) -> (tempfile::TempDir, [std::path::PathBuf; 2], Fs, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let roots = [tmp.path().join("a"), tmp.path().join("b")];
    for t in &roots {
        fs::create_dir_all(t.join("d")).unwrap();
    }
    fs::write(roots[on].join("d/f"), contents).unwrap();
    let core = common::core(&[&roots[0], &roots[1]]);
    let d = core.lookup(ROOT, b"d").unwrap().ino;
    core.lookup(d, b"f").unwrap();
    (tmp, roots, core, d)
}

/// Moves `d/f` from tier `from` to tier `to`, letting `meddle` act on the
/// tiers between the copy and the switch; returns the switch's outcome.
fn move_with(fs: &Fs, from: usize, to: usize, meddle: impl FnOnce()) -> Outcome {
    let prepared = fs
        .prepare_move(b"d/f", from, to, &mut |_| {})
        .expect("prepare")
        .expect("movable");
    meddle();
    let mut out = fs.commit_moves(vec![prepared]);
    assert_eq!(out.len(), 1);
    out.pop().unwrap().1.expect("commit")
}

#[test]
fn a_file_renamed_onto_the_source_between_copy_and_switch_is_kept() {
    for (from, to) in [(0, 1), (1, 0)] {
        let (_tmp, roots, core, d) = setup(from, b"old contents");
        fs::write(roots[from].join("d/new"), b"the client's new file").unwrap();
        core.lookup(d, b"new").unwrap();
        let outcome = move_with(&core, from, to, || {
            core.rename(Caller::ROOT, d, b"new", d, b"f", 0).unwrap();
        });
        assert!(
            matches!(outcome, Outcome::Skipped(Skip::Changed)),
            "{from}->{to}: {outcome:?}"
        );
        assert_eq!(
            fs::read(roots[from].join("d/f")).unwrap(),
            b"the client's new file"
        );
        assert!(
            !roots[to].join("d/f").exists(),
            "{from}->{to}: the copy was left"
        );
        assert_eq!(tmp_entries(&roots[to]), 0);
        assert_eq!(
            fs::read_dir(roots[from].join(".dfs/ids"))
                .map(|d| d.count())
                .unwrap_or(0),
            0,
            "{from}->{to}: the pin was left"
        );
    }
}

#[test]
fn a_file_changed_between_copy_and_switch_keeps_its_change() {
    for (from, to) in [(0, 1), (1, 0)] {
        let (_tmp, roots, core, _) = setup(from, b"before");
        let outcome = move_with(&core, from, to, || {
            // Same size, so only mtime/ctime tell.
            std::thread::sleep(std::time::Duration::from_millis(20));
            fs::write(roots[from].join("d/f"), b"after!").unwrap();
        });
        assert!(
            matches!(outcome, Outcome::Skipped(Skip::Changed)),
            "{from}->{to}: {outcome:?}"
        );
        assert_eq!(fs::read(roots[from].join("d/f")).unwrap(), b"after!");
        assert!(!roots[to].join("d/f").exists());
    }
}
