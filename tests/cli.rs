//! The command line: help, version, check, error messages, signals, options.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs dfs, expects a non-zero exit with a message on stderr and no panic,
/// and that nothing got mounted on `mnt`. Returns stderr.
#[track_caller]
fn expect_failure(args: &[OsString], mnt: &Path) -> String {
    let (st, out, err) = run_dfs(args);
    assert!(
        !st.success(),
        "dfs {args:?} succeeded\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        !err.trim().is_empty(),
        "dfs {args:?} failed without a message on stderr"
    );
    assert_no_panic(&err);
    assert!(fuse_mount_at(mnt).is_none(), "dfs {args:?} left a mount");
    err
}

fn a<P: AsRef<std::ffi::OsStr>>(v: &[P]) -> Vec<OsString> {
    v.iter().map(|x| x.as_ref().to_owned()).collect()
}

fn mount_args(t0: &Path, t1: &Path, mnt: &Path) -> Vec<OsString> {
    a(&[OsString::from("mount"), t0.into(), t1.into(), mnt.into()])
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in config"))
        + 1
}

#[track_caller]
fn assert_names_file_line_key(err: &str, cfg: &Path, line: usize, key: &str) {
    let cfg_s = cfg.display().to_string();
    assert!(
        err.contains(&cfg_s),
        "message does not name the file {cfg_s}:\n{err}"
    );
    assert!(
        err.contains(&format!("dfs.toml:{line}")),
        "message does not give the line as dfs.toml:{line}:\n{err}"
    );
    assert!(
        err.contains(key),
        "message does not name the key {key}:\n{err}"
    );
}

// ---------------------------------------------------------------------------
// help, version
// ---------------------------------------------------------------------------

