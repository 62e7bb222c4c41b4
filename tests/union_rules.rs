//! The thirteen union rules of DESIGN.md, each on a real mount.
//!
//! Tier 0 is the fast tier (PSS of the preset), tier 1 the slow one (SSS).
//! Tests populate the tiers directly (in `setup`, before dfs starts) and check
//! the tier directories directly afterwards.

mod common;

use common::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;

fn w(p: &Path, data: &str) {
    if let Some(parent) = p.parent() {
        mkdirs(parent);
    }
    write(p, data);
}

// ---------------------------------------------------------------------------
// Rule 1: read/write/truncate/setattr act on the winning copy only
// ---------------------------------------------------------------------------

#[test]
fn rule1_write_to_file_on_lower_tier_stays_there() {
    let m = Mount::builder()
        .setup(|t| w(&t[1].join("d/f"), "old content"))
        .mount();
    assert_eq!(read(&m.m("d/f")), b"old content");
    write(&m.m("d/f"), "new");
    assert_eq!(read(&m.t(1, "d/f")), b"new");
    assert!(
        !exists(&m.t(0, "d/f")),
        "the write copied the file up to tier 0"
    );
    assert!(
        !exists(&m.t(0, "d")),
        "the write cloned the parent onto tier 0"
    );
    // append through the mount
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.m("d/f"))
        .unwrap();
    f.write_all(b"+more").unwrap();
    drop(f);
    assert_eq!(read(&m.t(1, "d/f")), b"new+more");
    assert_eq!(read(&m.m("d/f")), b"new+more");
    assert!(!exists(&m.t(0, "d/f")));
}

#[test]
fn rule1_write_and_truncate_hit_winning_copy_only() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("f"), "top copy");
            w(&t[1].join("f"), "bottom copy");
        })
        .mount();
    assert_eq!(read(&m.m("f")), b"top copy");
    let mut f = fs::OpenOptions::new().write(true).open(m.m("f")).unwrap();
    f.seek(SeekFrom::Start(4)).unwrap();
    f.write_all(b"-X").unwrap();
    drop(f);
    assert_eq!(read(&m.t(0, "f")), b"top -Xpy");
    assert_eq!(read(&m.t(1, "f")), b"bottom copy");
    // truncate by path
    fs::OpenOptions::new()
        .write(true)
        .open(m.m("f"))
        .unwrap()
        .set_len(3)
        .unwrap();
    assert_eq!(read(&m.t(0, "f")), b"top");
    assert_eq!(read(&m.t(1, "f")), b"bottom copy");
    assert_eq!(lstat(&m.m("f")).unwrap().len(), 3);
    // truncate(2)
    let c = cstr(m.m("f"));
    cvt(unsafe { libc::truncate(c.as_ptr(), 1) }).unwrap();
    assert_eq!(read(&m.t(0, "f")), b"t");
    assert_eq!(read(&m.t(1, "f")), b"bottom copy");
}

#[test]
fn rule1_setattr_of_file_on_lower_tier_stays_there() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[1].join("f"), "0123456789");
            chmod(&t[1].join("f"), 0o644);
        })
        .mount();
    chmod(&m.m("f"), 0o600);
    assert_eq!(mode(&m.t(1, "f")), 0o600);
    let c = cstr(m.m("f"));
    cvt(unsafe { libc::truncate(c.as_ptr(), 4) }).unwrap();
    assert_eq!(read(&m.t(1, "f")), b"0123");
    utimens(&m.m("f"), ts(1_000_000, 0), ts(2_000_000, 0)).unwrap();
    let md = lstat(&m.t(1, "f")).unwrap();
    assert_eq!((md.atime(), md.mtime()), (1_000_000, 2_000_000));
    lchown(&m.m("f"), 1234, 5678);
    let md = lstat(&m.t(1, "f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert!(!exists(&m.t(0, "f")), "setattr copied the file to tier 0");
}

// ---------------------------------------------------------------------------
// Rule 2: unlink removes every copy
// ---------------------------------------------------------------------------

#[test]
fn rule2_unlink_name_on_both_tiers_leaves_nothing() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("f"), "top");
            w(&t[1].join("f"), "bottom");
        })
        .mount();
    assert_eq!(read(&m.m("f")), b"top");
    fs::remove_file(m.m("f")).unwrap();
    assert_eq!(errno(lstat(&m.m("f"))), libc::ENOENT);
    assert_eq!(errno(fs::File::open(m.m("f"))), libc::ENOENT);
    assert!(!exists(&m.t(0, "f")), "tier 0 copy survived");
    assert!(
        !exists(&m.t(1, "f")),
        "tier 1 copy survived (would resurrect)"
    );
    assert!(!list(&m.mnt()).iter().any(|n| n == "f"));
}

#[test]
fn rule2_unlink_on_three_tiers() {
    let m = Mount::builder()
        .tiers(3)
        .policy("kind = \"parent-dir\"")
        .setup(|t| {
            for (i, t) in t.iter().enumerate() {
                w(&t.join("d/f"), &format!("copy {i}"));
            }
        })
        .mount();
    assert_eq!(read(&m.m("d/f")), b"copy 0");
    fs::remove_file(m.m("d/f")).unwrap();
    assert_eq!(errno(lstat(&m.m("d/f"))), libc::ENOENT);
    assert_eq!(tiers_holding(&m, "d/f"), Vec::<usize>::new());
    assert_eq!(list(&m.m("d")), Vec::<std::ffi::OsString>::new());
}

#[test]
fn rule2_unlink_symlink_on_lower_tier() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            mkdirs(&t[1].join("d"));
            std::os::unix::fs::symlink("target", t[1].join("d/l")).unwrap();
        })
        .mount();
    assert_eq!(fs::read_link(m.m("d/l")).unwrap(), Path::new("target"));
    fs::remove_file(m.m("d/l")).unwrap();
    assert!(!exists(&m.t(1, "d/l")));
    assert_eq!(errno(lstat(&m.m("d/l"))), libc::ENOENT);
}

// ---------------------------------------------------------------------------
// Rule 3: rmdir
// ---------------------------------------------------------------------------

#[test]
fn rule3_rmdir_enotempty_when_only_lower_tier_has_a_child() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            w(&t[1].join("d/child"), "x");
        })
        .mount();
    assert_eq!(errno(fs::remove_dir(m.m("d"))), libc::ENOTEMPTY);
    assert!(
        exists(&m.t(0, "d")),
        "tier 0 copy removed although rmdir failed"
    );
    assert_eq!(read(&m.t(1, "d/child")), b"x");
    assert_eq!(list(&m.m("d")), names(&["child"]));
}

#[test]
fn rule3_rmdir_enotempty_when_only_lower_tier_has_a_subdir() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            mkdirs(&t[1].join("d/sub"));
        })
        .mount();
    assert_eq!(errno(fs::remove_dir(m.m("d"))), libc::ENOTEMPTY);
    assert!(exists(&m.t(0, "d")));
    assert!(exists(&m.t(1, "d/sub")));
}

#[test]
fn rule3_rmdir_removes_every_copy() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            mkdirs(&t[1].join("d"));
        })
        .mount();
    fs::remove_dir(m.m("d")).unwrap();
    assert_eq!(errno(lstat(&m.m("d"))), libc::ENOENT);
    assert!(!exists(&m.t(0, "d")));
    assert!(!exists(&m.t(1, "d")));
    // a new directory of that name starts empty
    fs::create_dir(m.m("d")).unwrap();
    assert_eq!(list(&m.m("d")), Vec::<std::ffi::OsString>::new());
}

