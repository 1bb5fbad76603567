//! SQLite store on sqlx, the zero-setup embedded default. WAL lets readers run beside the one
//! writer; every write of this process goes through a single connection in `BEGIN IMMEDIATE`
//! transactions (so a read never has to upgrade to a write lock, the case `busy_timeout` does
//! not cover), and writes that still meet another process's lock are retried, never surfaced.
//! Other processes' commits are noticed through `PRAGMA data_version`, polled on a dedicated
//! connection: SQLite has no NOTIFY.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, SqlitePool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::job::{Job, NewJob, Schedule};
use crate::store::{
    contains_pattern, Backend, ClaimRequest, Finish, JobFilter, Lease, Store, Transition,
};

/// The database clock: integer microseconds since the Unix epoch (millisecond resolution),
/// constant within a statement. julianday() rather than unixepoch('subsec') because callers'
/// own sqlite3 modules (transactional enqueue) may link SQLite older than 3.42.
const NOW: &str = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) * 1000 AS INTEGER)";

/// Columns of a job row in the order `job_from_row` reads them. SQLite's FIFO sequence is the id.
/// timeout and max_backoff are cast because SQLite keeps integral REAL values as integers on
/// disk, and some versions hand them back typed INTEGER from RETURNING.
pub const JOB_COLUMNS: &str = "id, scope, queue, action, params, priority, id AS sequence, state, \
    attempts, max_attempts, CAST(timeout AS REAL) AS timeout, CAST(max_backoff AS REAL) AS max_backoff, scheduled_at, attempted_at, attempted_by, \
    next_attempt_at, done_at, inserted_at, error, result, lease_token";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "notify_from_insert",
        include_str!("../../../migrations/sqlite/0002_notify_from_insert.sql"),
    ),
];

/// How long a write keeps retrying while other processes hold the file's write lock.
const WRITE_RETRY_LIMIT: Duration = Duration::from_secs(60);

/// Evaluate `$attempt` (an expression giving a sqlx future, re-evaluated for each try) until
/// it does not meet another process's lock, for up to `WRITE_RETRY_LIMIT`. Reads need it too:
/// in WAL mode a reader can see SQLITE_BUSY briefly while another process recovers or
/// checkpoints the file.
macro_rules! retry_busy {
    ($attempt:expr) => {{
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match $attempt.await {
                Ok(value) => break Ok::<_, Error>(value),
                Err(err) if is_busy(&err) && started.elapsed() < WRITE_RETRY_LIMIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(err) => break Err(db_error(err)),
            }
        }
    }};
}

/// Run `$body` (which may `.await` and `?` on sqlx errors, using `$conn`) in a
/// `BEGIN IMMEDIATE` transaction on the writer, retried as a whole by `retry_busy!`. A macro
/// rather than a closure: async closures borrowing the transaction are not `Send` for every
/// lifetime, which `async_trait` requires.
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:block) => {
        retry_busy!(async {
            let mut pooled = $store.writer.acquire().await?;
            let mut tx = pooled.begin_with("BEGIN IMMEDIATE").await?;
            let value = {
                let $conn: &mut SqliteConnection = &mut *tx;
                $body
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(value)
        })
    };
}

macro_rules! sql {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<String> = LazyLock::new(|| {
            include_str!(concat!("sql/", $file))
                .replace("{{job_columns}}", JOB_COLUMNS)
                .replace("{{now}}", NOW)
        });
    };
}