#[test]
fn help_and_version() {
    let (st, out, _) = run_dfs(&["--help"]);
    assert!(st.success());
    assert!(
        out.contains("mount") && out.contains("check"),
        "dfs --help:\n{out}"
    );
    let (st, out, _) = run_dfs(&["mount", "--help"]);
    assert!(st.success());
    for w in ["--config", "-o", "PSS", "SSS", "MOUNTPOINT"] {
        assert!(out.contains(w), "dfs mount --help lacks {w}:\n{out}");
    }
    assert!(
        out.contains("allow_other"),
        "dfs mount --help does not document the default options:\n{out}"
    );
    let (st, out, _) = run_dfs(&["check", "--help"]);
    assert!(st.success());
    assert!(out.contains("--config"), "dfs check --help:\n{out}");
    let (st, out, _) = run_dfs(&["--version"]);
    assert!(st.success());
    assert!(
        out.contains(env!("CARGO_PKG_VERSION")),
        "dfs --version: {out}"
    );
    let (st, _, err) = run_dfs(&["no-such-command"]);
    assert!(!st.success());
    assert!(!err.is_empty());
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

#[test]
fn check_config_prints_tiers_in_order_and_policy() {
    let m = Mount::builder()
        .tiers(3)
        .names(&["fast", "middle", "slow"])
        .policy("kind = \"parent-dir\"")
        .prepare();
    let cfg = m.config_path().unwrap();
    let (st, out, err) = run_dfs(&[OsString::from("check"), "--config".into(), cfg.into()]);
    assert!(st.success(), "dfs check failed:\n{err}");
    let mut last = 0;
    for (i, name) in ["fast", "middle", "slow"].iter().enumerate() {
        let pos = out
            .find(name)
            .unwrap_or_else(|| panic!("check output lacks {name}:\n{out}"));
        assert!(pos >= last, "tiers not in order:\n{out}");
        last = pos;
        let p = m.tier(i).display().to_string();
        assert!(out.contains(&p), "check output lacks {p}:\n{out}");
    }
    assert!(
        out.contains("parent-dir"),
        "check output lacks the policy:\n{out}"
    );
    assert!(fuse_mount_at(&m.mnt()).is_none());
}

#[test]
fn check_preset_prints_equivalent_dfs_toml() {
    let m = Mount::builder().prepare();
    let (st, out, err) = run_dfs(&[OsString::from("check"), m.tier(0).into(), m.tier(1).into()]);
    assert!(st.success(), "dfs check PSS SSS failed:\n{err}");
    let v: toml::Table = out
        .parse()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{out}"));
    let tiers = v["tier"].as_array().expect("[[tier]] array");
    assert_eq!(tiers.len(), 2);
    assert_eq!(tiers[0]["name"].as_str(), Some("pss"));
    assert_eq!(tiers[0]["path"].as_str(), Some(m.tier(0).to_str().unwrap()));
    assert_eq!(tiers[1]["name"].as_str(), Some("sss"));
    assert_eq!(tiers[1]["path"].as_str(), Some(m.tier(1).to_str().unwrap()));
    assert_eq!(v["policy"]["kind"].as_str(), Some("parent-dir"));
    let opts: Vec<&str> = v["mount"]["options"]
        .as_array()
        .expect("[mount] options")
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(opts, ["allow_other", "default_permissions"]);
    // the printed file is accepted as is, and mounts
    let cfg = m.root().join("printed.toml");
    fs::write(&cfg, &out).unwrap();
    let (st, _, err) = run_dfs(&[
        OsString::from("check"),
        "--config".into(),
        cfg.clone().into(),
    ]);
    assert!(
        st.success(),
        "dfs check --config of its own output failed:\n{err}"
    );
}

#[test]
fn printed_preset_config_mounts() {
    let probe = Mount::builder().prepare();
    let (st, out, err) = run_dfs(&[
        OsString::from("check"),
        probe.tier(0).into(),
        probe.tier(1).into(),
    ]);
    assert!(st.success(), "{err}");
    let text = out
        .replace(probe.tier(0).to_str().unwrap(), "{tier0}")
        .replace(probe.tier(1).to_str().unwrap(), "{tier1}");
    drop(probe);
    let m = Mount::with_config(&text);
    write(&m.m("f"), "x");
    assert_eq!(read(&m.t(0, "f")), b"x");
}

// ---------------------------------------------------------------------------
// errors: bad tiers and mount points
// ---------------------------------------------------------------------------

#[test]
fn error_missing_tier_directory() {
    let m = Mount::builder().prepare();
    let missing = m.root().join("nonexistent");
    for (x, y) in [(&missing, &m.tier(1)), (&m.tier(0), &missing)] {
        let err = expect_failure(&mount_args(x, y, &m.mnt()), &m.mnt());
        assert!(
            err.contains(missing.to_str().unwrap()),
            "message does not name {}:\n{err}",
            missing.display()
        );
    }
}

#[test]
fn error_tier_is_a_file() {
    let m = Mount::builder().prepare();
    let file = m.root().join("plainfile");
    write(&file, "x");
    let err = expect_failure(&mount_args(&m.tier(0), &file, &m.mnt()), &m.mnt());
    assert!(err.contains(file.to_str().unwrap()), "{err}");
}

#[test]
fn error_same_tier_twice() {
    let m = Mount::builder().prepare();
    let err = expect_failure(&mount_args(&m.tier(0), &m.tier(0), &m.mnt()), &m.mnt());
    assert!(err.contains(m.tier(0).to_str().unwrap()), "{err}");
    // the same directory spelled differently
    let alias = m.tier(0).join(".");
    expect_failure(&mount_args(&m.tier(0), &alias, &m.mnt()), &m.mnt());
    let link = m.root().join("link-to-t0");
    std::os::unix::fs::symlink(m.tier(0), &link).unwrap();
    expect_failure(&mount_args(&link, &m.tier(0), &m.mnt()), &m.mnt());
}

#[test]
fn error_tier_inside_another_tier() {
    let m = Mount::builder().prepare();
    let inner = m.tier(0).join("inner");
    fs::create_dir(&inner).unwrap();
    let err = expect_failure(&mount_args(&m.tier(0), &inner, &m.mnt()), &m.mnt());
    assert!(
        err.contains(inner.to_str().unwrap()) || err.contains(m.tier(0).to_str().unwrap()),
        "{err}"
    );
    expect_failure(&mount_args(&inner, &m.tier(0), &m.mnt()), &m.mnt());
}

#[test]
fn error_tier_inside_the_mount_point() {
    let m = Mount::builder().prepare();
    let inner = m.mnt().join("inner");
    fs::create_dir(&inner).unwrap();
    let err = expect_failure(&mount_args(&m.tier(0), &inner, &m.mnt()), &m.mnt());
    assert!(
        err.contains(inner.to_str().unwrap()) || err.contains(m.mnt().to_str().unwrap()),
        "{err}"
    );
    // the mount point itself as a tier
    expect_failure(&mount_args(&m.tier(0), &m.mnt(), &m.mnt()), &m.mnt());
}

#[test]
fn error_mount_point_missing_or_not_a_directory() {
    let m = Mount::builder().prepare();
    let missing = m.root().join("no-mnt");
    let err = expect_failure(&mount_args(&m.tier(0), &m.tier(1), &missing), &missing);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    let file = m.root().join("mnt-file");
    write(&file, "x");
    let err = expect_failure(&mount_args(&m.tier(0), &m.tier(1), &file), &file);
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert_eq!(read(&file), b"x");
}

#[test]
fn error_missing_arguments() {
    let m = Mount::builder().prepare();
    let (st, _, err) = run_dfs(&[OsString::from("mount"), m.tier(0).into()]);
    assert!(!st.success());
    assert!(!err.is_empty());
    assert_no_panic(&err);
}

// ---------------------------------------------------------------------------
// errors: dfs.toml
// ---------------------------------------------------------------------------

fn config_case(text: &str) -> (Mount, PathBuf) {
    let m = Mount::builder().prepare();
    let t = text
        .replace("{tier0}", m.tier(0).to_str().unwrap())
        .replace("{tier1}", m.tier(1).to_str().unwrap())
        .replace("{mnt}", m.mnt().to_str().unwrap());
    let cfg = m.root().join("dfs.toml");
    fs::write(&cfg, t).unwrap();
    (m, cfg)
}

fn mount_config(cfg: &Path, mnt: &Path) -> Vec<OsString> {
    a(&[
        OsString::from("mount"),
        "--config".into(),
        cfg.into(),
        mnt.into(),
    ])
}

fn check_config(cfg: &Path) -> Vec<OsString> {
    a(&[OsString::from("check"), "--config".into(), cfg.into()])
}

const GOOD: &str = r#"# a valid config
[[tier]]
name = "pss"
path = "{tier0}"

[[tier]]
name = "sss"
path = "{tier1}"

[policy]
kind = "parent-dir"

[mount]
options = ["allow_other", "default_permissions"]
"#;

#[test]
fn good_config_checks_and_mounts() {
    let (m, cfg) = config_case(GOOD);
    let (st, _, err) = run_dfs(&check_config(&cfg));
    assert!(st.success(), "{err}");
    drop(m);
    let m = Mount::with_config(GOOD);
    write(&m.m("x"), "x");
    assert_eq!(read(&m.t(0, "x")), b"x");
}

#[test]
fn config_unknown_top_level_key() {
    let text = GOOD.replace(
        "[[tier]]\nname = \"pss\"",
        "colour = \"blue\"\n\n[[tier]]\nname = \"pss\"",
    );
    let (m, cfg) = config_case(&text);
    let line = line_of(&text, "colour");
    for args in [mount_config(&cfg, &m.mnt()), check_config(&cfg)] {
        let err = expect_failure(&args, &m.mnt());
        assert_names_file_line_key(&err, &cfg, line, "colour");
    }
}

#[test]
fn config_unknown_key_in_tier() {
    let text = GOOD.replace("path = \"{tier1}\"", "path = \"{tier1}\"\nspeed = \"slow\"");
    let (m, cfg) = config_case(&text);
    let line = line_of(&text, "speed");
    assert_eq!(line, 9);
    for args in [mount_config(&cfg, &m.mnt()), check_config(&cfg)] {
        let err = expect_failure(&args, &m.mnt());
        assert_names_file_line_key(&err, &cfg, line, "speed");
    }
}

#[test]
fn config_unknown_key_in_policy_and_mount() {
    let text = GOOD.replace(
        "kind = \"parent-dir\"",
        "kind = \"parent-dir\"\nfavourite = 1",
    );
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
    assert_names_file_line_key(&err, &cfg, line_of(&text, "favourite"), "favourite");
    drop(m);
    let text = GOOD.replace("[mount]\n", "[mount]\nfstype = \"ext4\"\n");
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
    assert_names_file_line_key(&err, &cfg, line_of(&text, "fstype"), "fstype");
}

#[test]
fn config_wrong_types() {
    let text = GOOD.replace("name = \"sss\"", "name = 5");
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
    assert_names_file_line_key(&err, &cfg, line_of(&text, "name = 5"), "name");
    drop(m);
    let text = GOOD.replace(
        "options = [\"allow_other\", \"default_permissions\"]",
        "options = \"allow_other\"",
    );
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&check_config(&cfg), &m.mnt());
    assert_names_file_line_key(&err, &cfg, line_of(&text, "options ="), "options");
    drop(m);
    let text = GOOD.replace(
        "[[tier]]\nname = \"pss\"",
        "mountpoint = 7\n\n[[tier]]\nname = \"pss\"",
    );
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&check_config(&cfg), &m.mnt());
    assert_names_file_line_key(&err, &cfg, line_of(&text, "mountpoint = 7"), "mountpoint");
}

