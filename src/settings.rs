//! Per-tenant agent settings (`tenants.agent_settings`), validated strictly: a malformed
//! value names its key and keeps that tenant from running (SPEC §2). Unknown keys are
//! ignored so the host can store more there.

use serde::Serialize;
use serde_json::Value;

/// Every action type the agent knows; `allowed_action_types` may only name these.
pub const ACTION_TYPES: &[&str] = &["send_email", "create_task", "call", "research", "move_card"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantSettings {
    pub max_emails_per_hour: i32,
    pub max_actions_per_cycle: i32,
    pub max_research_per_hour: i32,
    pub engagement_interval_days: i32,
    /// None: every action type is allowed.
    pub allowed_action_types: Option<Vec<String>>,
    /// https URL for List-Unsubscribe (with one-click POST, RFC 8058).
    pub unsubscribe_url: Option<String>,
    /// Address for a mailto: List-Unsubscribe.
    pub unsubscribe_mailto: Option<String>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            max_emails_per_hour: 20,
            max_actions_per_cycle: 50,
            max_research_per_hour: 5,
            engagement_interval_days: 21,
            allowed_action_types: None,
            unsubscribe_url: None,
            unsubscribe_mailto: None,
        }
    }
}

/// A setting that cannot be used, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid agent_settings.{key}: {problem}")]
pub struct SettingsError {
    pub key: String,
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// Bounds of the numeric settings, checked on read: a value outside them is a mistake (or
/// an attack on the arithmetic: `engagement_interval_days = 2147483647` overflows the next
/// due date after a send), and the tenant is refused before anything is written or sent.
pub const MAX_EMAILS_PER_HOUR: i64 = 10_000;
pub const MAX_ACTIONS_PER_CYCLE: i64 = 10_000;
pub const MAX_RESEARCH_PER_HOUR: i64 = 1_000;
pub const MAX_ENGAGEMENT_INTERVAL_DAYS: i64 = 365;

fn int_setting(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    default: i32,
    (min, max): (i64, i64),
) -> Result<i32, SettingsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let v = n
                .as_i64()
                .ok_or_else(|| bad(key, format!("expected a whole number, got {n}")))?;
            if v < min || v > max {
                return Err(bad(
                    key,
                    format!("must be between {min} and {max}, got {v}"),
                ));
            }
            i32::try_from(v).map_err(|_| bad(key, format!("{v} is too large")))
        }
        Some(other) => Err(bad(
            key,
            format!("expected a whole number, got {}", type_name(other)),
        )),
    }
}

