//! `ferroq._core.Client`: the store of one App (scope, concurrent queues, limits) with the
//! operations the Python `App` exposes. Inputs are converted to owned Rust values first; the
//! GIL is released for every database round trip.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use std::sync::Mutex;

use tokio::sync::{Notify, OnceCell};

use crate::config::{validate_name, validate_new_job, ClientConfig, WorkerConfig};
use crate::error::{Error, Result};
use crate::job::{Job, NewJob, Schedule};
use crate::py::job::PyJob;
use crate::py::worker::{PyDispatcher, WorkerHandle};
use crate::runtime::{block_on, runtime};
use crate::store::{self, Backend, JobFilter, OrderBy, Store, Transition};
use crate::worker::Worker;

/// One job to insert as Python hands it over, types already checked by `ferroq/_app.py`:
/// (queue, action, params JSON, scheduled_at, delay seconds, timeout, max_backoff,
/// max_attempts, priority).
type JobSpec = (
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<f64>,
    f64,
    f64,
    i64,
    i64,
);

/// The storage side of one App.
#[pyclass(frozen, module = "ferroq._core")]
pub struct Client {
    config: ClientConfig,
    /// Built on first use so that an App can be created at import time; dropped by `close`.
    store: Mutex<Option<Arc<dyn Store>>>,
    /// Set once the schema is known to exist (stores that create it on first use).
    schema_ready: OnceCell<()>,
    /// Wakes this process's worker when this process enqueues, without a database round trip.
    wake: Arc<Notify>,
}

impl Client {
    /// The store, whose pool connects lazily on first use; on SQLite the schema is created
    /// then too.
    async fn store(&self) -> Result<Arc<dyn Store>> {
        let store = {
            let mut slot = self.store.lock().unwrap();
            match slot.as_ref() {
                Some(store) => store.clone(),
                None => slot.insert(store::open(&self.config)?).clone(),
            }
        };
        if store.creates_schema_on_first_use() {
            self.schema_ready
                .get_or_try_init(|| async { store.migrate().await.map(|_| ()) })
                .await?;
        }
        Ok(store)
    }

    fn new_jobs(&self, specs: Vec<JobSpec>) -> Result<Vec<NewJob>> {
        specs
            .into_iter()
            .map(
                |(
                    queue,
                    action,
                    params,
                    scheduled_at,
                    delay,
                    timeout,
                    max_backoff,
                    max_attempts,
                    priority,
                )| {
                    let schedule = match (scheduled_at, delay) {
                        (Some(_), Some(_)) => {
                            return Err(Error::InvalidSchedule(
                                "give either scheduled_at or delay, not both".into(),
                            ))
                        }
                        (Some(at), None) => Schedule::At(at),
                        (None, Some(seconds)) => Schedule::In(seconds),
                        (None, None) => Schedule::Now,
                    };
                    let max_attempts = i32::try_from(max_attempts).map_err(|_| {
                        Error::InvalidOption(format!("max_attempts {max_attempts} is out of range"))
                    })?;
                    let priority = i32::try_from(priority).map_err(|_| {
                        Error::InvalidOption(format!("priority {priority} is out of range"))
                    })?;
                    let job = NewJob {
                        blocking: self.config.is_blocking(&queue),
                        queue,
                        action,
                        params,
                        schedule,
                        timeout,
                        max_backoff,
                        max_attempts,
                        priority,
                    };
                    validate_new_job(&job, self.config.max_params_size)?;
                    Ok(job)
                },
            )
            .collect()
    }