sql!(INSERT_JOB, "insert_job.sql");
sql!(INSERT_JOBS, "insert_jobs.sql");
sql!(CLAIM_BLOCKING, "claim_blocking.sql");
sql!(CLAIM_CONCURRENT, "claim_concurrent.sql");
sql!(FINISH_JOBS, "finish_jobs.sql");
sql!(EXTEND_LEASE, "extend_lease.sql");
sql!(RESCUE_EXPIRED, "rescue_expired.sql");
sql!(NEXT_RUN_IN, "next_run_in.sql");
sql!(DELETE_COMPLETED, "delete_completed.sql");
sql!(GET_JOB, "get_job.sql");
sql!(LIST_JOBS, "list_jobs.sql");
sql!(COUNT_JOBS, "count_jobs.sql");
sql!(RETRY_JOB, "retry_job.sql");
sql!(CANCEL_JOB, "cancel_job.sql");
sql!(COMPLETE_EXTERNAL, "complete_external.sql");
sql!(
    MIGRATE_CREATE_VERSION_TABLE,
    "migrate_create_version_table.sql"
);
sql!(MIGRATE_APPLIED_VERSIONS, "migrate_applied_versions.sql");
sql!(MIGRATE_RECORD_VERSION, "migrate_record_version.sql");
sql!(DATA_VERSION, "data_version.sql");

/// The file path a `sqlite://` URL names: `sqlite:///relative.db`, `sqlite:////absolute.db`
/// (as SQLAlchemy spells them); query parameters are not used.
pub fn path_from_url(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| Error::Configuration(format!("not a sqlite:// URL: {url:?}")))?;
    let rest = rest.split('?').next().unwrap_or_default();
    let path = rest.strip_prefix('/').unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Err(Error::Configuration(
            "a SQLite URL needs a file path, e.g. sqlite:///ferroq.db (workers in other processes share the file)".into(),
        ));
    }
    Ok(PathBuf::from(path))
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    /// The one writer of this process.
    writer: SqlitePool,
    readers: SqlitePool,
    /// How often other processes' commits are looked for.
    wakeup_interval: Duration,
    options: SqliteConnectOptions,
}

fn db_error(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => Error::Database(format!("SQLite: {}", db.message())),
        sqlx::Error::PoolTimedOut => {
            Error::Database("timed out waiting for a SQLite connection".into())
        }
        other => Error::Database(format!("SQLite: {other}")),
    }
}

/// SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes (e.g. BUSY_SNAPSHOT 517).
fn is_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            matches!(code & 0xff, 5 | 6)
        }
        _ => false,
    }
}

async fn data_version(conn: &mut SqliteConnection) -> std::result::Result<i64, sqlx::Error> {
    sqlx::query_scalar(DATA_VERSION.as_str())
        .fetch_one(conn)
        .await
}

fn micros(value: Option<i64>) -> Option<DateTime<Utc>> {
    value.and_then(DateTime::from_timestamp_micros)
}

/// The JSON array `insert_jobs.sql` expands with json_each: one array per job, in order.
pub fn encode_insert_batch(jobs: &[NewJob]) -> String {
    // Tuples serialize as JSON arrays straight into the string, without building Values.
    let batch: Vec<_> = jobs
        .iter()
        .map(|job| {
            let (at, delay) = match job.schedule {
                Schedule::Now => (None, None),
                Schedule::At(t) => (Some(t.timestamp_micros()), None),
                Schedule::In(d) => (None, Some(d)),
            };
            (
                &job.queue,
                &job.action,
                &job.params,
                job.blocking,
                job.priority,
                job.max_attempts,
                job.timeout,
                job.max_backoff,
                at,
                delay,
            )
        })
        .collect();
    serde_json::to_string(&batch).expect("a batch of strings and numbers serializes")
}

