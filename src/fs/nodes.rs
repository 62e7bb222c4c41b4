//! The node table: what the kernel holds, by inode number.
//!
//! The kernel names files by node id and counts its lookups; a node stays
//! here until `forget` gives every lookup back. With fuser the node id is
//! also the st_ino clients see, so it is derived from the identity of the
//! backing file (its device and inode on the tier) and not from a counter:
//! it survives renames, is shared by hard links, and is unique across tiers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

/// A concurrent map keyed by node id (or handle number). Node ids are
/// already spread by their backing inode numbers, so a fast multiplicative
/// hash (Fx) serves; the default SipHash costs more than the lookup on the
/// request path.
pub type IdMap<V> = DashMap<u64, V, rustc_hash::FxBuildHasher>;
use parking_lot::{Mutex, RwLock};

use super::{Errno, Result};

/// The FUSE root node id.
pub const ROOT: u64 = 1;

/// Deepest directory chain `path_of` follows before assuming a loop.
const MAX_DEPTH: usize = 1 << 16;

/// One name of a node: its parent's node id and its name in that parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Node id of the parent directory.
    pub parent: u64,
    /// The name's bytes (names are bytes, not UTF-8).
    pub name: Box<[u8]>,
}

/// A file, directory or other object the kernel currently knows.
#[derive(Debug)]
pub struct Node {
    /// S_IFMT bits of the object.
    pub kind: u32,
    /// Tier of the backing copy (winning copy for directories).
    tier: AtomicUsize,
    lookups: AtomicU64,
    /// Names known for it; several for hard links, none once all unlinked.
    links: Mutex<Vec<Link>>,
}

impl Node {
    fn new(kind: u32, tier: usize) -> Self {
        Node {
            kind,
            tier: AtomicUsize::new(tier),
            lookups: AtomicU64::new(0),
            links: Mutex::new(Vec::new()),
        }
    }

    /// Tier where the node's backing copy was last seen.
    pub fn tier(&self) -> usize {
        self.tier.load(Ordering::Relaxed)
    }

    /// Records that the backing copy now lives on `tier`.
    pub fn set_tier(&self, tier: usize) {
        self.tier.store(tier, Ordering::Relaxed)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    /// One current name, if any.
    pub fn first_link(&self) -> Option<Link> {
        self.links.lock().first().cloned()
    }
}

/// Slots of the [`Held`] filter (a power of two).
const HELD_SLOTS: usize = 1 << 20;

/// A lock-free, approximate answer to "may the kernel hold this node?",
/// for listings: readdirplus lists a held node by name only (no stat), so
/// it asks once per entry, and a lookup in the node table costs a few cache
/// misses and a shard lock each (measured: 10-20 µs per 100 names).
///
/// One saturating counter per slot, indexed by the id's low bits: the ids
/// of files made together (consecutive inode numbers) share cache lines,
/// so a whole directory costs a miss or two. It never says no for a held
/// node; it may say yes for one that is not held (another id in its slot),
/// and then the name goes out without attributes and the kernel looks it
/// up when it needs them: slower, never wrong.
struct Held(Box<[AtomicU8]>);

impl Held {
    fn new() -> Self {
        Held((0..HELD_SLOTS).map(|_| AtomicU8::new(0)).collect())
    }

    fn slot(&self, ino: u64) -> &AtomicU8 {
        // Fold the device index (top bits) in, so the same inode number on
        // two tiers usually lands apart.
        &self.0[((ino ^ (ino >> 44)) as usize) & (HELD_SLOTS - 1)]
    }

    fn add(&self, ino: u64) {
        // A full counter sticks at 255: it may then over-report, never under.
        let _ = self
            .slot(ino)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c != u8::MAX).then(|| c + 1)
            });
    }

    fn remove(&self, ino: u64) {
        let _ = self
            .slot(ino)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c != 0 && c != u8::MAX).then(|| c - 1)
            });
    }

    fn may_hold(&self, ino: u64) -> bool {
        self.slot(ino).load(Ordering::Relaxed) != 0
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held(..)")
    }
}

/// Node table plus the device map that turns backing identities into ids.
#[derive(Debug)]
pub struct Nodes {
    map: IdMap<Arc<Node>>,
    devs: RwLock<Vec<u64>>,
    held: Held,
}

