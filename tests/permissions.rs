//! Credentials and containment: dfs mounted by root with allow_other and
//! default_permissions; other users act through forked children that switch
//! to their uid/gid; symlinks planted in tiers must not lead dfs outside.

mod common;

use common::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const USER: u32 = NOBODY;
const GROUP: u32 = NOGROUP;

/// open(O_CREAT|O_EXCL|O_WRONLY) + write + close; 0 or errno.
fn child_create(c: &CString) -> i32 {
    unsafe {
        let fd = libc::open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o644,
        );
        if fd < 0 {
            return *libc::__errno_location();
        }
        if libc::write(fd, b"by user".as_ptr().cast(), 7) != 7 {
            return 99;
        }
        libc::close(fd);
        0
    }
}

fn child_open(c: &CString, flags: i32) -> i32 {
    unsafe {
        let fd = libc::open(c.as_ptr(), flags);
        if fd < 0 {
            return *libc::__errno_location();
        }
        libc::close(fd);
        0
    }
}

fn pub_dir(m: &Mount, rel: &str, mode: u32) {
    fs::create_dir(m.m(rel)).unwrap();
    chmod(&m.m(rel), mode);
}

#[test]
fn mount_allows_other_users() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    chmod(&m.m("f"), 0o644);
    let c = cstr(m.m("f"));
    assert_eq!(
        as_user(USER, GROUP, || child_open(&c, libc::O_RDONLY)),
        0,
        "allow_other not in effect"
    );
    let mi = fuse_mount_at(&m.mnt()).unwrap();
    assert!(
        mi.super_options.split(',').any(|o| o == "allow_other"),
        "{mi:?}"
    );
    assert!(
        mi.super_options
            .split(',')
            .any(|o| o == "default_permissions"),
        "{mi:?}"
    );
}

#[test]
fn files_created_by_a_user_are_owned_by_that_user() {
    let m = Mount::preset();
    pub_dir(&m, "pub", 0o777);
    let f = cstr(m.m("pub/file"));
    let d = cstr(m.m("pub/dir"));
    let l = cstr(m.m("pub/link"));
    let p = cstr(m.m("pub/fifo"));
    let target = CString::new("file").unwrap();
    let r = as_user(USER, GROUP, || unsafe {
        let e = child_create(&f);
        if e != 0 {
            return e;
        }
        if libc::mkdir(d.as_ptr(), 0o755) != 0 {
            return 50 + (*libc::__errno_location() & 0x3f);
        }
        if libc::symlink(target.as_ptr(), l.as_ptr()) != 0 {
            return 120 + (*libc::__errno_location() & 0x3f);
        }
        if libc::mknod(p.as_ptr(), libc::S_IFIFO | 0o600, 0) != 0 {
            return 190 + (*libc::__errno_location() & 0x3f);
        }
        0
    });
    assert_eq!(
        r, 0,
        "creation as user failed (0-49 create errno, 50+ mkdir, 120+ symlink, 190+ mknod)"
    );
    for name in ["pub/file", "pub/dir", "pub/link", "pub/fifo"] {
        let t = lstat(&m.t(0, name)).unwrap();
        assert_eq!((t.uid(), t.gid()), (USER, GROUP), "{name} on tier 0");
        let s = lstat(&m.m(name)).unwrap();
        assert_eq!(
            (s.uid(), s.gid()),
            (USER, GROUP),
            "{name} through the mount"
        );
    }
    assert_eq!(read(&m.t(0, "pub/file")), b"by user");
}

#[test]
fn files_created_by_a_user_on_the_lower_tier_are_owned_by_that_user() {
    let m = Mount::builder()
        .setup(|t| {
            fs::create_dir(t[1].join("lowpub")).unwrap();
            chmod(&t[1].join("lowpub"), 0o777);
        })
        .mount();
    let f = cstr(m.m("lowpub/file"));
    assert_eq!(as_user(USER, GROUP, || child_create(&f)), 0);
    let t = lstat(&m.t(1, "lowpub/file")).unwrap();
    assert_eq!((t.uid(), t.gid()), (USER, GROUP));
    assert!(!exists(&m.t(0, "lowpub")));
}

