//! Timing, medians and the result table.

use std::collections::BTreeMap;
use std::time::Instant;

/// Which side of the comparison a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Native,
    Dfs,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Native => "native",
            Side::Dfs => "dfs",
        }
    }
}

/// Rates are better when higher (ratio dfs/native); times are better when
/// lower (ratio native/dfs). Either way a ratio of 1.0 is native speed and
/// higher is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rate,
    Time,
}

/// The targets (ratio to native, median of 3).
const TARGETS: &[(&str, f64)] = &[
    ("seq-write", 0.95),
    ("seq-read-warm", 0.95),
    ("rand-read-4k", 0.90),
    ("create", 0.60),
    ("stat", 0.50),
    ("list", 0.40),
    ("read", 0.15),
    ("stat-cold", 0.30),
    ("rename", 0.25),
    ("delete", 0.50),
    ("untar", 0.35),
    ("grep", 0.25),
    ("du", 0.30),
    ("rm", 0.55),
    ("neg-lookup", 0.15),
    ("tier2-stat", 0.15),
    ("tier2-read", 0.15),
    // Issue 5: the mover against `cp -a` between the same two tiers.
    ("throughput", 0.90),
];

/// The round-trip line's name: its dfs side is the cost of one empty FUSE
/// request, which every other line's floor is built from.
pub const ROUNDTRIP: &str = "roundtrip-getxattr";

/// Requests the kernel sends without the client waiting for the answer
/// (fuser spells BATCH_FORGET "BATCHFORGET"), and the name the bench gives
/// opcodes fuser does not print (see `daemon::opcode`): none of them is on
/// the client's critical path, so none counts towards the floor.
const ASYNC_OPS: &[&str] = &[
    "FORGET",
    "BATCH_FORGET",
    "BATCHFORGET",
    "RELEASE",
    "RELEASEDIR",
    "INTERRUPT",
    "UNKNOWN",
];

/// Whether the client waits for the daemon's answer to a request `op`.
pub fn is_sync(op: &str) -> bool {
    !ASYNC_OPS.contains(&op)
}

/// The best ratio a line could reach if the daemon took no time at all:
/// the native time per operation against that time plus `requests`
/// requests of `cost` seconds each per operation (an empty round trip, or
/// what the kernel itself spends on a LOOKUP: see `KernelCosts`). None when
/// an input is not a positive, finite number (no measurement).
pub fn floor(native_secs_per_op: f64, requests: f64, cost: f64) -> Option<f64> {
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    if !(ok(native_secs_per_op) && native_secs_per_op > 0.0 && ok(requests) && ok(cost)) {
        return None;
    }
    Some(native_secs_per_op / (native_secs_per_op + requests * cost))
}

/// The best ratio of a line whose operation is `requests` lookups, each of
/// which takes the client `cost` seconds end to end (path walk and syscall
/// included) on a daemon that does no work: the probe's time is the whole
/// operation's, so it replaces the native time instead of adding to it.
pub fn whole_op_floor(native_secs_per_op: f64, requests: f64, cost: f64) -> Option<f64> {
    let ok = |x: f64| x.is_finite() && x > 0.0;
    if !(ok(native_secs_per_op) && ok(requests) && ok(cost)) {
        return None;
    }
    Some((native_secs_per_op / (requests * cost)).min(1.0))
}

/// As `whole_op_floor`, for a daemon that also does the native operation
/// itself, once (a stat of its tier's copy) before it answers.
pub fn reading_floor(native_secs_per_op: f64, requests: f64, cost: f64) -> Option<f64> {
    let ok = |x: f64| x.is_finite() && x > 0.0;
    if !(ok(native_secs_per_op) && ok(requests) && ok(cost)) {
        return None;
    }
    Some(native_secs_per_op / (requests * cost + native_secs_per_op))
}

/// The kind of LOOKUP a line's operation sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Of a name that exists nowhere: the kernel makes a negative dentry.
    Negative,
    /// Of a name the kernel has never seen: it allocates an inode and a
    /// dentry for it.
    Positive,
}

/// The lines whose request is a LOOKUP that costs the kernel more than an
/// empty round trip: their floor uses the kernel's measured cost of that
/// LOOKUP (see `KernelCosts`) instead of the round-trip line's, which
/// would make it too high.
pub const LOOKUP_LINES: &[(&str, Lookup)] = &[
    ("neg-lookup", Lookup::Negative),
    ("tier2-stat", Lookup::Positive),
];

