//! caller_insert and caller_complete: statements run on the caller's own connection, inside
//! the caller's transaction, the way their driver runs them.

use std::sync::Arc;
use std::time::Duration;

use _core::job::{Job, JobState, NewJob, Params, Schedule};
use _core::store::{CallerRows, Lease};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support::{
    claim, every_byte, everything, ids, job, json, lease, params_json, queues, running,
    same_spelling, state_of, woken, Backend, TestDb,
};

fn batch() -> Vec<NewJob> {
    vec![
        NewJob {
            action: "charge".into(),
            params: r#"{"amount": 12.5, "who": "Zoë"}"#.into(),
            priority: 3,
            max_attempts: 5,
            timeout: 7.5,
            ..job("payments", false)
        },
        job("a", true),
        NewJob {
            schedule: Schedule::In(3600.0),
            ..job("a", true)
        },
    ]
}

/// Params and results are JSON documents, whose text each path prints its own way (bytes
/// params are bytes on every path).
fn comparable(job: &Job) -> Job {
    Job {
        params: same_spelling(&job.params),
        result: job.result.as_deref().map(|r| json(r).to_string()),
        // Computed by listings only.
        cancel_requested_at: None,
        blocked_by: None,
        ..job.clone()
    }
}

pub async fn caller_insert_rows_decode_into_the_inserted_jobs_in_input_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let new = batch();
    let statement = db.store.caller_insert("default", &new);
    assert_eq!(statement.rows, CallerRows::Jobs);
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    let rows = conn.run(&statement).await;
    let jobs = statement.jobs(&rows).unwrap();
    conn.commit().await;
    assert_eq!(jobs.len(), 3);
    for (job, new) in jobs.iter().zip(&new) {
        assert_eq!(
            (job.scope.as_str(), job.queue.as_str(), job.action.as_str()),
            ("default", new.queue.as_str(), new.action.as_str())
        );
        assert_eq!(params_json(&job.params), params_json(&new.params));
        assert_eq!(
            (job.priority, job.max_attempts, job.timeout, job.max_backoff),
            (new.priority, new.max_attempts, new.timeout, new.max_backoff)
        );
        assert_eq!(job.attempts, 0);
    }
    assert_eq!(
        jobs.iter().map(|j| j.state).collect::<Vec<_>>(),
        vec![
            JobState::Available,
            JobState::Available,
            JobState::Scheduled
        ]
    );
    assert!(jobs.windows(2).all(|w| w[0].sequence < w[1].sequence));
    for job in &jobs {
        let stored = db.store.get_job("default", job.id).await.unwrap().unwrap();
        assert_eq!(
            comparable(&stored),
            comparable(job),
            "the decoded row is the stored job, to the microsecond"
        );
    }
    conn.close().await;
    db.drop().await;
}

pub async fn a_caller_insert_takes_bytes_params_byte_for_byte(backend: Backend) {
    let db = TestDb::new(backend).await;
    let new = vec![
        NewJob {
            params: every_byte().into(),
            ..job("q", true)
        },
        job("q", true),
        NewJob {
            params: Vec::new().into(),
            ..job("q", true)
        },
        NewJob {
            params: b"\0\xc3(\xff".to_vec().into(),
            ..job("q", true)
        },
    ];
    let statement = db.store.caller_insert("default", &new);
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    let jobs = statement.jobs(&conn.run(&statement).await).unwrap();
    conn.commit().await;
    assert_eq!(
        jobs.iter()
            .map(|j| same_spelling(&j.params))
            .collect::<Vec<_>>(),
        new.iter()
            .map(|j| same_spelling(&j.params))
            .collect::<Vec<_>>(),
        "the rows decode into the bytes given"
    );
    for job in &jobs {
        let stored = db.store.get_job("default", job.id).await.unwrap().unwrap();
        assert_eq!(comparable(&stored), comparable(job));
    }
    conn.close().await;
    // A batch whose only bytes params are empty slices an empty buffer.
    let statement = db.store.caller_insert(
        "default",
        &[NewJob {
            params: Vec::new().into(),
            ..job("q", true)
        }],
    );
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    let jobs = statement.jobs(&conn.run(&statement).await).unwrap();
    conn.commit().await;
    assert_eq!(jobs[0].params, Params::Bytes(Vec::new()));
    let stored = db
        .store
        .get_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.params, Params::Bytes(Vec::new()));
    assert_eq!(params_json(&new[1].params), json(r#"{"n": 1}"#));
    conn.close().await;
    db.drop().await;
}

pub async fn a_caller_insert_rolled_back_stores_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let statement = db.store.caller_insert("default", &batch());
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    let jobs = statement.jobs(&conn.run(&statement).await).unwrap();
    assert_eq!(jobs.len(), 3);
    assert_eq!(
        db.store.count_jobs("default", &everything()).await.unwrap(),
        0,
        "not visible before the caller commits"
    );
    conn.rollback().await;
    assert_eq!(
        db.store.count_jobs("default", &everything()).await.unwrap(),
        0
    );
    for job in &jobs {
        assert_eq!(db.store.get_job("default", job.id).await.unwrap(), None);
    }
    assert!(db
        .store
        .claim(&claim(10, &queues(&[("payments", 5)])))
        .await
        .unwrap()
        .is_empty());
    conn.close().await;
    db.drop().await;
}