#[test]
fn setgid_directory_group_is_inherited() {
    let m = Mount::preset();
    pub_dir(&m, "sg", 0o777);
    lchown(&m.m("sg"), 0, 1234);
    chmod(&m.m("sg"), 0o2777);
    let f = cstr(m.m("sg/file"));
    let d = cstr(m.m("sg/sub"));
    let r = as_user(USER, GROUP, || unsafe {
        let e = child_create(&f);
        if e != 0 {
            return e;
        }
        if libc::mkdir(d.as_ptr(), 0o755) != 0 {
            100
        } else {
            0
        }
    });
    assert_eq!(r, 0);
    let t = lstat(&m.t(0, "sg/file")).unwrap();
    assert_eq!((t.uid(), t.gid()), (USER, 1234));
    let t = lstat(&m.t(0, "sg/sub")).unwrap();
    assert_eq!((t.uid(), t.gid()), (USER, 1234));
    assert_ne!(
        t.mode() & libc::S_ISGID,
        0,
        "new subdirectory lost the setgid bit"
    );
}

#[test]
fn supplementary_groups_apply_on_the_tier() {
    // A directory writable only by group 1234: the user is in it through a
    // supplementary group, so dfs must create with the caller's groups.
    let m = Mount::preset();
    pub_dir(&m, "grp", 0o770);
    lchown(&m.m("grp"), 0, 1234);
    let f = cstr(m.m("grp/file"));
    assert_eq!(as_user_groups(USER, GROUP, &[1234], || child_create(&f)), 0);
    let t = lstat(&m.t(0, "grp/file")).unwrap();
    assert_eq!((t.uid(), t.gid()), (USER, GROUP));
    // without the group: EACCES
    let g = cstr(m.m("grp/other"));
    assert_eq!(as_user(USER, GROUP, || child_create(&g)), libc::EACCES);
    assert!(!exists(&m.t(0, "grp/other")));
}

#[test]
fn user_cannot_read_a_0600_root_file() {
    let m = Mount::builder()
        .setup(|t| {
            write(&t[1].join("lowsecret"), "secret");
            chmod(&t[1].join("lowsecret"), 0o600);
        })
        .mount();
    write(&m.m("secret"), "secret");
    chmod(&m.m("secret"), 0o600);
    for name in ["secret", "lowsecret"] {
        let c = cstr(m.m(name));
        assert_eq!(
            as_user(USER, GROUP, || child_open(&c, libc::O_RDONLY)),
            libc::EACCES,
            "{name}"
        );
        assert_eq!(
            as_user(USER, GROUP, || child_open(&c, libc::O_WRONLY)),
            libc::EACCES,
            "{name}"
        );
    }
    // group read lets a member in
    lchown(&m.m("secret"), 0, 1234);
    chmod(&m.m("secret"), 0o640);
    let c = cstr(m.m("secret"));
    assert_eq!(as_user(USER, 1234, || child_open(&c, libc::O_RDONLY)), 0);
    assert_eq!(
        as_user(USER, GROUP, || child_open(&c, libc::O_RDONLY)),
        libc::EACCES
    );
}

#[test]
fn user_cannot_change_what_it_does_not_own() {
    let m = Mount::preset();
    write(&m.m("rootfile"), "root");
    chmod(&m.m("rootfile"), 0o644);
    let c = cstr(m.m("rootfile"));
    let xname = CString::new("user.evil").unwrap();
    // errnos one by one
    let e = as_user(USER, GROUP, || {
        sys_errno(unsafe { libc::truncate(c.as_ptr(), 0) } as isize)
    });
    assert_eq!(e, libc::EACCES, "truncate");
    let e = as_user(USER, GROUP, || {
        sys_errno(unsafe { libc::chmod(c.as_ptr(), 0o666) } as isize)
    });
    assert_eq!(e, libc::EPERM, "chmod");
    let e = as_user(USER, GROUP, || {
        sys_errno(unsafe { libc::chown(c.as_ptr(), USER, GROUP) } as isize)
    });
    assert_eq!(e, libc::EPERM, "chown");
    let e = as_user(USER, GROUP, || {
        let t = [ts(1, 0), ts(1, 0)];
        sys_errno(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) } as isize)
    });
    assert_eq!(e, libc::EPERM, "utimensat explicit");
    let e = as_user(USER, GROUP, || {
        sys_errno(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) } as isize,
        )
    });
    assert_eq!(e, libc::EACCES, "utimensat now");
    let e = as_user(USER, GROUP, || {
        sys_errno(
            unsafe { libc::setxattr(c.as_ptr(), xname.as_ptr(), b"x".as_ptr().cast(), 1, 0) }
                as isize,
        )
    });
    assert_eq!(e, libc::EACCES, "setxattr");
    let t = lstat(&m.t(0, "rootfile")).unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t.mode() & 0o7777, 0o644);
    assert_eq!(t.uid(), 0);
    assert_eq!(
        errno(getxattr(&m.t(0, "rootfile"), "user.evil")),
        libc::ENODATA
    );
}