/// What FUSE requests cost the kernel itself, measured on the floor
/// probe's zero-work daemon (floor.rs) in the same run: seconds per
/// operation, one sample per repetition.
#[derive(Debug, Clone, Default)]
pub struct KernelCosts {
    /// The transport the probe's requests came over, as reported.
    pub transport: String,
    /// Operations timed per sample, for each kind: round trips, negative
    /// lookups, positive lookups.
    pub ops: [u64; 3],
    /// fgetxattr of an absent name: one empty GETXATTR round trip.
    pub roundtrip: Vec<f64>,
    /// stat of a fresh missing name: one negative LOOKUP.
    pub negative: Vec<f64>,
    /// stat of a fresh existing name: one positive LOOKUP and a new inode.
    pub positive: Vec<f64>,
    /// readdir of a fresh directory of 100 names the daemon lists without
    /// attributes: READDIRPLUS, then the READDIR that finds the end.
    pub listing: Vec<f64>,
}

impl KernelCosts {
    /// The median cost of one LOOKUP of kind `l`, in seconds.
    pub fn lookup(&self, l: Lookup) -> Option<f64> {
        let v = match l {
            Lookup::Negative => &self.negative,
            Lookup::Positive => &self.positive,
        };
        median(v).filter(|&x| x > 0.0)
    }

    /// The median cost of one empty round trip on the probe, in seconds.
    pub fn roundtrip(&self) -> Option<f64> {
        median(&self.roundtrip).filter(|&x| x > 0.0)
    }

    /// The median cost of listing one fresh directory of `LISTED_NAMES`
    /// names on the probe (open, readdir to the end, close), in seconds.
    pub fn listing(&self) -> Option<f64> {
        median(&self.listing).filter(|&x| x > 0.0)
    }
}

/// A line served by kernel passthrough whose floor the floor probe measured
/// in the same repetitions: the same operations, interleaved slice by slice
/// with the line's native and dfs sides, on a file the zero-work probe
/// serves by passthrough, so that no request reaches a daemon and what is
/// left is the kernel's own passthrough path (floor.rs).
#[derive(Debug, Clone)]
pub struct PassthroughFloor {
    /// The table line.
    pub line: String,
    /// What one operation of the line is, for the report.
    pub op: &'static str,
    /// The probe's rate in each repetition, in the line's unit.
    pub probe: Vec<f64>,
    /// Requests the probe received during its timed slices, all
    /// repetitions: ~0 when passthrough served them.
    pub requests: u64,
}

/// The best ratio of a line whose every operation is served by kernel
/// passthrough, from the probe's rates and the native ones of the same
/// repetitions: the probe's median against the native median, at most 1.
/// None unless both are positive, finite medians.
pub fn passthrough_floor(probe: &[f64], native: &[f64]) -> Option<f64> {
    let ok = |x: &f64| x.is_finite() && *x > 0.0;
    let (p, n) = (median(probe).filter(ok)?, median(native).filter(ok)?);
    Some((p / n).min(1.0))
}

/// The names in each directory the floor probe lists: as many as the
/// small-files workload puts in each of its directories by default.
pub const LISTED_NAMES: f64 = 100.0;

/// The listing line: its operation is one listed name.
pub const LIST_LINE: &str = "small/list";

/// What the list line can reach, from the floor probe's listing and the
/// native listing of the same run, per directory of `LISTED_NAMES` names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListFloor {
    /// Native seconds per directory listed.
    pub native: f64,
    /// The probe's seconds per directory: the kernel's whole share.
    pub kernel: f64,
}

impl ListFloor {
    /// With a daemon that takes no time: the probe's listing replaces the
    /// native one (as for the lookup lines).
    pub fn zero_work(&self) -> f64 {
        (self.native / self.kernel).min(1.0)
    }

    /// With a daemon that only reads its tier's copy of the directory once,
    /// which is the work the native listing does (open, getdents to the
    /// end, close): the least any union that does not keep tier contents
    /// in memory must add to the kernel's share.
    pub fn reading_the_tier(&self) -> f64 {
        self.native / (self.kernel + self.native)
    }
}