#[test]
fn rule3_rmdir_after_emptying_through_mount() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/a"), "a");
            w(&t[1].join("d/b"), "b");
            w(&t[1].join("d/a"), "shadowed a");
        })
        .mount();
    assert_eq!(errno(fs::remove_dir(m.m("d"))), libc::ENOTEMPTY);
    fs::remove_file(m.m("d/a")).unwrap();
    assert_eq!(
        list(&m.m("d")),
        names(&["b"]),
        "shadowed copy of a resurrected"
    );
    fs::remove_file(m.m("d/b")).unwrap();
    fs::remove_dir(m.m("d")).unwrap();
    assert_eq!(tiers_holding(&m, "d"), Vec::<usize>::new());
}

// ---------------------------------------------------------------------------
// Rule 4: rename
// ---------------------------------------------------------------------------

#[test]
fn rule4_rename_over_name_on_both_tiers_leaves_no_stale_copy() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("a"), "A");
            w(&t[0].join("b"), "B top");
            w(&t[1].join("b"), "B bottom");
        })
        .mount();
    fs::rename(m.m("a"), m.m("b")).unwrap();
    assert_eq!(read(&m.m("b")), b"A");
    assert_eq!(errno(lstat(&m.m("a"))), libc::ENOENT);
    assert_eq!(tiers_holding(&m, "a"), Vec::<usize>::new());
    assert_eq!(
        tiers_holding(&m, "b"),
        vec![0],
        "stale copy of b left on a tier"
    );
    assert_eq!(read(&m.t(0, "b")), b"A");
}

#[test]
fn rule4_rename_lower_file_over_name_on_both_tiers() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[1].join("a"), "A from tier 1");
            w(&t[0].join("b"), "B top");
            w(&t[1].join("b"), "B bottom");
        })
        .mount();
    fs::rename(m.m("a"), m.m("b")).unwrap();
    assert_eq!(read(&m.m("b")), b"A from tier 1");
    assert_eq!(errno(lstat(&m.m("a"))), libc::ENOENT);
    assert_eq!(tiers_holding(&m, "a"), Vec::<usize>::new());
    let holders = tiers_holding(&m, "b");
    assert_eq!(
        holders.len(),
        1,
        "b on tiers {holders:?}: stale copy survived"
    );
    assert_eq!(read(&m.t(holders[0], "b")), b"A from tier 1");
}

#[test]
fn rule4_rename_removes_shadowed_copies_of_source() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("a"), "A top");
            w(&t[1].join("a"), "A shadowed");
        })
        .mount();
    fs::rename(m.m("a"), m.m("c")).unwrap();
    assert_eq!(read(&m.m("c")), b"A top");
    assert_eq!(
        errno(lstat(&m.m("a"))),
        libc::ENOENT,
        "the shadowed copy of a resurrected after rename"
    );
    assert_eq!(tiers_holding(&m, "a"), Vec::<usize>::new());
    assert_eq!(tiers_holding(&m, "c"), vec![0]);
}

#[test]
fn rule4_rename_keeps_attributes() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[1].join("a"), "data");
            chmod(&t[1].join("a"), 0o640);
            lchown(&t[1].join("a"), 1234, 5678);
            utimens(
                &t[1].join("a"),
                ts(1_500_000_000, 0),
                ts(1_400_000_000, 123),
            )
            .unwrap();
            w(&t[0].join("b"), "old b");
        })
        .mount();
    let before = lstat(&m.m("a")).unwrap();
    fs::rename(m.m("a"), m.m("b")).unwrap();
    let after = lstat(&m.m("b")).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (1234, 5678));
    assert_eq!((after.mtime(), after.mtime_nsec()), (1_400_000_000, 123));
    assert_eq!(after.ino(), before.ino());
    assert_eq!(read(&m.m("b")), b"data");
}

#[test]
fn rule4_rename_directory_present_on_both_tiers() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/x"), "x");
            w(&t[1].join("d/y"), "y");
            w(&t[1].join("d/sub/z"), "z");
        })
        .mount();
    fs::rename(m.m("d"), m.m("e")).unwrap();
    assert_eq!(list(&m.m("e")), names(&["sub", "x", "y"]));
    assert_eq!(read(&m.m("e/y")), b"y");
    assert_eq!(read(&m.m("e/sub/z")), b"z");
    assert_eq!(errno(lstat(&m.m("d"))), libc::ENOENT);
    assert_eq!(tiers_holding(&m, "d"), Vec::<usize>::new());
    assert!(exists(&m.t(0, "e/x")));
    assert!(exists(&m.t(1, "e/y")));
}

#[test]
fn rule4_rename_dir_over_empty_dir_on_both_tiers() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/x"), "x");
            mkdirs(&t[0].join("e"));
            mkdirs(&t[1].join("e"));
        })
        .mount();
    fs::rename(m.m("d"), m.m("e")).unwrap();
    assert_eq!(list(&m.m("e")), names(&["x"]));
    assert_eq!(tiers_holding(&m, "d"), Vec::<usize>::new());
    assert_eq!(
        tiers_holding(&m, "e"),
        vec![0],
        "stale empty copy of e survived"
    );
}

#[test]
fn rule4_rename_dir_over_dir_whose_lower_copy_is_not_empty() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/x"), "x");
            mkdirs(&t[0].join("e"));
            w(&t[1].join("e/child"), "c");
        })
        .mount();
    assert_eq!(errno(fs::rename(m.m("d"), m.m("e"))), libc::ENOTEMPTY);
    assert_eq!(read(&m.t(0, "d/x")), b"x");
    assert_eq!(read(&m.t(1, "e/child")), b"c");
    assert!(exists(&m.t(0, "e")));
}

#[test]
fn rule4_rename_type_conflicts_with_lower_copy() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("file"), "f");
            mkdirs(&t[1].join("dir"));
            mkdirs(&t[0].join("dir2"));
            w(&t[1].join("file2"), "f2");
        })
        .mount();
    assert_eq!(errno(fs::rename(m.m("file"), m.m("dir"))), libc::EISDIR);
    assert_eq!(errno(fs::rename(m.m("dir2"), m.m("file2"))), libc::ENOTDIR);
    assert!(exists(&m.t(0, "file")));
    assert!(exists(&m.t(1, "dir")));
    assert!(exists(&m.t(0, "dir2")));
    assert_eq!(read(&m.t(1, "file2")), b"f2");
}

