//! The enqueue path of a blocking caller (`create_job`, `create_jobs`), without a thread hop.
//!
//! Through sqlx, one enqueue crossed threads about twenty times: the caller into the tokio
//! runtime, then BEGIN, the insert and COMMIT each through the connection's worker thread and
//! back (two wake-ups a statement), and cost ~360 µs of CPU where the SQL itself takes a
//! tenth of that. Here the calling thread (its GIL released) runs the same `insert_jobs.sql`
//! on a connection of its own, with BEGIN IMMEDIATE, the insert and COMMIT prepared once.
//! Writes of this process still take turns: the store's `write_lock` is held across each
//! transaction by this path and by every sqlx write, so this connection and the sqlx writer
//! never wait for each other inside SQLite's busy handler (which sleeps in milliseconds).
//! Other processes' locks are retried as `retry.rs` does, for up to `WRITE_RETRY_LIMIT`.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use libsqlite3_sys as ffi;

use super::retry::{sqlite_error, WRITE_RETRY_LIMIT};
use super::Synchronous;
use crate::error::{Error, Result};
use crate::job::{
    any_unique, distinct_unique, unique_keys, unique_results, Job, JobState, NewJob, Params,
    UniqueKey,
};
use crate::store::encode_insert_batch;

/// An error SQLite reported: its extended result code and message.
struct Failure {
    code: c_int,
    message: String,
}

impl Failure {
    fn is_busy(&self) -> bool {
        matches!(self.code & 0xff, ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED)
    }

    fn into_error(self) -> Error {
        sqlite_error(i64::from(self.code), &self.message)
    }
}

type Step<T> = std::result::Result<T, Failure>;

/// One prepared statement, kept for the connection's life.
struct Statement(NonNull<ffi::sqlite3_stmt>);

impl Statement {
    fn as_ptr(&self) -> *mut ffi::sqlite3_stmt {
        self.0.as_ptr()
    }
}

/// A connection of its own and its prepared statements. Used by one thread at a time (the
/// store keeps it behind a mutex), so SQLite's own mutexes are off.
pub(super) struct DirectWriter {
    db: NonNull<ffi::sqlite3>,
    begin: Statement,
    insert: Statement,
    /// The insert of a batch with unique jobs (insert_unique_jobs.sql).
    insert_unique: Statement,
    commit: Statement,
    rollback: Statement,
}

// SAFETY: the handle and its statements are only used by whoever holds the store's mutex
// around this value, one thread at a time (SQLITE_OPEN_NOMUTEX asks exactly that).
unsafe impl Send for DirectWriter {}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        // SAFETY: the statements belong to `db`; each is finalized once, before the close.
        unsafe {
            for stmt in [
                &self.begin,
                &self.insert,
                &self.insert_unique,
                &self.commit,
                &self.rollback,
            ] {
                ffi::sqlite3_finalize(stmt.as_ptr());
            }
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
}

