//! Plain job data shared by the store, the worker and the bindings, with the rules that build
//! it: defaults, validation of a job to insert, the retry policy. No SQL, no Python.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// Lifecycle of a job. Stored as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its scheduled time (a delay, or a snooze).
    Scheduled,
    /// Ready to run.
    Available,
    /// An attempt holds its lease.
    Running,
    /// An attempt failed; waits for its backoff.
    Retryable,
    Completed,
    /// Attempts exhausted (dead letter); kept, and retryable by hand.
    Failed,
    /// Ended without retry: discarded by its performer, or cancelled.
    Discarded,
}

impl JobState {
    /// The states a job passes through before it ends; a unique job blocks others with its
    /// key in all of them at least.
    pub const UNFINISHED: [JobState; 4] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
    ];

    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Failed,
        JobState::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Discarded => "discarded",
        }
    }

    /// This state's bit in a unique job's `unique_states` mask. The unique index of migration
    /// 0007 maps the state names to the same bits in its predicate.
    pub fn unique_bit(self) -> i32 {
        1 << (self as i32)
    }

    /// The state stored as `name`; an unknown name is a caller's error.
    pub fn parse(name: &str) -> Result<JobState> {
        JobState::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "unknown job state {name:?}: use scheduled, available, running, retryable, completed, failed or discarded"
                ))
            })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's params: a JSON document, or bytes stored as given (EctoJob's `params_type:
/// :binary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Params {
    /// JSON text.
    Json(String),
    /// Any bytes, NUL and invalid UTF-8 included.
    Bytes(Vec<u8>),
}

impl Params {
    /// What a bytes job stores in its JSON `params` column: JSON null. The schema checks that a
    /// row with bytes has it, so a JSON column never holds a half of the params.
    pub const BYTES_PLACEHOLDER: &'static str = "null";

    /// The params of a stored row, from its JSON column and its bytes column: the one rule
    /// every way of reading rows back goes through. A row with bytes is a bytes job.
    pub fn from_columns(json: String, bytes: Option<Vec<u8>>) -> Params {
        match bytes {
            Some(bytes) => Params::Bytes(bytes),
            None => Params::Json(json),
        }
    }

    /// The text for the JSON column: the document, or the placeholder of a bytes job.
    pub fn json_column(&self) -> &str {
        match self {
            Params::Json(text) => text,
            Params::Bytes(_) => Params::BYTES_PLACEHOLDER,
        }
    }

    /// The value for the bytes column: None for a JSON job.
    pub fn bytes_column(&self) -> Option<&[u8]> {
        match self {
            Params::Json(_) => None,
            Params::Bytes(bytes) => Some(bytes),
        }
    }

    /// The size counted against `max_params_size`: bytes of JSON text, or the bytes themselves.
    pub fn len(&self) -> usize {
        match self {
            Params::Json(text) => text.len(),
            Params::Bytes(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Params {
    fn default() -> Params {
        Params::Json("{}".to_owned())
    }
}

impl From<String> for Params {
    fn from(text: String) -> Params {
        Params::Json(text)
    }
}

impl From<&str> for Params {
    fn from(text: &str) -> Params {
        Params::Json(text.to_owned())
    }
}

impl From<Vec<u8>> for Params {
    fn from(bytes: Vec<u8>) -> Params {
        Params::Bytes(bytes)
    }
}

/// A job row as the store returns it. Params and result stay JSON text (or bytes): Python
/// decodes them only if a performer or caller reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub scope: String,
    pub queue: String,
    pub action: String,
    pub params: Params,
    pub priority: i32,
    pub sequence: i64,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout: f64,
    pub max_backoff: f64,
    pub scheduled_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub attempted_by: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    pub inserted_at: DateTime<Utc>,
    pub error: Option<String>,
    pub result: Option<String>,
    /// Fencing token of the running attempt (None unless running).
    pub lease_token: Option<i64>,
    /// When an operator asked to cancel the running attempt (`cancel_job` on a running job):
    /// its worker interrupts the performer and ends the job `discarded`. Kept once it ended.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// In listings (get, list): the job this waiting job of a blocking queue waits behind, the
    /// first unfinished job of its queue. None for that job itself, for any other kind of
    /// job, and on jobs returned by enqueueing or claiming.
    pub blocked_by: Option<i64>,
    /// The key (and window) a unique job was created with; None for other jobs.
    pub unique: Option<UniqueKey>,
    /// On jobs returned by enqueueing: an existing job with the same unique key was returned
    /// instead of inserting a new one. False everywhere else.
    pub duplicate: bool,
}

impl Job {
    /// Whether a failure of the running attempt ends the job as `failed` instead of retrying
    /// it. The worker decides the outcome with it, and performers' `on_failure` hooks run then.
    pub fn is_last_attempt(&self) -> bool {
        is_last_attempt(self.attempts, self.max_attempts)
    }

    /// Why a job that has not finished is not running, for operators (`ferroq jobs`, the
    /// `waiting_reason` of listed jobs); None for a running or finished job. A waiting job of
    /// a blocking queue names the job it waits behind only in listings (see `blocked_by`).
    pub fn waiting_reason(&self) -> Option<String> {
        let time = |at: DateTime<Utc>| at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
        let until = self.waits_until();
        Some(match (self.state, self.blocked_by) {
            (JobState::Running | JobState::Completed | JobState::Failed, _) => return None,
            (JobState::Discarded, _) => return None,
            (_, Some(head)) => format!(
                "behind job {head}, the head of blocking queue {:?}",
                self.queue
            ),
            (JobState::Retryable, None) => format!("retry {} at {}", self.attempts + 1, time(until)),
            (JobState::Scheduled, None) => format!("scheduled for {}", time(until)),
            (JobState::Available, None) if self.attempts >= self.max_attempts => format!(
                "no attempts left: its on_failure hook waits for a worker with a performer for {:?}",
                self.action
            ),
            (JobState::Available, None) => format!(
                "ready: waits for a free worker that serves action {:?} and queue {:?}",
                self.action, self.queue
            ),
        })
    }

    /// When a waiting (scheduled, snoozed or retrying) job may run next.
    pub fn waits_until(&self) -> DateTime<Utc> {
        self.next_attempt_at.unwrap_or(self.scheduled_at)
    }

    /// Whether this claim came after the job's attempts were used up: its last attempt's
    /// lease expired (see `rescue_expired.sql`), so the claim only runs the performer's
    /// `on_failure` hook and fails the job, never the performer.
    pub fn attempts_exhausted(&self) -> bool {
        attempts_exhausted(self.attempts, self.max_attempts)
    }
}

/// The one rule for "this attempt was the last one".
pub fn is_last_attempt(attempts: i32, max_attempts: i32) -> bool {
    attempts >= max_attempts
}

/// The one rule for "claimed with no attempt left" (the claim counted one past the limit).
pub fn attempts_exhausted(attempts: i32, max_attempts: i32) -> bool {
    attempts > max_attempts
}

/// When a new job first becomes runnable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Now,
    At(DateTime<Utc>),
    /// Seconds from now on the database clock.
    In(f64),
}

/// A job as a caller asks for it: options left out take the defaults below. Types are already
/// right (the bindings coerce them); values are checked by [`JobSpec::into_new_job`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    pub queue: String,
    pub action: String,
    pub params: Params,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Seconds from now.
    pub delay: Option<f64>,
    pub timeout: Option<f64>,
    pub max_backoff: Option<f64>,
    pub max_attempts: Option<i64>,
    pub priority: Option<i64>,
    /// A duplicate of an unfinished job with this key returns that job instead of inserting.
    pub unique_key: Option<String>,
    /// Seconds: the key is unique within each window of this length (on the database clock)
    /// instead of for as long as a job with it is in `unique_states`.
    pub unique_period: Option<f64>,
    /// State names in which a job with the key blocks another (default: the unfinished ones).
    pub unique_states: Option<Vec<String>>,
}

/// Options a performer declares for the jobs of its action (`@app.performer(..., priority=50)`):
/// they fill what a `create_job` call leaves out, before the global defaults do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobDefaults {
    pub timeout: Option<f64>,
    pub max_backoff: Option<f64>,
    pub max_attempts: Option<i64>,
    pub priority: Option<i64>,
}

impl JobDefaults {
    /// Check the values as a job's own options would be checked.
    pub fn validate(&self) -> Result<()> {
        JobSpec::new("-", "-", "{}")
            .or_defaults(self)
            .into_new_job(true, usize::MAX)
            .map(|_| ())
    }
}

/// Defaults of Queuetopia: 60 s timeout, 24 h max backoff, 20 attempts; priority 0.
pub const DEFAULT_TIMEOUT: f64 = 60.0;
pub const DEFAULT_MAX_BACKOFF: f64 = 86_400.0;
pub const DEFAULT_MAX_ATTEMPTS: i32 = 20;
pub const DEFAULT_PRIORITY: i32 = 0;

/// Longest queue, action or scope name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// A job to insert, already validated (see [`JobSpec::into_new_job`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub queue: String,
    pub action: String,
    pub params: Params,
    pub blocking: bool,
    pub schedule: Schedule,
    pub timeout: f64,
    pub max_backoff: f64,
    pub max_attempts: i32,
    pub priority: i32,
    pub unique: Option<Uniqueness>,
}

impl NewJob {
    /// The job as inserted, from what the insert generated: the rest is what was sent, so a
    /// store need not read it back.
    pub fn inserted(
        &self,
        scope: &str,
        id: i64,
        sequence: i64,
        state: JobState,
        scheduled_at: DateTime<Utc>,
        inserted_at: DateTime<Utc>,
    ) -> Job {
        Job {
            id,
            scope: scope.to_owned(),
            queue: self.queue.clone(),
            action: self.action.clone(),
            params: self.params.clone(),
            priority: self.priority,
            sequence,
            state,
            attempts: 0,
            max_attempts: self.max_attempts,
            timeout: self.timeout,
            max_backoff: self.max_backoff,
            scheduled_at,
            attempted_at: None,
            attempted_by: None,
            next_attempt_at: None,
            done_at: None,
            inserted_at,
            error: None,
            result: None,
            lease_token: None,
            cancel_requested_at: None,
            blocked_by: None,
            unique: None,
            duplicate: false,
        }
    }
}

impl JobSpec {
    /// A spec with every option at its default.
    pub fn new(
        queue: impl Into<String>,
        action: impl Into<String>,
        params: impl Into<Params>,
    ) -> JobSpec {
        JobSpec {
            queue: queue.into(),
            action: action.into(),
            params: params.into(),
            ..JobSpec::default()
        }
    }

    /// This spec with the options it leaves out taken from `defaults`.
    pub fn or_defaults(self, defaults: &JobDefaults) -> JobSpec {
        JobSpec {
            timeout: self.timeout.or(defaults.timeout),
            max_backoff: self.max_backoff.or(defaults.max_backoff),
            max_attempts: self.max_attempts.or(defaults.max_attempts),
            priority: self.priority.or(defaults.priority),
            ..self
        }
    }

    /// Fill in defaults and check every value; nothing is written for a spec that fails here.
    pub fn into_new_job(self, blocking: bool, max_params_size: usize) -> Result<NewJob> {
        validate_name("queue", &self.queue)?;
        validate_name("action", &self.action)?;
        if self.params.len() > max_params_size {
            return Err(Error::ParamsTooLarge {
                size: self.params.len(),
                limit: max_params_size,
                form: match self.params {
                    Params::Json(_) => " of JSON",
                    Params::Bytes(_) => "",
                },
            });
        }
        // PostgreSQL's text cannot hold NUL, so its JSON functions cannot give \u0000 back as
        // text (and jsonb, the params type before schema version 5, refused it); refuse it here
        // rather than half-way through a batch. Bytes params take any byte, NUL included.
        if matches!(&self.params, Params::Json(text) if has_nul_escape(text)) {
            return Err(Error::InvalidParams(
                "params must not contain NUL (\\u0000) characters".into(),
            ));
        }
        let schedule = match (self.scheduled_at, self.delay) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidSchedule(
                    "give either scheduled_at or delay, not both".into(),
                ))
            }
            (Some(at), None) => Schedule::At(at),
            (None, Some(delay)) if !(delay.is_finite() && delay >= 0.0) => {
                return Err(Error::InvalidSchedule(format!(
                    "delay must be zero or positive seconds, got {delay}"
                )))
            }
            (None, Some(delay)) if delay > MAX_DELAY_SECONDS => {
                return Err(Error::InvalidSchedule(format!(
                    "delay must be at most 100 years ({MAX_DELAY_SECONDS} seconds), got {delay}"
                )))
            }
            (None, Some(delay)) => Schedule::In(delay),
            (None, None) => Schedule::Now,
        };
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(Error::InvalidOption(format!(
                "timeout must be a positive number of seconds, got {timeout}"
            )));
        }
        let max_backoff = self.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF);
        if !(max_backoff.is_finite() && max_backoff >= 0.0) {
            return Err(Error::InvalidOption(format!(
                "max_backoff must be zero or a positive number of seconds, got {max_backoff}"
            )));
        }
        let max_attempts = match self.max_attempts {
            None => DEFAULT_MAX_ATTEMPTS,
            Some(n) if n < 1 => {
                return Err(Error::InvalidOption(format!(
                    "max_attempts must be at least 1, got {n}"
                )))
            }
            Some(n) => i32::try_from(n)
                .map_err(|_| Error::InvalidOption(format!("max_attempts {n} is out of range")))?,
        };
        let priority = match self.priority {
            None => DEFAULT_PRIORITY,
            Some(p) => i32::try_from(p)
                .map_err(|_| Error::InvalidOption(format!("priority {p} is out of range")))?,
        };
        let unique =
            Uniqueness::from_options(self.unique_key, self.unique_period, self.unique_states)?;
        Ok(NewJob {
            queue: self.queue,
            action: self.action,
            params: self.params,
            blocking,
            schedule,
            timeout,
            max_backoff,
            max_attempts,
            priority,
            unique,
        })
    }
}

/// Longest unique key, in bytes: it is stored in a unique index, whose entries PostgreSQL
/// limits to about 2.7 kB.
pub const MAX_UNIQUE_KEY_BYTES: usize = 1024;

/// Longest unique period: the longest delay.
const MAX_UNIQUE_PERIOD: f64 = MAX_DELAY_SECONDS;

/// What makes a unique job unique: its key, and the window it is unique in (None: for as long
/// as a job with the key is in its unique states).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueKey {
    pub key: String,
    /// Whole seconds.
    pub period: Option<i64>,
}

impl UniqueKey {
    /// The key as a row stores it (`unique_key`): `/key`, or `period:window/key` where
    /// `window` is the number of whole periods since the Unix epoch at the insert, on the
    /// database clock. The stores' insert statements build it in SQL (`now()` is the
    /// database's); this reads it back. The prefix holds no `/`, so the first one ends it.
    pub fn from_stored(stored: &str) -> Result<UniqueKey> {
        let unreadable = || Error::Database(format!("unreadable stored unique key {stored:?}"));
        let (prefix, key) = stored.split_once('/').ok_or_else(unreadable)?;
        let period = match prefix {
            "" => None,
            window => {
                let (period, _) = window.split_once(':').ok_or_else(unreadable)?;
                Some(period.parse().map_err(|_| unreadable())?)
            }
        };
        Ok(UniqueKey {
            key: key.to_owned(),
            period,
        })
    }
}

/// A unique job's key and the states in which a job with it blocks another (a mask of
/// [`JobState::unique_bit`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uniqueness {
    pub key: UniqueKey,
    pub states: i32,
}

impl Uniqueness {
    /// Check the unique options of a job; None when it has no key.
    fn from_options(
        key: Option<String>,
        period: Option<f64>,
        states: Option<Vec<String>>,
    ) -> Result<Option<Uniqueness>> {
        let Some(key) = key else {
            if period.is_some() || states.is_some() {
                return Err(Error::InvalidOption(
                    "unique_period and unique_states need a unique_key".into(),
                ));
            }
            return Ok(None);
        };
        if key.is_empty() {
            return Err(Error::InvalidOption("unique_key must not be empty".into()));
        }
        if key.len() > MAX_UNIQUE_KEY_BYTES {
            return Err(Error::InvalidOption(format!(
                "unique_key is {} bytes long, over the limit of {MAX_UNIQUE_KEY_BYTES}",
                key.len()
            )));
        }
        if key.contains('\0') {
            return Err(Error::InvalidOption(
                "unique_key must not contain NUL characters".into(),
            ));
        }
        let period = match period {
            None => None,
            // Whole seconds: the window number is then exact integer arithmetic in both
            // databases, and the stored key spells the period the same way in both.
            Some(p) if p.is_finite() && p >= 1.0 && p.fract() == 0.0 && p <= MAX_UNIQUE_PERIOD => {
                Some(p as i64)
            }
            Some(p) => {
                return Err(Error::InvalidOption(format!(
                    "unique_period must be a whole number of seconds, at least 1, got {p}"
                )))
            }
        };
        let states = match states {
            None => JobState::UNFINISHED.to_vec(),
            Some(names) => names
                .iter()
                .map(|name| JobState::parse(name))
                .collect::<Result<Vec<_>>>()?,
        };
        // The database checks the key whenever a row enters a state of its mask. A job leaves
        // one unfinished state for another by itself (a claim, a retry, a rescued lease), so a
        // mask missing one of them would let a job re-enter it beside a newer one and fail
        // that write; only finished states are optional.
        if let Some(missing) = JobState::UNFINISHED.iter().find(|s| !states.contains(s)) {
            return Err(Error::InvalidOption(format!(
                "unique_states must include scheduled, available, running and retryable (a job moves between them by itself), missing {missing}; add completed, failed or discarded to keep blocking after a job ends"
            )));
        }
        Ok(Some(Uniqueness {
            key: UniqueKey { key, period },
            states: states.iter().fold(0, |mask, s| mask | s.unique_bit()),
        }))
    }
}

/// Whether any job of a batch is unique: such a batch takes the stores' unique insert.
pub fn any_unique(jobs: &[NewJob]) -> bool {
    jobs.iter().any(|job| job.unique.is_some())
}

/// The jobs of a unique batch that are sent to the database: a job whose key an earlier job
/// of the batch has is left out (one statement sees one window per period, so both would
/// store the same key), and [`unique_results`] gives it the earlier one's row.
pub fn distinct_unique(jobs: &[NewJob]) -> Vec<NewJob> {
    let mut seen = std::collections::HashSet::new();
    jobs.iter()
        .filter(|job| match &job.unique {
            Some(unique) => seen.insert(&unique.key),
            None => true,
        })
        .cloned()
        .collect()
}

/// The unique key of each job of a batch (None for a plain job), as [`unique_results`]
/// matches rows with them.
pub fn unique_keys(jobs: &[NewJob]) -> Vec<Option<UniqueKey>> {
    jobs.iter()
        .map(|job| job.unique.as_ref().map(|u| u.key.clone()))
        .collect()
}

/// The rows a unique insert of `distinct_unique(jobs)` returned (inserted, or existing ones
/// marked duplicate), one per job of the batch whose keys are `keys`, in its order. A job of
/// the batch whose key an earlier one has gets that row too, marked duplicate.
pub fn unique_results(keys: &[Option<UniqueKey>], rows: Vec<Job>) -> Result<Vec<Job>> {
    let mismatch = |rows: usize| {
        Error::Database(format!(
            "the unique insert of {} jobs returned {rows} rows",
            keys.len()
        ))
    };
    let returned = rows.len();
    let mut by_key = std::collections::HashMap::new();
    let mut plain = Vec::new();
    for row in rows {
        match row.unique.clone() {
            Some(key) => {
                by_key.insert(key, (row, false));
            }
            None => plain.push(row),
        }
    }
    // Plain rows were inserted in input order, so their sequence follows it.
    plain.sort_by_key(|job| job.sequence);
    let mut plain = plain.into_iter();
    let results = keys
        .iter()
        .map(|key| match key {
            Some(key) => {
                let (row, used) = by_key.get_mut(key).ok_or_else(|| mismatch(returned))?;
                let mut result = row.clone();
                result.duplicate |= *used;
                *used = true;
                Ok(result)
            }
            None => plain.next().ok_or_else(|| mismatch(returned)),
        })
        .collect::<Result<Vec<_>>>()?;
    if plain.next().is_some() || by_key.values().any(|(_, used)| !used) {
        return Err(mismatch(returned));
    }
    Ok(results)
}

/// Whether JSON text holds a `\u0000` escape (the only way JSON writes NUL). Escapes are read
/// one by one, so an escaped backslash followed by `u0000` (the text `\u0000` itself) is not one.
fn has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    // The first byte not yet read as part of an escape: the second backslash of `\\` is.
    let mut free = 0;
    for (at, _) in json.match_indices('\\') {
        if at < free {
            continue;
        }
        if bytes.get(at + 1..at + 6) == Some(b"u0000") {
            return true;
        }
        free = at + 2;
    }
    false
}

/// Reject names that are empty, too long or hold NUL. Names are data: any other character is
/// allowed, and they never become SQL.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName(format!("{kind} name must not be empty")));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Error::InvalidName(format!(
            "{kind} name is {chars} characters long, over the limit of {MAX_NAME_CHARS}"
        )));
    }
    if name.contains('\0') {
        return Err(Error::InvalidName(format!(
            "{kind} name must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Longest error text stored per attempt; tracebacks beyond it are cut.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// Delay before the next attempt after `attempts` failed ones: `2^(n-1) + 1` seconds
/// (2 s, 3 s, 5 s, 9 s, ...), never more than `max_backoff`.
pub fn default_backoff(attempts: i32, max_backoff: f64) -> f64 {
    let exponent = (attempts.max(1) - 1).min(62);
    let delay = 2f64.powi(exponent) + 1.0;
    delay.min(max_backoff).clamp(0.0, MAX_DELAY_SECONDS)
}

/// Shortest wait of a snooze that gives its attempt back: such a job can snooze forever, so it
/// may not run more often than this.
pub const MIN_UNCOUNTED_SNOOZE: f64 = 1.0;

/// The error of a job whose last attempt snoozed (a counted snooze uses its attempt up).
pub fn snoozed_out(max_attempts: i32) -> String {
    format!("snoozed on its last attempt: all {max_attempts} attempts used (a snooze counts toward max_attempts)")
}

/// The error of an attempt whose performer completed its job on the caller's connection
/// (`job.complete(connection)`) and then returned normally, although that transaction did not
/// commit: nothing else would have ended the job, so the attempt fails and is retried.
pub const UNCOMMITTED_COMPLETION: &str = "job.complete(connection) was called but its transaction did not commit (rolled back or the connection failed)";

/// The longest wait a job can be given: a delay, a custom backoff or a snooze. Beyond it a
/// time is a mistake, and soon one no calendar of either store can hold.
pub const MAX_DELAY_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

/// Seconds a caller asked to wait (a custom backoff, a snooze), as the store takes them:
/// never negative, 0 for a value that is not a number, at most [`MAX_DELAY_SECONDS`].
pub fn clamp_delay(seconds: f64) -> f64 {
    if seconds.is_finite() {
        seconds.clamp(0.0, MAX_DELAY_SECONDS)
    } else {
        0.0
    }
}

/// Cut `text` to at most `MAX_ERROR_BYTES`, on a character boundary.
pub fn truncate_error(mut text: String) -> String {
    if text.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" [truncated]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_queuetopia() {
        let seconds: Vec<f64> = (1..=5).map(|n| default_backoff(n, 86_400.0)).collect();
        assert_eq!(seconds, vec![2.0, 3.0, 5.0, 9.0, 17.0]);
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        assert_eq!(default_backoff(10, 30.0), 30.0);
        assert_eq!(default_backoff(i32::MAX, 86_400.0), 86_400.0);
        assert_eq!(default_backoff(0, 86_400.0), 2.0);
    }

    #[test]
    fn states_round_trip_by_name() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()).unwrap(), state);
        }
        assert!(matches!(
            JobState::parse("lost"),
            Err(Error::InvalidOption(_))
        ));
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let text = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate_error(text);
        assert!(cut.len() <= MAX_ERROR_BYTES + " [truncated]".len());
        assert!(cut.ends_with("[truncated]"));
    }

    #[test]
    fn names_are_bounded_but_otherwise_free() {
        assert!(validate_name("queue", "q'; DROP TABLE ferroq_jobs; --").is_ok());
        assert!(validate_name("queue", "队列 ✓").is_ok());
        assert!(matches!(
            validate_name("queue", ""),
            Err(Error::InvalidName(_))
        ));
        assert!(matches!(
            validate_name("queue", &"x".repeat(256)),
            Err(Error::InvalidName(_))
        ));
        assert!(matches!(
            validate_name("queue", "a\0b"),
            Err(Error::InvalidName(_))
        ));
        assert!(validate_name("queue", &"é".repeat(255)).is_ok());
    }

    #[test]
    fn a_spec_left_at_defaults_gets_queuetopias_defaults() {
        let job = JobSpec::new("q", "a", "{}")
            .into_new_job(true, 1024)
            .unwrap();
        assert_eq!(job.schedule, Schedule::Now);
        assert_eq!(
            (job.timeout, job.max_backoff, job.max_attempts, job.priority),
            (60.0, 86_400.0, 20, 0)
        );
        assert!(job.blocking);
    }

    #[test]
    fn a_spec_is_checked_before_anything_is_written() {
        type Expect = fn(&Error) -> bool;
        let spec = || JobSpec::new("q", "a", "{}");
        let cases: Vec<(JobSpec, Expect)> = vec![
            (
                JobSpec {
                    timeout: Some(-1.0),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                JobSpec {
                    timeout: Some(0.0),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                JobSpec {
                    max_attempts: Some(0),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                JobSpec {
                    max_attempts: Some(1 << 40),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                JobSpec {
                    priority: Some(-(1 << 40)),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                JobSpec {
                    max_backoff: Some(f64::NAN),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                JobSpec {
                    delay: Some(-1.0),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidSchedule(_)),
            ),
            (
                JobSpec {
                    delay: Some(f64::INFINITY),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidSchedule(_)),
            ),
            (
                JobSpec {
                    delay: Some(1.0),
                    scheduled_at: Some(Utc::now()),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidSchedule(_)),
            ),
            (
                JobSpec {
                    params: "1".repeat(11).into(),
                    ..spec()
                },
                |e| matches!(e, Error::ParamsTooLarge { .. }),
            ),
            (
                JobSpec {
                    params: vec![0u8; 11].into(),
                    ..spec()
                },
                |e| matches!(e, Error::ParamsTooLarge { .. }),
            ),
            (
                JobSpec {
                    params: r#""\u0000""#.into(),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidParams(_)),
            ),
            (
                JobSpec {
                    queue: String::new(),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidName(_)),
            ),
            (
                JobSpec {
                    action: "x".repeat(300),
                    ..spec()
                },
                |e| matches!(e, Error::InvalidName(_)),
            ),
        ];
        for (bad, is_expected) in cases {
            let err = bad.clone().into_new_job(false, 10).unwrap_err();
            assert!(is_expected(&err), "{bad:?} gave unexpected error {err:?}");
        }
    }

    #[test]
    fn only_a_real_nul_escape_is_nul() {
        for (json, nul) in [
            (r#""\u0000""#, true),
            (r#"{"a\u0000":1}"#, true),
            (r#""\\\u0000""#, true),
            (r#""\\u0000""#, false),
            (r#""\\\\u0000""#, false),
            (r#""\u00001""#, true),
            (r#""\u0001u0000""#, false),
            (r#""u0000""#, false),
            ("\"\\", false),
        ] {
            assert_eq!(has_nul_escape(json), nul, "{json}");
        }
    }

    #[test]
    fn bytes_params_take_any_byte_up_to_the_same_limit() {
        let bytes: Vec<u8> = vec![0, 0xff, b'\\', b'u', b'0', 0xc3];
        let job = JobSpec::new("q", "a", bytes.clone())
            .into_new_job(true, bytes.len())
            .unwrap();
        assert_eq!(job.params, Params::Bytes(bytes.clone()));
        assert_eq!(job.params.json_column(), Params::BYTES_PLACEHOLDER);
        assert_eq!(job.params.bytes_column(), Some(&bytes[..]));
        assert!(JobSpec::new("q", "a", Vec::new())
            .into_new_job(true, 0)
            .is_ok());
    }

    #[test]
    fn a_row_with_bytes_is_a_bytes_job() {
        assert_eq!(
            Params::from_columns("null".into(), Some(vec![1, 2])),
            Params::Bytes(vec![1, 2])
        );
        assert_eq!(
            Params::from_columns("null".into(), None),
            Params::Json("null".into())
        );
    }

    #[test]
    fn a_performers_defaults_fill_only_what_the_call_leaves_out() {
        let defaults = JobDefaults {
            priority: Some(50),
            max_attempts: Some(3),
            ..JobDefaults::default()
        };
        let job = JobSpec {
            priority: Some(1),
            ..JobSpec::new("q", "a", "{}")
        }
        .or_defaults(&defaults)
        .into_new_job(true, 1024)
        .unwrap();
        assert_eq!((job.priority, job.max_attempts, job.timeout), (1, 3, 60.0));
        assert!(defaults.validate().is_ok());
        let bad = JobDefaults {
            max_attempts: Some(0),
            ..JobDefaults::default()
        };
        assert!(matches!(bad.validate(), Err(Error::InvalidOption(_))));
    }

    #[test]
    fn the_last_attempt_is_the_one_that_reaches_max_attempts() {
        assert!(!is_last_attempt(1, 3));
        assert!(is_last_attempt(3, 3));
        assert!(is_last_attempt(4, 3));
        assert!(!attempts_exhausted(3, 3));
        assert!(attempts_exhausted(4, 3));
    }

    #[test]
    fn delays_are_never_negative_or_nan() {
        assert_eq!(clamp_delay(-4.0), 0.0);
        assert_eq!(clamp_delay(f64::NAN), 0.0);
        assert_eq!(clamp_delay(0.25), 0.25);
        assert_eq!(
            clamp_delay(1e300),
            MAX_DELAY_SECONDS,
            "no wait beyond the calendars"
        );
        assert_eq!(default_backoff(62, f64::MAX), MAX_DELAY_SECONDS);
    }

    #[test]
    fn a_waiting_job_says_why_it_waits() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let job = |state: JobState, attempts: i32, blocked_by: Option<i64>| Job {
            id: 7,
            scope: "default".into(),
            queue: "q".into(),
            action: "send".into(),
            params: Params::Json("{}".into()),
            priority: 0,
            sequence: 7,
            state,
            attempts,
            max_attempts: 3,
            timeout: 60.0,
            max_backoff: 10.0,
            scheduled_at: at,
            attempted_at: None,
            attempted_by: None,
            next_attempt_at: (state == JobState::Retryable).then_some(at),
            done_at: None,
            inserted_at: at,
            error: None,
            result: None,
            lease_token: None,
            cancel_requested_at: None,
            blocked_by,
            unique: None,
            duplicate: false,
        };
        let reason = |j: Job| j.waiting_reason();
        assert_eq!(
            reason(job(JobState::Available, 0, Some(3))).unwrap(),
            "behind job 3, the head of blocking queue \"q\""
        );
        assert!(reason(job(JobState::Available, 0, None))
            .unwrap()
            .starts_with("ready: waits for a free worker that serves action \"send\""));
        assert!(reason(job(JobState::Available, 3, None))
            .unwrap()
            .starts_with("no attempts left"));
        assert_eq!(
            reason(job(JobState::Retryable, 1, None)).unwrap(),
            "retry 2 at 2027-01-15 08:00:00.000 UTC"
        );
        assert!(reason(job(JobState::Scheduled, 0, None))
            .unwrap()
            .starts_with("scheduled for 2027-01-15"));
        for done in [
            JobState::Running,
            JobState::Completed,
            JobState::Failed,
            JobState::Discarded,
        ] {
            assert_eq!(reason(job(done, 1, None)), None);
        }
    }

    #[test]
    fn unique_options_are_checked_before_anything_is_written() {
        let spec = |key: Option<&str>, period: Option<f64>, states: Option<Vec<&str>>| JobSpec {
            unique_key: key.map(String::from),
            unique_period: period,
            unique_states: states.map(|s| s.into_iter().map(String::from).collect()),
            ..JobSpec::new("q", "a", "{}")
        };
        let ok = spec(Some("k"), Some(60.0), None)
            .into_new_job(true, 10)
            .unwrap();
        let unique = ok.unique.unwrap();
        assert_eq!(unique.key.period, Some(60));
        assert_eq!(unique.states, 0b1111, "the unfinished states by default");
        let kept = spec(
            Some("k"),
            None,
            Some(vec![
                "completed",
                "scheduled",
                "available",
                "running",
                "retryable",
            ]),
        )
        .into_new_job(true, 10)
        .unwrap();
        assert_eq!(kept.unique.unwrap().states, 0b1_1111);
        for bad in [
            spec(Some(""), None, None),
            spec(Some(&"k".repeat(MAX_UNIQUE_KEY_BYTES + 1)), None, None),
            spec(Some("a\0b"), None, None),
            spec(Some("k"), Some(0.0), None),
            spec(Some("k"), Some(-1.0), None),
            spec(Some("k"), Some(1.5), None),
            spec(Some("k"), Some(f64::NAN), None),
            spec(Some("k"), None, Some(vec![])),
            spec(Some("k"), None, Some(vec!["completed"])),
            spec(Some("k"), None, Some(vec!["lost"])),
            spec(None, Some(60.0), None),
            spec(None, None, Some(vec!["completed"])),
        ] {
            let err = bad.clone().into_new_job(true, 10).unwrap_err();
            assert!(matches!(err, Error::InvalidOption(_)), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn stored_unique_keys_read_back_as_key_and_period() {
        let read = |stored: &str| UniqueKey::from_stored(stored).unwrap();
        assert_eq!(
            read("/a/b:c"),
            UniqueKey {
                key: "a/b:c".into(),
                period: None
            }
        );
        assert_eq!(
            read("60:29000000/k"),
            UniqueKey {
                key: "k".into(),
                period: Some(60)
            }
        );
        assert!(UniqueKey::from_stored("no-slash").is_err());
        assert!(UniqueKey::from_stored("x:1/k").is_err());
    }

    #[test]
    fn a_unique_batch_sends_each_key_once_and_gets_a_row_per_job() {
        let new = |key: Option<&str>| {
            JobSpec {
                unique_key: key.map(String::from),
                ..JobSpec::new("q", "a", "{}")
            }
            .into_new_job(true, 10)
            .unwrap()
        };
        let jobs = vec![new(Some("k")), new(None), new(Some("k")), new(None)];
        assert_eq!(distinct_unique(&jobs).len(), 3);
        let row = |id: i64, key: Option<&str>, duplicate: bool| Job {
            unique: key.map(|k| UniqueKey {
                key: k.into(),
                period: None,
            }),
            duplicate,
            ..jobs[0].inserted("s", id, id, JobState::Available, Utc::now(), Utc::now())
        };
        // Rows in any order: plain ones by sequence, unique ones by key.
        let rows = vec![
            row(9, None, false),
            row(3, Some("k"), true),
            row(8, None, false),
        ];
        let results = unique_results(&unique_keys(&jobs), rows.clone()).unwrap();
        let got: Vec<(i64, bool)> = results.iter().map(|j| (j.id, j.duplicate)).collect();
        assert_eq!(got, vec![(3, true), (8, false), (3, true), (9, false)]);
        assert!(unique_results(&unique_keys(&jobs), rows[..2].to_vec()).is_err());
    }
}
