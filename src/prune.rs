//! `autopilot prune`: retention. Deletes the agent's records older than a cutoff
//! (`--older-than`, relative to the injected now) in batches, each batch its own short
//! transaction, so a nightly prune never holds locks a running cycle would wait on.
//!
//! What is kept whatever its age: a run still `running`, the run named by a lease, and each
//! tenant's latest run (the next cycle number is the tenant's highest + 1, so pruning every
//! run would restart the numbering; `status` also shows it). Unresolved exceptions and
//! unacknowledged alerts are open work and are never pruned.
//!
//! Partitioned history (agent_autonomous_runs by month, email_provider_failures by week):
//! a real prune first creates the partitions of the coming periods (so inserts never land
//! in the DEFAULT partition), then drops every partition wholly before the cutoff instead
//! of deleting its rows one by one; the runs it must keep move to the DEFAULT partition
//! first. The batched row delete still runs after it, for the partition straddling the
//! cutoff, the DEFAULT partition and the tables that are not partitioned. Lease statistics
//! (`agent_lease_stats`, hourly counters) go by their hour.
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

use crate::Context;

/// A finished run past the cutoff that no lease names and that is not its tenant's latest.
/// `r` is the run; $1 is the cutoff.
macro_rules! prunable_run {
    () => {
        "r.status <> 'running'
     AND r.started_at < $1
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
    Rule {
        table: "agent_lease_stats",
        count: crate::sql!("prune/lease_stats_count"),
        delete: crate::sql!("prune/lease_stats_delete"),
    },
];

/// Partitions of the coming periods (the create-ahead horizon of each history table).
const ENSURE_PARTITIONS: &str = crate::sql!("prune/ensure_partitions");
/// Partitions wholly past the cutoff, dropped: per table, partitions and rows removed.
const DROP_PARTITIONS: &str = crate::sql!("prune/drop_partitions");
/// The whole-partition drop runs right before this table's row rule: after the
/// reflections of the runs it removes are gone, before the row delete of what remains.
const DROP_PARTITIONS_BEFORE: &str = "agent_autonomous_runs";

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
    /// Partitions created ahead by this prune (none with --dry-run).
    pub partitions_created: Vec<String>,
    /// Whole partitions dropped past retention (their rows are counted in `tables`).
    pub partitions_dropped: i64,
}

/// Create the partitions ahead; returns their names.
async fn ensure_partitions(conn: &impl Sql, now: DateTime<Utc>) -> Result<Vec<String>> {
    Ok(conn
        .query(ENSURE_PARTITIONS, &[&now])
        .await
        .context("creating the history partitions ahead")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Drop the partitions wholly before `cutoff`; returns (table, rows removed) and the
/// number of partitions dropped.
async fn drop_partitions(
    conn: &impl Sql,
    cutoff: DateTime<Utc>,
) -> Result<(Vec<(String, i64)>, i64)> {
    let rows = conn
        .query(DROP_PARTITIONS, &[&cutoff])
        .await
        .context("dropping history partitions past retention")?;
    let dropped = rows.iter().map(|r| i64::from(r.get::<_, i32>(1))).sum();
    for r in &rows {
        let n: i32 = r.get(1);
        if n > 0 {
            tracing::info!(
                table = r.get::<_, &str>(0),
                partitions = n,
                "dropped partitions"
            );
        }
    }
    Ok((rows.iter().map(|r| (r.get(0), r.get(2))).collect(), dropped))
}

/// Run a rule's delete until a batch comes back short; returns the rows deleted. Each
/// statement is its own (autocommit) transaction: locks last one batch.
async fn delete_in_batches(
    conn: &impl Sql,
    rule: &Rule,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> Result<i64> {
    let mut total = 0i64;
    loop {
        let n: i64 = conn
            .query_one(rule.delete, &[&cutoff, &batch])
            .await
            .with_context(|| format!("pruning {}", rule.table))?
            .get(0);
        total += n;
        if n < batch {
            break;
        }
    }
    tracing::info!(table = rule.table, rows = total, "pruned");
    Ok(total)
}

/// A retention period as given (`90d`) and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub text: String,
    pub duration: chrono::Duration,
}

/// What `autopilot prune` removes and how.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Records older than this go.
    pub older_than: Retention,
    /// Count only; delete nothing.
    pub dry_run: bool,
    /// Rows deleted per statement (each batch its own short transaction).
    pub batch: i64,
    pub json: bool,
}

pub async fn run(ctx: &Context, args: &PruneOptions) -> Result<u8> {
    let cutoff = ctx.now() - args.older_than.duration;
    let pool = ctx.db.pool(1)?;
    let conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let mut tables = Vec::new();
    let partitions_created = if args.dry_run {
        Vec::new()
    } else {
        ensure_partitions(&*conn, ctx.now()).await?
    };
    let mut partition_rows: Vec<(String, i64)> = Vec::new();
    let mut partitions_dropped = 0;
    for rule in RULES {
        if !args.dry_run && rule.table == DROP_PARTITIONS_BEFORE {
            (partition_rows, partitions_dropped) = drop_partitions(&*conn, cutoff).await?;
        }
        let in_partitions: i64 = partition_rows
            .iter()
            .filter(|(t, _)| t == rule.table)
            .map(|(_, n)| n)
            .sum();
        let rows = if args.dry_run {
            conn.query_one(rule.count, &[&cutoff])
                .await
                .with_context(|| format!("counting prunable rows of {}", rule.table))?
                .get::<_, i64>(0)
        } else {
            in_partitions + delete_in_batches(&*conn, rule, cutoff, args.batch).await?
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
        partitions_created,
        partitions_dropped,
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
        if !report.dry_run {
            println!(
                "  partitions: {} created ahead, {} dropped past retention",
                report.partitions_created.len(),
                report.partitions_dropped
            );
        }
    }
    Ok(0)
}
