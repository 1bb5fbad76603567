//! SQLite has no NOTIFY: other processes' commits are noticed through `PRAGMA data_version`
//! (the counter is per connection, so it is read on a connection of its own). On Linux the
//! WAL file is watched with inotify: every commit appends frames to `<db>-wal`, so a write
//! there is the moment to look, and a job enqueued by another process is seen within a
//! millisecond or so. The event only says "look": data_version decides whether another
//! connection committed (looking again for a few milliseconds, since a commit is published
//! in the -shm index just after its WAL write). `every` stays as a safety poll (and is the
//! only way to notice elsewhere, or when inotify cannot be had).

use std::path::Path;
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

/// Wake `wake` after every commit another connection makes to the file: when its WAL is
/// written (where inotify works), and at the latest every `every`, until `stop`. A connection
/// that fails is reopened.
pub(super) async fn watch_commits(
    options: &SqliteConnectOptions,
    path: &Path,
    every: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut watcher: Option<SqliteConnection> = None;
    let mut wal = None;
    let mut last: Option<i64> = None;
    // After a write to the WAL that data_version did not show yet: when to look again.
    let mut recheck: Option<Duration> = None;
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
        // Watched once the connection has the WAL open (it exists while any connection
        // does), and again should it be replaced.
        if watcher.is_some() && wal.as_ref().map_or(true, |w: &WalWatch| w.lost()) {
            wal = WalWatch::new(path);
        }
        let mut written = false;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(recheck.unwrap_or(every).min(every)) => {}
            _ = async { wal.as_ref().expect("guarded").written().await }, if wal.is_some() => {
                written = true;
            }
        }
        let Some(conn) = watcher.as_mut() else {
            continue;
        };
        match data_version(conn).await {
            Ok(version) => {
                if last != Some(version) {
                    wake.notify_one();
                    recheck = None;
                } else if written {
                    // A commit writes its frames to the WAL first, then (after the sync, with
                    // synchronous=full) publishes them in the -shm index, which data_version
                    // reads and which inotify cannot see (it is mapped memory). Look again
                    // soon, backing off: 1, 2, 4, 8, 16 ms after the last write.
                    recheck = Some(Duration::from_millis(1));
                } else {
                    recheck = recheck
                        .map(|pause| pause * 2)
                        .filter(|pause| *pause <= Duration::from_millis(16));
                }
                last = Some(version);
            }
            // Another process holding a lock for a moment: look again next tick.
            Err(err) if is_busy(&err) => {}
            Err(err) => {
                log::warn!("ferroq: watching the SQLite file failed ({err}); reopening");
                watcher = None;
                wal = None;
            }
        }
    }
    if let Some(conn) = watcher {
        let _ = conn.close().await;
    }
}

#[cfg(target_os = "linux")]
use inotify::WalWatch;

#[cfg(target_os = "linux")]
mod inotify {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::unix::AsyncFd;

    /// An inotify watch on `<db>-wal`: ready when the file was written since the last look.
    pub(super) struct WalWatch {
        fd: AsyncFd<OwnedFd>,
        /// The watched file went away (deleted or renamed): watch it anew.
        lost: AtomicBool,
    }

    impl WalWatch {
        /// None where inotify or the WAL file is not available: the safety poll then does.
        pub(super) fn new(database: &Path) -> Option<WalWatch> {
            let mut wal = database.as_os_str().to_owned();
            wal.push("-wal");
            let wal = CString::new(wal.as_encoded_bytes()).ok()?;
            // SAFETY: plain syscalls; the descriptor is owned from here on.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return None;
            }
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mask = libc::IN_MODIFY | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
            // SAFETY: `wal` is NUL-terminated, `fd` an inotify descriptor.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), wal.as_ptr(), mask) } < 0 {
                return None;
            }
            // SAFETY: `fd` is owned by the AsyncFd and closed only when it is dropped.
            let fd = unsafe { AsyncFd::register(fd) }.ok()?;
            Some(WalWatch {
                fd,
                lost: AtomicBool::new(false),
            })
        }

        pub(super) fn lost(&self) -> bool {
            self.lost.load(Ordering::Relaxed)
        }

        /// Wait until the WAL was written (or went away), then consume every pending event:
        /// a burst of writes is one look.
        pub(super) async fn written(&self) {
            loop {
                let Ok(mut ready) = self.fd.readable().await else {
                    // The reactor is gone (runtime shutting down): leave it to the poll.
                    return std::future::pending().await;
                };
                let mut seen = false;
                let mut buffer = [0u8; 4096];
                loop {
                    // SAFETY: reads into a buffer of its stated length.
                    let n = unsafe {
                        libc::read(
                            self.fd.get_ref().as_raw_fd(),
                            buffer.as_mut_ptr().cast(),
                            buffer.len(),
                        )
                    };
                    if n <= 0 {
                        break;
                    }
                    seen = true;
                    let mut at = 0usize;
                    while at + std::mem::size_of::<libc::inotify_event>() <= n as usize {
                        // SAFETY: the kernel writes whole events; read unaligned.
                        let event: libc::inotify_event =
                            unsafe { std::ptr::read_unaligned(buffer.as_ptr().add(at).cast()) };
                        let gone = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED;
                        if event.mask & gone != 0 {
                            self.lost.store(true, Ordering::Relaxed);
                        }
                        at += std::mem::size_of::<libc::inotify_event>() + event.len as usize;
                    }
                }
                ready.clear_ready();
                if seen {
                    return;
                }
            }
        }
    }
}

/// Elsewhere the safety poll does it all.
#[cfg(not(target_os = "linux"))]
struct WalWatch;

#[cfg(not(target_os = "linux"))]
impl WalWatch {
    fn new(_database: &Path) -> Option<WalWatch> {
        None
    }
    fn lost(&self) -> bool {
        false
    }
    async fn written(&self) {
        std::future::pending().await
    }
}
