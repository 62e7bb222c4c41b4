//! Reads, writes and memory maps in both I/O modes, kernel passthrough (the
//! default where the kernel allows it) and the fallback through the daemon
//! (`-o nopassthrough`), over both transports, io_uring (where the kernel
//! has it) and /dev/fuse (`-o uring=off`). Each mode and transport must say
//! at startup that it is in use.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::*;

fn mount(mode: &str) -> Mount {
    let m = Mount::builder().args(&["-o", mode]).mount();
    let io = if mode.contains("nopassthrough") {
        "I/O mode: through the daemon"
    } else {
        "I/O mode: kernel passthrough"
    };
    for want in [io, expected_transport(&[mode])] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !m.stderr().contains(want) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            m.stderr().contains(want),
            "expected {want:?} in:\n{}",
            m.stderr()
        );
    }
    m
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn exercise(mode: &str) {
    let m = mount(mode);
    // Large sequential write and read back, on each tier.
    fs::create_dir(m.t(1, "lower")).unwrap();
    for rel in ["big", "lower/big"] {
        let data = pattern(3 << 20, 7);
        fs::write(m.m(rel), &data).unwrap();
        assert_eq!(fs::read(m.m(rel)).unwrap(), data, "{mode}: {rel} read back");
    }
    assert_eq!(fs::metadata(m.t(1, "lower/big")).unwrap().len(), 3 << 20);

    // pwrite/pread at offsets, append, truncate through the handle.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.m("f"))
        .unwrap();
    f.write_all_at(b"hello", 0).unwrap();
    f.write_all_at(b"world", 1 << 20).unwrap();
    let mut buf = [0u8; 5];
    f.read_exact_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(&buf, b"world");
    f.set_len(3).unwrap();
    assert_eq!(fs::read(m.m("f")).unwrap(), b"hel");
    drop(f);
    let mut a = OpenOptions::new().append(true).open(m.m("f")).unwrap();
    a.write_all(b"lo").unwrap();
    drop(a);
    assert_eq!(fs::read(m.m("f")).unwrap(), b"hello");

    // An appending handle opened first must not make a later handle's
    // positioned writes append (one backing file serves both).
    let mut a = OpenOptions::new().append(true).open(m.m("f")).unwrap();
    let p = OpenOptions::new().write(true).open(m.m("f")).unwrap();
    p.write_all_at(b"J", 0).unwrap();
    a.write_all(b"!").unwrap();
    drop((a, p));
    assert_eq!(fs::read(m.m("f")).unwrap(), b"Jello!", "{mode}");
    fs::write(m.m("f"), b"hello").unwrap();

    // A writer and a reader open at once see each other's data.
    let mut w = OpenOptions::new().write(true).open(m.m("f")).unwrap();
    let mut r = fs::File::open(m.m("f")).unwrap();
    w.seek(SeekFrom::Start(0)).unwrap();
    w.write_all(b"HELLO").unwrap();
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "HELLO", "{mode}: reader sees the writer's data");

    // mmap: write through a shared map, read through read() and the tier.
    let fm = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.m("mapped"))
        .unwrap();
    fm.set_len(8192).unwrap();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&fm),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{mode}: mmap failed");
        std::ptr::copy_nonoverlapping(b"mapped!".as_ptr(), (p as *mut u8).add(4096), 7);
        assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, 8192), 0);
    }
    drop(fm);
    let got = fs::read(m.m("mapped")).unwrap();
    assert_eq!(
        &got[4096..4103],
        b"mapped!",
        "{mode}: mmap write visible to read()"
    );
    let on_tier = fs::read(m.t(0, "mapped")).unwrap();
    assert_eq!(
        &on_tier[4096..4103],
        b"mapped!",
        "{mode}: mmap write reached the tier"
    );

    // An unlinked file stays readable through its open handle.
    fs::write(m.m("gone"), b"still here").unwrap();
    let g = fs::File::open(m.m("gone")).unwrap();
    fs::remove_file(m.m("gone")).unwrap();
    let mut s = String::new();
    (&g).read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");

    // copy_file_range between tiers.
    let src = fs::File::open(m.m("lower/big")).unwrap();
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.m("copy"))
        .unwrap();
    let n = unsafe {
        libc::copy_file_range(
            std::os::fd::AsRawFd::as_raw_fd(&src),
            std::ptr::null_mut(),
            std::os::fd::AsRawFd::as_raw_fd(&dst),
            std::ptr::null_mut(),
            4096,
            0,
        )
    };
    assert_eq!(n, 4096, "{mode}: copy_file_range");
    drop(dst);
    assert_eq!(
        fs::read(m.m("copy")).unwrap(),
        pattern(3 << 20, 7)[..4096].to_vec()
    );
}

#[test]
fn io_with_passthrough() {
    exercise("passthrough");
}

#[test]
fn io_through_the_daemon() {
    exercise("nopassthrough");
}

#[test]
fn io_with_passthrough_over_dev_fuse() {
    exercise("passthrough,uring=off");
}

#[test]
fn io_through_the_daemon_over_dev_fuse() {
    exercise("nopassthrough,uring=off");
}

/// With io_uring the requests are served by the ring threads (named
/// `fuser-ring-CPU.N`), not read from /dev/fuse; with `uring=off` never.
#[test]
fn requests_travel_over_the_transport_said_at_startup() {
    for opts in ["uring=auto", "uring=off"] {
        let m = Mount::builder()
            .args(&["-o", opts])
            .env("RUST_LOG", "info,fuser::request=debug")
            .mount();
        fs::write(m.t(0, "probe"), b"x").unwrap();
        assert_eq!(fs::read(m.m("probe")).unwrap(), b"x");
        let log = m.stderr();
        let lookup = log
            .lines()
            .find(|l| l.contains("LOOKUP name \"probe\""))
            .unwrap_or_else(|| panic!("{opts}: no LOOKUP of probe logged:\n{log}"));
        let ring = lookup.contains("thread=fuser-ring-");
        let want_ring = expected_transport(&[opts]) == "transport: io_uring";
        assert_eq!(ring, want_ring, "{opts}: {lookup}");
        assert!(log.contains(expected_transport(&[opts])), "{opts}:\n{log}");
        if want_ring {
            // The last ring thread to register logs the line, and the kernel
            // may route requests to the rings a moment before it gets there.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut log = log;
            while !log.contains("FUSE over io_uring: ") && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
                log = m.stderr();
            }
            assert!(
                log.contains("FUSE over io_uring: "),
                "{opts}: ring threads not reported:\n{log}"
            );
        }
    }
}
