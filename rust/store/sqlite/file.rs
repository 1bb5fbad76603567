//! Which file a `sqlite://` URL names, checked before anything is created.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The file path a `sqlite://` URL names: `sqlite:///relative.db`, `sqlite:////absolute.db`
/// (as SQLAlchemy spells them); query parameters are not used.
pub fn path_from_url(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| Error::Configuration(format!("not a sqlite:// URL: {url:?}")))?;
    let rest = rest.split('?').next().unwrap_or_default();
    let path = rest.strip_prefix('/').unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Err(Error::Configuration(
            "a SQLite URL needs a file path, e.g. sqlite:///ferroq.db (workers in other processes share the file)".into(),
        ));
    }
    Ok(PathBuf::from(path))
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
            path_from_url("sqlite:////tmp/jobs.db?x=1").unwrap(),
            PathBuf::from("/tmp/jobs.db")
        );
        assert!(path_from_url("sqlite:///:memory:").is_err());
        assert!(path_from_url("sqlite://").is_err());
    }
}
