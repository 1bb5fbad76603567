//! App and worker settings, and the validation of everything a caller hands in. Nothing is
//! written before these checks pass.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::{NewJob, Schedule};

/// Longest queue, action or scope name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Default cap on the JSON size of a job's params.
pub const DEFAULT_MAX_PARAMS_SIZE: usize = 1024 * 1024;

/// Where jobs are stored and what an App may see.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub database_url: String,
    pub scope: String,
    /// Queues run concurrently, with their limit of jobs at once; every other queue blocks.
    pub concurrent_queues: HashMap<String, u32>,
    pub max_params_size: usize,
    /// Bound on connecting and on waiting for a pooled connection.
    pub connect_timeout: Duration,
    /// Connections in the pool shared by enqueuing, claiming and completing.
    pub pool_size: usize,
    /// SQLite: how often a worker looks for commits made by other processes (no NOTIFY there).
    pub wakeup_interval: Duration,
}

impl ClientConfig {
    pub fn validate(&self) -> Result<()> {
        validate_name("scope", &self.scope)?;
        for (queue, limit) in &self.concurrent_queues {
            validate_name("queue", queue)?;
            if *limit == 0 {
                return Err(Error::Configuration(format!(
                    "queue {queue:?} has a concurrency limit of 0: give it at least 1"
                )));
            }
        }
        if self.max_params_size == 0 {
            return Err(Error::Configuration(
                "max_params_size must be positive".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Configuration(
                "connect_timeout must be positive".into(),
            ));
        }
        Ok(())
    }

    pub fn is_blocking(&self, queue: &str) -> bool {
        !self.concurrent_queues.contains_key(queue)
    }
}

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs this process runs at once, all queues together.
    pub concurrency: u32,
    /// Safety poll: new and due jobs are found without waiting for it.
    pub poll_interval: Duration,
    /// How long a claim's lease lasts without renewal; renewed every third of it.
    pub lease_ttl: Duration,
    pub cleanup_interval: Option<Duration>,
    pub job_retention: Duration,
    /// Name stored in `attempted_by`.
    pub worker_name: String,
    /// Run only what is due now, then stop by itself.
    pub drain: bool,
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::Configuration(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Configuration(
                "poll_interval must be positive".into(),
            ));
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(Error::Configuration(
                "lease_ttl must be at least 0.3 seconds".into(),
            ));
        }
        if matches!(self.cleanup_interval, Some(d) if d.is_zero()) {
            return Err(Error::Configuration(
                "cleanup_interval must be positive or None".into(),
            ));
        }
        Ok(())
    }

    /// How often expired leases are looked for: often enough that a dead worker's job is back
    /// within about a lease, rarely enough to stay off the hot path.
    pub fn rescue_interval(&self) -> Duration {
        (self.lease_ttl / 2).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }
}

/// Reject names that are empty or too long. Names are data: any other character is allowed.
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

/// Check one job before insert. `params` is JSON text produced by the caller.
pub fn validate_new_job(job: &NewJob, max_params_size: usize) -> Result<()> {
    validate_name("queue", &job.queue)?;
    validate_name("action", &job.action)?;
    if job.params.len() > max_params_size {
        return Err(Error::ParamsTooLarge {
            size: job.params.len(),
            limit: max_params_size,
        });
    }
    // PostgreSQL's jsonb cannot store \u0000; refuse it here rather than half-way through a batch.
    if job.params.contains("\\u0000") {
        return Err(Error::InvalidParams(
            "params must not contain NUL (\\u0000) characters".into(),
        ));
    }
    if !(job.timeout.is_finite() && job.timeout > 0.0) {
        return Err(Error::InvalidOption(format!(
            "timeout must be a positive number of seconds, got {}",
            job.timeout
        )));
    }
    if !(job.max_backoff.is_finite() && job.max_backoff >= 0.0) {
        return Err(Error::InvalidOption(format!(
            "max_backoff must be zero or a positive number of seconds, got {}",
            job.max_backoff
        )));
    }
    if job.max_attempts < 1 {
        return Err(Error::InvalidOption(format!(
            "max_attempts must be at least 1, got {}",
            job.max_attempts
        )));
    }
    if let Schedule::In(delay) = job.schedule {
        if !(delay.is_finite() && delay >= 0.0) {
            return Err(Error::InvalidSchedule(format!(
                "delay must be zero or positive seconds, got {delay}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> NewJob {
        NewJob {
            queue: "q".into(),
            action: "a".into(),
            params: "{}".into(),
            blocking: true,
            schedule: Schedule::Now,
            timeout: 60.0,
            max_backoff: 10.0,
            max_attempts: 3,
            priority: 0,
        }
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
        assert!(validate_name("queue", &"é".repeat(255)).is_ok());
    }

    #[test]
    fn job_options_are_checked() {
        let limit = DEFAULT_MAX_PARAMS_SIZE;
        assert!(validate_new_job(&job(), limit).is_ok());
        let cases: Vec<(NewJob, fn(&Error) -> bool)> = vec![
            (
                NewJob {
                    timeout: -1.0,
                    ..job()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                NewJob {
                    timeout: 0.0,
                    ..job()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                NewJob {
                    max_attempts: 0,
                    ..job()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                NewJob {
                    max_backoff: f64::NAN,
                    ..job()
                },
                |e| matches!(e, Error::InvalidOption(_)),
            ),
            (
                NewJob {
                    schedule: Schedule::In(-1.0),
                    ..job()
                },
                |e| matches!(e, Error::InvalidSchedule(_)),
            ),
            (
                NewJob {
                    params: "1".repeat(11),
                    ..job()
                },
                |e| matches!(e, Error::ParamsTooLarge { .. }),
            ),
        ];
        for (bad, is_expected) in cases {
            let err = validate_new_job(&bad, 10).unwrap_err();
            assert!(is_expected(&err), "unexpected error {err:?}");
        }
    }
}