/// The target ratio for a table line: its name, or the last word of a
/// `group/phase` name.
pub fn target(name: &str) -> Option<f64> {
    let key = name.rsplit('/').next().unwrap_or(name);
    TARGETS.iter().find(|(n, _)| *n == key).map(|&(_, t)| t)
}

/// Runs `f` and returns its result with the elapsed wall time in seconds.
pub fn timed<T, E>(f: impl FnOnce() -> Result<T, E>) -> Result<(T, f64), E> {
    let start = Instant::now();
    let v = f()?;
    Ok((v, start.elapsed().as_secs_f64()))
}

/// The median (mean of the two middle values for an even count).
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The `p`-th percentile (0..=100) by nearest rank.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub kind: Kind,
    pub native: Vec<f64>,
    pub dfs: Vec<f64>,
}

impl Row {
    /// Ratio of the medians, oriented so that higher is better.
    pub fn ratio(&self) -> Option<f64> {
        let (n, d) = (median(&self.native)?, median(&self.dfs)?);
        match self.kind {
            Kind::Rate if n > 0.0 => Some(d / n),
            Kind::Time if d > 0.0 => Some(n / d),
            _ => None,
        }
    }

    /// The native side's time per operation (per run for a time line), in
    /// seconds: the part of the work a FUSE mount cannot make shorter.
    pub fn native_secs_per_op(&self) -> Option<f64> {
        let n = median(&self.native)?;
        match self.kind {
            Kind::Rate if n > 0.0 => Some(1.0 / n),
            Kind::Time => Some(n),
            _ => None,
        }
    }
}

/// FUSE requests the daemon received during one timed phase on the mount.
pub struct Requests {
    pub phase: String,
    /// Operations the phase did (files, names, ...), or 1 for a timed command.
    pub ops: f64,
    pub counts: BTreeMap<String, u64>,
}

impl Requests {
    /// The requests of this run the client waited for (see `is_sync`).
    pub fn sync(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(op, _)| is_sync(op))
            .map(|(_, n)| n)
            .sum()
    }
}

/// All samples, one row per workload line, in the order first recorded.
#[derive(Default)]
pub struct Table {
    /// What the two sides are called in the progress lines and headers
    /// (default: native and dfs).
    pub sides: Option<[&'static str; 2]>,
    pub rows: Vec<Row>,
    pub requests: Vec<Requests>,
    /// Daemon CPU seconds during each phase: (phase, side, seconds).
    pub daemon_cpu: Vec<(String, Side, f64)>,
    /// The kernel's own request costs from the floor probe, if it ran.
    pub kernel: Option<KernelCosts>,
    /// The lines whose passthrough floor the probe measured.
    pub passthrough: Vec<PassthroughFloor>,
}

impl Table {
    /// A table whose sides are called `native` and `dfs` in its output.
    pub fn with_sides(native: &'static str, dfs: &'static str) -> Table {
        Table {
            sides: Some([native, dfs]),
            ..Table::default()
        }
    }

    fn side_name(&self, side: Side) -> &'static str {
        match (self.sides, side) {
            (Some([n, _]), Side::Native) => n,
            (Some([_, d]), Side::Dfs) => d,
            (None, s) => s.name(),
        }
    }

    /// Records one sample and prints it as progress on stderr.
    pub fn record(&mut self, name: &str, kind: Kind, unit: &'static str, side: Side, value: f64) {
        eprintln!(
            "  {name:<26} {:<8} {} {unit}",
            self.side_name(side),
            fmt_num(value)
        );
        let i = match self.rows.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    name: name.to_string(),
                    unit,
                    kind,
                    native: Vec::new(),
                    dfs: Vec::new(),
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        match side {
            Side::Native => row.native.push(value),
            Side::Dfs => row.dfs.push(value),
        }
    }

    /// Records one repetition of the floor probe on the passthrough line
    /// `name` (`ops` operations in `secs` seconds, `requests` received; a
    /// rate in `unit`, as the line's) and prints it as progress on stderr.
    pub fn probe_rate(
        &mut self,
        name: &str,
        unit: &str,
        op: &'static str,
        ops: f64,
        secs: f64,
        requests: u64,
    ) {
        let value = ops / secs.max(1e-9);
        eprintln!(
            "  {name:<26} {:<8} {} {unit} ({requests} requests)",
            "probe",
            fmt_num(value)
        );
        let i = match self.passthrough.iter().position(|p| p.line == name) {
            Some(i) => i,
            None => {
                self.passthrough.push(PassthroughFloor {
                    line: name.to_string(),
                    op,
                    probe: Vec::new(),
                    requests: 0,
                });
                self.passthrough.len() - 1
            }
        };
        self.passthrough[i].probe.push(value);
        self.passthrough[i].requests += requests;
    }

