//! Placement of new names: the parent-dir preset and the other policies of
//! dfs.toml, with the parent chain cloned onto the chosen tier.

mod common;
mod policy_support;

use common::*;
use policy_support::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn w(p: &Path, data: &str) {
    if let Some(parent) = p.parent() {
        mkdirs(parent);
    }
    write(p, data);
}

/// Gives `rel` (a directory chain on tier `i`) distinctive attributes.
fn decorate(tier: &Path, rel: &str, mode: u32, uid: u32, gid: u32) {
    let mut p = PathBuf::from(tier);
    for comp in rel.split('/') {
        p.push(comp);
        mkdirs(&p);
        chmod(&p, mode);
        lchown(&p, uid, gid);
        setxattr(&p, "user.origin", comp.as_bytes(), 0).unwrap();
    }
}

/// Checks that every directory of `rel` on tier `to` copies mode, owner and
/// xattrs from tier `from`.
#[track_caller]
fn assert_cloned(m: &Mount, rel: &str, from: usize, to: usize) {
    let mut cur = String::new();
    for comp in rel.split('/') {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(comp);
        let src = lstat(&m.t(from, &cur)).unwrap();
        let dst = lstat(&m.t(to, &cur))
            .unwrap_or_else(|e| panic!("{cur} not cloned onto tier {to}: {e}"));
        assert!(dst.is_dir(), "{cur} on tier {to} is not a directory");
        assert_eq!(
            dst.mode() & 0o7777,
            src.mode() & 0o7777,
            "mode of cloned {cur}"
        );
        assert_eq!(
            (dst.uid(), dst.gid()),
            (src.uid(), src.gid()),
            "owner of cloned {cur}"
        );
        assert_eq!(
            getxattr(&m.t(to, &cur), "user.origin").ok(),
            getxattr(&m.t(from, &cur), "user.origin").ok(),
            "xattr of cloned {cur}"
        );
    }
}

// ---------------------------------------------------------------------------
// parent-dir (the preset)
// ---------------------------------------------------------------------------

#[test]
fn parent_dir_new_names_follow_their_parent() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("both"));
            mkdirs(&t[1].join("both"));
            mkdirs(&t[0].join("fastonly"));
            mkdirs(&t[1].join("slowonly"));
        })
        .mount();
    write(&m.m("rootfile"), "r");
    write(&m.m("both/f"), "b");
    write(&m.m("fastonly/f"), "f");
    write(&m.m("slowonly/f"), "s");
    fs::create_dir(m.m("slowonly/newdir")).unwrap();
    std::os::unix::fs::symlink("f", m.m("slowonly/link")).unwrap();
    mknod(&m.m("slowonly/fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
    write(&m.m("slowonly/newdir/deeper"), "d");
    assert_eq!(tiers_holding(&m, "rootfile"), vec![0]);
    assert_eq!(tiers_holding(&m, "both/f"), vec![0]);
    assert_eq!(tiers_holding(&m, "fastonly/f"), vec![0]);
    for n in [
        "slowonly/f",
        "slowonly/newdir",
        "slowonly/link",
        "slowonly/fifo",
        "slowonly/newdir/deeper",
    ] {
        assert_eq!(tiers_holding(&m, n), vec![1], "{n}");
    }
    assert!(
        !exists(&m.t(0, "slowonly")),
        "parent cloned onto tier 0 without need"
    );
}

#[test]
fn parent_dir_mkdir_p_under_a_lower_directory_stays_lower() {
    let m = Mount::builder()
        .setup(|t| mkdirs(&t[1].join("archive/2019")))
        .mount();
    mkdirs(&m.m("archive/2019/q1/jan"));
    write(&m.m("archive/2019/q1/jan/report"), "r");
    assert_eq!(tiers_holding(&m, "archive/2019/q1/jan/report"), vec![1]);
    assert!(!exists(&m.t(0, "archive")));
}

#[test]
fn parent_dir_three_tiers_takes_the_first_with_the_parent() {
    let m = Mount::builder()
        .tiers(3)
        .policy("kind = \"parent-dir\"")
        .setup(|t| {
            mkdirs(&t[1].join("mid"));
            mkdirs(&t[2].join("mid"));
            mkdirs(&t[2].join("low"));
        })
        .mount();
    write(&m.m("mid/f"), "m");
    write(&m.m("low/f"), "l");
    write(&m.m("top"), "t");
    assert_eq!(tiers_holding(&m, "mid/f"), vec![1]);
    assert_eq!(tiers_holding(&m, "low/f"), vec![2]);
    assert_eq!(tiers_holding(&m, "top"), vec![0]);
}

#[test]
fn parent_dir_is_the_default_policy_of_a_config() {
    let m = Mount::with_config(
        "[[tier]]\nname = \"a\"\npath = \"{tier0}\"\n\n[[tier]]\nname = \"b\"\npath = \"{tier1}\"\n",
    );
    mkdirs(&m.t(1, "low"));
    assert!(wait_until(VISIBILITY_TIMEOUT, || exists(&m.m("low"))));
    write(&m.m("low/f"), "x");
    assert_eq!(tiers_holding(&m, "low/f"), vec![1]);
}

#[test]
fn link_clones_the_parent_chain_with_its_attributes() {
    // link must stay on the source's tier (rule 5): the target directory,
    // present only on tier 1, is cloned onto tier 0.
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("src"), "s");
            decorate(&t[1], "p/q", 0o750, 1234, 5678);
        })
        .mount();
    fs::hard_link(m.m("src"), m.m("p/q/l")).unwrap();
    assert_eq!(tiers_holding(&m, "p/q/l"), vec![0]);
    assert_eq!(ino(&m.t(0, "p/q/l")), ino(&m.t(0, "src")));
    assert_cloned(&m, "p/q", 1, 0);
    // the union still shows one p/q with the attributes of the winning copy
    let st = lstat(&m.m("p/q")).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o750);
    assert_eq!((st.uid(), st.gid()), (1234, 5678));
}