/// The JSON array `finish_jobs.sql` expands with json_each: one array per outcome.
pub fn encode_finish_batch(finishes: &[Finish]) -> String {
    let batch: Vec<_> = finishes
        .iter()
        .map(|f| {
            (
                f.lease.id,
                f.lease.token,
                f.state,
                &f.result,
                &f.error,
                f.delay,
                f.refund_attempt as i32,
            )
        })
        .collect();
    serde_json::to_string(&batch).expect("a batch of strings and numbers serializes")
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let get_time = |i: usize| -> Result<DateTime<Utc>> {
        micros(Some(row.try_get(i).map_err(db_error)?))
            .ok_or_else(|| Error::Database("time out of range".into()))
    };
    let opt_time = |i: usize| -> Result<Option<DateTime<Utc>>> {
        Ok(micros(row.try_get(i).map_err(db_error)?))
    };
    Ok(Job {
        id: row.try_get(0).map_err(db_error)?,
        scope: row.try_get(1).map_err(db_error)?,
        queue: row.try_get(2).map_err(db_error)?,
        action: row.try_get(3).map_err(db_error)?,
        params: row.try_get(4).map_err(db_error)?,
        priority: row.try_get(5).map_err(db_error)?,
        sequence: row.try_get(6).map_err(db_error)?,
        state: row.try_get(7).map_err(db_error)?,
        attempts: row.try_get(8).map_err(db_error)?,
        max_attempts: row.try_get(9).map_err(db_error)?,
        timeout: row.try_get(10).map_err(db_error)?,
        max_backoff: row.try_get(11).map_err(db_error)?,
        scheduled_at: get_time(12)?,
        attempted_at: opt_time(13)?,
        attempted_by: row.try_get(14).map_err(db_error)?,
        next_attempt_at: opt_time(15)?,
        done_at: opt_time(16)?,
        inserted_at: get_time(17)?,
        error: row.try_get(18).map_err(db_error)?,
        result: row.try_get(19).map_err(db_error)?,
        lease_token: row.try_get(20).map_err(db_error)?,
    })
}

fn states_json(states: &Option<Vec<String>>) -> Option<String> {
    states
        .as_ref()
        .map(|s| serde_json::to_string(s).expect("a list of strings is JSON"))
}

impl SqliteStore {
    /// Open (creating if missing) the database file. Fails clearly when its directory does
    /// not exist; the schema is created on first use by `Client`.
    pub fn new(config: &ClientConfig, wakeup_interval: Duration) -> Result<SqliteStore> {
        let path = path_from_url(&config.database_url)?;
        check_directory(&path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_error)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across application crashes; an OS crash may lose the
            // last commits but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITE_RETRY_LIMIT)
            .connect_lazy_with(options.clone());
        let readers = SqlitePoolOptions::new()
            .max_connections(config.pool_size.clamp(2, 8) as u32)
            .acquire_timeout(config.connect_timeout.max(Duration::from_secs(5)))
            .connect_lazy_with(options.clone());
        Ok(SqliteStore {
            writer,
            readers,
            wakeup_interval,
            options,
        })
    }

