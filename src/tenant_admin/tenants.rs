//! `autopilot tenant list|enable|disable`: each tenant's switch (`tenants.agent_enabled`),
//! every change one `agent_switch_log` row with who and why.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{env_kill_switch, read_global, who, Change, GlobalSwitch};
use crate::db::{Begin, Commit, Sql};
use crate::error::AppError;
use crate::Context;

const LIST: &str = crate::sql!("tenant_admin/list");
const LOCK_TENANTS: &str = crate::sql!("tenant_admin/lock_tenants");
const SWITCH_TENANTS: &str = crate::sql!("tenant_admin/switch_tenants");

#[derive(Debug, Serialize)]
struct LastChange {
    agent_enabled: bool,
    by: String,
    reason: String,
    at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct TenantRow {
    tenant_id: Uuid,
    name: String,
    is_active: bool,
    agent_enabled: bool,
    last_change: Option<LastChange>,
}

/// `autopilot tenant list [--enabled]`.
pub async fn list_tenants(ctx: &Context, enabled_only: bool, json: bool) -> Result<u8> {
    let pool = ctx.db.pool(1)?;
    let conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let c: &crate::db::Conn = &conn;
    let rows = Sql::query(c, LIST, &[&enabled_only])
        .await
        .context("listing tenants")?;
    let tenants: Vec<TenantRow> = rows
        .iter()
        .map(|r| TenantRow {
            tenant_id: r.get(0),
            name: r.get(1),
            is_active: r.get(2),
            agent_enabled: r.get(3),
            last_change: r.get::<_, Option<bool>>(4).map(|enabled| LastChange {
                agent_enabled: enabled,
                by: r.get(5),
                reason: r.get(6),
                at: r.get(7),
            }),
        })
        .collect();
    let global = read_global(c).await?;
    let env = env_kill_switch();
    let enabled = tenants
        .iter()
        .filter(|t| t.agent_enabled && t.is_active)
        .count();
    print_tenants(&tenants, enabled, &global, env.as_deref(), json);
    tracing::info!(
        listed = tenants.len(),
        enabled,
        global_enabled = global.global_enabled,
        "tenant list"
    );
    Ok(0)
}

#[derive(Debug, Serialize)]
struct SwitchedTenant {
    tenant_id: Uuid,
    agent_enabled: bool,
    changed: bool,
    is_active: bool,
}

/// `autopilot tenant enable|disable TENANT_ID...`: all or nothing.
pub async fn switch_tenants(
    ctx: &Context,
    tenants: &[Uuid],
    enable: bool,
    change: &Change,
) -> Result<u8> {
    let by = who(change)?;
    let reason = change.reason.clone();
    let mut ids = tenants.to_vec();
    ids.sort();
    ids.dedup();
    let now = ctx.now();
    let pool = ctx.db.pool(1)?;
    let mut conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let c: &mut crate::db::Conn = &mut conn;
    let (report, global) = switch_in(c, &ids, enable, &by, &reason, now).await?;
    let changed = report.iter().filter(|t| t.changed).count();
    let word = if enable { "enabled" } else { "disabled" };
    if change.json {
        println!(
            "{}",
            serde_json::json!({
                "changed": changed,
                "unchanged": report.len() - changed,
                "global_enabled": global.global_enabled,
                "tenants": report,
            })
        );
    } else {
        for t in &report {
            if t.changed {
                println!("{}: agent {word} (by {by}: {reason})", t.tenant_id);
            } else {
                println!("{}: agent already {word}; nothing changed", t.tenant_id);
            }
            if enable && !t.is_active {
                println!(
                    "{}: note: the tenant is not active (tenants.is_active), so the agent does not run for it",
                    t.tenant_id
                );
            }
        }
        if enable && !global.global_enabled {
            println!(
                "note: the agent is off globally; nothing runs until `autopilot agent enable --reason …`"
            );
        }
    }
    tracing::info!(
        changed,
        unchanged = report.len() - changed,
        agent_enabled = enable,
        by = %by,
        "tenant switch"
    );
    Ok(0)
}

/// All or nothing: an unknown tenant changes none (exit 2).
async fn switch_in(
    c: &mut impl Begin,
    ids: &[Uuid],
    enable: bool,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(Vec<SwitchedTenant>, GlobalSwitch)> {
    let tx = c.begin().await.context("starting a transaction")?;
    let rows = tx
        .query(LOCK_TENANTS, &[&ids])
        .await
        .context("looking up tenants")?;
    let found: Vec<(Uuid, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|f| f.0 == **id)) {
        let _ = tx.rollback().await;
        return Err(AppError::usage(format!("unknown tenant {missing}")));
    }
    let changed: Vec<Uuid> = tx
        .query(SWITCH_TENANTS, &[&ids, &enable, &by, &reason, &now])
        .await
        .context("changing the agent switch of tenants")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let global = read_global(&tx).await?;
    tx.commit().await.context("committing the change")?;
    let report = found
        .into_iter()
        .map(|(id, _, active)| SwitchedTenant {
            tenant_id: id,
            agent_enabled: enable,
            changed: changed.contains(&id),
            is_active: active,
        })
        .collect();
    Ok((report, global))
}

/// The list: one JSON document, or a line per tenant and a summary.
fn print_tenants(
    tenants: &[TenantRow],
    enabled: usize,
    global: &GlobalSwitch,
    env: Option<&str>,
    json: bool,
) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "global_enabled": global.global_enabled,
                "env_kill_switch": env.is_some(),
                "tenants": tenants,
            })
        );
    } else {
        for t in tenants {
            let state = match (t.agent_enabled, t.is_active) {
                (true, true) => "enabled",
                (true, false) => "enabled (tenant inactive: does not run)",
                (false, _) => "disabled",
            };
            let change = t
                .last_change
                .as_ref()
                .map(|l| {
                    format!(
                        "; {} by {} at {}: {}",
                        if l.agent_enabled {
                            "enabled"
                        } else {
                            "disabled"
                        },
                        l.by,
                        l.at.format("%Y-%m-%d %H:%M:%SZ"),
                        l.reason
                    )
                })
                .unwrap_or_default();
            let name = if t.name.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.name)
            };
            println!("{}{name}: {state}{change}", t.tenant_id);
        }
        println!(
            "{} tenant(s) listed, {enabled} active with the agent enabled; global switch {}{}",
            tenants.len(),
            if global.global_enabled { "on" } else { "off" },
            if env.is_some() {
                ", AGENT_KILL_SWITCH set in this environment"
            } else {
                ""
            }
        );
    }
}
