//! `ferroq._core.CallerStatement`: a statement for the caller's own connection, as the Python
//! driver adapters (`ferroq/_caller_tx.py`) run it: rendered in the driver's placeholder style,
//! then its rows turned into what the caller asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::py::job::PyJob;
use crate::store::{CallerRows, CallerStatement, ParamStyle, SqlParam};

#[pyclass(frozen, name = "CallerStatement", module = "ferroq._core")]
pub struct PyCallerStatement {
    inner: CallerStatement,
    /// A completion's flag on its Job, set when the statement applied.
    applied: Option<Arc<AtomicBool>>,
}

impl PyCallerStatement {
    pub fn new(inner: CallerStatement) -> PyCallerStatement {
        PyCallerStatement {
            inner,
            applied: None,
        }
    }

    /// A job's completion; `applied` is set once the driver's rows say it applied.
    pub fn completion(inner: CallerStatement, applied: Arc<AtomicBool>) -> PyCallerStatement {
        PyCallerStatement {
            inner,
            applied: Some(applied),
        }
    }
}

#[pymethods]
impl PyCallerStatement {
    /// The backend the statement is written for: `"postgres"` or `"sqlite"`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The SQL and its parameters in a driver's style: `"numbered"` (`$1`, `?1`) or
    /// `"format"` (`%s`).
    fn render<'py>(&self, py: Python<'py>, style: &str) -> PyResult<(String, Bound<'py, PyTuple>)> {
        let (sql, params) = self.inner.render(ParamStyle::parse(style)?)?;
        let values = params
            .into_iter()
            .map(|param| match param {
                SqlParam::Text(text) => text.into_bound_py_any(py),
                SqlParam::Int(n) => n.into_bound_py_any(py),
                SqlParam::Bytes(bytes) => Ok(PyBytes::new(py, &bytes).into_any()),
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok((sql, PyTuple::new(py, values)?))
    }

    /// What the rows the driver fetched mean: the inserted jobs, in order, or whether the
    /// attempt was completed.
    fn result(&self, py: Python<'_>, rows: Vec<Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        match self.inner.rows {
            CallerRows::Completed => {
                let applied = rows.len() == 1;
                if let (true, Some(flag)) = (applied, &self.applied) {
                    flag.store(true, Ordering::Release);
                }
                Ok(pyo3::types::PyBool::new(py, applied)
                    .to_owned()
                    .into_any()
                    .unbind())
            }
            CallerRows::Jobs => {
                let texts = rows
                    .iter()
                    .map(|row| row.get_item(0)?.extract::<String>())
                    .collect::<PyResult<Vec<String>>>()?;
                let jobs: Vec<PyJob> = self
                    .inner
                    .jobs(&texts)?
                    .into_iter()
                    .map(PyJob::listed)
                    .collect();
                Ok(jobs.into_pyobject(py)?.into_any().unbind())
            }
        }
    }
}