// ---------------------------------------------------------------------------
// first-found
// ---------------------------------------------------------------------------

#[test]
fn first_found_places_on_the_first_tier_and_clones_the_parent() {
    let m = Mount::builder()
        .policy("kind = \"first-found\"")
        .setup(|t| decorate(&t[1], "docs/2020", 0o2775, 1000, 1001))
        .mount();
    write(&m.m("docs/2020/new"), "n");
    assert_eq!(tiers_holding(&m, "docs/2020/new"), vec![0]);
    assert_cloned(&m, "docs/2020", 1, 0);
    assert_eq!(list(&m.m("docs/2020")), names(&["new"]));
    fs::create_dir(m.m("docs/2020/sub")).unwrap();
    assert_eq!(tiers_holding(&m, "docs/2020/sub"), vec![0]);
}

// ---------------------------------------------------------------------------
// most-free
// ---------------------------------------------------------------------------

#[test]
fn most_free_places_on_the_emptiest_tier() {
    let m = Mount::builder()
        .tmpfs(0, "4m")
        .tmpfs(1, "64m")
        .policy("kind = \"most-free\"")
        .setup(|t| decorate(&t[0], "inbox", 0o755, 42, 43))
        .mount();
    write(&m.m("top"), "t");
    assert_eq!(tiers_holding(&m, "top"), vec![1]);
    write(&m.m("inbox/mail"), "m");
    assert_eq!(tiers_holding(&m, "inbox/mail"), vec![1]);
    assert_cloned(&m, "inbox", 0, 1);
}

// ---------------------------------------------------------------------------
// glob-rule
// ---------------------------------------------------------------------------

const GLOB: &str = r#"kind = "glob-rule"
fallback = "parent-dir"

[[policy.rule]]
glob = "**/*.iso"
tier = "slow"

[[policy.rule]]
glob = "**/*.tmp"
tier = "fast"
"#;

#[test]
fn glob_rule_places_by_pattern_else_fallback() {
    let m = Mount::builder()
        .names(&["fast", "slow"])
        .policy(GLOB)
        .setup(|t| {
            decorate(&t[0], "media/films", 0o755, 500, 501);
            mkdirs(&t[1].join("cold"));
            mkdirs(&t[1].join("cold2"));
        })
        .mount();
    write(&m.m("media/films/big.iso"), "iso");
    assert_eq!(tiers_holding(&m, "media/films/big.iso"), vec![1]);
    assert_cloned(&m, "media/films", 0, 1);
    write(&m.m("cold/scratch.tmp"), "tmp");
    assert_eq!(tiers_holding(&m, "cold/scratch.tmp"), vec![0]);
    assert_cloned(&m, "cold", 1, 0);
    // no rule: parent-dir
    write(&m.m("media/films/notes.txt"), "n");
    assert_eq!(tiers_holding(&m, "media/films/notes.txt"), vec![0]);
    // (cold now exists on both tiers: parent-dir picks tier 0)
    write(&m.m("cold/notes.txt"), "n");
    assert_eq!(tiers_holding(&m, "cold/notes.txt"), vec![0]);
    write(&m.m("cold2/notes.txt"), "n");
    assert_eq!(tiers_holding(&m, "cold2/notes.txt"), vec![1]);
    assert!(!exists(&m.t(0, "cold2")));
    write(&m.m("top.iso"), "i");
    assert_eq!(tiers_holding(&m, "top.iso"), vec![1]);
    // the union merges the cloned chain
    assert_eq!(list(&m.m("media/films")), names(&["big.iso", "notes.txt"]));
}