fn string_setting(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, SettingsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(bad(
            key,
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

/// `allowed_action_types`: None (all allowed) or a list of known action types.
fn action_types_setting(
    obj: &serde_json::Map<String, Value>,
) -> Result<Option<Vec<String>>, SettingsError> {
    const KEY: &str = "allowed_action_types";
    let items = match obj.get(KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(bad(
                KEY,
                format!("expected an array, got {}", type_name(other)),
            ))
        }
    };
    let mut out = Vec::new();
    for item in items {
        let s = item
            .as_str()
            .ok_or_else(|| bad(KEY, format!("expected strings, got {}", type_name(item))))?;
        if !ACTION_TYPES.contains(&s) {
            return Err(bad(
                KEY,
                format!(
                    "unknown action type '{s}' (known: {})",
                    ACTION_TYPES.join(", ")
                ),
            ));
        }
        out.push(s.to_string());
    }
    Ok(Some(out))
}

/// `unsubscribe_url` (https only) and `unsubscribe_mailto` (an address, `mailto:` dropped).
fn unsubscribe_settings(
    obj: &serde_json::Map<String, Value>,
) -> Result<(Option<String>, Option<String>), SettingsError> {
    let unsubscribe_url = string_setting(obj, "unsubscribe_url")?;
    if let Some(u) = &unsubscribe_url {
        if !u.starts_with("https://") || u.len() <= "https://".len() {
            return Err(bad("unsubscribe_url", "must be an https:// URL"));
        }
    }
    let unsubscribe_mailto = string_setting(obj, "unsubscribe_mailto")?
        .map(|m| m.trim_start_matches("mailto:").to_string());
    if let Some(m) = &unsubscribe_mailto {
        if !m.contains('@') {
            return Err(bad("unsubscribe_mailto", "must be an e-mail address"));
        }
    }
    Ok((unsubscribe_url, unsubscribe_mailto))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl TenantSettings {
    pub fn parse(value: &Value) -> Result<TenantSettings, SettingsError> {
        let empty = serde_json::Map::new();
        let obj = match value {
            Value::Null => &empty,
            Value::Object(o) => o,
            other => {
                return Err(bad(
                    "(root)",
                    format!("expected an object, got {}", type_name(other)),
                ))
            }
        };
        let d = TenantSettings::default();
        let allowed_action_types = action_types_setting(obj)?;
        let (unsubscribe_url, unsubscribe_mailto) = unsubscribe_settings(obj)?;
        let int =
            |key: &str, default: i32, bounds: (i64, i64)| int_setting(obj, key, default, bounds);
        Ok(TenantSettings {
            max_emails_per_hour: int(
                "max_emails_per_hour",
                d.max_emails_per_hour,
                (0, MAX_EMAILS_PER_HOUR),
            )?,
            max_actions_per_cycle: int(
                "max_actions_per_cycle",
                d.max_actions_per_cycle,
                (0, MAX_ACTIONS_PER_CYCLE),
            )?,
            max_research_per_hour: int(
                "max_research_per_hour",
                d.max_research_per_hour,
                (0, MAX_RESEARCH_PER_HOUR),
            )?,
            engagement_interval_days: int(
                "engagement_interval_days",
                d.engagement_interval_days,
                (1, MAX_ENGAGEMENT_INTERVAL_DAYS),
            )?,
            allowed_action_types,
            unsubscribe_url,
            unsubscribe_mailto,
        })
    }

    pub fn allows(&self, action_type: &str) -> bool {
        match &self.allowed_action_types {
            None => true,
            Some(list) => list.iter().any(|a| a == action_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_settings_give_the_spec_defaults() {
        let s = TenantSettings::parse(&json!({})).unwrap();
        assert_eq!(s, TenantSettings::default());
        assert_eq!(
            (
                s.max_emails_per_hour,
                s.max_actions_per_cycle,
                s.max_research_per_hour,
                s.engagement_interval_days
            ),
            (20, 50, 5, 21)
        );
        assert!(s.allows("research"));
    }

    #[test]
    fn wrong_type_is_named_by_key() {
        let e = TenantSettings::parse(&json!({"max_emails_per_hour": "lots"})).unwrap_err();
        assert_eq!(e.key, "max_emails_per_hour");
        assert!(e.to_string().contains("max_emails_per_hour"));
    }

    #[test]
    fn negative_limit_is_named_by_key() {
        let e = TenantSettings::parse(&json!({"max_actions_per_cycle": -1})).unwrap_err();
        assert_eq!(e.key, "max_actions_per_cycle");
    }

    #[test]
    fn fractional_limit_is_refused() {
        let e = TenantSettings::parse(&json!({"max_research_per_hour": 2.5})).unwrap_err();
        assert_eq!(e.key, "max_research_per_hour");
    }

    #[test]
    fn unknown_action_type_is_named() {
        let e = TenantSettings::parse(
            &json!({"allowed_action_types": ["send_email", "launch_rockets"]}),
        )
        .unwrap_err();
        assert_eq!(e.key, "allowed_action_types");
        assert!(e.problem.contains("launch_rockets"));
    }

    #[test]
    fn allowed_action_types_restricts() {
        let s = TenantSettings::parse(&json!({"allowed_action_types": ["create_task"]})).unwrap();
        assert!(s.allows("create_task"));
        assert!(!s.allows("send_email"));
    }

    #[test]
    fn zero_interval_is_refused_and_non_object_root_is_refused() {
        assert_eq!(
            TenantSettings::parse(&json!({"engagement_interval_days": 0}))
                .unwrap_err()
                .key,
            "engagement_interval_days"
        );
        assert!(TenantSettings::parse(&json!([1])).is_err());
    }

    #[test]
    fn out_of_bounds_limits_are_refused_on_read_naming_the_key() {
        for (key, value) in [
            ("engagement_interval_days", json!(2147483647)),
            ("engagement_interval_days", json!(366)),
            ("max_emails_per_hour", json!(10_001)),
            ("max_actions_per_cycle", json!(i64::MAX)),
            ("max_research_per_hour", json!(1_001)),
            ("max_emails_per_hour", json!(u64::MAX)),
        ] {
            let e = TenantSettings::parse(&json!({ key: value })).unwrap_err();
            assert_eq!(e.key, key, "{value}");
        }
        let s = TenantSettings::parse(
            &json!({"engagement_interval_days": 365, "max_emails_per_hour": 10000}),
        )
        .unwrap();
        assert_eq!(s.engagement_interval_days, 365);
    }

    #[test]
    fn unsubscribe_url_must_be_https() {
        assert_eq!(
            TenantSettings::parse(&json!({"unsubscribe_url": "http://x"}))
                .unwrap_err()
                .key,
            "unsubscribe_url"
        );
        let s = TenantSettings::parse(&json!({"unsubscribe_url": "https://u.example/x", "unsubscribe_mailto": "mailto:u@example.com"})).unwrap();
        assert_eq!(s.unsubscribe_mailto.as_deref(), Some("u@example.com"));
    }
}