#[test]
fn user_cannot_create_or_remove_in_a_root_directory() {
    let m = Mount::preset();
    fs::create_dir(m.m("rootdir")).unwrap();
    chmod(&m.m("rootdir"), 0o755);
    write(&m.m("rootdir/f"), "f");
    pub_dir(&m, "pub", 0o777);
    let new = cstr(m.m("rootdir/new"));
    let f = cstr(m.m("rootdir/f"));
    let moved = cstr(m.m("pub/moved"));
    assert_eq!(as_user(USER, GROUP, || child_create(&new)), libc::EACCES);
    assert_eq!(
        as_user(USER, GROUP, || sys_errno(
            unsafe { libc::mkdir(new.as_ptr(), 0o755) } as isize
        )),
        libc::EACCES
    );
    assert_eq!(
        as_user(USER, GROUP, || sys_errno(
            unsafe { libc::unlink(f.as_ptr()) } as isize
        )),
        libc::EACCES
    );
    assert_eq!(
        as_user(USER, GROUP, || sys_errno(
            unsafe { libc::rename(f.as_ptr(), moved.as_ptr()) } as isize
        )),
        libc::EACCES
    );
    assert!(!exists(&m.t(0, "rootdir/new")));
    assert_eq!(read(&m.t(0, "rootdir/f")), b"f");
}

#[test]
fn sticky_directory_protects_other_users_files() {
    let m = Mount::preset();
    pub_dir(&m, "tmp", 0o1777);
    write(&m.m("tmp/rootfile"), "r");
    chmod(&m.m("tmp/rootfile"), 0o666);
    let rf = cstr(m.m("tmp/rootfile"));
    let mine = cstr(m.m("tmp/mine"));
    assert_eq!(
        as_user(USER, GROUP, || sys_errno(
            unsafe { libc::unlink(rf.as_ptr()) } as isize
        )),
        libc::EPERM
    );
    assert!(exists(&m.t(0, "tmp/rootfile")));
    assert_eq!(as_user(USER, GROUP, || child_create(&mine)), 0);
    assert_eq!(
        as_user(USER, GROUP, || sys_errno(
            unsafe { libc::unlink(mine.as_ptr()) } as isize
        )),
        0
    );
    assert!(!exists(&m.t(0, "tmp/mine")));
}

// ---------------------------------------------------------------------------
// containment: symlinks planted in the tiers
// ---------------------------------------------------------------------------

/// A directory outside every tier, holding `secret`, and a tier layout where
/// tier 1's copy of a merged directory is a symlink to it.
fn escape_setup() -> (Mount, std::path::PathBuf) {
    let m = Mount::builder()
        .setup(|t| {
            let outside = t[0].parent().unwrap().join("outside");
            fs::create_dir(&outside).unwrap();
            chmod(&outside, 0o755);
            write(&outside.join("secret"), "outside secret");
            utimens(&outside, ts(1_000_000_000, 0), ts(1_000_000_000, 0)).unwrap();
            // d: a real directory on tier 0, a symlink to outside on tier 1
            fs::create_dir(t[0].join("d")).unwrap();
            std::os::unix::fs::symlink(&outside, t[1].join("d")).unwrap();
            // a/b: real on tier 0; tier 1's a is a symlink to outside
            fs::create_dir_all(t[0].join("a/b")).unwrap();
            std::os::unix::fs::symlink(&outside, t[1].join("a")).unwrap();
            // rel: same with a relative symlink climbing out of the tier
            fs::create_dir(t[0].join("rel")).unwrap();
            std::os::unix::fs::symlink("../outside", t[1].join("rel")).unwrap();
            // a file on tier 1 to move around
            write(&t[1].join("f"), "tier 1 file");
            // f2: a file on tier 0, a symlink to the secret on tier 1
            write(&t[0].join("f2"), "top");
            std::os::unix::fs::symlink(outside.join("secret"), t[1].join("f2")).unwrap();
        })
        .mount();
    let outside = m.root().join("outside");
    (m, outside)
}

