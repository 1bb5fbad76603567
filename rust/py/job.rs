//! `ferroq.Job`: a read-only view of a job row. Params and result are decoded from JSON (or
//! made into `bytes`) on first access only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::client::caller_complete;
use crate::job::{Job, Params};
use crate::py::caller_tx::PyCallerStatement;
use crate::py::runtime::block_on;
use crate::store::{Lease, Store};

/// A job as stored. Immutable: a new read gives a new object.
#[pyclass(frozen, name = "Job", module = "ferroq")]
pub struct PyJob {
    pub(crate) inner: Job,
    params: PyOnceLock<Py<PyAny>>,
    result: PyOnceLock<Py<PyAny>>,
    /// The store of the worker that claimed it: builds the completion of this attempt on a
    /// caller's connection (claimed jobs only).
    store: Option<Arc<dyn Store>>,
    /// Set once `complete(connection)` applied in the caller's transaction; whether that
    /// transaction committed is known only from the row afterwards (see `_holds_lease`).
    completion_applied: Arc<AtomicBool>,
    /// Claimed with no attempt left (its last attempt's lease expired): the executor runs
    /// only the performer's on_failure hook. `inner.attempts` then reads `max_attempts`, the
    /// attempts the job used; the claim's extra one is given back when the failure is written.
    failure_pending: bool,
}

impl PyJob {
    /// A job read by a listing or an insert: not an attempt of this process.
    pub fn listed(inner: Job) -> PyJob {
        PyJob::new(inner, None)
    }

    /// A job a worker claimed from `store`: its performer may complete it transactionally.
    pub fn claimed(mut inner: Job, store: Arc<dyn Store>) -> PyJob {
        let failure_pending = inner.attempts_exhausted();
        if failure_pending {
            inner.attempts = inner.max_attempts;
        }
        PyJob {
            failure_pending,
            ..PyJob::new(inner, Some(store))
        }
    }

    fn new(inner: Job, store: Option<Arc<dyn Store>>) -> PyJob {
        PyJob {
            inner,
            params: PyOnceLock::new(),
            result: PyOnceLock::new(),
            store,
            completion_applied: Arc::new(AtomicBool::new(false)),
            failure_pending: false,
        }
    }

    fn not_an_attempt(&self) -> PyErr {
        crate::error::Error::JobState(format!(
            "job {} is not a running attempt: only a performer's own job can be completed",
            self.inner.id
        ))
        .into()
    }

    fn completion(&self) -> PyResult<PyCallerStatement> {
        let Some(store) = &self.store else {
            return Err(self.not_an_attempt());
        };
        Ok(PyCallerStatement::completion(
            caller_complete(store.as_ref(), &self.inner)?,
            self.completion_applied.clone(),
        ))
    }

    /// This attempt's store and lease.
    fn attempt(&self) -> PyResult<(Arc<dyn Store>, Lease)> {
        match (&self.store, self.inner.lease_token) {
            (Some(store), Some(token)) => Ok((
                store.clone(),
                Lease {
                    id: self.inner.id,
                    token,
                },
            )),
            _ => Err(self.not_an_attempt()),
        }
    }
}

