//! SQLite store on sqlx, the zero-setup embedded default. WAL lets readers run beside the one
//! writer; how writes meet other processes' locks is in `retry.rs`, how other processes'
//! commits are noticed in `watch.rs`.

#[macro_use]
mod retry;
mod direct;
mod file;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Column, Connection, Row, SqlitePool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::job::{
    any_unique, distinct_unique, unique_keys, unique_results, Job, JobState, NewJob, Params,
    UniqueKey,
};
use crate::queues::QueuePattern;
use crate::store::{
    encode_finish_batch, encode_insert_batch, migrate, Backend, BulkChange, CallerStatement,
    ClaimRequest, DueTimes, Finish, HeldQueue, JobFilter, Lease, OrderBy, PausedQueue,
    PeriodicTicks, QueueCount, Store, HEADS_PLACED_PER_STATEMENT,
};
pub use file::{parse_url, path_from_url, Synchronous};
use retry::{db_error, WRITE_RETRY_LIMIT};

/// The database clock: integer microseconds since the Unix epoch (millisecond resolution),
/// constant within a statement. julianday() rather than unixepoch('subsec') because callers'
/// own sqlite3 modules (transactional enqueue) may link SQLite older than 3.42.
const NOW: &str = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) * 1000 AS INTEGER)";

/// Columns of a job row in the order `job_from_row` reads them. SQLite's FIFO sequence is the id.
/// timeout and max_backoff are cast because SQLite keeps integral REAL values as integers on
/// disk, and some versions hand them back typed INTEGER from RETURNING.
pub const JOB_COLUMNS: &str = "id, scope, queue, action, params, priority, id AS sequence, state, \
    attempts, max_attempts, CAST(timeout AS REAL) AS timeout, CAST(max_backoff AS REAL) AS max_backoff, scheduled_at, attempted_at, attempted_by, \
    next_attempt_at, done_at, inserted_at, error, result, lease_token, params_bytes, \
    cancel_requested_at, unique_key";

/// JOB_COLUMNS for the rows an insert returns, with placeholders for the params: the caller
/// has them already, and RETURNING them would hold a large payload in SQLite's RETURNING
/// buffer, its row and the decoded String at once (three copies for one job).
const INSERTED_COLUMNS: &str = "id, scope, queue, action, 'null' AS params, priority, id AS sequence, state, \
    attempts, max_attempts, CAST(timeout AS REAL) AS timeout, CAST(max_backoff AS REAL) AS max_backoff, scheduled_at, attempted_at, attempted_by, \
    next_attempt_at, done_at, inserted_at, error, result, lease_token, NULL AS params_bytes, \
    NULL AS cancel_requested_at, NULL AS unique_key";

/// For listings: the job a waiting job of a blocking queue waits behind (see the PostgreSQL
/// twin). Read after JOB_COLUMNS.
const BLOCKED_BY: &str = "(SELECT h.id FROM ferroq_jobs AS h \
    WHERE ferroq_jobs.blocking AND ferroq_jobs.state IN ('scheduled', 'available', 'retryable') \
      AND h.scope = ferroq_jobs.scope AND h.queue = ferroq_jobs.queue AND h.blocking \
      AND h.state IN ('scheduled', 'available', 'running', 'retryable') \
      AND (h.scheduled_at, h.id) < (ferroq_jobs.scheduled_at, ferroq_jobs.id) \
    ORDER BY h.scheduled_at, h.id LIMIT 1) AS blocked_by";

/// The WHERE clause of listings and bulk changes: ?1 scope, then the filters (?2-?6), bound
/// by `bind_filter`.
const JOB_FILTER: &str = include_str!("sql/job_filter.sql");

/// Where listings put BLOCKED_BY: right after JOB_COLUMNS.
const BLOCKED_BY_COLUMN: usize = 24;

/// The rows a unique insert returns: whole jobs (a duplicate's params are the existing job's,
/// which the caller does not have), then whether each was there before. Read by
/// `job_from_row` and `direct::job_from_stmt`.
const UNIQUE_INSERTED_COLUMNS: &str = "id, scope, queue, action, params, priority, id AS sequence, state, \
    attempts, max_attempts, CAST(timeout AS REAL) AS timeout, CAST(max_backoff AS REAL) AS max_backoff, scheduled_at, attempted_at, attempted_by, \
    next_attempt_at, done_at, inserted_at, error, result, lease_token, params_bytes, \
    cancel_requested_at, unique_key, duplicates > 0 AS duplicate";

