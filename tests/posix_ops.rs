//! Every operation of issue 2 through a real mount of the preset.

mod common;

use common::*;
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn open_rw(p: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn create_rw(p: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(p)
        .unwrap_or_else(|e| panic!("create {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------
// getattr / setattr
// ---------------------------------------------------------------------------

#[test]
fn getattr_st_blocks_matches_tier_for_du() {
    let m = Mount::preset();
    let mut f = create_rw(&m.m("full"));
    f.write_all(&pattern(1 << 20, 1)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let st = lstat(&m.m("full")).unwrap();
    let t = lstat(&m.t(0, "full")).unwrap();
    assert_eq!(st.len(), 1 << 20);
    assert!(
        st.blocks() >= 2048,
        "st_blocks {} too small for 1 MiB",
        st.blocks()
    );
    assert_eq!(st.blocks(), t.blocks());
    assert!(st.blksize() > 0);

    // sparse file: st_blocks stays small
    let f = create_rw(&m.m("sparse"));
    f.set_len(100 << 20).unwrap();
    f.write_at(b"x", 50 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let st = lstat(&m.m("sparse")).unwrap();
    assert_eq!(st.len(), 100 << 20);
    assert_eq!(st.blocks(), lstat(&m.t(0, "sparse")).unwrap().blocks());
    assert!(
        st.blocks() < 1024,
        "sparse file reports {} blocks",
        st.blocks()
    );

    // du agrees
    let du = |p: &Path| {
        let o = std::process::Command::new("du")
            .arg("-sk")
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8(o.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(du(&m.m("full")), du(&m.t(0, "full")));
}

#[test]
fn getattr_fields_match_tier() {
    let m = Mount::builder()
        .setup(|t| {
            write(&t[1].join("f"), "12345");
            chmod(&t[1].join("f"), 0o640);
            lchown(&t[1].join("f"), 1001, 1002);
            utimens(&t[1].join("f"), ts(1_600_000_000, 1), ts(1_600_000_001, 2)).unwrap();
        })
        .mount();
    let st = lstat(&m.m("f")).unwrap();
    let t = lstat(&m.t(1, "f")).unwrap();
    assert_eq!(st.mode(), t.mode());
    assert_eq!((st.uid(), st.gid()), (1001, 1002));
    assert_eq!(st.len(), 5);
    assert_eq!((st.atime(), st.atime_nsec()), (1_600_000_000, 1));
    assert_eq!((st.mtime(), st.mtime_nsec()), (1_600_000_001, 2));
    assert_eq!((st.ctime(), st.ctime_nsec()), (t.ctime(), t.ctime_nsec()));
    assert_eq!(st.nlink(), 1);
}

#[test]
fn setattr_chmod_chown() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    chmod(&m.m("f"), 0o751);
    assert_eq!(mode(&m.m("f")), 0o751);
    assert_eq!(mode(&m.t(0, "f")), 0o751);
    chmod(&m.m("f"), 0o4755);
    assert_eq!(mode(&m.t(0, "f")), 0o4755);
    lchown(&m.m("f"), 1000, 1000);
    let t = lstat(&m.t(0, "f")).unwrap();
    assert_eq!((t.uid(), t.gid()), (1000, 1000));
    let st = lstat(&m.m("f")).unwrap();
    assert_eq!((st.uid(), st.gid()), (1000, 1000));
    // chown of a symlink itself (lchown)
    std::os::unix::fs::symlink("f", m.m("l")).unwrap();
    lchown(&m.m("l"), 2000, 2001);
    let t = lstat(&m.t(0, "l")).unwrap();
    assert_eq!((t.uid(), t.gid()), (2000, 2001));
    assert_eq!(
        lstat(&m.t(0, "f")).unwrap().uid(),
        1000,
        "lchown followed the link"
    );
    // chown -1 keeps the other id
    let c = cstr(m.m("f"));
    cvt(unsafe { libc::chown(c.as_ptr(), u32::MAX, 3000) }).unwrap();
    let t = lstat(&m.t(0, "f")).unwrap();
    assert_eq!((t.uid(), t.gid()), (1000, 3000));
}

#[test]
fn setattr_truncate() {
    let m = Mount::preset();
    write(&m.m("f"), "0123456789");
    let c = cstr(m.m("f"));
    cvt(unsafe { libc::truncate(c.as_ptr(), 4) }).unwrap();
    assert_eq!(read(&m.m("f")), b"0123");
    assert_eq!(read(&m.t(0, "f")), b"0123");
    cvt(unsafe { libc::truncate(c.as_ptr(), 8) }).unwrap();
    assert_eq!(read(&m.m("f")), b"0123\0\0\0\0");
    // ftruncate on an open handle, then write
    let f = open_rw(&m.m("f"));
    f.set_len(2).unwrap();
    f.write_at(b"Z", 5).unwrap();
    drop(f);
    assert_eq!(read(&m.t(0, "f")), b"01\0\0\0Z");
    assert_eq!(lstat(&m.m("f")).unwrap().len(), 6);
    // O_TRUNC
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.m("f"))
        .unwrap();
    assert_eq!(lstat(&m.m("f")).unwrap().len(), 0);
    assert_eq!(lstat(&m.t(0, "f")).unwrap().len(), 0);
    // truncate of a directory
    fs::create_dir(m.m("d")).unwrap();
    let d = cstr(m.m("d"));
    assert_eq!(
        errno(cvt(unsafe { libc::truncate(d.as_ptr(), 0) })),
        libc::EISDIR
    );
}

#[test]
fn setattr_utimens_explicit_now_omit() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    utimens(&m.m("f"), ts(1_000_000_000, 111), ts(1_000_000_100, 222)).unwrap();
    let t = lstat(&m.t(0, "f")).unwrap();
    assert_eq!(
        (t.atime(), t.atime_nsec(), t.mtime(), t.mtime_nsec()),
        (1_000_000_000, 111, 1_000_000_100, 222)
    );
    let s = lstat(&m.m("f")).unwrap();
    assert_eq!(
        (s.atime(), s.atime_nsec(), s.mtime(), s.mtime_nsec()),
        (1_000_000_000, 111, 1_000_000_100, 222)
    );

    // atime = NOW, mtime = OMIT
    utimens(&m.m("f"), ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT)).unwrap();
    let t = lstat(&m.t(0, "f")).unwrap();
    assert!(
        (t.atime() - now_secs()).abs() <= 5,
        "atime not set to now: {}",
        t.atime()
    );
    assert_eq!(
        (t.mtime(), t.mtime_nsec()),
        (1_000_000_100, 222),
        "UTIME_OMIT changed mtime"
    );
    let s = lstat(&m.m("f")).unwrap();
    assert_eq!((s.mtime(), s.mtime_nsec()), (1_000_000_100, 222));
    assert!((s.atime() - now_secs()).abs() <= 5);

    // atime = OMIT, mtime = NOW
    utimens(&m.m("f"), ts(1_000_000_000, 111), ts(1_000_000_100, 222)).unwrap();
    utimens(&m.m("f"), ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW)).unwrap();
    let t = lstat(&m.t(0, "f")).unwrap();
    assert_eq!(
        (t.atime(), t.atime_nsec()),
        (1_000_000_000, 111),
        "UTIME_OMIT changed atime"
    );
    assert!((t.mtime() - now_secs()).abs() <= 5, "mtime not set to now");

    // both OMIT: nothing changes
    utimens(&m.m("f"), ts(1_000_000_000, 111), ts(1_000_000_100, 222)).unwrap();
    utimens(&m.m("f"), ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_OMIT)).unwrap();
    let t = lstat(&m.t(0, "f")).unwrap();
    assert_eq!((t.atime(), t.mtime()), (1_000_000_000, 1_000_000_100));

    // utimes(NULL) = both now, through futimens on an open fd
    let f = open_rw(&m.m("f"));
    cvt(unsafe { libc::futimens(f.as_raw_fd(), std::ptr::null()) }).unwrap();
    drop(f);
    let t = lstat(&m.t(0, "f")).unwrap();
    assert!((t.mtime() - now_secs()).abs() <= 5);
    assert!((t.atime() - now_secs()).abs() <= 5);

    // symlink times (AT_SYMLINK_NOFOLLOW)
    std::os::unix::fs::symlink("f", m.m("l")).unwrap();
    utimens(&m.m("l"), ts(900_000_000, 0), ts(900_000_001, 0)).unwrap();
    assert_eq!(lstat(&m.t(0, "l")).unwrap().mtime(), 900_000_001);
    assert_ne!(lstat(&m.t(0, "f")).unwrap().mtime(), 900_000_001);
}

#[test]
fn write_updates_mtime_and_size() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    utimens(&m.m("f"), ts(1_000_000_000, 0), ts(1_000_000_000, 0)).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(m.m("f")).unwrap();
    f.write_all(b"yz").unwrap();
    drop(f);
    let s = lstat(&m.m("f")).unwrap();
    assert_eq!(s.len(), 3);
    assert!(s.mtime() > 1_000_000_000, "mtime not updated by write");
}

// ---------------------------------------------------------------------------
// symlink / readlink
// ---------------------------------------------------------------------------

#[test]
fn readlink_returns_targets_unchanged() {
    let m = Mount::builder()
        .setup(|t| {
            std::os::unix::fs::symlink("/etc/passwd", t[1].join("abs_on_tier")).unwrap();
            std::os::unix::fs::symlink(t[1].join("x"), t[1].join("into_tier")).unwrap();
        })
        .mount();
    let long = "a/".repeat(1500) + "end";
    let targets: Vec<OsString> = vec![
        "/etc/passwd".into(),
        "/abs/../path//x/".into(),
        "rel/../../up".into(),
        "dangling-target".into(),
        "a//b/./c".into(),
        ".".into(),
        long.clone().into(),
        OsString::from_vec(b"latin1-caf\xe9".to_vec()),
    ];
    for (i, t) in targets.iter().enumerate() {
        let link = m.m(&format!("l{i}"));
        std::os::unix::fs::symlink(t, &link).unwrap();
        assert_eq!(
            fs::read_link(&link).unwrap().as_os_str(),
            t.as_os_str(),
            "through mount"
        );
        assert_eq!(
            fs::read_link(m.t(0, &format!("l{i}"))).unwrap().as_os_str(),
            t.as_os_str(),
            "on tier"
        );
        let st = lstat(&link).unwrap();
        assert!(st.file_type().is_symlink());
        assert_eq!(st.len(), t.len() as u64, "symlink st_size");
    }
    assert_eq!(
        fs::read_link(m.m("abs_on_tier")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read_link(m.m("into_tier")).unwrap(), m.t(1, "x"));
    // readlink on a non-link
    write(&m.m("plain"), "x");
    assert_eq!(errno(fs::read_link(m.m("plain"))), libc::EINVAL);
}

// ---------------------------------------------------------------------------
// mknod
// ---------------------------------------------------------------------------

#[test]
fn mknod_fifo_regular_and_device() {
    let m = Mount::preset();
    mknod(&m.m("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    let t = lstat(&m.t(0, "fifo")).unwrap();
    assert_eq!(t.mode() & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(t.mode() & 0o777, 0o640);
    assert_eq!(
        lstat(&m.m("fifo")).unwrap().mode() & libc::S_IFMT,
        libc::S_IFIFO
    );

    // the fifo works through the mount
    let p = m.m("fifo");
    let reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .unwrap();
    let mut writer = fs::OpenOptions::new().write(true).open(&p).unwrap();
    writer.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&reader).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    mknod(&m.m("reg"), libc::S_IFREG | 0o600, 0).unwrap();
    let t = lstat(&m.t(0, "reg")).unwrap();
    assert!(t.file_type().is_file());
    assert_eq!(t.mode() & 0o777, 0o600);
    assert_eq!(t.len(), 0);

    let dev = libc::makedev(1, 3);
    mknod(&m.m("null"), libc::S_IFCHR | 0o600, dev).unwrap();
    let t = lstat(&m.t(0, "null")).unwrap();
    assert_eq!(t.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(t.rdev(), dev);
    assert_eq!(lstat(&m.m("null")).unwrap().rdev(), dev);

    assert_eq!(
        errno(mknod(&m.m("fifo"), libc::S_IFIFO | 0o600, 0)),
        libc::EEXIST
    );
}

// ---------------------------------------------------------------------------
// mkdir / rmdir / unlink / rename / link basics
// ---------------------------------------------------------------------------

#[test]
fn namespace_basics_and_errnos() {
    let m = Mount::preset();
    fs::create_dir(m.m("d")).unwrap();
    assert!(lstat(&m.t(0, "d")).unwrap().is_dir());
    assert_eq!(errno(fs::create_dir(m.m("d"))), libc::EEXIST);
    write(&m.m("d/f"), "f");
    assert_eq!(errno(fs::remove_dir(m.m("d"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_dir(m.m("d/f"))), libc::ENOTDIR);
    assert_eq!(errno(fs::remove_file(m.m("d"))), libc::EISDIR);
    assert_eq!(errno(fs::remove_file(m.m("missing"))), libc::ENOENT);
    assert_eq!(errno(fs::remove_dir(m.m("missing"))), libc::ENOENT);
    assert_eq!(errno(lstat(&m.m("missing/x"))), libc::ENOENT);
    assert_eq!(errno(lstat(&m.m("d/f/x"))), libc::ENOTDIR);
    assert_eq!(errno(fs::create_dir(m.m("missing/x"))), libc::ENOENT);
    assert_eq!(errno(fs::hard_link(m.m("d"), m.m("dl"))), libc::EPERM);
    assert_eq!(errno(fs::rename(m.m("d"), m.m("d/sub"))), libc::EINVAL);
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(m.m("d/f"))
        ),
        libc::ENOTDIR
    );
    // rename onto itself is a no-op
    fs::rename(m.m("d/f"), m.m("d/f")).unwrap();
    assert_eq!(read(&m.m("d/f")), b"f");
    // hard link then unlink one name: the other survives
    fs::hard_link(m.m("d/f"), m.m("d/g")).unwrap();
    fs::remove_file(m.m("d/f")).unwrap();
    assert_eq!(read(&m.m("d/g")), b"f");
    assert_eq!(lstat(&m.m("d/g")).unwrap().nlink(), 1);
    fs::remove_file(m.m("d/g")).unwrap();
    fs::remove_dir(m.m("d")).unwrap();
    assert!(!exists(&m.t(0, "d")));
    // mkdir mode
    fs::DirBuilder::new().mode(0o710).create(m.m("m")).unwrap();
    assert_eq!(mode(&m.t(0, "m")), 0o710);
}

#[test]
fn ctime_and_nlink_after_link_unlink_rename() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    fs::create_dir(m.m("d")).unwrap();
    let c0 = lstat(&m.m("f")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    fs::hard_link(m.m("f"), m.m("g")).unwrap();
    let c1 = lstat(&m.m("f")).unwrap();
    assert_eq!(c1.nlink(), 2);
    assert!(
        (c1.ctime(), c1.ctime_nsec()) > (c0.ctime(), c0.ctime_nsec()),
        "ctime not updated by link"
    );
    std::thread::sleep(Duration::from_millis(20));
    fs::remove_file(m.m("g")).unwrap();
    let c2 = lstat(&m.m("f")).unwrap();
    assert_eq!(c2.nlink(), 1);
    assert!(
        (c2.ctime(), c2.ctime_nsec()) > (c1.ctime(), c1.ctime_nsec()),
        "ctime not updated by unlink"
    );
    // directory nlink counts subdirectories
    let d0 = lstat(&m.m("d")).unwrap().nlink();
    fs::create_dir(m.m("d/sub")).unwrap();
    assert_eq!(lstat(&m.m("d")).unwrap().nlink(), d0 + 1);
    // parent mtime changes on create
    utimens(&m.m("d"), ts(1_000_000_000, 0), ts(1_000_000_000, 0)).unwrap();
    write(&m.m("d/new"), "n");
    assert!(
        lstat(&m.m("d")).unwrap().mtime() > 1_000_000_000,
        "parent mtime not updated"
    );
}

// ---------------------------------------------------------------------------
// open / read / write / flush / release
// ---------------------------------------------------------------------------

#[test]
fn read_write_large_and_offsets() {
    let m = Mount::preset();
    let data = pattern(4 << 20, 7);
    write(&m.m("big"), &data);
    assert_eq!(read(&m.m("big")), data);
    assert_eq!(read(&m.t(0, "big")), data);
    let f = open_rw(&m.m("big"));
    f.write_at(b"HELLO", 1_000_000).unwrap();
    let mut buf = [0u8; 5];
    f.read_exact_at(&mut buf, 1_000_000).unwrap();
    assert_eq!(&buf, b"HELLO");
    // write past EOF leaves a zero gap
    f.write_at(b"tail", (4 << 20) + 100).unwrap();
    drop(f);
    let all = read(&m.t(0, "big"));
    assert_eq!(all.len(), (4 << 20) + 104);
    assert_eq!(&all[1_000_000..1_000_005], b"HELLO");
    assert!(all[(4 << 20)..(4 << 20) + 100].iter().all(|b| *b == 0));
    // O_APPEND from two handles
    let mut a = fs::OpenOptions::new()
        .append(true)
        .open(m.m("big"))
        .unwrap();
    let mut b = fs::OpenOptions::new()
        .append(true)
        .open(m.m("big"))
        .unwrap();
    a.write_all(b"A").unwrap();
    b.write_all(b"B").unwrap();
    drop((a, b));
    let all = read(&m.m("big"));
    assert_eq!(&all[all.len() - 6..], b"tailAB");
    // O_RDONLY handle cannot write
    let mut r = fs::File::open(m.m("big")).unwrap();
    assert_eq!(errno(r.write(b"x")), libc::EBADF);
}

#[test]
fn open_unlinked_file_stays_readable() {
    let m = Mount::preset();
    write(&m.m("f"), "still here");
    let mut f = fs::File::open(m.m("f")).unwrap();
    fs::remove_file(m.m("f")).unwrap();
    assert_eq!(errno(lstat(&m.m("f"))), libc::ENOENT);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    // fstat of the open, unlinked file
    assert_eq!(
        f.metadata().expect("fstat of an open unlinked file").len(),
        10
    );
    // and writing to it still works
    let mut w = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.m("g"))
        .unwrap();
    fs::remove_file(m.m("g")).unwrap();
    w.write_all(b"abc").unwrap();
    let mut buf = [0u8; 3];
    w.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"abc");
    assert_eq!(
        w.metadata().expect("fstat of an open unlinked file").len(),
        3
    );
}

// ---------------------------------------------------------------------------
// xattrs
// ---------------------------------------------------------------------------

#[test]
fn xattrs_user_namespace() {
    let m = Mount::builder()
        .setup(|t| write(&t[1].join("lower"), "l"))
        .mount();
    write(&m.m("f"), "x");
    let p = m.m("f");
    setxattr(&p, "user.a", b"1", 0).unwrap();
    let big = pattern(3_000, 3); // ext4 keeps a value within one block
    setxattr(&p, "user.big", &big, 0).unwrap();
    setxattr(&p, "user.empty", b"", 0).unwrap();
    assert_eq!(getxattr(&p, "user.a").unwrap(), b"1");
    assert_eq!(getxattr(&p, "user.big").unwrap(), big);
    assert_eq!(getxattr(&p, "user.empty").unwrap(), b"");
    assert_eq!(getxattr(&m.t(0, "f"), "user.big").unwrap(), big);
    let l = listxattr(&p).unwrap();
    for k in ["user.a", "user.big", "user.empty"] {
        assert!(l.contains(&k.to_string()), "listxattr {l:?} lacks {k}");
    }
    // flags
    assert_eq!(
        errno(setxattr(&p, "user.a", b"2", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(setxattr(&p, "user.nope", b"2", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    setxattr(&p, "user.a", b"22", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&m.t(0, "f"), "user.a").unwrap(), b"22");
    // remove
    removexattr(&p, "user.a").unwrap();
    assert_eq!(errno(getxattr(&p, "user.a")), libc::ENODATA);
    assert_eq!(errno(getxattr(&m.t(0, "f"), "user.a")), libc::ENODATA);
    assert_eq!(errno(removexattr(&p, "user.a")), libc::ENODATA);
    assert!(!listxattr(&p).unwrap().contains(&"user.a".to_string()));
    // on a file of the lower tier
    setxattr(&m.m("lower"), "user.x", b"y", 0).unwrap();
    assert_eq!(getxattr(&m.t(1, "lower"), "user.x").unwrap(), b"y");
    assert!(!exists(&m.t(0, "lower")));
    // on an open fd
    let f = fs::File::open(&p).unwrap();
    let n = CString::new("user.fd").unwrap();
    cvt(unsafe { libc::fsetxattr(f.as_raw_fd(), n.as_ptr(), b"v".as_ptr().cast(), 1, 0) }).unwrap();
    assert_eq!(getxattr(&m.t(0, "f"), "user.fd").unwrap(), b"v");
}

#[test]
fn xattr_size_queries_and_erange() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    let p = m.m("f");
    setxattr(&p, "user.a", b"1", 0).unwrap();
    let big = pattern(3_000, 3);
    setxattr(&p, "user.big", &big, 0).unwrap();
    setxattr(&p, "user.empty", b"", 0).unwrap();
    // size queries and ERANGE
    let c = cstr(&p);
    let n = CString::new("user.big").unwrap();
    let tc = cstr(m.t(0, "f"));
    let tsz = unsafe { libc::lgetxattr(tc.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(tsz, 3_000, "size query on the tier itself");
    let sz = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(sz, 3_000, "getxattr size query (size 0) through the mount");
    let mut small = [0u8; 10];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), small.as_mut_ptr().cast(), 10) };
    assert_eq!(r, -1);
    assert_eq!(last_errno(), libc::ERANGE);
    let lsz = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(lsz >= ("user.a\0user.big\0user.empty\0".len() as isize));
    let r = unsafe { libc::llistxattr(c.as_ptr(), small.as_mut_ptr().cast(), 3) };
    assert_eq!(r, -1);
    assert_eq!(last_errno(), libc::ERANGE);
}

// ---------------------------------------------------------------------------
// access
// ---------------------------------------------------------------------------

fn access(p: &Path, how: i32) -> std::io::Result<()> {
    let c = cstr(p);
    cvt(unsafe { libc::access(c.as_ptr(), how) }).map(|_| ())
}

#[test]
fn access_checks() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    chmod(&m.m("f"), 0o644);
    access(&m.m("f"), libc::F_OK).unwrap();
    access(&m.m("f"), libc::R_OK | libc::W_OK).unwrap();
    // root needs at least one x bit for X_OK
    assert_eq!(errno(access(&m.m("f"), libc::X_OK)), libc::EACCES);
    chmod(&m.m("f"), 0o744);
    access(&m.m("f"), libc::X_OK).unwrap();
    assert_eq!(errno(access(&m.m("missing"), libc::F_OK)), libc::ENOENT);
    fs::create_dir(m.m("d")).unwrap();
    access(&m.m("d"), libc::X_OK | libc::W_OK).unwrap();
    // as nobody
    chmod(&m.m("f"), 0o640);
    let c = cstr(m.m("f"));
    let r = as_user(NOBODY, NOGROUP, || {
        sys_errno(unsafe { libc::access(c.as_ptr(), libc::R_OK) } as isize)
    });
    assert_eq!(r, libc::EACCES);
    let r = as_user(NOBODY, NOGROUP, || {
        sys_errno(unsafe { libc::access(c.as_ptr(), libc::F_OK) } as isize)
    });
    assert_eq!(r, 0);
}

// ---------------------------------------------------------------------------
// fallocate / lseek / copy_file_range / fsync
// ---------------------------------------------------------------------------

#[test]
fn fallocate_modes() {
    let m = Mount::preset();
    let f = create_rw(&m.m("f"));
    let fd = f.as_raw_fd();
    cvt(unsafe { libc::fallocate(fd, 0, 0, 1 << 20) }).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    let t = lstat(&m.t(0, "f")).unwrap();
    assert_eq!(t.len(), 1 << 20);
    assert!(t.blocks() >= 2048, "fallocate did not allocate on the tier");
    // KEEP_SIZE beyond EOF
    cvt(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20) }).unwrap();
    let t = lstat(&m.t(0, "f")).unwrap();
    assert_eq!(t.len(), 1 << 20);
    assert!(t.blocks() >= 4096);
    // punch a hole
    f.write_at(&vec![1u8; 1 << 20], 0).unwrap();
    f.sync_all().unwrap();
    let before = lstat(&m.t(0, "f")).unwrap().blocks();
    cvt(unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            512 << 10,
        )
    })
    .unwrap();
    let t = lstat(&m.t(0, "f")).unwrap();
    assert!(t.blocks() < before, "punch hole freed nothing");
    assert_eq!(t.len(), 1 << 20);
    let mut buf = vec![9u8; 4096];
    f.read_exact_at(&mut buf, 4096).unwrap();
    assert!(
        buf.iter().all(|b| *b == 0),
        "punched range not zero through the mount"
    );
    // posix_fallocate growing the file
    assert_eq!(unsafe { libc::posix_fallocate(fd, 0, 3 << 20) }, 0);
    assert_eq!(lstat(&m.m("f")).unwrap().len(), 3 << 20);
}

