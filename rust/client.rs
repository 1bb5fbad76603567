//! The App's core: one database and scope, the rules of enqueueing, listing and changing jobs,
//! and worker start. The only owner of these rules; the Python binding converts types and
//! calls in. Connections are made on first use, so an App can be built at import time, and
//! again in a forked child, which never touches the parent's (see `crate::fork`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OnceCell};

use crate::config::{redacted_url, AppOptions, ClientConfig, WorkerConfig};
use crate::error::{Error, Result};
use crate::fork::ProcessLocal;
use crate::job::JobState;
use crate::job::{Job, JobDefaults, JobSpec, NewJob};
use crate::periodic::{CronSchedule, PeriodicEntry, PeriodicJob, PeriodicStatus};
use crate::queues::{QueuePattern, QueueRouting, QueueSelector};
use crate::stats::Stats;
use crate::store::{
    self, is_unique_key_conflict, Backend, BulkChange, CallerStatement, JobFilter, Lease,
    PausedQueue, Store,
};
use crate::worker::{Dispatch, Wakes, Worker};

/// What one process holds of a client: nothing in it may cross a fork.
#[derive(Default)]
struct Local {
    /// Built on first use; dropped by `close`, and built again by a later operation.
    store: Option<Arc<dyn Store>>,
    /// Set once the schema is known to exist (stores that create it on first use).
    schema_ready: Arc<OnceCell<()>>,
    /// Wakes this process's worker when this process enqueues, without a database round trip.
    wake: Arc<Notify>,
    /// Tells this process's worker that a running job's cancel was requested here.
    cancels: Arc<Notify>,
}

/// The storage side of one App.
pub struct Client {
    config: ClientConfig,
    /// Settings of the workers this client starts.
    worker_config: Mutex<WorkerConfig>,
    backend: Backend,
    /// Connections and wake-ups of this process; a forked child leaks its parent's.
    local: Mutex<ProcessLocal<Local>>,
    /// Options the performers registered here declare for their actions' jobs.
    performer_defaults: Mutex<HashMap<String, JobDefaults>>,
    /// Periodic entries registered here, in registration order; every worker schedules them.
    periodic: Mutex<Vec<PeriodicEntry>>,
}

impl Client {
    /// Check every option and fill in defaults; nothing connects yet.
    pub fn new(options: AppOptions) -> Result<Client> {
        let (config, worker_config) = options.into_configs()?;
        let backend = Backend::from_url(&config.database_url)?;
        if backend == Backend::Sqlite {
            // The URL's parameters are checked now, before anything opens the file.
            store::sqlite::parse_url(&config.database_url)?;
        }
        Ok(Client {
            config,
            worker_config: Mutex::new(worker_config),
            backend,
            local: Mutex::new(ProcessLocal::default()),
            performer_defaults: Mutex::new(HashMap::new()),
            periodic: Mutex::new(Vec::new()),
        })
    }

    /// Declare the options jobs of `action` get when their creator leaves them out (the
    /// performer's registration); checked now, like a job's own options.
    pub fn set_performer_defaults(&self, action: &str, defaults: JobDefaults) -> Result<()> {
        crate::job::validate_name("action", action)?;
        defaults.validate()?;
        self.performer_defaults
            .lock()
            .unwrap()
            .insert(action.to_owned(), defaults);
        Ok(())
    }

    /// Register a periodic entry: each tick of `schedule` (a cron expression, in `timezone`,
    /// default UTC) enqueues the job of `spec`, scheduled at the tick. `name` (default: the
    /// action and schedule) is the entry's identity in the database and unique per App.
    /// Everything is checked now: the expression, the zone, and the job's options as
    /// `create_job` checks them. Returns the name.
    pub fn add_periodic(
        &self,
        schedule: &str,
        timezone: Option<&str>,
        name: Option<String>,
        spec: JobSpec,
    ) -> Result<String> {
        if spec.scheduled_at.is_some() || spec.delay.is_some() {
            return Err(Error::InvalidSchedule(
                "a periodic job is scheduled at its ticks: give no scheduled_at or delay".into(),
            ));
        }
        let schedule = CronSchedule::parse(schedule, timezone)?;
        self.new_jobs(vec![spec.clone()])?;
        let name = name.unwrap_or_else(|| PeriodicEntry::default_name(&spec.action, &schedule));
        crate::job::validate_name("periodic entry", &name)?;
        let mut entries = self.periodic.lock().unwrap();
        if entries.iter().any(|entry| entry.name == name) {
            return Err(Error::Configuration(format!(
                "a periodic entry named {name:?} is already registered on this App: give one of \
                 them another name="
            )));
        }
        entries.push(PeriodicEntry {
            name: name.clone(),
            schedule,
            spec,
        });
        Ok(name)
    }

