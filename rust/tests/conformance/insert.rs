//! insert_jobs: what goes in comes back, in input order, stamped by the database.

use std::time::Duration;

use _core::job::{Job, JobState, NewJob, Params, Schedule};
use chrono::{DurationRound, TimeDelta, Utc};

use crate::support::{
    claim, eventually, every_byte, everything, ids, job, json, params_json, same_spelling, Backend,
    TestDb, BLOCKING_ONLY,
};

pub async fn inserted_jobs_come_back_in_input_order_with_their_options(backend: Backend) {
    let db = TestDb::new(backend).await;
    let new = vec![
        NewJob {
            action: "send_email".into(),
            params: r#"{"to": "a@example.com", "tags": ["x", "y"]}"#.into(),
            timeout: 12.5,
            max_backoff: 0.0,
            max_attempts: 1,
            priority: -3,
            ..job("emails", false)
        },
        NewJob {
            params: "[1, 2.5, null, true]".into(),
            ..job("reports", true)
        },
        NewJob {
            action: "resize".into(),
            params: r#""just a string""#.into(),
            max_attempts: 20,
            priority: 7,
            ..job("images", false)
        },
    ];
    let inserted = db.store.insert_jobs("default", &new).await.unwrap();
    assert_eq!(inserted.len(), 3);
    for (job, new) in inserted.iter().zip(&new) {
        assert_eq!(
            (job.scope.as_str(), job.queue.as_str(), job.action.as_str()),
            ("default", new.queue.as_str(), new.action.as_str())
        );
        assert_eq!(params_json(&job.params), params_json(&new.params));
        assert_eq!(
            (job.priority, job.max_attempts, job.timeout, job.max_backoff),
            (new.priority, new.max_attempts, new.timeout, new.max_backoff)
        );
        assert_eq!((job.state, job.attempts), (JobState::Available, 0));
        assert_eq!(
            (
                job.attempted_at,
                job.attempted_by.as_deref(),
                job.next_attempt_at,
                job.done_at
            ),
            (None, None, None, None)
        );
        assert_eq!(
            (job.error.as_deref(), job.result.as_deref(), job.lease_token),
            (None, None, None)
        );
        assert!(
            job.scheduled_at <= Utc::now() && job.scheduled_at == job.inserted_at,
            "a job to run now is scheduled at its insert time"
        );
    }
    assert!(
        inserted.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequence follows input order"
    );
    for job in &inserted {
        assert_eq!(
            db.store.get_job("default", job.id).await.unwrap().as_ref(),
            Some(job),
            "the stored row is what insert returned"
        );
    }
    db.drop().await;
}

pub async fn an_empty_batch_inserts_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert!(db
        .store
        .insert_jobs("default", &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.store.count_jobs("default", &everything()).await.unwrap(),
        0
    );
    db.drop().await;
}

pub async fn a_large_batch_keeps_its_input_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let new: Vec<NewJob> = (0..300)
        .map(|i| NewJob {
            params: format!(r#"{{"i": {i}}}"#).into(),
            ..job(if i % 2 == 0 { "even" } else { "odd" }, true)
        })
        .collect();
    let inserted = db.store.insert_jobs("default", &new).await.unwrap();
    let order: Vec<i64> = inserted
        .iter()
        .map(|j| params_json(&j.params)["i"].as_i64().unwrap())
        .collect();
    assert_eq!(order, (0..300).collect::<Vec<i64>>());
    assert!(inserted.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let listed = db.store.list_jobs("default", &everything()).await.unwrap();
    assert_eq!(ids(&listed), ids(&inserted));
    db.drop().await;
}

pub async fn names_and_params_are_stored_as_given(backend: Backend) {
    let db = TestDb::new(backend).await;
    let queue = "q'; DROP TABLE ferroq_jobs; --";
    let action = "队列 ✓ \"quoted\" 50%_off";
    let params = r#"{"b": {"nested": [1, {"deep": "é\"\\"}]}, "a": "O'Brien", "pct": "100%"}"#;
    let inserted = db
        .store
        .insert_jobs(
            "scope with spaces ✓",
            &[NewJob {
                action: action.into(),
                params: params.into(),
                ..job(queue, true)
            }],
        )
        .await
        .unwrap()
        .pop()
        .unwrap();
    let stored = db
        .store
        .get_job("scope with spaces ✓", inserted.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            stored.scope.as_str(),
            stored.queue.as_str(),
            stored.action.as_str()
        ),
        ("scope with spaces ✓", queue, action)
    );
    assert_eq!(params_json(&stored.params), json(params));
    db.drop().await;
}

