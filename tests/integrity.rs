//! Integrity: random operation sequences through a real mount checked against
//! a model (proptest), several workers at once, and concurrent service by
//! several session threads.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

/// Directories: `high` only on tier 0, `low` only on tier 1 (another
/// filesystem), `both` on both tiers.
const DIRS: [&str; 3] = ["high", "low", "both"];
const FILES: [&str; 3] = ["a", "b", "c"];

fn name(i: usize) -> String {
    format!("{}/{}", DIRS[i / FILES.len()], FILES[i % FILES.len()])
}
const NAMES: usize = 9;

#[derive(Debug, Clone)]
enum Op {
    Create(usize, Vec<u8>),
    Write(usize, u64, Vec<u8>),
    Append(usize, Vec<u8>),
    Truncate(usize, u64),
    Punch(usize, u64, u64),
    MmapWrite(usize, u64, Vec<u8>),
    Read(usize),
    Rename(usize, usize),
    Unlink(usize),
    CopyRange(usize, usize),
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    (0usize..6000, any::<u64>()).prop_map(|(len, seed)| pattern(len, seed))
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES;
    prop_oneof![
        (n.clone(), data()).prop_map(|(i, d)| Op::Create(i, d)),
        (n.clone(), 0u64..20_000, data()).prop_map(|(i, o, d)| Op::Write(i, o, d)),
        (n.clone(), data()).prop_map(|(i, d)| Op::Append(i, d)),
        (n.clone(), 0u64..30_000).prop_map(|(i, l)| Op::Truncate(i, l)),
        (n.clone(), 0u64..16_384, 1u64..16_384).prop_map(|(i, o, l)| Op::Punch(i, o, l)),
        (n.clone(), 0u64..8_000, data()).prop_map(|(i, o, d)| Op::MmapWrite(i, o, d)),
        n.clone().prop_map(Op::Read),
        (n.clone(), n.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        n.clone().prop_map(Op::Unlink),
        (n.clone(), n.clone()).prop_map(|(a, b)| Op::CopyRange(a, b)),
    ]
}

type Model = BTreeMap<usize, Vec<u8>>;

fn apply(m: &Mount, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let p = |i: usize| m.m(&name(i));
    match op {
        Op::Create(i, d) => {
            fs::write(p(*i), d).map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
            model.insert(*i, d.clone());
        }
        Op::Write(i, off, d) => {
            let r = fs::OpenOptions::new().write(true).open(p(*i));
            match model.get_mut(i) {
                None => prop_assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT)),
                Some(cur) => {
                    let f = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    f.write_all_at(d, *off).unwrap();
                    let end = *off as usize + d.len();
                    if !d.is_empty() {
                        if cur.len() < end {
                            cur.resize(end, 0);
                        }
                        cur[*off as usize..end].copy_from_slice(d);
                    }
                }
            }
        }
        Op::Append(i, d) => {
            let r = fs::OpenOptions::new().append(true).open(p(*i));
            match model.get_mut(i) {
                None => prop_assert!(r.is_err()),
                Some(cur) => {
                    use std::io::Write;
                    r.unwrap().write_all(d).unwrap();
                    cur.extend_from_slice(d);
                }
            }
        }
        Op::Truncate(i, len) => {
            let c = cstr(p(*i));
            let r = unsafe { libc::truncate(c.as_ptr(), *len as i64) };
            match model.get_mut(i) {
                None => prop_assert_eq!(r, -1),
                Some(cur) => {
                    prop_assert_eq!(r, 0, "{:?}: {}", op, std::io::Error::last_os_error());
                    cur.resize(*len as usize, 0);
                }
            }
        }
        Op::Punch(i, off, len) => {
            if let Some(cur) = model.get_mut(i) {
                let f = fs::OpenOptions::new().write(true).open(p(*i)).unwrap();
                let r = unsafe {
                    libc::fallocate(
                        f.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        *off as i64,
                        *len as i64,
                    )
                };
                prop_assert_eq!(r, 0, "{:?}: {}", op, std::io::Error::last_os_error());
                let s = (*off as usize).min(cur.len());
                let e = ((*off + *len) as usize).min(cur.len());
                cur[s..e].iter_mut().for_each(|b| *b = 0);
            }
        }
        Op::MmapWrite(i, off, d) => {
            if let Some(cur) = model.get_mut(i) {
                let off = *off as usize;
                if off + d.len() > cur.len() || d.is_empty() {
                    return Ok(());
                }
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(p(*i))
                    .unwrap();
                let len = cur.len();
                unsafe {
                    let a = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        f.as_raw_fd(),
                        0,
                    );
                    prop_assert!(
                        a != libc::MAP_FAILED,
                        "mmap: {}",
                        std::io::Error::last_os_error()
                    );
                    std::ptr::copy_nonoverlapping(d.as_ptr(), a.cast::<u8>().add(off), d.len());
                    prop_assert_eq!(libc::msync(a, len, libc::MS_SYNC), 0);
                    libc::munmap(a, len);
                }
                cur[off..off + d.len()].copy_from_slice(d);
            }
        }
        Op::Read(i) => {
            let r = try_read(&p(*i));
            match model.get(i) {
                None => prop_assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT)),
                Some(cur) => {
                    let got = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    prop_assert!(
                        got == *cur,
                        "{}: content differs (len {} vs model {})",
                        name(*i),
                        got.len(),
                        cur.len()
                    );
                }
            }
        }
        Op::Rename(a, b) => {
            let r = fs::rename(p(*a), p(*b));
            match model.remove(a) {
                None => prop_assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT)),
                Some(cur) => {
                    prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                    model.insert(*b, cur);
                }
            }
        }
        Op::Unlink(i) => {
            let r = fs::remove_file(p(*i));
            match model.remove(i) {
                None => prop_assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT)),
                Some(_) => prop_assert!(r.is_ok(), "{:?}: {:?}", op, r),
            }
        }
        Op::CopyRange(a, b) => {
            if a == b {
                return Ok(());
            }
            if let (Some(src), Some(_)) = (model.get(a).cloned(), model.get(b)) {
                let s = fs::File::open(p(*a)).unwrap();
                let d = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(p(*b))
                    .unwrap();
                let mut left = src.len();
                while left > 0 {
                    let n = unsafe {
                        libc::copy_file_range(
                            s.as_raw_fd(),
                            std::ptr::null_mut(),
                            d.as_raw_fd(),
                            std::ptr::null_mut(),
                            left,
                            0,
                        )
                    };
                    prop_assert!(
                        n > 0,
                        "copy_file_range: {}",
                        std::io::Error::last_os_error()
                    );
                    left -= n as usize;
                }
                model.insert(*b, src);
            }
        }
    }
    Ok(())
}

