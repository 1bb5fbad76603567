//! PostgreSQL store on tokio-postgres: a deadpool of connections with cached prepared
//! statements for the hot path, and a dedicated connection for LISTEN.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};

use crate::job::{
    any_unique, distinct_unique, unique_keys, unique_results, Job, JobState, NewJob, Params,
    Schedule, UniqueKey,
};
use crate::queues::QueuePattern;
use crate::store::{
    contains_pattern, migrate, Backend, BulkChange, CallerStatement, ClaimRequest, DueTimes,
    Finish, HeldQueue, JobFilter, Lease, PausedQueue, PeriodicTicks, QueueCount, Store,
    HEADS_PLACED_PER_STATEMENT,
};

/// The channel every insert announces on; the payload is the scope. Fixed text, never a name.
/// Cancel requests of running jobs are announced on `ferroq_cancels`, also with the scope.
const CHANNEL_LISTEN: &str = "LISTEN ferroq_jobs; LISTEN ferroq_cancels";
const CANCELS_CHANNEL: &str = "ferroq_cancels";
/// The LISTEN connection is probed after this long without a notification, and replaced when
/// the probe is not answered in time: a lost LISTEN connection is noticed within about five
/// seconds, and the look made after reconnecting finds what was announced meanwhile.
const LISTEN_PROBE_AFTER: Duration = Duration::from_secs(2);
const LISTEN_PROBE_ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Columns of a job row in the order `job_from_row` reads them. Every statement that returns
/// jobs aliases the table as `j`.
pub const JOB_COLUMNS: &str = "j.id, j.scope, j.queue, j.action, j.params::text AS params, \
    j.priority, j.sequence, j.state, j.attempts, j.max_attempts, j.timeout, j.max_backoff, \
    j.scheduled_at, j.attempted_at, j.attempted_by, j.next_attempt_at, j.done_at, \
    j.inserted_at, j.error, j.result::text AS result, j.lease_token, j.params_bytes, \
    j.cancel_requested_at, j.unique_key";

/// For listings: the job a waiting job of a blocking queue waits behind, the first unfinished
/// job of its queue (NULL for that job itself, and for every other kind of job). Read after
/// JOB_COLUMNS.
const BLOCKED_BY: &str = "(SELECT h.id FROM ferroq_jobs AS h \
    WHERE j.blocking AND j.state IN ('scheduled', 'available', 'retryable') \
      AND h.scope = j.scope AND h.queue = j.queue AND h.blocking \
      AND h.state IN ('scheduled', 'available', 'running', 'retryable') \
      AND (h.scheduled_at, h.sequence) < (j.scheduled_at, j.sequence) \
    ORDER BY h.scheduled_at, h.sequence LIMIT 1) AS blocked_by";

/// The WHERE clause of listings and bulk changes: $1 scope, then the filters ($2-$6), bound
/// by [`filter_params`].
const JOB_FILTER: &str = include_str!("sql/job_filter.sql");

/// A job row as one JSON object (see `store/caller_tx.rs`), for the caller's connection.
const JOB_JSON: &str = "json_build_object('id', j.id, 'scope', j.scope, 'queue', j.queue, \
    'action', j.action, 'params', j.params, 'priority', j.priority, 'sequence', j.sequence, \
    'state', j.state, 'attempts', j.attempts, 'max_attempts', j.max_attempts, \
    'timeout', j.timeout, 'max_backoff', j.max_backoff, \
    'scheduled_at', (extract(epoch FROM j.scheduled_at) * 1000000)::int8, \
    'attempted_at', (extract(epoch FROM j.attempted_at) * 1000000)::int8, \
    'attempted_by', j.attempted_by, \
    'next_attempt_at', (extract(epoch FROM j.next_attempt_at) * 1000000)::int8, \
    'done_at', (extract(epoch FROM j.done_at) * 1000000)::int8, \
    'inserted_at', (extract(epoch FROM j.inserted_at) * 1000000)::int8, \
    'error', j.error, 'result', j.result, 'lease_token', j.lease_token, \
    'cancel_requested_at', (extract(epoch FROM j.cancel_requested_at) * 1000000)::int8, \
    'params_bytes', encode(j.params_bytes, 'hex'), 'unique_key', j.unique_key, \
    'duplicate', j.duplicates > 0)::text";

macro_rules! pg_sql {
    ($name:ident, $file:literal) => {
        sql!($name = $file, "{{job_columns}}" => JOB_COLUMNS,
            "{{cancelled_while_running}}" => &crate::store::cancelled_while_running_literal());
    };
}

/// What an insert generates; the rest of each job is what was sent (see `NewJob::inserted`).
/// Read back in this order by `insert_jobs`.
const INSERTED_COLUMNS: &str = "j.id, j.sequence, j.state, j.scheduled_at, j.inserted_at";
sql!(INSERT_JOBS = "insert_jobs.sql",
    "{{batch}}" => include_str!("sql/insert_batch_arrays.sql"),
    "{{unique_arrays}}" => "",
    "{{unique_names}}" => "",
    "{{placement}}" => include_str!("sql/insert_placement_pool.sql"),
    "{{job_columns}}" => INSERTED_COLUMNS);
