//! `autopilot tenant list|enable|disable` and `autopilot agent status|enable|disable`: the
//! switches an operator used to flip with hand-written SQL, with who and why on record.
//!
//! A tenant's switch is `tenants.agent_enabled`; each change is one `agent_switch_log` row
//! (tenant, new value, who, why, when). The global switch is `system_config` key
//! `agent_config`: `global_enabled`, `kill_switch_reason` (the reason while it is off), and
//! its last change as `changed_by`, `change_reason`, `changed_at` (it belongs to no tenant,
//! so it has no row in the per-tenant log). A change that would change nothing writes
//! nothing and says so. The environment's `AGENT_KILL_SWITCH` is read here too
//! ([`env_kill_switch`]) because an operator enabling the agent must hear that this
//! environment would still stop it.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::{Begin, Commit, Sql};
use crate::error::AppError;
use crate::Context;

const LIST: &str = include_str!("sql/tenant_admin/list.sql");
const LOCK_TENANTS: &str = include_str!("sql/tenant_admin/lock_tenants.sql");
const SWITCH_TENANTS: &str = include_str!("sql/tenant_admin/switch_tenants.sql");
const GLOBAL_READ: &str = include_str!("sql/tenant_admin/global_read.sql");
const GLOBAL_WRITE: &str = include_str!("sql/tenant_admin/global_write.sql");

/// The value of `AGENT_KILL_SWITCH` when it stops the agent (SPEC §1: anything but an
/// explicit off value `0`, `false`, `off`, `no` or empty: it fails closed).
pub fn env_kill_switch() -> Option<String> {
    kill_switch_value(std::env::var("AGENT_KILL_SWITCH").ok().as_deref())
}

/// [`env_kill_switch`] for a given value (None = unset).
pub fn kill_switch_value(value: Option<&str>) -> Option<String> {
    let v = value?;
    let off = v.trim().to_ascii_lowercase();
    if matches!(off.as_str(), "" | "0" | "false" | "off" | "no") {
        None
    } else {
        Some(v.to_string())
    }
}

/// The global switch as stored in `system_config` (`agent_config`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GlobalSwitch {
    pub global_enabled: bool,
    pub kill_switch_reason: Option<String>,
    pub changed_by: Option<String>,
    pub change_reason: Option<String>,
    pub changed_at: Option<String>,
    /// False when the `agent_config` row does not exist (the agent then does not run).
    pub configured: bool,
}

impl GlobalSwitch {
    pub fn from_value(value: Option<&Value>) -> GlobalSwitch {
        let s = |k: &str| {
            value
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        GlobalSwitch {
            // Only an explicit true lets the agent run (as run-cycle reads it).
            global_enabled: value.and_then(|v| v.get("global_enabled")) == Some(&Value::Bool(true)),
            kill_switch_reason: s("kill_switch_reason"),
            changed_by: s("changed_by"),
            change_reason: s("change_reason"),
            changed_at: s("changed_at"),
            configured: value.is_some(),
        }
    }
}

/// Read the global switch (`system_config` `agent_config`).
pub async fn read_global(c: &impl Sql) -> Result<GlobalSwitch> {
    let row = c
        .query_opt(GLOBAL_READ, &[])
        .await
        .context("reading system_config agent_config")?;
    let value: Option<Value> = row.map(|r| r.get(0));
    Ok(GlobalSwitch::from_value(value.as_ref()))
}

/// Who makes a switch change and why (both are recorded), and how to report it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Who makes the change; `None`: the login user.
    pub by: Option<String>,
    pub reason: String,
    /// Print one JSON document.
    pub json: bool,
}

/// `--by`, else the login user; a change nobody signs is refused (exit 2).
fn who(change: &Change) -> Result<String> {
    if let Some(by) = &change.by {
        return Ok(by.clone());
    }
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
        .ok_or_else(|| {
            AppError::usage("say who makes the change with --by WHO (no login user to default to)")
        })
}

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
        for t in &tenants {
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

/// `autopilot agent status`.
pub async fn agent_status(ctx: &Context, json: bool) -> Result<u8> {
    let pool = ctx.db.pool(1)?;
    let conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let c: &crate::db::Conn = &conn;
    let global = read_global(c).await?;
    let env = env_kill_switch();
    let runs = global.global_enabled && env.is_none();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "global": global,
                "env_kill_switch": env,
                "agent_runs": runs,
            })
        );
    } else {
        println!("{}", describe_global(&global));
        if let Some(v) = &env {
            println!(
                "AGENT_KILL_SWITCH={v} is set in this environment: the agent does not run here"
            );
        }
    }
    tracing::info!(
        global_enabled = global.global_enabled,
        env_kill_switch = env.is_some(),
        "agent status"
    );
    Ok(0)
}

