//! One tokio runtime per process, shared with pyo3-async-runtimes so that awaitables returned
//! to asyncio and blocking calls run on the same threads and connection pools.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

pub fn runtime() -> &'static Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Run `future` to completion with the GIL released.
pub fn block_on<F: Future + Send>(py: Python<'_>, future: F) -> F::Output
where
    F::Output: Send,
{
    py.detach(|| runtime().block_on(future))
}

/// Like [`block_on`] for waits that may be long (drain, stop): checks for signals every 100 ms
/// so that Ctrl-C reaches Python. Returns Err(KeyboardInterrupt...) if a signal handler raised.
pub fn block_on_interruptible<F: Future + Send>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F::Output: Send,
{
    let mut future = Box::pin(future);
    loop {
        let step = py.detach(|| {
            runtime().block_on(async {
                tokio::time::timeout(Duration::from_millis(100), &mut future).await
            })
        });
        match step {
            Ok(output) => return Ok(output),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}