#[test]
fn lseek_data_and_hole() {
    let m = Mount::preset();
    let f = create_rw(&m.m("sparse"));
    f.write_at(&[1u8; 4096], 0).unwrap();
    f.write_at(&[2u8; 4096], 1 << 20).unwrap();
    f.sync_all().unwrap();
    let tf = fs::File::open(m.t(0, "sparse")).unwrap();
    let size = (1i64 << 20) + 4096;
    let cases = [
        (0, libc::SEEK_DATA),
        (0, libc::SEEK_HOLE),
        (4096, libc::SEEK_DATA),
        (100_000, libc::SEEK_DATA),
        (1 << 20, libc::SEEK_HOLE),
        ((1 << 20) + 10, libc::SEEK_DATA),
        (size - 1, libc::SEEK_HOLE),
    ];
    for (off, whence) in cases {
        let want = unsafe { libc::lseek(tf.as_raw_fd(), off, whence) };
        let got = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
        assert_eq!(
            got,
            want,
            "lseek({off}, {}) through the mount",
            if whence == libc::SEEK_DATA {
                "SEEK_DATA"
            } else {
                "SEEK_HOLE"
            }
        );
    }
    // ext4 reports the hole
    assert_eq!(
        unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) },
        4096
    );
    assert_eq!(
        unsafe { libc::lseek(f.as_raw_fd(), 4096, libc::SEEK_DATA) },
        1 << 20
    );
    // past EOF: ENXIO
    let r = unsafe { libc::lseek(f.as_raw_fd(), size + 10, libc::SEEK_DATA) };
    assert_eq!(r, -1);
    assert_eq!(last_errno(), libc::ENXIO);
    let r = unsafe { libc::lseek(f.as_raw_fd(), size, libc::SEEK_HOLE) };
    assert_eq!(r, -1);
    assert_eq!(last_errno(), libc::ENXIO);
    // SEEK_END / SEEK_CUR still fine
    assert_eq!(
        unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) },
        size
    );
}

