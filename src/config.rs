//! dfs.toml: the tiers, the placement policy and the mount options.
//!
//! Parsing is strict (unknown keys are errors) because a typo in a storage
//! configuration should stop the mount, not be silently ignored. Every error
//! names the file, the line and the key.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::units::{Size, parse_duration, parse_size};
use std::time::Duration;

/// The mount options the stock preset and a config without `[mount]` use.
pub const DEFAULT_MOUNT_OPTIONS: &[&str] = &["allow_other", "default_permissions"];

/// The policy used when `[policy]` is absent: the article's rule.
pub const DEFAULT_POLICY: &str = "parent-dir";

/// A parsed dfs.toml (or the configuration a preset command line stands for).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the union is mounted; the command line may override it.
    pub mountpoint: Option<PathBuf>,
    /// Tiers in order, fastest first.
    pub tiers: Vec<TierConfig>,
    /// Which policy places new names.
    pub policy: PolicyConfig,
    /// Mount options as written (`allow_other`, `noallow_other`, ...).
    pub mount_options: Vec<String>,
    /// Kernel cache lifetimes.
    pub cache: CacheConfig,
    /// The mover, if configured.
    pub mover: Option<MoverConfig>,
    /// The file this came from, so later checks can still point at a line.
    pub origin: Origin,
}

/// Where a configuration came from, for locating later errors.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The config file, or `None` for a preset built from the command line.
    pub file: Option<PathBuf>,
    source: String,
}

/// The `[cache]` table: how long the kernel may trust what dfs told it.
/// Unset values get defaults at mount time: long when dfs watches the tiers
/// for changes, one second when it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CacheConfig {
    /// Name -> node mappings.
    pub entry: Option<Duration>,
    /// Attributes.
    pub attr: Option<Duration>,
    /// "No such name" answers.
    pub negative: Option<Duration>,
}

/// One `[[tier]]` table.
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// Short name used in logs, policies and `dfs where`.
    pub name: String,
    /// The tier's root directory.
    pub path: PathBuf,
    /// Below this much free space the tier takes no new names.
    pub min_free: Option<Size>,
    /// Byte range of the tier's `path` value in the file, for error lines.
    pub span: Option<Range<usize>>,
}

/// The `[policy]` table.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// `parent-dir`, `first-found`, `most-free`, `glob-rule`.
    pub kind: String,
    /// For `glob-rule`: the policy deciding names no rule matches.
    pub fallback: Option<String>,
    /// For `glob-rule`: the ordered rules.
    pub rules: Vec<RuleConfig>,
    /// For `plugin`: the shared library to load.
    pub path: Option<PathBuf>,
    /// For `plugin`: `[policy.options]`, handed to the plugin as TOML text.
    pub options: Option<toml::Table>,
    /// Byte range of `kind`, for error lines.
    pub kind_span: Option<Range<usize>>,
}

