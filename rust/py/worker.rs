//! The bridge between the Rust worker and the Python executor. Claimed batches wait in
//! [`PyDispatcher`] and a byte on a socket pair tells the executor's asyncio loop, which reads
//! them with `WorkerHandle.take_claimed` (the loop watches the socket with `add_reader`): no
//! tokio thread ever waits for the GIL, and no thread sits between the claim and the loop.
//! Outcomes come back through `WorkerHandle.report_many`, which only queues them for the
//! completer and returns the jobs claimed ahead that take the freed slots.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

use crate::config::seconds;
use crate::job::Job;
use crate::py::job::PyJob;
use crate::py::job_spec::PyOutcome;
use crate::py::runtime::block_on_interruptible;
use crate::store::{Lease, Store};
use crate::worker::{Dispatch, Worker};

/// Holds claimed batches until the executor's loop takes them.
pub struct PyDispatcher {
    /// Dropped at close: the executor refers back to the worker handle, a cycle Python's
    /// garbage collector cannot see through Rust.
    executor: Mutex<Option<Py<PyAny>>>,
    /// Claimed jobs the loop has not taken yet.
    claimed: Mutex<Vec<Job>>,
    /// A byte is written here when `claimed` stops being empty; the loop reads `wakeup_reader`.
    wakeup_writer: UnixStream,
    wakeup_reader: UnixStream,
    /// The store claimed jobs come from: their performers may complete them transactionally.
    store: Arc<dyn Store>,
}

impl PyDispatcher {
    pub fn new(executor: Py<PyAny>, store: Arc<dyn Store>) -> std::io::Result<PyDispatcher> {
        let (wakeup_writer, wakeup_reader) = UnixStream::pair()?;
        // Neither end may block: a full socket already holds a wake-up, and the loop only
        // drains what is there.
        wakeup_writer.set_nonblocking(true)?;
        wakeup_reader.set_nonblocking(true)?;
        Ok(PyDispatcher {
            executor: Mutex::new(Some(executor)),
            claimed: Mutex::new(Vec::new()),
            wakeup_writer,
            wakeup_reader,
            store,
        })
    }

    /// Forget the executor once the worker has stopped.
    pub(crate) fn close(&self) {
        let executor = self.executor.lock().unwrap().take();
        if let Some(executor) = executor {
            Python::attach(|_py| drop(executor));
        }
    }

    /// The claimed jobs waiting for the loop, as Python jobs. Drains the wake-up bytes first:
    /// a batch handed over after that leaves a byte behind, so none is missed.
    fn take_claimed(&self) -> Vec<PyJob> {
        let mut sink = [0u8; 64];
        while matches!((&self.wakeup_reader).read(&mut sink), Ok(n) if n > 0) {}
        let jobs = std::mem::take(&mut *self.claimed.lock().unwrap());
        jobs.into_iter()
            .map(|job| PyJob::claimed(job, self.store.clone()))
            .collect()
    }
}

impl Dispatch for PyDispatcher {
    fn dispatch(&self, jobs: Vec<Job>) {
        let was_empty = {
            let mut claimed = self.claimed.lock().unwrap();
            let was_empty = claimed.is_empty();
            claimed.extend(jobs);
            was_empty
        };
        if was_empty {
            // WouldBlock: the socket is full of wake-ups already.
            let _ = (&self.wakeup_writer).write(&[1]);
        }
    }

    fn cancel_all(&self) {
        Python::attach(|py| {
            let executor = self
                .executor
                .lock()
                .unwrap()
                .as_ref()
                .map(|e| e.clone_ref(py));
            if let Some(Err(err)) = executor.map(|e| e.call_method0(py, "cancel_all")) {
                err.print(py);
            }
        });
    }

