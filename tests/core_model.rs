//! The filesystem core (`dfs::fs::Fs`) against a reference model of the union
//! rules, without a FUSE mount.
//!
//! Each case builds 2 or 3 tier directories, seeds files and directories
//! directly on chosen tiers (shadowed copies, a file on a faster tier hiding a
//! directory on a slower one, a directory merged from several tiers, ...),
//! starts an `Fs` over them (parent-dir policy, root caller) and drives it the
//! way the kernel does: by node id, resolving each path with successive
//! lookups, counting the lookups it takes and giving them back with `forget`.
//! A random sequence of create (with and without O_EXCL, so also overwrite),
//! pwrite, truncate, unlink, mkdir, rmdir, rename (plain, RENAME_NOREPLACE,
//! RENAME_EXCHANGE; files and directories, onto existing and new names),
//! link, open files kept across other operations (pwrite and ftruncate
//! through them, close), and the kernel pruning its caches (forgetting the
//! nodes below a directory, or all of them) runs against the core and,
//! alongside, against a small in-memory model: a map of union paths to
//! `Dir(id)` | `File(id)` with contents by file id (hard links share the id),
//! built from the seeded tiers by the first-tier-wins rule and updated with
//! POSIX semantics. After every operation:
//!
//! * the result (Ok or the exact errno) equals the model's;
//! * the union read through the core (opendir + listing, lookup, getattr,
//!   readdir d_ino, readdirplus, open + read) equals the model: each name
//!   once, same kinds, same contents and sizes;
//! * every open handle reads its file's current content, and fstat through
//!   it gives its size, even once the file is renamed or unlinked;
//! * the union computed directly from the tier directories (first tier wins)
//!   equals the model too, hard links included;
//! * st_ino: a file or directory keeps its number across renames,
//!   overwrites and the cloning of directories onto faster tiers; hard links
//!   share one; distinct objects have distinct numbers; readdir's d_ino and
//!   readdirplus agree with lookup;
//! * on the tiers: a new name (create, mkdir) lands only on the first tier
//!   holding its parent directory (parent-dir rule); a link lands on its
//!   source's tier; after unlink, rmdir and rename no copy of the removed name
//!   remains on any tier; a renamed file has exactly one copy, a renamed
//!   directory is on exactly the tiers its source directory was on, an
//!   exchanged name has no stale copy; writes and truncates change no tier's
//!   set of copies; a failed operation leaves every tier exactly as it was;
//! * after the kernel forgets everything (no file open) the node table
//!   holds only the root.
//!
//! Operations the kernel answers itself without asking the filesystem
//! (renaming a directory into its own subtree or onto one of its ancestors,
//! a path onto itself) are not generated.
//!
//! Every case runs twice: as an unwatched mount, whose listings are read
//! from the tiers each time, and as a watched one, whose listings come from
//! the ones dfs remembers and updates with its own creates (see
//! `dfs::fs::remembered`): a change through the core that fails to update
//! or drop a remembered listing shows as a listing that differs from the
//! model.
//!
//! `PROPTEST_CASES=n` changes the number of cases (64 by default). The named
//! tests at the end replay, through the same checks, the minimal failing
//! sequences found so far.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use dfs::config::Config;
use dfs::creds::Caller;
use dfs::fs::nodes::ROOT;
use dfs::fs::{Attr, Fs, Options, SetAttr};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as PtConfig, TestCaseError};

const C: Caller = Caller::ROOT;
const DIRS: [&str; 3] = ["d0", "d1", "d2"];
const NAMES: [&str; 7] = ["d0", "d1", "d2", "f0", "f1", "f2", "f3"];

type Res<T> = std::result::Result<T, i32>;

