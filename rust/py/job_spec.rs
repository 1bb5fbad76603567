//! What Python hands the core, as typed values built once: a job to insert (`JobSpec`) and
//! how an attempt ended (`Outcome`).

use chrono::{DateTime, Utc};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::job::{JobSpec, Params};
use crate::worker::Outcome;

/// One job to insert. Types are Python's to coerce (`ferroq/_app.py`): params are JSON text
/// (`str`) or bytes (`bytes`); an option left as None takes the core's default, and values are
/// checked when the batch is inserted.
#[pyclass(frozen, name = "JobSpec", module = "ferroq._core")]
pub struct PyJobSpec {
    pub(crate) inner: JobSpec,
}

#[pymethods]
impl PyJobSpec {
    #[new]
    #[pyo3(signature = (queue, action, params, scheduled_at=None, delay=None, timeout=None, max_backoff=None, max_attempts=None, priority=None, unique_key=None, unique_period=None, unique_states=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        queue: String,
        action: String,
        params: &Bound<'_, PyAny>,
        scheduled_at: Option<DateTime<Utc>>,
        delay: Option<f64>,
        timeout: Option<f64>,
        max_backoff: Option<f64>,
        max_attempts: Option<i64>,
        priority: Option<i64>,
        unique_key: Option<String>,
        unique_period: Option<f64>,
        unique_states: Option<Vec<String>>,
    ) -> PyResult<PyJobSpec> {
        let params = match params.cast::<PyBytes>() {
            Ok(bytes) => Params::Bytes(bytes.as_bytes().to_vec()),
            Err(_) => Params::Json(params.extract()?),
        };
        Ok(PyJobSpec {
            inner: JobSpec {
                queue,
                action,
                params,
                scheduled_at,
                delay,
                timeout,
                max_backoff,
                max_attempts,
                priority,
                unique_key,
                unique_period,
                unique_states,
            },
        })
    }
}

/// How an attempt ended, as the executor reports it.
#[pyclass(frozen, name = "Outcome", module = "ferroq._core")]
pub struct PyOutcome {
    pub(crate) inner: Outcome,
}

#[pymethods]
impl PyOutcome {
    /// The performer returned; `result` is its value as JSON text (None for no value).
    #[staticmethod]
    #[pyo3(signature = (result=None))]
    fn completed(result: Option<String>) -> PyOutcome {
        PyOutcome {
            inner: Outcome::Completed { result },
        }
    }

    /// The attempt failed; `backoff` seconds replace the default delay before the next one.
    #[staticmethod]
    #[pyo3(signature = (error, backoff=None))]
    fn failed(error: String, backoff: Option<f64>) -> PyOutcome {
        PyOutcome {
            inner: Outcome::Failed { error, backoff },
        }
    }

    /// Run the job again after `seconds`; `count_attempt=False` gives the attempt back.
    #[staticmethod]
    #[pyo3(signature = (seconds, count_attempt=true))]
    fn snoozed(seconds: f64, count_attempt: bool) -> PyOutcome {
        PyOutcome {
            inner: Outcome::Snoozed {
                seconds,
                count_attempt,
            },
        }
    }

    /// End the job as discarded.
    #[staticmethod]
    fn discarded(reason: String) -> PyOutcome {
        PyOutcome {
            inner: Outcome::Discarded { reason },
        }
    }

    /// A stop interrupted the performer: back to the queue, the attempt given back.
    #[staticmethod]
    fn released() -> PyOutcome {
        PyOutcome {
            inner: Outcome::Released,
        }
    }

    /// Nothing to write: the attempt no longer holds its job (its performer completed it in
    /// its own committed transaction, or the lease was lost).
    #[staticmethod]
    fn settled() -> PyOutcome {
        PyOutcome {
            inner: Outcome::Settled,
        }
    }

    fn __repr__(&self) -> String {
        format!("<ferroq._core.Outcome {:?}>", self.inner)
    }
}
