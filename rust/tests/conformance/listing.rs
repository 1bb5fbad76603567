//! get_job, list_jobs and count_jobs: what an operator sees, always within one scope.

use _core::job::{Job, JobState, NewJob};
use _core::store::{Finish, JobFilter, Store};

use crate::support::{
    everything, finish, ids, job, lease, running, Backend, TestDb, BLOCKING_ONLY,
};

fn states(names: &[&str]) -> JobFilter {
    JobFilter::new(
        None,
        None,
        Some(names.iter().map(|s| s.to_string()).collect()),
        None,
        "id",
        false,
        1000,
        0,
    )
    .unwrap()
}

fn search(text: &str) -> JobFilter {
    JobFilter::new(None, None, None, Some(text.into()), "id", false, 1000, 0).unwrap()
}

async fn listed(store: &dyn Store, filter: &JobFilter) -> Vec<i64> {
    let jobs = store.list_jobs("default", filter).await.unwrap();
    let count = store
        .count_jobs(
            "default",
            &JobFilter {
                limit: 0,
                offset: 0,
                ..filter.clone()
            },
        )
        .await
        .unwrap();
    if filter.offset == 0 && (jobs.len() as i64) < filter.limit {
        assert_eq!(count, jobs.len() as i64, "count agrees with the listing");
    }
    ids(&jobs)
}

pub async fn get_job_finds_a_job_of_its_own_scope_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mine = db
        .store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let theirs = db
        .store
        .insert_jobs("other", &[job("a", true)])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        db.store.get_job("default", mine.id).await.unwrap(),
        Some(mine.clone())
    );
    assert_eq!(db.store.get_job("default", theirs.id).await.unwrap(), None);
    assert_eq!(db.store.get_job("other", mine.id).await.unwrap(), None);
    assert_eq!(
        db.store.get_job("default", theirs.id + 1000).await.unwrap(),
        None
    );
    db.drop().await;
}

/// Jobs of the default scope in known states: [available a/x, available b/y, running a/x,
/// completed b/x, failed a/y, discarded a/x], and one job of another scope.
async fn varied(db: &TestDb) -> Vec<Job> {
    let new = |queue: &str, action: &str| NewJob {
        action: action.into(),
        ..job(queue, false)
    };
    let jobs = running(
        &*db.store,
        &[new("a", "y"), new("b", "x"), new("a", "x"), new("a", "x")],
    )
    .await;
    db.store
        .finish(&[
            Finish {
                result: Some("1".into()),
                ..finish(lease(&jobs[1]), JobState::Completed)
            },
            Finish {
                error: Some("Connection REFUSED by host".into()),
                ..finish(lease(&jobs[0]), JobState::Failed)
            },
            finish(lease(&jobs[3]), JobState::Discarded),
        ])
        .await
        .unwrap();
    let waiting = db
        .store
        .insert_jobs("default", &[new("a", "x"), new("b", "y")])
        .await
        .unwrap();
    db.store
        .insert_jobs("other", &[new("a", "x")])
        .await
        .unwrap();
    let get = |id| async move { db.store.get_job("default", id).await.unwrap().unwrap() };
    vec![
        get(waiting[0].id).await,
        get(waiting[1].id).await,
        get(jobs[2].id).await,
        get(jobs[1].id).await,
        get(jobs[0].id).await,
        get(jobs[3].id).await,
    ]
}

pub async fn list_and_count_filter_by_queue_action_and_state(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = varied(&db).await;
    let id = |i: usize| jobs[i].id;
    let store = &*db.store;
    let mut all = ids(&jobs);
    all.sort();
    assert_eq!(
        listed(store, &everything()).await,
        all,
        "the default scope only"
    );
    let by_queue = JobFilter {
        queue: Some("b".into()),
        ..everything()
    };
    let mut expected = vec![id(1), id(3)];
    expected.sort();
    assert_eq!(listed(store, &by_queue).await, expected);
    let by_action = JobFilter {
        queue: Some("a".into()),
        action: Some("x".into()),
        ..everything()
    };
    let mut expected = vec![id(0), id(2), id(5)];
    expected.sort();
    assert_eq!(listed(store, &by_action).await, expected);
    assert_eq!(listed(store, &states(&["running"])).await, vec![id(2)]);
    let mut expected = vec![id(4), id(5)];
    expected.sort();
    assert_eq!(
        listed(store, &states(&["failed", "discarded"])).await,
        expected
    );
    assert_eq!(
        listed(
            store,
            &JobFilter {
                action: Some("y".into()),
                ..states(&["available", "completed"])
            }
        )
        .await,
        vec![id(1)]
    );
    assert!(
        listed(store, &states(&[])).await.is_empty(),
        "no state asked for"
    );
    assert!(listed(store, &states(&["scheduled"])).await.is_empty());
    assert_eq!(store.count_jobs("other", &everything()).await.unwrap(), 1);
    db.drop().await;
}

