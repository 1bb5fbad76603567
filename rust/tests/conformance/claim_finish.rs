//! claim and finish: who gets which job, and how an attempt's outcome is written.

use std::time::Duration;

use _core::job::{JobState, NewJob};
use _core::store::Finish;

use crate::support::{claim, finish, ids, job, lease, queues, Backend, TestDb};

pub async fn blocking_queue_hands_out_one_job_at_a_time_in_fifo_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true), job("a", true), job("b", true)])
        .await
        .unwrap();
    assert!(inserted.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let first = db.store.claim(&claim(10, &[])).await.unwrap();
    let mut queues: Vec<&str> = first.iter().map(|j| j.queue.as_str()).collect();
    queues.sort();
    assert_eq!(
        queues,
        vec!["a", "b"],
        "one job per blocking queue per claim"
    );
    assert!(
        db.store.claim(&claim(10, &[])).await.unwrap().is_empty(),
        "queues are locked while running"
    );
    let head_a = first.iter().find(|j| j.queue == "a").unwrap();
    assert_eq!(head_a.id, inserted[0].id);
    assert_eq!(
        db.store
            .finish(&[finish(lease(head_a), JobState::Completed)])
            .await
            .unwrap(),
        vec![head_a.id]
    );
    let next = db.store.claim(&claim(10, &[])).await.unwrap();
    assert_eq!(ids(&next), vec![inserted[1].id]);
    db.drop().await;
}

pub async fn a_retrying_head_blocks_its_queue_until_due(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true), job("a", true)])
        .await
        .unwrap();
    let head = db
        .store
        .claim(&claim(10, &[]))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let retry = Finish {
        delay: Some(0.3),
        error: Some("boom".into()),
        ..finish(lease(&head), JobState::Retryable)
    };
    db.store.finish(&[retry]).await.unwrap();
    assert!(
        db.store.claim(&claim(10, &[])).await.unwrap().is_empty(),
        "second job waits behind the failed head"
    );
    let due_in = db.store.next_run_in("default").await.unwrap().unwrap();
    assert!(
        due_in > 0.0 && due_in <= 0.3,
        "next wake-up is the retry time, got {due_in}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = db.store.claim(&claim(10, &[])).await.unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(inserted[0].id, 2)]
    );
    db.drop().await;
}

pub async fn concurrent_queue_respects_its_limit_across_claims(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs: Vec<NewJob> = (0..5).map(|_| job("emails", false)).collect();
    db.store.insert_jobs("default", &jobs).await.unwrap();
    let limits = queues(&[("emails", 2)]);
    assert_eq!(db.store.claim(&claim(10, &limits)).await.unwrap().len(), 2);
    assert_eq!(
        db.store.claim(&claim(10, &limits)).await.unwrap().len(),
        0,
        "limit counts running jobs of every worker"
    );
    db.drop().await;
}

pub async fn scopes_never_see_each_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs("other", &[job("a", true), job("emails", false)])
        .await
        .unwrap();
    assert!(db
        .store
        .claim(&claim(10, &queues(&[("emails", 5)])))
        .await
        .unwrap()
        .is_empty());
    db.drop().await;
}