/// A job row as one JSON object (see `store/caller_tx.rs`), for the caller's connection.
const JOB_JSON: &str = "json_object('id', id, 'scope', scope, 'queue', queue, 'action', action, \
    'params', json(params), 'priority', priority, 'sequence', id, 'state', state, \
    'attempts', attempts, 'max_attempts', max_attempts, 'timeout', CAST(timeout AS REAL), \
    'max_backoff', CAST(max_backoff AS REAL), 'scheduled_at', scheduled_at, \
    'attempted_at', attempted_at, 'attempted_by', attempted_by, \
    'next_attempt_at', next_attempt_at, 'done_at', done_at, 'inserted_at', inserted_at, \
    'error', error, 'result', json(result), 'lease_token', lease_token, \
    'cancel_requested_at', cancel_requested_at, 'params_bytes', CASE WHEN params_bytes IS NOT NULL THEN hex(params_bytes) END, \
    'unique_key', unique_key, 'duplicate', json(CASE WHEN duplicates > 0 THEN 'true' ELSE 'false' END))";

macro_rules! sqlite_sql {
    ($name:ident, $file:literal) => {
        sql!($name = $file, "{{job_columns}}" => JOB_COLUMNS, "{{now}}" => NOW,
            "{{cancelled_while_running}}" => &crate::store::cancelled_while_running_literal());
    };
}

sql!(INSERT_JOBS = "insert_jobs.sql", "{{job_columns}}" => INSERTED_COLUMNS, "{{now}}" => NOW);
sqlite_sql!(RESOLVE_HEADS, "resolve_heads.sql");
sqlite_sql!(PROMOTE_HEADS, "promote_heads.sql");
sqlite_sql!(CONCURRENT_QUEUES_WAITING, "concurrent_queues_waiting.sql");
sqlite_sql!(CLAIM, "claim.sql");
sqlite_sql!(RECORD_TURNS, "record_turns.sql");
sqlite_sql!(FINISH_JOBS, "finish_jobs.sql");
sqlite_sql!(EXTEND_LEASE, "extend_lease.sql");
sqlite_sql!(HOLDS_LEASE, "holds_lease.sql");
sqlite_sql!(RESCUE_EXPIRED, "rescue_expired.sql");
sqlite_sql!(NEXT_RUN_IN, "next_run_in.sql");
sqlite_sql!(DELETE_COMPLETED, "delete_completed.sql");
sqlite_sql!(PERIODIC_TICKS, "periodic_ticks.sql");
sqlite_sql!(START_PERIODIC, "start_periodic.sql");
sqlite_sql!(ADVANCE_TICK, "advance_tick.sql");
sql!(GET_JOB = "get_job.sql", "{{job_columns}}" => JOB_COLUMNS, "{{blocked_by}}" => BLOCKED_BY);
// {{filter}} before {{now}}: the filter holds a {{now}} of its own.
sql!(LIST_JOBS = "list_jobs.sql", "{{filter}}" => JOB_FILTER, "{{job_columns}}" => JOB_COLUMNS,
    "{{blocked_by}}" => BLOCKED_BY, "{{now}}" => NOW);
sql!(COUNT_JOBS = "count_jobs.sql", "{{filter}}" => JOB_FILTER, "{{now}}" => NOW);
sqlite_sql!(QUEUE_COUNTS, "queue_counts.sql");
sql!(BLOCKED_HEADS = "blocked_heads.sql", "{{job_columns}}" => JOB_COLUMNS);
sql!(BULK_RETRY = "bulk_retry.sql", "{{filter}}" => JOB_FILTER,
    "{{retry_set}}" => include_str!("sql/retry_set.sql"), "{{now}}" => NOW);
sql!(BULK_CANCEL = "bulk_cancel.sql", "{{filter}}" => JOB_FILTER, "{{now}}" => NOW);
sql!(BULK_REQUEST_CANCEL = "bulk_request_cancel.sql", "{{filter}}" => JOB_FILTER, "{{now}}" => NOW);
sql!(BULK_DELETE = "bulk_delete.sql", "{{filter}}" => JOB_FILTER, "{{now}}" => NOW);
sql!(RETRY_JOB = "retry_job.sql", "{{retry_set}}" => include_str!("sql/retry_set.sql"),
    "{{job_columns}}" => JOB_COLUMNS, "{{now}}" => NOW);
