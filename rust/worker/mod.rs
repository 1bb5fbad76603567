//! The worker: claims jobs in batches sized to its free slots, hands each batch to a
//! [`Dispatch`] (the Python executor), keeps the leases of running jobs alive, and writes the
//! outcomes back in batches. It knows nothing of Python or SQL.

mod completer;
mod leases;
mod producer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use crate::job::{
    attempts_exhausted, clamp_delay, default_backoff, is_last_attempt, snoozed_out, truncate_error,
    Job, JobState, MIN_UNCOUNTED_SNOOZE,
};
use crate::maintenance;
use crate::periodic::PeriodicJob;
use crate::queues::QueueRouting;
use crate::store::{Finish, Lease, Store, CANCELLED_WHILE_RUNNING};

/// Receives claimed jobs, once per batch, and runs them. Implemented by the bindings.
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, jobs: Vec<Job>);
    /// Shutdown ran out of time: stop the performers still running; each reports `Released`.
    fn cancel_all(&self);
    /// An operator cancelled these running jobs (`cancel_job`): interrupt their performers as
    /// a timeout does (a job not started yet is not started). Named by attempt, so a request
    /// never reaches a later attempt of the same job. Each reports as it ends; the worker
    /// writes the job discarded. May block on the interpreter: called off the runtime.
    fn cancel(&self, attempts: Vec<Lease>);
}

/// How an attempt ended, as the performer's side reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed {
        result: Option<String>,
    },
    /// The attempt failed; `backoff` overrides the default delay before the next one.
    Failed {
        error: String,
        backoff: Option<f64>,
    },
    /// Run again after `seconds`. A counted snooze uses up its attempt, as Bedrock's does,
    /// and ends the job `failed` on its last one; an uncounted one gives the attempt back and
    /// waits at least [`MIN_UNCOUNTED_SNOOZE`] seconds, so it cannot spin.
    Snoozed {
        seconds: f64,
        count_attempt: bool,
    },
    Discarded {
        reason: String,
    },
    /// Shutdown stopped it: back to the queue without using up the attempt.
    Released,
    /// The attempt no longer holds its job, so there is nothing to write: its performer
    /// completed the job in its own committed transaction (`job.complete(connection)`), or
    /// the attempt lost its lease.
    Settled,
}

/// What the worker remembers of an attempt between claim and the durable write of its
/// outcome. Keyed by the attempt's lease (id and token): a job re-claimed after its lease
/// expired is a different attempt, even in the same worker.
#[derive(Debug, Clone)]
struct InFlight {
    attempts: i32,
    max_attempts: i32,
    max_backoff: f64,
    /// The performer has returned and its outcome waits for the completer: the attempt no
    /// longer takes a performer slot, but its lease stays held (and renewed) until written.
    reported: bool,
    /// Handed to a performer; false while claimed ahead, and for a reservation handed back:
    /// only started attempts count as processed.
    started: bool,
    /// An operator asked to cancel the job, and its performer was told to stop: whatever it
    /// reports, short of a completion, ends the job discarded.
    cancel_requested: bool,
    /// When it was handed to a performer: the duration the outcome's log line gives.
    started_at: Option<tokio::time::Instant>,
    /// For the outcome's log line.
    action: String,
    queue: String,
}

/// The lease a claimed job's attempt holds: the key of its entry in [`Attempts::leases`].
fn lease_of(job: &Job) -> Lease {
    let token = job
        .lease_token
        .expect("a claimed job carries its lease token");
    Lease { id: job.id, token }
}

impl InFlight {
    /// A job just claimed: its lease, and what its outcome will need.
    fn claimed(job: &Job) -> (Lease, InFlight) {
        let entry = InFlight {
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            max_backoff: job.max_backoff,
            reported: false,
            started: false,
            cancel_requested: false,
            started_at: None,
            action: job.action.clone(),
            queue: job.queue.clone(),
        };
        (lease_of(job), entry)
    }
}

/// The attempts a worker holds, from claim until their outcome is written.
#[derive(Default)]
struct Attempts {
    leases: HashMap<Lease, InFlight>,
    /// Attempts handed to a performer that has not reported yet: what `concurrency` limits.
    performing: usize,
    /// Jobs claimed ahead (EctoJob's RESERVED), in claim order, with when they were claimed:
    /// they hold their leases, renewed like running ones, and start as slots free.
    reserved: VecDeque<(Job, tokio::time::Instant)>,
    /// Claiming ahead is off until then: reservations expired, so performers are slower than
    /// the buffer and other workers should get the chance to take what it handed back.
    reserve_paused_until: Option<tokio::time::Instant>,
    /// Set once a stop began: what is claimed from then on is put back, not reserved.
    closed: bool,
}