pub async fn a_caller_insert_committed_is_stored_and_claimable(backend: Backend) {
    let db = TestDb::new(backend).await;
    let statement = db.store.caller_insert("default", &batch());
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    let jobs = statement.jobs(&conn.run(&statement).await).unwrap();
    conn.commit().await;
    assert_eq!(
        ids(&db.store.list_jobs("default", &everything()).await.unwrap()),
        ids(&jobs)
    );
    let mut claimed = ids(&db
        .store
        .claim(&claim(10, &queues(&[("payments", 5)])))
        .await
        .unwrap());
    claimed.sort();
    assert_eq!(
        claimed,
        vec![jobs[0].id, jobs[1].id],
        "the due jobs run; the scheduled one waits"
    );
    conn.close().await;
    db.drop().await;
}

pub async fn a_caller_insert_is_announced_only_when_the_caller_commits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let listener = {
        let (store, wake, stop) = (db.store.clone(), wake.clone(), stop.clone());
        let scope = db.private_scope.clone();
        let cancels = Arc::new(Notify::new());
        tokio::spawn(async move { store.listen(&scope, wake, cancels, stop).await })
    };
    assert!(
        woken(&wake, Duration::from_secs(5)).await,
        "a new listener looks once"
    );
    let statement = db.store.caller_insert(&db.private_scope, &[job("a", true)]);
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    conn.run(&statement).await;
    assert!(
        !woken(&wake, Duration::from_millis(300)).await,
        "nothing is announced while the transaction is open"
    );
    conn.commit().await;
    assert!(
        woken(&wake, Duration::from_secs(5)).await,
        "the commit is announced"
    );
    stop.cancel();
    listener.await.unwrap();
    conn.close().await;
    db.drop().await;
}

pub async fn caller_complete_completes_a_running_job_while_its_lease_holds(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &[job("q", false)]).await;
    let statement = db.store.caller_complete(lease(&jobs[0]));
    assert_eq!(statement.rows, CallerRows::Completed);
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    assert_eq!(conn.run(&statement).await, vec![jobs[0].id.to_string()]);
    assert_eq!(
        state_of(&*db.store, jobs[0].id).await,
        JobState::Running,
        "not completed before the caller commits"
    );
    conn.commit().await;
    let done = db
        .store
        .get_job("default", jobs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.state, done.lease_token, done.attempts),
        (JobState::Completed, None, 1)
    );
    assert!(done.done_at.is_some());
    assert!(
        db.store
            .finish(&[crate::support::finish(lease(&jobs[0]), JobState::Failed)])
            .await
            .unwrap()
            .is_empty(),
        "the attempt is over: the worker's own outcome is fenced off"
    );
    conn.begin().await;
    assert!(
        conn.run(&statement).await.is_empty(),
        "a completed attempt cannot complete twice"
    );
    conn.commit().await;
    conn.close().await;
    db.drop().await;
}

pub async fn caller_complete_with_a_stale_lease_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let stale = running(&*db.store, &[job("q", false)]).await.pop().unwrap();
    db.expire_leases().await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 1);
    let fresh = db
        .store
        .claim(&claim(1, &queues(&[("q", 5)])))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(fresh.id, stale.id);
    let mut conn = db.caller_connection().await;
    for old in [
        lease(&stale),
        Lease {
            id: stale.id,
            token: fresh.lease_token.unwrap().wrapping_add(1),
        },
    ] {
        conn.begin().await;
        assert!(conn.run(&db.store.caller_complete(old)).await.is_empty());
        conn.commit().await;
    }
    assert_eq!(
        db.store.get_job("default", fresh.id).await.unwrap(),
        Some(fresh),
        "the new attempt is untouched"
    );
    conn.close().await;
    db.drop().await;
}

pub async fn caller_complete_rolls_back_with_the_callers_transaction(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = running(&*db.store, &[job("q", false)]).await;
    let mut conn = db.caller_connection().await;
    conn.begin().await;
    assert_eq!(
        conn.run(&db.store.caller_complete(lease(&jobs[0]))).await,
        vec![jobs[0].id.to_string()]
    );
    conn.rollback().await;
    assert_eq!(
        db.store.get_job("default", jobs[0].id).await.unwrap(),
        Some(jobs[0].clone()),
        "still running, under the same lease"
    );
    assert_eq!(
        db.store
            .finish(&[crate::support::finish(lease(&jobs[0]), JobState::Failed)])
            .await
            .unwrap(),
        vec![jobs[0].id],
        "the worker still holds the attempt"
    );
    conn.close().await;
    db.drop().await;
}
