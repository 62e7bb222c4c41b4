//! `first-found`: fill the tiers in order.

use super::{CreateRequest, Policy, TierView};

/// The first tier (in order) that has free space; the parent chain is
/// created there if needed. Suits "fill the fast tier, spill to the slow
/// one" setups.
#[derive(Debug, Default, Clone, Copy)]
pub struct FirstFound;

impl Policy for FirstFound {
    fn name(&self) -> &str {
        "first-found"
    }

    fn choose(&self, _req: &CreateRequest<'_>, tiers: &[TierView<'_>]) -> Result<usize, i32> {
        tiers
            .iter()
            .find(|t| t.space().free_bytes > 0)
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
        let cases: &[Case] = &[
            (&[(false, 5, 10), (true, 9, 10)], Ok(0)),
            (&[(true, 0, 10), (true, 9, 10)], Ok(1)),
            (&[(true, 0, 10), (true, 0, 10)], Err(libc::ENOSPC)),
        ];
        for (tiers, want) in cases {
            assert_eq!(run(&FirstFound, "x", tiers), *want, "{tiers:?}");
        }
    }
}