// A batch without blocking jobs has nothing to place: the placement step (a window over the
// batch and a lookup per blocking queue) is left out.
sql!(INSERT_CONCURRENT_JOBS = "insert_jobs.sql",
    "{{batch}}" => include_str!("sql/insert_batch_arrays.sql"),
    "{{unique_arrays}}" => "",
    "{{unique_names}}" => "",
    "{{placement}}" => "SELECT NULL::int8 AS ord, NULL::bool AS head WHERE false",
    "{{job_columns}}" => INSERTED_COLUMNS);
pg_sql!(RESOLVE_HEADS, "resolve_heads.sql");
pg_sql!(PROMOTE_HEADS, "promote_heads.sql");
pg_sql!(CONCURRENT_QUEUES_WAITING, "concurrent_queues_waiting.sql");
pg_sql!(LOCK_CONCURRENT_QUEUES, "lock_concurrent_queues.sql");
pg_sql!(CLAIM, "claim.sql");
pg_sql!(FINISH_JOBS, "finish_jobs.sql");
pg_sql!(EXTEND_LEASES, "extend_leases.sql");
pg_sql!(HOLDS_LEASE, "holds_lease.sql");
pg_sql!(RESCUE_EXPIRED, "rescue_expired.sql");
pg_sql!(NEXT_RUN_IN, "next_run_in.sql");
pg_sql!(DELETE_COMPLETED, "delete_completed.sql");
pg_sql!(PERIODIC_TICKS, "periodic_ticks.sql");
pg_sql!(START_PERIODIC, "start_periodic.sql");
pg_sql!(ADVANCE_TICK, "advance_tick.sql");
sql!(GET_JOB = "get_job.sql", "{{job_columns}}" => JOB_COLUMNS, "{{blocked_by}}" => BLOCKED_BY);
sql!(LIST_JOBS = "list_jobs.sql", "{{job_columns}}" => JOB_COLUMNS, "{{blocked_by}}" => BLOCKED_BY,
    "{{filter}}" => JOB_FILTER);
sql!(COUNT_JOBS = "count_jobs.sql", "{{filter}}" => JOB_FILTER);
pg_sql!(QUEUE_COUNTS, "queue_counts.sql");
pg_sql!(BLOCKED_HEADS, "blocked_heads.sql");
sql!(BULK_RETRY = "bulk_retry.sql", "{{filter}}" => JOB_FILTER,
    "{{retry_set}}" => include_str!("sql/retry_set.sql"));
sql!(BULK_CANCEL = "bulk_cancel.sql", "{{filter}}" => JOB_FILTER);
sql!(BULK_REQUEST_CANCEL = "bulk_request_cancel.sql", "{{filter}}" => JOB_FILTER);
sql!(BULK_DELETE = "bulk_delete.sql", "{{filter}}" => JOB_FILTER);
sql!(RETRY_JOB = "retry_job.sql", "{{job_columns}}" => JOB_COLUMNS,
    "{{retry_set}}" => include_str!("sql/retry_set.sql"));
pg_sql!(CANCEL_JOB, "cancel_job.sql");
pg_sql!(REQUEST_CANCEL, "request_cancel.sql");
pg_sql!(NOTIFY_CANCEL, "notify_cancel.sql");
pg_sql!(CANCEL_REQUESTED, "cancel_requested.sql");
pg_sql!(PAUSE_QUEUE, "pause_queue.sql");
pg_sql!(RESUME_QUEUE, "resume_queue.sql");
pg_sql!(PAUSED_QUEUES, "paused_queues.sql");
pg_sql!(NOTIFY, "notify.sql");
pg_sql!(MIGRATE_LOCK, "migrate_lock.sql");
pg_sql!(
    MIGRATE_CREATE_VERSION_TABLE,
    "migrate_create_version_table.sql"
);
pg_sql!(MIGRATE_APPLIED_VERSIONS, "migrate_applied_versions.sql");
pg_sql!(MIGRATE_RECORD_VERSION, "migrate_record_version.sql");
pg_sql!(CALLER_COMPLETE, "caller_complete.sql");
sql!(CALLER_INSERT = "insert_jobs.sql",
    "{{batch}}" => include_str!("sql/insert_batch_json.sql"),
    "{{unique_fields}}" => "",
    "{{placement}}" => include_str!("sql/insert_placement_caller.sql"),
    "{{job_columns}}" => JOB_JSON);
/// Where a unique insert puts whether a row was there before (after JOB_COLUMNS).
const DUPLICATE_COLUMN: &str = "duplicate";
sql!(INSERT_UNIQUE_JOBS = "insert_unique_jobs.sql",
    "{{batch}}" => include_str!("sql/insert_batch_arrays.sql"),
    "{{unique_arrays}}" => ", $13::text[], $14::int8[], $15::int4[]",
    "{{unique_names}}" => ", unique_key, unique_period, unique_states",
    "{{job_columns}}" => &format!("{JOB_COLUMNS}, j.duplicates > 0 AS {DUPLICATE_COLUMN}"));
sql!(CALLER_INSERT_UNIQUE = "insert_unique_jobs.sql",
    "{{batch}}" => include_str!("sql/insert_batch_json.sql"),
    "{{unique_fields}}" => "b.job ->> 12 AS unique_key, (b.job ->> 13)::int8 AS unique_period, \
        (b.job ->> 14)::int4 AS unique_states, ",
    "{{job_columns}}" => JOB_JSON);

