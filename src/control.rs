//! The control socket of a running mount: `dfs move`, `dfs status` and
//! `dfs where` talk to the daemon through it.
//!
//! One Unix socket per mount point, at `<runtime dir>/<hash of the mount
//! point>.sock` (runtime dir: `$DFS_RUNTIME_DIR`, else `/run/dfs`, else
//! `/tmp/dfs-run`). The protocol is one request line, then response lines
//! until the daemon closes the connection. Anyone may ask for status and
//! where; only root and the mount's owner may start a pass.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::mover::{Mover, Progress};

/// The directory holding the control sockets.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DFS_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    let run = Path::new("/run");
    if run.is_dir() && rustix::process::geteuid().as_raw() == 0 {
        return run.join("dfs");
    }
    std::env::temp_dir().join("dfs-run")
}

/// The control socket of the mount at `mountpoint` (canonical path).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in mountpoint.as_os_str().as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    runtime_dir().join(format!("{h:016x}.sock"))
}

/// Encodes bytes (a path inside the mount) for one protocol line.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The daemon side: serves requests until the process exits.
pub struct Server {
    path: PathBuf,
}

impl Server {
    /// Binds the socket for `mountpoint` and starts serving.
    pub fn start(mountpoint: &Path, core: Arc<Fs>, mover: Option<Arc<Mover>>) -> Result<Server> {
        let path = socket_path(mountpoint);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        if UnixStream::connect(&path).is_ok() {
            return Err(Error::Invalid(format!(
                "another dfs already serves {} (control socket {})",
                mountpoint.display(),
                path.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| Error::io(format!("cannot bind {}", path.display()), e))?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
        let mp = mountpoint.to_path_buf();
        std::thread::Builder::new()
            .name("dfs-control".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let (core, mover, mp) = (core.clone(), mover.clone(), mp.clone());
                    let _ = std::thread::Builder::new()
                        .name("dfs-control-conn".into())
                        .spawn(move || {
                            if let Err(e) = serve(conn, &core, mover.as_deref(), &mp) {
                                log::debug!("control connection: {e}");
                            }
                        });
                }
            })
            .map_err(|e| Error::io("cannot start the control thread", e))?;
        Ok(Server { path })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn may_move(conn: &UnixStream) -> bool {
    let me = rustix::process::geteuid().as_raw();
    match rustix::net::sockopt::socket_peercred(conn) {
        Ok(c) => c.uid.as_raw() == 0 || c.uid.as_raw() == me,
        Err(_) => false,
    }
}

fn serve(conn: UnixStream, core: &Fs, mover: Option<&Mover>, mp: &Path) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let mut out = std::io::BufWriter::new(&conn);
    let mut words = line.split_whitespace();
    match words.next() {
        Some("status") => status(&mut out, core, mover, mp)?,
        Some("where") => {
            for w in words {
                match w.strip_prefix(':').and_then(unhex) {
                    Some(rel) => match core.find(&rel) {
                        Ok(Some((t, _))) => {
                            let tier = core.tiers().get(t);
                            let name = tier.map(|t| t.name.as_str()).unwrap_or("?");
                            let mut backing = tier.map(|t| t.path.clone()).unwrap_or_default();
                            if !rel.is_empty() {
                                backing.push(OsStr::from_bytes(&rel));
                            }
                            writeln!(out, "ok\t{name}\t{}", hex(backing.as_os_str().as_bytes()))?;
                        }
                        Ok(None) => writeln!(out, "err\tno such file or directory")?,
                        Err(e) => writeln!(out, "err\t{e}")?,
                    },
                    None => writeln!(out, "err\tbad request")?,
                }
            }
        }
        Some("move") => {
            let dry = words.next() == Some("dry-run");
            let Some(m) = mover else {
                writeln!(
                    out,
                    "err\tthe mover is not configured for this mount (add a [mover] table to dfs.toml)"
                )?;
                return out.flush();
            };
            if dry {
                let plan = m.plan();
                for c in &plan {
                    writeln!(
                        out,
                        "plan\t{}\t{}\t{}\t{}\t{}\t{}",
                        m.tier_name(c.from),
                        m.tier_name(c.to),
                        c.reason,
                        c.size,
                        c.idle,
                        hex(&c.rel)
                    )?;
                }
                writeln!(
                    out,
                    "end\t{}\t{}",
                    plan.len(),
                    plan.iter().map(|c| c.size).sum::<u64>()
                )?;
            } else if !may_move(&conn) {
                writeln!(out, "err\tonly root or the mount's owner may start a pass")?;
            } else {
                let mut w = out;
                let mut failed = None;
                let p = m.run_pass(&mut |p: &Progress| {
                    if failed.is_none()
                        && let Err(e) = progress_line(&mut w, "progress", p).and_then(|_| w.flush())
                    {
                        failed = Some(e);
                    }
                });
                progress_line(&mut w, "done", &p)?;
                return w.flush();
            }
        }
        _ => writeln!(out, "err\tunknown request")?,
    }
    out.flush()
}

fn progress_line(w: &mut impl Write, tag: &str, p: &Progress) -> std::io::Result<()> {
    writeln!(
        w,
        "{tag}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.3}",
        p.files_done,
        p.files_total,
        p.bytes_done,
        p.bytes_total,
        p.files_moved,
        p.skipped,
        p.errors,
        p.elapsed
    )
}

fn bar(frac: f64, width: usize) -> String {
    let filled = ((frac.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// Formats a byte count for people.
pub fn human(b: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) => format!("{} s ago", d.as_secs()),
        Err(e) => format!("in {} s", e.duration().as_secs()),
    }
}

fn status(
    out: &mut impl Write,
    core: &Fs,
    mover: Option<&Mover>,
    mp: &Path,
) -> std::io::Result<()> {
    writeln!(out, "dfs on {}", mp.display())?;
    for (what, how) in core.modes() {
        writeln!(out, "{what}: {how}")?;
    }
    let st = mover.map(|m| m.state());
    writeln!(out, "tiers (fastest first):")?;
    for t in core.tiers().iter() {
        let s = core.tier_space(t.index);
        let used = s.total_bytes.saturating_sub(s.free_bytes);
        let frac = if s.total_bytes > 0 {
            used as f64 / s.total_bytes as f64
        } else {
            0.0
        };
        let files = st
            .as_ref()
            .and_then(|s| s.files_per_tier.get(t.index).copied())
            .map(|n| format!("{n} files"))
            .unwrap_or_else(|| "files: counted at the first pass".into());
        writeln!(
            out,
            "  {:<8} {} {:>5.1}% used  {} used, {} free  {}  {}",
            t.name,
            bar(frac, 30),
            frac * 100.0,
            human(used),
            human(s.free_bytes),
            files,
            t.path.display()
        )?;
    }
    match (mover, st) {
        (Some(m), Some(s)) => {
            let c = m.config();
            writeln!(
                out,
                "mover: {}, bandwidth {}",
                match c.interval {
                    Some(i) => format!("a pass every {} s", i.as_secs()),
                    None => "scheduled passes off (dfs move starts one)".into(),
                },
                c.bandwidth
                    .map(|b| format!("{}/s", human(b)))
                    .unwrap_or_else(|| "unthrottled".into())
            )?;
            match &s.running {
                Some(p) => writeln!(
                    out,
                    "  running: {}/{} files, {} of {}",
                    p.files_done,
                    p.files_total,
                    human(p.bytes_done),
                    human(p.bytes_total)
                )?,
                None => writeln!(out, "  idle")?,
            }
            match (s.last_pass, &s.last) {
                (Some(t), Some(p)) => writeln!(
                    out,
                    "  last pass: {} ({} moved, {} skipped, {} errors, {})",
                    ago(t),
                    p.files_moved,
                    p.skipped,
                    p.errors,
                    human(p.bytes_done)
                )?,
                _ => writeln!(out, "  last pass: none yet")?,
            }
            if let Some(n) = s.next_pass {
                writeln!(out, "  next pass: {}", ago(n))?;
            }
            writeln!(
                out,
                "  since mount: {} files moved ({}), {} errors",
                s.moved_files,
                human(s.moved_bytes),
                s.errors
            )?;
        }
        _ => writeln!(out, "mover: not configured")?,
    }
    Ok(())
}

/// The client side: sends `request`, returns the response lines as they
/// come (to `each`).
pub fn request(mountpoint: &Path, request: &str, each: &mut dyn FnMut(&str)) -> Result<()> {
    let path = socket_path(mountpoint);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        Error::Invalid(format!(
            "no dfs daemon answers for {} (control socket {}: {e}); is it a dfs mount?",
            mountpoint.display(),
            path.display()
        ))
    })?;
    writeln!(conn, "{request}").map_err(|e| Error::io("control socket", e))?;
    for line in BufReader::new(conn).lines() {
        let line = line.map_err(|e| Error::io("control socket", e))?;
        each(&line);
    }
    Ok(())
}

/// Decodes a hex field of a response.
pub fn decode(s: &str) -> Vec<u8> {
    unhex(s).unwrap_or_default()
}
