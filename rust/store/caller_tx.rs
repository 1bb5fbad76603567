//! Statements that run on the caller's own connection, so that what they write commits or
//! rolls back with the caller's transaction (transactional enqueue and completion).
//!
//! Each store builds its statement next to its own encoder ([`super::Store::caller_insert`]);
//! this module holds what every store shares: the parameters (text, integers and bytes, which
//! every supported Python driver binds), the rendering into a driver's placeholder style, and
//! the decoding of the rows the statement returns. Job rows come back as one JSON object per
//! row (see `JOB_JSON` beside each store), the same keys and encodings on every backend.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::job::{
    distinct_unique, unique_keys, unique_results, Job, JobState, NewJob, Params, UniqueKey,
};
use crate::store::{encode_insert_batch, Backend, Lease};

/// A value bound to a caller's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlParam {
    Text(String),
    Int(i64),
    /// A BLOB on SQLite, a bytea on PostgreSQL (the statement casts it).
    Bytes(Vec<u8>),
}

/// What the rows of a caller's statement mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerRows {
    /// One JSON job object per row, in its first column.
    Jobs,
    /// One row per completed attempt (0 or 1).
    Completed,
}

/// How a Python driver marks parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamStyle {
    /// The backend's own numbered placeholders: `$1` (asyncpg) or `?1` (sqlite3, aiosqlite).
    Numbered,
    /// `%s` in order of appearance, `%` written `%%` (psycopg, Django's cursors).
    Format,
}

impl ParamStyle {
    /// The style a driver names (`"numbered"` or `"format"`).
    pub fn parse(name: &str) -> Result<ParamStyle> {
        match name {
            "numbered" => Ok(ParamStyle::Numbered),
            "format" => Ok(ParamStyle::Format),
            other => Err(Error::Configuration(format!(
                "unknown parameter style {other:?}: use numbered or format"
            ))),
        }
    }
}

/// A statement for the caller's connection, with its parameters.
#[derive(Debug, Clone)]
pub struct CallerStatement {
    /// With the backend's numbered placeholders; each may appear more than once.
    pub sql: String,
    pub params: Vec<SqlParam>,
    pub rows: CallerRows,
    /// The backend the statement is written for: a connection to another cannot run it.
    pub backend: Backend,
    /// A unique insert: the unique key of each job of the batch, to put the rows (one per
    /// distinct key) back in its order (see `job::unique_results`). None for other statements.
    pub unique_keys: Option<Vec<Option<UniqueKey>>>,
}

impl CallerStatement {
    /// The insert of `jobs` into `scope` with a store's `insert_jobs.sql` text, which takes
    /// the scope and the batch encoded by [`encode_insert_batch`] (its JSON, then its bytes)
    /// and returns JSON rows.
    pub(crate) fn insert(backend: Backend, sql: &str, scope: &str, jobs: &[NewJob]) -> Self {
        let batch = encode_insert_batch(jobs);
        CallerStatement {
            sql: sql.to_owned(),
            params: vec![
                SqlParam::Text(scope.to_owned()),
                SqlParam::Text(batch.json),
                SqlParam::Bytes(batch.bytes),
            ],
            rows: CallerRows::Jobs,
            backend,
            unique_keys: None,
        }
    }

    /// The insert of a batch with unique jobs with a store's `insert_unique_jobs.sql` text,
    /// which takes what [`CallerStatement::insert`]'s does; each distinct key is sent once.
    pub(crate) fn insert_unique(backend: Backend, sql: &str, scope: &str, jobs: &[NewJob]) -> Self {
        CallerStatement {
            unique_keys: Some(unique_keys(jobs)),
            ..CallerStatement::insert(backend, sql, scope, &distinct_unique(jobs))
        }
    }

    /// The fenced completion of `lease` with a store's `caller_complete.sql` text, which takes
    /// the job id and the lease token and returns a row when it applied.
    pub(crate) fn complete(backend: Backend, sql: &str, lease: Lease) -> Self {
        CallerStatement {
            sql: sql.to_owned(),
            params: vec![SqlParam::Int(lease.id), SqlParam::Int(lease.token)],
            rows: CallerRows::Completed,
            backend,
            unique_keys: None,
        }
    }

    /// The statement and its parameters in `style`.
    pub fn render(&self, style: ParamStyle) -> Result<(String, Vec<SqlParam>)> {
        match style {
            ParamStyle::Numbered => Ok((self.sql.clone(), self.params.clone())),
            ParamStyle::Format => self.render_format(),
        }
    }