#[test]
fn glob_rule_unknown_tier_is_an_error() {
    let m = Mount::builder()
        .names(&["fast", "slow"])
        .policy("kind = \"glob-rule\"\n\n[[policy.rule]]\nglob = \"*.iso\"\ntier = \"tape\"\n")
        .prepare();
    let cfg = m.config_path().unwrap();
    let (st, _, err) = run_dfs(&[
        std::ffi::OsString::from("check"),
        "--config".into(),
        cfg.into(),
    ]);
    assert!(!st.success(), "a rule naming an unknown tier was accepted");
    assert!(err.contains("tape"), "{err}");
}

#[test]
fn glob_rule_does_not_clone_through_a_symlink_on_the_target_tier() {
    let m = Mount::builder()
        .names(&["fast", "slow"])
        .policy(GLOB)
        .setup(|t| {
            let outside = t[0].parent().unwrap().join("outside");
            fs::create_dir(&outside).unwrap();
            mkdirs(&t[0].join("media/films"));
            std::os::unix::fs::symlink(&outside, t[1].join("media")).unwrap();
        })
        .mount();
    let r = fs::write(m.m("media/films/x.iso"), "iso");
    let outside = m.root().join("outside");
    assert_eq!(
        list(&outside),
        Vec::<std::ffi::OsString>::new(),
        "dfs created files outside the tiers"
    );
    if r.is_ok() {
        assert_eq!(read(&m.m("media/films/x.iso")), b"iso");
    }
}

// ===========================================================================
// Issue 3: every built-in policy on a real mount, min_free on small tmpfs
// tiers, ENOSPC only when no tier has room, the example configs and the
// static-policy example.
// ===========================================================================

const ENOSPC: i32 = libc::ENOSPC;

// ---------------------------------------------------------------------------
// first-found and min_free
// ---------------------------------------------------------------------------

#[test]
fn first_found_fills_the_first_tier_down_to_min_free_then_spills() {
    let m = Mount::builder()
        .tmpfs(0, "4m")
        .config(&tiers_config(
            &[("pss", Some("1MiB")), ("sss", None)],
            "kind = \"first-found\"",
        ))
        .setup(|t| {
            mkdirs(&t[0].join("keep"));
            mkdirs(&t[1].join("slow"));
        })
        .mount();
    write(&m.m("a"), "a");
    assert_eq!(tiers_holding(&m, "a"), vec![0]);
    // first-found does not care where the parent lives: slow/ is cloned.
    write(&m.m("slow/b"), "b");
    assert_eq!(tiers_holding(&m, "slow/b"), vec![0]);

    let (filler, free) = fill_to(&m.tier(0), MIB - 64 * KIB);
    assert!(
        free > 0,
        "pss still has {free} bytes, only less than min_free"
    );
    write(&m.m("c"), "c");
    assert_eq!(tiers_holding(&m, "c"), vec![1], "file below min_free");
    assert_eq!(mkdir(&m.m("d")), Ok(()));
    assert_eq!(tiers_holding(&m, "d"), vec![1], "directory below min_free");
    assert_eq!(symlink("a", &m.m("l")), Ok(()));
    assert_eq!(tiers_holding(&m, "l"), vec![1], "symlink below min_free");
    assert_eq!(mkfifo(&m.m("p")), Ok(()));
    assert_eq!(tiers_holding(&m, "p"), vec![1], "fifo below min_free");
    write(&m.m("keep/e"), "e");
    assert_eq!(tiers_holding(&m, "keep/e"), vec![1]);
    assert!(
        lstat(&m.t(1, "keep")).unwrap().is_dir(),
        "keep/ not cloned onto sss"
    );

    // Room again: pss takes new names again.
    fs::remove_file(&filler).unwrap();
    write(&m.m("f"), "f");
    assert_eq!(tiers_holding(&m, "f"), vec![0], "pss has room again");
    assert_eq!(read(&m.m("c")), b"c");
    assert_no_panic(&m.stderr());
}

