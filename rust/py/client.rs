//! `ferroq._core.Client`: the binding of [`crate::client::Client`]. Converts arguments to owned
//! Rust values, releases the GIL for every database round trip, and wraps what comes back.
//! Defaults and checks live in the core; a `None` here means "the default".

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pyo3::prelude::*;

use crate::client::Client;
use crate::config::AppOptions;
use crate::job::{Job, JobDefaults, JobSpec};
use crate::py::caller_tx::PyCallerStatement;
use crate::py::job::PyJob;
use crate::py::job_spec::PyJobSpec;
use crate::py::runtime::{block_on, future_into_py, runtime};
use crate::py::worker::{PyDispatcher, WorkerHandle};
use crate::store::{BulkChange, JobFilter};

/// The storage side of one App.
#[pyclass(frozen, name = "Client", module = "ferroq._core")]
pub struct PyClient {
    inner: Arc<Client>,
}

fn specs(specs: Vec<PyRef<'_, PyJobSpec>>) -> Vec<JobSpec> {
    specs.iter().map(|spec| spec.inner.clone()).collect()
}

fn wrap(jobs: Vec<Job>) -> Vec<PyJob> {
    jobs.into_iter().map(PyJob::listed).collect()
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (
        database_url=None, *, scope=None, queues=None, only_queues=None, max_params_size=None,
        connect_timeout=None, statement_timeout=None, wakeup_interval=None, pool_size=None, concurrency=None,
        prefetch=None, reservation_timeout=None, poll_interval=None, lease_ttl=None,
        cleanup_interval=Some(crate::config::DEFAULT_CLEANUP_INTERVAL), job_retention=None,
        stop_timeout=None, worker_name=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        database_url: Option<String>,
        scope: Option<String>,
        queues: Option<HashMap<String, i64>>,
        only_queues: Option<Vec<String>>,
        max_params_size: Option<i64>,
        connect_timeout: Option<f64>,
        statement_timeout: Option<f64>,
        wakeup_interval: Option<f64>,
        pool_size: Option<i64>,
        concurrency: Option<i64>,
        prefetch: Option<i64>,
        reservation_timeout: Option<f64>,
        poll_interval: Option<f64>,
        lease_ttl: Option<f64>,
        cleanup_interval: Option<f64>,
        job_retention: Option<f64>,
        stop_timeout: Option<f64>,
        worker_name: Option<String>,
    ) -> PyResult<PyClient> {
        let client = Client::new(AppOptions {
            database_url,
            scope,
            queues: queues.unwrap_or_default(),
            only_queues,
            max_params_size,
            connect_timeout,
            statement_timeout,
            wakeup_interval,
            pool_size,
            concurrency,
            prefetch,
            reservation_timeout,
            poll_interval,
            lease_ttl,
            cleanup_interval,
            job_retention,
            stop_timeout,
            worker_name,
        })?;
        Ok(PyClient {
            inner: Arc::new(client),
        })
    }

    #[getter]
    fn database_url(&self) -> &str {
        &self.inner.config().database_url
    }
    #[getter]
    fn scope(&self) -> &str {
        &self.inner.config().scope
    }
    /// `"postgres"` or `"sqlite"`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend().name()
    }
    #[getter]
    fn queues(&self) -> HashMap<String, u32> {
        self.inner.config().queue_kinds.entries()
    }
    /// The queues this App's workers serve, as given (names and `prefix*` patterns), or None
    /// for every queue.
    #[getter]
    fn only_queues(&self) -> Option<Vec<String>> {
        self.inner.worker_config().only_queues.patterns()
    }
    #[setter]
    fn set_only_queues(&self, only_queues: Option<Vec<String>>) -> PyResult<()> {
        Ok(self.inner.set_only_queues(only_queues)?)
    }
    #[getter]
    fn concurrency(&self) -> u32 {
        self.inner.worker_config().concurrency
    }
    #[setter]
    fn set_concurrency(&self, concurrency: i64) -> PyResult<()> {
        Ok(self.inner.set_concurrency(concurrency)?)
    }
    /// Jobs a worker claims ahead beyond its running ones (as set, or derived from
    /// `concurrency`).
    #[getter]
    fn prefetch(&self) -> usize {
        self.inner.worker_config().prefetch()
    }
    #[getter]
    fn reservation_timeout(&self) -> f64 {
        self.inner.worker_config().reservation_timeout.as_secs_f64()
    }
    #[getter]
    fn poll_interval(&self) -> f64 {
        self.inner.worker_config().poll_interval.as_secs_f64()
    }
    #[getter]
    fn lease_ttl(&self) -> f64 {
        self.inner.worker_config().lease_ttl.as_secs_f64()
    }
    #[getter]
    fn cleanup_interval(&self) -> Option<f64> {
        self.inner
            .worker_config()
            .cleanup_interval
            .map(|d| d.as_secs_f64())
    }
    #[getter]
    fn job_retention(&self) -> f64 {
        self.inner.worker_config().job_retention.as_secs_f64()
    }
    #[getter]
    fn stop_timeout(&self) -> f64 {
        self.inner.worker_config().stop_timeout.as_secs_f64()
    }
    #[getter]
    fn worker_name(&self) -> String {
        self.inner.worker_config().worker_name
    }

    /// Options the jobs of `action` get when their creator leaves them out.
    #[pyo3(signature = (action, *, timeout=None, max_backoff=None, max_attempts=None, priority=None))]
    fn set_performer_defaults(
        &self,
        action: &str,
        timeout: Option<f64>,
        max_backoff: Option<f64>,
        max_attempts: Option<i64>,
        priority: Option<i64>,
    ) -> PyResult<()> {
        let defaults = JobDefaults {
            timeout,
            max_backoff,
            max_attempts,
            priority,
        };
        Ok(self.inner.set_performer_defaults(action, defaults)?)
    }

    /// Register a periodic entry whose ticks enqueue `spec`'s job; returns its name.
    #[pyo3(signature = (schedule, spec, *, timezone=None, name=None))]
    fn add_periodic(
        &self,
        schedule: &str,
        spec: PyRef<'_, PyJobSpec>,
        timezone: Option<&str>,
        name: Option<String>,
    ) -> PyResult<String> {
        Ok(self
            .inner
            .add_periodic(schedule, timezone, name, spec.inner.clone())?)
    }

    /// The periodic entries registered here, each as (name, schedule, timezone, queue,
    /// action, last_tick, next_tick), the ticks read on the database clock.
    #[allow(clippy::type_complexity)]
    fn periodic_status(
        &self,
        py: Python<'_>,
    ) -> PyResult<
        Vec<(
            String,
            String,
            Option<String>,
            String,
            String,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        )>,
    > {
        let statuses = block_on(py, self.inner.periodic_status())?;
        Ok(statuses
            .into_iter()
            .map(|status| {
                let entry = status.entry;
                (
                    entry.name,
                    entry.schedule.expression().to_owned(),
                    entry.schedule.timezone().map(str::to_owned),
                    entry.spec.queue,
                    entry.spec.action,
                    status.last_tick,
                    status.next_tick,
                )
            })
            .collect())
    }

    /// Raise DatabaseError where the database does not exist (a SQLite file not created yet)
    /// instead of creating it.
    fn check_database_exists(&self) -> PyResult<()> {
        Ok(self.inner.check_database_exists()?)
    }

    /// Close the connection pool. A later operation opens a new one.
    fn close(&self) {
        let _context = runtime().enter();
        self.inner.close();
    }

    /// Create or upgrade the tables; returns the versions applied now.
    fn migrate(&self, py: Python<'_>) -> PyResult<Vec<i32>> {
        Ok(block_on(py, self.inner.migrate())?)
    }

    /// Insert jobs in one round trip.
    fn insert_jobs(
        &self,
        py: Python<'_>,
        specs: Vec<PyRef<'_, PyJobSpec>>,
    ) -> PyResult<Vec<PyJob>> {
        let jobs = self.inner.new_jobs(self::specs(specs))?;
        let client = &self.inner;
        // On the calling thread where the store allows it (SQLite, once open): no hop into
        // the runtime and back.
        let inserted = py.detach(|| {
            client
                .insert_blocking(&jobs)
                .unwrap_or_else(|| runtime().block_on(client.insert_new(&jobs)))
        })?;
        Ok(wrap(inserted))
    }

    /// SQLite: `PRAGMA synchronous` as the App's own writing connections read it back
    /// (`"full"` or `"normal"`); None on PostgreSQL.
    fn sqlite_synchronous(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(block_on(py, self.inner.sqlite_synchronous())?)
    }

    /// Awaitable twin of `insert_jobs` for asyncio callers.
    fn ainsert_jobs<'py>(
        &self,
        py: Python<'py>,
        specs: Vec<PyRef<'py, PyJobSpec>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let specs = self::specs(specs);
        let client = self.inner.clone();
        future_into_py(py, async move { Ok(wrap(client.insert(specs).await?)) })
    }

    /// The insert of `specs` as a statement for the caller's own connection; see
    /// `ferroq/_caller_tx.py`, which runs it.
    fn caller_insert(
        &self,
        py: Python<'_>,
        specs: Vec<PyRef<'_, PyJobSpec>>,
    ) -> PyResult<PyCallerStatement> {
        let specs = self::specs(specs);
        Ok(PyCallerStatement::new(block_on(
            py,
            self.inner.caller_insert(specs),
        )?))
    }

    fn get_job(&self, py: Python<'_>, id: i64) -> PyResult<Option<PyJob>> {
        Ok(block_on(py, self.inner.get_job(id))?.map(PyJob::listed))
    }

    #[pyo3(signature = (queue=None, action=None, states=None, search=None, order_by="id", descending=false, limit=100, offset=0, older_than=None))]
    #[allow(clippy::too_many_arguments)]
    fn list_jobs(
        &self,
        py: Python<'_>,
        queue: Option<String>,
        action: Option<String>,
        states: Option<Vec<String>>,
        search: Option<String>,
        order_by: &str,
        descending: bool,
        limit: i64,
        offset: i64,
        older_than: Option<f64>,
    ) -> PyResult<Vec<PyJob>> {
        let filter = JobFilter::new(
            queue, action, states, search, order_by, descending, limit, offset,
        )?
        .older_than(older_than)?;
        Ok(wrap(block_on(py, self.inner.list_jobs(&filter))?))
    }

    /// Page `page_number` (from 1) of `page_size` jobs, and the number of all matches.
    #[pyo3(signature = (page_size=20, page_number=1, queue=None, action=None, states=None, search=None, order_by="id", descending=false, older_than=None))]
    #[allow(clippy::too_many_arguments)]
    fn paginate_jobs(
        &self,
        py: Python<'_>,
        page_size: i64,
        page_number: i64,
        queue: Option<String>,
        action: Option<String>,
        states: Option<Vec<String>>,
        search: Option<String>,
        order_by: &str,
        descending: bool,
        older_than: Option<f64>,
    ) -> PyResult<(Vec<PyJob>, i64)> {
        let page = JobFilter::new(queue, action, states, search, order_by, descending, 0, 0)?
            .older_than(older_than)?
            .page(page_size, page_number)?;
        let (jobs, total) = block_on(py, self.inner.paginate_jobs(&page))?;
        Ok((wrap(jobs), total))
    }

    fn retry_job(&self, py: Python<'_>, id: i64) -> PyResult<PyJob> {
        Ok(PyJob::listed(block_on(py, self.inner.retry_job(id))?))
    }

    fn cancel_job(&self, py: Python<'_>, id: i64) -> PyResult<PyJob> {
        Ok(PyJob::listed(block_on(py, self.inner.cancel_job(id))?))
    }

    /// Retry, cancel or delete (`change`) every job the filters match, in one statement;
    /// returns how many changed.
    #[pyo3(signature = (change, queue=None, action=None, states=None, search=None, older_than=None))]
    #[allow(clippy::too_many_arguments)]
    fn bulk_change(
        &self,
        py: Python<'_>,
        change: &str,
        queue: Option<String>,
        action: Option<String>,
        states: Option<Vec<String>>,
        search: Option<String>,
        older_than: Option<f64>,
    ) -> PyResult<u64> {
        let change = BulkChange::parse(change)?;
        let filter = JobFilter::new(queue, action, states, search, "id", false, 0, 0)?
            .older_than(older_than)?;
        Ok(block_on(py, self.inner.bulk_change(change, &filter))?)
    }

    /// `ferroq stats` as JSON text (see `rust/stats.rs`).
    #[pyo3(signature = (performers=None, blocked_limit=50))]
    fn stats_json(
        &self,
        py: Python<'_>,
        performers: Option<Vec<String>>,
        blocked_limit: i64,
    ) -> PyResult<String> {
        Ok(block_on(py, self.inner.stats(performers, blocked_limit))?.to_json())
    }

    /// Pause a queue or `prefix*` pattern across all workers and restarts.
    fn pause_queue(&self, py: Python<'_>, queue: &str) -> PyResult<()> {
        Ok(block_on(py, self.inner.pause_queue(queue))?)
    }

    /// Undo the pause made with this same name or pattern, and wake every worker.
    fn resume_queue(&self, py: Python<'_>, queue: &str) -> PyResult<()> {
        Ok(block_on(py, self.inner.resume_queue(queue))?)
    }

    /// The paused names and patterns, as (name or pattern, paused_at) in name order.
    fn paused_queues(&self, py: Python<'_>) -> PyResult<Vec<(String, DateTime<Utc>)>> {
        let paused = block_on(py, self.inner.paused_queues())?;
        Ok(paused
            .into_iter()
            .map(|entry| (entry.pattern.text(), entry.paused_at))
            .collect())
    }

    /// Wake every worker of this scope, in this process and others.
    fn notify(&self, py: Python<'_>) -> PyResult<()> {
        Ok(block_on(py, self.inner.notify())?)
    }

    /// Start a worker whose performers, those of `actions`, run in `executor` (see
    /// `ferroq/_executor.py`); it claims no job of another action.
    #[pyo3(signature = (executor, actions, *, drain=false))]
    fn start_worker(
        &self,
        py: Python<'_>,
        executor: Py<PyAny>,
        actions: Vec<String>,
        drain: bool,
    ) -> PyResult<WorkerHandle> {
        // The engine's records at the level the `ferroq` logger takes now: a DEBUG line per
        // job only when someone reads it.
        crate::py::logging::follow_python_level(py);
        let store = block_on(py, self.inner.store())?;
        // The wake-up socket pair: failing to make one (no file descriptor left) is an OSError.
        let dispatcher = Arc::new(PyDispatcher::new(executor, store)?);
        let worker = match block_on(
            py,
            self.inner.start_worker(dispatcher.clone(), actions, drain),
        ) {
            Ok(worker) => worker,
            Err(err) => {
                dispatcher.close();
                return Err(err.into());
            }
        };
        let stop_timeout = self.inner.worker_config().stop_timeout;
        Ok(WorkerHandle::new(worker, dispatcher, stop_timeout))
    }
}
