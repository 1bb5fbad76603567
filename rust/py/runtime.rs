//! One tokio runtime per process, for blocking calls and for the awaitables returned to
//! asyncio alike. Built on first use, and again in a forked child: the child leaks the
//! runtime it inherited, whose threads did not survive the fork (see `crate::fork`).

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{ContextExt, Runtime as AsyncRuntime};
use pyo3_async_runtimes::TaskLocals;
use tokio::runtime::{Builder, Runtime};
use tokio::task::{JoinError, JoinHandle};

/// A process's runtime and the fork generation it was built in.
struct Current {
    generation: u64,
    runtime: Runtime,
}

/// Only ever holds leaked boxes, so a reference to its runtime lives as long as the process.
static CURRENT: AtomicPtr<Current> = AtomicPtr::new(ptr::null_mut());

/// This process's runtime. Lock-free: a fork may happen while another thread is in here,
/// and a child must never wait for a lock held by a thread it does not have.
pub fn runtime() -> &'static Runtime {
    let generation = crate::fork::generation();
    loop {
        let seen = CURRENT.load(Ordering::Acquire);
        // SAFETY: non-null values of CURRENT are leaked boxes, never freed.
        if let Some(current) = unsafe { seen.as_ref() } {
            if current.generation == generation {
                return &current.runtime;
            }
        }
        let runtime = Builder::new_multi_thread()
            .enable_all()
            .thread_name("ferroq-tokio")
            .build()
            .expect("building ferroq's tokio runtime");
        let fresh = Box::into_raw(Box::new(Current {
            generation,
            runtime,
        }));
        // The one `seen` is replaced, not freed: in a child it is the parent's runtime.
        if CURRENT
            .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another thread installed one first; this one has run nothing yet.
            // SAFETY: `fresh` was never published.
            let lost = unsafe { Box::from_raw(fresh) };
            lost.runtime.shutdown_background();
        }
    }
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

/// `future` as an asyncio awaitable, run on [`runtime`].
pub fn future_into_py<F, T>(py: Python<'_>, future: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    pyo3_async_runtimes::generic::future_into_py::<ForkAware, F, T>(py, future)
}

tokio::task_local! {
    /// The asyncio loop (and context) an awaitable's future reports back to.
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

/// [`runtime`] as pyo3-async-runtimes drives it; its own tokio runtime is built once per
/// address space and would hang a forked child.
struct ForkAware;

impl AsyncRuntime for ForkAware {
    type JoinError = JoinError;
    type JoinHandle = JoinHandle<()>;

    fn spawn<F>(future: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        runtime().spawn(future)
    }

    fn spawn_blocking<F>(f: F) -> JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        runtime().spawn_blocking(f)
    }
}

impl ContextExt for ForkAware {
    fn scope<F, R>(locals: TaskLocals, future: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, future))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|cell| cell.get().cloned())
            .unwrap_or_default()
    }
}
