//! Unique jobs: the database keeps one job per key among the rows in their unique states, and
//! an insert of a taken key returns the existing job marked duplicate.

use std::sync::Arc;

use _core::job::{JobSpec, JobState, NewJob};

use crate::support::{claim, finish, lease, queues, Backend, TestDb};

/// A validated job of queue `queue` with unique key `key` (and optionally a period and states).
fn unique(queue: &str, key: &str, period: Option<f64>, states: Option<&[&str]>) -> NewJob {
    JobSpec {
        unique_key: Some(key.into()),
        unique_period: period,
        unique_states: states.map(|s| s.iter().map(|n| n.to_string()).collect()),
        ..JobSpec::new(queue, "act", r#"{"n": 1}"#)
    }
    .into_new_job(false, 1 << 20)
    .unwrap()
}

fn plain(queue: &str) -> NewJob {
    JobSpec::new(queue, "act", "{}")
        .into_new_job(false, 1 << 20)
        .unwrap()
}

async fn count(db: &TestDb) -> usize {
    db.store
        .list_jobs("default", &crate::support::everything())
        .await
        .unwrap()
        .len()
}

pub async fn a_duplicate_key_returns_the_existing_job_and_inserts_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = db
        .store
        .insert_jobs("default", &[unique("q", "k", None, None)])
        .await
        .unwrap();
    assert!(!first[0].duplicate);
    assert_eq!(first[0].unique.as_ref().unwrap().key, "k");
    // Another queue and params: the key alone decides, and the existing job comes back whole.
    let mut other = unique("other", "k", None, None);
    other.params = r#"{"n": 2}"#.into();
    let again = db.store.insert_jobs("default", &[other]).await.unwrap();
    assert_eq!(again[0].id, first[0].id);
    assert!(again[0].duplicate);
    assert_eq!(again[0].queue, "q");
    assert_eq!(again[0].params, first[0].params);
    assert_eq!(count(&db).await, 1);
    let fresh = db
        .store
        .insert_jobs("default", &[unique("q", "k2", None, None)])
        .await
        .unwrap();
    assert_ne!(fresh[0].id, first[0].id);
    assert!(!fresh[0].duplicate);
    // Another scope has keys of its own.
    let foreign = db
        .store
        .insert_jobs("elsewhere", &[unique("q", "k", None, None)])
        .await
        .unwrap();
    assert!(!foreign[0].duplicate);
    let stored = db
        .store
        .get_job("default", first[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.unique, first[0].unique);
    assert!(!stored.duplicate);
    db.drop().await;
}

pub async fn a_batch_resolves_repeated_and_existing_keys_to_one_job_each(backend: Backend) {
    let db = TestDb::new(backend).await;
    let existing = db
        .store
        .insert_jobs("default", &[unique("q", "old", None, None)])
        .await
        .unwrap();
    let batch = vec![
        plain("p"),
        unique("q", "new", None, None),
        unique("q", "old", None, None),
        plain("p"),
        unique("q", "new", None, None),
        plain("p"),
    ];
    let jobs = db.store.insert_jobs("default", &batch).await.unwrap();
    assert_eq!(jobs.len(), batch.len());
    let flags: Vec<bool> = jobs.iter().map(|j| j.duplicate).collect();
    assert_eq!(flags, vec![false, false, true, false, true, false]);
    assert_eq!(jobs[2].id, existing[0].id);
    assert_eq!(jobs[4].id, jobs[1].id);
    let plain_ids: Vec<i64> = [0, 3, 5].iter().map(|&i| jobs[i].id).collect();
    assert!(plain_ids.windows(2).all(|w| w[0] < w[1]), "{plain_ids:?}");
    assert!(jobs
        .iter()
        .all(|j| j.queue == batch[0].queue || j.unique.is_some()));
    assert_eq!(count(&db).await, 1 + 4);
    db.drop().await;
}

pub async fn a_finished_job_frees_its_key_unless_its_states_keep_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let routing = queues(&[("q", 10)]);
    let kept: &[&str] = &[
        "scheduled",
        "available",
        "running",
        "retryable",
        "completed",
    ];
    let first = db
        .store
        .insert_jobs(
            "default",
            &[
                unique("q", "free", None, None),
                unique("q", "kept", None, Some(kept)),
            ],
        )
        .await
        .unwrap();
    // Running still blocks (an unfinished state).
    let claimed = db.store.claim(&claim(10, &routing)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let during = db
        .store
        .insert_jobs("default", &[unique("q", "free", None, None)])
        .await
        .unwrap();
    assert!(during[0].duplicate);
    let finishes: Vec<_> = claimed
        .iter()
        .map(|job| finish(lease(job), JobState::Completed))
        .collect();
    db.store.finish(&finishes).await.unwrap();
    let after = db
        .store
        .insert_jobs(
            "default",
            &[
                unique("q", "free", None, None),
                unique("q", "kept", None, Some(kept)),
            ],
        )
        .await
        .unwrap();
    assert!(
        !after[0].duplicate,
        "a completed job no longer holds its key"
    );
    assert_ne!(after[0].id, first[0].id);
    assert!(after[1].duplicate, "completed is among this key's states");
    assert_eq!(after[1].id, first[1].id);
    assert_eq!(after[1].state, JobState::Completed);
    db.drop().await;
}

pub async fn a_period_makes_the_key_unique_per_window(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = db
        .store
        .insert_jobs("default", &[unique("q", "tick", Some(1.0), None)])
        .await
        .unwrap();
    assert_eq!(first[0].unique.as_ref().unwrap().period, Some(1));
    // The same key without a period, or with another one, is another key.
    let others = db
        .store
        .insert_jobs(
            "default",
            &[
                unique("q", "tick", None, None),
                unique("q", "tick", Some(3600.0), None),
            ],
        )
        .await
        .unwrap();
    assert!(others.iter().all(|j| !j.duplicate));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let next = db
        .store
        .insert_jobs("default", &[unique("q", "tick", Some(1.0), None)])
        .await
        .unwrap();
    assert!(!next[0].duplicate, "a new window takes the key again");
    let same = db
        .store
        .insert_jobs("default", &[unique("q", "tick", Some(3600.0), None)])
        .await
        .unwrap();
    // Within the hour's window (unless the hour turned in between, a second in 3600).
    assert!(same[0].duplicate || same[0].id != others[1].id);
    db.drop().await;
}

pub async fn a_caller_insert_of_a_taken_key_returns_the_existing_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let existing = db
        .store
        .insert_jobs("default", &[unique("q", "k", None, None)])
        .await
        .unwrap();
    let batch = vec![
        unique("q", "k", None, None),
        plain("p"),
        unique("q", "n", None, None),
        unique("q", "n", None, None),
    ];
    let statement = db.store.caller_insert("default", &batch);
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    let rows = conn.run(&statement).await;
    let jobs = statement.jobs(&rows).unwrap();
    conn.rollback().await;
    let flags: Vec<bool> = jobs.iter().map(|j| j.duplicate).collect();
    assert_eq!(flags, vec![true, false, false, true]);
    assert_eq!(jobs[0].id, existing[0].id);
    assert_eq!(jobs[3].id, jobs[2].id);
    assert_eq!(jobs[2].unique.as_ref().unwrap().key, "n");
    // Rolled back: the new key was never taken.
    let after = db
        .store
        .insert_jobs("default", &[unique("q", "n", None, None)])
        .await
        .unwrap();
    assert!(!after[0].duplicate);
    conn.close().await;
    db.drop().await;
}

pub async fn concurrent_inserts_of_one_key_make_one_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let stores: Vec<_> = (0..8).map(|_| db.open_store()).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
    let tasks: Vec<_> = stores
        .into_iter()
        .map(|store| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let mut ids = Vec::new();
                for _ in 0..5 {
                    let job = store
                        .insert_jobs("default", &[unique("q", "race", None, None)])
                        .await
                        .unwrap();
                    ids.push((job[0].id, job[0].duplicate));
                }
                store.close();
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let inserted = all.iter().filter(|(_, duplicate)| !duplicate).count();
    assert_eq!(inserted, 1, "{all:?}");
    assert!(all.iter().all(|(id, _)| *id == all[0].0), "{all:?}");
    assert_eq!(count(&db).await, 1);
    db.drop().await;
}