#[test]
fn rule4_rename_noreplace_eexist_when_target_only_on_lower_tier() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("a"), "A");
            w(&t[1].join("b"), "B");
        })
        .mount();
    assert_eq!(
        errno(renameat2(&m.m("a"), &m.m("b"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(read(&m.t(0, "a")), b"A");
    assert_eq!(read(&m.t(1, "b")), b"B");
    assert!(!exists(&m.t(0, "b")));
    assert_eq!(read(&m.m("b")), b"B");
    // and it works when the target is absent
    renameat2(&m.m("a"), &m.m("c"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(read(&m.m("c")), b"A");
    assert_eq!(tiers_holding(&m, "a"), Vec::<usize>::new());
}

#[test]
fn rule4_rename_exchange_swaps_or_refuses_cleanly() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("a"), "A");
            w(&t[1].join("b"), "B");
        })
        .mount();
    match renameat2(&m.m("a"), &m.m("b"), libc::RENAME_EXCHANGE) {
        Ok(()) => {
            assert_eq!(read(&m.m("a")), b"B");
            assert_eq!(read(&m.m("b")), b"A");
            assert_eq!(tiers_holding(&m, "a").len(), 1);
            assert_eq!(tiers_holding(&m, "b").len(), 1);
        }
        Err(e) => {
            let n = e.raw_os_error().unwrap();
            assert!(
                n == libc::EINVAL || n == libc::EOPNOTSUPP,
                "RENAME_EXCHANGE failed with {e} (EXDEV is never allowed, rule 10)"
            );
            assert_eq!(read(&m.m("a")), b"A");
            assert_eq!(read(&m.m("b")), b"B");
        }
    }
}

// ---------------------------------------------------------------------------
// Rule 5: link
// ---------------------------------------------------------------------------

#[test]
fn rule5_link_is_created_on_the_source_tier() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            w(&t[1].join("d/a"), "A");
        })
        .mount();
    fs::hard_link(m.m("d/a"), m.m("d/b")).unwrap();
    assert!(!exists(&m.t(0, "d/b")), "link placed on tier 0");
    assert_eq!(ino(&m.t(1, "d/b")), ino(&m.t(1, "d/a")));
    let a = lstat(&m.m("d/a")).unwrap();
    let b = lstat(&m.m("d/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(b.nlink(), 2);
}

#[test]
fn rule5_link_eexist_when_target_only_on_lower_tier() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("a"), "A");
            w(&t[1].join("b"), "B");
        })
        .mount();
    assert_eq!(errno(fs::hard_link(m.m("a"), m.m("b"))), libc::EEXIST);
    assert!(!exists(&m.t(0, "b")));
    assert_eq!(lstat(&m.t(0, "a")).unwrap().nlink(), 1);
    assert_eq!(read(&m.m("b")), b"B");
}

// ---------------------------------------------------------------------------
// Rule 6: exclusive creation sees every tier
// ---------------------------------------------------------------------------

fn lower_only_names() -> Mount {
    Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            w(&t[1].join("d/f"), "lower");
            mkdirs(&t[1].join("d/sub"));
        })
        .mount()
}

#[test]
fn rule6_o_excl_create_eexist_when_name_only_on_lower_tier() {
    let m = lower_only_names();
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.m("d/f"));
    assert_eq!(errno(r), libc::EEXIST);
    assert!(!exists(&m.t(0, "d/f")));
    assert_eq!(read(&m.t(1, "d/f")), b"lower");
}

#[test]
fn rule6_mkdir_eexist_when_name_only_on_lower_tier() {
    let m = lower_only_names();
    assert_eq!(errno(fs::create_dir(m.m("d/f"))), libc::EEXIST);
    assert_eq!(errno(fs::create_dir(m.m("d/sub"))), libc::EEXIST);
    assert!(!exists(&m.t(0, "d/f")));
    assert!(!exists(&m.t(0, "d/sub")));
}

#[test]
fn rule6_symlink_eexist_when_name_only_on_lower_tier() {
    let m = lower_only_names();
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", m.m("d/f"))),
        libc::EEXIST
    );
    assert!(!exists(&m.t(0, "d/f")));
}

#[test]
fn rule6_mknod_eexist_when_name_only_on_lower_tier() {
    let m = lower_only_names();
    assert_eq!(
        errno(mknod(&m.m("d/f"), libc::S_IFIFO | 0o644, 0)),
        libc::EEXIST
    );
    assert_eq!(
        errno(mknod(&m.m("d/sub"), libc::S_IFREG | 0o644, 0)),
        libc::EEXIST
    );
    assert!(!exists(&m.t(0, "d/f")));
}

#[test]
fn rule6_plain_o_creat_opens_the_lower_copy() {
    let m = lower_only_names();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(m.m("d/f"))
        .unwrap();
    f.write_all(b"L").unwrap();
    drop(f);
    assert!(
        !exists(&m.t(0, "d/f")),
        "O_CREAT made a shadowing copy on tier 0"
    );
    assert_eq!(read(&m.t(1, "d/f")), b"Lower");
}

// ---------------------------------------------------------------------------
// Rule 7: metadata of directories applies to every copy
// ---------------------------------------------------------------------------

fn dir_on_both() -> Mount {
    Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/x"), "x");
            w(&t[1].join("d/y"), "y");
            chmod(&t[0].join("d"), 0o755);
            chmod(&t[1].join("d"), 0o755);
            w(&t[0].join("f"), "top");
            w(&t[1].join("f"), "bottom");
            chmod(&t[0].join("f"), 0o644);
            chmod(&t[1].join("f"), 0o644);
        })
        .mount()
}

#[test]
fn rule7_chmod_dir_applies_to_every_copy() {
    let m = dir_on_both();
    chmod(&m.m("d"), 0o705);
    assert_eq!(mode(&m.t(0, "d")), 0o705);
    assert_eq!(mode(&m.t(1, "d")), 0o705);
    assert_eq!(mode(&m.m("d")), 0o705);
}

#[test]
fn rule7_chown_dir_applies_to_every_copy() {
    let m = dir_on_both();
    lchown(&m.m("d"), 1234, 5678);
    for i in 0..2 {
        let md = lstat(&m.t(i, "d")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "tier {i}");
    }
}

#[test]
fn rule7_utimens_dir_applies_to_every_copy() {
    let m = dir_on_both();
    utimens(&m.m("d"), ts(1_111_111_111, 5), ts(1_222_222_222, 7)).unwrap();
    for i in 0..2 {
        let md = lstat(&m.t(i, "d")).unwrap();
        assert_eq!(
            (md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec()),
            (1_111_111_111, 5, 1_222_222_222, 7),
            "tier {i}"
        );
    }
}

#[test]
fn rule7_xattr_on_dir_applies_to_every_copy() {
    let m = dir_on_both();
    setxattr(&m.m("d"), "user.color", b"blue", 0).unwrap();
    for i in 0..2 {
        assert_eq!(
            getxattr(&m.t(i, "d"), "user.color").unwrap(),
            b"blue",
            "tier {i}"
        );
    }
    removexattr(&m.m("d"), "user.color").unwrap();
    for i in 0..2 {
        assert_eq!(
            errno(getxattr(&m.t(i, "d"), "user.color")),
            libc::ENODATA,
            "tier {i}"
        );
    }
}

#[test]
fn rule7_file_metadata_applies_to_winning_copy_only() {
    let m = dir_on_both();
    chmod(&m.m("f"), 0o600);
    lchown(&m.m("f"), 4321, 8765);
    setxattr(&m.m("f"), "user.k", b"v", 0).unwrap();
    assert_eq!(mode(&m.t(0, "f")), 0o600);
    assert_eq!(mode(&m.t(1, "f")), 0o644);
    assert_eq!(lstat(&m.t(1, "f")).unwrap().uid(), 0);
    assert_eq!(lstat(&m.t(0, "f")).unwrap().uid(), 4321);
    assert_eq!(getxattr(&m.t(0, "f"), "user.k").unwrap(), b"v");
    assert_eq!(errno(getxattr(&m.t(1, "f"), "user.k")), libc::ENODATA);
}

