//! Queue control: pausing queues (pause_queue, resume_queue, paused_queues, and the claims
//! that skip paused queues) and cancelling running jobs (cancel_job on a running job,
//! cancel_requested, and the outcomes, rescues and retries of a job with a request).

use std::time::Duration;

use _core::job::JobState;
use _core::queues::QueuePattern;
use _core::store::{Finish, CANCELLED_WHILE_RUNNING};

use crate::support::{
    claim, finish, ids, job, lease, queues, running, state_of, Backend, TestDb, BLOCKING_ONLY,
};

fn pattern(text: &str) -> QueuePattern {
    QueuePattern::parse_given("queue", text).unwrap()
}

pub async fn a_paused_queue_starts_nothing_until_resumed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let routing = queues(&[("c", 5)]);
    let inserted = db
        .store
        .insert_jobs(
            "default",
            &[job("a", true), job("a", true), job("c", false)],
        )
        .await
        .unwrap();
    db.store
        .pause_queue("default", &pattern("a"))
        .await
        .unwrap();
    db.store
        .pause_queue("default", &pattern("c"))
        .await
        .unwrap();
    assert!(db
        .store
        .claim(&claim(10, &routing))
        .await
        .unwrap()
        .is_empty());
    let paused = db.store.paused_queues("default").await.unwrap();
    assert_eq!(
        paused.iter().map(|p| p.pattern.text()).collect::<Vec<_>>(),
        vec!["a", "c"]
    );
    assert!(db.store.paused_queues("other").await.unwrap().is_empty());
    db.store
        .resume_queue("default", &pattern("a"))
        .await
        .unwrap();
    assert_eq!(
        ids(&db.store.claim(&claim(10, &routing)).await.unwrap()),
        vec![inserted[0].id],
        "the blocking queue's head, the concurrent queue still paused"
    );
    db.store
        .resume_queue("default", &pattern("c"))
        .await
        .unwrap();
    assert_eq!(
        ids(&db.store.claim(&claim(10, &routing)).await.unwrap()),
        vec![inserted[2].id]
    );
    // Resuming what is not paused changes nothing.
    db.store
        .resume_queue("default", &pattern("c"))
        .await
        .unwrap();
    db.drop().await;
}

pub async fn a_prefix_pause_holds_every_matching_queue_and_no_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    let routing = queues(&[("mail.b", 5)]);
    let inserted = db
        .store
        .insert_jobs(
            "default",
            &[
                job("mail.a", true),
                job("mail.b", false),
                job("other", true),
            ],
        )
        .await
        .unwrap();
    db.store
        .pause_queue("default", &pattern("mail*"))
        .await
        .unwrap();
    let first = db.store.paused_queues("default").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    db.store
        .pause_queue("default", &pattern("mail*"))
        .await
        .unwrap();
    assert_eq!(
        db.store.paused_queues("default").await.unwrap(),
        first,
        "pausing again keeps the first pause"
    );
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].pattern, QueuePattern::Prefix("mail".into()));
    assert_eq!(
        ids(&db.store.claim(&claim(10, &routing)).await.unwrap()),
        vec![inserted[2].id]
    );
    // A queue the pattern holds is not freed by resuming its own name.
    db.store
        .resume_queue("default", &pattern("mail.a"))
        .await
        .unwrap();
    assert!(db
        .store
        .claim(&claim(10, &routing))
        .await
        .unwrap()
        .is_empty());
    db.store
        .resume_queue("default", &pattern("mail*"))
        .await
        .unwrap();
    let mut claimed = ids(&db.store.claim(&claim(10, &routing)).await.unwrap());
    claimed.sort_unstable();
    assert_eq!(claimed, vec![inserted[0].id, inserted[1].id]);
    db.drop().await;
}

