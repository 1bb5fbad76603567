//! PostgreSQL store on tokio-postgres: a deadpool of connections with cached prepared
//! statements for the hot path, and a dedicated connection for LISTEN.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::job::{Job, NewJob, Schedule};
use crate::store::{
    contains_pattern, Backend, ClaimRequest, Finish, JobFilter, Lease, Store, Transition,
};

/// The channel every insert announces on; the payload is the scope. Fixed text, never a name.
const CHANNEL_LISTEN: &str = "LISTEN ferroq_jobs";

/// Columns of a job row in the order `job_from_row` reads them. Every statement that returns
/// jobs aliases the table as `j`.
pub const JOB_COLUMNS: &str = "j.id, j.scope, j.queue, j.action, j.params::text AS params, \
    j.priority, j.sequence, j.state, j.attempts, j.max_attempts, j.timeout, j.max_backoff, \
    j.scheduled_at, j.attempted_at, j.attempted_by, j.next_attempt_at, j.done_at, \
    j.inserted_at, j.error, j.result::text AS result, j.lease_token";

/// Migrations embedded in the binary, applied in order; numbered in lock-step with SQLite's.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "notify_from_insert",
        include_str!("../../../migrations/postgres/0002_notify_from_insert.sql"),
    ),
];

macro_rules! sql {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<String> = LazyLock::new(|| {
            include_str!(concat!("sql/", $file)).replace("{{job_columns}}", JOB_COLUMNS)
        });
    };
}

sql!(INSERT_JOBS, "insert_jobs.sql");
sql!(LOCK_CONCURRENT_QUEUES, "lock_concurrent_queues.sql");
sql!(CLAIM, "claim.sql");
sql!(FINISH_JOBS, "finish_jobs.sql");
sql!(EXTEND_LEASES, "extend_leases.sql");
sql!(RESCUE_EXPIRED, "rescue_expired.sql");
sql!(NEXT_RUN_IN, "next_run_in.sql");
sql!(DELETE_COMPLETED, "delete_completed.sql");
sql!(GET_JOB, "get_job.sql");
sql!(LIST_JOBS, "list_jobs.sql");
sql!(COUNT_JOBS, "count_jobs.sql");
sql!(RETRY_JOB, "retry_job.sql");
sql!(CANCEL_JOB, "cancel_job.sql");
sql!(NOTIFY, "notify.sql");
sql!(MIGRATE_LOCK, "migrate_lock.sql");
sql!(
    MIGRATE_CREATE_VERSION_TABLE,
    "migrate_create_version_table.sql"
);
sql!(MIGRATE_APPLIED_VERSIONS, "migrate_applied_versions.sql");
sql!(MIGRATE_RECORD_VERSION, "migrate_record_version.sql");
sql!(COMPLETE_EXTERNAL, "complete_external.sql");

/// The statements Python drivers (psycopg) run on a caller's connection, in their `%s` style.
static INSERT_JOBS_PYFORMAT: LazyLock<String> = LazyLock::new(|| to_pyformat(&INSERT_JOBS));
static COMPLETE_EXTERNAL_PYFORMAT: LazyLock<String> =
    LazyLock::new(|| to_pyformat(&COMPLETE_EXTERNAL));

/// Rewrite `$n` placeholders as `%s` (each appears once, in order) and escape literal `%`.
fn to_pyformat(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push_str("%s");
        } else if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
    }
    out
}