// ---------------------------------------------------------------------------
// Rule 8: statfs
// ---------------------------------------------------------------------------

fn total_bytes(s: &libc::statfs) -> u128 {
    let unit = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    } as u128;
    s.f_blocks as u128 * unit
}

#[test]
fn rule8_statfs_counts_two_tiers_on_one_fs_once() {
    let m = Mount::preset();
    let t = statfs(&m.tier(0));
    let u = statfs(&m.mnt());
    assert_eq!(
        total_bytes(&u),
        total_bytes(&t),
        "mount total != one tier's filesystem"
    );
    assert_eq!(u.f_files, t.f_files);
}

#[test]
fn rule8_statfs_adds_distinct_filesystems() {
    let m = Mount::builder().tmpfs(1, "64m").mount();
    let a = statfs(&m.tier(0));
    let b = statfs(&m.tier(1));
    let u = statfs(&m.mnt());
    let expect = total_bytes(&a) + total_bytes(&b);
    let got = total_bytes(&u);
    let unit = u.f_bsize.max(4096) as u128;
    assert!(
        got.abs_diff(expect) <= unit,
        "statfs total {got} != {expect} (sum of tiers)"
    );
}

#[test]
fn rule8_statfs_three_tiers_two_filesystems() {
    let m = Mount::builder()
        .tiers(3)
        .tmpfs(2, "32m")
        .policy("kind = \"parent-dir\"")
        .mount();
    let a = statfs(&m.tier(0));
    let c = statfs(&m.tier(2));
    let u = statfs(&m.mnt());
    let expect = total_bytes(&a) + total_bytes(&c);
    let got = total_bytes(&u);
    assert!(
        got.abs_diff(expect) <= 4096,
        "statfs total {got} != {expect} (tiers 0 and 1 share a filesystem)"
    );
}

// ---------------------------------------------------------------------------
// Rule 9: inode numbers
// ---------------------------------------------------------------------------

#[test]
fn rule9_ino_stable_across_rename() {
    let m = Mount::preset();
    fs::create_dir(m.m("d1")).unwrap();
    fs::create_dir(m.m("d2")).unwrap();
    write(&m.m("d1/f"), "x");
    let f = fs::File::open(m.m("d1/f")).unwrap();
    let i0 = ino(&m.m("d1/f"));
    fs::rename(m.m("d1/f"), m.m("d1/g")).unwrap();
    assert_eq!(ino(&m.m("d1/g")), i0);
    fs::rename(m.m("d1/g"), m.m("d2/h")).unwrap();
    assert_eq!(ino(&m.m("d2/h")), i0);
    assert_eq!(f.metadata().unwrap().ino(), i0);
    // directory inode too
    let di = ino(&m.m("d1"));
    fs::rename(m.m("d1"), m.m("d3")).unwrap();
    assert_eq!(ino(&m.m("d3")), di);
}

#[test]
fn rule9_ino_stable_across_rename_between_tiers() {
    let m = Mount::builder()
        .tmpfs(1, "32m")
        .setup(|t| {
            w(&t[1].join("src/f"), "lower");
            mkdirs(&t[0].join("dst"));
        })
        .mount();
    let i0 = ino(&m.m("src/f"));
    fs::rename(m.m("src/f"), m.m("dst/f")).unwrap();
    assert_eq!(ino(&m.m("dst/f")), i0);
    assert_eq!(read(&m.m("dst/f")), b"lower");
}

#[test]
fn rule9_ino_equal_for_hard_links() {
    let m = Mount::preset();
    write(&m.m("a"), "x");
    fs::hard_link(m.m("a"), m.m("b")).unwrap();
    assert_eq!(ino(&m.m("a")), ino(&m.m("b")));
    assert_eq!(lstat(&m.m("a")).unwrap().nlink(), 2);
    // links made directly on a tier, seen for the first time through the mount
    write(&m.t(1, "c"), "y");
    fs::hard_link(m.t(1, "c"), m.t(1, "e")).unwrap();
    assert!(wait_until(VISIBILITY_TIMEOUT, || exists(&m.m("e"))));
    assert_eq!(ino(&m.m("c")), ino(&m.m("e")));
    assert_ne!(ino(&m.m("a")), ino(&m.m("c")));
}

#[test]
fn rule9_ino_unique_across_tiers() {
    // Two tmpfs tiers: their own inode numbers collide.
    let m = Mount::builder()
        .tmpfs(0, "16m")
        .tmpfs(1, "16m")
        .setup(|t| {
            for i in 0..64 {
                w(&t[0].join(format!("a{i}")), "a");
                w(&t[1].join(format!("b{i}")), "b");
                mkdirs(&t[0].join(format!("da{i}")));
                mkdirs(&t[1].join(format!("db{i}")));
            }
        })
        .mount();
    let mut seen = std::collections::HashMap::new();
    for name in list(&m.mnt()) {
        let i = ino(&m.mnt().join(&name));
        if let Some(prev) = seen.insert(i, name.clone()) {
            panic!("{prev:?} and {name:?} share st_ino {i}");
        }
    }
    assert_eq!(seen.len(), 256);
}

#[test]
fn rule9_readdir_ino_matches_stat() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/a"), "a");
            w(&t[1].join("d/b"), "b");
            w(&t[1].join("d/a"), "shadowed");
            mkdirs(&t[1].join("d/sub"));
        })
        .mount();
    for e in fs::read_dir(m.m("d")).unwrap() {
        let e = e.unwrap();
        let st = lstat(&e.path()).unwrap();
        assert_eq!(e.ino(), st.ino(), "d_ino != st_ino for {:?}", e.file_name());
    }
}

#[test]
fn rule9_ino_stable_across_remount() {
    // NFS clients keep file handles across a server restart (ESTALE otherwise).
    let mut m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("top"), "t");
            w(&t[1].join("d/bottom"), "b");
        })
        .mount();
    write(&m.m("new"), "n");
    fs::rename(m.m("new"), m.m("renamed")).unwrap();
    let before: Vec<u64> = ["top", "d", "d/bottom", "renamed"]
        .iter()
        .map(|p| ino(&m.m(p)))
        .collect();
    m.remount();
    let after: Vec<u64> = ["top", "d", "d/bottom", "renamed"]
        .iter()
        .map(|p| ino(&m.m(p)))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn rule9_nlink_size_blocks_from_winning_copy() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("f"), "small");
            write(&t[1].join("f"), vec![7u8; 300_000]);
            fs::hard_link(t[1].join("f"), t[1].join("g")).unwrap();
        })
        .mount();
    let st = lstat(&m.m("f")).unwrap();
    let t0 = lstat(&m.t(0, "f")).unwrap();
    assert_eq!(st.len(), 5);
    assert_eq!(st.nlink(), 1);
    assert_eq!(st.blocks(), t0.blocks());
    let g = lstat(&m.m("g")).unwrap();
    assert_eq!(g.nlink(), 2);
    assert_eq!(g.len(), 300_000);
    assert_eq!(g.blocks(), lstat(&m.t(1, "g")).unwrap().blocks());
}

// ---------------------------------------------------------------------------
// Rule 10: never EXDEV (tiers on different filesystems)
// ---------------------------------------------------------------------------

