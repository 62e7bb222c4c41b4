//! Remembered listings (`dfs::fs::remembered`) under concurrency, on a real
//! watched mount: listings served from memory while other threads create,
//! rename and remove names in the same directory must show every change
//! that has returned, never a removed name, never a name twice.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::*;

fn listed(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

#[test]
fn listings_keep_up_with_concurrent_changes_through_dfs() {
    let m = Mount::preset();
    let dir = m.m("box");
    fs::create_dir(&dir).expect("mkdir");
    // Some names from before the first listing, so that listings are both
    // made by mkdir and read from the tiers.
    for i in 0..20 {
        fs::write(dir.join(format!("seed{i}")), b"s").expect("seed");
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Listers: no name twice in any listing.
    let listers: Vec<_> = (0..2)
        .map(|_| {
            let (dir, stop) = (dir.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let names = listed(&dir);
                    assert_eq!(set(&names).len(), names.len(), "a name twice: {names:?}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Writers, each on names of its own: what a writer's call changed
    // shows in its very next listing.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let dir = dir.clone();
            thread::spawn(move || {
                for round in 0..600 {
                    let a = format!("w{w}-{}", round % 7);
                    let b = format!("w{w}-r{}", round % 5);
                    let pa = dir.join(&a);
                    let pb = dir.join(&b);
                    match round % 3 {
                        0 => {
                            fs::write(&pa, b"x").expect("create");
                            assert!(listed(&dir).contains(&a), "created {a} not listed");
                        }
                        1 => {
                            if pa.exists() {
                                fs::rename(&pa, &pb).expect("rename");
                                let names = listed(&dir);
                                assert!(
                                    !names.contains(&a) && names.contains(&b),
                                    "rename {a} -> {b} not listed as such"
                                );
                            } else {
                                fs::create_dir(&pa).expect("mkdir");
                                assert!(listed(&dir).contains(&a), "made {a} not listed");
                            }
                        }
                        _ => {
                            for p in [&pa, &pb] {
                                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                                let gone = if p.is_dir() {
                                    fs::remove_dir(p).is_ok()
                                } else {
                                    fs::remove_file(p).is_ok()
                                };
                                if gone {
                                    assert!(
                                        !listed(&dir).contains(&name),
                                        "removed {name} still listed"
                                    );
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, Ordering::Relaxed);
    let listings: u64 = listers.into_iter().map(|l| l.join().expect("lister")).sum();
    assert!(listings > 0);
    // In the end the mount lists exactly the union of the tiers' copies.
    let mut on_tiers = BTreeSet::new();
    for t in 0..2 {
        if let Ok(rd) = fs::read_dir(m.t(t, "box")) {
            on_tiers.extend(rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()));
        }
    }
    assert_eq!(set(&listed(&dir)), on_tiers);
}
