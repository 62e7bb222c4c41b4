//! Mounting with a statically linked custom policy, no plugin needed.
//!
//! `cargo run --example static_policy -- PSS SSS MOUNTPOINT`: the stock
//! two-tier tiers, but every new name whose path contains "/hot/" goes to
//! PSS and everything else to SSS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dfs::config::Config;
use dfs::policy::{CreateRequest, Policy, TierView};

/// Hot paths to the fast tier, the rest to the slow one.
struct HotOnFast;

impl Policy for HotOnFast {
    fn name(&self) -> &str {
        "hot-on-fast"
    }

    fn choose(&self, req: &CreateRequest<'_>, tiers: &[TierView<'_>]) -> Result<usize, i32> {
        let hot = req.path.components().any(|c| c.as_os_str() == "hot");
        let wanted = if hot { 0 } else { 1 };
        // A tier below its min_free is not offered: take what is.
        tiers
            .iter()
            .find(|t| t.index == wanted)
            .or(tiers.first())
            .map(|t| t.index)
            .ok_or(libc::ENOSPC)
    }
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [pss, sss, mnt] = args.as_slice() else {
        eprintln!("usage: static_policy PSS SSS MOUNTPOINT");
        std::process::exit(2);
    };
    let cfg = Config::preset(pss, sss, Some(Path::new(mnt)));
    if let Err(e) = dfs::mount::run(&cfg, mnt, &[], false, Arc::new(HotOnFast)) {
        eprintln!("static_policy: {e}");
        std::process::exit(1);
    }
}