fn verify(m: &Mount, model: &Model) -> Result<(), TestCaseError> {
    for i in 0..NAMES {
        let n = name(i);
        let holders = tiers_holding(m, &n);
        match model.get(&i) {
            None => {
                prop_assert!(
                    lstat(&m.m(&n)).is_err(),
                    "{} exists but the model has it deleted",
                    n
                );
                prop_assert!(holders.is_empty(), "{} left on tiers {:?}", n, holders);
            }
            Some(cur) => {
                let got =
                    try_read(&m.m(&n)).map_err(|e| TestCaseError::fail(format!("{n}: {e}")))?;
                prop_assert!(
                    got == *cur,
                    "{}: content differs (len {} vs model {})",
                    n,
                    got.len(),
                    cur.len()
                );
                prop_assert_eq!(lstat(&m.m(&n)).unwrap().len(), cur.len() as u64);
                prop_assert_eq!(holders.len(), 1, "{} on tiers {:?}", n, holders);
                prop_assert!(
                    read(&m.t(holders[0], &n)) == *cur,
                    "{}: tier copy differs",
                    n
                );
            }
        }
    }
    for d in DIRS {
        let mut want: Vec<String> = model
            .keys()
            .filter(|i| name(**i).starts_with(&format!("{d}/")))
            .map(|i| FILES[i % FILES.len()].to_string())
            .collect();
        want.sort();
        let got: Vec<String> = list(&m.m(d))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        prop_assert_eq!(got, want, "listing of {}", d);
    }
    Ok(())
}

fn reset(m: &Mount) {
    for i in 0..NAMES {
        let _ = fs::remove_file(m.m(&name(i)));
    }
}