fn two_fs() -> Mount {
    Mount::builder()
        .tmpfs(1, "64m")
        .setup(|t| {
            w(&t[1].join("src/f"), "file on tier 1");
            w(&t[1].join("src/sub/inner"), "inner");
            w(&t[0].join("merged/x"), "x");
            w(&t[1].join("merged/y"), "y");
            mkdirs(&t[0].join("dst"));
            w(&t[0].join("top"), "file on tier 0");
            mkdirs(&t[1].join("lowdst"));
        })
        .mount()
}

#[test]
fn rule10_rename_file_into_dir_on_other_tier() {
    let m = two_fs();
    fs::rename(m.m("src/f"), m.m("dst/f")).unwrap();
    assert_eq!(read(&m.m("dst/f")), b"file on tier 1");
    assert_eq!(errno(lstat(&m.m("src/f"))), libc::ENOENT);
    assert_eq!(tiers_holding(&m, "src/f"), Vec::<usize>::new());
    assert_eq!(tiers_holding(&m, "dst/f").len(), 1);
    // and the other way
    fs::rename(m.m("top"), m.m("lowdst/top")).unwrap();
    assert_eq!(read(&m.m("lowdst/top")), b"file on tier 0");
    assert_eq!(tiers_holding(&m, "top"), Vec::<usize>::new());
    assert_eq!(tiers_holding(&m, "lowdst/top").len(), 1);
}

#[test]
fn rule10_rename_dir_into_dir_on_other_tier() {
    let m = two_fs();
    fs::rename(m.m("src/sub"), m.m("dst/sub")).unwrap();
    assert_eq!(read(&m.m("dst/sub/inner")), b"inner");
    assert_eq!(tiers_holding(&m, "src/sub"), Vec::<usize>::new());
}

#[test]
fn rule10_rename_merged_dir_into_dir_on_one_tier() {
    let m = two_fs();
    fs::rename(m.m("merged"), m.m("dst/merged")).unwrap();
    assert_eq!(list(&m.m("dst/merged")), names(&["x", "y"]));
    assert_eq!(read(&m.m("dst/merged/y")), b"y");
    assert_eq!(tiers_holding(&m, "merged"), Vec::<usize>::new());
}

#[test]
fn rule10_link_into_dir_on_other_tier() {
    let m = two_fs();
    fs::hard_link(m.m("src/f"), m.m("dst/l")).unwrap();
    assert_eq!(read(&m.m("dst/l")), b"file on tier 1");
    assert_eq!(ino(&m.m("dst/l")), ino(&m.m("src/f")));
    assert_eq!(lstat(&m.m("src/f")).unwrap().nlink(), 2);
    // a real hard link: a write through one name shows through the other
    write(&m.m("dst/l"), "changed");
    assert_eq!(read(&m.m("src/f")), b"changed");
}

// ---------------------------------------------------------------------------
// Rule 11: a tier that lost its identity is refused
// ---------------------------------------------------------------------------

#[test]
fn rule11_tier_without_marker_is_refused() {
    let mut m = Mount::preset();
    write(&m.m("f"), "x");
    let (st, gone) = m.unmount();
    assert!(
        st.map(|s| s.success()).unwrap_or(false) && gone,
        "unclean unmount"
    );
    assert!(exists(&m.t(1, ".dfs")), "dfs left no .dfs marker in tier 1");
    fs::remove_dir_all(m.t(1, ".dfs")).unwrap();
    let (st, err) = m.start_expect_failure();
    assert!(!st.success());
    assert_no_panic(&err);
    let t1 = m.tier(1).display().to_string();
    assert!(
        err.contains("sss") || err.contains(&t1),
        "message does not name the tier: {err}"
    );
    assert!(!is_mounted(&m.mnt()), "something was mounted");
}

#[test]
fn rule11_unmounted_tier_filesystem_is_refused() {
    let mut m = Mount::builder().tmpfs(1, "16m").mount();
    write(&m.m("f"), "x");
    m.unmount();
    // the tier's filesystem goes away: an empty directory is left
    force_unmount(&m.tier(1));
    assert!(!is_mounted(&m.tier(1)));
    let (st, err) = m.start_expect_failure();
    assert!(!st.success());
    let t1 = m.tier(1).display().to_string();
    assert!(
        err.contains("sss") || err.contains(&t1),
        "message does not name the tier: {err}"
    );
    assert!(!is_mounted(&m.mnt()));
    assert!(
        !exists(&m.t(1, ".dfs")),
        "dfs wrote a marker into the empty directory"
    );
}

// ---------------------------------------------------------------------------
// Rule 12: changes made directly on a tier show through
// ---------------------------------------------------------------------------

#[test]
fn rule12_file_created_on_tier_shows_through() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            mkdirs(&t[1].join("d"));
        })
        .mount();
    assert_eq!(list(&m.m("d")), Vec::<std::ffi::OsString>::new());
    assert_eq!(errno(lstat(&m.m("d/new"))), libc::ENOENT);
    write(&m.t(1, "d/new"), "hello");
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || list(&m.m("d")) == names(&["new"])),
        "new file not listed: {:?}",
        list(&m.m("d"))
    );
    assert!(wait_until(VISIBILITY_TIMEOUT, || try_read(&m.m("d/new"))
        .ok()
        == Some(b"hello".to_vec())));
}

#[test]
fn rule12_file_replaced_on_tier_shows_through() {
    let m = Mount::builder()
        .setup(|t| w(&t[0].join("f"), "version 1"))
        .mount();
    assert_eq!(read(&m.m("f")), b"version 1");
    write(&m.t(0, "f.tmp"), "version 2, longer");
    fs::rename(m.t(0, "f.tmp"), m.t(0, "f")).unwrap();
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || try_read(&m.m("f")).ok()
            == Some(b"version 2, longer".to_vec())),
        "replacement not visible: {:?}",
        try_read(&m.m("f")).map(|v| String::from_utf8_lossy(&v).into_owned())
    );
    assert!(wait_until(VISIBILITY_TIMEOUT, || lstat(&m.m("f"))
        .map(|s| s.len())
        .ok()
        == Some(17)));
}

#[test]
fn rule12_file_modified_in_place_on_tier_shows_through() {
    let m = Mount::builder()
        .setup(|t| w(&t[1].join("f"), "short"))
        .mount();
    assert_eq!(read(&m.m("f")), b"short");
    write(&m.t(1, "f"), "a much longer content");
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || try_read(&m.m("f")).ok()
            == Some(b"a much longer content".to_vec())),
        "in-place change not visible"
    );
}

#[test]
fn rule12_file_deleted_on_tier_disappears() {
    let m = Mount::builder().setup(|t| w(&t[0].join("f"), "x")).mount();
    assert_eq!(read(&m.m("f")), b"x");
    fs::remove_file(m.t(0, "f")).unwrap();
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || lstat(&m.m("f")).is_err()
            && !list(&m.mnt()).iter().any(|n| n == "f")),
        "deleted file still visible"
    );
    assert_eq!(errno(lstat(&m.m("f"))), libc::ENOENT);
}

#[test]
fn rule12_deleting_top_copy_on_tier_reveals_lower_copy() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("f"), "top");
            w(&t[1].join("f"), "bottom");
        })
        .mount();
    assert_eq!(read(&m.m("f")), b"top");
    fs::remove_file(m.t(0, "f")).unwrap();
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || try_read(&m.m("f")).ok()
            == Some(b"bottom".to_vec())),
        "lower copy not revealed: {:?}",
        try_read(&m.m("f"))
    );
}

