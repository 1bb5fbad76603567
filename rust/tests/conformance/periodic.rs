//! periodic_ticks, start_periodic, enqueue_tick: each tick of a periodic entry is inserted once,
//! however many workers try it at once, as an ordinary job scheduled at the tick.

use _core::job::{JobState, Schedule};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::support::{claim, everything, ids, job, Backend, TestDb, BLOCKING_ONLY};

/// A whole second, `seconds` away from now on this machine's clock (ticks fall on whole seconds).
fn tick(seconds: i64) -> DateTime<Utc> {
    (Utc::now() + TimeDelta::seconds(seconds))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap()
}

pub async fn workers_enqueueing_the_same_tick_at_once_insert_one_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let stores = [
        db.store.clone(),
        db.open_store(),
        db.open_store(),
        db.open_store(),
    ];
    for round in 0..3 {
        let at = tick(-10 + round);
        let new = job("reports", true);
        let tries = futures_util::future::join_all(
            stores
                .iter()
                .map(|store| store.enqueue_tick("default", "nightly", at, &new)),
        )
        .await;
        let inserted: Vec<_> = tries.into_iter().filter_map(Result::unwrap).collect();
        assert_eq!(
            inserted.len(),
            1,
            "tick {round}: one of four workers inserts it, the others find it taken"
        );
    }
    assert_eq!(
        db.store.count_jobs("default", &everything()).await.unwrap(),
        3
    );
    db.drop().await;
}

pub async fn a_tick_is_enqueued_only_after_the_last_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let new = job("reports", true);
    let enqueue = |at| db.store.enqueue_tick("default", "nightly", at, &new);
    assert!(
        enqueue(tick(-20)).await.unwrap().is_some(),
        "a first tick makes the row"
    );
    assert!(
        enqueue(tick(-20)).await.unwrap().is_none(),
        "the same tick again"
    );
    assert!(
        enqueue(tick(-30)).await.unwrap().is_none(),
        "an earlier tick"
    );
    assert!(enqueue(tick(-10)).await.unwrap().is_some(), "a later tick");
    // Entries are told apart by scope and name.
    assert!(db
        .store
        .enqueue_tick("default", "hourly", tick(-10), &new)
        .await
        .unwrap()
        .is_some());
    assert!(db
        .store
        .enqueue_tick("other", "nightly", tick(-10), &new)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        db.store.count_jobs("default", &everything()).await.unwrap(),
        3
    );
    db.drop().await;
}

pub async fn a_started_entry_enqueues_only_ticks_after_its_starting_point(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (start, later) = (tick(-20), tick(-10));
    db.store
        .start_periodic("default", "nightly", start)
        .await
        .unwrap();
    // A second start (another worker, a restart) keeps the first one's point.
    db.store
        .start_periodic("default", "nightly", later)
        .await
        .unwrap();
    let ticks = db.store.periodic_ticks("default").await.unwrap();
    assert_eq!(ticks.last_ticks.get("nightly"), Some(&start));
    let new = job("reports", true);
    assert!(db
        .store
        .enqueue_tick("default", "nightly", start, &new)
        .await
        .unwrap()
        .is_none());
    assert!(db
        .store
        .enqueue_tick("default", "nightly", later, &new)
        .await
        .unwrap()
        .is_some());
    let ticks = db.store.periodic_ticks("default").await.unwrap();
    assert_eq!(ticks.last_ticks.get("nightly"), Some(&later));
    db.drop().await;
}

pub async fn periodic_ticks_read_the_database_clock_and_one_scope(backend: Backend) {
    let db = TestDb::new(backend).await;
    let empty = db.store.periodic_ticks("default").await.unwrap();
    assert!(empty.last_ticks.is_empty());
    assert!(
        (empty.now - Utc::now()).num_seconds().abs() < 5,
        "the database clock: {}",
        empty.now
    );
    db.store
        .start_periodic("other", "nightly", tick(-1))
        .await
        .unwrap();
    assert!(db
        .store
        .periodic_ticks("default")
        .await
        .unwrap()
        .last_ticks
        .is_empty());
    assert_eq!(
        db.store
            .periodic_ticks("other")
            .await
            .unwrap()
            .last_ticks
            .len(),
        1
    );
    db.drop().await;
}

pub async fn a_ticks_job_is_an_ordinary_job_scheduled_at_its_tick(backend: Backend) {
    let db = TestDb::new(backend).await;
    let earlier = db
        .store
        .insert_jobs("default", &[job("reports", true)])
        .await
        .unwrap();
    let at = tick(-5);
    let new = _core::job::NewJob {
        schedule: Schedule::At(at),
        ..job("reports", true)
    };
    let ticked = db
        .store
        .enqueue_tick("default", "nightly", at, &new)
        .await
        .unwrap()
        .expect("the first try of a tick inserts its job");
    assert_eq!(
        (ticked.scheduled_at, ticked.state),
        (at, JobState::Available)
    );
    assert_eq!(
        db.store.get_job("default", ticked.id).await.unwrap(),
        Some(ticked.clone())
    );
    // Its place in its blocking queue is its tick: before the job inserted now.
    let first = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(ids(&first), vec![ticked.id]);
    assert_ne!(ticked.id, earlier[0].id);
    db.drop().await;
}
