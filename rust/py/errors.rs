//! The one mapping from core errors to Python exceptions. The exception classes are defined
//! in `ferroq/errors.py` (so they can also subclass ValueError and LookupError) and looked up
//! here once.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::Error;

fn exception_class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = MODULE.get_or_try_init(py, || py.import("ferroq.errors").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

fn class_name(err: &Error) -> &'static str {
    match err {
        Error::Configuration(_) => "ConfigurationError",
        Error::UnsupportedDatabase(_) => "UnsupportedDatabaseError",
        Error::InvalidName(_) => "InvalidNameError",
        Error::InvalidParams(_) => "InvalidParamsError",
        Error::ParamsTooLarge { .. } => "ParamsTooLargeError",
        Error::InvalidSchedule(_) => "InvalidScheduleError",
        Error::InvalidOption(_) => "InvalidOptionError",
        Error::JobNotFound { .. } => "JobNotFoundError",
        Error::JobState(_) => "JobStateError",
        Error::Database(_) => "DatabaseError",
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        Python::attach(|py| match exception_class(py, class_name(&err)) {
            Ok(class) => PyErr::from_type(class, (message,)),
            Err(lookup) => PyRuntimeError::new_err(format!(
                "{message} (and ferroq.errors failed to load: {lookup})"
            )),
        })
    }
}
