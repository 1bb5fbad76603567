//! The bridge between the Rust worker and the Python executor: claimed batches cross to
//! Python on one dedicated thread, once per batch, so no tokio thread ever waits for the GIL;
//! outcomes come back through `WorkerHandle.report_many`, which only queues them for the
//! completer.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::config::seconds;
use crate::job::Job;
use crate::py::job::PyJob;
use crate::py::job_spec::PyOutcome;
use crate::py::runtime::block_on_interruptible;
use crate::store::{Lease, Store};
use crate::worker::{Dispatch, Worker};

/// Hands batches to `executor.submit(jobs)` from the thread `ferroq-dispatch`.
pub struct PyDispatcher {
    /// Dropped at close: the executor refers back to the worker handle, a cycle Python's
    /// garbage collector cannot see through Rust.
    executor: Mutex<Option<Py<PyAny>>>,
    batches: Mutex<Option<mpsc::Sender<Vec<Job>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The store claimed jobs come from: their performers may complete them transactionally.
    store: Arc<dyn Store>,
}

impl PyDispatcher {
    pub fn spawn(executor: Py<PyAny>, store: Arc<dyn Store>) -> PyDispatcher {
        let (sender, receiver) = mpsc::channel::<Vec<Job>>();
        let target = Python::attach(|py| executor.clone_ref(py));
        let jobs_store = store.clone();
        let thread = std::thread::Builder::new()
            .name("ferroq-dispatch".into())
            .spawn(move || {
                while let Ok(batch) = receiver.recv() {
                    Python::attach(|py| {
                        let jobs: Vec<PyJob> = batch
                            .into_iter()
                            .map(|job| PyJob::claimed(job, jobs_store.clone()))
                            .collect();
                        let submitted = PyList::new(py, jobs)
                            .and_then(|list| target.call_method1(py, "submit", (list,)));
                        if let Err(err) = submitted {
                            // The executor reports per job; an error here is a bug in it. Show it,
                            // and let the leases expire so the jobs run again.
                            err.print(py);
                        }
                    });
                }
            })
            .expect("spawning the ferroq-dispatch thread");
        PyDispatcher {
            executor: Mutex::new(Some(executor)),
            batches: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            store,
        }
    }

    /// Let the dispatch thread end once it has handed over what it holds.
    pub(crate) fn close(&self) {
        self.batches.lock().unwrap().take();
        if let Some(thread) = self.thread.lock().unwrap().take() {
            let _ = thread.join();
        }
        let executor = self.executor.lock().unwrap().take();
        if let Some(executor) = executor {
            Python::attach(|_py| drop(executor));
        }
    }
}

impl Dispatch for PyDispatcher {
    fn dispatch(&self, jobs: Vec<Job>) {
        if let Some(sender) = self.batches.lock().unwrap().as_ref() {
            let _ = sender.send(jobs);
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
        let dispatcher = self.dispatcher.clone();
        py.detach(|| dispatcher.close());
        Ok(unstoppable)
    }
}
