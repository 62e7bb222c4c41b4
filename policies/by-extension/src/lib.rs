//! Example dfs plugin: place new files by extension.
//!
//! ```toml
//! [policy]
//! kind = "plugin"
//! path = "/usr/local/lib/dfs/libdfs_policy_by_extension.so"
//!
//! [policy.options]
//! extensions = { tmp = "pss", iso = "sss", mp4 = "sss" }
//! ```
//!
//! A file whose extension is listed goes to that tier; anything else
//! (other files, directories, symlinks) goes to the first tier holding its
//! parent directory, like the built-in `parent-dir` policy.

use std::collections::HashMap;

use dfs_policy_sdk::{Kind, PolicyPlugin, Request, Tier, errno, export_policy};

/// Extension (lower case, no dot) -> tier name.
pub struct ByExtension {
    map: HashMap<String, String>,
}

impl PolicyPlugin for ByExtension {
    fn new(options: &str) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(options).map_err(|e| format!("options: {e}"))?;
        let mut map = HashMap::new();
        for (k, v) in table {
            if k != "extensions" {
                return Err(format!("unknown option `{k}` (expected `extensions`)"));
            }
            let exts = v
                .as_table()
                .ok_or("`extensions` must be a table of extension = \"tier\"")?;
            for (ext, tier) in exts {
                let tier = tier
                    .as_str()
                    .ok_or_else(|| format!("extensions.{ext}: the tier must be a string"))?;
                map.insert(ext.trim_start_matches('.').to_lowercase(), tier.to_string());
            }
        }
        if map.is_empty() {
            return Err("no `extensions` given: nothing to place".into());
        }
        Ok(ByExtension { map })
    }

    fn choose(&self, req: &Request<'_>, tiers: &[Tier<'_>]) -> Result<usize, i32> {
        if req.kind == Kind::File {
            let ext = req
                .path
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase());
            if let Some(name) = ext.and_then(|e| self.map.get(&e)) {
                // The tier may be absent from `tiers` when it is below its
                // min_free: then fall through to the parent rule.
                if let Some(t) = tiers.iter().find(|t| t.name == name) {
                    return Ok(t.index);
                }
            }
        }
        tiers
            .iter()
            .find(|t| t.parent_exists)
            .or(tiers.first())
            .map(|t| t.index)
            .ok_or(errno::ENOSPC)
    }
}

export_policy!(ByExtension, "by-extension");