fn assert_outside_untouched(outside: &Path) {
    let names = list(outside);
    assert_eq!(
        names,
        common::names(&["secret"]),
        "something was created in the outside directory"
    );
    assert_eq!(read(&outside.join("secret")), b"outside secret");
    let st = lstat(outside).unwrap();
    assert_eq!(
        st.mode() & 0o7777,
        0o755,
        "outside directory's mode changed"
    );
    assert_eq!(st.uid(), 0, "outside directory's owner changed");
    assert_eq!(
        st.mtime(),
        1_000_000_000,
        "outside directory's times changed"
    );
    assert_eq!(
        errno(getxattr(outside, "user.tag")),
        libc::ENODATA,
        "xattr set on outside directory"
    );
}

#[test]
fn symlinked_lower_copy_of_a_directory_is_not_followed_for_lookup_and_listing() {
    let (m, outside) = escape_setup();
    assert!(lstat(&m.m("d")).unwrap().is_dir());
    for d in ["d", "rel", "a"] {
        assert!(
            !list(&m.m(d)).iter().any(|n| n == "secret"),
            "{d} lists the outside directory"
        );
        assert_eq!(
            errno(lstat(&m.m(&format!("{d}/secret")))),
            libc::ENOENT,
            "{d}/secret"
        );
        assert_eq!(
            errno(fs::File::open(m.m(&format!("{d}/secret")))),
            libc::ENOENT
        );
        assert_eq!(
            errno(fs::remove_file(m.m(&format!("{d}/secret")))),
            libc::ENOENT
        );
    }
    assert_outside_untouched(&outside);
}

#[test]
fn symlinked_lower_copy_is_not_followed_by_directory_setattr() {
    let (m, outside) = escape_setup();
    chmod(&m.m("d"), 0o700);
    lchown(&m.m("d"), 1234, 1234);
    utimens(&m.m("d"), ts(5, 0), ts(5, 0)).unwrap();
    let _ = setxattr(&m.m("d"), "user.tag", b"x", 0);
    chmod(&m.m("rel"), 0o700);
    utimens(&m.m("rel"), ts(5, 0), ts(5, 0)).unwrap();
    assert_eq!(mode(&m.t(0, "d")), 0o700);
    assert_outside_untouched(&outside);
}

#[test]
fn create_and_remove_do_not_escape_through_lower_symlinks() {
    let (m, outside) = escape_setup();
    write(&m.m("d/x"), "x");
    fs::create_dir(m.m("rel/y")).unwrap();
    assert!(exists(&m.t(0, "d/x")));
    assert!(exists(&m.t(0, "rel/y")));
    fs::remove_file(m.m("d/x")).unwrap();
    fs::remove_dir(m.m("rel/y")).unwrap();
    // removing the merged directory must not remove the outside one
    let _ = fs::remove_dir(m.m("d"));
    let _ = fs::remove_dir(m.m("rel"));
    // unlinking a name whose lower copy is a symlink removes at most the link
    fs::remove_file(m.m("f2")).unwrap();
    assert!(!exists(&m.t(0, "f2")));
    assert_outside_untouched(&outside);
}

