//! `autopilot check-engagement`: every tenant's clocks created and scores refreshed, a few
//! tenants at a time, and the compliance report.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use super::{check_clocks_finite, ensure_clocks, refresh_scores, tenant_report, TenantEngagement};
use crate::db::Sql;
use crate::Context;

const ALL_TENANTS_SQL: &str = crate::sql!("engagement/all_tenants");

const SOME_TENANTS_SQL: &str = crate::sql!("engagement/some_tenants");

/// The `check-engagement` JSON document.
#[derive(Debug, Serialize)]
struct Report<'a> {
    tenants: &'a [TenantEngagement],
    /// Tenants whose check failed on their own data; present only when there are some.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    failed: &'a [TenantFailure],
}

/// A tenant `check-engagement` could not check, and why.
#[derive(Debug, Serialize)]
struct TenantFailure {
    tenant_id: Uuid,
    error: String,
}

/// What `check-engagement` is asked for.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Only these tenants (each must exist); empty: every active tenant.
    pub tenants: Vec<Uuid>,
    /// Violations listed per tenant.
    pub limit: u32,
    /// Fail (exit 1) when a reported tenant's compliance rate is below this percentage.
    pub fail_under: Option<f64>,
    /// Print one JSON document.
    pub json: bool,
}

/// `autopilot check-engagement`. Tenants are processed in tenant-id order, each in its own
/// transaction (clocks created, scores refreshed, report read at one instant).
/// Connections (and tenants checked at once) of the `check-engagement` command.
const COMMAND_WORKERS: usize = 4;

pub async fn run(ctx: &Context, args: &CheckOptions) -> Result<u8> {
    let now = ctx.now();
    let pool = ctx.db.pool(COMMAND_WORKERS)?;
    let tenants = list_tenants(ctx, &pool, &args.tenants).await?;

    // Each tenant in its own transaction on its own pooled connection, a few at a time:
    // the work is bound by the server, and several backends keep all of its cores busy.
    // `buffered` keeps the report in tenant order.
    let limit = i64::from(args.limit);
    let outcomes: Vec<(Uuid, Result<TenantEngagement>)> =
        futures::stream::iter(tenants.iter().map(|(t, _)| *t))
            .map(|tenant| {
                let pool = &pool;
                async move { (tenant, check_tenant(ctx, pool, tenant, limit, now).await) }
            })
            .buffered(COMMAND_WORKERS)
            .collect()
            .await;
    // One tenant's data never stops the others: its error is reported and the command
    // exits 1; losing the database (or a deadline) is not a tenant's fault and ends it.
    let mut reports: Vec<TenantEngagement> = Vec::new();
    let mut failed: Vec<TenantFailure> = Vec::new();
    for (tenant, outcome) in outcomes {
        match outcome {
            Ok(r) => reports.push(r),
            Err(e) if crate::error::exit_code_for(&e) != crate::error::Exit::Failure as u8 => {
                return Err(e)
            }
            Err(e) => {
                let error = crate::error::redact(&format!("{e:#}")).replace('\n', " ");
                tracing::error!(%tenant, %error, "engagement check failed for this tenant");
                failed.push(TenantFailure {
                    tenant_id: tenant,
                    error,
                });
            }
        }
    }
    let tenants: Vec<(Uuid, Option<String>)> = tenants
        .into_iter()
        .filter(|(t, _)| reports.iter().any(|r| r.tenant_id == *t))
        .collect();
    print_report(&tenants, &reports, &failed, args.json)?;
    if !failed.is_empty() {
        return Ok(1);
    }
    let below = args
        .fail_under
        .is_some_and(|pct| reports.iter().any(|r| r.compliance_rate < pct));
    if below {
        tracing::warn!(
            fail_under = args.fail_under,
            "a tenant's engagement compliance is below the threshold"
        );
        return Ok(1);
    }
    Ok(0)
}

/// The tenants asked for (each must exist), or every active one: (id, name).
async fn list_tenants(
    ctx: &Context,
    pool: &crate::db::Pool,
    asked: &[Uuid],
) -> Result<Vec<(Uuid, Option<String>)>> {
    let client = crate::schema::get_checked(pool, &ctx.db).await?;
    let pg: &tokio_postgres::Client = &client;
    crate::db::require_tenants(pg, asked).await?;
    let rows = if asked.is_empty() {
        client.query(ALL_TENANTS_SQL, &[]).await
    } else {
        client.query(SOME_TENANTS_SQL, &[&asked]).await
    }
    .context("listing tenants")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One tenant: clocks created, scores refreshed and the report read in one transaction.
async fn check_tenant(
    ctx: &Context,
    pool: &crate::db::Pool,
    tenant: Uuid,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<TenantEngagement> {
    let mut conn = crate::db::get(pool, &ctx.db).await?;
    // A transaction of the pooled connection: its statements are prepared once
    // per connection and reused for every tenant.
    let tx = crate::db::Begin::begin(&mut *conn)
        .await
        .context("starting a transaction")?;
    check_clocks_finite(&tx, tenant).await?;
    let created = ensure_clocks(&tx, tenant, now).await?;
    refresh_scores(&tx, tenant, now).await?;
    let mut report = tenant_report(&tx, tenant, limit, now).await?;
    tx.commit()
        .await
        .with_context(|| format!("committing the engagement refresh of tenant {tenant}"))?;
    report.clocks_created = created;
    tracing::info!(tenant = %tenant, created, compliance_rate = report.compliance_rate, "engagement checked");
    Ok(report)
}

fn print_report(
    tenants: &[(Uuid, Option<String>)],
    reports: &[TenantEngagement],
    failed: &[TenantFailure],
    json: bool,
) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(&Report {
                tenants: reports,
                failed
            })?
        );
    } else {
        print_human(tenants, reports);
        for f in failed {
            println!("tenant {}: FAILED: {}", f.tenant_id, f.error);
        }
    }
    Ok(())
}

fn print_human(tenants: &[(Uuid, Option<String>)], reports: &[TenantEngagement]) {
    if reports.is_empty() {
        println!("no tenants");
        return;
    }
    for ((_, name), r) in tenants.iter().zip(reports) {
        let name = name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        println!(
            "tenant {}{name}: compliance {:.2}%, {} overdue of {} clocks (avg {:.2} days overdue), {} clocks created",
            r.tenant_id, r.compliance_rate, r.overdue, r.total, r.avg_days_overdue, r.clocks_created
        );
        for v in &r.violations {
            let target = match (v.contact_id, v.client_id) {
                (Some(contact), _) => format!("contact {contact}"),
                (None, Some(client)) => format!("client {client}"),
                (None, None) => "clock".to_string(),
            };
            println!(
                "    {target}: {} days overdue, priority {:.2}, due {} (clock {})",
                v.days_overdue,
                v.priority_score,
                v.next_touch_due.format("%Y-%m-%d %H:%M UTC"),
                v.clock_id
            );
        }
    }
}