impl Nodes {
    /// A table holding only the root; `tier_devs` seeds the device map in
    /// tier order so ids are the same across restarts.
    pub fn new(tier_devs: &[u64]) -> Self {
        let map = IdMap::default();
        map.insert(ROOT, Arc::new(Node::new(libc::S_IFDIR, 0)));
        let mut devs = Vec::new();
        for d in tier_devs {
            if !devs.contains(d) {
                devs.push(*d);
            }
        }
        Nodes {
            map,
            devs: RwLock::new(devs),
            held: Held::new(),
        }
    }

    /// The node id for a backing file (device, inode): the device's index in
    /// the top 16 bits, the inode below; a hash for inodes too large.
    pub fn ino_for(&self, dev: u64, ino: u64) -> u64 {
        let idx = {
            let devs = self.devs.read();
            devs.iter().position(|&d| d == dev)
        };
        let idx = match idx {
            Some(i) => i,
            None => {
                let mut devs = self.devs.write();
                match devs.iter().position(|&d| d == dev) {
                    Some(i) => i,
                    None => {
                        devs.push(dev);
                        devs.len() - 1
                    }
                }
            }
        } as u64
            + 1;
        if ino < (1 << 48) && idx < (1 << 15) {
            (idx << 48) | ino
        } else {
            // Rare (huge inode numbers or >32k devices): a hash in the upper
            // half of the id space, disjoint from the structured ids.
            let mut h = dev.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ino.rotate_left(17);
            h ^= h >> 31;
            h.wrapping_mul(0xBF58_476D_1CE4_E5B9) | (1 << 63)
        }
    }

    /// The node with id `ino`, if the kernel holds it.
    pub fn get(&self, ino: u64) -> Result<Arc<Node>> {
        self.map
            .get(&ino)
            .map(|n| n.clone())
            .ok_or(Errno(libc::ESTALE))
    }

    /// Records a lookup of `name` in `parent` resolving to `ino`: the kernel
    /// now holds one more reference.
    pub fn remember(&self, ino: u64, kind: u32, tier: usize, parent: u64, name: &[u8]) {
        if ino == ROOT {
            return;
        }
        // Known nodes (the common case: listings and lookups of names the
        // kernel already holds) take only the shard's read lock.
        let known = self.map.get(&ino).map(|e| {
            e.lookups.fetch_add(1, Ordering::Relaxed);
            e.clone()
        });
        let node = known.unwrap_or_else(|| {
            let e = self.map.entry(ino).or_insert_with(|| {
                self.held.add(ino);
                Arc::new(Node::new(kind, tier))
            });
            e.lookups.fetch_add(1, Ordering::Relaxed);
            e.clone()
        });
        node.set_tier(tier);
        let mut links = node.links.lock();
        if !links.iter().any(|l| l.parent == parent && *l.name == *name) {
            // Newest name first: it is the one most likely still valid.
            links.insert(
                0,
                Link {
                    parent,
                    name: name.into(),
                },
            );
            links.truncate(8);
        }
    }

