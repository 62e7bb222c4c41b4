//! `mount.fuse.dfs`: dfs as a mount(8) helper, for /etc/fstab.
//!
//! Install with `ln -s /usr/local/bin/dfs /sbin/mount.fuse.dfs`, then:
//!
//! ```text
//! /mnt/fast:/mnt/slow      /srv/documents  fuse.dfs  defaults,nofail  0 0
//! /etc/dfs/documents.toml  /srv/documents  fuse.dfs  defaults,nofail  0 0
//! ```
//!
//! mount(8) runs `mount.fuse.dfs SOURCE MOUNTPOINT -o OPTIONS`. The source
//! is `PSS:SSS` (the stock preset) or a dfs.toml path. The helper forks a
//! daemon, waits until the mount is in place (or failed) and returns, as
//! mount helpers must. The daemon logs to `log=PATH` (default
//! `/var/log/dfs.log`); `adopt` in the options is `--adopt`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};

struct Args {
    source: String,
    mountpoint: PathBuf,
    options: Vec<String>,
    log: PathBuf,
    adopt: bool,
}

fn parse(args: &[OsString]) -> Result<Args> {
    let mut pos: Vec<String> = Vec::new();
    let mut options = Vec::new();
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => {
                let o = it
                    .next()
                    .ok_or_else(|| Error::Invalid("-o needs options".into()))?;
                options.extend(o.split(',').map(str::to_string));
            }
            // mount(8) flags that need nothing from dfs.
            "-n" | "-v" | "-s" | "-f" | "-r" | "-w" => {}
            s if s.starts_with("-o") => options.extend(s[2..].split(',').map(str::to_string)),
            _ => pos.push(a),
        }
    }
    let [source, mountpoint] = <[String; 2]>::try_from(pos).map_err(|_| {
        Error::Invalid("usage: mount.fuse.dfs PSS:SSS|dfs.toml MOUNTPOINT [-o OPTIONS]".into())
    })?;
    let mut log = PathBuf::from("/var/log/dfs.log");
    let mut adopt = false;
    options.retain(|o| {
        if let Some(p) = o.strip_prefix("log=") {
            log = PathBuf::from(p);
            false
        } else if o == "adopt" {
            adopt = true;
            false
        } else {
            !o.is_empty()
        }
    });
    Ok(Args {
        source,
        mountpoint: PathBuf::from(mountpoint),
        options,
        log,
        adopt,
    })
}

fn config_of(source: &str, mountpoint: &Path) -> Result<Config> {
    if source.ends_with(".toml") || Path::new(source).is_file() {
        return Config::load(Path::new(source));
    }
    match source.split(':').collect::<Vec<_>>().as_slice() {
        [pss, sss] => Ok(Config::preset(
            Path::new(pss),
            Path::new(sss),
            Some(mountpoint),
        )),
        _ => Err(Error::Invalid(format!(
            "source `{source}`: expected PSS:SSS or a dfs.toml path"
        ))),
    }
}

/// Entry point when the binary is called as `mount.fuse.dfs` or
/// `mount.dfs`; `args` excludes the program name. Returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mount.fuse.dfs: {e}");
            return 1;
        }
    };
    let mut fds = [0i32; 2];
    // SAFETY: plain pipe(2) into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("mount.fuse.dfs: pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    // SAFETY: pipe2 returned two new fds we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process is still single-threaded here (no logger, no
    // session yet), so fork is safe.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("mount.fuse.dfs: fork: {}", std::io::Error::last_os_error());
            1
        }
        0 => {
            drop(rd);
            daemon(a, std::fs::File::from(wr))
        }
        _ => {
            drop(wr);
            // 'O' once mounted (the daemon keeps the pipe open); otherwise an
            // error message and the daemon's exit (EOF).
            let mut pipe = std::fs::File::from(rd);
            let mut first = [0u8; 1];
            let got = loop {
                match pipe.read(&mut first) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => break r.unwrap_or(0),
                }
            };
            match (got, first[0]) {
                (1, b'O') => 0,
                (1, _) => {
                    let mut msg = Vec::new();
                    let _ = pipe.read_to_end(&mut msg);
                    eprintln!("mount.fuse.dfs: {}", String::from_utf8_lossy(&msg));
                    1
                }
                _ => {
                    eprintln!("mount.fuse.dfs: the dfs daemon exited before the mount was ready");
                    1
                }
            }
        }
    }
}

fn daemon(a: Args, mut ready: std::fs::File) -> i32 {
    // SAFETY: detach from the caller's session and terminal.
    unsafe {
        libc::setsid();
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.log);
    if let (Ok(log), Ok(null)) = (log, std::fs::File::open("/dev/null")) {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let result = (|| -> Result<()> {
        let cfg = config_of(&a.source, &a.mountpoint)?;
        let policy = crate::policy::from_config(&cfg)?;
        let mut notify = ready.try_clone().map_err(|e| Error::io("pipe", e))?;
        crate::mount::run_with(
            &cfg,
            &a.mountpoint,
            &a.options,
            a.adopt,
            policy,
            Some(Box::new(move || {
                let _ = notify.write_all(b"O");
            })),
        )
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            let _ = ready.write_all(format!("E{e}").as_bytes());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_arguments() {
        let args: Vec<OsString> = [
            "/a:/b",
            "/m",
            "-o",
            "rw,nofail,log=/tmp/x.log,adopt,allow_other",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let a = parse(&args).expect("valid");
        assert_eq!(a.source, "/a:/b");
        assert_eq!(a.mountpoint, PathBuf::from("/m"));
        assert_eq!(a.log, PathBuf::from("/tmp/x.log"));
        assert!(a.adopt);
        assert_eq!(a.options, vec!["rw", "nofail", "allow_other"]);
        let c = config_of("/a:/b", Path::new("/m")).expect("preset");
        assert_eq!(c.tiers[1].path, PathBuf::from("/b"));
        assert!(parse(&[OsString::from("/a:/b")]).is_err());
    }
}