sqlite_sql!(CANCEL_JOB, "cancel_job.sql");
sqlite_sql!(REQUEST_CANCEL, "request_cancel.sql");
sqlite_sql!(CANCEL_REQUESTED, "cancel_requested.sql");
sqlite_sql!(PAUSE_QUEUE, "pause_queue.sql");
sqlite_sql!(RESUME_QUEUE, "resume_queue.sql");
sqlite_sql!(PAUSED_QUEUES, "paused_queues.sql");
sqlite_sql!(CALLER_COMPLETE, "caller_complete.sql");
sql!(CALLER_INSERT = "insert_jobs.sql", "{{job_columns}}" => JOB_JSON, "{{now}}" => NOW);
sql!(INSERT_UNIQUE_JOBS = "insert_unique_jobs.sql", "{{job_columns}}" => UNIQUE_INSERTED_COLUMNS, "{{now}}" => NOW);
sql!(CALLER_INSERT_UNIQUE = "insert_unique_jobs.sql", "{{job_columns}}" => JOB_JSON, "{{now}}" => NOW);
sqlite_sql!(
    MIGRATE_CREATE_VERSION_TABLE,
    "migrate_create_version_table.sql"
);
sqlite_sql!(MIGRATE_APPLIED_VERSIONS, "migrate_applied_versions.sql");
sqlite_sql!(MIGRATE_RECORD_VERSION, "migrate_record_version.sql");
sqlite_sql!(DATA_VERSION, "data_version.sql");
sqlite_sql!(NOTIFY, "notify.sql");

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    /// The sqlx writer: claims, outcomes, leases, maintenance, asyncio enqueues.
    writer: SqlitePool,
    /// The writer of blocking enqueues, on the caller's thread (see direct.rs); opened on
    /// first use, dropped (and reopened) after a failed write, and at close.
    direct: Mutex<Option<direct::DirectWriter>>,
    /// Taken across every write transaction of this process, by both writers: they take
    /// turns here rather than in SQLite's busy handler.
    write_lock: tokio::sync::Mutex<()>,
    /// Set by close(): the direct writer opens no more.
    closed: std::sync::atomic::AtomicBool,
    /// Commits of this process's writers, so far: the watcher's clue that a write to the WAL
    /// was this process's own (see watch.rs).
    own_commits: Arc<std::sync::atomic::AtomicU64>,
    path: PathBuf,
    synchronous: Synchronous,
    readers: SqlitePool,
    /// How often other processes' commits are looked for.
    wakeup_interval: Duration,
}

fn micros(value: Option<i64>) -> Option<DateTime<Utc>> {
    value.and_then(DateTime::from_timestamp_micros)
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
        params: Params::from_columns(
            row.try_get(4).map_err(db_error)?,
            row.try_get(21).map_err(db_error)?,
        ),
        priority: row.try_get(5).map_err(db_error)?,
        sequence: row.try_get(6).map_err(db_error)?,
        state: JobState::parse(row.try_get(7).map_err(db_error)?)
            .map_err(|e| Error::Database(e.to_string()))?,
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
        cancel_requested_at: opt_time(22)?,
        blocked_by: match row.columns().get(BLOCKED_BY_COLUMN) {
            Some(column) if column.name() == "blocked_by" => {
                row.try_get(BLOCKED_BY_COLUMN).map_err(db_error)?
            }
            _ => None,
        },
        unique: row
            .try_get::<Option<&str>, _>(23)
            .map_err(db_error)?
            .map(UniqueKey::from_stored)
            .transpose()?,
        duplicate: match row.columns().get(BLOCKED_BY_COLUMN) {
            Some(column) if column.name() == "duplicate" => {
                row.try_get(BLOCKED_BY_COLUMN).map_err(db_error)?
            }
            _ => false,
        },
    })
}

/// The jobs an insert_jobs.sql returned, in input order, with the params the caller sent (the
/// statement does not return them).
fn inserted_jobs(rows: &[SqliteRow], jobs: &[NewJob]) -> Result<Vec<Job>> {
    let mut inserted = rows
        .iter()
        .map(job_from_row)
        .collect::<Result<Vec<Job>>>()?;
    // RETURNING gives no order; ids follow the input order.
    inserted.sort_by_key(|job| job.id);
    if inserted.len() != jobs.len() {
        return Err(Error::Database(format!(
            "SQLite inserted {} of {} jobs",
            inserted.len(),
            jobs.len()
        )));
    }
    for (job, new) in inserted.iter_mut().zip(jobs) {
        job.params = new.params.clone();
    }
    Ok(inserted)
}

/// The REGEXP of a search: `text` literally, ignoring case (Unicode case folding).
fn search_regex(text: &str) -> String {
    format!("(?i){}", regex::escape(text))
}

fn states_json(states: Option<Vec<&'static str>>) -> Option<String> {
    states.map(|s| serde_json::to_string(&s).expect("a list of strings is JSON"))
}

/// Bind JOB_FILTER's ?1 to ?6 on any sqlx query builder: the scope, the filter's values, and
/// the states to match (a listing's own, or those a bulk change applies to) as a JSON array.
fn bind_filter<'q, Q: BindFilter<'q>>(
    query: Q,
    scope: &str,
    filter: &JobFilter,
    states: Option<String>,
) -> Q {
    query
        .bind_text(Some(scope.to_owned()))
        .bind_text(filter.queue.clone())
        .bind_text(filter.action.clone())
        .bind_text(states)
        .bind_text(filter.search.as_deref().map(search_regex))
        .bind_real(filter.older_than_secs())
}

