//! Plugin placement policies (issue 3) on real mounts: the two example
//! plugins of policies/, examples/plugin.toml, the docs' walkthrough plugin,
//! plugins that misbehave at run time, and every way loading can fail
//! (each checked on `dfs check` and on `dfs mount`: the message, exit
//! status 1, nothing mounted).
//!
//! The plugins are built by the tests themselves with a nested cargo in a
//! target directory of their own (once per test binary), then installed the
//! way an administrator would: copied into a root-owned 0755 directory.

mod common;
mod policy_support;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use policy_support::*;

// ---------------------------------------------------------------------------
// building
// ---------------------------------------------------------------------------

/// The shared libraries the tests load.
struct Built {
    by_extension: PathBuf,
    by_owner: PathBuf,
    /// Exports `dfs_policy_entry_v1`, but its table says ABI version 999.
    abi999: PathBuf,
    /// Panics, returns nonsense or an errno, depending on the file name.
    misbehave: PathBuf,
    /// The round-robin plugin of docs/policies.md, verbatim.
    round_robin: PathBuf,
}

static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();

fn built() -> &'static Built {
    BUILT
        .get_or_init(build_all)
        .as_ref()
        .unwrap_or_else(|e| panic!("building the test plugins failed:\n{e}"))
}

fn build_all() -> Result<Built, String> {
    cargo_build(
        &repo(),
        &[
            "build",
            "-p",
            "dfs-policy-by-extension",
            "-p",
            "dfs-policy-by-owner",
        ],
    )?;
    let crates = write_test_crates();
    cargo_build(&crates, &["build"])?;
    let out = nested_target_dir().join("debug");
    let b = Built {
        by_extension: out.join("libdfs_policy_by_extension.so"),
        by_owner: out.join("libdfs_policy_by_owner.so"),
        abi999: out.join("libdfs_test_abi999.so"),
        misbehave: out.join("libdfs_test_misbehave.so"),
        round_robin: out.join("libdfs_policy_round_robin.so"),
    };
    for p in [
        &b.by_extension,
        &b.by_owner,
        &b.abi999,
        &b.misbehave,
        &b.round_robin,
    ] {
        if !p.is_file() {
            return Err(format!("the build did not produce {}", p.display()));
        }
    }
    Ok(b)
}

/// A fenced block of docs/policies.md, from the line `first` (trimmed) to
/// the closing fence, without the list indentation.
fn doc_block(md: &str, first: &str) -> String {
    let lines: Vec<&str> = md.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == first)
        .unwrap_or_else(|| panic!("docs/policies.md has no block starting with `{first}`"));
    let indent = lines[start].len() - lines[start].trim_start().len();
    let mut out = String::new();
    for l in &lines[start..] {
        if l.trim() == "```" {
            return out;
        }
        out += l.get(indent..).unwrap_or(l.trim_start());
        out += "\n";
    }
    panic!("docs/policies.md: block `{first}` is not closed");
}