pub async fn running_jobs_of_a_paused_queue_keep_their_leases_and_finish(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &[job("c", false)]).await;
    db.store
        .pause_queue("default", &pattern("c"))
        .await
        .unwrap();
    assert_eq!(
        db.store
            .extend_leases(&[lease(&jobs[0])], Duration::from_secs(30))
            .await
            .unwrap(),
        vec![jobs[0].id]
    );
    assert_eq!(
        db.store
            .finish(&[finish(lease(&jobs[0]), JobState::Completed)])
            .await
            .unwrap(),
        vec![jobs[0].id]
    );
    db.drop().await;
}

pub async fn cancel_of_a_running_job_records_the_request_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &[job("c", false), job("c", false)]).await;
    let requested = db
        .store
        .cancel_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(requested.state, JobState::Running);
    let at = requested
        .cancel_requested_at
        .expect("the request is recorded");
    let again = db
        .store
        .cancel_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.cancel_requested_at,
        Some(at),
        "a second request keeps the first"
    );
    assert_eq!(
        db.store
            .get_job("default", jobs[0].id)
            .await
            .unwrap()
            .unwrap()
            .cancel_requested_at,
        Some(at)
    );
    assert_eq!(
        db.store
            .cancel_requested(&[lease(&jobs[0]), lease(&jobs[1])])
            .await
            .unwrap(),
        vec![jobs[0].id]
    );
    assert_eq!(
        db.store.cancel_job("other", jobs[1].id).await.unwrap(),
        None,
        "another scope's running job is not this scope's to cancel"
    );
    db.drop().await;
}

pub async fn an_outcome_that_would_run_a_cancelled_job_again_ends_it_discarded(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &vec![job("c", false); 3]).await;
    for job in &jobs {
        db.store
            .cancel_job("default", job.id)
            .await
            .unwrap()
            .unwrap();
    }
    db.store
        .finish(&[
            Finish {
                delay: Some(5.0),
                error: Some("boom".into()),
                ..finish(lease(&jobs[0]), JobState::Retryable)
            },
            finish(lease(&jobs[1]), JobState::Completed),
            Finish {
                refund_attempt: true,
                ..finish(lease(&jobs[2]), JobState::Available)
            },
        ])
        .await
        .unwrap();
    for (job, state) in [
        (&jobs[0], JobState::Discarded),
        (&jobs[1], JobState::Completed),
        (&jobs[2], JobState::Discarded),
    ] {
        let row = db.store.get_job("default", job.id).await.unwrap().unwrap();
        assert_eq!(row.state, state, "job {}", job.id);
        assert!(row.done_at.is_some());
        if state == JobState::Discarded {
            assert_eq!(row.error.as_deref(), Some(CANCELLED_WHILE_RUNNING));
            assert_eq!(row.next_attempt_at, None);
        }
    }
    db.drop().await;
}

pub async fn rescue_ends_a_cancel_requested_job_and_its_blocking_queue_moves_on(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true), job("a", true)])
        .await
        .unwrap();
    let head = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(ids(&head), vec![inserted[0].id]);
    db.store
        .cancel_job("default", inserted[0].id)
        .await
        .unwrap()
        .unwrap();
    db.expire_leases().await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 1);
    let rescued = db
        .store
        .get_job("default", inserted[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rescued.state, JobState::Discarded);
    assert!(rescued
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with(CANCELLED_WHILE_RUNNING)));
    assert_eq!(
        ids(&db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap()),
        vec![inserted[1].id]
    );
    db.drop().await;
}

pub async fn retry_clears_a_cancel_request(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &[job("c", false)]).await;
    db.store
        .cancel_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    db.store
        .finish(&[finish(lease(&jobs[0]), JobState::Discarded)])
        .await
        .unwrap();
    let retried = db
        .store
        .retry_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried.cancel_requested_at, None);
    let again = db
        .store
        .claim(&claim(10, &queues(&[("c", 5)])))
        .await
        .unwrap();
    db.store
        .finish(&[Finish {
            delay: Some(60.0),
            ..finish(lease(&again[0]), JobState::Retryable)
        }])
        .await
        .unwrap();
    assert_eq!(state_of(&*db.store, jobs[0].id).await, JobState::Retryable);
    db.drop().await;
}