fn union_mount() -> Mount {
    Mount::builder()
        .tmpfs(1, "64m")
        .setup(|t| {
            fs::create_dir(t[0].join("high")).unwrap();
            fs::create_dir(t[1].join("low")).unwrap();
            fs::create_dir(t[0].join("both")).unwrap();
            fs::create_dir(t[1].join("both")).unwrap();
        })
        .mount()
}

#[test]
fn random_operation_sequences_match_the_model() {
    let m = union_mount();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        reset(&m);
        let mut model = Model::new();
        for op in &ops {
            apply(&m, &mut model, op)?;
        }
        verify(&m, &model)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn concurrent_workers_match_their_models() {
    let m = union_mount();
    let mnt = m.mnt();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let mnt = mnt.clone();
            std::thread::spawn(move || {
                let mut rng = w * 7919 + 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                for step in 0..300 {
                    let d = DIRS[(next() % 3) as usize];
                    let n = format!("{d}/w{w}-{}", next() % 6);
                    let p = mnt.join(&n);
                    match next() % 5 {
                        0 | 1 => {
                            let data = pattern((next() % 5000) as usize, next());
                            fs::write(&p, &data).unwrap();
                            model.insert(n, data);
                        }
                        2 => {
                            let d2 = DIRS[(next() % 3) as usize];
                            let n2 = format!("{d2}/w{w}-{}", next() % 6);
                            let r = fs::rename(&p, mnt.join(&n2));
                            match model.remove(&n) {
                                Some(v) => {
                                    r.unwrap_or_else(|e| {
                                        panic!("worker {w} step {step}: rename {n} {n2}: {e}")
                                    });
                                    model.insert(n2, v);
                                }
                                None => assert!(r.is_err()),
                            }
                        }
                        3 => {
                            let r = fs::remove_file(&p);
                            assert_eq!(
                                r.is_ok(),
                                model.remove(&n).is_some(),
                                "worker {w} unlink {n}"
                            );
                        }
                        _ => {
                            let r = try_read(&p);
                            match model.get(&n) {
                                Some(v) => {
                                    assert!(r.unwrap() == *v, "worker {w} step {step}: {n} differs")
                                }
                                None => assert!(r.is_err()),
                            }
                        }
                    }
                }
                model
            })
        })
        .collect();
    for (w, h) in workers.into_iter().enumerate() {
        let model = h.join().unwrap();
        for (n, v) in &model {
            assert!(read(&m.m(n)) == *v, "worker {w}: {n} differs at the end");
            assert_eq!(tiers_holding(&m, n).len(), 1, "{n}");
        }
    }
}

/// Sends SIGCONT to a stopped process when dropped (also on panic).
struct Resume(i32);
impl Drop for Resume {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_blocked_request_does_not_stall_the_others() {
    // Tier 1 of the outer union lives in an inner dfs mount that we stop
    // (SIGSTOP): a read of a file on it blocks one session thread of the outer
    // dfs; requests for tier 0 must still be served by another.
    let inner = Mount::preset();
    fs::create_dir(inner.m("sub")).unwrap();
    write(&inner.m("sub/lowfile"), "low");
    let inner_sub = inner.m("sub");
    let outer = Mount::builder()
        .external_tier(1, &inner_sub)
        .setup(|t| write(&t[0].join("topfile"), "top"))
        .mount();
    assert_eq!(read(&outer.m("topfile")), b"top");
    let low = fs::File::open(outer.m("lowfile")).unwrap();
    let inner_pid = inner.pid().unwrap();
    unsafe { libc::kill(inner_pid, libc::SIGSTOP) };
    let resume = Resume(inner_pid);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 3];
        low.read_exact_at(&mut buf, 0).map(|_| buf)
    });
    std::thread::sleep(Duration::from_millis(300));
    let (tx, rx) = mpsc::channel();
    let top = outer.m("topfile");
    std::thread::spawn(move || {
        let mut s = String::new();
        let r = fs::File::open(&top).and_then(|mut f| f.read_to_string(&mut s));
        let _ = tx.send(r.map(|_| s));
    });
    let served = rx.recv_timeout(Duration::from_secs(3));
    drop(resume);
    let low_read = reader.join().unwrap();
    assert_eq!(low_read.unwrap(), *b"low");
    match served {
        Ok(r) => assert_eq!(r.unwrap(), "top"),
        Err(_) => {
            panic!("a request for tier 0 waited behind a blocked request: one session thread only?")
        }
    }
}
