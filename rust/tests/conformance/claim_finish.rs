//! claim and finish: who gets which job, and how an attempt's outcome is written.

use std::time::Duration;

use _core::job::{JobState, NewJob, Schedule};
use _core::store::{ClaimRequest, Finish, Lease};
use chrono::{TimeDelta, Utc};

use crate::support::{
    claim, finish, ids, job, json, lease, queues, running, state_of, Backend, TestDb, BLOCKING_ONLY,
};

pub async fn blocking_queue_hands_out_one_job_at_a_time_in_fifo_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true), job("a", true), job("b", true)])
        .await
        .unwrap();
    assert!(inserted.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let first = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
    let mut queues: Vec<&str> = first.iter().map(|j| j.queue.as_str()).collect();
    queues.sort();
    assert_eq!(
        queues,
        vec!["a", "b"],
        "one job per blocking queue per claim"
    );
    assert!(
        db.store
            .claim(&claim(10, &BLOCKING_ONLY))
            .await
            .unwrap()
            .is_empty(),
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
    let next = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(ids(&next), vec![inserted[1].id]);
    db.drop().await;
}

pub async fn a_blocking_queue_runs_jobs_in_scheduled_order_then_insert_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let earlier = Utc::now() - TimeDelta::seconds(60);
    let inserted = db
        .store
        .insert_jobs(
            "default",
            &[
                job("a", true),
                NewJob {
                    schedule: Schedule::At(earlier),
                    ..job("a", true)
                },
                NewJob {
                    schedule: Schedule::At(earlier),
                    ..job("a", true)
                },
            ],
        )
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let head = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
        assert_eq!(head.len(), 1, "one job of the blocking queue at a time");
        order.push(head[0].id);
        db.store
            .finish(&[finish(lease(&head[0]), JobState::Completed)])
            .await
            .unwrap();
    }
    assert_eq!(
        order,
        vec![inserted[1].id, inserted[2].id, inserted[0].id],
        "a job scheduled earlier goes first; insert order breaks ties"
    );
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
        .claim(&claim(10, &BLOCKING_ONLY))
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
        db.store
            .claim(&claim(10, &BLOCKING_ONLY))
            .await
            .unwrap()
            .is_empty(),
        "second job waits behind the failed head"
    );
    let due_in = db
        .store
        .next_run_in("default")
        .await
        .unwrap()
        .next_in
        .unwrap();
    assert!(
        due_in > 0.0 && due_in <= 0.3,
        "next wake-up is the retry time, got {due_in}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
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

pub async fn concurrent_jobs_are_claimed_by_priority_then_fifo(backend: Backend) {
    let db = TestDb::new(backend).await;
    let with_priority = |priority| NewJob {
        priority,
        ..job("emails", false)
    };
    let inserted = db
        .store
        .insert_jobs(
            "default",
            &[
                with_priority(5),
                with_priority(0),
                with_priority(-1),
                with_priority(0),
            ],
        )
        .await
        .unwrap();
    let limits = queues(&[("emails", 10)]);
    let mut order = Vec::new();
    for _ in 0..4 {
        order.extend(ids(&db.store.claim(&claim(1, &limits)).await.unwrap()));
    }
    assert_eq!(
        order,
        vec![
            inserted[2].id,
            inserted[1].id,
            inserted[3].id,
            inserted[0].id
        ],
        "lowest priority number first, insert order among equals"
    );
    db.drop().await;
}

pub async fn a_claim_hands_out_no_more_than_its_limit(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs(
            "default",
            &[
                job("a", true),
                job("b", true),
                job("c", true),
                job("emails", false),
                job("emails", false),
            ],
        )
        .await
        .unwrap();
    let limits = queues(&[("emails", 10)]);
    assert_eq!(db.store.claim(&claim(3, &limits)).await.unwrap().len(), 3);
    assert_eq!(db.store.claim(&claim(0, &limits)).await.unwrap().len(), 0);
    assert_eq!(
        db.store.claim(&claim(10, &limits)).await.unwrap().len(),
        2,
        "the rest, one per blocking queue not already running"
    );
    db.drop().await;
}

pub async fn a_claim_takes_no_more_blocking_heads_than_its_blocking_limit(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs(
            "default",
            &[
                job("a", true),
                job("b", true),
                job("c", true),
                job("emails", false),
                job("emails", false),
            ],
        )
        .await
        .unwrap();
    let limits = queues(&[("emails", 10)]);
    let first = db
        .store
        .claim(&ClaimRequest {
            blocking_limit: 1,
            ..claim(10, &limits)
        })
        .await
        .unwrap();
    let blocking = |jobs: &[_]| {
        jobs.iter()
            .filter(|j: &&_core::job::Job| j.queue != "emails")
            .count()
    };
    assert_eq!(
        (first.len(), blocking(&first)),
        (3, 1),
        "both concurrent jobs (claimed ahead) and one head: heads only for free slots"
    );
    let rest = db
        .store
        .claim(&ClaimRequest {
            blocking_limit: 0,
            ..claim(10, &limits)
        })
        .await
        .unwrap();
    assert!(rest.is_empty(), "no free slot: no head, however much room");
    let rest = db.store.claim(&claim(10, &limits)).await.unwrap();
    assert_eq!(blocking(&rest), 2);
    db.drop().await;
}

pub async fn a_concurrent_job_is_claimed_only_by_workers_serving_its_queue(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("emails", false)])
        .await
        .unwrap();
    assert!(
        db.store
            .claim(&claim(10, &queues(&[("other", 5)])))
            .await
            .unwrap()
            .is_empty(),
        "neither a blocking head nor a queue this worker serves"
    );
    let claimed = db
        .store
        .claim(&claim(10, &queues(&[("emails", 5)])))
        .await
        .unwrap();
    assert_eq!(ids(&claimed), ids(&inserted));
    db.drop().await;
}