#[test]
fn rule12_new_top_copy_on_tier_shadows_lower() {
    let m = Mount::builder()
        .setup(|t| w(&t[1].join("f"), "bottom"))
        .mount();
    assert_eq!(read(&m.m("f")), b"bottom");
    write(&m.t(0, "f"), "new top!");
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || try_read(&m.m("f")).ok()
            == Some(b"new top!".to_vec())),
        "new top copy not visible: {:?}",
        try_read(&m.m("f"))
    );
}

#[test]
fn rule12_directory_created_on_tier_shows_through() {
    let m = Mount::preset();
    assert_eq!(list(&m.mnt()), Vec::<std::ffi::OsString>::new());
    w(&m.t(1, "newdir/inner"), "i");
    assert!(wait_until(VISIBILITY_TIMEOUT, || try_read(
        &m.m("newdir/inner")
    )
    .ok()
        == Some(b"i".to_vec())));
    assert!(wait_until(VISIBILITY_TIMEOUT, || list(&m.mnt()) == names(&["newdir"])));
}

// ---------------------------------------------------------------------------
// Rule 13: dfs's own state never shows through
// ---------------------------------------------------------------------------

#[test]
fn rule13_dfs_dir_exists_on_tiers_and_is_hidden() {
    let m = Mount::preset();
    assert!(
        lstat(&m.t(0, ".dfs")).unwrap().is_dir(),
        "no .dfs on tier 0"
    );
    assert!(
        lstat(&m.t(1, ".dfs")).unwrap().is_dir(),
        "no .dfs on tier 1"
    );
    assert!(!list(&m.mnt()).iter().any(|n| n == ".dfs"), ".dfs listed");
    assert_eq!(errno(lstat(&m.m(".dfs"))), libc::ENOENT);
    assert_eq!(errno(fs::File::open(m.m(".dfs"))), libc::ENOENT);
    assert_eq!(errno(fs::read_dir(m.m(".dfs"))), libc::ENOENT);
    // also hidden from readdir with getdents-level offsets (seekdir)
    let c = cstr(m.mnt());
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr());
            assert_ne!(name.to_bytes(), b".dfs");
        }
        libc::closedir(d);
    }
}

#[test]
fn rule13_dfs_name_cannot_be_created_at_root() {
    let m = Mount::preset();
    let before0 = list(&m.t(0, ".dfs"));
    let before1 = list(&m.t(1, ".dfs"));
    write(&m.m("x"), "x");
    fs::create_dir(m.m("dir")).unwrap();

    assert!(fs::create_dir(m.m(".dfs")).is_err(), "mkdir .dfs succeeded");
    assert!(
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(m.m(".dfs"))
            .is_err(),
        "create .dfs succeeded"
    );
    assert!(
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.m(".dfs"))
            .is_err(),
        "O_EXCL create .dfs succeeded"
    );
    assert!(
        std::os::unix::fs::symlink("x", m.m(".dfs")).is_err(),
        "symlink .dfs succeeded"
    );
    assert!(
        mknod(&m.m(".dfs"), libc::S_IFIFO | 0o644, 0).is_err(),
        "mknod .dfs succeeded"
    );
    assert!(
        fs::hard_link(m.m("x"), m.m(".dfs")).is_err(),
        "link to .dfs succeeded"
    );
    assert!(
        fs::rename(m.m("x"), m.m(".dfs")).is_err(),
        "rename file to .dfs succeeded"
    );
    assert!(
        fs::rename(m.m("dir"), m.m(".dfs")).is_err(),
        "rename dir to .dfs succeeded"
    );
    assert_eq!(errno(fs::remove_dir(m.m(".dfs"))), libc::ENOENT);
    assert_eq!(errno(fs::remove_file(m.m(".dfs"))), libc::ENOENT);
    assert_eq!(errno(fs::rename(m.m(".dfs"), m.m("stolen"))), libc::ENOENT);

    assert_eq!(read(&m.m("x")), b"x");
    assert!(lstat(&m.m("dir")).unwrap().is_dir());
    assert!(!list(&m.mnt()).iter().any(|n| n == ".dfs"));
    assert!(lstat(&m.t(0, ".dfs")).unwrap().is_dir());
    assert!(lstat(&m.t(1, ".dfs")).unwrap().is_dir());
    assert_eq!(list(&m.t(0, ".dfs")), before0, "tier 0 .dfs changed");
    assert_eq!(list(&m.t(1, ".dfs")), before1, "tier 1 .dfs changed");
    assert!(!exists(&m.t(0, "stolen")));
}

#[test]
fn rule13_rmdir_root_contents_leave_markers() {
    // Removing everything visible through the mount keeps dfs's state.
    let m = Mount::preset();
    fs::create_dir(m.m("a")).unwrap();
    for e in fs::read_dir(m.mnt()).unwrap() {
        fs::remove_dir(e.unwrap().path()).unwrap();
    }
    assert!(exists(&m.t(0, ".dfs")));
    assert!(exists(&m.t(1, ".dfs")));
    assert_eq!(list(&m.mnt()), Vec::<std::ffi::OsString>::new());
}

// ---------------------------------------------------------------------------
// more cases across the rules
// ---------------------------------------------------------------------------

#[test]
fn rule4_rename_lower_dir_over_empty_dir_on_upper_tier() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[1].join("d/x"), "x");
            mkdirs(&t[0].join("e"));
        })
        .mount();
    fs::rename(m.m("d"), m.m("e")).unwrap();
    assert_eq!(list(&m.m("e")), names(&["x"]));
    assert_eq!(read(&m.m("e/x")), b"x");
    assert_eq!(tiers_holding(&m, "d"), Vec::<usize>::new());
    assert_eq!(
        tiers_holding(&m, "e"),
        vec![1],
        "stale empty copy of e survived on tier 0"
    );
}

#[test]
fn rule4_rename_keeps_open_handles_and_child_inodes() {
    let m = Mount::builder()
        .tmpfs(1, "32m")
        .setup(|t| {
            w(&t[0].join("d/x"), "x0");
            w(&t[1].join("d/y"), "y1");
            mkdirs(&t[0].join("dst"));
        })
        .mount();
    let ix = ino(&m.m("d/x"));
    let iy = ino(&m.m("d/y"));
    let mut fy = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.m("d/y"))
        .unwrap();
    fs::rename(m.m("d"), m.m("e")).unwrap();
    assert_eq!(ino(&m.m("e/x")), ix);
    assert_eq!(ino(&m.m("e/y")), iy);
    // a write through a handle opened before the rename lands in the renamed file
    fy.seek(SeekFrom::End(0)).unwrap();
    fy.write_all(b"+w").unwrap();
    drop(fy);
    assert_eq!(read(&m.m("e/y")), b"y1+w");
    // the same across tiers: tier 1's file into a directory only on tier 0
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.m("e/y"))
        .unwrap();
    fs::rename(m.m("e/y"), m.m("dst/y")).unwrap();
    f.write_all(b"+after").unwrap();
    drop(f);
    assert_eq!(
        read(&m.m("dst/y")),
        b"y1+w+after",
        "write after a cross-tier rename got lost"
    );
    assert_eq!(tiers_holding(&m, "dst/y").len(), 1);
    assert_eq!(ino(&m.m("dst/y")), iy);
}

