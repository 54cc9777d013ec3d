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
//!
//! This file holds what both switches share (the global switch as read, who signs a
//! change, the environment's kill switch); `tenants` the per-tenant commands, `global`
//! the `agent` commands.

mod global;
mod tenants;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use crate::db::Sql;
use crate::error::AppError;

pub use global::{agent_status, switch_agent};
pub use tenants::{list_tenants, switch_tenants};

const GLOBAL_READ: &str = crate::sql!("tenant_admin/global_read");
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

/// Read the global switch (`system_config` `agent_config`): the one reader of it, for
/// `run-cycle`, `status`, `doctor` and `agent status`. A value that cannot be decoded
/// (NULL, nested too deeply) reads as not enabled: the switch fails closed.
pub async fn read_global(c: &impl Sql) -> Result<GlobalSwitch> {
    let row = c
        .query_opt(GLOBAL_READ, &[])
        .await
        .context("reading the kill switch (system_config agent_config)")?;
    let configured = row.is_some();
    let value: Option<Value> = row.and_then(|r| r.try_get::<_, Option<Value>>(0).ok().flatten());
    Ok(GlobalSwitch {
        configured,
        ..GlobalSwitch::from_value(value.as_ref())
    })
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
