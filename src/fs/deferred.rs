//! Closing off the request path.
//!
//! Closing a tier handle is not free: the kernel frees the file, and for a
//! directory ext4 also frees the name tree its listing built (about 4 µs
//! for 100 names). When the handler of a request does that, the client
//! waits for it: over io_uring a reply leaves only when its handler
//! returns. A listing's last request and a reader's RELEASE (which runs on
//! the thread that serves the next OPEN) gain nothing from waiting. So
//! such handles are handed to one background thread, which drops them in
//! batches a moment later.
//!
//! Only directory handles and read-only files are deferred. A file opened
//! for writing is closed at once, since its close can be seen (`ETXTBSY`
//! for a program about to run it from the tier, close-time flushes of some
//! filesystems). The one visible effect of a deferred close is that the
//! space of a file unlinked while it was being read comes back a few
//! milliseconds later.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long the thread lets handles gather before dropping a batch: one
/// wakeup per batch, not per handle.
const GATHER: Duration = Duration::from_millis(2);

/// Most handles waiting at once; past that (the thread cannot keep up),
/// handles close where they are given, so open handles stay bounded.
const MAX_WAITING: usize = 4096;

/// Things to drop later, and whether the owner is going away.
#[derive(Default)]
struct Queue {
    items: Vec<Box<dyn Send>>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// A background thread that drops what it is given (see the module doc).
/// Dropping the `Deferred` drops everything still queued before it
/// returns, so no handle outlives the filesystem core.
pub struct Deferred {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred").finish_non_exhaustive()
    }
}

impl Deferred {
    /// Starts the thread. Without one (the spawn failed), handles are
    /// dropped where they are given, as before.
    pub fn new() -> Self {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dfs-closer".into())
            .spawn(move || run(&s))
            .map_err(|e| log::warn!("cannot start the closer thread ({e}): handles close inline"))
            .ok();
        Deferred { shared, thread }
    }

    /// Drops `v` on the background thread, soon.
    pub fn drop_later<T: Send + 'static>(&self, v: T) {
        if self.thread.is_none() {
            return;
        }
        let mut q = self.shared.queue.lock();
        if q.items.len() >= MAX_WAITING {
            drop(q);
            drop(v);
            return;
        }
        let was_empty = q.items.is_empty();
        q.items.push(Box::new(v));
        drop(q);
        // The thread sleeps only while the queue is empty.
        if was_empty {
            self.shared.wake.notify_one();
        }
    }
}

impl Default for Deferred {
    fn default() -> Self {
        Self::new()
    }
}

fn run(s: &Shared) {
    // Lowest priority: the thread takes a CPU nothing else wants and does
    // not preempt a client (or the request threads) to close a handle, but
    // (unlike SCHED_IDLE) still gets its small share when the CPUs stay
    // busy; `MAX_WAITING` bounds what it may fall behind by.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        log::debug!("closer thread keeps its priority: {e}");
    }
    loop {
        let mut q = s.queue.lock();
        while q.items.is_empty() && !q.stop {
            s.wake.wait(&mut q);
        }
        if q.stop {
            let items = std::mem::take(&mut q.items);
            drop(q);
            drop(items);
            return;
        }
        drop(q);
        std::thread::sleep(GATHER);
        let items = std::mem::take(&mut s.queue.lock().items);
        drop(items);
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn drops_soon_and_everything_by_its_own_drop() {
        let n = Arc::new(AtomicUsize::new(0));
        let d = Deferred::new();
        d.drop_later(Counted(n.clone()));
        let start = std::time::Instant::now();
        while n.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(n.load(Ordering::SeqCst), 1, "not dropped within 5 s");
        for _ in 0..100 {
            d.drop_later(Counted(n.clone()));
        }
        drop(d);
        assert_eq!(n.load(Ordering::SeqCst), 101);
    }
}