/// The binds `bind_filter` needs, for each kind of sqlx query it is used with.
trait BindFilter<'q>: Sized {
    fn bind_text(self, value: Option<String>) -> Self;
    fn bind_real(self, value: Option<f64>) -> Self;
}

impl<'q> BindFilter<'q> for sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    fn bind_text(self, value: Option<String>) -> Self {
        self.bind(value)
    }
    fn bind_real(self, value: Option<f64>) -> Self {
        self.bind(value)
    }
}

impl<'q, O> BindFilter<'q>
    for sqlx::query::QueryScalar<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments>
{
    fn bind_text(self, value: Option<String>) -> Self {
        self.bind(value)
    }
    fn bind_real(self, value: Option<f64>) -> Self {
        self.bind(value)
    }
}

impl SqliteStore {
    /// Open (creating if missing) the database file. Fails clearly when its directory does
    /// not exist; the schema is created on first use by `Client`.
    pub fn new(config: &ClientConfig) -> Result<SqliteStore> {
        let url = parse_url(&config.database_url)?;
        let path = url.path;
        file::check_directory(&path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_error)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Both survive a crash of the process; see `Synchronous` for an OS crash.
            .synchronous(match url.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(5))
            .with_regexp()
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITE_RETRY_LIMIT)
            .connect_lazy_with(options.clone());
        let readers = SqlitePoolOptions::new()
            .max_connections(config.pool_size.clamp(2, 8) as u32)
            .acquire_timeout(config.connect_timeout.max(Duration::from_secs(5)))
            .connect_lazy_with(options);
        Ok(SqliteStore {
            writer,
            direct: Mutex::new(None),
            write_lock: tokio::sync::Mutex::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
            own_commits: Arc::default(),
            path,
            synchronous: url.synchronous,
            readers,
            wakeup_interval: config.wakeup_interval,
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

    /// Run a statement that changes at most one job and returns it.
    /// One claim transaction: place new blocking jobs (how many were looked at comes back),
    /// then claim.
    async fn claim_round(&self, request: &ClaimRequest<'_>) -> Result<(i64, Vec<Job>)> {
        let ttl = request.lease_ttl.as_secs_f64();
        let to_json = |list: &[String]| serde_json::to_string(list).expect("strings are JSON");
        let actions = request.actions.map(to_json);
        let (blocking_names, blocking_prefixes) = request.queues.blocking_filter();
        let blocking_names = blocking_names.as_deref().map(to_json);
        let blocking_prefixes = blocking_prefixes.as_deref().map(to_json);
        let (looked_at, rows) = write_tx!(self, |conn| {
            let looked_at = sqlx::query(RESOLVE_HEADS.as_str())
                .bind(request.scope)
                .bind(HEADS_PLACED_PER_STATEMENT)
                .execute(&mut *conn)
                .await?
                .rows_affected() as i64;
            // Queues served by name pattern exist once a job names them: look them up first.
            let waiting: Vec<String> = if request.queues.has_concurrent_patterns() {
                sqlx::query_scalar(CONCURRENT_QUEUES_WAITING.as_str())
                    .bind(request.scope)
                    .fetch_all(&mut *conn)
                    .await?
            } else {
                Vec::new()
            };
            let concurrent = request.queues.concurrent_to_claim(&waiting);
            let rows = sqlx::query(CLAIM.as_str())
                .bind(request.scope)
                .bind(serde_json::to_string(&concurrent).expect("pairs are JSON"))
                .bind(request.limit as i64)
                .bind(request.worker_name)
                .bind(ttl)
                .bind(actions.as_deref())
                .bind(blocking_names.as_deref())
                .bind(blocking_prefixes.as_deref())
                .bind(request.blocking_limit as i64)
                .fetch_all(&mut *conn)
                .await?;
            let mut served: Vec<String> = Vec::new();
            for row in &rows {
                let queue: String = row.try_get(2)?;
                if concurrent.iter().any(|(q, _)| *q == queue) && !served.contains(&queue) {
                    served.push(queue);
                }
            }
            if !served.is_empty() {
                sqlx::query(RECORD_TURNS.as_str())
                    .bind(request.scope)
                    .bind(to_json(&served))
                    .execute(&mut *conn)
                    .await?;
            }
            (looked_at, rows)
        })?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        // RETURNING gives no order; hand them out in FIFO order.
        jobs.sort_by_key(|job| job.id);
        Ok((looked_at, jobs))
    }

    async fn update_job(&self, sql: &'static str, scope: &str, id: i64) -> Result<Option<Job>> {
        let row = write_tx!(self, |conn| {
            let row = sqlx::query(sql)
                .bind(scope)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            // A cancelled head hands its queue on.
            sqlx::query(PROMOTE_HEADS.as_str())
                .bind(format!("[{id}]"))
                .execute(&mut *conn)
                .await?;
            row
        })?;
        row.as_ref().map(job_from_row).transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<Vec<i32>> {
        // An up-to-date schema is the common case: see it with a read, which never waits for
        // the write lock. A first use of the App inside the caller's own write transaction on
        // the same file (transactional enqueue) would otherwise wait for that transaction.
        let applied: std::result::Result<Vec<i32>, sqlx::Error> =
            sqlx::query_scalar(MIGRATE_APPLIED_VERSIONS.as_str())
                .fetch_all(&self.readers)
                .await;
        if matches!(&applied, Ok(versions) if migrate::pending(versions).next().is_none()) {
            return Ok(Vec::new());
        }
        write_tx!(self, |conn| {
            sqlx::query(MIGRATE_CREATE_VERSION_TABLE.as_str())
                .execute(&mut *conn)
                .await?;
            let applied: Vec<i32> = sqlx::query_scalar(MIGRATE_APPLIED_VERSIONS.as_str())
                .fetch_all(&mut *conn)
                .await?;
            let mut newly_applied = Vec::new();
            for migration in migrate::pending(&applied) {
                sqlx::raw_sql(migration.sqlite).execute(&mut *conn).await?;
                sqlx::query(MIGRATE_RECORD_VERSION.as_str())
                    .bind(migration.version)
                    .bind(migration.name)
                    .execute(&mut *conn)
                    .await?;
                newly_applied.push(migration.version);
            }
            newly_applied
        })
    }

    async fn insert_jobs(&self, scope: &str, jobs: &[NewJob]) -> Result<Vec<Job>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        if any_unique(jobs) {
            let batch = encode_insert_batch(&distinct_unique(jobs));
            let rows = write_tx!(self, |conn| {
                sqlx::query(INSERT_UNIQUE_JOBS.as_str())
                    .bind(scope)
                    .bind(&batch.json)
                    .bind(&batch.bytes)
                    .fetch_all(&mut *conn)
                    .await?
            })?;
            let rows = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
            return unique_results(&unique_keys(jobs), rows);
        }
        let batch = encode_insert_batch(jobs);
        let rows = write_tx!(self, |conn| {
            sqlx::query(INSERT_JOBS.as_str())
                .bind(scope)
                .bind(&batch.json)
                .bind(&batch.bytes)
                .fetch_all(&mut *conn)
                .await?
        })?;
        inserted_jobs(&rows, jobs)
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Job>> {
        let (looked_at, mut jobs) = self.claim_round(request).await?;
        if looked_at >= HEADS_PLACED_PER_STATEMENT && jobs.len() < request.limit {
            // More new blocking jobs than one statement places: place them all, then claim
            // the rest of the batch.
            while write_tx!(self, |conn| {
                sqlx::query(RESOLVE_HEADS.as_str())
                    .bind(request.scope)
                    .bind(HEADS_PLACED_PER_STATEMENT)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            })? as i64
                >= HEADS_PLACED_PER_STATEMENT
            {}
            let rest = ClaimRequest {
                limit: request.limit - jobs.len(),
                // As if every job claimed so far took a free slot: never more heads than slots.
                blocking_limit: request.blocking_limit.saturating_sub(jobs.len()),
                ..request.clone()
            };
            jobs.extend(self.claim_round(&rest).await?.1);
            jobs.sort_by_key(|job| job.id);
        }
        Ok(jobs)
    }

    async fn finish(&self, finishes: &[Finish]) -> Result<Vec<i64>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        let batch = encode_finish_batch(finishes);
        // Every id is handed to promote_heads.sql, also those whose attempt was fenced out: a
        // job its performer completed in its own transaction has left its queue too.
        let ids = serde_json::to_string(&finishes.iter().map(|f| f.lease.id).collect::<Vec<_>>())
            .expect("ids are JSON");
        write_tx!(self, |conn| {
            let finished = sqlx::query_scalar::<_, i64>(FINISH_JOBS.as_str())
                .bind(&batch)
                .fetch_all(&mut *conn)
                .await?;
            sqlx::query(PROMOTE_HEADS.as_str())
                .bind(&ids)
                .execute(&mut *conn)
                .await?;
            finished
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

    async fn holds_lease(&self, lease: Lease) -> Result<bool> {
        let row: Option<i64> = retry_busy!(sqlx::query_scalar(HOLDS_LEASE.as_str())
            .bind(lease.id)
            .bind(lease.token)
            .fetch_optional(&self.readers))?;
        Ok(row.is_some())
    }

    async fn rescue_expired(&self, scope: &str) -> Result<u64> {
        write_tx!(self, |conn| {
            let rescued: Vec<i64> = sqlx::query_scalar(RESCUE_EXPIRED.as_str())
                .bind(scope)
                .fetch_all(&mut *conn)
                .await?;
            if !rescued.is_empty() {
                sqlx::query(PROMOTE_HEADS.as_str())
                    .bind(serde_json::to_string(&rescued).expect("ids are JSON"))
                    .execute(&mut *conn)
                    .await?;
            }
            rescued.len() as u64
        })
    }

    async fn next_run_in(&self, scope: &str) -> Result<DueTimes> {
        let (next_in, last_due_ago): (Option<f64>, Option<f64>) =
            retry_busy!(sqlx::query_as(NEXT_RUN_IN.as_str())
                .bind(scope)
                .fetch_one(&self.readers))?;
        Ok(DueTimes {
            next_in,
            last_due_ago,
        })
    }

    async fn periodic_ticks(&self, scope: &str) -> Result<PeriodicTicks> {
        let rows: Vec<(i64, Option<String>, Option<i64>)> =
            retry_busy!(sqlx::query_as(PERIODIC_TICKS.as_str())
                .bind(scope)
                .fetch_all(&self.readers))?;
        let time = |value: i64| {
            micros(Some(value)).ok_or_else(|| Error::Database("time out of range".into()))
        };
        let now = match rows.first() {
            Some((now, ..)) => time(*now)?,
            None => return Err(Error::Database("the clock read returned no row".into())),
        };
        let mut last_ticks = HashMap::new();
        for (_, name, last_tick) in rows {
            if let (Some(name), Some(last_tick)) = (name, last_tick) {
                last_ticks.insert(name, time(last_tick)?);
            }
        }
        Ok(PeriodicTicks { now, last_ticks })
    }

    async fn start_periodic(&self, scope: &str, name: &str, tick: DateTime<Utc>) -> Result<()> {
        write_tx!(self, |conn| {
            sqlx::query(START_PERIODIC.as_str())
                .bind(scope)
                .bind(name)
                .bind(tick.timestamp_micros())
                .execute(&mut *conn)
                .await?;
        })
    }

    async fn enqueue_tick(
        &self,
        scope: &str,
        name: &str,
        tick: DateTime<Utc>,
        job: &NewJob,
    ) -> Result<Option<Job>> {
        let jobs = std::slice::from_ref(job);
        let batch = encode_insert_batch(jobs);
        // One BEGIN IMMEDIATE transaction: the tick is taken and its job inserted together, or
        // neither.
        let rows = write_tx!(self, |conn| {
            let advanced = sqlx::query(ADVANCE_TICK.as_str())
                .bind(scope)
                .bind(name)
                .bind(tick.timestamp_micros())
                .fetch_optional(&mut *conn)
                .await?;
            match advanced {
                // Another worker enqueued this tick (or a later one) first.
                None => None,
                Some(_) => Some(
                    sqlx::query(INSERT_JOBS.as_str())
                        .bind(scope)
                        .bind(&batch.json)
                        .bind(&batch.bytes)
                        .fetch_all(&mut *conn)
                        .await?,
                ),
            }
        })?;
        match rows {
            Some(rows) => Ok(inserted_jobs(&rows, jobs)?.pop()),
            None => Ok(None),
        }
    }

    async fn delete_completed(&self, scope: &str, retention: Duration, limit: i64) -> Result<u64> {
        let retention = retention.as_secs_f64();
        write_tx!(self, |conn| {
            sqlx::query(DELETE_COMPLETED.as_str())
                .bind(scope)
                .bind(retention)
                .bind(limit)
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
        // One statement text per allowlisted ordering and direction, all built on first use.
        static ORDERED: LazyLock<Vec<(OrderBy, bool, String)>> = LazyLock::new(|| {
            OrderBy::ALL
                .into_iter()
                .flat_map(|order_by| [(order_by, false), (order_by, true)])
                .map(|(order_by, descending)| {
                    let clause = order_by.clause(descending, "");
                    (
                        order_by,
                        descending,
                        LIST_JOBS.replace("{{order_by}}", &clause),
                    )
                })
                .collect()
        });
        let sql: &'static str = ORDERED
            .iter()
            .find(|(order_by, descending, _)| {
                (*order_by, *descending) == (filter.order_by, filter.descending)
            })
            .map(|(_, _, sql)| sql.as_str())
            .expect("every ordering has a statement");
        let (scope, filter) = (scope.to_owned(), filter.clone());
        self.query_jobs_read(sql, move |q| {
            bind_filter(q, &scope, &filter, states_json(filter.state_names()))
                .bind(filter.limit)
                .bind(filter.offset)
        })
        .await
    }

    async fn count_jobs(&self, scope: &str, filter: &JobFilter) -> Result<i64> {
        let states = states_json(filter.state_names());
        retry_busy!(bind_filter(
            sqlx::query_scalar(COUNT_JOBS.as_str()),
            scope,
            filter,
            states.clone()
        )
        .fetch_one(&self.readers))
    }

    async fn queue_counts(&self, scope: &str) -> Result<Vec<QueueCount>> {
        let rows = retry_busy!(sqlx::query(QUEUE_COUNTS.as_str())
            .bind(scope)
            .fetch_all(&self.readers))?;
        rows.iter()
            .map(|row| {
                Ok(QueueCount {
                    queue: row.try_get(0).map_err(db_error)?,
                    blocking: row.try_get(1).map_err(db_error)?,
                    state: JobState::parse(row.try_get(2).map_err(db_error)?)
                        .map_err(|e| Error::Database(e.to_string()))?,
                    count: row.try_get(3).map_err(db_error)?,
                    oldest_available_age: row.try_get(4).map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn blocked_heads(
        &self,
        scope: &str,
        actions: Option<&[String]>,
        limit: i64,
    ) -> Result<(Vec<HeldQueue>, i64)> {
        let actions = actions.map(|a| serde_json::to_string(a).expect("strings are JSON"));
        let rows = retry_busy!(sqlx::query(BLOCKED_HEADS.as_str())
            .bind(scope)
            .bind(actions.clone())
            .bind(limit)
            .fetch_all(&self.readers))?;
        let total = match rows.first() {
            Some(row) => row.try_get(BLOCKED_BY_COLUMN + 2).map_err(db_error)?,
            None => 0,
        };
        let heads = rows
            .iter()
            .map(|row| {
                Ok(HeldQueue {
                    head: job_from_row(row)?,
                    behind: row.try_get(BLOCKED_BY_COLUMN + 1).map_err(db_error)?,
                    paused: row.try_get(BLOCKED_BY_COLUMN + 3).map_err(db_error)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok((heads, total))
    }

    async fn bulk_change(
        &self,
        scope: &str,
        change: BulkChange,
        filter: &JobFilter,
    ) -> Result<u64> {
        let states = change.states(filter.states.as_deref())?;
        let states = states_json(Some(states.iter().map(|s| s.as_str()).collect()));
        write_tx!(self, |conn| {
            match change {
                BulkChange::Retry | BulkChange::Delete => {
                    let sql = if change == BulkChange::Retry {
                        &BULK_RETRY
                    } else {
                        &BULK_DELETE
                    };
                    bind_filter(sqlx::query(sql.as_str()), scope, filter, states.clone())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected()
                }
                BulkChange::Cancel => {
                    let ids: Vec<i64> = bind_filter(
                        sqlx::query_scalar(BULK_CANCEL.as_str()),
                        scope,
                        filter,
                        states.clone(),
                    )
                    .fetch_all(&mut *conn)
                    .await?;
                    // Cancelled heads hand their queues on.
                    sqlx::query(PROMOTE_HEADS.as_str())
                        .bind(serde_json::to_string(&ids).expect("ids are JSON"))
                        .execute(&mut *conn)
                        .await?;
                    // Running ones are asked of their workers: those of other processes see
                    // the commit (watch.rs); the Client tells this process's own.
                    let requested = bind_filter(
                        sqlx::query(BULK_REQUEST_CANCEL.as_str()),
                        scope,
                        filter,
                        states.clone(),
                    )
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    ids.len() as u64 + requested
                }
            }
        })
    }

    async fn retry_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        self.update_job(RETRY_JOB.as_str(), scope, id).await
    }

    async fn cancel_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        let row = write_tx!(self, |conn| {
            let mut row = sqlx::query(CANCEL_JOB.as_str())
                .bind(scope)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            if row.is_some() {
                // A cancelled head hands its queue on.
                sqlx::query(PROMOTE_HEADS.as_str())
                    .bind(format!("[{id}]"))
                    .execute(&mut *conn)
                    .await?;
            } else {
                // Running, perhaps: its worker is asked. Workers of other processes see the
                // commit (watch.rs); the Client tells this process's own.
                row = sqlx::query(REQUEST_CANCEL.as_str())
                    .bind(scope)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
            }
            row
        })?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn cancel_requested(&self, leases: &[Lease]) -> Result<Vec<i64>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<(i64, i64)> = leases.iter().map(|l| (l.id, l.token)).collect();
        let pairs = serde_json::to_string(&pairs).expect("pairs of integers are JSON");
        retry_busy!(sqlx::query_scalar(CANCEL_REQUESTED.as_str())
            .bind(pairs.clone())
            .fetch_all(&self.readers))
    }

    async fn pause_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()> {
        let (queue, prefix) = pattern.parts();
        write_tx!(self, |conn| {
            sqlx::query(PAUSE_QUEUE.as_str())
                .bind(scope)
                .bind(queue)
                .bind(prefix)
                .execute(&mut *conn)
                .await?;
        })
    }

    async fn resume_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()> {
        let (queue, prefix) = pattern.parts();
        // The commit wakes other processes' workers (watch.rs): a write even when nothing was
        // paused, as `notify` does.
        write_tx!(self, |conn| {
            sqlx::query(RESUME_QUEUE.as_str())
                .bind(scope)
                .bind(queue)
                .bind(prefix)
                .execute(&mut *conn)
                .await?;
            sqlx::query(NOTIFY.as_str()).execute(&mut *conn).await?;
        })
    }

    async fn paused_queues(&self, scope: &str) -> Result<Vec<PausedQueue>> {
        let rows: Vec<(String, bool, i64)> = retry_busy!(sqlx::query_as(PAUSED_QUEUES.as_str())
            .bind(scope)
            .fetch_all(&self.readers))?;
        rows.into_iter()
            .map(|(queue, prefix, paused_at)| {
                Ok(PausedQueue {
                    pattern: QueuePattern::from_parts(queue, prefix),
                    paused_at: micros(Some(paused_at))
                        .ok_or_else(|| Error::Database("time out of range".into()))?,
                })
            })
            .collect()
    }

    async fn notify(&self, _scope: &str) -> Result<()> {
        // Workers in this process are woken by the Client; others see the file change.
        write_tx!(self, |conn| {
            sqlx::query(NOTIFY.as_str()).execute(&mut *conn).await?;
        })
    }

    async fn listen(
        &self,
        _scope: &str,
        wake: Arc<Notify>,
        cancels: Arc<Notify>,
        stop: CancellationToken,
    ) {
        watch::watch_commits(
            &self.writer,
            &self.path,
            &self.own_commits,
            self.wakeup_interval,
            wake,
            cancels,
            stop,
        )
        .await;
    }

    fn insert_jobs_blocking(&self, scope: &str, jobs: &[NewJob]) -> Option<Result<Vec<Job>>> {
        use std::sync::atomic::Ordering;
        if jobs.is_empty() {
            return Some(Ok(Vec::new()));
        }
        let mut direct = self.direct.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Acquire) {
            *direct = None;
            return Some(Err(Error::Database(
                "SQLite: the App's connections are closed".into(),
            )));
        }
        let writer = match direct.as_mut() {
            Some(writer) => writer,
            None => match direct::DirectWriter::open(
                &self.path,
                self.synchronous,
                &INSERT_JOBS,
                &INSERT_UNIQUE_JOBS,
            ) {
                Ok(writer) => direct.insert(writer),
                Err(err) => return Some(Err(err)),
            },
        };
        let inserted = writer.insert(scope, jobs, &self.write_lock);
        if inserted.is_ok() {
            self.own_commits.fetch_add(1, Ordering::Relaxed);
        }
        if inserted.is_err() || self.closed.load(Ordering::Acquire) {
            // A fresh connection after a failed write (see write_tx!), or none after close.
            *direct = None;
        }
        Some(inserted)
    }

    async fn sqlite_synchronous(&self) -> Result<Option<String>> {
        let level: i64 = write_tx!(self, |conn| {
            sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await?
        })?;
        // The enqueue connection too, when open and not busy (this runs on the runtime, which
        // must not wait for an enqueue that waits for another process's lock).
        let direct = match self.direct.try_lock() {
            Ok(mut direct) => direct
                .as_mut()
                .map(|writer| writer.synchronous())
                .transpose()?,
            Err(_) => None,
        };
        let writer = Synchronous::from_pragma(level);
        match direct {
            Some(other) if other != writer => Err(Error::Database(format!(
                "SQLite connections disagree on synchronous: {writer} and {other}"
            ))),
            _ => Ok(Some(writer.to_owned())),
        }
    }

    fn caller_insert(&self, scope: &str, jobs: &[NewJob]) -> CallerStatement {
        if any_unique(jobs) {
            return CallerStatement::insert_unique(
                Backend::Sqlite,
                &CALLER_INSERT_UNIQUE,
                scope,
                jobs,
            );
        }
        CallerStatement::insert(Backend::Sqlite, &CALLER_INSERT, scope, jobs)
    }

    fn caller_complete(&self, lease: Lease) -> CallerStatement {
        CallerStatement::complete(Backend::Sqlite, &CALLER_COMPLETE, lease)
    }

    fn creates_schema_on_first_use(&self) -> bool {
        true
    }

    fn close(&self) {
        // Calling close() marks a pool closed at once, so no operation starts from here on;
        // the connections then close when the returned future runs. Outside a runtime
        // (nothing to run it on) they close as the pools' last handles drop.
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Ok(mut direct) = self.direct.try_lock() {
            // An enqueue in flight holds it, and drops the connection when it ends.
            *direct = None;
        }
        let closing = (self.writer.close(), self.readers.close());
        drop(closing);
        let (writer, readers) = (self.writer.clone(), self.readers.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::join!(writer.close(), readers.close());
            });
        }
    }
}