impl Attempts {
    /// Move reserved jobs into free performer slots, oldest first; none once a stop began
    /// (it hands them back).
    fn take_ready(&mut self, concurrency: usize) -> Vec<Job> {
        if self.closed {
            return Vec::new();
        }
        let free = concurrency.saturating_sub(self.performing);
        let count = free.min(self.reserved.len());
        self.performing += count;
        let ready: Vec<Job> = self.reserved.drain(..count).map(|(job, _)| job).collect();
        let now = tokio::time::Instant::now();
        for job in &ready {
            if let Some(entry) = self.leases.get_mut(&lease_of(job)) {
                entry.started = true;
                entry.started_at = Some(now);
            }
        }
        ready
    }

    /// Forget reserved jobs whose lease renewal found them no longer held (another worker
    /// may run them by now): never start them, and write nothing for them.
    fn drop_lost_reservations(&mut self, lost: &[i64]) -> usize {
        let before = self.reserved.len();
        let mut dropped = Vec::new();
        self.reserved.retain(|(job, _)| {
            let keep = !lost.contains(&job.id);
            if !keep {
                dropped.push(lease_of(job));
            }
            keep
        });
        for lease in dropped {
            self.leases.remove(&lease);
        }
        before - self.reserved.len()
    }

    /// Take the cancel requests the store reported for `ids`: a job claimed ahead is taken out
    /// of the buffer and ends discarded now (returned as its outcome), a started one is marked
    /// (returned as an id to interrupt). Attempts already marked or reported are left alone.
    fn take_cancel_requests(&mut self, ids: &[i64]) -> (Vec<Finish>, Vec<Lease>) {
        let mut reserved_cancelled = Vec::new();
        self.reserved.retain(|(job, _)| {
            let keep = !ids.contains(&job.id);
            if !keep {
                reserved_cancelled.push(lease_of(job));
            }
            keep
        });
        let mut finishes = Vec::new();
        let mut interrupt = Vec::new();
        for (lease, entry) in self.leases.iter_mut() {
            if !ids.contains(&lease.id) || entry.reported || entry.cancel_requested {
                continue;
            }
            entry.cancel_requested = true;
            if reserved_cancelled.contains(lease) {
                entry.reported = true;
                finishes.push(finish_for(*lease, entry, Outcome::Released));
            } else {
                interrupt.push(*lease);
            }
        }
        (finishes, interrupt)
    }