fn failure(db: *mut ffi::sqlite3, code: c_int) -> Failure {
    // SAFETY: `db` is an open handle; errmsg is valid until the next call on it, copied now.
    let message = unsafe {
        let text = ffi::sqlite3_errmsg(db);
        if text.is_null() {
            ffi::code_to_str(code).to_owned()
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    };
    let extended = unsafe { ffi::sqlite3_extended_errcode(db) };
    Failure {
        code: if extended & 0xff == code & 0xff {
            extended
        } else {
            code
        },
        message,
    }
}

impl DirectWriter {
    /// Open the (existing) database file with the store's settings and prepare the statements.
    pub(super) fn open(
        path: &Path,
        synchronous: Synchronous,
        insert_sql: &str,
        insert_unique_sql: &str,
    ) -> Result<Self> {
        let name = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Configuration("a SQLite file path cannot hold a NUL".into()))?;
        let mut db: *mut ffi::sqlite3 = ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX;
        // SAFETY: `name` is a NUL-terminated path; `db` receives a handle, closed on failure.
        let code = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, ptr::null()) };
        let Some(handle) = NonNull::new(db) else {
            return Err(Error::Database(
                "SQLite: out of memory opening the file".into(),
            ));
        };
        if code != ffi::SQLITE_OK {
            let err = failure(db, code).into_error();
            // SAFETY: a handle returned with an error must still be closed.
            unsafe { ffi::sqlite3_close(db) };
            return Err(err);
        }
        // From here a failure drops what exists so far: the handle closes once.
        struct Handle(NonNull<ffi::sqlite3>);
        impl Drop for Handle {
            fn drop(&mut self) {
                // SAFETY: only reached while no statement of it exists.
                unsafe { ffi::sqlite3_close(self.0.as_ptr()) };
            }
        }
        let guard = Handle(handle);
        // The sqlx connections' settings (SqliteStore::new): WAL, durability, lock waits.
        let setup = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;",
            synchronous.as_str()
        );
        // SAFETY: `db` is open. Set first: the setup itself may meet another process's lock.
        unsafe { ffi::sqlite3_busy_timeout(db, 5000) };
        exec(db, &setup).map_err(Failure::into_error)?;
        let mut prepared = Vec::with_capacity(5);
        for sql in [
            "BEGIN IMMEDIATE",
            insert_sql,
            insert_unique_sql,
            "COMMIT",
            "ROLLBACK",
        ] {
            match prepare(db, sql) {
                Ok(stmt) => prepared.push(stmt),
                Err(err) => {
                    for stmt in prepared {
                        // SAFETY: prepared on `db`, finalized once.
                        unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
                    }
                    return Err(err.into_error());
                }
            }
        }
        std::mem::forget(guard);
        let mut prepared = prepared.into_iter();
        let mut next = || prepared.next().expect("five statements");
        Ok(DirectWriter {
            db: handle,
            begin: next(),
            insert: next(),
            insert_unique: next(),
            commit: next(),
            rollback: next(),
        })
    }

    /// `PRAGMA synchronous` as this connection reads it back.
    pub(super) fn synchronous(&mut self) -> Result<&'static str> {
        let stmt = prepare(self.db.as_ptr(), "PRAGMA synchronous").map_err(Failure::into_error)?;
        // SAFETY: a fresh statement of this connection, finalized before returning.
        let level = unsafe {
            let code = ffi::sqlite3_step(stmt.as_ptr());
            let level =
                (code == ffi::SQLITE_ROW).then(|| ffi::sqlite3_column_int64(stmt.as_ptr(), 0));
            ffi::sqlite3_finalize(stmt.as_ptr());
            level
        };
        Ok(Synchronous::from_pragma(level.unwrap_or(-1)))
    }

    /// Insert `jobs` into `scope` in one transaction; returns them in input order. Waits while
    /// another process holds the write lock; `lock` is taken around each try (this process's
    /// turn among its writers) and released while waiting for another process.
    pub(super) fn insert(
        &mut self,
        scope: &str,
        jobs: &[NewJob],
        lock: &tokio::sync::Mutex<()>,
    ) -> Result<Vec<Job>> {
        let unique = any_unique(jobs);
        let batch = if unique {
            encode_insert_batch(&distinct_unique(jobs))
        } else {
            encode_insert_batch(jobs)
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        let mut rows = loop {
            let attempt = {
                let _turn = lock.blocking_lock();
                self.transaction(unique, scope, &batch.json, &batch.bytes)
            };
            match attempt {
                Ok(rows) => break rows,
                Err(err) if err.is_busy() && started.elapsed() < WRITE_RETRY_LIMIT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(err) => return Err(err.into_error()),
            }
        };
        if unique {
            return unique_results(&unique_keys(jobs), rows);
        }
        if rows.len() != jobs.len() {
            return Err(Error::Database(format!(
                "SQLite inserted {} of {} jobs",
                rows.len(),
                jobs.len()
            )));
        }
        // RETURNING gives no order; ids follow the input order.
        rows.sort_by_key(|job| job.id);
        for (job, new) in rows.iter_mut().zip(jobs) {
            job.params = new.params.clone();
        }
        Ok(rows)
    }

    /// BEGIN IMMEDIATE, the insert, COMMIT; rolled back on any failure.
    fn transaction(
        &mut self,
        unique: bool,
        scope: &str,
        json: &str,
        bytes: &[u8],
    ) -> Step<Vec<Job>> {
        let db = self.db.as_ptr();
        let outcome = run(db, &self.begin).and_then(|()| {
            let rows = self.insert_rows(unique, scope, json, bytes)?;
            run(db, &self.commit)?;
            Ok(rows)
        });
        // SAFETY: `db` is open.
        if outcome.is_err() && unsafe { ffi::sqlite3_get_autocommit(db) } == 0 {
            // SQLite may have rolled back by itself (a full disk, an I/O error); otherwise
            // this does, so the connection is ready for the next try.
            let _ = run(db, &self.rollback);
        }
        outcome
    }

    fn insert_rows(
        &mut self,
        unique: bool,
        scope: &str,
        json: &str,
        bytes: &[u8],
    ) -> Step<Vec<Job>> {
        let db = self.db.as_ptr();
        let stmt = if unique {
            self.insert_unique.as_ptr()
        } else {
            self.insert.as_ptr()
        };
        // SAFETY: the bound buffers outlive the steps (SQLITE_STATIC): the bindings are
        // cleared before this returns. A zero-length blob needs a non-null pointer, which a
        // slice always has.
        unsafe {
            let bound = [
                ffi::sqlite3_bind_text(
                    stmt,
                    1,
                    scope.as_ptr() as *const c_char,
                    scope.len() as c_int,
                    ffi::SQLITE_STATIC(),
                ),
                ffi::sqlite3_bind_text64(
                    stmt,
                    2,
                    json.as_ptr() as *const c_char,
                    json.len() as u64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                ),
                ffi::sqlite3_bind_blob64(
                    stmt,
                    3,
                    bytes.as_ptr() as *const _,
                    bytes.len() as u64,
                    ffi::SQLITE_STATIC(),
                ),
            ];
            if let Some(code) = bound.into_iter().find(|code| *code != ffi::SQLITE_OK) {
                ffi::sqlite3_clear_bindings(stmt);
                return Err(failure(db, code));
            }
            let mut rows = Vec::new();
            let outcome = loop {
                match ffi::sqlite3_step(stmt) {
                    ffi::SQLITE_ROW => match job_from_stmt(stmt) {
                        Ok(job) => rows.push(job),
                        Err(err) => break Err(err),
                    },
                    ffi::SQLITE_DONE => break Ok(()),
                    code => break Err(failure(db, code)),
                }
            };
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
            outcome.map(|()| rows)
        }
    }
}

