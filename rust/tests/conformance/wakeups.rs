//! notify, listen and next_run_in: how an idle worker learns there is work, and how long it
//! may sleep.

use std::sync::Arc;
use std::time::Duration;

use _core::job::{JobState, NewJob, Schedule};
use _core::queues::QueueRouting;
use _core::store::{ClaimRequest, Finish, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{claim, eventually, finish, job, lease, running, woken, Backend, TestDb};

/// A listener of `scope` on `store`, already listening (its first look consumed).
struct Listener {
    wake: Arc<Notify>,
    cancels: Arc<Notify>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Listener {
    async fn start(store: &Arc<dyn Store>, scope: &str) -> Listener {
        let wake = Arc::new(Notify::new());
        let cancels = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = {
            let (store, wake, cancels, stop) =
                (store.clone(), wake.clone(), cancels.clone(), stop.clone());
            let scope = scope.to_owned();
            tokio::spawn(async move { store.listen(&scope, wake, cancels, stop).await })
        };
        assert!(
            woken(&wake, Duration::from_secs(5)).await,
            "a new listener looks once, to cover what came before it"
        );
        // Its first look covers cancel requests too (consumed, if it made one).
        woken(&cancels, Duration::from_millis(100)).await;
        Listener {
            wake,
            cancels,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("listen returns once stopped")
            .unwrap();
    }
}

pub async fn next_run_in_is_none_when_no_job_waits(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert_eq!(db.store.next_run_in("default").await.unwrap().next_in, None);
    let jobs = running(&*db.store, &[job("q", false), job("q", false)]).await;
    db.store
        .finish(&[finish(lease(&jobs[0]), JobState::Completed)])
        .await
        .unwrap();
    db.store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    assert_eq!(
        db.store.next_run_in("default").await.unwrap().next_in,
        None,
        "available, running and finished jobs do not wait"
    );
    db.drop().await;
}

pub async fn next_run_in_counts_down_to_the_next_scheduled_or_retrying_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let in_seconds = |seconds: f64| NewJob {
        schedule: Schedule::In(seconds),
        ..job("a", true)
    };
    db.store
        .insert_jobs("default", &[in_seconds(30.0), in_seconds(20.0)])
        .await
        .unwrap();
    db.store
        .insert_jobs("other", &[in_seconds(1.0)])
        .await
        .unwrap();
    let due = db
        .store
        .next_run_in("default")
        .await
        .unwrap()
        .next_in
        .unwrap();
    assert!(
        due > 19.0 && due <= 20.0,
        "the earliest job of the scope, got {due}"
    );
    let jobs = running(&*db.store, &[job("q", false)]).await;
    db.store
        .finish(&[Finish {
            delay: Some(10.0),
            ..finish(lease(&jobs[0]), JobState::Retryable)
        }])
        .await
        .unwrap();
    let due = db
        .store
        .next_run_in("default")
        .await
        .unwrap()
        .next_in
        .unwrap();
    assert!(due > 9.0 && due <= 10.0, "a retry counts too, got {due}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = db
        .store
        .next_run_in("default")
        .await
        .unwrap()
        .next_in
        .unwrap();
    assert!(
        later <= due - 0.25 && later > due - 1.0,
        "it counts down: {due} then {later}"
    );
    db.drop().await;
}

pub async fn an_insert_on_another_connection_wakes_a_listener(backend: Backend) {
    let db = TestDb::new(backend).await;
    let listener = Listener::start(&db.store, &db.private_scope).await;
    let producer = db.open_store();
    producer
        .insert_jobs(&db.private_scope, &[job("a", true)])
        .await
        .unwrap();
    assert!(
        woken(&listener.wake, Duration::from_secs(5)).await,
        "the commit wakes the listener"
    );
    listener.stop().await;
    db.drop().await;
}

pub async fn notify_wakes_a_listener_on_another_connection(backend: Backend) {
    let db = TestDb::new(backend).await;
    let listener = Listener::start(&db.store, &db.private_scope).await;
    let other = db.open_store();
    other.notify(&db.private_scope).await.unwrap();
    assert!(
        woken(&listener.wake, Duration::from_secs(5)).await,
        "notify reaches the other connection's listener"
    );
    listener.stop().await;
    db.drop().await;
}

pub async fn listen_returns_once_stopped(backend: Backend) {
    let db = TestDb::new(backend).await;
    let listener = Listener::start(&db.store, &db.private_scope).await;
    // Stopping is checked by `stop` (bounded); a stopped listener wakes nobody.
    let wake = listener.wake.clone();
    listener.stop().await;
    db.open_store()
        .insert_jobs(&db.private_scope, &[job("a", true)])
        .await
        .unwrap();
    assert!(!woken(&wake, Duration::from_millis(300)).await);
    db.drop().await;
}

pub async fn a_notify_for_another_scope_does_not_wake_a_listener(backend: Backend) {
    let db = TestDb::new(backend).await;
    let listener = Listener::start(&db.store, &db.private_scope).await;
    let other = db.open_store();
    other.notify("other").await.unwrap();
    other.insert_jobs("other", &[job("a", true)]).await.unwrap();
    assert!(
        !woken(&listener.wake, Duration::from_millis(300)).await,
        "another scope's work is not this listener's"
    );
    other.notify(&db.private_scope).await.unwrap();
    assert!(woken(&listener.wake, Duration::from_secs(5)).await);
    listener.stop().await;
    db.drop().await;
}

pub async fn listen_reconnects_after_losing_its_connection(backend: Backend) {
    let db = TestDb::new(backend).await;
    let listener = Listener::start(&db.store, &db.private_scope).await;
    const LISTEN: &str = "LISTEN ferroq_jobs; LISTEN ferroq_cancels";
    let first = eventually(Duration::from_secs(2), || async {
        let pids = db.idle_sessions(LISTEN).await;
        (pids.len() == 1).then(|| pids[0])
    })
    .await
    .expect("one session listens");
    assert_eq!(db.terminate_sessions(LISTEN).await, 1);
    assert!(
        woken(&listener.wake, Duration::from_secs(5)).await,
        "the loss is covered by a look"
    );
    let second = eventually(Duration::from_secs(5), || async {
        let pids = db.idle_sessions(LISTEN).await;
        (pids.len() == 1 && pids[0] != first).then(|| pids[0])
    })
    .await;
    assert!(second.is_some(), "the listener connects again");
    // The reconnection looks once more; let that pass before the real test.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = woken(&listener.wake, Duration::from_millis(50)).await;
    db.open_store()
        .insert_jobs(&db.private_scope, &[job("a", true)])
        .await
        .unwrap();
    assert!(
        woken(&listener.wake, Duration::from_secs(5)).await,
        "the new connection hears inserts"
    );
    listener.stop().await;
    db.drop().await;
}

pub async fn next_run_in_says_how_long_ago_the_latest_waiting_job_became_due(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert_eq!(
        db.store.next_run_in("default").await.unwrap().last_due_ago,
        None
    );
    let soon = NewJob {
        schedule: Schedule::In(0.2),
        ..job("a", true)
    };
    db.store.insert_jobs("default", &[soon]).await.unwrap();
    let before = db.store.next_run_in("default").await.unwrap();
    assert_eq!(before.last_due_ago, None, "nothing is due yet");
    assert!(before.next_in.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = db.store.next_run_in("default").await.unwrap();
    assert_eq!(after.next_in, None, "the job is due now, no longer next");
    let ago = after.last_due_ago.expect("the scheduled job became due");
    assert!(
        (0.2..2.0).contains(&ago),
        "it became due about 0.3 s ago, got {ago}"
    );
    db.drop().await;
}

pub async fn a_cancel_request_wakes_a_listener_on_another_connection(backend: Backend) {
    let db = TestDb::new(backend).await;
    let other = db.open_store();
    let inserted = other
        .insert_jobs(&db.private_scope, &[job("a", true)])
        .await
        .unwrap();
    let routing = QueueRouting::default();
    let claimed = other
        .claim(&ClaimRequest {
            scope: &db.private_scope,
            ..claim(1, &routing)
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let listener = Listener::start(&db.store, &db.private_scope).await;
    other
        .cancel_job(&db.private_scope, inserted[0].id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        woken(&listener.cancels, Duration::from_secs(5)).await,
        "the request reaches the other connection's listener"
    );
    listener.stop().await;
    db.drop().await;
}