/// One `[[policy.rule]]`: names matching `glob` go to tier `tier`.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// globset syntax, matched against the path inside the mount.
    pub glob: String,
    /// A tier name from the `[[tier]]` list.
    pub tier: String,
    /// Byte range of the rule's glob, for error lines.
    pub span: Option<Range<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mountpoint: Option<PathBuf>,
    #[serde(default)]
    tier: Vec<RawTier>,
    policy: Option<RawPolicy>,
    mount: Option<RawMount>,
    cache: Option<RawCache>,
    mover: Option<RawMover>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMover {
    interval: Option<Spanned<String>>,
    bandwidth: Option<Spanned<String>>,
    order: Option<Spanned<String>>,
    #[serde(default)]
    watermark: std::collections::BTreeMap<String, RawWatermark>,
    #[serde(default)]
    rule: Vec<RawMoveRule>,
    #[serde(default)]
    pin: Vec<RawPin>,
    promote: Option<RawPromote>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatermark {
    high: Spanned<String>,
    low: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMoveRule {
    from: Spanned<String>,
    to: Spanned<String>,
    #[serde(rename = "match")]
    glob: Option<Spanned<String>>,
    not_accessed_for: Option<Spanned<String>>,
    not_modified_for: Option<Spanned<String>>,
    min_size: Option<Spanned<String>>,
    max_size: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    #[serde(rename = "match")]
    glob: Spanned<String>,
    tier: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPromote {
    reads: Spanned<u32>,
    within: Spanned<String>,
}

/// The `[mover]` table: when and what moves between tiers.
#[derive(Debug, Clone, PartialEq)]
pub struct MoverConfig {
    /// Time between scheduled passes; `None` = "off" (passes on demand).
    pub interval: Option<Duration>,
    /// Copy throttle in bytes per second; `None` = unthrottled.
    pub bandwidth: Option<u64>,
    /// Which eligible file goes first.
    pub order: MoveOrder,
    /// Per-tier fill levels: (tier index, high, low).
    pub watermarks: Vec<Watermark>,
    /// Age rules, first match decides.
    pub rules: Vec<MoveRule>,
    /// Names that never leave a tier.
    pub pins: Vec<Pin>,
    /// Bring re-read files back up.
    pub promote: Option<Promote>,
}

/// Order in which eligible files are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOrder {
    /// Least recently accessed first.
    Lru,
    /// Largest idle time x size first.
    SizeLru,
}

/// Demote from `tier` when it is above `high` used until below `low`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    /// Tier index.
    pub tier: usize,
    /// Start demoting above this much used space.
    pub high: Size,
    /// Stop once used space is below this.
    pub low: Size,
}

/// An age rule: files on `from` matching the conditions go to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveRule {
    /// Source tier index.
    pub from: usize,
    /// Destination tier index.
    pub to: usize,
    /// globset pattern against the path inside the mount.
    pub glob: String,
    /// Last access through dfs (or max(atime, mtime)) at least this old.
    pub not_accessed_for: Option<Duration>,
    /// mtime at least this old.
    pub not_modified_for: Option<Duration>,
    /// Only files at least this large.
    pub min_size: Option<u64>,
    /// Only files at most this large.
    pub max_size: Option<u64>,
}

/// Names matching `glob` never leave `tier`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    /// globset pattern against the path inside the mount.
    pub glob: String,
    /// The tier they stay on.
    pub tier: usize,
}

/// A file read `reads` times within `within` goes back to the fastest tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Promote {
    /// Opens for read needed (at least 2: never on the first read).
    pub reads: u32,
    /// The window they must fall in.
    pub within: Duration,
}

