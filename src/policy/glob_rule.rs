//! `glob-rule`: place names by pattern, e.g. `*.tmp` on the fast tier.

use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{CreateRequest, Policy, TierView};
use crate::error::{Error, Result};

/// Ordered (glob, tier) rules matched against the path inside the mount;
/// the first match wins, and a fallback policy decides the rest.
pub struct GlobRule {
    set: GlobSet,
    tiers: Vec<usize>,
    fallback: Arc<dyn Policy>,
}

impl GlobRule {
    /// Compiles the rules; `rules` pairs a globset pattern with a tier index.
    pub fn new(rules: &[(String, usize)], fallback: Arc<dyn Policy>) -> Result<Self> {
        let mut b = GlobSetBuilder::new();
        for (g, _) in rules {
            let glob = Glob::new(g).map_err(|e| Error::Invalid(format!("bad glob `{g}`: {e}")))?;
            b.add(glob);
        }
        let set = b
            .build()
            .map_err(|e| Error::Invalid(format!("cannot compile glob rules: {e}")))?;
        Ok(GlobRule {
            set,
            tiers: rules.iter().map(|(_, t)| *t).collect(),
            fallback,
        })
    }
}

impl std::fmt::Debug for GlobRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobRule")
            .field("tiers", &self.tiers)
            .finish()
    }
}

impl Policy for GlobRule {
    fn name(&self) -> &str {
        "glob-rule"
    }

    fn choose(
        &self,
        req: &CreateRequest<'_>,
        tiers: &[TierView<'_>],
    ) -> std::result::Result<usize, i32> {
        // matches() returns indices in ascending (rule) order. A rule whose
        // tier is not offered (below its min_free) yields to the next one.
        for rule in self.set.matches(req.path) {
            let tier = self.tiers[rule];
            if tiers.iter().any(|t| t.index == tier) {
                return Ok(tier);
            }
        }
        self.fallback.choose(req, tiers)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ParentDir;
    use super::super::testutil::run;
    use super::*;

    #[test]
    fn first_matching_rule_wins_else_fallback() {
        let p = GlobRule::new(
            &[
                ("**/*.tmp".into(), 0),
                ("archive/**".into(), 1),
                ("cache/**".into(), 0),
            ],
            Arc::new(ParentDir),
        )
        .expect("rules compile");
        let both = &[(true, 1, 1), (true, 1, 1)][..];
        assert_eq!(run(&p, "a/b.tmp", both), Ok(0));
        assert_eq!(run(&p, "archive/2020/x.pdf", both), Ok(1));
        assert_eq!(run(&p, "archive/x.tmp", both), Ok(0));
        assert_eq!(run(&p, "docs/x.pdf", &[(false, 1, 1), (true, 1, 1)]), Ok(1));
    }

    #[test]
    fn a_rule_whose_tier_is_not_offered_yields() {
        let p = GlobRule::new(&[("**/*.tmp".into(), 0)], Arc::new(ParentDir)).expect("rules");
        // Only tier 1 offered (tier 0 is below its min_free): the fallback
        // decides instead of failing the create.
        let fns: Vec<Box<dyn Fn() -> crate::policy::Space>> =
            vec![Box::new(crate::policy::Space::default)];
        let views = [crate::policy::TierView::new(
            1,
            "t1",
            std::path::Path::new("/"),
            true,
            fns[0].as_ref(),
        )];
        let req = crate::policy::CreateRequest {
            path: std::path::Path::new("a.tmp"),
            kind: crate::policy::NodeKind::File,
            uid: 0,
            gid: 0,
            mode: 0o644,
        };
        assert_eq!(p.choose(&req, &views), Ok(1));
    }
}