#[test]
fn rename_and_link_do_not_clone_parents_through_lower_symlinks() {
    // Renaming tier 1's f into a/b must clone a/b on tier 1 (or move the file
    // up) — never through tier 1's symlink a -> outside.
    let (m, outside) = escape_setup();
    match fs::rename(m.m("f"), m.m("a/b/f")) {
        Ok(()) => {
            assert_eq!(read(&m.m("a/b/f")), b"tier 1 file");
            assert_eq!(errno(lstat(&m.m("f"))), libc::ENOENT);
        }
        Err(e) => assert_ne!(e.raw_os_error(), Some(libc::EXDEV), "rename gave EXDEV"),
    }
    assert_outside_untouched(&outside);
    write(&m.t(1, "g"), "g");
    assert!(wait_until(VISIBILITY_TIMEOUT, || exists(&m.m("g"))));
    match fs::hard_link(m.m("g"), m.m("a/b/g")) {
        Ok(()) => assert_eq!(read(&m.m("a/b/g")), b"g"),
        Err(e) => assert_ne!(e.raw_os_error(), Some(libc::EXDEV), "link gave EXDEV"),
    }
    assert_outside_untouched(&outside);
    // renaming the merged directory renames tier 1's symlink at most
    let _ = fs::rename(m.m("d"), m.m("d2"));
    assert_outside_untouched(&outside);
}

#[test]
fn symlinked_tier_subdirectory_is_shown_as_a_symlink() {
    // Where the winning copy is a symlink, dfs shows the symlink itself (the
    // kernel, not dfs, follows it for the caller).
    let m = Mount::builder()
        .setup(|t| {
            let outside = t[0].parent().unwrap().join("outside2");
            fs::create_dir(&outside).unwrap();
            write(&outside.join("x"), "x");
            std::os::unix::fs::symlink(&outside, t[0].join("link")).unwrap();
        })
        .mount();
    let st = lstat(&m.m("link")).unwrap();
    assert!(st.file_type().is_symlink());
    assert_eq!(
        fs::read_link(m.m("link")).unwrap(),
        m.root().join("outside2")
    );
}

#[test]
fn user_rename_and_link_into_a_directory_only_on_the_lower_tier() {
    // The union lets the user do it (nd belongs to the user); dfs must clone
    // pub/nd onto tier 0 although the user may not write tier 0's pub, and
    // the clone keeps nd's owner.
    let m = Mount::builder()
        .setup(|t| {
            for tier in &t[..2] {
                fs::create_dir(tier.join("pub")).unwrap();
                chmod(&tier.join("pub"), 0o755);
            }
            fs::create_dir(t[1].join("pub/nd")).unwrap();
            lchown(&t[1].join("pub/nd"), USER, GROUP);
            fs::create_dir(t[0].join("open")).unwrap();
            chmod(&t[0].join("open"), 0o777);
        })
        .mount();
    let f = cstr(m.m("open/f"));
    let g = cstr(m.m("open/g"));
    let to_f = cstr(m.m("pub/nd/f"));
    let to_g = cstr(m.m("pub/nd/g"));
    assert_eq!(as_user(USER, GROUP, || child_create(&f)), 0);
    assert_eq!(as_user(USER, GROUP, || child_create(&g)), 0);
    assert_eq!(tiers_holding(&m, "open/f"), vec![0]);
    let r = as_user(USER, GROUP, || {
        sys_errno(unsafe { libc::rename(f.as_ptr(), to_f.as_ptr()) } as isize)
    });
    assert_eq!(r, 0, "rename as the user failed with errno {r}");
    assert_eq!(read(&m.m("pub/nd/f")), b"by user");
    let r = as_user(USER, GROUP, || {
        sys_errno(unsafe { libc::link(g.as_ptr(), to_g.as_ptr()) } as isize)
    });
    assert_eq!(r, 0, "link as the user failed with errno {r}");
    assert_eq!(ino(&m.m("pub/nd/g")), ino(&m.m("open/g")));
    if exists(&m.t(0, "pub/nd")) {
        let st = lstat(&m.t(0, "pub/nd")).unwrap();
        assert_eq!(
            (st.uid(), st.gid()),
            (USER, GROUP),
            "clone of pub/nd on tier 0 not owned like the original"
        );
    }
    // the user gained nothing on tier 0's pub
    assert_eq!(lstat(&m.t(0, "pub")).unwrap().uid(), 0);
    assert_eq!(mode(&m.t(0, "pub")), 0o755);
}