pub async fn a_delayed_job_is_scheduled_and_claimed_only_once_due(backend: Backend) {
    let db = TestDb::new(backend).await;
    let delayed = db
        .store
        .insert_jobs(
            "default",
            &[NewJob {
                schedule: Schedule::In(0.4),
                ..job("a", true)
            }],
        )
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(delayed.state, JobState::Scheduled);
    assert_eq!(
        delayed.scheduled_at - delayed.inserted_at,
        TimeDelta::milliseconds(400),
        "the delay counts from the insert, on the database clock"
    );
    assert!(db
        .store
        .claim(&claim(10, &BLOCKING_ONLY))
        .await
        .unwrap()
        .is_empty());
    let claimed = eventually(Duration::from_secs(3), || async {
        db.store
            .claim(&claim(10, &BLOCKING_ONLY))
            .await
            .unwrap()
            .pop()
    })
    .await
    .expect("the job is claimed once due");
    assert_eq!(claimed.id, delayed.id);
    assert!(claimed.attempted_at.unwrap() >= delayed.scheduled_at);
    db.drop().await;
}

pub async fn a_job_scheduled_at_a_time_keeps_that_time_to_the_microsecond(backend: Backend) {
    let db = TestDb::new(backend).await;
    let now = Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap();
    let future = now + TimeDelta::seconds(3600) + TimeDelta::microseconds(123_457);
    let past = now - TimeDelta::seconds(3600) + TimeDelta::microseconds(1);
    let inserted = db
        .store
        .insert_jobs(
            "default",
            &[
                NewJob {
                    schedule: Schedule::At(future),
                    ..job("later", true)
                },
                NewJob {
                    schedule: Schedule::At(past),
                    ..job("overdue", true)
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        inserted
            .iter()
            .map(|j| (j.state, j.scheduled_at))
            .collect::<Vec<_>>(),
        vec![(JobState::Scheduled, future), (JobState::Available, past)]
    );
    let claimed = db.store.claim(&claim(10, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(
        ids(&claimed),
        vec![inserted[1].id],
        "only the overdue job is due"
    );
    db.drop().await;
}

pub async fn bytes_params_come_back_byte_for_byte_beside_json_ones(backend: Backend) {
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
            // "null" itself, as bytes: still bytes, not JSON null.
            params: b"null\0\xff".to_vec().into(),
            ..job("q", true)
        },
    ];
    let expected: Vec<Params> = new.iter().map(|j| same_spelling(&j.params)).collect();
    let params = |jobs: &[Job]| {
        jobs.iter()
            .map(|j| same_spelling(&j.params))
            .collect::<Vec<_>>()
    };
    let inserted = db.store.insert_jobs("default", &new).await.unwrap();
    assert_eq!(params(&inserted), expected, "insert returns them");
    let listed = db.store.list_jobs("default", &everything()).await.unwrap();
    assert_eq!(params(&listed), expected, "list_jobs reads them");
    let got = db
        .store
        .get_job("default", inserted[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.params,
        Params::Bytes(every_byte()),
        "get_job reads them"
    );
    let claimed = db.store.claim(&claim(1, &BLOCKING_ONLY)).await.unwrap();
    assert_eq!(
        claimed[0].params,
        Params::Bytes(every_byte()),
        "a claim hands them out"
    );
    assert_eq!(params_json(&listed[1].params), json(r#"{"n": 1}"#));
    db.drop().await;
}
