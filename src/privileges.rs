//! Closed by default, whatever the database's default privileges: what `migrate` creates is
//! not reachable by `anon`, `PUBLIC` or `authenticated` unless a migration grants it on
//! purpose (SPEC §2 "Grants").
//!
//! Owns three things `migrate` does around the migration files:
//! * [`DefaultPrivileges`]: inside each file's transaction, the migrating role's default
//!   privileges for `anon`, `authenticated` and `PUBLIC` (Supabase: `GRANT ALL ON TABLES,
//!   SEQUENCES, FUNCTIONS TO anon, authenticated`; PostgreSQL: EXECUTE to PUBLIC) are
//!   suspended while the file runs and restored exactly before it commits, so an object
//!   the file creates carries only the grants the file itself makes.
//! * The ledger `autopilot_migration_objects`: every table, view, sequence and function a
//!   file created (found by comparing the catalog before and after the file).
//! * [`close`]: after the migrations, every run, an idempotent step over the ledger (and the
//!   known objects of older installs): revokes from PUBLIC and anon, drops privileges that
//!   only default privileges could have given, enables RLS with a service_role policy and a
//!   tenant policy where a table lacks them, and re-asserts the exact grants of the agent's
//!   own tables.

use anyhow::{Context, Result};
use tokio_postgres::GenericClient;

pub const CREATE_LEDGER: &str = "
CREATE TABLE IF NOT EXISTS public.autopilot_migration_objects (
    -- 'migration' rows mark the files applied while this ledger existed.
    kind text NOT NULL CHECK (kind IN ('relation', 'function', 'migration')),
    identity text NOT NULL,
    version bigint,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, identity)
)";

const CLOSE_SQL: &str = crate::sql!("privileges/close");
const SNAPSHOT_SQL: &str = crate::sql!("privileges/snapshot");
const RECORD_NEW_SQL: &str = crate::sql!("privileges/record_new");
const DEFAULT_ACL_SQL: &str = crate::sql!("privileges/default_acl");

/// Run the privilege-closing step (idempotent).
pub async fn close(c: &impl GenericClient) -> Result<()> {
    c.batch_execute(CREATE_LEDGER)
        .await
        .context("creating autopilot_migration_objects")?;
    c.batch_execute(CLOSE_SQL)
        .await
        .map_err(|e| anyhow::anyhow!("{}", crate::db::error_text(&e)))
        .context("closing privileges on the objects migrate created")
}

/// Remember which objects exist before a migration file runs (in its transaction).
pub async fn snapshot(c: &impl GenericClient) -> Result<()> {
    c.batch_execute(SNAPSHOT_SQL)
        .await
        .context("taking the catalog snapshot")
}

/// Record in the ledger what the migration `version` created since [`snapshot`].
pub async fn record_new(c: &impl GenericClient, version: i64) -> Result<u64> {
    c.execute(RECORD_NEW_SQL, &[&version])
        .await
        .context("recording the objects the migration created")
}

/// One default privilege of the migrating role that was suspended.
struct Suspended {
    schema: Option<String>,
    objects: &'static str,
    grantee: String,
    privilege: String,
    grantable: bool,
}

/// The migrating role's default privileges for anon, authenticated and PUBLIC, suspended
/// for the duration of one migration file. Both halves run in the file's transaction, so a
/// failure anywhere rolls the suspension back with the file.
pub struct DefaultPrivileges {
    suspended: Vec<Suspended>,
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Suspended {
    fn statement(&self, grant: bool) -> String {
        let scope = match &self.schema {
            Some(s) => format!(" IN SCHEMA {}", ident(s)),
            None => String::new(),
        };
        let grantee = if self.grantee == "PUBLIC" {
            "PUBLIC".to_string()
        } else {
            ident(&self.grantee)
        };
        if grant {
            format!(
                "ALTER DEFAULT PRIVILEGES{scope} GRANT {} ON {} TO {grantee}{}",
                self.privilege,
                self.objects,
                if self.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "ALTER DEFAULT PRIVILEGES{scope} REVOKE {} ON {} FROM {grantee}",
                self.privilege, self.objects
            )
        }
    }
}

impl DefaultPrivileges {
    /// Suspend (in the current transaction) every default privilege of the current role that
    /// would give anon, authenticated or PUBLIC access to a new table, sequence or function.
    pub async fn suspend(c: &impl GenericClient) -> Result<DefaultPrivileges> {
        let rows = c
            .query(DEFAULT_ACL_SQL, &[])
            .await
            .context("reading default privileges")?;
        let suspended: Vec<Suspended> = rows
            .iter()
            .map(|r| {
                let objtype: String = r.get(1);
                Suspended {
                    schema: r.get(0),
                    objects: match objtype.as_str() {
                        "r" => "TABLES",
                        "S" => "SEQUENCES",
                        _ => "FUNCTIONS",
                    },
                    grantee: r.get(2),
                    privilege: r.get(3),
                    grantable: r.get(4),
                }
            })
            .collect();
        for s in &suspended {
            c.batch_execute(&s.statement(false))
                .await
                .with_context(|| format!("suspending default privilege: {}", s.statement(false)))?;
        }
        Ok(DefaultPrivileges { suspended })
    }

    /// Put back exactly what [`DefaultPrivileges::suspend`] took away.
    pub async fn restore(self, c: &impl GenericClient) -> Result<()> {
        for s in self.suspended.iter().rev() {
            c.batch_execute(&s.statement(true))
                .await
                .with_context(|| format!("restoring default privilege: {}", s.statement(true)))?;
        }
        Ok(())
    }
}