    /// When claiming must look again by itself: the oldest reservation expires, or the pause
    /// of claiming ahead ends.
    fn next_deadline(&self, config: &WorkerConfig) -> Option<tokio::time::Instant> {
        let expiry = self
            .reserved
            .front()
            .map(|(_, since)| *since + config.reservation_timeout);
        let pause_end = self
            .reserve_paused_until
            .filter(|until| *until > tokio::time::Instant::now());
        match (expiry, pause_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Jobs to claim now: the free slots and the room left in the reservation buffer.
    fn room(&self, config: &WorkerConfig, now: tokio::time::Instant) -> usize {
        let prefetch = match self.reserve_paused_until {
            Some(until) if until > now => 0,
            _ => config.prefetch(),
        };
        (config.concurrency as usize + prefetch)
            .saturating_sub(self.performing + self.reserved.len())
    }
}

/// Turn an outcome into the row update. The attempt that
/// used up `max_attempts` fails the job; a claim past them (see [`Job::attempts_exhausted`])
/// only failed it, and gives its extra attempt back.
fn finish_for(lease: Lease, entry: &InFlight, outcome: Outcome) -> Finish {
    // A cancelled attempt ends discarded, unless its performer completed (or settled) the job
    // before the interrupt reached it: the work is done then, and stays done. No failure hook
    // runs: the job did not fail, an operator ended it.
    let outcome = match outcome {
        Outcome::Completed { .. } | Outcome::Settled => outcome,
        _ if entry.cancel_requested => Outcome::Discarded {
            reason: CANCELLED_WHILE_RUNNING.to_owned(),
        },
        _ => outcome,
    };
    let base = Finish {
        lease,
        state: JobState::Completed,
        result: None,
        error: None,
        delay: None,
        refund_attempt: false,
    };
    match outcome {
        // The row is already settled, so this write is fenced out by the lease token and
        // changes nothing; it is still sent because the store hands a blocking queue's head on
        // after every finish (a job completed in the caller's transaction left its queue too).
        Outcome::Settled => base,
        Outcome::Completed { result } => Finish { result, ..base },
        Outcome::Failed { error, .. } if attempts_exhausted(entry.attempts, entry.max_attempts) => {
            Finish {
                state: JobState::Failed,
                error: Some(truncate_error(error)),
                refund_attempt: true,
                ..base
            }
        }
        Outcome::Failed { error, backoff } => {
            if is_last_attempt(entry.attempts, entry.max_attempts) {
                Finish {
                    state: JobState::Failed,
                    error: Some(truncate_error(error)),
                    ..base
                }
            } else {
                let delay = backoff
                    .filter(|s| s.is_finite())
                    .map(clamp_delay)
                    .unwrap_or_else(|| default_backoff(entry.attempts, entry.max_backoff));
                Finish {
                    state: JobState::Retryable,
                    error: Some(truncate_error(error)),
                    delay: Some(delay),
                    ..base
                }
            }
        }
        Outcome::Snoozed {
            count_attempt: true,
            ..
        } if is_last_attempt(entry.attempts, entry.max_attempts) => Finish {
            state: JobState::Failed,
            error: Some(snoozed_out(entry.max_attempts)),
            ..base
        },
        Outcome::Snoozed {
            seconds,
            count_attempt,
        } => Finish {
            state: JobState::Scheduled,
            delay: Some(if count_attempt {
                clamp_delay(seconds)
            } else {
                clamp_delay(seconds).max(MIN_UNCOUNTED_SNOOZE)
            }),
            refund_attempt: !count_attempt,
            ..base
        },
        Outcome::Discarded { reason } => Finish {
            state: JobState::Discarded,
            error: Some(truncate_error(reason)),
            ..base
        },
        Outcome::Released => Finish {
            state: JobState::Available,
            refund_attempt: true,
            ..base
        },
    }
}

/// What an outcome's log line needs of its attempt, taken when the performer reports.
struct Reported {
    id: i64,
    attempts: i32,
    max_attempts: i32,
    started_at: Option<tokio::time::Instant>,
    action: String,
    queue: String,
    /// The attempt no longer held its job: completed in the caller's transaction, or lost.
    settled: bool,
}

impl Reported {
    /// Takes the entry's names: nothing else reads them once its performer has reported.
    fn of(id: i64, entry: &mut InFlight, outcome: &Outcome) -> Reported {
        Reported {
            id,
            attempts: entry.attempts,
            max_attempts: entry.max_attempts,
            started_at: entry.started_at,
            action: std::mem::take(&mut entry.action),
            queue: std::mem::take(&mut entry.queue),
            settled: matches!(outcome, Outcome::Settled),
        }
    }

    /// One line per outcome on the `ferroq` logger: completions at DEBUG (so that INFO costs
    /// nothing per job), snoozes and discards at INFO, a failure that will be retried at
    /// WARNING, a job failed for good at ERROR.
    fn log(&self, finish: &Finish, now: tokio::time::Instant) {
        let (id, action, queue) = (self.id, &self.action, &self.queue);
        // Closures: a record below the level never evaluates its arguments.
        let ran = || {
            self.started_at
                .map(|since| {
                    let ms = now.saturating_duration_since(since).as_secs_f64() * 1000.0;
                    format!(" after {ms:.1}ms")
                })
                .unwrap_or_default()
        };
        // A claim past the last attempt (only its failure hook ran) gives its count back.
        let attempt = || {
            let attempts = self.attempts.min(self.max_attempts);
            format!("attempt {attempts}/{}", self.max_attempts)
        };
        let error = || summary_line(finish.error.as_deref().unwrap_or(""));
        match finish.state {
            JobState::Completed if self.settled => log::debug!(
                "ferroq: job {id} ({action} on queue {queue:?}) settled{}: completed in the performer's own transaction, or its lease was lost",
                ran()
            ),
            JobState::Completed => {
                log::debug!("ferroq: job {id} ({action} on queue {queue:?}) completed{}", ran())
            }
            JobState::Retryable => log::warn!(
                "ferroq: job {id} ({action} on queue {queue:?}) failed {}{}: {}; next attempt {}",
                attempt(),
                ran(),
                error(),
                when(finish.delay.unwrap_or(0.0))
            ),
            JobState::Failed => log::error!(
                "ferroq: job {id} ({action} on queue {queue:?}) failed for good ({}){}: {}",
                attempt(),
                ran(),
                error()
            ),
            JobState::Scheduled => log::info!(
                "ferroq: job {id} ({action} on queue {queue:?}) snoozed{}: runs again {}{}",
                ran(),
                when(finish.delay.unwrap_or(0.0)),
                if finish.refund_attempt {
                    ", its attempt given back"
                } else {
                    ""
                }
            ),
            JobState::Discarded => log::info!(
                "ferroq: job {id} ({action} on queue {queue:?}) discarded{}: {}",
                ran(),
                error()
            ),
            JobState::Available => log::debug!(
                "ferroq: job {id} ({action} on queue {queue:?}) released at stop, its attempt given back"
            ),
            JobState::Running => {}
        }
    }
}

/// The line of an error worth a log line: a Python traceback's exception line (`ValueError:
/// boom`), not its "Traceback (most recent call last):" header or a frame; else the first line.
fn summary_line(error: &str) -> &str {
    let mut lines = error.lines();
    match lines.next() {
        Some(header) if header.starts_with("Traceback ") => lines
            .find(|line| !line.starts_with(' ') && !line.is_empty())
            .unwrap_or(header),
        Some(first) => first,
        None => "",
    }
}

/// When a job runs again, `delay` seconds from now: by the database clock, which decides it;
/// the time of day is this host's reading, shown only to help a reader place it.
fn when(delay: f64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::milliseconds((delay * 1000.0) as i64);
    format!("in {delay:.1}s (about {} UTC)", at.format("%H:%M:%S"))
}

/// State shared by the worker's tasks.
struct Shared {
    store: Arc<dyn Store>,
    scope: String,
    config: WorkerConfig,
    /// The queue kinds and the queues this worker serves.
    queues: QueueRouting,
    /// The actions this worker has performers for: the only ones it claims.
    actions: Vec<String>,
    in_flight: Mutex<Attempts>,
    /// Wakes the producer: new work announced, a slot freed, a job due.
    wake: Arc<Notify>,
    /// Wakes lease renewal to ask whether a running job's cancel was requested.
    cancels: Arc<Notify>,
    /// Signalled whenever jobs leave the in-flight set.
    progressed: Notify,
    /// Cancelled when the worker must stop claiming.
    stop_claiming: CancellationToken,
    /// Cancelled at stop: the listener and the maintenance tasks end.
    shutdown: CancellationToken,
    /// Cancelled once the worker has stopped and holds no attempt any more: lease renewal
    /// ends. A performer that could not be stopped keeps its lease renewed until then.
    attempts_settled: CancellationToken,
    finishes: Mutex<Option<mpsc::UnboundedSender<Finish>>>,
    processed: AtomicU64,
    /// Why a drain ended before it ran everything due: the database kept failing.
    drain_failed: Mutex<Option<Error>>,
    /// Cancelled to cut a graceful stop short (a second Ctrl-C): interrupt and release now.
    hurry: CancellationToken,
}

impl Shared {
    /// Attempts claimed and not yet written back.
    fn in_flight_count(&self) -> usize {
        self.in_flight.lock().unwrap().leases.len()
    }

    /// Jobs whose performer has not returned yet.
    fn performing_jobs(&self) -> Vec<i64> {
        let attempts = self.in_flight.lock().unwrap();
        let mut ids: Vec<i64> = attempts
            .leases
            .iter()
            .filter(|(_, entry)| !entry.reported)
            .map(|(lease, _)| lease.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Wait until `done` holds, re-checked whenever attempts progress; false if `deadline`
    /// passed first.
    async fn wait_for(
        &self,
        deadline: Option<tokio::time::Instant>,
        done: impl Fn(&Shared) -> bool,
    ) -> bool {
        loop {
            let progressed = self.progressed.notified();
            if done(self) {
                return true;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                        return done(self);
                    }
                }
                None => progressed.await,
            }
        }
    }

    /// How many jobs to claim now: free performer slots plus room in the reservation buffer;
    /// and how many of them may be heads of blocking queues: the slots free now. A slot frees
    /// as soon as its performer reports, so the next claim overlaps the write of the previous
    /// outcomes.
    fn claim_room(&self) -> (usize, usize) {
        let now = tokio::time::Instant::now();
        let attempts = self.in_flight.lock().unwrap();
        let free_slots = (self.config.concurrency as usize)
            .saturating_sub(attempts.performing + attempts.reserved.len());
        (attempts.room(&self.config, now), free_slots)
    }

    /// Take in what a claim returned: every job holds its lease from now on; as many as there
    /// are free slots are returned to start now, the rest wait reserved. After a stop began
    /// nothing is reserved: the jobs are returned as `Err` to be put back.
    fn admit(&self, jobs: Vec<Job>) -> std::result::Result<Vec<Job>, Vec<Job>> {
        let mut attempts = self.in_flight.lock().unwrap();
        if attempts.closed {
            return Err(jobs);
        }
        let now = tokio::time::Instant::now();
        // Heads of blocking queues first: the claim took only as many as there are free
        // slots, so they all start now; claimed ahead, one would hold its whole queue.
        let (heads, rest): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| self.queues.kinds.is_blocking(&job.queue));
        for job in heads.into_iter().chain(rest) {
            let (lease, entry) = InFlight::claimed(&job);
            attempts.leases.insert(lease, entry);
            attempts.reserved.push_back((job, now));
        }
        Ok(attempts.take_ready(self.config.concurrency as usize))
    }

    /// When the producer must look again by itself: the oldest reservation expires, or the
    /// pause of claiming ahead ends.
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.in_flight.lock().unwrap().next_deadline(&self.config)
    }

