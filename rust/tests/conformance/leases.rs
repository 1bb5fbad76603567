//! extend_leases and rescue_expired: a lease is the fence of one attempt; a lease nobody
//! renews means the worker is gone.

use std::time::Duration;

use _core::job::JobState;

use crate::support::{claim, finish, job, lease, Backend, TestDb};

pub async fn a_stale_attempt_cannot_finish_a_rescued_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.store
        .insert_jobs("default", &[job("a", true)])
        .await
        .unwrap();
    let stale = db.store.claim(&claim(1, &[])).await.unwrap().pop().unwrap();
    let stale_lease = lease(&stale);
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