#[test]
fn copy_file_range_within_and_across_tiers() {
    let m = Mount::builder()
        .tmpfs(1, "64m")
        .setup(|t| fs::create_dir(t[1].join("low")).unwrap())
        .mount();
    let data = pattern(300_000, 11);
    write(&m.m("src"), &data);
    for dst in ["dst", "low/dst"] {
        let s = fs::File::open(m.m("src")).unwrap();
        let d = create_rw(&m.m(dst));
        let mut left = data.len();
        while left > 0 {
            let n = unsafe {
                libc::copy_file_range(
                    s.as_raw_fd(),
                    std::ptr::null_mut(),
                    d.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    0,
                )
            };
            assert!(
                n > 0,
                "copy_file_range to {dst}: {}",
                std::io::Error::last_os_error()
            );
            left -= n as usize;
        }
        drop(d);
        assert_eq!(read(&m.m(dst)), data, "{dst} through the mount");
    }
    assert_eq!(read(&m.t(0, "dst")), data);
    assert_eq!(read(&m.t(1, "low/dst")), data);
    // explicit offsets
    let s = fs::File::open(m.m("src")).unwrap();
    let d = open_rw(&m.m("dst"));
    let mut off_in: i64 = 5;
    let mut off_out: i64 = 10;
    let n = unsafe {
        libc::copy_file_range(
            s.as_raw_fd(),
            &mut off_in,
            d.as_raw_fd(),
            &mut off_out,
            1000,
            0,
        )
    };
    assert_eq!(n, 1000);
    assert_eq!((off_in, off_out), (1005, 1010));
    drop(d);
    let got = read(&m.m("dst"));
    assert_eq!(&got[10..1010], &data[5..1005]);
    assert_eq!(&got[..10], &data[..10]);
}

