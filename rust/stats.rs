//! `ferroq stats`: what each queue holds, and every blocking queue that is held, with why.
//! The rules for "held" and its reason live here (and in `blocked_heads.sql`); the CLI only
//! prints what this builds.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::job::{Job, JobState};
use crate::store::{HeldQueue, PausedQueue, QueueCount};

/// One queue's jobs.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub blocking: bool,
    /// Jobs per state, every state present (zero where none).
    pub counts: BTreeMap<&'static str, i64>,
    /// Seconds since the available job claimable longest ago became so; None when none is.
    pub oldest_available_age: Option<f64>,
    /// Paused by its name or a pattern: nothing of it starts until resumed.
    pub paused: bool,
}

/// A pause in force: a queue name, or a `prefix*` pattern.
#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    pub queue: String,
    /// RFC 3339, on the database clock.
    pub paused_at: String,
}

/// A blocking queue whose head holds it, and why.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedQueue {
    pub queue: String,
    pub head_id: i64,
    pub action: String,
    pub state: &'static str,
    /// One of: "paused", "retrying", "scheduled", "running", "no_performer".
    pub cause: &'static str,
    /// The reason in words, with the time it names.
    pub reason: String,
    /// When the head can run again (retrying, scheduled), RFC 3339.
    pub until: Option<String>,
    /// Since when the head has run (running), RFC 3339.
    pub since: Option<String>,
    /// Unfinished jobs behind the head.
    pub behind: i64,
}

/// The whole answer of `ferroq stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub scope: String,
    pub queues: Vec<QueueStats>,
    /// At most the limit asked for, by queue name.
    pub blocked: Vec<BlockedQueue>,
    /// How many blocking queues are held in all.
    pub blocked_total: i64,
    /// The pauses in force, by name.
    pub paused: Vec<Pause>,
}

impl Stats {
    pub fn new(
        scope: &str,
        counts: Vec<QueueCount>,
        held: Vec<HeldQueue>,
        total: i64,
        paused: Vec<PausedQueue>,
    ) -> Stats {
        let mut queues: Vec<QueueStats> = Vec::new();
        for row in counts {
            if queues.last().map(|q| q.queue.as_str()) != Some(row.queue.as_str()) {
                queues.push(QueueStats {
                    queue: row.queue.clone(),
                    blocking: row.blocking,
                    counts: JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
                    oldest_available_age: None,
                    paused: paused.iter().any(|p| p.pattern.matches(&row.queue)),
                });
            }
            let queue = queues.last_mut().expect("pushed above");
            queue.counts.insert(row.state.as_str(), row.count);
            if row.state == JobState::Available {
                queue.oldest_available_age = row.oldest_available_age.map(|age| age.max(0.0));
            }
        }
        Stats {
            scope: scope.to_owned(),
            queues,
            blocked: held.into_iter().map(BlockedQueue::from).collect(),
            blocked_total: total,
            paused: paused
                .into_iter()
                .map(|p| Pause {
                    queue: p.pattern.text(),
                    paused_at: time(p.paused_at),
                })
                .collect(),
        }
    }

    /// The answer as JSON (`ferroq stats --json`, `App.stats()`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("stats are plain data")
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<HeldQueue> for BlockedQueue {
    fn from(held: HeldQueue) -> BlockedQueue {
        let head: Job = held.head;
        let (cause, until, since) = match head.state {
            JobState::Running => ("running", None, head.attempted_at),
            _ if held.paused => ("paused", None, None),
            JobState::Retryable => ("retrying", Some(head.waits_until()), None),
            JobState::Scheduled => ("scheduled", Some(head.waits_until()), None),
            // blocked_heads.sql returns an available head only when no performer is known
            // for its action.
            _ => ("no_performer", None, None),
        };
        let reason = match cause {
            "running" => format!(
                "its head, job {}, is running since {} on {}",
                head.id,
                since.map(time).unwrap_or_default(),
                head.attempted_by.as_deref().unwrap_or("an unknown worker")
            ),
            "retrying" => format!(
                "its head, job {}, is retrying: attempt {} at {}",
                head.id,
                head.attempts + 1,
                until.map(time).unwrap_or_default()
            ),
            "paused" => format!(
                "it is paused (resume_queue or `ferroq resume`); its head is job {}",
                head.id
            ),
            "scheduled" => format!(
                "its head, job {}, is scheduled (snoozed) until {}",
                head.id,
                until.map(time).unwrap_or_default()
            ),
            _ => format!(
                "its head, job {}, has no performer registered for action {:?}",
                head.id, head.action
            ),
        };
        BlockedQueue {
            queue: head.queue.clone(),
            head_id: head.id,
            action: head.action.clone(),
            state: head.state.as_str(),
            cause,
            reason,
            until: until.map(time),
            since: since.map(time),
            behind: held.behind,
        }
    }
}
