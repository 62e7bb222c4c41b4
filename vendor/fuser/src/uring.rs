//! FUSE over io_uring (Linux 6.14 and later, with the `fuse` module's
//! `enable_uring` parameter on).
//!
//! The kernel queues each request on the queue of the CPU its caller runs
//! on. Threads pinned to that CPU serve the queue, so a request and its
//! reply are a switch between two tasks on one CPU, not a wakeup of a
//! thread on another one (an inter-processor interrupt, which is what most
//! of a `/dev/fuse` round trip costs on a virtual machine).
//!
//! A ring request keeps the `/dev/fuse` layout split over two buffers: the
//! `fuse_in_header` and the operation's own header in a fixed header area,
//! names and data in the payload buffer. Each request is put back together
//! in one buffer and dispatched by the same code as a `/dev/fuse` request;
//! the reply is written into the entry's buffers and committed with the
//! next fetch. FORGET, INTERRUPT and notifications stay on `/dev/fuse`, and
//! so does everything until every CPU's queue has an entry.

use std::alloc::Layout;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::thread;
use std::thread::JoinHandle;
use std::thread::Thread;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::info;
use log::warn;

use crate::Filesystem;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll;
use crate::ll::Operation;
use crate::passthrough::BackingId;
use crate::reply::ReplyEmpty;
use crate::request::RequestWithSender;
use crate::session::FilesystemHolder;
use crate::session::SessionACL;
use crate::session::SessionEventLoop;

