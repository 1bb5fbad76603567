//! The storage seam: one trait method per operation. Nothing above this module knows SQL.

/// A statement from a `.sql` file beside its store, with its `{{key}}` templates filled in
/// once, on first use.
macro_rules! sql {
    ($name:ident = $file:literal $(, $key:literal => $value:expr)* $(,)?) => {
        static $name: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let text = include_str!(concat!("sql/", $file)).to_owned();
            $(let text = text.replace($key, $value);)*
            text
        });
    };
}

mod caller_tx;
mod deadline;
mod encode;
mod migrate;
pub mod postgres;
pub mod sqlite;

pub use caller_tx::{CallerRows, CallerStatement, ParamStyle, SqlParam};
pub use encode::{encode_finish_batch, encode_insert_batch, InsertBatch};
pub use migrate::{Migration, MIGRATIONS};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::job::{Job, JobState, NewJob};
use crate::queues::{QueuePattern, QueueRouting};

/// One attempt's claim on a job: the fence every write of that attempt must present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: i64,
    pub token: i64,
}

/// What to claim in one round trip.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub scope: &'a str,
    /// Most jobs to hand out: the worker's free slots and the room to claim ahead.
    pub limit: usize,
    /// Most heads of blocking queues among them: the slots free to start them now. A head
    /// is never claimed ahead: waiting in one worker for a slot, it would hold its whole
    /// queue from every other worker.
    pub blocking_limit: usize,
    /// The queue kinds (concurrent queues and their limits across all workers) and the
    /// queues this worker serves.
    pub queues: &'a QueueRouting,
    pub worker_name: &'a str,
    pub lease_ttl: Duration,
    /// The actions the worker has performers for: it claims no job of another action (a
    /// blocking queue whose head it cannot run stays held by that head). None: any action.
    pub actions: Option<&'a [String]>,
}

/// Most new blocking jobs one statement places in their queues (resolve_heads.sql). A claim
/// that meets more (a bulk insert) places the rest before it claims again, so that a claim
/// that finds nothing means there is nothing ready.
pub const HEADS_PLACED_PER_STATEMENT: i64 = 1000;

/// When waiting (scheduled or retrying) jobs become due, as one look at the database clock
/// sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DueTimes {
    /// Seconds until the next one becomes due; None when none waits for a later time.
    pub next_in: Option<f64>,
    /// Seconds since the latest one that is due became due; None when none is due. A worker
    /// whose claim found nothing compares it with the time since it claimed: a job that
    /// became due in between was not there for that claim.
    pub last_due_ago: Option<f64>,
}

/// The periodic entries of a scope as one look at the database sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodicTicks {
    /// The database clock at that look.
    pub now: DateTime<Utc>,
    /// The latest tick enqueued (or the starting point) of each entry that has a row.
    pub last_ticks: HashMap<String, DateTime<Utc>>,
}

/// The end of one attempt, as the completer writes it.
#[derive(Debug, Clone)]
pub struct Finish {
    pub lease: Lease,
    /// completed, retryable, scheduled (snoozed), failed, discarded, or available (released).
    pub state: JobState,
    /// JSON text of the performer's return value.
    pub result: Option<String>,
    pub error: Option<String>,
    /// Seconds until the job may run again (retry or snooze), on the database clock.
    pub delay: Option<f64>,
    /// Give the attempt back: a snooze or a shutdown release does not use one up.
    pub refund_attempt: bool,
}

/// A paused queue, or pattern of queues, as `paused_queues` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PausedQueue {
    pub pattern: QueuePattern,
    /// When it was paused, on the database clock (a second pause keeps the first time).
    pub paused_at: chrono::DateTime<chrono::Utc>,
}

/// The error of an attempt its worker ended because an operator cancelled the running job
/// (`cancel_job`); the statements that end such a job write it too.
pub const CANCELLED_WHILE_RUNNING: &str = "cancelled while running";

/// [`CANCELLED_WHILE_RUNNING`] as an SQL string literal, for the statements' templates.
pub(crate) fn cancelled_while_running_literal() -> String {
    format!("'{}'", CANCELLED_WHILE_RUNNING.replace('\'', "''"))
}