#[test]
fn first_found_takes_the_first_of_three_tiers_with_room() {
    let m = Mount::builder()
        .tmpfs(0, "2m")
        .tmpfs(1, "2m")
        .config(&tiers_config(
            &[("a", Some("1MiB")), ("b", None), ("c", None)],
            "kind = \"first-found\"",
        ))
        .mount();
    fill_to(&m.tier(0), 512 * KIB);
    let full = fill_up(&m.tier(1));
    assert_eq!(create_new(&m.m("x")), Ok(()));
    assert_eq!(tiers_holding(&m, "x"), vec![2], "a below min_free, b full");
    fs::remove_file(full).unwrap();
    assert_eq!(create_new(&m.m("y")), Ok(()));
    assert_eq!(tiers_holding(&m, "y"), vec![1], "b has room again");
}

#[test]
fn first_found_and_most_free_skip_a_full_tier_and_fail_only_when_all_are_full() {
    for kind in ["first-found", "most-free"] {
        let m = Mount::builder()
            .tmpfs(0, "1m")
            .tmpfs(1, "2m")
            .policy(&format!("kind = \"{kind}\""))
            .mount();
        fill_up(&m.tier(0));
        assert_eq!(create_new(&m.m("a")), Ok(()), "{kind}");
        assert_eq!(
            tiers_holding(&m, "a"),
            vec![1],
            "{kind}: the full tier took it"
        );
        fill_up(&m.tier(1));
        assert_eq!(
            create_new(&m.m("b")),
            Err(ENOSPC),
            "{kind}: both tiers full"
        );
        assert_eq!(mkdir(&m.m("d")), Err(ENOSPC), "{kind}: both tiers full");
        assert_eq!(tiers_holding(&m, "b"), Vec::<usize>::new());
        assert_eq!(tiers_holding(&m, "d"), Vec::<usize>::new());
    }
}

// ---------------------------------------------------------------------------
// parent-dir and min_free
// ---------------------------------------------------------------------------

#[test]
fn parent_dir_skips_a_tier_below_min_free_and_clones_the_parent() {
    let m = Mount::builder()
        .tmpfs(0, "4m")
        .config(&tiers_config(
            &[("pss", Some("25%")), ("sss", None)],
            "kind = \"parent-dir\"",
        ))
        .setup(|t| mkdirs(&t[0].join("docs/2024")))
        .mount();
    write(&m.m("docs/2024/a"), "a");
    assert_eq!(tiers_holding(&m, "docs/2024/a"), vec![0]);
    // 25% of 4 MiB = 1 MiB
    let quarter = total_bytes(&m.tier(0)) / 4;
    let (filler, _) = fill_to(&m.tier(0), quarter - 64 * KIB);
    write(&m.m("docs/2024/b"), "b");
    assert_eq!(
        tiers_holding(&m, "docs/2024/b"),
        vec![1],
        "pss is below min_free"
    );
    assert!(lstat(&m.t(1, "docs/2024")).unwrap().is_dir());
    assert_eq!(list(&m.m("docs/2024")), names(&["a", "b"]));
    fs::remove_file(filler).unwrap();
    // docs/2024 now exists on both tiers: parent-dir takes the first.
    write(&m.m("docs/2024/c"), "c");
    assert_eq!(tiers_holding(&m, "docs/2024/c"), vec![0]);
}

#[test]
fn enospc_only_when_no_tier_has_room() {
    let m = Mount::builder()
        .tmpfs(0, "4m")
        .tmpfs(1, "4m")
        .config(&tiers_config(
            &[("pss", Some("1MiB")), ("sss", Some("1MiB"))],
            "kind = \"parent-dir\"",
        ))
        .setup(|t| {
            write(&t[1].join("old"), "old");
            mkdirs(&t[0].join("olddir"));
        })
        .mount();
    let (f0, _) = fill_to(&m.tier(0), 512 * KIB);
    // One tier still has room: no ENOSPC.
    assert_eq!(create_new(&m.m("one")), Ok(()));
    assert_eq!(tiers_holding(&m, "one"), vec![1]);
    assert_eq!(create_new(&m.m("olddir/two")), Ok(()));
    assert_eq!(tiers_holding(&m, "olddir/two"), vec![1]);

    fill_to(&m.tier(1), 512 * KIB);
    assert_eq!(create_new(&m.m("new")), Err(ENOSPC), "create");
    assert_eq!(mkdir(&m.m("newdir")), Err(ENOSPC), "mkdir");
    assert_eq!(symlink("old", &m.m("newlink")), Err(ENOSPC), "symlink");
    assert_eq!(mkfifo(&m.m("newfifo")), Err(ENOSPC), "mknod");
    for n in ["new", "newdir", "newlink", "newfifo"] {
        assert_eq!(tiers_holding(&m, n), Vec::<usize>::new(), "{n} left behind");
    }
    // Names that exist are not new names.
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(m.m("old"));
    assert!(f.is_ok(), "O_CREAT on an existing file: {f:?}");
    drop(f);
    assert_eq!(read(&m.m("old")), b"old");
    assert_eq!(mkdir(&m.m("olddir")), Err(libc::EEXIST));

    // Room again on pss.
    fs::remove_file(f0).unwrap();
    assert_eq!(create_new(&m.m("new")), Ok(()));
    assert_eq!(tiers_holding(&m, "new"), vec![0]);
    assert_no_panic(&m.stderr());
}

