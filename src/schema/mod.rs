//! The database schema this binary expects: the `sql/` migrations embedded at build time
//! (see build.rs), their record in `autopilot_migrations` (`tracking`), and
//! `autopilot migrate`, which applies them (`migrate`).
//!
//! Every command but `migrate` and `doctor` opens its first connection with
//! [`get_checked`], which refuses a database whose schema is behind this binary.

mod migrate;
mod tracking;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use migrate::{run, MigrateOptions, MIGRATE_LOCK_KEY};
pub use tracking::{ensure_current, get_checked};

/// The migrations compiled into this binary: (file name, contents), in version order.
pub const MIGRATIONS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub file: String,
    pub checksum: String,
    #[serde(skip)]
    pub sql: &'static str,
}

/// The embedded migrations, parsed (version = the numeric prefix of the file name).
pub fn embedded() -> Vec<Migration> {
    MIGRATIONS
        .iter()
        .map(|(file, sql)| {
            let stem = file.trim_end_matches(".sql");
            let (version, name) = stem.split_once('_').unwrap_or((stem, ""));
            Migration {
                version: version
                    .parse()
                    .unwrap_or_else(|_| panic!("migration {file} lacks a numeric version")),
                name: name.to_string(),
                file: file.to_string(),
                checksum: checksum(sql),
                sql,
            }
        })
        .collect()
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_in_strictly_increasing_version_order() {
        let m = embedded();
        assert!(!m.is_empty());
        for pair in m.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "{} !< {}",
                pair[0].file,
                pair[1].file
            );
        }
    }
}