/// Filters of `list_jobs` / `paginate_jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub action: Option<String>,
    pub states: Option<Vec<JobState>>,
    /// Case-insensitive substring of action, params (as JSON text; bytes params are not
    /// searched) or error.
    pub search: Option<String>,
    /// Only jobs older than this: a finished job by when it finished, any other by when it
    /// was inserted (on the database clock).
    pub older_than: Option<Duration>,
    pub order_by: OrderBy,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

impl JobFilter {
    /// A listing filter; `order_by` names a column of [`OrderBy`], `states` are state names.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: Option<String>,
        action: Option<String>,
        states: Option<Vec<String>>,
        search: Option<String>,
        order_by: &str,
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> Result<JobFilter> {
        let states = states
            .map(|names| {
                names
                    .iter()
                    .map(|n| JobState::parse(n))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
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
            older_than: None,
            order_by: OrderBy::parse(order_by)?,
            descending,
            limit,
            offset,
        })
    }

    /// Only jobs older than `seconds` (see [`JobFilter::older_than`]); None: any age.
    pub fn older_than(mut self, seconds: Option<f64>) -> Result<JobFilter> {
        self.older_than = seconds
            .map(|s| {
                // A filter is an argument of one call, not the App's configuration.
                crate::config::seconds("older_than", s, true).map_err(|err| match err {
                    Error::Configuration(message) => Error::InvalidOption(message),
                    other => other,
                })
            })
            .transpose()?;
        Ok(self)
    }

    /// The age bound in seconds, as the stores bind it.
    pub(crate) fn older_than_secs(&self) -> Option<f64> {
        self.older_than.map(|d| d.as_secs_f64())
    }

    /// Page `page_number` (from 1) of `page_size` jobs: the limit and offset of this filter.
    pub fn page(mut self, page_size: i64, page_number: i64) -> Result<JobFilter> {
        if page_size < 1 || page_number < 1 {
            return Err(Error::InvalidOption(format!(
                "page_size and page_number must be at least 1, got {page_size} and {page_number}"
            )));
        }
        self.limit = page_size;
        self.offset = page_size.saturating_mul(page_number - 1);
        Ok(self)
    }

    /// The state names, as the stores bind them.
    pub(crate) fn state_names(&self) -> Option<Vec<&'static str>> {
        self.states
            .as_ref()
            .map(|states| states.iter().map(|s| s.as_str()).collect())
    }
}

/// One line of `ferroq stats`' counts: a queue's jobs in one state.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueCount {
    pub queue: String,
    pub blocking: bool,
    pub state: JobState,
    pub count: i64,
    /// For available jobs: seconds since the one claimable longest ago became so.
    pub oldest_available_age: Option<f64>,
}

/// The head of a blocking queue that holds its queue (see `blocked_heads.sql`).
#[derive(Debug, Clone)]
pub struct HeldQueue {
    pub head: Job,
    /// Unfinished jobs of the queue behind the head.
    pub behind: i64,
    /// The queue is paused (`pause_queue`, by its name or a pattern).
    pub paused: bool,
}

/// A change applied to every job a [`JobFilter`] matches, in one statement (the dead letter
/// redriven or purged at once). The filter's states are those the change applies to, as
/// [`BulkChange::states`] narrowed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkChange {
    /// Run again now, with at least one attempt left (as `retry_job`).
    Retry,
    /// Discard jobs that wait, and ask the workers of running ones to cancel them (as
    /// `cancel_job`); a blocking queue moves on.
    Cancel,
    /// Delete finished jobs.
    Delete,
}

impl BulkChange {
    pub const ALL: [BulkChange; 3] = [BulkChange::Retry, BulkChange::Cancel, BulkChange::Delete];

