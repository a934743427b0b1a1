//! Worker threads for the CPU of requests: the native host's "run this pure
//! job on another core" capability.
//!
//! The proxy runs on one thread (a `smol::LocalExecutor`; [`crate::proxy::Proxy`]
//! is `Rc`/`RefCell` inside). The per-line CPU of a write (gzip decoding,
//! UTF-8 check, line protocol validation: [`crate::validated_body`]) needs
//! nothing of the proxy, so the host runs it here, on a worker thread per
//! core but one ([`WorkerPool::per_core`]), while the proxy's thread goes on reading sockets, routing and
//! delivering. Routing, delivery and the write queues stay on the proxy's
//! thread: their ordering and durability rules do not change.
//!
//! Not `smol::unblock`: its pool is for blocking IO (the write queue's
//! fsyncs run there) and grows to hundreds of threads; CPU jobs want one
//! thread per core, and must not queue behind an fsync.

use smol::channel::{Receiver, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A job for a worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of worker threads running CPU jobs handed over by
/// [`WorkerPool::run`], first come first served. The threads end once the
/// pool is dropped and the jobs already handed over are done.
pub struct WorkerPool {
    jobs: Sender<Job>,
    threads: usize,
}

impl WorkerPool {
    /// A pool of `threads` worker threads (at least 1), named
    /// `influx-proxy-worker-N`. Error: the OS refused to start a thread.
    pub fn new(threads: usize) -> std::io::Result<WorkerPool> {
        let threads = threads.max(1);
        let (jobs, queue) = smol::channel::unbounded::<Job>();
        for n in 0..threads {
            let queue: Receiver<Job> = queue.clone();
            std::thread::Builder::new().name(format!("influx-proxy-worker-{n}")).spawn(move || {
                while let Ok(job) = queue.recv_blocking() {
                    job();
                }
            })?;
        }
        Ok(WorkerPool { jobs, threads })
    }

    /// A pool with one worker per core but one (the proxy's own thread is
    /// busy on the last), at least 1: `available_parallelism()` minus 1.
    /// Measured on a shared 2-core machine, 8 connections posting 5,000-line
    /// bodies (medians of 3): 2 workers reached 10% (plain) to 18% (gzip)
    /// more lines/s than 1, only by taking a larger share of the busy
    /// machine, for a peak RSS of 24.8 MiB instead of 19.1 (gzip): each
    /// worker thread's allocator arena keeps its own decoded bodies' pages.
    pub fn per_core() -> std::io::Result<WorkerPool> {
        WorkerPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1))
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job` on a worker thread; its result, or `None` if it panicked
    /// (the worker goes on with the next job).
    pub async fn run<T, F>(&self, job: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = smol::channel::bounded::<T>(1);
        let job: Job = Box::new(move || {
            if let Ok(result) = catch_unwind(AssertUnwindSafe(job)) {
                // The caller may be gone (its request dropped): nothing to do.
                let _ = tx.try_send(result);
            }
        });
        // Only fails when every worker has ended (none could be started):
        // the job then runs here.
        if let Err(e) = self.jobs.try_send(job) {
            (e.into_inner())();
        }
        rx.recv().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The job runs on a worker thread, not on the executor's thread that
    /// awaits it, and a panicking job is `None` without stopping the pool.
    #[test]
    fn a_job_runs_on_a_worker_thread_not_the_executors() {
        let pool = WorkerPool::new(2).unwrap();
        let executor_thread = std::thread::current().id();
        let ex = smol::LocalExecutor::new();
        let (thread, name) = smol::block_on(ex.run(pool.run(|| {
            let t = std::thread::current();
            (t.id(), t.name().map(str::to_string))
        })))
        .unwrap();
        assert_ne!(thread, executor_thread);
        assert!(name.as_deref().is_some_and(|n| n.starts_with("influx-proxy-worker-")), "{name:?}");
        assert_eq!(smol::block_on(pool.run(|| -> u8 { panic!("a bug in a job") })), None);
        assert_eq!(smol::block_on(pool.run(|| 41 + 1)), Some(42));
    }

    /// Jobs run at the same time on different workers: the first job waits
    /// (at most 5 s) for the second to start, which one worker could not do.
    #[test]
    fn jobs_run_in_parallel_on_the_workers() {
        let pool = WorkerPool::new(2).unwrap();
        let (started, wait) = std::sync::mpsc::channel::<()>();
        let first = pool.run(move || wait.recv_timeout(std::time::Duration::from_secs(5)).is_ok());
        let second = pool.run(move || started.send(()).is_ok());
        let (first, second) = smol::block_on(futures_lite::future::zip(first, second));
        assert_eq!((first, second), (Some(true), Some(true)));
    }
}