    /// The probe's measurement of the line `name`, if it has one.
    pub fn passthrough_for(&self, name: &str) -> Option<&PassthroughFloor> {
        self.passthrough.iter().find(|p| p.line == name)
    }

    /// The floor of a rate line the probe measured by passthrough (see
    /// `passthrough_floor`); none for other lines.
    pub fn passthrough_floor(&self, row: &Row) -> Option<f64> {
        let p = self.passthrough_for(&row.name)?;
        if row.kind != Kind::Rate {
            return None;
        }
        passthrough_floor(&p.probe, &row.native)
    }

    /// Records `ops` operations done in `secs` seconds as a rate.
    pub fn rate(&mut self, name: &str, unit: &'static str, side: Side, ops: f64, secs: f64) {
        self.record(name, Kind::Rate, unit, side, ops / secs.max(1e-9));
    }

    /// Records a duration in seconds.
    pub fn time(&mut self, name: &str, side: Side, secs: f64) {
        self.record(name, Kind::Time, "s", side, secs);
    }

    /// The cost of one empty FUSE request, in seconds: the inverse of the
    /// round-trip line's dfs median.
    pub fn roundtrip_secs(&self) -> Option<f64> {
        let r = self.rows.iter().find(|r| r.name == ROUNDTRIP)?;
        median(&r.dfs).filter(|&x| x > 0.0).map(|x| 1.0 / x)
    }

    /// Requests the client waited for per operation of `phase` (per run
    /// for a timed command), over every run counted.
    pub fn sync_requests_per_op(&self, phase: &str) -> Option<f64> {
        let runs = self.requests.iter().filter(|r| r.phase == phase);
        let (ops, sync) = runs.fold((0.0, 0u64), |(o, s), r| (o + r.ops, s + r.sync()));
        (ops > 0.0).then(|| sync as f64 / ops)
    }

    /// The list line's floors (see `ListFloor`); none without the floor
    /// probe's listing or the line's native median.
    pub fn list_floor(&self) -> Option<ListFloor> {
        let row = self.rows.iter().find(|r| r.name == LIST_LINE)?;
        let native = row.native_secs_per_op()? * LISTED_NAMES;
        let kernel = self.kernel.as_ref()?.listing()?;
        Some(ListFloor { native, kernel })
    }

    /// For each LOOKUP line (see `LOOKUP_LINES`) measured in this run: its
    /// name, native seconds per operation, and its floors with a zero-work
    /// daemon and with one that does the native operation once on its tier
    /// (a stat of the copy: the least a daemon that reads attributes from
    /// the tier, rather than from a memory of it, must add to the kernel's
    /// share), as `ListFloor` gives for the listing.
    pub fn lookup_floors(&self) -> Vec<(&'static str, f64, f64, f64)> {
        LOOKUP_LINES
            .iter()
            .filter_map(|&(name, _)| {
                let row = self.rows.iter().find(|r| r.name == name)?;
                let native = row.native_secs_per_op()?;
                let cost = self.lookup_cost(name)?;
                let n = self.sync_requests_per_op(name).unwrap_or(1.0);
                let zero = whole_op_floor(native, n, cost)?;
                Some((name, native, zero, reading_floor(native, n, cost)?))
            })
            .collect()
    }

    /// The kernel's measured cost of the LOOKUP line `name` sends (see
    /// `LOOKUP_LINES`), in seconds; none for other lines or without the
    /// floor probe.
    pub fn lookup_cost(&self, name: &str) -> Option<f64> {
        let &(_, kind) = LOOKUP_LINES.iter().find(|(n, _)| *n == name)?;
        self.kernel.as_ref()?.lookup(kind)
    }

