//! The only PyO3 code: the `ferroq._core` module. Each file owns its classes; this one
//! registers them.

pub mod caller_tx;
pub mod client;
pub mod errors;
pub mod job;
pub mod job_spec;
pub mod logging;
pub mod runtime;
pub mod worker;

use pyo3::prelude::*;

/// Private extension module of ferroq; import from `ferroq` instead.
#[pymodule]
pub mod _core {
    #[pymodule_export]
    use super::caller_tx::PyCallerStatement;
    #[pymodule_export]
    use super::client::PyClient;
    #[pymodule_export]
    use super::job::PyJob;
    #[pymodule_export]
    use super::job_spec::{PyJobSpec, PyOutcome};
    #[pymodule_export]
    use super::worker::WorkerHandle;

    /// The error of a job whose last attempt snoozed (the engine's wording).
    #[pyfunction]
    fn snoozed_out(max_attempts: i32) -> String {
        crate::job::snoozed_out(max_attempts)
    }

    /// A database URL fit to print: its password replaced by `***`.
    #[pyfunction]
    fn redacted_url(url: &str) -> String {
        crate::config::redacted_url(url)
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::logging::install();
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // Defaults that Python signatures show where None means something else.
        m.add(
            "DEFAULT_CLEANUP_INTERVAL",
            crate::config::DEFAULT_CLEANUP_INTERVAL,
        )?;
        m.add("UNCOMMITTED_COMPLETION", crate::job::UNCOMMITTED_COMPLETION)?;
        m.add(
            "CANCELLED_WHILE_RUNNING",
            crate::store::CANCELLED_WHILE_RUNNING,
        )?;
        // The state names, which `ferroq.JobState` mirrors (checked when ferroq is imported).
        let states: Vec<&str> = crate::job::JobState::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        m.add("JOB_STATES", pyo3::types::PyTuple::new(m.py(), states)?)?;
        Ok(())
    }

    use super::*;
}
