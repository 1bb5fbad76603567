//! Turns between queues: marked heads, fair shares, queues by pattern and workers limited to
//! some queues.

use std::collections::HashMap;

use _core::job::{JobState, NewJob, Schedule};
use _core::queues::{QueueKinds, QueueRouting, QueueSelector};

use crate::support::{claim, finish, job, lease, queues, Backend, TestDb, BLOCKING_ONLY};

fn in_an_hour(queue: &str) -> NewJob {
    NewJob {
        schedule: Schedule::In(3600.0),
        ..job(queue, true)
    }
}

fn count_by_queue(jobs: &[_core::job::Job]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for job in jobs {
        *counts.entry(job.queue.clone()).or_insert(0) += 1;
    }
    counts
}

pub async fn a_claim_places_every_new_job_before_it_finds_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    // More new queues than one statement places, all waiting: then ten ready ones.
    let waiting: Vec<NewJob> = (0..1500)
        .map(|i| in_an_hour(&format!("later-{i}")))
        .collect();
    db.store.insert_jobs("default", &waiting).await.unwrap();
    let ready: Vec<NewJob> = (0..10).map(|i| job(&format!("now-{i}"), true)).collect();
    db.store.insert_jobs("default", &ready).await.unwrap();
    let claimed = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(
        claimed.len(),
        10,
        "the ready queues behind the new waiting ones"
    );
    db.drop().await;
}

pub async fn ready_blocking_queues_take_turns_whatever_their_names_and_backlogs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let backlog: Vec<NewJob> = (0..20)
        .flat_map(|_| [job("a", true), job("c", true)])
        .collect();
    db.store.insert_jobs("default", &backlog).await.unwrap();
    let late = db
        .store
        .insert_jobs("default", &[job("zz", true), job("zz", true)])
        .await
        .unwrap();
    let first = db.store.claim(&claim(2, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(
        count_by_queue(&first),
        HashMap::from([("a".into(), 1), ("c".into(), 1)])
    );
    let a = first.iter().find(|j| j.queue == "a").unwrap();
    db.store
        .finish(&[finish(lease(a), JobState::Completed)])
        .await
        .unwrap();
    // a's next job got its turn only now; zz has waited since it was enqueued.
    let next = db.store.claim(&claim(1, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(
        next[0].id, late[0].id,
        "the least recently served queue goes first"
    );
    db.drop().await;
}

pub async fn concurrent_queues_share_a_claim_by_their_running_jobs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let routing = queues(&[("a", 10), ("b", 10)]);
    let jobs: Vec<NewJob> = (0..10)
        .map(|_| job("a", false))
        .chain((0..10).map(|_| job("b", false)))
        .collect();
    db.store.insert_jobs("default", &jobs).await.unwrap();
    let first = db.store.claim(&claim(4, &routing)).await.unwrap();
    assert_eq!(
        count_by_queue(&first),
        HashMap::from([("a".into(), 2), ("b".into(), 2)])
    );
    // a now runs 2 and b 2; with a's done, a's next jobs come first.
    let done: Vec<_> = first
        .iter()
        .filter(|j| j.queue == "a")
        .map(|j| finish(lease(j), JobState::Completed))
        .collect();
    db.store.finish(&done).await.unwrap();
    let next = db.store.claim(&claim(2, &routing)).await.unwrap();
    assert_eq!(count_by_queue(&next), HashMap::from([("a".into(), 2)]));
    db.drop().await;
}

pub async fn a_pattern_gives_each_matching_queue_its_own_limit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let routing = queues(&[("shop:*", 2)]);
    let jobs: Vec<NewJob> = ["shop:1", "shop:2", "shop:3"]
        .iter()
        .flat_map(|q| (0..5).map(|_| job(q, false)))
        .collect();
    db.store.insert_jobs("default", &jobs).await.unwrap();
    let claimed = db.store.claim(&claim(100, &routing)).await.unwrap();
    assert_eq!(
        count_by_queue(&claimed),
        HashMap::from([
            ("shop:1".into(), 2),
            ("shop:2".into(), 2),
            ("shop:3".into(), 2)
        ])
    );
    assert!(db
        .store
        .claim(&claim(100, &routing))
        .await
        .unwrap()
        .is_empty());
    db.drop().await;
}

pub async fn a_worker_limited_to_some_queues_claims_only_from_them(backend: Backend) {
    let db = TestDb::new(backend).await;
    let only = |patterns: &[&str]| QueueRouting {
        kinds: QueueKinds::new(HashMap::from([("c:*".to_owned(), 5)])).unwrap(),
        only: QueueSelector::new(Some(patterns.iter().map(|p| p.to_string()).collect())).unwrap(),
    };
    db.store
        .insert_jobs(
            "default",
            &[
                job("a", true),
                job("b:1", true),
                job("c:1", false),
                job("c:2", false),
            ],
        )
        .await
        .unwrap();
    let routing = only(&["a", "c:1"]);
    let claimed = db.store.claim(&claim(10, &routing)).await.unwrap();
    assert_eq!(
        count_by_queue(&claimed),
        HashMap::from([("a".into(), 1), ("c:1".into(), 1)])
    );
    let routing = only(&["b:*", "c:*"]);
    let claimed = db.store.claim(&claim(10, &routing)).await.unwrap();
    assert_eq!(
        count_by_queue(&claimed),
        HashMap::from([("b:1".into(), 1), ("c:2".into(), 1)])
    );
    db.drop().await;
}

pub async fn listings_name_the_job_a_waiting_job_waits_behind(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = db
        .store
        .insert_jobs(
            "default",
            &[
                job("q", true),
                job("q", true),
                job("q", true),
                job("c", false),
            ],
        )
        .await
        .unwrap();
    let blocked_by = |id: i64| {
        let store = db.store.clone();
        async move {
            store
                .get_job("default", id)
                .await
                .unwrap()
                .unwrap()
                .blocked_by
        }
    };
    assert_eq!(
        blocked_by(jobs[0].id).await,
        None,
        "the head waits behind nothing"
    );
    assert_eq!(blocked_by(jobs[2].id).await, Some(jobs[0].id));
    assert_eq!(
        blocked_by(jobs[3].id).await,
        None,
        "a concurrent job never waits behind one"
    );
    let head = db.store.claim(&claim(1, &BLOCKING_ONLY)).await.unwrap();
    db.store
        .finish(&[finish(lease(&head[0]), JobState::Completed)])
        .await
        .unwrap();
    assert_eq!(blocked_by(jobs[2].id).await, Some(jobs[1].id));
    let listed = db
        .store
        .list_jobs(
            "default",
            &_core::store::JobFilter::new(Some("q".into()), None, None, None, "id", false, 100, 0)
                .unwrap(),
        )
        .await
        .unwrap();
    let by_id: HashMap<i64, Option<i64>> = listed.iter().map(|j| (j.id, j.blocked_by)).collect();
    assert_eq!(by_id[&jobs[2].id], Some(jobs[1].id));
    db.drop().await;
}
