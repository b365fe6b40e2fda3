//! Where the proxy's listeners and connections run: one single-threaded
//! tokio runtime per core, each on a thread of its own with its own epoll.
//!
//! Every virtual-service address gets one listener per worker
//! (`SO_REUSEPORT`, `net::tcp_listeners`), and a connection lives on the
//! worker that accepted it, from accept to close. Nothing of a connection
//! moves between threads, and a worker that has work never has to wake
//! another, so the proxy scales with cores the way HAProxy's threads do.
//! On one multi-threaded runtime the readiness of every socket came from one
//! driver and tasks were handed between workers: at 2 cores the machine sat
//! 10 % idle under kept-alive load and poolgate answered 0.92x HAProxy
//! (decision 1202).

use std::future::Future;
use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// The proxy's runtimes. Dropping it stops them; by then `serve` has let
/// every connection finish.
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// One worker per core this process may run on.
    pub(crate) fn per_core() -> std::io::Result<Self> {
        let count = thread::available_parallelism().map_or(1, |n| n.get());
        Self::start(count)
    }

    /// `count` worker threads, each with a current-thread runtime. If one
    /// cannot start, those already started stop again.
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let mut workers = Self {
            handles: Vec::with_capacity(count),
            stop: CancellationToken::new(),
        };
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let stop = workers.stop.clone();
            thread::Builder::new()
                .name(format!("proxy-{index}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    /// The calling runtime only (tests, whose clock may be paused).
    #[cfg(test)]
    pub(crate) fn current() -> Self {
        Self {
            handles: vec![Handle::current()],
            stop: CancellationToken::new(),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.handles.len()
    }

    /// Run `make(item)` on a worker of its own for each of `items` (one
    /// per worker, as `count` says).
    pub(crate) fn spawn_each<T, F>(&self, items: Vec<T>, mut make: impl FnMut(T) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for (handle, item) in self.handles.iter().zip(items) {
            handle.spawn(make(item));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
