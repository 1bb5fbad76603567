//! How the SQLite store meets other processes' locks: it waits and tries again, for up to
//! `WRITE_RETRY_LIMIT`, and never surfaces a busy database to the caller. Every write of this
//! process goes through one connection in `BEGIN IMMEDIATE` transactions, so a read never has
//! to upgrade to a write lock (the case `busy_timeout` does not cover).

use std::time::Duration;

use crate::error::Error;

/// How long a write keeps retrying while other processes hold the file's write lock.
pub(super) const WRITE_RETRY_LIMIT: Duration = Duration::from_secs(60);

/// Evaluate `$attempt` (an expression giving a sqlx future, re-evaluated for each try) until
/// it does not meet another process's lock, for up to `WRITE_RETRY_LIMIT`. Reads need it too:
/// in WAL mode a reader can see SQLITE_BUSY briefly while another process recovers or
/// checkpoints the file.
macro_rules! retry_busy {
    ($attempt:expr) => {{
        use $crate::store::sqlite::retry::{db_error, is_busy, WRITE_RETRY_LIMIT};
        let started = tokio::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(2);
        loop {
            match $attempt.await {
                Ok(value) => break Ok::<_, $crate::error::Error>(value),
                Err(err) if is_busy(&err) && started.elapsed() < WRITE_RETRY_LIMIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(err) => break Err(db_error(err)),
            }
        }
    }};
}

/// Run `$body` (which may `.await` and `?` on sqlx errors, using `$conn`) in a
/// `BEGIN IMMEDIATE` transaction on the writer, retried as a whole by `retry_busy!`. A macro
/// rather than a closure: async closures borrowing the transaction are not `Send` for every
/// lifetime, which `async_trait` requires.
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:block) => {
        retry_busy!(async {
            let mut pooled = $store.writer.acquire().await?;
            let mut tx = pooled.begin_with("BEGIN IMMEDIATE").await?;
            let value = {
                let $conn: &mut sqlx::sqlite::SqliteConnection = &mut *tx;
                $body
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(value)
        })
    };
}

/// A sqlx error as the core reports it.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => Error::Database(format!("SQLite: {}", db.message())),
        sqlx::Error::PoolTimedOut => {
            Error::Database("timed out waiting for a SQLite connection".into())
        }
        other => Error::Database(format!("SQLite: {other}")),
    }
}

/// SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes (e.g. BUSY_SNAPSHOT 517).
pub(crate) fn is_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            matches!(code & 0xff, 5 | 6)
        }
        _ => false,
    }
}