#[test]
fn user_writes_through_the_handle_that_created_a_read_only_file() {
    let m = Mount::preset();
    pub_dir(&m, "pub", 0o777);
    let c = cstr(m.m("pub/ro"));
    let r = as_user(USER, GROUP, || unsafe {
        let fd = libc::open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o444,
        );
        if fd < 0 {
            return *libc::__errno_location();
        }
        if libc::write(fd, b"mine".as_ptr().cast(), 4) != 4 {
            return 100;
        }
        libc::close(fd);
        0
    });
    assert_eq!(
        r, 0,
        "creating a 0444 file and writing through its handle failed (errno or 100 = write failed)"
    );
    assert_eq!(read(&m.t(0, "pub/ro")), b"mine");
    let st = lstat(&m.t(0, "pub/ro")).unwrap();
    assert_eq!(st.mode() & 0o777, 0o444);
    assert_eq!(st.uid(), USER);
}

/// In the child: `fstat(fd)` mode bits (07777), or -1.
fn child_mode(fd: i32) -> i64 {
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return -1;
        }
        (st.st_mode & 0o7777) as i64
    }
}

/// A user's write, truncate and fallocate clear its file's set-user-ID
/// bit, and set-group-ID where group execute is on, as on a local
/// filesystem; the mount shows it at once, although the kernel no longer
/// asks dfs before each write (FUSE_HANDLE_KILLPRIV_V2) and passthrough
/// writes never reach dfs. Each step sets the bits again first, on a file
/// already written once (the kernel then assumes it has none).
///
/// `sgid_kept`: whether a write by a member of the file's group keeps
/// set-group-ID without group execute, as the kernel does. Passthrough
/// writes clear it (README, "Set-ID bits").
fn unprivileged_changes_clear_setid_bits(m: &Mount, sgid_kept: bool) {
    let sgid_after = if sgid_kept { 0o2666 } else { 0o666 };
    pub_dir(m, "pub", 0o777);
    let c = cstr(m.m("pub/s"));
    let r = as_user(USER, GROUP, || unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o644);
        if fd < 0 {
            return *libc::__errno_location();
        }
        let w = |off: i64| libc::pwrite(fd, b"data".as_ptr().cast(), 4, off) == 4;
        if !w(0) {
            return 100;
        }
        let steps: [(u32, &dyn Fn() -> bool, i64, i32); 4] = [
            (0o6777, &|| w(4), 0o777, 110),
            (0o6777, &|| libc::ftruncate(fd, 2) == 0, 0o777, 120),
            (0o6777, &|| libc::fallocate(fd, 0, 0, 8192) == 0, 0o777, 130),
            // set-group-ID without group execute, the writer in the group.
            (0o2666, &|| w(8), sgid_after, 140),
        ];
        for (set, change, want, code) in steps {
            if libc::fchmod(fd, set) != 0 {
                return code + 1;
            }
            if child_mode(fd) != set as i64 {
                return code + 2;
            }
            if !change() {
                return code + 3;
            }
            if child_mode(fd) != want {
                return code + 4;
            }
        }
        libc::close(fd);
        0
    });
    assert_eq!(
        r, 0,
        "errno, or step+1 fchmod failed, +2 bits not set, +3 change failed, +4 bits not as expected after it"
    );
    assert_eq!(mode(&m.m("pub/s")), sgid_after as u32);
    assert_eq!(mode(&m.t(0, "pub/s")), sgid_after as u32);
}

#[test]
fn unprivileged_changes_clear_setid_bits_with_passthrough() {
    unprivileged_changes_clear_setid_bits(&Mount::preset(), false);
}

#[test]
fn unprivileged_changes_clear_setid_bits_through_the_daemon() {
    let m = Mount::builder().args(&["-o", "nopassthrough"]).mount();
    unprivileged_changes_clear_setid_bits(&m, true);
}

/// Root keeps a set-group-ID bit it sets on a file of a group it is not
/// in, also on the threads that dropped CAP_FSETID to register a
/// passthrough file (`creds::without_fsetid`): each file is read first.
#[test]
fn root_sets_setgid_on_a_file_of_another_group_after_passthrough_opens() {
    let m = Mount::preset();
    for i in 0..8 {
        let p = m.m(&format!("g{i}"));
        fs::write(&p, b"x").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
        lchown(&p, USER, GROUP);
        chmod(&p, 0o2755);
        assert_eq!(mode(&p), 0o2755, "g{i}: set-group-ID dropped");
        assert_eq!(mode(&m.t(0, &format!("g{i}"))), 0o2755);
    }
}
