//! Mounting: the tier set, the core and the FUSE session, run until
//! unmounted. `dfs mount` uses it; so can a program that brings its own
//! statically linked [`Policy`] (see examples/static_policy.rs).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{check_mountpoint, parse_options};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fs::{Fs, Options};
use crate::fuse::{CacheTimes, FuseFs, Lifetimes};
use crate::policy::Policy;
use crate::tiers::TierSet;

/// Mounts the tiers of `cfg` on `mountpoint`, placing new names with
/// `policy`, and serves until a signal (SIGINT, SIGTERM, SIGHUP) or an
/// external unmount ends the session. `extra_options` are `-o` words that
/// add to or override the config's `[mount] options`; `adopt` accepts tiers
/// whose marker is missing or stale.
pub fn run(
    cfg: &Config,
    mountpoint: &Path,
    extra_options: &[String],
    adopt: bool,
    policy: Arc<dyn Policy>,
) -> Result<()> {
    run_with(cfg, mountpoint, extra_options, adopt, policy, None)
}

/// Like [`run`], calling `on_ready` once the mount is in place and served
/// (the fstab helper uses it to let mount(8) return).
pub fn run_with(
    cfg: &Config,
    mountpoint: &Path,
    extra_options: &[String],
    adopt: bool,
    policy: Arc<dyn Policy>,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
) -> Result<()> {
    let mut opts = cfg.mount_options.clone();
    opts.extend(extra_options.iter().cloned());
    let settings = parse_options(&opts)?;
    let mp = check_mountpoint(mountpoint)?;
    // Catch the signals before mounting: one that arrives while the mount
    // is being set up must unmount it, not kill the daemon and leave a dead
    // mount behind. Pending signals are delivered once the thread below
    // starts waiting.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let tiers = TierSet::open(cfg, Some(&mp), adopt, true)?;

    // Modes from the kernel are final (it already applied the caller's
    // umask); the daemon's own umask must not mask them again.
    rustix::process::umask(rustix::fs::Mode::empty());
    raise_fd_limit();

    let names: Vec<String> = tiers
        .iter()
        .map(|t| format!("{}={}", t.name, t.path.display()))
        .collect();
    let core = Arc::new(Fs::new(
        tiers,
        policy,
        Options {
            kernel_permissions: settings.default_permissions,
        },
    ));
    if let Some(f) = std::env::var("DFS_FAULT_INTENT")
        .ok()
        .and_then(|v| crate::fs::intent::Fault::parse(&v))
    {
        log::warn!("test hook DFS_FAULT_INTENT: {f:?}");
        core.set_intent_fault(Some(f));
    }
    let recovered = core.recover_intents();
    if recovered > 0 {
        log::info!("brought {recovered} interrupted rename(s) or exchange(s) to an end");
    }
    let cleaned = core.clean_temporaries();
    if cleaned > 0 {
        log::info!("removed {cleaned} temporaries left by unfinished moves");
    }
    let mover = cfg
        .mover
        .clone()
        .map(|m| crate::mover::Mover::new(core.clone(), m));
    if let Some(m) = &mover {
        m.load_access();
    }
    let _control = crate::control::Server::start(&mp, core.clone(), mover.clone())?;
    let watch = if settings.watch {
        crate::watch::prepare(&core)
    } else {
        Err("disabled by -o nowatch".to_string())
    };
    // Unwatched, the lifetimes bound how long a change made directly on a
    // tier goes unseen: short unless dfs.toml says otherwise.
    let times = |default: Duration| CacheTimes {
        entry: cfg.cache.entry.unwrap_or(default),
        attr: cfg.cache.attr.unwrap_or(default),
        negative: cfg.cache.negative.unwrap_or(default),
    };
    let lifetimes = Lifetimes {
        watched: times(Duration::from_secs(30)),
        unwatched: times(Duration::from_secs(1)),
    };
    let ttl = if watch.is_ok() {
        lifetimes.watched
    } else {
        lifetimes.unwatched
    };
    // While watched, every change on a tier is reported, so dfs may keep
    // directory handles for as long as the kernel holds the directory.
    core.set_dir_cache_lifetime(match &watch {
        Ok(_) => None,
        Err(_) => Some(crate::watch::unwatched_dir_lifetime(
            lifetimes.unwatched.attr,
        )),
    });
    if settings.uring == crate::cli::Uring::On {
        enable_kernel_uring();
    }
    let fs = FuseFs::new(
        core.clone(),
        lifetimes,
        settings.passthrough,
        settings.uring,
    );

    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = settings.kernel.clone();
    fcfg.mount_options
        .push(fuser::MountOption::FSName(settings.fsname.clone()));
    fcfg.mount_options
        .push(fuser::MountOption::Subtype("dfs".into()));
    if settings.default_permissions {
        fcfg.mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    fcfg.acl = if settings.allow_other {
        fuser::SessionACL::All
    } else if settings.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    fcfg.n_threads = Some(settings.threads);
    fcfg.clone_fd = true;

    let crate::fuse::Mounted {
        session,
        mut unmounter,
    } = crate::fuse::mount(
        fs,
        &mp,
        &fcfg,
        &settings.fsname,
        settings.default_permissions,
    )
    .map_err(|e| Error::io(format!("cannot mount on {}", mp.display()), e))?;
    core.set_kernel_notifier(Arc::new(crate::fuse::NotifierInvalidate(
        session.notifier(),
    )));
    if let Some(m) = &mover {
        m.set_invalidator(Arc::new(crate::fuse::NotifierInvalidate(
            session.notifier(),
        )));
        m.spawn_schedule();
    }
    match watch {
        Ok(w) => {
            let inval = Arc::new(crate::fuse::NotifierInvalidate(session.notifier()));
            let dir_lifetime = crate::watch::unwatched_dir_lifetime(lifetimes.unwatched.attr);
            // Said first: a watcher that stops says so after this.
            core.set_mode(
                "tier changes",
                format!(
                    "watched with fanotify; the kernel caches for {:?} (entries), \
                     {:?} (attributes), {:?} (missing names)",
                    ttl.entry, ttl.attr, ttl.negative
                ),
            );
            if w.start(core.clone(), inval, dir_lifetime) != crate::watch::Mode::Watching {
                core.set_mode(
                    "tier changes",
                    "not watched (the watcher did not start; see the warning above)".into(),
                );
            }
        }
        Err(why) => core.set_mode(
            "tier changes",
            format!(
                "not watched ({why}); changes made directly on a tier show within the cache \
                 lifetimes: {:?} (entries), {:?} (attributes), {:?} (missing names)",
                ttl.entry, ttl.attr, ttl.negative
            ),
        ),
    }

    let sig_mp = mp.clone();
    std::thread::Builder::new()
        .name("dfs-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: unmounting {}", sig_mp.display());
                if let Err(e) = unmounter.unmount() {
                    log::error!("unmount of {} failed: {e}", sig_mp.display());
                }
            }
        })
        .map_err(|e| Error::io("cannot start the signal thread", e))?;

    log::info!(
        "mounted {} on {} (policy {}, {} threads, {}{})",
        names.join(" "),
        mp.display(),
        core.policy().name(),
        settings.threads,
        if settings.allow_other {
            "allow_other"
        } else {
            "owner only"
        },
        if settings.default_permissions {
            ", default_permissions"
        } else {
            ""
        },
    );
    if let Some(ready) = on_ready {
        ready();
    }
    let ended = session.run();
    if let Some(m) = &mover {
        m.shutdown();
    }
    ended.map_err(|e| Error::io(format!("session on {} ended", mp.display()), e))?;
    log::info!("unmounted {}", mp.display());
    Ok(())
}

fn raise_fd_limit() {
    if let Some(lim) = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(lim),
                maximum: Some(lim),
            },
        );
    }
}

/// The kernel's switch for FUSE over io_uring (`fuse.enable_uring`). It only
/// lets FUSE daemons ask for io_uring at INIT; those that do not ask are
/// unaffected.
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Turns `fuse.enable_uring` on for `-o uring=on`. Failing is not an error:
/// the mount then uses /dev/fuse and says so.
fn enable_kernel_uring() {
    match std::fs::read_to_string(ENABLE_URING) {
        Ok(v) if v.trim() == "Y" => {}
        Ok(_) => match std::fs::write(ENABLE_URING, "Y") {
            Ok(()) => log::info!("turned on the kernel's FUSE io_uring support ({ENABLE_URING})"),
            Err(e) => log::warn!("-o uring=on: cannot turn on {ENABLE_URING}: {e}"),
        },
        Err(e) => log::warn!("-o uring=on: this kernel has no FUSE io_uring ({ENABLE_URING}: {e})"),
    }
}
