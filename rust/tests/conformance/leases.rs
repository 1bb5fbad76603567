//! extend_leases and rescue_expired: a lease is the fence of one attempt; a lease nobody
//! renews means the worker is gone.

use std::time::Duration;

use _core::job::{JobState, NewJob};
use _core::store::{ClaimRequest, Finish, Lease};

use crate::support::{
    claim, finish, ids, job, lease, queues, running, Backend, TestDb, BLOCKING_ONLY,
};

pub async fn a_stale_attempt_cannot_finish_a_rescued_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    let stale = db
        .store
        .claim(&claim(1, &BLOCKING_ONLY))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let stale_lease = lease(&stale);
    db.expire_leases().await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 1);
    let fresh = db
        .store
        .claim(&claim(1, &BLOCKING_ONLY))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(fresh.id, stale.id);
    assert_ne!(fresh.lease_token, stale.lease_token);
    assert!(db
        .store
        .extend_leases(&[stale_lease], Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert!(
        db.store
            .finish(&[finish(stale_lease, JobState::Failed)])
            .await
            .unwrap()
            .is_empty(),
        "stale outcome is fenced off"
    );
    let row = db
        .store
        .get_job("default", fresh.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("running", 2));
    db.drop().await;
}

pub async fn extend_leases_returns_only_the_leases_still_held(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &vec![job("q", false); 3]).await;
    db.store
        .finish(&[finish(lease(&jobs[2]), JobState::Completed)])
        .await
        .unwrap();
    let wrong_token = Lease {
        id: jobs[1].id,
        token: jobs[1].lease_token.unwrap().wrapping_add(1),
    };
    let unknown = Lease {
        id: jobs[2].id + 1000,
        token: 7,
    };
    let held = db
        .store
        .extend_leases(
            &[lease(&jobs[0]), wrong_token, lease(&jobs[2]), unknown],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        held,
        vec![jobs[0].id],
        "a wrong token, a finished attempt and an unknown job are not held"
    );
    assert!(db
        .store
        .extend_leases(&[], Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    db.drop().await;
}

pub async fn an_extended_lease_outlives_its_first_term(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs("default", &[job("q", false), job("q", false)])
        .await
        .unwrap();
    let limits = queues(&[("q", 10)]);
    let short = ClaimRequest {
        lease_ttl: Duration::from_millis(200),
        actions: None,
        ..claim(10, &limits)
    };
    let jobs = db.store.claim(&short).await.unwrap();
    assert_eq!(jobs.len(), 2);
    let (kept, abandoned) = (&jobs[0], &jobs[1]);
    assert_eq!(
        db.store
            .extend_leases(&[lease(kept)], Duration::from_secs(30))
            .await
            .unwrap(),
        vec![kept.id]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        db.store.rescue_expired("default").await.unwrap(),
        1,
        "only the lease that was not renewed expired"
    );
    let kept_now = db.store.get_job("default", kept.id).await.unwrap().unwrap();
    assert_eq!(
        (kept_now.state, kept_now.lease_token),
        (JobState::Running, kept.lease_token)
    );
    let abandoned_now = db
        .store
        .get_job("default", abandoned.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(abandoned_now.state, JobState::Available);
    db.drop().await;
}

pub async fn rescue_makes_an_abandoned_job_runnable_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs("default", &[job("a", true), job("a", true)])
        .await
        .unwrap();
    let request = ClaimRequest {
        worker_name: "dead-worker",
        ..claim(10, &BLOCKING_ONLY)
    };
    let first = db.store.claim(&request).await.unwrap().pop().unwrap();
    db.expire_leases().await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 1);
    let rescued = db
        .store
        .get_job("default", first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            rescued.state,
            rescued.attempts,
            rescued.lease_token,
            rescued.done_at
        ),
        (JobState::Available, 1, None, None),
        "the crashed attempt counts"
    );
    let error = rescued.error.unwrap();
    assert!(
        error.contains("lease expired") && error.contains("dead-worker"),
        "the error says what happened: {error}"
    );
    assert_eq!(
        db.store.rescue_expired("default").await.unwrap(),
        0,
        "nothing left to rescue"
    );
    let again = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(first.id, 2)],
        "the rescued head keeps its place in its blocking queue"
    );
    db.drop().await;
}

pub async fn rescue_hands_a_job_out_of_attempts_back_for_its_failure_hook(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(
        &*db.store,
        &[NewJob {
            max_attempts: 1,
            ..job("q", false)
        }],
    )
    .await;
    db.expire_leases().await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 1);
    let pending = db
        .store
        .get_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            pending.state,
            pending.attempts,
            pending.lease_token,
            pending.done_at
        ),
        (JobState::Available, 1, None, None),
        "not failed by the rescuer: a worker with its performer runs the hook first"
    );
    let error = pending.error.unwrap();
    assert!(
        error.contains("lease expired") && error.contains("on_failure hook"),
        "the error says a failure hook is pending: {error}"
    );

    // The claim that runs the hook counts one attempt past the limit...
    let limits = queues(&[("q", 10)]);
    let hook_run = db
        .store
        .claim(&claim(10, &limits))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!((hook_run.id, hook_run.attempts), (jobs[0].id, 2));
    // ...and if its worker dies as well, the count goes back and the first error stays.
    db.expire_leases().await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 1);
    let again = db
        .store
        .get_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.state, again.attempts), (JobState::Available, 1));
    assert_eq!(again.error.as_deref(), Some(error.as_str()));

    // The failure is written with that extra attempt given back.
    let hook_run = db
        .store
        .claim(&claim(10, &limits))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let written = db
        .store
        .finish(&[Finish {
            error: Some(error.clone()),
            refund_attempt: true,
            ..finish(lease(&hook_run), JobState::Failed)
        }])
        .await
        .unwrap();
    assert_eq!(written, vec![jobs[0].id]);
    let failed = db
        .store
        .get_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((failed.state, failed.attempts), (JobState::Failed, 1));
    assert!(failed.done_at.is_some());
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 0);
    db.drop().await;
}

pub async fn holds_lease_is_true_only_for_the_running_attempt(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &[job("q", false), job("q", false)]).await;
    let (first, second) = (lease(&jobs[0]), lease(&jobs[1]));
    assert!(db.store.holds_lease(first).await.unwrap());
    let other_token = Lease {
        token: first.token.wrapping_add(1),
        ..first
    };
    assert!(!db.store.holds_lease(other_token).await.unwrap());
    db.store
        .finish(&[finish(first, JobState::Completed)])
        .await
        .unwrap();
    assert!(!db.store.holds_lease(first).await.unwrap(), "finished");
    db.expire_leases().await;
    db.store.rescue_expired("default").await.unwrap();
    assert!(!db.store.holds_lease(second).await.unwrap(), "rescued");
    db.drop().await;
}

pub async fn rescue_leaves_live_leases_and_other_scopes_alone(backend: Backend) {
    let db = TestDb::new(backend).await;
    let live = running(&*db.store, &[job("q", false)]).await;
    db.store
        .insert_jobs("other", &[job("q", false)])
        .await
        .unwrap();
    let limits = queues(&[("q", 10)]);
    let theirs = db
        .store
        .claim(&ClaimRequest {
            scope: "other",
            ..claim(10, &limits)
        })
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    db.expire_leases_of("other").await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 0);
    assert_eq!(
        db.store
            .get_job("default", live[0].id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Running
    );
    assert_eq!(db.store.rescue_expired("other").await.unwrap(), 1);
    let rescued = db
        .store
        .get_job("other", theirs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rescued.state, JobState::Available);
    assert_eq!(ids(&[rescued]), ids(&theirs));
    db.drop().await;
}