    /// The periodic entries registered here, in registration order.
    pub fn periodic_entries(&self) -> Vec<PeriodicEntry> {
        self.periodic.lock().unwrap().clone()
    }

    /// Each periodic entry registered here with its last tick enqueued (or starting point;
    /// None before any worker scheduled it) and its next tick, on the database clock.
    pub async fn periodic_status(&self) -> Result<Vec<PeriodicStatus>> {
        let entries = self.periodic_entries();
        let ticks = self
            .store()
            .await?
            .periodic_ticks(&self.config.scope)
            .await?;
        Ok(entries
            .into_iter()
            .map(|entry| PeriodicStatus {
                last_tick: ticks.last_ticks.get(&entry.name).copied(),
                next_tick: entry.schedule.next_after(ticks.now),
                entry,
            })
            .collect())
    }

    /// The periodic entries as a worker starting now schedules them: each job filled in with
    /// its performer's defaults as registered by now.
    fn periodic_jobs(&self) -> Result<Vec<PeriodicJob>> {
        self.periodic_entries()
            .into_iter()
            .map(|entry| {
                let job = self
                    .new_jobs(vec![entry.spec])?
                    .pop()
                    .expect("one spec makes one job");
                Ok(PeriodicJob {
                    name: entry.name,
                    schedule: entry.schedule,
                    job,
                })
            })
            .collect()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The settings workers of this client start with.
    pub fn worker_config(&self) -> WorkerConfig {
        self.worker_config.lock().unwrap().clone()
    }

    /// Change how many jobs a worker started from now on runs at once.
    pub fn set_concurrency(&self, concurrency: i64) -> Result<()> {
        self.worker_config
            .lock()
            .unwrap()
            .set_concurrency(concurrency)
    }

    /// Change which queues a worker started from now on serves (the CLI's `--queues`).
    pub fn set_only_queues(&self, only_queues: Option<Vec<String>>) -> Result<()> {
        let selector = QueueSelector::new(only_queues)?;
        self.worker_config.lock().unwrap().only_queues = selector;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This process's part of the client, built afresh after a fork.
    fn local<T>(&self, f: impl FnOnce(&mut Local) -> T) -> T {
        f(self.local.lock().unwrap().get_mut(Local::default))
    }

    /// Wakes this process's worker.
    fn wake(&self) -> Arc<Notify> {
        self.local(|local| local.wake.clone())
    }

    /// The store, whose pool connects lazily on first use; on stores that need no setup step
    /// the schema is created then too.
    pub async fn store(&self) -> Result<Arc<dyn Store>> {
        let (store, schema_ready) = self.local(|local| -> Result<_> {
            let store = match local.store.as_ref() {
                Some(store) => store.clone(),
                None => local.store.insert(store::open(&self.config)?).clone(),
            };
            Ok((store, local.schema_ready.clone()))
        })?;
        if store.creates_schema_on_first_use() {
            schema_ready
                .get_or_try_init(|| async { store.migrate().await.map(|_| ()) })
                .await?;
        }
        Ok(store)
    }

    /// Close the connection pool; a later operation opens a new one. Call inside the runtime.
    /// In a forked child this closes nothing of the parent's.
    pub fn close(&self) {
        if let Some(store) = self.local(|local| local.store.take()) {
            store.close();
        }
    }

    /// For commands that only look at or change existing jobs (`ferroq jobs`, `retry`, ...):
    /// fail where the database does not exist yet, rather than create an empty SQLite file
    /// (which SQLite does on first use) and report that it holds no jobs.
    pub fn check_database_exists(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            let path = store::sqlite::path_from_url(&self.config.database_url)?;
            if !path.exists() {
                // Absolute: "no database at ferroq.db" does not say which directory was meant.
                let shown = std::path::absolute(&path).unwrap_or(path);
                return Err(Error::Database(format!(
                    "no database at {} (run `ferroq migrate` or start a worker to create it)",
                    shown.display()
                )));
            }
        }
        Ok(())
    }

    /// Create or upgrade the tables; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        self.store().await?.migrate().await
    }

