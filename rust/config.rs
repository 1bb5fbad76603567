//! App and worker settings: their defaults, and the validation of everything a caller
//! configures. Callers hand in [`AppOptions`] (numbers of seconds, options left out as None);
//! nothing starts before [`AppOptions::into_configs`] accepts them.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::validate_name;
use crate::queues::{QueueKinds, QueueSelector};

/// Where jobs live when no URL is given and `$FERROQ_DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:///ferroq.db";
/// Environment variable naming the database when the App is given none.
pub const DATABASE_URL_VARIABLE: &str = "FERROQ_DATABASE_URL";
pub const DEFAULT_SCOPE: &str = "default";
/// Default cap on the size of a job's params: bytes of JSON text, or of bytes params.
pub const DEFAULT_MAX_PARAMS_SIZE: usize = 1024 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 5.0;
/// A third of the default lease: a connection that stops answering is replaced while the
/// leases it was renewing still hold.
pub const DEFAULT_STATEMENT_TIMEOUT: f64 = 10.0;
/// PostgreSQL's limit for the server-side timeouts derived from it (2^31 - 1 ms, rounded down).
pub const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_secs(24 * 24 * 3600);
pub const DEFAULT_WAKEUP_INTERVAL: f64 = 0.05;
pub const DEFAULT_POOL_SIZE: usize = 10;
pub const DEFAULT_CONCURRENCY: u32 = 10;
pub const DEFAULT_POLL_INTERVAL: f64 = 60.0;
pub const DEFAULT_LEASE_TTL: f64 = 30.0;
/// Completed jobs are deleted this long after they finished (7 days).
pub const DEFAULT_JOB_RETENTION: f64 = 7.0 * 24.0 * 3600.0;
/// How often a worker deletes expired completed jobs (5 minutes).
pub const DEFAULT_CLEANUP_INTERVAL: f64 = 300.0;
/// How long a graceful stop waits for running jobs.
pub const DEFAULT_STOP_TIMEOUT: f64 = 30.0;
/// Unless set, a worker claims ahead as many jobs as it runs at once, up to this many: enough
/// that a freed slot is refilled from memory while the next claim is under way, few enough
/// that one worker does not hoard the work of many.
pub const MAX_DEFAULT_PREFETCH: u32 = 100;
/// How long a job claimed ahead may wait in a worker for a free slot before it is handed back
/// to the queue (EctoJob's reservation timeout).
pub const DEFAULT_RESERVATION_TIMEOUT: f64 = 2.0;
/// A job claimed ahead waits at most a day: past that, claiming ahead only hoards.
pub const MAX_RESERVATION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `url` fit to print or log: the password of its user part (`user:SECRET@host`) and of any
/// `password=` parameter (URL query or `key=value` connection string) replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    let mut redacted = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => format!("{user_info}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{tail}")
        }
        None => url.to_owned(),
    };
    let mut searched_from = 0;
    while let Some(found) = redacted[searched_from..].find("password=") {
        let start = searched_from + found;
        let at_boundary = start == 0 || redacted[..start].ends_with(['?', '&', ' ']);
        let value_start = start + "password=".len();
        let value_end = redacted[value_start..]
            .find(['&', ' ', '#'])
            .map_or(redacted.len(), |end| value_start + end);
        if at_boundary {
            redacted.replace_range(value_start..value_end, "***");
            searched_from = value_start + 3;
        } else {
            searched_from = value_start;
        }
    }
    redacted
}

/// Everything an App can be configured with, as a caller gives it.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// None or empty: `$FERROQ_DATABASE_URL`, else [`DEFAULT_DATABASE_URL`].
    pub database_url: Option<String>,
    pub scope: Option<String>,
    /// Concurrent queues (names or `prefix*` patterns) and their limits; every other queue
    /// blocks.
    pub queues: HashMap<String, i64>,
    /// The queues this App's workers serve (names or patterns); None: every queue.
    pub only_queues: Option<Vec<String>>,
    pub max_params_size: Option<i64>,
    pub connect_timeout: Option<f64>,
    pub statement_timeout: Option<f64>,
    pub wakeup_interval: Option<f64>,
    pub pool_size: Option<i64>,
    pub concurrency: Option<i64>,
    /// Jobs claimed ahead beyond the running ones; None: as many as `concurrency`, up to
    /// [`MAX_DEFAULT_PREFETCH`]; 0 turns claiming ahead off.
    pub prefetch: Option<i64>,
    pub reservation_timeout: Option<f64>,
    pub poll_interval: Option<f64>,
    pub lease_ttl: Option<f64>,
    /// Seconds between cleanups ([`DEFAULT_CLEANUP_INTERVAL`] unless set); None turns the
    /// cleaner off.
    pub cleanup_interval: Option<f64>,
    pub job_retention: Option<f64>,
    pub stop_timeout: Option<f64>,
    /// None or empty: `host:pid:random`.
    pub worker_name: Option<String>,
}