    /// The change called `name` (`"retry"`, `"cancel"`, `"delete"`).
    pub fn parse(name: &str) -> Result<BulkChange> {
        BulkChange::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "unknown bulk change {name:?}: use retry, cancel or delete"
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            BulkChange::Retry => "retry",
            BulkChange::Cancel => "cancel",
            BulkChange::Delete => "delete",
        }
    }

    /// The states a job may be in for this change to apply to it.
    pub fn applies_to(self) -> &'static [JobState] {
        use JobState::*;
        match self {
            BulkChange::Retry => &[Scheduled, Retryable, Failed, Discarded],
            BulkChange::Cancel => &[Scheduled, Available, Retryable, Running],
            BulkChange::Delete => &[Completed, Failed, Discarded],
        }
    }

    /// The states to change: those `asked` names (all this change applies to when None). A
    /// state the change cannot apply to is the caller's error, said before anything changes.
    pub fn states(self, asked: Option<&[JobState]>) -> Result<Vec<JobState>> {
        let allowed = self.applies_to();
        let Some(asked) = asked else {
            return Ok(allowed.to_vec());
        };
        if let Some(bad) = asked.iter().find(|s| !allowed.contains(s)) {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            return Err(Error::InvalidOption(format!(
                "cannot {} {} jobs: {} applies to jobs in states {}",
                self.name(),
                bad.as_str(),
                self.name(),
                names.join(", ")
            )));
        }
        Ok(asked.to_vec())
    }
}

/// Columns a job listing may be ordered by (an allowlist: never caller text in SQL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrderBy {
    #[default]
    Id,
    ScheduledAt,
    InsertedAt,
    AttemptedAt,
    DoneAt,
    Priority,
    Queue,
    Action,
    State,
}

impl OrderBy {
    pub const ALL: [OrderBy; 9] = [
        OrderBy::Id,
        OrderBy::ScheduledAt,
        OrderBy::InsertedAt,
        OrderBy::AttemptedAt,
        OrderBy::DoneAt,
        OrderBy::Priority,
        OrderBy::Queue,
        OrderBy::Action,
        OrderBy::State,
    ];

    /// The ORDER BY clause of a listing, ties broken by id; `prefix` qualifies the columns.
    pub(crate) fn clause(self, descending: bool, prefix: &str) -> String {
        let direction = if descending { "DESC" } else { "ASC" };
        let column = self.column();
        format!("{prefix}{column} {direction} NULLS LAST, {prefix}id {direction}")
    }

    pub fn parse(name: &str) -> Result<OrderBy> {
        Ok(match name {
            "id" | "sequence" => OrderBy::Id,
            "scheduled_at" => OrderBy::ScheduledAt,
            "inserted_at" => OrderBy::InsertedAt,
            "attempted_at" => OrderBy::AttemptedAt,
            "done_at" => OrderBy::DoneAt,
            "priority" => OrderBy::Priority,
            "queue" => OrderBy::Queue,
            "action" => OrderBy::Action,
            "state" => OrderBy::State,
            other => {
                return Err(Error::InvalidOption(format!(
                    "cannot order jobs by {other:?}: use id, scheduled_at, inserted_at, attempted_at, done_at, priority, queue, action or state"
                )))
            }
        })
    }

    pub fn column(self) -> &'static str {
        match self {
            OrderBy::Id => "id",
            OrderBy::ScheduledAt => "scheduled_at",
            OrderBy::InsertedAt => "inserted_at",
            OrderBy::AttemptedAt => "attempted_at",
            OrderBy::DoneAt => "done_at",
            OrderBy::Priority => "priority",
            OrderBy::Queue => "queue",
            OrderBy::Action => "action",
            OrderBy::State => "state",
        }
    }
}

/// Whether a write failed on the unique key index (migration 0007), as either database words
/// it: PostgreSQL names the index, SQLite its columns.
pub fn is_unique_key_conflict(message: &str) -> bool {
    message.contains("\"ferroq_jobs_unique_key\"")
        || message.contains("ferroq_jobs.scope, ferroq_jobs.unique_key")
}

