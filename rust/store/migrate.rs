//! The schema versions, numbered in lock-step across backends: one table, read by both
//! stores' `migrate` (each applies the body of its own dialect in one transaction).

/// One schema version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub postgres: &'static str,
    pub sqlite: &'static str,
}

/// Every version, in the order they apply. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "notify_from_insert",
        postgres: include_str!("../../migrations/postgres/0002_notify_from_insert.sql"),
        sqlite: include_str!("../../migrations/sqlite/0002_notify_from_insert.sql"),
    },
    Migration {
        version: 3,
        name: "queue_heads",
        postgres: include_str!("../../migrations/postgres/0003_queue_heads.sql"),
        sqlite: include_str!("../../migrations/sqlite/0003_queue_heads.sql"),
    },
    Migration {
        version: 4,
        name: "binary_params",
        postgres: include_str!("../../migrations/postgres/0004_binary_params.sql"),
        sqlite: include_str!("../../migrations/sqlite/0004_binary_params.sql"),
    },
    Migration {
        version: 5,
        name: "json_params",
        postgres: include_str!("../../migrations/postgres/0005_json_params.sql"),
        sqlite: include_str!("../../migrations/sqlite/0005_json_params.sql"),
    },
    Migration {
        version: 6,
        name: "periodic",
        postgres: include_str!("../../migrations/postgres/0006_periodic.sql"),
        sqlite: include_str!("../../migrations/sqlite/0006_periodic.sql"),
    },
    Migration {
        version: 7,
        name: "unique_jobs",
        postgres: include_str!("../../migrations/postgres/0007_unique_jobs.sql"),
        sqlite: include_str!("../../migrations/sqlite/0007_unique_jobs.sql"),
    },
    Migration {
        version: 8,
        name: "queue_control",
        postgres: include_str!("../../migrations/postgres/0008_queue_control.sql"),
        sqlite: include_str!("../../migrations/sqlite/0008_queue_control.sql"),
    },
];

/// The versions not yet in `applied`, in order.
pub(crate) fn pending(applied: &[i32]) -> impl Iterator<Item = &'static Migration> + '_ {
    MIGRATIONS
        .iter()
        .filter(move |migration| !applied.contains(&migration.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend_from_one() {
        // Versions are assigned to branches in parallel, so one may land before a lower one:
        // they ascend, each once; the database records every version it applied.
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions.first(), Some(&1));
        assert!(versions.windows(2).all(|pair| pair[0] < pair[1]));
        let left: Vec<i32> = pending(&[1]).map(|m| m.version).collect();
        assert_eq!(left, versions[1..].to_vec());
    }
}
