//! SQLite has no NOTIFY: other processes' commits are noticed through `PRAGMA data_version`,
//! polled on a connection of its own (the counter is per connection).

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::retry::is_busy;
use super::DATA_VERSION;

async fn data_version(conn: &mut SqliteConnection) -> std::result::Result<i64, sqlx::Error> {
    sqlx::query_scalar(DATA_VERSION.as_str())
        .fetch_one(conn)
        .await
}

/// Wake `wake` after every commit another connection makes to the file, looking every
/// `every`, until `stop`. A connection that fails is reopened.
pub(super) async fn watch_commits(
    options: &SqliteConnectOptions,
    every: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut watcher: Option<SqliteConnection> = None;
    let mut last: Option<i64> = None;
    loop {
        if watcher.is_none() {
            if let Ok(mut conn) = SqliteConnection::connect_with(options).await {
                if let Ok(version) = data_version(&mut conn).await {
                    last = Some(version);
                    watcher = Some(conn);
                    // Commits made before this baseline are not changes to it: look once
                    // now, so a job enqueued while the watcher was starting is not left
                    // for the safety poll.
                    wake.notify_one();
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(conn) = watcher.as_mut() else {
            continue;
        };
        match data_version(conn).await {
            Ok(version) => {
                if last != Some(version) {
                    wake.notify_one();
                }
                last = Some(version);
            }
            // Another process holding a lock for a moment: look again next tick.
            Err(err) if is_busy(&err) => {}
            Err(err) => {
                log::warn!("ferroq: watching the SQLite file failed ({err}); reopening");
                watcher = None;
            }
        }
    }
    if let Some(conn) = watcher {
        let _ = conn.close().await;
    }
}