/// `%text%` for a LIKE/ILIKE search (escape character `\`), with the pattern characters of
/// `text` taken literally.
pub(crate) fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Storage operations. Every method filters by scope; every write of a running attempt is
/// fenced by its lease token.
#[async_trait]
pub trait Store: Send + Sync {
    /// Create or upgrade the tables; safe when several processes call it at once.
    async fn migrate(&self) -> Result<Vec<i32>>;
    /// Insert jobs in one round trip; returns them in input order.
    async fn insert_jobs(&self, scope: &str, jobs: &[NewJob]) -> Result<Vec<Job>>;
    /// Claim runnable jobs: at most one per blocking queue, concurrent queues within limits.
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Job>>;
    /// Record finished attempts; returns the ids whose lease was still held (others are stale).
    async fn finish(&self, finishes: &[Finish]) -> Result<Vec<i64>>;
    /// Renew leases; returns the ids still held.
    async fn extend_leases(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<i64>>;
    /// Whether an attempt still holds its job: the same lease, still running.
    async fn holds_lease(&self, lease: Lease) -> Result<bool>;
    /// Make jobs whose lease expired runnable again. A job out of attempts comes back too,
    /// its error saying so: the worker that claims it runs only its failure hook and fails it.
    async fn rescue_expired(&self, scope: &str) -> Result<u64>;
    /// When the scope's scheduled and retrying jobs become due, seen on the database clock.
    async fn next_run_in(&self, scope: &str) -> Result<DueTimes>;
    /// The database clock, and the last tick of each periodic entry of the scope.
    async fn periodic_ticks(&self, scope: &str) -> Result<PeriodicTicks>;
    /// Give a periodic entry without a row its starting point, `tick`: only ticks after it
    /// are enqueued. An entry that has a row keeps it as it is.
    async fn start_periodic(&self, scope: &str, name: &str, tick: DateTime<Utc>) -> Result<()>;
    /// Enqueue one tick of a periodic entry: in one transaction, move the entry's last tick
    /// forward to `tick` (making its row if it has none) and insert `job` only if it moved.
    /// Each tick is thus inserted once, whichever worker comes first and however many try;
    /// None when this tick, or a later one, was enqueued already.
    async fn enqueue_tick(
        &self,
        scope: &str,
        name: &str,
        tick: DateTime<Utc>,
        job: &NewJob,
    ) -> Result<Option<Job>>;
    /// Delete completed jobs older than the retention, at most `limit` of them.
    async fn delete_completed(&self, scope: &str, retention: Duration, limit: i64) -> Result<u64>;
    async fn get_job(&self, scope: &str, id: i64) -> Result<Option<Job>>;
    async fn list_jobs(&self, scope: &str, filter: &JobFilter) -> Result<Vec<Job>>;
    async fn count_jobs(&self, scope: &str, filter: &JobFilter) -> Result<i64>;
    /// Make a waiting, failed or discarded job runnable now; None when no job of the scope
    /// with this id is in such a state.
    async fn retry_job(&self, scope: &str, id: i64) -> Result<Option<Job>>;
    /// Discard a job that is neither running nor finished; for a running job, record that its
    /// cancel was requested (`cancel_requested_at`, kept from a first request) and tell the
    /// scope's workers. Returns the job as it is then; None when no job of the scope with this
    /// id is waiting or running.
    async fn cancel_job(&self, scope: &str, id: i64) -> Result<Option<Job>>;
    /// Apply `change` to every job of the scope `filter` matches (its limit, offset and order
    /// are ignored; its states are the ones to change); returns how many changed.
    async fn bulk_change(&self, scope: &str, change: BulkChange, filter: &JobFilter)
        -> Result<u64>;
    /// Jobs per queue and state, for `ferroq stats`.
    async fn queue_counts(&self, scope: &str) -> Result<Vec<QueueCount>>;
    /// The heads of blocking queues that hold their queue, at most `limit` by queue name, and
    /// how many there are in all; `actions`: the performers known to the caller (None: the
    /// caller does not know, and no head is held for want of one).
    async fn blocked_heads(
        &self,
        scope: &str,
        actions: Option<&[String]>,
        limit: i64,
    ) -> Result<(Vec<HeldQueue>, i64)>;
    /// Of the attempts given, the ids of those whose job's cancel was requested.
    async fn cancel_requested(&self, leases: &[Lease]) -> Result<Vec<i64>>;
    /// Pause a queue, or every queue a prefix pattern matches: claims start none of their
    /// jobs until resumed. Pausing again changes nothing.
    async fn pause_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()>;
    /// Remove the pause made with this same name or pattern (others that match stay), and
    /// tell the scope's workers; nothing if there was none.
    async fn resume_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()>;
    /// The scope's paused names and patterns, in name order.
    async fn paused_queues(&self, scope: &str) -> Result<Vec<PausedQueue>>;
    /// Tell every worker of the scope to look for work now.
    async fn notify(&self, scope: &str) -> Result<()>;
    /// Wake `wake` whenever another process announces work for `scope`, and `cancels` when one
    /// may have requested the cancel of a running job (a hint: the worker then asks
    /// `cancel_requested`), until `stop`. Must survive connection loss on its own (reconnect,
    /// then wake once to cover the gap).
    async fn listen(
        &self,
        scope: &str,
        wake: Arc<Notify>,
        cancels: Arc<Notify>,
        stop: CancellationToken,
    );
    /// `insert_jobs` on the calling thread, without the async runtime, where the store can
    /// (SQLite: a connection of its own, its statements prepared once): None where it cannot,
    /// and the caller uses `insert_jobs`. It blocks: call it off the runtime's threads.
    fn insert_jobs_blocking(&self, _scope: &str, _jobs: &[NewJob]) -> Option<Result<Vec<Job>>> {
        None
    }
    /// SQLite: `PRAGMA synchronous` as ferroq's own writing connections read it back
    /// (`"full"` or `"normal"`); None on stores without the setting.
    async fn sqlite_synchronous(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// The insert of `insert_jobs` as a statement for the caller's own connection: the jobs
    /// commit or roll back with the caller's transaction, and are announced at its commit.
    /// Builds text only; nothing connects.
    fn caller_insert(&self, scope: &str, jobs: &[NewJob]) -> CallerStatement;
    /// The fenced completion of one attempt, for the caller's own connection: it applies only
    /// while `lease` still holds the job.
    fn caller_complete(&self, lease: Lease) -> CallerStatement;
    /// Close idle connections and refuse new ones; in-flight operations finish.
    fn close(&self);
    /// Drop the pool's idle connections (new ones are made as needed): a call on one of them
    /// did not answer in time, and the others may be stuck alike.
    fn discard_idle_connections(&self) {}
    /// Whether the schema is created on first use (the embedded default needs no setup step).
    fn creates_schema_on_first_use(&self) -> bool {
        false
    }
}

/// Storage backends ferroq has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// Which backend a database URL names, before anything connects.
    pub fn from_url(url: &str) -> Result<Backend> {
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .unwrap_or(url);
        match scheme {
            "postgresql" | "postgres" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            _ => Err(Error::UnsupportedDatabase(scheme.to_string())),
        }
    }

    /// The name callers see (`"postgres"`, `"sqlite"`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Open the store a database URL names. Connections are made on first use.
pub fn open(config: &ClientConfig) -> Result<Arc<dyn Store>> {
    match Backend::from_url(&config.database_url)? {
        Backend::Postgres => Ok(Arc::new(deadline::Bounded::new(
            postgres::PgStore::new(config)?,
            config.statement_timeout,
        ))),
        Backend::Sqlite => Ok(Arc::new(sqlite::SqliteStore::new(config)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            Backend::from_url("postgres://h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("sqlite:///x.db").unwrap(),
            Backend::Sqlite
        );
        assert!(matches!(
            Backend::from_url("mysql://h/db"),
            Err(Error::UnsupportedDatabase(_))
        ));
    }

    #[test]
    fn filters_take_known_states_and_orderings_only() {
        let filter = |states: Vec<&str>, order_by: &str, limit: i64| {
            JobFilter::new(
                None,
                None,
                Some(states.into_iter().map(String::from).collect()),
                None,
                order_by,
                false,
                limit,
                0,
            )
        };
        let ok = filter(vec!["failed", "running"], "done_at", 10).unwrap();
        assert_eq!(ok.states, Some(vec![JobState::Failed, JobState::Running]));
        assert_eq!(ok.order_by, OrderBy::DoneAt);
        assert!(matches!(
            filter(vec!["lost"], "id", 1),
            Err(Error::InvalidOption(_))
        ));
        assert!(matches!(
            filter(vec![], "params", 1),
            Err(Error::InvalidOption(_))
        ));
        assert!(matches!(
            filter(vec![], "id", -1),
            Err(Error::InvalidOption(_))
        ));
        let third = filter(vec![], "id", 0).unwrap().page(20, 3).unwrap();
        assert_eq!((third.limit, third.offset), (20, 40));
        assert!(matches!(
            filter(vec![], "id", 0).unwrap().page(0, 1),
            Err(Error::InvalidOption(_))
        ));
    }

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
