//! `autopilot prune`: retention. Deletes the agent's records older than a cutoff
//! (`--older-than`, relative to the injected now) in batches, each batch its own short
//! transaction, so a nightly prune never holds locks a running cycle would wait on.
//!
//! What is kept whatever its age: a run still `running`, the run named by a lease, and each
//! tenant's latest run (the next cycle number is the tenant's highest + 1, so pruning every
//! run would restart the numbering; `status` also shows it). Unresolved exceptions and
//! unacknowledged alerts are open work and are never pruned.
//!
//! `--dry-run` runs the same predicates as counts. Reflections of a pruned run are pruned
//! with it (the foreign key cascades); their predicate includes them explicitly and they
//! are deleted first, so the counts of a dry run and of a real run agree.

// Statements outside a transaction go through Sql for their bounded wait (crate::deadline).
#[allow(unused_imports)]
use crate::db::Sql;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::PruneArgs;
use crate::Context;

/// A finished run past the cutoff that no lease names and that is not its tenant's latest.
/// `r` is the run; $1 is the cutoff.
macro_rules! prunable_run {
    () => {
        "r.status <> 'running'
     AND COALESCE(r.completed_at, r.started_at) < $1
     AND NOT EXISTS (SELECT 1 FROM public.agent_tenant_locks l WHERE l.run_id = r.id)
     AND r.cycle_number < (SELECT max(r2.cycle_number) FROM public.agent_autonomous_runs r2
                           WHERE r2.tenant_id = r.tenant_id)"
    };
}

/// One table's retention rule: a count for `--dry-run` and a batched delete that returns
/// how many rows it removed. Both use the same predicate ($1 cutoff; $2 batch size).
struct Rule {
    table: &'static str,
    count: &'static str,
    delete: &'static str,
}

/// Deletes take the rows they remove with FOR UPDATE SKIP LOCKED: a row another
/// transaction holds is left for the next prune instead of waited for.
macro_rules! rule {
    ($table:literal, $pred:expr) => {
        Rule {
            table: $table,
            count: concat!("SELECT count(*) FROM public.", $table, " t WHERE ", $pred),
            delete: concat!(
                "WITH victims AS (SELECT t.id FROM public.",
                $table,
                " t WHERE ",
                $pred,
                " LIMIT $2 FOR UPDATE OF t SKIP LOCKED), gone AS (DELETE FROM public.",
                $table,
                " d USING victims v WHERE d.id = v.id RETURNING 1) SELECT count(*) FROM gone"
            ),
        }
    };
}

/// In deletion order: reflections before the runs that would cascade to them.
const RULES: &[Rule] = &[
    rule!(
        "agent_hourly_reflections",
        concat!(
            "(t.created_at < $1 OR t.run_id IN (SELECT r.id FROM public.agent_autonomous_runs r WHERE ",
            prunable_run!(),
            "))"
        )
    ),
    rule!(
        "agent_autonomous_runs",
        concat!(
            "t.id IN (SELECT r.id FROM public.agent_autonomous_runs r WHERE ",
            prunable_run!(),
            ")"
        )
    ),
    rule!(
        "order_processing_exceptions",
        "t.resolved AND COALESCE(t.resolved_at, t.created_at) < $1"
    ),
    rule!("agent_rate_limits", "t.window_end < $1"),
    rule!(
        "agent_alerts",
        "t.acknowledged AND COALESCE(t.acknowledged_at, t.created_at) < $1"
    ),
    rule!("email_provider_failures", "t.created_at < $1"),
    rule!("agent_policy_violations", "t.created_at < $1"),
];

#[derive(Debug, Serialize)]
pub struct TableCount {
    pub table: &'static str,
    pub rows: i64,
}

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub older_than: String,
    pub cutoff: DateTime<Utc>,
    /// Rows deleted (or, with --dry-run, that would be) per table, in deletion order.
    pub tables: Vec<TableCount>,
    pub total: i64,
}

pub async fn run(ctx: &Context, args: &PruneArgs) -> Result<u8> {
    let cutoff = ctx.now() - args.older_than.duration;
    let pool = ctx.db.pool(1)?;
    let conn = crate::db::get_checked(&pool, &ctx.db).await?;
    let mut tables = Vec::new();
    for rule in RULES {
        let rows = if args.dry_run {
            conn.query_one(rule.count, &[&cutoff])
                .await
                .with_context(|| format!("counting prunable rows of {}", rule.table))?
                .get::<_, i64>(0)
        } else {
            // Each statement is its own (autocommit) transaction: locks last one batch.
            let mut total = 0i64;
            loop {
                let n: i64 = conn
                    .query_one(rule.delete, &[&cutoff, &args.batch])
                    .await
                    .with_context(|| format!("pruning {}", rule.table))?
                    .get(0);
                total += n;
                if n < args.batch {
                    break;
                }
            }
            tracing::info!(table = rule.table, rows = total, "pruned");
            total
        };
        tables.push(TableCount {
            table: rule.table,
            rows,
        });
    }
    let report = PruneReport {
        dry_run: args.dry_run,
        older_than: args.older_than.text.clone(),
        cutoff,
        total: tables.iter().map(|t| t.rows).sum(),
        tables,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let verb = if report.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        println!(
            "records older than {} (before {}){}:",
            report.older_than,
            report.cutoff.format("%Y-%m-%d %H:%M:%SZ"),
            if report.dry_run {
                ", dry run: nothing deleted"
            } else {
                ""
            }
        );
        for t in &report.tables {
            println!("  {:<28} {verb} {}", t.table, t.rows);
        }
        println!("  {:<28} {verb} {}", "total", report.total);
    }
    Ok(0)
}
