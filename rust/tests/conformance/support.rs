//! What every case shares: a private database per test (`TestDb`), a second connection the
//! way a user's own driver would open one (`CallerConn`), job builders, and bounded waits.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use _core::config::ClientConfig;
use _core::job::{Job, JobState, NewJob, Params, Schedule};
use _core::queues::{QueueKinds, QueueRouting, QueueSelector};
use _core::store::{self, CallerRows, CallerStatement, ClaimRequest, Finish, JobFilter, Lease};
use _core::store::{ParamStyle, SqlParam, Store};
use sqlx::{Connection, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A private database for one test: its own PostgreSQL schema or its own SQLite file.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// A scope no other test uses. PostgreSQL's NOTIFY channel is database-wide, so listeners
    /// of "default" in other tests' schemas hear each other's inserts; wake-up cases use this.
    pub private_scope: String,
    config: ClientConfig,
    place: Place,
    /// Further stores opened on the same database, closed with it.
    others: Mutex<Vec<Arc<dyn Store>>>,
}

enum Place {
    Schema {
        /// search_path is the test's schema, so statements name tables unqualified.
        admin: tokio_postgres::Client,
        name: String,
    },
    File {
        dir: PathBuf,
        path: PathBuf,
    },
}

impl TestDb {
    /// A database with the schema in place.
    pub async fn new(backend: Backend) -> TestDb {
        let db = TestDb::unmigrated(backend).await;
        assert_eq!(
            db.store.migrate().await.unwrap(),
            all_versions(),
            "a fresh database gets every schema version"
        );
        db
    }

    /// An empty database: no ferroq tables yet.
    pub async fn unmigrated(backend: Backend) -> TestDb {
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
                    .batch_execute(&format!("CREATE SCHEMA {name}; SET search_path TO {name}"))
                    .await
                    .unwrap();
                let separator = if base.contains('?') { '&' } else { '?' };
                // The application name tells this test's connections apart in pg_stat_activity.
                (
                    format!(
                        "{base}{separator}options=-csearch_path%3D{name}&application_name={name}"
                    ),
                    Place::Schema { admin, name },
                )
            }
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("ferroq_rs_{:016x}", rand::random::<u64>()));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("jobs.db");
                (
                    format!("sqlite:///{}", path.display()),
                    Place::File { dir, path },
                )
            }
        };
        let config = ClientConfig {
            database_url: url,
            scope: "default".into(),
            queue_kinds: QueueKinds::default(),
            max_params_size: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            pool_size: 4,
            wakeup_interval: Duration::from_millis(50),
        };
        let store = store::open(&config).unwrap();
        TestDb {
            store,
            private_scope: format!("scope_{:016x}", rand::random::<u64>()),
            config,
            place,
            others: Mutex::new(Vec::new()),
        }
    }

    /// The database URL the stores of this test open.
    pub fn url(&self) -> &str {
        &self.config.database_url
    }

    /// Another store on the same database, as another process would open it.
    pub fn open_store(&self) -> Arc<dyn Store> {
        let other = store::open(&self.config).unwrap();
        self.others.lock().unwrap().push(other.clone());
        other
    }

    /// Run administrative SQL behind the stores' back (the table is `ferroq_jobs` on both).
    pub async fn execute(&self, postgres: &str, sqlite: &str) -> u64 {
        match &self.place {
            Place::Schema { admin, .. } => admin.execute(postgres, &[]).await.unwrap(),
            Place::File { path, .. } => {
                let mut conn = sqlite_connection(path).await;
                let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite.to_owned()))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                done.rows_affected()
            }
        }
    }

    /// Make every running lease look expired, as if its worker had died.
    pub async fn expire_leases(&self) {
        self.execute(
            "UPDATE ferroq_jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'",
            "UPDATE ferroq_jobs SET lease_expires_at = 0 WHERE state = 'running'",
        )
        .await;
    }

    /// Make the running leases of one scope look expired.
    pub async fn expire_leases_of(&self, scope: &str) {
        // Scope names in these tests are plain words.
        assert!(scope.chars().all(|c| c.is_ascii_alphanumeric()));
        self.execute(
            &format!("UPDATE ferroq_jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running' AND scope = '{scope}'"),
            &format!("UPDATE ferroq_jobs SET lease_expires_at = 0 WHERE state = 'running' AND scope = '{scope}'"),
        )
        .await;
    }

    /// Move a finished job's `done_at` into the past, as if it had finished `seconds` ago.
    pub async fn finished_ago(&self, id: i64, seconds: i64) {
        let changed = self
            .execute(
                &format!("UPDATE ferroq_jobs SET done_at = now() - {seconds} * interval '1 second' WHERE id = {id} AND done_at IS NOT NULL"),
                &format!("UPDATE ferroq_jobs SET done_at = CAST(round((julianday('now') - 2440587.5) * 86400000.0) * 1000 AS INTEGER) - {seconds} * 1000000 WHERE id = {id} AND done_at IS NOT NULL"),
            )
            .await;
        assert_eq!(changed, 1, "job {id} has finished");
    }

    /// PostgreSQL only: end the server sessions of this test's stores whose last statement
    /// was `query`, as a server restart or a network cut would. Returns how many ended.
    pub async fn terminate_sessions(&self, query: &str) -> usize {
        let Place::Schema { admin, name } = &self.place else {
            panic!("sessions are PostgreSQL's");
        };
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND query = $2",
                &[name, &query],
            )
            .await
            .unwrap()
            .len()
    }

    /// PostgreSQL only: the server pids of this test's idle sessions whose last statement
    /// was `query`.
    pub async fn idle_sessions(&self, query: &str) -> Vec<i32> {
        let Place::Schema { admin, name } = &self.place else {
            panic!("sessions are PostgreSQL's");
        };
        admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query = $2 AND state = 'idle'",
                &[name, &query],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// A connection of the caller's own, as their driver would open it.
    pub async fn caller_connection(&self) -> CallerConn {
        match &self.place {
            Place::Schema { .. } => {
                let (client, connection) =
                    tokio_postgres::connect(self.url(), tokio_postgres::NoTls)
                        .await
                        .expect("PostgreSQL answers");
                tokio::spawn(connection);
                CallerConn::Postgres(client)
            }
            Place::File { path, .. } => CallerConn::Sqlite(sqlite_connection(path).await),
        }
    }

    pub async fn drop(self) {
        self.store.close();
        for other in self.others.lock().unwrap().drain(..) {
            other.close();
        }
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

async fn sqlite_connection(path: &std::path::Path) -> sqlx::SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(10));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap()
}