/// Opens a claim's transaction. A claim need not be durable: if the server loses it in a
/// crash, the job is simply available again (at least once). Not waiting for its WAL flush
/// takes a disk sync off every claim; the outcome's commit, which is durable, flushes it anyway.
const BEGIN_CLAIM: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: Pool,
    /// Kept to open the LISTEN connection outside the pool.
    pg_config: tokio_postgres::Config,
    /// Bound on opening the LISTEN connection, handshake included.
    connect_timeout: Duration,
}

impl PgStore {
    /// Build the pool. No connection is made until the first operation.
    pub fn new(config: &ClientConfig) -> Result<PgStore> {
        let mut pg_config = tokio_postgres::Config::from_str(&config.database_url)
            .map_err(|e| Error::Configuration(format!("invalid PostgreSQL URL: {e}")))?;
        pg_config.connect_timeout(config.connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("ferroq");
        }
        // A peer that vanished (no more acknowledgements) is found by the kernel: unanswered
        // data is given up after statement_timeout, an idle connection is probed after 5 s.
        // A peer that still acknowledges but never answers is found by the store's own
        // deadlines (`store::deadline`) and, for LISTEN, by its probe.
        pg_config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(config.statement_timeout);
        // Every statement is prepared once per connection and has the same shape on every
        // call. Left to choose, the server keeps re-planning the claim as a custom plan
        // (0.6-1 ms of planning for a 0.2 ms execution), so plans are generic from the start.
        // ferroq's transactions never wait on the client between statements, so one left idle
        // is a connection ferroq abandoned (past its deadline, or cut off mid-pipeline): the
        // server ends it after statement_timeout rather than keep its row and queue locks.
        let ours = format!(
            "-c plan_cache_mode=force_generic_plan -c idle_in_transaction_session_timeout={}",
            config.statement_timeout.as_millis().max(1)
        );
        let options = match pg_config.get_options() {
            Some(existing) => format!("{existing} {ours}"),
            None => ours,
        };
        pg_config.options(options);
        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Configuration(format!("cannot build connection pool: {e}")))?;
        Ok(PgStore {
            pool,
            pg_config,
            connect_timeout: config.connect_timeout,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|err| match err {
            // A new connection failed (a pooled one that fails its check is replaced): say
            // where to, and why, rather than only the driver's "error connecting to server".
            deadpool_postgres::PoolError::Backend(err) => self.connect_error(&err),
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => {
                Error::Database(format!(
                    "could not connect to PostgreSQL at {}: no answer within {:?} (App(connect_timeout=...))",
                    self.server(),
                    self.connect_timeout
                ))
            }
            other => other.into(),
        })
    }