#[test]
fn config_syntax_error_names_file_and_line() {
    let text = GOOD.replace("kind = \"parent-dir\"", "kind = \"parent-dir");
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
    let line = line_of(&text, "kind = ");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
    assert!(
        err.contains(&format!("dfs.toml:{line}")),
        "no dfs.toml:{line} in:\n{err}"
    );
}

#[test]
fn config_unknown_policy_kind() {
    let text = GOOD.replace("kind = \"parent-dir\"", "kind = \"round-robin-ish\"");
    let (m, cfg) = config_case(&text);
    for args in [mount_config(&cfg, &m.mnt()), check_config(&cfg)] {
        let err = expect_failure(&args, &m.mnt());
        assert!(
            err.contains("round-robin-ish"),
            "message does not name the policy:\n{err}"
        );
    }
}

#[test]
fn config_missing_file() {
    let m = Mount::builder().prepare();
    let cfg = m.root().join("absent.toml");
    let err = expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
}

#[test]
fn config_tier_errors_are_checked_too() {
    let text = GOOD.replace("path = \"{tier1}\"", "path = \"{tier0}\"");
    let (m, cfg) = config_case(&text);
    expect_failure(&check_config(&cfg), &m.mnt());
    expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
    drop(m);
    let text = GOOD.replace("path = \"{tier1}\"", "path = \"{tier1}/missing\"");
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&check_config(&cfg), &m.mnt());
    assert!(err.contains("missing"), "{err}");
    expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
}

