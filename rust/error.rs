//! The one error type of the core. `rust/py/errors.rs` maps each variant to a Python exception.

/// Everything the core can fail with. Input errors are raised before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An App option or database URL is unusable.
    #[error("{0}")]
    Configuration(String),
    /// The database URL names a scheme ferroq has no store for.
    #[error("unsupported database URL scheme {0:?}: use postgresql://, postgres:// or sqlite:///path/to/file.db")]
    UnsupportedDatabase(String),
    /// A queue, action or scope name is empty, too long or not text.
    #[error("{0}")]
    InvalidName(String),
    /// Params are not a JSON document.
    #[error("{0}")]
    InvalidParams(String),
    /// Params (their JSON text, or the bytes themselves) are longer than the App allows.
    #[error(
        "params are {size} bytes{form}, over the limit of {limit} bytes (App(max_params_size=...))"
    )]
    ParamsTooLarge {
        size: usize,
        limit: usize,
        /// " of JSON" for JSON params, empty for bytes.
        form: &'static str,
    },
    /// A schedule that cannot be honoured (negative delay, both a time and a delay, ...).
    #[error("{0}")]
    InvalidSchedule(String),
    /// A job option out of range (timeout, max_attempts, max_backoff, priority).
    #[error("{0}")]
    InvalidOption(String),
    /// No job with this id in the App's scope.
    #[error("no job {id} in scope {scope:?}")]
    JobNotFound { id: i64, scope: String },
    /// The job exists but its state does not allow the operation.
    #[error("{0}")]
    JobState(String),
    /// The database could not be reached or a statement failed.
    #[error("database error: {0}")]
    Database(String),
}

/// What a statement against a database without ferroq's tables says: the fix.
pub const MISSING_TABLES: &str =
    "the ferroq tables do not exist in this database: run `ferroq migrate` (or App.migrate())";

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        // The Display of a server error hides its message behind "db error"; show the detail.
        match err.as_db_error() {
            // Only ferroq's own tables: a missing table of the caller's is their business.
            Some(db)
                if *db.code() == tokio_postgres::error::SqlState::UNDEFINED_TABLE
                    && db.message().contains("ferroq_") =>
            {
                Error::Database(format!(
                    "{MISSING_TABLES} ({}: {})",
                    db.code().code(),
                    db.message()
                ))
            }
            Some(db) => Error::Database(format!("{}: {}", db.code().code(), db.message())),
            None => Error::Database(err.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            deadpool_postgres::PoolError::Timeout(_) => {
                Error::Database("timed out waiting for a database connection".into())
            }
            other => Error::Database(other.to_string()),
        }
    }
}

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