/// The caller's own connection, on which `CallerStatement`s run inside the caller's transaction.
pub enum CallerConn {
    Postgres(tokio_postgres::Client),
    Sqlite(sqlx::SqliteConnection),
}

impl CallerConn {
    async fn batch(&mut self, sql: &'static str) {
        match self {
            CallerConn::Postgres(client) => client.batch_execute(sql).await.unwrap(),
            CallerConn::Sqlite(conn) => {
                sqlx::raw_sql(sql).execute(&mut *conn).await.unwrap();
            }
        }
    }

    pub async fn begin(&mut self) {
        self.batch("BEGIN").await
    }

    pub async fn commit(&mut self) {
        self.batch("COMMIT").await
    }

    pub async fn rollback(&mut self) {
        self.batch("ROLLBACK").await
    }

    /// Run `statement` with the backend's numbered placeholders, binding text as text,
    /// integers as 64-bit integers and bytes as bytes, as a driver does. Returns the first column of each row
    /// as text (a job's JSON, or a completed id).
    pub async fn run(&mut self, statement: &CallerStatement) -> Vec<String> {
        let (sql, params) = statement.render(ParamStyle::Numbered).unwrap();
        let json_rows = statement.rows == CallerRows::Jobs;
        match self {
            CallerConn::Postgres(client) => {
                assert_eq!(statement.backend, store::Backend::Postgres);
                let binds: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| match p {
                        SqlParam::Text(text) => text as &(dyn tokio_postgres::types::ToSql + Sync),
                        SqlParam::Int(int) => int as &(dyn tokio_postgres::types::ToSql + Sync),
                        SqlParam::Bytes(bytes) => {
                            bytes as &(dyn tokio_postgres::types::ToSql + Sync)
                        }
                    })
                    .collect();
                let rows = client.query(&sql, &binds).await.unwrap();
                rows.iter()
                    .map(|row| {
                        if json_rows {
                            row.get::<_, String>(0)
                        } else {
                            row.get::<_, i64>(0).to_string()
                        }
                    })
                    .collect()
            }
            CallerConn::Sqlite(conn) => {
                assert_eq!(statement.backend, store::Backend::Sqlite);
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for param in params {
                    query = match param {
                        SqlParam::Text(text) => query.bind(text),
                        SqlParam::Int(int) => query.bind(int),
                        SqlParam::Bytes(bytes) => query.bind(bytes),
                    };
                }
                let rows = query.fetch_all(&mut *conn).await.unwrap();
                rows.iter()
                    .map(|row| {
                        if json_rows {
                            row.get::<String, _>(0)
                        } else {
                            row.get::<i64, _>(0).to_string()
                        }
                    })
                    .collect()
            }
        }
    }

    pub async fn close(self) {
        match self {
            CallerConn::Postgres(client) => drop(client),
            CallerConn::Sqlite(conn) => conn.close().await.unwrap(),
        }
    }
}

/// A job to run now with distinct, non-default options.
pub fn job(queue: &str, blocking: bool) -> NewJob {
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
        unique: None,
    }
}

