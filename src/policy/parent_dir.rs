//! `parent-dir`: the article's rule and the stock preset's policy.

use super::{CreateRequest, Policy, TierView};

/// A new name goes to the first tier (in order) on which its parent
/// directory already exists, so related files stay together and the fast
/// tier keeps what is created under directories that live there. When no
/// offered tier has the parent (those that do are below their `min_free`),
/// the first offered tier takes it and dfs recreates the parent chain.
#[derive(Debug, Default, Clone, Copy)]
pub struct ParentDir;

impl Policy for ParentDir {
    fn name(&self) -> &str {
        "parent-dir"
    }

    fn choose(&self, _req: &CreateRequest<'_>, tiers: &[TierView<'_>]) -> Result<usize, i32> {
        tiers
            .iter()
            .find(|t| t.parent_exists)
            .or(tiers.first())
            .map(|t| t.index)
            .ok_or(libc::ENOSPC)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Case, run};
    use super::*;

    #[test]
    fn decisions() {
        // (parent exists, free, total) per tier -> expected
        let cases: &[Case] = &[
            (&[(true, 1, 10), (true, 9, 10)], Ok(0)),
            (&[(false, 1, 10), (true, 9, 10)], Ok(1)),
            (&[(false, 1, 10), (false, 9, 10), (true, 0, 1)], Ok(2)),
            (&[(false, 1, 10), (false, 9, 10)], Ok(0)),
            (&[], Err(libc::ENOSPC)),
        ];
        for (tiers, want) in cases {
            assert_eq!(run(&ParentDir, "a/b", tiers), *want, "{tiers:?}");
        }
    }
}
