//! `autopilot agent status|enable|disable`: the global switch (`system_config` key
//! `agent_config`), its last change recorded on the row itself.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    describe_global, env_kill_switch, read_global, who, Change, GlobalSwitch, GLOBAL_READ,
};
use crate::db::{Begin, Commit, Sql};
use crate::Context;

const GLOBAL_WRITE: &str = crate::sql!("tenant_admin/global_write");

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
