//! Plain job data shared by the store, the worker and the bindings. No SQL, no Python.

use chrono::{DateTime, Utc};

/// Lifecycle of a job. Stored as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Scheduled,
    Available,
    Running,
    Retryable,
    Completed,
    Failed,
    Discarded,
}

impl JobState {
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

    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A job row as the store returns it. Params and result stay JSON text: Python decodes them
/// only if a performer or caller reads them.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub scope: String,
    pub queue: String,
    pub action: String,
    pub params: String,
    pub priority: i32,
    pub sequence: i64,
    pub state: String,
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
}

/// When a new job first becomes runnable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Now,
    At(DateTime<Utc>),
    /// Seconds from now on the database clock.
    In(f64),
}

/// A job to insert, already validated (see `config::validate_new_job`).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub action: String,
    pub params: String,
    pub blocking: bool,
    pub schedule: Schedule,
    pub timeout: f64,
    pub max_backoff: f64,
    pub max_attempts: i32,
    pub priority: i32,
}

/// Defaults of Queuetopia: 60 s timeout, 24 h max backoff, 20 attempts.
pub const DEFAULT_TIMEOUT: f64 = 60.0;
pub const DEFAULT_MAX_BACKOFF: f64 = 86_400.0;
pub const DEFAULT_MAX_ATTEMPTS: i32 = 20;

/// Longest error text stored per attempt; tracebacks beyond it are cut.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// Delay before the next attempt after `attempts` failed ones: `2^(n-1) + 1` seconds
/// (2 s, 3 s, 5 s, 9 s, ...), never more than `max_backoff`.
pub fn default_backoff(attempts: i32, max_backoff: f64) -> f64 {
    let exponent = (attempts.max(1) - 1).min(62);
    let delay = 2f64.powi(exponent) + 1.0;
    delay.min(max_backoff).max(0.0)
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
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("lost"), None);
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let text = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate_error(text);
        assert!(cut.len() <= MAX_ERROR_BYTES + " [truncated]".len());
        assert!(cut.ends_with("[truncated]"));
    }
}