// ---------------------------------------------------------------------------
// most-free
// ---------------------------------------------------------------------------

#[test]
fn most_free_follows_free_space_and_ties_go_to_the_faster_tier() {
    let m = Mount::builder()
        .tmpfs(0, "8m")
        .tmpfs(1, "8m")
        .policy("kind = \"most-free\"")
        .mount();
    assert_eq!(
        free_bytes(&m.tier(0)),
        free_bytes(&m.tier(1)),
        "precondition: equal free space"
    );
    assert_eq!(create_new(&m.m("tie")), Ok(()));
    assert_eq!(
        tiers_holding(&m, "tie"),
        vec![0],
        "a tie goes to the faster tier"
    );
    write_filler(&m.tier(0), MIB);
    assert_eq!(create_new(&m.m("b")), Ok(()));
    assert_eq!(tiers_holding(&m, "b"), vec![1]);
    assert_eq!(mkdir(&m.m("d")), Ok(()));
    assert_eq!(tiers_holding(&m, "d"), vec![1]);
    write_filler(&m.tier(1), 2 * MIB);
    assert_eq!(create_new(&m.m("c")), Ok(()));
    assert_eq!(tiers_holding(&m, "c"), vec![0]);
    // d exists only on tier 1; most-free still picks tier 0 and clones d.
    assert_eq!(create_new(&m.m("d/e")), Ok(()));
    assert_eq!(tiers_holding(&m, "d/e"), vec![0]);
}

#[test]
fn most_free_skips_a_tier_below_min_free_even_with_the_most_space() {
    let m = Mount::builder()
        .tmpfs(0, "64m")
        .tmpfs(1, "16m")
        .config(&tiers_config(
            &[("big", Some("90%")), ("small", None)],
            "kind = \"most-free\"",
        ))
        .mount();
    assert_eq!(create_new(&m.m("a")), Ok(()));
    assert_eq!(tiers_holding(&m, "a"), vec![0]);
    write_filler(&m.tier(0), 10 * MIB); // 54 of 64 MiB free: below 90%
    assert!(free_bytes(&m.tier(0)) > free_bytes(&m.tier(1)));
    assert_eq!(create_new(&m.m("b")), Ok(()));
    assert_eq!(tiers_holding(&m, "b"), vec![1], "big is below its min_free");
}

// ---------------------------------------------------------------------------
// glob-rule
// ---------------------------------------------------------------------------

/// Three tiers pss, sss, mid; two overlapping rules in the given order,
/// fallback parent-dir.
fn glob_order_config(rules: &[(&str, &str)]) -> String {
    let mut policy = String::from("kind = \"glob-rule\"\nfallback = \"parent-dir\"\n");
    for (g, t) in rules {
        policy += &format!("\n[[policy.rule]]\nglob = \"{g}\"\ntier = \"{t}\"\n");
    }
    tiers_config(&[("pss", None), ("sss", None), ("mid", None)], &policy)
}

