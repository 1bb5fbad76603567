//! migrate, creates_schema_on_first_use and close: the store's life around its jobs.

use std::time::Duration;

use _core::client::Client;
use _core::config::AppOptions;
use _core::error::Error;
use _core::job::JobSpec;

use crate::support::{all_versions, eventually, everything, job, Backend, TestDb};

pub async fn migrate_is_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert_eq!(db.store.migrate().await.unwrap(), Vec::<i32>::new());
    db.drop().await;
}

pub async fn migrate_applies_every_version_once_and_keeps_the_jobs(backend: Backend) {
    let db = TestDb::unmigrated(backend).await;
    assert!(
        matches!(
            db.store.count_jobs("default", &everything()).await,
            Err(Error::Database(_))
        ),
        "no table before the first migration"
    );
    assert_eq!(db.store.migrate().await.unwrap(), all_versions());
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    assert_eq!(db.store.migrate().await.unwrap(), Vec::<i32>::new());
    assert_eq!(
        db.store.get_job("default", inserted[0].id).await.unwrap(),
        Some(inserted[0].clone()),
        "migrating again leaves the jobs alone"
    );
    db.drop().await;
}

pub async fn concurrent_migrations_apply_each_version_once(backend: Backend) {
    let db = TestDb::unmigrated(backend).await;
    let stores = [db.store.clone(), db.open_store(), db.open_store()];
    let results = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;
    let mut applied: Vec<Vec<i32>> = results.into_iter().map(Result::unwrap).collect();
    applied.sort();
    assert_eq!(
        applied,
        vec![vec![], vec![], all_versions()],
        "one migrator applies everything, the others find it done"
    );
    assert_eq!(
        db.store.count_jobs("default", &everything()).await.unwrap(),
        0
    );
    db.drop().await;
}

pub async fn only_the_embedded_store_creates_its_schema_on_first_use(backend: Backend) {
    let db = TestDb::unmigrated(backend).await;
    assert_eq!(
        db.store.creates_schema_on_first_use(),
        backend == Backend::Sqlite
    );
    // What a user sees through a client on an empty database, with no setup step.
    let client = Client::new(AppOptions {
        database_url: Some(db.url().to_owned()),
        ..AppOptions::default()
    })
    .unwrap();
    let inserted = client.insert(vec![JobSpec::new("q", "a", "{}")]).await;
    match backend {
        Backend::Sqlite => {
            assert_eq!(inserted.unwrap().len(), 1);
            assert_eq!(db.store.migrate().await.unwrap(), Vec::<i32>::new());
        }
        Backend::Postgres => {
            let Err(Error::Database(message)) = inserted else {
                panic!("an unmigrated PostgreSQL database refuses jobs: {inserted:?}");
            };
            assert!(message.contains("ferroq_jobs"), "{message}");
            assert_eq!(
                client.migrate().await.unwrap(),
                all_versions(),
                "PostgreSQL's schema is an explicit step"
            );
            assert_eq!(
                client
                    .insert(vec![JobSpec::new("q", "a", "{}")])
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
    }
    client.close();
    db.drop().await;
}

fn is_closed_error(outcome: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(outcome, Err(Error::Database(m)) if m.to_lowercase().contains("closed"))
}

pub async fn a_closed_store_refuses_new_operations(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    db.store.close();
    let read = db.store.get_job("default", inserted[0].id).await;
    assert!(is_closed_error(&read), "a read after close fails: {read:?}");
    let write = db.store.insert_jobs("default", &[job("a", true)]).await;
    assert!(
        is_closed_error(&write),
        "a write after close fails: {write:?}"
    );
    assert_eq!(
        db.open_store()
            .count_jobs("default", &everything())
            .await
            .unwrap(),
        1,
        "closing one store leaves the database and other stores as they were"
    );
    db.drop().await;
}

pub async fn a_closed_store_fails_every_operation_within_a_moment(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inserted = db
        .store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    db.store.close();
    // Whenever closing completes (SQLite closes its pools from a spawned task), operations
    // fail with a closed-pool error: the store never reconnects by itself.
    let read = eventually(Duration::from_secs(2), || async {
        let read = db.store.get_job("default", inserted[0].id).await;
        is_closed_error(&read).then_some(read)
    })
    .await;
    assert!(read.is_some(), "reads fail within 2 s of close");
    for _ in 0..3 {
        let write = db.store.insert_jobs("default", &[job("a", true)]).await;
        assert!(is_closed_error(&write), "{write:?}");
        let count = db.store.count_jobs("default", &everything()).await;
        assert!(is_closed_error(&count), "{count:?}");
    }
    assert_eq!(
        db.open_store()
            .count_jobs("default", &everything())
            .await
            .unwrap(),
        1
    );
    db.drop().await;
}