#[test]
fn fsync_fdatasync_fsyncdir() {
    let m = Mount::builder()
        .setup(|t| fs::create_dir(t[1].join("low")).unwrap())
        .mount();
    let mut f = create_rw(&m.m("f"));
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    for d in ["", "low"] {
        let dir = fs::File::open(m.m(d)).unwrap();
        dir.sync_all().expect("fsync on a directory");
        dir.sync_data().expect("fdatasync on a directory");
    }
    let r = unsafe { libc::syncfs(fs::File::open(m.mnt()).unwrap().as_raw_fd()) };
    assert_eq!(r, 0);
}

// ---------------------------------------------------------------------------
// locks between processes
// ---------------------------------------------------------------------------

fn flock_struct(t: i32, start: i64, len: i64) -> libc::flock {
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = t as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    l
}

#[test]
fn posix_locks_between_processes() {
    let m = Mount::preset();
    write(&m.m("f"), "0123456789");
    let f = open_rw(&m.m("f"));
    let mut l = flock_struct(libc::F_WRLCK, 0, 5);
    cvt(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &mut l) }).unwrap();
    let c = cstr(m.m("f"));
    let parent = std::process::id() as i32;
    // conflicting lock in another process
    let r = in_child(|| unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return 100;
        }
        let mut l = flock_struct(libc::F_WRLCK, 2, 2);
        if libc::fcntl(fd, libc::F_SETLK, &mut l) == 0 {
            return 0;
        }
        *libc::__errno_location()
    });
    assert!(
        r == libc::EAGAIN || r == libc::EACCES,
        "conflicting F_SETLK gave {r}"
    );
    // F_GETLK reports the holder
    let r = in_child(|| unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR);
        let mut l = flock_struct(libc::F_WRLCK, 0, 10);
        if libc::fcntl(fd, libc::F_GETLK, &mut l) != 0 {
            return 100;
        }
        if l.l_type as i32 != libc::F_WRLCK {
            return 101;
        }
        if l.l_pid != parent {
            return 102;
        }
        if l.l_start != 0 || l.l_len != 5 {
            return 103;
        }
        0
    });
    assert_eq!(
        r, 0,
        "F_GETLK in another process (101: no lock seen, 102: wrong pid, 103: wrong range)"
    );
    // a non-overlapping range is free
    let r = in_child(|| unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR);
        let mut l = flock_struct(libc::F_WRLCK, 5, 5);
        if libc::fcntl(fd, libc::F_SETLK, &mut l) == 0 {
            0
        } else {
            *libc::__errno_location()
        }
    });
    assert_eq!(r, 0);
    // F_SETLKW waits for the release
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDWR);
            let mut l = flock_struct(libc::F_WRLCK, 0, 5);
            let r = libc::fcntl(fd, libc::F_SETLKW, &mut l);
            libc::_exit(if r == 0 { 0 } else { 1 });
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut status = 0;
    assert_eq!(
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) },
        0,
        "F_SETLKW did not wait"
    );
    let mut u = flock_struct(libc::F_UNLCK, 0, 5);
    cvt(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &mut u) }).unwrap();
    let ok = wait_until(Duration::from_secs(5), || unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG) == pid
    });
    if !ok {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        unsafe { libc::waitpid(pid, &mut status, 0) };
        panic!("F_SETLKW waiter not woken by the unlock");
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

#[test]
fn flock_between_processes() {
    let m = Mount::preset();
    write(&m.m("f"), "x");
    let f = fs::File::open(m.m("f")).unwrap();
    cvt(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }).unwrap();
    let c = cstr(m.m("f"));
    let try_lock = |op: i32| {
        in_child(|| unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return 100;
            }
            if libc::flock(fd, op | libc::LOCK_NB) == 0 {
                0
            } else {
                *libc::__errno_location()
            }
        })
    };
    assert_eq!(try_lock(libc::LOCK_EX), libc::EWOULDBLOCK);
    assert_eq!(try_lock(libc::LOCK_SH), libc::EWOULDBLOCK);
    cvt(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) }).unwrap();
    assert_eq!(try_lock(libc::LOCK_EX), 0);
    cvt(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) }).unwrap();
    assert_eq!(try_lock(libc::LOCK_SH), 0);
    assert_eq!(try_lock(libc::LOCK_EX), libc::EWOULDBLOCK);
}