#[test]
fn glob_rule_first_matching_rule_wins_in_file_order() {
    let archive_first = [("archive/**", "sss"), ("**/*.tmp", "pss")];
    let tmp_first = [("**/*.tmp", "pss"), ("archive/**", "sss")];
    for (rules, want_archive_tmp) in [(&archive_first, 1), (&tmp_first, 0)] {
        let m = Mount::builder()
            .config(&glob_order_config(rules))
            .setup(|t| {
                mkdirs(&t[2].join("archive"));
                mkdirs(&t[2].join("other"));
            })
            .mount();
        assert_eq!(create_new(&m.m("archive/x.tmp")), Ok(()));
        assert_eq!(
            tier_of(&m, "archive/x.tmp"),
            want_archive_tmp,
            "archive/x.tmp with rules {rules:?}"
        );
        assert_eq!(create_new(&m.m("archive/report.pdf")), Ok(()));
        assert_eq!(tier_of(&m, "archive/report.pdf"), 1, "{rules:?}");
        assert_eq!(mkdir(&m.m("archive/2020")), Ok(()));
        assert_eq!(tier_of(&m, "archive/2020"), 1, "{rules:?}");
        // no rule matches: the fallback (parent-dir) decides
        assert_eq!(create_new(&m.m("other/notes.txt")), Ok(()));
        assert_eq!(tier_of(&m, "other/notes.txt"), 2, "{rules:?}");
        assert_eq!(create_new(&m.m("other/a.tmp")), Ok(()));
        assert_eq!(tier_of(&m, "other/a.tmp"), 0, "{rules:?}");
        assert_eq!(create_new(&m.m("top.txt")), Ok(()));
        assert_eq!(tier_of(&m, "top.txt"), 0, "{rules:?}");
    }
}

#[test]
fn glob_rule_fallback_policy_decides_unmatched_names() {
    // fastdocs/ only on pss (4 MiB tmpfs), slowdocs/ only on sss (16 MiB).
    for (fallback, want_fast, want_slow) in [
        (None, 0, 1),
        (Some("parent-dir"), 0, 1),
        (Some("first-found"), 0, 0),
        (Some("most-free"), 1, 1),
    ] {
        let mut policy = String::from("kind = \"glob-rule\"\n");
        if let Some(f) = fallback {
            policy += &format!("fallback = \"{f}\"\n");
        }
        policy += "\n[[policy.rule]]\nglob = \"**/*.tmp\"\ntier = \"pss\"\n";
        let m = Mount::builder()
            .tmpfs(0, "4m")
            .tmpfs(1, "16m")
            .config(&tiers_config(&[("pss", None), ("sss", None)], &policy))
            .setup(|t| {
                mkdirs(&t[0].join("fastdocs"));
                mkdirs(&t[1].join("slowdocs"));
            })
            .mount();
        for (dir, want) in [("fastdocs", want_fast), ("slowdocs", want_slow)] {
            let rel = format!("{dir}/a.txt");
            assert_eq!(create_new(&m.m(&rel)), Ok(()), "{fallback:?}");
            assert_eq!(tier_of(&m, &rel), want, "{rel} with fallback {fallback:?}");
            let rel = format!("{dir}/b.tmp");
            assert_eq!(create_new(&m.m(&rel)), Ok(()), "{fallback:?}");
            assert_eq!(tier_of(&m, &rel), 0, "{rel} with fallback {fallback:?}");
        }
    }
}

/// min_free applies "whatever the policy": a rule whose tier is below its
/// min_free must not fail the create while another tier has room.
#[test]
fn glob_rule_whose_tier_is_below_min_free_does_not_fail_the_create() {
    let policy = "kind = \"glob-rule\"\nfallback = \"parent-dir\"\n\n\
                  [[policy.rule]]\nglob = \"**/*.tmp\"\ntier = \"pss\"\n";
    let m = Mount::builder()
        .tmpfs(0, "4m")
        .config(&tiers_config(
            &[("pss", Some("1MiB")), ("sss", None)],
            policy,
        ))
        .mount();
    assert_eq!(create_new(&m.m("before.tmp")), Ok(()));
    assert_eq!(tier_of(&m, "before.tmp"), 0);
    fill_to(&m.tier(0), 512 * KIB);
    let r = create_new(&m.m("after.tmp"));
    assert_eq!(
        r,
        Ok(()),
        "creating after.tmp failed (errno) although sss has room; dfs stderr:\n{}",
        m.stderr()
    );
    assert_eq!(tier_of(&m, "after.tmp"), 1);
}

// ---------------------------------------------------------------------------
// examples/*.toml
// ---------------------------------------------------------------------------

#[test]
fn every_example_config_is_covered_by_a_test() {
    // parent-dir, first-found, most-free, glob-rule: below; plugin.toml:
    // tests/plugins.rs. A new example needs a test.
    assert_eq!(
        example_files(),
        [
            "first-found.toml",
            "glob-rule.toml",
            "most-free.toml",
            "parent-dir.toml",
            "plugin.toml"
        ]
    );
}