pub async fn search_is_a_case_insensitive_substring_of_action_params_or_error(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = varied(&db).await;
    let mailer = db
        .store
        .insert_jobs(
            "default",
            &[NewJob {
                action: "SendNewsletter".into(),
                params: r#"{"to": "Bob@Example.COM"}"#.into(),
                ..job("mail", true)
            }],
        )
        .await
        .unwrap()
        .pop()
        .unwrap();
    let store = &*db.store;
    assert_eq!(
        listed(store, &search("sendnews")).await,
        vec![mailer.id],
        "action"
    );
    assert_eq!(
        listed(store, &search("example.com")).await,
        vec![mailer.id],
        "params"
    );
    assert_eq!(
        listed(store, &search("refused")).await,
        vec![jobs[4].id],
        "error"
    );
    assert!(listed(store, &search("nowhere to be found"))
        .await
        .is_empty());
    assert_eq!(
        listed(
            store,
            &JobFilter {
                queue: Some("b".into()),
                ..search("refused")
            }
        )
        .await,
        Vec::<i64>::new(),
        "search narrows the other filters"
    );
    db.drop().await;
}

pub async fn search_reads_json_params_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = db
        .store
        .insert_jobs(
            "default",
            &[
                NewJob {
                    params: b"null bytes".to_vec().into(),
                    ..job("q", true)
                },
                NewJob {
                    params: r#"{"x": null}"#.into(),
                    ..job("q", true)
                },
            ],
        )
        .await
        .unwrap();
    let store = &*db.store;
    assert_eq!(
        listed(store, &search("null")).await,
        vec![jobs[1].id],
        "a bytes job's placeholder and its bytes are not searched"
    );
    assert!(listed(store, &search("bytes")).await.is_empty());
    assert_eq!(
        store.count_jobs("default", &search("null")).await.unwrap(),
        1
    );
    db.drop().await;
}

pub async fn search_ignores_case_beyond_ascii(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs = db
        .store
        .insert_jobs(
            "default",
            &[NewJob {
                action: "Éclair".into(),
                params: r#"{"who": "Zoë"}"#.into(),
                ..job("q", true)
            }],
        )
        .await
        .unwrap();
    let store = &*db.store;
    assert_eq!(listed(store, &search("éclair")).await, ids(&jobs), "action");
    assert_eq!(listed(store, &search("ZOË")).await, ids(&jobs), "params");
    db.drop().await;
}

