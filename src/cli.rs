//! The `dfs` command line: `mount`, `check`.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::policy;
use crate::tiers::TierSet;

/// dfs: a tiered union filesystem. Mounts an ordered stack of tier
/// directories (fastest first) as one directory; new files are placed by a
/// pluggable policy.
#[derive(Debug, Parser)]
#[command(name = "dfs", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount tiers as one directory (stays in the foreground; Ctrl-C or
    /// SIGTERM unmounts).
    ///
    /// Stock two-tier preset: `dfs mount PSS SSS MOUNTPOINT` - the union of
    /// PSS (fast) and SSS (slow), new names placed on the first tier holding
    /// their parent directory, mounted with allow_other,default_permissions.
    ///
    /// Any number of tiers: `dfs mount --config dfs.toml [MOUNTPOINT]`.
    Mount(MountArgs),
    /// Validate a config and print its tiers and policy, without mounting.
    ///
    /// `dfs check --config dfs.toml` checks a file; `dfs check PSS SSS
    /// [MOUNTPOINT]` prints the dfs.toml the preset command line stands for.
    Check(CheckArgs),
    /// Start a mover pass on a running mount now and show its progress.
    ///
    /// `--dry-run` prints what would move and why (rule, watermark or
    /// promotion), moving nothing.
    Move(MoveArgs),
    /// Show each tier's used and free space, file counts and the mover's
    /// state.
    Status(StatusArgs),
    /// Print the tier (name and backing path) holding each path.
    Where(WhereArgs),
}

#[derive(Debug, Args)]
struct MoveArgs {
    /// Print the plan instead of moving.
    #[arg(long)]
    dry_run: bool,
    /// The dfs mount point.
    mountpoint: PathBuf,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The dfs mount point.
    mountpoint: PathBuf,
}

#[derive(Debug, Args)]
struct WhereArgs {
    /// Paths inside a dfs mount.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct MountArgs {
    /// Read tiers, policy and options from this dfs.toml.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Mount options, comma separated: allow_other, noallow_other,
    /// default_permissions, nodefault_permissions, ro, rw, nodev, nosuid,
    /// noexec, noatime, sync, dirsync, fsname=NAME, threads=N,
    /// nopassthrough (serve reads and writes through the daemon),
    /// uring=auto|on|off (requests over io_uring: when the kernel offers it,
    /// also turning the kernel's support on, or never), nowatch
    /// (do not watch the tiers; short cache lifetimes bound staleness). These add to
    /// or override the config's `[mount] options`.
    #[arg(short = 'o', value_name = "OPTIONS", value_delimiter = ',')]
    options: Vec<String>,
    /// Accept tiers whose marker is missing or names another device (a
    /// tier replaced on purpose) and rewrite the markers.
    #[arg(long)]
    adopt: bool,
    /// PSS SSS MOUNTPOINT for the preset, or [MOUNTPOINT] with --config.
    #[arg(value_name = "PATHS")]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The dfs.toml to check.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// PSS SSS [MOUNTPOINT]: print the preset as a dfs.toml.
    #[arg(value_name = "PATHS")]
    paths: Vec<PathBuf>,
}

/// Entry point of the `dfs` binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let r = match cli.cmd {
        Command::Mount(a) => mount(a),
        Command::Check(a) => check(a),
        Command::Move(a) => crate::commands::move_cmd(&a.mountpoint, a.dry_run),
        Command::Status(a) => crate::commands::status(&a.mountpoint),
        Command::Where(a) => crate::commands::where_cmd(&a.paths),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dfs: error: {e}");
            1
        }
    }
}

/// Turns command-line paths into a config plus mount point.
fn resolve_config(
    config: &Option<PathBuf>,
    paths: &[PathBuf],
) -> Result<(Config, Option<PathBuf>)> {
    match config {
        Some(file) => {
            if paths.len() > 1 {
                return Err(Error::Invalid(
                    "with --config give at most one path, the mount point".into(),
                ));
            }
            let cfg = Config::load(file)?;
            let mp = paths.first().cloned().or_else(|| cfg.mountpoint.clone());
            Ok((cfg, mp))
        }
        None => match paths {
            [pss, sss, mp] => Ok((Config::preset(pss, sss, Some(mp)), Some(mp.clone()))),
            [pss, sss] => Ok((Config::preset(pss, sss, None), None)),
            _ => Err(Error::Invalid(
                "expected PSS SSS MOUNTPOINT (the two-tier preset) or --config dfs.toml \
                 [MOUNTPOINT]; see `dfs mount --help`"
                    .into(),
            )),
        },
    }
}