/// Prepares a mount of examples/`name` (tier paths rewritten to the test's
/// tiers, `mountpoint` to its mount point, nothing else changed), checks
/// that `dfs check --config` accepts it and names `policy`, then mounts it.
fn example_mount(name: &str, policy: &str, b: impl FnOnce(Builder) -> Builder) -> Mount {
    let (text, tier_names) = example_config(name, None);
    let mut m = b(Mount::builder().config(&text).no_mnt_arg()).prepare();
    let cfg = m.config_path().unwrap();
    let (ok, code, out, err) = dfs_check(&cfg);
    assert!(
        ok && code == Some(0),
        "dfs check rejected {name} ({code:?}):\n{err}\nconfig:\n{}",
        fs::read_to_string(&cfg).unwrap()
    );
    assert!(out.contains(&format!("policy: {policy}")), "{name}:\n{out}");
    for (i, t) in tier_names.iter().enumerate() {
        assert!(
            out.contains(&format!("{i}  {t}")),
            "{name}: tier {i} {t} missing from:\n{out}"
        );
    }
    assert!(out.trim_end().ends_with("ok"), "{name}:\n{out}");
    assert_not_mounted(&m.mnt());
    m.start_again();
    assert_eq!(
        fuse_mount_at(&m.mnt()).map(|i| i.fstype),
        Some("fuse.dfs".to_string())
    );
    m
}

#[test]
fn example_parent_dir_places_by_parent_directory() {
    // "under a directory that exists on pss it lands on pss; under one that
    // exists only on sss it lands on sss"
    let m = example_mount("parent-dir.toml", "parent-dir", |b| {
        b.setup(|t| {
            mkdirs(&t[0].join("fast"));
            mkdirs(&t[1].join("slow"));
            mkdirs(&t[0].join("both"));
            mkdirs(&t[1].join("both"));
        })
    });
    for (rel, want) in [("fast/a", 0), ("both/a", 0), ("slow/a", 1), ("top", 0)] {
        assert_eq!(create_new(&m.m(rel)), Ok(()), "{rel}");
        assert_eq!(tier_of(&m, rel), want, "{rel}");
    }
    assert_eq!(mkdir(&m.m("slow/sub")), Ok(()));
    assert_eq!(tier_of(&m, "slow/sub"), 1);
    assert_eq!(create_new(&m.m("slow/sub/x")), Ok(()));
    assert_eq!(tier_of(&m, "slow/sub/x"), 1);
    assert!(
        !exists(&m.t(0, "slow")),
        "slow/ cloned onto pss without need"
    );
    // [mount] options = ["allow_other", "default_permissions"]
    let info = fuse_mount_at(&m.mnt()).unwrap();
    assert!(info.super_options.contains("allow_other"), "{info:?}");
    assert!(
        info.super_options.contains("default_permissions"),
        "{info:?}"
    );
}

#[test]
fn example_first_found_fills_pss_until_10_percent_free_then_sss() {
    let m = example_mount("first-found.toml", "first-found", |b| {
        b.tmpfs(0, "4m").setup(|t| mkdirs(&t[1].join("slow")))
    });
    assert_eq!(create_new(&m.m("a")), Ok(()));
    assert_eq!(tier_of(&m, "a"), 0);
    assert_eq!(create_new(&m.m("slow/b")), Ok(()));
    assert_eq!(
        tier_of(&m, "slow/b"),
        0,
        "first tier with room, wherever the parent is"
    );
    let tenth = total_bytes(&m.tier(0)) / 10;
    fill_to(&m.tier(0), tenth + 128 * KIB);
    assert_eq!(create_new(&m.m("c")), Ok(()));
    assert_eq!(tier_of(&m, "c"), 0, "pss still above 10% free");
    write_filler(&m.tier(0), 256 * KIB);
    assert!(free_bytes(&m.tier(0)) < tenth);
    assert_eq!(create_new(&m.m("d")), Ok(()));
    assert_eq!(tier_of(&m, "d"), 1, "pss keeps 10% free");
    assert_eq!(mkdir(&m.m("e")), Ok(()));
    assert_eq!(tier_of(&m, "e"), 1, "pss keeps 10% free");
}

