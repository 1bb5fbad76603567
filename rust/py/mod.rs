//! The only PyO3 code: the `ferroq._core` module and its classes.

pub mod client;
pub mod errors;
pub mod job;
pub mod logging;
pub mod worker;

use pyo3::prelude::*;

/// Private extension module of ferroq; import from `ferroq` instead.
#[pymodule]
pub mod _core {
    #[pymodule_export]
    use super::client::Client;
    #[pymodule_export]
    use super::job::PyJob;
    #[pymodule_export]
    use super::worker::WorkerHandle;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::logging::install();
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("MAX_NAME_CHARS", crate::config::MAX_NAME_CHARS)?;
        m.add(
            "DEFAULT_MAX_PARAMS_SIZE",
            crate::config::DEFAULT_MAX_PARAMS_SIZE,
        )?;
        Ok(())
    }

    use super::*;
}
