//! The store operations the worker relies on, against a real PostgreSQL
//! ($FERROQ_TEST_DATABASE_URL, default the local server). Each test uses its own schema.
//! Written against the `Store` trait so the SQLite store can run the same cases.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use _core::config::ClientConfig;
use _core::job::{JobState, NewJob, Schedule};
use _core::store::{self, ClaimRequest, Finish, Lease, Store};

#[derive(Clone, Copy)]
enum Backend {
    Postgres,
    Sqlite,
}

/// A private database for one test: its own PostgreSQL schema or its own SQLite file.
struct TestDb {
    store: Arc<dyn Store>,
    place: Place,
}

enum Place {
    Schema {
        admin: tokio_postgres::Client,
        name: String,
    },
    File {
        dir: PathBuf,
        url: String,
    },
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let (url, place) = match backend {
            Backend::Postgres => {
                let base = std::env::var("FERROQ_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into());
                let name = format!("ferroq_rs_{:016x}", rand::random::<u64>());
                let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                    .await
                    .expect("PostgreSQL answers");
                tokio::spawn(connection);
                admin
                    .batch_execute(&format!("CREATE SCHEMA {name}"))
                    .await
                    .unwrap();
                let separator = if base.contains('?') { '&' } else { '?' };
                (
                    format!("{base}{separator}options=-csearch_path%3D{name}"),
                    Place::Schema { admin, name },
                )
            }
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("ferroq_rs_{:016x}", rand::random::<u64>()));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite:///{}", dir.join("jobs.db").display());
                (url.clone(), Place::File { dir, url })
            }
        };
        let config = ClientConfig {
            database_url: url,
            scope: "default".into(),
            concurrent_queues: HashMap::new(),
            max_params_size: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            pool_size: 4,
            wakeup_interval: Duration::from_millis(50),
        };
        let store = store::open(&config).unwrap();
        store.migrate().await.unwrap();
        TestDb { store, place }
    }

    /// Make every running lease look expired, as if its worker had died.
    async fn expire_leases(&self) {
        match &self.place {
            Place::Schema { admin, name } => admin
                .batch_execute(&format!("UPDATE {name}.ferroq_jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'"))
                .await
                .unwrap(),
            Place::File { url, .. } => {
                use sqlx::Connection;
                let path = url.trim_start_matches("sqlite:///");
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
                sqlx::query("UPDATE ferroq_jobs SET lease_expires_at = 0 WHERE state = 'running'")
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }

    async fn drop(self) {
        self.store.close();
        match self.place {
            Place::Schema { admin, name } => admin
                .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
                .await
                .unwrap(),
            Place::File { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Each case runs once per backend, as `postgres::case` and `sqlite::case`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { super::$case(super::Backend::Postgres).await } )*
        }
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { super::$case(super::Backend::Sqlite).await } )*
        }
    };
}

conformance!(
    migrate_is_idempotent,
    blocking_queue_hands_out_one_job_at_a_time_in_fifo_order,
    a_retrying_head_blocks_its_queue_until_due,
    a_stale_attempt_cannot_finish_a_rescued_job,
    concurrent_queue_respects_its_limit_across_claims,
    scopes_never_see_each_other,
);

fn job(queue: &str, blocking: bool) -> NewJob {
    NewJob {
        queue: queue.into(),
        action: "act".into(),
        params: r#"{"n": 1}"#.into(),
        blocking,
        schedule: Schedule::Now,
        timeout: 60.0,
        max_backoff: 10.0,
        max_attempts: 3,
        priority: 0,
    }
}

fn claim<'a>(limit: usize, concurrent: &'a [(String, u32)]) -> ClaimRequest<'a> {
    ClaimRequest {
        scope: "default",
        limit,
        concurrent_queues: concurrent,
        worker_name: "w",
        lease_ttl: Duration::from_secs(30),
    }
}

fn finish(lease: Lease, state: JobState) -> Finish {
    Finish {
        lease,
        state,
        result: None,
        error: None,
        delay: None,
        refund_attempt: false,
    }
}

async fn migrate_is_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert_eq!(db.store.migrate().await.unwrap(), Vec::<i32>::new());
    db.drop().await;
}

async fn blocking_queue_hands_out_one_job_at_a_time_in_fifo_order(backend: Backend) {
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
    let lease = Lease {
        id: head_a.id,
        token: head_a.lease_token.unwrap(),
    };
    assert_eq!(
        db.store
            .finish(&[finish(lease, JobState::Completed)])
            .await
            .unwrap(),
        vec![head_a.id]
    );
    let next = db.store.claim(&claim(10, &[])).await.unwrap();
    assert_eq!(
        next.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![inserted[1].id]
    );
    db.drop().await;
}

async fn a_retrying_head_blocks_its_queue_until_due(backend: Backend) {
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
    let lease = Lease {
        id: head.id,
        token: head.lease_token.unwrap(),
    };
    let retry = Finish {
        delay: Some(0.3),
        error: Some("boom".into()),
        ..finish(lease, JobState::Retryable)
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

async fn a_stale_attempt_cannot_finish_a_rescued_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    let stale = db.store.claim(&claim(1, &[])).await.unwrap().pop().unwrap();
    let stale_lease = Lease {
        id: stale.id,
        token: stale.lease_token.unwrap(),
    };
    db.expire_leases().await;
    assert_eq!(db.store.rescue_expired("default").await.unwrap(), 1);
    let fresh = db.store.claim(&claim(1, &[])).await.unwrap().pop().unwrap();
    assert_eq!(fresh.id, stale.id);
    assert_ne!(fresh.lease_token, stale.lease_token);
    assert!(db
        .store
        .extend_leases(&[stale_lease], Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert!(
        db.store
            .finish(&[finish(stale_lease, JobState::Failed)])
            .await
            .unwrap()
            .is_empty(),
        "stale outcome is fenced off"
    );
    let row = db
        .store
        .get_job("default", fresh.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("running", 2));
    db.drop().await;
}

async fn concurrent_queue_respects_its_limit_across_claims(backend: Backend) {
    let db = TestDb::new(backend).await;
    let jobs: Vec<NewJob> = (0..5).map(|_| job("emails", false)).collect();
    db.store.insert_jobs("default", &jobs).await.unwrap();
    let limits = vec![("emails".to_string(), 2u32)];
    assert_eq!(db.store.claim(&claim(10, &limits)).await.unwrap().len(), 2);
    assert_eq!(
        db.store.claim(&claim(10, &limits)).await.unwrap().len(),
        0,
        "limit counts running jobs of every worker"
    );
    db.drop().await;
}

async fn scopes_never_see_each_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs("other", &[job("a", true)])
        .await
        .unwrap();
    assert!(db.store.claim(&claim(10, &[])).await.unwrap().is_empty());
    db.drop().await;
}
