//! Host compatibility: the host application's own tables that the agent writes
//! (`kanban_cards`, `email_suppressions`) may have columns, constraints and foreign keys the
//! agent does not know (Salesmod: a legacy `org_id NOT NULL REFERENCES profiles`,
//! `rationale NOT NULL`, CHECK lists, `run_id` referencing its own `agent_runs`).
//!
//! Owns two things:
//! * [`inspect`]: before `migrate` changes anything (and for `migrate --status`, and for
//!   `autopilot doctor`), reads the catalog and lists every NOT NULL column without a default
//!   that neither the agent nor the compatibility trigger fills, every CHECK that rejects a
//!   value the agent writes, and every foreign key on a column the agent fills that points
//!   somewhere the agent's value cannot be.
//! * [`install`]: after the migrations, puts the BEFORE INSERT trigger
//!   `autopilot_host_row_defaults` (function in `sql/20261203100100_host_compat.sql`) on the
//!   tables that need it, with arguments derived from the catalog, and removes it where it is
//!   no longer needed. Doing this in SQL keeps the writers in Rust unaware of host columns.

use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_postgres::Client;

mod checks;

/// Name of the trigger [`install`] manages.
pub const TRIGGER: &str = "autopilot_host_row_defaults";

/// One host table the agent inserts into, and what the agent writes there.
struct HostTable {
    name: &'static str,
    /// Columns the agent's INSERTs and UPDATEs set (always, or sometimes to NULL).
    writes: &'static [&'static str],
    /// Of those, the ones the agent may leave NULL (a host NOT NULL there is a finding).
    may_be_null: &'static [&'static str],
    /// Columns the compatibility trigger fills when empty.
    trigger_fills: &'static [&'static str],
    /// Every value the agent writes into the columns a host may restrict with a CHECK list.
    values: &'static [(&'static str, &'static [&'static str])],
}

const HOST_TABLES: &[HostTable] = &[
    HostTable {
        name: "kanban_cards",
        writes: &[
            "id",
            "tenant_id",
            "run_id",
            "agent_run_id",
            "client_id",
            "contact_id",
            "agent_target",
            "type",
            "title",
            "description",
            "rationale",
            "priority",
            "state",
            "action_payload",
            "due_at",
            "executed_at",
            "message_id",
            "blocked_reason",
            "created_at",
            "updated_at",
        ],
        may_be_null: &[
            "run_id",
            "agent_run_id",
            "client_id",
            "contact_id",
            "description",
            "due_at",
            "executed_at",
            "message_id",
            "blocked_reason",
        ],
        trigger_fills: &["org_id", "rationale"],
        values: &[
            ("type", &["send_email", "create_task"]),
            (
                "state",
                &["suggested", "approved", "executing", "done", "blocked"],
            ),
            ("priority", &["low", "medium", "high"]),
        ],
    },
    HostTable {
        name: "email_suppressions",
        writes: &["id", "tenant_id", "email", "reason", "created_at"],
        may_be_null: &[],
        trigger_fills: &["org_id", "contact_id"],
        values: &[("reason", &["bounce", "complaint"])],
    },
];

/// Where a foreign key on a column the agent fills must point for the agent's values to fit.
const EXPECTED_REFERENCES: &[(&str, &str)] = &[
    ("tenant_id", "tenants"),
    ("client_id", "clients"),
    ("contact_id", "contacts"),
    ("run_id", "agent_autonomous_runs"),
    ("agent_run_id", "agent_autonomous_runs"),
    ("org_id", "profiles"),
];

/// One reason the agent could not write valid rows into a host table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub table: String,
    pub column: Option<String>,
    pub constraint: Option<String>,
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.column, &self.constraint) {
            (Some(c), _) => write!(f, "{}.{}: {}", self.table, c, self.problem),
            (None, Some(k)) => write!(f, "{} constraint {}: {}", self.table, k, self.problem),
            (None, None) => write!(f, "{}: {}", self.table, self.problem),
        }
    }
}

struct Column {
    name: String,
    not_null: bool,
    has_default: bool,
    type_name: String,
}

const COLUMNS_SQL: &str = crate::sql!("host_compat/columns");
const CHECKS_SQL: &str = crate::sql!("host_compat/checks");
const FOREIGN_KEYS_SQL: &str = crate::sql!("host_compat/foreign_keys");

async fn columns(c: &impl tokio_postgres::GenericClient, table: &str) -> Result<Vec<Column>> {
    Ok(c.query(COLUMNS_SQL, &[&table])
        .await
        .with_context(|| format!("reading the columns of {table}"))?
        .iter()
        .map(|r| Column {
            name: r.get(0),
            not_null: r.get(1),
            has_default: r.get(2),
            type_name: r.get(3),
        })
        .collect())
}

fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn quote_ident(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// The findings for the host tables the agent writes, read from the catalog without
/// changing anything (the CHECK probes run on temporary tables in a rolled-back
/// transaction). Empty when every such table is missing (migrate creates them) or fits.
/// `autopilot doctor` may call this with any direct connection.
pub async fn inspect(client: &mut Client) -> Result<Vec<Finding>> {
    let mut tx = client
        .transaction()
        .await
        .context("inspecting host tables")?;
    let tenants_have_owner = columns(&tx, "tenants")
        .await?
        .iter()
        .any(|c| c.name == "owner_id");
    let mut findings = Vec::new();
    let mut probes = checks::Probes::default();
    for t in HOST_TABLES {
        let cols = columns(&tx, t.name).await?;
        if cols.is_empty() {
            continue;
        }
        findings.extend(not_null_findings(t, &cols, tenants_have_owner));
        findings.extend(foreign_key_findings(&tx, t).await?);
        findings.extend(probes.check_findings(&mut tx, t, &cols).await?);
    }
    tx.rollback().await.context("ending the host inspection")?;
    Ok(findings)
}

/// NOT NULL columns without a default that neither the agent nor the trigger fills.
fn not_null_findings(t: &HostTable, cols: &[Column], tenants_have_owner: bool) -> Vec<Finding> {
    let fillable = |name: &str| -> bool {
        if name == "org_id" {
            return tenants_have_owner;
        }
        (t.writes.contains(&name) && !t.may_be_null.contains(&name))
            || t.trigger_fills.contains(&name)
    };
    cols.iter()
        .filter(|c| c.not_null && !c.has_default && !fillable(&c.name))
        .map(|c| {
            let problem = if c.name == "org_id" {
                "NOT NULL without a default: autopilot fills a legacy org_id with the tenant's owner, but tenants has no owner_id column".to_string()
            } else {
                "NOT NULL without a default, and autopilot does not fill it".to_string()
            };
            Finding {
                table: t.name.to_string(),
                column: Some(c.name.clone()),
                constraint: None,
                problem,
            }
        })
        .collect()
}

/// Foreign keys on columns the agent (or the trigger) fills.
async fn foreign_key_findings(
    c: &impl tokio_postgres::GenericClient,
    t: &HostTable,
) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for r in c
        .query(FOREIGN_KEYS_SQL, &[&t.name])
        .await
        .with_context(|| format!("reading the foreign keys of {}", t.name))?
    {
        let name: String = r.get(0);
        let fk_cols: Vec<String> = r.get(1);
        let target: String = r.get(2);
        // A composite key (tenant_id, x) is about x.
        let key_cols: Vec<&String> = if fk_cols.len() > 1 {
            fk_cols.iter().filter(|c| *c != "tenant_id").collect()
        } else {
            fk_cols.iter().collect()
        };
        findings.extend(
            key_cols
                .into_iter()
                .filter_map(|col| foreign_key_finding(t, &name, col, &target)),
        );
    }
    Ok(findings)
}

/// What is wrong with foreign key `name` on `col` pointing at `target`, if anything.
fn foreign_key_finding(t: &HostTable, name: &str, col: &str, target: &str) -> Option<Finding> {
    let finding = |problem: String| Finding {
        table: t.name.to_string(),
        column: Some(col.to_string()),
        constraint: Some(name.to_string()),
        problem,
    };
    let Some((_, expected)) = EXPECTED_REFERENCES.iter().find(|(c, _)| *c == col) else {
        return t.writes.contains(&col).then(|| {
            finding(format!(
                "foreign key {name} references {target}, where autopilot's values are not"
            ))
        });
    };
    // A host run_id referencing its own runs table is handled by the trigger
    // (the agent's run id moves to agent_run_id).
    if target != *expected && !(col == "run_id" && t.name == "kanban_cards") {
        return Some(finding(format!(
            "foreign key {name} references {target}; autopilot writes ids of {expected} there"
        )));
    }
    None
}

const TRIGGER_ARGS_SQL: &str = crate::sql!("host_compat/trigger_args");

const RUN_ID_TARGET_SQL: &str = crate::sql!("host_compat/run_id_target");

/// Put the compatibility trigger on each host table that needs it (with the arguments its
/// columns call for), and take it off a table that no longer does. Idempotent: a table
/// whose trigger is already right is not touched (no lock taken).
pub async fn install(c: &impl tokio_postgres::GenericClient) -> Result<()> {
    let function_exists: bool = c
        .query_one(crate::sql!("host_compat/defaults_function_exists"), &[])
        .await?
        .get(0);
    if !function_exists {
        return Ok(());
    }
    for t in HOST_TABLES {
        let cols = columns(c, t.name).await?;
        if cols.is_empty() {
            continue;
        }
        let col = |n: &str| cols.iter().find(|c| c.name == n);
        let strict = |n: &str| {
            col(n)
                .map(|c| c.not_null && !c.has_default)
                .unwrap_or(false)
        };
        let mut args: Vec<&str> = Vec::new();
        if t.name == "kanban_cards" {
            let foreign_run: bool = c
                .query_one(RUN_ID_TARGET_SQL, &[&t.name])
                .await
                .context("reading kanban_cards.run_id's foreign keys")?
                .get(0);
            if foreign_run {
                args.push("detach_run_id");
            }
        }
        if t.name == "email_suppressions" && strict("contact_id") {
            args.push("contact_id_required");
        }
        let needed = col("org_id").is_some()
            || !args.is_empty()
            || (t.name == "kanban_cards" && strict("rationale"));

        let qualified = format!("public.{}", t.name);
        let current: Option<Vec<u8>> = c
            .query_opt(TRIGGER_ARGS_SQL, &[&qualified, &TRIGGER])
            .await?
            .map(|r| r.get(0));
        let wanted: Option<Vec<u8>> = needed.then(|| {
            args.iter()
                .flat_map(|a| a.bytes().chain(std::iter::once(0u8)))
                .collect()
        });
        if current == wanted {
            continue;
        }
        let mut sql = format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {qualified};");
        if needed {
            let quoted: Vec<String> = args.iter().map(|a| quote_literal(a)).collect();
            sql.push_str(&format!(
                "CREATE TRIGGER {TRIGGER} BEFORE INSERT ON {qualified} FOR EACH ROW \
                 EXECUTE FUNCTION public.autopilot_host_row_defaults({});",
                quoted.join(", ")
            ));
        }
        c.batch_execute(&sql)
            .await
            .with_context(|| format!("installing the host compatibility trigger on {}", t.name))?;
    }
    Ok(())
}