// ---------------------------------------------------------------------------
// names
// ---------------------------------------------------------------------------

fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

#[test]
fn latin1_names_list_open_rename() {
    let m = Mount::builder()
        .setup(|t| {
            write(
                &t[1].join(OsStr::from_bytes(b"lower-\xe9t\xe9")),
                "from tier 1",
            );
            fs::create_dir(t[1].join(OsStr::from_bytes(b"dir-\xc0"))).unwrap();
        })
        .mount();
    let cafe = os(b"caf\xe9");
    write(&m.mnt().join(&cafe), "latin1");
    assert!(
        exists(&m.tier(0).join(&cafe)),
        "not on tier 0 under its byte name"
    );
    let listed = list(&m.mnt());
    assert!(listed.contains(&cafe), "listing {listed:?} lacks caf\\xe9");
    assert!(listed.contains(&os(b"lower-\xe9t\xe9")));
    assert!(listed.contains(&os(b"dir-\xc0")));
    assert_eq!(read(&m.mnt().join(&cafe)), b"latin1");
    assert_eq!(read(&m.mnt().join(os(b"lower-\xe9t\xe9"))), b"from tier 1");
    let naive = os(b"na\xefve-\xff");
    fs::rename(m.mnt().join(&cafe), m.mnt().join(&naive)).unwrap();
    assert_eq!(read(&m.mnt().join(&naive)), b"latin1");
    assert!(exists(&m.tier(0).join(&naive)));
    assert!(!exists(&m.tier(0).join(&cafe)));
    assert_eq!(errno(lstat(&m.mnt().join(&cafe))), libc::ENOENT);
    // a file inside a Latin-1 directory of the lower tier
    let inner = m.mnt().join(os(b"dir-\xc0")).join(os(b"\xe0\xe1"));
    write(&inner, "inner");
    assert!(exists(
        &m.tier(1).join(os(b"dir-\xc0")).join(os(b"\xe0\xe1"))
    ));
    fs::rename(
        m.mnt().join(os(b"lower-\xe9t\xe9")),
        m.mnt().join(os(b"dir-\xc0/\xfe")),
    )
    .unwrap();
    assert_eq!(read(&m.mnt().join(os(b"dir-\xc0/\xfe"))), b"from tier 1");
    fs::remove_file(m.mnt().join(&naive)).unwrap();
    assert!(!exists(&m.tier(0).join(&naive)));
}

#[test]
fn name_of_256_bytes_gets_enametoolong() {
    let m = Mount::preset();
    let n255 = "a".repeat(255);
    let n256 = "b".repeat(256);
    write(&m.m(&n255), "ok");
    assert!(exists(&m.t(0, &n255)));
    assert!(list(&m.mnt()).contains(&OsString::from(&n255)));
    assert_eq!(read(&m.m(&n255)), b"ok");
    let p = m.m(&n256);
    assert_eq!(errno(lstat(&p)), libc::ENAMETOOLONG, "lookup");
    assert_eq!(errno(fs::File::create(&p)), libc::ENAMETOOLONG, "create");
    assert_eq!(errno(fs::create_dir(&p)), libc::ENAMETOOLONG, "mkdir");
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", &p)),
        libc::ENAMETOOLONG,
        "symlink"
    );
    assert_eq!(
        errno(mknod(&p, libc::S_IFIFO | 0o600, 0)),
        libc::ENAMETOOLONG,
        "mknod"
    );
    assert_eq!(
        errno(fs::rename(m.m(&n255), &p)),
        libc::ENAMETOOLONG,
        "rename"
    );
    assert_eq!(
        errno(fs::hard_link(m.m(&n255), &p)),
        libc::ENAMETOOLONG,
        "link"
    );
    assert_eq!(errno(fs::remove_file(&p)), libc::ENAMETOOLONG, "unlink");
    // a multi-byte name of 256 bytes
    let u = "é".repeat(128);
    assert_eq!(errno(fs::File::create(m.m(&u))), libc::ENAMETOOLONG);
    assert!(exists(&m.m(&n255)));
}

// ---------------------------------------------------------------------------
// paths deeper than PATH_MAX
// ---------------------------------------------------------------------------

fn open_dir(p: &Path) -> OwnedFd {
    let c = cstr(p);
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    assert!(
        fd >= 0,
        "open {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn openat_dir(dir: &OwnedFd, name: &CStr) -> std::io::Result<OwnedFd> {
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Walks `depth` components named `name` from `root`, creating them with
/// mkdirat if `create`.
fn walk(root: &Path, name: &CStr, depth: usize, create: bool) -> std::io::Result<OwnedFd> {
    let mut fd = open_dir(root);
    for _ in 0..depth {
        if create {
            cvt(unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) })?;
        }
        fd = openat_dir(&fd, name)?;
    }
    Ok(fd)
}

