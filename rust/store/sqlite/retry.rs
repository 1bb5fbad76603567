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
            // This process's turn among its writers (see direct.rs), held to the commit.
            let _turn = $store.write_lock.lock().await;
            let mut pooled = $store.writer.acquire().await?;
            let outcome = async {
                let mut tx = pooled.begin_with("BEGIN IMMEDIATE").await?;
                let value = {
                    let $conn: &mut sqlx::sqlite::SqliteConnection = &mut *tx;
                    $body
                };
                tx.commit().await?;
                $store
                    .own_commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, sqlx::Error>(value)
            }
            .await;
            if matches!(&outcome, Err(err) if !$crate::store::sqlite::retry::is_busy(err)) {
                // On some errors (a full disk, an I/O error) SQLite rolls the transaction back
                // by itself; sqlx's own rollback then fails and leaves its count of open
                // transactions at one, so every later BEGIN on this connection would fail
                // ("non-zero transaction depth") and the process could never write again. A
                // new connection after a failed write costs little; a busy lock is retried on
                // this one.
                pooled.close_on_drop();
            }
            outcome
        })
    };
}

/// A sqlx error as the core reports it.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            sqlite_error(code, db.message())
        }
        sqlx::Error::PoolTimedOut => {
            Error::Database("timed out waiting for a SQLite connection".into())
        }
        other => Error::Database(format!("SQLite: {other}")),
    }
}

/// An error SQLite reported (its result code and message) as the core reports it, with a
/// hint where SQLite's own words mislead.
pub(crate) fn sqlite_error(code: i64, message: &str) -> Error {
    // SQLite's primary result code is the low byte of the extended one.
    let hint = match code & 0xff {
        // SQLITE_CANTOPEN: in WAL mode even a reader must create or write the -wal and
        // -shm files beside the database, so a read-only directory or filesystem shows
        // up as this, with no word of being read-only.
        14 => " (the file, or the -wal and -shm files SQLite keeps beside it, could not be opened: is the directory missing or read-only?)",
        // SQLITE_READONLY
        8 => " (the file or its filesystem is read-only)",
        _ => "",
    };
    Error::Database(format!("SQLite: {message}{hint}"))
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