#[test]
fn config_without_mountpoint_anywhere() {
    let (m, cfg) = config_case(GOOD);
    let err = expect_failure(
        &a(&[OsString::from("mount"), "--config".into(), cfg.into()]),
        &m.mnt(),
    );
    assert!(err.to_lowercase().contains("mount"), "{err}");
}

#[test]
fn config_mountpoint_from_file() {
    let text = format!("mountpoint = \"{{mnt}}\"\n\n{GOOD}");
    let m = Mount::builder().config(&text).no_mnt_arg().mount();
    write(&m.m("f"), "via file mountpoint");
    assert_eq!(read(&m.t(0, "f")), b"via file mountpoint");
}

#[test]
fn config_mount_options_without_allow_other() {
    let text = GOOD.replace(
        "options = [\"allow_other\", \"default_permissions\"]",
        "options = [\"default_permissions\"]",
    );
    let m = Mount::with_config(&text);
    let mi = fuse_mount_at(&m.mnt()).unwrap();
    assert!(
        !mi.super_options.split(',').any(|o| o == "allow_other"),
        "{mi:?}"
    );
    write(&m.m("f"), "x");
    let c = cstr(m.m("f"));
    let r = as_user(NOBODY, NOGROUP, || {
        sys_errno(unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::stat(c.as_ptr(), &mut st)
        } as isize)
    });
    assert_eq!(
        r,
        libc::EACCES,
        "another user reached a mount without allow_other"
    );
}

// ---------------------------------------------------------------------------
// mount options, fs type, signals, logs
// ---------------------------------------------------------------------------

#[test]
fn preset_fstype_and_default_options() {
    let m = Mount::preset();
    let mi = fuse_mount_at(&m.mnt()).unwrap();
    assert_eq!(mi.fstype, "fuse.dfs", "{mi:?}");
    let opts: Vec<&str> = mi.super_options.split(',').collect();
    assert!(opts.contains(&"allow_other"), "{mi:?}");
    assert!(opts.contains(&"default_permissions"), "{mi:?}");
}