fn read_at_name(dir: &OwnedFd, name: &CStr) -> std::io::Result<Vec<u8>> {
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

#[test]
fn directory_chain_deeper_than_path_max() {
    const DEPTH: usize = 24; // 24 * 201 bytes > 4096
    let comp = CString::new("d".repeat(200)).unwrap();
    let m = Mount::builder()
        .setup(move |t| {
            // a deep chain made directly on tier 1, with a file at the bottom
            let comp = CString::new("l".repeat(200)).unwrap();
            let fd = walk(&t[1], &comp, DEPTH, true).unwrap();
            let f = CString::new("bottom").unwrap();
            let ffd = unsafe {
                libc::openat(
                    fd.as_raw_fd(),
                    f.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                )
            };
            assert!(ffd >= 0);
            let mut file = unsafe { fs::File::from_raw_fd(ffd) };
            file.write_all(b"deep on tier 1").unwrap();
        })
        .mount();
    // create through the mount, step by step
    let fd = walk(&m.mnt(), &comp, DEPTH, true).expect("mkdirat/openat through the mount");
    let file = CString::new("file").unwrap();
    let ffd = unsafe {
        libc::openat(
            fd.as_raw_fd(),
            file.as_ptr(),
            libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(
        ffd >= 0,
        "create at depth: {}",
        std::io::Error::last_os_error()
    );
    let mut f = unsafe { fs::File::from_raw_fd(ffd) };
    f.write_all(b"deep").unwrap();
    drop(f);
    assert_eq!(read_at_name(&fd, &file).unwrap(), b"deep");
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            file.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .unwrap();
    assert_eq!(st.st_size, 4);
    let file2 = CString::new("file2").unwrap();
    cvt(unsafe {
        libc::renameat(
            fd.as_raw_fd(),
            file.as_ptr(),
            fd.as_raw_fd(),
            file2.as_ptr(),
        )
    })
    .unwrap();
    // symlink and mkdir at depth too
    let ln = CString::new("ln").unwrap();
    cvt(unsafe { libc::symlinkat(file2.as_ptr(), fd.as_raw_fd(), ln.as_ptr()) }).unwrap();
    assert_eq!(read_at_name(&fd, &ln).unwrap(), b"deep");
    // it is on tier 0, at the same depth
    let tfd = walk(&m.tier(0), &comp, DEPTH, false).expect("chain on tier 0");
    assert_eq!(read_at_name(&tfd, &file2).unwrap(), b"deep");
    // read the chain made on tier 1 through the mount
    let lcomp = CString::new("l".repeat(200)).unwrap();
    let lfd =
        walk(&m.mnt(), &lcomp, DEPTH, false).expect("walk tier 1's deep chain through the mount");
    let bottom = CString::new("bottom").unwrap();
    assert_eq!(read_at_name(&lfd, &bottom).unwrap(), b"deep on tier 1");
    // create next to it: goes to tier 1 (parent only there)
    let nf = CString::new("new").unwrap();
    let nfd = unsafe {
        libc::openat(
            lfd.as_raw_fd(),
            nf.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(
        nfd >= 0,
        "create in deep tier-1 dir: {}",
        std::io::Error::last_os_error()
    );
    unsafe { libc::close(nfd) };
    let t1fd = walk(&m.tier(1), &lcomp, DEPTH, false).unwrap();
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(t1fd.as_raw_fd(), nf.as_ptr(), &mut st, 0) })
        .expect("new file on tier 1");
    // unlink at depth
    cvt(unsafe { libc::unlinkat(fd.as_raw_fd(), file2.as_ptr(), 0) }).unwrap();
    assert_eq!(errno(read_at_name(&tfd, &file2)), libc::ENOENT);
}

// ---------------------------------------------------------------------------
// readdir
// ---------------------------------------------------------------------------

/// One getdents64 call on `fd` into `buf`: the (name, d_type) pairs it
/// returned, `None` at the end of the directory.
fn getdents_once(fd: i32, buf: &mut [u8]) -> Option<Vec<(Vec<u8>, u8)>> {
    // SAFETY: valid fd and buffer.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
    assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
    if n == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < n as usize {
        let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
        let dtype = buf[off + 18];
        let name = unsafe { CStr::from_ptr(buf[off + 19..].as_ptr().cast()) };
        out.push((name.to_bytes().to_vec(), dtype));
        off += reclen;
    }
    Some(out)
}

fn getdents_names(p: &Path, bufsize: usize) -> Vec<(Vec<u8>, u8)> {
    let fd = open_dir(p);
    let mut out = Vec::new();
    let mut buf = vec![0u8; bufsize];
    while let Some(batch) = getdents_once(fd.as_raw_fd(), &mut buf) {
        out.extend(batch);
    }
    out
}

#[test]
fn readdir_10000_entries_over_both_tiers_each_once() {
    let m = Mount::builder()
        .setup(|t| {
            fs::create_dir(t[0].join("big")).unwrap();
            fs::create_dir(t[1].join("big")).unwrap();
            for i in 0..5000 {
                fs::File::create(t[0].join(format!("big/p{i:05}"))).unwrap();
                fs::File::create(t[1].join(format!("big/s{i:05}"))).unwrap();
            }
            for i in 0..500 {
                fs::File::create(t[0].join(format!("big/both{i:03}"))).unwrap();
                fs::File::create(t[1].join(format!("big/both{i:03}"))).unwrap();
            }
            fs::create_dir(t[1].join("big/subdir")).unwrap();
        })
        .mount();
    let mut expect: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..5000 {
        expect.insert(format!("p{i:05}").into_bytes());
        expect.insert(format!("s{i:05}").into_bytes());
    }
    for i in 0..500 {
        expect.insert(format!("both{i:03}").into_bytes());
    }
    expect.insert(b"subdir".to_vec());
    for bufsize in [32768usize, 300] {
        let got = getdents_names(&m.m("big"), bufsize);
        let mut seen = HashSet::new();
        let mut dots = 0;
        for (name, dtype) in &got {
            if name == b"." || name == b".." {
                dots += 1;
                assert_eq!(*dtype, libc::DT_DIR);
                continue;
            }
            assert!(
                seen.insert(name.clone()),
                "{} listed twice (buffer {bufsize})",
                String::from_utf8_lossy(name)
            );
            if name == b"subdir" {
                assert_eq!(*dtype, libc::DT_DIR);
            } else {
                assert!(
                    *dtype == libc::DT_REG || *dtype == libc::DT_UNKNOWN,
                    "d_type {dtype}"
                );
            }
        }
        assert_eq!(dots, 2, ". and .. (buffer {bufsize})");
        let missing: Vec<_> = expect
            .difference(&seen)
            .take(5)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let extra: Vec<_> = seen
            .difference(&expect)
            .take(5)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?} extra {extra:?} (buffer {bufsize})"
        );
        assert_eq!(seen.len(), 10_501);
    }
}

#[test]
fn readdir_offsets_stay_valid_seekdir_telldir() {
    let m = Mount::builder()
        .setup(|t| {
            for i in 0..1500 {
                fs::File::create(t[i % 2].join(format!("n{i:04}"))).unwrap();
            }
        })
        .mount();
    let c = cstr(m.mnt());
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        let read_name = |d: *mut libc::DIR| -> Option<Vec<u8>> {
            let e = libc::readdir(d);
            if e.is_null() {
                None
            } else {
                Some(CStr::from_ptr((*e).d_name.as_ptr()).to_bytes().to_vec())
            }
        };
        let mut first = Vec::new();
        for _ in 0..700 {
            first.push(read_name(d).expect("early end"));
        }
        let pos = libc::telldir(d);
        let mut rest1 = Vec::new();
        while let Some(n) = read_name(d) {
            rest1.push(n);
        }
        libc::seekdir(d, pos);
        let mut rest2 = Vec::new();
        while let Some(n) = read_name(d) {
            rest2.push(n);
        }
        assert_eq!(
            rest1, rest2,
            "seekdir(telldir()) did not resume at the same entry"
        );
        libc::rewinddir(d);
        let mut again = Vec::new();
        while let Some(n) = read_name(d) {
            again.push(n);
        }
        libc::closedir(d);
        let mut all: Vec<Vec<u8>> = first.into_iter().chain(rest1).collect();
        assert_eq!(all, again, "rewinddir gave a different order");
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1502);
    }
}

#[test]
fn readdir_of_changing_directory_still_lists_unchanged_names_once() {
    let m = Mount::preset();
    fs::create_dir(m.m("d")).unwrap();
    for i in 0..300 {
        fs::File::create(m.m(&format!("d/k{i:03}"))).unwrap();
    }
    let mut it = fs::read_dir(m.m("d")).unwrap();
    let mut seen: Vec<OsString> = Vec::new();
    for _ in 0..50 {
        seen.push(it.next().unwrap().unwrap().file_name());
    }
    // add and remove names while the handle is open
    for i in 0..50 {
        fs::File::create(m.m(&format!("d/new{i}"))).unwrap();
    }
    for e in it {
        seen.push(e.unwrap().file_name());
    }
    let mut k: Vec<_> = seen
        .iter()
        .filter(|n| n.as_bytes().starts_with(b"k"))
        .collect();
    let total = k.len();
    k.sort();
    k.dedup();
    assert_eq!(k.len(), total, "a name was listed twice");
    assert_eq!(total, 300);
}

// ---------------------------------------------------------------------------
// mmap
// ---------------------------------------------------------------------------