/// Mount settings after merging the config's options and `-o`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountSettings {
    /// `allow_other`: other users (Samba, legacy apps) may use the mount.
    pub allow_other: bool,
    /// `allow_root`: root may use the mount too.
    pub allow_root: bool,
    /// `default_permissions`: the kernel checks modes.
    pub default_permissions: bool,
    /// Options handed to the kernel as they are.
    pub kernel: Vec<fuser::MountOption>,
    /// Session threads.
    pub threads: usize,
    /// Name shown in /proc/mounts.
    pub fsname: String,
    /// Kernel passthrough I/O where available.
    pub passthrough: bool,
    /// Watch the tiers for changes made behind dfs's back.
    pub watch: bool,
    /// Whether requests travel over io_uring.
    pub uring: Uring,
}

/// How requests reach the daemon: over io_uring, one queue per CPU served
/// by threads on that CPU (a request costs a task switch, not a wakeup of
/// another CPU), or by reads and writes of /dev/fuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uring {
    /// io_uring when the kernel offers it (Linux 6.14+ with the `fuse`
    /// module's `enable_uring` on), /dev/fuse otherwise.
    Auto,
    /// As `Auto`, and turn `enable_uring` on first (root only).
    On,
    /// /dev/fuse only.
    Off,
}

/// Parses mount options in order, later ones overriding earlier ones.
pub fn parse_options(opts: &[String]) -> Result<MountSettings> {
    use fuser::MountOption as M;
    let mut s = MountSettings {
        allow_other: false,
        allow_root: false,
        default_permissions: false,
        kernel: Vec::new(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 16),
        fsname: "dfs".into(),
        passthrough: true,
        watch: true,
        uring: Uring::Auto,
    };
    let set_flag = |s: &mut MountSettings, on: M, off: M| {
        s.kernel.retain(|k| *k != on && *k != off);
        s.kernel.push(on);
    };
    for o in opts.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        match o {
            "allow_other" => s.allow_other = true,
            "noallow_other" => s.allow_other = false,
            "allow_root" => s.allow_root = true,
            "noallow_root" => s.allow_root = false,
            "default_permissions" => s.default_permissions = true,
            "nodefault_permissions" => s.default_permissions = false,
            "ro" => set_flag(&mut s, M::RO, M::RW),
            "rw" => set_flag(&mut s, M::RW, M::RO),
            "dev" => set_flag(&mut s, M::Dev, M::NoDev),
            "nodev" => set_flag(&mut s, M::NoDev, M::Dev),
            "suid" => set_flag(&mut s, M::Suid, M::NoSuid),
            "nosuid" => set_flag(&mut s, M::NoSuid, M::Suid),
            "exec" => set_flag(&mut s, M::Exec, M::NoExec),
            "noexec" => set_flag(&mut s, M::NoExec, M::Exec),
            "atime" => set_flag(&mut s, M::Atime, M::NoAtime),
            "noatime" => set_flag(&mut s, M::NoAtime, M::Atime),
            "sync" => set_flag(&mut s, M::Sync, M::Async),
            "async" => set_flag(&mut s, M::Async, M::Sync),
            "dirsync" => s.kernel.push(M::DirSync),
            "passthrough" => s.passthrough = true,
            "nopassthrough" => s.passthrough = false,
            "uring" | "uring=on" => s.uring = Uring::On,
            "nouring" | "uring=off" => s.uring = Uring::Off,
            "uring=auto" => s.uring = Uring::Auto,
            "watch" => s.watch = true,
            "nowatch" => s.watch = false,
            // fstab and mount(8) words that mean nothing to the kernel.
            "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "_netdev" | "nofail" => {
            }
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            o if o.starts_with("fsname=") => s.fsname = o["fsname=".len()..].to_string(),
            o if o.starts_with("threads=") => {
                s.threads = o["threads=".len()..]
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| (1..=256).contains(&n))
                    .ok_or_else(|| {
                        Error::Invalid(format!("mount option `{o}`: threads must be 1..256"))
                    })?;
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown mount option `{other}`; see `dfs mount --help`"
                )));
            }
        }
    }
    Ok(s)
}

