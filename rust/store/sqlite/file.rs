//! What a `sqlite://` URL names and asks for, checked before anything is created: the file,
//! and how durable an acknowledged commit is. The one place that reads the URL's query.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How durable a commit is once SQLite acknowledges it (`?synchronous=` in the URL). In WAL
/// mode both survive a crash of the process; they differ on an OS crash or power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is synced to disk (the WAL is fsynced) before it is acknowledged: an
    /// acknowledged enqueue survives an OS crash or power loss.
    #[default]
    Full,
    /// The WAL is synced only at checkpoints: an OS crash or power loss can roll back the
    /// commits since the last one (never corrupting the file).
    Normal,
}

impl Synchronous {
    /// The value of `PRAGMA synchronous`, as SQLite spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }

    /// The level `PRAGMA synchronous` reads back as (0 off, 1 normal, 2 full, 3 extra).
    pub fn from_pragma(level: i64) -> &'static str {
        match level {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        }
    }
}

/// A `sqlite://` URL, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteUrl {
    pub path: PathBuf,
    pub synchronous: Synchronous,
}

/// The file a `sqlite://` URL names (`sqlite:///relative.db`, `sqlite:////absolute.db`, as
/// SQLAlchemy spells them) and its one option, `synchronous=full|normal` (default full). Any
/// other parameter or value is refused, so that a typo does not silently weaken durability.
pub fn parse_url(url: &str) -> Result<SqliteUrl> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| Error::Configuration(format!("not a sqlite:// URL: {url:?}")))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = rest.strip_prefix('/').unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Err(Error::Configuration(
            "a SQLite URL needs a file path, e.g. sqlite:///ferroq.db (workers in other processes share the file)".into(),
        ));
    }
    let mut synchronous = Synchronous::default();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "synchronous" => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    _ => {
                        return Err(Error::Configuration(format!(
                            "unknown SQLite synchronous={value:?} in {url:?}: use full (every acknowledged commit survives an OS crash, the default) or normal (faster; an OS crash can lose the latest commits)"
                        )))
                    }
                }
            }
            _ => {
                return Err(Error::Configuration(format!(
                    "unknown parameter {key:?} in SQLite URL {url:?}: the only one is synchronous=full|normal"
                )))
            }
        }
    }
    Ok(SqliteUrl {
        path: PathBuf::from(path),
        synchronous,
    })
}

/// The file path a `sqlite://` URL names.
pub fn path_from_url(url: &str) -> Result<PathBuf> {
    parse_url(url).map(|url| url.path)
}

/// Fail clearly when the file's directory does not exist, instead of SQLite's "unable to open".
pub(super) fn check_directory(path: &Path) -> Result<()> {
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        return Err(Error::Configuration(format!(
            "cannot store jobs in {}: directory {} does not exist",
            path.display(),
            directory.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_relative_and_absolute_files() {
        assert_eq!(
            path_from_url("sqlite:///jobs.db").unwrap(),
            PathBuf::from("jobs.db")
        );
        assert_eq!(
            path_from_url("sqlite:////tmp/jobs.db?synchronous=normal").unwrap(),
            PathBuf::from("/tmp/jobs.db")
        );
        assert!(path_from_url("sqlite:///:memory:").is_err());
        assert!(path_from_url("sqlite://").is_err());
    }

    #[test]
    fn synchronous_is_full_unless_the_url_says_normal() {
        let sync = |url: &str| parse_url(url).map(|u| u.synchronous);
        assert_eq!(sync("sqlite:///j.db").unwrap(), Synchronous::Full);
        assert_eq!(sync("sqlite:///j.db?").unwrap(), Synchronous::Full);
        assert_eq!(
            sync("sqlite:///j.db?synchronous=full").unwrap(),
            Synchronous::Full
        );
        assert_eq!(
            sync("sqlite:///j.db?synchronous=NORMAL").unwrap(),
            Synchronous::Normal
        );
        for bad in [
            "sqlite:///j.db?synchronous=off",
            "sqlite:///j.db?synchronous=",
            "sqlite:///j.db?synchronous",
            "sqlite:///j.db?x=1",
            "sqlite:///j.db?synchronous=full&mode=ro",
        ] {
            assert!(
                matches!(sync(bad), Err(Error::Configuration(_))),
                "{bad} is refused"
            );
        }
    }
}