    /// The server(s) the URL names, as `host:port`, to say where a connection failed.
    fn server(&self) -> String {
        let ports = self.pg_config.get_ports();
        let port_of = |i: usize| match ports {
            [] => 5432,
            [only] => *only,
            many => many.get(i).copied().unwrap_or(5432),
        };
        let hosts: Vec<String> = self
            .pg_config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{}", port_of(i)),
                tokio_postgres::config::Host::Unix(dir) => {
                    format!("{} (port {})", dir.display(), port_of(i))
                }
            })
            .collect();
        if hosts.is_empty() {
            format!("localhost:{}", port_of(0))
        } else {
            hosts.join(", ")
        }
    }

    /// A connection that could not be made: where to, and the cause (the OS error, or the
    /// server's refusal: wrong password, no such database).
    fn connect_error(&self, err: &tokio_postgres::Error) -> Error {
        let cause = match err.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => {
                let mut innermost: &dyn std::error::Error = err;
                while let Some(source) = innermost.source() {
                    innermost = source;
                }
                let text = innermost.to_string();
                let mut chars = text.chars();
                match chars.next() {
                    Some(first) => first.to_lowercase().chain(chars).collect(),
                    None => err.to_string(),
                }
            }
        };
        Error::Database(format!(
            "could not connect to PostgreSQL at {}: {cause}",
            self.server()
        ))
    }

    /// One claim transaction: place new blocking jobs (how many were looked at comes back),
    /// then claim.
    async fn claim_round(&self, request: &ClaimRequest<'_>) -> Result<ClaimRound> {
        let client = self.client().await?;
        let ttl = request.lease_ttl.as_secs_f64();
        let limit = request.limit as i64;
        // Queues served by name pattern exist once a job names them: look them up first.
        let waiting: Vec<String> = if request.queues.has_concurrent_patterns() {
            let statement = client.prepare_cached(&CONCURRENT_QUEUES_WAITING).await?;
            client
                .query(&statement, &[&request.scope])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect()
        } else {
            Vec::new()
        };
        let concurrent = request.queues.concurrent_to_claim(&waiting);
        let queues: Vec<&str> = concurrent.iter().map(|(q, _)| q.as_str()).collect();
        let caps: Vec<i64> = concurrent.iter().map(|(_, c)| *c as i64).collect();
        let (blocking_names, blocking_prefixes) = request.queues.blocking_filter();
        let resolve = client.prepare_cached(&RESOLVE_HEADS).await?;
        let lock = client.prepare_cached(&LOCK_CONCURRENT_QUEUES).await?;
        let claim = client.prepare_cached(&CLAIM).await?;
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&request.scope, &queues];
        let blocking_limit = request.blocking_limit as i64;
        let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
            &request.scope,
            &queues,
            &caps,
            &limit,
            &request.worker_name,
            &ttl,
            &request.actions,
            &blocking_names,
            &blocking_prefixes,
            &blocking_limit,
        ];
        // One round trip: the requests are sent back to back (tokio-postgres sends in order of
        // first poll) and the server runs them in order, each statement with its own snapshot:
        // the claim sees the heads just resolved, and is taken after the queue locks are held.
        // If one fails, the rest fail or roll back on the server; the connection is then not
        // returned to the pool.
        let resolve_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&request.scope, &HEADS_PLACED_PER_STATEMENT];
        let pipelined = tokio::try_join!(
            client.batch_execute(BEGIN_CLAIM),
            client.query_one(&resolve, &resolve_params),
            client.query(&lock, &lock_params),
            client.query(&claim, &claim_params),
            client.batch_execute("COMMIT"),
        );
        match pipelined {
            Ok((_, resolved, _, rows, _)) => Ok(ClaimRound {
                looked_at: resolved.get(0),
                skipped_placing: resolved.get(1),
                jobs: rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?,
            }),
            Err(err) => {
                drop(deadpool_postgres::Object::take(client));
                Err(err.into())
            }
        }
    }

    /// `insert_jobs` for a batch with unique jobs (insert_unique_jobs.sql): each distinct key
    /// once, the rows back in input order.
    async fn insert_unique_jobs(&self, scope: &str, jobs: &[NewJob]) -> Result<Vec<Job>> {
        let sent = distinct_unique(jobs);
        let batch = InsertBatch::new(&sent);
        fn unique(job: &NewJob) -> Option<&crate::job::Uniqueness> {
            job.unique.as_ref()
        }
        let keys: Vec<Option<&str>> = sent
            .iter()
            .map(|j| unique(j).map(|u| u.key.key.as_str()))
            .collect();
        let periods: Vec<Option<i64>> = sent
            .iter()
            .map(|j| unique(j).and_then(|u| u.key.period))
            .collect();
        let states: Vec<Option<i32>> = sent.iter().map(|j| unique(j).map(|u| u.states)).collect();
        let mut params = batch.params(&scope).to_vec();
        params.extend([&keys as &(dyn ToSql + Sync), &periods, &states]);
        let client = self.client().await?;
        let statement = client.prepare_cached(&INSERT_UNIQUE_JOBS).await?;
        let rows = client.query(&statement, &params).await?;
        let rows = rows
            .iter()
            .map(|row| {
                let mut job = job_from_row(row)?;
                job.duplicate = row.try_get(DUPLICATE_COLUMN)?;
                Ok(job)
            })
            .collect::<Result<Vec<_>>>()?;
        unique_results(&unique_keys(jobs), rows)
    }

    async fn query_jobs(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Job>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        let rows = client.query(&statement, params).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// One LISTEN session: returns Ok when stopped, Err when the connection is lost.
    async fn listen_once(
        &self,
        scope: &str,
        wake: &Notify,
        cancels: &Notify,
        stop: &CancellationToken,
    ) -> Result<()> {
        // `connect_timeout` of the config bounds the TCP connect only; a server that accepts
        // and never answers the handshake is bounded here.
        let (client, mut connection) =
            tokio::time::timeout(self.connect_timeout, self.pg_config.connect(NoTls))
                .await
                .map_err(|_| {
                    Error::Database(format!(
                        "no answer to the LISTEN connection's handshake within {:?}",
                        self.connect_timeout
                    ))
                })?
                .map_err(|err| self.connect_error(&err))?;
        // (whether on the cancels channel, payload)
        let (payloads, mut received) = tokio::sync::mpsc::unbounded_channel::<(bool, String)>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let cancel = n.channel() == CANCELS_CHANNEL;
                        if payloads.send((cancel, n.payload().to_owned())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let session = async {
            client.batch_execute(CHANNEL_LISTEN).await?;
            // Anything announced while we were not listening is found by one look now.
            wake.notify_one();
            cancels.notify_one();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    payload = received.recv() => match payload {
                        Some((false, p)) if p == scope => wake.notify_one(),
                        Some((true, p)) if p == scope => cancels.notify_one(),
                        Some(_) => {}
                        None => return Err(Error::Database("LISTEN connection closed".into())),
                    },
                    // A connection that went silent without closing shows itself on the next
                    // round trip: probed whenever no notification came for a while.
                    _ = tokio::time::sleep(LISTEN_PROBE_AFTER) => {
                        tokio::time::timeout(LISTEN_PROBE_ANSWER_WITHIN, client.simple_query("SELECT 1"))
                            .await
                            .map_err(|_| Error::Database("LISTEN connection stopped answering".into()))??;
                    }
                }
            }
        };
        let outcome = session.await;
        driver.abort();
        outcome
    }
}

/// One claim transaction's answer: how many new blocking jobs it looked at to place, whether
/// it skipped some another claimer was placing, and the jobs it claimed.
struct ClaimRound {
    looked_at: i64,
    skipped_placing: bool,
    jobs: Vec<Job>,
}

/// A claim that skipped new jobs another claimer was placing looks again after this, at most
/// this many times (see `claim`).
const LOOK_AGAIN_AFTER_PLACING: Duration = Duration::from_millis(20);
const LOOKS_AFTER_PLACING: u32 = 5;

/// Where listings put BLOCKED_BY: right after JOB_COLUMNS.
const BLOCKED_BY_COLUMN: usize = 24;

