//! `ferroq.Job`: a read-only view of a job row. Params and result are decoded from JSON on
//! first access only.

use chrono::{DateTime, Utc};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::job::Job;

/// A job as stored. Immutable: a new read gives a new object.
#[pyclass(frozen, name = "Job", module = "ferroq")]
pub struct PyJob {
    pub(crate) inner: Job,
    params: PyOnceLock<Py<PyAny>>,
    result: PyOnceLock<Py<PyAny>>,
    /// Statement that completes this attempt on a caller's connection (running jobs only).
    complete_sql: Option<&'static str>,
}

impl PyJob {
    pub fn new(inner: Job, complete_sql: Option<&'static str>) -> PyJob {
        PyJob {
            inner,
            params: PyOnceLock::new(),
            result: PyOnceLock::new(),
            complete_sql,
        }
    }
}

fn json_loads(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let loads = LOADS.get_or_try_init(py, || {
        py.import("json")?.getattr("loads").map(Bound::unbind)
    })?;
    Ok(loads.call1(py, (text,))?)
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
    #[getter]
    fn params(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.params
            .get_or_try_init(py, || json_loads(py, &self.inner.params))
            .map(|p| p.clone_ref(py))
    }
    #[getter]
    fn priority(&self) -> i32 {
        self.inner.priority
    }
    #[getter]
    fn sequence(&self) -> i64 {
        self.inner.sequence
    }
    #[getter]
    fn state(&self) -> &str {
        &self.inner.state
    }
    #[getter]
    fn attempts(&self) -> i32 {
        self.inner.attempts
    }
    #[getter]
    fn max_attempts(&self) -> i32 {
        self.inner.max_attempts
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
    /// (a DB-API connection to the same database). Fenced by the attempt's lease token: returns
    /// False, and changes nothing, if the attempt no longer holds the job. The caller commits.
    fn complete(&self, connection: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (Some(sql), Some(token)) = (self.complete_sql, self.inner.lease_token) else {
            return Err(crate::error::Error::JobState(format!(
                "job {} is not a running attempt: only a performer's own job can be completed",
                self.inner.id
            ))
            .into());
        };
        let cursor = connection.call_method0("cursor")?;
        cursor.call_method1("execute", (sql, (self.inner.id, token)))?;
        let rows: i64 = cursor.getattr("rowcount")?.extract()?;
        cursor.call_method0("close")?;
        Ok(rows == 1)
    }

    fn __repr__(&self) -> String {
        format!(
            "<ferroq.Job id={} queue={:?} action={:?} state={} attempts={}>",
            self.inner.id,
            self.inner.queue,
            self.inner.action,
            self.inner.state,
            self.inner.attempts
        )
    }
}