    async fn query_jobs_read(
        &self,
        sql: &'static str,
        binds: impl Fn(
            sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
        )
            -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<Job>> {
        let rows = retry_busy!(binds(sqlx::query(sql)).fetch_all(&self.readers))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn transition(
        &self,
        sql: &'static str,
        scope: &str,
        id: i64,
        verb: &str,
    ) -> Result<Transition> {
        let rows = write_tx!(self, |conn| {
            sqlx::query(sql)
                .bind(scope)
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
        })?;
        if let Some(row) = rows.first() {
            return Ok(Transition::Done(job_from_row(row)?));
        }
        Ok(match self.get_job(scope, id).await? {
            None => Transition::NotFound,
            Some(job) => {
                Transition::WrongState(format!("cannot {verb} job {id}: it is {}", job.state))
            }
        })
    }
}

fn check_directory(path: &Path) -> Result<()> {
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        return Err(Error::Configuration(format!(
            "cannot store jobs in {}: directory {} does not exist",
            path.display(),
            directory.display()
        )));
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<Vec<i32>> {
        write_tx!(self, |conn| {
            sqlx::query(MIGRATE_CREATE_VERSION_TABLE.as_str())
                .execute(&mut *conn)
                .await?;
            let applied: Vec<i64> = sqlx::query_scalar(MIGRATE_APPLIED_VERSIONS.as_str())
                .fetch_all(&mut *conn)
                .await?;
            let mut newly_applied = Vec::new();
            for (version, name, body) in MIGRATIONS {
                if applied.contains(version) {
                    continue;
                }
                sqlx::raw_sql(*body).execute(&mut *conn).await?;
                sqlx::query(MIGRATE_RECORD_VERSION.as_str())
                    .bind(version)
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                newly_applied.push(*version as i32);
            }
            newly_applied
        })
    }

    async fn insert_jobs(&self, scope: &str, jobs: &[NewJob]) -> Result<Vec<Job>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let batch = encode_insert_batch(jobs);
        let rows = write_tx!(self, |conn| {
            sqlx::query(INSERT_JOBS.as_str())
                .bind(scope)
                .bind(&batch)
                .fetch_all(&mut *conn)
                .await?
        })?;
        let mut inserted = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<Job>>>()?;
        // RETURNING gives no order; ids follow the input order.
        inserted.sort_by_key(|job| job.id);
        Ok(inserted)
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Job>> {
        let ttl = request.lease_ttl.as_secs_f64();
        let rows = write_tx!(self, |conn| {
            let mut rows = Vec::new();
            for (queue, cap) in request.concurrent_queues {
                let remaining = request.limit.saturating_sub(rows.len()) as i64;
                if remaining == 0 {
                    break;
                }
                rows.extend(
                    sqlx::query(CLAIM_CONCURRENT.as_str())
                        .bind(request.scope)
                        .bind(queue)
                        .bind(remaining)
                        .bind(request.worker_name)
                        .bind(ttl)
                        .bind(*cap as i64)
                        .fetch_all(&mut *conn)
                        .await?,
                );
            }
            let remaining = request.limit.saturating_sub(rows.len()) as i64;
            if remaining > 0 {
                rows.extend(
                    sqlx::query(CLAIM_BLOCKING.as_str())
                        .bind(request.scope)
                        .bind(remaining)
                        .bind(request.worker_name)
                        .bind(ttl)
                        .fetch_all(&mut *conn)
                        .await?,
                );
            }
            rows
        })?;
        rows.iter().map(job_from_row).collect()
    }

    async fn finish(&self, finishes: &[Finish]) -> Result<Vec<i64>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        let batch = encode_finish_batch(finishes);
        write_tx!(self, |conn| {
            sqlx::query_scalar::<_, i64>(FINISH_JOBS.as_str())
                .bind(&batch)
                .fetch_all(&mut *conn)
                .await?
        })
    }

    async fn extend_leases(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<i64>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = ttl.as_secs_f64();
        write_tx!(self, |conn| {
            let mut held = Vec::with_capacity(leases.len());
            for lease in leases {
                let done = sqlx::query(EXTEND_LEASE.as_str())
                    .bind(lease.id)
                    .bind(lease.token)
                    .bind(ttl)
                    .execute(&mut *conn)
                    .await?;
                if done.rows_affected() == 1 {
                    held.push(lease.id);
                }
            }
            held
        })
    }

    async fn rescue_expired(&self, scope: &str) -> Result<u64> {
        write_tx!(self, |conn| {
            sqlx::query(RESCUE_EXPIRED.as_str())
                .bind(scope)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        })
    }

    async fn next_run_in(&self, scope: &str) -> Result<Option<f64>> {
        retry_busy!(sqlx::query_scalar(NEXT_RUN_IN.as_str())
            .bind(scope)
            .fetch_one(&self.readers))
    }

    async fn delete_completed(&self, scope: &str, retention: Duration) -> Result<u64> {
        let retention = retention.as_secs_f64();
        write_tx!(self, |conn| {
            sqlx::query(DELETE_COMPLETED.as_str())
                .bind(scope)
                .bind(retention)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        })
    }

    async fn get_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        let scope = scope.to_owned();
        Ok(self
            .query_jobs_read(GET_JOB.as_str(), move |q| q.bind(scope.clone()).bind(id))
            .await?
            .pop())
    }