    /// Check specs and decide each job's queue kind; the whole batch or nothing. Options a
    /// spec leaves out come from its performer's defaults, then the global ones.
    pub fn new_jobs(&self, specs: Vec<JobSpec>) -> Result<Vec<NewJob>> {
        let performer_defaults = self.performer_defaults.lock().unwrap();
        specs
            .into_iter()
            .map(|spec| {
                let blocking = self.config.is_blocking(&spec.queue);
                let spec = match performer_defaults.get(&spec.action) {
                    Some(defaults) => spec.or_defaults(defaults),
                    None => spec,
                };
                spec.into_new_job(blocking, self.config.max_params_size)
            })
            .collect()
    }

    /// Insert jobs in one round trip; returns them in input order.
    pub async fn insert(&self, specs: Vec<JobSpec>) -> Result<Vec<Job>> {
        let jobs = self.new_jobs(specs)?;
        self.insert_new(&jobs).await
    }

    /// Insert checked jobs (see [`Client::new_jobs`]) in one round trip.
    pub async fn insert_new(&self, jobs: &[NewJob]) -> Result<Vec<Job>> {
        let inserted = self
            .store()
            .await?
            .insert_jobs(&self.config.scope, jobs)
            .await?;
        self.wake().notify_one();
        Ok(inserted)
    }

    /// [`Client::insert_new`] on the calling thread, without the async runtime, where the
    /// store allows it and is open with its schema ready (see `Store::insert_jobs_blocking`);
    /// None otherwise: then call `insert_new`. Blocks: call it off the runtime's threads.
    pub fn insert_blocking(&self, jobs: &[NewJob]) -> Option<Result<Vec<Job>>> {
        let (store, wake) = self.local(|local| {
            let ready = local.schema_ready.initialized() || !self.creates_schema();
            let store = local.store.clone().filter(|_| ready);
            (store, local.wake.clone())
        });
        let inserted = store?.insert_jobs_blocking(&self.config.scope, jobs)?;
        if inserted.is_ok() {
            wake.notify_one();
        }
        Some(inserted)
    }

