//! Hot paths of the engine, measured with criterion: `cargo bench`.
//!
//! The store benches need the databases the test suite uses: PostgreSQL at
//! $FERROQ_TEST_DATABASE_URL (default the local server) and a SQLite file in a temp dir.
//! Each iteration claims a batch of 100 jobs and writes their completion in one statement
//! (PostgreSQL) or one transaction (SQLite): the worker's loop without Python.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use _core::config::ClientConfig;
use _core::job::{default_backoff, JobSpec, NewJob, Schedule};
use _core::queues::{QueueKinds, QueueRouting, QueueSelector};
use _core::store::{self, ClaimRequest, Finish, Lease, Store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const BATCH: usize = 100;

fn new_job(queue: &str, blocking: bool, params: &str) -> NewJob {
    NewJob {
        queue: queue.into(),
        action: "noop".into(),
        params: params.into(),
        blocking,
        schedule: Schedule::Now,
        timeout: 60.0,
        max_backoff: 86_400.0,
        max_attempts: 20,
        priority: 0,
        unique: None,
    }
}

fn pure(c: &mut Criterion) {
    c.bench_function("default_backoff/20 attempts", |b| {
        b.iter(|| {
            (1..=20)
                .map(|n| default_backoff(black_box(n), black_box(86_400.0)))
                .sum::<f64>()
        })
    });
    let params = format!(
        r#"{{"to":"user@example.com","body":"{}"}}"#,
        "x".repeat(1000)
    );
    let spec = JobSpec::new("emails", "send", params);
    c.bench_function("JobSpec::into_new_job/1 KiB params", |b| {
        b.iter(|| black_box(spec.clone()).into_new_job(true, 1 << 20))
    });
    // Both stores receive a batch as one JSON document (jsonb_array_elements, json_each): the
    // params' JSON text is embedded as a string, so this is the per-batch conversion cost.
    let jobs: Vec<NewJob> = (0..1000)
        .map(|i| new_job("bench", false, &format!(r#"{{"i":{i}}}"#)))
        .collect();
    c.bench_function("encode insert batch/1000 jobs", |b| {
        b.iter(|| _core::store::encode_insert_batch(black_box(&jobs)))
    });
    let finishes: Vec<Finish> = (0..1000)
        .map(|i| Finish {
            lease: Lease { id: i, token: i },
            state: _core::job::JobState::Completed,
            result: None,
            error: None,
            delay: None,
            refund_attempt: false,
        })
        .collect();
    c.bench_function("sqlite: encode finish batch/1000 outcomes", |b| {
        b.iter(|| _core::store::encode_finish_batch(black_box(&finishes)))
    });
}

async fn open_store(backend: &str) -> Arc<dyn Store> {
    let url = match backend {
        "postgres" => {
            let base = std::env::var("FERROQ_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into());
            let schema = "ferroq_bench_engine";
            let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                .await
                .expect("PostgreSQL answers");
            tokio::spawn(connection);
            admin
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                ))
                .await
                .unwrap();
            let separator = if base.contains('?') { '&' } else { '?' };
            format!("{base}{separator}options=-csearch_path%3D{schema}")
        }
        _ => {
            let dir = std::env::temp_dir().join("ferroq_bench_engine");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite:///{}", dir.join("jobs.db").display())
        }
    };
    let config = ClientConfig {
        database_url: url,
        scope: "bench".into(),
        queue_kinds: QueueKinds::new(HashMap::from([("bench".to_string(), 10_000)])).unwrap(),
        max_params_size: 1 << 20,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        pool_size: 4,
        wakeup_interval: Duration::from_millis(50),
    };
    let store = store::open(&config).unwrap();
    store.migrate().await.unwrap();
    store
}

/// Claim `BATCH` jobs and complete them, `iters` times; jobs are inserted beforehand, untimed.
async fn claim_and_complete(
    store: &dyn Store,
    queues: &QueueRouting,
    blocking: bool,
    iters: u64,
) -> Duration {
    let jobs: Vec<NewJob> = (0..BATCH)
        .map(|i| {
            if blocking {
                new_job(&format!("k{i}"), true, "{}")
            } else {
                new_job("bench", false, "{}")
            }
        })
        .collect();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        store.insert_jobs("bench", &jobs).await.unwrap();
        let started = Instant::now();
        let request = ClaimRequest {
            scope: "bench",
            limit: BATCH,
            blocking_limit: BATCH,
            queues,
            worker_name: "bench",
            lease_ttl: Duration::from_secs(30),
            actions: None,
        };
        let claimed = store.claim(&request).await.unwrap();
        assert_eq!(claimed.len(), BATCH);
        let finishes: Vec<Finish> = claimed
            .iter()
            .map(|j| Finish {
                lease: Lease {
                    id: j.id,
                    token: j.lease_token.unwrap(),
                },
                state: _core::job::JobState::Completed,
                result: None,
                error: None,
                delay: None,
                refund_attempt: false,
            })
            .collect();
        store.finish(&finishes).await.unwrap();
        total += started.elapsed();
    }
    total
}

fn stores(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("claim+complete 100 jobs");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for backend in ["postgres", "sqlite"] {
        let store = runtime.block_on(open_store(backend));
        let concurrent = QueueRouting {
            kinds: QueueKinds::new(HashMap::from([("bench".to_string(), 10_000)])).unwrap(),
            only: QueueSelector::default(),
        };
        group.bench_with_input(
            BenchmarkId::new("concurrent queue", backend),
            &backend,
            |b, _| {
                b.to_async(&runtime).iter_custom(|iters| {
                let (store, concurrent) = (store.clone(), concurrent.clone());
                async move { claim_and_complete(store.as_ref(), &concurrent, false, iters).await }
            })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("100 blocking queues", backend),
            &backend,
            |b, _| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let store = store.clone();
                    async move {
                        claim_and_complete(store.as_ref(), &QueueRouting::default(), true, iters)
                            .await
                    }
                })
            },
        );
        store.close();
    }
    group.finish();
}

criterion_group!(benches, pure, stores);
criterion_main!(benches);