impl MoverConfig {
    /// The shipped defaults of the two-tier preset (see README).
    pub fn preset() -> Self {
        MoverConfig {
            interval: Some(Duration::from_secs(3600)),
            bandwidth: Some(200 << 20),
            order: MoveOrder::Lru,
            watermarks: vec![Watermark {
                tier: 0,
                high: Size::Percent(90.0),
                low: Size::Percent(80.0),
            }],
            rules: vec![MoveRule {
                from: 0,
                to: 1,
                glob: "**".into(),
                not_accessed_for: Some(Duration::from_secs(180 * 86_400)),
                not_modified_for: None,
                min_size: None,
                max_size: None,
            }],
            pins: vec![Pin {
                glob: "templates/**".into(),
                tier: 0,
            }],
            promote: Some(Promote {
                reads: 2,
                within: Duration::from_secs(7 * 86_400),
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    entry: Option<Spanned<String>>,
    attr: Option<Spanned<String>>,
    negative: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: Spanned<String>,
    path: Spanned<PathBuf>,
    min_free: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    kind: Option<Spanned<String>>,
    fallback: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
    path: Option<Spanned<PathBuf>>,
    options: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    glob: Spanned<String>,
    tier: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    #[serde(default)]
    options: Vec<String>,
}

/// The built-in policy kinds, for validation and help texts.
pub const POLICY_KINDS: &[&str] = &[
    "parent-dir",
    "first-found",
    "most-free",
    "glob-rule",
    "plugin",
];

impl Config {
    /// Reads and parses a dfs.toml; errors carry file, line and key.
    pub fn load(path: &Path) -> Result<Config> {
        let source = fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read config {}", path.display()), e))?;
        Config::parse(&source, Some(path))
    }

    /// Parses config text; `file` is used only for messages.
    pub fn parse(source: &str, file: Option<&Path>) -> Result<Config> {
        let origin = Origin {
            file: file.map(Path::to_path_buf),
            source: source.to_string(),
        };
        let raw: RawConfig = toml::from_str(source).map_err(|e| {
            let span = e.span();
            let key = key_of_error(e.message(), source, span.clone());
            origin.error_at(span, &key, first_line(e.message()))
        })?;
        let mut tiers = Vec::with_capacity(raw.tier.len());
        for t in raw.tier {
            let min_free = match t.min_free {
                None => None,
                Some(m) => Some(
                    parse_size(m.get_ref())
                        .map_err(|e| origin.error_at(Some(m.span()), "tier.min_free", &e))?,
                ),
            };
            tiers.push(TierConfig {
                name: t.name.get_ref().clone(),
                span: Some(t.path.span()),
                path: t.path.into_inner(),
                min_free,
            });
        }
        let policy = match raw.policy {
            None => PolicyConfig::default(),
            Some(p) => PolicyConfig {
                kind_span: p.kind.as_ref().map(|k| k.span()),
                kind: p
                    .kind
                    .map(|k| k.into_inner())
                    .unwrap_or_else(|| DEFAULT_POLICY.to_string()),
                fallback: p.fallback.map(|f| f.into_inner()),
                path: p.path.map(|f| f.into_inner()),
                options: p.options,
                rules: p
                    .rule
                    .into_iter()
                    .map(|r| RuleConfig {
                        span: Some(r.glob.span()),
                        glob: r.glob.into_inner(),
                        tier: r.tier.into_inner(),
                    })
                    .collect(),
            },
        };
        let mount_options = match raw.mount {
            Some(m) => m.options,
            None => DEFAULT_MOUNT_OPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let mut cache = CacheConfig::default();
        if let Some(c) = raw.cache {
            for (field, key, slot) in [
                (c.entry, "cache.entry", &mut cache.entry),
                (c.attr, "cache.attr", &mut cache.attr),
                (c.negative, "cache.negative", &mut cache.negative),
            ] {
                if let Some(v) = field {
                    *slot = Some(
                        parse_duration(v.get_ref())
                            .map_err(|e| origin.error_at(Some(v.span()), key, &e))?,
                    );
                }
            }
        }
        let mover = match raw.mover {
            None => None,
            Some(m) => Some(parse_mover(m, &tiers, &origin)?),
        };
        let cfg = Config {
            mountpoint: raw.mountpoint,
            tiers,
            policy,
            mount_options,
            cache,
            mover,
            origin,
        };
        cfg.check_semantics()?;
        Ok(cfg)
    }

    /// The configuration `dfs mount PSS SSS MOUNTPOINT` stands for.
    pub fn preset(pss: &Path, sss: &Path, mountpoint: Option<&Path>) -> Config {
        Config {
            mountpoint: mountpoint.map(Path::to_path_buf),
            tiers: vec![
                TierConfig {
                    name: "pss".into(),
                    path: pss.to_path_buf(),
                    min_free: None,
                    span: None,
                },
                TierConfig {
                    name: "sss".into(),
                    path: sss.to_path_buf(),
                    min_free: None,
                    span: None,
                },
            ],
            policy: PolicyConfig::default(),
            mount_options: DEFAULT_MOUNT_OPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cache: CacheConfig::default(),
            mover: Some(MoverConfig::preset()),
            origin: Origin::default(),
        }
    }

    /// Checks that need the whole file: tier names, policy kind, rule tiers.
    fn check_semantics(&self) -> Result<()> {
        if self.tiers.is_empty() {
            return Err(self.origin.error_at(
                None,
                "tier",
                "at least one [[tier]] table (with name and path) is required",
            ));
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.name.is_empty()
                || t.name
                    .contains(|c: char| c.is_whitespace() || c == '/' || c == ',')
            {
                return Err(self.origin.error_at(
                    t.span.clone(),
                    "tier.name",
                    &format!(
                        "tier name {:?} must be non-empty, without spaces, '/' or ','",
                        t.name
                    ),
                ));
            }
            if self.tiers[..i].iter().any(|o| o.name == t.name) {
                return Err(self.origin.error_at(
                    t.span.clone(),
                    "tier.name",
                    &format!("tier name `{}` is used twice", t.name),
                ));
            }
        }
        let p = &self.policy;
        if !POLICY_KINDS.contains(&p.kind.as_str()) {
            return Err(self.origin.error_at(
                p.kind_span.clone(),
                "policy.kind",
                &format!(
                    "unknown policy `{}`; expected one of: {}",
                    p.kind,
                    POLICY_KINDS.join(", ")
                ),
            ));
        }
        if p.kind == "plugin" && p.path.is_none() {
            return Err(self.origin.error_at(
                p.kind_span.clone(),
                "policy.path",
                "kind = \"plugin\" needs `path`, the plugin's shared library",
            ));
        }
        if p.kind != "plugin" && (p.path.is_some() || p.options.is_some()) {
            return Err(self.origin.error_at(
                p.kind_span.clone(),
                "policy.path",
                "`path` and `options` belong to kind = \"plugin\"",
            ));
        }
        if let Some(fb) = &p.fallback {
            if p.kind != "glob-rule" {
                return Err(self.origin.error_at(
                    p.kind_span.clone(),
                    "policy.fallback",
                    "`fallback` belongs to kind = \"glob-rule\"",
                ));
            }
            if fb == "glob-rule" || fb == "plugin" || !POLICY_KINDS.contains(&fb.as_str()) {
                return Err(self.origin.error_at(
                    p.kind_span.clone(),
                    "policy.fallback",
                    &format!("unknown fallback policy `{fb}`"),
                ));
            }
        }
        for r in &p.rules {
            if !self.tiers.iter().any(|t| t.name == r.tier) {
                return Err(self.origin.error_at(
                    r.span.clone(),
                    "policy.rule.tier",
                    &format!("rule for `{}` names unknown tier `{}`", r.glob, r.tier),
                ));
            }
            if let Err(e) = globset::Glob::new(&r.glob) {
                return Err(self.origin.error_at(
                    r.span.clone(),
                    "policy.rule.glob",
                    &format!("bad glob: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// Renders the configuration as a dfs.toml a user can start from.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        if let Some(m) = &self.mountpoint {
            s += &format!("mountpoint = {}\n\n", toml_str(&m.to_string_lossy()));
        }
        s += "# tiers in order, fastest first\n";
        for t in &self.tiers {
            s += &format!(
                "[[tier]]\nname = {}\npath = {}\n",
                toml_str(&t.name),
                toml_str(&t.path.to_string_lossy())
            );
            if let Some(m) = &t.min_free {
                s += &format!("min_free = {}\n", toml_str(&size_str(m)));
            }
            s += "\n";
        }
        s += &format!("[policy]\nkind = {}\n", toml_str(&self.policy.kind));
        if let Some(fb) = &self.policy.fallback {
            s += &format!("fallback = {}\n", toml_str(fb));
        }
        if let Some(p) = &self.policy.path {
            s += &format!("path = {}\n", toml_str(&p.to_string_lossy()));
        }
        if let Some(o) = &self.policy.options {
            s += &format!("\n[policy.options]\n{o}");
        }
        for r in &self.policy.rules {
            s += &format!(
                "\n[[policy.rule]]\nglob = {}\ntier = {}\n",
                toml_str(&r.glob),
                toml_str(&r.tier)
            );
        }
        if self.cache != CacheConfig::default() {
            s += "\n[cache]\n";
            for (k, v) in [
                ("entry", self.cache.entry),
                ("attr", self.cache.attr),
                ("negative", self.cache.negative),
            ] {
                if let Some(d) = v {
                    s += &format!("{k} = {}\n", toml_str(&format!("{}ms", d.as_millis())));
                }
            }
        }
        if let Some(m) = &self.mover {
            s += &self.mover_toml(m);
        }
        let opts: Vec<String> = self.mount_options.iter().map(|o| toml_str(o)).collect();
        s += &format!("\n[mount]\noptions = [{}]\n", opts.join(", "));
        s
    }
}

fn parse_mover(m: RawMover, tiers: &[TierConfig], origin: &Origin) -> Result<MoverConfig> {
    let tier = |v: &Spanned<String>, key: &str| -> Result<usize> {
        tiers
            .iter()
            .position(|t| t.name == *v.get_ref())
            .ok_or_else(|| {
                origin.error_at(
                    Some(v.span()),
                    key,
                    &format!("unknown tier `{}`", v.get_ref()),
                )
            })
    };
    let dur = |v: &Spanned<String>, key: &str| -> Result<Duration> {
        parse_duration(v.get_ref()).map_err(|e| origin.error_at(Some(v.span()), key, &e))
    };
    let bytes = |v: &Spanned<String>, key: &str| -> Result<u64> {
        match parse_size(v.get_ref()) {
            Ok(Size::Bytes(b)) => Ok(b),
            Ok(Size::Percent(_)) => Err(origin.error_at(
                Some(v.span()),
                key,
                "a size in bytes is needed here, not a percentage",
            )),
            Err(e) => Err(origin.error_at(Some(v.span()), key, &e)),
        }
    };
    let glob = |v: &Spanned<String>, key: &str| -> Result<String> {
        globset::Glob::new(v.get_ref())
            .map_err(|e| origin.error_at(Some(v.span()), key, &format!("bad glob: {e}")))?;
        Ok(v.get_ref().clone())
    };
    let interval = match &m.interval {
        None => Some(Duration::from_secs(3600)),
        Some(v) if v.get_ref() == "off" => None,
        Some(v) => Some(dur(v, "mover.interval")?),
    };
    let bandwidth = match &m.bandwidth {
        None => None,
        Some(v) if v.get_ref() == "off" || v.get_ref() == "unlimited" => None,
        Some(v) => {
            let t = v.get_ref().trim();
            let per = t.strip_suffix("/s").ok_or_else(|| {
                origin.error_at(
                    Some(v.span()),
                    "mover.bandwidth",
                    "a rate like `200MiB/s`, or `off`",
                )
            })?;
            Some(bytes(
                &Spanned::new(v.span(), per.to_string()),
                "mover.bandwidth",
            )?)
        }
    };
    let order = match m.order.as_ref().map(|o| o.get_ref().as_str()) {
        None | Some("lru") => MoveOrder::Lru,
        Some("size-lru") => MoveOrder::SizeLru,
        Some(other) => {
            return Err(origin.error_at(
                m.order.as_ref().map(|o| o.span()),
                "mover.order",
                &format!("unknown order `{other}`; expected `lru` or `size-lru`"),
            ));
        }
    };
    let mut watermarks = Vec::new();
    for (name, w) in &m.watermark {
        let t = tiers.iter().position(|t| t.name == *name).ok_or_else(|| {
            origin.error_at(
                Some(w.high.span()),
                "mover.watermark",
                &format!("unknown tier `{name}`"),
            )
        })?;
        let parse = |v: &Spanned<String>, key: &str| {
            parse_size(v.get_ref()).map_err(|e| origin.error_at(Some(v.span()), key, &e))
        };
        let high = parse(&w.high, "mover.watermark.high")?;
        let low = parse(&w.low, "mover.watermark.low")?;
        let inverted = match (high, low) {
            (Size::Percent(h), Size::Percent(l)) => l >= h,
            (Size::Bytes(h), Size::Bytes(l)) => l >= h,
            _ => false, // mixed units: compared against the tier's size at run time
        };
        if inverted {
            return Err(origin.error_at(
                Some(w.low.span()),
                "mover.watermark.low",
                "`low` must be below `high`",
            ));
        }
        watermarks.push(Watermark { tier: t, high, low });
    }
    let mut rules = Vec::new();
    for r in &m.rule {
        let from = tier(&r.from, "mover.rule.from")?;
        let to = tier(&r.to, "mover.rule.to")?;
        if from == to {
            return Err(origin.error_at(
                Some(r.to.span()),
                "mover.rule.to",
                "`from` and `to` are the same tier",
            ));
        }
        rules.push(MoveRule {
            from,
            to,
            glob: match &r.glob {
                Some(g) => glob(g, "mover.rule.match")?,
                None => "**".into(),
            },
            not_accessed_for: r
                .not_accessed_for
                .as_ref()
                .map(|v| dur(v, "mover.rule.not_accessed_for"))
                .transpose()?,
            not_modified_for: r
                .not_modified_for
                .as_ref()
                .map(|v| dur(v, "mover.rule.not_modified_for"))
                .transpose()?,
            min_size: r
                .min_size
                .as_ref()
                .map(|v| bytes(v, "mover.rule.min_size"))
                .transpose()?,
            max_size: r
                .max_size
                .as_ref()
                .map(|v| bytes(v, "mover.rule.max_size"))
                .transpose()?,
        });
    }
    let mut pins = Vec::new();
    for p in &m.pin {
        pins.push(Pin {
            glob: glob(&p.glob, "mover.pin.match")?,
            tier: tier(&p.tier, "mover.pin.tier")?,
        });
    }
    let promote = match &m.promote {
        None => None,
        Some(p) => {
            if *p.reads.get_ref() < 2 {
                return Err(origin.error_at(
                    Some(p.reads.span()),
                    "mover.promote.reads",
                    "at least 2: a single read (a batch scan) must not promote",
                ));
            }
            Some(Promote {
                reads: *p.reads.get_ref(),
                within: dur(&p.within, "mover.promote.within")?,
            })
        }
    };
    Ok(MoverConfig {
        interval,
        bandwidth,
        order,
        watermarks,
        rules,
        pins,
        promote,
    })
}

fn size_str(s: &Size) -> String {
    match s {
        Size::Bytes(b) => b.to_string(),
        Size::Percent(p) => format!("{p}%"),
    }
}

impl Config {
    fn mover_toml(&self, m: &MoverConfig) -> String {
        let name = |i: usize| toml_str(self.tiers.get(i).map(|t| t.name.as_str()).unwrap_or("?"));
        let dur = |d: Duration| {
            let s = d.as_secs();
            if s.is_multiple_of(86_400) && s > 0 {
                format!("{}d", s / 86_400)
            } else if s.is_multiple_of(3600) && s > 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}s", d.as_secs_f64())
            }
        };
        let mut s = String::from("\n[mover]\n");
        s += &format!(
            "interval = {}\n",
            toml_str(&m.interval.map(dur).unwrap_or_else(|| "off".into()))
        );
        s += &format!(
            "bandwidth = {}\n",
            toml_str(
                &m.bandwidth
                    .map(|b| format!("{b}/s"))
                    .unwrap_or_else(|| "off".into())
            )
        );
        s += &format!(
            "order = {}\n",
            toml_str(match m.order {
                MoveOrder::Lru => "lru",
                MoveOrder::SizeLru => "size-lru",
            })
        );
        for w in &m.watermarks {
            let tier = self
                .tiers
                .get(w.tier)
                .map(|t| t.name.as_str())
                .unwrap_or("?");
            s += &format!(
                "\n[mover.watermark.{tier}]\nhigh = {}\nlow = {}\n",
                toml_str(&size_str(&w.high)),
                toml_str(&size_str(&w.low))
            );
        }
        for r in &m.rules {
            s += &format!(
                "\n[[mover.rule]]\nfrom = {}\nto = {}\nmatch = {}\n",
                name(r.from),
                name(r.to),
                toml_str(&r.glob)
            );
            if let Some(d) = r.not_accessed_for {
                s += &format!("not_accessed_for = {}\n", toml_str(&dur(d)));
            }
            if let Some(d) = r.not_modified_for {
                s += &format!("not_modified_for = {}\n", toml_str(&dur(d)));
            }
            if let Some(b) = r.min_size {
                s += &format!("min_size = {}\n", toml_str(&b.to_string()));
            }
            if let Some(b) = r.max_size {
                s += &format!("max_size = {}\n", toml_str(&b.to_string()));
            }
        }
        for p in &m.pins {
            s += &format!(
                "\n[[mover.pin]]\nmatch = {}\ntier = {}\n",
                toml_str(&p.glob),
                name(p.tier)
            );
        }
        if let Some(p) = &m.promote {
            s += &format!(
                "\n[mover.promote]\nreads = {}\nwithin = {}\n",
                p.reads,
                toml_str(&dur(p.within))
            );
        }
        s
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            kind: DEFAULT_POLICY.to_string(),
            fallback: None,
            rules: Vec::new(),
            path: None,
            options: None,
            kind_span: None,
        }
    }
}

impl Origin {
    /// Builds a located config error; without a file it still names the key.
    pub fn error_at(&self, span: Option<Range<usize>>, key: &str, msg: &str) -> Error {
        match &self.file {
            Some(file) => Error::Config {
                file: file.clone(),
                line: span.map(|s| line_of(&self.source, s.start)).unwrap_or(1),
                key: key.to_string(),
                msg: msg.to_string(),
            },
            None => Error::Invalid(format!("{key}: {msg}")),
        }
    }

    /// A "file:line: " prefix for the tier whose value sits at `span`.
    pub fn locate(&self, span: &Option<Range<usize>>) -> String {
        match (&self.file, span) {
            (Some(f), Some(s)) => format!("{}:{}: ", f.display(), line_of(&self.source, s.start)),
            (Some(f), None) => format!("{}: ", f.display()),
            _ => String::new(),
        }
    }
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or(msg).trim()
}

/// Finds the key a toml/serde error is about: the field an "unknown field"
/// message quotes, else the key written on the line of the error span.
fn key_of_error(msg: &str, source: &str, span: Option<Range<usize>>) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        return rest[..end].to_string();
    }
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some(end) = rest.find('`')
    {
        return rest[..end].to_string();
    }
    if let Some(span) = span {
        let start = source[..span.start.min(source.len())]
            .rfind('\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let line = source[start..].lines().next().unwrap_or("");
        if let Some((k, _)) = line.split_once('=') {
            return k.trim().to_string();
        }
        let t = line.trim();
        if !t.is_empty() {
            return t.trim_matches(['[', ']']).to_string();
        }
    }
    "?".to_string()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(src: &str) -> String {
        Config::parse(src, Some(Path::new("dfs.toml")))
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"mountpoint = "/srv/documents"
[[tier]]
name = "pss"
path = "/mnt/fast"
[[tier]]
name = "sss"
path = "/mnt/slow"
[policy]
kind = "parent-dir"
[mount]
options = ["allow_other", "default_permissions"]
"#,
            None,
        )
        .expect("valid config");
        assert_eq!(c.tiers.len(), 2);
        assert_eq!(c.tiers[1].name, "sss");
        assert_eq!(c.policy.kind, "parent-dir");
        assert_eq!(c.mountpoint.as_deref(), Some(Path::new("/srv/documents")));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse_err("[[tier]]\nname = \"a\"\npath = \"/x\"\nspeed = 3\n");
        assert!(e.starts_with("dfs.toml:4: key `speed`"), "{e}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = parse_err("[[tier]]\nname = 5\npath = \"/x\"\n");
        assert!(e.starts_with("dfs.toml:2: key `name`"), "{e}");
    }

    #[test]
    fn unknown_policy_is_rejected() {
        let e = parse_err("[[tier]]\nname = \"a\"\npath = \"/x\"\n[policy]\nkind = \"nope\"\n");
        assert!(e.starts_with("dfs.toml:5: key `policy.kind`"), "{e}");
        assert!(e.contains("unknown policy `nope`"), "{e}");
    }

    #[test]
    fn min_free_and_plugin_keys() {
        let c = Config::parse(
            "[[tier]]\nname = \"a\"\npath = \"/x\"\nmin_free = \"10%\"\n[policy]\nkind = \"plugin\"\npath = \"/p.so\"\n[policy.options]\nk = 1\n",
            None,
        )
        .expect("valid");
        assert_eq!(c.tiers[0].min_free, Some(Size::Percent(10.0)));
        assert_eq!(c.policy.path.as_deref(), Some(Path::new("/p.so")));
        let e = parse_err("[[tier]]\nname = \"a\"\npath = \"/x\"\nmin_free = \"lots\"\n");
        assert!(e.starts_with("dfs.toml:4: key `tier.min_free`"), "{e}");
        let e = parse_err("[[tier]]\nname = \"a\"\npath = \"/x\"\n[policy]\nkind = \"plugin\"\n");
        assert!(e.contains("policy.path"), "{e}");
    }

    #[test]
    fn duplicate_tier_names_rejected() {
        let e = parse_err(
            "[[tier]]\nname = \"a\"\npath = \"/x\"\n[[tier]]\nname = \"a\"\npath = \"/y\"\n",
        );
        assert!(e.contains("used twice"), "{e}");
    }

    #[test]
    fn preset_round_trips_through_toml() {
        let p = Config::preset(Path::new("/a"), Path::new("/b"), Some(Path::new("/m")));
        let back = Config::parse(&p.to_toml(), None).expect("preset toml parses");
        assert_eq!(back.tiers[0].path, Path::new("/a"));
        assert_eq!(back.tiers[1].name, "sss");
        assert_eq!(back.mount_options, p.mount_options);
        assert_eq!(back.mountpoint, p.mountpoint);
        assert_eq!(back.mover, p.mover);
    }

    #[test]
    fn mover_table_parses_and_rejects_typos() {
        let base =
            "[[tier]]\nname = \"pss\"\npath = \"/a\"\n[[tier]]\nname = \"sss\"\npath = \"/b\"\n";
        let c = Config::parse(
            &format!(
                "{base}[mover]\ninterval = \"off\"\nbandwidth = \"50MiB/s\"\norder = \"size-lru\"\n[mover.watermark.pss]\nhigh = \"90%\"\nlow = \"80%\"\n[[mover.rule]]\nfrom = \"pss\"\nto = \"sss\"\nmatch = \"**/*.pdf\"\nnot_modified_for = \"365d\"\nmin_size = \"1MiB\"\n[mover.promote]\nreads = 3\nwithin = \"1d\"\n"
            ),
            None,
        )
        .expect("valid mover");
        let m = c.mover.expect("mover present");
        assert_eq!(m.interval, None);
        assert_eq!(m.bandwidth, Some(50 << 20));
        assert_eq!(m.order, MoveOrder::SizeLru);
        assert_eq!(m.rules[0].min_size, Some(1 << 20));
        assert_eq!(m.promote.map(|p| p.reads), Some(3));
        let e = parse_err(&format!("{base}[mover]\ninterval = \"5 fortnights\"\n"));
        assert!(e.starts_with("dfs.toml:8: key `mover.interval`"), "{e}");
        let e = parse_err(&format!(
            "{base}[[mover.rule]]\nfrom = \"pss\"\nto = \"tape\"\n"
        ));
        assert!(e.contains("unknown tier `tape`"), "{e}");
        let e = parse_err(&format!(
            "{base}[mover.promote]\nreads = 1\nwithin = \"1d\"\n"
        ));
        assert!(e.contains("at least 2"), "{e}");
    }
}
