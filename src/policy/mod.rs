//! Placement policies: which tier receives a new name.
//!
//! dfs asks a [`Policy`] for every name it creates (create, mkdir, mknod,
//! symlink, the new name of link). Each built-in policy lives in a file of
//! its own; all of them, and plugins, sit behind this one trait.

use std::cell::OnceCell;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, PolicyConfig};
use crate::error::{Error, Result};

mod first_found;
mod glob_rule;
mod most_free;
mod parent_dir;
mod plugin;

pub use first_found::FirstFound;
pub use glob_rule::GlobRule;
pub use most_free::MostFree;
pub use parent_dir::ParentDir;
pub use plugin::PluginPolicy;

/// What kind of name is being created; policies may place them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A fifo, socket or device node.
    Special,
}

/// The name being created, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    /// Path inside the mount, relative, without a leading '/'.
    pub path: &'a Path,
    /// What is being created.
    pub kind: NodeKind,
    /// The caller's uid and gid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
    /// The requested mode bits.
    pub mode: u32,
}

/// Free and total space of a tier's filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to unprivileged writers.
    pub free_bytes: u64,
    /// Size of the filesystem in bytes.
    pub total_bytes: u64,
    /// Inodes available.
    pub free_inodes: u64,
    /// Total inodes.
    pub total_inodes: u64,
}

/// A read-only view of one tier for the policy's decision.
pub struct TierView<'a> {
    /// Position in the stack, 0 = fastest.
    pub index: usize,
    /// Tier name from the config.
    pub name: &'a str,
    /// Tier root path.
    pub root: &'a Path,
    /// Whether the parent directory of the new name exists on this tier.
    pub parent_exists: bool,
    space: OnceCell<Space>,
    space_fn: &'a dyn Fn() -> Space,
}

impl<'a> TierView<'a> {
    /// Builds a view; `space_fn` is called at most once, when a policy asks.
    pub fn new(
        index: usize,
        name: &'a str,
        root: &'a Path,
        parent_exists: bool,
        space_fn: &'a dyn Fn() -> Space,
    ) -> Self {
        TierView {
            index,
            name,
            root,
            parent_exists,
            space: OnceCell::new(),
            space_fn,
        }
    }

    /// Free and total space, measured on first use (a statvfs).
    pub fn space(&self) -> Space {
        *self.space.get_or_init(|| (self.space_fn)())
    }
}

impl std::fmt::Debug for TierView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierView")
            .field("index", &self.index)
            .field("name", &self.name)
            .field("parent_exists", &self.parent_exists)
            .finish()
    }
}

/// Chooses the tier for a new name.
///
/// Return the index of a tier from `tiers`, or an errno (e.g. `libc::ENOSPC`)
/// that the create then fails with. An index that is not in `tiers` fails the
/// create with EIO and a log line; the mount keeps serving.
pub trait Policy: Send + Sync {
    /// Short name for logs and `dfs check`.
    fn name(&self) -> &str;
    /// Picks a tier.
    fn choose(
        &self,
        req: &CreateRequest<'_>,
        tiers: &[TierView<'_>],
    ) -> std::result::Result<usize, i32>;
}

/// Builds the policy a config names.
pub fn from_config(cfg: &Config) -> Result<Arc<dyn Policy>> {
    build(&cfg.policy, cfg, &cfg.policy.kind)
}

fn build(p: &PolicyConfig, cfg: &Config, kind: &str) -> Result<Arc<dyn Policy>> {
    Ok(match kind {
        "parent-dir" => Arc::new(ParentDir),
        "first-found" => Arc::new(FirstFound),
        "most-free" => Arc::new(MostFree),
        "glob-rule" => {
            let fallback = build(p, cfg, p.fallback.as_deref().unwrap_or("parent-dir"))?;
            let rules = p
                .rules
                .iter()
                .map(|r| {
                    let idx = cfg
                        .tiers
                        .iter()
                        .position(|t| t.name == r.tier)
                        .ok_or_else(|| {
                            Error::Invalid(format!(
                                "rule `{}` names unknown tier `{}`",
                                r.glob, r.tier
                            ))
                        })?;
                    Ok((r.glob.clone(), idx))
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(GlobRule::new(&rules, fallback)?)
        }
        "plugin" => {
            let path = p.path.as_ref().ok_or_else(|| {
                cfg.origin
                    .error_at(p.kind_span.clone(), "policy.path", "a plugin needs `path`")
            })?;
            let options = p
                .options
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default();
            Arc::new(PluginPolicy::load(path, &options)?)
        }
        other => {
            return Err(cfg.origin.error_at(
                p.kind_span.clone(),
                "policy.kind",
                &format!("unknown policy `{other}`"),
            ));
        }
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// One table row: tiers as (parent exists, free, total), and the answer.
    pub type Case = (&'static [(bool, u64, u64)], std::result::Result<usize, i32>);

    /// Table-driven helper: tiers with (parent_exists, free, total).
    pub fn run(
        p: &dyn Policy,
        path: &str,
        tiers: &[(bool, u64, u64)],
    ) -> std::result::Result<usize, i32> {
        let fns: Vec<Box<dyn Fn() -> Space>> = tiers
            .iter()
            .map(|&(_, free, total)| {
                Box::new(move || Space {
                    free_bytes: free,
                    total_bytes: total,
                    free_inodes: 1000,
                    total_inodes: 1000,
                }) as Box<dyn Fn() -> Space>
            })
            .collect();
        let names = ["t0", "t1", "t2", "t3"];
        let views: Vec<TierView<'_>> = tiers
            .iter()
            .enumerate()
            .map(|(i, &(pe, _, _))| TierView::new(i, names[i], Path::new("/"), pe, fns[i].as_ref()))
            .collect();
        let req = CreateRequest {
            path: Path::new(path),
            kind: NodeKind::File,
            uid: 0,
            gid: 0,
            mode: 0o644,
        };
        p.choose(&req, &views)
    }
}