pub async fn a_claim_starts_an_attempt_under_a_fresh_lease(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    let before = Utc::now() - TimeDelta::seconds(1);
    let request = ClaimRequest {
        worker_name: "host:42:abc",
        ..claim(1, &BLOCKING_ONLY)
    };
    let claimed = db.store.claim(&request).await.unwrap().pop().unwrap();
    assert_eq!(claimed.id, inserted[0].id);
    assert_eq!(
        (
            claimed.state,
            claimed.attempts,
            claimed.attempted_by.as_deref()
        ),
        (JobState::Running, 1, Some("host:42:abc"))
    );
    assert!(claimed.attempted_at.unwrap() > before);
    assert!(claimed.lease_token.is_some());
    assert_eq!(
        db.store.get_job("default", claimed.id).await.unwrap(),
        Some(claimed),
        "the claim is stored as returned"
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

pub async fn finish_writes_each_kind_of_outcome(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &vec![job("q", false); 6]).await;
    let [done, failed, discarded, retrying, snoozed, released] = &jobs[..] else {
        unreachable!()
    };
    let finishes = vec![
        Finish {
            result: Some(r#"{"ok": true, "n": [1, 2]}"#.into()),
            ..finish(lease(done), JobState::Completed)
        },
        Finish {
            error: Some("ValueError: bad".into()),
            ..finish(lease(failed), JobState::Failed)
        },
        Finish {
            error: Some("not wanted".into()),
            ..finish(lease(discarded), JobState::Discarded)
        },
        Finish {
            error: Some("try later".into()),
            delay: Some(30.0),
            ..finish(lease(retrying), JobState::Retryable)
        },
        Finish {
            delay: Some(60.0),
            refund_attempt: true,
            ..finish(lease(snoozed), JobState::Scheduled)
        },
        Finish {
            refund_attempt: true,
            ..finish(lease(released), JobState::Available)
        },
    ];
    let mut held = db.store.finish(&finishes).await.unwrap();
    held.sort();
    assert_eq!(held, ids(&jobs), "every lease was still held");
    let get = |id| {
        let store = db.store.clone();
        async move { store.get_job("default", id).await.unwrap().unwrap() }
    };

    let j = get(done.id).await;
    assert_eq!((j.state, j.attempts), (JobState::Completed, 1));
    assert_eq!(
        json(j.result.as_deref().unwrap()),
        json(r#"{"n":[1,2],"ok":true}"#)
    );
    assert!(j.done_at.is_some() && j.lease_token.is_none() && j.error.is_none());

    let j = get(failed.id).await;
    assert_eq!(
        (j.state, j.error.as_deref(), j.lease_token),
        (JobState::Failed, Some("ValueError: bad"), None)
    );
    assert!(j.done_at.is_some() && j.next_attempt_at.is_none());

    let j = get(discarded.id).await;
    assert_eq!(
        (j.state, j.error.as_deref()),
        (JobState::Discarded, Some("not wanted"))
    );
    assert!(j.done_at.is_some());

    let j = get(retrying.id).await;
    assert_eq!(
        (j.state, j.attempts, j.error.as_deref(), j.done_at),
        (JobState::Retryable, 1, Some("try later"), None)
    );
    let wait = j.next_attempt_at.unwrap() - Utc::now();
    assert!(
        wait > TimeDelta::seconds(28) && wait <= TimeDelta::seconds(30),
        "retry in 30 s, got {wait}"
    );

    let j = get(snoozed.id).await;
    assert_eq!(
        (j.state, j.attempts, j.done_at),
        (JobState::Scheduled, 0, None),
        "a snooze gives its attempt back"
    );
    let wait = j.next_attempt_at.unwrap() - Utc::now();
    assert!(wait > TimeDelta::seconds(58) && wait <= TimeDelta::seconds(60));

    let j = get(released.id).await;
    assert_eq!(
        (j.state, j.attempts, j.lease_token),
        (JobState::Available, 0, None),
        "a released job is runnable again, its attempt given back"
    );

    let limits = queues(&[("q", 10)]);
    let again = db.store.claim(&claim(10, &limits)).await.unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(released.id, 1)],
        "only the released job is runnable now"
    );
    db.drop().await;
}

pub async fn finish_applies_only_the_outcomes_whose_lease_still_holds(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &vec![job("q", false); 3]).await;
    let wrong_token = Lease {
        id: jobs[1].id,
        token: jobs[1].lease_token.unwrap().wrapping_add(1),
    };
    let unknown = Lease {
        id: jobs[2].id + 1000,
        token: 1,
    };
    let held = db
        .store
        .finish(&[
            finish(lease(&jobs[0]), JobState::Completed),
            finish(wrong_token, JobState::Completed),
            finish(unknown, JobState::Completed),
        ])
        .await
        .unwrap();
    assert_eq!(held, vec![jobs[0].id]);
    assert_eq!(state_of(&*db.store, jobs[0].id).await, JobState::Completed);
    assert_eq!(
        db.store.get_job("default", jobs[1].id).await.unwrap(),
        Some(jobs[1].clone()),
        "a fenced-off outcome changes nothing"
    );
    assert!(
        db.store
            .finish(&[finish(lease(&jobs[0]), JobState::Failed)])
            .await
            .unwrap()
            .is_empty(),
        "a finished attempt cannot finish twice"
    );
    assert_eq!(state_of(&*db.store, jobs[0].id).await, JobState::Completed);
    assert!(db.store.finish(&[]).await.unwrap().is_empty());
    db.drop().await;
}

