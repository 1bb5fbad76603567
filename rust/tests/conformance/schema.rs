//! migrate, creates_schema_on_first_use and close: the store's life around its jobs.

use crate::support::{Backend, TestDb};

pub async fn migrate_is_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert_eq!(db.store.migrate().await.unwrap(), Vec::<i32>::new());
    db.drop().await;
}