fn cached_attr(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<Py<PyAny>> {
    cell.get_or_try_init(py, || py.import(module)?.getattr(name).map(Bound::unbind))
        .map(|f| f.clone_ref(py))
}

fn json_loads(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    cached_attr(py, &LOADS, "json", "loads")?.call1(py, (text,))
}

/// Run a statement on the caller's connection through the driver adapters.
fn run_on_connection(
    py: Python<'_>,
    asynchronous: bool,
    connection: &Bound<'_, PyAny>,
    statement: PyCallerStatement,
) -> PyResult<Py<PyAny>> {
    static EXECUTE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static AEXECUTE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let run = if asynchronous {
        cached_attr(py, &AEXECUTE, "ferroq._caller_tx", "aexecute")?
    } else {
        cached_attr(py, &EXECUTE, "ferroq._caller_tx", "execute")?
    };
    run.call1(py, (connection, statement))
}

#[pymethods]
impl PyJob {
    #[getter]
    fn id(&self) -> i64 {
        self.inner.id
    }
    #[getter]
    fn scope(&self) -> &str {
        &self.inner.scope
    }
    #[getter]
    fn queue(&self) -> &str {
        &self.inner.queue
    }
    #[getter]
    fn action(&self) -> &str {
        &self.inner.action
    }
    /// The decoded JSON document, or `bytes` for bytes params.
    #[getter]
    fn params(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.params
            .get_or_try_init(py, || match &self.inner.params {
                Params::Json(text) => json_loads(py, text),
                Params::Bytes(bytes) => Ok(PyBytes::new(py, bytes).into_any().unbind()),
            })
            .map(|p| p.clone_ref(py))
    }
    /// In listings: the job this waiting job of a blocking queue waits behind.
    #[getter]
    fn blocked_by(&self) -> Option<i64> {
        self.inner.blocked_by
    }
    /// The unique key this job was created with; None for a job without one.
    #[getter]
    fn unique_key(&self) -> Option<&str> {
        self.inner.unique.as_ref().map(|u| u.key.as_str())
    }
    /// The window its key is unique in, in seconds; None when it has none (or no key).
    #[getter]
    fn unique_period(&self) -> Option<i64> {
        self.inner.unique.as_ref().and_then(|u| u.period)
    }
    /// True on a job `create_job(s)` returned instead of inserting one: an existing job with
    /// the same unique key. False everywhere else.
    #[getter]
    fn duplicate(&self) -> bool {
        self.inner.duplicate
    }
    /// Why a job that has not finished is not running; None when running or finished.
    #[getter]
    fn waiting_reason(&self) -> Option<String> {
        self.inner.waiting_reason()
    }
    #[getter]
    fn priority(&self) -> i32 {
        self.inner.priority
    }
    #[getter]
    fn sequence(&self) -> i64 {
        self.inner.sequence
    }
    /// A `ferroq.JobState` (a `str` enum: it compares equal to the state's name).
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static JOB_STATE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        cached_attr(py, &JOB_STATE, "ferroq._state", "JobState")?
            .call1(py, (self.inner.state.as_str(),))
    }
    #[getter]
    fn attempts(&self) -> i32 {
        self.inner.attempts
    }
    #[getter]
    fn max_attempts(&self) -> i32 {
        self.inner.max_attempts
    }
    /// Whether a failure of this attempt ends the job as failed rather than retrying it.
    #[getter]
    fn is_last_attempt(&self) -> bool {
        self.inner.is_last_attempt()
    }
    #[getter]
    fn timeout(&self) -> f64 {
        self.inner.timeout
    }
    #[getter]
    fn max_backoff(&self) -> f64 {
        self.inner.max_backoff
    }
    #[getter]
    fn scheduled_at(&self) -> DateTime<Utc> {
        self.inner.scheduled_at
    }
    #[getter]
    fn attempted_at(&self) -> Option<DateTime<Utc>> {
        self.inner.attempted_at
    }
    #[getter]
    fn attempted_by(&self) -> Option<&str> {
        self.inner.attempted_by.as_deref()
    }
    #[getter]
    fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.inner.next_attempt_at
    }
    #[getter]
    fn done_at(&self) -> Option<DateTime<Utc>> {
        self.inner.done_at
    }
    #[getter]
    fn inserted_at(&self) -> DateTime<Utc> {
        self.inner.inserted_at
    }
    /// When the cancel of this running job was requested (`cancel_job`); None if never.
    #[getter]
    fn cancel_requested_at(&self) -> Option<DateTime<Utc>> {
        self.inner.cancel_requested_at
    }
    #[getter]
    fn error(&self) -> Option<&str> {
        self.inner.error.as_deref()
    }
    #[getter]
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.inner.result {
            None => Ok(None),
            Some(text) => self
                .result
                .get_or_try_init(py, || json_loads(py, text))
                .map(|r| Some(r.clone_ref(py))),
        }
    }

    /// Mark this attempt's job completed inside the caller's open transaction on `connection`
    /// (see `ferroq/_caller_tx.py` for the drivers). Fenced by the attempt's lease token:
    /// returns False, and changes nothing, if the attempt no longer holds the job. The caller
    /// commits.
    fn complete(&self, py: Python<'_>, connection: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        run_on_connection(py, false, connection, self.completion()?)
    }

    /// Awaitable `complete` for an async connection.
    fn acomplete(&self, py: Python<'_>, connection: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        run_on_connection(py, true, connection, self.completion()?)
    }

    /// Whether `complete(connection)` applied in the caller's transaction (committed or not).
    #[getter]
    fn _completion_applied(&self) -> bool {
        self.completion_applied.load(Ordering::Acquire)
    }

    /// Whether this attempt still holds its job (same lease, still running), as the database
    /// sees it now. After the performer returned: false when a completion it applied on its
    /// own connection committed, or when the attempt lost its lease.
    fn _holds_lease(&self, py: Python<'_>) -> PyResult<bool> {
        let (store, lease) = self.attempt()?;
        Ok(block_on(py, async move { store.holds_lease(lease).await })?)
    }

    /// Awaitable `_holds_lease`, for the asyncio thread.
    fn _aholds_lease<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (store, lease) = self.attempt()?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(store.holds_lease(lease).await?)
        })
    }

    /// Claimed with no attempt left: run only the on_failure hook, with `error`, and fail it.
    #[getter]
    fn _failure_pending(&self) -> bool {
        self.failure_pending
    }

    /// The attempt this claimed job stands for, `(id, lease token)`: what a cancel names, so
    /// that a request for one attempt never reaches a later one of the same job.
    #[getter]
    fn _attempt(&self) -> Option<(i64, i64)> {
        self.inner.lease_token.map(|token| (self.inner.id, token))
    }

    fn __repr__(&self) -> String {
        format!(
            "<ferroq.Job id={} queue={:?} action={:?} state={} attempts={}{}>",
            self.inner.id,
            self.inner.queue,
            self.inner.action,
            self.inner.state,
            self.inner.attempts,
            if self.inner.duplicate {
                " duplicate"
            } else {
                ""
            }
        )
    }
}