/// A claim of the default scope by worker "w", with a 30 s lease.
pub fn claim<'a>(limit: usize, queues: &'a QueueRouting) -> ClaimRequest<'a> {
    ClaimRequest {
        scope: "default",
        limit,
        blocking_limit: limit,
        queues,
        worker_name: "w",
        lease_ttl: Duration::from_secs(30),
        actions: None,
    }
}

/// No concurrent queues: every queue blocks, and the worker serves them all.
pub static BLOCKING_ONLY: LazyLock<QueueRouting> = LazyLock::new(QueueRouting::default);

/// Concurrent queues (names or `prefix*` patterns) and their limits, as a worker that serves
/// every queue claims them.
pub fn queues(limits: &[(&str, u32)]) -> QueueRouting {
    QueueRouting {
        kinds: QueueKinds::new(
            limits
                .iter()
                .map(|(q, n)| (q.to_string(), *n as i64))
                .collect(),
        )
        .unwrap(),
        only: QueueSelector::default(),
    }
}

pub fn finish(lease: Lease, state: JobState) -> Finish {
    Finish {
        lease,
        state,
        result: None,
        error: None,
        delay: None,
        refund_attempt: false,
    }
}

/// The lease of a claimed job.
pub fn lease(job: &Job) -> Lease {
    Lease {
        id: job.id,
        token: job.lease_token.expect("a claimed job holds a lease"),
    }
}

pub fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

/// Every schema version, in order.
pub fn all_versions() -> Vec<i32> {
    store::MIGRATIONS.iter().map(|m| m.version).collect()
}

/// JSON text as a value: backends print the same document differently (spaces, key order).
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// JSON params as a value (see [`json`]); bytes params are a test's mistake here.
pub fn params_json(params: &Params) -> serde_json::Value {
    match params {
        Params::Json(text) => json(text),
        Params::Bytes(bytes) => panic!("expected JSON params, got {} bytes", bytes.len()),
    }
}

/// Params with JSON text in one spelling (see [`json`]); bytes are bytes on every backend.
pub fn same_spelling(params: &Params) -> Params {
    match params {
        Params::Json(text) => Params::Json(json(text).to_string()),
        bytes => bytes.clone(),
    }
}

/// Every byte value once, in order.
pub fn every_byte() -> Vec<u8> {
    (0..=255).collect()
}

/// Every job of the default scope in id order.
pub fn everything() -> JobFilter {
    JobFilter::new(None, None, None, None, "id", false, 1000, 0).unwrap()
}

pub async fn state_of(store: &dyn Store, id: i64) -> JobState {
    store.get_job("default", id).await.unwrap().unwrap().state
}

/// Insert `jobs` into the default scope, claim them all as concurrent jobs of their queues,
/// and return the claimed jobs in input order.
pub async fn running(store: &dyn Store, jobs: &[NewJob]) -> Vec<Job> {
    let inserted = store.insert_jobs("default", jobs).await.unwrap();
    let limits: HashMap<String, i64> = jobs
        .iter()
        .filter(|j| !j.blocking)
        .map(|j| (j.queue.clone(), 1000))
        .collect();
    let limits = QueueRouting {
        kinds: QueueKinds::new(limits).unwrap(),
        only: QueueSelector::default(),
    };
    let mut claimed = store.claim(&claim(jobs.len(), &limits)).await.unwrap();
    claimed.sort_by_key(|j| j.sequence);
    assert_eq!(ids(&claimed), ids(&inserted), "every job was claimed");
    claimed
}

/// Whether `wake` is notified within `within`.
pub async fn woken(wake: &tokio::sync::Notify, within: Duration) -> bool {
    tokio::time::timeout(within, wake.notified()).await.is_ok()
}

/// Ask `probe` every 20 ms until it gives a value, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each case of `both` runs once per backend, as `postgres::case` and `sqlite::case`; a case
/// may carry attributes for one backend only (`sqlite #[ignore = "why"]`). Cases of
/// `postgres_only` test what only PostgreSQL has (server sessions, NOTIFY payloads).
macro_rules! conformance {
    (
        both: [ $( $family:ident :: $case:ident $(postgres #[$pg:meta])* $(sqlite #[$sq:meta])* ),* $(,)? ],
        postgres_only: [ $( $pg_family:ident :: $pg_case:ident ),* $(,)? ] $(,)?
    ) => {
        mod postgres {
            use crate::support::Backend;
            $( $(#[$pg])*
               #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { crate::$family::$case(Backend::Postgres).await } )*
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $pg_case() { crate::$pg_family::$pg_case(Backend::Postgres).await } )*
        }
        mod sqlite {
            use crate::support::Backend;
            $( $(#[$sq])*
               #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { crate::$family::$case(Backend::Sqlite).await } )*
        }
    };
}
pub(crate) use conformance;