    /// `%s` placeholders bind by position, so a parameter used twice is passed twice.
    /// Placeholder-like text in string literals and `--` comments stays as it is.
    fn render_format(&self) -> Result<(String, Vec<SqlParam>)> {
        let mut sql = String::with_capacity(self.sql.len());
        let mut params = Vec::with_capacity(self.params.len());
        let mut chars = self.sql.chars().peekable();
        let (mut in_literal, mut in_comment) = (false, false);
        while let Some(c) = chars.next() {
            match c {
                '%' => sql.push_str("%%"),
                '\n' => {
                    in_comment = false;
                    sql.push(c);
                }
                '-' if !in_literal && chars.peek() == Some(&'-') => {
                    in_comment = true;
                    sql.push(c);
                }
                '\'' if !in_comment => {
                    in_literal = !in_literal;
                    sql.push(c);
                }
                '$' | '?'
                    if !in_literal
                        && !in_comment
                        && chars.peek().is_some_and(char::is_ascii_digit) =>
                {
                    let mut number = 0usize;
                    while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                        number = number * 10 + digit as usize;
                        chars.next();
                    }
                    sql.push_str("%s");
                    let param = number.checked_sub(1).and_then(|i| self.params.get(i));
                    params.push(param.cloned().ok_or_else(|| {
                        Error::Configuration(format!(
                            "statement refers to parameter {number} of {}",
                            self.params.len()
                        ))
                    })?);
                }
                _ => sql.push(c),
            }
        }
        Ok((sql, params))
    }

    /// The jobs in the rows of a [`CallerRows::Jobs`] statement (first column of each row),
    /// in the order of the batch inserted.
    pub fn jobs(&self, rows: &[String]) -> Result<Vec<Job>> {
        let mut jobs = rows
            .iter()
            .map(|row| decode_job(row))
            .collect::<Result<Vec<Job>>>()?;
        if let Some(keys) = &self.unique_keys {
            return unique_results(keys, jobs);
        }
        jobs.sort_by_key(|job| job.sequence);
        Ok(jobs)
    }
}

/// A job row as the caller statements return it: times in integer microseconds since the
/// Unix epoch, params and result as JSON values, bytes params in hexadecimal (JSON has no
/// bytes; both backends print hex natively).
#[derive(Deserialize)]
struct JobJson {
    id: i64,
    scope: String,
    queue: String,
    action: String,
    params: Box<RawValue>,
    params_bytes: Option<String>,
    priority: i32,
    sequence: i64,
    state: String,
    attempts: i32,
    max_attempts: i32,
    timeout: f64,
    max_backoff: f64,
    scheduled_at: i64,
    attempted_at: Option<i64>,
    attempted_by: Option<String>,
    next_attempt_at: Option<i64>,
    done_at: Option<i64>,
    inserted_at: i64,
    error: Option<String>,
    result: Option<Box<RawValue>>,
    lease_token: Option<i64>,
    #[serde(default)]
    cancel_requested_at: Option<i64>,
    /// As stored (see `UniqueKey::from_stored`).
    #[serde(default)]
    unique_key: Option<String>,
    #[serde(default)]
    duplicate: bool,
}

fn time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Database(format!("time {micros} µs is out of range")))
}