pub async fn a_claim_takes_only_jobs_of_the_actions_it_serves(backend: Backend) {
    let db = TestDb::new(backend).await;
    let of = |queue: &str, blocking: bool, action: &str| NewJob {
        action: action.into(),
        ..job(queue, blocking)
    };
    let inserted = db
        .store
        .insert_jobs(
            "default",
            &[
                of("c", false, "mail"),
                of("c", false, "charge"),
                of("b1", true, "mail"),
                of("b2", true, "charge"),
            ],
        )
        .await
        .unwrap();
    let concurrent = queues(&[("c", 10)]);
    let mail = ["mail".to_string()];
    let claimed = db
        .store
        .claim(&ClaimRequest {
            actions: Some(&mail),
            ..claim(10, &concurrent)
        })
        .await
        .unwrap();
    let mut got = ids(&claimed);
    got.sort();
    assert_eq!(got, vec![inserted[0].id, inserted[2].id]);
    assert_eq!(
        state_of(db.store.as_ref(), inserted[1].id).await,
        JobState::Available,
        "a job of another action is left, its attempts untouched"
    );
    let none: [String; 0] = [];
    let nothing = db
        .store
        .claim(&ClaimRequest {
            actions: Some(&none),
            ..claim(10, &concurrent)
        })
        .await
        .unwrap();
    assert!(
        nothing.is_empty(),
        "a worker with no performers claims nothing"
    );
    db.drop().await;
}