#[test]
fn o_noallow_other_keeps_the_mount_to_its_owner() {
    let m = Mount::builder().args(&["-o", "noallow_other"]).mount();
    let mi = fuse_mount_at(&m.mnt()).unwrap();
    let opts: Vec<&str> = mi.super_options.split(',').collect();
    assert!(!opts.contains(&"allow_other"), "{mi:?}");
    assert!(
        opts.contains(&"default_permissions"),
        "-o noallow_other dropped default_permissions too: {mi:?}"
    );
    write(&m.m("f"), "x");
    chmod(&m.m("f"), 0o644);
    let c = cstr(m.m("f"));
    let r = as_user(NOBODY, NOGROUP, || {
        sys_errno(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) } as isize)
    });
    assert_eq!(
        r,
        libc::EACCES,
        "another user reached a noallow_other mount"
    );
    assert_eq!(read(&m.m("f")), b"x");
}

#[test]
fn o_ro_makes_the_mount_read_only() {
    let m = Mount::builder()
        .setup(|t| write(&t[0].join("f"), "x"))
        .args(&["-o", "ro"])
        .mount();
    let mi = fuse_mount_at(&m.mnt()).unwrap();
    assert!(mi.mount_options.split(',').any(|o| o == "ro"), "{mi:?}");
    assert_eq!(read(&m.m("f")), b"x");
    assert_eq!(errno(fs::write(m.m("g"), "y")), libc::EROFS);
    assert_eq!(
        errno(fs::OpenOptions::new().write(true).open(m.m("f"))),
        libc::EROFS
    );
    assert!(!exists(&m.t(0, "g")));
}

#[test]
fn sigterm_unmounts_cleanly() {
    let mut m = Mount::preset();
    write(&m.m("f"), "x");
    let (st, gone) = m.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    let st = st.expect("dfs still running 5 s after SIGTERM");
    assert!(
        st.success(),
        "exit status after SIGTERM: {st}\n{}",
        m.stderr()
    );
    assert!(gone, "mount still present after dfs exited on SIGTERM");
    assert_no_panic(&m.stderr());
    assert_eq!(read(&m.t(0, "f")), b"x");
}

#[test]
fn sigint_unmounts_cleanly() {
    let mut m = Mount::preset();
    let (st, gone) = m.signal_and_wait(libc::SIGINT, Duration::from_secs(5));
    let st = st.expect("dfs still running 5 s after SIGINT");
    assert!(
        st.success(),
        "exit status after SIGINT: {st}\n{}",
        m.stderr()
    );
    assert!(gone, "mount still present after dfs exited on SIGINT");
}

#[test]
fn sigterm_while_a_file_is_open() {
    // The mount leaves the namespace at once; the open file keeps working;
    // dfs exits cleanly once it is closed.
    let mut m = Mount::preset();
    write(&m.m("f"), "still readable");
    let f = fs::File::open(m.m("f")).unwrap();
    let (st, _gone) = m.signal_and_wait(libc::SIGTERM, Duration::from_millis(1500));
    if st.is_none() {
        assert!(
            wait_until(Duration::from_secs(2), || fuse_mount_at(&m.mnt()).is_none()),
            "SIGTERM with an open file: dfs neither exited nor detached the mount"
        );
        let mut s = String::new();
        use std::io::Read;
        (&f).read_to_string(&mut s)
            .expect("open file after the detach");
        assert_eq!(s, "still readable");
        drop(f);
        let (st, _) = m.signal_and_wait(0, Duration::from_secs(5));
        let st = st.expect("dfs still running 5 s after the last open file was closed");
        assert!(st.success(), "exit status {st}\n{}", m.stderr());
    } else if let Some(st) = st {
        assert!(st.success(), "exit status {st:?}\n{}", m.stderr());
        assert!(fuse_mount_at(&m.mnt()).is_none());
    }
}

#[test]
fn rust_log_debug_logs_to_stderr() {
    let m = Mount::builder().env("RUST_LOG", "debug").mount();
    write(&m.m("f"), "x");
    let _ = read(&m.m("f"));
    assert!(
        wait_until(Duration::from_secs(2), || m.stderr().lines().count() > 3),
        "no debug log on stderr:\n{}",
        m.stderr()
    );
}