    /// Retry or cancel. Either can unblock a blocking queue (a cancelled retrying head) or
    /// make a job runnable now, so workers here and in other processes are told.
    fn transition<F, Fut>(&self, py: Python<'_>, id: i64, change: F) -> PyResult<PyJob>
    where
        F: FnOnce(Arc<dyn Store>, String) -> Fut + Send,
        Fut: std::future::Future<Output = Result<Transition>> + Send,
    {
        let outcome = block_on(py, async {
            let store = self.store().await?;
            let outcome = change(store.clone(), self.config.scope.clone()).await?;
            if matches!(outcome, Transition::Done(_)) {
                self.wake.notify_one();
                store.notify(&self.config.scope).await?;
            }
            Ok::<_, Error>(outcome)
        })?;
        match outcome {
            Transition::Done(job) => Ok(PyJob::new(job, None)),
            Transition::NotFound => Err(Error::JobNotFound(id).into()),
            Transition::WrongState(message) => Err(Error::JobState(message).into()),
        }
    }

    fn wrap(jobs: Vec<Job>) -> Vec<PyJob> {
        jobs.into_iter().map(|job| PyJob::new(job, None)).collect()
    }

    fn filter(
        queue: Option<String>,
        action: Option<String>,
        states: Option<Vec<String>>,
        search: Option<String>,
        order_by: &str,
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> Result<JobFilter> {
        if let Some(states) = &states {
            for state in states {
                if crate::job::JobState::parse(state).is_none() {
                    return Err(Error::InvalidOption(format!(
                        "unknown job state {state:?}: use scheduled, available, running, retryable, completed, failed or discarded"
                    )));
                }
            }
        }
        if limit < 0 || offset < 0 {
            return Err(Error::InvalidOption(
                "limit and offset must not be negative".into(),
            ));
        }
        Ok(JobFilter {
            queue,
            action,
            states,
            search,
            order_by: OrderBy::parse(order_by)?,
            descending,
            limit,
            offset,
        })
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (database_url, scope, concurrent_queues, max_params_size, connect_timeout, pool_size, wakeup_interval))]
    fn new(
        database_url: String,
        scope: String,
        concurrent_queues: HashMap<String, u32>,
        max_params_size: usize,
        connect_timeout: f64,
        pool_size: usize,
        wakeup_interval: f64,
    ) -> PyResult<Client> {
        for (name, seconds) in [
            ("connect_timeout", connect_timeout),
            ("wakeup_interval", wakeup_interval),
        ] {
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err(Error::Configuration(format!(
                    "{name} must be a positive number of seconds"
                ))
                .into());
            }
        }
        let config = ClientConfig {
            database_url,
            scope,
            concurrent_queues,
            max_params_size,
            connect_timeout: Duration::from_secs_f64(connect_timeout),
            pool_size: pool_size.max(2),
            wakeup_interval: Duration::from_secs_f64(wakeup_interval),
        };
        store::check_url(&config.database_url)?;
        config.validate()?;
        Ok(Client {
            config,
            store: Mutex::new(None),
            schema_ready: OnceCell::new(),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Close the connection pool. A later operation opens a new one.
    fn close(&self) {
        if let Some(store) = self.store.lock().unwrap().take() {
            let _context = runtime().enter();
            store.close();
        }
    }

    #[getter]
    fn scope(&self) -> &str {
        &self.config.scope
    }

    /// Create or upgrade the tables; returns the versions applied now.
    fn migrate(&self, py: Python<'_>) -> PyResult<Vec<i32>> {
        Ok(block_on(py, async { self.store().await?.migrate().await })?)
    }

    /// Insert jobs in one round trip.
    fn insert_jobs(&self, py: Python<'_>, specs: Vec<JobSpec>) -> PyResult<Vec<PyJob>> {
        let jobs = self.new_jobs(specs)?;
        let inserted = block_on(py, async {
            self.store()
                .await?
                .insert_jobs(&self.config.scope, &jobs)
                .await
        })?;
        self.wake.notify_one();
        Ok(Self::wrap(inserted))
    }

    /// Awaitable twin of `insert_jobs` for asyncio callers.
    fn ainsert_jobs<'py>(
        slf: Bound<'py, Self>,
        specs: Vec<JobSpec>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let jobs = slf.get().new_jobs(specs)?;
        let client: Py<Client> = slf.unbind();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let this = client.get();
            let store = this.store().await?;
            let inserted = store.insert_jobs(&this.config.scope, &jobs).await?;
            this.wake.notify_one();
            Ok(Self::wrap(inserted))
        })
    }