#[test]
fn example_glob_rule_tmp_and_cache_on_pss_archive_on_sss() {
    let m = example_mount("glob-rule.toml", "glob-rule", |b| {
        b.setup(|t| {
            mkdirs(&t[0].join("archive")); // parent-dir would say pss
            mkdirs(&t[1].join("cache")); // parent-dir would say sss
            mkdirs(&t[1].join("docs"));
        })
    });
    assert_eq!(mkdir(&m.m("archive/2020")), Ok(()));
    assert_eq!(tier_of(&m, "archive/2020"), 1);
    for (rel, want) in [
        ("archive/2020/report.pdf", 1),
        ("archive/report.pdf", 1),
        ("archive/scratch.tmp", 0), // the *.tmp rule comes first
        ("cache/thumb.png", 0),
        ("docs/letter.odt", 1), // no rule: parent-dir (docs/ only on sss)
        ("docs/draft.tmp", 0),  // (clones docs/ onto pss)
        ("x.tmp", 0),
        ("notes.txt", 0), // no rule: parent-dir
    ] {
        assert_eq!(create_new(&m.m(rel)), Ok(()), "{rel}");
        assert_eq!(tier_of(&m, rel), want, "{rel}");
    }
    assert_eq!(mkdir(&m.m("cache/sub")), Ok(()));
    assert_eq!(tier_of(&m, "cache/sub"), 0);
}

#[test]
fn example_most_free_spreads_by_free_space_and_keeps_4gib_free() {
    // tmpfs sizes just above the example's min_free of 4 GiB = 4096 MiB;
    // only what the test writes is really used.
    let m = example_mount("most-free.toml", "most-free", |b| {
        b.tmpfs(0, "4100m").tmpfs(1, "4104m").tmpfs(2, "4102m")
    });
    let t = |i: usize| m.tier(i);
    let most = (0..3).max_by_key(|&i| free_bytes(&t(i))).unwrap();
    assert_eq!(most, 1, "precondition");
    let step = |name: &str, want: usize| {
        assert_eq!(create_new(&m.m(name)), Ok(()), "{name}");
        assert_eq!(tier_of(&m, name), want, "{name}");
    };
    step("a", 1);
    fill_to(&t(1), 4098 * MIB);
    step("b", 2);
    fill_to(&t(2), 4097 * MIB);
    step("c", 0);
    fill_to(&t(0), 4096 * MIB + 512 * KIB);
    step("d", 1);
    // Each disk keeps 4 GiB free: once all are below, no new names.
    for i in 0..3 {
        fill_to(&t(i), 4096 * MIB - 64 * KIB);
    }
    assert_eq!(create_new(&m.m("e")), Err(ENOSPC));
    assert_eq!(mkdir(&m.m("f")), Err(ENOSPC));
}

// ---------------------------------------------------------------------------
// examples/static_policy.rs
// ---------------------------------------------------------------------------

static STATIC_POLICY: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Builds examples/static_policy.rs once per test binary, in a target
/// directory of its own.
fn static_policy_binary() -> PathBuf {
    STATIC_POLICY
        .get_or_init(|| {
            cargo_build(&repo(), &["build", "--example", "static_policy"])?;
            Ok(nested_target_dir().join("debug/examples/static_policy"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn static_policy_example_puts_hot_paths_on_pss_and_the_rest_on_sss() {
    let bin = static_policy_binary();
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("docs")); // parent-dir would say pss
            mkdirs(&t[1].join("hot")); // parent-dir would say sss
        })
        .prepare();
    let mut cmd = Command::new(&bin);
    cmd.arg(m.tier(0)).arg(m.tier(1)).arg(m.mnt());
    let mut d = Daemon::start(cmd, &m.mnt(), &m.root().join("static_policy.log"));
    for (rel, want) in [("hot/a", 0), ("docs/b", 1), ("top", 1), ("hotter", 1)] {
        assert_eq!(create_new(&m.m(rel)), Ok(()), "{rel}");
        assert_eq!(tier_of(&m, rel), want, "{rel}");
    }
    assert!(
        lstat(&m.t(0, "hot")).unwrap().is_dir(),
        "hot/ not cloned onto pss"
    );
    assert!(
        lstat(&m.t(1, "docs")).unwrap().is_dir(),
        "docs/ not cloned onto sss"
    );
    assert_eq!(mkdir(&m.m("projects")), Ok(()));
    assert_eq!(tier_of(&m, "projects"), 1);
    assert_eq!(mkdir(&m.m("projects/hot")), Ok(()));
    assert_eq!(tier_of(&m, "projects/hot"), 0);
    assert_eq!(create_new(&m.m("projects/hot/c")), Ok(()));
    assert_eq!(tier_of(&m, "projects/hot/c"), 0);
    assert_eq!(create_new(&m.m("projects/d")), Ok(()));
    assert_eq!(tier_of(&m, "projects/d"), 1);
    let (st, gone) = d.stop();
    assert!(
        st.is_some_and(|s| s.success()) && gone,
        "static_policy did not unmount cleanly on SIGTERM: {st:?}, gone {gone}\n{}",
        d.log()
    );
}