    /// Whether this client's store creates its schema on first use (SQLite).
    fn creates_schema(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    /// SQLite: `PRAGMA synchronous` as the App's own writing connections read it back
    /// (`"full"` or `"normal"`); None on PostgreSQL.
    pub async fn sqlite_synchronous(&self) -> Result<Option<String>> {
        self.store().await?.sqlite_synchronous().await
    }

    /// The insert of `specs` as a statement for the caller's connection (transactional
    /// enqueue). Checked like `insert`; the schema is made ready first where the store
    /// creates it on first use.
    pub async fn caller_insert(&self, specs: Vec<JobSpec>) -> Result<CallerStatement> {
        let jobs = self.new_jobs(specs)?;
        let store = self.store().await?;
        Ok(store.caller_insert(&self.config.scope, &jobs))
    }

    pub async fn get_job(&self, id: i64) -> Result<Option<Job>> {
        self.store().await?.get_job(&self.config.scope, id).await
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.store()
            .await?
            .list_jobs(&self.config.scope, filter)
            .await
    }

    pub async fn count_jobs(&self, filter: &JobFilter) -> Result<i64> {
        self.store()
            .await?
            .count_jobs(&self.config.scope, filter)
            .await
    }

    /// One page of a listing (see [`JobFilter::page`]) and the number of all matches.
    pub async fn paginate_jobs(&self, page: &JobFilter) -> Result<(Vec<Job>, i64)> {
        let jobs = self.list_jobs(page).await?;
        let total = self.count_jobs(page).await?;
        Ok((jobs, total))
    }

    /// Make a waiting, failed or discarded job run again now, with at least one attempt left.
    pub async fn retry_job(&self, id: i64) -> Result<Job> {
        let store = self.store().await?;
        let changed = match store.retry_job(&self.config.scope, id).await {
            // The database refuses a second unfinished job with the key (migration 0007): a
            // newer job took it while this one was finished.
            Err(Error::Database(message)) if is_unique_key_conflict(&message) => {
                return Err(Error::JobState(format!(
                    "job {id} cannot be retried: another job with its unique key is in that key's unique states now"
                )))
            }
            changed => changed?,
        };
        self.transitioned(&store, id, "retry", changed).await
    }

    /// Discard a job that is neither running nor finished. A running job is cancelled by its
    /// worker, which interrupts the performer and ends the job `discarded` with the error
    /// [`store::CANCELLED_WHILE_RUNNING`]: it is returned still running, its
    /// `cancel_requested_at` set.
    pub async fn cancel_job(&self, id: i64) -> Result<Job> {
        let store = self.store().await?;
        let changed = store.cancel_job(&self.config.scope, id).await?;
        if let Some(job) = changed.as_ref().filter(|j| j.state == JobState::Running) {
            // The store told other processes' workers; this one's is told here.
            self.local(|local| local.cancels.notify_one());
            return Ok(job.clone());
        }
        self.transitioned(&store, id, "cancel", changed).await
    }

    /// Apply `change` to every job of the scope `filter` matches, in one statement; returns
    /// how many changed. A state in the filter the change cannot apply to is refused before
    /// anything changes (see [`BulkChange::states`]).
    pub async fn bulk_change(&self, change: BulkChange, filter: &JobFilter) -> Result<u64> {
        change.states(filter.states.as_deref())?;
        let store = self.store().await?;
        let changed = match store.bulk_change(&self.config.scope, change, filter).await {
            // As in retry_job: a finished job whose unique key a newer job holds now cannot
            // run again; the statement changed nothing.
            Err(Error::Database(message))
                if change == BulkChange::Retry && is_unique_key_conflict(&message) =>
            {
                return Err(Error::JobState(
                    "cannot retry these jobs: one of them has a unique key that another job \
                     holds now (in that key's unique states); nothing was retried, narrow the \
                     filter or retry jobs by id"
                        .into(),
                ))
            }
            changed => changed?,
        };
        // Retried jobs are runnable now, and cancelled heads may have unblocked their queues.
        if changed > 0 && change != BulkChange::Delete {
            self.wake().notify_one();
            store.notify(&self.config.scope).await?;
        }
        if changed > 0 && change == BulkChange::Cancel {
            // Running jobs among them: the store told other processes' workers.
            self.local(|local| local.cancels.notify_one());
        }
        Ok(changed)
    }

    /// What each queue holds and the blocking queues held by their head, at most
    /// `blocked_limit` of those; `performers`: the actions the caller has performers for
    /// (None: not known, and no queue is reported held for want of one).
    pub async fn stats(
        &self,
        performers: Option<Vec<String>>,
        blocked_limit: i64,
    ) -> Result<Stats> {
        if blocked_limit < 0 {
            return Err(Error::InvalidOption(format!(
                "the limit of blocked queues must not be negative, got {blocked_limit}"
            )));
        }
        let store = self.store().await?;
        let scope = &self.config.scope;
        let counts = store.queue_counts(scope).await?;
        let (held, total) = store
            .blocked_heads(scope, performers.as_deref(), blocked_limit)
            .await?;
        let paused = store.paused_queues(scope).await?;
        Ok(Stats::new(scope, counts, held, total, paused))
    }

    /// Pause a queue, or every queue a `prefix*` pattern matches (the rule of `only_queues`),
    /// across all workers and restarts: their running jobs finish, nothing new starts until
    /// `resume_queue` with the same name or pattern. Pausing again changes nothing.
    pub async fn pause_queue(&self, queue: &str) -> Result<()> {
        let pattern = QueuePattern::parse_given("queue", queue)?;
        self.store()
            .await?
            .pause_queue(&self.config.scope, &pattern)
            .await
    }

    /// Undo `pause_queue(queue)` (the same name or pattern; another pause that matches the
    /// queue still holds it), and wake every worker to claim at once.
    pub async fn resume_queue(&self, queue: &str) -> Result<()> {
        let pattern = QueuePattern::parse_given("queue", queue)?;
        self.store()
            .await?
            .resume_queue(&self.config.scope, &pattern)
            .await?;
        self.wake().notify_one();
        Ok(())
    }

    /// The paused names and patterns of this scope, with when each was paused.
    pub async fn paused_queues(&self) -> Result<Vec<PausedQueue>> {
        self.store().await?.paused_queues(&self.config.scope).await
    }

    /// After a retry or cancel: either can unblock a blocking queue (a cancelled retrying
    /// head) or make a job runnable now, so workers here and in other processes are told. A
    /// change that did not apply says why: no such job, or its state.
    async fn transitioned(
        &self,
        store: &Arc<dyn Store>,
        id: i64,
        verb: &str,
        changed: Option<Job>,
    ) -> Result<Job> {
        match changed {
            Some(job) => {
                self.wake().notify_one();
                store.notify(&self.config.scope).await?;
                Ok(job)
            }
            None => match store.get_job(&self.config.scope, id).await? {
                None => Err(Error::JobNotFound {
                    id,
                    scope: self.config.scope.clone(),
                }),
                Some(job) => Err(Error::JobState(format!(
                    "cannot {verb} job {id}: it is {}",
                    job.state
                ))),
            },
        }
    }

    /// Wake every worker of this scope, in this process and others.
    pub async fn notify(&self) -> Result<()> {
        self.wake().notify_one();
        self.store().await?.notify(&self.config.scope).await
    }

    /// Start a worker on the current tokio runtime that claims only jobs of `actions` (the
    /// ones it has performers for); `drain` runs only what is due now.
    pub async fn start_worker(
        &self,
        dispatcher: Arc<dyn Dispatch>,
        actions: Vec<String>,
        drain: bool,
    ) -> Result<Worker> {
        let config = WorkerConfig {
            drain,
            ..self.worker_config()
        };
        // A drain runs what is due now; enqueueing ticks is a running worker's part.
        let periodic = if drain {
            Vec::new()
        } else {
            self.periodic_jobs()?
        };
        let store = self.store().await?;
        let cancels = self.local(|local| local.cancels.clone());
        // A drain is a call of its own, often in tests: its start is no news at INFO.
        log::log!(
            if drain {
                log::Level::Debug
            } else {
                log::Level::Info
            },
            "ferroq: worker {} started: database {}, scope {:?}, {}, performers {:?}, concurrency {}, prefetch {}",
            config.worker_name,
            redacted_url(&self.config.database_url),
            self.config.scope,
            match config.only_queues.patterns() {
                None => "all queues".to_owned(),
                Some(queues) => format!("queues {queues:?}"),
            },
            actions,
            config.concurrency,
            config.prefetch()
        );
        Ok(Worker::start(
            store,
            self.config.scope.clone(),
            QueueRouting {
                kinds: self.config.queue_kinds.clone(),
                only: config.only_queues.clone(),
            },
            actions,
            config,
            dispatcher,
            Wakes {
                work: self.wake(),
                cancels,
            },
            periodic,
        ))
    }
}

/// The statement that completes `job`'s running attempt on the caller's connection.
pub fn caller_complete(store: &dyn Store, job: &Job) -> Result<CallerStatement> {
    let token = job.lease_token.ok_or_else(|| {
        Error::JobState(format!(
            "job {} is not a running attempt: only a performer's own job can be completed",
            job.id
        ))
    })?;
    Ok(store.caller_complete(Lease { id: job.id, token }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(queues: &[(&str, i64)]) -> Client {
        Client::new(AppOptions {
            database_url: Some("sqlite:///unused.db".into()),
            queues: queues.iter().map(|(q, n)| (q.to_string(), *n)).collect(),
            ..AppOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn listed_queues_are_concurrent_and_all_others_block() {
        let jobs = client(&[("emails", 5)])
            .new_jobs(vec![
                JobSpec::new("emails", "send", "{}"),
                JobSpec::new("customer-1", "charge", "{}"),
            ])
            .unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.blocking).collect::<Vec<_>>(),
            vec![false, true]
        );
    }

    #[test]
    fn one_bad_spec_rejects_the_whole_batch() {
        let err = client(&[])
            .new_jobs(vec![
                JobSpec::new("q", "a", "{}"),
                JobSpec {
                    max_attempts: Some(0),
                    ..JobSpec::new("q", "a", "{}")
                },
            ])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)));
    }

    #[test]
    fn a_performers_defaults_apply_to_its_action_only() {
        let client = client(&[]);
        client
            .set_performer_defaults(
                "charge",
                JobDefaults {
                    priority: Some(50),
                    ..JobDefaults::default()
                },
            )
            .unwrap();
        let jobs = client
            .new_jobs(vec![
                JobSpec::new("q", "charge", "{}"),
                JobSpec::new("q", "mail", "{}"),
            ])
            .unwrap();
        assert_eq!(jobs[0].priority, 50);
        assert_eq!(jobs[1].priority, 0);
        let bad = JobDefaults {
            timeout: Some(-1.0),
            ..JobDefaults::default()
        };
        assert!(matches!(
            client.set_performer_defaults("charge", bad),
            Err(Error::InvalidOption(_))
        ));
    }

    #[test]
    fn an_unknown_scheme_is_refused_before_connecting() {
        let err = Client::new(AppOptions {
            database_url: Some("mysql://localhost/jobs".into()),
            ..AppOptions::default()
        })
        .err()
        .unwrap();
        assert!(matches!(err, Error::UnsupportedDatabase(_)));
    }

    #[test]
    fn concurrency_changes_are_checked() {
        let client = client(&[]);
        client.set_concurrency(3).unwrap();
        assert_eq!(client.worker_config().concurrency, 3);
        assert!(matches!(
            client.set_concurrency(0),
            Err(Error::Configuration(_))
        ));
    }
}