/// Opens a claim's transaction. A claim need not be durable: if the server loses it in a
/// crash, the job is simply available again (at least once). Not waiting for its WAL flush
/// takes a disk sync off every claim; the outcome's commit, which is durable, flushes it anyway.
const BEGIN_CLAIM: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: Pool,
    /// Kept to open the LISTEN connection outside the pool.
    pg_config: tokio_postgres::Config,
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
        // Every statement is prepared once per connection and has the same shape on every
        // call. Left to choose, the server keeps re-planning the claim as a custom plan
        // (0.6-1 ms of planning for a 0.2 ms execution), so plans are generic from the start.
        let options = match pg_config.get_options() {
            Some(existing) => format!("{existing} -c plan_cache_mode=force_generic_plan"),
            None => "-c plan_cache_mode=force_generic_plan".to_owned(),
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
        Ok(PgStore { pool, pg_config })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
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

    async fn transition(&self, sql: &str, scope: &str, id: i64, verb: &str) -> Result<Transition> {
        if let Some(job) = self.query_jobs(sql, &[&scope, &id]).await?.pop() {
            return Ok(Transition::Done(job));
        }
        Ok(match self.get_job(scope, id).await? {
            None => Transition::NotFound,
            Some(job) => {
                Transition::WrongState(format!("cannot {verb} job {id}: it is {}", job.state))
            }
        })
    }

    /// One LISTEN session: returns Ok when stopped, Err when the connection is lost.
    async fn listen_once(
        &self,
        scope: &str,
        wake: &Notify,
        stop: &CancellationToken,
    ) -> Result<()> {
        let (client, mut connection) = self.pg_config.connect(NoTls).await?;
        let (payloads, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if payloads.send(n.payload().to_owned()).is_err() {
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
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    payload = received.recv() => match payload {
                        Some(p) if p == scope => wake.notify_one(),
                        Some(_) => {}
                        None => return Err(Error::Database("LISTEN connection closed".into())),
                    },
                    // A silent half-open connection shows itself on the next round trip.
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {
                        tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1"))
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

fn job_from_row(row: &Row) -> Result<Job> {
    Ok(Job {
        id: row.try_get(0)?,
        scope: row.try_get(1)?,
        queue: row.try_get(2)?,
        action: row.try_get(3)?,
        params: row.try_get(4)?,
        priority: row.try_get(5)?,
        sequence: row.try_get(6)?,
        state: row.try_get(7)?,
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
    })
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
        for (version, name, body) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(body).await?;
            tx.execute(MIGRATE_RECORD_VERSION.as_str(), &[version, name])
                .await?;
            newly_applied.push(*version);
        }
        tx.commit().await?;
        Ok(newly_applied)
    }

    async fn insert_jobs(&self, scope: &str, jobs: &[NewJob]) -> Result<Vec<Job>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
        let actions: Vec<&str> = jobs.iter().map(|j| j.action.as_str()).collect();
        let params: Vec<&str> = jobs.iter().map(|j| j.params.as_str()).collect();
        let blocking: Vec<bool> = jobs.iter().map(|j| j.blocking).collect();
        let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
        let max_attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
        let timeouts: Vec<f64> = jobs.iter().map(|j| j.timeout).collect();
        let max_backoffs: Vec<f64> = jobs.iter().map(|j| j.max_backoff).collect();
        let at: Vec<Option<chrono::DateTime<chrono::Utc>>> = jobs
            .iter()
            .map(|j| {
                if let Schedule::At(t) = j.schedule {
                    Some(t)
                } else {
                    None
                }
            })
            .collect();
        let delays: Vec<Option<f64>> = jobs
            .iter()
            .map(|j| {
                if let Schedule::In(d) = j.schedule {
                    Some(d)
                } else {
                    None
                }
            })
            .collect();
        let mut inserted = self
            .query_jobs(
                &INSERT_JOBS,
                &[
                    &scope,
                    &queues,
                    &actions,
                    &params,
                    &blocking,
                    &priorities,
                    &max_attempts,
                    &timeouts,
                    &max_backoffs,
                    &at,
                    &delays,
                ],
            )
            .await?;
        // Sequence follows input order (the INSERT ... SELECT is ordered by ordinality).
        inserted.sort_by_key(|j| j.sequence);
        Ok(inserted)
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Job>> {
        let client = self.client().await?;
        let ttl = request.lease_ttl.as_secs_f64();
        let limit = request.limit as i64;
        let queues: Vec<&str> = request
            .concurrent_queues
            .iter()
            .map(|(q, _)| q.as_str())
            .collect();
        let caps: Vec<i64> = request
            .concurrent_queues
            .iter()
            .map(|(_, c)| *c as i64)
            .collect();
        let lock = client.prepare_cached(&LOCK_CONCURRENT_QUEUES).await?;
        let claim = client.prepare_cached(&CLAIM).await?;
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&request.scope, &queues];
        let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &request.scope,
            &queues,
            &caps,
            &limit,
            &request.worker_name,
            &ttl,
        ];
        // One round trip: the four requests are sent back to back (tokio-postgres sends in
        // order of first poll) and the server runs them in order, so the claim's snapshot is
        // still taken after the queue locks are held. If one fails, the rest fail or roll back
        // on the server; the connection is then not returned to the pool.
        let pipelined = tokio::try_join!(
            client.batch_execute(BEGIN_CLAIM),
            client.query(&lock, &lock_params),
            client.query(&claim, &claim_params),
            client.batch_execute("COMMIT"),
        );
        match pipelined {
            Ok((_, _, rows, _)) => rows.iter().map(job_from_row).collect(),
            Err(err) => {
                drop(deadpool_postgres::Object::take(client));
                Err(err.into())
            }
        }
    }

    async fn finish(&self, finishes: &[Finish]) -> Result<Vec<i64>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = finishes.iter().map(|f| f.lease.id).collect();
        let tokens: Vec<i64> = finishes.iter().map(|f| f.lease.token).collect();
        let states: Vec<&str> = finishes.iter().map(|f| f.state).collect();
        let results: Vec<Option<&str>> = finishes.iter().map(|f| f.result.as_deref()).collect();
        let errors: Vec<Option<&str>> = finishes.iter().map(|f| f.error.as_deref()).collect();
        let delays: Vec<Option<f64>> = finishes.iter().map(|f| f.delay).collect();
        let refunds: Vec<i32> = finishes.iter().map(|f| f.refund_attempt as i32).collect();
        let client = self.client().await?;
        let statement = client.prepare_cached(&FINISH_JOBS).await?;
        let rows = client
            .query(
                &statement,
                &[&ids, &tokens, &states, &results, &errors, &delays, &refunds],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
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

    async fn rescue_expired(&self, scope: &str) -> Result<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&RESCUE_EXPIRED).await?;
        Ok(client.execute(&statement, &[&scope]).await?)
    }

    async fn next_run_in(&self, scope: &str) -> Result<Option<f64>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&NEXT_RUN_IN).await?;
        Ok(client.query_one(&statement, &[&scope]).await?.get(0))
    }

    async fn delete_completed(&self, scope: &str, retention: Duration) -> Result<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&DELETE_COMPLETED).await?;
        Ok(client
            .execute(&statement, &[&scope, &retention.as_secs_f64()])
            .await?)
    }

    async fn get_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        Ok(self.query_jobs(&GET_JOB, &[&scope, &id]).await?.pop())
    }

    async fn list_jobs(&self, scope: &str, filter: &JobFilter) -> Result<Vec<Job>> {
        let direction = if filter.descending { "DESC" } else { "ASC" };
        let column = filter.order_by.column();
        let order_by = format!("j.{column} {direction} NULLS LAST, j.id {direction}");
        let sql = LIST_JOBS.replace("{{order_by}}", &order_by);
        let search = filter.search.as_deref().map(contains_pattern);
        self.query_jobs(
            &sql,
            &[
                &scope,
                &filter.queue,
                &filter.action,
                &filter.states,
                &search,
                &filter.limit,
                &filter.offset,
            ],
        )
        .await
    }

    async fn count_jobs(&self, scope: &str, filter: &JobFilter) -> Result<i64> {
        let search = filter.search.as_deref().map(contains_pattern);
        let client = self.client().await?;
        let statement = client.prepare_cached(&COUNT_JOBS).await?;
        let row = client
            .query_one(
                &statement,
                &[
                    &scope,
                    &filter.queue,
                    &filter.action,
                    &filter.states,
                    &search,
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn retry_job(&self, scope: &str, id: i64) -> Result<Transition> {
        self.transition(&RETRY_JOB, scope, id, "retry").await
    }

    async fn cancel_job(&self, scope: &str, id: i64) -> Result<Transition> {
        self.transition(&CANCEL_JOB, scope, id, "cancel").await
    }

    async fn notify(&self, scope: &str) -> Result<()> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&NOTIFY).await?;
        client.query(&statement, &[&scope]).await?;
        Ok(())
    }

    async fn listen(&self, scope: &str, wake: Arc<Notify>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen_once(scope, &wake, &stop).await {
                Ok(()) => return,
                Err(err) => {
                    log::warn!(
                        "ferroq: LISTEN connection lost ({err}); reconnecting in {backoff:?}"
                    );
                    // Polling covers the gap; look once now in case a wake-up was missed.
                    wake.notify_one();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn external_insert_sql(&self) -> &'static str {
        INSERT_JOBS_PYFORMAT.as_str()
    }

    fn external_complete_sql(&self) -> &'static str {
        COMPLETE_EXTERNAL_PYFORMAT.as_str()
    }

    fn close(&self) {
        self.pool.close();
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}