#[test]
fn mmap_shared_read_write() {
    let m = Mount::builder()
        .setup(|t| write(&t[1].join("lower"), pattern(65536, 5)))
        .mount();
    let f = create_rw(&m.m("f"));
    f.set_len(65536).unwrap();
    let data = pattern(65536, 9);
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            65536,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>(), 65536);
        assert_eq!(libc::msync(p, 65536, libc::MS_SYNC), 0);
        libc::munmap(p, 65536);
    }
    drop(f);
    assert_eq!(read(&m.m("f")), data);
    assert_eq!(read(&m.t(0, "f")), data);

    // read-only mapping of a lower-tier file
    let f = fs::File::open(m.m("lower")).unwrap();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            65536,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let s = std::slice::from_raw_parts(p.cast::<u8>(), 65536);
        assert!(s == pattern(65536, 5).as_slice(), "mapped content differs");
        libc::munmap(p, 65536);
    }
    // private mapping writes do not reach the file
    let f = open_rw(&m.m("f"));
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        *p.cast::<u8>() = data[0].wrapping_add(1);
        libc::munmap(p, 4096);
    }
    drop(f);
    assert_eq!(read(&m.t(0, "f")), data);
}

// ---------------------------------------------------------------------------
// statfs, concurrency
// ---------------------------------------------------------------------------

#[test]
fn statfs_fields() {
    let m = Mount::preset();
    let s = statfs(&m.mnt());
    assert_eq!(s.f_namelen, 255);
    assert!(s.f_blocks > 0 && s.f_bsize > 0);
    assert!(s.f_bfree <= s.f_blocks && s.f_bavail <= s.f_bfree);
    let t = statfs(&m.tier(0));
    let bytes = |s: &libc::statfs, n: u64| {
        n as u128
            * if s.f_frsize > 0 {
                s.f_frsize
            } else {
                s.f_bsize
            } as u128
    };
    // free space within 64 MiB of the tier's (others write to the disk too)
    assert!(bytes(&s, s.f_bavail).abs_diff(bytes(&t, t.f_bavail)) < 64 << 20);
}

#[test]
fn concurrent_workers() {
    let m = Mount::builder()
        .setup(|t| {
            for i in 0..4 {
                fs::create_dir(t[i % 2].join(format!("w{i}"))).unwrap();
            }
        })
        .mount();
    let mnt = m.mnt();
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let dir = mnt.join(format!("w{w}"));
            std::thread::spawn(move || {
                for i in 0..100 {
                    let a = dir.join(format!("a{i}"));
                    let b = dir.join(format!("b{i}"));
                    let data = pattern(1000 + i, (w * 1000 + i) as u64);
                    fs::write(&a, &data).unwrap();
                    assert_eq!(fs::read(&a).unwrap(), data);
                    fs::rename(&a, &b).unwrap();
                    if i % 3 == 0 {
                        fs::remove_file(&b).unwrap();
                    }
                }
            })
        })
        .collect();
    let lister = {
        let mnt = mnt.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                for w in 0..4 {
                    let _ = fs::read_dir(mnt.join(format!("w{w}"))).unwrap().count();
                }
            }
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    lister.join().unwrap();
    for w in 0..4 {
        let names = list(&m.m(&format!("w{w}")));
        assert_eq!(names.len(), 66, "w{w}");
        assert!(names.iter().all(|n| n.as_bytes()[0] == b'b'));
        let tier = w % 2;
        assert_eq!(
            fs::read_dir(m.t(tier, &format!("w{w}"))).unwrap().count(),
            66
        );
        assert!(!exists(&m.t(1 - tier, &format!("w{w}"))));
    }
}

#[test]
fn o_direct_io() {
    let m = Mount::builder()
        .setup(|t| fs::create_dir(t[1].join("low")).unwrap())
        .mount();
    for name in ["direct", "low/direct"] {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.m(name))
            .unwrap_or_else(|e| panic!("open {name} O_DIRECT: {e}"));
        let layout = std::alloc::Layout::from_size_align(8192, 4096).unwrap();
        unsafe {
            let buf = std::alloc::alloc(layout);
            std::ptr::copy_nonoverlapping(pattern(8192, 4).as_ptr(), buf, 8192);
            let n = libc::pwrite(f.as_raw_fd(), buf.cast(), 8192, 0);
            assert_eq!(
                n,
                8192,
                "O_DIRECT write to {name}: {}",
                std::io::Error::last_os_error()
            );
            std::ptr::write_bytes(buf, 0, 8192);
            let n = libc::pread(f.as_raw_fd(), buf.cast(), 8192, 0);
            assert_eq!(
                n,
                8192,
                "O_DIRECT read of {name}: {}",
                std::io::Error::last_os_error()
            );
            assert!(std::slice::from_raw_parts(buf, 8192) == pattern(8192, 4).as_slice());
            std::alloc::dealloc(buf, layout);
        }
        drop(f);
        assert_eq!(read(&m.m(name)), pattern(8192, 4));
    }
}

#[test]
fn setattr_through_open_handles_of_a_lower_file() {
    let m = Mount::builder()
        .setup(|t| {
            write(&t[1].join("f"), "0123456789");
            chmod(&t[1].join("f"), 0o644);
        })
        .mount();
    let f = open_rw(&m.m("f"));
    cvt(unsafe { libc::fchmod(f.as_raw_fd(), 0o600) }).unwrap();
    cvt(unsafe { libc::fchown(f.as_raw_fd(), 1234, 4321) }).unwrap();
    f.set_len(3).unwrap();
    // the file stays open while chmod removes all permission bits
    cvt(unsafe { libc::fchmod(f.as_raw_fd(), 0o000) }).unwrap();
    f.write_at(b"Z", 0)
        .expect("write through a handle opened before chmod 000");
    let t = [ts(1_234_567_890, 0), ts(1_234_567_891, 0)];
    cvt(unsafe { libc::futimens(f.as_raw_fd(), t.as_ptr()) }).unwrap();
    drop(f);
    let st = lstat(&m.t(1, "f")).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o000);
    assert_eq!((st.uid(), st.gid()), (1234, 4321));
    assert_eq!(st.mtime(), 1_234_567_891);
    assert_eq!(read(&m.t(1, "f")), b"Z12");
    assert!(!exists(&m.t(0, "f")));
}

#[test]
fn create_mode_and_open_flags() {
    let m = Mount::preset();
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(m.m("private"))
        .unwrap();
    drop(f);
    assert_eq!(mode(&m.t(0, "private")), 0o600);
    // O_CREAT|O_EXCL on an existing name
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.m("private"))
        ),
        libc::EEXIST
    );
    // a file created read-only can still be written through the creating handle
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(m.m("ro"))
        .unwrap();
    f.write_all(b"written")
        .expect("write through the handle that created a 0444 file");
    drop(f);
    assert_eq!(read(&m.t(0, "ro")), b"written");
    // O_NOFOLLOW on a symlink
    std::os::unix::fs::symlink("private", m.m("sl")).unwrap();
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(m.m("sl"))
        ),
        libc::ELOOP
    );
    // O_TMPFILE: either supported (file on a tier, invisible) or EOPNOTSUPP
    let c = cstr(m.mnt());
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
    } else {
        let e = last_errno();
        assert!(
            e == libc::EOPNOTSUPP || e == libc::EISDIR,
            "O_TMPFILE: errno {e}"
        );
    }
    assert_eq!(list(&m.mnt()), names(&["private", "ro", "sl"]));
}