impl Default for AppOptions {
    /// Every option at its default: the cleaner is on, everything else is left out.
    fn default() -> AppOptions {
        AppOptions {
            database_url: None,
            scope: None,
            queues: HashMap::new(),
            only_queues: None,
            max_params_size: None,
            connect_timeout: None,
            statement_timeout: None,
            wakeup_interval: None,
            pool_size: None,
            concurrency: None,
            prefetch: None,
            reservation_timeout: None,
            poll_interval: None,
            lease_ttl: None,
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
            job_retention: None,
            stop_timeout: None,
            worker_name: None,
        }
    }
}

/// Where jobs are stored and what an App may see.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub database_url: String,
    pub scope: String,
    /// Queues run concurrently, with their limit of jobs at once; every other queue blocks.
    pub queue_kinds: QueueKinds,
    pub max_params_size: usize,
    /// Bound on connecting and on waiting for a pooled connection.
    pub connect_timeout: Duration,
    /// PostgreSQL: the deadline of every call on ferroq's own connections (a pooled
    /// connection's wait and connect included). A call past it fails with a database error and
    /// the pool's connections are replaced: a connection that stopped answering without closing
    /// (a dead peer, a dropped route) never stalls the worker.
    pub statement_timeout: Duration,
    /// Connections in the pool shared by enqueuing, claiming and completing.
    pub pool_size: usize,
    /// SQLite: the longest a worker goes without looking for commits made by other processes
    /// (no NOTIFY there). On Linux it looks as soon as the WAL file is written; this poll is
    /// the safety net, and the only way elsewhere.
    pub wakeup_interval: Duration,
}

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs this process runs at once, all queues together.
    pub concurrency: u32,
    /// Jobs claimed ahead, beyond the running ones, as set; None derives it from
    /// `concurrency` (see [`WorkerConfig::prefetch`]).
    pub prefetch: Option<u32>,
    /// How long a job claimed ahead waits for a slot before it is handed back.
    pub reservation_timeout: Duration,
    /// Safety poll: new and due jobs are found without waiting for it.
    pub poll_interval: Duration,
    /// How long a claim's lease lasts without renewal; renewed every third of it.
    pub lease_ttl: Duration,
    pub cleanup_interval: Option<Duration>,
    pub job_retention: Duration,
    /// How long a graceful stop lets running jobs finish.
    pub stop_timeout: Duration,
    /// Name stored in `attempted_by`.
    pub worker_name: String,
    /// Run only what is due now, then stop by itself.
    pub drain: bool,
    /// How long a drain keeps retrying claims that fail (the database down or unreachable)
    /// before it ends with the error: the App's `connect_timeout`. A running worker retries
    /// for as long as it runs.
    pub drain_gives_up_after: Duration,
    /// The queues this worker claims from.
    pub only_queues: QueueSelector,
}

/// `value` seconds as a Duration: finite and not negative, and positive unless `allow_zero`.
pub fn seconds(name: &str, value: f64, allow_zero: bool) -> Result<Duration> {
    let duration = Duration::try_from_secs_f64(value).map_err(|_| {
        Error::Configuration(format!(
            "{name} must be a non-negative number of seconds, got {value}"
        ))
    })?;
    if duration.is_zero() && !allow_zero {
        return Err(Error::Configuration(format!(
            "{name} must be a positive number of seconds, got {value}"
        )));
    }
    Ok(duration)
}

fn positive(name: &str, value: i64) -> Result<i64> {
    if value < 1 {
        return Err(Error::Configuration(format!(
            "{name} must be at least 1, got {value}"
        )));
    }
    Ok(value)
}

/// `host:pid:random`, unique per App instance so two workers of one process are told apart.
fn default_worker_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