    async fn list_jobs(&self, scope: &str, filter: &JobFilter) -> Result<Vec<Job>> {
        let direction = if filter.descending { "DESC" } else { "ASC" };
        let column = filter.order_by.column();
        // One statement text per allowlisted ordering, built once and kept for the process.
        static ORDERED: LazyLock<
            std::sync::Mutex<std::collections::HashMap<String, &'static str>>,
        > = LazyLock::new(Default::default);
        let order_by = format!("{column} {direction} NULLS LAST, id {direction}");
        let sql: &'static str = *ORDERED
            .lock()
            .unwrap()
            .entry(order_by.clone())
            .or_insert_with(|| {
                Box::leak(
                    LIST_JOBS
                        .replace("{{order_by}}", &order_by)
                        .into_boxed_str(),
                )
            });
        let (scope, filter) = (scope.to_owned(), filter.clone());
        self.query_jobs_read(sql, move |q| {
            q.bind(scope.clone())
                .bind(filter.queue.clone())
                .bind(filter.action.clone())
                .bind(states_json(&filter.states))
                .bind(filter.search.as_deref().map(contains_pattern))
                .bind(filter.limit)
                .bind(filter.offset)
        })
        .await
    }

    async fn count_jobs(&self, scope: &str, filter: &JobFilter) -> Result<i64> {
        retry_busy!(sqlx::query_scalar(COUNT_JOBS.as_str())
            .bind(scope)
            .bind(filter.queue.as_deref())
            .bind(filter.action.as_deref())
            .bind(states_json(&filter.states))
            .bind(filter.search.as_deref().map(contains_pattern))
            .fetch_one(&self.readers))
    }

    async fn retry_job(&self, scope: &str, id: i64) -> Result<Transition> {
        self.transition(RETRY_JOB.as_str(), scope, id, "retry")
            .await
    }

    async fn cancel_job(&self, scope: &str, id: i64) -> Result<Transition> {
        self.transition(CANCEL_JOB.as_str(), scope, id, "cancel")
            .await
    }

    async fn notify(&self, _scope: &str) -> Result<()> {
        // Workers in this process are woken by the Client; others see the file change. A
        // write that changes nothing still bumps data_version for the other processes.
        write_tx!(self, |conn| {
            sqlx::query("UPDATE ferroq_schema_migrations SET version = version WHERE 0")
                .execute(&mut *conn)
                .await?;
        })
    }

    async fn listen(&self, _scope: &str, wake: Arc<Notify>, stop: CancellationToken) {
        // data_version is per connection, so one connection of our own watches the file.
        let mut watcher: Option<SqliteConnection> = None;
        let mut last: Option<i64> = None;
        loop {
            if watcher.is_none() {
                if let Ok(mut conn) = SqliteConnection::connect_with(&self.options).await {
                    if let Ok(version) = data_version(&mut conn).await {
                        last = Some(version);
                        watcher = Some(conn);
                        // Commits made before this baseline are not changes to it: look once
                        // now, so a job enqueued while the watcher was starting is not left
                        // for the safety poll.
                        wake.notify_one();
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.wakeup_interval) => {}
            }
            let Some(conn) = watcher.as_mut() else {
                continue;
            };
            match data_version(conn).await {
                Ok(version) => {
                    if last != Some(version) {
                        wake.notify_one();
                    }
                    last = Some(version);
                }
                // Another process holding a lock for a moment: look again next tick.
                Err(err) if is_busy(&err) => {}
                Err(err) => {
                    log::warn!("ferroq: watching the SQLite file failed ({err}); reopening");
                    watcher = None;
                }
            }
        }
        if let Some(conn) = watcher {
            let _ = conn.close().await;
        }
    }

    fn external_insert_sql(&self) -> &'static str {
        INSERT_JOB.as_str()
    }

    fn external_complete_sql(&self) -> &'static str {
        COMPLETE_EXTERNAL.as_str()
    }

    fn creates_schema_on_first_use(&self) -> bool {
        true
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn close(&self) {
        // sqlx closes pools asynchronously. Outside a runtime (nothing to wait on) the pools
        // close as their last handle drops.
        let (writer, readers) = (self.writer.clone(), self.readers.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                writer.close().await;
                readers.close().await;
            });
        }
    }
}