/// Writes a small workspace of test plugins (outside the dfs workspace,
/// with a `[workspace]` of its own) and returns its directory.
fn write_test_crates() -> PathBuf {
    let dir = nested_target_dir().join("test-crates");
    let sdk = repo().join("policies/sdk");
    let sdk_dep = format!("dfs-policy-sdk = {{ path = \"{}\" }}\n", sdk.display());
    write_if_changed(
        &dir.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"abi999\", \"misbehave\", \"round-robin\"]\n",
    );
    let manifest = |name: &str| {
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{sdk_dep}"
        )
    };
    write_if_changed(&dir.join("abi999/Cargo.toml"), &manifest("dfs-test-abi999"));
    write_if_changed(
        &dir.join("abi999/src/lib.rs"),
        r#"//! A plugin built for another (future) ABI: its table says version 999.
use std::ffi::c_char;

use dfs_policy_sdk::{PolicyPlugin, RawPolicyApi, Request, Tier, errno};

pub struct Future;

impl PolicyPlugin for Future {
    fn new(_options: &str) -> Result<Self, String> {
        Ok(Future)
    }
    fn choose(&self, _req: &Request<'_>, tiers: &[Tier<'_>]) -> Result<usize, i32> {
        tiers.first().map(|t| t.index).ok_or(errno::ENOSPC)
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn dfs_policy_entry_v1() -> *const RawPolicyApi {
    static API: RawPolicyApi = RawPolicyApi {
        abi_version: 999,
        name: b"future\0".as_ptr() as *const c_char,
        create: dfs_policy_sdk::__create::<Future>,
        choose: dfs_policy_sdk::__choose::<Future>,
        destroy: dfs_policy_sdk::__destroy::<Future>,
    };
    &API
}
"#,
    );
    write_if_changed(
        &dir.join("misbehave/Cargo.toml"),
        &manifest("dfs-test-misbehave"),
    );
    write_if_changed(
        &dir.join("misbehave/src/lib.rs"),
        r#"//! A plugin that misbehaves on request, by the new name's file name:
//! `panic*` panics, `nonsense*` returns tier 99, `eperm*` returns EPERM;
//! anything else goes to the tier named by the option `to`.
//! The option `panic_in_new = true` panics while reading the options.
use dfs_policy_sdk::{PolicyPlugin, Request, Tier, errno, export_policy};

pub struct Misbehave {
    to: String,
}

impl PolicyPlugin for Misbehave {
    fn new(options: &str) -> Result<Self, String> {
        if options.contains("panic_in_new") {
            panic!("misbehave: asked to panic in new");
        }
        let to = options
            .lines()
            .find_map(|l| l.trim().strip_prefix("to = \"")?.strip_suffix('"'))
            .unwrap_or("")
            .to_string();
        Ok(Misbehave { to })
    }

    fn choose(&self, req: &Request<'_>, tiers: &[Tier<'_>]) -> Result<usize, i32> {
        let name = req
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("panic") {
            panic!("misbehave: asked to panic for {name}");
        }
        if name.starts_with("nonsense") {
            return Ok(99);
        }
        if name.starts_with("eperm") {
            return Err(errno::EPERM);
        }
        tiers
            .iter()
            .find(|t| t.name == self.to)
            .or(tiers.first())
            .map(|t| t.index)
            .ok_or(errno::ENOSPC)
    }
}

export_policy!(Misbehave, "misbehave");
"#,
    );
    // The walkthrough of docs/policies.md, as a reader would copy it.
    let md = fs::read_to_string(repo().join("docs/policies.md")).expect("read docs/policies.md");
    let toml = doc_block(&md, "# Cargo.toml");
    let placeholder = "dfs-policy-sdk = { path = \"/path/to/dfs/policies/sdk\" }\n";
    assert!(
        toml.contains(placeholder),
        "docs/policies.md's Cargo.toml no longer has `{placeholder}`:\n{toml}"
    );
    write_if_changed(
        &dir.join("round-robin/Cargo.toml"),
        &toml.replace(placeholder, &sdk_dep),
    );
    write_if_changed(
        &dir.join("round-robin/src/lib.rs"),
        &doc_block(&md, "// src/lib.rs"),
    );
    dir
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Two tiers pss and sss (the harness's tier0/tier1) and a plugin policy.
fn plugin_config(lib: &Path, options: &str) -> String {
    let mut policy = format!("kind = \"plugin\"\npath = \"{}\"\n", lib.display());
    if !options.is_empty() {
        policy += &format!("\n[policy.options]\n{options}\n");
    }
    tiers_config(&[("pss", None), ("sss", None)], &policy)
}

/// `dfs check` accepts the mount's config and names `policy`.
#[track_caller]
fn assert_check_ok(m: &Mount, policy: &str) {
    let (ok, code, out, err) = dfs_check(&m.config_path().unwrap());
    assert!(ok && code == Some(0), "dfs check failed ({code:?}):\n{err}");
    assert!(out.contains(&format!("policy: {policy}\n")), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
}

/// Both `dfs check --config` and `dfs mount --config` refuse `config`:
/// exit status 1, every needle in stderr, nothing mounted.
#[track_caller]
fn assert_refused(config: &str, needles: &[&str]) {
    let m = Mount::builder().config(config).prepare();
    let cfg = m.config_path().unwrap();
    let (ok, code, out, err) = dfs_check(&cfg);
    assert!(
        !ok && code == Some(1),
        "dfs check accepted it ({code:?}):\n{out}\n{err}\nconfig:\n{config}"
    );
    assert!(!out.contains("\nok"), "dfs check said ok:\n{out}");
    for n in needles {
        assert!(err.contains(n), "dfs check: stderr lacks {n:?}:\n{err}");
    }
    let args: Vec<OsString> = vec![
        "mount".into(),
        "--config".into(),
        cfg.clone().into(),
        m.mnt().into(),
    ];
    let (st, _out, err) = run_dfs_timeout(&args, Duration::from_secs(10));
    let st = st.unwrap_or_else(|| panic!("dfs mount kept running (it mounted):\n{err}"));
    assert_eq!(st.code(), Some(1), "dfs mount: {st}\n{err}");
    for n in needles {
        assert!(err.contains(n), "dfs mount: stderr lacks {n:?}:\n{err}");
    }
    assert_not_mounted(&m.mnt());
}

/// "policy plugin PATH" as the messages start.
fn named(p: &Path) -> String {
    format!("policy plugin {}", p.display())
}

// ---------------------------------------------------------------------------
// the example plugins on real mounts
// ---------------------------------------------------------------------------

#[test]
fn by_extension_plugin_places_files_by_extension() {
    let (_dir, so) = install_plugin(&built().by_extension, "libdfs_policy_by_extension.so");
    let m = Mount::builder()
        .config(&plugin_config(
            &so,
            "extensions = { iso = \"sss\", tmp = \"pss\" }",
        ))
        .setup(|t| {
            mkdirs(&t[0].join("media"));
            mkdirs(&t[1].join("cold"));
        })
        .prepare();
    assert_check_ok(&m, "by-extension");
    let mut m = m;
    m.start_again();
    for (rel, want) in [
        ("media/notes.txt", 0), // no extension rule: parent-dir
        ("media/film.iso", 1),
        ("media/FILM2.ISO", 1), // extensions are compared in lower case
        ("top.iso", 1),
        ("cold/y.txt", 1), // parent-dir
        ("cold/x.tmp", 0),
        ("media/noext", 0),
    ] {
        assert_eq!(create_new(&m.m(rel)), Ok(()), "{rel}");
        assert_eq!(tier_of(&m, rel), want, "{rel}");
    }
    assert!(
        lstat(&m.t(1, "media")).unwrap().is_dir(),
        "media/ not cloned onto sss"
    );
    // Only files are placed by extension.
    assert_eq!(mkdir(&m.m("media/dir.iso")), Ok(()));
    assert_eq!(tier_of(&m, "media/dir.iso"), 0);
    assert_eq!(symlink("film.iso", &m.m("media/link.iso")), Ok(()));
    assert_eq!(tier_of(&m, "media/link.iso"), 0);
    assert!(
        m.stderr().contains("policy by-extension"),
        "mount log does not name the plugin:\n{}",
        m.stderr()
    );
    assert_no_panic(&m.stderr());
}

#[test]
fn plugin_is_not_offered_a_tier_below_min_free() {
    let (_dir, so) = install_plugin(&built().by_extension, "libdfs_policy_by_extension.so");
    let policy = format!(
        "kind = \"plugin\"\npath = \"{}\"\n\n[policy.options]\nextensions = {{ iso = \"sss\" }}\n",
        so.display()
    );
    let m = Mount::builder()
        .tmpfs(1, "4m")
        .config(&tiers_config(
            &[("pss", None), ("sss", Some("1MiB"))],
            &policy,
        ))
        .mount();
    assert_eq!(create_new(&m.m("a.iso")), Ok(()));
    assert_eq!(tier_of(&m, "a.iso"), 1);
    let (filler, _) = fill_to(&m.tier(1), 512 * KIB);
    // by-extension falls back to parent-dir among the tiers it is offered
    assert_eq!(create_new(&m.m("b.iso")), Ok(()));
    assert_eq!(tier_of(&m, "b.iso"), 0, "sss is below min_free");
    fs::remove_file(filler).unwrap();
    assert_eq!(create_new(&m.m("c.iso")), Ok(()));
    assert_eq!(tier_of(&m, "c.iso"), 1, "sss has room again");
}

#[test]
fn by_owner_plugin_places_names_by_the_creating_uid() {
    let (_dir, so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    let m = Mount::builder()
        .config(&plugin_config(&so, "uid_tiers = { 65534 = \"sss\" }"))
        .setup(|t| {
            let d = t[0].join("drop");
            mkdirs(&d);
            chmod(&d, 0o777);
        })
        .prepare();
    assert_check_ok(&m, "by-owner");
    let mut m = m;
    m.start_again();

    assert_eq!(create_new(&m.m("drop/root.txt")), Ok(()));
    assert_eq!(tier_of(&m, "drop/root.txt"), 0, "root: parent-dir");

    let file = cstr(m.m("drop/nobody.txt"));
    let dir = cstr(m.m("drop/nobody.d"));
    let r = as_user(NOBODY, NOGROUP, || unsafe {
        let fd = libc::open(
            file.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o644,
        );
        if fd < 0 {
            return sys_errno(-1);
        }
        libc::close(fd);
        if libc::mkdir(dir.as_ptr(), 0o755) != 0 {
            return sys_errno(-1);
        }
        0
    });
    assert_eq!(r, 0, "uid 65534 could not create (errno {r})");
    assert_eq!(tier_of(&m, "drop/nobody.txt"), 1, "uid 65534 -> sss");
    assert_eq!(tier_of(&m, "drop/nobody.d"), 1, "uid 65534 -> sss");
    let st = lstat(&m.t(1, "drop/nobody.txt")).unwrap();
    assert_eq!((st.uid(), st.gid()), (NOBODY, NOGROUP));
    assert_eq!(mode(&m.t(1, "drop")), 0o777, "drop/ cloned with its mode");
    // root again, under the directory uid 65534 made on sss: parent-dir
    assert_eq!(create_new(&m.m("drop/nobody.d/root.txt")), Ok(()));
    assert_eq!(tier_of(&m, "drop/nobody.d/root.txt"), 1);
    assert_no_panic(&m.stderr());
}

#[test]
fn example_plugin_toml_is_accepted_and_places_as_its_comments_say() {
    let (_dir, so) = install_plugin(&built().by_extension, "libdfs_policy_by_extension.so");
    let (text, names) = example_config("plugin.toml", Some(&so));
    assert_eq!(names, ["pss", "sss"]);
    let mut m = Mount::builder()
        .config(&text)
        .no_mnt_arg()
        .setup(|t| {
            mkdirs(&t[0].join("fast"));
            mkdirs(&t[1].join("slow"));
        })
        .prepare();
    assert_check_ok(&m, "by-extension");
    m.start_again();
    // "`.iso` and `.mp4` files go to sss, `.tmp` files to pss, everything
    // else by the parent-dir rule"
    for (rel, want) in [
        ("fast/other.txt", 0),
        ("slow/other.txt", 1),
        ("fast/film.iso", 1),
        ("fast/clip.mp4", 1),
        ("slow/scratch.tmp", 0),
        ("top.txt", 0),
    ] {
        assert_eq!(create_new(&m.m(rel)), Ok(()), "{rel}");
        assert_eq!(tier_of(&m, rel), want, "{rel}");
    }
}

#[test]
fn docs_walkthrough_plugin_builds_loads_and_takes_turns() {
    let (_dir, so) = install_plugin(&built().round_robin, "libdfs_policy_round_robin.so");
    let mut m = Mount::builder().config(&plugin_config(&so, "")).prepare();
    assert_check_ok(&m, "round-robin");
    m.start_again();
    let got: Vec<usize> = (0..6)
        .map(|i| {
            let rel = format!("f{i}");
            assert_eq!(create_new(&m.m(&rel)), Ok(()), "{rel}");
            tier_of(&m, &rel)
        })
        .collect();
    assert_eq!(got, [0, 1, 0, 1, 0, 1]);
    drop(m);
    assert_refused(
        &plugin_config(&so, "x = 1"),
        &[
            &named(&so),
            "rejected its options",
            "round-robin takes no options",
        ],
    );
}

// ---------------------------------------------------------------------------
// a plugin that fails at run time fails one create, never the mount
// ---------------------------------------------------------------------------

#[test]
fn misbehaving_plugin_fails_one_create_and_the_mount_keeps_serving() {
    let (_dir, so) = install_plugin(&built().misbehave, "libdfs_test_misbehave.so");
    let m = Mount::builder()
        .config(&plugin_config(&so, "to = \"sss\""))
        .mount();
    assert_eq!(create_new(&m.m("ok1")), Ok(()));
    assert_eq!(tier_of(&m, "ok1"), 1);

    // a panic inside the plugin: EIO for that create, and a log line
    assert_eq!(create_new(&m.m("panic-file")), Err(libc::EIO));
    assert_eq!(mkdir(&m.m("panic-dir")), Err(libc::EIO));
    assert_eq!(symlink("ok1", &m.m("panic-link")), Err(libc::EIO));
    let log = m.stderr();
    assert!(
        log.contains("policy plugin `misbehave`") && log.contains("failed for"),
        "no log line for the panic:\n{log}"
    );
    // a tier that does not exist: EIO and a log line
    assert_eq!(create_new(&m.m("nonsense-file")), Err(libc::EIO));
    let log = m.stderr();
    assert!(
        log.contains("chose tier 99") && log.contains("not one of the tiers offered"),
        "no log line for the nonsense index:\n{log}"
    );
    // an errno from the plugin is what the create fails with
    assert_eq!(create_new(&m.m("eperm-file")), Err(libc::EPERM));
    for n in [
        "panic-file",
        "panic-dir",
        "panic-link",
        "nonsense-file",
        "eperm-file",
    ] {
        assert_eq!(tiers_holding(&m, n), Vec::<usize>::new(), "{n} left behind");
    }
    // still serving
    assert_eq!(create_new(&m.m("ok2")), Ok(()));
    assert_eq!(tier_of(&m, "ok2"), 1);
    assert_eq!(read(&m.m("ok1")), b"");
    assert!(fuse_mount_at(&m.mnt()).is_some());
    let pid = m.pid().unwrap();
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "dfs died");
}

// ---------------------------------------------------------------------------
// loading errors: message, exit status 1, nothing mounted
// ---------------------------------------------------------------------------

#[test]
fn plugin_file_missing_is_refused() {
    let (dir, _so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    let missing = dir.path().join("libnope.so");
    assert_refused(
        &plugin_config(&missing, ""),
        &[&named(&missing), "no such file"],
    );
}

#[test]
fn plugin_that_is_a_text_file_is_refused() {
    let (dir, _so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    let text = dir.path().join("libtext.so");
    write(&text, "this is not a shared library\n");
    chmod(&text, 0o644);
    assert_refused(
        &plugin_config(&text, ""),
        &[&named(&text), "is not a loadable shared library"],
    );
}

#[test]
fn plugin_that_is_an_executable_is_refused() {
    let (dir, _so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    let exe = dir.path().join("libtrue.so");
    fs::copy("/bin/true", &exe).unwrap();
    chmod(&exe, 0o755);
    assert_refused(
        &plugin_config(&exe, ""),
        &[&named(&exe), "is not a loadable shared library"],
    );
}

/// A real shared library that is not a dfs plugin.
fn system_library() -> PathBuf {
    for c in [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/aarch64-linux-gnu/libz.so.1",
        "/usr/lib/aarch64-linux-gnu/libz.so.1",
        "/lib64/libz.so.1",
        "/usr/lib64/libz.so.1",
        "/usr/lib/libz.so.1",
    ] {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    // Every Rust test binary maps libgcc_s.
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("libgcc_s.so"))
        .map(PathBuf::from)
        .expect("no system shared library found (libz, libgcc_s)")
}

#[test]
fn plugin_without_the_entry_symbol_is_refused() {
    let (dir, _so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    let lib = dir.path().join("libnotaplugin.so");
    fs::copy(system_library(), &lib).unwrap();
    chmod(&lib, 0o644);
    assert_refused(
        &plugin_config(&lib, ""),
        &[&named(&lib), "has no `dfs_policy_entry_v1` symbol"],
    );
}

#[test]
fn plugin_built_for_another_abi_version_is_refused() {
    let (_dir, so) = install_plugin(&built().abi999, "libdfs_test_abi999.so");
    assert_refused(
        &plugin_config(&so, ""),
        &[
            &named(&so),
            "was built for plugin ABI version 999",
            "this dfs speaks version 1",
        ],
    );
}

#[test]
fn plugin_rejecting_its_options_is_refused() {
    let (_d1, ext) = install_plugin(&built().by_extension, "libdfs_policy_by_extension.so");
    assert_refused(
        &plugin_config(&ext, "extensions = { iso = \"sss\" }\ncolour = \"blue\""),
        &[
            &named(&ext),
            "plugin `by-extension` rejected its options",
            "unknown option `colour` (expected `extensions`)",
        ],
    );
    assert_refused(
        &plugin_config(&ext, ""),
        &[
            "plugin `by-extension` rejected its options",
            "no `extensions` given",
        ],
    );
    let (_d2, owner) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    assert_refused(
        &plugin_config(&owner, "uid_tiers = { nobody = \"sss\" }"),
        &[
            &named(&owner),
            "plugin `by-owner` rejected its options",
            "`nobody` is not a numeric uid",
        ],
    );
}

#[test]
fn plugin_panicking_on_its_options_is_refused() {
    let (_dir, so) = install_plugin(&built().misbehave, "libdfs_test_misbehave.so");
    assert_refused(
        &plugin_config(&so, "panic_in_new = true"),
        &[
            &named(&so),
            "plugin `misbehave` rejected its options",
            "panicked",
        ],
    );
}

const WRITABLE: &str = "is writable by users other than its owner and root";

#[test]
fn plugin_file_writable_by_others_is_refused() {
    let (_dir, so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    chmod(&so, 0o646);
    assert_refused(
        &plugin_config(&so, ""),
        &[
            &named(&so),
            &format!("the file ({})", so.display()),
            WRITABLE,
        ],
    );
}

#[test]
fn plugin_file_writable_by_its_group_is_refused() {
    let (_dir, so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    std::os::unix::fs::chown(&so, Some(0), Some(NOGROUP)).unwrap();
    chmod(&so, 0o664);
    assert_refused(
        &plugin_config(&so, ""),
        &[
            &named(&so),
            &format!("the file ({})", so.display()),
            WRITABLE,
        ],
    );
}

#[test]
fn plugin_directory_writable_by_others_is_refused() {
    let (dir, so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    chmod(dir.path(), 0o757);
    assert_refused(
        &plugin_config(&so, ""),
        &[
            &named(&so),
            &format!("its directory ({})", dir.path().display()),
            WRITABLE,
        ],
    );
}

#[test]
fn plugin_directory_writable_by_its_group_is_refused() {
    let (dir, so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    std::os::unix::fs::chown(dir.path(), Some(0), Some(NOGROUP)).unwrap();
    chmod(dir.path(), 0o775);
    assert_refused(
        &plugin_config(&so, ""),
        &[
            &named(&so),
            &format!("its directory ({})", dir.path().display()),
            WRITABLE,
        ],
    );
}

/// The configured path is a symlink in a safe directory, but the library
/// it leads to sits in a directory anyone can write: anyone could replace
/// the code dfs loads.
#[test]
fn plugin_reached_through_a_symlink_into_a_writable_directory_is_refused() {
    let (safe, _so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    let (open, real) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    chmod(open.path(), 0o777); // not sticky
    let link = safe.path().join("liblink.so");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(
        fs::metadata(open.path()).unwrap().permissions().mode() & 0o7777,
        0o777
    );
    assert_refused(&plugin_config(&link, ""), &[&named(&link), WRITABLE]);
}

/// The control for the refusals above: the same installation, untouched,
/// loads.
#[test]
fn plugin_installed_root_owned_0755_is_accepted() {
    let (dir, so) = install_plugin(&built().by_owner, "libdfs_policy_by_owner.so");
    assert_eq!(mode_of(dir.path()), 0o755);
    assert_eq!(mode_of(&so), 0o644);
    let m = Mount::builder().config(&plugin_config(&so, "")).prepare();
    assert_check_ok(&m, "by-owner");
}
