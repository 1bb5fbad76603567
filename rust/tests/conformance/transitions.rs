//! retry_job, cancel_job and delete_completed: an operator's changes to a job's state, and
//! retention.

use std::time::Duration;

use _core::job::{JobState, NewJob, Schedule};
use _core::store::Finish;

use crate::support::{
    claim, everything, finish, ids, job, lease, queues, running, state_of, Backend, TestDb,
    BLOCKING_ONLY,
};

pub async fn retry_makes_a_failed_job_available_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(
        &*db.store,
        &[NewJob {
            max_attempts: 1,
            ..job("q", false)
        }],
    )
    .await;
    db.store
        .finish(&[Finish {
            error: Some("boom".into()),
            ..finish(lease(&jobs[0]), JobState::Failed)
        }])
        .await
        .unwrap();
    let retried = db
        .store
        .retry_job("default", jobs[0].id)
        .await
        .unwrap()
        .expect("a failed job can be retried");
    assert_eq!(
        (
            retried.id,
            retried.state,
            retried.attempts,
            retried.max_attempts,
            retried.done_at
        ),
        (jobs[0].id, JobState::Available, 1, 2, None),
        "one more attempt than it used"
    );
    assert_eq!(
        db.store.get_job("default", retried.id).await.unwrap(),
        Some(retried.clone())
    );
    let again = db
        .store
        .claim(&claim(10, &queues(&[("q", 10)])))
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(retried.id, 2)]
    );
    db.drop().await;
}

pub async fn retry_runs_a_waiting_or_discarded_job_now(backend: Backend) {
    let db = TestDb::new(backend).await;
    let scheduled = db
        .store
        .insert_jobs(
            "default",
            &[NewJob {
                schedule: Schedule::In(3600.0),
                ..job("later", false)
            }],
        )
        .await
        .unwrap()
        .pop()
        .unwrap();
    let jobs = running(&*db.store, &[job("retrying", false), job("dropped", false)]).await;
    db.store
        .finish(&[
            Finish {
                delay: Some(3600.0),
                error: Some("later".into()),
                ..finish(lease(&jobs[0]), JobState::Retryable)
            },
            finish(lease(&jobs[1]), JobState::Discarded),
        ])
        .await
        .unwrap();
    let waiting = [scheduled.id, jobs[0].id, jobs[1].id];
    for id in waiting {
        let retried = db.store.retry_job("default", id).await.unwrap().unwrap();
        assert_eq!(
            (retried.state, retried.next_attempt_at, retried.done_at),
            (JobState::Available, None, None)
        );
    }
    let limits = queues(&[("later", 5), ("retrying", 5), ("dropped", 5)]);
    let mut claimed = ids(&db.store.claim(&claim(10, &limits)).await.unwrap());
    claimed.sort();
    assert_eq!(claimed, waiting.to_vec(), "all three run now");
    db.drop().await;
}

pub async fn retry_refuses_running_completed_unknown_and_foreign_jobs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &[job("q", false), job("q", false)]).await;
    db.store
        .finish(&[finish(lease(&jobs[1]), JobState::Completed)])
        .await
        .unwrap();
    let theirs = db
        .store
        .insert_jobs("other", &[job("q", false)])
        .await
        .unwrap();
    assert_eq!(
        db.store.retry_job("default", jobs[0].id).await.unwrap(),
        None
    );
    assert_eq!(
        db.store.get_job("default", jobs[0].id).await.unwrap(),
        Some(jobs[0].clone()),
        "a running job is left alone"
    );
    assert_eq!(
        db.store.retry_job("default", jobs[1].id).await.unwrap(),
        None
    );
    assert_eq!(state_of(&*db.store, jobs[1].id).await, JobState::Completed);
    assert_eq!(
        db.store
            .retry_job("default", jobs[1].id + 1000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.store.retry_job("default", theirs[0].id).await.unwrap(),
        None,
        "another scope's job is not there"
    );
    db.drop().await;
}

pub async fn cancel_discards_a_job_that_has_not_started(backend: Backend) {
    let db = TestDb::new(backend).await;
    let waiting = db
        .store
        .insert_jobs(
            "default",
            &[
                job("q", false),
                NewJob {
                    schedule: Schedule::In(3600.0),
                    ..job("q", false)
                },
            ],
        )
        .await
        .unwrap();
    let retrying = running(&*db.store, &[job("r", false)]).await;
    db.store
        .finish(&[Finish {
            delay: Some(3600.0),
            ..finish(lease(&retrying[0]), JobState::Retryable)
        }])
        .await
        .unwrap();
    for id in [waiting[0].id, waiting[1].id, retrying[0].id] {
        let cancelled = db.store.cancel_job("default", id).await.unwrap().unwrap();
        assert_eq!(
            (
                cancelled.id,
                cancelled.state,
                cancelled.error.as_deref(),
                cancelled.next_attempt_at
            ),
            (id, JobState::Discarded, Some("cancelled"), None)
        );
        assert!(cancelled.done_at.is_some());
    }
    let limits = queues(&[("q", 5), ("r", 5)]);
    assert!(db
        .store
        .claim(&claim(10, &limits))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.store.next_run_in("default").await.unwrap().next_in,
        None,
        "nothing waits any more"
    );
    db.drop().await;
}