impl AppOptions {
    /// Fill in defaults and check every option.
    pub fn into_configs(self) -> Result<(ClientConfig, WorkerConfig)> {
        let database_url = match self.database_url.filter(|url| !url.is_empty()) {
            Some(url) => url,
            None => std::env::var(DATABASE_URL_VARIABLE)
                .ok()
                .filter(|url| !url.is_empty())
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
        };
        let scope = self.scope.unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
        validate_name("scope", &scope)?;
        let queue_kinds = QueueKinds::new(self.queues)?;
        let only_queues = QueueSelector::new(self.only_queues)?;
        let max_params_size = match self.max_params_size {
            None => DEFAULT_MAX_PARAMS_SIZE,
            Some(n) => positive("max_params_size", n)? as usize,
        };
        let pool_size = match self.pool_size {
            None => DEFAULT_POOL_SIZE,
            Some(n) => positive("pool_size", n)?.max(2) as usize,
        };
        let connect_timeout = seconds(
            "connect_timeout",
            self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            false,
        )?;
        let statement_timeout = seconds(
            "statement_timeout",
            self.statement_timeout.unwrap_or(DEFAULT_STATEMENT_TIMEOUT),
            false,
        )?;
        // It is also the server's idle_in_transaction_session_timeout, an int of milliseconds.
        if statement_timeout > MAX_STATEMENT_TIMEOUT {
            return Err(Error::Configuration(format!(
                "statement_timeout must be at most {} seconds (24 days), got {}",
                MAX_STATEMENT_TIMEOUT.as_secs(),
                statement_timeout.as_secs_f64()
            )));
        }
        let client = ClientConfig {
            database_url,
            scope,
            queue_kinds,
            max_params_size,
            connect_timeout,
            statement_timeout,
            pool_size,
            wakeup_interval: seconds(
                "wakeup_interval",
                self.wakeup_interval.unwrap_or(DEFAULT_WAKEUP_INTERVAL),
                false,
            )?,
        };
        let concurrency = positive(
            "concurrency",
            self.concurrency.unwrap_or(DEFAULT_CONCURRENCY as i64),
        )?;
        let lease_ttl = seconds(
            "lease_ttl",
            self.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL),
            false,
        )?;
        if lease_ttl < Duration::from_millis(300) {
            return Err(Error::Configuration(
                "lease_ttl must be at least 0.3 seconds".into(),
            ));
        }
        let worker_name = self
            .worker_name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(default_worker_name);
        validate_name("worker name", &worker_name)?;
        let prefetch = match self.prefetch {
            None => None,
            Some(n) if n < 0 => {
                return Err(Error::Configuration(format!(
                    "prefetch must be 0 or more, got {n}"
                )))
            }
            Some(n) => Some(
                u32::try_from(n)
                    .map_err(|_| Error::Configuration(format!("prefetch {n} is too large")))?,
            ),
        };
        let reservation_timeout = seconds(
            "reservation_timeout",
            self.reservation_timeout
                .unwrap_or(DEFAULT_RESERVATION_TIMEOUT),
            false,
        )?;
        if reservation_timeout > MAX_RESERVATION_TIMEOUT {
            return Err(Error::Configuration(format!(
                "reservation_timeout must be at most {} seconds (a day), got {}",
                MAX_RESERVATION_TIMEOUT.as_secs(),
                reservation_timeout.as_secs_f64()
            )));
        }
        let worker = WorkerConfig {
            concurrency: u32::try_from(concurrency).map_err(|_| {
                Error::Configuration(format!("concurrency {concurrency} is too large"))
            })?,
            prefetch,
            reservation_timeout,
            poll_interval: seconds(
                "poll_interval",
                self.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
                false,
            )?,
            lease_ttl,
            cleanup_interval: self
                .cleanup_interval
                .map(|s| seconds("cleanup_interval", s, false))
                .transpose()?,
            job_retention: seconds(
                "job_retention",
                self.job_retention.unwrap_or(DEFAULT_JOB_RETENTION),
                true,
            )?,
            stop_timeout: seconds(
                "stop_timeout",
                self.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
                true,
            )?,
            worker_name,
            drain: false,
            drain_gives_up_after: connect_timeout,
            only_queues,
        };
        Ok((client, worker))
    }
}

impl ClientConfig {
    /// Whether `queue` is a blocking queue (every queue not configured as concurrent).
    pub fn is_blocking(&self, queue: &str) -> bool {
        self.queue_kinds.is_blocking(queue)
    }
}

impl WorkerConfig {
    /// Change how many jobs the worker runs at once (the CLI's `--concurrency`).
    pub fn set_concurrency(&mut self, concurrency: i64) -> Result<()> {
        let n = positive("concurrency", concurrency)?;
        self.concurrency = u32::try_from(n)
            .map_err(|_| Error::Configuration(format!("concurrency {n} is too large")))?;
        Ok(())
    }

    /// Jobs claimed ahead beyond the running ones.
    pub fn prefetch(&self) -> usize {
        self.prefetch
            .unwrap_or(self.concurrency.min(MAX_DEFAULT_PREFETCH)) as usize
    }