#[test]
fn link_and_rename_into_a_deep_lower_only_chain() {
    // The target directory chain (deeper than PATH_MAX) exists only on tier 1;
    // link must clone it onto tier 0 (the source's tier) through directory fds.
    const DEPTH: usize = 22;
    let m = Mount::builder()
        .setup(|t| {
            let comp = CString::new("q".repeat(200)).unwrap();
            walk(&t[1], &comp, DEPTH, true).unwrap();
            write(&t[0].join("src"), "top file");
            write(&t[0].join("mv"), "moved");
        })
        .mount();
    let comp = CString::new("q".repeat(200)).unwrap();
    let deep = walk(&m.mnt(), &comp, DEPTH, false).expect("walk the deep chain through the mount");
    let root = open_dir(&m.mnt());
    let src = CString::new("src").unwrap();
    let mv = CString::new("mv").unwrap();
    let l = CString::new("l").unwrap();
    cvt(unsafe {
        libc::linkat(
            root.as_raw_fd(),
            src.as_ptr(),
            deep.as_raw_fd(),
            l.as_ptr(),
            0,
        )
    })
    .expect("link into the deep lower-only chain");
    assert_eq!(read_at_name(&deep, &l).unwrap(), b"top file");
    cvt(unsafe { libc::renameat(root.as_raw_fd(), mv.as_ptr(), deep.as_raw_fd(), mv.as_ptr()) })
        .expect("rename into the deep lower-only chain");
    assert_eq!(read_at_name(&deep, &mv).unwrap(), b"moved");
    assert_eq!(errno(lstat(&m.m("mv"))), libc::ENOENT);
    // the link lives on tier 0 (rule 5), under a cloned chain
    let t0 = walk(&m.tier(0), &comp, DEPTH, false).expect("chain cloned onto tier 0");
    assert_eq!(read_at_name(&t0, &l).unwrap(), b"top file");
}

#[test]
fn offsets_beyond_4_gib() {
    let m = Mount::builder()
        .tmpfs(1, "16m")
        .setup(|t| fs::create_dir(t[1].join("low")).unwrap())
        .mount();
    for name in ["big", "low/big"] {
        let f = create_rw(&m.m(name));
        let off = (5u64 << 30) + 123;
        f.write_at(b"far", off).unwrap();
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(&buf, b"far");
        assert_eq!(f.metadata().unwrap().len(), off + 3);
        assert_eq!(
            unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) },
            (off + 3) as i64
        );
        assert_eq!(
            unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) },
            unsafe {
                libc::lseek(
                    fs::File::open(m.tier(if name == "big" { 0 } else { 1 }).join(name))
                        .unwrap()
                        .as_raw_fd(),
                    0,
                    libc::SEEK_DATA,
                )
            },
            "SEEK_DATA on {name}"
        );
        f.set_len(6u64 << 30).unwrap();
        drop(f);
        assert_eq!(lstat(&m.m(name)).unwrap().len(), 6u64 << 30);
    }
    assert_eq!(lstat(&m.t(0, "big")).unwrap().len(), 6u64 << 30);
    assert_eq!(lstat(&m.t(1, "low/big")).unwrap().len(), 6u64 << 30);
}

#[test]
fn a_running_program_cannot_be_truncated_or_opened_for_writing() {
    // The kernel refuses with ETXTBSY; dfs must not truncate the file before
    // it does (an O_TRUNC carried inside OPEN would, and kill the program).
    let m = Mount::builder().mount();
    let bin = m.m("prog");
    fs::copy("/bin/sleep", &bin).unwrap();
    fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let len = fs::metadata("/bin/sleep").unwrap().len();
    let mut child = std::process::Command::new(&bin).arg("30").spawn().unwrap();
    for (what, flags) in [
        ("O_WRONLY", libc::O_WRONLY),
        ("O_RDWR", libc::O_RDWR),
        ("O_RDONLY|O_TRUNC", libc::O_RDONLY | libc::O_TRUNC),
        ("O_WRONLY|O_TRUNC", libc::O_WRONLY | libc::O_TRUNC),
    ] {
        let r = fs::OpenOptions::new()
            .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
            .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
            .custom_flags(flags & libc::O_TRUNC)
            .open(&bin);
        assert_eq!(
            r.err().and_then(|e| e.raw_os_error()),
            Some(libc::ETXTBSY),
            "{what} on a running program"
        );
        assert_eq!(
            fs::metadata(m.t(0, "prog")).unwrap().len(),
            len,
            "after {what}"
        );
    }
    // Reading it is fine (dfs's read-write open of the tier file is refused
    // with ETXTBSY, and it falls back to what the client asked for).
    assert_eq!(fs::read(&bin).unwrap(), fs::read("/bin/sleep").unwrap());
    assert!(child.try_wait().unwrap().is_none(), "the program died");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fs::read(&bin).unwrap(), fs::read("/bin/sleep").unwrap());
}

#[test]
fn a_listing_returns_every_name_present_throughout_exactly_once_while_the_directory_changes() {
    // Names are added and removed (through the mount) in the middle of a
    // listing read in small pieces: names present throughout must each
    // come exactly once, and no name twice (POSIX; what ext4 gives).
    let m = Mount::builder()
        .setup(|t| {
            fs::create_dir(t[0].join("d")).unwrap();
            fs::create_dir(t[1].join("d")).unwrap();
            for i in 0..3000 {
                fs::File::create(t[i % 2].join(format!("d/n{i:04}"))).unwrap();
            }
        })
        .mount();
    let dir = fs::File::open(m.m("d")).unwrap();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 1024];
    let mut read_some = |limit: usize, seen: &mut Vec<Vec<u8>>| -> bool {
        let mut got = 0;
        while got < limit {
            let Some(batch) = getdents_once(dir.as_raw_fd(), &mut buf) else {
                return false;
            };
            for (name, _) in batch {
                if name != b"." && name != b".." {
                    seen.push(name);
                    got += 1;
                }
            }
        }
        true
    };
    assert!(read_some(1000, &mut seen));
    let mut removed = HashSet::new();
    for i in (0..3000).step_by(10) {
        let name = format!("n{i:04}");
        fs::remove_file(m.m(&format!("d/{name}"))).unwrap();
        removed.insert(name.into_bytes());
    }
    for i in 0..300 {
        fs::File::create(m.m(&format!("d/new{i:03}"))).unwrap();
    }
    while read_some(usize::MAX, &mut seen) {}
    let mut counts: std::collections::HashMap<&[u8], usize> = Default::default();
    for n in &seen {
        *counts.entry(n).or_default() += 1;
    }
    let twice: Vec<_> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
    for i in 0..3000 {
        let name = format!("n{i:04}").into_bytes();
        if !removed.contains(&name) {
            assert_eq!(
                counts.get(name.as_slice()),
                Some(&1),
                "{} was present throughout",
                String::from_utf8_lossy(&name)
            );
        }
    }
}

#[test]
fn listed_entries_carry_the_inode_number_and_type_stat_gives_whether_or_not_the_kernel_holds_them()
{
    // Names the kernel has not looked up come with their attributes
    // (readdirplus); names it holds come as names only. Either way each
    // entry's d_ino and d_type must be what stat says, as on ext4.
    use std::os::unix::fs::DirEntryExt;
    let m = Mount::builder()
        .setup(|t| {
            fs::create_dir_all(t[1].join("d/sub")).unwrap();
            fs::write(t[1].join("d/lower"), b"x").unwrap();
        })
        .mount();
    fs::write(m.m("d/upper"), b"y").unwrap();
    std::os::unix::fs::symlink("upper", m.m("d/link")).unwrap();
    let check = |when: &str| {
        let mut seen = 0;
        for e in fs::read_dir(m.m("d")).unwrap() {
            let e = e.unwrap();
            let st = lstat(&e.path()).unwrap();
            assert_eq!(e.ino(), st.ino(), "{when}: d_ino of {:?}", e.file_name());
            assert_eq!(
                e.file_type().unwrap(),
                st.file_type(),
                "{when}: d_type of {:?}",
                e.file_name()
            );
            seen += 1;
        }
        assert_eq!(seen, 4, "{when}");
    };
    // lower and sub were never looked up (full entries); upper and link
    // are held since their creation (names only).
    check("after creates");
    // Now every name is held, and a listing after a change comes from dfs
    // again.
    fs::write(m.m("d/new"), b"z").unwrap();
    fs::remove_file(m.m("d/new")).unwrap();
    check("with every name held");
}