    /// A line's FUSE floor (see `floor`): N requests per operation at the
    /// cost of one empty round trip each, or for a LOOKUP line (see
    /// `LOOKUP_LINES`; `reading_floor`) at the kernel's cost of that LOOKUP, with N = 1 if
    /// its requests were not counted (the line is one lookup per
    /// operation). A line the probe measured by passthrough takes that
    /// instead (see `passthrough_floor`): it sends no request, but the
    /// kernel's passthrough path is not free. None for the round-trip line
    /// itself, whose ratio is the floor's unit, and none where a needed
    /// input was not measured.
    pub fn floor(&self, row: &Row) -> Option<f64> {
        if row.name == ROUNDTRIP {
            return None;
        }
        if let Some(f) = self.passthrough_floor(row) {
            return Some(f);
        }
        if row.name == LIST_LINE
            && let Some(f) = self.list_floor()
        {
            return Some(f.zero_work());
        }
        let native = row.native_secs_per_op()?;
        if let Some(cost) = self.lookup_cost(&row.name) {
            // As for every other line, the daemon does the native operation
            // too: the issue has lookups answered from the tiers, never from
            // a memory of them (the zero-work floor, `whole_op_floor`, is in
            // the kernel floor section).
            let n = self.sync_requests_per_op(&row.name).unwrap_or(1.0);
            return reading_floor(native, n, cost);
        }
        floor(
            native,
            self.sync_requests_per_op(&row.name)?,
            self.roundtrip_secs()?,
        )
    }

    /// Requests per operation for each phase, averaged over repetitions,
    /// most frequent first, with how many of them the client waited for.
    pub fn print_requests(&self) {
        let mut phases: Vec<&str> = Vec::new();
        for r in &self.requests {
            if !phases.contains(&r.phase.as_str()) {
                phases.push(&r.phase);
            }
        }
        for p in phases {
            let runs: Vec<&Requests> = self.requests.iter().filter(|r| r.phase == p).collect();
            let ops: f64 = runs.iter().map(|r| r.ops).sum();
            let mut total: BTreeMap<&str, u64> = BTreeMap::new();
            for r in &runs {
                for (op, n) in &r.counts {
                    *total.entry(op).or_default() += n;
                }
            }
            let mut v: Vec<(&str, u64)> = total.into_iter().collect();
            v.sort_by_key(|x| std::cmp::Reverse(x.1));
            let all: u64 = v.iter().map(|x| x.1).sum();
            let sync: u64 = runs.iter().map(|r| r.sync()).sum();
            let per = if runs.iter().all(|r| r.ops == 1.0) {
                "per run"
            } else {
                "per op"
            };
            let mut list: Vec<String> = v
                .iter()
                .map(|(op, n)| format!("{op} {}", fmt_num(*n as f64 / ops)))
                .collect();
            if list.is_empty() {
                list.push("none".into());
            }
            println!(
                "{p:<22} {} {per} ({} waited for): {}",
                fmt_num(all as f64 / ops),
                fmt_num(sync as f64 / ops),
                list.join(", ")
            );
        }
    }

    /// The daemon's CPU time per phase (median), on each side. On the native
    /// side it is the tier watcher handling events from the shared
    /// filesystem; on the dfs side, serving the phase's requests (and
    /// watching).
    pub fn print_daemon_cpu(&self) {
        println!(
            "{:<26} {:>12} {:>12}",
            "phase",
            format!("{} side", self.side_name(Side::Native)),
            format!("{} side", self.side_name(Side::Dfs))
        );
        for r in &self.rows {
            let side = |want: Side| {
                let v: Vec<f64> = self
                    .daemon_cpu
                    .iter()
                    .filter(|(p, s, _)| *p == r.name && *s == want)
                    .map(|x| x.2 * 1000.0)
                    .collect();
                median(&v).map_or("-".into(), |ms| format!("{ms:.0} ms"))
            };
            if side(Side::Native) == "-" && side(Side::Dfs) == "-" {
                continue;
            }
            println!(
                "{:<26} {:>12} {:>12}",
                r.name,
                side(Side::Native),
                side(Side::Dfs)
            );
        }
    }