    /// How often expired leases are looked for: often enough that a dead worker's job is back
    /// within about a lease, rarely enough to stay off the hot path.
    pub fn rescue_interval(&self) -> Duration {
        (self.lease_ttl / 2).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> AppOptions {
        AppOptions {
            database_url: Some("sqlite:///jobs.db".into()),
            ..AppOptions::default()
        }
    }

    #[test]
    fn defaults_fill_every_option_left_out() {
        let (client, worker) = options().into_configs().unwrap();
        assert_eq!(client.scope, "default");
        assert_eq!(client.max_params_size, DEFAULT_MAX_PARAMS_SIZE);
        assert_eq!(client.connect_timeout, Duration::from_secs(5));
        assert_eq!(worker.concurrency, 10);
        assert_eq!(worker.poll_interval, Duration::from_secs(60));
        assert_eq!(worker.lease_ttl, Duration::from_secs(30));
        assert_eq!(worker.cleanup_interval, Some(Duration::from_secs(300)));
        assert_eq!(worker.job_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(worker.worker_name.split(':').count(), 3);
    }

    #[test]
    fn an_empty_url_or_worker_name_means_the_default() {
        let (client, worker) = AppOptions {
            database_url: Some(String::new()),
            worker_name: Some(String::new()),
            cleanup_interval: None,
            ..AppOptions::default()
        }
        .into_configs()
        .unwrap();
        let expected = std::env::var(DATABASE_URL_VARIABLE)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        assert_eq!(client.database_url, expected);
        assert!(!worker.worker_name.is_empty());
        assert_eq!(worker.cleanup_interval, None);
    }

    #[test]
    fn out_of_range_options_are_configuration_errors() {
        let bad: Vec<AppOptions> = vec![
            AppOptions {
                concurrency: Some(0),
                ..options()
            },
            AppOptions {
                poll_interval: Some(0.0),
                ..options()
            },
            AppOptions {
                poll_interval: Some(f64::NAN),
                ..options()
            },
            AppOptions {
                lease_ttl: Some(0.1),
                ..options()
            },
            AppOptions {
                cleanup_interval: Some(0.0),
                ..options()
            },
            AppOptions {
                job_retention: Some(-1.0),
                ..options()
            },
            AppOptions {
                connect_timeout: Some(f64::INFINITY),
                ..options()
            },
            AppOptions {
                wakeup_interval: Some(0.0),
                ..options()
            },
            AppOptions {
                max_params_size: Some(0),
                ..options()
            },
            AppOptions {
                queues: HashMap::from([("q".to_owned(), 0)]),
                ..options()
            },
            AppOptions {
                stop_timeout: Some(-0.5),
                ..options()
            },
        ];
        for options in bad {
            let described = format!("{options:?}");
            assert!(
                matches!(options.into_configs(), Err(Error::Configuration(_))),
                "{described} was accepted"
            );
        }
        assert!(matches!(
            AppOptions {
                scope: Some(String::new()),
                ..options()
            }
            .into_configs(),
            Err(Error::InvalidName(_))
        ));
    }

    #[test]
    fn listed_and_matching_queues_are_concurrent_and_all_others_block() {
        let (client, worker) = AppOptions {
            queues: HashMap::from([("b".to_owned(), 2), ("shop:*".to_owned(), 1)]),
            only_queues: Some(vec!["b".to_owned()]),
            ..options()
        }
        .into_configs()
        .unwrap();
        assert!(client.is_blocking("c") && client.is_blocking("shop"));
        assert!(!client.is_blocking("b") && !client.is_blocking("shop:1"));
        assert!(worker.only_queues.serves("b") && !worker.only_queues.serves("c"));
    }

    #[test]
    fn redacted_url_hides_passwords_and_keeps_the_rest() {
        assert_eq!(
            redacted_url("postgresql://app:s3cr:t@db.example:5433/jobs?sslmode=disable"),
            "postgresql://app:***@db.example:5433/jobs?sslmode=disable"
        );
        assert_eq!(
            redacted_url("postgres://app@db/jobs?password=hunter2&application_name=x"),
            "postgres://app@db/jobs?password=***&application_name=x"
        );
        assert_eq!(
            redacted_url("host=db user=app password=hunter2 dbname=jobs"),
            "host=db user=app password=*** dbname=jobs"
        );
        assert_eq!(
            redacted_url("sqlite:///var/jobs.db"),
            "sqlite:///var/jobs.db"
        );
        assert_eq!(
            redacted_url("postgresql://postgres@127.0.0.1:5432/test"),
            "postgresql://postgres@127.0.0.1:5432/test"
        );
    }
}