    /// The insert statement and the parameter tuples to run it with on a caller's own
    /// connection (psycopg or sqlite3), so the jobs commit or roll back with the caller's
    /// transaction. PostgreSQL takes the whole batch as arrays in one execution; SQLite one
    /// execution per job.
    fn external_insert<'py>(
        &self,
        py: Python<'py>,
        specs: Vec<JobSpec>,
    ) -> PyResult<(String, Bound<'py, PyList>)> {
        let jobs = self.new_jobs(specs)?;
        let store = block_on(py, self.store())?;
        let at = |j: &NewJob| {
            if let Schedule::At(t) = j.schedule {
                Some(t)
            } else {
                None
            }
        };
        let delay = |j: &NewJob| {
            if let Schedule::In(d) = j.schedule {
                Some(d)
            } else {
                None
            }
        };
        let executions = PyList::empty(py);
        match store.backend() {
            Backend::Postgres => {
                let arrays = (
                    &self.config.scope,
                    jobs.iter().map(|j| j.queue.as_str()).collect::<Vec<_>>(),
                    jobs.iter().map(|j| j.action.as_str()).collect::<Vec<_>>(),
                    jobs.iter().map(|j| j.params.as_str()).collect::<Vec<_>>(),
                    jobs.iter().map(|j| j.blocking).collect::<Vec<_>>(),
                    jobs.iter().map(|j| j.priority).collect::<Vec<_>>(),
                    jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>(),
                    jobs.iter().map(|j| j.timeout).collect::<Vec<_>>(),
                    jobs.iter().map(|j| j.max_backoff).collect::<Vec<_>>(),
                    jobs.iter().map(at).collect::<Vec<_>>(),
                    jobs.iter().map(delay).collect::<Vec<_>>(),
                );
                executions.append(arrays)?;
            }
            Backend::Sqlite => {
                for j in &jobs {
                    let row = (
                        &self.config.scope,
                        &j.queue,
                        &j.action,
                        &j.params,
                        j.blocking,
                        j.priority,
                        j.max_attempts,
                        j.timeout,
                        j.max_backoff,
                        at(j).map(|t| t.timestamp_micros()),
                        delay(j),
                    );
                    executions.append(row)?;
                }
            }
        }
        Ok((store.external_insert_sql().to_string(), executions))
    }

    /// Build a Job from a row returned by the external insert (columns in `JOB_COLUMNS`
    /// order, datetimes already converted to UTC).
    #[staticmethod]
    fn job_from_row(row: &Bound<'_, PyTuple>) -> PyResult<PyJob> {
        let item = |i: usize| row.get_item(i);
        // psycopg gives datetimes; sqlite3 gives the stored integer microseconds.
        let time = |i: usize| -> PyResult<Option<DateTime<Utc>>> {
            let value = item(i)?;
            if value.is_none() {
                return Ok(None);
            }
            if let Ok(micros) = value.extract::<i64>() {
                return Ok(DateTime::from_timestamp_micros(micros));
            }
            Ok(Some(value.extract()?))
        };
        let required = |i: usize| -> PyResult<DateTime<Utc>> {
            time(i)?.ok_or_else(|| {
                Error::Database(format!("column {i} of the job row is empty")).into()
            })
        };
        Ok(PyJob::new(
            Job {
                id: item(0)?.extract()?,
                scope: item(1)?.extract()?,
                queue: item(2)?.extract()?,
                action: item(3)?.extract()?,
                params: item(4)?.extract()?,
                priority: item(5)?.extract()?,
                sequence: item(6)?.extract()?,
                state: item(7)?.extract()?,
                attempts: item(8)?.extract()?,
                max_attempts: item(9)?.extract()?,
                timeout: item(10)?.extract()?,
                max_backoff: item(11)?.extract()?,
                scheduled_at: required(12)?,
                attempted_at: time(13)?,
                attempted_by: item(14)?.extract()?,
                next_attempt_at: time(15)?,
                done_at: time(16)?,
                inserted_at: required(17)?,
                error: item(18)?.extract()?,
                result: item(19)?.extract()?,
                lease_token: item(20)?.extract()?,
            },
            None,
        ))
    }

    fn get_job(&self, py: Python<'_>, id: i64) -> PyResult<Option<PyJob>> {
        let job = block_on(py, async {
            self.store().await?.get_job(&self.config.scope, id).await
        })?;
        Ok(job.map(|j| PyJob::new(j, None)))
    }

    #[pyo3(signature = (queue, action, states, search, order_by, descending, limit, offset))]
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
    ) -> PyResult<Vec<PyJob>> {
        let filter = Self::filter(
            queue, action, states, search, order_by, descending, limit, offset,
        )?;
        let jobs = block_on(py, async {
            self.store()
                .await?
                .list_jobs(&self.config.scope, &filter)
                .await
        })?;
        Ok(Self::wrap(jobs))
    }

    #[pyo3(signature = (queue, action, states, search))]
    fn count_jobs(
        &self,
        py: Python<'_>,
        queue: Option<String>,
        action: Option<String>,
        states: Option<Vec<String>>,
        search: Option<String>,
    ) -> PyResult<i64> {
        let filter = Self::filter(queue, action, states, search, "id", false, 0, 0)?;
        Ok(block_on(py, async {
            self.store()
                .await?
                .count_jobs(&self.config.scope, &filter)
                .await
        })?)
    }

    fn retry_job(&self, py: Python<'_>, id: i64) -> PyResult<PyJob> {
        self.transition(py, id, |store, scope| async move {
            store.retry_job(&scope, id).await
        })
    }

    fn cancel_job(&self, py: Python<'_>, id: i64) -> PyResult<PyJob> {
        self.transition(py, id, |store, scope| async move {
            store.cancel_job(&scope, id).await
        })
    }

    /// Wake every worker of this scope, in this process and others.
    fn notify(&self, py: Python<'_>) -> PyResult<()> {
        self.wake.notify_one();
        Ok(block_on(py, async {
            self.store().await?.notify(&self.config.scope).await
        })?)
    }

    /// Start a worker whose performers run in `executor` (see `ferroq/_executor.py`).
    #[pyo3(signature = (executor, concurrency, poll_interval, lease_ttl, cleanup_interval, job_retention, worker_name, drain))]
    #[allow(clippy::too_many_arguments)]
    fn start_worker(
        &self,
        py: Python<'_>,
        executor: Py<PyAny>,
        concurrency: u32,
        poll_interval: f64,
        lease_ttl: f64,
        cleanup_interval: Option<f64>,
        job_retention: f64,
        worker_name: String,
        drain: bool,
    ) -> PyResult<WorkerHandle> {
        let seconds = |name: &str, value: f64| -> Result<Duration> {
            Duration::try_from_secs_f64(value).map_err(|_| {
                Error::Configuration(format!(
                    "{name} must be a non-negative number of seconds, got {value}"
                ))
            })
        };
        let config = WorkerConfig {
            concurrency,
            poll_interval: seconds("poll_interval", poll_interval)?,
            lease_ttl: seconds("lease_ttl", lease_ttl)?,
            cleanup_interval: cleanup_interval
                .map(|s| seconds("cleanup_interval", s))
                .transpose()?,
            job_retention: seconds("job_retention", job_retention)?,
            worker_name,
            drain,
        };
        config.validate()?;
        validate_name("worker name", &config.worker_name)?;
        let store = block_on(py, self.store())?;
        let complete_sql = store.external_complete_sql();
        let dispatcher = Arc::new(PyDispatcher::spawn(executor, complete_sql));
        let mut concurrent: Vec<(String, u32)> = self
            .config
            .concurrent_queues
            .iter()
            .map(|(q, n)| (q.clone(), *n))
            .collect();
        concurrent.sort();
        let wake = self.wake.clone();
        let scope = self.config.scope.clone();
        let worker = {
            let _guard = runtime().enter();
            Worker::start(store, scope, concurrent, config, dispatcher.clone(), wake)
        };
        Ok(WorkerHandle::new(worker, dispatcher))
    }

    /// Current default backoff in seconds after `attempts` failures (exposed for tests/docs).
    #[staticmethod]
    fn default_backoff(attempts: i32, max_backoff: f64) -> f64 {
        crate::job::default_backoff(attempts, max_backoff)
    }
}