fn job_from_row(row: &Row) -> Result<Job> {
    Ok(Job {
        id: row.try_get(0)?,
        scope: row.try_get(1)?,
        queue: row.try_get(2)?,
        action: row.try_get(3)?,
        params: Params::from_columns(row.try_get(4)?, row.try_get(21)?),
        priority: row.try_get(5)?,
        sequence: row.try_get(6)?,
        state: JobState::parse(row.try_get(7)?).map_err(|e| Error::Database(e.to_string()))?,
        attempts: row.try_get(8)?,
        max_attempts: row.try_get(9)?,
        timeout: row.try_get(10)?,
        max_backoff: row.try_get(11)?,
        scheduled_at: row.try_get(12)?,
        attempted_at: row.try_get(13)?,
        attempted_by: row.try_get(14)?,
        next_attempt_at: row.try_get(15)?,
        done_at: row.try_get(16)?,
        inserted_at: row.try_get(17)?,
        error: row.try_get(18)?,
        result: row.try_get(19)?,
        lease_token: row.try_get(20)?,
        cancel_requested_at: row.try_get(22)?,
        blocked_by: match row.columns().get(BLOCKED_BY_COLUMN) {
            Some(column) if column.name() == "blocked_by" => row.try_get(BLOCKED_BY_COLUMN)?,
            _ => None,
        },
        unique: row
            .try_get::<_, Option<&str>>(23)?
            .map(UniqueKey::from_stored)
            .transpose()?,
        duplicate: false,
    })
}

/// A batch of `insert_jobs.sql` as parallel arrays, and what its rows give back: shared by
/// `insert_jobs` and the insert of a periodic tick, which runs in a transaction of its own.
struct InsertBatch<'a> {
    jobs: &'a [NewJob],
    queues: Vec<&'a str>,
    actions: Vec<&'a str>,
    params: Vec<&'a str>,
    params_bytes: Vec<Option<&'a [u8]>>,
    blocking: Vec<bool>,
    priorities: Vec<i32>,
    max_attempts: Vec<i32>,
    timeouts: Vec<f64>,
    max_backoffs: Vec<f64>,
    at: Vec<Option<DateTime<Utc>>>,
    delays: Vec<Option<f64>>,
}

impl<'a> InsertBatch<'a> {
    fn new(jobs: &'a [NewJob]) -> InsertBatch<'a> {
        let (at, delays) = jobs
            .iter()
            .map(|j| match j.schedule {
                Schedule::Now => (None, None),
                Schedule::At(t) => (Some(t), None),
                Schedule::In(d) => (None, Some(d)),
            })
            .unzip();
        InsertBatch {
            jobs,
            queues: jobs.iter().map(|j| j.queue.as_str()).collect(),
            actions: jobs.iter().map(|j| j.action.as_str()).collect(),
            params: jobs.iter().map(|j| j.params.json_column()).collect(),
            params_bytes: jobs.iter().map(|j| j.params.bytes_column()).collect(),
            blocking: jobs.iter().map(|j| j.blocking).collect(),
            priorities: jobs.iter().map(|j| j.priority).collect(),
            max_attempts: jobs.iter().map(|j| j.max_attempts).collect(),
            timeouts: jobs.iter().map(|j| j.timeout).collect(),
            max_backoffs: jobs.iter().map(|j| j.max_backoff).collect(),
            at,
            delays,
        }
    }

    fn statement(&self) -> &'static str {
        if self.blocking.iter().any(|b| *b) {
            &INSERT_JOBS
        } else {
            &INSERT_CONCURRENT_JOBS
        }
    }