    /// Hand back the reserved jobs that waited longer than `reservation_timeout` (all of them
    /// when `all`), their attempts unused, and pause claiming ahead for as long.
    fn release_reserved(&self, all: bool) -> usize {
        let now = tokio::time::Instant::now();
        let released: Vec<Finish> = {
            let mut attempts = self.in_flight.lock().unwrap();
            let mut released = Vec::new();
            while let Some((_, since)) = attempts.reserved.front() {
                if !all && *since + self.config.reservation_timeout > now {
                    break;
                }
                let (job, _) = attempts.reserved.pop_front().expect("a front was seen");
                let lease = lease_of(&job);
                if let Some(entry) = attempts.leases.get_mut(&lease) {
                    // No performer will report it: it counts as reported from now on.
                    entry.reported = true;
                    released.push(finish_for(lease, entry, Outcome::Released));
                }
            }
            if !released.is_empty() && !all {
                attempts.reserve_paused_until = Some(now + self.config.reservation_timeout);
            }
            released
        };
        let count = released.len();
        if count > 0 {
            if !all {
                log::info!(
                    "ferroq: {count} jobs claimed ahead waited {:?} without a free slot; handed back to the queue",
                    self.config.reservation_timeout
                );
            }
            self.send_finishes(released);
        }
        count
    }