    /// The table of medians; returns how many lines are under target. With
    /// request counts, a floor column (see `floor`) sits before the target,
    /// and a line under a target its floor is below is marked as at the
    /// FUSE floor (the target is out of reach for FUSE's round trips alone)
    /// rather than under target.
    pub fn print(&self) -> usize {
        let show_floor =
            !self.requests.is_empty() || self.rows.iter().any(|r| self.floor(r).is_some());
        let floor_col = |s: String| {
            if show_floor {
                format!(" {s:>7}")
            } else {
                String::new()
            }
        };
        let mut under = 0;
        println!(
            "{:<26} {:<6} {:>12} {:>12} {:>7}{} {:>7}  n",
            "workload",
            "unit",
            self.side_name(Side::Native),
            self.side_name(Side::Dfs),
            "ratio",
            floor_col("floor".into()),
            "target"
        );
        println!("{}", "-".repeat(if show_floor { 92 } else { 84 }));
        for r in &self.rows {
            let ratio = r.ratio();
            let tgt = target(&r.name);
            let fl = self.floor(r);
            let mark = match (ratio, tgt) {
                (Some(x), Some(t)) if x < t => {
                    under += 1;
                    if fl.is_some_and(|f| t > f) {
                        "  << AT FUSE FLOOR"
                    } else {
                        "  << UNDER TARGET"
                    }
                }
                _ => "",
            };
            println!(
                "{:<26} {:<6} {:>12} {:>12} {:>7}{} {:>7}  {}{}",
                r.name,
                r.unit,
                median(&r.native).map_or("-".into(), fmt_num),
                median(&r.dfs).map_or("-".into(), fmt_num),
                ratio.map_or("-".into(), |x| format!("{x:.3}")),
                floor_col(fl.map_or("-".into(), |x| format!("{x:.3}"))),
                tgt.map_or("-".into(), |t| format!("{t:.2}")),
                r.native.len().min(r.dfs.len()),
                mark
            );
        }
        under
    }
}