/// The mount point, canonical, after checking it is an existing directory.
pub fn check_mountpoint(mp: &Path) -> Result<PathBuf> {
    let md = std::fs::metadata(mp).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::Invalid(format!("mount point {} does not exist", mp.display()))
        }
        _ => Error::io(format!("mount point {}", mp.display()), e),
    })?;
    if !md.is_dir() {
        return Err(Error::Invalid(format!(
            "mount point {} is not a directory",
            mp.display()
        )));
    }
    std::fs::canonicalize(mp).map_err(|e| Error::io(format!("mount point {}", mp.display()), e))
}

fn mount(a: MountArgs) -> Result<()> {
    let (cfg, mp) = resolve_config(&a.config, &a.paths)?;
    let mp = mp.ok_or_else(|| {
        Error::Invalid(
            "no mount point: give one on the command line or as `mountpoint` in the config".into(),
        )
    })?;
    // Validate everything cheap before loading a plugin.
    let mut opts = cfg.mount_options.clone();
    opts.extend(a.options.iter().cloned());
    parse_options(&opts)?;
    check_mountpoint(&mp)?;
    let policy = policy::from_config(&cfg)?;
    crate::mount::run(&cfg, &mp, &a.options, a.adopt, policy)
}

fn check(a: CheckArgs) -> Result<()> {
    if a.config.is_none() {
        if !(2..=3).contains(&a.paths.len()) {
            return Err(Error::Invalid(
                "expected --config dfs.toml, or PSS SSS [MOUNTPOINT] to print the preset".into(),
            ));
        }
        let (cfg, _) = resolve_config(&None, &a.paths)?;
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let (cfg, mp) = resolve_config(&a.config, &a.paths)?;
    let mp = match &mp {
        Some(m) => Some(check_mountpoint(m)?),
        None => None,
    };
    let tiers = TierSet::open(&cfg, mp.as_deref(), false, false)?;
    parse_options(&cfg.mount_options)?;
    let policy = policy::from_config(&cfg)?;
    if let Some(f) = &cfg.origin.file {
        println!("config: {}", f.display());
    }
    println!("tiers (fastest first):");
    for t in tiers.iter() {
        println!("  {}  {:<8} {}", t.index, t.name, t.path.display());
    }
    println!("policy: {}", policy.name());
    for r in &cfg.policy.rules {
        println!("  rule: {} -> {}", r.glob, r.tier);
    }
    if let Some(fb) = &cfg.policy.fallback {
        println!("  fallback: {fb}");
    }
    match &mp {
        Some(m) => println!("mount point: {}", m.display()),
        None => println!("mount point: (give one to `dfs mount`)"),
    }
    println!("mount options: {}", cfg.mount_options.join(","));
    println!("ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_in_order() {
        let s = parse_options(&[
            "allow_other".into(),
            "default_permissions".into(),
            "noallow_other".into(),
            "threads=3".into(),
        ])
        .expect("valid options");
        assert!(!s.allow_other);
        assert!(s.default_permissions);
        assert_eq!(s.threads, 3);
    }

    #[test]
    fn uring_transport_options() {
        let parse = |o: &[&str]| {
            parse_options(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("valid options")
                .uring
        };
        assert_eq!(parse(&[]), Uring::Auto);
        assert_eq!(parse(&["uring=on"]), Uring::On);
        assert_eq!(parse(&["uring"]), Uring::On);
        assert_eq!(parse(&["uring=on", "nouring"]), Uring::Off);
        assert_eq!(parse(&["uring=off", "uring=auto"]), Uring::Auto);
        assert!(parse_options(&["uring=maybe".into()]).is_err());
    }

    #[test]
    fn unknown_option_is_an_error() {
        let e = parse_options(&["bogus".into()]).expect_err("rejected");
        assert!(e.to_string().contains("unknown mount option `bogus`"));
    }
}