pub async fn cancel_refuses_finished_unknown_and_foreign_jobs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &vec![job("q", false); 3]).await;
    db.store
        .finish(&[
            finish(lease(&jobs[1]), JobState::Completed),
            finish(lease(&jobs[2]), JobState::Failed),
        ])
        .await
        .unwrap();
    let theirs = db
        .store
        .insert_jobs("other", &[job("q", false)])
        .await
        .unwrap();
    for id in [jobs[1].id, jobs[2].id] {
        let before = db.store.get_job("default", id).await.unwrap();
        assert_eq!(db.store.cancel_job("default", id).await.unwrap(), None);
        assert_eq!(db.store.get_job("default", id).await.unwrap(), before);
    }
    assert_eq!(
        db.store
            .cancel_job("default", jobs[2].id + 1000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.store.cancel_job("default", theirs[0].id).await.unwrap(),
        None
    );
    assert_eq!(
        db.store
            .get_job("other", theirs[0].id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Available
    );
    let cancelled = db.store.cancel_job("other", theirs[0].id).await.unwrap();
    assert_eq!(cancelled.map(|j| j.state), Some(JobState::Discarded));
    assert_eq!(
        db.store.cancel_job("other", theirs[0].id).await.unwrap(),
        None,
        "a cancelled job cannot be cancelled twice"
    );
    db.drop().await;
}

pub async fn cancelling_a_retrying_head_unblocks_its_queue(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true), job("a", true)])
        .await
        .unwrap();
    let head = db
        .store
        .claim(&claim(10, &BLOCKING_ONLY))
        .await
        .unwrap()
        .pop()
        .unwrap();
    db.store
        .finish(&[Finish {
            delay: Some(3600.0),
            ..finish(lease(&head), JobState::Retryable)
        }])
        .await
        .unwrap();
    assert!(db
        .store
        .claim(&claim(10, &BLOCKING_ONLY))
        .await
        .unwrap()
        .is_empty());
    db.store
        .cancel_job("default", head.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ids(&db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap()),
        vec![inserted[1].id]
    );
    db.drop().await;
}

pub async fn delete_completed_deletes_only_completed_jobs_older_than_the_retention(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &vec![job("q", false); 5]).await;
    db.store
        .finish(&[
            finish(lease(&jobs[0]), JobState::Completed),
            finish(lease(&jobs[1]), JobState::Completed),
            finish(lease(&jobs[2]), JobState::Failed),
            finish(lease(&jobs[3]), JobState::Discarded),
        ])
        .await
        .unwrap();
    let theirs = db
        .store
        .insert_jobs("other", &[job("q", false)])
        .await
        .unwrap();
    let limits = queues(&[("q", 5)]);
    let their_claim = db
        .store
        .claim(&_core::store::ClaimRequest {
            scope: "other",
            ..claim(5, &limits)
        })
        .await
        .unwrap();
    db.store
        .finish(&[finish(lease(&their_claim[0]), JobState::Completed)])
        .await
        .unwrap();
    for id in [jobs[0].id, jobs[2].id, jobs[3].id, theirs[0].id] {
        db.finished_ago(id, 7200).await;
    }
    db.finished_ago(jobs[1].id, 1800).await;
    let retention = Duration::from_secs(3600);
    assert_eq!(
        db.store
            .delete_completed("default", retention, 1000)
            .await
            .unwrap(),
        1
    );
    let left = ids(&db.store.list_jobs("default", &everything()).await.unwrap());
    assert_eq!(
        left,
        vec![jobs[1].id, jobs[2].id, jobs[3].id, jobs[4].id],
        "recent, failed, discarded and running jobs stay"
    );
    assert_eq!(db.store.get_job("default", jobs[0].id).await.unwrap(), None);
    assert_eq!(
        db.store.count_jobs("other", &everything()).await.unwrap(),
        1,
        "another scope's jobs are its own"
    );
    assert_eq!(
        db.store
            .delete_completed("default", retention, 1000)
            .await
            .unwrap(),
        0
    );
    db.store
        .finish(&[finish(lease(&jobs[4]), JobState::Completed)])
        .await
        .unwrap();
    assert_eq!(
        db.store
            .delete_completed("default", Duration::ZERO, 1)
            .await
            .unwrap(),
        1,
        "a statement deletes at most its limit"
    );
    assert_eq!(
        db.store
            .delete_completed("default", Duration::ZERO, 1000)
            .await
            .unwrap(),
        1,
        "a zero retention deletes every completed job"
    );
    db.drop().await;
}