/// One line saying whether the global switch lets the agent run, and its last change.
pub fn describe_global(g: &GlobalSwitch) -> String {
    let state = if !g.configured {
        "global switch off: system_config has no agent_config row (run `autopilot migrate`)"
            .to_string()
    } else if g.global_enabled {
        "global switch on".to_string()
    } else {
        format!(
            "global switch off{}",
            g.kill_switch_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    };
    match (&g.changed_by, &g.changed_at) {
        (Some(by), Some(at)) => format!(
            "{state}; last changed by {by} at {at}{}",
            g.change_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        _ => state,
    }
}

/// `autopilot agent enable|disable`: the global switch.
pub async fn switch_agent(ctx: &Context, enable: bool, args: &Change) -> Result<u8> {
    let by = who(args)?;
    let now = ctx.now();
    let pool = ctx.db.pool(1)?;
    let mut conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let c: &mut crate::db::Conn = &mut conn;
    let (before, after) = global_in(c, enable, &by, &args.reason, now).await?;
    let changed = before.global_enabled != enable;
    let env = env_kill_switch();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "changed": changed,
                "global_enabled": after.global_enabled,
                "global": after,
                "env_kill_switch": env,
            })
        );
    } else {
        if changed {
            println!(
                "agent {} globally (by {by}: {})",
                if enable { "enabled" } else { "disabled" },
                args.reason
            );
        } else {
            println!("nothing changed: {}", describe_global(&after));
        }
        if enable {
            if let Some(v) = &env {
                println!(
                    "note: AGENT_KILL_SWITCH={v} is set in this environment, which still stops the agent wherever it is set"
                );
            }
        }
    }
    tracing::info!(
        changed,
        global_enabled = after.global_enabled,
        by = %by,
        "agent switch"
    );
    Ok(0)
}

/// Changes the global switch only when it differs; returns it before and after.
async fn global_in(
    c: &mut impl Begin,
    enable: bool,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(GlobalSwitch, GlobalSwitch)> {
    let tx = c.begin().await.context("starting a transaction")?;
    // Serialize concurrent changes on the row (when it exists).
    let row = tx
        .query_opt(&format!("{} FOR UPDATE", GLOBAL_READ.trim()), &[])
        .await
        .context("reading system_config agent_config")?;
    let value: Option<Value> = row.map(|r| r.get(0));
    let before = GlobalSwitch::from_value(value.as_ref());
    if before.configured && before.global_enabled == enable {
        tx.rollback().await.context("ending the transaction")?;
        return Ok((before.clone(), before));
    }
    tx.execute(GLOBAL_WRITE, &[&enable, &by, &reason, &now])
        .await
        .context("writing system_config agent_config")?;
    let after = read_global(&tx).await?;
    tx.commit().await.context("committing the change")?;
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_switch_fails_closed_except_for_explicit_off_values() {
        for off in [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some("OFF"),
            Some("no"),
            Some(" No "),
        ] {
            assert_eq!(kill_switch_value(off), None, "{off:?}");
        }
        for on in ["1", "true", "yes", "on", "please", "TRUE"] {
            assert_eq!(kill_switch_value(Some(on)).as_deref(), Some(on));
        }
    }

    #[test]
    fn only_an_explicit_true_enables_the_agent_globally() {
        let v = |j: &str| serde_json::from_str::<Value>(j).unwrap();
        assert!(GlobalSwitch::from_value(Some(&v(r#"{"global_enabled": true}"#))).global_enabled);
        assert!(
            !GlobalSwitch::from_value(Some(&v(r#"{"global_enabled": "true"}"#))).global_enabled
        );
        assert!(!GlobalSwitch::from_value(Some(&v("{}"))).global_enabled);
        let missing = GlobalSwitch::from_value(None);
        assert!(!missing.global_enabled && !missing.configured);
    }
}