#[test]
fn file_on_upper_tier_shadows_directory_on_lower_tier() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("n"), "file wins");
            w(&t[1].join("n/child"), "hidden");
            mkdirs(&t[0].join("dir"));
            w(&t[1].join("dir"), "shadowed file");
        })
        .mount();
    let st = lstat(&m.m("n")).unwrap();
    assert!(st.is_file());
    assert_eq!(read(&m.m("n")), b"file wins");
    assert_eq!(errno(fs::read_dir(m.m("n"))), libc::ENOTDIR);
    assert_eq!(errno(lstat(&m.m("n/child"))), libc::ENOTDIR);
    assert!(lstat(&m.m("dir")).unwrap().is_dir());
    assert_eq!(list(&m.m("dir")), Vec::<std::ffi::OsString>::new());
    let root: Vec<_> = fs::read_dir(m.mnt()).unwrap().map(|e| e.unwrap()).collect();
    let n = root
        .iter()
        .filter(|e| e.file_name() == "n")
        .collect::<Vec<_>>();
    assert_eq!(n.len(), 1, "n listed {} times", n.len());
    assert!(
        n[0].file_type().unwrap().is_file(),
        "listing gives n the type of the shadowed copy"
    );
    let d = root.iter().find(|e| e.file_name() == "dir").unwrap();
    assert!(d.file_type().unwrap().is_dir());
    // unlinking the file removes every copy of the name, the lower directory included
    // or, if dfs keeps it, the directory must not resurface as the name's new winner
    // with content the user never saw: either way, lookup afterwards is ENOENT.
    fs::remove_file(m.m("n")).unwrap();
    assert_eq!(
        errno(lstat(&m.m("n"))),
        libc::ENOENT,
        "the shadowed directory resurfaced"
    );
}

#[test]
fn rule6_exclusive_create_sees_dangling_symlink_on_lower_tier() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            mkdirs(&t[1].join("d"));
            std::os::unix::fs::symlink("/nonexistent/target", t[1].join("d/dangling")).unwrap();
        })
        .mount();
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.m("d/dangling"));
    assert_eq!(errno(r), libc::EEXIST);
    assert_eq!(errno(fs::create_dir(m.m("d/dangling"))), libc::EEXIST);
    assert!(!exists(&m.t(0, "d/dangling")));
    assert!(!exists(Path::new("/nonexistent/target")));
}

#[test]
fn rule7_utime_now_on_dir_applies_to_every_copy() {
    let m = dir_on_both();
    for i in 0..2 {
        utimens(&m.t(i, "d"), ts(1_000, 0), ts(1_000, 0)).unwrap();
    }
    let c = cstr(m.m("d"));
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) }).unwrap();
    for i in 0..2 {
        let md = lstat(&m.t(i, "d")).unwrap();
        assert!(
            md.mtime() > 1_000 && md.atime() > 1_000,
            "tier {i} copy not touched"
        );
    }
}

#[test]
fn rule7_non_utf8_xattr_names_on_dir() {
    let m = dir_on_both();
    let c = cstr(m.m("d"));
    let name = std::ffi::CString::new(b"user.caf\xe9".to_vec()).unwrap();
    cvt(unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) }).unwrap();
    for i in 0..2 {
        let t = cstr(m.t(i, "d"));
        let mut buf = [0u8; 8];
        let n = unsafe { libc::getxattr(t.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 1, "tier {i}");
    }
}

#[test]
fn rule10_rename_over_existing_file_on_other_filesystem() {
    let m = Mount::builder()
        .tmpfs(1, "32m")
        .setup(|t| {
            w(&t[1].join("low/a"), "A");
            w(&t[0].join("high/b"), "B");
        })
        .mount();
    let ia = ino(&m.m("low/a"));
    fs::rename(m.m("low/a"), m.m("high/b")).unwrap();
    assert_eq!(read(&m.m("high/b")), b"A");
    assert_eq!(ino(&m.m("high/b")), ia);
    assert_eq!(tiers_holding(&m, "high/b").len(), 1);
    assert_eq!(tiers_holding(&m, "low/a"), Vec::<usize>::new());
    // RENAME_NOREPLACE across filesystems
    w(&m.t(1, "low/c"), "C");
    assert!(wait_until(VISIBILITY_TIMEOUT, || exists(&m.m("low/c"))));
    assert_eq!(
        errno(renameat2(
            &m.m("low/c"),
            &m.m("high/b"),
            libc::RENAME_NOREPLACE
        )),
        libc::EEXIST
    );
    renameat2(&m.m("low/c"), &m.m("high/c"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(read(&m.m("high/c")), b"C");
}

#[test]
fn rule11_tier_zero_without_marker_is_refused() {
    let mut m = Mount::preset();
    m.unmount();
    fs::remove_dir_all(m.t(0, ".dfs")).unwrap();
    let (st, err) = m.start_expect_failure();
    assert!(!st.success());
    assert!(
        err.contains("pss") || err.contains(m.tier(0).to_str().unwrap()),
        "message does not name the tier: {err}"
    );
    assert!(!is_mounted(&m.mnt()));
}

#[test]
fn rule12_directory_removed_on_tier_disappears() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/x"), "x");
            w(&t[1].join("e/y"), "y");
        })
        .mount();
    assert_eq!(list(&m.m("d")), names(&["x"]));
    assert_eq!(list(&m.m("e")), names(&["y"]));
    fs::remove_dir_all(m.t(0, "d")).unwrap();
    fs::remove_file(m.t(1, "e/y")).unwrap();
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || lstat(&m.m("d")).is_err()),
        "removed directory still visible"
    );
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || list(&m.m("e")).is_empty()),
        "removed file still listed"
    );
    // (a path through the removed directory may stay cached for the entry timeout)
    assert!(
        wait_until(VISIBILITY_TIMEOUT, || lstat(&m.m("d/x")).is_err()),
        "file inside the removed directory still visible"
    );
    assert_eq!(errno(lstat(&m.m("d/x"))), libc::ENOENT);
}

#[test]
fn rule12_open_through_mount_after_tier_replacement_reads_new_file() {
    // the winning copy changes tier behind dfs's back while the kernel still
    // holds the node
    let m = Mount::builder()
        .setup(|t| w(&t[1].join("f"), "old lower"))
        .mount();
    assert_eq!(read(&m.m("f")), b"old lower");
    fs::remove_file(m.t(1, "f")).unwrap();
    write(&m.t(0, "f"), "new upper");
    assert!(wait_until(VISIBILITY_TIMEOUT, || try_read(&m.m("f")).ok()
        == Some(b"new upper".to_vec())));
    // writes now go to the new winning copy
    write(&m.m("f"), "through mount");
    assert_eq!(read(&m.t(0, "f")), b"through mount");
    assert!(!exists(&m.t(1, "f")));
}

#[test]
fn rule13_dfs_name_is_ordinary_below_the_root() {
    let m = Mount::preset();
    fs::create_dir(m.m("sub")).unwrap();
    fs::create_dir(m.m("sub/.dfs")).expect("mkdir sub/.dfs (only the root's .dfs is reserved)");
    write(&m.m("sub/.dfs/f"), "x");
    assert!(list(&m.m("sub")).iter().any(|n| n == ".dfs"));
    assert_eq!(read(&m.t(0, "sub/.dfs/f")), b"x");
}