    fn params<'b>(
        &'b self,
        scope: &'b &str,
    ) -> [&'b (dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            scope,
            &self.queues,
            &self.actions,
            &self.params,
            &self.blocking,
            &self.priorities,
            &self.max_attempts,
            &self.timeouts,
            &self.max_backoffs,
            &self.at,
            &self.delays,
            &self.params_bytes,
        ]
    }

    /// The jobs as inserted, in input order, from the rows the statement returned.
    fn inserted(&self, scope: &str, rows: &[Row]) -> Result<Vec<Job>> {
        let mut generated = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<_, i64>(1)?,
                    row.try_get::<_, i64>(0)?,
                    JobState::parse(row.try_get(2)?).map_err(|e| Error::Database(e.to_string()))?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // Sequence follows input order (the INSERT ... SELECT is ordered by ordinality).
        generated.sort_by_key(|(sequence, ..)| *sequence);
        if generated.len() != self.jobs.len() {
            return Err(Error::Database(format!(
                "the insert of {} jobs returned {} rows",
                self.jobs.len(),
                generated.len()
            )));
        }
        Ok(self
            .jobs
            .iter()
            .zip(generated)
            .map(|(job, (sequence, id, state, scheduled_at, inserted_at))| {
                job.inserted(scope, id, sequence, state, scheduled_at, inserted_at)
            })
            .collect())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<Vec<i32>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(MIGRATE_LOCK.as_str(), &[]).await?;
        tx.batch_execute(MIGRATE_CREATE_VERSION_TABLE.as_str())
            .await?;
        let applied: Vec<i32> = tx
            .query(MIGRATE_APPLIED_VERSIONS.as_str(), &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut newly_applied = Vec::new();
        for migration in migrate::pending(&applied) {
            tx.batch_execute(migration.postgres).await?;
            tx.execute(
                MIGRATE_RECORD_VERSION.as_str(),
                &[&migration.version, &migration.name],
            )
            .await?;
            newly_applied.push(migration.version);
        }
        tx.commit().await?;
        Ok(newly_applied)
    }

    async fn insert_jobs(&self, scope: &str, jobs: &[NewJob]) -> Result<Vec<Job>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        if any_unique(jobs) {
            return self.insert_unique_jobs(scope, jobs).await;
        }
        let batch = InsertBatch::new(jobs);
        let client = self.client().await?;
        let statement = client.prepare_cached(batch.statement()).await?;
        let rows = client.query(&statement, &batch.params(&scope)).await?;
        batch.inserted(scope, &rows)
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Job>> {
        let ClaimRound {
            looked_at,
            mut skipped_placing,
            mut jobs,
        } = self.claim_round(request).await?;
        // Another claimer was placing new blocking jobs: once it commits, heads it did not
        // take may be ready, and nothing wakes this worker for them. Its transaction is short.
        let mut looks = 0;
        while skipped_placing && jobs.len() < request.limit && looks < LOOKS_AFTER_PLACING {
            looks += 1;
            tokio::time::sleep(LOOK_AGAIN_AFTER_PLACING).await;
            let rest = ClaimRequest {
                limit: request.limit - jobs.len(),
                blocking_limit: request.blocking_limit.saturating_sub(jobs.len()),
                ..request.clone()
            };
            let round = self.claim_round(&rest).await?;
            skipped_placing = round.skipped_placing;
            jobs.extend(round.jobs);
        }
        if looked_at >= HEADS_PLACED_PER_STATEMENT && jobs.len() < request.limit {
            // More new blocking jobs than one statement places: place them all, then claim
            // the rest of the batch.
            let client = self.client().await?;
            let resolve = client.prepare_cached(&RESOLVE_HEADS).await?;
            while client
                .query_one(&resolve, &[&request.scope, &HEADS_PLACED_PER_STATEMENT])
                .await?
                .get::<_, i64>(0)
                >= HEADS_PLACED_PER_STATEMENT
            {}
            drop(client);
            let rest = ClaimRequest {
                limit: request.limit - jobs.len(),
                // As if every job claimed so far took a free slot: never more heads than slots.
                blocking_limit: request.blocking_limit.saturating_sub(jobs.len()),
                ..request.clone()
            };
            jobs.extend(self.claim_round(&rest).await?.jobs);
        }
        Ok(jobs)
    }

    async fn finish(&self, finishes: &[Finish]) -> Result<Vec<i64>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = finishes.iter().map(|f| f.lease.id).collect();
        let tokens: Vec<i64> = finishes.iter().map(|f| f.lease.token).collect();
        let states: Vec<&str> = finishes.iter().map(|f| f.state.as_str()).collect();
        let results: Vec<Option<&str>> = finishes.iter().map(|f| f.result.as_deref()).collect();
        let errors: Vec<Option<&str>> = finishes.iter().map(|f| f.error.as_deref()).collect();
        let delays: Vec<Option<f64>> = finishes.iter().map(|f| f.delay).collect();
        let refunds: Vec<i32> = finishes.iter().map(|f| f.refund_attempt as i32).collect();
        let client = self.client().await?;
        let finish = client.prepare_cached(&FINISH_JOBS).await?;
        let promote = client.prepare_cached(&PROMOTE_HEADS).await?;
        // One round trip, as in claim(). Every id is handed to promote_heads.sql, also those
        // whose attempt was fenced out: a job its performer completed in its own transaction
        // has left its queue too.
        let finish_params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
            [&ids, &tokens, &states, &results, &errors, &delays, &refunds];
        let promote_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let pipelined = tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.query(&finish, &finish_params),
            client.execute(&promote, &promote_params),
            client.batch_execute("COMMIT"),
        );
        match pipelined {
            Ok((_, rows, _, _)) => Ok(rows.iter().map(|r| r.get(0)).collect()),
            Err(err) => {
                drop(deadpool_postgres::Object::take(client));
                Err(err.into())
            }
        }
    }

    async fn extend_leases(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<i64>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = leases.iter().map(|l| l.id).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let client = self.client().await?;
        let statement = client.prepare_cached(&EXTEND_LEASES).await?;
        let rows = client
            .query(&statement, &[&ids, &tokens, &ttl.as_secs_f64()])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn holds_lease(&self, lease: Lease) -> Result<bool> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&HOLDS_LEASE).await?;
        let row = client
            .query_opt(&statement, &[&lease.id, &lease.token])
            .await?;
        Ok(row.is_some())
    }

    async fn rescue_expired(&self, scope: &str) -> Result<u64> {
        let mut client = self.client().await?;
        let rescue = client.prepare_cached(&RESCUE_EXPIRED).await?;
        let promote = client.prepare_cached(&PROMOTE_HEADS).await?;
        let transaction = client.transaction().await?;
        let ids: Vec<i64> = transaction
            .query(&rescue, &[&scope])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !ids.is_empty() {
            transaction.execute(&promote, &[&ids]).await?;
        }
        transaction.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn next_run_in(&self, scope: &str) -> Result<DueTimes> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&NEXT_RUN_IN).await?;
        let row = client.query_one(&statement, &[&scope]).await?;
        Ok(DueTimes {
            next_in: row.try_get(0)?,
            last_due_ago: row.try_get(1)?,
        })
    }

    async fn periodic_ticks(&self, scope: &str) -> Result<PeriodicTicks> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&PERIODIC_TICKS).await?;
        let rows = client.query(&statement, &[&scope]).await?;
        let now = match rows.first() {
            Some(row) => row.try_get(0)?,
            None => return Err(Error::Database("the clock read returned no row".into())),
        };
        let mut last_ticks = HashMap::new();
        for row in &rows {
            if let Some(name) = row.try_get::<_, Option<String>>(1)? {
                last_ticks.insert(name, row.try_get(2)?);
            }
        }
        Ok(PeriodicTicks { now, last_ticks })
    }

    async fn start_periodic(&self, scope: &str, name: &str, tick: DateTime<Utc>) -> Result<()> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&START_PERIODIC).await?;
        client.execute(&statement, &[&scope, &name, &tick]).await?;
        Ok(())
    }

    async fn enqueue_tick(
        &self,
        scope: &str,
        name: &str,
        tick: DateTime<Utc>,
        job: &NewJob,
    ) -> Result<Option<Job>> {
        let jobs = std::slice::from_ref(job);
        let batch = InsertBatch::new(jobs);
        let mut client = self.client().await?;
        let advance = client.prepare_cached(&ADVANCE_TICK).await?;
        let insert = client.prepare_cached(batch.statement()).await?;
        let transaction = client.transaction().await?;
        if transaction
            .query_opt(&advance, &[&scope, &name, &tick])
            .await?
            .is_none()
        {
            // Another worker enqueued this tick (or a later one) first.
            transaction.rollback().await?;
            return Ok(None);
        }
        let rows = transaction.query(&insert, &batch.params(&scope)).await?;
        transaction.commit().await?;
        Ok(batch.inserted(scope, &rows)?.pop())
    }

    async fn delete_completed(&self, scope: &str, retention: Duration, limit: i64) -> Result<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&DELETE_COMPLETED).await?;
        Ok(client
            .execute(&statement, &[&scope, &retention.as_secs_f64(), &limit])
            .await?)
    }

    async fn get_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        Ok(self.query_jobs(&GET_JOB, &[&scope, &id]).await?.pop())
    }

    async fn list_jobs(&self, scope: &str, filter: &JobFilter) -> Result<Vec<Job>> {
        let sql = LIST_JOBS.replace(
            "{{order_by}}",
            &filter.order_by.clause(filter.descending, "j."),
        );
        let bound = FilterParams::new(scope, filter, filter.state_names());
        let mut params = bound.params();
        params.extend([&filter.limit as &(dyn ToSql + Sync), &filter.offset]);
        self.query_jobs(&sql, &params).await
    }

    async fn count_jobs(&self, scope: &str, filter: &JobFilter) -> Result<i64> {
        let bound = FilterParams::new(scope, filter, filter.state_names());
        let client = self.client().await?;
        let statement = client.prepare_cached(&COUNT_JOBS).await?;
        let row = client.query_one(&statement, &bound.params()).await?;
        Ok(row.get(0))
    }

    async fn queue_counts(&self, scope: &str) -> Result<Vec<QueueCount>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&QUEUE_COUNTS).await?;
        client
            .query(&statement, &[&scope])
            .await?
            .iter()
            .map(|row| {
                Ok(QueueCount {
                    queue: row.try_get(0)?,
                    blocking: row.try_get(1)?,
                    state: JobState::parse(row.try_get(2)?)
                        .map_err(|e| Error::Database(e.to_string()))?,
                    count: row.try_get(3)?,
                    oldest_available_age: row.try_get(4)?,
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
        let client = self.client().await?;
        let statement = client.prepare_cached(&BLOCKED_HEADS).await?;
        let rows = client
            .query(&statement, &[&scope, &actions, &limit])
            .await?;
        let total = rows
            .first()
            .map(|row| row.try_get(BLOCKED_BY_COLUMN + 2))
            .transpose()?;
        let heads = rows
            .iter()
            .map(|row| {
                Ok(HeldQueue {
                    head: job_from_row(row)?,
                    behind: row.try_get(BLOCKED_BY_COLUMN + 1)?,
                    paused: row.try_get(BLOCKED_BY_COLUMN + 3)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok((heads, total.unwrap_or(0)))
    }

    async fn bulk_change(
        &self,
        scope: &str,
        change: BulkChange,
        filter: &JobFilter,
    ) -> Result<u64> {
        let states = change.states(filter.states.as_deref())?;
        let bound = FilterParams::new(
            scope,
            filter,
            Some(states.iter().map(|s| s.as_str()).collect()),
        );
        let mut client = self.client().await?;
        match change {
            BulkChange::Retry | BulkChange::Delete => {
                let sql = if change == BulkChange::Retry {
                    &*BULK_RETRY
                } else {
                    &*BULK_DELETE
                };
                let statement = client.prepare_cached(sql).await?;
                Ok(client.execute(&statement, &bound.params()).await?)
            }
            BulkChange::Cancel => {
                let cancel = client.prepare_cached(&BULK_CANCEL).await?;
                let promote = client.prepare_cached(&PROMOTE_HEADS).await?;
                let request = client.prepare_cached(&BULK_REQUEST_CANCEL).await?;
                let transaction = client.transaction().await?;
                let ids: Vec<i64> = transaction
                    .query(&cancel, &bound.params())
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                transaction.execute(&promote, &[&ids]).await?;
                let requested = transaction.execute(&request, &bound.params()).await?;
                if requested > 0 {
                    // Their workers are told at COMMIT.
                    let announce = transaction.prepare_cached(&NOTIFY_CANCEL).await?;
                    transaction.query(&announce, &[&scope]).await?;
                }
                transaction.commit().await?;
                Ok(ids.len() as u64 + requested)
            }
        }
    }

    async fn retry_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        Ok(self.query_jobs(&RETRY_JOB, &[&scope, &id]).await?.pop())
    }

    async fn cancel_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        let mut client = self.client().await?;
        let cancel = client.prepare_cached(&CANCEL_JOB).await?;
        let promote = client.prepare_cached(&PROMOTE_HEADS).await?;
        let transaction = client.transaction().await?;
        let mut changed = transaction.query(&cancel, &[&scope, &id]).await?;
        if changed.is_empty() {
            // Running, perhaps: its worker is asked, and told at COMMIT.
            let request = transaction.prepare_cached(&REQUEST_CANCEL).await?;
            changed = transaction.query(&request, &[&scope, &id]).await?;
            if !changed.is_empty() {
                let announce = transaction.prepare_cached(&NOTIFY_CANCEL).await?;
                transaction.query(&announce, &[&scope]).await?;
            }
        } else {
            transaction.execute(&promote, &[&vec![id]]).await?;
        }
        transaction.commit().await?;
        changed.iter().map(job_from_row).next().transpose()
    }

    async fn cancel_requested(&self, leases: &[Lease]) -> Result<Vec<i64>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = leases.iter().map(|l| l.id).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let client = self.client().await?;
        let statement = client.prepare_cached(&CANCEL_REQUESTED).await?;
        let rows = client.query(&statement, &[&ids, &tokens]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn pause_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()> {
        let (queue, prefix) = pattern.parts();
        let client = self.client().await?;
        let statement = client.prepare_cached(&PAUSE_QUEUE).await?;
        client
            .execute(&statement, &[&scope, &queue, &prefix])
            .await?;
        Ok(())
    }

    async fn resume_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()> {
        let (queue, prefix) = pattern.parts();
        let mut client = self.client().await?;
        let resume = client.prepare_cached(&RESUME_QUEUE).await?;
        let notify = client.prepare_cached(&NOTIFY).await?;
        // The announcement goes out at the commit that makes the queue claimable.
        let transaction = client.transaction().await?;
        transaction
            .execute(&resume, &[&scope, &queue, &prefix])
            .await?;
        transaction.query(&notify, &[&scope]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn paused_queues(&self, scope: &str) -> Result<Vec<PausedQueue>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&PAUSED_QUEUES).await?;
        let rows = client.query(&statement, &[&scope]).await?;
        rows.iter()
            .map(|row| {
                Ok(PausedQueue {
                    pattern: QueuePattern::from_parts(row.try_get(0)?, row.try_get(1)?),
                    paused_at: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn notify(&self, scope: &str) -> Result<()> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&NOTIFY).await?;
        client.query(&statement, &[&scope]).await?;
        Ok(())
    }

    async fn listen(
        &self,
        scope: &str,
        wake: Arc<Notify>,
        cancels: Arc<Notify>,
        stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen_once(scope, &wake, &cancels, &stop).await {
                Ok(()) => return,
                Err(err) => {
                    log::warn!(
                        "ferroq: LISTEN connection lost ({err}); reconnecting in {backoff:?}"
                    );
                    // Polling covers the gap; look once now in case a wake-up was missed.
                    wake.notify_one();
                    cancels.notify_one();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn caller_insert(&self, scope: &str, jobs: &[NewJob]) -> CallerStatement {
        if any_unique(jobs) {
            return CallerStatement::insert_unique(
                Backend::Postgres,
                &CALLER_INSERT_UNIQUE,
                scope,
                jobs,
            );
        }
        CallerStatement::insert(Backend::Postgres, &CALLER_INSERT, scope, jobs)
    }

    fn caller_complete(&self, lease: Lease) -> CallerStatement {
        CallerStatement::complete(Backend::Postgres, &CALLER_COMPLETE, lease)
    }

    fn close(&self) {
        self.pool.close();
    }

    fn discard_idle_connections(&self) {
        self.pool.retain(|_, _| false);
    }
}

/// The values [`JOB_FILTER`] binds, $1 to $6, with the states to match given apart: a listing
/// passes the filter's own, a bulk change the ones it applies to.
struct FilterParams<'a> {
    scope: &'a str,
    filter: &'a JobFilter,
    states: Option<Vec<&'static str>>,
    search: Option<String>,
    older_than: Option<f64>,
}

impl<'a> FilterParams<'a> {
    fn new(scope: &'a str, filter: &'a JobFilter, states: Option<Vec<&'static str>>) -> Self {
        FilterParams {
            scope,
            filter,
            states,
            search: filter.search.as_deref().map(contains_pattern),
            older_than: filter.older_than_secs(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.scope,
            &self.filter.queue,
            &self.filter.action,
            &self.states,
            &self.search,
            &self.older_than,
        ]
    }
}
