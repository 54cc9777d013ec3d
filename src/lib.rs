//! autopilot: the hourly autonomous agent of a multi-tenant appraisal-management CRM.
//!
//! One short-lived, stateless process per invocation; all state and coordination live in
//! PostgreSQL. `commands` parses the command line and hands each command, as plain options,
//! to the module that owns it.

/// `sql!("module/name")`: the statement in `src/sql/module/name.sql`, compiled in. Every
/// statement the binary runs lives in such a file (one statement each); tests/it/sql_files.rs
/// prepares them all against the migrated schema.
#[macro_export]
macro_rules! sql {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/sql/",
            $name,
            ".sql"
        ))
    };
}

pub mod alerts;
pub mod cards;
pub mod commands;
pub mod cycle;
pub mod db;
pub mod doctor;
pub mod email;
pub mod engagement;
pub mod error;
pub mod host_compat;
pub mod inbound;
pub mod libpq;
pub mod logging;
pub mod metrics;
pub mod orders;
pub mod policy;
pub mod privileges;
pub mod prune;
pub mod schema;
pub mod settings;
pub mod shard;
pub mod smtp;
pub mod status;
pub mod tenant_admin;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::db::DbSettings;

/// What every command gets: how to reach the database and what time it is.
#[derive(Debug, Clone)]
pub struct Context {
    pub db: DbSettings,
    /// Injected with the hidden `--now` (tests); the wall clock otherwise.
    pub now_override: Option<DateTime<Utc>>,
}

impl Context {
    pub fn now(&self) -> DateTime<Utc> {
        self.now_override.unwrap_or_else(Utc::now)
    }
}

/// Run one parsed command line (see [`commands::run`]).
pub async fn run(cli: commands::Cli) -> Result<u8> {
    commands::run(cli).await
}