pub async fn a_blocking_head_of_an_unserved_action_holds_its_queue(backend: Backend) {
    let db = TestDb::new(backend).await;
    let of = |action: &str| NewJob {
        action: action.into(),
        ..job("q", true)
    };
    let inserted = db
        .store
        .insert_jobs("default", &[of("charge"), of("mail")])
        .await
        .unwrap();
    let mail = ["mail".to_string()];
    let request = ClaimRequest {
        actions: Some(&mail),
        ..claim(10, &BLOCKING_ONLY)
    };
    assert!(
        db.store.claim(&request).await.unwrap().is_empty(),
        "the queue's head is a charge job: FIFO holds the mail job behind it"
    );
    let charge = ["charge".to_string()];
    let head = db
        .store
        .claim(&ClaimRequest {
            actions: Some(&charge),
            ..claim(10, &BLOCKING_ONLY)
        })
        .await
        .unwrap();
    assert_eq!(ids(&head), vec![inserted[0].id]);
    assert_eq!(head[0].attempts, 1);
    db.drop().await;
}

/// Two claimers start together: the first is placing the new blocking jobs (their rows locked
/// in its open transaction) when the second looks. The second must not conclude that nothing
/// is ready and sleep until the next poll: once the first commits, the heads it placed and did
/// not take are the second's to claim (PostgreSQL: SQLite runs one claim at a time).
pub async fn a_claim_that_meets_another_claimer_placing_heads_looks_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true), job("b", true)])
        .await
        .unwrap();
    let crate::support::CallerConn::Postgres(mut other) = db.caller_connection().await else {
        unreachable!("PostgreSQL only");
    };
    // Undecided, as jobs inserted through a caller's transaction or with a unique key are.
    other
        .execute("UPDATE ferroq_jobs SET head = NULL", &[])
        .await
        .unwrap();
    // The other claimer: it locks the new jobs as resolve_heads.sql does, marks them heads,
    // and commits a moment later.
    let placing = other.transaction().await.unwrap();
    placing
        .execute("UPDATE ferroq_jobs SET head = true WHERE head IS NULL", &[])
        .await
        .unwrap();
    let commit_later = async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        placing.commit().await.unwrap();
    };
    let request = claim(10, &BLOCKING_ONLY);
    let (claimed, ()) = tokio::join!(db.store.claim(&request), commit_later);
    let mut claimed = ids(&claimed.unwrap());
    claimed.sort();
    assert_eq!(
        claimed,
        ids(&inserted),
        "the claim gave up while another placed the heads"
    );
}

/// Another claimer holds the oldest ready head right now: a claim of one job must take the
/// next ready head, not pick the held one, skip it, and come back empty while heads wait.
pub async fn a_claim_passes_over_a_head_another_claimer_holds(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true), job("b", true)])
        .await
        .unwrap();
    let crate::support::CallerConn::Postgres(mut other) = db.caller_connection().await else {
        unreachable!("PostgreSQL only");
    };
    let holding = other.transaction().await.unwrap();
    holding
        .execute(
            "SELECT id FROM ferroq_jobs WHERE id = $1 FOR UPDATE",
            &[&inserted[0].id],
        )
        .await
        .unwrap();
    let claimed = db.store.claim(&claim(1, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(ids(&claimed), vec![inserted[1].id]);
    holding.rollback().await.unwrap();
}
