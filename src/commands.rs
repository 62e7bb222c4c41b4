//! `dfs move`, `dfs status` and `dfs where`: clients of a running mount's
//! control socket.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::{decode, human, request};
use crate::error::{Error, Result};

/// The dfs mount a path lives in, and the path inside it.
fn mount_of(path: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("current directory", e))?
            .join(path)
    };
    // Resolve the directories, not the last name (it may be a symlink).
    let (dir, name) = match (abs.parent(), abs.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), Some(n.to_os_string())),
        _ => (abs.clone(), None),
    };
    let dir =
        std::fs::canonicalize(&dir).map_err(|e| Error::io(format!("{}", path.display()), e))?;
    let full = match name {
        Some(n) => dir.join(n),
        None => dir,
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
    let mut best: Option<PathBuf> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.get(sep + 1) != Some(&"fuse.dfs") {
            continue;
        }
        let Some(mp) = f.get(4) else { continue };
        let mp = PathBuf::from(unescape(mp));
        if full.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len())
        {
            best = Some(mp);
        }
    }
    let mp = best
        .ok_or_else(|| Error::Invalid(format!("{} is not inside a dfs mount", path.display())))?;
    let rel = full
        .strip_prefix(&mp)
        .map(|r| r.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    Ok((mp, rel))
}

/// /proc/self/mountinfo escapes spaces and friends as \ooo.
fn unescape(s: &str) -> std::ffi::OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    OsStr::from_bytes(&out).to_os_string()
}

fn mountpoint(arg: &Path) -> Result<PathBuf> {
    let (mp, rel) = mount_of(arg)?;
    if !rel.is_empty() {
        return Err(Error::Invalid(format!(
            "{} is inside the dfs mount {}, not its mount point",
            arg.display(),
            mp.display()
        )));
    }
    Ok(mp)
}

fn fail_on_err(line: &str) -> Result<()> {
    match line.strip_prefix("err\t") {
        Some(msg) => Err(Error::Invalid(msg.to_string())),
        None => Ok(()),
    }
}

/// `dfs move [--dry-run] MOUNTPOINT`.
pub fn move_cmd(arg: &Path, dry_run: bool) -> Result<()> {
    let mp = mountpoint(arg)?;
    let mut err = Ok(());
    if dry_run {
        request(&mp, "move dry-run", &mut |line| {
            if err.is_err() {
                return;
            }
            err = fail_on_err(line);
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["plan", from, to, reason, size, idle, rel] => println!(
                    "{} -> {}  {:<10} {:>10}  idle {:>6} d  {}",
                    from,
                    to,
                    reason,
                    human(size.parse().unwrap_or(0)),
                    idle.parse::<u64>().unwrap_or(0) / 86_400,
                    String::from_utf8_lossy(&decode(rel))
                ),
                ["end", n, bytes] => println!(
                    "{n} files, {} would move",
                    human(bytes.parse().unwrap_or(0))
                ),
                _ => {}
            }
        })?;
        return err;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut summary = String::new();
    request(&mp, "move", &mut |line| {
        if err.is_err() {
            return;
        }
        err = fail_on_err(line);
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match f.first() {
            Some(&"progress") => {
                bar.set_length(num(4));
                bar.set_position(num(3));
                bar.set_message(format!("{}/{} files", num(1), num(2)));
            }
            Some(&"done") => {
                summary = format!(
                    "moved {} of {} files ({}), skipped {}, {} errors, in {} s",
                    num(5),
                    num(2),
                    human(num(3)),
                    num(6),
                    num(7),
                    f.get(8).unwrap_or(&"?")
                );
            }
            _ => {}
        }
    })?;
    bar.finish_and_clear();
    err?;
    if summary.is_empty() {
        return Err(Error::Invalid(format!(
            "the dfs daemon of {} stopped answering before the pass ended",
            mp.display()
        )));
    }
    println!("{summary}");
    Ok(())
}

/// `dfs status MOUNTPOINT`.
pub fn status(arg: &Path) -> Result<()> {
    let mp = mountpoint(arg)?;
    let mut err = Ok(());
    request(&mp, "status", &mut |line| {
        if err.is_ok() {
            err = fail_on_err(line);
        }
        println!("{line}");
    })?;
    err
}

/// `dfs where PATH...`.
pub fn where_cmd(paths: &[PathBuf]) -> Result<()> {
    let mut failed = false;
    for p in paths {
        let (mp, rel) = match mount_of(p) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("dfs: {}: {e}", p.display());
                failed = true;
                continue;
            }
        };
        let mut answered = false;
        request(
            &mp,
            &format!("where :{}", crate::control::hex(&rel)),
            &mut |line| {
                answered = true;
                let f: Vec<&str> = line.split('\t').collect();
                match f.as_slice() {
                    ["ok", tier, backing] => println!(
                        "{}\t{}\t{}",
                        p.display(),
                        tier,
                        String::from_utf8_lossy(&decode(backing))
                    ),
                    ["err", msg] => {
                        eprintln!("dfs: {}: {msg}", p.display());
                        failed = true;
                    }
                    _ => {}
                }
            },
        )?;
        if !answered {
            eprintln!("dfs: {}: the daemon gave no answer", p.display());
            failed = true;
        }
    }
    if failed {
        return Err(Error::Invalid("some paths could not be located".into()));
    }
    Ok(())
}
