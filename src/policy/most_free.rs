//! `most-free`: spread new names by free space.

use super::{CreateRequest, Policy, TierView};

/// The tier with the most free bytes; ties go to the faster tier.
#[derive(Debug, Default, Clone, Copy)]
pub struct MostFree;

impl Policy for MostFree {
    fn name(&self) -> &str {
        "most-free"
    }

    fn choose(&self, _req: &CreateRequest<'_>, tiers: &[TierView<'_>]) -> Result<usize, i32> {
        let mut best: Option<(usize, u64)> = None;
        for t in tiers {
            let free = t.space().free_bytes;
            if free > 0 && best.is_none_or(|(_, b)| free > b) {
                best = Some((t.index, free));
            }
        }
        best.map(|(i, _)| i).ok_or(libc::ENOSPC)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Case, run};
    use super::*;

    #[test]
    fn decisions() {
        let cases: &[Case] = &[
            (&[(true, 5, 10), (true, 9, 10)], Ok(1)),
            (&[(true, 9, 10), (true, 9, 10)], Ok(0)),
            (&[(true, 0, 10), (false, 0, 10)], Err(libc::ENOSPC)),
        ];
        for (tiers, want) in cases {
            assert_eq!(run(&MostFree, "x", tiers), *want, "{tiers:?}");
        }
    }
}