fn prepare(db: *mut ffi::sqlite3, sql: &str) -> Step<Statement> {
    let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
    // SAFETY: `sql` is passed with its length; `stmt` receives the statement or null.
    let code = unsafe {
        ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr() as *const c_char,
            sql.len() as c_int,
            ffi::SQLITE_PREPARE_PERSISTENT,
            &mut stmt,
            ptr::null_mut(),
        )
    };
    if code != ffi::SQLITE_OK {
        return Err(failure(db, code));
    }
    NonNull::new(stmt).map(Statement).ok_or_else(|| Failure {
        code: ffi::SQLITE_MISUSE,
        message: format!("empty statement: {sql}"),
    })
}

/// Run a statement that returns no rows, and reset it.
fn run(db: *mut ffi::sqlite3, stmt: &Statement) -> Step<()> {
    // SAFETY: a prepared statement of `db`, reset after each run.
    unsafe {
        let code = ffi::sqlite3_step(stmt.as_ptr());
        let outcome = match code {
            ffi::SQLITE_DONE | ffi::SQLITE_ROW => Ok(()),
            code => Err(failure(db, code)),
        };
        ffi::sqlite3_reset(stmt.as_ptr());
        outcome
    }
}

/// Run several statements without results (the connection's setup).
fn exec(db: *mut ffi::sqlite3, sql: &str) -> Step<()> {
    let text = CString::new(sql).expect("setup SQL has no NUL");
    // SAFETY: `db` is open; no callback, no error buffer (errmsg is read instead).
    let code =
        unsafe { ffi::sqlite3_exec(db, text.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
    if code == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(failure(db, code))
    }
}

/// Column readers of the current row of `stmt` (a row of `INSERTED_COLUMNS`).
unsafe fn text(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> Option<String> {
    let ptr = ffi::sqlite3_column_text(stmt, i);
    if ptr.is_null() {
        return None;
    }
    let len = ffi::sqlite3_column_bytes(stmt, i) as usize;
    let bytes = std::slice::from_raw_parts(ptr, len);
    Some(String::from_utf8_lossy(bytes).into_owned())
}

unsafe fn integer(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> Option<i64> {
    (ffi::sqlite3_column_type(stmt, i) != ffi::SQLITE_NULL)
        .then(|| ffi::sqlite3_column_int64(stmt, i))
}

unsafe fn time(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> Option<DateTime<Utc>> {
    integer(stmt, i).and_then(DateTime::from_timestamp_micros)
}

/// A row of a unique insert has one more column than `INSERTED_COLUMNS`, the duplicate flag
/// (`UNIQUE_INSERTED_COLUMNS`).
const UNIQUE_COLUMN_COUNT: c_int = 25;

unsafe fn blob(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> Option<Vec<u8>> {
    if ffi::sqlite3_column_type(stmt, i) == ffi::SQLITE_NULL {
        return None;
    }
    let ptr = ffi::sqlite3_column_blob(stmt, i) as *const u8;
    let len = ffi::sqlite3_column_bytes(stmt, i) as usize;
    if ptr.is_null() || len == 0 {
        return Some(Vec::new());
    }
    Some(std::slice::from_raw_parts(ptr, len).to_vec())
}

/// A freshly inserted job: its params are filled in by the caller, which has them. A row of a
/// unique insert is whole (a duplicate's params are the existing job's), with its key and
/// whether it was there before.
unsafe fn job_from_stmt(stmt: *mut ffi::sqlite3_stmt) -> Step<Job> {
    let state = text(stmt, 7).unwrap_or_default();
    let state = JobState::parse(&state).map_err(|err| Failure {
        code: ffi::SQLITE_MISMATCH,
        message: err.to_string(),
    })?;
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let whole = ffi::sqlite3_column_count(stmt) >= UNIQUE_COLUMN_COUNT;
    let unique = match text(stmt, 23).filter(|_| whole) {
        Some(stored) => Some(UniqueKey::from_stored(&stored).map_err(|err| Failure {
            code: ffi::SQLITE_MISMATCH,
            message: err.to_string(),
        })?),
        None => None,
    };
    let params = if whole {
        // Params before params_bytes: each column is read once, in any order.
        let json = text(stmt, 4).unwrap_or_default();
        Params::from_columns(json, blob(stmt, 21))
    } else {
        Params::from_columns(String::new(), None)
    };
    Ok(Job {
        id: integer(stmt, 0).unwrap_or_default(),
        scope: text(stmt, 1).unwrap_or_default(),
        queue: text(stmt, 2).unwrap_or_default(),
        action: text(stmt, 3).unwrap_or_default(),
        params,
        priority: integer(stmt, 5).unwrap_or_default() as i32,
        sequence: integer(stmt, 6).unwrap_or_default(),
        state,
        attempts: integer(stmt, 8).unwrap_or_default() as i32,
        max_attempts: integer(stmt, 9).unwrap_or_default() as i32,
        timeout: ffi::sqlite3_column_double(stmt, 10),
        max_backoff: ffi::sqlite3_column_double(stmt, 11),
        scheduled_at: time(stmt, 12).unwrap_or(epoch),
        attempted_at: time(stmt, 13),
        attempted_by: text(stmt, 14),
        next_attempt_at: time(stmt, 15),
        done_at: time(stmt, 16),
        inserted_at: time(stmt, 17).unwrap_or(epoch),
        error: text(stmt, 18),
        result: text(stmt, 19),
        lease_token: integer(stmt, 20),
        cancel_requested_at: time(stmt, 22).filter(|_| whole),
        blocked_by: None,
        unique,
        duplicate: whole && integer(stmt, 24).unwrap_or_default() != 0,
    })
}
