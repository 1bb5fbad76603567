//! Every call on a networked store gets a deadline.
//!
//! A connection whose peer stopped answering without closing it (a dead host, a dropped
//! route, a firewall that forgets the flow) fails no read and no write: the kernel keeps
//! retransmitting, and a call on it would wait for good. TCP keepalive finds such a peer only
//! after tens of seconds, and not at all when something in between still acknowledges (a
//! proxy, a NAT). So the deadline is the store's own: a call past `statement_timeout` fails
//! with a database error, and the idle connections of the pool are dropped, the stuck one
//! among them once its call is abandoned. The next call connects afresh.
//!
//! Abandoning a call does not undo it: a write may have committed with only its answer lost.
//! Every write the worker sends is fenced by its lease, so sending it again is harmless, and a
//! claim whose answer is lost leaves its jobs to expire and run again (at least once).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Utc};

use super::{
    BulkChange, CallerStatement, ClaimRequest, DueTimes, Finish, HeldQueue, JobFilter, Lease,
    PausedQueue, PeriodicTicks, QueueCount, Store,
};
use crate::error::{Error, Result};
use crate::job::{Job, NewJob};
use crate::queues::QueuePattern;

/// A [`Store`] whose calls end by a deadline. `migrate` (index builds may rightly take long)
/// and `listen` (it runs until stopped, and probes its own connection) are not bounded here.
pub struct Bounded<S> {
    inner: S,
    deadline: Duration,
}

impl<S: Store> Bounded<S> {
    pub fn new(inner: S, deadline: Duration) -> Bounded<S> {
        Bounded { inner, deadline }
    }

    async fn within<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // The abandoned call's connection went back to the pool when its future was
                // dropped; this drops it, with the other idle ones, which may be stuck alike.
                self.inner.discard_idle_connections();
                Err(Error::Database(format!(
                    "the database did not answer within statement_timeout ({:?}) while {what}; \
                     its connections are replaced",
                    self.deadline
                )))
            }
        }
    }
}

#[async_trait]
impl<S: Store> Store for Bounded<S> {
    async fn migrate(&self) -> Result<Vec<i32>> {
        self.inner.migrate().await
    }

    async fn insert_jobs(&self, scope: &str, jobs: &[NewJob]) -> Result<Vec<Job>> {
        self.within("inserting jobs", self.inner.insert_jobs(scope, jobs))
            .await
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Job>> {
        self.within("claiming jobs", self.inner.claim(request))
            .await
    }

    async fn finish(&self, finishes: &[Finish]) -> Result<Vec<i64>> {
        self.within("writing outcomes", self.inner.finish(finishes))
            .await
    }

    async fn extend_leases(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<i64>> {
        self.within("renewing leases", self.inner.extend_leases(leases, ttl))
            .await
    }

    async fn holds_lease(&self, lease: Lease) -> Result<bool> {
        self.within("checking a lease", self.inner.holds_lease(lease))
            .await
    }

    async fn rescue_expired(&self, scope: &str) -> Result<u64> {
        self.within("rescuing expired leases", self.inner.rescue_expired(scope))
            .await
    }

    async fn next_run_in(&self, scope: &str) -> Result<DueTimes> {
        self.within("reading due times", self.inner.next_run_in(scope))
            .await
    }

    async fn periodic_ticks(&self, scope: &str) -> Result<PeriodicTicks> {
        self.within("reading periodic ticks", self.inner.periodic_ticks(scope))
            .await
    }

    async fn start_periodic(&self, scope: &str, name: &str, tick: DateTime<Utc>) -> Result<()> {
        self.within(
            "starting a periodic entry",
            self.inner.start_periodic(scope, name, tick),
        )
        .await
    }

    async fn enqueue_tick(
        &self,
        scope: &str,
        name: &str,
        tick: DateTime<Utc>,
        job: &NewJob,
    ) -> Result<Option<Job>> {
        self.within(
            "enqueueing a periodic tick",
            self.inner.enqueue_tick(scope, name, tick, job),
        )
        .await
    }

    async fn delete_completed(&self, scope: &str, retention: Duration, limit: i64) -> Result<u64> {
        self.within(
            "deleting completed jobs",
            self.inner.delete_completed(scope, retention, limit),
        )
        .await
    }

    async fn get_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        self.within("reading a job", self.inner.get_job(scope, id))
            .await
    }

    async fn list_jobs(&self, scope: &str, filter: &JobFilter) -> Result<Vec<Job>> {
        self.within("listing jobs", self.inner.list_jobs(scope, filter))
            .await
    }

    async fn count_jobs(&self, scope: &str, filter: &JobFilter) -> Result<i64> {
        self.within("counting jobs", self.inner.count_jobs(scope, filter))
            .await
    }

    async fn retry_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        self.within("retrying a job", self.inner.retry_job(scope, id))
            .await
    }

    async fn cancel_job(&self, scope: &str, id: i64) -> Result<Option<Job>> {
        self.within("cancelling a job", self.inner.cancel_job(scope, id))
            .await
    }

    async fn bulk_change(
        &self,
        scope: &str,
        change: BulkChange,
        filter: &JobFilter,
    ) -> Result<u64> {
        let what = match change {
            BulkChange::Retry => "retrying jobs",
            BulkChange::Cancel => "cancelling jobs",
            BulkChange::Delete => "deleting jobs",
        };
        self.within(what, self.inner.bulk_change(scope, change, filter))
            .await
    }

    async fn queue_counts(&self, scope: &str) -> Result<Vec<QueueCount>> {
        self.within("counting jobs per queue", self.inner.queue_counts(scope))
            .await
    }

    async fn blocked_heads(
        &self,
        scope: &str,
        actions: Option<&[String]>,
        limit: i64,
    ) -> Result<(Vec<HeldQueue>, i64)> {
        self.within(
            "finding blocked queues",
            self.inner.blocked_heads(scope, actions, limit),
        )
        .await
    }

    async fn cancel_requested(&self, leases: &[Lease]) -> Result<Vec<i64>> {
        self.within(
            "looking for cancel requests",
            self.inner.cancel_requested(leases),
        )
        .await
    }

    async fn pause_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()> {
        self.within("pausing a queue", self.inner.pause_queue(scope, pattern))
            .await
    }

    async fn resume_queue(&self, scope: &str, pattern: &QueuePattern) -> Result<()> {
        self.within("resuming a queue", self.inner.resume_queue(scope, pattern))
            .await
    }

    async fn paused_queues(&self, scope: &str) -> Result<Vec<PausedQueue>> {
        self.within("listing paused queues", self.inner.paused_queues(scope))
            .await
    }

    async fn notify(&self, scope: &str) -> Result<()> {
        self.within("notifying workers", self.inner.notify(scope))
            .await
    }

    async fn listen(
        &self,
        scope: &str,
        wake: Arc<Notify>,
        cancels: Arc<Notify>,
        stop: CancellationToken,
    ) {
        self.inner.listen(scope, wake, cancels, stop).await
    }

    fn caller_insert(&self, scope: &str, jobs: &[NewJob]) -> CallerStatement {
        self.inner.caller_insert(scope, jobs)
    }

    fn caller_complete(&self, lease: Lease) -> CallerStatement {
        self.inner.caller_complete(lease)
    }

    fn close(&self) {
        self.inner.close()
    }

    fn discard_idle_connections(&self) {
        self.inner.discard_idle_connections()
    }

    fn creates_schema_on_first_use(&self) -> bool {
        self.inner.creates_schema_on_first_use()
    }
}