    /// The kernel gave back `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(node) = self.map.get(&ino) {
            let _ = node
                .lookups
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
        }
        if self
            .map
            .remove_if(&ino, |_, node| node.lookups.load(Ordering::Relaxed) == 0)
            .is_some()
        {
            self.held.remove(ino);
        }
    }

    /// `name` in `parent` no longer names `ino`.
    pub fn drop_link(&self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(node) = self.map.get(&ino) {
            node.links
                .lock()
                .retain(|l| !(l.parent == parent && *l.name == *name));
        }
    }

    /// `ino` moved from (parent, name) to (newparent, newname).
    pub fn rename(&self, ino: u64, parent: u64, name: &[u8], newparent: u64, newname: &[u8]) {
        if let Some(node) = self.map.get(&ino) {
            let mut links = node.links.lock();
            links.retain(|l| !(l.parent == parent && *l.name == *name));
            links.insert(
                0,
                Link {
                    parent: newparent,
                    name: newname.into(),
                },
            );
        }
    }

    /// The node's path inside the mount ("" for the root), built by walking
    /// parent links; ENOENT once every name of the node is gone.
    pub fn path_of(&self, ino: u64) -> Result<Vec<u8>> {
        let mut comps: Vec<Box<[u8]>> = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = self.get(cur)?;
            // Any name whose parent the kernel still holds will do (a hard
            // link's newest name may sit in a directory already forgotten).
            let link = {
                let links = node.links.lock();
                links
                    .iter()
                    .find(|l| l.parent == ROOT || self.map.contains_key(&l.parent))
                    .cloned()
                    .ok_or(Errno(libc::ENOENT))?
            };
            comps.push(link.name);
            cur = link.parent;
            if comps.len() > MAX_DEPTH {
                return Err(Errno(libc::ELOOP));
            }
        }
        let len = comps.iter().map(|c| c.len() + 1).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        for (i, c) in comps.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(c);
        }
        Ok(out)
    }

    /// A name of `ino` whose parent directory the kernel still holds.
    pub fn held_link(&self, ino: u64) -> Option<Link> {
        let node = self.map.get(&ino)?.clone();
        let links = node.links.lock();
        links
            .iter()
            .find(|l| l.parent == ROOT || self.map.contains_key(&l.parent))
            .cloned()
    }

    /// Whether the kernel holds node `ino`.
    pub fn contains(&self, ino: u64) -> bool {
        self.map.contains_key(&ino)
    }

    /// Whether the kernel may hold node `ino`: true whenever it does, and
    /// now and then when it does not (see [`Held`]); cheap enough to ask
    /// for every name of a listing.
    pub fn may_hold(&self, ino: u64) -> bool {
        self.held.may_hold(ino)
    }

    /// Every node held, and whether it is a directory.
    pub fn held(&self) -> Vec<(u64, bool)> {
        self.map
            .iter()
            .map(|e| (*e.key(), e.value().is_dir()))
            .collect()
    }

    /// Number of nodes held (for status and memory tests).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when only... never: the root is always present.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_per_device_and_stable() {
        let n = Nodes::new(&[10, 20]);
        assert_ne!(n.ino_for(10, 5), n.ino_for(20, 5));
        assert_eq!(n.ino_for(10, 5), n.ino_for(10, 5));
        assert_ne!(n.ino_for(10, 5), ROOT);
        let big = n.ino_for(10, 1 << 50);
        assert!(big >> 63 == 1);
    }

    #[test]
    fn held_filter_never_misses_a_held_node() {
        let n = Nodes::new(&[1]);
        let a = n.ino_for(1, 1000);
        let same_slot = a + HELD_SLOTS as u64;
        assert!(!n.may_hold(a));
        n.remember(a, libc::S_IFREG, 0, ROOT, b"a");
        n.remember(same_slot, libc::S_IFREG, 0, ROOT, b"b");
        n.remember(a, libc::S_IFREG, 0, ROOT, b"a");
        assert!(n.may_hold(a) && n.may_hold(same_slot));
        // a still has one lookup: held.
        n.forget(a, 1);
        assert!(n.contains(a) && n.may_hold(a));
        // The slot's other node keeps it set after a is gone.
        n.forget(a, 1);
        assert!(!n.contains(a) && n.may_hold(same_slot));
        n.forget(same_slot, 1);
        assert!(!n.may_hold(a) && !n.may_hold(same_slot));
        // A saturated slot stays set for good (over-reports, never under).
        let ids: Vec<u64> = (0..300).map(|i| a + i * HELD_SLOTS as u64).collect();
        for &i in &ids {
            n.remember(i, libc::S_IFREG, 0, ROOT, b"x");
        }
        for &i in &ids {
            n.forget(i, 1);
        }
        assert!(n.may_hold(a));
    }

    #[test]
    fn paths_follow_links_and_renames() {
        let n = Nodes::new(&[1]);
        n.remember(100, libc::S_IFDIR, 0, ROOT, b"a");
        n.remember(200, libc::S_IFREG, 0, 100, b"f");
        assert_eq!(n.path_of(200).expect("path"), b"a/f");
        n.rename(200, 100, b"f", ROOT, b"g");
        assert_eq!(n.path_of(200).expect("path"), b"g");
        n.drop_link(200, ROOT, b"g");
        assert_eq!(n.path_of(200), Err(Errno(libc::ENOENT)));
        n.forget(200, 1);
        assert_eq!(n.get(200).map(|_| ()), Err(Errno(libc::ESTALE)));
    }
}
