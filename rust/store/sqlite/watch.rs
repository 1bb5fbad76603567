//! SQLite has no NOTIFY: other processes' commits are noticed through `PRAGMA data_version`.
//! On Linux the WAL file is watched with inotify: every commit appends frames to `<db>-wal`,
//! so a write there is the moment to look, and a job enqueued by another process is seen
//! within a few milliseconds. The event only says "look": data_version decides whether
//! another connection committed (looking again for a few milliseconds, since a commit is
//! published in the -shm index just after its WAL write). `every` stays as a safety poll (and
//! is the only way to notice elsewhere, or when inotify cannot be had).
//!
//! data_version counts the commits of *other* connections, so it is read on the writer that
//! claims and writes outcomes: the worker's own writes, which fill the WAL while it works,
//! are then no news, and wake nobody (each wake-up is a claim).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::retry::is_busy;
use super::DATA_VERSION;

/// `PRAGMA data_version` on the writer connection.
async fn data_version(writer: &SqlitePool) -> std::result::Result<i64, sqlx::Error> {
    let mut conn = writer.acquire().await?;
    sqlx::query_scalar(DATA_VERSION.as_str())
        .fetch_one(&mut *conn)
        .await
}

/// The shortest time between two looks prompted by writes to the WAL.
const MIN_GAP: Duration = Duration::from_millis(1);

/// Wake `wake` after every commit another connection makes to the file: when its WAL is
/// written (where inotify works), and at the latest every `every`, until `stop`.
pub(super) async fn watch_commits(
    writer: &SqlitePool,
    path: &Path,
    own_commits: &AtomicU64,
    every: Duration,
    wake: Arc<Notify>,
    cancels: Arc<Notify>,
    stop: CancellationToken,
) {
    // Commits made before the first baseline are not changes to it: look once now, so a job
    // enqueued while the watcher was starting is not left for the safety poll.
    let mut last: Option<i64> = data_version(writer).await.ok();
    wake.notify_one();
    let mut wal: Option<WalWatch> = None;
    // After a write to the WAL that data_version did not show yet: when to look again.
    let mut recheck: Option<Duration> = None;
    let mut last_look = tokio::time::Instant::now();
    // This process's commits when the last write to the WAL was seen.
    let mut own_at_write = own_commits.load(Ordering::Relaxed);
    loop {
        // Watched once the WAL exists (SQLite keeps it while any connection is open), and
        // again should it be replaced.
        if wal.as_ref().map_or(true, |w| w.lost()) {
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
        if written {
            own_at_write = own_commits.load(Ordering::Relaxed);
            // Under load, look at most once per MIN_GAP: a look waits for the writer.
            let since = last_look.elapsed();
            if since < MIN_GAP {
                tokio::time::sleep(MIN_GAP - since).await;
            }
        }
        last_look = tokio::time::Instant::now();
        match data_version(writer).await {
            Ok(version) => {
                if last != Some(version) {
                    // Also when the writer connection was replaced (a new baseline): one
                    // look too many, never one too few. Any commit may also have requested
                    // the cancel of a running job: the worker asks only if it runs any.
                    wake.notify_one();
                    cancels.notify_one();
                    recheck = None;
                } else if written {
                    // A commit writes its frames to the WAL first, then (after the sync, with
                    // synchronous=full) publishes them in the -shm index, which data_version
                    // reads and which inotify cannot see (it is mapped memory). Look again
                    // soon, backing off: 1, 2, 4, 8, 16 ms after the last write.
                    recheck = Some(Duration::from_millis(1));
                } else if own_commits.load(Ordering::Relaxed) != own_at_write {
                    // This process committed since that write: it was most likely its own
                    // (the worker's claims and outcomes, which data_version does not count),
                    // and looking on would cost four more looks each time. A foreign commit
                    // in that instant is seen at the next write or poll.
                    recheck = None;
                } else {
                    recheck = recheck
                        .map(|pause| pause * 2)
                        .filter(|pause| *pause <= Duration::from_millis(16));
                }
                last = Some(version);
            }
            // Another process holding a lock for a moment: look again next tick.
            Err(err) if is_busy(&err) => {}
            // The store is closing: the worker stops this task next.
            Err(sqlx::Error::PoolClosed) => {}
            Err(err) => {
                log::warn!("ferroq: watching the SQLite file failed ({err}); trying again");
                last = None;
            }
        }
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