    fn cancel(&self, attempts: Vec<Lease>) {
        let attempts: Vec<(i64, i64)> = attempts.iter().map(|l| (l.id, l.token)).collect();
        Python::attach(|py| {
            let executor = self
                .executor
                .lock()
                .unwrap()
                .as_ref()
                .map(|e| e.clone_ref(py));
            if let Some(Err(err)) = executor.map(|e| e.call_method1(py, "cancel_jobs", (attempts,)))
            {
                err.print(py);
            }
        });
    }
}

/// A started worker, as Python holds it.
#[pyclass(frozen, module = "ferroq._core")]
pub struct WorkerHandle {
    worker: Arc<Worker>,
    dispatcher: Arc<PyDispatcher>,
    /// How long `stop()` lets running jobs finish when not told otherwise.
    stop_timeout: Duration,
    /// The fork generation of the process the worker runs in.
    generation: u64,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if self.generation != crate::fork::generation() {
            // A forked child freeing its parent's handle: the worker's tasks, threads and
            // connections are the parent's, so nothing of it is dropped here.
            std::mem::forget(self.worker.clone());
            std::mem::forget(self.dispatcher.clone());
        }
    }
}

impl WorkerHandle {
    pub fn new(
        worker: Worker,
        dispatcher: Arc<PyDispatcher>,
        stop_timeout: Duration,
    ) -> WorkerHandle {
        WorkerHandle {
            worker: Arc::new(worker),
            dispatcher,
            stop_timeout,
            generation: crate::fork::generation(),
        }
    }
}

/// The attempt a Job object stands for; only claimed jobs carry a lease.
fn lease_of(job: &PyJob) -> Option<Lease> {
    job.inner.lease_token.map(|token| Lease {
        id: job.inner.id,
        token,
    })
}

#[pymethods]
impl WorkerHandle {
    /// How attempts ended, in one call (the asyncio thread reports once per loop iteration).
    /// Jobs that are not attempts of this worker are ignored. Returns the jobs claimed ahead
    /// that take the freed slots: the caller starts them at once.
    fn report_many(&self, outcomes: Vec<(PyRef<'_, PyJob>, PyRef<'_, PyOutcome>)>) -> Vec<PyJob> {
        let reports = outcomes
            .iter()
            .filter_map(|(job, outcome)| lease_of(job).map(|lease| (lease, outcome.inner.clone())));
        self.worker
            .report_many(reports)
            .into_iter()
            .map(|job| PyJob::claimed(job, self.dispatcher.store.clone()))
            .collect()
    }

    /// The file descriptor the executor's loop watches (`loop.add_reader`): readable when
    /// claimed jobs wait to be taken with `take_claimed`.
    #[getter]
    fn wakeup_fd(&self) -> i32 {
        self.dispatcher.wakeup_reader.as_raw_fd()
    }

    /// The claimed jobs waiting to start, in claim order (empty if none).
    fn take_claimed(&self) -> Vec<PyJob> {
        self.dispatcher.take_claimed()
    }

    #[getter]
    fn processed(&self) -> u64 {
        self.worker.processed()
    }

    #[getter]
    fn in_flight(&self) -> usize {
        self.worker.in_flight()
    }

    /// Block until a drain-mode worker has run everything due (Ctrl-C still works).
    fn wait_drained(&self, py: Python<'_>) -> PyResult<()> {
        let worker = self.worker.clone();
        Ok(block_on_interruptible(py, async move {
            worker.wait_drained().await
        })??)
    }

    /// Cut a stop short (from a signal handler while `stop` runs): interrupt and release now.
    fn hurry(&self) {
        self.worker.hurry();
    }

    /// Graceful stop; see `Worker::stop`. `timeout` seconds, or the App's `stop_timeout`.
    /// Returns the ids of the jobs whose performer has not returned (their leases are kept).
    #[pyo3(signature = (timeout=None))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<i64>> {
        let timeout = match timeout {
            Some(value) => seconds("timeout", value, true)?,
            None => self.stop_timeout,
        };
        let worker = self.worker.clone();
        let unstoppable = block_on_interruptible(py, async move { worker.stop(timeout).await })?;
        self.dispatcher.close();
        Ok(unstoppable)
    }
}