    /// Queue outcomes for the completer; dropped once it has ended after a stop (their jobs'
    /// leases expire and they run again).
    fn send_finishes(&self, finishes: impl IntoIterator<Item = Finish>) {
        if let Some(sender) = self.finishes.lock().unwrap().as_ref() {
            for finish in finishes {
                let _ = sender.send(finish);
            }
        }
    }

    /// Forget attempts whose outcome is written (or needs no write), and wake whoever waits.
    fn retire(&self, leases: impl IntoIterator<Item = Lease>) {
        let mut retired = 0;
        {
            let mut attempts = self.in_flight.lock().unwrap();
            for lease in leases {
                if attempts
                    .leases
                    .remove(&lease)
                    .is_some_and(|entry| entry.started)
                {
                    retired += 1;
                }
            }
        }
        self.processed.fetch_add(retired, Ordering::Relaxed);
        // Free slots and a finished blocking-queue head both mean there may be work to claim.
        self.wake.notify_one();
        self.progressed.notify_waiters();
    }
}

/// How a worker is told of news from its own process (other processes' reach it through the
/// store's `listen`): work to claim, and cancel requests of running jobs.
pub struct Wakes {
    pub work: Arc<Notify>,
    pub cancels: Arc<Notify>,
}

/// A running worker. Dropping it without `stop` leaves its tasks running until the runtime ends.
pub struct Worker {
    shared: Arc<Shared>,
    dispatcher: Arc<dyn Dispatch>,
    producer: Mutex<Option<JoinHandle<()>>>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl Worker {
    /// Start claiming and running jobs of `scope` on the current tokio runtime, and enqueueing
    /// the ticks of `periodic` (not in drain mode).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store: Arc<dyn Store>,
        scope: String,
        queues: QueueRouting,
        actions: Vec<String>,
        config: WorkerConfig,
        dispatcher: Arc<dyn Dispatch>,
        wakes: Wakes,
        periodic: Vec<PeriodicJob>,
    ) -> Worker {
        let (finish_tx, finish_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store,
            scope,
            config,
            queues,
            actions,
            in_flight: Mutex::new(Attempts::default()),
            wake: wakes.work,
            cancels: wakes.cancels,
            progressed: Notify::new(),
            stop_claiming: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            attempts_settled: CancellationToken::new(),
            finishes: Mutex::new(Some(finish_tx)),
            processed: AtomicU64::new(0),
            drain_failed: Mutex::new(None),
            hurry: CancellationToken::new(),
        });
        // The completer and lease renewal live as long as the worker holds attempts, which may
        // be past stop(); they end by themselves (see `Worker::stop`).
        tokio::spawn(completer::run(shared.clone(), finish_rx));
        tokio::spawn(leases::keep_alive(shared.clone(), dispatcher.clone()));
        let mut background = vec![tokio::spawn(maintenance::rescue_loop(
            shared.store.clone(),
            shared.scope.clone(),
            shared.config.rescue_interval(),
            shared.wake.clone(),
            shared.shutdown.clone(),
        ))];
        if !shared.config.drain {
            let store = shared.store.clone();
            let (scope, wake, cancels, stop) = (
                shared.scope.clone(),
                shared.wake.clone(),
                shared.cancels.clone(),
                shared.shutdown.clone(),
            );
            background.push(tokio::spawn(async move {
                store.listen(&scope, wake, cancels, stop).await
            }));
            background.push(tokio::spawn(maintenance::periodic::schedule_loop(
                shared.store.clone(),
                shared.scope.clone(),
                periodic,
                shared.wake.clone(),
                shared.shutdown.clone(),
            )));
            if let Some(interval) = shared.config.cleanup_interval {
                background.push(tokio::spawn(maintenance::cleanup_loop(
                    shared.store.clone(),
                    shared.scope.clone(),
                    interval,
                    shared.config.job_retention,
                    shared.shutdown.clone(),
                )));
            }
        }
        let producer = tokio::spawn(producer::run(shared.clone(), dispatcher.clone()));
        Worker {
            shared,
            dispatcher,
            producer: Mutex::new(Some(producer)),
            background: Mutex::new(background),
        }
    }

    /// Record how attempts ended; the completer writes them. Returns the reserved jobs that
    /// take the freed slots, to start now: a slot is refilled from memory, without waiting for
    /// a claim. Unknown attempts (released at shutdown) and second reports of one attempt are
    /// ignored.
    pub fn report_many(&self, outcomes: impl IntoIterator<Item = (Lease, Outcome)>) -> Vec<Job> {
        let mut finishes = Vec::new();
        let mut reported = Vec::new();
        let (ready, room_opened) = {
            let mut attempts = self.shared.in_flight.lock().unwrap();
            let now = tokio::time::Instant::now();
            let room_before = attempts.room(&self.shared.config, now);
            let mut returned = 0;
            for (lease, outcome) in outcomes {
                let Some(entry) = attempts.leases.get_mut(&lease) else {
                    continue;
                };
                if entry.reported {
                    continue;
                }
                entry.reported = true;
                returned += 1;
                reported.push(Reported::of(lease.id, entry, &outcome));
                finishes.push(finish_for(lease, entry, outcome));
            }
            attempts.performing -= returned;
            let ready = attempts.take_ready(self.shared.config.concurrency as usize);
            let room_opened = room_before == 0 && attempts.room(&self.shared.config, now) > 0;
            (ready, room_opened)
        };
        // Logged outside the lock: a record at an enabled level is formatted and queued; one
        // below the level (a completion, unless DEBUG) costs a comparison.
        let now = tokio::time::Instant::now();
        for (reported, finish) in reported.iter().zip(&finishes) {
            reported.log(finish, now);
        }
        self.shared.send_finishes(finishes);
        // A producer waiting for room can claim now. Otherwise it waits for the written
        // outcome: only that can unblock a blocking queue or lower a queue's running count.
        if room_opened {
            self.shared.wake.notify_one();
        }
        if self.shared.stop_claiming.is_cancelled() {
            // A stop waits for performers to return.
            self.shared.progressed.notify_waiters();
        }
        ready
    }

    /// Jobs whose outcome has been written since start.
    pub fn processed(&self) -> u64 {
        self.shared.processed.load(Ordering::Relaxed)
    }

    /// Jobs claimed and not yet written back.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight_count()
    }

    /// In drain mode: wait until nothing due is left and every outcome is written; the
    /// error if the database kept failing for longer than `drain_gives_up_after`.
    pub async fn wait_drained(&self) -> Result<()> {
        let handle = self.producer.lock().unwrap().take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        match self.shared.drain_failed.lock().unwrap().take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Cut a graceful stop short, now or once it starts: what still runs is interrupted and
    /// released at once, as when `stop`'s timeout runs out (a second Ctrl-C).
    pub fn hurry(&self) {
        self.shared.hurry.cancel();
    }

    /// Graceful stop: claim nothing more, let running jobs finish within `timeout` (their
    /// leases still renewed), then interrupt the rest, which put their jobs back without using
    /// an attempt. Returns within `timeout` + [`INTERRUPT_GRACE`] + [`WRITE_GRACE`], whatever
    /// the performers or the database do.
    ///
    /// Returns the jobs whose performer has still not returned. They are not released: a
    /// performer stuck where no interrupt reaches (a C call, a thread that swallows it) may
    /// still be working on its job, and no other worker may start it meanwhile. Their leases
    /// stay renewed and their outcomes are written when they return; only the end of the
    /// process lets their leases expire, as after a crash.
    pub async fn stop(&self, timeout: Duration) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let shared = &self.shared;
        shared.stop_claiming.cancel();
        shared.wake.notify_one();
        // Jobs claimed ahead go back to the queue at once, their attempts unused; a claim
        // still under way puts back what it returns.
        shared.in_flight.lock().unwrap().closed = true;
        shared.release_reserved(true);
        let level = if shared.config.drain {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "ferroq: worker {} stopping: waiting for {} jobs (at most {:?})",
            shared.config.worker_name,
            shared.performing_jobs().len(),
            timeout
        );
        // The producer ends at its next await. A claim in progress is never cut off (its
        // transaction may commit all the same, leaving jobs leased to no one): past the deadline
        // stop goes on without it, and the producer puts back what that claim returns.
        let producer = self.producer.lock().unwrap().take();
        if let Some(mut producer) = producer {
            tokio::select! {
                biased;
                _ = &mut producer => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shared.hurry.cancelled() => {}
            }
        }
        let finished = tokio::select! {
            idle = shared.wait_for(Some(deadline), |s| s.in_flight_count() == 0) => idle,
            _ = shared.hurry.cancelled() => false,
        };
        if !finished {
            self.dispatcher.cancel_all();
            // Interrupted performers report their release themselves.
            let grace = tokio::time::Instant::now() + INTERRUPT_GRACE;
            shared
                .wait_for(Some(grace), |s| s.performing_jobs().is_empty())
                .await;
        }
        let unstoppable = shared.performing_jobs();
        if !unstoppable.is_empty() {
            log::warn!(
                "ferroq: stopping: the performers of jobs {unstoppable:?} have not returned; \
                 their leases stay renewed until they return or this process exits"
            );
        }
        tokio::spawn(settle_after_stop(shared.clone()));
        // Write the outcomes reported so far, unless the database is away: they are then
        // written later, or dropped and their jobs run again once the leases expire.
        let write_by = tokio::time::Instant::now() + WRITE_GRACE;
        let unstoppable_count = unstoppable.len();
        shared
            .wait_for(Some(write_by), |s| s.in_flight_count() <= unstoppable_count)
            .await;
        shared.shutdown.cancel();
        let handles: Vec<JoinHandle<()>> = self.background.lock().unwrap().drain(..).collect();
        for mut handle in handles {
            tokio::select! {
                _ = &mut handle => {}
                _ = tokio::time::sleep_until(write_by) => handle.abort(),
            }
        }
        log::log!(
            level,
            "ferroq: worker {} stopped; {} jobs processed",
            shared.config.worker_name,
            shared.processed.load(Ordering::Relaxed)
        );
        unstoppable
    }
}

