//! Example dfs plugin: place new names by the user who creates them.
//!
//! ```toml
//! [policy]
//! kind = "plugin"
//! path = "/usr/local/lib/dfs/libdfs_policy_by_owner.so"
//!
//! [policy.options]
//! uid_tiers = { 1000 = "sss" }   # the batch user's files go to the slow tier
//! ```
//!
//! Callers listed in `uid_tiers` get the named tier; everyone else gets the
//! first tier holding the parent directory.

use std::collections::HashMap;

use dfs_policy_sdk::{PolicyPlugin, Request, Tier, errno, export_policy};

/// uid -> tier name.
pub struct ByOwner {
    map: HashMap<u32, String>,
}

impl PolicyPlugin for ByOwner {
    fn new(options: &str) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(options).map_err(|e| format!("options: {e}"))?;
        let mut map = HashMap::new();
        for (k, v) in table {
            if k != "uid_tiers" {
                return Err(format!("unknown option `{k}` (expected `uid_tiers`)"));
            }
            let t = v
                .as_table()
                .ok_or("`uid_tiers` must be a table of uid = \"tier\"")?;
            for (uid, tier) in t {
                let uid: u32 = uid
                    .parse()
                    .map_err(|_| format!("uid_tiers: `{uid}` is not a numeric uid"))?;
                let tier = tier
                    .as_str()
                    .ok_or_else(|| format!("uid_tiers.{uid}: the tier must be a string"))?;
                map.insert(uid, tier.to_string());
            }
        }
        Ok(ByOwner { map })
    }

    fn choose(&self, req: &Request<'_>, tiers: &[Tier<'_>]) -> Result<usize, i32> {
        if let Some(name) = self.map.get(&req.uid)
            && let Some(t) = tiers.iter().find(|t| t.name == name)
        {
            return Ok(t.index);
        }
        tiers
            .iter()
            .find(|t| t.parent_exists)
            .or(tiers.first())
            .map(|t| t.index)
            .ok_or(errno::ENOSPC)
    }
}

export_policy!(ByOwner, "by-owner");