pub async fn search_takes_percent_and_underscore_literally(backend: Backend) {
    let db = TestDb::new(backend).await;
    let with_code = |code: &str| NewJob {
        params: format!(r#"{{"code": "{code}"}}"#).into(),
        ..job("q", true)
    };
    let jobs = db
        .store
        .insert_jobs(
            "default",
            &[
                with_code("50%_off"),
                with_code("50XYoff"),
                with_code("50%Xoff"),
                with_code("50_off"),
            ],
        )
        .await
        .unwrap();
    let store = &*db.store;
    assert_eq!(listed(store, &search("50%_off")).await, vec![jobs[0].id]);
    assert_eq!(
        listed(store, &search("%")).await,
        vec![jobs[0].id, jobs[2].id],
        "% is a character, not a wildcard"
    );
    assert_eq!(
        listed(store, &search("_off")).await,
        vec![jobs[0].id, jobs[3].id],
        "_ is a character, not a wildcard"
    );
    db.drop().await;
}

pub async fn listings_are_ordered_and_paged_while_counts_ignore_paging(backend: Backend) {
    let db = TestDb::new(backend).await;
    let with = |queue: &str, priority| NewJob {
        priority,
        ..job(queue, true)
    };
    // Priorities 2, 0, 2, 1 in queues c, a, b, a; job 0 and job 2 finish at set times.
    let jobs = db
        .store
        .insert_jobs(
            "default",
            &[with("c", 2), with("a", 0), with("b", 2), with("a", 1)],
        )
        .await
        .unwrap();
    let id = |i: usize| jobs[i].id;
    for _ in 0..2 {
        let heads = db
            .store
            .claim(&crate::support::claim(10, &BLOCKING_ONLY))
            .await
            .unwrap();
        let finishes: Vec<Finish> = heads
            .iter()
            .filter(|j| j.id == id(0) || j.id == id(2))
            .map(|j| finish(lease(j), JobState::Completed))
            .collect();
        db.store.finish(&finishes).await.unwrap();
        for j in heads.iter().filter(|j| j.id != id(0) && j.id != id(2)) {
            db.store
                .finish(&[Finish {
                    refund_attempt: true,
                    ..finish(lease(j), JobState::Available)
                }])
                .await
                .unwrap();
        }
    }
    db.finished_ago(id(0), 60).await;
    db.finished_ago(id(2), 120).await;
    let store = &*db.store;
    let order = |order_by: &str, descending: bool| {
        JobFilter::new(None, None, None, None, order_by, descending, 1000, 0).unwrap()
    };
    assert_eq!(
        listed(store, &order("priority", false)).await,
        vec![id(1), id(3), id(0), id(2)],
        "ties broken by id"
    );
    assert_eq!(
        listed(store, &order("priority", true)).await,
        vec![id(2), id(0), id(3), id(1)]
    );
    assert_eq!(
        listed(store, &order("queue", false)).await,
        vec![id(1), id(3), id(2), id(0)]
    );
    assert_eq!(
        listed(store, &order("done_at", false)).await,
        vec![id(2), id(0), id(1), id(3)],
        "unfinished jobs last"
    );
    assert_eq!(
        listed(store, &order("done_at", true)).await,
        vec![id(0), id(2), id(3), id(1)],
        "unfinished jobs last in either direction"
    );
    assert_eq!(
        listed(store, &order("state", false)).await,
        vec![id(1), id(3), id(0), id(2)],
        "available before completed"
    );
    assert_eq!(
        listed(store, &order("sequence", true)).await,
        vec![id(3), id(2), id(1), id(0)]
    );
    let page = |offset| JobFilter {
        limit: 3,
        offset,
        ..order("id", false)
    };
    assert_eq!(listed(store, &page(0)).await, vec![id(0), id(1), id(2)]);
    assert_eq!(listed(store, &page(3)).await, vec![id(3)]);
    assert!(listed(store, &page(4)).await.is_empty());
    assert_eq!(
        store.count_jobs("default", &page(3)).await.unwrap(),
        4,
        "a count is of every matching job, whatever the page"
    );
    db.drop().await;
}

pub async fn bulk_changes_apply_to_their_states_only_and_refuse_others(backend: Backend) {
    use _core::error::Error;
    use _core::store::BulkChange;
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs(
            "default",
            &[job("a", true), job("a", true), job("b", false)],
        )
        .await
        .unwrap();
    let theirs = db
        .store
        .insert_jobs("other", &[job("a", false)])
        .await
        .unwrap();
    // Deleting waiting jobs is refused by the store itself, and nothing changes.
    let refused = db
        .store
        .bulk_change("default", BulkChange::Delete, &states(&["available"]))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidOption(_))),
        "{refused:?}"
    );
    // Nothing finished yet: delete and retry find nothing to change.
    for change in [BulkChange::Delete, BulkChange::Retry] {
        let changed = db.store.bulk_change("default", change, &everything()).await;
        assert_eq!(changed.unwrap(), 0, "{change:?}");
    }
    let only_a = JobFilter::new(Some("a".into()), None, None, None, "id", false, 0, 0).unwrap();
    let cancelled = db
        .store
        .bulk_change("default", BulkChange::Cancel, &only_a)
        .await;
    assert_eq!(cancelled.unwrap(), 2);
    for job in &inserted[..2] {
        assert_eq!(
            crate::support::state_of(&*db.store, job.id).await,
            JobState::Discarded
        );
    }
    assert_eq!(
        crate::support::state_of(&*db.store, inserted[2].id).await,
        JobState::Available
    );
    let retried = db
        .store
        .bulk_change("default", BulkChange::Retry, &everything())
        .await;
    assert_eq!(retried.unwrap(), 2);
    assert_eq!(
        listed(&*db.store, &states(&["available"])).await,
        ids(&inserted)
    );
    db.store
        .bulk_change("default", BulkChange::Cancel, &everything())
        .await
        .unwrap();
    let deleted = db
        .store
        .bulk_change("default", BulkChange::Delete, &everything())
        .await;
    assert_eq!(deleted.unwrap(), 3);
    assert_eq!(listed(&*db.store, &everything()).await, Vec::<i64>::new());
    // Another scope's job is untouched.
    let other = db
        .store
        .get_job("other", theirs[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.state, JobState::Available);
}