#[test]
fn rule8_statfs_adds_inode_counts_of_distinct_filesystems() {
    let m = Mount::builder().tmpfs(1, "64m").mount();
    let a = statfs(&m.tier(0));
    let b = statfs(&m.tier(1));
    let u = statfs(&m.mnt());
    assert_eq!(u.f_files, a.f_files + b.f_files, "f_files");
    let diff = (u.f_ffree as i128 - (a.f_ffree + b.f_ffree) as i128).abs();
    assert!(
        diff < 1000,
        "f_ffree {} vs {}",
        u.f_ffree,
        a.f_ffree + b.f_ffree
    );
}

#[test]
fn max_length_names_survive_rename_and_link_across_tiers() {
    // dfs must not need longer temporary names on the tiers
    let long_dir = "D".repeat(255);
    let long_a = "a".repeat(255);
    let long_b = "b".repeat(255);
    let (ld, la, lb) = (long_dir.clone(), long_a.clone(), long_b.clone());
    let m = Mount::builder()
        .tmpfs(1, "32m")
        .setup(move |t| {
            mkdirs(&t[1].join(&ld));
            w(&t[0].join(&la), "A");
            w(&t[0].join(&lb), "B top");
            w(&t[1].join(&lb), "B bottom");
            w(&t[1].join(format!("{ld}/{lb}")), "in dir");
        })
        .mount();
    fs::rename(m.m(&long_a), m.m(&format!("{long_dir}/{long_a}"))).unwrap();
    assert_eq!(read(&m.m(&format!("{long_dir}/{long_a}"))), b"A");
    fs::hard_link(m.m(&format!("{long_dir}/{long_a}")), m.m(&long_a)).unwrap();
    assert_eq!(read(&m.m(&long_a)), b"A");
    // over a name on both tiers
    fs::rename(m.m(&long_a), m.m(&long_b)).unwrap();
    assert_eq!(read(&m.m(&long_b)), b"A");
    assert_eq!(tiers_holding(&m, &long_b).len(), 1);
    // over a name in the lower-only directory, from tier 0
    w(&m.m("x"), "X");
    fs::rename(m.m("x"), m.m(&format!("{long_dir}/{long_b}"))).unwrap();
    assert_eq!(read(&m.m(&format!("{long_dir}/{long_b}"))), b"X");
    assert_eq!(tiers_holding(&m, &format!("{long_dir}/{long_b}")).len(), 1);
    fs::remove_file(m.m(&long_b)).unwrap();
    assert!(tiers_holding(&m, &long_b).is_empty());
}

#[test]
fn odd_but_valid_names() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[1].join("low"));
        })
        .mount();
    let odd = [
        "with space",
        " leading",
        "trailing ",
        "new\nline",
        "back\\slash",
        "star*",
        "q?",
        "-dash",
        "...",
        "..x",
        ".hidden",
        "tab\tname",
        "\u{1F600}",
        "e\u{301}",
        "\u{e9}",
        "%s%n",
        "a:b",
        "#",
    ];
    for n in odd {
        write(&m.m(n), n);
        write(&m.m(&format!("low/{n}")), n);
    }
    let root = list(&m.mnt());
    let low = list(&m.m("low"));
    for n in odd {
        assert!(
            root.iter().any(|x| x == n),
            "{n:?} missing from root listing"
        );
        assert!(low.iter().any(|x| x == n), "{n:?} missing from low listing");
        assert_eq!(read(&m.m(n)), n.as_bytes());
        assert_eq!(read(&m.t(0, n)), n.as_bytes());
        assert_eq!(read(&m.t(1, &format!("low/{n}"))), n.as_bytes());
    }
    // e + combining accent and é are different names
    assert_ne!(read(&m.m("e\u{301}")), read(&m.m("\u{e9}")));
}

#[test]
fn listing_gives_attributes_of_the_winning_copy() {
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("d/f"), "top");
            chmod(&t[0].join("d/f"), 0o600);
            mkdirs(&t[1].join("d"));
            write(&t[1].join("d/f"), vec![1u8; 100_000]);
            chmod(&t[1].join("d/f"), 0o644);
            fs::hard_link(t[1].join("d/f"), t[1].join("d/f-link")).unwrap();
            std::os::unix::fs::symlink("target", t[1].join("d/sym")).unwrap();
            mknod(&t[1].join("d/fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
            mkdirs(&t[0].join("d/sub"));
            w(&t[1].join("d/sub"), "shadowed file under a directory");
        })
        .mount();
    // first contact with these names is the listing (readdirplus fills the caches)
    let entries: Vec<_> = fs::read_dir(m.m("d"))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let ty = |n: &str| {
        entries
            .iter()
            .find(|e| e.file_name() == n)
            .unwrap()
            .file_type()
            .unwrap()
    };
    assert!(ty("f").is_file());
    assert!(ty("sym").is_symlink());
    assert!(
        ty("sub").is_dir(),
        "d_type of sub comes from the shadowed file"
    );
    assert_eq!(entries.iter().filter(|e| e.file_name() == "sub").count(), 1);
    use std::os::unix::fs::FileTypeExt;
    assert!(ty("fifo").is_fifo());
    let st = lstat(&m.m("d/f")).unwrap();
    assert_eq!(st.len(), 3, "size of the shadowed copy");
    assert_eq!(st.mode() & 0o7777, 0o600);
    assert_eq!(st.nlink(), 1);
    assert_eq!(lstat(&m.m("d/f-link")).unwrap().nlink(), 2);
    assert!(lstat(&m.m("d/sub")).unwrap().is_dir());
}

/// chattr +i on a tier path; undone on drop so the temp dir can be removed.
struct Immutable(std::path::PathBuf);
impl Immutable {
    fn new(p: std::path::PathBuf) -> Immutable {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chattr +i {}", p.display());
        Immutable(p)
    }
}
impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn rule2_unlink_removes_the_last_tier_first() {
    // If removing some copy fails, the name must still show its latest
    // content: the shadowed copy on tier 1 must go before the winning one.
    let m = Mount::builder()
        .setup(|t| {
            w(&t[0].join("f"), "latest");
            w(&t[1].join("f"), "old shadowed");
        })
        .mount();
    let _g = Immutable::new(m.t(1, "f"));
    let r = fs::remove_file(m.m("f"));
    assert!(
        r.is_err(),
        "unlink succeeded although tier 1's copy is immutable"
    );
    assert_eq!(
        try_read(&m.m("f")).ok(),
        Some(b"latest".to_vec()),
        "the old shadowed copy resurfaced: the winning copy was removed first"
    );
    assert!(exists(&m.t(0, "f")));
}

#[test]
fn rule3_rmdir_removes_the_last_tier_first() {
    let m = Mount::builder()
        .setup(|t| {
            mkdirs(&t[0].join("d"));
            mkdirs(&t[1].join("d"));
            chmod(&t[0].join("d"), 0o700);
            chmod(&t[1].join("d"), 0o755);
        })
        .mount();
    let _g = Immutable::new(m.t(1, "d"));
    assert!(
        fs::remove_dir(m.m("d")).is_err(),
        "rmdir succeeded although tier 1's copy is immutable"
    );
    assert!(exists(&m.t(0, "d")), "tier 0's copy was removed first");
    assert_eq!(mode(&m.m("d")), 0o700);
}