/// Bytes from hexadecimal text in either case.
fn from_hex(text: &str) -> Result<Vec<u8>> {
    let digit = |c: u8| {
        (c as char)
            .to_digit(16)
            .ok_or_else(|| Error::Database(format!("bytes params are not hexadecimal: {c:?}")))
    };
    if text.len() % 2 != 0 {
        return Err(Error::Database(
            "bytes params have an odd number of hexadecimal digits".into(),
        ));
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

fn decode_job(row: &str) -> Result<Job> {
    let j: JobJson = serde_json::from_str(row).map_err(|e| {
        Error::Database(format!(
            "unreadable job row from the caller's connection: {e}"
        ))
    })?;
    Ok(Job {
        id: j.id,
        scope: j.scope,
        queue: j.queue,
        action: j.action,
        params: Params::from_columns(
            j.params.get().to_owned(),
            j.params_bytes.as_deref().map(from_hex).transpose()?,
        ),
        priority: j.priority,
        sequence: j.sequence,
        state: JobState::parse(&j.state).map_err(|e| Error::Database(e.to_string()))?,
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        timeout: j.timeout,
        max_backoff: j.max_backoff,
        scheduled_at: time(j.scheduled_at)?,
        attempted_at: j.attempted_at.map(time).transpose()?,
        attempted_by: j.attempted_by,
        next_attempt_at: j.next_attempt_at.map(time).transpose()?,
        done_at: j.done_at.map(time).transpose()?,
        inserted_at: time(j.inserted_at)?,
        error: j.error,
        result: j.result.map(|r| r.get().to_owned()),
        lease_token: j.lease_token,
        cancel_requested_at: j.cancel_requested_at.map(time).transpose()?,
        blocked_by: None,
        unique: j
            .unique_key
            .as_deref()
            .map(UniqueKey::from_stored)
            .transpose()?,
        duplicate: j.duplicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> CallerStatement {
        CallerStatement {
            sql: sql.into(),
            params: vec![SqlParam::Text("scope".into()), SqlParam::Int(7)],
            rows: CallerRows::Jobs,
            backend: Backend::Postgres,
            unique_keys: None,
        }
    }

    #[test]
    fn format_style_binds_by_position_and_escapes_percent() {
        let (sql, params) =
            statement("-- takes $1 and $2, isn't it\nSELECT $1, $2::int8 % 2, '$1 ?2', $1")
                .render(ParamStyle::Format)
                .unwrap();
        assert_eq!(
            sql,
            "-- takes $1 and $2, isn't it\nSELECT %s, %s::int8 %% 2, '$1 ?2', %s"
        );
        assert_eq!(
            params,
            vec![
                SqlParam::Text("scope".into()),
                SqlParam::Int(7),
                SqlParam::Text("scope".into())
            ]
        );
        let (sql, params) = statement("VALUES (?2, ?1)")
            .render(ParamStyle::Format)
            .unwrap();
        assert_eq!(sql, "VALUES (%s, %s)");
        assert_eq!(params[0], SqlParam::Int(7));
    }

    #[test]
    fn a_placeholder_without_its_parameter_is_an_error_not_a_panic() {
        for sql in ["SELECT $3", "SELECT $0"] {
            assert!(matches!(
                statement(sql).render(ParamStyle::Format),
                Err(Error::Configuration(_))
            ));
        }
    }

    #[test]
    fn numbered_style_is_the_statement_itself() {
        let original = statement("SELECT $1, $2");
        assert_eq!(
            original.render(ParamStyle::Numbered).unwrap(),
            (original.sql.clone(), original.params.clone())
        );
    }

    #[test]
    fn job_rows_decode_in_insertion_order() {
        let row = |id: i64, sequence: i64| {
            format!(
                r#"{{"id":{id},"scope":"s","queue":"q","action":"a","params":{{"n":1}},"priority":0,
                "sequence":{sequence},"state":"available","attempts":0,"max_attempts":20,"timeout":60,
                "max_backoff":86400.0,"scheduled_at":1700000000123456,"attempted_at":null,
                "attempted_by":null,"next_attempt_at":null,"done_at":null,
                "inserted_at":1700000000123456,"error":null,"result":null,"lease_token":null}}"#
            )
        };
        let jobs = statement("").jobs(&[row(2, 11), row(1, 10)]).unwrap();
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(jobs[0].params, Params::Json(r#"{"n":1}"#.into()));
        let big = row(3, 12).replace(r#"{"n":1}"#, r#"{"n":18446744073709551616,"a":1}"#);
        let exact = statement("").jobs(&[big]).unwrap();
        assert_eq!(
            exact[0].params,
            Params::Json(r#"{"n":18446744073709551616,"a":1}"#.into())
        );
        let bytes = row(4, 13).replace(
            r#""params":{"n":1}"#,
            r#""params":null,"params_bytes":"00fFa0""#,
        );
        let decoded = statement("").jobs(&[bytes]).unwrap();
        assert_eq!(decoded[0].params, Params::Bytes(vec![0, 0xff, 0xa0]));
        let empty = row(5, 14).replace(r#""params":{"n":1}"#, r#""params":null,"params_bytes":"""#);
        assert_eq!(
            statement("").jobs(&[empty]).unwrap()[0].params,
            Params::Bytes(vec![])
        );
        for bad in ["0", "zz"] {
            let row = row(6, 15).replace(
                r#""params":{"n":1}"#,
                &format!(r#""params":null,"params_bytes":"{bad}""#),
            );
            assert!(matches!(
                statement("").jobs(&[row]),
                Err(Error::Database(_))
            ));
        }
        assert_eq!(jobs[0].state, JobState::Available);
        assert_eq!(jobs[0].timeout, 60.0);
        assert_eq!(
            jobs[0].scheduled_at.timestamp_micros(),
            1_700_000_000_123_456
        );
        assert!(matches!(
            statement("").jobs(&["{}".into()]),
            Err(Error::Database(_))
        ));
    }
}