/// `FUSE_IO_URING_CMD_REGISTER`: hand the kernel an entry's buffers.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: reply, and wait for the next request.
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `struct fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, then
/// `struct fuse_uring_ent_in_out` (flags, commit_id, payload_sz, padding,
/// reserved).
const OP_IN: usize = 128;
const ENT_IN_OUT: usize = 256;
const ENT_COMMIT_ID: usize = ENT_IN_OUT + 8;
const ENT_PAYLOAD_SZ: usize = ENT_IN_OUT + 16;
const HEADER_SIZE: usize = 288;
const OP_IN_SIZE: usize = 128;
const IN_HEADER_SIZE: usize = 40;
const OUT_HEADER_SIZE: usize = 16;
/// The kernel's `FUSE_MIN_READ_BUFFER`.
const MIN_PAYLOAD: usize = 8192;

/// Threads per CPU queue. With two, a slow request (an fsync, a read from a
/// slow tier) leaves the CPU's queue served by the other thread.
const THREADS_PER_QUEUE: usize = 2;

/// Ring entries per thread. The kernel hands a request to the entry
/// committed last, so a burst lands on one thread's entries and is served
/// without waking a second thread: the asynchronous RELEASE of one file and
/// the OPEN of the next (`close(); open()`) cost one switch to the daemon,
/// not two (open+close 32-35 us -> 25-30 us here). The price: a request
/// that lands behind a slow one on the same thread waits for it.
const ENTRIES_PER_THREAD: usize = 2;

/// `user_data` of the stop eventfd's poll.
const STOP: u64 = u64::MAX;

/// What the INIT exchange decided for the ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// The kernel refuses entries whose payload buffer is smaller than
    /// `max(FUSE_MIN_READ_BUFFER, max_write, max_pages * PAGE_SIZE)`.
    pub(crate) max_payload: usize,
}

impl Params {
    pub(crate) fn new(max_write: u32, max_pages: u16) -> Self {
        let page = page_size::get();
        Params {
            max_payload: MIN_PAYLOAD
                .max(max_write as usize)
                .max(max_pages as usize * page),
        }
    }
}

/// The running ring threads; dropping it ends them (each after its current
/// request) and waits for them.
pub(crate) struct Rings {
    threads: Vec<JoinHandle<()>>,
    stops: Vec<OwnedFd>,
}

impl Drop for Rings {
    fn drop(&mut self) {
        for fd in &self.stops {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes from a valid buffer to an eventfd.
            unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts the ring threads: `THREADS_PER_QUEUE` per possible CPU, each
/// pinned to its CPU. Failures are logged and leave requests on
/// `/dev/fuse` (the kernel uses the ring only once every queue has an entry).
pub(crate) fn start<FS: Filesystem + 'static>(
    params: Params,
    ch: &Channel,
    filesystem: &Arc<FilesystemHolder<FS>>,
    allowed: SessionACL,
    session_owner: nix::unistd::Uid,
) -> Rings {
    let queues = possible_cpus();
    let total = queues * THREADS_PER_QUEUE;
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut rings = Rings {
        threads: Vec::with_capacity(total),
        stops: Vec::with_capacity(total),
    };
    for qid in 0..queues {
        for n in 0..THREADS_PER_QUEUE {
            // SAFETY: plain eventfd creation; the result is checked.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if efd < 0 {
                warn!(
                    "FUSE over io_uring not started: eventfd: {}",
                    io::Error::last_os_error()
                );
                return rings;
            }
            // SAFETY: efd is a fresh descriptor this code owns.
            let stop = unsafe { OwnedFd::from_raw_fd(efd) };
            let name = format!("fuser-ring-{qid}.{n}");
            let worker = Worker {
                qid: qid as u16,
                params,
                dev: std::os::fd::AsFd::as_fd(ch).as_raw_fd(),
                stop: efd,
                se: SessionEventLoop {
                    thread_name: name.clone(),
                    ch: ch.clone(),
                    filesystem: filesystem.clone(),
                    allowed,
                    session_owner,
                },
                ready: ready.clone(),
                failed: failed.clone(),
                total,
            };
            match thread::Builder::new()
                .name(name)
                .spawn(move || worker.run())
            {
                Ok(t) => {
                    rings.threads.push(t);
                    rings.stops.push(stop);
                }
                Err(e) => {
                    warn!("FUSE over io_uring: cannot start a ring thread: {e}");
                    failed.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    rings
}

/// Number of CPUs the kernel may ever run on (`num_possible_cpus()`): the
/// kernel keeps one queue per possible CPU and waits for all of them.
fn possible_cpus() -> usize {
    let from_sys = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            let mut n = 0usize;
            for part in s.trim().split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            Some(n)
        });
    // SAFETY: sysconf has no preconditions.
    from_sys.unwrap_or_else(|| unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize)
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET checks the index against
    // the set's size; sched_setaffinity reads the set it is given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            debug!(
                "ring thread not pinned to CPU {cpu}: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// A buffer the kernel reads and writes through raw pointers (it is
/// registered with the kernel, so no Rust reference may cover it while a
/// command is in flight).
struct RawBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl RawBuf {
    fn new(len: usize) -> io::Result<RawBuf> {
        // 16-byte alignment keeps alloc_zeroed on calloc, which maps fresh
        // zero pages without touching them: a megabyte of payload costs
        // memory only as far as requests use it.
        let layout = Layout::from_size_align(len.max(1), 16).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(RawBuf { ptr, layout })
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// What a reply needs of its entry. The buffers behind the pointers belong
/// to the entry's `Slot`, which the worker neither reuses nor frees before
/// `replied` is set; after that a sender touches only this struct.
struct Shared {
    header: *mut u8,
    payload: *mut u8,
    payload_len: usize,
    replied: AtomicBool,
    worker: Thread,
}

/// One ring entry: its buffers, and the iovecs the kernel reads at
/// registration.
struct Slot {
    header: RawBuf,
    payload: RawBuf,
    iov: [libc::iovec; 2],
    shared: Arc<Shared>,
    commit_id: u64,
    registered: bool,
}

impl Slot {
    fn new(max_payload: usize) -> io::Result<Box<Slot>> {
        let header = RawBuf::new(HEADER_SIZE)?;
        let payload = RawBuf::new(max_payload)?;
        let iov = [
            libc::iovec {
                iov_base: header.ptr.cast(),
                iov_len: HEADER_SIZE,
            },
            libc::iovec {
                iov_base: payload.ptr.cast(),
                iov_len: max_payload,
            },
        ];
        let shared = Arc::new(Shared {
            header: header.ptr,
            payload: payload.ptr,
            payload_len: max_payload,
            replied: AtomicBool::new(false),
            worker: thread::current(),
        });
        Ok(Box::new(Slot {
            header,
            payload,
            iov,
            shared,
            commit_id: 0,
            registered: false,
        }))
    }

    fn read_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: off + 4 <= HEADER_SIZE for every caller; the kernel is
        // done writing (its command completed).
        unsafe { std::ptr::copy_nonoverlapping(self.header.ptr.add(off), b.as_mut_ptr(), 4) };
        u32::from_ne_bytes(b)
    }

    fn read_u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        // SAFETY: as in read_u32.
        unsafe { std::ptr::copy_nonoverlapping(self.header.ptr.add(off), b.as_mut_ptr(), 8) };
        u64::from_ne_bytes(b)
    }
}

/// Where a ring request's reply goes: into its entry's buffers, then the
/// worker commits it.
#[derive(Clone)]
pub(crate) struct RingSender {
    shared: Arc<Shared>,
    ch: ChannelSender,
}

impl std::fmt::Debug for RingSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ring entry {:p}", Arc::as_ptr(&self.shared))
    }
}

// SAFETY: the raw pointers in `Shared` name buffers that stay allocated and
// untouched by the worker until the one reply has been written (`replied`,
// Release/Acquire, orders those writes before the worker's reads and the
// kernel's); after that no sender dereferences them.
unsafe impl Send for Shared {}
// SAFETY: as above; a reply is sent once, from one thread at a time.
unsafe impl Sync for Shared {}

impl RingSender {
    /// Writes the reply into the entry: the `fuse_out_header` into the
    /// header area, the rest into the payload buffer.
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let s = &*self.shared;
        let total: usize = data.iter().map(|d| d.len()).sum();
        let result = if total < OUT_HEADER_SIZE || total - OUT_HEADER_SIZE > s.payload_len {
            // Cannot happen for replies within max_write / max_read; answer
            // the request with EIO rather than overrun the buffer.
            error!("FUSE over io_uring: reply of {total} bytes does not fit the ring entry");
            let mut head = [0u8; OUT_HEADER_SIZE];
            let mut at = 0;
            for d in data {
                let n = d.len().min(OUT_HEADER_SIZE - at);
                head[at..at + n].copy_from_slice(&d[..n]);
                at += n;
                if at == OUT_HEADER_SIZE {
                    break;
                }
            }
            head[0..4].copy_from_slice(&(OUT_HEADER_SIZE as u32).to_ne_bytes());
            head[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
            // SAFETY: header buffer is HEADER_SIZE bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(head.as_ptr(), s.header, OUT_HEADER_SIZE);
                std::ptr::copy_nonoverlapping(
                    0u32.to_ne_bytes().as_ptr(),
                    s.header.add(ENT_PAYLOAD_SZ),
                    4,
                );
            }
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            let mut at = 0usize;
            for d in data {
                let mut src: &[u8] = d;
                if at < OUT_HEADER_SIZE {
                    let n = src.len().min(OUT_HEADER_SIZE - at);
                    // SAFETY: at + n <= OUT_HEADER_SIZE <= HEADER_SIZE.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), s.header.add(at), n) };
                    at += n;
                    src = &src[n..];
                }
                if !src.is_empty() {
                    let off = at - OUT_HEADER_SIZE;
                    // SAFETY: off + src.len() <= total - OUT_HEADER_SIZE <= payload_len.
                    unsafe {
                        std::ptr::copy_nonoverlapping(src.as_ptr(), s.payload.add(off), src.len())
                    };
                    at += src.len();
                }
            }
            let sz = (total - OUT_HEADER_SIZE) as u32;
            // SAFETY: ENT_PAYLOAD_SZ + 4 <= HEADER_SIZE.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    sz.to_ne_bytes().as_ptr(),
                    s.header.add(ENT_PAYLOAD_SZ),
                    4,
                )
            };
            Ok(())
        };
        s.replied.store(true, Ordering::Release);
        // `s` stays valid (this sender holds the Arc), but the buffers may
        // already be back in the kernel's hands: nothing but the wakeup here.
        s.worker.unpark();
        result
    }

    pub(crate) fn open_backing(&self, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<BackingId> {
        self.ch.open_backing(fd)
    }

    /// The `/dev/fuse` channel, for what a reply does besides replying
    /// (backing file registration).
    pub(crate) fn channel(&self) -> ChannelSender {
        self.ch.clone()
    }

    pub(crate) unsafe fn wrap_backing(&self, id: u32) -> BackingId {
        // SAFETY: forwarded contract.
        unsafe { self.ch.wrap_backing(id) }
    }
}

struct Worker<FS: Filesystem> {
    qid: u16,
    params: Params,
    dev: i32,
    stop: i32,
    se: SessionEventLoop<FS>,
    ready: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    total: usize,
}

/// The command area of an SQE128 for a FUSE ring command
/// (`struct fuse_uring_cmd_req`: flags, commit_id, qid).
fn cmd_area(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// `io_uring_sqe.len` sits at byte 24; the io-uring crate sets `addr` for
/// URING_CMD but not `len`, which REGISTER needs (the iovec count).
fn with_len(e: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is repr(C): a 64-byte io_uring_sqe followed by the
    // 64 extra command bytes, all plain data.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(e) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: same layout back.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

impl<FS: Filesystem> Worker<FS> {
    fn run(self) {
        pin_to_cpu(self.qid as usize);
        if let Err(e) = self.serve() {
            // The kernel uses the ring once every CPU's queue has an entry;
            // a CPU left without one keeps every request on /dev/fuse.
            if !self.failed.swap(true, Ordering::Relaxed) {
                warn!(
                    "FUSE over io_uring: a ring thread of CPU {} stopped: {e}",
                    self.qid
                );
            }
        }
    }

    fn register_sqe(&self, idx: usize, slot: &Slot) -> squeue::Entry128 {
        let e = opcode::UringCmd80::new(types::Fd(self.dev), CMD_REGISTER)
            .cmd(cmd_area(0, self.qid))
            .addr(Some(slot.iov.as_ptr() as u64))
            .build()
            .user_data(idx as u64);
        with_len(e, 2)
    }

    fn commit_sqe(&self, idx: usize, slot: &Slot) -> squeue::Entry128 {
        opcode::UringCmd80::new(types::Fd(self.dev), CMD_COMMIT_AND_FETCH)
            .cmd(cmd_area(slot.commit_id, self.qid))
            .build()
            .user_data(idx as u64)
    }

    fn push(ring: &mut IoUring<squeue::Entry128, cqueue::Entry>, e: &squeue::Entry128) {
        // SAFETY: every SQE points at buffers owned by a Slot that stays
        // alive (boxed, not moved) until the thread ends; the ring has one
        // submission slot per entry plus one for the stop poll, and each
        // entry has at most one command in flight.
        if unsafe { ring.submission().push(e) }.is_err() {
            error!("FUSE over io_uring: submission queue full");
        }
    }

    fn serve(&self) -> io::Result<()> {
        // Only this thread submits, and it always waits in io_uring_enter
        // between requests: the kernel may then run the work that delivers a
        // request (copying it into the entry) at that wait instead of
        // interrupting the thread for it. About 8% off a round trip here.
        let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder()
            .setup_cqsize(2 * (ENTRIES_PER_THREAD as u32 + 1))
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(ENTRIES_PER_THREAD as u32 + 1)?;
        let mut slots = Vec::with_capacity(ENTRIES_PER_THREAD);
        for _ in 0..ENTRIES_PER_THREAD {
            slots.push(Slot::new(self.params.max_payload)?);
        }
        // Entries with a command the kernel has not completed: their
        // buffers may still be written by the kernel, so they are never
        // freed (leaked at exit) while this is non-zero.
        let mut in_kernel = 0usize;
        for (idx, slot) in slots.iter_mut().enumerate() {
            let e = self.register_sqe(idx, slot);
            slot.registered = true;
            Self::push(&mut ring, &e);
            in_kernel += 1;
        }
        let poll = opcode::PollAdd::new(types::Fd(self.stop), libc::POLLIN as u32)
            .build()
            .user_data(STOP);
        Self::push(&mut ring, &poll.into());
        let result = match ring.submit() {
            Ok(_) => {
                // A REGISTER the kernel refuses completes at once with the
                // error (the loop reports it); one it takes stays pending
                // until the first request.
                if self.ready.fetch_add(1, Ordering::AcqRel) + 1 == self.total {
                    info!(
                        "FUSE over io_uring: {} per-CPU queues, {} threads of {} entries each",
                        self.total / THREADS_PER_QUEUE,
                        THREADS_PER_QUEUE,
                        ENTRIES_PER_THREAD
                    );
                }
                self.serve_loop(&mut ring, &mut slots, &mut in_kernel)
            }
            Err(e) => Err(e),
        };
        if in_kernel > 0 {
            std::mem::forget(slots);
        }
        result
    }

    fn serve_loop(
        &self,
        ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
        slots: &mut [Box<Slot>],
        in_kernel: &mut usize,
    ) -> io::Result<()> {
        // Requests are put back together here, 8-byte aligned for parsing.
        let words = (IN_HEADER_SIZE + OP_IN_SIZE + self.params.max_payload).div_ceil(8);
        let mut assembly: Vec<u64> = vec![0; words];
        let mut done: Vec<(u64, i32)> = Vec::with_capacity(8);
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            done.clear();
            done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            let mut stop = false;
            for (n, &(ud, res)) in done.iter().enumerate() {
                if ud == STOP {
                    // Serve what else completed first: a request dropped
                    // here would leave its caller waiting.
                    stop = true;
                    continue;
                }
                let idx = ud as usize;
                *in_kernel -= 1;
                if res < 0 {
                    match -res {
                        libc::EINTR | libc::EAGAIN => {
                            let e = if slots[idx].registered {
                                self.register_sqe(idx, &slots[idx])
                            } else {
                                self.commit_sqe(idx, &slots[idx])
                            };
                            Self::push(ring, &e);
                            *in_kernel += 1;
                        }
                        // The connection is going away (unmount, abort).
                        libc::ENOTCONN | libc::ECANCELED | libc::ENODEV => stop = true,
                        e if slots[idx].registered => {
                            return Err(io::Error::from_raw_os_error(e));
                        }
                        e => {
                            // The kernel dropped this entry (a commit it
                            // could not match). Keep the queue served with
                            // fresh buffers; the old ones are leaked rather
                            // than trusted to be out of the kernel's hands.
                            error!(
                                "FUSE over io_uring: queue {} entry failed: {}",
                                self.qid,
                                io::Error::from_raw_os_error(e)
                            );
                            let fresh = Slot::new(self.params.max_payload)?;
                            std::mem::forget(std::mem::replace(&mut slots[idx], fresh));
                            let e = self.register_sqe(idx, &slots[idx]);
                            slots[idx].registered = true;
                            Self::push(ring, &e);
                            *in_kernel += 1;
                        }
                    }
                    continue;
                }
                // SAFETY: the u64 buffer is at least `words * 8` bytes long.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(assembly.as_mut_ptr().cast::<u8>(), words * 8)
                };
                self.handle(&mut slots[idx], buf);
                slots[idx].registered = false;
                let e = self.commit_sqe(idx, &slots[idx]);
                Self::push(ring, &e);
                *in_kernel += 1;
                if n + 1 < done.len() {
                    // More requests wait in this batch: hand this reply
                    // back now rather than after them.
                    ring.submit()?;
                }
            }
            if stop {
                // Hand back the replies just written before leaving.
                let _ = ring.submit();
                return Ok(());
            }
        }
    }

    /// Serves the request in `slot` and leaves its reply in the slot.
    fn handle(&self, slot: &mut Slot, buf: &mut [u8]) {
        slot.commit_id = slot.read_u64(ENT_COMMIT_ID);
        let len = slot.read_u32(0) as usize;
        let unique = slot.read_u64(8);
        let payload_sz = slot.read_u32(ENT_PAYLOAD_SZ) as usize;
        let op_size = len.checked_sub(IN_HEADER_SIZE + payload_sz);
        let sender = RingSender {
            shared: slot.shared.clone(),
            ch: self.se.ch.sender(),
        };
        slot.shared.replied.store(false, Ordering::Relaxed);
        let Some(op_size) =
            op_size.filter(|&n| n <= OP_IN_SIZE && payload_sz <= slot.shared.payload_len)
        else {
            error!("FUSE over io_uring: malformed request (length {len}, payload {payload_sz})");
            let _ = sender.send(&[IoSlice::new(&err_header(unique, libc::EIO))]);
            return;
        };
        // SAFETY: the kernel has finished writing this entry (its command
        // completed); lengths are checked against both buffers above.
        unsafe {
            std::ptr::copy_nonoverlapping(slot.header.ptr, buf.as_mut_ptr(), IN_HEADER_SIZE);
            std::ptr::copy_nonoverlapping(
                slot.header.ptr.add(OP_IN),
                buf.as_mut_ptr().add(IN_HEADER_SIZE),
                op_size,
            );
            std::ptr::copy_nonoverlapping(
                slot.payload.ptr,
                buf.as_mut_ptr().add(IN_HEADER_SIZE + op_size),
                payload_sz,
            );
        }
        // A panicking handler must not take the entry (and the caller, and
        // in the end the CPU's queue) with it: its reply object answers EIO
        // as it unwinds, and the entry is committed as usual.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match RequestWithSender::with_ring(sender.clone(), &buf[..len]) {
                Some(req) => {
                    if let Ok(Operation::Destroy(_)) = req.request.operation() {
                        req.reply::<ReplyEmpty>().ok();
                    } else {
                        req.dispatch(&self.se);
                    }
                }
                None => {
                    let _ = sender.send(&[IoSlice::new(&err_header(unique, libc::EIO))]);
                }
            }
        }));
        if served.is_err() {
            error!("FUSE over io_uring: a request handler panicked (request {unique})");
            if !slot.shared.replied.load(Ordering::Acquire) {
                let _ = sender.send(&[IoSlice::new(&err_header(unique, libc::EIO))]);
            }
        }
        // A filesystem may reply from another thread; the entry is not
        // committed (or reused) before it has.
        while !slot.shared.replied.load(Ordering::Acquire) {
            thread::park();
        }
    }
}

fn err_header(unique: u64, errno: i32) -> [u8; OUT_HEADER_SIZE] {
    let mut h = [0u8; OUT_HEADER_SIZE];
    h[0..4].copy_from_slice(&(OUT_HEADER_SIZE as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

const _: () = assert!(std::mem::size_of::<ll::fuse_abi::fuse_in_header>() == IN_HEADER_SIZE);
