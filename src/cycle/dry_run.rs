//! `run-cycle --dry-run`: the Plan phase of each tenant in a rolled-back transaction, printed.

use std::time::Instant;

use anyhow::Result;

use super::plan::{collect_plan, refresh_engagement, Plan};
use super::report::{result, CycleMetrics, TenantResult};
use super::{one_line, Shared, TenantRow};
use crate::db;
#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use crate::settings::TenantSettings;

/// `--dry-run`: the Plan inside a transaction that is rolled back, printed; no lease, no
/// write survives.
pub(super) async fn dry_run_tenant(sh: &Shared<'_>, t: &TenantRow) -> TenantResult {
    let started = Instant::now();
    if let Some(why) = t.runnable {
        if !sh.args.json {
            println!("{}: skipped ({why})", t.id);
        }
        return result(t, started, "skipped", Some(why.into()));
    }
    let outcome: Result<(Plan, CycleMetrics)> = async {
        let settings = t
            .settings
            .clone()
            .and_then(|v| TenantSettings::parse(&v))
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let mut conn = db::get(&sh.pool, &sh.ctx.db).await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        let tx = client.begin().await?;
        let now = sh.ctx.now();
        refresh_engagement(&tx, t.id, now).await?;
        let plan = collect_plan(&tx, t.id, &settings, now).await?;
        tx.rollback().await?;
        let m = CycleMetrics {
            actions_planned: plan.actions.len() as i32,
            ..Default::default()
        };
        Ok((plan, m))
    }
    .await;
    match outcome {
        Ok((plan, m)) => {
            if !sh.args.json {
                println!(
                    "{}{}: would take {} action(s)",
                    t.id,
                    if t.name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", t.name)
                    },
                    plan.actions.len()
                );
                for a in &plan.actions {
                    println!("  - {}", a.describe());
                }
                for b in &plan.blockers {
                    println!("  ! {b}");
                }
                if plan.deferred > 0 {
                    println!("  ({} more beyond max_actions_per_cycle)", plan.deferred);
                }
            }
            TenantResult {
                metrics: m,
                ..result(
                    t,
                    started,
                    "completed",
                    Some("dry run: nothing written".into()),
                )
            }
        }
        Err(e) => result(t, started, "failed", Some(one_line(&format!("{e:#}")))),
    }
}