/// How long `stop` waits for interrupted performers to report, past its timeout.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
/// How long `stop` waits for outcomes to be written, past the interrupts.
pub const WRITE_GRACE: Duration = Duration::from_secs(2);

/// After a stop: once every performer has returned, let the completer write what it holds and
/// end; once nothing is in flight, end lease renewal.
async fn settle_after_stop(shared: Arc<Shared>) {
    shared
        .wait_for(None, |s| s.performing_jobs().is_empty())
        .await;
    shared.finishes.lock().unwrap().take();
    shared.wait_for(None, |s| s.in_flight_count() == 0).await;
    shared.attempts_settled.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Lease = Lease { id: 1, token: 7 };

    use super::finish_for;

    fn entry(attempts: i32, max_attempts: i32) -> InFlight {
        InFlight {
            attempts,
            max_attempts,
            max_backoff: 100.0,
            reported: false,
            started: true,
            cancel_requested: false,
            started_at: None,
            action: "a".into(),
            queue: "q".into(),
        }
    }

    #[test]
    fn summary_line_is_the_exception_line_of_a_traceback() {
        let traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    raise ValueError('boom')\nValueError: boom\nsecond line";
        assert_eq!(summary_line(traceback), "ValueError: boom");
        assert_eq!(summary_line("nope\nmore"), "nope");
        assert_eq!(summary_line(""), "");
    }

    #[test]
    fn failure_retries_with_default_backoff_until_the_last_attempt() {
        let first = finish_for(
            LEASE,
            &entry(1, 3),
            Outcome::Failed {
                error: "boom".into(),
                backoff: None,
            },
        );
        assert_eq!((first.state, first.delay), (JobState::Retryable, Some(2.0)));
        let second = finish_for(
            LEASE,
            &entry(2, 3),
            Outcome::Failed {
                error: "boom".into(),
                backoff: None,
            },
        );
        assert_eq!(second.delay, Some(3.0));
        let last = finish_for(
            LEASE,
            &entry(3, 3),
            Outcome::Failed {
                error: "boom".into(),
                backoff: None,
            },
        );
        assert_eq!((last.state, last.delay), (JobState::Failed, None));
        assert_eq!(last.lease, Lease { id: 1, token: 7 });
    }

    #[test]
    fn custom_backoff_wins_and_is_never_negative() {
        let f = finish_for(
            LEASE,
            &entry(1, 3),
            Outcome::Failed {
                error: "x".into(),
                backoff: Some(0.25),
            },
        );
        assert_eq!(f.delay, Some(0.25));
        let f = finish_for(
            LEASE,
            &entry(1, 3),
            Outcome::Failed {
                error: "x".into(),
                backoff: Some(-4.0),
            },
        );
        assert_eq!(f.delay, Some(0.0));
    }

    #[test]
    fn a_snooze_counts_and_ends_the_job_on_its_last_attempt() {
        let snooze = |seconds| Outcome::Snoozed {
            seconds,
            count_attempt: true,
        };
        let first = finish_for(LEASE, &entry(1, 3), snooze(5.0));
        assert_eq!(
            (first.state, first.delay, first.refund_attempt),
            (JobState::Scheduled, Some(5.0), false)
        );
        let last = finish_for(LEASE, &entry(3, 3), snooze(5.0));
        assert_eq!((last.state, last.delay), (JobState::Failed, None));
        assert!(last.error.unwrap().contains("snoozed"));
    }

    #[test]
    fn an_uncounted_snooze_gives_the_attempt_back_but_cannot_spin() {
        let snoozed = finish_for(
            LEASE,
            &entry(3, 3),
            Outcome::Snoozed {
                seconds: 0.0,
                count_attempt: false,
            },
        );
        assert_eq!(
            (snoozed.state, snoozed.delay, snoozed.refund_attempt),
            (JobState::Scheduled, Some(MIN_UNCOUNTED_SNOOZE), true)
        );
    }

    #[test]
    fn a_claim_past_the_last_attempt_fails_the_job_and_gives_its_attempt_back() {
        let failed = finish_for(
            LEASE,
            &entry(4, 3),
            Outcome::Failed {
                error: "lease expired".into(),
                backoff: Some(5.0),
            },
        );
        assert_eq!(
            (failed.state, failed.delay, failed.refund_attempt),
            (JobState::Failed, None, true)
        );
        assert_eq!(failed.error.as_deref(), Some("lease expired"));
    }

    #[test]
    fn a_settled_attempt_writes_only_a_fenced_completion() {
        // Fenced out by the store (the row no longer holds this lease); it is sent so that the
        // store hands the job's blocking queue on.
        let finish = finish_for(LEASE, &entry(1, 3), Outcome::Settled);
        assert_eq!((finish.state, finish.result), (JobState::Completed, None));
    }

    #[test]
    fn a_cancelled_attempt_ends_discarded_unless_it_completed() {
        let cancelled = InFlight {
            cancel_requested: true,
            ..entry(1, 3)
        };
        for outcome in [
            Outcome::Failed {
                error: "interrupted".into(),
                backoff: None,
            },
            Outcome::Released,
            Outcome::Snoozed {
                seconds: 5.0,
                count_attempt: false,
            },
        ] {
            let finish = finish_for(LEASE, &cancelled, outcome);
            assert_eq!(
                (finish.state, finish.error.as_deref(), finish.delay),
                (JobState::Discarded, Some(CANCELLED_WHILE_RUNNING), None)
            );
        }
        let completed = finish_for(LEASE, &cancelled, Outcome::Completed { result: None });
        assert_eq!(completed.state, JobState::Completed);
    }

    #[test]
    fn release_gives_the_attempt_back() {
        let released = finish_for(LEASE, &entry(1, 3), Outcome::Released);
        assert_eq!(
            (released.state, released.refund_attempt),
            (JobState::Available, true)
        );
    }
}