#[test]
fn startup_says_which_io_mode_is_used() {
    let m = Mount::preset();
    let _ = try_read(&m.mnt().join("missing"));
    let log = m.stderr().to_lowercase();
    assert!(
        log.contains("passthrough") || log.contains("through the daemon"),
        "dfs did not say whether passthrough is in use:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// a tier that lost its identity (rule 11), through the command line
// ---------------------------------------------------------------------------

#[test]
fn lost_marker_refused_naming_the_preset_tier() {
    let mut m = Mount::preset();
    m.unmount();
    fs::remove_dir_all(m.t(1, ".dfs")).expect("tier 1 had no .dfs");
    let (st, err) = m.start_expect_failure();
    assert!(!st.success());
    assert_no_panic(&err);
    assert!(
        err.contains("sss") || err.contains(m.tier(1).to_str().unwrap()),
        "message does not name the tier:\n{err}"
    );
    assert!(fuse_mount_at(&m.mnt()).is_none());
}

#[test]
fn lost_marker_refused_naming_the_config_tier() {
    let mut m = Mount::builder()
        .tiers(3)
        .names(&["nvme", "disks", "archive"])
        .policy("kind = \"parent-dir\"")
        .mount();
    m.unmount();
    fs::remove_dir_all(m.t(2, ".dfs")).expect("tier 2 had no .dfs");
    let (st, err) = m.start_expect_failure();
    assert!(!st.success());
    assert!(
        err.contains("archive") || err.contains(m.tier(2).to_str().unwrap()),
        "message does not name the tier:\n{err}"
    );
    assert!(fuse_mount_at(&m.mnt()).is_none());
}

#[test]
fn fresh_tiers_mount_and_remount() {
    let mut m = Mount::preset();
    write(&m.m("f"), "persist");
    m.remount();
    assert_eq!(read(&m.m("f")), b"persist");
}

#[test]
fn error_mount_point_inside_a_tier() {
    let m = Mount::builder().prepare();
    let inner = m.tier(0).join("mnt");
    fs::create_dir(&inner).unwrap();
    let err = expect_failure(&mount_args(&m.tier(0), &m.tier(1), &inner), &inner);
    assert!(
        err.contains(inner.to_str().unwrap()) || err.contains(m.tier(0).to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn config_duplicate_tier_names_and_no_tiers() {
    let text = GOOD.replace("name = \"sss\"", "name = \"pss\"");
    let (m, cfg) = config_case(&text);
    let err = expect_failure(&check_config(&cfg), &m.mnt());
    assert!(err.contains("pss"), "{err}");
    drop(m);
    let (m, cfg) = config_case("[policy]\nkind = \"parent-dir\"\n");
    let err = expect_failure(&mount_config(&cfg, &m.mnt()), &m.mnt());
    assert!(err.contains("tier"), "{err}");
}

#[test]
fn adding_a_new_empty_tier_to_an_existing_union_mounts() {
    // Only a tier the other markers know may be refused; a new one is welcome.
    let mut m = Mount::preset();
    write(&m.m("f"), "x");
    m.unmount();
    let t2 = m.root().join("t2");
    fs::create_dir(&t2).unwrap();
    let text = format!(
        "[[tier]]\nname = \"pss\"\npath = \"{}\"\n\n[[tier]]\nname = \"sss\"\npath = \"{}\"\n\n[[tier]]\nname = \"cold\"\npath = \"{}\"\n",
        m.tier(0).display(),
        m.tier(1).display(),
        t2.display()
    );
    let cfg = m.root().join("three.toml");
    fs::write(&cfg, text).unwrap();
    if let Err(e) = mounts_ok(&mount_config(&cfg, &m.mnt()), &m.mnt()) {
        panic!("adding a third tier was refused: {e}");
    }
}

#[test]
fn after_kill_9_the_dead_mount_clears_and_dfs_mounts_again() {
    let mut m = Mount::preset();
    write(&m.m("f"), "survives");
    let (st, _) = m.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    assert!(st.is_some());
    // A dead mount: ENOTCONN. Over io_uring a request can first meet the
    // ring's teardown, which the kernel ends with ECONNABORTED, until the
    // connection itself is aborted; nothing else, and never a hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut e = errno(lstat(&m.m("f")));
    while e == libc::ECONNABORTED && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        e = errno(lstat(&m.m("f")));
    }
    assert_eq!(e, libc::ENOTCONN);
    let ok = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(m.mnt())
        .status()
        .unwrap()
        .success();
    assert!(ok, "fusermount3 -u failed on the dead mount");
    assert!(!is_mounted(&m.mnt()));
    m.start_again();
    assert_eq!(read(&m.m("f")), b"survives");
}