fn errname(e: i32) -> String {
    let n = match e {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EXDEV => "EXDEV",
        libc::ESTALE => "ESTALE",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

fn show<T>(r: &Res<T>) -> String {
    match r {
        Ok(_) => "Ok".to_string(),
        Err(e) => format!("Err({})", errname(*e)),
    }
}

// ---------------------------------------------------------------------------
// paths
// ---------------------------------------------------------------------------

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn split(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

/// Whether `inner` is `outer` or lies below it.
fn within(inner: &str, outer: &str) -> bool {
    inner == outer || inner.starts_with(&format!("{outer}/"))
}

// ---------------------------------------------------------------------------
// the tiers as they are on disk
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Raw {
    Dir,
    /// Contents and backing identity (st_dev, st_ino).
    File(Vec<u8>, (u64, u64)),
}

/// Every path of one tier (the root and dfs's `.dfs` excluded).
type Snap = BTreeMap<String, Raw>;

fn snap_tier(root: &Path) -> Snap {
    fn walk(dir: &Path, rel: &str, out: &mut Snap) {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        for n in names {
            if rel.is_empty() && n == ".dfs" {
                continue;
            }
            let p = dir.join(&n);
            let r = join(rel, &n);
            let md = fs::symlink_metadata(&p).expect("lstat");
            if md.is_dir() {
                out.insert(r.clone(), Raw::Dir);
                walk(&p, &r, out);
            } else {
                let data = fs::read(&p).expect("read tier file");
                out.insert(r, Raw::File(data, (md.dev(), md.ino())));
            }
        }
    }
    let mut out = Snap::new();
    walk(root, "", &mut out);
    out
}

/// Tiers holding a copy of `p` (of any kind).
fn on_tiers(snaps: &[Snap], p: &str) -> Vec<usize> {
    (0..snaps.len())
        .filter(|&t| snaps[t].contains_key(p))
        .collect()
}

/// Tiers holding `p` as a directory (every tier for the root).
fn dir_tiers(snaps: &[Snap], p: &str) -> Vec<usize> {
    (0..snaps.len())
        .filter(|&t| p.is_empty() || snaps[t].get(p) == Some(&Raw::Dir))
        .collect()
}

/// The union by the first-tier-wins rule: path -> (winning tier, copy).
fn raw_union(snaps: &[Snap]) -> BTreeMap<String, (usize, Raw)> {
    fn visit(snaps: &[Snap], dir: &str, out: &mut BTreeMap<String, (usize, Raw)>) {
        let mut names = BTreeSet::new();
        for t in dir_tiers(snaps, dir) {
            for k in snaps[t].keys() {
                let (par, n) = split(k);
                if par == dir {
                    names.insert(n.to_string());
                }
            }
        }
        for n in names {
            let p = join(dir, &n);
            let t = (0..snaps.len())
                .find(|&t| snaps[t].contains_key(&p))
                .expect("listed name has a copy");
            let raw = snaps[t][&p].clone();
            let is_dir = raw == Raw::Dir;
            out.insert(p.clone(), (t, raw));
            if is_dir {
                visit(snaps, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(snaps, "", &mut out);
    out
}

// ---------------------------------------------------------------------------
// the model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    /// A directory by id (kept across renames).
    Dir(u64),
    /// A file by id; hard links share the id.
    File(u64),
}

#[derive(Debug, Clone, Default)]
struct Model {
    tree: BTreeMap<String, M>,
    data: HashMap<u64, Vec<u8>>,
    next_id: u64,
}

impl Model {
    fn from_tiers(snaps: &[Snap]) -> Model {
        let mut m = Model::default();
        let mut ids: HashMap<(u64, u64), u64> = HashMap::new();
        for (p, (_, raw)) in raw_union(snaps) {
            match raw {
                Raw::Dir => {
                    m.next_id += 1;
                    m.tree.insert(p, M::Dir(m.next_id));
                }
                Raw::File(data, key) => {
                    let id = *ids.entry(key).or_insert_with(|| {
                        m.next_id += 1;
                        m.next_id
                    });
                    m.data.insert(id, data);
                    m.tree.insert(p, M::File(id));
                }
            }
        }
        m
    }

    fn get(&self, p: &str) -> Option<M> {
        if p.is_empty() {
            Some(M::Dir(0))
        } else {
            self.tree.get(p).copied()
        }
    }

    /// Path resolution of directory `p` as the kernel does it.
    fn resolve_dir(&self, p: &str) -> Res<()> {
        if p.is_empty() {
            return Ok(());
        }
        let mut cur = String::new();
        for comp in p.split('/') {
            cur = join(&cur, comp);
            match self.tree.get(&cur) {
                None => return Err(libc::ENOENT),
                Some(M::File(_)) => return Err(libc::ENOTDIR),
                Some(M::Dir(_)) => {}
            }
        }
        Ok(())
    }

    fn children(&self, dir: &str) -> BTreeSet<String> {
        self.tree
            .keys()
            .filter(|k| split(k).0 == dir)
            .map(|k| split(k).1.to_string())
            .collect()
    }

    fn subtree(&self, p: &str) -> Vec<String> {
        self.tree.keys().filter(|k| within(k, p)).cloned().collect()
    }

    fn remove(&mut self, p: &str) {
        for k in self.subtree(p) {
            self.tree.remove(&k);
        }
    }

    fn new_file(&mut self, p: &str, data: Vec<u8>) {
        self.next_id += 1;
        self.data.insert(self.next_id, data);
        self.tree.insert(p.to_string(), M::File(self.next_id));
    }

    fn file_at(&self, p: &str) -> Res<u64> {
        let (par, _) = split(p);
        self.resolve_dir(par)?;
        match self.get(p) {
            None => Err(libc::ENOENT),
            Some(M::Dir(_)) => Err(libc::EISDIR),
            Some(M::File(id)) => Ok(id),
        }
    }

    // ---- operations: POSIX semantics on the union ----

    /// Ok(true) when a new file was made, Ok(false) when an existing one
    /// was truncated and rewritten.
    fn create(&mut self, p: &str, excl: bool, data: &[u8]) -> Res<bool> {
        self.resolve_dir(split(p).0)?;
        match self.get(p) {
            Some(_) if excl => Err(libc::EEXIST),
            Some(M::Dir(_)) => Err(libc::EISDIR),
            Some(M::File(id)) => {
                self.data.insert(id, data.to_vec());
                Ok(false)
            }
            None => {
                self.new_file(p, data.to_vec());
                Ok(true)
            }
        }
    }

    fn write(&mut self, p: &str, off: usize, data: &[u8]) -> Res<()> {
        let id = self.file_at(p)?;
        self.write_id(id, off, data);
        Ok(())
    }

    fn write_id(&mut self, id: u64, off: usize, data: &[u8]) {
        let d = self.data.get_mut(&id).expect("file data");
        // A write of nothing changes nothing, not even past the end.
        if data.is_empty() {
            return;
        }
        if d.len() < off + data.len() {
            d.resize(off + data.len(), 0);
        }
        d[off..off + data.len()].copy_from_slice(data);
    }

    fn truncate(&mut self, p: &str, size: usize) -> Res<()> {
        let id = self.file_at(p)?;
        self.data.get_mut(&id).expect("file data").resize(size, 0);
        Ok(())
    }

    fn unlink(&mut self, p: &str) -> Res<()> {
        self.resolve_dir(split(p).0)?;
        match self.get(p) {
            None => Err(libc::ENOENT),
            Some(M::Dir(_)) => Err(libc::EISDIR),
            Some(M::File(_)) => {
                self.tree.remove(p);
                Ok(())
            }
        }
    }

    fn mkdir(&mut self, p: &str) -> Res<()> {
        self.resolve_dir(split(p).0)?;
        if self.get(p).is_some() {
            return Err(libc::EEXIST);
        }
        self.next_id += 1;
        self.tree.insert(p.to_string(), M::Dir(self.next_id));
        Ok(())
    }

    fn rmdir(&mut self, p: &str) -> Res<()> {
        self.resolve_dir(split(p).0)?;
        match self.get(p) {
            None => Err(libc::ENOENT),
            Some(M::File(_)) => Err(libc::ENOTDIR),
            Some(M::Dir(_)) if !self.children(p).is_empty() => Err(libc::ENOTEMPTY),
            Some(M::Dir(_)) => {
                self.tree.remove(p);
                Ok(())
            }
        }
    }

    /// Ok(false) for the POSIX no-op (two names of one file).
    fn rename(&mut self, a: &str, b: &str, noreplace: bool) -> Res<bool> {
        self.resolve_dir(split(a).0)?;
        self.resolve_dir(split(b).0)?;
        let ka = self.get(a).ok_or(libc::ENOENT)?;
        let kb = self.get(b);
        if noreplace && kb.is_some() {
            return Err(libc::EEXIST);
        }
        match (ka, kb) {
            (M::File(x), Some(M::File(y))) if x == y => return Ok(false),
            (M::Dir(_), Some(M::File(_))) => return Err(libc::ENOTDIR),
            (M::File(_), Some(M::Dir(_))) => return Err(libc::EISDIR),
            (M::Dir(_), Some(M::Dir(_))) if !self.children(b).is_empty() => {
                return Err(libc::ENOTEMPTY);
            }
            _ => {}
        }
        self.remove(b);
        let moved: Vec<(String, M)> = self
            .subtree(a)
            .into_iter()
            .map(|k| {
                let v = self.tree.remove(&k).expect("subtree entry");
                (format!("{b}{}", &k[a.len()..]), v)
            })
            .collect();
        self.tree.extend(moved);
        Ok(true)
    }

    /// RENAME_EXCHANGE; Ok(false) for two names of one file.
    fn exchange(&mut self, a: &str, b: &str) -> Res<bool> {
        self.resolve_dir(split(a).0)?;
        self.resolve_dir(split(b).0)?;
        let ka = self.get(a).ok_or(libc::ENOENT)?;
        let kb = self.get(b).ok_or(libc::ENOENT)?;
        if let (M::File(x), M::File(y)) = (ka, kb)
            && x == y
        {
            return Ok(false);
        }
        let mut moved: Vec<(String, M)> = Vec::new();
        for (from, to) in [(a, b), (b, a)] {
            for k in self.subtree(from) {
                let v = self.tree[&k];
                moved.push((format!("{to}{}", &k[from.len()..]), v));
            }
        }
        self.remove(a);
        self.remove(b);
        self.tree.extend(moved);
        Ok(true)
    }

    fn link(&mut self, a: &str, b: &str) -> Res<()> {
        self.resolve_dir(split(a).0)?;
        let ka = self.get(a).ok_or(libc::ENOENT)?;
        self.resolve_dir(split(b).0)?;
        if self.get(b).is_some() {
            return Err(libc::EEXIST);
        }
        match ka {
            M::Dir(_) => Err(libc::EPERM),
            M::File(id) => {
                self.tree.insert(b.to_string(), M::File(id));
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// generated input
// ---------------------------------------------------------------------------

/// A path, chosen when the operation runs so that most operations hit names
/// that exist at that moment.
#[derive(Debug, Clone)]
enum PSel {
    /// A fixed path of the small name space.
    Raw(String),
    /// One of the union's current paths.
    Existing(Index),
    /// A name under one of the union's current directories (root included).
    Under(Index, &'static str),
    /// One of the union's current files (any path when there is none).
    File(Index),
    /// One of the union's current directories, root ("") included.
    Dir(Index),
}

#[derive(Debug, Clone)]
enum Op {
    /// create (O_CREAT|O_TRUNC|O_WRONLY, O_EXCL when `excl`) and write.
    Create {
        p: PSel,
        excl: bool,
        data: Vec<u8>,
    },
    /// open O_WRONLY and pwrite at `off`.
    Write {
        p: PSel,
        off: u8,
        data: Vec<u8>,
    },
    /// truncate(2) through setattr.
    Truncate {
        p: PSel,
        size: u8,
    },
    Unlink {
        p: PSel,
    },
    Mkdir {
        p: PSel,
    },
    Rmdir {
        p: PSel,
    },
    /// rename(2); `flags` 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
    Rename {
        a: PSel,
        b: PSel,
        flags: u32,
    },
    Link {
        a: PSel,
        b: PSel,
    },
    /// The kernel prunes its caches below directory `p` ("" for all of
    /// them) and forgets the nodes it no longer needs: not those open files
    /// pin, nor files still reachable through a name outside `p`.
    Forget {
        p: PSel,
    },
    /// open(O_RDWR), keeping the handle (at most 3 at a time).
    Open {
        p: PSel,
    },
    /// pwrite through an open handle.
    HWrite {
        h: u8,
        off: u8,
        data: Vec<u8>,
    },
    /// ftruncate: setattr with the handle.
    HTruncate {
        h: u8,
        size: u8,
    },
    /// close.
    Close {
        h: u8,
    },
}

#[derive(Debug, Clone)]
struct Seed {
    tier: usize,
    path: String,
    /// None for a directory.
    data: Option<Vec<u8>>,
}

fn raw_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(&DIRS[..]), 0..=2),
        prop::sample::select(&NAMES[..]),
    )
        .prop_map(|(dirs, n)| {
            let mut p = String::new();
            for d in dirs {
                p = join(&p, d);
            }
            join(&p, n)
        })
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"abcxyz".to_vec()), 0..6)
}

/// Mostly paths that exist.
fn old_path() -> impl Strategy<Value = PSel> {
    prop_oneof![
        6 => any::<Index>().prop_map(PSel::Existing),
        3 => any::<Index>().prop_map(PSel::File),
        1 => raw_path().prop_map(PSel::Raw),
        1 => (any::<Index>(), prop::sample::select(&NAMES[..])).prop_map(|(i, n)| PSel::Under(i, n)),
    ]
}

/// Mostly new names in existing directories.
fn new_path() -> impl Strategy<Value = PSel> {
    prop_oneof![
        5 => (any::<Index>(), prop::sample::select(&NAMES[..])).prop_map(|(i, n)| PSel::Under(i, n)),
        2 => raw_path().prop_map(PSel::Raw),
        2 => any::<Index>().prop_map(PSel::Existing),
    ]
}

/// Mostly files that exist.
fn file_path() -> impl Strategy<Value = PSel> {
    prop_oneof![
        6 => any::<Index>().prop_map(PSel::File),
        2 => any::<Index>().prop_map(PSel::Existing),
        1 => raw_path().prop_map(PSel::Raw),
    ]
}

fn rename_flags() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(0),
        2 => Just(libc::RENAME_NOREPLACE),
        1 => Just(libc::RENAME_EXCHANGE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (new_path(), any::<bool>(), content())
            .prop_map(|(p, excl, data)| Op::Create { p, excl, data }),
        2 => (file_path(), 0u8..6, content()).prop_map(|(p, off, data)| Op::Write { p, off, data }),
        1 => (file_path(), 0u8..10).prop_map(|(p, size)| Op::Truncate { p, size }),
        2 => file_path().prop_map(|p| Op::Unlink { p }),
        3 => new_path().prop_map(|p| Op::Mkdir { p }),
        2 => old_path().prop_map(|p| Op::Rmdir { p }),
        6 => (old_path(), new_path(), rename_flags())
            .prop_map(|(a, b, flags)| Op::Rename { a, b, flags }),
        2 => (file_path(), new_path()).prop_map(|(a, b)| Op::Link { a, b }),
        1 => prop_oneof![
            Just(PSel::Raw(String::new())),
            any::<Index>().prop_map(PSel::Dir),
        ].prop_map(|p| Op::Forget { p }),
        1 => file_path().prop_map(|p| Op::Open { p }),
        1 => (any::<u8>(), 0u8..6, content())
            .prop_map(|(h, off, data)| Op::HWrite { h, off, data }),
        1 => (any::<u8>(), 0u8..10).prop_map(|(h, size)| Op::HTruncate { h, size }),
        1 => any::<u8>().prop_map(|h| Op::Close { h }),
    ]
}

fn seed() -> impl Strategy<Value = Seed> {
    (
        0usize..3,
        raw_path(),
        prop::option::weighted(0.6, content()),
    )
        .prop_map(|(tier, path, data)| Seed { tier, path, data })
}

// ---------------------------------------------------------------------------
// the core, driven like the kernel drives it
// ---------------------------------------------------------------------------

/// An open file: its handle, node id and model file id.
#[derive(Debug, Clone)]
struct Handle {
    fh: u64,
    ino: u64,
    id: u64,
    path: String,
}

struct Harness {
    _tmp: tempfile::TempDir,
    roots: Vec<PathBuf>,
    fs: Fs,
    /// Lookup references taken, by node id (given back by `Forget`), and
    /// whether the node is a directory.
    lookups: HashMap<u64, (u64, bool)>,
    /// Open files.
    handles: Vec<Handle>,
    /// st_ino first seen for each model id (files and directories).
    inos: HashMap<u64, u64>,
    trace: String,
}

fn is_dir_attr(a: &Attr) -> bool {
    a.st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

impl Harness {
    /// Seeds the tiers directly, then starts the core over them.
    fn new(ntiers: usize, seeds: &[Seed]) -> Harness {
        let tmp = tempfile::tempdir().expect("tempdir");
        let roots: Vec<PathBuf> = (0..ntiers)
            .map(|i| tmp.path().join(format!("t{i}")))
            .collect();
        for r in &roots {
            fs::create_dir(r).expect("tier dir");
        }
        let mut trace = format!("{ntiers} tiers; seeds:\n");
        for s in seeds {
            let t = s.tier % ntiers;
            if seed_one(&roots[t], &s.path, s.data.as_deref()) {
                match &s.data {
                    None => writeln!(trace, "  T{t}: mkdir {}", s.path).unwrap(),
                    Some(d) => writeln!(trace, "  T{t}: file {} = {:?}", s.path, bstr(d)).unwrap(),
                }
            }
        }
        let cfg = if ntiers == 2 {
            Config::preset(&roots[0], &roots[1], None)
        } else {
            let mut text = String::new();
            for (i, r) in roots.iter().enumerate() {
                writeln!(
                    text,
                    "[[tier]]\nname = \"t{i}\"\npath = {:?}\n",
                    r.display().to_string()
                )
                .unwrap();
            }
            text.push_str("[policy]\nkind = \"parent-dir\"\n");
            Config::parse(&text, None).expect("config")
        };
        let tiers = dfs::tiers::TierSet::open(&cfg, None, false, true).expect("open tiers");
        let policy = dfs::policy::from_config(&cfg).expect("policy");
        let fs = Fs::new(
            tiers,
            policy,
            Options {
                kernel_permissions: true,
            },
        );
        trace.push_str("ops:\n");
        Harness {
            _tmp: tmp,
            roots,
            fs,
            lookups: HashMap::new(),
            handles: Vec::new(),
            inos: HashMap::new(),
            trace,
        }
    }

    fn snaps(&self) -> Vec<Snap> {
        self.roots.iter().map(|r| snap_tier(r)).collect()
    }

    /// The kernel now holds one more lookup of `a`.
    fn took(&mut self, a: &Attr) {
        // The kind is the latest one: a backing inode number, and so a node
        // id, can be reused by an object of another kind.
        let e = self.lookups.entry(a.ino).or_insert((0, false));
        e.0 += 1;
        e.1 = is_dir_attr(a);
    }

    fn lookup(&mut self, parent: u64, name: &str) -> Res<Attr> {
        let a = self.fs.lookup(parent, name.as_bytes()).map_err(|e| e.0)?;
        self.took(&a);
        Ok(a)
    }

    /// Path walk as the kernel does it: a lookup per component, ENOTDIR
    /// when a component is not a directory.
    fn resolve(&mut self, p: &str) -> Res<Attr> {
        let mut a = self.fs.getattr(ROOT, None).map_err(|e| e.0)?;
        if p.is_empty() {
            return Ok(a);
        }
        let mut cur = ROOT;
        for comp in p.split('/') {
            if !is_dir_attr(&a) {
                return Err(libc::ENOTDIR);
            }
            a = self.lookup(cur, comp)?;
            cur = a.ino;
        }
        Ok(a)
    }

    fn resolve_dir(&mut self, p: &str) -> Res<u64> {
        let a = self.resolve(p)?;
        if !is_dir_attr(&a) {
            return Err(libc::ENOTDIR);
        }
        Ok(if p.is_empty() { ROOT } else { a.ino })
    }

    // ---- operations through the core ----

    fn create(&mut self, p: &str, excl: bool, data: &[u8]) -> Res<()> {
        let (par, n) = split(p);
        let pino = self.resolve_dir(par)?;
        let mut flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        if excl {
            flags |= libc::O_EXCL;
        }
        let (a, fh) = self
            .fs
            .create(C, pino, n.as_bytes(), 0o644, flags)
            .map_err(|e| e.0)?;
        self.took(&a);
        let r = self.fs.write(fh, 0, data).map_err(|e| e.0);
        self.fs.release(fh);
        r.map(|_| ())
    }

    fn write(&mut self, p: &str, off: u64, data: &[u8]) -> Res<()> {
        let a = self.resolve(p)?;
        let fh = self.fs.open(C, a.ino, libc::O_WRONLY).map_err(|e| e.0)?;
        let r = self.fs.write(fh, off, data).map_err(|e| e.0);
        self.fs.release(fh);
        r.map(|_| ())
    }

    fn truncate(&mut self, p: &str, size: u64) -> Res<()> {
        let a = self.resolve(p)?;
        let sa = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.fs.setattr(C, a.ino, sa, None).map_err(|e| e.0)?;
        Ok(())
    }

    fn unlink(&mut self, p: &str) -> Res<()> {
        let (par, n) = split(p);
        let pino = self.resolve_dir(par)?;
        self.fs.unlink(C, pino, n.as_bytes()).map_err(|e| e.0)
    }

    fn rmdir(&mut self, p: &str) -> Res<()> {
        let (par, n) = split(p);
        let pino = self.resolve_dir(par)?;
        self.fs.rmdir(C, pino, n.as_bytes()).map_err(|e| e.0)
    }

    fn mkdir(&mut self, p: &str) -> Res<()> {
        let (par, n) = split(p);
        let pino = self.resolve_dir(par)?;
        let a = self
            .fs
            .mkdir(C, pino, n.as_bytes(), 0o755)
            .map_err(|e| e.0)?;
        self.took(&a);
        Ok(())
    }

    fn rename(&mut self, a: &str, b: &str, flags: u32) -> Res<()> {
        let (pa, na) = split(a);
        let (pb, nb) = split(b);
        let ia = self.resolve_dir(pa)?;
        let ib = self.resolve_dir(pb)?;
        self.fs
            .rename(C, ia, na.as_bytes(), ib, nb.as_bytes(), flags)
            .map_err(|e| e.0)
    }

    fn link(&mut self, a: &str, b: &str) -> Res<()> {
        let src = self.resolve(a)?;
        let (pb, nb) = split(b);
        let ib = self.resolve_dir(pb)?;
        let at = self.fs.link(src.ino, ib, nb.as_bytes()).map_err(|e| e.0)?;
        self.took(&at);
        Ok(())
    }

    fn open(&mut self, p: &str, id: u64) -> Res<()> {
        let a = self.resolve(p)?;
        let fh = self.fs.open(C, a.ino, libc::O_RDWR).map_err(|e| e.0)?;
        self.handles.push(Handle {
            fh,
            ino: a.ino,
            id,
            path: p.to_string(),
        });
        Ok(())
    }

    /// The kernel prunes its dentry cache below directory `p` ("" for the
    /// whole cache) and forgets the nodes it no longer holds. Not forgotten:
    /// nodes of open files and, while files are open, directories (an open
    /// file's dentry pins its ancestors); files with a name outside `p`
    /// (their inode stays cached through that name). With no file open,
    /// pruning everything must leave only the root in the node table.
    fn forget(&mut self, m: &Model, p: &str) -> Result<(), String> {
        let pinned: BTreeSet<u64> = self.handles.iter().map(|h| h.ino).collect();
        let keep_dirs = !self.handles.is_empty();
        let victims: Option<BTreeSet<u64>> = if p.is_empty() {
            None
        } else {
            // Files named outside `p` stay.
            let outside: BTreeSet<u64> = m
                .tree
                .iter()
                .filter_map(|(q, k)| match k {
                    M::File(id) if !within(q, p) => Some(*id),
                    _ => None,
                })
                .collect();
            let mut v = BTreeSet::new();
            for (q, k) in m.tree.iter().filter(|(q, _)| within(q, p)) {
                if let M::File(id) = k
                    && outside.contains(id)
                {
                    continue;
                }
                let a = self
                    .resolve(q)
                    .map_err(|e| format!("lookup {q} before pruning: {}", errname(e)))?;
                v.insert(a.ino);
            }
            Some(v)
        };
        let all: Vec<(u64, (u64, bool))> = self.lookups.drain().collect();
        for (ino, (n, is_dir)) in all {
            let chosen = victims.as_ref().is_none_or(|v| v.contains(&ino));
            if !chosen || pinned.contains(&ino) || (keep_dirs && is_dir) {
                self.lookups.insert(ino, (n, is_dir));
            } else {
                self.fs.forget(ino, n);
            }
        }
        if keep_dirs || victims.is_some() {
            return Ok(());
        }
        let n = self.fs.node_count();
        if n != 1 {
            return Err(format!(
                "after forgetting every lookup the node table still holds {n} nodes (expected only the root)"
            ));
        }
        Ok(())
    }

    // ---- checks ----

    /// The object with model id `id` (a file, all its links, or a directory)
    /// keeps the st_ino it was first seen with, across renames, overwrites
    /// and the cloning of directories onto other tiers.
    fn stable_ino(&mut self, id: u64, p: &str, ino: u64) -> Result<(), String> {
        match self.inos.get(&id) {
            Some(&i) if i != ino => Err(format!("st_ino of {p} changed from {i:#x} to {ino:#x}")),
            Some(_) => Ok(()),
            None => {
                self.inos.insert(id, ino);
                Ok(())
            }
        }
    }

    /// Reads the whole union through the core and compares it with the model.
    fn check_union(&mut self, m: &Model) -> Result<(), String> {
        let mut seen: HashMap<u64, String> = HashMap::new();
        self.check_dir(m, ROOT, "", &mut seen)?;
        self.check_handles(m)
    }

    /// Every open handle reads its file's content and fstat gives its size,
    /// whatever happened to its names.
    fn check_handles(&mut self, m: &Model) -> Result<(), String> {
        for h in &self.handles {
            let want = &m.data[&h.id];
            let got = self.fs.read(h.fh, 0, 4096).map_err(|e| {
                format!(
                    "read through the handle opened on {}: {}",
                    h.path,
                    errname(e.0)
                )
            })?;
            if &got != want {
                return Err(format!(
                    "the handle opened on {} reads {:?}, the model has {:?}",
                    h.path,
                    bstr(&got),
                    bstr(want)
                ));
            }
            let a = self.fs.getattr(h.ino, Some(h.fh)).map_err(|e| {
                format!("fstat of the handle opened on {}: {}", h.path, errname(e.0))
            })?;
            if a.st.st_size as usize != want.len() || a.ino != h.ino {
                return Err(format!(
                    "fstat of the handle opened on {}: size {} ino {:#x}, expected {} and {:#x}",
                    h.path,
                    a.st.st_size,
                    a.ino,
                    want.len(),
                    h.ino
                ));
            }
        }
        Ok(())
    }

    fn check_dir(
        &mut self,
        m: &Model,
        ino: u64,
        path: &str,
        seen: &mut HashMap<u64, String>,
    ) -> Result<(), String> {
        let shown = if path.is_empty() { "/" } else { path };
        let fh = self
            .fs
            .opendir(C, ino)
            .map_err(|e| format!("opendir {shown}: {}", errname(e.0)))?;
        let h = self
            .fs
            .dir_handle(fh)
            .map_err(|e| format!("dir_handle {shown}: {}", errname(e.0)))?;
        let mut names: Vec<String> = Vec::new();
        let mut d_inos: HashMap<String, u64> = HashMap::new();
        let mut plus: Vec<(String, Res<Attr>)> = Vec::new();
        for e in &h.entries {
            let n = String::from_utf8(h.name(e).to_vec()).expect("utf-8 name");
            d_inos.insert(n.clone(), self.fs.entry_ino(e));
            let r = self.fs.entry_lookup(&h, e).map_err(|e| e.0);
            if let Ok(a) = &r {
                self.took(a);
            }
            plus.push((n.clone(), r));
            names.push(n);
        }
        drop(h);
        self.fs.releasedir(fh);
        let listed: BTreeSet<String> = names.iter().cloned().collect();
        if listed.len() != names.len() {
            return Err(format!("listing of {shown} repeats a name: {names:?}"));
        }
        let want = m.children(path);
        if listed != want {
            return Err(format!(
                "listing of {shown} is {listed:?}, the model has {want:?}"
            ));
        }
        for n in &names {
            let p = join(path, n);
            let a = self
                .lookup(ino, n)
                .map_err(|e| format!("lookup {p}: {}", errname(e)))?;
            let kind = m.get(&p).expect("listed name in model");
            if d_inos[n] != a.ino {
                return Err(format!(
                    "readdir d_ino of {p} is {:#x} but lookup gives {:#x}",
                    d_inos[n], a.ino
                ));
            }
            match plus.iter().find(|(x, _)| x == n).map(|(_, r)| r) {
                Some(Ok(pa)) if pa.ino == a.ino => {}
                Some(r) => {
                    return Err(format!(
                        "readdirplus of {p} gives {} (ino {:?}), lookup ino {:#x}",
                        show(r),
                        r.as_ref().ok().map(|x| x.ino),
                        a.ino
                    ));
                }
                None => unreachable!(),
            }
            let g = self
                .fs
                .getattr(a.ino, None)
                .map_err(|e| format!("getattr {p}: {}", errname(e.0)))?;
            if g.st.st_mode & libc::S_IFMT != a.st.st_mode & libc::S_IFMT {
                return Err(format!("getattr and lookup of {p} disagree on the kind"));
            }
            match kind {
                M::Dir(id) => {
                    if !is_dir_attr(&a) {
                        return Err(format!(
                            "{p} should be a directory, mode {:o}",
                            a.st.st_mode
                        ));
                    }
                    self.stable_ino(id, &p, a.ino)?;
                    if let Some(other) = seen.insert(a.ino, p.clone()) {
                        return Err(format!("{p} and {other} share st_ino {:#x}", a.ino));
                    }
                    self.check_dir(m, a.ino, &p, seen)?;
                }
                M::File(id) => {
                    if a.st.st_mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(format!("{p} should be a file, mode {:o}", a.st.st_mode));
                    }
                    let want = &m.data[&id];
                    if a.st.st_size as usize != want.len() || g.st.st_size as usize != want.len() {
                        return Err(format!(
                            "{p}: size {} (lookup) / {} (getattr), model {}",
                            a.st.st_size,
                            g.st.st_size,
                            want.len()
                        ));
                    }
                    let fh = self
                        .fs
                        .open(C, a.ino, libc::O_RDONLY)
                        .map_err(|e| format!("open {p}: {}", errname(e.0)))?;
                    let got = self.fs.read(fh, 0, 4096);
                    self.fs.release(fh);
                    let got = got.map_err(|e| format!("read {p}: {}", errname(e.0)))?;
                    if &got != want {
                        return Err(format!(
                            "{p} reads {:?}, the model has {:?}",
                            bstr(&got),
                            bstr(want)
                        ));
                    }
                    // st_ino: stable per file, shared by hard links, unique.
                    self.stable_ino(id, &p, a.ino)?;
                    let key = format!("file#{id}");
                    match seen.get(&a.ino) {
                        Some(other) if *other != key => {
                            return Err(format!(
                                "{p} shares st_ino {:#x} with a different object ({other})",
                                a.ino
                            ));
                        }
                        _ => {
                            seen.insert(a.ino, key);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Creates `path` (file with `data`, or directory) directly on a tier,
/// with its parent chain; false when something on that tier is in the way.
fn seed_one(root: &Path, path: &str, data: Option<&[u8]>) -> bool {
    let (par, _) = split(path);
    let mut cur = root.to_path_buf();
    if !par.is_empty() {
        for comp in par.split('/') {
            cur = cur.join(comp);
            match fs::symlink_metadata(&cur) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => return false,
                Err(_) => fs::create_dir(&cur).expect("seed dir"),
            }
        }
    }
    let p = root.join(path);
    if fs::symlink_metadata(&p).is_ok() {
        return false;
    }
    match data {
        None => fs::create_dir(&p).expect("seed mkdir"),
        Some(d) => fs::write(&p, d).expect("seed file"),
    }
    true
}

fn bstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pick(m: &Model, s: &PSel) -> String {
    match s {
        PSel::Raw(p) => p.clone(),
        PSel::Existing(i) => {
            let all: Vec<&String> = m.tree.keys().collect();
            if all.is_empty() {
                "f0".to_string()
            } else {
                i.get(&all).to_string()
            }
        }
        PSel::Under(i, n) => {
            let mut dirs: Vec<&str> = vec![""];
            dirs.extend(
                m.tree
                    .iter()
                    .filter(|(_, k)| matches!(k, M::Dir(_)))
                    .map(|(p, _)| p.as_str()),
            );
            join(i.get::<&str>(&dirs), n)
        }
        PSel::Dir(i) => {
            let mut dirs: Vec<&str> = vec![""];
            dirs.extend(
                m.tree
                    .iter()
                    .filter(|(_, k)| matches!(k, M::Dir(_)))
                    .map(|(p, _)| p.as_str()),
            );
            i.get::<&str>(&dirs).to_string()
        }
        PSel::File(i) => {
            let files: Vec<&String> = m
                .tree
                .iter()
                .filter(|(_, k)| matches!(k, M::File(_)))
                .map(|(p, _)| p)
                .collect();
            if files.is_empty() {
                pick(m, &PSel::Existing(*i))
            } else {
                i.get(&files).to_string()
            }
        }
    }
}

/// What to verify on the tiers after an operation succeeded.
enum Post {
    Nothing,
    /// A new name: exactly on this tier.
    PlacedOn(String, usize),
    /// Gone from every tier.
    Gone(String),
    /// The set of tiers holding this path is unchanged.
    SameCopies(String),
    /// A renamed file: the source is gone, the target has one copy.
    RenamedFile(String, String),
    /// A renamed directory: the source is gone, the target is a directory on
    /// exactly these tiers.
    RenamedDir(String, String, Vec<usize>),
    /// RENAME_EXCHANGE: each file has one copy, each directory no junk.
    Exchanged(String, String),
}

fn run_case(ntiers: usize, seeds: &[Seed], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(ntiers, seeds);
    let r = run_ops(&mut h, ops);
    r.map_err(|e| fail(format!("{e}\n--- trace ---\n{}", h.trace)))?;
    // Again as a mount whose tiers are watched (nothing changes behind the
    // core's back here): listings come from remembered ones where dfs kept
    // them up to date, and every check must hold the same.
    let mut h = Harness::new(ntiers, seeds);
    h.fs.set_dir_cache_lifetime(None);
    h.trace
        .insert_str(0, "(tiers watched: remembered listings)\n");
    let r = run_ops(&mut h, ops);
    r.map_err(|e| fail(format!("{e}\n--- trace ---\n{}", h.trace)))
}

fn run_ops(h: &mut Harness, ops: &[Op]) -> Result<(), String> {
    let snaps = h.snaps();
    let mut m = Model::from_tiers(&snaps);
    h.check_union(&m)
        .map_err(|e| format!("initial union differs from the seeded tiers: {e}"))?;
    for op in ops {
        let before = h.snaps();
        let runion = raw_union(&before);
        let (desc, want, got, post): (String, Res<()>, Res<()>, Post) = match op {
            Op::Create { p, excl, data } => {
                let p = pick(&m, p);
                let place = dir_tiers(&before, split(&p).0).first().copied();
                let want = m.create(&p, *excl, data);
                let got = h.create(&p, *excl, data);
                let post = match (want, place) {
                    (Ok(true), Some(t)) => Post::PlacedOn(p.clone(), t),
                    _ => Post::SameCopies(p.clone()),
                };
                let x = if *excl { " O_EXCL" } else { "" };
                (
                    format!("create{x} {p} = {:?}", bstr(data)),
                    want.map(|_| ()),
                    got,
                    post,
                )
            }
            Op::Write { p, off, data } => {
                let p = pick(&m, p);
                let want = m.write(&p, *off as usize, data);
                let got = h.write(&p, *off as u64, data);
                (
                    format!("pwrite {p} @{off} {:?}", bstr(data)),
                    want,
                    got,
                    Post::SameCopies(p),
                )
            }
            Op::Truncate { p, size } => {
                let p = pick(&m, p);
                let want = m.truncate(&p, *size as usize);
                let got = h.truncate(&p, *size as u64);
                (
                    format!("truncate {p} {size}"),
                    want,
                    got,
                    Post::SameCopies(p),
                )
            }
            Op::Unlink { p } => {
                let p = pick(&m, p);
                let want = m.unlink(&p);
                let got = h.unlink(&p);
                (format!("unlink {p}"), want, got, Post::Gone(p))
            }
            Op::Rmdir { p } => {
                let p = pick(&m, p);
                let want = m.rmdir(&p);
                let got = h.rmdir(&p);
                (format!("rmdir {p}"), want, got, Post::Gone(p))
            }
            Op::Mkdir { p } => {
                let p = pick(&m, p);
                let place = dir_tiers(&before, split(&p).0).first().copied();
                let want = m.mkdir(&p);
                let got = h.mkdir(&p);
                let post = match place {
                    Some(t) => Post::PlacedOn(p.clone(), t),
                    None => Post::Nothing,
                };
                (format!("mkdir {p}"), want, got, post)
            }
            Op::Rename { a, b, flags } => {
                let a = pick(&m, a);
                let b = pick(&m, b);
                if within(&a, &b) || within(&b, &a) {
                    // The kernel answers these itself (EINVAL, ENOTEMPTY, or
                    // success for a path onto itself).
                    continue;
                }
                let was_dir = matches!(m.get(&a), Some(M::Dir(_)));
                let exchange = *flags == libc::RENAME_EXCHANGE;
                let want = if exchange {
                    m.exchange(&a, &b)
                } else {
                    m.rename(&a, &b, *flags == libc::RENAME_NOREPLACE)
                };
                let got = h.rename(&a, &b, *flags);
                let post = match want {
                    Ok(true) if exchange => Post::Exchanged(a.clone(), b.clone()),
                    Ok(true) if was_dir => {
                        Post::RenamedDir(a.clone(), b.clone(), dir_tiers(&before, &a))
                    }
                    Ok(true) => Post::RenamedFile(a.clone(), b.clone()),
                    _ => Post::Nothing,
                };
                let f = match *flags {
                    0 => "",
                    libc::RENAME_NOREPLACE => " NOREPLACE",
                    _ => " EXCHANGE",
                };
                (format!("rename{f} {a} -> {b}"), want.map(|_| ()), got, post)
            }
            Op::Link { a, b } => {
                let a = pick(&m, a);
                let b = pick(&m, b);
                let want = m.link(&a, &b);
                let got = h.link(&a, &b);
                let post = match runion.get(&a) {
                    Some((t, _)) => Post::PlacedOn(b.clone(), *t),
                    None => Post::Nothing,
                };
                (format!("link {a} -> {b}"), want, got, post)
            }
            Op::Forget { p } => {
                let p = pick(&m, p);
                let shown = if p.is_empty() { "/" } else { &p };
                writeln!(h.trace, "  kernel forgets the nodes under {shown}").unwrap();
                h.forget(&m, &p)?;
                h.check_union(&m)
                    .map_err(|e| format!("after forgetting under {shown}: {e}"))?;
                continue;
            }
            Op::Open { p } => {
                if h.handles.len() >= 3 {
                    continue;
                }
                let p = pick(&m, p);
                let want = m.file_at(&p);
                let got = match want {
                    Ok(id) => h.open(&p, id),
                    Err(_) => h.open(&p, 0),
                };
                (format!("open {p}"), want.map(|_| ()), got, Post::Nothing)
            }
            Op::HWrite { h: i, off, data } => {
                if h.handles.is_empty() {
                    continue;
                }
                let hd = h.handles[*i as usize % h.handles.len()].clone();
                m.write_id(hd.id, *off as usize, data);
                let got =
                    h.fs.write(hd.fh, *off as u64, data)
                        .map(|_| ())
                        .map_err(|e| e.0);
                (
                    format!("pwrite via handle of {} @{off} {:?}", hd.path, bstr(data)),
                    Ok(()),
                    got,
                    Post::Nothing,
                )
            }
            Op::HTruncate { h: i, size } => {
                if h.handles.is_empty() {
                    continue;
                }
                let hd = h.handles[*i as usize % h.handles.len()].clone();
                m.data
                    .get_mut(&hd.id)
                    .expect("data")
                    .resize(*size as usize, 0);
                let sa = SetAttr {
                    size: Some(*size as u64),
                    ..SetAttr::default()
                };
                let got =
                    h.fs.setattr(C, hd.ino, sa, Some(hd.fh))
                        .map(|_| ())
                        .map_err(|e| e.0);
                (
                    format!("ftruncate via handle of {} {size}", hd.path),
                    Ok(()),
                    got,
                    Post::Nothing,
                )
            }
            Op::Close { h: i } => {
                if h.handles.is_empty() {
                    continue;
                }
                let idx = *i as usize % h.handles.len();
                let hd = h.handles.remove(idx);
                h.fs.release(hd.fh);
                writeln!(h.trace, "  close handle of {}", hd.path).unwrap();
                continue;
            }
        };
        writeln!(
            h.trace,
            "  {desc}: model {}, core {}",
            show(&want),
            show(&got)
        )
        .unwrap();
        if want != got {
            return Err(format!(
                "{desc}: core returned {}, the model expects {}",
                show(&got),
                show(&want)
            ));
        }
        let after = h.snaps();
        if got.is_err() {
            if after != before {
                return Err(format!(
                    "{desc} failed with {} but changed the tiers:\nbefore {before:?}\nafter  {after:?}",
                    show(&got)
                ));
            }
        } else {
            check_post(&post, &before, &after).map_err(|e| format!("{desc}: {e}"))?;
        }
        check_raw_union(&m, &after).map_err(|e| format!("after {desc}: tiers: {e}"))?;
        h.check_union(&m)
            .map_err(|e| format!("after {desc}: union through the core: {e}"))?;
    }
    Ok(())
}

fn check_post(post: &Post, before: &[Snap], after: &[Snap]) -> Result<(), String> {
    match post {
        Post::Nothing => {}
        Post::PlacedOn(p, t) => {
            let on = on_tiers(after, p);
            if on != [*t] {
                return Err(format!(
                    "new name {p} is on tiers {on:?}; expected only T{t} (first tier with its parent)"
                ));
            }
        }
        Post::Gone(p) => {
            let on = on_tiers(after, p);
            if !on.is_empty() {
                return Err(format!("{p} still has copies on tiers {on:?}"));
            }
        }
        Post::SameCopies(p) => {
            let (b, a) = (on_tiers(before, p), on_tiers(after, p));
            if a != b {
                return Err(format!("{p} was on tiers {b:?}, now on {a:?}"));
            }
        }
        Post::RenamedFile(a, b) => {
            let on = on_tiers(after, a);
            if !on.is_empty() {
                return Err(format!("source {a} still has copies on tiers {on:?}"));
            }
            let on = on_tiers(after, b);
            if on.len() != 1 {
                return Err(format!(
                    "renamed file {b} should have exactly one copy, it is on tiers {on:?}"
                ));
            }
        }
        Post::Exchanged(a, b) => {
            for p in [a, b] {
                let on = on_tiers(after, p);
                let dirs = dir_tiers(after, p);
                if dirs.is_empty() && on.len() != 1 {
                    return Err(format!(
                        "exchanged file {p} should have exactly one copy, it is on tiers {on:?}"
                    ));
                }
                if !dirs.is_empty() && dirs != on {
                    return Err(format!(
                        "exchanged directory {p} is on tiers {on:?}, directories on {dirs:?}"
                    ));
                }
            }
        }
        Post::RenamedDir(a, b, tiers) => {
            let on = on_tiers(after, a);
            if !on.is_empty() {
                return Err(format!("source {a} still has copies on tiers {on:?}"));
            }
            let on = on_tiers(after, b);
            let dirs = dir_tiers(after, b);
            if on != *tiers || dirs != *tiers {
                return Err(format!(
                    "renamed directory {b} is on tiers {on:?} (directories on {dirs:?}); \
                     the source directory was on {tiers:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The union computed from the tier directories equals the model, and model
/// file ids match backing identities (hard links).
fn check_raw_union(m: &Model, snaps: &[Snap]) -> Result<(), String> {
    let u = raw_union(snaps);
    let got: BTreeSet<&String> = u.keys().collect();
    let want: BTreeSet<&String> = m.tree.keys().collect();
    if got != want {
        return Err(format!("union paths {got:?}, model {want:?}"));
    }
    let mut id_of: HashMap<(u64, u64), u64> = HashMap::new();
    let mut key_of: HashMap<u64, (u64, u64)> = HashMap::new();
    for (p, (_, raw)) in &u {
        match (raw, m.tree[p]) {
            (Raw::Dir, M::Dir(_)) => {}
            (Raw::File(d, key), M::File(id)) => {
                if *d != m.data[&id] {
                    return Err(format!(
                        "{p} holds {:?}, the model has {:?}",
                        bstr(d),
                        bstr(&m.data[&id])
                    ));
                }
                if *id_of.entry(*key).or_insert(id) != id
                    || *key_of.entry(id).or_insert(*key) != *key
                {
                    return Err(format!(
                        "{p}: hard links on the tiers differ from the model"
                    ));
                }
            }
            (r, k) => return Err(format!("{p} is {r:?} on the tiers, {k:?} in the model")),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(PtConfig {
        // PROPTEST_CASES=n runs more (or fewer) cases.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        // Regressions are kept as the named tests below, not in a file.
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_shrink_time: 15_000,
        ..PtConfig::default()
    })]

    #[test]
    fn core_matches_union_model(
        ntiers in 2usize..=3,
        seeds in prop::collection::vec(seed(), 0..12),
        ops in prop::collection::vec(op(), 1..30),
    ) {
        run_case(ntiers, &seeds, &ops)?;
    }
}

// ---------------------------------------------------------------------------
// Minimal reproductions of what the property test found, replayed through
// the same harness and checks. Each names the rule at stake.
// ---------------------------------------------------------------------------

fn dir(tier: usize, path: &str) -> Seed {
    Seed {
        tier,
        path: path.into(),
        data: None,
    }
}

fn file(tier: usize, path: &str, data: &str) -> Seed {
    Seed {
        tier,
        path: path.into(),
        data: Some(data.as_bytes().to_vec()),
    }
}

fn raw(p: &str) -> PSel {
    PSel::Raw(p.into())
}

fn replay(ntiers: usize, seeds: &[Seed], ops: &[Op]) {
    if let Err(e) = run_case(ntiers, seeds, ops) {
        panic!("{e}");
    }
}

/// Rule 10: a rename inside the mount must not fail. d0 is a directory on
/// T0 and, shadowed, a file on T1; f0 lives on T1, so the rename happens
/// there and needs d0 cloned onto T1. `clone_parents` takes mkdirat's EEXIST
/// (the shadowed file) for "the directory is there" and renameat then fails
/// with ENOTDIR.
#[test]
fn rename_into_directory_whose_slower_copy_is_a_file() {
    replay(
        2,
        &[dir(0, "d0"), file(1, "d0", "junk"), file(1, "f0", "data")],
        &[Op::Rename {
            a: raw("f0"),
            b: raw("d0/f0"),
            flags: 0,
        }],
    );
}

/// Rule 5/10: same cause as above, through link (made on the source's tier).
#[test]
fn link_into_directory_whose_slower_copy_is_a_file() {
    replay(
        2,
        &[dir(0, "d0"), file(1, "d0", "junk"), file(1, "f0", "data")],
        &[Op::Link {
            a: raw("f0"),
            b: raw("d0/f1"),
        }],
    );
}

/// Node table: create without O_EXCL on an existing directory takes a
/// lookup reference (`self.lookup` in the EEXIST branch of `create`) and
/// then fails with EISDIR in `open`; the kernel never learns of that
/// reference, never forgets it, and the node stays in the table for good.
#[test]
fn failed_create_over_directory_leaks_a_node() {
    replay(
        2,
        &[],
        &[
            Op::Mkdir { p: raw("d0") },
            Op::Create {
                p: raw("d0"),
                excl: false,
                data: Vec::new(),
            },
            Op::Forget { p: raw("") },
        ],
    );
}

/// Rule 9: a directory dfs cloned onto a faster tier keeps its st_ino
/// through lookup and readdirplus (`trusted.dfs.ino`), but plain readdir's
/// d_ino (`entry_ino`) still derives from the clone's own inode.
#[test]
fn readdir_d_ino_of_cloned_directory_is_its_st_ino() {
    replay(
        2,
        &[dir(1, "d0"), file(0, "f0", "data")],
        &[Op::Rename {
            a: raw("f0"),
            b: raw("d0/f0"),
            flags: 0,
        }],
    );
}

/// ftruncate on an open file whose last name is gone must work (POSIX);
/// `setattr` resolves the node's path before looking at the handle and
/// fails with ENOENT.
#[test]
fn ftruncate_of_unlinked_open_file() {
    replay(
        2,
        &[],
        &[
            Op::Create {
                p: raw("f0"),
                excl: true,
                data: b"abc".to_vec(),
            },
            Op::Open { p: raw("f0") },
            Op::Unlink { p: raw("f0") },
            Op::HTruncate { h: 0, size: 1 },
        ],
    );
}

/// Node table: a hard-linked file's newest name is under d0; the kernel
/// prunes d0's dentries and forgets d0 (the file's inode stays cached
/// through its other name f0). `Nodes::path_of` follows only the first
/// link, whose parent node is gone: getattr/open of f0 give ESTALE.
#[test]
fn hard_link_under_forgotten_directory_makes_the_file_stale() {
    let mut h = Harness::new(2, &[file(0, "f0", "data"), dir(0, "d0")]);
    h.link("f0", "d0/f1").expect("link");
    let m = Model::from_tiers(&h.snaps());
    h.forget(&m, "d0").expect("forget");
    let a = h.resolve("f0").expect("lookup f0");
    if let Err(e) = h.fs.getattr(a.ino, None) {
        panic!("getattr of f0 after the kernel forgot d0: {}", errname(e.0));
    }
    let fh = match h.fs.open(C, a.ino, libc::O_RDONLY) {
        Ok(fh) => fh,
        Err(e) => panic!("open of f0 after the kernel forgot d0: {}", errname(e.0)),
    };
    h.fs.release(fh);
}

/// Rule 4: RENAME_EXCHANGE of a directory merged from two tiers with one
/// whose winning copy is on the same tier: `exchange` swaps the two names
/// on that tier only; d0's copy on T1 (holding x) stays d0, so x shows
/// under d0 instead of d1.
#[test]
fn exchange_with_directory_merged_from_two_tiers() {
    replay(
        2,
        &[dir(0, "d0"), dir(1, "d0/x"), dir(0, "d1")],
        &[Op::Rename {
            a: raw("d0"),
            b: raw("d1"),
            flags: libc::RENAME_EXCHANGE,
        }],
    );
}

/// Rule 10: across tiers, RENAME_EXCHANGE of a directory merged from
/// several tiers fails with EXDEV.
#[test]
fn exchange_of_merged_directory_across_tiers() {
    replay(
        2,
        &[dir(0, "d0"), dir(1, "d0/x"), dir(1, "d1")],
        &[Op::Rename {
            a: raw("d0"),
            b: raw("d1"),
            flags: libc::RENAME_EXCHANGE,
        }],
    );
}

/// Rule 4: RENAME_EXCHANGE on one tier leaves the shadowed copy of f0 on
/// T1 behind, now a file under the directory f0: invisible, but it is the
/// very junk that makes a later rename or link from T1 into f0 fail (see
/// `rename_into_directory_whose_slower_copy_is_a_file`).
#[test]
fn exchange_leaves_shadowed_copies_behind() {
    replay(
        2,
        &[
            file(0, "f0", "top"),
            file(1, "f0", "shadowed"),
            dir(0, "d0"),
        ],
        &[Op::Rename {
            a: raw("f0"),
            b: raw("d0"),
            flags: libc::RENAME_EXCHANGE,
        }],
    );
}
