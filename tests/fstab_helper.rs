//! dfs as a mount(8) helper: `mount.fuse.dfs SOURCE MOUNTPOINT -o OPTIONS`
//! returns once the mount is in place (the daemon stays behind), or fails
//! with the error and leaves nothing mounted.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Guard(std::path::PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

fn helper(dir: &std::path::Path) -> std::path::PathBuf {
    let link = dir.join("mount.fuse.dfs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dfs"), &link).unwrap();
    link
}

#[test]
fn fstab_mount_returns_once_mounted_and_unmount_stops_the_daemon() {
    let root = tempfile::tempdir().unwrap();
    let (t0, t1, mnt) = (
        root.path().join("t0"),
        root.path().join("t1"),
        root.path().join("mnt"),
    );
    for d in [&t0, &t1, &mnt] {
        fs::create_dir(d).unwrap();
    }
    fs::write(t1.join("old"), b"on sss").unwrap();
    let log = root.path().join("dfs.log");
    let _guard = Guard(mnt.clone());
    let out = Command::new(helper(root.path()))
        .arg(format!("{}:{}", t0.display(), t1.display()))
        .arg(&mnt)
        .args(["-o", &format!("defaults,nofail,log={}", log.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = fuse_mount_at(&mnt).expect("mounted when the helper returns");
    assert_eq!(m.fstype, "fuse.dfs");
    assert_eq!(fs::read(mnt.join("old")).unwrap(), b"on sss");
    fs::write(mnt.join("new"), b"x").unwrap();
    assert!(t0.join("new").exists());
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("unmounted")
    {
        assert!(
            Instant::now() < deadline,
            "daemon did not stop after umount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fstab_mount_failure_is_reported_and_mounts_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = Guard(mnt.clone());
    let out = Command::new(helper(root.path()))
        .arg("/nonexistent-tier:/also-missing")
        .arg(&mnt)
        .args([
            "-o",
            &format!("log={}", root.path().join("dfs.log").display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tier `pss` (/nonexistent-tier): does not exist"),
        "{err}"
    );
    assert!(fuse_mount_at(&mnt).is_none());
}