/// A number with about four significant digits and no exponent.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn ratios_are_higher_is_better() {
        let rate = Row {
            name: "x".into(),
            unit: "ops/s",
            kind: Kind::Rate,
            native: vec![100.0],
            dfs: vec![50.0],
        };
        assert_eq!(rate.ratio(), Some(0.5));
        let time = Row {
            kind: Kind::Time,
            native: vec![1.0],
            dfs: vec![4.0],
            ..rate
        };
        assert_eq!(time.ratio(), Some(0.25));
    }

    #[test]
    fn sync_requests_leave_out_what_the_kernel_does_not_wait_for() {
        for op in [
            "LOOKUP", "GETATTR", "OPEN", "READ", "FLUSH", "CREATE", "GETXATTR",
        ] {
            assert!(is_sync(op), "{op}");
        }
        for op in [
            "FORGET",
            "BATCHFORGET",
            "BATCH_FORGET",
            "RELEASE",
            "RELEASEDIR",
            "INTERRUPT",
            "UNKNOWN",
        ] {
            assert!(!is_sync(op), "{op}");
        }
        let r = Requests {
            phase: "small/read".into(),
            ops: 10.0,
            counts: [("LOOKUP", 10), ("OPEN", 10), ("RELEASE", 10), ("FORGET", 3)]
                .into_iter()
                .map(|(op, n)| (op.to_string(), n))
                .collect(),
        };
        assert_eq!(r.sync(), 20);
    }

    #[test]
    fn floor_arithmetic() {
        // 1 us native per op, 2 round trips of 4 us: 1 / (1 + 8).
        let f = floor(1e-6, 2.0, 4e-6).unwrap();
        assert!((f - 1.0 / 9.0).abs() < 1e-12, "{f}");
        // No request the client waits for: native speed is reachable.
        assert_eq!(floor(1e-6, 0.0, 4e-6), Some(1.0));
        assert_eq!(floor(0.0, 2.0, 4e-6), None);
        assert_eq!(floor(1e-6, f64::NAN, 4e-6), None);
        assert_eq!(whole_op_floor(2e-6, 1.0, 8e-6), Some(0.25));
        assert_eq!(whole_op_floor(2e-6, 1.0, 1e-6), Some(1.0));
        assert_eq!(whole_op_floor(2e-6, 0.0, 8e-6), None);
        // The daemon's own stat of its tier's copy adds the native time.
        assert_eq!(reading_floor(2e-6, 1.0, 8e-6), Some(0.2));
        assert_eq!(reading_floor(2e-6, 0.0, 8e-6), None);
        assert_eq!(floor(1e-6, 2.0, f64::INFINITY), None);
    }

    fn row(name: &str, kind: Kind, native: f64, dfs: f64) -> Row {
        Row {
            name: name.into(),
            unit: if kind == Kind::Rate { "ops/s" } else { "s" },
            kind,
            native: vec![native],
            dfs: vec![dfs],
        }
    }

    fn counted(phase: &str, ops: f64, counts: &[(&str, u64)]) -> Requests {
        Requests {
            phase: phase.into(),
            ops,
            counts: counts.iter().map(|&(op, n)| (op.into(), n)).collect(),
        }
    }

    #[test]
    fn floors_from_the_table() {
        let mut t = Table::default();
        // One empty round trip: 10 us (100,000 per second on dfs).
        t.rows.push(row(ROUNDTRIP, Kind::Rate, 1e6, 1e5));
        // 100,000 stats/s native (10 us each), 1 LOOKUP + 1 GETATTR each
        // (and forgets, which do not count): 10 / (10 + 2 x 10) = 1/3.
        t.rows.push(row("small/stat", Kind::Rate, 1e5, 2e4));
        // A 2 s command with 100,000 requests waited for per run:
        // 2 / (2 + 1) = 2/3.
        t.rows.push(row("tree/du", Kind::Time, 2.0, 4.0));
        t.rows.push(row("small/list", Kind::Rate, 1e5, 5e4));
        for _ in 0..2 {
            t.requests.push(counted(
                "small/stat",
                1000.0,
                &[("LOOKUP", 1000), ("GETATTR", 1000), ("FORGET", 500)],
            ));
        }
        t.requests.push(counted(
            "tree/du",
            1.0,
            &[
                ("READDIRPLUS", 60_000),
                ("LOOKUP", 40_000),
                ("RELEASEDIR", 9),
            ],
        ));
        t.requests
            .push(counted(ROUNDTRIP, 1000.0, &[("GETXATTR", 1000)]));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(t.roundtrip_secs(), 1e-5));
        assert!(close(t.sync_requests_per_op("small/stat"), 2.0));
        assert!(close(t.floor(&t.rows[1]), 1.0 / 3.0));
        assert!(close(t.floor(&t.rows[2]), 2.0 / 3.0));
        // Not counted: no floor. The round-trip line has none either.
        assert_eq!(t.floor(&t.rows[3]), None);
        assert_eq!(t.floor(&t.rows[0]), None);
        // No round trip measured: no floor anywhere.
        t.rows.remove(0);
        assert_eq!(t.floor(&t.rows[0]), None);
    }

    #[test]
    fn lookup_lines_use_the_kernel_cost() {
        let mut t = Table::default();
        t.rows.push(row(ROUNDTRIP, Kind::Rate, 1e6, 1e5));
        // 250,000 negative stats/s native (4 us each).
        t.rows.push(row("neg-lookup", Kind::Rate, 2.5e5, 5e4));
        // 500,000 fresh stats/s native (2 us each).
        t.rows.push(row("tier2-stat", Kind::Rate, 5e5, 4e4));
        t.rows.push(row("small/stat", Kind::Rate, 1e5, 2e4));
        t.requests
            .push(counted("neg-lookup", 1000.0, &[("LOOKUP", 1000)]));
        t.requests
            .push(counted("small/stat", 1000.0, &[("GETATTR", 1000)]));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        // Without the probe: the empty round trip (10 us) for every line.
        assert!(close(t.floor(&t.rows[1]), 4.0 / 14.0));
        assert_eq!(t.floor(&t.rows[2]), None);
        t.kernel = Some(KernelCosts {
            transport: "io_uring".into(),
            ops: [1000; 3],
            roundtrip: vec![9e-6, 8e-6, 10e-6],
            negative: vec![12e-6, 11e-6, 30e-6],
            positive: vec![13e-6, 14e-6, 12e-6],
            listing: Vec::new(),
        });
        // Medians: negative 12 us, positive 13 us, each a whole stat on the
        // probe, plus the native stat the daemon does on its tier;
        // tier2-stat was not counted, so one LOOKUP per operation.
        assert!(close(t.lookup_cost("neg-lookup"), 12e-6));
        assert!(close(t.floor(&t.rows[1]), 4.0 / 16.0));
        assert!(close(t.floor(&t.rows[2]), 2.0 / 15.0));
        // The zero-work floors, without the native stat.
        let zero: Vec<(&str, f64)> = t.lookup_floors().iter().map(|l| (l.0, l.2)).collect();
        assert_eq!(zero.len(), 2);
        assert!((zero[0].1 - 4.0 / 12.0).abs() < 1e-9 && (zero[1].1 - 2.0 / 13.0).abs() < 1e-9);
        // Other lines keep the round-trip line's cost.
        assert_eq!(t.lookup_cost("small/stat"), None);
        assert!(close(t.floor(&t.rows[3]), 10.0 / 20.0));
    }

    #[test]
    fn the_list_line_uses_the_probe_listing() {
        let mut t = Table::default();
        t.rows.push(row(ROUNDTRIP, Kind::Rate, 1e6, 1e5));
        // 4,000,000 names/s native: 25 us per directory of 100.
        t.rows.push(row(LIST_LINE, Kind::Rate, 4e6, 1.5e6));
        t.requests.push(counted(
            LIST_LINE,
            1000.0,
            &[("READDIRPLUS", 10), ("READDIR", 10)],
        ));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        // Without the probe's listing: two round trips per 100 names.
        assert!(close(t.floor(&t.rows[1]), 0.25 / (0.25 + 0.2)));
        assert_eq!(t.list_floor(), None);
        t.kernel = Some(KernelCosts {
            transport: "io_uring".into(),
            ops: [1000; 3],
            roundtrip: vec![10e-6],
            negative: vec![12e-6],
            positive: vec![13e-6],
            listing: vec![60e-6, 50e-6, 70e-6],
        });
        let f = t.list_floor().unwrap();
        assert!((f.native - 25e-6).abs() < 1e-12 && (f.kernel - 60e-6).abs() < 1e-12);
        assert!(close(t.floor(&t.rows[1]), 25.0 / 60.0));
        assert!((f.reading_the_tier() - 25.0 / 85.0).abs() < 1e-9);
    }

    #[test]
    fn passthrough_floor_from_probe_and_native() {
        // Medians: probe 900k, native 1M IOPS.
        let f = passthrough_floor(&[950e3, 800e3, 900e3], &[1.2e6, 1e6, 0.9e6]).unwrap();
        assert!((f - 0.9).abs() < 1e-12, "{f}");
        // A probe faster than native (noise) is capped at native speed.
        assert_eq!(passthrough_floor(&[2e6], &[1e6]), Some(1.0));
        assert_eq!(passthrough_floor(&[], &[1e6]), None);
        assert_eq!(passthrough_floor(&[1e6], &[]), None);
        assert_eq!(passthrough_floor(&[0.0], &[1e6]), None);
        assert_eq!(passthrough_floor(&[1e6], &[f64::INFINITY]), None);
    }

    #[test]
    fn the_probe_replaces_the_counted_floor_of_a_passthrough_line() {
        let mut t = Table::default();
        t.rows.push(row(ROUNDTRIP, Kind::Rate, 1e6, 1e5));
        t.rows.push(row("rand-read-4k", Kind::Rate, 1e6, 0.88e6));
        t.requests.push(counted("rand-read-4k", 1000.0, &[]));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        // Counted: no request, so a floor of 1.
        assert!(close(t.floor(&t.rows[1]), 1.0));
        assert_eq!(t.passthrough_floor(&t.rows[1]), None);
        for v in [0.91e6, 0.85e6, 0.9e6] {
            t.probe_rate("rand-read-4k", "IOPS", "4 KiB pread", v, 1.0, 0);
        }
        assert!(close(t.floor(&t.rows[1]), 0.9));
        let p = t.passthrough_for("rand-read-4k").unwrap();
        assert_eq!((p.probe.len(), p.requests, p.op), (3, 0, "4 KiB pread"));
        // Only that line.
        assert_eq!(t.floor(&t.rows[0]), None);
        assert_eq!(t.passthrough_for(ROUNDTRIP).map(|p| p.line.as_str()), None);
    }

    #[test]
    fn targets_by_phase() {
        assert_eq!(target("small/stat-cold"), Some(0.30));
        assert_eq!(target("seq-read-cold"), None);
        assert_eq!(target("tree/rm"), Some(0.55));
        assert_eq!(target("mover/throughput"), Some(0.90));
        assert_eq!(target("mover/throughput-nosync"), None);
        assert_eq!(target("mover/read-p99-throttled"), None);
    }
}
